package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// TestSLAEndToEnd runs the SLA ledger through a cluster of real ferry
// processes (a server and three agents with the fake driver, instances on
// shared storage so they can move anywhere): two instances under two
// policies; a host killed with SIGKILL (its instance fails over); a cold
// migration; maintenance announced ahead, during which the second instance
// is moved again. The report, its JSON, CSV and SVG, the timelines and a
// replay of the export must all say what the test measured, and the
// credits must be what the tiers give for it.
func TestSLAEndToEnd(t *testing.T) {
	c := startCluster(t)
	home := t.TempDir()
	ca := filepath.Join(c.dataDir, "ca.crt")
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(ferryBin, args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "FERRY_SERVER="+c.url, "FERRY_TOKEN="+c.token, "FERRY_CA_FILE="+ca)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("ferry %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String()
	}
	agents := map[string]func(){}
	for _, name := range []string{"host-a", "host-b", "host-c"} {
		var jt api.JoinToken
		if code, err := c.call("POST", "/v1/join-tokens", struct{}{}, &jt); err != nil || code != 201 {
			t.Fatalf("join token: %d %v", code, err)
		}
		p := startProc(t, "agent", "--server", c.url, "--state-dir", t.TempDir(), "--name", name, "--listen", "", "--api-listen", "",
			"--driver", "fake", "--log-format", "json", "--token", jt.Token)
		agents[name] = p.Kill
	}
	waitUntil(t, 30*time.Second, "3 nodes Ready", func() bool {
		var nodes api.List[api.Node]
		c.call("GET", "/v1/nodes", nil, &nodes)
		ready := 0
		for _, n := range nodes.Items {
			if n.Status.State == api.NodeReady {
				ready++
			}
		}
		return ready == 3
	})

	// Two policies: gold for customer acme; silver for the instance db,
	// with maintenance excluded whenever it is announced before it starts.
	cli("sla", "policy", "create", "gold", "--target", "99.95", "--price", "100", "--tier", "99.95=10", "--tier", "99=25", "--tier", "95=100")
	cli("sla", "policy", "create", "silver", "--target", "99", "--price", "50", "--tier", "99=10", "--tier", "90=50", "--maintenance-notice", "0h")
	cli("sla", "assign", "--customer", "acme", "--policy", "gold")
	cli("sla", "assign", "--instance", "db", "--policy", "silver", "--price", "80")
	shared := "shared:" + t.TempDir()
	cli("instance", "create", "web", "--cpus", "1", "--memory", "256M", "--disk", "1G", "--image", "demo", "--owner", "acme", "--storage", shared)
	cli("instance", "create", "db", "--cpus", "1", "--memory", "256M", "--disk", "1G", "--image", "demo", "--owner", "beta", "--storage", shared)
	get := func(name string) api.Instance {
		var in api.Instance
		c.call("GET", "/v1/instances/"+name, nil, &in)
		return in
	}
	serving := func(name string) bool {
		in := get(name)
		return in.Status.Phase == api.PhaseRunning && in.Status.Serving
	}
	waitUntil(t, 30*time.Second, "web and db serving", func() bool { return serving("web") && serving("db") })

	// A host dies: web's.
	victim := get("web").Status.Node
	agents[victim]()
	killedAt := time.Now()
	waitUntil(t, 60*time.Second, "web failed over and serving", func() bool {
		in := get("web")
		return in.Status.Node != victim && in.Status.Node != "" && serving("web")
	})
	webBack := time.Now()

	// A cold migration of db, then maintenance on its new host,
	// announced ahead, during which it moves again.
	migrate := func(what string) {
		t.Helper()
		from := get("db").Status.Node
		var to string
		for _, n := range []string{"host-a", "host-b", "host-c"} {
			if n != from && n != victim {
				to = n
			}
		}
		cli("instance", "migrate", "db", "--mode", "cold", "--to", to, "--wait")
		waitUntil(t, 30*time.Second, "db serving on "+to+" after "+what, func() bool { return serving("db") && get("db").Status.Node == to })
	}
	migrate("the first migration")
	host := get("db").Status.Node
	start := time.Now().Add(2 * time.Second).UTC()
	cli("maintenance", "schedule", host, "--start", start.Format(time.RFC3339Nano), "--duration", "10m", "--reason", "kernel update")
	waitUntil(t, 10*time.Second, "the maintenance window open", func() bool { return time.Now().After(start.Add(100 * time.Millisecond)) })
	migrate("the maintenance migration")

	// The report, as JSON.
	var rep struct {
		To        time.Time `json:"to"`
		Instances []struct {
			Instance            string  `json:"instance"`
			Customer            string  `json:"customer"`
			Policy              string  `json:"policy"`
			WindowSeconds       float64 `json:"window_seconds"`
			DowntimeSeconds     float64 `json:"downtime_seconds"`
			ExcludedSeconds     float64 `json:"excluded_seconds"`
			AvailabilityPercent float64 `json:"availability_percent"`
			CreditPercent       float64 `json:"credit_percent"`
			Credit              float64 `json:"credit"`
			MonthlyPrice        float64 `json:"monthly_price"`
			IncidentsByCause    map[string]struct {
				Count   int     `json:"count"`
				Seconds float64 `json:"downtime_seconds"`
			} `json:"incidents_by_cause"`
		} `json:"instances"`
		Totals struct {
			Revenue float64 `json:"revenue"`
			Credits float64 `json:"credits"`
		} `json:"totals"`
	}
	reportJSON := cli("sla", "report", "--json")
	if err := json.Unmarshal([]byte(reportJSON), &rep); err != nil {
		t.Fatalf("report JSON: %v\n%s", err, reportJSON)
	}
	t.Logf("report:\n%s", cli("sla", "report"))
	rows := map[string]int{}
	for i, r := range rep.Instances {
		rows[r.Instance] = i
	}
	web, db := rep.Instances[rows["web"]], rep.Instances[rows["db"]]
	if len(rep.Instances) != 2 || web.Policy != "gold" || web.Customer != "acme" || db.Policy != "silver" || db.MonthlyPrice != 80 {
		t.Fatalf("rows: %s", reportJSON)
	}
	// web: one host failure, as long as the test saw it (the ledger dates
	// the outage from the lease's start of expiry, at most the TTL before
	// the kill, and its end from the agent's own clock).
	hf := web.IncidentsByCause[api.CauseHostFailure]
	seen := webBack.Sub(killedAt).Seconds()
	if hf.Count != 1 || hf.Seconds > seen+0.5 || hf.Seconds < seen-4 || web.DowntimeSeconds != hf.Seconds {
		t.Errorf("web's host failure: %+v, downtime %.3fs; the test saw %.3fs; the ledger:\n%s", hf, web.DowntimeSeconds, seen, cli("sla", "export", "--month", time.Now().UTC().Format("2006-01")))
	}
	// db: one migration down, the maintenance one excluded (silver
	// excludes maintenance announced before it starts).
	if m := db.IncidentsByCause[api.CauseMigration]; m.Count != 1 || db.DowntimeSeconds != m.Seconds || db.ExcludedSeconds <= 0 {
		t.Errorf("db: incidents %+v, downtime %.3fs, excluded %.3fs: want one migration down and the maintenance excluded", db.IncidentsByCause, db.DowntimeSeconds, db.ExcludedSeconds)
	}
	// By hand: availability and the tier each row earns.
	tier := func(avail float64, tiers [][2]float64) float64 {
		credit := 0.0
		for _, t := range tiers {
			if avail < t[0] {
				credit = t[1]
			}
		}
		return credit
	}
	for _, r := range []struct {
		row   int
		tiers [][2]float64
		price float64
	}{
		{rows["web"], [][2]float64{{99.95, 10}, {99, 25}, {95, 100}}, 100},
		{rows["db"], [][2]float64{{99, 10}, {90, 50}}, 80},
	} {
		got := rep.Instances[r.row]
		avail := 100 * (got.WindowSeconds - got.ExcludedSeconds - got.DowntimeSeconds) / (got.WindowSeconds - got.ExcludedSeconds)
		if math.Abs(avail-got.AvailabilityPercent) > 1e-6 {
			t.Errorf("%s: availability %.6f%%, by hand %.6f%%", got.Instance, got.AvailabilityPercent, avail)
		}
		pct := tier(avail, r.tiers)
		if got.CreditPercent != pct || math.Abs(got.Credit-pct*r.price/100) > 0.005 {
			t.Errorf("%s: credit %.0f%% = %.2f, by hand %.0f%% = %.2f", got.Instance, got.CreditPercent, got.Credit, pct, pct*r.price/100)
		}
	}
	if math.Abs(rep.Totals.Revenue-180) > 0.005 || math.Abs(rep.Totals.Credits-(web.Credit+db.Credit)) > 0.005 {
		t.Errorf("totals %+v", rep.Totals)
	}

	// The same from an export, replayed offline with the policy files,
	// cut where the live report was: byte for byte the same JSON.
	dir := t.TempDir()
	month := rep.To.UTC().Format("2006-01")
	export := filepath.Join(dir, "events.jsonl")
	cli("sla", "export", "--month", month, "-o", export)
	for _, p := range []string{"gold", "silver"} {
		if err := os.WriteFile(filepath.Join(dir, p+".json"), []byte(cli("sla", "policy", "show", p, "--json")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	replay := cli("sla", "replay", export, "--month", month, "--until", rep.To.Format(time.RFC3339Nano),
		"--policy", filepath.Join(dir, "gold.json"), "--policy", filepath.Join(dir, "silver.json"),
		"--assign", "customer:acme=gold", "--assign", "instance:db=silver@80", "--json")
	if strings.TrimSpace(replay) != strings.TrimSpace(reportJSON) {
		t.Errorf("the replay of the export differs from the live report:\nlive:   %s\nreplay: %s", reportJSON, replay)
	}

	// The SVG: well-formed, one bar per instance, naming them.
	svg := filepath.Join(dir, "sla.svg")
	cli("sla", "report", "--svg", svg)
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	for {
		if _, err := dec.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("the SVG is not well-formed XML: %v", err)
			}
			break
		}
	}
	for _, want := range []string{"web", "db"} {
		if !bytes.Contains(data, []byte(">"+want+"<")) && !bytes.Contains(data, []byte(want)) {
			t.Errorf("the SVG does not name %s", want)
		}
	}
	// db's timeline shows the maintenance, excluded.
	if tl := cli("sla", "incidents", "db"); !strings.Contains(tl, "maintenance") || !strings.Contains(tl, "migration") {
		t.Errorf("db's timeline lacks the migration or the maintenance:\n%s", tl)
	}
}
