package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/sla"
	"github.com/ferrycluster/ferry/internal/store"
)

const goldPolicy = `{"name":"gold","target_percent":99.95,"window":"month","monthly_price":100,
 "tiers":[{"below_percent":99.95,"credit_percent":10},{"below_percent":99,"credit_percent":25},{"below_percent":95,"credit_percent":100}]}`

const silverPolicy = `{"name":"silver","target_percent":99,"window":"month","monthly_price":50,
 "tiers":[{"below_percent":99,"credit_percent":10}]}`

// rawGet fetches path as the admin and returns the status, the body and
// the response headers.
func (ts *testServer) rawGet(t *testing.T, path string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+ts.token)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// TestSLAReportFromLedger drives two instances under two policies through
// outages timed by their agent in the previous month, and checks the live
// report against figures computed by hand, and that a replay of the
// export gives the same report byte for byte.
func TestSLAReportFromLedger(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	ts := e.ts
	for name, body := range map[string]string{"gold": goldPolicy, "silver": silverPolicy} {
		if code := ts.do("PUT", "/v1/sla/policies/"+name, body, nil); code != 200 {
			t.Fatalf("put policy %s = %d", name, code)
		}
	}
	if code := ts.do("PUT", "/v1/sla/assignments/customers/acme", sla.Assignment{Policy: "gold"}, nil); code != 200 {
		t.Fatalf("assign acme = %d", code)
	}
	price := sla.Money(8000)
	if code := ts.do("PUT", "/v1/sla/assignments/instances/db", sla.Assignment{Policy: "silver", MonthlyPrice: &price}, nil); code != 200 {
		t.Fatalf("assign db = %d", code)
	}
	web, db := smallSpec(), smallSpec()
	web.Owner, db.Owner = "acme", "beta"
	webIn, dbIn := e.running("web", web, true), e.running("db", db, true)

	// The previous month, whole: a deterministic window.
	now := time.Now().UTC()
	month := sla.MonthOf(now).Prev()
	start, end := month.Bounds(time.UTC)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	serve := func(in api.Instance, v bool, t0 time.Time, phase api.Phase) {
		t.Helper()
		if code := e.agents[in.Status.Node].report(in.Name, api.InstanceReport{Phase: phase, Serving: &v, ServingAt: t0}); code != 200 {
			t.Fatalf("report %s serving=%v = %d", in.Name, v, code)
		}
	}
	day := 24 * time.Hour
	serve(webIn, true, at(0), api.PhaseRunning)
	serve(webIn, false, at(2*day), api.PhaseRunning) // 30 min not answering
	serve(webIn, true, at(2*day+30*time.Minute), api.PhaseRunning)
	serve(dbIn, true, at(day), api.PhaseRunning)
	serve(dbIn, false, at(3*day), api.PhaseFailed) // 10 h crashed
	serve(dbIn, true, at(3*day+10*time.Hour), api.PhaseRunning)

	code, body, _ := ts.rawGet(t, "/v1/sla/report?month="+month.String())
	if code != 200 {
		t.Fatalf("report = %d %s", code, body)
	}
	var rep struct {
		Instances []struct {
			Instance            string  `json:"instance"`
			Customer            string  `json:"customer"`
			Policy              string  `json:"policy"`
			AvailabilityPercent float64 `json:"availability_percent"`
			DowntimeSeconds     float64 `json:"downtime_seconds"`
			ExcludedSeconds     float64 `json:"excluded_seconds"`
			Credit              float64 `json:"credit"`
		} `json:"instances"`
		Totals struct {
			Revenue float64 `json:"revenue"`
			Credits float64 `json:"credits"`
		} `json:"totals"`
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Instances) != 2 {
		t.Fatalf("report rows: %s", body)
	}
	month64 := end.Sub(start)
	// By hand: web is in the ledger the whole month, down 30 min:
	// availability below 99.95 % (a 30-day month allows 21.6 min), so
	// gold's 10 % of 100. db from day 1, down 10 h: below 99 %, so
	// silver's 10 % of its own price, 80.
	webAvail := 100 * (1 - (30*time.Minute).Seconds()/month64.Seconds())
	dbAvail := 100 * (1 - (10*time.Hour).Seconds()/(month64-day).Seconds())
	want := map[string]struct {
		customer, policy string
		avail, down      float64
		credit           float64
	}{
		"web": {"acme", "gold", webAvail, 1800, 10},
		"db":  {"beta", "silver", dbAvail, 36000, 8},
	}
	for _, row := range rep.Instances {
		w, ok := want[row.Instance]
		if !ok {
			t.Fatalf("unexpected row %+v", row)
		}
		if row.Customer != w.customer || row.Policy != w.policy || row.DowntimeSeconds != w.down || row.Credit != w.credit ||
			row.ExcludedSeconds != 0 || abs(row.AvailabilityPercent-w.avail) > 1e-9 {
			t.Errorf("row %s = %+v, want %+v", row.Instance, row, w)
		}
	}
	if rep.Totals.Revenue != 180 || rep.Totals.Credits != 18 {
		t.Errorf("totals = %+v, want revenue 180, credits 18", rep.Totals)
	}

	// The export, replayed with the same policies, gives the same report.
	code, export, _ := ts.rawGet(t, "/v1/sla/export?month="+month.String())
	if code != 200 {
		t.Fatalf("export = %d %s", code, export)
	}
	evs, err := sla.ParseEvents(bytes.NewReader(export))
	if err != nil {
		t.Fatalf("export does not parse: %v\n%s", err, export)
	}
	gold, _ := sla.ParsePolicy(strings.NewReader(goldPolicy))
	silver, _ := sla.ParsePolicy(strings.NewReader(silverPolicy))
	plans := &sla.Plans{Policies: map[string]sla.Policy{"gold": gold, "silver": silver},
		Customers: map[string]sla.Assignment{"acme": {Policy: "gold"}},
		Instances: map[string]sla.Assignment{"db": {Policy: "silver", MonthlyPrice: &price}}}
	replayed, err := sla.Compute(evs, sla.MonthWindow(month, time.UTC), plans.Plan)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sla.WriteJSON(&buf, replayed); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(buf.Bytes()), bytes.TrimSpace(body)) {
		t.Errorf("replay differs from the live report:\nlive:   %s\nreplay: %s", body, buf.Bytes())
	}

	// One customer's report, and one instance's timeline.
	code, body, _ = ts.rawGet(t, "/v1/sla/report?month="+month.String()+"&customer=beta")
	if code != 200 || strings.Contains(string(body), `"web"`) || !strings.Contains(string(body), `"db"`) {
		t.Errorf("customer report = %d %s", code, body)
	}
	var tl api.List[sla.Interval]
	if code := ts.do("GET", "/v1/sla/incidents/db?month="+month.String(), nil, &tl); code != 200 {
		t.Fatalf("incidents = %d", code)
	}
	var downs []sla.Interval
	for _, iv := range tl.Items {
		if iv.State == sla.Down {
			downs = append(downs, iv)
		}
	}
	if len(downs) != 1 || downs[0].Cause != sla.Cause(api.CauseCrash) || !downs[0].Start.Equal(at(3*day)) {
		t.Errorf("db's outages = %+v", downs)
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// TestSLABadInput: each refusal names its field and says what to do.
func TestSLABadInput(t *testing.T) {
	ts := startServer(t, nil)
	check := func(method, path string, body any, wantCode int, wantField, wantMsg string) {
		t.Helper()
		var eb api.ErrorBody
		code := ts.do(method, path, body, &eb)
		if code != wantCode || eb.Error.Field != wantField || !strings.Contains(eb.Error.Message, wantMsg) {
			t.Errorf("%s %s = %d %+v, want %d field %q with %q", method, path, code, eb.Error, wantCode, wantField, wantMsg)
		}
	}
	check("PUT", "/v1/sla/policies/gold", strings.Replace(goldPolicy, "99.95,\"window", "101,\"window", 1), 400, "target_percent", "")
	check("PUT", "/v1/sla/policies/gold", strings.Replace(goldPolicy, `"below_percent":99,`, `"below_percent":99.95,`, 1), 400, "tiers[1].below_percent", "")
	check("PUT", "/v1/sla/policies/other", goldPolicy, 400, "name", "path says")
	check("PUT", "/v1/sla/assignments/instances/web", sla.Assignment{Policy: "nope"}, 400, "policy", "unknown policy")
	check("PUT", "/v1/sla/assignments/racks/r1", sla.Assignment{Policy: "gold"}, 404, "", "instances or customers")
	if code := ts.do("PUT", "/v1/sla/policies/gold", goldPolicy, nil); code != 200 {
		t.Fatalf("put gold = %d", code)
	}
	if code := ts.do("PUT", "/v1/sla/assignments/customers/acme", sla.Assignment{Policy: "gold"}, nil); code != 200 {
		t.Fatalf("assign = %d", code)
	}
	check("DELETE", "/v1/sla/policies/gold", nil, 409, "", "customer acme")
	// Create only: an existing policy is not replaced.
	req, _ := http.NewRequest("PUT", ts.url+"/v1/sla/policies/gold", strings.NewReader(goldPolicy))
	req.Header.Set("Authorization", "Bearer "+ts.token)
	req.Header.Set("If-None-Match", "*")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 409 {
		t.Errorf("create-only PUT of an existing policy = %d, want 409", resp.StatusCode)
	}
	// A customer is any owner name, spaces and capitals included.
	if code := ts.do("PUT", "/v1/sla/assignments/customers/Acme%20Corp", sla.Assignment{Policy: "gold"}, nil); code != 200 {
		t.Errorf("assign to a customer named with a space = %d", code)
	}
	check("PUT", "/v1/sla/assignments/customers/a%0Ab", sla.Assignment{Policy: "gold"}, 400, "name", "control characters")
	next := sla.MonthOf(time.Now().UTC()).Next()
	check("GET", "/v1/sla/report?month="+next.Next().String(), nil, 400, "month", "has not begun")
	check("GET", "/v1/sla/report?month=2026-13", nil, 400, "month", "")
	check("GET", "/v1/sla/report?tz=Mars/Olympus", nil, 400, "tz", "unknown time zone")
	check("POST", "/v1/maintenance", api.MaintenanceRequest{Node: "n9", Start: time.Now(), End: time.Now().Add(time.Hour)}, 400, "node", "does not exist")
	check("POST", "/v1/maintenance", api.MaintenanceRequest{Node: "n1", Start: time.Now()}, 400, "end", "required")
}

// TestSLALeaderChangeDuringOutage: a host dies, the leader records the
// outage (in the failover's transaction) and then dies itself before the
// instance serves again; the next leader, on the same embedded etcd,
// carries the failover on. The ledger holds the outage exactly once, and
// every server reports the same figures.
func TestSLALeaderChangeDuringOutage(t *testing.T) {
	emb, err := store.StartEmbedded(context.Background(), store.EmbeddedConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close) // after the servers' cleanups, which run first

	prefix := "/sla-leader-test/"
	onEtcd := func(id string) func(*Config) {
		return func(c *Config) { c.EtcdEndpoints, c.EtcdPrefix, c.ID = emb.Endpoints(), prefix, id }
	}
	a := startServer(t, onEtcd("a"))
	b := startServerNoLeaderWait(t, onEtcd("b"))
	b.token = a.token

	if code := a.do("PUT", "/v1/sla/policies/gold", goldPolicy, nil); code != 200 {
		t.Fatalf("put policy = %d", code)
	}
	if code := a.do("PUT", "/v1/sla/assignments/customers/acme", sla.Assignment{Policy: "gold"}, nil); code != 200 {
		t.Fatalf("assign = %d", code)
	}
	// Agents that beat against whichever server is up.
	var target atomic.Pointer[testServer]
	target.Store(a)
	agents := map[string]*fakeAgent{}
	beating := map[string]*atomic.Bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	for _, n := range []string{"n1", "n2"} {
		ag := a.mustJoin(n)
		agents[n] = ag
		on := &atomic.Bool{}
		on.Store(true)
		beating[n] = on
		wg.Go(func() {
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			for {
				if on.Load() {
					hb := api.Heartbeat{Capacity: api.Resources{CPUs: 4, Memory: 4 << 30, Disk: 100 << 30}, Address: n + ".test:7445"}
					data, _ := json.Marshal(hb)
					if resp, err := ag.client.Post(target.Load().url+"/v1/agent/heartbeat", "application/json", bytes.NewReader(data)); err == nil {
						resp.Body.Close()
					}
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	report := func(node, name string, rep api.InstanceReport) int {
		t.Helper()
		return doJSON(t, agents[node].client, "PUT", target.Load().url+"/v1/agent/instances/"+name+"/status", "", rep, nil)
	}
	waitFor(t, 10*time.Second, "both nodes Ready", func() bool {
		var nodes api.List[api.Node]
		a.do("GET", "/v1/nodes", nil, &nodes)
		ready := 0
		for _, n := range nodes.Items {
			if n.Status.State == api.NodeReady {
				ready++
			}
		}
		return ready == 2
	})
	spec := smallSpec()
	spec.Owner = "acme"
	a.createInstance("web", spec)
	var in api.Instance
	deadline := time.Now().Add(15 * time.Second)
	for in, _ = a.getInstance("web"); in.Status.Node == "" || in.Status.ReplicaNode == ""; in, _ = a.getInstance("web") {
		if time.Now().After(deadline) {
			var nodes api.List[api.Node]
			a.do("GET", "/v1/nodes", nil, &nodes)
			t.Fatalf("web not placed: %+v; nodes %+v", in.Status, nodes.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
	primary, replica := in.Status.Node, in.Status.ReplicaNode
	yes := true
	t0 := time.Now().UTC().Add(-time.Minute)
	if code := report(primary, "web", api.InstanceReport{Phase: api.PhaseRunning, Booted: true, Serving: &yes, ServingAt: t0}); code != 200 {
		t.Fatalf("running = %d", code)
	}
	if code := doJSON(t, agents[primary].client, "PUT", a.url+"/v1/agent/instances/web/disk", "", api.DiskStatus{State: api.DiskUpToDate, Epoch: in.Status.Epoch}, nil); code != 200 {
		t.Fatalf("disk = %d", code)
	}

	// The host dies; the leader fails the instance over and records the
	// outage.
	beating[primary].Store(false)
	waitFor(t, 20*time.Second, "failover to "+replica, func() bool {
		in, _ = a.getInstance("web")
		return in.Status.Node == replica && !in.Status.Serving
	})
	downSince := in.Status.ServingSince
	// The leader dies mid-outage; the other server takes over.
	a.stop()
	target.Store(b)
	waitFor(t, 20*time.Second, "b leads", func() bool { return b.IsLeader() })
	back := time.Now().UTC()
	if code := report(replica, "web", api.InstanceReport{Phase: api.PhaseRunning, Booted: true, Serving: &yes, ServingAt: back}); code != 200 {
		t.Fatalf("serving on %s = %d", replica, code)
	}

	entries, err := b.store.ListLedger(context.Background(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var downs, ups int
	for _, e := range entries {
		switch {
		case e.Serving:
			ups++
		case e.Cause == api.CauseHostFailure && e.Node == primary && e.Time.Equal(downSince):
			downs++
		default:
			t.Errorf("unexpected ledger entry %+v", e)
		}
	}
	if downs != 1 || ups != 2 {
		t.Fatalf("ledger has %d host-failure outages and %d serving entries, want 1 and 2: %+v", downs, ups, entries)
	}
	var tl api.List[sla.Interval]
	if code := b.do("GET", "/v1/sla/incidents/web", nil, &tl); code != 200 {
		t.Fatalf("incidents = %d", code)
	}
	var down []sla.Interval
	for _, iv := range tl.Items {
		if iv.State == sla.Down {
			down = append(down, iv)
		}
	}
	if len(down) != 1 || !down[0].Start.Equal(downSince) || !down[0].End.Equal(back) || down[0].Cause != sla.Cause(api.CauseHostFailure) {
		t.Fatalf("outages = %+v, want one host-failure from %s to %s", down, downSince, back)
	}
}
