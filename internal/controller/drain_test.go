package controller

import (
	"context"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
)

// migEnv is a store with nodes and running instances, and a controller
// whose clock the test moves.
type migEnv struct {
	t     *testing.T
	ctx   context.Context
	s     *store.Store
	c     *Controller
	alive map[string]bool
	now   time.Time
}

func newMigEnv(t *testing.T, nodes ...string) *migEnv {
	t.Helper()
	s := storetest.NewStore(t, storetest.Embedded(t))
	e := &migEnv{t: t, ctx: context.Background(), s: s, alive: map[string]bool{}, now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	e.c = New(Config{Store: s, Now: func() time.Time { e.now = e.now.Add(time.Millisecond); return e.now }, StableFor: time.Second})
	for _, name := range nodes {
		n := capNode(name, 8, 8192, 100)
		n.Status.Since = e.now.Add(-time.Hour)
		if err := s.Nodes.Create(e.ctx, n); err != nil {
			t.Fatal(err)
		}
		e.alive[name] = true
	}
	return e
}

// running stores an instance running on node with an up-to-date replica.
func (e *migEnv) running(name, node, replica string) {
	e.t.Helper()
	in := &api.Instance{Meta: api.Meta{Name: name, CreatedAt: e.now.Add(-time.Hour)},
		Spec: api.InstanceSpec{CPUs: 1, Memory: 512 << 20, Disk: 1 << 30, Image: "demo", State: api.DesiredRunning},
		Status: api.InstanceStatus{Phase: api.PhaseRunning, Node: node, ReplicaNode: replica, Epoch: 1, Boots: 1,
			Disk: &api.DiskStatus{State: api.DiskUpToDate, Epoch: 1}}}
	if err := e.s.Instances.Create(e.ctx, in); err != nil {
		e.t.Fatal(err)
	}
}

// pass runs what Reconcile runs after failover: operations, drains.
func (e *migEnv) pass() {
	e.t.Helper()
	nodes, _, err := e.s.Nodes.List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	insts, _, err := e.s.Instances.List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.c.failover(e.ctx, nodes, e.alive, insts); err != nil {
		e.t.Fatal(err)
	}
	insts, _, _ = e.s.Instances.List(e.ctx)
	if err := e.c.trackOperations(e.ctx, e.alive, insts); err != nil {
		e.t.Fatal(err)
	}
	if err := e.c.drains(e.ctx, nodes, e.alive); err != nil {
		e.t.Fatal(err)
	}
}

func (e *migEnv) inst(name string) *api.Instance {
	e.t.Helper()
	in, err := e.s.Instances.Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

func (e *migEnv) node(name string) *api.Node {
	e.t.Helper()
	n, err := e.s.Nodes.Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *migEnv) op(name string) *api.Operation {
	e.t.Helper()
	op, err := e.s.Operations.Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return op
}

// inFlight returns the instances with a migration in flight, by name.
func (e *migEnv) inFlight() []string {
	e.t.Helper()
	insts, _, err := e.s.Instances.List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, in := range insts {
		if in.Status.Migration != nil {
			out = append(out, in.Name)
		}
	}
	sort.Strings(out)
	return out
}

// complete does what the agents and the server do for a live migration:
// the switch, then the resume.
func (e *migEnv) complete(name string) {
	e.t.Helper()
	in := e.inst(name)
	m := in.Status.Migration
	if m == nil {
		e.t.Fatalf("%s has no migration to complete", name)
	}
	op := e.op(m.Operation)
	in.Status.Node, in.Status.ReplicaNode = m.Target, m.Source
	in.Status.Epoch++
	in.Status.Migration = nil
	op.Epoch = in.Status.Epoch
	op.Steps = append(op.Steps, api.OperationStep{Name: api.StepSwitched, At: e.now}, api.OperationStep{Name: api.StepResumed, At: e.now})
	if err := CommitMigrationChange(e.ctx, e.s, name, in, op); err != nil {
		e.t.Fatal(err)
	}
}

func (e *migEnv) update(n *api.Node, fn func(*api.NodeSpec)) {
	e.t.Helper()
	fn(&n.Spec)
	if err := e.s.Nodes.Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
}

func (e *migEnv) eventCount(typ string) int {
	evs, _, err := e.s.ListEvents(e.ctx, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	k := 0
	for _, ev := range evs {
		if ev.Type == typ {
			k++
		}
	}
	return k
}

// TestDrainAndRestore drains a node of four instances, two at a time: one
// waits for its replica to be in sync (blocked, with the reason, then
// moved). The node ends Drained; an undrain with restore brings them all
// back, two at a time too.
func TestDrainAndRestore(t *testing.T) {
	e := newMigEnv(t, "a", "b", "c")
	e.running("i1", "a", "b")
	e.running("i2", "a", "c")
	e.running("i3", "a", "b")
	e.running("i4", "a", "c")
	lag := e.inst("i4")
	lag.Status.ReplicaOutdated = true
	lag.Status.Disk = &api.DiskStatus{State: api.DiskSyncing, Epoch: 1, Sync: &api.DiskSync{TotalBytes: 100, DoneBytes: 40}}
	if err := e.s.Instances.Update(e.ctx, lag); err != nil {
		t.Fatal(err)
	}
	e.update(e.node("a"), func(s *api.NodeSpec) {
		s.Unschedulable = true
		s.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: e.now}
	})

	maxInFlight := 0
	step := func() {
		t.Helper()
		e.pass()
		if k := len(e.inFlight()); k > maxInFlight {
			maxInFlight = k
		}
	}
	step()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i1", "i2"}) {
		t.Fatalf("in flight after the first pass: %v, want i1 i2", got)
	}
	step() // nothing more: the limit is reached
	if got := e.inFlight(); len(got) != 2 {
		t.Fatalf("in flight after a second pass: %v", got)
	}
	in := e.inst("i1")
	op := e.op(in.Status.Migration.Operation)
	if op.Cause != "drain of a" || in.Status.Migration.Drain != "a" || in.Status.Migration.Target != "b" || op.Mode != api.MigrateLive {
		t.Fatalf("drain migration: %+v cause %q", in.Status.Migration, op.Cause)
	}
	if took := e.node("a").Spec.Drain.Took; !reflect.DeepEqual(took, []string{"i1", "i2"}) {
		t.Fatalf("took %v", took)
	}

	e.complete("i1")
	step()
	if st := e.op(op.Name); st.State != api.OpSucceeded {
		t.Fatalf("i1's migration %s: %s", st.State, st.Message)
	}
	// i3 took the free slot; i4 is blocked with the reason.
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i2", "i3"}) {
		t.Fatalf("in flight: %v, want i2 i3", got)
	}
	e.complete("i2")
	step()
	d := e.node("a").Spec.Drain
	if why := d.Blocked["i4"]; !strings.Contains(why, "wait-synced i4") || !strings.Contains(why, "40% synced") {
		t.Fatalf("blocked %v", d.Blocked)
	}
	if k := e.eventCount("DrainBlocked"); k != 1 {
		t.Fatalf("%d DrainBlocked events, want 1", k)
	}
	step()
	if k := e.eventCount("DrainBlocked"); k != 1 {
		t.Fatalf("%d DrainBlocked events after another pass, want still 1", k)
	}
	if st := NodeDrainStatus(e.node("a"), e.list()); st == nil || st.Remaining != 2 || st.Migrating != 1 || st.Drained {
		t.Fatalf("drain status %+v", st)
	}

	lag = e.inst("i4")
	lag.Status.ReplicaOutdated = false
	if err := e.s.Instances.Update(e.ctx, lag); err != nil {
		t.Fatal(err)
	}
	step()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i3", "i4"}) {
		t.Fatalf("in flight: %v, want i3 i4", got)
	}
	e.complete("i3")
	e.complete("i4")
	step()
	step()
	a := e.node("a")
	st := NodeDrainStatus(a, e.list())
	if st == nil || !st.Drained || st.Remaining != 0 || a.Spec.Drain.DrainedAt.IsZero() || len(a.Spec.Drain.Blocked) != 0 {
		t.Fatalf("after the drain: status %+v spec %+v", st, a.Spec.Drain)
	}
	if !reflect.DeepEqual(a.Spec.Drain.Took, []string{"i1", "i2", "i3", "i4"}) || e.eventCount("NodeDrained") != 1 {
		t.Fatalf("took %v, %d NodeDrained events", a.Spec.Drain.Took, e.eventCount("NodeDrained"))
	}
	if maxInFlight != 2 {
		t.Fatalf("at most %d migrations in flight, want 2", maxInFlight)
	}

	// Undrain with restore, as the API records it; i2 was deleted since.
	if err := e.s.Instances.Delete(e.ctx, "i2", 0); err != nil {
		t.Fatal(err)
	}
	e.update(a, func(s *api.NodeSpec) {
		s.Restore = &api.RestoreSpec{Instances: s.Drain.Took, Mode: s.Drain.Mode, MaxConcurrent: s.Drain.MaxConcurrent, StartedAt: e.now}
		s.Drain, s.Unschedulable = nil, false
	})
	maxInFlight = 0
	step()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i1", "i3"}) {
		t.Fatalf("restoring: %v, want i1 i3", got)
	}
	if r := e.node("a").Spec.Restore; r == nil || !reflect.DeepEqual(r.Instances, []string{"i1", "i3", "i4"}) {
		t.Fatalf("restore %+v, want i1 i3 (on their way) and i4 left", r)
	}
	in = e.inst("i1")
	if m := in.Status.Migration; m.Target != "a" || !strings.Contains(e.op(m.Operation).Cause, "restore") {
		t.Fatalf("restore migration %+v", m)
	}
	e.complete("i1")
	step()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i3", "i4"}) {
		t.Fatalf("restoring: %v, want i3 i4", got)
	}
	if r := e.node("a").Spec.Restore; r == nil || !reflect.DeepEqual(r.Instances, []string{"i3", "i4"}) {
		t.Fatalf("restore %+v, want i3 i4 on their way", r)
	}
	e.complete("i3")
	e.complete("i4")
	step()
	if r := e.node("a").Spec.Restore; r != nil || e.eventCount("NodeRestored") != 1 {
		t.Fatalf("restore still set: %+v (%d NodeRestored events)", r, e.eventCount("NodeRestored"))
	}
	for _, name := range []string{"i1", "i3", "i4"} {
		if in := e.inst(name); in.Status.Node != "a" || in.Status.Operation != "" {
			t.Fatalf("%s on %s (operation %q) after the restore", name, in.Status.Node, in.Status.Operation)
		}
	}
	if maxInFlight != 2 {
		t.Fatalf("at most %d restores in flight, want 2", maxInFlight)
	}
}

func (e *migEnv) list() []*api.Instance {
	e.t.Helper()
	insts, _, err := e.s.Instances.List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return insts
}

// TestMigrationWatchdog: the controller fails a migration stuck before
// its switch, one whose target died, and one whose source died without
// HA; it ends one whose instance was deleted.
func TestMigrationWatchdog(t *testing.T) {
	e := newMigEnv(t, "a", "b", "c")
	noHA := false
	for _, name := range []string{"stuck", "tdead", "sdead", "gone", "halt"} {
		e.running(name, "a", "b")
	}
	e.running("x", "c", "b")
	in := e.inst("sdead")
	in.Spec.HA = &noHA
	if err := e.s.Instances.Update(e.ctx, in); err != nil {
		t.Fatal(err)
	}
	start := func(name string) string {
		t.Helper()
		v, err := LoadMigrationView(e.ctx, e.s, e.c.cfg.Policy())
		if err != nil {
			t.Fatal(err)
		}
		v.Alive = e.alive
		var in *api.Instance
		for _, i := range v.Instances {
			if i.Name == name {
				in = i
			}
		}
		st, err := PlanMigration(v, in, api.MigrateRequest{}, MigrateOptions{Cause: "requested by test", Now: e.now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Commit(e.ctx, e.s, nil); err != nil {
			t.Fatal(err)
		}
		return st.Operation.Name
	}
	stuck, gone := start("stuck"), start("gone")
	e.pass()
	if op := e.op(stuck); op.State != api.OpRunning {
		t.Fatalf("fresh migration %s: %s", op.State, op.Message)
	}
	if err := e.s.Instances.Delete(e.ctx, "gone", 0); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(MigrationStall + time.Second)
	e.pass()
	if op := e.op(stuck); op.State != api.OpFailed || !strings.Contains(op.Message, "timed out in phase prepare") {
		t.Fatalf("stuck migration: %s %q", op.State, op.Message)
	}
	if in := e.inst("stuck"); in.Status.Migration != nil || in.Status.Operation != "" {
		t.Fatalf("stuck instance keeps %+v %q", in.Status.Migration, in.Status.Operation)
	}
	if op := e.op(gone); op.State != api.OpFailed || op.Message != "the instance was deleted" {
		t.Fatalf("gone: %s %q", op.State, op.Message)
	}

	halt := start("halt")
	in = e.inst("halt")
	in.Spec.State = api.DesiredStopped
	if err := e.s.Instances.Update(e.ctx, in); err != nil {
		t.Fatal(err)
	}
	e.pass()
	if op := e.op(halt); op.State != api.OpFailed || !strings.Contains(op.Message, "asked to stop") {
		t.Fatalf("stopped instance: %s %q", op.State, op.Message)
	}

	tdead := start("tdead")
	e.alive["b"] = false
	e.pass()
	if op := e.op(tdead); op.State != api.OpFailed || op.Message != "target b died before the switch; tdead stays on a" {
		t.Fatalf("target died: %s %q", op.State, op.Message)
	}
	e.alive["b"] = true

	sdead := start("sdead")
	e.alive["a"] = false
	e.pass()
	if op := e.op(sdead); op.State != api.OpFailed || !strings.Contains(op.Message, "source a died before the switch") {
		t.Fatalf("source died: %s %q", op.State, op.Message)
	}
	if in := e.inst("sdead"); in.Status.Migration != nil || in.Status.Node != "a" {
		t.Fatalf("no-HA instance after its source died: %+v", in.Status)
	}
}

// TestPlanMigrationRoom: the room check counts the migrations in flight
// towards the target, so two cannot take the same room.
func TestPlanMigrationRoom(t *testing.T) {
	e := newMigEnv(t, "a", "b")
	small := e.node("b")
	small.Status.Capacity = res(1, 1000, 100)
	if err := e.s.Nodes.Update(e.ctx, small); err != nil {
		t.Fatal(err)
	}
	e.running("i1", "a", "b")
	e.running("i2", "a", "b")
	v, err := LoadMigrationView(e.ctx, e.s, Policy(0, 0, ""))
	if err != nil {
		t.Fatal(err)
	}
	v.Alive = e.alive
	st, err := PlanMigration(v, v.Instances[0], api.MigrateRequest{}, MigrateOptions{Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(e.ctx, e.s, nil); err != nil {
		t.Fatal(err)
	}
	v.replace(st.Instance, st.Operation)
	_, err = PlanMigration(v, v.Instances[1], api.MigrateRequest{}, MigrateOptions{Now: e.now})
	if ref, ok := err.(*Refusal); !ok || !strings.Contains(ref.Message, "no room for 1 CPU") || !strings.Contains(ref.Message, "migrations under way counted: 3 CPU, 488") {
		t.Fatalf("second migration onto a full node: %v", err)
	}
}

// TestFailoverEndsMigration: the target dying after a cold migration's
// switch fails the instance back over to the source, and the failover's
// transaction ends the migration.
func TestFailoverEndsMigration(t *testing.T) {
	e := newMigEnv(t, "a", "b")
	e.running("web", "a", "b")
	v, err := LoadMigrationView(e.ctx, e.s, e.c.cfg.Policy())
	if err != nil {
		t.Fatal(err)
	}
	v.Alive = e.alive
	st, err := PlanMigration(v, v.Instances[0], api.MigrateRequest{Mode: api.MigrateCold}, MigrateOptions{Cause: "requested by test", Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Commit(e.ctx, e.s, nil); err != nil {
		t.Fatal(err)
	}
	// The switch, as the server does it.
	in, op := e.inst("web"), e.op(st.Operation.Name)
	in.Status.Node, in.Status.ReplicaNode, in.Status.Phase = "b", "a", api.PhaseScheduled
	in.Status.Epoch++
	in.Status.Migration.Phase, in.Status.Migration.Epoch = api.MigSwitched, in.Status.Epoch
	op.Steps = append(op.Steps, api.OperationStep{Name: api.StepSwitched, At: e.now})
	if err := CommitMigrationChange(e.ctx, e.s, "web", in, op); err != nil {
		t.Fatal(err)
	}
	e.alive["b"] = false
	e.pass()
	op, in = e.op(st.Operation.Name), e.inst("web")
	if op.State != api.OpFailed || op.Message != "target b died after the switch; failed over to a" {
		t.Fatalf("migration %s %q", op.State, op.Message)
	}
	if in.Status.Node != "a" || in.Status.Migration != nil || !strings.HasPrefix(in.Status.Operation, "failover-web-") {
		t.Fatalf("instance after the failover: %+v", in.Status)
	}
}

// TestDrainRetryBackoff: a drain migration that fails is not started again
// at once (a drain that retried every pass piled up hundreds of failed
// operations a minute against a target that kept refusing), but after 5 s,
// then 10 s, with the reason in Blocked and one event per failure.
func TestDrainRetryBackoff(t *testing.T) {
	e := newMigEnv(t, "a", "b")
	e.running("i1", "a", "b")
	e.update(e.node("a"), func(s *api.NodeSpec) {
		s.Unschedulable = true
		s.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: e.now}
	})
	fail := func() string {
		t.Helper()
		in := e.inst("i1")
		if in.Status.Migration == nil {
			t.Fatal("i1 has no migration in flight")
		}
		op := e.op(in.Status.Migration.Operation)
		EndMigration(in, op, api.OpFailed, "b: boot files of i1: bad image", e.now)
		if err := CommitMigrationChange(e.ctx, e.s, "i1", in, op); err != nil {
			t.Fatal(err)
		}
		return op.Name
	}
	blocked := func(want string) {
		t.Helper()
		e.pass()
		if got := e.inFlight(); len(got) != 0 {
			t.Fatalf("in flight %v: the drain retried at once", got)
		}
		if why := e.node("a").Spec.Drain.Blocked["i1"]; !strings.Contains(why, want) || !strings.Contains(why, "tries again at") {
			t.Fatalf("blocked %q, want it to name %s and when the drain tries again", why, want)
		}
	}
	e.pass()
	first := fail()
	blocked(first)
	blocked(first) // one event per reason, not per pass
	if k := e.eventCount("DrainBlocked"); k != 1 {
		t.Fatalf("%d DrainBlocked events, want 1", k)
	}
	e.now = e.now.Add(5 * time.Second)
	e.pass()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i1"}) {
		t.Fatalf("in flight %v after 5 s, want i1", got)
	}
	second := fail()
	e.now = e.now.Add(6 * time.Second)
	blocked(second) // 10 s after the second failure
	e.now = e.now.Add(5 * time.Second)
	e.pass()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i1"}) {
		t.Fatalf("in flight %v after 11 s, want i1", got)
	}
	e.complete("i1")
	e.pass()
	e.pass()
	a := e.node("a")
	if a.Spec.Drain.DrainedAt.IsZero() || len(a.Spec.Drain.Blocked) != 0 || e.eventCount("DrainBlocked") != 2 {
		t.Fatalf("after the drain: %+v, %d DrainBlocked events", a.Spec.Drain, e.eventCount("DrainBlocked"))
	}
}

// TestRestoreRetriesFailedMove: a move back that fails is tried again
// after the drain's backoff, and the restore lasts until it succeeds.
func TestRestoreRetriesFailedMove(t *testing.T) {
	e := newMigEnv(t, "a", "b")
	e.running("i1", "b", "a")
	e.update(e.node("a"), func(s *api.NodeSpec) {
		s.Restore = &api.RestoreSpec{Instances: []string{"i1"}, Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: e.now}
	})
	fail := func() {
		t.Helper()
		in := e.inst("i1")
		if in.Status.Migration == nil || in.Status.Migration.Target != "a" {
			t.Fatalf("i1 is not moving back to a: %+v", in.Status.Migration)
		}
		op := e.op(in.Status.Migration.Operation)
		EndMigration(in, op, api.OpFailed, "a: incoming vm exited", e.now)
		if err := CommitMigrationChange(e.ctx, e.s, "i1", in, op); err != nil {
			t.Fatal(err)
		}
	}
	e.pass()
	fail()
	e.pass()
	r := e.node("a").Spec.Restore
	if r == nil || !reflect.DeepEqual(r.Instances, []string{"i1"}) || !strings.Contains(r.Blocked["i1"], "the restore tries again at") {
		t.Fatalf("after a failed move back: restore %+v, want i1 kept and blocked until the retry", r)
	}
	if got := e.inFlight(); len(got) != 0 {
		t.Fatalf("in flight %v: the restore retried at once", got)
	}
	e.now = e.now.Add(drainRetryMin)
	e.pass()
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i1"}) {
		t.Fatalf("in flight %v after the backoff, want i1", got)
	}
	if st := NodeDrainStatus(e.node("a"), e.list()); st == nil || st.Restoring != 0 || st.Migrating != 1 {
		t.Fatalf("drain status %+v, want 1 migrating and none left to start", st)
	}
	e.complete("i1")
	e.pass()
	if r := e.node("a").Spec.Restore; r != nil {
		t.Fatalf("restore %+v after i1 came back, want none", r)
	}
	if in := e.inst("i1"); in.Status.Node != "a" {
		t.Fatalf("i1 on %s", in.Status.Node)
	}
}

// TestDrainMovesReplicas drains, with Replicas, a node that runs one
// instance and holds the replicas of two others: the primary moves, each
// replica goes to the host the scheduler picks (outdated, under a raised
// epoch, one transaction with the node record), no more than the drain's
// limit at once counting those still syncing, and the node ends Drained
// only once every moved replica is in sync.
func TestDrainMovesReplicas(t *testing.T) {
	e := newMigEnv(t, "a", "b", "c")
	e.running("i1", "a", "b")
	e.running("i2", "c", "b")
	e.running("i3", "b", "a")
	e.update(e.node("b"), func(s *api.NodeSpec) {
		s.Unschedulable = true
		s.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: e.now, Replicas: true}
	})
	synced := func(name string) {
		t.Helper()
		in := e.inst(name)
		in.Status.ReplicaOutdated = false
		in.Status.Disk = &api.DiskStatus{State: api.DiskUpToDate, Epoch: in.Status.Epoch}
		if err := e.s.Instances.Update(e.ctx, in); err != nil {
			t.Fatal(err)
		}
	}

	e.pass()
	// One slot for i3's migration, one for i1's replica (by name).
	if got := e.inFlight(); !reflect.DeepEqual(got, []string{"i3"}) {
		t.Fatalf("in flight: %v, want i3", got)
	}
	i1 := e.inst("i1")
	if i1.Status.ReplicaNode != "c" || !i1.Status.ReplicaOutdated || i1.Status.Epoch != 2 || i1.Status.Node != "a" {
		t.Fatalf("i1 after the first pass: node %s replica %s outdated %v epoch %d, want replica c, outdated, epoch 2",
			i1.Status.Node, i1.Status.ReplicaNode, i1.Status.ReplicaOutdated, i1.Status.Epoch)
	}
	if i2 := e.inst("i2"); i2.Status.ReplicaNode != "b" {
		t.Fatalf("i2's replica moved to %s beyond the limit", i2.Status.ReplicaNode)
	}
	b := e.node("b")
	if !reflect.DeepEqual(b.Spec.Drain.MovedReplicas, []string{"i1"}) || e.eventCount("ReplicaMoved") != 1 {
		t.Fatalf("moved %v, %d ReplicaMoved events", b.Spec.Drain.MovedReplicas, e.eventCount("ReplicaMoved"))
	}
	if st := NodeDrainStatus(b, e.list()); st == nil || st.Remaining != 1 || st.Replicas != 1 || st.Resyncing != 1 || st.Drained {
		t.Fatalf("drain status %+v", st)
	}

	e.complete("i3") // now on a, its replica on b (the old source)
	e.pass()
	// i1 still syncing holds a slot: only one more move.
	if got := e.node("b").Spec.Drain.MovedReplicas; len(got) != 2 {
		t.Fatalf("moved %v, want a second one in the free slot", got)
	}
	synced("i1")
	e.pass()
	for name, want := range map[string]string{"i1": "c", "i2": "a", "i3": "c"} {
		if in := e.inst(name); in.Status.ReplicaNode != want || in.Status.Node == "b" {
			t.Fatalf("%s on %s with its replica on %s, want the replica on %s", name, in.Status.Node, in.Status.ReplicaNode, want)
		}
	}
	if b := e.node("b"); !b.Spec.Drain.DrainedAt.IsZero() || e.eventCount("NodeDrained") != 0 {
		t.Fatal("drained while replicas are still syncing")
	}
	synced("i2")
	synced("i3")
	e.pass()
	b = e.node("b")
	st := NodeDrainStatus(b, e.list())
	if st == nil || !st.Drained || st.Replicas != 0 || st.Resyncing != 0 || b.Spec.Drain.DrainedAt.IsZero() || e.eventCount("NodeDrained") != 1 {
		t.Fatalf("after the drain: status %+v, spec %+v, %d NodeDrained", st, b.Spec.Drain, e.eventCount("NodeDrained"))
	}
}

// TestDrainReplicaNowhereToGo: with no third host, a replica cannot move;
// it is blocked with the reason and the drain does not end.
func TestDrainReplicaNowhereToGo(t *testing.T) {
	e := newMigEnv(t, "a", "b")
	e.running("i1", "a", "b")
	e.update(e.node("b"), func(s *api.NodeSpec) {
		s.Unschedulable = true
		s.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: e.now, Replicas: true}
	})
	e.pass()
	e.pass()
	b := e.node("b")
	if why := b.Spec.Drain.Blocked["i1"]; !strings.Contains(why, "no other host can take its replica") {
		t.Fatalf("blocked %v", b.Spec.Drain.Blocked)
	}
	if in := e.inst("i1"); in.Status.ReplicaNode != "b" || in.Status.ReplicaOutdated || in.Status.Epoch != 1 {
		t.Fatalf("i1 changed: replica %s outdated %v epoch %d", in.Status.ReplicaNode, in.Status.ReplicaOutdated, in.Status.Epoch)
	}
	if !b.Spec.Drain.DrainedAt.IsZero() || e.eventCount("DrainBlocked") != 1 {
		t.Fatalf("drained at %v, %d DrainBlocked events", b.Spec.Drain.DrainedAt, e.eventCount("DrainBlocked"))
	}
}
