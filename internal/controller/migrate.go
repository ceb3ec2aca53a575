package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Migrations. A migration is requested (by a user through the API, by a
// node drain or a restore through the controller: the same code, below)
// in one etcd transaction that creates its Operation and records
// Status.Migration on the instance. Both hosts' agents see it in their
// assignments and report their progress; the server applies each report
// in one transaction (internal/server/migrations.go). The switch of the
// disk's primary to the target is one of those transactions. The leader's
// controller follows each migration (trackMigration): it ends it once the
// instance runs (and serves) on the target, and it fails one whose target
// died or that stopped making progress before the switch.

// MigrationStall is how long a migration may stay in a phase before the
// switch without progress before the controller fails it.
const MigrationStall = 3 * time.Minute

// MigrationView is the cluster a migration decision reads: nodes, their
// liveness, every instance and every operation (for naming the new one).
type MigrationView struct {
	Nodes      []*api.Node
	Alive      map[string]bool
	Instances  []*api.Instance
	Operations []*api.Operation
	Policy     scheduler.Policy
}

// LoadMigrationView reads what a migration decision needs from the store.
func LoadMigrationView(ctx context.Context, s *store.Store, policy scheduler.Policy) (*MigrationView, error) {
	nodes, _, err := s.Nodes.List(ctx)
	if err != nil {
		return nil, err
	}
	alive, _, err := s.AliveNodes(ctx)
	if err != nil {
		return nil, err
	}
	insts, _, err := s.Instances.List(ctx)
	if err != nil {
		return nil, err
	}
	ops, _, err := s.Operations.List(ctx)
	if err != nil {
		return nil, err
	}
	return &MigrationView{Nodes: nodes, Alive: alive, Instances: insts, Operations: ops, Policy: policy}, nil
}

func (v *MigrationView) node(name string) *api.Node {
	for _, n := range v.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (v *MigrationView) operation(name string) *api.Operation {
	for _, op := range v.Operations {
		if op.Name == name {
			return op
		}
	}
	return nil
}

// replace puts in (a new version of an instance of the view) in place of
// its old version, and op among the operations, after a commit.
func (v *MigrationView) replace(in *api.Instance, op *api.Operation) {
	for i, old := range v.Instances {
		if old.Name == in.Name {
			v.Instances[i] = in
		}
	}
	if op != nil {
		v.Operations = append(v.Operations, op)
	}
}

// Refusal says why a migration cannot start (now). The API answers 400
// when Invalid, else 409.
type Refusal struct {
	// Field names the request field at fault, if one is.
	Field   string
	Message string
	// Invalid: the request itself is wrong (no such node).
	Invalid bool
	// Permanent: trying again later will not help (a restore gives up on
	// the instance).
	Permanent bool
}

func (r *Refusal) Error() string { return r.Message }

func refuse(format string, args ...any) *Refusal {
	return &Refusal{Message: fmt.Sprintf(format, args...)}
}

// MigrateOptions say who asks for a migration.
type MigrateOptions struct {
	// Cause is the operation's cause: "requested by admin", "drain of n1".
	Cause string
	// Drain names the node drain the migration belongs to, if any.
	Drain string
	Now   time.Time
}

// MigrationStart is a migration ready to commit: the instance with its
// Status.Migration, its new operation and its event.
type MigrationStart struct {
	Instance  *api.Instance
	Operation *api.Operation
	Event     api.Event
}

// inFlight says what runs on the instance that keeps a migration from
// starting, or "".
func (v *MigrationView) inFlight(in *api.Instance) string {
	if m := in.Status.Migration; m != nil {
		return fmt.Sprintf("migration %s (to %s, phase %s) is in flight; wait for it (`ferry operation show %s`) or cancel it (`ferry operation cancel %s`)",
			m.Operation, m.Target, m.Phase, m.Operation, m.Operation)
	}
	if in.Status.Operation == "" {
		return ""
	}
	op := v.operation(in.Status.Operation)
	if op == nil || op.State != api.OpRunning {
		return "" // a stale name: the operation ended or is gone
	}
	return fmt.Sprintf("%s %s is running on it; wait for it to end (`ferry operation show %s`)", op.Type, op.Name, op.Name)
}

// PlanMigration checks that in can migrate as req asks and builds the
// change: target chosen, operation named, status recorded. Nothing is
// written; a *Refusal says why it cannot.
func PlanMigration(v *MigrationView, in *api.Instance, req api.MigrateRequest, o MigrateOptions) (*MigrationStart, error) {
	req = req.WithDefaults()
	now := o.Now.UTC()
	if req.To != "" && v.node(req.To) == nil {
		return nil, &Refusal{Field: "to", Invalid: true, Permanent: true, Message: fmt.Sprintf("node %q does not exist (see: ferry node ls)", req.To)}
	}
	name := in.Name
	switch {
	case in.Status.Deleting:
		return nil, &Refusal{Permanent: true, Message: fmt.Sprintf("instance %q is being deleted", name)}
	case in.Spec.State != api.DesiredRunning:
		return nil, refuse("instance %q has desired state %s: only a running instance migrates; start it first (`ferry instance start %s --wait`)", name, in.Spec.State, name)
	case in.Status.Phase != api.PhaseRunning:
		return nil, refuse("instance %q is %s, not Running: only a running instance migrates; wait until it runs (`ferry instance start %s --wait`)", name, orDash(string(in.Status.Phase)), name)
	}
	if busy := v.inFlight(in); busy != "" {
		return nil, refuse("instance %q cannot migrate now: %s", name, busy)
	}
	src := in.Status.Node
	if !v.Alive[src] {
		return nil, refuse("instance %q cannot migrate: its host %s is not Ready", name, src)
	}
	shared := in.Spec.SharedPath() != ""
	target := req.To
	if target == src {
		return nil, &Refusal{Field: "to", Permanent: true, Message: fmt.Sprintf("instance %q already runs on %s", name, src)}
	}
	replica := in.Status.ReplicaNode
	copyDisk := false
	if !shared {
		switch {
		case replica == "" || replica == src:
			return nil, &Refusal{Permanent: true, Message: fmt.Sprintf("instance %q has no replica (no second host had room when it was placed): its disk is not served through replication, so it cannot be copied while in use; stop it and move it cold, or give it room for a replica first", name)}
		case target == "":
			target = replica
		case target != replica:
			// The target gets a copy first (a third replica), then
			// becomes the primary; the replica host stays.
			copyDisk = true
		}
	}
	if target == "" {
		t, why := v.pickTarget(in)
		if t == "" {
			return nil, refuse("instance %q cannot migrate: %s", name, why)
		}
		target = t
	}
	tn := v.node(target)
	switch {
	case tn == nil:
		return nil, refuse("instance %q cannot migrate: its replica's host %s is not a node any more", name, target)
	case !v.Alive[target]:
		return nil, &Refusal{Field: fieldIf(req.To != "", "to"), Message: fmt.Sprintf("instance %q cannot migrate to %s: the node is not Ready", name, target)}
	case tn.Spec.Unschedulable:
		what := "cordoned"
		if tn.Spec.Drain != nil {
			what = "being drained"
		}
		return nil, &Refusal{Field: fieldIf(req.To != "", "to"), Message: fmt.Sprintf("instance %q cannot migrate to %s: the node is %s (unschedulable); make it schedulable again (`ferry node undrain %s`) first", name, target, what, target)}
	}
	if !shared && in.Status.ReplicaOutdated {
		return nil, refuse("instance %q cannot migrate: its replica on %s is not up to date (%s); run `ferry instance wait-synced %s` first", name, replica, diskState(in), name)
	}
	if why := v.room(target, in, copyDisk); why != "" {
		return nil, &Refusal{Field: fieldIf(req.To != "", "to"), Message: fmt.Sprintf("instance %q cannot migrate to %s: %s", name, target, why)}
	}

	opName := v.nextOperationName(in)
	mode := req.Mode
	op := &api.Operation{
		Meta:     api.Meta{Name: opName, UID: store.NewID(), CreatedAt: now},
		Type:     api.OpMigrate,
		Mode:     mode,
		Instance: name,
		Cause:    o.Cause,
		From:     src, To: target, Epoch: in.Status.Epoch,
		State: api.OpRunning, BootsBefore: in.Status.Boots, StartedAt: now,
	}
	m := &api.MigrationStatus{Operation: opName, Mode: mode, Source: src, Target: target,
		Epoch: in.Status.Epoch, StartedAt: now, Since: now, Drain: o.Drain}
	if copyDisk {
		if tn.Status.Address == "" {
			return nil, &Refusal{Field: fieldIf(req.To != "", "to"), Message: fmt.Sprintf("instance %q cannot migrate to %s: its agent has not reported an address yet", name, target)}
		}
		m.Copy, m.TargetAddress = true, tn.Status.Address
	}
	what := fmt.Sprintf("cold migration from %s to %s", src, target)
	if mode == api.MigrateLive {
		m.Phase = api.MigPrepare
		m.DowntimeLimitMS, m.ConvergeSeconds, m.Fallback = req.DowntimeLimitMS, req.ConvergeSeconds, req.Fallback
		m.MaxBandwidth = req.MaxBandwidth
		capped := ""
		if req.MaxBandwidth > 0 {
			capped = fmt.Sprintf(", at most %s/s", api.Bytes(req.MaxBandwidth).Human())
		}
		what = fmt.Sprintf("live migration from %s to %s (downtime limit %d ms, %ds to converge, then %s%s)",
			src, target, req.DowntimeLimitMS, req.ConvergeSeconds, fallbackWords(req.Fallback), capped)
	} else {
		m.Phase = api.MigStopping
	}
	if copyDisk {
		m.Phase = api.MigCopy
		what += fmt.Sprintf(", after copying its %s disk there (it holds no replica; the replica stays on %s and %s's copy is dropped)",
			in.Spec.Disk.Human(), replica, src)
	}
	op.Steps = []api.OperationStep{{Name: api.StepRequested, At: now, Message: what + "; " + o.Cause}}
	cp := *in
	cp.Status.Migration = m
	cp.Status.Operation = opName
	cp.Status.Message = fmt.Sprintf("migrating to %s (%s)", target, mode)
	ev := api.Event{Time: now, Kind: api.KindInstance, Name: name, Node: src, Type: "MigrationStarted",
		Message: fmt.Sprintf("%s; operation %s (%s)", what, opName, o.Cause)}
	return &MigrationStart{Instance: &cp, Operation: op, Event: ev}, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fieldIf(cond bool, field string) string {
	if cond {
		return field
	}
	return ""
}

func fallbackWords(f string) string {
	if f == api.MigFallbackFail {
		return "fail"
	}
	return "cold"
}

// diskState describes the replica's state for a refusal: "state Syncing,
// 40% done".
func diskState(in *api.Instance) string {
	d := in.Status.Disk
	if d == nil {
		return "its primary has not reported the disk's state yet"
	}
	s := "state " + d.State
	if d.State == api.DiskSyncing && d.Sync != nil {
		s += fmt.Sprintf(", %.0f%% synced", d.Sync.Percent())
	}
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	return s
}

// nextOperationName names a new migration of in: migrate-<inst>-<epoch>-<n>
// with n one more than any such name recorded.
func (v *MigrationView) nextOperationName(in *api.Instance) string {
	prefix := strings.TrimSuffix(api.MigrationOperationName(in.Name, in.Status.Epoch, 0), "0")
	n := 0
	for _, op := range v.Operations {
		if rest, ok := strings.CutPrefix(op.Name, prefix); ok {
			if k, err := strconv.Atoi(rest); err == nil && k > n {
				n = k
			}
		}
	}
	return api.MigrationOperationName(in.Name, in.Status.Epoch, n+1)
}

// inFlightAt returns the instances as they will be once the migrations in
// flight are done: those before the switch counted on their target (with
// the source as replica), so that two migrations cannot both count on the
// same room.
func (v *MigrationView) inFlightAt(skip string) []*api.Instance {
	out := make([]*api.Instance, 0, len(v.Instances))
	for _, in := range v.Instances {
		if in.Name == skip {
			continue
		}
		if m := in.Status.Migration; m != nil && m.Phase != api.MigSwitched && in.Status.Node == m.Source {
			cp := *in
			cp.Status.Node = m.Target
			if in.Spec.SharedPath() == "" && !m.Copy {
				cp.Status.ReplicaNode = m.Source
			}
			in = &cp
		}
		out = append(out, in)
	}
	return out
}

// room says why target cannot take in's CPU and memory, and its disk when
// copyDisk is set (otherwise the disk is on the target already: the
// replica, or shared storage), or "". It counts what the target holds,
// with the overcommit placement allows, and the migrations in flight
// towards it.
func (v *MigrationView) room(target string, in *api.Instance, copyDisk bool) string {
	tn := v.node(target)
	if tn == nil {
		return "it is not a node"
	}
	used := Allocation(v.inFlightAt(in.Name))[target]
	pol := v.Policy
	if pol.CPURatio <= 0 {
		pol.CPURatio = DefaultCPURatio
	}
	if pol.MemRatio <= 0 {
		pol.MemRatio = DefaultMemRatio
	}
	capCPU := int(float64(tn.Status.Capacity.CPUs) * pol.CPURatio)
	capMem := api.Bytes(float64(tn.Status.Capacity.Memory) * pol.MemRatio)
	need := in.Spec.HostResources()
	if used.CPUs+need.CPUs > capCPU || used.Memory+need.Memory > capMem {
		freeCPU, freeMem := max(capCPU-used.CPUs, 0), max(capMem-used.Memory, 0)
		return fmt.Sprintf("the node has no room for %d CPU, %s memory (free, with overcommit and the migrations under way counted: %d CPU, %s memory)",
			need.CPUs, need.Memory.Human(), freeCPU, freeMem.Human())
	}
	if copyDisk && tn.Status.Capacity.Disk > 0 && used.Disk+in.Spec.Disk > tn.Status.Capacity.Disk {
		return fmt.Sprintf("the node has no room for a copy of its %s disk (%s free)", in.Spec.Disk.Human(), max(tn.Status.Capacity.Disk-used.Disk, 0).Human())
	}
	return ""
}

// pickTarget chooses where an instance on shared storage goes: the
// scheduler's pick among the Ready, schedulable nodes other than its
// host, keeping N+1 if it can. It returns "" and why when no node has
// room.
func (v *MigrationView) pickTarget(in *api.Instance) (string, string) {
	snap := Snapshot(v.Nodes, v.Alive, v.inFlightAt(in.Name), v.Policy)
	for i := range snap.Nodes {
		if snap.Nodes[i].Name == in.Status.Node {
			snap.Nodes[i].Unschedulable = true
		}
	}
	need := in.Spec.HostResources()
	why := fmt.Sprintf("no other Ready, schedulable node has room for %d CPU, %s memory", need.CPUs, need.Memory.Human())
	cluster, err := scheduler.NewCluster(snap)
	if err != nil {
		return "", why + " (" + err.Error() + ")"
	}
	probe := SchedulerInstance(in)
	probe.Name = "\x00migrate-" + in.Name
	probe.Primary, probe.Secondary = "", ""
	probe.SharedDisk = true
	for _, force := range []bool{false, true} {
		if pl, err := cluster.Allocate(probe, scheduler.AllocateOptions{Force: force}); err == nil {
			if v.room(pl.Primary, in, false) == "" {
				return pl.Primary, ""
			}
			return "", why
		}
	}
	return "", why
}

// Commit writes the migration in one etcd transaction: the instance (if
// it is unchanged since it was read), the new operation (if its name is
// free), the event, and the caller's cmps and ops (a drain's node record).
// It returns store.ErrConflict if anything moved; the caller reads again.
func (m *MigrationStart) Commit(ctx context.Context, s *store.Store, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	icmp, iop, err := s.Instances.UpdateOps(m.Instance)
	if err != nil {
		return 0, err
	}
	ocmp, oop, err := s.Operations.CreateOps(m.Operation)
	if err != nil {
		return 0, err
	}
	ok, rev, err := s.Txn(ctx, append([]clientv3.Cmp{icmp, ocmp}, cmps...), append([]clientv3.Op{iop, oop, s.EventOp(m.Event)}, ops...)...)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("migrate %s: %w", m.Instance.Name, store.ErrConflict)
	}
	r := strconv.FormatInt(rev, 10)
	m.Instance.ResourceVersion, m.Operation.ResourceVersion = r, r
	return rev, nil
}

// EndMigration ends the migration in flight on in with its operation op
// (state Failed, Cancelled or Succeeded, and why): it clears
// Status.Migration and, if it names op, Status.Operation.
func EndMigration(in *api.Instance, op *api.Operation, state, msg string, now time.Time) {
	if in != nil {
		if m := in.Status.Migration; m != nil && (op == nil || m.Operation == op.Name) {
			in.Status.Migration = nil
		}
		if op != nil && in.Status.Operation == op.Name {
			in.Status.Operation = ""
		}
	}
	if op != nil {
		op.State, op.Message, op.EndedAt = state, msg, now
	}
}

// CommitMigrationChange writes a change to an instance and its migration's
// operation in one transaction, guarded by both revisions (in may be nil:
// the instance must then be gone), with the events.
func CommitMigrationChange(ctx context.Context, s *store.Store, name string, in *api.Instance, op *api.Operation, evs ...api.Event) error {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	if in != nil {
		icmp, iop, err := s.Instances.UpdateOps(in)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, icmp), append(ops, iop)
	} else {
		cmps = append(cmps, s.Instances.AbsentCmp(name))
	}
	if op != nil {
		ocmp, oop, err := s.Operations.UpdateOps(op)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, ocmp), append(ops, oop)
	}
	for _, ev := range evs {
		ops = append(ops, s.EventOp(ev))
	}
	if in != nil {
		ops = append(ops, LedgerOps(s, in, evs...)...)
	}
	ok, rev, err := s.Txn(ctx, cmps, ops...)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("migration of %s: %w", name, store.ErrConflict)
	}
	r := strconv.FormatInt(rev, 10)
	if in != nil {
		in.ResourceVersion = r
	}
	if op != nil {
		op.ResourceVersion = r
	}
	return nil
}

// MigrationDowntime is how long the guest was down in a migration that
// has run there (at), as the customer sees it: QEMU's pause for a live
// one, from the shutdown's start (the request, or the fallback to cold) to
// at for a cold one.
func MigrationDowntime(op *api.Operation, at time.Time) time.Duration {
	if op.Mode == api.MigrateLive {
		return time.Duration(op.DowntimeMS) * time.Millisecond
	}
	start := op.StartedAt
	if st := op.Step(api.StepFallback); st != nil {
		start = st.At
	}
	if at.Before(start) {
		return 0
	}
	return at.Sub(start)
}

// trackMigration follows a running migration: it fails one whose target
// (or source) died, or that made no progress for MigrationStall, before
// the switch; after the switch it records the serving and ends it.
func (c *Controller) trackMigration(ctx context.Context, op *api.Operation, in *api.Instance, alive map[string]bool, now time.Time) error {
	var evs []api.Event
	ev := func(typ, msg string) {
		node := op.To
		if in != nil {
			node = in.Status.Node
		}
		evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: op.Instance, Node: node, Type: typ, Message: msg})
	}
	fail := func(msg string) {
		EndMigration(in, op, api.OpFailed, msg, now)
		ev("MigrationFailed", msg+"; operation "+op.Name)
	}
	switched := op.Step(api.StepSwitched)
	var m *api.MigrationStatus
	if in != nil {
		m = in.Status.Migration
	}
	switch {
	case in == nil:
		fail("the instance was deleted")
	case in.Status.Operation != op.Name || (m != nil && m.Operation != op.Name):
		fail(fmt.Sprintf("superseded: the instance is on %s under epoch %d", orNone(in.Status.Node), in.Status.Epoch))
	case m != nil && m.Phase != api.MigSwitched:
		since := m.Since
		if since.IsZero() {
			since = m.StartedAt
		}
		if p := op.Progress; p != nil && p.At.After(since) {
			since = p.At
		}
		switch {
		case in.Status.Deleting:
			fail(fmt.Sprintf("the instance is being deleted; the migration to %s is abandoned", m.Target))
		case in.Spec.State != api.DesiredRunning:
			fail(fmt.Sprintf("the instance was asked to stop; the migration to %s is abandoned and it stays on %s", m.Target, m.Source))
		case !alive[m.Target]:
			fail(fmt.Sprintf("target %s died before the switch; %s stays on %s", m.Target, in.Name, m.Source))
		case !alive[m.Source]:
			fail(fmt.Sprintf("source %s died before the switch; %s waits for %s to return or fails over", m.Source, in.Name, m.Source))
		case now.Sub(since) > MigrationStall:
			fail(fmt.Sprintf("timed out in phase %s: no progress for %s; %s stays on %s", m.Phase, MigrationStall, in.Name, m.Source))
		default:
			return nil
		}
	case switched == nil:
		// No migration on the instance, yet no switch: it ended without
		// the operation being told (it should not happen).
		fail("the migration ended before the switch")
	default:
		done := op.Step(api.StepResumed)
		if done == nil {
			done = op.Step(api.StepBooted)
		}
		serving := in.Spec.IP == "" || (in.Status.Serving && (op.Mode == api.MigrateLive || !in.Status.ServingSince.Before(switched.At)))
		switch {
		case done != nil && serving:
			at := done.At
			if in.Spec.IP != "" && in.Status.ServingSince.After(at) {
				at = in.Status.ServingSince
			}
			if in.Spec.IP != "" {
				op.Steps = append(op.Steps, api.OperationStep{Name: api.StepServing, At: at, Message: "its health probe answers on " + op.To})
			}
			down := MigrationDowntime(op, at)
			if op.Mode != api.MigrateLive {
				op.DowntimeMS = down.Milliseconds()
			}
			msg := fmt.Sprintf("moved %s to %s in %.1fs; ", op.Mode, op.To, at.Sub(op.StartedAt).Seconds())
			if op.Mode == api.MigrateLive {
				msg += fmt.Sprintf("the guest was paused for %d ms", op.DowntimeMS)
			} else {
				msg += fmt.Sprintf("the guest was down for %.1fs", down.Seconds())
			}
			EndMigration(in, op, api.OpSucceeded, msg, now)
			ev("MigrationDone", msg+"; operation "+op.Name)
		case now.Sub(switched.At) > opTimeout:
			what := "running"
			if done != nil {
				what = "serving"
			}
			fail(fmt.Sprintf("moved to %s, but not %s there after %s: %s", op.To, what, opTimeout, joinReason(in.Status.LastError, in.Status.Message)))
		default:
			return nil
		}
	}
	if err := CommitMigrationChange(ctx, c.s, op.Instance, in, op, evs...); err != nil {
		return err
	}
	c.log.Info("migration ended", "operation", op.Name, "state", op.State, "message", op.Message)
	return nil
}

// abandonMigration ends the migration in flight on in, whose host died
// (before or after the switch), as the failover takes over; it returns
// the comparisons and ops that join the failover's transaction.
func (c *Controller) abandonMigration(ctx context.Context, in *api.Instance, dead, outcome string, now time.Time) ([]clientv3.Cmp, []clientv3.Op, error) {
	m := in.Status.Migration
	if m == nil {
		return nil, nil, nil
	}
	role := "source"
	if dead == m.Target {
		role = "target"
	}
	when := "before the switch"
	if m.Phase == api.MigSwitched {
		when = "after the switch"
	}
	msg := fmt.Sprintf("%s %s died %s; %s", role, dead, when, outcome)
	op, err := c.s.Operations.Get(ctx, m.Operation)
	if errors.Is(err, store.ErrNotFound) {
		EndMigration(in, nil, "", "", now)
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if op.State != api.OpRunning {
		EndMigration(in, op, op.State, op.Message, now)
		return nil, nil, nil
	}
	EndMigration(in, op, api.OpFailed, msg, now)
	cmp, put, err := c.s.Operations.UpdateOps(op)
	if err != nil {
		return nil, nil, err
	}
	ev := c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: dead, Type: "MigrationFailed", Message: msg + "; operation " + op.Name})
	return []clientv3.Cmp{cmp}, []clientv3.Op{put, ev}, nil
}

// NodeDrainStatus is how a drain or restore of n goes, or nil when
// neither runs and no migration comes or goes.
func NodeDrainStatus(n *api.Node, insts []*api.Instance) *api.DrainStatus {
	return NewDrainIndex(insts).Status(n)
}

// DrainIndex counts, for every node, the instances it runs and the
// migrations from or to it, so that the drain status of many nodes costs
// one pass over the instances.
type DrainIndex struct {
	primaries map[string]int
	replicas  map[string]int // node -> replicas it holds of instances running elsewhere
	migrating map[string]int
	node      map[string]string // instance -> its node
	target    map[string]string // instance -> where it migrates to
	syncing   map[string]string // instance -> its replica's host, while that is outdated
}

// NewDrainIndex indexes insts.
func NewDrainIndex(insts []*api.Instance) *DrainIndex {
	x := &DrainIndex{primaries: map[string]int{}, replicas: map[string]int{}, migrating: map[string]int{},
		node: make(map[string]string, len(insts)), target: map[string]string{}, syncing: map[string]string{}}
	for _, in := range insts {
		x.node[in.Name] = in.Status.Node
		if in.Status.Node != "" {
			x.primaries[in.Status.Node]++
		}
		if r := in.Status.ReplicaNode; r != "" && holdsReplica(in, r) {
			x.replicas[r]++
			if in.Status.ReplicaOutdated {
				x.syncing[in.Name] = r
			}
		}
		if m := in.Status.Migration; m != nil {
			x.target[in.Name] = m.Target
			x.migrating[m.Source]++
			if m.Target != m.Source {
				x.migrating[m.Target]++
			}
		}
	}
	return x
}

// Status is how a drain or restore of n goes, or nil when neither runs
// and no migration comes or goes.
func (x *DrainIndex) Status(n *api.Node) *api.DrainStatus {
	st := &api.DrainStatus{Remaining: x.primaries[n.Name], Migrating: x.migrating[n.Name]}
	if r := n.Spec.Restore; r != nil {
		for _, name := range r.Instances {
			if node, ok := x.node[name]; ok && node != n.Name && x.target[name] != n.Name {
				st.Restoring++
			}
		}
	}
	if d := n.Spec.Drain; d != nil && d.Replicas {
		st.Replicas = x.replicas[n.Name]
		st.Resyncing = x.resyncing(n.Name, d.MovedReplicas)
	}
	if n.Spec.Drain == nil && n.Spec.Restore == nil && st.Migrating == 0 {
		return nil
	}
	st.Drained = n.Spec.Drain != nil && st.Remaining == 0 && st.Replicas == 0 && st.Resyncing == 0
	return st
}

// resyncing counts the instances of moved whose replica, moved off node,
// is still outdated on its new host.
func (x *DrainIndex) resyncing(node string, moved []string) int {
	k := 0
	for _, name := range moved {
		if r, ok := x.syncing[name]; ok && r != node {
			k++
		}
	}
	return k
}

// sortedByName returns insts sorted by name.
func sortedByName(insts []*api.Instance) []*api.Instance {
	out := append([]*api.Instance(nil), insts...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
