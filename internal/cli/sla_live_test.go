package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/sla"
)

// fakeSLA is the state behind the fake server's SLA and maintenance
// routes, which behave as internal/server's do: policies are parsed as
// strictly as files, reports are computed with package sla from a ledger
// of events at testNow.
type fakeSLA struct {
	policies    map[string]sla.Policy
	instances   map[string]sla.Assignment
	customers   map[string]sla.Assignment
	maintenance []api.Maintenance
	// events is the ledger, classified, as JSON lines.
	events   string
	forecast *sla.ForecastReport
	nextID   int
}

// mayEvents is the ledger of the tests: in May 2025 web-1 (acme) is down
// 23 minutes (99.948 %, below gold's 99.95) for a host failure, db-1 (beta) crashes for 10 minutes, and
// web-2 (acme) is stopped by its customer for a day.
const mayEvents = `{"time":"2025-04-01T00:00:00Z","instance":"web-1","customer":"acme","state":"serving"}
{"time":"2025-04-02T00:00:00Z","instance":"db-1","customer":"beta","state":"serving"}
{"time":"2025-05-03T00:00:00Z","instance":"web-2","customer":"acme","state":"serving"}
{"time":"2025-05-10T10:00:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure","node":"n2"}
{"time":"2025-05-10T10:23:00Z","instance":"web-1","customer":"acme","state":"serving","node":"n1"}
{"time":"2025-05-12T00:00:00Z","instance":"web-2","customer":"acme","state":"excluded","cause":"customer-stop"}
{"time":"2025-05-13T00:00:00Z","instance":"web-2","customer":"acme","state":"serving"}
{"time":"2025-05-20T23:50:00Z","instance":"db-1","customer":"beta","state":"down","cause":"crash"}
{"time":"2025-05-21T00:00:00Z","instance":"db-1","customer":"beta","state":"serving"}
`

// seedSLA gives the fake two policies (gold, 48h notice by default;
// silver, 96h), assignments by customer, the ledger and a maintenance
// window.
func seedSLA(t *testing.T, f *fakeAPI) {
	t.Helper()
	silver := mustPolicy(t, silverPolicy)
	h := 96
	silver.MaintenanceNoticeHours = &h
	f.sla.policies = map[string]sla.Policy{"gold": mustPolicy(t, goldPolicy), "silver": silver}
	price := sla.Money(5500)
	f.sla.customers = map[string]sla.Assignment{"acme": {Policy: "gold"}, "beta": {Policy: "silver", MonthlyPrice: &price}}
	f.sla.instances = map[string]sla.Assignment{"web-2": {Policy: "silver"}}
	f.sla.events = mayEvents
	f.sla.maintenance = []api.Maintenance{
		{ID: "mnt-past", Node: "n2", Start: testNow.Add(-48 * time.Hour), End: testNow.Add(-46 * time.Hour), AnnouncedAt: testNow.Add(-100 * time.Hour), Reason: "disk swap", By: "ops"},
		{ID: "mnt-next", Node: "n1", Start: testNow.Add(30 * time.Hour), End: testNow.Add(32*time.Hour + 30*time.Minute), AnnouncedAt: testNow.Add(-90 * time.Minute), Reason: "kernel\x1b[2J update"},
	}
	f.sla.forecast = &sla.ForecastReport{
		Input: sla.ForecastInput{HostFailuresPerMonth: 0.5, FailoverDowntime: sla.Seconds(8 * time.Second), Month: sla.Seconds(30 * 24 * time.Hour)},
		Policies: []sla.PolicyForecast{{Policy: "gold", TargetPercent: 99.95, MonthlyPrice: 10000, ExpectedDowntime: sla.Seconds(4 * time.Second),
			ExpectedAvailabilityPercent: 99.9998, BreachProbability: 0, ExpectedCredit: 0}},
	}
}

func (s *fakeSLA) plans() *sla.Plans {
	return &sla.Plans{Policies: s.policies, Instances: s.instances, Customers: s.customers}
}

// window is the live window of ?month= and ?tz= at testNow.
func (s *fakeSLA) window(w http.ResponseWriter, r *http.Request) (sla.Window, bool) {
	loc := time.UTC
	if tz := r.URL.Query().Get("tz"); tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			writeError(w, 400, "invalid", "tz", "unknown time zone %q: use an IANA name such as Europe/Berlin", tz)
			return sla.Window{}, false
		}
		loc = l
	}
	m := sla.MonthOf(testNow.In(loc))
	if ms := r.URL.Query().Get("month"); ms != "" {
		var err error
		if m, err = sla.ParseMonth(ms); err != nil {
			writeError(w, 400, "invalid", "month", "%v", err)
			return sla.Window{}, false
		}
	}
	win, err := sla.LiveWindow(m, loc, testNow)
	if err != nil {
		writeError(w, 400, "invalid", "month", "month %s has not begun", m)
		return sla.Window{}, false
	}
	return win, true
}

func (s *fakeSLA) ledger() []sla.Event {
	evs, err := sla.ParseEvents(strings.NewReader(s.events))
	if err != nil {
		panic(err)
	}
	return evs
}

// report is what GET /v1/sla/report answers, and the instances it leaves
// out because no policy covers them (the server's Ferry-Unpriced).
func (s *fakeSLA) report(win sla.Window, customer string) (*sla.Report, []string, error) {
	plans := s.plans()
	var evs []sla.Event
	var unpriced []string
	for _, e := range s.ledger() {
		if _, err := plans.Plan(e.Instance, e.Customer); err != nil {
			if !slices.Contains(unpriced, e.Instance) {
				unpriced = append(unpriced, e.Instance)
			}
			continue
		}
		if customer == "" || e.Customer == customer {
			evs = append(evs, e)
		}
	}
	rep, err := sla.Compute(evs, win, plans.Plan)
	return rep, unpriced, err
}

func (f *fakeAPI) slaRoutes(mux *http.ServeMux) {
	f.sla = &fakeSLA{policies: map[string]sla.Policy{}, instances: map[string]sla.Assignment{}, customers: map[string]sla.Assignment{}}
	s := f.sla
	mux.HandleFunc("GET /v1/sla/policies", func(w http.ResponseWriter, r *http.Request) {
		l := api.List[sla.Policy]{Items: []sla.Policy{}}
		for _, p := range s.policies {
			l.Items = append(l.Items, p)
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name > l.Items[j].Name }) // reverse: the CLI sorts
		writeJSON(w, 200, l)
	})
	mux.HandleFunc("GET /v1/sla/policies/{name}", func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.policies[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "policy %q not found", r.PathValue("name"))
			return
		}
		writeJSON(w, 200, p)
	})
	mux.HandleFunc("PUT /v1/sla/policies/{name}", func(w http.ResponseWriter, r *http.Request) {
		p, err := sla.ParsePolicy(strings.NewReader(f.bodies[r.URL.Path]))
		if err != nil {
			var se *sla.Error
			errors.As(err, &se)
			writeError(w, 400, "invalid", se.Field, "%v", err)
			return
		}
		if p.Name != r.PathValue("name") {
			writeError(w, 400, "invalid", "name", "the policy is named %q but the path says %q", p.Name, r.PathValue("name"))
			return
		}
		if _, ok := s.policies[p.Name]; ok && r.Header.Get("If-None-Match") == "*" {
			writeError(w, 409, "already_exists", "name", "policy %q already exists", p.Name)
			return
		}
		s.policies[p.Name] = p
		writeJSON(w, 200, p)
	})
	mux.HandleFunc("DELETE /v1/sla/policies/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := s.policies[name]; !ok {
			writeError(w, 404, "not_found", "", "policy %q not found", name)
			return
		}
		var users []string
		for kind, m := range map[string]map[string]sla.Assignment{"instance": s.instances, "customer": s.customers} {
			for who, a := range m {
				if a.Policy == name {
					users = append(users, kind+" "+who)
				}
			}
		}
		if len(users) > 0 {
			sort.Strings(users)
			writeError(w, 409, "conflict", "", "policy %q is assigned to %s; unassign it first (`ferry sla unassign`)", name, strings.Join(users, ", "))
			return
		}
		delete(s.policies, name)
		writeJSON(w, 200, struct{}{})
	})
	mux.HandleFunc("GET /v1/sla/assignments", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, client.SLAAssignments{Instances: s.instances, Customers: s.customers})
	})
	assignments := func(r *http.Request) map[string]sla.Assignment {
		return map[string]map[string]sla.Assignment{"instances": s.instances, "customers": s.customers}[r.PathValue("kind")]
	}
	mux.HandleFunc("PUT /v1/sla/assignments/{kind}/{name}", func(w http.ResponseWriter, r *http.Request) {
		var a sla.Assignment
		if err := json.Unmarshal([]byte(f.bodies[r.URL.Path]), &a); err != nil {
			writeError(w, 400, "invalid", "", "%v", err)
			return
		}
		if _, ok := s.policies[a.Policy]; !ok {
			writeError(w, 400, "invalid", "policy", "unknown policy %q: create it first (`ferry sla policy create`)", a.Policy)
			return
		}
		assignments(r)[r.PathValue("name")] = a
		writeJSON(w, 200, a)
	})
	mux.HandleFunc("DELETE /v1/sla/assignments/{kind}/{name}", func(w http.ResponseWriter, r *http.Request) {
		m := assignments(r)
		if _, ok := m[r.PathValue("name")]; !ok {
			writeError(w, 404, "not_found", "", "assignment %q not found", r.PathValue("name"))
			return
		}
		delete(m, r.PathValue("name"))
		writeJSON(w, 200, struct{}{})
	})
	mux.HandleFunc("POST /v1/maintenance", func(w http.ResponseWriter, r *http.Request) {
		var req api.MaintenanceRequest
		if err := api.DecodeBytes([]byte(f.bodies[r.URL.Path]), &req); err != nil {
			writeError(w, 400, "invalid", "", "%v", err)
			return
		}
		if err := req.Validate(); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Message)
			return
		}
		if _, ok := f.nodes[req.Node]; !ok {
			writeError(w, 400, "invalid", "node", "node %q does not exist (see: ferry node ls)", req.Node)
			return
		}
		s.nextID++
		m := api.Maintenance{ID: fmt.Sprintf("mnt-%d", s.nextID), Node: req.Node, Start: req.Start.UTC(), End: req.End.UTC(),
			AnnouncedAt: testNow.Add(250 * time.Millisecond), Reason: req.Reason, By: "admin"}
		s.maintenance = append(s.maintenance, m)
		writeJSON(w, 201, m)
	})
	mux.HandleFunc("GET /v1/maintenance", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.List[api.Maintenance]{Items: append([]api.Maintenance{}, s.maintenance...)})
	})
	mux.HandleFunc("DELETE /v1/maintenance/{id}", func(w http.ResponseWriter, r *http.Request) {
		for i, m := range s.maintenance {
			if m.ID != r.PathValue("id") {
				continue
			}
			if !m.Start.After(testNow) {
				writeError(w, 409, "conflict", "", "maintenance %s began at %s: it is part of the SLA record and cannot be cancelled", m.ID, m.Start.Format(time.RFC3339))
				return
			}
			s.maintenance = append(s.maintenance[:i], s.maintenance[i+1:]...)
			writeJSON(w, 200, struct{}{})
			return
		}
		writeError(w, 404, "not_found", "", "maintenance %q not found", r.PathValue("id"))
	})
	mux.HandleFunc("GET /v1/sla/report", func(w http.ResponseWriter, r *http.Request) {
		win, ok := s.window(w, r)
		if !ok {
			return
		}
		rep, unpriced, err := s.report(win, r.URL.Query().Get("customer"))
		if err != nil {
			writeError(w, 500, "internal", "", "%v", err)
			return
		}
		if len(unpriced) > 0 {
			w.Header().Set("Ferry-Unpriced", strings.Join(unpriced, ","))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = sla.WriteJSON(w, rep)
	})
	mux.HandleFunc("GET /v1/sla/incidents/{name}", func(w http.ResponseWriter, r *http.Request) {
		win, ok := s.window(w, r)
		if !ok {
			return
		}
		name := r.PathValue("name")
		if !strings.Contains(s.events, `"instance":"`+name+`"`) {
			writeError(w, 404, "not_found", "", "instance %q is not in the SLA ledger: it never served, or no policy covers it (`ferry sla assign`)", name)
			return
		}
		ivs, err := sla.Timeline(s.ledger(), name, win)
		if err != nil {
			writeError(w, 500, "internal", "", "%v", err)
			return
		}
		writeJSON(w, 200, api.List[sla.Interval]{Items: nonNil(ivs)})
	})
	mux.HandleFunc("GET /v1/sla/export", func(w http.ResponseWriter, r *http.Request) {
		win, ok := s.window(w, r)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		_ = sla.WriteEvents(w, sla.Slice(s.ledger(), win))
	})
	mux.HandleFunc("GET /v1/sla/forecast", func(w http.ResponseWriter, r *http.Request) {
		if len(s.policies) == 0 {
			writeError(w, 409, "conflict", "", "no SLA policy exists yet: create one first (`ferry sla policy create`)")
			return
		}
		writeJSON(w, 200, s.forecast)
	})
}

// slaEnv is a test environment whose fake holds seed's nodes and
// instances and seedSLA's policies and ledger.
func slaEnv(t *testing.T) *testEnv {
	t.Helper()
	e := newTestEnv(t)
	seed(e.api)
	seedSLA(t, e.api)
	return e
}

// slaCase is one run of the CLI against slaEnv.
type slaCase struct {
	name string
	args []string
	// stdin is what the command reads.
	stdin string
	// wantOut are substrings of stdout; wantExact, if set, is all of it.
	wantOut   []string
	wantExact string
	wantErr   string
	// wantReqs is the request log; nil skips the check, []string{} wants
	// none.
	wantReqs []string
	// check inspects the fake afterwards.
	check func(t *testing.T, e *testEnv, r result)
	// seed, if set, changes the fake before the run.
	seed func(s *fakeSLA)
}

func runSLACases(t *testing.T, tests []slaCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := slaEnv(t)
			if tc.seed != nil {
				tc.seed(e.api.sla)
			}
			args := slices.Clone(tc.args)
			for i := range args {
				args[i] = strings.ReplaceAll(args[i], "$DIR", e.dir)
			}
			r := e.run(t, runOpts{stdin: strings.NewReader(tc.stdin)}, args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantExact != "" && r.stdout != tc.wantExact {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, tc.wantExact)
			}
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(nonNil(got), tc.wantReqs) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
			if tc.check != nil {
				tc.check(t, e, r)
			}
		})
	}
}

// sentPolicy is the policy the CLI PUT, as the server parses it.
func sentPolicy(t *testing.T, e *testEnv, name string) sla.Policy {
	t.Helper()
	body := e.api.body("/v1/sla/policies/" + name)
	p, err := sla.ParsePolicy(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the body %s does not parse: %v", body, err)
	}
	return p
}

func intp(i int) *int    { return &i }
func boolp(b bool) *bool { return &b }

func TestSLAPolicyCommands(t *testing.T) {
	t.Parallel()
	dir := slaFiles(t)
	goldFile := filepath.Join(dir, "gold.json")
	platinum := `{"name":"platinum","target_percent":99.99,"monthly_price":300,"tiers":[{"below_percent":99.99,"credit_percent":25}],"maintenance_notice_hours":72}`
	none := []string{}
	runSLACases(t, []slaCase{
		{
			name:     "create from flags",
			args:     []string{"sla", "policy", "create", "bronze", "--target", "99", "--price", "9.99", "--tier", "99=10", "--tier", "95%=100%", "--tier", "98=50", "--maintenance-notice", "24h", "--exclude-customer-stops=false"},
			wantOut:  []string{`policy "bronze" created: target 99%, price 9.99, credits 10% below 99%, 50% below 98%, 100% below 95%` + "\n"},
			wantReqs: []string{"PUT /v1/sla/policies/bronze"},
			check: func(t *testing.T, e *testEnv, _ result) {
				want := sla.Policy{Name: "bronze", TargetPercent: 99, Window: "month", MonthlyPrice: 999,
					Tiers:                []sla.Tier{{BelowPercent: 99, CreditPercent: 10}, {BelowPercent: 95, CreditPercent: 100}, {BelowPercent: 98, CreditPercent: 50}},
					ExcludeCustomerStops: boolp(false), MaintenanceNoticeHours: intp(24)}
				if got := sentPolicy(t, e, "bronze"); !reflect.DeepEqual(got, want) {
					t.Errorf("sent %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "create leaves the defaults to the policy",
			args: []string{"sla", "policy", "create", "basic", "--target", "99.5"},
			check: func(t *testing.T, e *testEnv, _ result) {
				body := e.api.body("/v1/sla/policies/basic")
				if strings.Contains(body, "exclude_customer_stops") || strings.Contains(body, "maintenance_notice_hours") {
					t.Errorf("body %s sets defaults", body)
				}
				if got := sentPolicy(t, e, "basic"); got.TargetPercent != 99.5 || got.MonthlyPrice != 0 || len(got.Tiers) != 0 {
					t.Errorf("sent %+v", got)
				}
			},
		},
		{
			name:     "create from a file",
			args:     []string{"sla", "policy", "create", "-f", "-"},
			stdin:    platinum,
			wantOut:  []string{`policy "platinum" created: target 99.99%, price 300.00, credits 25% below 99.99%`},
			wantReqs: []string{"PUT /v1/sla/policies/platinum"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if got, want := sentPolicy(t, e, "platinum"), mustPolicy(t, platinum); !reflect.DeepEqual(got, want) {
					t.Errorf("sent %+v, want %+v", got, want)
				}
			},
		},
		{
			name:     "an existing policy is not replaced",
			args:     []string{"sla", "policy", "create", "-f", goldFile},
			wantErr:  `policy "gold" already exists` + "\nPass --replace to replace it",
			wantReqs: []string{"PUT /v1/sla/policies/gold"},
		},
		{
			name:     "replace",
			args:     []string{"sla", "policy", "create", "gold", "--target", "99.9", "--replace", "--json"},
			wantOut:  []string{`"name": "gold"`, `"target_percent": 99.9`},
			wantReqs: []string{"GET /v1/sla/policies/gold", "PUT /v1/sla/policies/gold"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if p := e.api.sla.policies["gold"]; p.TargetPercent != 99.9 {
					t.Errorf("gold = %+v", p)
				}
			},
		},
		{
			name:    "replace says so",
			args:    []string{"sla", "policy", "create", "-f", goldFile, "--replace"},
			wantOut: []string{`policy "gold" replaced: target 99.95%, price 100.00, credits 10% below 99.95%, 25% below 99%, 100% below 95%`},
		},
		// Mistakes are caught before any request, and name the flag.
		{name: "no target", args: []string{"sla", "policy", "create", "x"}, wantErr: "--target: required: give the promised availability in percent, e.g. --target 99.95", wantReqs: none},
		{name: "no name", args: []string{"sla", "policy", "create", "--target", "99"}, wantErr: "missing the policy NAME (or give the whole policy with -f POLICY.json)", wantReqs: none},
		{name: "bad name", args: []string{"sla", "policy", "create", "Gold", "--target", "99"}, wantErr: `NAME: "Gold" is not a valid name: use lowercase letters`, wantReqs: none},
		{name: "target above 100", args: []string{"sla", "policy", "create", "x", "--target", "100.5"}, wantErr: "--target: 100.5 is not a percentage above 0 and at most 100", wantReqs: none},
		{name: "bad target", args: []string{"sla", "policy", "create", "x", "--target", "high"}, wantErr: `invalid argument "high" for "--target" flag`, wantReqs: none},
		{name: "bad tier", args: []string{"sla", "policy", "create", "x", "--target", "99", "--tier", "99:10"}, wantErr: `--tier: "99:10": write BELOW=CREDIT, e.g. --tier 99.95=10`, wantReqs: none},
		{name: "tier out of range", args: []string{"sla", "policy", "create", "x", "--target", "99", "--tier", "99=10", "--tier", "95=120"}, wantErr: "--tier 95=120: 120 is not a percentage from 0 to 100", wantReqs: none},
		{name: "tiers in conflict", args: []string{"sla", "policy", "create", "x", "--target", "99.95", "--tier", "99.95=10", "--tier", "99=5"},
			wantErr:  "--tier 99=5: 5% conflicts with --tier 99.95=10: below 99.95% earns 10% but below 99% only 5%; a lower availability must never earn a smaller credit",
			wantReqs: none},
		{name: "tiers overlap", args: []string{"sla", "policy", "create", "x", "--target", "99.95", "--tier", "99=10", "--tier", "99=25"},
			wantErr: "--tier 99=25: 99 overlaps --tier 99=10: two tiers cannot start at the same availability", wantReqs: none},
		{name: "bad price", args: []string{"sla", "policy", "create", "x", "--target", "99", "--price", "9.999"}, wantErr: "--price: 9.999 has fractions of a cent", wantReqs: none},
		{name: "negative price", args: []string{"sla", "policy", "create", "x", "--target", "99", "--price", "-5"}, wantErr: "--price: -5.00 is not an amount from 0", wantReqs: none},
		{name: "notice not in hours", args: []string{"sla", "policy", "create", "x", "--target", "99", "--maintenance-notice", "90m"}, wantErr: "--maintenance-notice: 1h30m0s is not a whole number of hours: give e.g. 48h", wantReqs: none},
		{name: "notice too long", args: []string{"sla", "policy", "create", "x", "--target", "99", "--maintenance-notice", "9000h"}, wantErr: "--maintenance-notice: 9000 is not a number of hours from 0 to 8784", wantReqs: none},
		{name: "file and flags", args: []string{"sla", "policy", "create", "-f", goldFile, "--tier", "99=10"}, wantErr: "--tier: cannot be combined with -f: the file gives the whole policy", wantReqs: none},
		{name: "file and another name", args: []string{"sla", "policy", "create", "silver", "-f", goldFile}, wantErr: `NAME: "silver" differs from the name in ` + goldFile + ` ("gold"): leave NAME out, or make them agree`, wantReqs: none},
		{name: "bad file", args: []string{"sla", "policy", "create", "-f", "-"}, stdin: `{"name":"x","target_percent":99,"tiers":[{"below_percent":99}]}`,
			wantErr: "-f -: policy line 1, column 42: tiers[0]: missing credit_percent", wantReqs: none},
		{name: "missing file", args: []string{"sla", "policy", "create", "-f", filepath.Join(dir, "nope.json")}, wantErr: "-f: open " + filepath.Join(dir, "nope.json"), wantReqs: none},

		{
			name: "ls",
			args: []string{"sla", "policy", "ls"},
			wantExact: "" +
				"NAME     TARGET   PRICE    TIERS(BELOW=CREDIT)       NOTICE   EXCLUDES CUSTOMER STOPS\n" +
				"gold     99.95%   100.00   99.95=10, 99=25, 95=100   48h      yes\n" +
				"silver   99.5%    40.00    99.5=10                   96h      yes\n",
			wantReqs: []string{"GET /v1/sla/policies"},
		},
		{
			name: "ls --json",
			args: []string{"sla", "policies", "ls", "--json"},
			check: func(t *testing.T, e *testEnv, r result) {
				var l api.List[sla.Policy]
				if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
					t.Fatal(err)
				}
				if len(l.Items) != 2 || l.Items[0].Name != "gold" || !reflect.DeepEqual(l.Items[1], e.api.sla.policies["silver"]) {
					t.Errorf("items = %+v", l.Items)
				}
			},
		},
		{
			name: "show",
			args: []string{"sla", "policy", "show", "gold"},
			wantExact: "" +
				"Name:                gold\n" +
				"Target:              99.95% per calendar month\n" +
				"Monthly price:       100.00\n" +
				"Credits:             10% below 99.95%, 25% below 99%, 100% below 95%\n" +
				"Customer stops:      excluded\n" +
				"Maintenance notice:  48h (maintenance announced at least this long ahead is excluded)\n",
			wantReqs: []string{"GET /v1/sla/policies/gold"},
		},
		{name: "show --json", args: []string{"sla", "policy", "show", "silver", "--json"}, wantOut: []string{`"maintenance_notice_hours": 96`, `"monthly_price": 40.00`}},
		{name: "show missing", args: []string{"sla", "policy", "show", "nope"}, wantErr: `policy "nope" not found`},
		{name: "delete assigned", args: []string{"sla", "policy", "delete", "silver"},
			wantErr: `policy "silver" is assigned to customer beta, instance web-2; unassign it first`},
		{name: "delete missing", args: []string{"sla", "policy", "rm", "nope"}, wantErr: `policy "nope" not found`},
		{
			name: "delete",
			args: []string{"sla", "policy", "create", "spare", "--target", "90"},
			check: func(t *testing.T, e *testEnv, _ result) {
				r := e.run(t, runOpts{}, "sla", "policy", "delete", "spare")
				r.check(t, []string{`policy "spare" deleted`}, "")
				if _, ok := e.api.sla.policies["spare"]; ok {
					t.Error("spare is still there")
				}
			},
		},
	})
}

func TestSLAPolicyServerError(t *testing.T) {
	t.Parallel()
	// A server that refuses what the CLI let through: its field is
	// reported against the flag.
	err := policyServerError(&client.APIError{Status: 400, Code: "invalid", Field: "tiers[0].credit_percent", Message: "tiers[0].credit_percent: too generous"}, []string{"99=10"}, "")
	if got, want := err.Error(), "--tier 99=10: too generous"; got != want {
		t.Errorf("server error = %q, want %q", got, want)
	}
	err = policyServerError(&client.APIError{Status: 400, Code: "invalid", Field: "name", Message: "taken"}, nil, "p.json")
	if got, want := err.Error(), "-f p.json: taken"; got != want {
		t.Errorf("server error = %q, want %q", got, want)
	}
}

func TestSLAAssignCommands(t *testing.T) {
	t.Parallel()
	none := []string{}
	runSLACases(t, []slaCase{
		{
			name:     "assign an instance",
			args:     []string{"sla", "assign", "--instance", "web-1", "--policy", "silver", "--price", "55"},
			wantOut:  []string{`instance "web-1" is under policy "silver", at 55.00 a month` + "\n"},
			wantReqs: []string{"PUT /v1/sla/assignments/instances/web-1"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if got, want := strings.TrimSpace(e.api.body("/v1/sla/assignments/instances/web-1")), `{"policy":"silver","monthly_price":55.00}`; got != want {
					t.Errorf("body = %s, want %s", got, want)
				}
			},
		},
		{
			name:     "assign a customer",
			args:     []string{"sla", "assign", "--customer", "Acme Corp", "--policy", "gold"},
			wantOut:  []string{`customer "Acme Corp" is under policy "gold", at the policy's price`},
			wantReqs: []string{"PUT /v1/sla/assignments/customers/Acme Corp"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if got, want := strings.TrimSpace(e.api.body("/v1/sla/assignments/customers/Acme Corp")), `{"policy":"gold"}`; got != want {
					t.Errorf("body = %s, want %s", got, want)
				}
			},
		},
		{name: "assign --json", args: []string{"sla", "assign", "--instance", "db-1", "--policy", "gold", "--json"},
			wantExact: "{\n  \"kind\": \"instance\",\n  \"name\": \"db-1\",\n  \"policy\": \"gold\"\n}\n"},
		{name: "assign an unknown policy", args: []string{"sla", "assign", "--customer", "acme", "--policy", "platinum"},
			wantErr: "--policy: unknown policy \"platinum\": create it first (`ferry sla policy create`)", wantReqs: []string{"PUT /v1/sla/assignments/customers/acme"}},
		{name: "assign nobody", args: []string{"sla", "assign", "--policy", "gold"}, wantErr: "--instance: required: give --instance NAME or --customer NAME", wantReqs: none},
		{name: "assign both", args: []string{"sla", "assign", "--instance", "web-1", "--customer", "acme", "--policy", "gold"}, wantErr: "--customer: cannot be combined with --instance", wantReqs: none},
		{name: "assign no policy", args: []string{"sla", "assign", "--instance", "web-1"}, wantErr: "--policy: required: name the policy (see 'ferry sla policy ls')", wantReqs: none},
		{name: "assign a bad policy name", args: []string{"sla", "assign", "--instance", "web-1", "--policy", "gold.json"}, wantErr: `--policy: "gold.json" is not a valid name`, wantReqs: none},
		{name: "assign a bad instance name", args: []string{"sla", "assign", "--instance", "Web_1", "--policy", "gold"}, wantErr: `--instance: "Web_1" is not a valid name`, wantReqs: none},
		{name: "assign a bad price", args: []string{"sla", "assign", "--instance", "web-1", "--policy", "gold", "--price", "ten"}, wantErr: `--price: "ten" is not an amount such as 100 or 9.99`, wantReqs: none},
		{name: "assign a negative price", args: []string{"sla", "assign", "--instance", "web-1", "--policy", "gold", "--price", "-1"}, wantErr: "--price: -1 is not an amount from 0 to 10000000000.00", wantReqs: none},
		{name: "assign with an argument", args: []string{"sla", "assign", "web-1", "--policy", "gold"}, wantErr: `unexpected argument "web-1"`, wantReqs: none},
		{
			name:     "unassign",
			args:     []string{"sla", "unassign", "--customer", "beta"},
			wantOut:  []string{`customer "beta" is no longer assigned a policy`},
			wantReqs: []string{"DELETE /v1/sla/assignments/customers/beta"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if _, ok := e.api.sla.customers["beta"]; ok {
					t.Error("beta is still assigned")
				}
			},
		},
		{name: "unassign what is not", args: []string{"sla", "unassign", "--instance", "web-1"},
			wantErr: `instance "web-1" has no SLA assignment (see 'ferry sla assignments')`, wantReqs: []string{"DELETE /v1/sla/assignments/instances/web-1"}},
		{name: "unassign nobody", args: []string{"sla", "unassign"}, wantErr: "--instance: required", wantReqs: none},
		{
			name: "assignments",
			args: []string{"sla", "assignments"},
			wantExact: "" +
				"KIND       NAME    POLICY   PRICE\n" +
				"customer   acme    gold     policy's\n" +
				"customer   beta    silver   55.00\n" +
				"instance   web-2   silver   policy's\n",
			wantReqs: []string{"GET /v1/sla/assignments"},
		},
		{
			name: "assignments --json",
			args: []string{"sla", "assignments", "--json"},
			check: func(t *testing.T, e *testEnv, r result) {
				var got client.SLAAssignments
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got.Customers, e.api.sla.customers) || !reflect.DeepEqual(got.Instances, e.api.sla.instances) {
					t.Errorf("assignments = %+v", got)
				}
			},
		},
	})
}

func TestSLAAssignmentsEmpty(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.run(t, runOpts{}, "sla", "assignments")
	r.check(t, []string{"No SLA assignments. Assign a policy with 'ferry sla assign'."}, "")
	r = e.run(t, runOpts{}, "sla", "assignments", "--json")
	if want := "{\n  \"instances\": {},\n  \"customers\": {}\n}\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	r = e.run(t, runOpts{}, "sla", "policy", "ls", "--json")
	if want := "{\n  \"items\": []\n}\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	r = e.run(t, runOpts{}, "sla", "forecast")
	r.check(t, nil, "no SLA policy exists yet: create one first (`ferry sla policy create`) (conflict)")
}

func TestMaintenanceCommands(t *testing.T) {
	t.Parallel()
	none := []string{}
	runSLACases(t, []slaCase{
		{
			name: "schedule ahead of one policy's notice",
			args: []string{"maintenance", "schedule", "n1", "--start", "+72h", "--duration", "2h", "--reason", "kernel update"},
			// +72h from 12:00:00 is 12:01 (30s of slack, rounded up); the
			// fake announces it 250ms after testNow.
			wantExact: fmt.Sprintf("maintenance mnt-1 scheduled on n1 from %s to %s (2h)\n", when(testNow.Add(72*time.Hour+time.Minute)), when(testNow.Add(74*time.Hour+time.Minute))) +
				"announced 72h ahead: excluded under gold (48h notice), not under silver (96h)\n" +
				"to be excluded under every policy, a window announced now must start at or after " + when(testNow.Add(96*time.Hour+time.Minute)) + " (96h ahead)\n",
			wantReqs: []string{"POST /v1/maintenance", "GET /v1/sla/policies"},
			check: func(t *testing.T, e *testEnv, _ result) {
				var req api.MaintenanceRequest
				if err := json.Unmarshal([]byte(e.api.body("/v1/maintenance")), &req); err != nil {
					t.Fatal(err)
				}
				want := api.MaintenanceRequest{Node: "n1", Start: testNow.Add(72*time.Hour + time.Minute), End: testNow.Add(74*time.Hour + time.Minute), Reason: "kernel update"}
				if !req.Start.Equal(want.Start) || !req.End.Equal(want.End) || req.Node != want.Node || req.Reason != want.Reason {
					t.Errorf("request = %+v, want %+v", req, want)
				}
			},
		},
		{
			name:    "schedule with RFC 3339 times",
			args:    []string{"maintenance", "schedule", "n2", "--start", "2025-06-10T02:00:00Z", "--end", "2025-06-10T03:30:00+00:00"},
			wantOut: []string{"(1h30m)\n", "announced 205h59m ahead: excluded under gold (48h notice) and silver (96h notice)\n"},
			check: func(t *testing.T, e *testEnv, r result) {
				if strings.Contains(r.stdout, "to be excluded") {
					t.Errorf("stdout has a hint: %s", r.stdout)
				}
			},
		},
		{
			name:    "schedule now",
			args:    []string{"maintenance", "schedule", "n1", "--start", "now", "--duration", "30m"},
			wantOut: []string{"announced as it begins: not excluded under gold (48h) or silver (96h): it counts as downtime\n"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if m := e.api.sla.maintenance[len(e.api.sla.maintenance)-1]; !m.Start.Equal(testNow) || !m.End.Equal(testNow.Add(30*time.Minute)) {
					t.Errorf("window = %v", m)
				}
			},
		},
		{
			name: "schedule --json",
			args: []string{"maintenance", "schedule", "n1", "--start", "+1h", "--duration", "1h", "--json"},
			check: func(t *testing.T, e *testEnv, r result) {
				var m api.Maintenance
				if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
					t.Fatal(err)
				}
				if m.ID != "mnt-1" || m.Node != "n1" || !m.Start.Equal(testNow.Add(time.Hour+time.Minute)) {
					t.Errorf("maintenance = %+v", m)
				}
			},
			wantReqs: []string{"POST /v1/maintenance"},
		},
		{name: "schedule on an unknown node", args: []string{"maintenance", "schedule", "n9", "--start", "+1h", "--duration", "1h"},
			wantErr: `NODE: node "n9" does not exist (see: ferry node ls)`, wantReqs: []string{"POST /v1/maintenance"}},
		{name: "no start", args: []string{"maintenance", "schedule", "n1", "--duration", "1h"}, wantErr: "--start: required: when the maintenance begins", wantReqs: none},
		{name: "no length", args: []string{"maintenance", "schedule", "n1", "--start", "now"}, wantErr: "--duration: required: give how long the maintenance lasts, e.g. --duration 2h, or when it ends with --end", wantReqs: none},
		{name: "duration and end", args: []string{"maintenance", "schedule", "n1", "--start", "now", "--duration", "1h", "--end", "+2h"}, wantErr: "--end: cannot be combined with --duration", wantReqs: none},
		{name: "bad start", args: []string{"maintenance", "schedule", "n1", "--start", "tomorrow", "--duration", "1h"},
			wantErr: `--start: "tomorrow" is not a time: give RFC 3339 (2026-12-01T02:00:00Z), now, or +DURATION such as +72h`, wantReqs: none},
		{name: "bad relative start", args: []string{"maintenance", "schedule", "n1", "--start", "+-1h", "--duration", "1h"}, wantErr: `--start: "+-1h" is not a positive duration from now`, wantReqs: none},
		{name: "zero duration", args: []string{"maintenance", "schedule", "n1", "--start", "now", "--duration", "0s"}, wantErr: "--duration: 0s is not a positive duration", wantReqs: none},
		{name: "end before start", args: []string{"maintenance", "schedule", "n1", "--start", "+2h", "--end", "+1h"}, wantErr: "--end: must be after start (2025-06-01T14:01:00Z)", wantReqs: none},
		{name: "too long", args: []string{"maintenance", "schedule", "n1", "--start", "+2h", "--duration", "200h"}, wantErr: "--duration: a window lasts at most 168h0m0s; schedule several", wantReqs: none},
		{name: "over already", args: []string{"maintenance", "schedule", "n1", "--start", "2025-05-01T00:00:00Z", "--duration", "2h"},
			wantErr: "--duration: the window ends at " + when(time.Date(2025, 5, 1, 2, 0, 0, 0, time.UTC)) + ", which has passed", wantReqs: none},
		{name: "bad node", args: []string{"maintenance", "schedule", "N1", "--start", "now", "--duration", "1h"}, wantErr: `NODE: "N1" is not a valid name`, wantReqs: none},
		{name: "long reason", args: []string{"maintenance", "schedule", "n1", "--start", "now", "--duration", "1h", "--reason", strings.Repeat("x", 1025)}, wantErr: "--reason: is limited to 1024 bytes", wantReqs: none},
		{name: "no node", args: []string{"maintenance", "schedule", "--start", "now", "--duration", "1h"}, wantErr: "missing the node NAME", wantReqs: none},
		{
			name: "ls",
			args: []string{"maintenance", "ls"},
			wantExact: "" +
				"ID         NODE   START                  END                    LENGTH   NOTICE   STATE       REASON              BY\n" +
				fmt.Sprintf("mnt-past   n2     %s   %s   2h       52h      over        disk swap           ops\n", when(testNow.Add(-48*time.Hour)), when(testNow.Add(-46*time.Hour))) +
				fmt.Sprintf("mnt-next   n1     %s   %s   2h30m    31h30m   scheduled   kernel [2J update   -\n", when(testNow.Add(30*time.Hour)), when(testNow.Add(32*time.Hour+30*time.Minute))),
			wantReqs: []string{"GET /v1/maintenance"},
		},
		{name: "ls --json", args: []string{"maint", "ls", "--json"}, wantOut: []string{`"items": [`, `"id": "mnt-past"`, `"announcedAt": "2025-05-28T08:00:00Z"`}},
		{
			name:     "cancel",
			args:     []string{"maintenance", "cancel", "mnt-next"},
			wantOut:  []string{"maintenance mnt-next cancelled\n"},
			wantReqs: []string{"DELETE /v1/maintenance/mnt-next"},
			check: func(t *testing.T, e *testEnv, _ result) {
				if len(e.api.sla.maintenance) != 1 {
					t.Errorf("maintenance = %+v", e.api.sla.maintenance)
				}
			},
		},
		{name: "cancel one begun", args: []string{"maintenance", "cancel", "mnt-past"}, wantErr: "maintenance mnt-past began at 2025-05-30T12:00:00Z: it is part of the SLA record and cannot be cancelled"},
		{name: "cancel missing", args: []string{"maintenance", "cancel", "mnt-x"}, wantErr: `maintenance "mnt-x" not found`},
		{name: "cancel nothing", args: []string{"maintenance", "cancel"}, wantErr: "missing the maintenance ID (see: ferry maintenance ls)", wantReqs: none},
		{name: "group", args: []string{"maintenance"}, wantOut: []string{"schedule", "ls", "cancel"}, wantReqs: none},
	})
}

func TestNoticeReport(t *testing.T) {
	t.Parallel()
	at := testNow
	pol := func(name string, h int) sla.Policy { return sla.Policy{Name: name, MaintenanceNoticeHours: &h} }
	m := &api.Maintenance{Start: at.Add(72 * time.Hour), AnnouncedAt: at}
	for _, tc := range []struct {
		pols []sla.Policy
		m    *api.Maintenance
		want string
	}{
		{[]sla.Policy{pol("silver", 96), pol("gold", 48)}, m, "announced 72h ahead: excluded under gold (48h notice), not under silver (96h)\n" +
			"to be excluded under every policy, a window announced now must start at or after " + when(at.Add(96*time.Hour)) + " (96h ahead)"},
		{[]sla.Policy{pol("a", 24), pol("b", 48), pol("c", 72)}, m, "announced 72h ahead: excluded under a (24h notice), b (48h notice) and c (72h notice)"},
		{nil, m, "announced 72h ahead (there is no SLA policy to compare it with)"},
		{[]sla.Policy{pol("gold", 0)}, &api.Maintenance{Start: at.Add(-90 * time.Minute), AnnouncedAt: at}, "announced 1h30m after it began: not excluded under gold (0h): it counts as downtime\n" +
			"to be excluded under every policy, a window announced now must start at or after " + when(at) + " (0h ahead)"},
		{[]sla.Policy{pol("gold", 48)}, &api.Maintenance{Start: at.Add(45 * time.Minute), AnnouncedAt: at}, "announced 45m ahead: not excluded under gold (48h): it counts as downtime\n" +
			"to be excluded under every policy, a window announced now must start at or after " + when(at.Add(48*time.Hour)) + " (48h ahead)"},
	} {
		if got := noticeReport(tc.m, tc.pols); got != tc.want {
			t.Errorf("noticeReport(%v) =\n%s\nwant\n%s", tc.pols, got, tc.want)
		}
	}
}

// wantLiveReport is the fake's report of month in tz (at testNow).
func wantLiveReport(t *testing.T, e *testEnv, month, tz, customer string) (*sla.Report, sla.Window) {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	m, err := sla.ParseMonth(month)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sla.LiveWindow(m, loc, testNow)
	if err != nil {
		t.Fatal(err)
	}
	rep, _, err := e.api.sla.report(w, customer)
	if err != nil {
		t.Fatal(err)
	}
	return rep, w
}

func TestSLAReportCommand(t *testing.T) {
	t.Parallel()
	none := []string{}
	render := func(t *testing.T, e *testEnv, f func(*bytes.Buffer, *sla.Report) error, month, tz, customer string) string {
		rep, _ := wantLiveReport(t, e, month, tz, customer)
		var b bytes.Buffer
		if err := f(&b, rep); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	exact := func(f func(*bytes.Buffer, *sla.Report) error, month, tz, customer string) func(*testing.T, *testEnv, result) {
		return func(t *testing.T, e *testEnv, r result) {
			if want := render(t, e, f, month, tz, customer); r.stdout != want {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
			}
		}
	}
	text := func(b *bytes.Buffer, r *sla.Report) error { return sla.WriteText(b, r) }
	csv := func(b *bytes.Buffer, r *sla.Report) error { return sla.WriteCSV(b, r) }
	js := func(b *bytes.Buffer, r *sla.Report) error { return sla.WriteJSON(b, r) }
	runSLACases(t, []slaCase{
		{
			name: "text",
			args: []string{"sla", "report", "--month", "2025-05"},
			wantOut: []string{
				"SLA report 2025-05 (UTC): 2025-05-01 00:00 to 2025-06-01 00:00",
				"web-1      acme       gold     99.948% !",
				"10.00 (10%)",
				"db-1       beta       silver   99.977%",
			},
			wantReqs: []string{"GET /v1/sla/report?month=2025-05"},
			check:    exact(text, "2025-05", "UTC", ""),
		},
		{
			name: "an instance no policy covers",
			args: []string{"sla", "report", "--month", "2025-05"},
			seed: func(s *fakeSLA) {
				s.events += `{"time":"2025-05-25T00:00:00Z","instance":"tmp-9","customer":"gamma","state":"serving"}` + "\n"
			},
			wantOut: []string{"web-1      acme       gold     99.948% !"},
			check: func(t *testing.T, e *testEnv, r result) {
				if !strings.Contains(r.stderr, "Warning: no SLA policy covers tmp-9") || strings.Contains(r.stdout, "tmp-9") {
					t.Errorf("stderr %q, stdout %q: want a warning naming tmp-9, and tmp-9 left out of the report", r.stderr, r.stdout)
				}
			},
		},
		{name: "the current month", args: []string{"sla", "report"}, wantOut: []string{"SLA report 2025-06 (UTC): 2025-06-01 00:00 to 2025-06-01 12:00"}, wantReqs: []string{"GET /v1/sla/report"}},
		{name: "json", args: []string{"sla", "report", "--month", "2025-05", "--tz", "Europe/Berlin", "--json"},
			wantReqs: []string{"GET /v1/sla/report?month=2025-05&tz=Europe%2FBerlin"}, check: exact(js, "2025-05", "Europe/Berlin", "")},
		{name: "csv of a customer", args: []string{"sla", "report", "--month", "2025-05", "--customer", "acme", "--csv"},
			wantReqs: []string{"GET /v1/sla/report?customer=acme&month=2025-05"}, check: exact(csv, "2025-05", "UTC", "acme")},
		{
			name:     "svg",
			args:     []string{"sla", "report", "--month", "2025-05", "--customer", "beta", "--tz", "Europe/Berlin", "--svg", "$DIR/report.svg"},
			wantOut:  []string{"SLA report 2025-05 (Europe/Berlin)", "\nchart written to "},
			wantReqs: []string{"GET /v1/sla/report?customer=beta&month=2025-05&tz=Europe%2FBerlin", "GET /v1/sla/export?customer=beta&month=2025-05&tz=Europe%2FBerlin"},
			check: func(t *testing.T, e *testEnv, r result) {
				rep, w := wantLiveReport(t, e, "2025-05", "Europe/Berlin", "beta")
				tls, err := sla.Timelines(e.api.sla.ledger(), w)
				if err != nil {
					t.Fatal(err)
				}
				var want bytes.Buffer
				if err := sla.RenderSVG(&want, rep, tls); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(e.dir, "report.svg"))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want.String() {
					t.Errorf("svg =\n%s\nwant\n%s", got, want.String())
				}
				if !strings.Contains(string(got), `class="down crash"`) {
					t.Errorf("the chart lacks db-1's crash:\n%s", got)
				}
			},
		},
		{name: "bad month", args: []string{"sla", "report", "--month", "2025-13"}, wantErr: "--month: ", wantReqs: none},
		{name: "month to come", args: []string{"sla", "report", "--month", "2025-07"},
			wantErr: "--month: 2025-07 has not begun: the cluster reports on months up to the current one (2025-06); for a what-if, use 'ferry sla replay'", wantReqs: none},
		{name: "bad tz", args: []string{"sla", "report", "--tz", "Mars/Olympus"}, wantErr: `--tz: unknown time zone "Mars/Olympus": give an IANA name such as Europe/Berlin, or UTC`, wantReqs: none},
		{name: "csv and json", args: []string{"sla", "report", "--csv", "--json"}, wantErr: "--csv: cannot be combined with --json", wantReqs: none},
		{name: "svg to stdout", args: []string{"sla", "report", "--svg", "-"}, wantErr: "--svg: give a file name", wantReqs: none},
	})
}

func TestSLAReportSVGPath(t *testing.T) {
	t.Parallel()
	e := slaEnv(t)
	path := filepath.Join(e.dir, "report.svg")
	r := e.run(t, runOpts{}, "sla", "report", "--month", "2025-05", "--svg", path)
	r.check(t, []string{"chart written to " + path}, "")
	if data, err := os.ReadFile(path); err != nil || !bytes.HasPrefix(data, []byte("<?xml")) {
		t.Errorf("%s: %v %.40q", path, err, data)
	}
}

func TestSLAIncidentsCommand(t *testing.T) {
	t.Parallel()
	none := []string{}
	runSLACases(t, []slaCase{
		{
			name: "text",
			args: []string{"sla", "incidents", "web-1", "--month", "2025-05"},
			wantExact: "" +
				"START                     END                       LENGTH   STATE     CAUSE          CUSTOMER\n" +
				"2025-05-01 00:00:00 UTC   2025-05-10 10:00:00 UTC   9d10h    serving   -              acme\n" +
				"2025-05-10 10:00:00 UTC   2025-05-10 10:23:00 UTC   23m      down      host-failure   acme\n" +
				"2025-05-10 10:23:00 UTC   2025-06-01 00:00:00 UTC   21d13h   serving   -              acme\n" +
				"\n" +
				"serving 30d23h, down 23m in 1 incident (host-failure 23m), excluded 0\n",
			wantReqs: []string{"GET /v1/sla/incidents/web-1?month=2025-05"},
		},
		{
			name:     "in a time zone",
			args:     []string{"sla", "incidents", "db-1", "--month", "2025-05", "--tz", "Europe/Berlin"},
			wantOut:  []string{"2025-05-21 01:50:00 CEST   2025-05-21 02:00:00 CEST   10m      down      crash"},
			wantReqs: []string{"GET /v1/sla/incidents/db-1?month=2025-05&tz=Europe%2FBerlin"},
		},
		{
			name: "json",
			args: []string{"sla", "incidents", "web-2", "--month", "2025-05", "--json"},
			check: func(t *testing.T, e *testEnv, r result) {
				var l api.List[sla.Interval]
				if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
					t.Fatal(err)
				}
				m, _ := sla.ParseMonth("2025-05")
				want, err := sla.Timeline(e.api.sla.ledger(), "web-2", sla.MonthWindow(m, time.UTC))
				if err != nil {
					t.Fatal(err)
				}
				if len(l.Items) != len(want) || len(want) != 3 || l.Items[1].State != sla.Excluded || l.Items[1].Cause != sla.CauseCustomerStop || !l.Items[1].Start.Equal(want[1].Start) {
					t.Errorf("items = %+v, want %+v", l.Items, want)
				}
			},
		},
		{name: "no time in the month", args: []string{"sla", "incidents", "web-2", "--month", "2025-04"}, wantExact: "web-2 has no time in the ledger in 2025-04 (UTC)\n"},
		{name: "not in the ledger", args: []string{"sla", "incidents", "ghost"},
			wantErr: "instance \"ghost\" is not in the SLA ledger: it never served, or no policy covers it (`ferry sla assign`) (not_found)"},
		{name: "no name", args: []string{"sla", "incidents"}, wantErr: "missing the instance NAME", wantReqs: none},
		{name: "bad month", args: []string{"sla", "incidents", "web-1", "--month", "May"}, wantErr: "--month: ", wantReqs: none},
	})
}

func TestSLAExportCommand(t *testing.T) {
	t.Parallel()
	none := []string{}
	wantExport := func(t *testing.T, e *testEnv) string {
		_, w := wantLiveReport(t, e, "2025-05", "UTC", "")
		var b bytes.Buffer
		if err := sla.WriteEvents(&b, sla.Slice(e.api.sla.ledger(), w)); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	runSLACases(t, []slaCase{
		{
			name:     "to stdout",
			args:     []string{"sla", "export", "--month", "2025-05"},
			wantReqs: []string{"GET /v1/sla/export?month=2025-05"},
			check: func(t *testing.T, e *testEnv, r result) {
				if want := wantExport(t, e); r.stdout != want || !strings.Contains(want, `"cause":"host-failure"`) {
					t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
				}
			},
		},
		{
			name: "to a file, then replayed",
			args: []string{"sla", "policy", "ls"},
			check: func(t *testing.T, e *testEnv, _ result) {
				path := filepath.Join(e.dir, "may.jsonl")
				r := e.run(t, runOpts{}, "sla", "export", "--month", "2025-05", "-o", path)
				r.check(t, []string{"events of 2025-05 (UTC) written to " + path + "\n"}, "")
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if want := wantExport(t, e); string(data) != want {
					t.Errorf("%s =\n%s\nwant\n%s", path, data, want)
				}
				if left, _ := filepath.Glob(filepath.Join(e.dir, ".may.jsonl.*")); len(left) > 0 {
					t.Errorf("temporary files left: %v", left)
				}
				// The replay of the export is the live report.
				dir := slaFiles(t)
				live := e.run(t, runOpts{}, "sla", "report", "--month", "2025-05", "--customer", "acme", "--json")
				replay := e.run(t, runOpts{}, "sla", "replay", path, "--policy", filepath.Join(dir, "gold.json"), "--month", "2025-05", "--json")
				// acme is all gold except web-2, which is silver: compare
				// web-1's rows.
				var a, b sla.Report
				if err := json.Unmarshal([]byte(live.stdout), &a); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(replay.stdout), &b); err != nil {
					t.Fatal(err)
				}
				row := func(r *sla.Report) sla.InstanceReport {
					for _, row := range r.Instances {
						if row.Instance == "web-1" {
							return row
						}
					}
					t.Fatalf("no web-1 in %+v", r.Instances)
					return sla.InstanceReport{}
				}
				if l, p := row(&a), row(&b); !reflect.DeepEqual(l, p) || l.Credit != 1000 {
					t.Errorf("live %+v\nreplay %+v", l, p)
				}
			},
		},
		{name: "a month is required", args: []string{"sla", "export"}, wantErr: "--month: required: give the calendar month, e.g. --month 2025-06", wantReqs: none},
		{name: "month to come", args: []string{"sla", "export", "--month", "2026-01"}, wantErr: "--month: 2026-01 has not begun", wantReqs: none},
		{name: "bad directory", args: []string{"sla", "export", "--month", "2025-05", "-o", "/nonexistent/dir/x.jsonl"}, wantErr: "-o: ", wantReqs: none},
	})
}

func TestSLAForecastLive(t *testing.T) {
	t.Parallel()
	runSLACases(t, []slaCase{
		{
			name:     "text",
			args:     []string{"sla", "forecast"},
			wantOut:  []string{"Per instance and 30d month: host failures 0.5 (8s each), migrations 0 (0 each)", "gold     99.95%   4s"},
			wantReqs: []string{"GET /v1/sla/forecast"},
		},
		{
			name:     "json",
			args:     []string{"sla", "forecast", "--json"},
			wantReqs: []string{"GET /v1/sla/forecast"},
			check: func(t *testing.T, e *testEnv, r result) {
				var f sla.ForecastReport
				if err := json.Unmarshal([]byte(r.stdout), &f); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(&f, e.api.sla.forecast) {
					t.Errorf("forecast = %+v, want %+v", f, e.api.sla.forecast)
				}
			},
		},
		// Any offline flag keeps it offline, with its own errors.
		{name: "offline flags stay offline", args: []string{"sla", "forecast", "--host-failures-per-month", "1"}, wantErr: "--failover-downtime: required", wantReqs: []string{}},
		{name: "month-days alone is offline", args: []string{"sla", "forecast", "--month-days", "31"}, wantErr: "--host-failures-per-month: required", wantReqs: []string{}},
	})
}

func TestSLAGroupLive(t *testing.T) {
	t.Parallel()
	r := offlineEnv(t).run(t, runOpts{}, "sla")
	r.check(t, []string{"policy", "assign", "unassign", "assignments", "report", "incidents", "export", "replay", "forecast"}, "")
	r = offlineEnv(t).run(t, runOpts{}, "sla", "policy")
	r.check(t, []string{"create", "ls", "show", "delete"}, "")
	// Live commands need a server; offline ones do not.
	r = offlineEnv(t).run(t, runOpts{}, "sla", "report")
	r.check(t, nil, errNoServer)
}

func TestParseWhen(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 29, 500e6, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"now", time.Date(2025, 6, 1, 12, 0, 29, 0, time.UTC)},
		{"+30m", time.Date(2025, 6, 1, 12, 31, 0, 0, time.UTC)},
		{"+72h", time.Date(2025, 6, 4, 12, 1, 0, 0, time.UTC)},
		{"2026-12-01T02:00:00+01:00", time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)},
	} {
		got, err := parseWhen("--start", tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if strings.HasPrefix(tc.in, "+") {
			d, _ := time.ParseDuration(tc.in[1:])
			if slack := got.Sub(now) - d; slack < relativeSlack {
				t.Errorf("parseWhen(%q): only %v of slack", tc.in, slack)
			}
		}
	}
}
