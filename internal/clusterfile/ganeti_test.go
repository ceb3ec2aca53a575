package clusterfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// TestReadGanetiGolden reads every Ganeti test file and compares it with
// the snapshot in the .json file of the same name (go test -update
// rewrites those).
func TestReadGanetiGolden(t *testing.T) {
	for _, path := range goodFiles(t, "ganeti/*.txt") {
		t.Run(path, func(t *testing.T) {
			got, err := ReadGaneti(bytes.NewReader(readFile(t, path)))
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(path, ".txt") + ".json"
			if *update {
				var b bytes.Buffer
				if err := WriteSnapshot(&b, got); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := ReadSnapshot(bytes.NewReader(readFile(t, golden)))
			if err != nil {
				t.Fatalf("%s: %v", golden, err)
			}
			equalSnapshots(t, path, got, want)
		})
	}
}

// TestReadGanetiMapping spells out how testdata/ganeti/full.txt (an hscan
// file of Ganeti 3.0) maps onto a snapshot.
func TestReadGanetiMapping(t *testing.T) {
	got, err := ReadGaneti(bytes.NewReader(readFile(t, "testdata/ganeti/full.txt")))
	if err != nil {
		t.Fatal(err)
	}
	res := func(cpus, mem, disk int64) scheduler.Resources {
		return scheduler.Resources{CPUs: cpus, MemMiB: mem, DiskMiB: disk}
	}
	const n1, n2, n3, n4 = "node1.example.com", "node2.example.com", "node3.example.com", "node4.example.com"
	want := scheduler.Snapshot{
		// The group "ssd" has its own ratio (8), "default" has none (so
		// htools uses 4): they differ, so the cluster's line (4.0) counts.
		Policy: scheduler.Policy{CPURatio: 4, SpreadLabel: "rack"},
		Nodes: []scheduler.Node{
			// Cores less the node OS's one; memory less the node's own.
			{Name: n1, Capacity: res(15, 64512, 1048576), Labels: map[string]string{"group": "default", "rack": "r1", "hw": "gen9"}},
			{Name: n2, Capacity: res(15, 64512, 1048576), Labels: map[string]string{"group": "default", "rack": "r1"}},
			{Name: n3, Capacity: res(15, 64512, 1048576), Labels: map[string]string{"group": "default", "rack": "r2", "ssd": ""}},
			{Name: n4, Capacity: res(30, 129024, 2097152), Labels: map[string]string{"group": "ssd", "rack": "r3"}, Offline: true},
		},
		Instances: []scheduler.Instance{
			{Name: "web1.example.com", Size: res(2, 4096, 40960), Primary: n1, Secondary: n2, Group: "service:web", Tags: []string{"service:web", "owner:alice"}},
			{Name: "web2.example.com", Size: res(2, 4096, 40960), Primary: n2, Secondary: n3, Group: "service:web", Tags: []string{"service:web"}},
			{Name: "db1.example.com", Size: res(4, 8192, 102400), Primary: n3, Secondary: n1, Group: "service:db", Tags: []string{"service:db", "backup"}},
			{Name: "batch1.example.com", Size: res(1, 2048, 20480), Primary: n1},
			{Name: "shared1.example.com", Size: res(1, 1024, 10240), Primary: n2, SharedDisk: true},
			{Name: "ceph1.example.com", Size: res(2, 2048, 20480), Primary: n3, SharedDisk: true, Group: "service:db", Tags: []string{"service:db"}},
			{Name: "tiny.example.com", Size: res(1, 512, 0), Primary: n1},
		},
	}
	equalSnapshots(t, "full.txt", got, want)
}

// TestGanetiCPURatio checks which policy line gives the vcpu ratio: the
// one htools applies to the nodes' groups.
func TestGanetiCPURatio(t *testing.T) {
	const head = "a|ua|preferred||\nb|ub|preferred||\n\nn1|1024|0|1024|1024|1024|4|N|ua\nn2|1024|0|1024|1024|1024|4|N|ub\n\n\n\n"
	line := func(owner, ratio string) string {
		return owner + "|128,1,1024,1,1,1|0,0,0,0,0,0;1024,64,1024,1,8,1|drbd|" + ratio + "|32\n"
	}
	for _, c := range []struct {
		name     string
		policies string
		want     float64
	}{
		{"no policy section", "", 4},
		{"cluster line only: groups use the default", line("", "2"), 4},
		{"groups agree", line("", "2") + line("a", "8") + line("b", "8"), 8},
		{"groups differ: the cluster's", line("", "2") + line("a", "8") + line("b", "3"), 2},
		{"one group without a line", line("a", "4") + line("", "6"), 4},
		{"fractional", line("", "1") + line("a", "1.5") + line("b", "1.5"), 1.5},
	} {
		text := head + c.policies
		if c.policies == "" {
			text = strings.TrimSuffix(text, "\n") // four sections
		}
		s, err := ReadGaneti(strings.NewReader(text))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s.Policy.CPURatio != c.want {
			t.Errorf("%s: CPURatio %v, want %v", c.name, s.Policy.CPURatio, c.want)
		}
	}
}

func TestReadGanetiCRLF(t *testing.T) {
	lf := readFile(t, "testdata/ganeti/old-columns.txt")
	want, err := ReadGaneti(bytes.NewReader(lf))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadGaneti(bytes.NewReader(bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))))
	if err != nil {
		t.Fatal(err)
	}
	equalSnapshots(t, "CRLF", got, want)
}

// ganetiBase is a small good file that the error cases below break one
// line at a time.
var ganetiBase = []string{
	/* 1 */ "default|g1|preferred||",
	/* 2 */ "",
	/* 3 */ "n1|16384|512|8192|102400|51200|4|N|g1|1|rack:r1|N|1|0|1.0",
	/* 4 */ "n2|16384|512|8192|102400|51200|4|N|g1|1|rack:r2|N|1|0|1.0",
	/* 5 */ "",
	/* 6 */ "i1|1024|10240|1|running|Y|n1|n2|drbd|svc:a|1|-|N",
	/* 7 */ "",
	/* 8 */ "htools:iextags:svc",
	/* 9 */ "",
	/* 10 */ "|128,1,1024,1,1,1|0,0,0,0,0,0;16384,16,102400,1,8,1|drbd,plain|4|32",
}

func TestReadGanetiBase(t *testing.T) {
	s, err := ReadGaneti(strings.NewReader(strings.Join(ganetiBase, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Nodes) != 2 || len(s.Instances) != 1 || s.Instances[0].Group != "svc:a" {
		t.Fatalf("unexpected snapshot %+v", s)
	}
}

func TestReadGanetiErrors(t *testing.T) {
	for _, c := range []struct {
		line   int    // replace this line of ganetiBase (1-based)...
		text   string // ...with this
		insert bool   // or insert text before it
		want   string
	}{
		// Groups.
		{1, "default|g1|preferred", false, `line 1 (groups section): 3 fields, want at least 4 (name|uuid|allocation policy|tags)`},
		{1, "|g1|preferred||", false, `line 1 (groups section), field 1 "group name": empty`},
		{1, "default||preferred||", false, `line 1 (groups section), field 2 "group uuid": empty`},
		{1, "default|g1|sometimes||", false, `line 1 (groups section), field 3 "allocation policy": "sometimes" is not one of preferred, last_resort, unallocable`},
		{2, "default|g2|preferred||", true, `line 2 (groups section), field 1 "group name": "default" is used twice (first on line 1)`},
		{2, "other|g1|preferred||", true, `line 2 (groups section), field 2 "group uuid": "g1" is used twice (first on line 1)`},
		// Nodes.
		{3, "n1|16384|512|8192|102400|51200|4|N", false, `line 3 (nodes section): 8 fields, want at least 9 (name|total memory|node memory|free memory|total disk|free disk|cores|offline|group uuid)`},
		{3, "|16384|512|8192|102400|51200|4|N|g1", false, `line 3 (nodes section), field 1 "node name": empty`},
		{4, "n1|16384|512|8192|102400|51200|4|N|g1", false, `line 4 (nodes section), field 1 "node name": "n1" is used twice (first on line 3)`},
		{3, "n1|16k|512|8192|102400|51200|4|N|g1", false, `line 3 (nodes section), field 2 "total memory": "16k" is not a number`},
		{3, "n1|-16384|512|8192|102400|51200|4|N|g1", false, `line 3 (nodes section), field 2 "total memory": -16384 is negative`},
		{3, "n1|16384.5|512|8192|102400|51200|4|N|g1", false, `line 3 (nodes section), field 2 "total memory": "16384.5" is not a whole number`},
		{3, "n1|16384|20000|8192|102400|51200|4|N|g1", false, `line 3 (nodes section), field 3 "node memory": 20000 is more than the total memory 16384`},
		{3, "n1|16384|512|12x|102400|51200|4|N|g1", false, `line 3 (nodes section), field 4 "free memory": "12x" is not a number`},
		{3, "n1|16384|512|8192|1e300|51200|4|N|g1", false, `line 3 (nodes section), field 5 "total disk": 1e300 is too large`},
		{3, "n1|16384|512|8192|1099511627777|51200|4|N|g1", false, `line 3 (nodes section), field 5 "total disk": leaves a capacity of 1099511627777, more than 1099511627776`},
		{3, "n1|16384|512|8192|102400|lots|4|N|g1", false, `line 3 (nodes section), field 6 "free disk": "lots" is not a number`},
		{3, "n1|16384|512|8192|102400|51200|four|N|g1", false, `line 3 (nodes section), field 7 "physical cores": "four" is not a number`},
		{3, "n1|16384|512|8192|102400|51200|4|D|g1", false, `line 3 (nodes section), field 8 "offline/role": "D" is not one of N, M, Y`},
		{3, "n1|16384|512|8192|102400|51200|4|N|g9", false, `line 3 (nodes section), field 9 "group uuid": unknown group "g9"`},
		{3, "n1|16384|512|8192|102400|51200|4|N|g1|x", false, `line 3 (nodes section), field 10 "spindle count": "x" is not a number`},
		{3, "n1|16384|512|8192|102400|51200|4|N|g1|1||maybe", false, `line 3 (nodes section), field 12 "exclusive storage": "maybe" is not one of Y, N`},
		{3, "n1|16384|512|8192|102400|51200|4|N|g1|1||N|1.5", false, `line 3 (nodes section), field 13 "free spindles": "1.5" is not a whole number`},
		{3, "n1|16384|512|8192|102400|51200|4|N|g1|1||N|1|8", false, `line 3 (nodes section), field 14 "node OS cpus": 8 is more than the 4 physical cores`},
		{3, "n1|16384|512|8192|102400|51200|4|N|g1|1||N|1|0|fast", false, `line 3 (nodes section), field 15 "cpu speed": "fast" is not a number`},
		// Instances.
		{6, "i1|1024|10240|1|running|Y|n1|n2|drbd", false, `line 6 (instances section): 9 fields, want at least 10 (name|memory|disk|vcpus|status|auto_balance|primary|secondary|disk template|tags)`},
		{6, "|1024|10240|1|running|Y|n1|n2|drbd|", false, `line 6 (instances section), field 1 "instance name": empty`},
		{7, "i1|1024|10240|1|running|Y|n2|n1|drbd|", true, `line 7 (instances section), field 1 "instance name": "i1" is used twice (first on line 6)`},
		{6, "i1|1G|10240|1|running|Y|n1|n2|drbd|", false, `line 6 (instances section), field 2 "memory": "1G" is not a number`},
		{6, "i1|1024|-1|1|running|Y|n1|n2|drbd|", false, `line 6 (instances section), field 3 "disk size": -1 is negative`},
		{6, "i1|1024|10240|9999999999999|running|Y|n1|n2|drbd|", false, `line 6 (instances section), field 4 "vcpus": 9999999999999 is too large (at most 1099511627776)`},
		{6, "i1|1024|10240|1|sleeping|Y|n1|n2|drbd|", false, `line 6 (instances section), field 5 "status": "sleeping" is not one of running, ADMIN_down, ADMIN_offline, ERROR_down, ERROR_up, ERROR_nodedown, ERROR_nodeoffline, ERROR_wrongnode, USER_down`},
		{6, "i1|1024|10240|1|running|yes|n1|n2|drbd|", false, `line 6 (instances section), field 6 "auto_balance": "yes" is not one of Y, N`},
		{6, "i1|1024|10240|1|running|Y||n2|drbd|", false, `line 6 (instances section), field 7 "primary node": empty`},
		{6, "i1|1024|10240|1|running|Y|n9|n2|drbd|", false, `line 6 (instances section), field 7 "primary node": unknown node "n9"`},
		{6, "i1|1024|10240|1|running|Y|n1|n9|drbd|", false, `line 6 (instances section), field 8 "secondary node": unknown node "n9"`},
		{6, "i1|1024|10240|1|running|Y|n1|n1|drbd|", false, `line 6 (instances section), field 8 "secondary node": "n1" is also the primary node`},
		{6, "i1|1024|10240|1|running|Y|n1|n2|zfs|", false, `line 6 (instances section), field 9 "disk template": "zfs" is not one of drbd, plain, sharedfile, diskless, file, blockdev, rbd, ext, gluster`},
		{6, "i1|1024|10240|1|running|Y|n1|n2|drbd||one", false, `line 6 (instances section), field 11 "spindle use": "one" is not a number`},
		{6, "i1|1024|10240|1|running|Y|n1|n2|drbd||1|?", false, `line 6 (instances section), field 12 "disk spindles": "?" is not a number`},
		{6, "i1|1024|10240|1|running|Y|n1|n2|drbd||1|-|maybe", false, `line 6 (instances section), field 13 "forthcoming": "maybe" is not one of Y, N`},
		// Policies.
		{10, "|128,1,1024,1,1,1|0,0,0,0,0,0;16384,16,102400,1,8,1|drbd,plain|4", false, `line 10 (ipolicy section): 5 fields, want at least 6 (owner|std spec|min/max specs|disk templates|vcpu ratio|spindle ratio)`},
		{10, "other|128,1,1024,1,1,1|0,0,0,0,0,0;16384,16,102400,1,8,1|drbd|4|32", false, `line 10 (ipolicy section), field 1 "owner": unknown group "other"`},
		{10, "g1|128,1,1024,1,1,1|0,0,0,0,0,0;16384,16,102400,1,8,1|drbd|4|32", false, `line 10 (ipolicy section), field 1 "owner": unknown group "g1"`},
		{11, "|128,1,1024,1,1,1||drbd|4|32", true, `line 11 (ipolicy section), field 1 "owner": second policy for the cluster (first on line 10)`},
		{10, "|128,1,1024|0,0,0,0,0,0;16384,16,102400,1,8,1|drbd|4|32", false, `line 10 (ipolicy section), field 2 "std spec": "128,1,1024" has 3 values, want 6 (memory,cpus,disk,disks,nics,spindles)`},
		{10, "|128,1,1024,1,1,1|0,0,0,0,0,0|drbd|4|32", false, `line 10 (ipolicy section), field 3 "min/max specs": 1 specs, want min;max pairs`},
		{10, "|128,1,1024,1,1,1|0,0,0,0,0,0;16G,16,102400,1,8,1|drbd|4|32", false, `line 10 (ipolicy section), field 3 "min/max specs": value 1 of "16G,16,102400,1,8,1": "16G" is not a number`},
		{10, "|128,1,1024,1,1,1||drbd,zfs|4|32", false, `line 10 (ipolicy section), field 4 "disk templates": "zfs" is not one of drbd, plain, sharedfile, diskless, file, blockdev, rbd, ext, gluster`},
		{10, "|128,1,1024,1,1,1||drbd|four|32", false, `line 10 (ipolicy section), field 5 "vcpu ratio": "four" is not a number`},
		{10, "|128,1,1024,1,1,1||drbd|-1|32", false, `line 10 (ipolicy section), field 5 "vcpu ratio": -1 is negative`},
		{10, "|128,1,1024,1,1,1||drbd|0|32", false, `line 10 (ipolicy section), field 5 "vcpu ratio": 0 allows no vcpus at all`},
		{10, "|128,1,1024,1,1,1||drbd|NaN|32", false, `line 10 (ipolicy section), field 5 "vcpu ratio": "NaN" is not a finite number`},
		{10, "|128,1,1024,1,1,1||drbd|1e999|32", false, `line 10 (ipolicy section), field 5 "vcpu ratio": "1e999" is not a finite number`},
		{10, "|128,1,1024,1,1,1||drbd|4|x", false, `line 10 (ipolicy section), field 6 "spindle ratio": "x" is not a number`},
		// The file as a whole.
		// An extra empty line shifts the sections: the cluster tag is now
		// read as a policy.
		{7, "", true, `line 9 (ipolicy section): 1 fields, want at least 6 (owner|std spec|min/max specs|disk templates|vcpu ratio|spindle ratio)`},
		// A missing one makes the tag an instance.
		{7, "htools:iextags:svc", false, `line 7 (instances section): 1 fields, want at least 10 (name|memory|disk|vcpus|status|auto_balance|primary|secondary|disk template|tags)`},
		{6, "i1|1024|10240|1|running|Y|n1|n2|drbd|svc:\xff", false, `line 6: not valid UTF-8`},
		{6, "i1|1024|10240|1|running|Y|n1|n2|drbd|svc:a\r|1", false, `line 6: carriage return inside the line`},
	} {
		lines := append([]string(nil), ganetiBase...)
		if c.insert {
			lines = append(lines[:c.line-1], append([]string{c.text}, lines[c.line-1:]...)...)
		} else {
			lines[c.line-1] = c.text
		}
		text := strings.Join(lines, "\n") + "\n"
		_, err := ReadGaneti(strings.NewReader(text))
		if err == nil {
			t.Errorf("line %d %q: no error, want %s", c.line, c.text, c.want)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("line %d %q:\n got %s\nwant %s", c.line, c.text, err, c.want)
		}
		var e *Error
		if !errors.As(err, &e) || e.Line == 0 {
			t.Errorf("line %d %q: error %#v is not an *Error with a line", c.line, c.text, err)
		}
	}
}

func TestReadGanetiSections(t *testing.T) {
	for _, c := range []struct {
		text string
		want string
	}{
		{"", `0 sections, want 4 or 5 (groups, nodes, instances, cluster tags, ipolicy) separated by single empty lines`},
		{"g|u|preferred|\n\nn|1|0|1|1|1|1|N|u\n", `2 sections, want 4 or 5 (groups, nodes, instances, cluster tags, ipolicy) separated by single empty lines`},
		{"g|u|preferred|\n\nn|1|0|1|1|1|1|N|u\n\n", `3 sections, want 4 or 5 (groups, nodes, instances, cluster tags, ipolicy) separated by single empty lines`},
		// One empty line too few: the policy line is taken as a cluster
		// tag (as htools does), so this reads, with the default ratio.
		{"g|u|preferred|\n\nn|1|0|1|1|1|1|N|u\n\n\n|1,1,1,1,1,1||drbd|8|32\n", ``},
		// Sections after the fifth are ignored, as htools does.
		{"g|u|preferred|\n\nn|1|0|1|1|1|1|N|u\n\n\n\n|1,1,1,1,1,1||drbd|8|32\n\nwhatever\n", ``},
	} {
		_, err := ReadGaneti(strings.NewReader(c.text))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.text, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("%q:\n got %v\nwant %s", c.text, err, c.want)
		}
	}
}

// TestGanetiRoundTrip reads each good file, writes it and reads it again.
func TestGanetiRoundTrip(t *testing.T) {
	for _, path := range goodFiles(t, "ganeti/*.txt") {
		first, err := ReadGaneti(bytes.NewReader(readFile(t, path)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var b1, b2 bytes.Buffer
		if err := WriteGaneti(&b1, first); err != nil {
			t.Fatalf("%s: write: %v", path, err)
		}
		second, err := ReadGaneti(bytes.NewReader(b1.Bytes()))
		if err != nil {
			t.Fatalf("%s: reading what was written: %v\n%s", path, err, b1.String())
		}
		equalSnapshots(t, path, second, first)
		if err := WriteGaneti(&b2, second); err != nil {
			t.Fatal(err)
		}
		if b1.String() != b2.String() {
			t.Errorf("%s: second write differs:\n%s\n---\n%s", path, b1.String(), b2.String())
		}
	}
}

// TestWriteGaneti checks the file written for sample(), line by line, and
// that it reads back as sample().
func TestWriteGaneti(t *testing.T) {
	var b bytes.Buffer
	if err := WriteGaneti(&b, sample()); err != nil {
		t.Fatal(err)
	}
	const uuid = "00000000-0000-4000-8000-000000000001"
	policy := "|4096,2,40960,1,1,1|0,0,0,0,0,0;131072,80,2097152,1,8,1|drbd,plain,sharedfile,diskless,file,blockdev,rbd,ext,gluster|2.5|1000000000"
	want := strings.Join([]string{
		"default|" + uuid + "|preferred||",
		"",
		// node1: primaries web1 (4096) and batch1 (2048); disks of web1,
		// batch1 (primary) and db1, lost1 (secondary).
		"node1|66048|512|59392|1048576|874496|16|N|" + uuid + "|1|rack:r1,ssd|N|1|0|1.0",
		// node2: web2 and shared1 (whose disk is on no node).
		"node2|66048|512|60416|1048576|966656|16|N|" + uuid + "|1|rack:r1|N|1|0|1.0",
		"node3|66048|512|57344|1048576|905216|16|N|" + uuid + "|1|rack:r2,ferry:unschedulable|N|1|0|1.0",
		"node4|131584|512|130048|2097152|2086912|32|Y|" + uuid + "|1|rack:r2|N|1|0|1.0",
		"",
		"web1|4096|40960|2|running|Y|node1|node2|drbd|service:web,owner:alice|1|-|N",
		"web2|4096|40960|2|running|Y|node2|node3|drbd|service:web|1|-|N",
		"db1|8192|102400|4|running|Y|node3|node1|drbd|db|1|-|N",
		"batch1|2048|20480|1|running|Y|node1||plain||1|-|N",
		"shared1|1024|10240|1|running|Y|node2||sharedfile||1|-|N",
		"lost1|1024|10240|1|running|Y|node4|node1|drbd||1|-|N",
		"",
		"htools:iextags:service:web",
		"htools:iextags:db",
		"htools:nlocation:rack",
		"",
		policy,
		"default" + policy,
		"",
	}, "\n")
	if b.String() != want {
		gl, wl := strings.Split(b.String(), "\n"), strings.Split(want, "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Errorf("line %d:\n got %s\nwant %s", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("written file:\n%s", b.String())
	}
	got, err := ReadGaneti(&b)
	if err != nil {
		t.Fatal(err)
	}
	equalSnapshots(t, "sample", got, sample())
}

// TestWriteGanetiCanonical shows what does not survive the Ganeti format.
func TestWriteGanetiCanonical(t *testing.T) {
	res := scheduler.Resources{CPUs: 4, MemMiB: 8192, DiskMiB: 10240}
	s := scheduler.Snapshot{
		Policy: scheduler.Policy{MemRatio: 1.5, Weights: scheduler.Weights{Mem: 2}},
		Nodes: []scheduler.Node{
			{Name: "a", Capacity: res},
			{Name: "b", Capacity: res, Labels: map[string]string{"group": "g2"}},
			{Name: "c", Capacity: res, Labels: map[string]string{"group": "g2"}},
		},
		Instances: []scheduler.Instance{
			{Name: "x", Size: res, Primary: "b", Secondary: "c", Group: "web", Tags: []string{"t"}},
			// A tag that the prefix "web" would match comes after the group.
			{Name: "y", Size: res, Primary: "c", Secondary: "b", Group: "web", Tags: []string{"webby", "web"}},
		},
	}
	want := scheduler.Snapshot{
		Policy: scheduler.Policy{CPURatio: 4}, // MemRatio and Weights dropped
		Nodes: []scheduler.Node{
			{Name: "a", Capacity: res, Labels: map[string]string{"group": "default"}},
			{Name: "b", Capacity: res, Labels: map[string]string{"group": "g2"}},
			{Name: "c", Capacity: res, Labels: map[string]string{"group": "g2"}},
		},
		Instances: []scheduler.Instance{
			{Name: "x", Size: res, Primary: "b", Secondary: "c", Group: "web", Tags: []string{"web", "t"}},
			{Name: "y", Size: res, Primary: "c", Secondary: "b", Group: "web", Tags: []string{"web", "webby"}},
		},
	}
	var b bytes.Buffer
	if err := WriteGaneti(&b, s); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "default|00000000-0000-4000-8000-000000000001|preferred||\ng2|00000000-0000-4000-8000-000000000002|preferred||\n\n") {
		t.Errorf("groups section:\n%s", b.String())
	}
	got, err := ReadGaneti(&b)
	if err != nil {
		t.Fatal(err)
	}
	equalSnapshots(t, "canonical", got, want)
}

func TestWriteGanetiRefuses(t *testing.T) {
	for _, c := range []struct {
		edit func(*scheduler.Snapshot)
		want string
	}{
		{func(s *scheduler.Snapshot) { s.Instances[0].Primary, s.Instances[0].Secondary = "", "" },
			`instances[0].primary: empty: the Ganeti format has no unplaced instances`},
		{func(s *scheduler.Snapshot) { s.Nodes[0].Name = "a|b"; s.Instances = nil },
			`nodes[0].name: "a|b" holds "|", which the Ganeti format cannot`},
		{func(s *scheduler.Snapshot) { s.Instances[1].Name = "web\n2" },
			`instances[1].name: "web\n2" holds "\n", which the Ganeti format cannot`},
		{func(s *scheduler.Snapshot) { s.Instances[0].Tags = []string{"a,b"} },
			`instances[0].tags[0]: "a,b" holds ",", which the Ganeti format cannot`},
		{func(s *scheduler.Snapshot) { s.Instances[0].Tags = []string{""} },
			`instances[0].tags[0]: empty tag`},
		{func(s *scheduler.Snapshot) { s.Instances[0].Group = "a|b" },
			`instances[0].group: "a|b" holds "|", which the Ganeti format cannot`},
		{func(s *scheduler.Snapshot) { s.Nodes[0].Labels["zone:a"] = "x" },
			`nodes[0].labels["zone:a"]: "zone:a" holds ":", which the Ganeti format cannot`},
		{func(s *scheduler.Snapshot) { s.Nodes[0].Labels["zone"] = "a,b" },
			`nodes[0].labels["zone"]: "a,b" holds ",", which the Ganeti format cannot`},
		{func(s *scheduler.Snapshot) { s.Nodes[0].Labels[""] = "x" },
			`nodes[0].labels: empty label key (a Ganeti node tag needs one)`},
		{func(s *scheduler.Snapshot) { s.Nodes[0].Labels["group"] = "" },
			`nodes[0].labels["group"]: empty group name`},
		{func(s *scheduler.Snapshot) { s.Nodes[0].Labels["ferry"] = "unschedulable" },
			`nodes[0].labels["ferry"]: the node tag "ferry:unschedulable" is reserved for unschedulable nodes`},
		{func(s *scheduler.Snapshot) { s.Policy.SpreadLabel = "rack\r" },
			`policy.spreadLabel: "rack\r" holds "\r", which the Ganeti format cannot`},
		// What Validate refuses.
		{func(s *scheduler.Snapshot) { s.Nodes[1].Name = "node1" },
			`nodes[1].name: "node1" is used twice (also nodes[0])`},
		{func(s *scheduler.Snapshot) { s.Instances[2].Size.MemMiB = -1 },
			`instances[2].size.memoryMiB: -1 is negative`},
	} {
		s := sample()
		c.edit(&s)
		err := WriteGaneti(&bytes.Buffer{}, s)
		if err == nil || err.Error() != c.want {
			t.Errorf("got %v\nwant %s", err, c.want)
		}
	}
}

// TestWriteGanetiOneNode checks that a one-node cluster lists plain first
// (hspace allocates with the first template, and drbd needs two nodes).
func TestWriteGanetiOneNode(t *testing.T) {
	s := scheduler.Snapshot{Nodes: []scheduler.Node{{Name: "solo", Capacity: scheduler.Resources{CPUs: 1, MemMiB: 1, DiskMiB: 1}}}}
	var b bytes.Buffer
	if err := WriteGaneti(&b, s); err != nil {
		t.Fatal(err)
	}
	if want := "|128,1,1024,1,1,1|0,0,0,0,0,0;128,4,1024,1,8,1|plain,drbd,"; !strings.Contains(b.String(), want) {
		t.Errorf("no %q in\n%s", want, b.String())
	}
}

// TestWriteGanetiError checks that a failing writer's error comes back.
func TestWriteGanetiError(t *testing.T) {
	err := WriteGaneti(failingWriter{}, sample())
	if err == nil || !errors.Is(err, errFailingWriter) {
		t.Fatalf("got %v, want an error wrapping %v", err, errFailingWriter)
	}
	err = WriteSnapshot(failingWriter{}, sample())
	if err == nil || !errors.Is(err, errFailingWriter) {
		t.Fatalf("got %v, want an error wrapping %v", err, errFailingWriter)
	}
}

var errFailingWriter = fmt.Errorf("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errFailingWriter }
