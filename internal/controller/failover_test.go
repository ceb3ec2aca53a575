package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store/storetest"
)

func node(name string, since time.Time) *api.Node {
	return &api.Node{Meta: api.Meta{Name: name}, Status: api.NodeStatus{State: api.NodeReady, Since: since, Capacity: res(4, 4096, 100)}}
}

func TestFailoverTarget(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	c := New(Config{StableFor: 10 * time.Second})
	inst := func(mod func(*api.Instance)) *api.Instance {
		in := &api.Instance{Meta: api.Meta{Name: "web"},
			Spec:   api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30, State: api.DesiredRunning},
			Status: api.InstanceStatus{Node: "a", ReplicaNode: "b", Epoch: 3, Phase: api.PhaseRunning}}
		if mod != nil {
			mod(in)
		}
		return in
	}
	tests := []struct {
		name        string
		nodes       []*api.Node
		alive       map[string]bool
		in          *api.Instance
		others      []*api.Instance
		wantTarget  string
		wantReplica string
		wantBlocked string
	}{
		{name: "replica promoted, third host is the new replica",
			nodes: []*api.Node{node("a", old), node("b", old), node("c", old)}, alive: map[string]bool{"b": true, "c": true},
			in: inst(nil), wantTarget: "b", wantReplica: "c"},
		{name: "no third host: the dead one becomes the replica",
			nodes: []*api.Node{node("a", old), node("b", old)}, alive: map[string]bool{"b": true},
			in: inst(nil), wantTarget: "b", wantReplica: "a"},
		{name: "a flapping host is not trusted with the new replica",
			nodes: []*api.Node{node("a", old), node("b", old), node("c", now.Add(-2*time.Second))}, alive: map[string]bool{"b": true, "c": true},
			in: inst(nil), wantTarget: "b", wantReplica: "a"},
		{name: "outdated replica is never promoted",
			nodes: []*api.Node{node("a", old), node("b", old)}, alive: map[string]bool{"b": true},
			in: inst(func(in *api.Instance) { in.Status.ReplicaOutdated = true }), wantBlocked: "is outdated"},
		{name: "replica host down too",
			nodes: []*api.Node{node("a", old), node("b", old), node("c", old)}, alive: map[string]bool{"c": true},
			in: inst(nil), wantBlocked: "lost replica"},
		{name: "no replica at all",
			nodes: []*api.Node{node("a", old), node("b", old)}, alive: map[string]bool{"b": true},
			in: inst(func(in *api.Instance) { in.Status.ReplicaNode = "" }), wantBlocked: "has no replica"},
		{name: "no room on the replica host",
			nodes: []*api.Node{node("a", old), node("b", old)}, alive: map[string]bool{"b": true},
			in:          inst(nil),
			others:      []*api.Instance{{Meta: api.Meta{Name: "big"}, Spec: api.InstanceSpec{CPUs: 1, Memory: 4 << 30}, Status: api.InstanceStatus{Node: "b"}}},
			wantBlocked: "has no room"},
		{name: "the new replica goes where N+1 holds",
			nodes: []*api.Node{node("a", old), node("b", old), node("c", old), node("d", old)}, alive: map[string]bool{"b": true, "c": true, "d": true},
			in:         inst(nil),
			others:     []*api.Instance{{Meta: api.Meta{Name: "other"}, Spec: api.InstanceSpec{CPUs: 1, Memory: 3584 << 20, Disk: 1 << 30}, Status: api.InstanceStatus{Node: "d", ReplicaNode: "c"}}},
			wantTarget: "b", wantReplica: "c"},
		{name: "CPU overcommit counts on the replica host",
			nodes: []*api.Node{node("a", old), node("b", old)}, alive: map[string]bool{"b": true},
			in:         inst(nil),
			others:     []*api.Instance{{Meta: api.Meta{Name: "busy"}, Spec: api.InstanceSpec{CPUs: 6, Memory: 1 << 30}, Status: api.InstanceStatus{Node: "b"}}},
			wantTarget: "b", wantReplica: "a"},
		{name: "shared storage goes to the first stable host with room",
			nodes: []*api.Node{node("a", old), node("b", now), node("c", old)}, alive: map[string]bool{"b": true, "c": true},
			in: inst(func(in *api.Instance) { in.Spec.Storage = "shared:/mnt"; in.Status.ReplicaNode = "" }), wantTarget: "c"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			insts := append([]*api.Instance{tc.in}, tc.others...)
			cluster, err := c.failoverCluster(tc.nodes, tc.alive, insts, now)
			if err != nil {
				t.Fatal(err)
			}
			target, replica, blocked := c.failoverTarget(cluster, tc.nodes, tc.alive, insts, tc.in, now)
			if target != tc.wantTarget || replica != tc.wantReplica || (tc.wantBlocked == "") != (blocked == "") || !strings.Contains(blocked, tc.wantBlocked) {
				t.Fatalf("failoverTarget = (%q, %q, %q), want (%q, %q, ...%q...)", target, replica, blocked, tc.wantTarget, tc.wantReplica, tc.wantBlocked)
			}
		})
	}
}

// TestFailoverTransactionAndOperation runs a failover against etcd: the
// instance moves to its replica's host under a raised epoch in the same
// transaction that creates its operation; a second pass does nothing more;
// the operation records the boot and the serving, then ends.
func TestFailoverTransactionAndOperation(t *testing.T) {
	s := storetest.NewStore(t, storetest.Embedded(t))
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := now
	c := New(Config{Store: s, Now: func() time.Time { return clock }, StableFor: time.Second, NodeTTL: 3 * time.Second})
	old := now.Add(-time.Hour)
	for _, n := range []*api.Node{node("a", old), node("b", old), node("c", old)} {
		if n.Name == "a" {
			n.Status.LastHeartbeat = now.Add(-3 * time.Second)
		}
		if err := s.Nodes.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	in := &api.Instance{Meta: api.Meta{Name: "web", CreatedAt: old},
		Spec:   api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30, State: api.DesiredRunning},
		Status: api.InstanceStatus{Node: "a", ReplicaNode: "b", Epoch: 2, Phase: api.PhaseRunning, Serving: true, Boots: 1}}
	if err := s.Instances.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{"b": true, "c": true}
	pass := func() {
		t.Helper()
		nodes, _, err := s.Nodes.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		insts, _, err := s.Instances.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.failover(ctx, nodes, alive, insts); err != nil {
			t.Fatal(err)
		}
		insts, _, _ = s.Instances.List(ctx)
		if err := c.trackOperations(ctx, alive, insts); err != nil {
			t.Fatal(err)
		}
	}
	pass()
	pass() // idempotent: no second failover
	got, err := s.Instances.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Node != "b" || got.Status.ReplicaNode != "c" || got.Status.Epoch != 3 || !got.Status.ReplicaOutdated || got.Status.Serving {
		t.Fatalf("after failover: node %s replica %s epoch %d outdated %v serving %v; want b, c, 3, true, false",
			got.Status.Node, got.Status.ReplicaNode, got.Status.Epoch, got.Status.ReplicaOutdated, got.Status.Serving)
	}
	if !got.Status.ServingSince.Equal(now.Add(-3 * time.Second)) {
		t.Fatalf("not serving since %s, want a TTL before the lease expired", got.Status.ServingSince)
	}
	ops, _, err := s.Operations.List(ctx)
	if err != nil || len(ops) != 1 {
		t.Fatalf("operations: %v %+v, want one", err, ops)
	}
	op := ops[0]
	if op.Name != "failover-web-3" || op.From != "a" || op.To != "b" || op.State != api.OpRunning || got.Status.Operation != op.Name {
		t.Fatalf("operation %+v (instance says %q)", op, got.Status.Operation)
	}
	for _, step := range []string{api.StepDetected, api.StepFenced, api.StepPromoted} {
		if op.Step(step) == nil {
			t.Errorf("no %s step", step)
		}
	}

	// The new host boots it, then it serves.
	clock = now.Add(5 * time.Second)
	got.Status.Boots, got.Status.Phase, got.Status.Since = 2, api.PhaseRunning, clock
	if err := s.Instances.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	pass()
	clock = now.Add(7 * time.Second)
	got, _ = s.Instances.Get(ctx, "web")
	got.Status.Serving, got.Status.ServingSince = true, clock
	if err := s.Instances.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	pass()
	op, err = s.Operations.Get(ctx, "failover-web-3")
	if err != nil {
		t.Fatal(err)
	}
	if op.State != api.OpSucceeded || op.Step(api.StepBooted) == nil || op.Step(api.StepServing) == nil {
		t.Fatalf("operation after serving: %+v", op)
	}
	got, _ = s.Instances.Get(ctx, "web")
	if got.Status.Operation != "" {
		t.Fatalf("instance still names operation %q after it ended", got.Status.Operation)
	}
	evs, _, err := s.ListEvents(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range evs {
		seen[e.Type]++
	}
	if seen["FailoverStarted"] != 1 || seen["FailoverDone"] != 1 || seen["NotServing"] != 1 {
		t.Fatalf("events %v: want one FailoverStarted, FailoverDone and NotServing", seen)
	}

	// Now b dies too, while its replica (c) is still outdated: blocked,
	// with the reason, once.
	alive = map[string]bool{"c": true}
	pass()
	pass()
	got, _ = s.Instances.Get(ctx, "web")
	if got.Status.Node != "b" || !strings.Contains(got.Status.Message, "outdated") {
		t.Fatalf("double failure: node %s message %q", got.Status.Node, got.Status.Message)
	}
	evs, _, _ = s.ListEvents(ctx, 0)
	blocked := 0
	for _, e := range evs {
		if e.Type == "FailoverBlocked" {
			blocked++
		}
	}
	if blocked != 1 {
		t.Fatalf("%d FailoverBlocked events, want 1", blocked)
	}
}

// TestSharedStorageFailoverWaitsForRoom: with no host that has room, an
// instance on shared storage goes back to Pending with the reason, so the
// placement loop starts it as soon as room appears.
func TestSharedStorageFailoverWaitsForRoom(t *testing.T) {
	s := storetest.NewStore(t, storetest.Embedded(t))
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := New(Config{Store: s, Now: func() time.Time { return now }, StableFor: time.Second})
	old := now.Add(-time.Hour)
	small := node("b", old)
	small.Status.Capacity = res(1, 128, 100)
	for _, n := range []*api.Node{node("a", old), small} {
		if err := s.Nodes.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	in := &api.Instance{Meta: api.Meta{Name: "web", CreatedAt: old},
		Spec:   api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30, State: api.DesiredRunning, Storage: "shared:/mnt"},
		Status: api.InstanceStatus{Node: "a", Epoch: 1, Phase: api.PhaseRunning, Serving: true}}
	if err := s.Instances.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	nodes, _, _ := s.Nodes.List(ctx)
	insts, _, _ := s.Instances.List(ctx)
	if err := c.failover(ctx, nodes, map[string]bool{"b": true}, insts); err != nil {
		t.Fatal(err)
	}
	got, err := s.Instances.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != api.PhasePending || got.Status.Node != "" || !strings.Contains(got.Status.Message, "room") {
		t.Fatalf("phase %s node %q message %q; want Pending, no node, a reason about room", got.Status.Phase, got.Status.Node, got.Status.Message)
	}
	// The outage is in the ledger all the same, from the host's failure.
	led, err := s.ListLedger(ctx, time.Time{}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(led) != 1 || led[0].Instance != "web" || led[0].Serving || led[0].Cause != api.CauseHostFailure {
		t.Fatalf("ledger %+v, want web's host failure", led)
	}
}

// TestConcurrentFailoversOfOneInstance runs two controllers (as two
// leaders would, one deposed but not knowing it yet) on the same snapshot
// at once: exactly one failover commits.
func TestConcurrentFailoversOfOneInstance(t *testing.T) {
	s := storetest.NewStore(t, storetest.Embedded(t))
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	for _, n := range []*api.Node{node("a", old), node("b", old), node("c", old)} {
		if err := s.Nodes.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	in := &api.Instance{Meta: api.Meta{Name: "web", CreatedAt: old},
		Spec:   api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30, State: api.DesiredRunning},
		Status: api.InstanceStatus{Node: "a", ReplicaNode: "b", Epoch: 4, Phase: api.PhaseRunning}}
	if err := s.Instances.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	nodes, _, _ := s.Nodes.List(ctx)
	alive := map[string]bool{"b": true, "c": true}
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		insts, _, _ := s.Instances.List(ctx) // each its own copy of the same revision
		c := New(Config{Store: s, Now: func() time.Time { return now }, StableFor: time.Second})
		go func() { errs <- c.failover(ctx, nodes, alive, insts) }()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ops, _, err := s.Operations.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Instances.Get(ctx, "web")
	if len(ops) != 1 || got.Status.Epoch != 5 {
		t.Fatalf("%d operations, epoch %d; want exactly one failover (epoch 5)", len(ops), got.Status.Epoch)
	}
}

// TestFailoverOfAnInstanceJustServing: an instance that began serving
// less than a TTL before its host's lease expired went down after that
// instant; in the ledger its outage comes after the serving it ends, never
// at the same time (which a report could read in either order).
func TestFailoverOfAnInstanceJustServing(t *testing.T) {
	for i := range 20 { // the ledger's tie-break is a random id
		s := storetest.NewStore(t, storetest.Embedded(t))
		ctx := context.Background()
		now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
		c := New(Config{Store: s, Now: func() time.Time { return now }, StableFor: time.Second, NodeTTL: 3 * time.Second})
		old := now.Add(-time.Hour)
		for _, n := range []*api.Node{node("a", old), node("b", old)} {
			if err := s.Nodes.Create(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		since := now.Add(-time.Second)
		in := &api.Instance{Meta: api.Meta{Name: "web", CreatedAt: old},
			Spec:   api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30, State: api.DesiredRunning, Storage: "shared:/mnt", Owner: "acme"},
			Status: api.InstanceStatus{Node: "a", Epoch: 1, Phase: api.PhaseRunning, Serving: true, ServingSince: since}}
		serving := api.Event{Time: since, Kind: api.KindInstance, Name: "web", Node: "a", Type: "Serving"}
		if err := s.Instances.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Txn(ctx, nil, LedgerOps(s, in, serving)...); err != nil {
			t.Fatal(err)
		}
		nodes, _, _ := s.Nodes.List(ctx)
		insts, _, _ := s.Instances.List(ctx)
		if err := c.failover(ctx, nodes, map[string]bool{"b": true}, insts); err != nil {
			t.Fatal(err)
		}
		led, err := s.ListLedger(ctx, time.Time{}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(led) != 2 || !led[0].Serving || led[1].Serving || led[1].Cause != api.CauseHostFailure || !led[1].Time.After(led[0].Time) {
			t.Fatalf("try %d: ledger %+v, want serving, then the host failure strictly after", i, led)
		}
	}
}
