package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Failover: when a host's lease expires, every HA instance whose primary
// was there is promoted on the host of its replica (or, on shared storage,
// started on any host with room), in one etcd transaction that also raises
// the disk's epoch, marks the new replica outdated and creates the
// Operation that records the steps. The dead host cannot interfere: its
// agent killed its VMs and froze its disks when its heartbeats stopped
// being acknowledged, before its lease could expire (self-fencing), and the
// raised epoch makes the replica refuse anything it might still send.

// opTimeout is how long a failover may take to serve before it is
// recorded as failed.
const opTimeout = 5 * time.Minute

// failoverID names the operation of one failover: one per instance and
// epoch, so two controllers can never run the same failover twice.
func failoverID(in *api.Instance, epoch uint64) string {
	return fmt.Sprintf("failover-%s-%d", in.Name, epoch)
}

// failover acts on every instance whose primary host is dead.
func (c *Controller) failover(ctx context.Context, nodes []*api.Node, alive map[string]bool, insts []*api.Instance) error {
	byName := map[string]*api.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	// One scheduler view per pass, in which nodes not Ready for StableFor
	// take nothing new (hysteresis), updated after each decision so that
	// the instances leaving one dead host spread their new replicas.
	var cluster *scheduler.Cluster
	var errs []error
	for _, in := range insts {
		dead := byName[in.Status.Node]
		switch {
		case in.Status.Node == "" || alive[in.Status.Node] || dead == nil:
			continue
		case in.Status.Deleting || in.Spec.State != api.DesiredRunning || !in.Spec.HAEnabled():
			continue
		case in.Status.Phase == api.PhasePending:
			continue
		}
		if cluster == nil {
			var err error
			if cluster, err = c.failoverCluster(nodes, alive, insts, c.cfg.Now()); err != nil {
				return fmt.Errorf("fail over: %w", err)
			}
		}
		if err := c.failOne(ctx, cluster, nodes, alive, insts, in, dead); err != nil && !benign(err) {
			errs = append(errs, fmt.Errorf("fail over %s: %w", in.Name, err))
		}
	}
	return errors.Join(errs...)
}

// failoverCluster is the scheduler's view for failover decisions: nodes
// not Ready for StableFor take nothing new.
func (c *Controller) failoverCluster(nodes []*api.Node, alive map[string]bool, insts []*api.Instance, now time.Time) (*scheduler.Cluster, error) {
	snap := withMigrations(Snapshot(nodes, alive, insts, c.cfg.Policy()), insts, alive)
	stable := map[string]bool{}
	for _, n := range nodes {
		stable[n.Name] = c.stable(n, now)
	}
	for i := range snap.Nodes {
		if !stable[snap.Nodes[i].Name] {
			snap.Nodes[i].Unschedulable = true
		}
	}
	return scheduler.NewCluster(snap)
}

// failOne fails one instance over from its dead host, or records why it
// cannot (yet).
func (c *Controller) failOne(ctx context.Context, cluster *scheduler.Cluster, nodes []*api.Node, alive map[string]bool, insts []*api.Instance, in *api.Instance, dead *api.Node) error {
	now := c.cfg.Now().UTC()
	target, replica, blocked := c.failoverTarget(cluster, nodes, alive, insts, in, now)
	// The customer's view: the host stopped answering about a TTL before
	// its lease expired, which is now. (LastHeartbeat is only written when
	// what a node reports changes, so it may be older.)
	downSince := now.Add(-c.cfg.NodeTTL)
	if !in.Status.ServingSince.Before(downSince) {
		// It began serving within the TTL: it went down after that. A
		// nanosecond later, so that the ledger (ordered by time, then by
		// random id) never puts this outage before the serving it ends.
		downSince = in.Status.ServingSince.Add(time.Nanosecond)
	}
	var ops []clientv3.Op
	var cmps []clientv3.Cmp
	if in.Status.Migration != nil {
		// The migration cannot go on without this host; the failover
		// (or the wait for a host) takes over, in the same transaction.
		outcome := "failed over to " + target
		if blocked != "" {
			outcome = "it cannot fail over: " + blocked
		}
		mcmps, mops, err := c.abandonMigration(ctx, in, dead.Name, outcome, now)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, mcmps...), append(ops, mops...)
	}
	if in.Status.Serving {
		in.Status.Serving, in.Status.ServingSince = false, downSince
		ev := api.Event{Time: downSince, Kind: api.KindInstance, Name: in.Name, Node: dead.Name, Type: "NotServing", Message: "host " + dead.Name + " is down", Cause: api.CauseHostFailure}
		ops = append(ops, c.s.EventOp(ev))
		ops = append(ops, LedgerOps(c.s, in, ev)...)
	}
	if blocked != "" && in.Spec.SharedPath() != "" {
		// Shared storage can start anywhere: it waits Pending, and the
		// placement loop starts it as soon as a host has room.
		in.Status.Node, in.Status.Phase, in.Status.Since = "", api.PhasePending, now
		in.Status.Epoch++
		in.Status.Message = "host " + dead.Name + " is down; " + blocked
		ops = append(ops, c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: dead.Name, Type: "FailoverBlocked", Message: in.Status.Message}))
		c.log.Warn("failover waits for room", "instance", in.Name, "node", dead.Name, "reason", blocked)
		return c.updateWith(ctx, in, cmps, ops)
	}
	if blocked != "" {
		msg := "cannot fail over from " + dead.Name + ": " + blocked
		if in.Status.Message == msg && len(ops) == 0 {
			return nil
		}
		if in.Status.Message != msg {
			in.Status.Message = msg
			ops = append(ops, c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: dead.Name, Type: "FailoverBlocked", Message: msg}))
			c.log.Warn("failover blocked", "instance", in.Name, "node", dead.Name, "reason", blocked)
		}
		return c.updateWith(ctx, in, cmps, ops)
	}

	from := in.Status.Node
	in.Status.Epoch++
	op := &api.Operation{
		Meta:     api.Meta{Name: failoverID(in, in.Status.Epoch), CreatedAt: now},
		Type:     api.OpFailover,
		Instance: in.Name,
		Cause:    fmt.Sprintf("host %s's lease expired", from),
		From:     from, To: target, Epoch: in.Status.Epoch,
		State: api.OpRunning, BootsBefore: in.Status.Boots, StartedAt: now,
	}
	detect := fmt.Sprintf("lease expired: no heartbeat for %s", c.cfg.NodeTTL)
	op.Steps = []api.OperationStep{
		{Name: api.StepDetected, At: now, Message: detect},
		{Name: api.StepFenced, At: now, Message: from + "'s agent kills its VMs and freezes its disks once its heartbeats go unacknowledged, before its lease can expire"},
		{Name: api.StepPromoted, At: now, Message: fmt.Sprintf("%s promoted under epoch %d; new replica %s", target, in.Status.Epoch, orNone(replica))},
	}
	in.Status.Node, in.Status.ReplicaNode = target, replica
	in.Status.ReplicaOutdated = in.Spec.SharedPath() == "" // a new or returning replica holds nothing current
	in.Status.Disk = nil
	in.Status.Operation = op.Name
	in.Status.Phase, in.Status.Since = api.PhaseScheduled, now
	in.Status.Message = "failing over from " + from
	in.Status.LastError = ""

	icmp, iop, err := c.s.Instances.UpdateOps(in)
	if err != nil {
		return err
	}
	ocmp, oop, err := c.s.Operations.CreateOps(op)
	if err != nil {
		return err
	}
	ops = append(ops, iop, oop, c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: target, Type: "FailoverStarted",
		Message: fmt.Sprintf("from %s to %s (%s); operation %s", from, target, detect, op.Name)}))
	ok, _, err := c.s.Txn(ctx, append([]clientv3.Cmp{icmp, ocmp}, cmps...), ops...)
	if err != nil {
		return err
	}
	if !ok {
		return store.ErrConflict // changed meanwhile; the next pass looks again
	}
	c.log.Info("failing over", "instance", in.Name, "from", from, "to", target, "replica", replica, "epoch", in.Status.Epoch)
	if replica == from {
		replica = "" // the dead host holds nothing the scheduler should count
	}
	if err := cluster.Place(in.Name, target, replica); err != nil {
		c.log.Warn("scheduler view out of step", "instance", in.Name, "err", err)
	}
	return nil
}

// updateWith writes in, with ops, if it and everything cmps compares are
// unchanged.
func (c *Controller) updateWith(ctx context.Context, in *api.Instance, cmps []clientv3.Cmp, ops []clientv3.Op) error {
	if len(cmps) == 0 {
		return c.s.Instances.Update(ctx, in, ops...)
	}
	icmp, iop, err := c.s.Instances.UpdateOps(in)
	if err != nil {
		return err
	}
	ok, _, err := c.s.Txn(ctx, append([]clientv3.Cmp{icmp}, cmps...), append([]clientv3.Op{iop}, ops...)...)
	if err != nil {
		return err
	}
	if !ok {
		return store.ErrConflict
	}
	return nil
}

// failoverTarget chooses where a failed instance goes: its replica's host
// (the only one with its data) or, on shared storage, the host the
// scheduler picks; and a new replica host, chosen by the scheduler among
// the stable hosts. It returns a reason instead when it cannot.
func (c *Controller) failoverTarget(cluster *scheduler.Cluster, nodes []*api.Node, alive map[string]bool, insts []*api.Instance, in *api.Instance, now time.Time) (target, replica, blocked string) {
	dead := in.Status.Node
	if in.Spec.SharedPath() != "" {
		// Any host can start it; placement rules and room as for a new
		// instance, but a failover is never refused for N+1.
		probe := SchedulerInstance(in)
		probe.Name = "\x00failover-" + in.Name
		probe.Primary, probe.Secondary = "", ""
		snap := cluster.Snapshot()
		sizeOnly, err := scheduler.NewCluster(scheduler.Snapshot{Nodes: snap.Nodes, Instances: others(snap.Instances, in.Name), Policy: c.cfg.Policy()})
		if err == nil {
			if pl, err := sizeOnly.Allocate(probe, scheduler.AllocateOptions{Force: true}); err == nil {
				return pl.Primary, "", ""
			}
		}
		need := in.Spec.HostResources()
		return "", "", fmt.Sprintf("no Ready host has room for %d CPU, %s memory; waiting for room", need.CPUs, need.Memory.Human())
	}
	r := in.Status.ReplicaNode
	switch {
	case r == "":
		return "", "", "it has no replica (no second host when it was placed); it waits for " + dead + " to return"
	case !alive[r]:
		return "", "", "its replica host " + r + " is down too (lost replica); it waits for " + dead + " or " + r + " to return"
	case in.Status.ReplicaOutdated:
		return "", "", "its replica on " + r + " is outdated (it may lack acknowledged writes, so it is never promoted); it waits for " + dead + " to return"
	}
	// Room on the replica host, with the overcommit placement allows (the
	// replica's disk is already counted there). N+1 reserved it.
	pol := c.cfg.Policy()
	used := Allocation(insts)
	need := in.Spec.HostResources()
	var rn *api.Node
	for _, n := range nodes {
		if n.Name == r {
			rn = n
		}
	}
	if rn == nil {
		return "", "", "its replica host " + r + " is not a node any more; it waits for " + dead + " to return"
	}
	capCPU := int(float64(rn.Status.Capacity.CPUs) * pol.CPURatio)
	capMem := api.Bytes(float64(rn.Status.Capacity.Memory) * pol.MemRatio)
	u := used[r]
	if u.CPUs+need.CPUs > capCPU || u.Memory+need.Memory > capMem {
		return "", "", fmt.Sprintf("replica host %s has no room for %d CPU, %s memory; it starts as soon as room appears", r, need.CPUs, need.Memory.Human())
	}
	if err := cluster.Place(in.Name, r, ""); err == nil {
		if sec, err := cluster.Secondary(in.Name); err == nil && sec != dead {
			return r, sec, ""
		}
	}
	// No third host: the dead one becomes the replica and takes a full
	// sync when it returns.
	return r, dead, ""
}

// others returns insts without the one called name.
func others(insts []scheduler.Instance, name string) []scheduler.Instance {
	out := make([]scheduler.Instance, 0, len(insts))
	for _, si := range insts {
		if si.Name != name {
			out = append(out, si)
		}
	}
	return out
}

// stable reports whether a node has been Ready long enough to be trusted
// with an instance after a failure: a flapping host is not re-admitted at
// once (hysteresis).
func (c *Controller) stable(n *api.Node, now time.Time) bool {
	return n.Status.State == api.NodeReady && now.Sub(n.Status.Since) >= c.cfg.StableFor
}

// trackOperations moves running operations through their steps as the
// instance's status shows them done, and ends them.
func (c *Controller) trackOperations(ctx context.Context, alive map[string]bool, insts []*api.Instance) error {
	ops, _, err := c.s.Operations.List(ctx)
	if err != nil {
		return err
	}
	byName := map[string]*api.Instance{}
	for _, in := range insts {
		byName[in.Name] = in
	}
	now := c.cfg.Now().UTC()
	var errs []error
	for _, op := range ops {
		if op.State != api.OpRunning {
			continue
		}
		track := func() error { return c.trackOne(ctx, op, byName[op.Instance], now) }
		if op.Type == api.OpMigrate {
			track = func() error { return c.trackMigration(ctx, op, byName[op.Instance], alive, now) }
		}
		if err := track(); err != nil && !benign(err) {
			errs = append(errs, fmt.Errorf("operation %s: %w", op.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Controller) trackOne(ctx context.Context, op *api.Operation, in *api.Instance, now time.Time) error {
	end := func(state, msg string) {
		op.State, op.Message, op.EndedAt = state, msg, now
	}
	changed := false
	switch {
	case in == nil:
		end(api.OpFailed, "the instance was deleted")
		changed = true
	case in.Status.Operation != op.Name || in.Status.Node != op.To || in.Status.Epoch != op.Epoch:
		end(api.OpFailed, fmt.Sprintf("superseded: the instance is on %s under epoch %d", orNone(in.Status.Node), in.Status.Epoch))
		changed = true
	default:
		// Booted: the boot count went up, or (should that report have been
		// lost) the instance turned Running on its new host after the
		// failover began.
		runningHere := in.Status.Phase == api.PhaseRunning && in.Status.Since.After(op.StartedAt)
		if op.Step(api.StepBooted) == nil && (in.Status.Boots > op.BootsBefore || runningHere) {
			at := in.Status.Since
			if at.Before(op.StartedAt) {
				at = now
			}
			op.Steps = append(op.Steps, api.OperationStep{Name: api.StepBooted, At: at, Message: "booted on " + op.To})
			changed = true
		}
		if op.Step(api.StepBooted) != nil && in.Status.Serving && !in.Status.ServingSince.Before(op.StartedAt) {
			op.Steps = append(op.Steps, api.OperationStep{Name: api.StepServing, At: in.Status.ServingSince, Message: "its health probe answers on " + op.To})
			end(api.OpSucceeded, fmt.Sprintf("serving on %s %.1fs after the failure was detected", op.To, in.Status.ServingSince.Sub(op.StartedAt).Seconds()))
			changed = true
		} else if now.Sub(op.StartedAt) > opTimeout {
			end(api.OpFailed, fmt.Sprintf("not serving on %s after %s: %s", op.To, opTimeout, joinReason(in.Status.LastError, in.Status.Message)))
			changed = true
		}
	}
	if !changed {
		return nil
	}
	ocmp, oop, err := c.s.Operations.UpdateOps(op)
	if err != nil {
		return err
	}
	cmps, txn := []clientv3.Cmp{ocmp}, []clientv3.Op{oop}
	if op.State != api.OpRunning {
		evType := "FailoverDone"
		if op.State == api.OpFailed {
			evType = "FailoverFailed"
		}
		node := op.To
		txn = append(txn, c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: op.Instance, Node: node, Type: evType, Message: op.Message}))
		if in != nil && in.Status.Operation == op.Name {
			in.Status.Operation = ""
			icmp, iop, err := c.s.Instances.UpdateOps(in)
			if err != nil {
				return err
			}
			cmps, txn = append(cmps, icmp), append(txn, iop)
		}
	}
	ok, _, err := c.s.Txn(ctx, cmps, txn...)
	if err != nil {
		return err
	}
	if !ok {
		return store.ErrConflict
	}
	if op.State != api.OpRunning {
		c.log.Info("operation ended", "operation", op.Name, "state", op.State, "message", op.Message)
	}
	return nil
}

func joinReason(parts ...string) string {
	for _, p := range parts {
		if p != "" {
			return p
		}
	}
	return "no error reported"
}
