package clusterfile

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

func TestReadSnapshotFull(t *testing.T) {
	got, err := ReadSnapshot(bytes.NewReader(readFile(t, "testdata/snapshot/full.json")))
	if err != nil {
		t.Fatal(err)
	}
	res := func(cpus, mem, disk int64) scheduler.Resources {
		return scheduler.Resources{CPUs: cpus, MemMiB: mem, DiskMiB: disk}
	}
	want := scheduler.Snapshot{
		Policy: scheduler.Policy{CPURatio: 4, MemRatio: 1.25, SpreadLabel: "rack",
			Weights: scheduler.Weights{Mem: 1, CPU: 0.5, Disk: 0.5, Reserve: 1, N1: 10, Over: 100, Conflict: 2}},
		Nodes: []scheduler.Node{
			{Name: "h1", Capacity: res(32, 262144, 4194304), Labels: map[string]string{"rack": "r1", "zone": "ams-1"}},
			{Name: "h2", Capacity: res(32, 262144, 4194304), Labels: map[string]string{"rack": "r2", "zone": "ams-1"}},
			{Name: "h3", Capacity: res(64, 524288, 8388608), Labels: map[string]string{"rack": "r3"}, Unschedulable: true},
			{Name: "h4", Capacity: res(16, 131072, 2097152), Offline: true},
		},
		Instances: []scheduler.Instance{
			{Name: "web-1", Size: res(4, 8192, 51200), Primary: "h1", Secondary: "h2", Group: "web", Tags: []string{"team:shop"}},
			{Name: "web-2", Size: res(4, 8192, 51200), Primary: "h2", Secondary: "h3", Group: "web"},
			{Name: "db-1", Size: res(8, 65536, 512000), Primary: "h3", Secondary: "h1"},
			{Name: "cache-1", Size: res(2, 16384, 0), Primary: "h1", SharedDisk: true},
			{Name: "pending-1", Size: res(2, 4096, 20480)},
			{Name: "orphan-1", Size: res(1, 2048, 10240), Primary: "h4", Secondary: "h2"},
		},
	}
	equalSnapshots(t, "full.json", got, want)
}

// TestReadSnapshotEmpty checks that null, missing and empty lists and maps
// all read as nil.
func TestReadSnapshotEmpty(t *testing.T) {
	got, err := ReadSnapshot(bytes.NewReader(readFile(t, "testdata/snapshot/nulls.json")))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range got.Nodes {
		if n.Labels != nil {
			t.Errorf("node %s: labels %#v, want nil", n.Name, n.Labels)
		}
	}
	if got.Instances[0].Tags != nil {
		t.Errorf("tags %#v, want nil", got.Instances[0].Tags)
	}
	got, err = ReadSnapshot(strings.NewReader(`{"version":1,"nodes":[],"instances":[]}`))
	if err != nil || got.Nodes != nil || got.Instances != nil {
		t.Errorf("got %#v, %v; want an empty snapshot", got, err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	snaps := []scheduler.Snapshot{sample(), {}}
	for _, path := range append(goodFiles(t, "snapshot/*.json"), goodFiles(t, "ganeti/*.json")...) {
		s, err := ReadSnapshot(bytes.NewReader(readFile(t, path)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		snaps = append(snaps, s)
	}
	for i, s := range snaps {
		var b1, b2 bytes.Buffer
		if err := WriteSnapshot(&b1, s); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		got, err := ReadSnapshot(bytes.NewReader(b1.Bytes()))
		if err != nil {
			t.Fatalf("%d: reading what was written: %v\n%s", i, err, b1.String())
		}
		equalSnapshots(t, "round trip", got, s)
		if err := WriteSnapshot(&b2, got); err != nil {
			t.Fatal(err)
		}
		if b1.String() != b2.String() {
			t.Errorf("%d: second write differs:\n%s\n---\n%s", i, b1.String(), b2.String())
		}
	}
}

func TestWriteSnapshotLayout(t *testing.T) {
	var b bytes.Buffer
	if err := WriteSnapshot(&b, scheduler.Snapshot{}); err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": 1,
  "policy": {
    "weights": {}
  },
  "nodes": [],
  "instances": []
}
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	s := sample()
	s.Instances[0].Tags = []string{"<a&b>"}
	if err := WriteSnapshot(&b, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"<a&b>"`) {
		t.Errorf("HTML characters escaped:\n%s", b.String())
	}
}

func TestReadSnapshotErrors(t *testing.T) {
	const node = `{"name":"a","capacity":{"cpus":1,"memoryMiB":1,"diskMiB":1}}`
	const node2 = `{"name":"b","capacity":{"cpus":1,"memoryMiB":1,"diskMiB":1}}`
	for _, c := range []struct {
		in, want string
	}{
		// Syntax, with line and column.
		{"", `line 1, column 1: unexpected end of file`},
		{"{\"version\":1,\n \"nodes\": [}", `line 2, column 12: invalid character '}' looking for beginning of value`},
		{"{\"version\":1,\n \"nodes\": [],\n}", `line 3, column 1: invalid character '}' looking for beginning of object key string`},
		{"{\"version\":1,\n \"nodes\": [", `line 2, column 12: unexpected end of file`},
		{`{"version":1} {}`, `line 1, column 15: invalid character '{' after top-level value`},
		{`[]`, `line 1, column 1: want an object, got an array`},
		{`null`, `line 1, column 1: want an object, got null`},
		// Shape: unknown and repeated fields, types, ranges.
		{`{"version":1,"hosts":[]}`, `line 1, column 14: unknown field "hosts"`},
		{"{\"version\":1,\"nodes\":[\n" + `{"name":"a","capcity":{}}]}`, `line 2, column 13: nodes[0]: unknown field "capcity"`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"cpus":1,"memoryMib":1}}]}`, `line 1, column 56: nodes[0].capacity: unknown field "memoryMib"`},
		{`{"version":1,"nodes":[{"Name":"a"}]}`, `line 1, column 24: nodes[0]: unknown field "Name"`},
		{`{"version":1,"policy":{"weights":{"n2":1}}}`, `line 1, column 35: policy.weights: unknown field "n2"`},
		{`{"version":1,"version":1}`, `line 1, column 14: field "version" given twice`},
		{`{"version":1,"nodes":[{"name":"a","labels":{"r":"1","r":"2"}}]}`, `line 1, column 53: nodes[0].labels: key "r" given twice`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"cpus":"4"}}]}`, `line 1, column 54: nodes[0].capacity.cpus: want an integer, got a string`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"cpus":4.5}}]}`, `line 1, column 54: nodes[0].capacity.cpus: want an integer, got 4.5`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"cpus":1e3}}]}`, `line 1, column 54: nodes[0].capacity.cpus: want an integer, got 1e3`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"cpus":99999999999999999999}}]}`, `line 1, column 54: nodes[0].capacity.cpus: 99999999999999999999 is out of range`},
		{`{"version":1,"nodes":[{"name":null}]}`, `line 1, column 31: nodes[0].name: want a string, got null`},
		{`{"version":1,"nodes":[{"name":"a","offline":"yes"}]}`, `line 1, column 45: nodes[0].offline: want true or false, got a string`},
		{`{"version":1,"nodes":[{"name":"a","labels":{"rack":1}}]}`, `line 1, column 52: nodes[0].labels["rack"]: want a string, got a number`},
		{`{"version":1,"nodes":{}}`, `line 1, column 22: nodes: want an array, got an object`},
		{`{"version":1,"instances":[{"name":"i","tags":"web"}]}`, `line 1, column 46: instances[0].tags: want an array, got a string`},
		{`{"version":1,"policy":{"cpuRatio":1e999}}`, `line 1, column 35: policy.cpuRatio: 1e999 is out of range`},
		{`{"version":1,"policy":{"cpuRatio":true}}`, `line 1, column 35: policy.cpuRatio: want a number, got true`},
		// Version.
		{`{"nodes":[]}`, `line 1, column 1: version: missing (this ferry reads version 1)`},
		{`{"version":2}`, `line 1, column 12: version: 2 is not supported (this ferry reads version 1)`},
		{`{"version":"1"}`, `line 1, column 12: version: want an integer, got a string`},
		// Validation, with the path and where it is.
		{`{"version":1,"nodes":[{"name":""}]}`, `line 1, column 31: nodes[0].name: empty`},
		{`{"version":1,"nodes":[{}]}`, `line 1, column 23: nodes[0].name: empty`},
		{`{"version":1,"nodes":[` + node + `,` + node + `]}`, `line 1, column 92: nodes[1].name: "a" is used twice (also nodes[0])`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"memoryMiB":-1}}]}`, `line 1, column 59: nodes[0].capacity.memoryMiB: -1 is negative`},
		{`{"version":1,"nodes":[{"name":"a","capacity":{"diskMiB":1099511627777}}]}`, `line 1, column 57: nodes[0].capacity.diskMiB: 1099511627777 is too large (at most 1099511627776)`},
		{`{"version":1,"instances":[{"name":"i"},{"name":"i"}]}`, `line 1, column 48: instances[1].name: "i" is used twice (also instances[0])`},
		{`{"version":1,"instances":[{"name":"i","size":{"cpus":-2}}]}`, `line 1, column 54: instances[0].size.cpus: -2 is negative`},
		{`{"version":1,"nodes":[` + node + `],"instances":[{"name":"i","primary":"x"}]}`, `line 1, column 120: instances[0].primary: unknown node "x"`},
		{`{"version":1,"nodes":[` + node + `],"instances":[{"name":"i","primary":"a","secondary":"x"}]}`, `line 1, column 136: instances[0].secondary: unknown node "x"`},
		{`{"version":1,"nodes":[` + node + `],"instances":[{"name":"i","primary":"a","secondary":"a"}]}`, `line 1, column 136: instances[0].secondary: "a" is also the primary`},
		{`{"version":1,"nodes":[` + node + `],"instances":[{"name":"i","secondary":"a"}]}`, `line 1, column 122: instances[0].secondary: set to "a" but the instance has no primary`},
		{`{"version":1,"nodes":[` + node + `,` + node2 + `],"instances":[{"name":"i","primary":"a","secondary":"b","sharedDisk":true}]}`, `line 1, column 197: instances[0].secondary: set to "b" but the disk is shared`},
		{`{"version":1,"policy":{"cpuRatio":-1}}`, `line 1, column 35: policy.cpuRatio: -1 is negative`},
		{`{"version":1,"policy":{"memRatio":-0.5}}`, `line 1, column 35: policy.memRatio: -0.5 is negative`},
		{`{"version":1,"policy":{"weights":{"n1":-3}}}`, `line 1, column 40: policy.weights.n1: -3 is negative`},
	} {
		_, err := ReadSnapshot(strings.NewReader(c.in))
		if err == nil {
			t.Errorf("%s: no error, want %s", c.in, c.want)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, err, c.want)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: %#v is not an *Error", c.in, err)
		}
	}
}

func TestWriteSnapshotRefuses(t *testing.T) {
	s := sample()
	s.Instances[0].Primary = "nowhere"
	err := WriteSnapshot(&bytes.Buffer{}, s)
	if want := `instances[0].primary: unknown node "nowhere"`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	s = sample()
	s.Nodes[0].Labels["bad"] = "\xff"
	err = WriteSnapshot(&bytes.Buffer{}, s)
	if want := `nodes[0].labels: label "bad"="\xff" is not valid UTF-8`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
