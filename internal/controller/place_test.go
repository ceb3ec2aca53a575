package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
)

// placeEnv is a store with nodes and a controller, and a way to run
// placement passes against it.
type placeEnv struct {
	t     *testing.T
	ctx   context.Context
	s     *store.Store
	c     *Controller
	alive map[string]bool
	now   time.Time
}

func newPlaceEnv(t *testing.T, cfg Config, nodes ...*api.Node) *placeEnv {
	t.Helper()
	s := storetest.NewStore(t, storetest.Embedded(t))
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	// Each reading of the clock is a millisecond later, so events (keyed by
	// time) list in the order they were written.
	ticks := 0
	cfg.Store, cfg.Now = s, func() time.Time { ticks++; return now.Add(time.Duration(ticks) * time.Millisecond) }
	e := &placeEnv{t: t, ctx: context.Background(), s: s, c: New(cfg), alive: map[string]bool{}, now: now}
	for _, n := range nodes {
		if err := s.Nodes.Create(e.ctx, n); err != nil {
			t.Fatal(err)
		}
		e.alive[n.Name] = true
	}
	return e
}

// create stores a Pending instance created at the given offset from now.
func (e *placeEnv) create(name string, after time.Duration, spec api.InstanceSpec) {
	e.t.Helper()
	spec.Image, spec.State = "demo", api.DesiredRunning
	in := &api.Instance{Meta: api.Meta{Name: name, CreatedAt: e.now.Add(after)}, Spec: spec,
		Status: api.InstanceStatus{Phase: api.PhasePending, Since: e.now, Message: "waiting for a host"}}
	if err := e.s.Instances.Create(e.ctx, in); err != nil {
		e.t.Fatal(err)
	}
}

// pass runs one placement pass over the store's current state.
func (e *placeEnv) pass() {
	e.t.Helper()
	nodes, _, err := e.s.Nodes.List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	insts, _, err := e.s.Instances.List(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.c.place(e.ctx, nodes, e.alive, insts); err != nil {
		e.t.Fatal(err)
	}
}

func (e *placeEnv) get(name string) *api.Instance {
	e.t.Helper()
	in, err := e.s.Instances.Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// events counts the events of each type about instance name.
func (e *placeEnv) events(name string) (map[string]int, []api.Event) {
	e.t.Helper()
	evs, _, err := e.s.ListEvents(e.ctx, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	seen := map[string]int{}
	var mine []api.Event
	for _, ev := range evs {
		if ev.Name == name {
			seen[ev.Type]++
			mine = append(mine, ev)
		}
	}
	return seen, mine
}

func sized(cpus int, memMiB, diskGiB int64) api.InstanceSpec {
	return api.InstanceSpec{CPUs: cpus, Memory: api.Bytes(memMiB << 20), Disk: api.Bytes(diskGiB << 30)}
}

func capNode(name string, cpus int, memMiB, diskGiB int64) *api.Node {
	return &api.Node{Meta: api.Meta{Name: name}, Status: api.NodeStatus{State: api.NodeReady, Capacity: res(cpus, memMiB, diskGiB)}}
}

// TestPlaceRefusesWithoutNPlusOne: on two 4 GiB hosts, a 3 GiB instance
// fits, and a second one would fit on the other host's memory alone (first
// fit placed it), but then neither host could take the other's instance
// if it died. The scheduler refuses it; it stays Pending with the reason,
// and one Unschedulable event however many passes run.
func TestPlaceRefusesWithoutNPlusOne(t *testing.T) {
	e := newPlaceEnv(t, Config{}, capNode("a", 4, 4096, 100), capNode("b", 4, 4096, 100))
	e.create("one", 0, sized(1, 3072, 10))
	e.create("two", time.Second, sized(1, 3072, 10))
	e.pass()
	e.pass()
	one := e.get("one")
	if one.Status.Phase != api.PhaseScheduled || one.Status.Node == "" || one.Status.ReplicaNode == "" || one.Status.Node == one.Status.ReplicaNode {
		t.Fatalf("one: phase %s node %q replica %q, want Scheduled on a pair of hosts", one.Status.Phase, one.Status.Node, one.Status.ReplicaNode)
	}
	two := e.get("two")
	if two.Status.Phase != api.PhasePending || two.Status.Node != "" {
		t.Fatalf("two: phase %s on %q, want Pending nowhere: it would break N+1", two.Status.Phase, two.Status.Node)
	}
	msg := two.Status.Message
	if !strings.Contains(msg, "N+1") || !strings.Contains(msg, "memory") {
		t.Fatalf("two's message %q does not explain the refusal (memory, N+1)", msg)
	}
	seen, evs := e.events("two")
	if seen["Unschedulable"] != 1 {
		t.Fatalf("events of two %v, want one Unschedulable", seen)
	}
	for _, ev := range evs {
		if ev.Type == "Unschedulable" && ev.Message != msg {
			t.Fatalf("Unschedulable event says %q, the instance %q", ev.Message, msg)
		}
	}

	// A third host brings room: the next pass places it.
	if err := e.s.Nodes.Create(e.ctx, capNode("c", 4, 4096, 100)); err != nil {
		t.Fatal(err)
	}
	e.alive["c"] = true
	e.pass()
	two = e.get("two")
	if two.Status.Phase != api.PhaseScheduled || two.Status.Node == "" || two.Status.ReplicaNode == "" {
		t.Fatalf("two after a third host joined: phase %s node %q replica %q (%s)", two.Status.Phase, two.Status.Node, two.Status.ReplicaNode, two.Status.Message)
	}
}

// TestPlace keeps what placement did before the scheduler: Pending
// instances get a host and a replica in creation order under a new epoch,
// with the replica outdated; shared storage gets no replica; a single host
// gets no replica; dead and cordoned hosts take nothing; a second pass
// changes nothing. And what the scheduler adds: an anti-affinity group
// spreads over hosts.
func TestPlace(t *testing.T) {
	t.Run("pairs in creation order", func(t *testing.T) {
		cordoned := capNode("d", 64, 65536, 1000)
		cordoned.Spec.Unschedulable = true
		e := newPlaceEnv(t, Config{}, capNode("a", 8, 16384, 200), capNode("b", 8, 16384, 200), capNode("c", 8, 16384, 200), cordoned, capNode("dead", 64, 65536, 1000))
		e.alive["dead"] = false
		e.create("late", 2*time.Second, sized(1, 1024, 10))
		e.create("early", 0, sized(1, 1024, 10))
		shared := sized(1, 1024, 10)
		shared.Storage = "shared:/mnt/ferry"
		e.create("shared", time.Second, shared)
		e.pass()
		for _, name := range []string{"early", "late"} {
			in := e.get(name)
			st := in.Status
			if st.Phase != api.PhaseScheduled || st.Node == "" || st.ReplicaNode == "" || st.Node == st.ReplicaNode || st.Epoch != 1 || !st.ReplicaOutdated {
				t.Fatalf("%s: %+v, want Scheduled on two hosts, epoch 1, replica outdated", name, st)
			}
			for _, n := range []string{st.Node, st.ReplicaNode} {
				if n == "d" || n == "dead" {
					t.Fatalf("%s placed on %s (cordoned or dead)", name, n)
				}
			}
			if st.Message != "placed on "+st.Node {
				t.Fatalf("%s: message %q", name, st.Message)
			}
		}
		sh := e.get("shared")
		if sh.Status.Node == "" || sh.Status.ReplicaNode != "" || sh.Status.ReplicaOutdated {
			t.Fatalf("shared: node %q replica %q outdated %v, want a host and no replica", sh.Status.Node, sh.Status.ReplicaNode, sh.Status.ReplicaOutdated)
		}
		// Creation order: early's event comes first.
		evs, _, err := e.s.ListEvents(e.ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, ev := range evs {
			if ev.Type == "Scheduled" {
				order = append(order, ev.Name)
			}
		}
		if strings.Join(order, ",") != "early,shared,late" {
			t.Fatalf("placed in order %v, want early, shared, late", order)
		}
		before := e.get("early").ResourceVersion
		e.pass()
		if e.get("early").ResourceVersion != before {
			t.Fatal("a second pass rewrote a placed instance")
		}
	})
	t.Run("single host: no replica", func(t *testing.T) {
		e := newPlaceEnv(t, Config{}, capNode("solo", 4, 4096, 100))
		e.create("web", 0, sized(1, 256, 1))
		e.pass()
		in := e.get("web")
		if in.Status.Node != "solo" || in.Status.ReplicaNode != "" || in.Status.ReplicaOutdated {
			t.Fatalf("web: node %q replica %q outdated %v, want solo, none", in.Status.Node, in.Status.ReplicaNode, in.Status.ReplicaOutdated)
		}
		if seen, _ := e.events("web"); seen["Scheduled"] != 1 {
			t.Fatalf("events %v, want one Scheduled", seen)
		}
	})
	t.Run("no host at all", func(t *testing.T) {
		e := newPlaceEnv(t, Config{}, capNode("dead", 4, 4096, 100))
		e.alive["dead"] = false
		e.create("web", 0, sized(1, 256, 1))
		e.pass()
		in := e.get("web")
		if in.Status.Phase != api.PhasePending || !strings.Contains(in.Status.Message, "no node") {
			t.Fatalf("web: %s %q, want Pending with a reason", in.Status.Phase, in.Status.Message)
		}
	})
	t.Run("anti-affinity group spreads", func(t *testing.T) {
		e := newPlaceEnv(t, Config{}, capNode("a", 8, 16384, 200), capNode("b", 8, 16384, 200), capNode("c", 8, 16384, 200))
		for i, name := range []string{"web-1", "web-2", "web-3"} {
			spec := sized(1, 1024, 10)
			spec.Group = "web"
			e.create(name, time.Duration(i)*time.Second, spec)
		}
		e.pass()
		hosts := map[string]string{}
		for _, name := range []string{"web-1", "web-2", "web-3"} {
			n := e.get(name).Status.Node
			if other, dup := hosts[n]; dup {
				t.Fatalf("%s and %s of group web share host %q", other, name, n)
			}
			hosts[n] = name
		}
	})
	t.Run("spread label keeps the replica in another rack", func(t *testing.T) {
		rack := func(n *api.Node, r string) *api.Node { n.Spec.Labels = map[string]string{"rack": r}; return n }
		e := newPlaceEnv(t, Config{SpreadLabel: "rack"},
			rack(capNode("a1", 8, 16384, 200), "r1"), rack(capNode("a2", 8, 16384, 200), "r1"),
			rack(capNode("b1", 8, 16384, 200), "r2"), rack(capNode("b2", 8, 16384, 200), "r2"))
		for i := range 4 {
			e.create("web-"+string(rune('1'+i)), time.Duration(i)*time.Second, sized(1, 1024, 10))
		}
		e.pass()
		for i := range 4 {
			st := e.get("web-" + string(rune('1'+i))).Status
			if st.Node == "" || st.ReplicaNode == "" || st.Node[0] == st.ReplicaNode[0] {
				t.Fatalf("web-%d on %q with its replica on %q: want different racks", i+1, st.Node, st.ReplicaNode)
			}
		}
	})
}

// TestPlaceCountsMigrationsInFlight: a host a migration is copying a
// guest to has that guest's memory spoken for. Three 4 GiB hosts; i1
// (2 GiB) runs on a, replica on b, and moves to c: a new 3 GiB instance
// would fit on c alone, so it waits until the move is done and then takes
// the room i1 left on a.
func TestPlaceCountsMigrationsInFlight(t *testing.T) {
	e := newPlaceEnv(t, Config{}, capNode("a", 4, 4096, 100), capNode("b", 4, 4096, 100), capNode("c", 4, 4096, 100))
	i1 := &api.Instance{Meta: api.Meta{Name: "i1", CreatedAt: e.now}, Spec: sized(1, 2048, 10),
		Status: api.InstanceStatus{Phase: api.PhaseRunning, Node: "a", ReplicaNode: "b", Epoch: 1,
			Migration: &api.MigrationStatus{Operation: "migrate-i1-1-1", Mode: api.MigrateLive, Source: "a", Target: "c", Phase: api.MigCopy, Copy: true}}}
	i1.Spec.Image, i1.Spec.State = "demo", api.DesiredRunning
	if err := e.s.Instances.Create(e.ctx, i1); err != nil {
		t.Fatal(err)
	}
	e.create("new", time.Second, sized(1, 3072, 10))
	e.pass()
	if in := e.get("new"); in.Status.Node != "" {
		t.Fatalf("new placed on %s (replica %s) while i1 moves to c", in.Status.Node, in.Status.ReplicaNode)
	}
	i1 = e.get("i1")
	i1.Status.Node, i1.Status.Migration = "c", nil
	if err := e.s.Instances.Update(e.ctx, i1); err != nil {
		t.Fatal(err)
	}
	e.pass()
	if in := e.get("new"); in.Status.Node != "a" {
		t.Fatalf("new on %q (replica %q) after the move, want a", in.Status.Node, in.Status.ReplicaNode)
	}
}
