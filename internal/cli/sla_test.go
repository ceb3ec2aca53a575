package cli

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // --tz Europe/Berlin whatever the machine has

	"github.com/ferrycluster/ferry/internal/sla"
)

const (
	goldPolicy   = `{"name":"gold","target_percent":99.95,"window":"month","monthly_price":100,"tiers":[{"below_percent":99.95,"credit_percent":10},{"below_percent":99,"credit_percent":25},{"below_percent":95,"credit_percent":100}]}`
	silverPolicy = `{"name":"silver","target_percent":99.5,"monthly_price":40,"tiers":[{"below_percent":99.5,"credit_percent":10}]}`
	// novEvents: web-1 down 22 minutes in a 30-day month (99.949 %,
	// 10 % credit); db-1 crashes 10 minutes before the month ends (UTC)
	// for 20 minutes; web-2 stopped by its customer for a day.
	novEvents = `{"time":"2026-10-01T00:00:00Z","instance":"web-1","customer":"acme","state":"serving"}
{"time":"2026-10-02T00:00:00Z","instance":"db-1","customer":"beta","state":"serving"}
{"time":"2026-11-03T00:00:00Z","instance":"web-2","customer":"acme","state":"serving"}
{"time":"2026-11-10T10:00:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure"}
{"time":"2026-11-10T10:22:00Z","instance":"web-1","customer":"acme","state":"serving"}
{"time":"2026-11-12T00:00:00Z","instance":"web-2","customer":"acme","state":"excluded","cause":"customer-stop"}
{"time":"2026-11-13T00:00:00Z","instance":"web-2","customer":"acme","state":"serving"}
{"time":"2026-11-30T23:50:00Z","instance":"db-1","customer":"beta","state":"down","cause":"crash"}
{"time":"2026-12-01T00:10:00Z","instance":"db-1","customer":"beta","state":"serving"}
`
)

// slaFiles writes the policies and events into a directory and returns
// their paths: gold.json, silver.json, nov.jsonl.
func slaFiles(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	for name, data := range map[string]string{"gold.json": goldPolicy, "silver.json": silverPolicy, "nov.jsonl": novEvents} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// wantReport computes what replay should print, with the package.
func wantReport(t *testing.T, events string, w sla.Window, plans sla.PlanFunc) *sla.Report {
	t.Helper()
	evs, err := sla.ParseEvents(strings.NewReader(events))
	if err != nil {
		t.Fatal(err)
	}
	r, err := sla.Compute(evs, w, plans)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustPolicy(t *testing.T, s string) sla.Policy {
	t.Helper()
	p, err := sla.ParsePolicy(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSLAReplay(t *testing.T) {
	t.Parallel()
	dir := slaFiles(t)
	gold, events := filepath.Join(dir, "gold.json"), filepath.Join(dir, "nov.jsonl")
	nov, err := sla.ParseMonth("2026-11")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("text", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{}, "sla", "replay", events, "--policy", gold, "--month", "2026-11")
		r.check(t, []string{
			"SLA report 2026-11 (UTC): 2026-11-01 00:00 to 2026-12-01 00:00",
			"web-1      acme       gold     99.949% !      99.95%   22m        0          1 (host-failure 1: 22m)   10.00 (10%)",
			"db-1       beta       gold     99.976%        99.95%   10m        0          1 (crash 1: 10m)          0.00",
			"web-2      acme       gold     100.000%       99.95%   0          1d         0                         0.00",
			"Revenue 300.00, credits 10.00 (3.3% of revenue), 1 of 3 instances below target, 2 incidents, 32m down",
			"host-failure   1           22m        10.00     100.0%",
		}, "")
	})
	t.Run("json is the package's report", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{}, "sla", "replay", events, "--policy", gold, "--month", "2026-11", "--json")
		r.check(t, []string{`"availability_percent": `, `"credit": 10.00`}, "")
		var want bytes.Buffer
		rep := wantReport(t, novEvents, sla.MonthWindow(nov, nil), func(string, string) (sla.Plan, error) {
			p := mustPolicy(t, goldPolicy)
			return sla.Plan{Policy: p, MonthlyPrice: p.MonthlyPrice}, nil
		})
		if err := sla.WriteJSON(&want, rep); err != nil {
			t.Fatal(err)
		}
		if r.stdout != want.String() {
			t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want.String())
		}
		var doc struct {
			Instances []map[string]any `json:"instances"`
			Totals    map[string]any   `json:"totals"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"instance", "customer", "availability_percent", "downtime_seconds", "excluded_seconds", "credit"} {
			if _, ok := doc.Instances[0][f]; !ok {
				t.Errorf("instances[0] lacks %s", f)
			}
		}
		if doc.Totals["revenue"] != 300.0 || doc.Totals["credits"] != 10.0 {
			t.Errorf("totals = %v", doc.Totals)
		}
	})
	t.Run("the next month holds the rest of the crash", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{}, "sla", "replay", events, "--policy", gold, "--month", "2026-12", "--json")
		r.check(t, []string{`"instance": "db-1"`, `"downtime_seconds": 600,`}, "")
	})
	t.Run("time zone", func(t *testing.T) {
		t.Parallel()
		// 23:50 UTC on 30 November is 00:50 on 1 December in Berlin:
		// the whole crash is in December there.
		for _, tc := range []struct {
			month, want string
		}{{"2026-11", "db-1       beta       gold     100.000%"}, {"2026-12", "db-1       beta       gold     99.955%        99.95%   20m"}} {
			r := offlineEnv(t).run(t, runOpts{}, "sla", "replay", events, "--policy", gold, "--month", tc.month, "--tz", "Europe/Berlin")
			r.check(t, []string{"(Europe/Berlin)", tc.want}, "")
		}
	})
	t.Run("stdin and csv", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{stdin: strings.NewReader(novEvents)}, "sla", "replay", "-", "--policy", gold, "--month", "2026-11", "--csv")
		r.check(t, []string{"row,month,time_zone,instance,customer,policy,monthly_price,",
			"\ninstance,2026-11,UTC,web-1,acme,gold,100.00,99.95,2592000,2590680,1320,0,",
			"\ncustomer,2026-11,UTC,,acme,", "\ntotal,2026-11,UTC,,,"}, "")
		if n := strings.Count(r.stdout, "\n"); n != 1+3+2+1 {
			t.Errorf("%d lines of CSV:\n%s", n, r.stdout)
		}
	})
	t.Run("assign, price, until", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{}, "sla", "replay", events, "--policy", gold, "--policy", filepath.Join(dir, "silver.json"),
			"--assign", "customer:beta=silver", "--assign", "instance:web-2=silver", "--price", "50", "--month", "2026-11", "--until", "2026-11-20T00:00:00Z", "--json")
		r.check(t, nil, "")
		var rep sla.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, ir := range rep.Instances {
			got[ir.Instance] = ir.Policy + " " + ir.MonthlyPrice.String() + " " + ir.Window.String()
		}
		want := map[string]string{"db-1": "silver 50.00 1641600", "web-1": "gold 50.00 1641600", "web-2": "silver 50.00 1468800"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("rows = %v, want %v", got, want)
		}
		if rep.Totals.Revenue != 15000 || rep.Totals.Credits != 500 || !rep.To.Equal(time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("totals = %+v, to %v", rep.Totals, rep.To)
		}
	})
	t.Run("svg", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(t.TempDir(), "nov.svg")
		r := offlineEnv(t).run(t, runOpts{}, "sla", "replay", events, "--policy", gold, "--month", "2026-11", "--svg", out)
		r.check(t, []string{"chart written to " + out}, "")
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(bytes.NewReader(data))
		for {
			_, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("the chart is not XML: %v", err)
			}
		}
		for _, s := range []string{"web-1 (acme)", `class="bar breach"`, `class="down host-failure"`} {
			if !bytes.Contains(data, []byte(s)) {
				t.Errorf("chart lacks %s", s)
			}
		}
	})
}

// TestSLAReplayOfExport: a replay of what `sla export` will write gives
// exactly the report the live side computes, for the month so far and for
// a past month. The live side here is the package's classify-and-compute
// path that the server's `sla report` runs.
func TestSLAReplayOfExport(t *testing.T) {
	t.Parallel()
	dir := slaFiles(t)
	gold := mustPolicy(t, goldPolicy)
	plans := &sla.Plans{Policies: map[string]sla.Policy{"gold": gold}, Default: "gold"}
	var entries []sla.Entry
	at := testNow.Add(-50 * 24 * time.Hour).Add(123456789)
	causes := []sla.Cause{sla.CauseHostFailure, sla.CauseMigration, sla.CauseCustomerStop, sla.CauseCrash}
	for i := 0; at.Before(testNow); i++ {
		inst := []string{"web-1", "web-2", "db-1"}[i%3]
		entries = append(entries,
			sla.Entry{Time: at, Instance: inst, Customer: "acme", Node: "n1", Cause: causes[i%len(causes)]},
			sla.Entry{Time: at.Add(time.Duration(i+1) * 41 * time.Second), Instance: inst, Customer: "acme", Node: "n1", Serving: true})
		at = at.Add(29*time.Hour + 7*time.Minute)
	}
	// An outage in progress when the live report is made, and a
	// customer stop earlier that day.
	entries = append(entries,
		sla.Entry{Time: testNow.Add(-6 * time.Hour), Instance: "db-2", Customer: "beta", Cause: sla.CauseCustomerStop},
		sla.Entry{Time: testNow.Add(-5 * time.Hour), Instance: "db-2", Customer: "beta", Serving: true},
		sla.Entry{Time: testNow.Add(-time.Minute), Instance: "db-2", Customer: "beta", Cause: sla.CauseGuestNotAnswering})
	live, err := sla.Classify(entries, nil, plans.Plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, month string
		until       bool
	}{
		{"current month", sla.MonthOf(testNow).String(), true},
		{"past month", sla.MonthOf(testNow).Prev().String(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, _ := sla.ParseMonth(tc.month)
			w, err := sla.LiveWindow(m, time.UTC, testNow)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := sla.Compute(live, w, plans.Plan)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Totals.Incidents == 0 || rep.Totals.Excluded == 0 {
				t.Fatalf("no incident or no excluded time in %s: the test proves little", tc.month)
			}
			var want, export bytes.Buffer
			if err := sla.WriteJSON(&want, rep); err != nil {
				t.Fatal(err)
			}
			if err := sla.WriteEvents(&export, sla.Slice(live, w)); err != nil {
				t.Fatal(err)
			}
			args := []string{"sla", "replay", "-", "--policy", filepath.Join(dir, "gold.json"), "--month", tc.month, "--json"}
			if tc.until {
				args = append(args, "--until", testNow.Format(time.RFC3339Nano))
			}
			r := offlineEnv(t).run(t, runOpts{stdin: &export}, args...)
			r.check(t, []string{`"incidents": `}, "")
			if r.stdout != want.String() {
				t.Errorf("replay of the export:\n%s\nlive report:\n%s", r.stdout, want.String())
			}
		})
	}
}

func TestSLAReplayErrors(t *testing.T) {
	t.Parallel()
	dir := slaFiles(t)
	gold, events := filepath.Join(dir, "gold.json"), filepath.Join(dir, "nov.jsonl")
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unsorted := write("unsorted.jsonl", novEvents+`{"time":"2026-11-01T00:00:00Z","instance":"web-3","state":"serving"}`+"\n")
	overlapping := write("overlap.json", `{"name":"gold","target_percent":99.95,
 "tiers":[{"below_percent":99,"credit_percent":10},{"below_percent":99,"credit_percent":25}]}`)
	above := write("above.json", `{"name":"gold","target_percent":100.01}`)
	gold2 := write("gold2.json", goldPolicy)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing month", []string{events, "--policy", gold}, "--month: required: give the calendar month, e.g. --month 2026-02"},
		{"bad month", []string{events, "--policy", gold, "--month", "2026-13"}, `--month: "2026-13" is not a month: the month must be 01 to 12`},
		{"missing policy", []string{events, "--month", "2026-11"}, "--policy: required: give a policy JSON file, e.g. --policy gold.json"},
		{"missing events", []string{"--policy", gold, "--month", "2026-11"}, `missing the EVENTS file (JSON lines; "-" for standard input)`},
		{"unsorted events", []string{unsorted, "--policy", gold, "--month", "2026-11"},
			unsorted + ": events line 10: time: 2026-11-01T00:00:00Z is before line 9's 2026-12-01T00:10:00Z: events must be sorted by time"},
		{"no such events file", []string{filepath.Join(dir, "nope.jsonl"), "--policy", gold, "--month", "2026-11"}, "no such file or directory"},
		{"overlapping tiers", []string{events, "--policy", overlapping, "--month", "2026-11"},
			"--policy " + overlapping + ": policy line 2, column 69: tiers[1].below_percent: 99 overlaps tiers[0]: two tiers cannot start at the same availability"},
		{"target above 100", []string{events, "--policy", above, "--month", "2026-11"},
			"--policy " + above + ": policy line 1, column 33: target_percent: 100.01 is not a percentage above 0 and at most 100"},
		{"a policy twice", []string{events, "--policy", gold, "--policy", gold2, "--month", "2026-11"},
			"--policy " + gold2 + `: policy "gold" is also defined by ` + gold},
		{"unknown policy", []string{events, "--policy", gold, "--assign", "customer:acme=platinum", "--month", "2026-11"},
			`--assign: "customer:acme=platinum": unknown policy "platinum": the --policy files define gold`},
		{"bad assign", []string{events, "--policy", gold, "--assign", "acme=gold", "--month", "2026-11"},
			`--assign: "acme=gold": write instance:NAME=POLICY or customer:NAME=POLICY`},
		{"bad tz", []string{events, "--policy", gold, "--month", "2026-11", "--tz", "Mars/Olympus"},
			`--tz: unknown time zone "Mars/Olympus": give an IANA name such as Europe/Berlin, or UTC`},
		{"until before the month", []string{events, "--policy", gold, "--month", "2026-11", "--until", "2026-10-01T00:00:00Z"},
			"--until: 2026-10-01T00:00:00Z is not after the start of 2026-11 (2026-11-01T00:00:00Z)"},
		{"bad until", []string{events, "--policy", gold, "--month", "2026-11", "--until", "tomorrow"}, `--until: "tomorrow" is not an RFC 3339 time`},
		{"bad price", []string{events, "--policy", gold, "--month", "2026-11", "--price", "9.999"}, "--price: 9.999 has fractions of a cent"},
		{"negative price", []string{events, "--policy", gold, "--month", "2026-11", "--price", "-1"}, "--price: -1 is not an amount from 0"},
		{"csv and json", []string{events, "--policy", gold, "--month", "2026-11", "--csv", "--json"}, "--csv: cannot be combined with --json"},
		{"stdin twice", []string{"-", "--policy", "-", "--month", "2026-11"}, "--policy: standard input (-) can be read only once"},
		{"svg to stdout", []string{events, "--policy", gold, "--month", "2026-11", "--svg", "-"}, "--svg: give a file name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := offlineEnv(t).run(t, runOpts{}, append([]string{"sla", "replay"}, tc.args...)...)
			r.check(t, nil, tc.want)
		})
	}
}

func TestSLAForecast(t *testing.T) {
	t.Parallel()
	dir := slaFiles(t)
	gold, silver := filepath.Join(dir, "gold.json"), filepath.Join(dir, "silver.json")
	t.Run("text", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{}, "sla", "forecast", "--policy", gold, "--policy", silver,
			"--host-failures-per-month", "1", "--failover-downtime", "22m")
		r.check(t, []string{"host failures 1 (22m each), migrations 0 (0 each)",
			"gold     99.95%   22m                 99.949%                 63.2%       63.2%       6.32 (6.321% of 100.00)",
			"silver   99.5%    22m                 99.949%"}, "")
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		r := offlineEnv(t).run(t, runOpts{}, "sla", "forecast", "--policy", gold, "--host-failures-per-month", "0.05",
			"--failover-downtime", "8s", "--migrations-per-month", "2", "--migration-downtime", "500ms", "--month-days", "31", "--json")
		r.check(t, nil, "")
		var f sla.ForecastReport
		if err := json.Unmarshal([]byte(r.stdout), &f); err != nil {
			t.Fatal(err)
		}
		if len(f.Policies) != 1 || f.Policies[0].Policy != "gold" || f.Input.Month != sla.Seconds(31*24*time.Hour) ||
			f.Input.MigrationDowntime != sla.Seconds(500*time.Millisecond) || f.Policies[0].ExpectedCredit != 0 {
			t.Errorf("forecast = %+v", f)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no rate", []string{"--policy", gold, "--failover-downtime", "8s"}, "--host-failures-per-month: required"},
		{"no failover downtime", []string{"--policy", gold, "--host-failures-per-month", "1"}, "--failover-downtime: required"},
		{"migrations half given", []string{"--policy", gold, "--host-failures-per-month", "1", "--failover-downtime", "8s", "--migrations-per-month", "3"},
			"--migration-downtime: give --migrations-per-month and --migration-downtime together"},
		{"negative", []string{"--policy", gold, "--host-failures-per-month", "-1", "--failover-downtime", "8s"}, "--host-failures-per-month: must not be negative"},
		{"no policy", []string{"--host-failures-per-month", "1", "--failover-downtime", "8s"}, "--policy: required"},
		{"bad duration", []string{"--policy", gold, "--host-failures-per-month", "1", "--failover-downtime", "8"}, `invalid argument "8" for "--failover-downtime"`},
		{"too many failures", []string{"--policy", gold, "--host-failures-per-month", "1000", "--failover-downtime", "8s"}, "host failures per month: 1000 is not a rate from 0 to 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := offlineEnv(t).run(t, runOpts{}, append([]string{"sla", "forecast"}, tc.args...)...)
			r.check(t, nil, tc.want)
		})
	}
}

func TestSLAGroup(t *testing.T) {
	t.Parallel()
	r := offlineEnv(t).run(t, runOpts{}, "sla")
	r.check(t, []string{"replay", "forecast"}, "")
	r = offlineEnv(t).run(t, runOpts{}, "sla", "nope")
	r.check(t, nil, `unknown command "nope" for "ferry sla"`)
}
