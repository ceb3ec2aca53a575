package server

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

// threeNodes starts a server with three beating nodes (4 CPUs, 4 GiB,
// 100 GiB each) and waits until they are Ready.
func threeNodes(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	ts := startServer(t, mod)
	for _, name := range []string{"n1", "n2", "n3"} {
		stop := ts.mustJoin(name).keepBeating()
		t.Cleanup(stop)
	}
	waitFor(t, 10*time.Second, "three nodes Ready", func() bool {
		var list api.List[api.Node]
		ts.do("GET", "/v1/nodes", nil, &list)
		ready := 0
		for _, n := range list.Items {
			if n.Status.State == api.NodeReady && n.Status.Capacity.CPUs == 4 {
				ready++
			}
		}
		return ready == 3
	})
	return ts
}

func TestClusterRoutes(t *testing.T) {
	ts := threeNodes(t, nil)
	for _, name := range []string{"web-1", "web-2"} {
		spec := smallSpec()
		spec.Group = "web"
		ts.createInstance(name, spec)
	}
	waitFor(t, 10*time.Second, "both placed", func() bool {
		a, _ := ts.getInstance("web-1")
		b, _ := ts.getInstance("web-2")
		return a.Status.ReplicaNode != "" && b.Status.ReplicaNode != ""
	})
	a, _ := ts.getInstance("web-1")
	b, _ := ts.getInstance("web-2")
	if a.Spec.Group != "web" {
		t.Fatalf("web-1's group = %q, want web", a.Spec.Group)
	}
	if a.Status.Node == b.Status.Node {
		t.Fatalf("web-1 and web-2 of one group share host %s", a.Status.Node)
	}

	t.Run("check", func(t *testing.T) {
		var rep scheduler.CheckReport
		if code := ts.do("GET", "/v1/cluster/check", nil, &rep); code != 200 {
			t.Fatalf("check = %d", code)
		}
		if len(rep.Nodes) != 3 || rep.Instances != 2 || !rep.OK() {
			t.Fatalf("check report %+v, want 3 nodes, 2 instances, no problem", rep)
		}
		for _, n := range rep.Nodes {
			if n.Capacity != (scheduler.Resources{CPUs: 4, MemMiB: 4096, DiskMiB: 102400}) {
				t.Fatalf("node %s capacity %+v, want 4 CPUs, 4096 MiB, 102400 MiB", n.Name, n.Capacity)
			}
		}
	})
	t.Run("capacity", func(t *testing.T) {
		var rep scheduler.CapacityReport
		if code := ts.do("GET", "/v1/cluster/capacity?size=1cpu,256M,1G", nil, &rep); code != 200 {
			t.Fatalf("capacity = %d", code)
		}
		if rep.Size != (scheduler.Resources{CPUs: 1, MemMiB: 256, DiskMiB: 1024}) || rep.Fit <= 0 || rep.Limit == "" || rep.Reason == "" {
			t.Fatalf("capacity report %+v, want some 256 MiB instances to fit and a limit", rep)
		}
		for _, tc := range []struct{ name, query string }{
			{"missing", ""},
			{"one part", "?size=lots"},
			{"no cpu suffix", "?size=1,2G,20G"},
			{"bad memory", "?size=1cpu,2Q,20G"},
			{"zero cpus", "?size=0cpu,2G,20G"},
		} {
			var eb api.ErrorBody
			if code := ts.do("GET", "/v1/cluster/capacity"+tc.query, nil, &eb); code != 400 || eb.Error.Code != "invalid" || eb.Error.Field != "size" ||
				!strings.Contains(eb.Error.Message, "1cpu,2G,20G") {
				t.Errorf("%s size: %d %+v, want 400 invalid on field size showing the form 1cpu,2G,20G", tc.name, code, eb)
			}
		}
	})
	t.Run("rebalance", func(t *testing.T) {
		var plan scheduler.Plan
		if code := ts.do("GET", "/v1/cluster/rebalance?maxMoves=1", nil, &plan); code != 200 {
			t.Fatalf("rebalance = %d", code)
		}
		if len(plan.Moves) > 1 || plan.ScoreAfter > plan.ScoreBefore || plan.Moves == nil {
			t.Fatalf("plan %+v, want at most one move, a score no worse, and moves as a list", plan)
		}
		// Nothing moved: it is a dry run.
		if again, _ := ts.getInstance("web-1"); again.Status.Node != a.Status.Node || again.Status.ReplicaNode != a.Status.ReplicaNode {
			t.Fatalf("rebalance moved web-1 from %s:%s to %s:%s", a.Status.Node, a.Status.ReplicaNode, again.Status.Node, again.Status.ReplicaNode)
		}
		for _, q := range []string{"-1", "many", "100001"} {
			var eb api.ErrorBody
			if code := ts.do("GET", "/v1/cluster/rebalance?maxMoves="+q, nil, &eb); code != 400 || eb.Error.Field != "maxMoves" {
				t.Errorf("maxMoves=%s: %d %+v, want 400 on maxMoves", q, code, eb)
			}
		}
	})
	t.Run("snapshot", func(t *testing.T) {
		req, _ := http.NewRequest("GET", ts.url+"/v1/cluster/snapshot", nil)
		req.Header.Set("Authorization", "Bearer "+ts.token)
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("snapshot = %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), data)
		}
		snap, err := clusterfile.ReadSnapshot(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("the snapshot does not read back: %v\n%s", err, data)
		}
		if len(snap.Nodes) != 3 || len(snap.Instances) != 2 || snap.Policy.CPURatio != 4 || snap.Policy.MemRatio != 1 {
			t.Fatalf("snapshot %+v, want 3 nodes, 2 instances and the default policy", snap)
		}
		groups := 0
		for _, in := range snap.Instances {
			if in.Group == "web" && in.Primary != "" && in.Secondary != "" && in.Size == (scheduler.Resources{CPUs: 1, MemMiB: 256, DiskMiB: 1024}) {
				groups++
			}
		}
		if groups != 2 {
			t.Fatalf("snapshot instances %+v, want both placed, sized and in group web", snap.Instances)
		}
	})
	t.Run("needs a token", func(t *testing.T) {
		for _, p := range []string{"check", "capacity?size=1cpu,1G,1G", "rebalance", "snapshot"} {
			if code := doJSON(t, ts.client, "GET", ts.url+"/v1/cluster/"+p, "", nil, nil); code != http.StatusUnauthorized {
				t.Errorf("GET /v1/cluster/%s without a token = %d, want 401", p, code)
			}
		}
	})
}

// TestClusterPolicyFromConfig: the server's overcommit and spread label
// reach the scheduler's snapshot.
func TestClusterPolicyFromConfig(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.CPURatio, c.SpreadLabel = 2, "rack" })
	stop := ts.mustJoin("n1").keepBeating()
	defer stop()
	var snapDoc bytes.Buffer
	req, _ := http.NewRequest("GET", ts.url+"/v1/cluster/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+ts.token)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(&snapDoc, resp.Body)
	resp.Body.Close()
	snap, err := clusterfile.ReadSnapshot(&snapDoc)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Policy.CPURatio != 2 || snap.Policy.MemRatio != 1 || snap.Policy.SpreadLabel != "rack" {
		t.Fatalf("policy %+v, want cpu 2, memory 1, spread rack", snap.Policy)
	}
}

func TestConfigPolicyValidation(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"overcommit", func(c *Config) { c.CPURatio, c.MemRatio = 8, 1.5 }, ""},
		{"negative cpu", func(c *Config) { c.CPURatio = -1 }, "--cpu-overcommit"},
		{"huge memory", func(c *Config) { c.MemRatio = 5000 }, "memory overcommit"},
		{"bad spread label", func(c *Config) { c.SpreadLabel = "Rack Row" }, "--spread-label"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{DataDir: t.TempDir()}
			tc.mod(&c)
			err := c.setDefaults()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("setDefaults: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("setDefaults = %v, want an error naming %s", err, tc.wantErr)
			case tc.wantErr == "" && (c.CPURatio <= 0 || c.MemRatio <= 0):
				t.Fatalf("ratios after setDefaults: %v, %v", c.CPURatio, c.MemRatio)
			}
		})
	}
}

func TestPatchNode(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.mustJoin("n1")
	stop := a.keepBeating()
	defer stop()
	waitFor(t, 5*time.Second, "n1 Ready", func() bool {
		var n api.Node
		ts.do("GET", "/v1/nodes/n1", nil, &n)
		return n.Status.State == api.NodeReady
	})
	// patch decodes each answer into a new node: decoding into an old one
	// would merge the label maps.
	var n api.Node
	patch := func(body string) int {
		n = api.Node{}
		return ts.do("PATCH", "/v1/nodes/n1", body, &n)
	}
	get := func() {
		n = api.Node{}
		ts.do("GET", "/v1/nodes/n1", nil, &n)
	}
	if code := patch(`{"labels":{"rack":"r1","zone":"a"}}`); code != 200 {
		t.Fatalf("PATCH labels = %d", code)
	}
	if api.FormatLabels(n.Spec.Labels) != "rack=r1,zone=a" || n.Status.State != api.NodeReady {
		t.Fatalf("after PATCH: labels %v state %s", n.Spec.Labels, n.Status.State)
	}
	if code := patch(`{"labels":{"zone":null,"rack":"r2"},"unschedulable":true}`); code != 200 {
		t.Fatalf("PATCH remove = %d", code)
	}
	if api.FormatLabels(n.Spec.Labels) != "rack=r2" || !n.Spec.Unschedulable {
		t.Fatalf("after PATCH: labels %v unschedulable %v, want rack=r2 and cordoned", n.Spec.Labels, n.Spec.Unschedulable)
	}
	// Heartbeats write the status; they keep the spec.
	time.Sleep(1200 * time.Millisecond)
	get()
	if api.FormatLabels(n.Spec.Labels) != "rack=r2" || !n.Spec.Unschedulable {
		t.Fatalf("after heartbeats: labels %v unschedulable %v", n.Spec.Labels, n.Spec.Unschedulable)
	}
	// A patch that changes nothing writes nothing.
	if code := patch(`{"labels":{"rack":"r2"}}`); code != 200 || api.FormatLabels(n.Spec.Labels) != "rack=r2" {
		t.Fatalf("PATCH unchanged = %d %v", code, n.Spec.Labels)
	}

	tests := []struct {
		name      string
		path      string
		body      string
		wantCode  int
		wantField string
		wantMsg   string
	}{
		{"bad key", "/v1/nodes/n1", `{"labels":{"Rack":"r1"}}`, 400, "labels.Rack", `"Rack"`},
		{"bad value", "/v1/nodes/n1", `{"labels":{"rack":"r 1"}}`, 400, "labels.rack", `"r 1"`},
		{"empty value", "/v1/nodes/n1", `{"labels":{"rack":""}}`, 400, "labels.rack", "empty value"},
		{"nothing", "/v1/nodes/n1", `{}`, 400, "", "changes nothing"},
		{"unknown field", "/v1/nodes/n1", `{"status":{}}`, 400, "status", ""},
		{"unknown node", "/v1/nodes/nope", `{"labels":{"rack":"r1"}}`, 404, "", "nope"},
		{"stale version", "/v1/nodes/n1", `{"labels":{"rack":"r3"},"resourceVersion":"1"}`, 409, "resourceVersion", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var eb api.ErrorBody
			code := ts.do("PATCH", tc.path, tc.body, &eb)
			if code != tc.wantCode || eb.Error.Field != tc.wantField || !strings.Contains(eb.Error.Message, tc.wantMsg) {
				t.Fatalf("PATCH %s = %d %+v, want %d on field %q saying %q", tc.body, code, eb, tc.wantCode, tc.wantField, tc.wantMsg)
			}
		})
	}
	get()
	if api.FormatLabels(n.Spec.Labels) != "rack=r2" {
		t.Fatalf("a refused patch changed the labels: %v", n.Spec.Labels)
	}
	// With the current version it applies.
	if code := patch(`{"labels":{"rack":"r3"},"resourceVersion":"` + n.ResourceVersion + `"}`); code != 200 || api.FormatLabels(n.Spec.Labels) != "rack=r3" {
		t.Fatalf("PATCH at the current version = %d %v", code, n.Spec.Labels)
	}
	var evs api.List[api.Event]
	ts.do("GET", "/v1/events?limit=100", nil, &evs)
	var msgs []string
	for _, ev := range evs.Items {
		if ev.Type == "NodeUpdated" && ev.Name == "n1" {
			msgs = append(msgs, ev.Message)
		}
	}
	if strings.Join(msgs, "; ") != "rack=r1, zone=a; rack=r2, zone removed, unschedulable; rack=r3" {
		t.Fatalf("NodeUpdated events %q", msgs)
	}
}
