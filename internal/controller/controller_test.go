package controller

import (
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

func res(cpus int, memMiB, diskGiB int64) api.Resources {
	return api.Resources{CPUs: cpus, Memory: api.Bytes(memMiB << 20), Disk: api.Bytes(diskGiB << 30)}
}

func TestFirstFit(t *testing.T) {
	tests := []struct {
		name        string
		cands       []NodeFree
		need        api.Resources
		wantHost    string
		wantReplica string
		wantReason  string
	}{
		{"no nodes", nil, res(1, 256, 1), "", "", "no Ready, schedulable node"},
		{"single node, no replica", []NodeFree{{"a", res(4, 4096, 10)}}, res(1, 256, 1), "a", "", ""},
		{"first with room", []NodeFree{{"a", res(1, 128, 10)}, {"b", res(4, 4096, 10)}, {"c", res(4, 4096, 10)}}, res(1, 256, 1), "b", "a", ""},
		{"replica needs disk only", []NodeFree{{"a", res(4, 4096, 10)}, {"b", res(0, 0, 5)}}, res(1, 256, 5), "a", "b", ""},
		{"replica without disk room", []NodeFree{{"a", res(4, 4096, 10)}, {"b", res(4, 4096, 1)}}, res(1, 256, 5), "a", "", ""},
		{"nothing fits", []NodeFree{{"a", res(4, 512, 10)}, {"b", res(4, 1024, 10)}}, res(1, 2048, 1), "", "", "no node has room for 1 CPU, 2G memory, 1G disk (most free memory on one node: 1.0G)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host, replica, reason := FirstFit(tc.cands, tc.need)
			if host != tc.wantHost || replica != tc.wantReplica || !strings.HasPrefix(reason, tc.wantReason) {
				t.Fatalf("FirstFit = (%q, %q, %q), want (%q, %q, %q)", host, replica, reason, tc.wantHost, tc.wantReplica, tc.wantReason)
			}
		})
	}
}

func TestCandidates(t *testing.T) {
	nodes := []*api.Node{
		{Meta: api.Meta{Name: "b"}, Status: api.NodeStatus{Capacity: res(4, 4096, 100)}},
		{Meta: api.Meta{Name: "a"}, Status: api.NodeStatus{Capacity: res(4, 4096, 100)}},
		{Meta: api.Meta{Name: "dead"}, Status: api.NodeStatus{Capacity: res(4, 4096, 100)}},
		{Meta: api.Meta{Name: "cordoned"}, Spec: api.NodeSpec{Unschedulable: true}, Status: api.NodeStatus{Capacity: res(4, 4096, 100)}},
	}
	alive := map[string]bool{"a": true, "b": true, "cordoned": true}
	insts := []*api.Instance{
		{Spec: api.InstanceSpec{CPUs: 1, Memory: 1 << 30, Disk: 10 << 30}, Status: api.InstanceStatus{Node: "a", ReplicaNode: "b"}},
	}
	got := Candidates(nodes, alive, insts)
	want := []NodeFree{{"a", res(3, 3072, 90)}, {"b", res(4, 4096, 90)}}
	if len(got) != len(want) {
		t.Fatalf("Candidates = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Candidates[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}
