package controller

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

func TestPolicy(t *testing.T) {
	tests := []struct {
		name               string
		cpu, mem           float64
		spread             string
		wantCPU, wantMem   float64
		wantSpreadLabelled string
	}{
		{"defaults", 0, 0, "", 4, 1, ""},
		{"negative takes the default", -1, -2, "", 4, 1, ""},
		{"given", 8, 1.5, "rack", 8, 1.5, "rack"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Policy(tc.cpu, tc.mem, tc.spread)
			if p.CPURatio != tc.wantCPU || p.MemRatio != tc.wantMem || p.SpreadLabel != tc.wantSpreadLabelled {
				t.Fatalf("Policy(%v, %v, %q) = %+v, want %v, %v, %q", tc.cpu, tc.mem, tc.spread, p, tc.wantCPU, tc.wantMem, tc.wantSpreadLabelled)
			}
		})
	}
	if got := New(Config{}).cfg.Policy(); got.CPURatio != DefaultCPURatio || got.MemRatio != DefaultMemRatio {
		t.Fatalf("a controller's default policy = %+v", got)
	}
}

func TestSchedulerSize(t *testing.T) {
	tests := []struct {
		name string
		in   api.Resources
		want scheduler.Resources
	}{
		{"whole MiB", api.Resources{CPUs: 2, Memory: 256 << 20, Disk: 1 << 30}, scheduler.Resources{CPUs: 2, MemMiB: 256, DiskMiB: 1024}},
		{"a byte over rounds up", api.Resources{CPUs: 1, Memory: 256<<20 + 1, Disk: 1<<30 + 1}, scheduler.Resources{CPUs: 1, MemMiB: 257, DiskMiB: 1025}},
		{"less than a MiB is one", api.Resources{CPUs: 1, Memory: 1, Disk: 1 << 19}, scheduler.Resources{CPUs: 1, MemMiB: 1, DiskMiB: 1}},
		{"zero", api.Resources{}, scheduler.Resources{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SchedulerSize(tc.in); got != tc.want {
				t.Fatalf("SchedulerSize(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	policy := Policy(0, 0, "rack")
	mkNode := func(name string, mod func(*api.Node)) *api.Node {
		n := &api.Node{Meta: api.Meta{Name: name}, Status: api.NodeStatus{State: api.NodeReady, Capacity: res(8, 16384, 200)}}
		if mod != nil {
			mod(n)
		}
		return n
	}
	mkInst := func(name, node, replica string, mod func(*api.Instance)) *api.Instance {
		in := &api.Instance{Meta: api.Meta{Name: name},
			Spec:   api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30, Image: "demo", State: api.DesiredRunning},
			Status: api.InstanceStatus{Node: node, ReplicaNode: replica, Phase: api.PhaseRunning}}
		if mod != nil {
			mod(in)
		}
		return in
	}
	full := scheduler.Resources{CPUs: 8, MemMiB: 16384, DiskMiB: 204800}
	inst := func(name, p, s string) scheduler.Instance {
		return scheduler.Instance{Name: name, Size: scheduler.Resources{CPUs: 1, MemMiB: 1024, DiskMiB: 10240}, Primary: p, Secondary: s}
	}
	tests := []struct {
		name      string
		nodes     []*api.Node
		alive     map[string]bool
		insts     []*api.Instance
		wantNodes []scheduler.Node
		wantInsts []scheduler.Instance
	}{
		{
			name:      "empty cluster",
			wantNodes: []scheduler.Node{}, wantInsts: []scheduler.Instance{},
		},
		{
			name: "capacity rounds down to MiB, sizes round up",
			nodes: []*api.Node{mkNode("a", func(n *api.Node) {
				n.Status.Capacity = api.Resources{CPUs: 8, Memory: 16<<30 + 123456789, Disk: 200<<30 + 1}
			})},
			alive: map[string]bool{"a": true},
			insts: []*api.Instance{mkInst("web", "a", "", func(in *api.Instance) {
				in.Spec.Memory, in.Spec.Disk = 256<<20+1, 1<<30+(1<<19)
			})},
			wantNodes: []scheduler.Node{{Name: "a", Capacity: scheduler.Resources{CPUs: 8, MemMiB: 16384 + 117, DiskMiB: 204800}}},
			wantInsts: []scheduler.Instance{{Name: "web", Size: scheduler.Resources{CPUs: 1, MemMiB: 257, DiskMiB: 1025}, Primary: "a"}},
		},
		{
			name:  "a node without a lease is offline; a cordoned one unschedulable",
			nodes: []*api.Node{mkNode("up", nil), mkNode("down", nil), mkNode("cordoned", func(n *api.Node) { n.Spec.Unschedulable = true })},
			alive: map[string]bool{"up": true, "cordoned": true},
			wantNodes: []scheduler.Node{
				{Name: "cordoned", Capacity: full, Unschedulable: true},
				{Name: "down", Capacity: full, Offline: true},
				{Name: "up", Capacity: full},
			},
			wantInsts: []scheduler.Instance{},
		},
		{
			name:  "labels, primaries and secondaries",
			nodes: []*api.Node{mkNode("a", func(n *api.Node) { n.Spec.Labels = map[string]string{"rack": "r1"} }), mkNode("b", nil)},
			alive: map[string]bool{"a": true, "b": true},
			insts: []*api.Instance{mkInst("web-2", "b", "a", nil), mkInst("web-1", "a", "b", nil)},
			wantNodes: []scheduler.Node{
				{Name: "a", Capacity: full, Labels: map[string]string{"rack": "r1"}},
				{Name: "b", Capacity: full},
			},
			wantInsts: []scheduler.Instance{inst("web-1", "a", "b"), inst("web-2", "b", "a")},
		},
		{
			name:  "shared disk and anti-affinity group",
			nodes: []*api.Node{mkNode("a", nil)},
			alive: map[string]bool{"a": true},
			insts: []*api.Instance{
				mkInst("db", "a", "", func(in *api.Instance) { in.Spec.Storage = "shared:/mnt/ferry" }),
				mkInst("web", "a", "", func(in *api.Instance) { in.Spec.Group = "web" }),
			},
			wantNodes: []scheduler.Node{{Name: "a", Capacity: full}},
			wantInsts: []scheduler.Instance{
				{Name: "db", Size: scheduler.Resources{CPUs: 1, MemMiB: 1024, DiskMiB: 10240}, Primary: "a", SharedDisk: true},
				{Name: "web", Size: scheduler.Resources{CPUs: 1, MemMiB: 1024, DiskMiB: 10240}, Primary: "a", Group: "web"},
			},
		},
		{
			name:      "pending instances are unplaced",
			nodes:     []*api.Node{mkNode("a", nil)},
			alive:     map[string]bool{"a": true},
			insts:     []*api.Instance{mkInst("new", "", "", func(in *api.Instance) { in.Status.Phase = api.PhasePending })},
			wantNodes: []scheduler.Node{{Name: "a", Capacity: full}},
			wantInsts: []scheduler.Instance{inst("new", "", "")},
		},
		{
			name:  "a removed node an instance still names is offline with no capacity",
			nodes: []*api.Node{mkNode("a", nil)},
			alive: map[string]bool{"a": true},
			insts: []*api.Instance{mkInst("web", "gone", "a", nil), mkInst("odd", "", "a", nil)},
			wantNodes: []scheduler.Node{
				{Name: "a", Capacity: full},
				{Name: "gone", Offline: true},
			},
			wantInsts: []scheduler.Instance{inst("odd", "", ""), inst("web", "gone", "a")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Snapshot(tc.nodes, tc.alive, tc.insts, policy)
			if !reflect.DeepEqual(got.Nodes, tc.wantNodes) {
				t.Errorf("nodes:\n got %+v\nwant %+v", got.Nodes, tc.wantNodes)
			}
			if !reflect.DeepEqual(got.Instances, tc.wantInsts) {
				t.Errorf("instances:\n got %+v\nwant %+v", got.Instances, tc.wantInsts)
			}
			if got.Policy != policy {
				t.Errorf("policy = %+v, want %+v", got.Policy, policy)
			}
			if _, err := scheduler.NewCluster(got); err != nil {
				t.Errorf("the scheduler refuses the snapshot: %v", err)
			}
		})
	}
	// The snapshot's labels are a copy: the scheduler may not change the
	// store's objects.
	n := mkNode("a", func(n *api.Node) { n.Spec.Labels = map[string]string{"rack": "r1"} })
	snap := Snapshot([]*api.Node{n}, nil, nil, policy)
	snap.Nodes[0].Labels["rack"] = "changed"
	if n.Spec.Labels["rack"] != "r1" {
		t.Fatal("Snapshot shares the node's label map")
	}
}

// TestWithMigrations: each migration in flight before its switch holds
// its guest's CPU and memory on its target, and its disk too when it
// copies the disk there; switched migrations, those whose source is down
// and instances that do not move hold nothing more.
func TestWithMigrations(t *testing.T) {
	mig := func(name, node, target, phase string, copyDisk bool) *api.Instance {
		in := &api.Instance{Meta: api.Meta{Name: name}, Spec: sized(2, 1024, 10),
			Status: api.InstanceStatus{Node: node, ReplicaNode: "b"}}
		if target != "" {
			in.Status.Migration = &api.MigrationStatus{Operation: "op-" + name, Mode: api.MigrateLive, Source: node, Target: target, Phase: phase, Copy: copyDisk}
		}
		return in
	}
	insts := []*api.Instance{
		mig("live", "a", "b", api.MigReady, false),
		mig("copy", "a", "c", api.MigCopy, true),
		mig("switched", "b", "b", api.MigSwitched, false),
		mig("orphan", "dead", "c", api.MigReady, false),
		mig("still", "a", "", "", false),
	}
	alive := map[string]bool{"a": true, "b": true, "c": true}
	nodes := []*api.Node{capNode("a", 8, 8192, 100), capNode("b", 8, 8192, 100), capNode("c", 8, 8192, 100)}
	snap := withMigrations(Snapshot(nodes, alive, insts, Policy(0, 0, "")), insts, alive)
	got := map[string]scheduler.Instance{}
	for _, si := range snap.Instances {
		if strings.HasPrefix(si.Name, migrationPrefix) {
			got[strings.TrimPrefix(si.Name, migrationPrefix)] = si
		}
	}
	want := map[string]scheduler.Instance{
		"live": {Name: migrationPrefix + "live", Primary: "b", Size: scheduler.Resources{CPUs: 2, MemMiB: 1024}},
		"copy": {Name: migrationPrefix + "copy", Primary: "c", Size: scheduler.Resources{CPUs: 2, MemMiB: 1024, DiskMiB: 10 << 10}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stand-ins %+v, want %+v", got, want)
	}
	if _, err := scheduler.NewCluster(snap); err != nil {
		t.Fatalf("the scheduler refuses the view: %v", err)
	}
}
