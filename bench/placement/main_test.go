package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// hbalPartial is hbal 3.0.2's output cut short, as a run stopped at its
// time limit leaves it; hbalComplete is the whole of it.
const hbalPartial = `Loaded 10 nodes, 80 instances
Group size 10 nodes, 80 instances
Selected node group: default
Initial check done: 3 bad nodes, 0 bad instances.
Initial score: 107.16427190
Trying to minimize the CV...
    1. inst-000004 node-00026:node-00007 => node-00008:node-00026  93.82484339 a=r:node-00008 f
    2. inst-000193 node-00026:node-00007 => node-00029:node-00007  78.69260086 a=f r:node-00029 f
    3. inst-000059 node-00007:node-00010 => node-00007:node-00009   1.07324291 a=r:node-00009
`

const hbalComplete = hbalPartial + `Cluster score improved from 107.16427190 to 1.07324291
Solution length=3
`

func TestParseHbal(t *testing.T) {
	r, err := parseHbal([]byte(hbalPartial))
	if err != nil {
		t.Fatal(err)
	}
	if r.Complete || len(r.Steps) != 3 || r.InitScore != 107.16427190 || r.FinalScore != 1.07324291 {
		t.Fatalf("partial: %+v", r)
	}
	want := hbalStep{Instance: "inst-000193", OldPrimary: "node-00026", OldSecondary: "node-00007",
		NewPrimary: "node-00029", NewSecondary: "node-00007", Score: 78.69260086, Actions: "f r:node-00029 f"}
	if r.Steps[1] != want {
		t.Fatalf("step 2: got %+v, want %+v", r.Steps[1], want)
	}
	r, err = parseHbal([]byte(hbalComplete))
	if err != nil || !r.Complete {
		t.Fatalf("complete: %+v, %v", r, err)
	}
	m := r.moves()
	if len(m) != 3 || m[2].Instance != "inst-000059" || m[2].NewPrimary != "node-00007" || m[2].NewSecondary != "node-00009" {
		t.Fatalf("moves: %+v", m)
	}
	if _, err := parseHbal([]byte(hbalPartial + "Solution length=4\n")); err == nil {
		t.Fatal("a solution length that does not match the steps is accepted")
	}
}

func TestKeyValues(t *testing.T) {
	kv := keyValues([]byte("HTS_OK=1\nHTS_TSPEC='4096,102400,2,1=225 2560,102400,2,1=20'\nnoise\n"))
	if kv["HTS_OK"] != "1" || kv["HTS_TSPEC"] != "4096,102400,2,1=225 2560,102400,2,1=20" {
		t.Fatalf("%q", kv)
	}
	if got := standardAlloc(scheduler.Resources{CPUs: 2, MemMiB: 4096, DiskMiB: 40960}); got != "40960,4096,2" {
		t.Fatalf("--standard-alloc takes disk,memory,cpu: got %s", got)
	}
}

// checkCapacity fails when a node holds more than it has: memory and CPU
// (overcommitted 4 times) of its primaries, disk of its primaries and
// secondaries.
func checkCapacity(t *testing.T, s scheduler.Snapshot) {
	t.Helper()
	used := map[string]scheduler.Resources{}
	for _, in := range s.Instances {
		if in.Primary == "" || in.Secondary == "" || in.Primary == in.Secondary {
			t.Fatalf("%s: pair %q:%q", in.Name, in.Primary, in.Secondary)
		}
		used[in.Primary] = used[in.Primary].Add(in.Size)
		u := used[in.Secondary]
		u.DiskMiB += in.Size.DiskMiB
		used[in.Secondary] = u
	}
	for _, nd := range s.Nodes {
		u, c := used[nd.Name], nd.Capacity
		if u.MemMiB > c.MemMiB || u.DiskMiB > c.DiskMiB || u.CPUs > cpuRatio*c.CPUs {
			t.Fatalf("%s over capacity: uses %+v of %+v", nd.Name, u, c)
		}
	}
}

func TestGenerators(t *testing.T) {
	for _, n := range []int{10, 30, 100} {
		s, err := genClean(n, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Instances) != 3*n || ganetiN1(s) != 0 {
			t.Fatalf("clean-%d: %d instances, %d failing N+1", n, len(s.Instances), ganetiN1(s))
		}
		checkCapacity(t, s)
		again, _ := genClean(n, 1)
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("clean-%d: not deterministic", n)
		}

		s, err = genSkewed(n, 1)
		if err != nil {
			t.Fatal(err)
		}
		checkCapacity(t, s)
		if f, want := ganetiN1(s), (n+2)/4; f != want {
			t.Fatalf("skewed-%d: %d nodes fail N+1, want %d", n, f, want)
		}
		if k := len(s.Instances); k < 7*n || k > 8*n {
			t.Fatalf("skewed-%d: %d instances, want about %d", n, k, 8*n)
		}
		// The busiest third of the nodes runs well over a third of the
		// primaries.
		if share := busiestThird(s); share < 0.5 {
			t.Fatalf("skewed-%d: the busiest third runs %.0f%% of the primaries", n, 100*share)
		}
		again, _ = genSkewed(n, 1)
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("skewed-%d: not deterministic", n)
		}
	}
}

func TestApplyMoves(t *testing.T) {
	s := scheduler.Snapshot{Instances: []scheduler.Instance{{Name: "a", Primary: "n1", Secondary: "n2"}, {Name: "b", Primary: "n2", Secondary: "n3"}}}
	after, err := applyMoves(s, []scheduler.Move{{Instance: "b", NewPrimary: "n3", NewSecondary: "n1"}})
	if err != nil || after.Instances[1].Primary != "n3" || after.Instances[1].Secondary != "n1" || s.Instances[1].Primary != "n2" {
		t.Fatalf("%+v %v (original %+v)", after.Instances, err, s.Instances)
	}
	if _, err := applyMoves(s, []scheduler.Move{{Instance: "c"}}); err == nil {
		t.Fatal("a move of an unknown instance is accepted")
	}
}

// TestHcheckAgrees checks that hcheck reads the generated files as the
// generator means them (when htools is installed).
func TestHcheckAgrees(t *testing.T) {
	if _, err := exec.LookPath("hcheck"); err != nil {
		t.Skip("hcheck not installed")
	}
	dir := t.TempDir()
	for _, gen := range []func(int, uint64) (scheduler.Snapshot, error){genClean, genSkewed} {
		s, err := gen(12, 3)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "c.data")
		if err := writeSnapshotFile(file, s); err != nil {
			t.Fatal(err)
		}
		hc, err := hcheck(context.Background(), file)
		if err != nil {
			t.Fatal(err)
		}
		if hc.N1Fail != ganetiN1(s) {
			t.Fatalf("hcheck: %d nodes fail N+1, the generator: %d", hc.N1Fail, ganetiN1(s))
		}
		back, err := readSnapshotFile(file)
		if err != nil || len(back.Nodes) != len(s.Nodes) || len(back.Instances) != len(s.Instances) || back.Nodes[0].Capacity != s.Nodes[0].Capacity {
			t.Fatalf("read back: %v", err)
		}
	}
}
