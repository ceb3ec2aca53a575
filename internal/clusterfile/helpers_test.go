package clusterfile

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

var update = flag.Bool("update", false, "rewrite the golden .json files under testdata/ganeti from ReadGaneti")

// goodFiles returns the paths of the good test files matching pattern.
func goodFiles(t testing.TB, pattern string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no test files match %s (%v)", pattern, err)
	}
	return paths
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// equalSnapshots fails the test with a readable diff when a != b.
func equalSnapshots(t testing.TB, what string, got, want scheduler.Snapshot) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	var g, w bytes.Buffer
	if err := WriteSnapshot(&g, got); err != nil {
		g.WriteString(err.Error())
	}
	if err := WriteSnapshot(&w, want); err != nil {
		w.WriteString(err.Error())
	}
	gl, wl := strings.Split(g.String(), "\n"), strings.Split(w.String(), "\n")
	for i := range max(len(gl), len(wl)) {
		var a, b string
		if i < len(gl) {
			a = gl[i]
		}
		if i < len(wl) {
			b = wl[i]
		}
		if a != b {
			t.Fatalf("%s: snapshots differ at JSON line %d:\n got: %s\nwant: %s\n(got %+v\nwant %+v)", what, i+1, a, b, got, want)
		}
	}
	t.Fatalf("%s: snapshots differ:\n got %#v\nwant %#v", what, got, want)
}

// sample is a cluster with every feature both formats hold.
func sample() scheduler.Snapshot {
	res := func(cpus, mem, disk int64) scheduler.Resources {
		return scheduler.Resources{CPUs: cpus, MemMiB: mem, DiskMiB: disk}
	}
	return scheduler.Snapshot{
		Policy: scheduler.Policy{CPURatio: 2.5, SpreadLabel: "rack"},
		Nodes: []scheduler.Node{
			{Name: "node1", Capacity: res(16, 65536, 1<<20), Labels: map[string]string{"group": "default", "rack": "r1", "ssd": ""}},
			{Name: "node2", Capacity: res(16, 65536, 1<<20), Labels: map[string]string{"group": "default", "rack": "r1"}},
			{Name: "node3", Capacity: res(16, 65536, 1<<20), Labels: map[string]string{"group": "default", "rack": "r2"}, Unschedulable: true},
			{Name: "node4", Capacity: res(32, 131072, 2<<20), Labels: map[string]string{"group": "default", "rack": "r2"}, Offline: true},
		},
		Instances: []scheduler.Instance{
			{Name: "web1", Size: res(2, 4096, 40960), Primary: "node1", Secondary: "node2", Group: "service:web", Tags: []string{"service:web", "owner:alice"}},
			{Name: "web2", Size: res(2, 4096, 40960), Primary: "node2", Secondary: "node3", Group: "service:web", Tags: []string{"service:web"}},
			{Name: "db1", Size: res(4, 8192, 102400), Primary: "node3", Secondary: "node1", Group: "db", Tags: []string{"db"}},
			{Name: "batch1", Size: res(1, 2048, 20480), Primary: "node1"},
			{Name: "shared1", Size: res(1, 1024, 10240), Primary: "node2", SharedDisk: true},
			{Name: "lost1", Size: res(1, 1024, 10240), Primary: "node4", Secondary: "node1"},
		},
	}
}
