package scheduler

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func node(name string, cpus, memGiB, diskGiB int64) Node {
	return Node{Name: name, Capacity: Resources{CPUs: cpus, MemMiB: memGiB << 10, DiskMiB: diskGiB << 10}}
}

func inst(name, p, s string, cpus, memGiB, diskGiB int64) Instance {
	return Instance{Name: name, Primary: p, Secondary: s, Size: Resources{CPUs: cpus, MemMiB: memGiB << 10, DiskMiB: diskGiB << 10}}
}

func TestCheckFindsN1Failures(t *testing.T) {
	// b holds the replicas of a's two 8 GiB instances: if a dies, b needs
	// 16 GiB on top of its own 8, but has 20.
	s := Snapshot{
		Nodes: []Node{node("a", 8, 20, 500), node("b", 8, 20, 500), node("c", 8, 20, 500)},
		Instances: []Instance{
			inst("i1", "a", "b", 1, 8, 10),
			inst("i2", "a", "b", 1, 8, 10),
			inst("i3", "b", "c", 1, 8, 10),
		},
	}
	r, err := Check(s)
	if err != nil {
		t.Fatal(err)
	}
	if r.N1Failures != 1 || !r.Nodes[1].N1Fail || r.Nodes[0].N1Fail || r.Nodes[2].N1Fail {
		t.Fatalf("want only b failing N+1, got %+v", r)
	}
	if want := "if a dies, the instances it replicates here need 16.0 GiB of memory; 12.0 GiB is free"; r.Nodes[1].N1Reason != want {
		t.Errorf("reason = %q, want %q", r.Nodes[1].N1Reason, want)
	}
	if r.OK() {
		t.Error("OK() with an N+1 failure")
	}
	if r.Nodes[1].Reserve.MemMiB != 16<<10 || r.Nodes[1].Used.DiskMiB != 30<<10 {
		t.Errorf("b reserve/used = %+v / %+v", r.Nodes[1].Reserve, r.Nodes[1].Used)
	}
}

func TestCheckRejectsInconsistentSnapshots(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Snapshot
		want string
	}{
		{"duplicate node", Snapshot{Nodes: []Node{node("a", 1, 1, 1), node("a", 1, 1, 1)}}, `node "a" appears twice`},
		{"unknown primary", Snapshot{Nodes: []Node{node("a", 1, 1, 1)}, Instances: []Instance{inst("i", "x", "", 1, 1, 1)}}, `primary node "x" is not in the cluster`},
		{"same pair", Snapshot{Nodes: []Node{node("a", 1, 1, 1)}, Instances: []Instance{inst("i", "a", "a", 1, 1, 1)}}, "both primary and secondary"},
		{"negative", Snapshot{Nodes: []Node{node("a", -1, 1, 1)}}, "must not be negative"},
		{"duplicate instance", Snapshot{Nodes: []Node{node("a", 1, 1, 1)}, Instances: []Instance{inst("i", "", "", 1, 1, 1), inst("i", "", "", 1, 1, 1)}}, `instance "i" appears twice`},
		{"bad ratio", Snapshot{Policy: Policy{CPURatio: math.NaN()}}, "policy.cpuRatio"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestAllocateRules(t *testing.T) {
	for _, tc := range []struct {
		name       string
		s          Snapshot
		in         Instance
		force      bool
		wantP      string
		wantS      string
		refusal    string // Resource of the expected refusal
		refusalMsg string
	}{
		{
			name:  "emptiest pair",
			s:     Snapshot{Nodes: []Node{node("a", 8, 32, 500), node("b", 8, 32, 500), node("c", 8, 32, 500)}, Instances: []Instance{inst("x", "a", "b", 2, 16, 10)}},
			in:    inst("new", "", "", 1, 4, 10),
			wantP: "c",
		},
		{
			name:  "single node has no secondary",
			s:     Snapshot{Nodes: []Node{node("a", 8, 32, 500)}},
			in:    inst("new", "", "", 1, 4, 10),
			wantP: "a", wantS: "",
		},
		{
			name:  "shared disk has no secondary",
			s:     Snapshot{Nodes: []Node{node("a", 8, 32, 500), node("b", 8, 32, 500)}},
			in:    Instance{Name: "new", SharedDisk: true, Size: Resources{CPUs: 1, MemMiB: 4 << 10, DiskMiB: 1 << 30}},
			wantP: "a", wantS: "",
		},
		{
			name:    "too big for any node",
			s:       Snapshot{Nodes: []Node{node("a", 8, 8, 500), node("b", 8, 6, 500)}},
			in:      inst("new", "", "", 1, 12, 10),
			refusal: "memory", refusalMsg: "no node has 12.0 GiB of memory free while keeping N+1; the most is 8.0 GiB (on a)",
		},
		{
			// Each node fits 12 GiB alone, but its replica host must be
			// able to take it too.
			name:    "N+1 refuses the second big instance",
			s:       Snapshot{Nodes: []Node{node("a", 8, 20, 500), node("b", 8, 20, 500)}, Instances: []Instance{inst("x", "a", "b", 1, 12, 10)}},
			in:      inst("new", "", "", 1, 12, 10),
			refusal: "memory",
		},
		{
			name:  "force places beyond N+1",
			s:     Snapshot{Nodes: []Node{node("a", 8, 20, 500), node("b", 8, 20, 500)}, Instances: []Instance{inst("x", "a", "b", 1, 12, 10)}},
			in:    inst("new", "", "", 1, 6, 10),
			force: true,
			wantP: "b", wantS: "a",
		},
		{
			name: "spread label keeps racks apart",
			s: Snapshot{Policy: Policy{SpreadLabel: "rack"}, Nodes: []Node{
				{Name: "a", Capacity: Resources{CPUs: 8, MemMiB: 32 << 10, DiskMiB: 500 << 10}, Labels: map[string]string{"rack": "r1"}},
				{Name: "b", Capacity: Resources{CPUs: 8, MemMiB: 32 << 10, DiskMiB: 500 << 10}, Labels: map[string]string{"rack": "r1"}},
				{Name: "c", Capacity: Resources{CPUs: 8, MemMiB: 8 << 10, DiskMiB: 500 << 10}, Labels: map[string]string{"rack": "r2"}},
			}},
			in:    inst("new", "", "", 1, 4, 10),
			wantS: "c",
		},
		{
			name: "anti-affinity group avoids a's node",
			s: Snapshot{Nodes: []Node{node("a", 8, 64, 500), node("b", 8, 32, 500), node("c", 8, 32, 500)},
				Instances: []Instance{{Name: "web-1", Group: "web", Primary: "a", Secondary: "b", Size: Resources{CPUs: 1, MemMiB: 1 << 10, DiskMiB: 1 << 10}}}},
			in: Instance{Name: "web-2", Group: "web", Size: Resources{CPUs: 1, MemMiB: 1 << 10, DiskMiB: 1 << 10}},
		},
		{
			name:    "no schedulable node",
			s:       Snapshot{Nodes: []Node{{Name: "a", Unschedulable: true, Capacity: Resources{CPUs: 8, MemMiB: 8 << 10, DiskMiB: 8 << 10}}}},
			in:      inst("new", "", "", 1, 1, 1),
			refusal: "nodes",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := Allocate(tc.s, tc.in, AllocateOptions{Force: tc.force})
			if tc.refusal != "" {
				var ref *RefusalError
				if !errors.As(err, &ref) || ref.Resource != tc.refusal {
					t.Fatalf("err = %v (%T), want a %s refusal", err, err, tc.refusal)
				}
				if tc.refusalMsg != "" && ref.Message != tc.refusalMsg {
					t.Fatalf("message = %q, want %q", ref.Message, tc.refusalMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantP != "" && pl.Primary != tc.wantP {
				t.Errorf("primary = %s, want %s", pl.Primary, tc.wantP)
			}
			if (tc.wantS != "" || tc.wantP != "") && pl.Secondary != tc.wantS && tc.wantS != "" {
				t.Errorf("secondary = %s, want %s", pl.Secondary, tc.wantS)
			}
			if tc.in.Group != "" && pl.Primary == "a" {
				t.Errorf("web-2 placed on a, next to web-1")
			}
			if tc.wantP == "a" && tc.wantS == "" && pl.Secondary != "" {
				t.Errorf("secondary = %s, want none", pl.Secondary)
			}
		})
	}
}

func TestMoveKindsAndBytes(t *testing.T) {
	s := Snapshot{Nodes: []Node{node("a", 8, 32, 500), node("b", 8, 32, 500), node("c", 8, 32, 500)},
		Instances: []Instance{inst("i", "a", "b", 1, 2, 10)}}
	mem, disk := int64(2<<30), int64(10<<30)
	for _, tc := range []struct {
		p, s  string
		kind  MoveKind
		bytes int64
	}{
		{"b", "a", MoveFailover, mem},
		{"a", "c", MoveReplaceSecondary, disk},
		{"c", "a", MoveReplaceAndFailover, disk + mem},
		{"b", "c", MoveFailoverAndReplace, disk + mem},
		{"c", "b", MovePrimary, disk + mem},
	} {
		plan, err := Evaluate(s, []Move{{Instance: "i", NewPrimary: tc.p, NewSecondary: tc.s}})
		if err != nil {
			t.Fatal(err)
		}
		m := plan.Moves[0]
		if m.Kind != tc.kind || m.Bytes != tc.bytes || m.OldPrimary != "a" || m.OldSecondary != "b" {
			t.Errorf("%s:%s => kind %s bytes %d, want %s %d", tc.p, tc.s, m.Kind, m.Bytes, tc.kind, tc.bytes)
		}
	}
	if _, err := Evaluate(s, []Move{{Instance: "nope", NewPrimary: "a"}}); err == nil || !strings.Contains(err.Error(), "move 1") {
		t.Errorf("unknown instance: err = %v", err)
	}
}

// genCluster makes a cluster of n nodes of three generations with about
// perNode instances each; skew puts that share of the instances on the
// first third of the nodes.
func genCluster(rng *rand.Rand, n, perNode int, skew float64) Snapshot {
	gens := []Resources{{16, 64 << 10, 1 << 20}, {32, 128 << 10, 2 << 20}, {48, 256 << 10, 4 << 20}}
	var s Snapshot
	for i := 0; i < n; i++ {
		s.Nodes = append(s.Nodes, Node{Name: fmt.Sprintf("node-%d", i), Capacity: gens[i%len(gens)]})
	}
	c, _ := NewCluster(s)
	hot := max(n/3, 2)
	for k := 0; k < n*perNode; k++ {
		size := Resources{CPUs: int64(1 + rng.IntN(8)), MemMiB: int64(1+rng.IntN(16)) << 10, DiskMiB: int64(10+rng.IntN(190)) << 10}
		name := fmt.Sprintf("inst-%d", k)
		if skew > 0 && rng.Float64() < skew && n > 2 {
			// Packed: a random hot primary, a random other secondary,
			// ignoring N+1 (capacity still holds).
			for try := 0; try < 20; try++ {
				p, sec := rng.IntN(hot), rng.IntN(n)
				if p == sec {
					continue
				}
				i := int32(len(c.insts))
				c.insts = append(c.insts, instState{name: name, size: size, p: none, s: none, group: none})
				if _, ok := c.try(i, int32(p), int32(sec), false); ok {
					c.byInst[name] = i
					c.move(i, int32(p), int32(sec))
					break
				}
				c.insts = c.insts[:i]
			}
			continue
		}
		c.Allocate(Instance{Name: name, Size: size}, AllocateOptions{})
	}
	return c.Snapshot()
}

// TestPropertyAllocateKeepsCapacityAndN1: on an N+1-clean cluster, no
// allocation ever breaks capacity or N+1.
func TestPropertyAllocateKeepsCapacityAndN1(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "nodes")
		s := Snapshot{Policy: Policy{CPURatio: rapid.SampledFrom([]float64{1, 2, 4}).Draw(t, "cpuRatio")}}
		for i := 0; i < n; i++ {
			s.Nodes = append(s.Nodes, Node{Name: fmt.Sprintf("n%d", i), Unschedulable: rapid.IntRange(0, 9).Draw(t, "unsched") == 0,
				Capacity: Resources{CPUs: rapid.Int64Range(1, 32).Draw(t, "cpus"), MemMiB: rapid.Int64Range(1, 64).Draw(t, "mem") << 10, DiskMiB: rapid.Int64Range(1, 500).Draw(t, "disk") << 10}})
		}
		c, err := NewCluster(s)
		if err != nil {
			t.Fatal(err)
		}
		count := rapid.IntRange(1, 60).Draw(t, "instances")
		for k := 0; k < count; k++ {
			size := Resources{CPUs: rapid.Int64Range(0, 8).Draw(t, "icpu"), MemMiB: rapid.Int64Range(1, 16<<10).Draw(t, "imem"), DiskMiB: rapid.Int64Range(0, 100<<10).Draw(t, "idisk")}
			_, err := c.Allocate(Instance{Name: fmt.Sprintf("i%d", k), Size: size, SharedDisk: rapid.IntRange(0, 5).Draw(t, "shared") == 0}, AllocateOptions{})
			var ref *RefusalError
			if err != nil && !errors.As(err, &ref) {
				t.Fatal(err)
			}
			r := c.Check()
			if r.N1Failures != 0 || r.Over != 0 {
				t.Fatalf("after %d allocations: %d N+1 failures, %d over-allocated: %+v", k+1, r.N1Failures, r.Over, r.Nodes)
			}
			for _, nr := range r.Nodes {
				if nr.Primaries+nr.Secondaries > 0 && s.Nodes[indexOf(s.Nodes, nr.Name)].Unschedulable {
					t.Fatalf("instance placed on unschedulable node %s", nr.Name)
				}
			}
			checkSums(t, c)
		}
	})
}

func indexOf(nodes []Node, name string) int {
	for i, n := range nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// checkSums fails when the running sums drifted from a recount.
func checkSums(t interface {
	Helper()
	Fatalf(string, ...any)
}, c *Cluster) {
	t.Helper()
	before := c.Score()
	c.recount()
	if after := c.Score(); math.Abs(before-after) > 1e-6 {
		t.Fatalf("running score %v, recounted %v", before, after)
	}
}

// TestPropertyRebalanceNeverWorse: a plan never raises the score, its
// moves replayed by Evaluate reach the same score, and no move puts a node
// over capacity.
func TestPropertyRebalanceNeverWorse(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1))
		maxNodes := 50
		if raceEnabled {
			maxNodes = 12 // the same code, a slower machine
		}
		n := rapid.IntRange(2, maxNodes).Draw(t, "nodes")
		s := genCluster(rng, n, rapid.IntRange(1, 8).Draw(t, "perNode"), rapid.Float64Range(0, 0.8).Draw(t, "skew"))
		before, err := Check(s)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := Rebalance(s, RebalanceOptions{MaxMoves: rapid.IntRange(0, 40).Draw(t, "maxMoves")})
		if err != nil {
			t.Fatal(err)
		}
		if plan.ScoreAfter > plan.ScoreBefore+1e-9 {
			t.Fatalf("score rose from %v to %v", plan.ScoreBefore, plan.ScoreAfter)
		}
		prev := plan.ScoreBefore
		for k, m := range plan.Moves {
			if m.ScoreAfter > prev+1e-9 {
				t.Fatalf("move %d raised the score %v -> %v", k+1, prev, m.ScoreAfter)
			}
			prev = m.ScoreAfter
		}
		replay, err := Evaluate(s, plan.Moves)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(replay.ScoreAfter-plan.ScoreAfter) > 1e-6 || replay.Bytes != plan.Bytes || replay.N1After != plan.N1After {
			t.Fatalf("replay %v/%d/%d, plan %v/%d/%d", replay.ScoreAfter, replay.Bytes, replay.N1After, plan.ScoreAfter, plan.Bytes, plan.N1After)
		}
		after, _ := Check(applyPlan(s, plan))
		if after.Over > before.Over {
			t.Fatalf("over-allocated nodes %d -> %d", before.Over, after.Over)
		}
	})
}

func applyPlan(s Snapshot, plan Plan) Snapshot {
	c, _ := NewCluster(s)
	for _, m := range plan.Moves {
		c.move(c.byInst[m.Instance], c.byNode[m.NewPrimary], ref(c, m.NewSecondary))
	}
	return c.Snapshot()
}

func ref(c *Cluster, name string) int32 {
	if name == "" {
		return none
	}
	return c.byNode[name]
}

func TestRebalanceFixesSkew(t *testing.T) {
	for _, n := range []int{10, 30, 100, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			if n >= 1000 && testing.Short() || n >= 100 && raceEnabled {
				t.Skip("large cluster in -short mode or under the race detector (bench/placement measures it)")
			}
			s := genCluster(rand.New(rand.NewPCG(uint64(n), 7)), n, 8, 0.6)
			before, _ := Check(s)
			if before.N1Failures == 0 {
				t.Fatalf("the skewed cluster should fail N+1")
			}
			start := time.Now()
			plan, err := Rebalance(s, RebalanceOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d nodes: N+1 failures %d -> %d, score %.3f -> %.3f, %d moves, %.1f GiB, %s",
				n, plan.N1Before, plan.N1After, plan.ScoreBefore, plan.ScoreAfter, len(plan.Moves), float64(plan.Bytes)/(1<<30), time.Since(start))
			if plan.N1After != 0 {
				t.Errorf("%d nodes still fail N+1", plan.N1After)
			}
		})
	}
}

func TestCapacityCountsAndNamesTheLimit(t *testing.T) {
	s := Snapshot{Nodes: []Node{node("a", 64, 32, 1000), node("b", 64, 32, 1000), node("c", 64, 32, 1000)}}
	r, err := Capacity(s, Resources{CPUs: 1, MemMiB: 4 << 10, DiskMiB: 10 << 10})
	if err != nil {
		t.Fatal(err)
	}
	// 96 GiB in all; each node must keep room for what fails over onto
	// it. The best spread leaves a third of each node free: 16 of 4 GiB.
	if r.Fit != 16 || r.Limit != "memory" {
		t.Fatalf("fit %d limited by %s (%s), want 16 by memory", r.Fit, r.Limit, r.Reason)
	}
	if _, err := Capacity(s, Resources{}); err == nil {
		t.Fatal("an empty size was accepted")
	}
}

func TestAllocateManyIsFast(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("100,000 allocations in -short mode or under the race detector (bench/placement measures it)")
	}
	var s Snapshot
	for i := 0; i < 10000; i++ {
		s.Nodes = append(s.Nodes, node(fmt.Sprintf("n%d", i), 32, 256, 4000))
	}
	c, err := NewCluster(s)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for k := 0; k < 100000; k++ {
		if _, err := c.Allocate(inst(fmt.Sprintf("i%d", k), "", "", 2, 4, 40), AllocateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d := time.Since(start)
	t.Logf("100,000 allocations on 10,000 nodes: %s", d)
	if r := c.Check(); r.N1Failures != 0 || r.Over != 0 {
		t.Fatalf("allocations broke N+1: %d", r.N1Failures)
	}
}

func TestSecondaryPrefersN1Room(t *testing.T) {
	// After a failover onto b, the new replica goes where b's instances
	// can fail over: c has room, d would fail N+1.
	s := Snapshot{
		Nodes: []Node{node("b", 8, 32, 500), node("c", 8, 32, 500), node("d", 8, 12, 500)},
		Instances: []Instance{
			inst("moved", "b", "", 1, 8, 10),
			inst("other", "d", "c", 1, 8, 10),
		},
	}
	c, err := NewCluster(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Secondary("moved")
	if err != nil || got != "c" {
		t.Fatalf("Secondary = %q, %v; want c", got, err)
	}
	s.Nodes[1].Unschedulable = true // c cordoned: only d is left, beyond N+1
	c, _ = NewCluster(s)
	if got, err := c.Secondary("moved"); err != nil || got != "d" {
		t.Fatalf("Secondary with c cordoned = %q, %v; want d", got, err)
	}
}

func TestOverAllocatedIsNotN1(t *testing.T) {
	s := Snapshot{Nodes: []Node{node("a", 8, 4, 500), node("b", 8, 32, 500)},
		Instances: []Instance{inst("big", "a", "", 1, 8, 10)}}
	r, err := Check(s)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Nodes[0].Over || r.Nodes[0].N1Fail || r.N1Failures != 0 {
		t.Fatalf("want a over-allocated and not failing N+1: %+v", r.Nodes[0])
	}
	full := Snapshot{Nodes: []Node{node("a", 8, 0, 500)}}
	_, err = Allocate(full, inst("x", "", "", 1, 1, 1), AllocateOptions{})
	if err == nil || !strings.Contains(err.Error(), "every schedulable node is full") {
		t.Fatalf("err = %v", err)
	}
}

func TestPlaceThenSecondarySpreads(t *testing.T) {
	// Two instances leave dead host a for b: their new replicas should not
	// both land on c when d has as much room.
	s := Snapshot{
		Nodes: []Node{{Name: "a", Offline: true, Capacity: Resources{CPUs: 8, MemMiB: 32 << 10, DiskMiB: 500 << 10}},
			node("b", 8, 32, 500), node("c", 8, 32, 500), node("d", 8, 32, 500)},
		Instances: []Instance{inst("x", "a", "b", 1, 8, 10), inst("y", "a", "b", 1, 8, 10)},
	}
	c, err := NewCluster(s)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, name := range []string{"x", "y"} {
		if err := c.Place(name, "b", ""); err != nil {
			t.Fatal(err)
		}
		sec, err := c.Secondary(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Place(name, "b", sec); err != nil {
			t.Fatal(err)
		}
		got = append(got, sec)
	}
	if got[0] == got[1] {
		t.Fatalf("both replicas on %s", got[0])
	}
	if err := c.Place("x", "b", "b"); err == nil {
		t.Fatal("same primary and secondary accepted")
	}
}
