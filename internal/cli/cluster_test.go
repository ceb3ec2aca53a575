package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

// Fixtures: cluster-ok.json is a clean three-node cluster; cluster-n1.json
// has nodes failing N+1 and one over-allocated; cluster-n1.ganeti is the
// same N+1 trouble in Ganeti's htools text format.
const (
	okFile     = "testdata/cluster-ok.json"
	n1File     = "testdata/cluster-n1.json"
	ganetiFile = "testdata/cluster-n1.ganeti"
)

// loadFixture reads a fixture as the CLI does.
func loadFixture(t *testing.T, path string) scheduler.Snapshot {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := clusterfile.ReadSnapshot
	if strings.HasSuffix(path, ".ganeti") {
		read = clusterfile.ReadGaneti
	}
	s, err := read(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// clusterEnv is a fake server whose cluster is the fixture at path.
func clusterEnv(t *testing.T, path string) *testEnv {
	t.Helper()
	e := newTestEnv(t)
	e.api.cluster = loadFixture(t, path)
	return e
}

// offlineEnv is an environment with no server configured at all: an
// offline verb that tried to reach one would fail.
func offlineEnv(t *testing.T) *testEnv {
	t.Helper()
	e := newTestEnv(t)
	e.env["FERRY_SERVER"], e.env["FERRY_TOKEN"] = "", ""
	return e
}

func mustCheck(t *testing.T, s scheduler.Snapshot) scheduler.CheckReport {
	t.Helper()
	r, err := scheduler.Check(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestClusterCheck(t *testing.T) {
	t.Parallel()
	t.Run("clean", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, okFile)
		r := e.run(t, runOpts{}, "cluster", "check")
		want := mustCheck(t, e.api.cluster)
		r.check(t, []string{"Nodes:", "Instances:", "N+1 failures:", "Score:", formatScore(want.Score),
			"OK: every node can fail and its instances still fit elsewhere (N+1)"}, "")
		if strings.Contains(r.stdout, "fails N+1") {
			t.Errorf("a clean cluster printed an N+1 failure:\n%s", r.stdout)
		}
		if got := e.api.requestLog(); !reflect.DeepEqual(got, []string{"GET /v1/cluster/check"}) {
			t.Errorf("requests = %q", got)
		}
	})
	t.Run("problems exit non-zero with a line per node", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, n1File)
		r := e.run(t, runOpts{}, "cluster", "check")
		want := mustCheck(t, e.api.cluster)
		if want.OK() || want.N1Failures == 0 || want.Over == 0 {
			t.Fatalf("fixture %s should fail N+1 and be over-allocated: %+v", n1File, want)
		}
		var lines []string
		for _, n := range want.Nodes {
			if n.N1Fail {
				lines = append(lines, n.Name+"  fails N+1", n.N1Reason)
			}
			if n.Over {
				lines = append(lines, n.Name+"  over-allocated", n.OverReason)
			}
		}
		r.check(t, append(lines, "Score:", formatScore(want.Score)), "cluster check found problems: "+checkProblems(&want))
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, n1File)
		r := e.run(t, runOpts{}, "cluster", "check", "--json")
		r.check(t, nil, "cluster check found problems")
		var got scheduler.CheckReport
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("--json output is not a report: %v\n%s", err, r.stdout)
		}
		if want := mustCheck(t, e.api.cluster); !reflect.DeepEqual(got, want) {
			t.Errorf("report = %+v, want %+v", got, want)
		}
	})
	t.Run("offline from a snapshot", func(t *testing.T) {
		t.Parallel()
		e := offlineEnv(t)
		r := e.run(t, runOpts{}, "cluster", "check", "--from", okFile)
		r.check(t, []string{"OK: every node can fail", formatScore(mustCheck(t, loadFixture(t, okFile)).Score)}, "")
	})
	t.Run("offline from Ganeti", func(t *testing.T) {
		t.Parallel()
		e := offlineEnv(t)
		want := mustCheck(t, loadFixture(t, ganetiFile))
		r := e.run(t, runOpts{}, "cluster", "check", "--from-ganeti", ganetiFile)
		r.check(t, []string{"fails N+1", formatScore(want.Score)}, "cluster check found problems: "+checkProblems(&want))
	})
	t.Run("offline from stdin", func(t *testing.T) {
		t.Parallel()
		data, err := os.ReadFile(okFile)
		if err != nil {
			t.Fatal(err)
		}
		e := offlineEnv(t)
		r := e.run(t, runOpts{stdin: bytes.NewReader(data)}, "cluster", "check", "--from", "-")
		r.check(t, []string{"OK: every node can fail"}, "")
	})
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"missing file", []string{"--from", "testdata/nope.json"}, "--from: open testdata/nope.json: no such file or directory"},
		{"Ganeti text given as a snapshot", []string{"--from", ganetiFile}, "--from " + ganetiFile + ": "},
		{"snapshot given as Ganeti text", []string{"--from-ganeti", okFile}, "--from-ganeti " + okFile + ": "},
		{"both sources", []string{"--from", okFile, "--from-ganeti", ganetiFile}, "none of the others can be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := offlineEnv(t)
			r := e.run(t, runOpts{}, append([]string{"cluster", "check"}, tc.args...)...)
			if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want containing %q", r.err, tc.wantErr)
			}
		})
	}
}

func TestClusterCapacity(t *testing.T) {
	t.Parallel()
	size := scheduler.Resources{CPUs: 1, MemMiB: 2048, DiskMiB: 20480}
	t.Run("server", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, okFile)
		want, err := scheduler.Capacity(e.api.cluster, size)
		if err != nil {
			t.Fatal(err)
		}
		r := e.run(t, runOpts{}, "cluster", "capacity", "--size", "1cpu,2G,20G")
		r.check(t, []string{"more instances of 1 CPU, 2 GiB, 20 GiB fit while keeping N+1; "}, "")
		if r.stdout != capacitySentence(&want)+"\n" {
			t.Errorf("stdout = %q, want %q", r.stdout, capacitySentence(&want)+"\n")
		}
		if got := e.api.requestLog(); !reflect.DeepEqual(got, []string{"GET /v1/cluster/capacity?size=1cpu%2C2G%2C20G"}) {
			t.Errorf("requests = %q", got)
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, okFile)
		r := e.run(t, runOpts{}, "cluster", "capacity", "--size", "1cpu,2G,20G", "--json")
		r.check(t, nil, "")
		var got scheduler.CapacityReport
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("--json output is not a report: %v\n%s", err, r.stdout)
		}
		if want, _ := scheduler.Capacity(e.api.cluster, size); !reflect.DeepEqual(got, want) {
			t.Errorf("report = %+v, want %+v", got, want)
		}
	})
	t.Run("offline", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"--from", n1File}, {"--from-ganeti", ganetiFile}} {
			e := offlineEnv(t)
			want, err := scheduler.Capacity(loadFixture(t, args[1]), size)
			if err != nil {
				t.Fatal(err)
			}
			r := e.run(t, runOpts{}, append([]string{"cluster", "capacity", "--size", "1cpu,2G,20G"}, args...)...)
			r.check(t, []string{capacitySentence(&want)}, "")
		}
	})
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no size", nil, "--size is required: give CPUScpu,MEMORY,DISK such as 1cpu,2G,20G"},
		{"bad size", []string{"--size", "1cpu"}, `--size: "1cpu" has 1 parts, not 3; expected CPUScpu,MEMORY,DISK such as 1cpu,2G,20G`},
		{"bad memory", []string{"--size", "1cpu,2Q,20G"}, "--size: \"1cpu,2Q,20G\": memory: size \"2Q\" is not a number with a unit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := clusterEnv(t, okFile)
			r := e.run(t, runOpts{}, append([]string{"cluster", "capacity"}, tc.args...)...)
			r.check(t, nil, tc.wantErr)
			if got := e.api.requestLog(); len(got) != 0 {
				t.Errorf("a bad size was sent: %q", got)
			}
		})
	}
}

func TestClusterRebalance(t *testing.T) {
	t.Parallel()
	t.Run("refuses to execute", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{}, {"--max-moves", "3"}, {"--from", n1File}} {
			e := clusterEnv(t, n1File)
			r := e.run(t, runOpts{}, append([]string{"cluster", "rebalance"}, args...)...)
			r.check(t, nil, "executing moves needs live migration (not available yet); use --dry-run")
			if got := e.api.requestLog(); len(got) != 0 {
				t.Errorf("rebalance %v without --dry-run sent %q", args, got)
			}
		}
	})
	t.Run("dry run", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, n1File)
		want, err := scheduler.Rebalance(e.api.cluster, scheduler.RebalanceOptions{MaxMoves: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(want.Moves) == 0 {
			t.Fatalf("fixture %s should need moves", n1File)
		}
		r := e.run(t, runOpts{}, "cluster", "rebalance", "--dry-run", "--max-moves", "2")
		var out []string
		for _, m := range want.Moves {
			out = append(out, m.Instance, pair(m.OldPrimary, m.OldSecondary)+" => "+pair(m.NewPrimary, m.NewSecondary), string(m.Kind), "score "+formatScore(m.ScoreAfter))
		}
		out = append(out, "score "+formatScore(want.ScoreBefore)+" → "+formatScore(want.ScoreAfter), "dry run: nothing was moved")
		r.check(t, out, "")
		if got := e.api.requestLog(); !reflect.DeepEqual(got, []string{"GET /v1/cluster/rebalance?maxMoves=2"}) {
			t.Errorf("requests = %q", got)
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, okFile)
		r := e.run(t, runOpts{}, "cluster", "rebalance", "--dry-run", "--json")
		r.check(t, []string{`"moves": [`}, "")
		var got scheduler.Plan
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("--json output is not a plan: %v\n%s", err, r.stdout)
		}
	})
	t.Run("offline", func(t *testing.T) {
		t.Parallel()
		e := offlineEnv(t)
		want, err := scheduler.Rebalance(loadFixture(t, ganetiFile), scheduler.RebalanceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r := e.run(t, runOpts{}, "cluster", "rebalance", "--dry-run", "--from-ganeti", ganetiFile)
		r.check(t, []string{"score " + formatScore(want.ScoreBefore)}, "")
	})
	t.Run("bad max-moves", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, okFile)
		r := e.run(t, runOpts{}, "cluster", "rebalance", "--dry-run", "--max-moves", "-1")
		r.check(t, nil, "--max-moves: must be 0 (no limit) or more, got -1")
	})
}

func TestClusterSnapshot(t *testing.T) {
	t.Parallel()
	e := clusterEnv(t, n1File)
	var want bytes.Buffer
	if err := clusterfile.WriteSnapshot(&want, e.api.cluster); err != nil {
		t.Fatal(err)
	}
	r := e.run(t, runOpts{}, "cluster", "snapshot")
	r.check(t, nil, "")
	if r.stdout != want.String() {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want.String())
	}
	// Saved to a file, it works offline: the same check as the server's.
	file := filepath.Join(e.dir, "snap.json")
	r = e.run(t, runOpts{}, "cluster", "snapshot", "-o", file)
	r.check(t, []string{"snapshot of 4 nodes and 4 instances written to " + file}, "")
	online := e.run(t, runOpts{}, "cluster", "check")
	offline := e.run(t, runOpts{}, "cluster", "check", "--from", file)
	if online.stdout != offline.stdout || online.err == nil || offline.err == nil || online.err.Error() != offline.err.Error() {
		t.Errorf("check online and from the saved snapshot differ:\n%s%v\n---\n%s%v", online.stdout, online.err, offline.stdout, offline.err)
	}
	// Ganeti text converts to a snapshot without a server.
	o := offlineEnv(t)
	r = o.run(t, runOpts{}, "cluster", "snapshot", "--from-ganeti", ganetiFile)
	r.check(t, []string{`"version": 1`, `"name": "big-1"`}, "")
	if _, err := clusterfile.ReadSnapshot(strings.NewReader(r.stdout)); err != nil {
		t.Errorf("the converted snapshot does not read back: %v", err)
	}
}

func TestClusterFormat(t *testing.T) {
	t.Run("capacity sentence", func(t *testing.T) {
		for _, tc := range []struct {
			rep  scheduler.CapacityReport
			want string
		}{
			{scheduler.CapacityReport{Size: scheduler.Resources{CPUs: 1, MemMiB: 2048, DiskMiB: 20480}, Fit: 12, Limit: "memory", Reason: "no node has 2.0 GiB of memory free while keeping N+1"},
				"12 more instances of 1 CPU, 2 GiB, 20 GiB fit while keeping N+1; memory runs out first (no node has 2.0 GiB of memory free while keeping N+1)"},
			{scheduler.CapacityReport{Size: scheduler.Resources{CPUs: 4, MemMiB: 1536, DiskMiB: 512}, Fit: 1, Limit: "cpu", Reason: "x"},
				"1 more instance of 4 CPUs, 1.5 GiB, 512 MiB fits while keeping N+1; CPUs run out first (x)"},
			{scheduler.CapacityReport{Size: scheduler.Resources{CPUs: 2, MemMiB: 1 << 20, DiskMiB: 3 << 20}, Fit: 0, Limit: "nodes", Reason: "no node is online and schedulable"},
				"0 more instances of 2 CPUs, 1 TiB, 3 TiB fit while keeping N+1; there are too few online, schedulable nodes (no node is online and schedulable)"},
		} {
			if got := capacitySentence(&tc.rep); got != tc.want {
				t.Errorf("capacitySentence(%+v)\n got %q\nwant %q", tc.rep, got, tc.want)
			}
		}
	})
	t.Run("check", func(t *testing.T) {
		var out bytes.Buffer
		a := &app{opts: RootOptions{Stdout: &out}, g: &Globals{}}
		rep := &scheduler.CheckReport{
			Nodes: []scheduler.NodeReport{
				{Name: "a", N1Fail: true, N1Reason: "if b dies, the instances it replicates here need 4.0 GiB of memory; 2.0 GiB is free"},
				{Name: "b"},
				{Name: "dead", Offline: true, Primaries: 2, Secondaries: 1},
				{Name: "full", Over: true, OverReason: "memory: 4.0 GiB allocated, 2.0 GiB available"},
			},
			Instances: 7, N1Failures: 1, Over: 1, Unprotected: 3, Score: 2.5,
		}
		if err := a.printCheck(rep); err != nil {
			t.Fatal(err)
		}
		want := "" +
			"a     fails N+1       if b dies, the instances it replicates here need 4.0 GiB of memory; 2.0 GiB is free\n" +
			"dead  offline         2 primaries and 1 replicas need a new home\n" +
			"full  over-allocated  memory: 4.0 GiB allocated, 2.0 GiB available\n" +
			"\n" +
			"Nodes:            4 (1 offline)\n" +
			"Instances:        7\n" +
			"N+1 failures:     1\n" +
			"Over-allocated:   1\n" +
			"Group conflicts:  0\n" +
			"Unprotected:      3\n" +
			"Score:            2.5000\n"
		if out.String() != want {
			t.Errorf("printCheck =\n%s\nwant\n%s", out.String(), want)
		}
		if got := checkProblems(rep); got != "1 node fails N+1, 1 node is over-allocated, 3 unprotected instances" {
			t.Errorf("checkProblems = %q", got)
		}
	})
	t.Run("plan", func(t *testing.T) {
		var out bytes.Buffer
		a := &app{opts: RootOptions{Stdout: &out}, g: &Globals{}}
		plan := &scheduler.Plan{ScoreBefore: 2.5, ScoreAfter: 0.75, N1Before: 2, N1After: 0, Bytes: 22 << 30, Moves: []scheduler.Move{
			{Instance: "big-1", Kind: scheduler.MoveReplaceAndFailover, OldPrimary: "a", OldSecondary: "b", NewPrimary: "c", NewSecondary: "a", Bytes: 16 << 30, ScoreAfter: 1.25},
			{Instance: "db", Kind: scheduler.MovePrimary, OldPrimary: "e", NewPrimary: "b", Bytes: 6 << 30, ScoreAfter: 0.75},
		}}
		if err := a.printPlan(plan); err != nil {
			t.Fatal(err)
		}
		want := "" +
			"1.  big-1  a:b => c:a  replace-and-failover  copies 16G  score 1.2500\n" +
			"2.  db     e:- => b:-  move-primary          copies 6G   score 0.7500\n" +
			"\n" +
			"score 2.5000 → 0.7500, N+1 failures 2 → 0, 2 moves, 22G copied\n" +
			"dry run: nothing was moved; executing moves needs live migration (not available yet)\n"
		if out.String() != want {
			t.Errorf("printPlan =\n%s\nwant\n%s", out.String(), want)
		}
		out.Reset()
		if err := a.printPlan(&scheduler.Plan{ScoreBefore: 0.125}); err != nil {
			t.Fatal(err)
		}
		if out.String() != "no move improves the cluster (score 0.1250, N+1 failures 0)\n" {
			t.Errorf("empty plan: %q", out.String())
		}
	})
}

func TestNodeLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantOut  []string
		wantErr  string
		wantBody string
	}{
		{name: "set and remove", args: []string{"node", "label", "n1", "rack=r2", "zone-", "row=7"},
			wantOut: []string{`node "n1" labels: rack=r2,row=7`}, wantBody: `{"labels":{"rack":"r2","row":"7","zone":null}}`},
		{name: "remove all", args: []string{"node", "label", "n1", "rack-", "zone-"}, wantOut: []string{`node "n1" has no labels`}},
		{name: "json", args: []string{"node", "label", "n1", "rack=r9", "--json"}, wantOut: []string{`"rack": "r9"`, `"name": "n1"`}},
		{name: "bad key", args: []string{"node", "label", "n1", "Rack=r1"}, wantErr: `label "Rack=r1": label key "Rack" is not valid`},
		{name: "bad value", args: []string{"node", "label", "n1", "rack=r 1"}, wantErr: `label "rack=r 1": value "r 1" of label "rack" is not valid`},
		{name: "empty value", args: []string{"node", "label", "n1", "rack="}, wantErr: `label "rack=": label "rack" has an empty value`},
		{name: "neither set nor remove", args: []string{"node", "label", "n1", "rack"}, wantErr: `label "rack": give KEY=VALUE to set a label or KEY- to remove one`},
		{name: "twice", args: []string{"node", "label", "n1", "rack=r1", "rack-"}, wantErr: `label "rack-": the key rack is given twice`},
		{name: "no labels", args: []string{"node", "label", "n1"}, wantErr: "missing the labels: give KEY=VALUE to set one, KEY- to remove one"},
		{name: "unknown node", args: []string{"node", "label", "x", "rack=r1"}, wantErr: `node "x" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantBody != "" {
				if got := strings.TrimSpace(e.api.body("/v1/nodes/n1")); got != tc.wantBody {
					t.Errorf("PATCH body = %s, want %s", got, tc.wantBody)
				}
			}
			if tc.wantErr != "" && tc.wantErr != `node "x" not found` {
				if got := e.api.requestLog(); len(got) != 0 {
					t.Errorf("a refused label was sent: %q", got)
				}
			}
		})
	}
}
