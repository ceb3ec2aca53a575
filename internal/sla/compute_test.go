package sla

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// novemberEvents is a month with one instance of each kind of trouble.
func novemberEvents(t tb) []Event {
	return []Event{
		ev(t, "2026-09-01T00:00:00Z", "db-1", "beta", Serving, ""),
		ev(t, "2026-10-01T00:00:00Z", "old-1", "beta", Serving, ""),
		ev(t, "2026-10-15T00:00:00Z", "web-1", "acme", Serving, ""),
		ev(t, "2026-11-05T00:00:00Z", "old-1", "beta", Deleted, ""),
		ev(t, "2026-11-10T10:00:00Z", "web-1", "acme", Down, CauseHostFailure),
		ev(t, "2026-11-10T10:20:00Z", "web-1", "acme", Down, CauseFailover),
		ev(t, "2026-11-10T10:22:00Z", "web-1", "acme", Serving, ""),
		ev(t, "2026-11-16T00:00:00Z", "web-2", "acme", Serving, ""),
		ev(t, "2026-11-20T00:00:00Z", "web-2", "acme", Excluded, CauseCustomerStop),
		ev(t, "2026-11-21T00:00:00Z", "web-2", "acme", Serving, ""),
		ev(t, "2026-11-25T12:00:00Z", "web-2", "acme", Down, CauseMigration),
		ev(t, "2026-11-25T12:00:00.5Z", "web-2", "acme", Serving, ""),
		ev(t, "2026-11-30T23:00:00Z", "db-1", "beta", Down, CauseCrash),
		ev(t, "2026-12-01T01:00:00Z", "db-1", "beta", Serving, ""),
	}
}

func secs(s float64) Seconds { return Seconds(s * float64(time.Second)) }

func TestComputeNovember(t *testing.T) {
	t.Parallel()
	w := MonthWindow(month(t, "2026-11"), nil)
	r := mustCompute(t, novemberEvents(t), w, onePolicy(gold(t)))

	want := []InstanceReport{
		{Instance: "db-1", Customer: "beta", Policy: "gold", TargetPercent: 99.95, MonthlyPrice: 10000,
			Window: secs(2592000), Serving: secs(2592000 - 3600), Downtime: secs(3600),
			AvailabilityPercent: 100 * (2592000 - 3600) / 2592000.0, Breach: true, Incidents: 1,
			IncidentsByCause: map[Cause]CauseTotal{CauseCrash: {1, secs(3600)}},
			CreditPercent:    10, Credit: 1000, CreditsByCause: map[Cause]Money{CauseCrash: 1000}},
		{Instance: "old-1", Customer: "beta", Policy: "gold", TargetPercent: 99.95, MonthlyPrice: 10000,
			Window: secs(4 * 86400), Serving: secs(4 * 86400), AvailabilityPercent: 100},
		{Instance: "web-1", Customer: "acme", Policy: "gold", TargetPercent: 99.95, MonthlyPrice: 10000,
			Window: secs(2592000), Serving: secs(2592000 - 1320), Downtime: secs(1320),
			AvailabilityPercent: 100 * (2592000 - 1320) / 2592000.0, Breach: true, Incidents: 2,
			IncidentsByCause: map[Cause]CauseTotal{CauseHostFailure: {1, secs(1200)}, CauseFailover: {1, secs(120)}},
			CreditPercent:    10, Credit: 1000,
			// 10.00 × 1200/1320 = 9.0909, × 120/1320 = 0.9090: the cent left
			// goes to the larger remainder.
			CreditsByCause: map[Cause]Money{CauseHostFailure: 909, CauseFailover: 91}},
		{Instance: "web-2", Customer: "acme", Policy: "gold", TargetPercent: 99.95, MonthlyPrice: 10000,
			Window: secs(15 * 86400), Serving: secs(14*86400 - 0.5), Downtime: secs(0.5), Excluded: secs(86400),
			AvailabilityPercent: 100 * (1209600 - 0.5) / 1209600, Incidents: 1,
			IncidentsByCause: map[Cause]CauseTotal{CauseMigration: {1, secs(0.5)}},
			ExcludedByCause:  map[Cause]Seconds{CauseCustomerStop: secs(86400)}},
	}
	if !reflect.DeepEqual(r.Instances, want) {
		for i := range max(len(want), len(r.Instances)) {
			if i >= len(want) || i >= len(r.Instances) || !reflect.DeepEqual(r.Instances[i], want[i]) {
				t.Errorf("row %d:\ngot  %+v", i, r.Instances[i])
				if i < len(want) {
					t.Errorf("want %+v", want[i])
				}
			}
		}
	}
	if got := FormatPercent(rowOf(t, r, "web-1").AvailabilityPercent); got != "99.949%" {
		t.Errorf("web-1 availability %s, want 99.949%%", got)
	}
	if r.Totals.Revenue != 40000 || r.Totals.Credits != 2000 || r.Totals.Customers != 2 || r.Totals.Instances != 4 ||
		r.Totals.Incidents != 4 || r.Totals.Breaches != 2 {
		t.Errorf("totals = %+v", r.Totals)
	}
	wantByCause := map[Cause]Money{CauseHostFailure: 909, CauseFailover: 91, CauseCrash: 1000}
	if !reflect.DeepEqual(r.Totals.CreditsByCause, wantByCause) {
		t.Errorf("credits by cause = %v, want %v", r.Totals.CreditsByCause, wantByCause)
	}
	if got := r.Totals.CreditSharePercent[CauseCrash]; got != 50 {
		t.Errorf("crash share = %v, want 50", got)
	}
	if len(r.Customers) != 2 || r.Customers[0].Customer != "acme" || r.Customers[0].Credits != 1000 || r.Customers[0].Revenue != 20000 ||
		r.Customers[1].Customer != "beta" || r.Customers[1].Credits != 1000 || r.Customers[1].Instances != 2 {
		t.Errorf("customers = %+v", r.Customers)
	}

	// The crash goes on into December: split at midnight, an incident in
	// both months.
	dec := mustCompute(t, novemberEvents(t), MonthWindow(month(t, "2026-12"), nil), onePolicy(gold(t)))
	db := rowOf(t, dec, "db-1")
	if db.Downtime != secs(3600) || db.Incidents != 1 || db.Window != secs(31*86400) || db.CreditPercent != 10 {
		t.Errorf("December db-1 = %+v", db)
	}
	if len(dec.Instances) != 3 {
		t.Errorf("December has %d rows, want 3 (old-1 is deleted)", len(dec.Instances))
	}
}

func TestComputeJSON(t *testing.T) {
	t.Parallel()
	w := MonthWindow(month(t, "2026-11"), nil)
	r := mustCompute(t, novemberEvents(t), w, onePolicy(gold(t)))
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Month     string
		Instances []map[string]any
		Totals    map[string]any
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Month != "2026-11" {
		t.Errorf("month = %q", doc.Month)
	}
	for _, f := range []string{"instance", "customer", "availability_percent", "downtime_seconds", "excluded_seconds", "credit"} {
		if _, ok := doc.Instances[0][f]; !ok {
			t.Errorf("instances[0] lacks %q: %v", f, doc.Instances[0])
		}
	}
	if doc.Totals["revenue"] != 400.0 || doc.Totals["credits"] != 20.0 {
		t.Errorf("totals = %v", doc.Totals)
	}
	for _, s := range []string{`"downtime_seconds": 1320,`, `"credit": 10.00,`, `"downtime_seconds": 0.5,`} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("JSON lacks %s:\n%s", s, b.String())
		}
	}
	if strings.Contains(b.String(), "generated_at") {
		t.Error("a zero GeneratedAt was written")
	}
	// A report reads back equal (what the lead's client does).
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	var b2 bytes.Buffer
	if err := WriteJSON(&b2, &back); err != nil {
		t.Fatal(err)
	}
	if b.String() != b2.String() {
		t.Errorf("JSON round trip differs:\n%s\n%s", b.String(), b2.String())
	}
}

func TestComputeEdges(t *testing.T) {
	t.Parallel()
	g := gold(t)
	nov := MonthWindow(month(t, "2026-11"), nil)
	t.Run("22 minutes in a 30-day month", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{
			ev(t, "2026-11-01T00:00:00Z", "a", "c", Serving, ""),
			ev(t, "2026-11-03T00:00:00Z", "a", "c", Down, CauseCrash),
			ev(t, "2026-11-03T00:22:00Z", "a", "c", Serving, ""),
		}, nov, onePolicy(g))
		a := rowOf(t, r, "a")
		if FormatPercent(a.AvailabilityPercent) != "99.949%" || a.CreditPercent != 10 || a.Credit != 1000 || !a.Breach {
			t.Errorf("row = %+v", a)
		}
	})
	t.Run("all excluded is 100%", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{ev(t, "2026-10-01T00:00:00Z", "a", "c", Excluded, CauseMaintenance)}, nov, onePolicy(g))
		a := rowOf(t, r, "a")
		if a.AvailabilityPercent != 100 || a.Credit != 0 || a.Breach || a.Excluded != a.Window || a.Incidents != 0 {
			t.Errorf("row = %+v", a)
		}
	})
	t.Run("down all month", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{ev(t, "2026-10-01T00:00:00Z", "a", "c", Down, CauseUnknown)}, nov, onePolicy(g))
		a := rowOf(t, r, "a")
		if a.AvailabilityPercent != 0 || a.CreditPercent != 100 || a.Credit != 10000 || a.Incidents != 1 {
			t.Errorf("row = %+v", a)
		}
	})
	t.Run("repeated down events are one incident", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{
			ev(t, "2026-11-02T00:00:00Z", "a", "c", Down, CauseGuestNotAnswering),
			{Time: tm(t, "2026-11-02T00:05:00Z"), Instance: "a", Customer: "c", State: Down, Cause: CauseGuestNotAnswering, Node: "n2"},
			ev(t, "2026-11-02T00:10:00Z", "a", "c", Serving, ""),
			ev(t, "2026-11-02T00:20:00Z", "a", "c", Down, CauseGuestNotAnswering),
			ev(t, "2026-11-02T00:21:00Z", "a", "c", Serving, ""),
		}, nov, onePolicy(g))
		a := rowOf(t, r, "a")
		if a.Incidents != 2 || a.IncidentsByCause[CauseGuestNotAnswering] != (CauseTotal{2, secs(660)}) {
			t.Errorf("row = %+v", a)
		}
	})
	t.Run("first event in the month starts the window", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{ev(t, "2026-11-30T12:00:00Z", "a", "c", Serving, "")}, nov, onePolicy(g))
		if a := rowOf(t, r, "a"); a.Window != secs(43200) {
			t.Errorf("row = %+v", a)
		}
	})
	t.Run("events after the window", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{ev(t, "2026-12-01T00:00:00Z", "a", "c", Serving, "")}, nov, onePolicy(g))
		if len(r.Instances) != 0 || r.Totals.Revenue != 0 || r.Customers == nil {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("a change of owner makes two rows", func(t *testing.T) {
		t.Parallel()
		r := mustCompute(t, []Event{
			ev(t, "2026-10-01T00:00:00Z", "a", "acme", Serving, ""),
			ev(t, "2026-11-11T00:00:00Z", "a", "beta", Serving, ""),
		}, nov, onePolicy(g))
		if len(r.Instances) != 2 || r.Instances[0].Customer != "acme" || r.Instances[0].Window != secs(10*86400) ||
			r.Instances[1].Customer != "beta" || r.Instances[1].Window != secs(20*86400) || r.Totals.Revenue != 20000 {
			t.Errorf("rows = %+v", r.Instances)
		}
	})
	t.Run("a live report stops at now", func(t *testing.T) {
		t.Parallel()
		w, err := LiveWindow(month(t, "2026-11"), nil, tm(t, "2026-11-11T00:00:00Z"))
		if err != nil {
			t.Fatal(err)
		}
		r := mustCompute(t, []Event{
			ev(t, "2026-10-01T00:00:00Z", "a", "c", Serving, ""),
			ev(t, "2026-11-10T23:00:00Z", "a", "c", Down, CauseCrash),
		}, w, onePolicy(g))
		if a := rowOf(t, r, "a"); a.Window != secs(10*86400) || a.Downtime != secs(3600) || !r.To.Equal(w.To) {
			t.Errorf("row = %+v", a)
		}
	})
}

func TestComputeErrors(t *testing.T) {
	t.Parallel()
	g := gold(t)
	nov := MonthWindow(month(t, "2026-11"), nil)
	events := []Event{ev(t, "2026-11-01T00:00:00Z", "web-1", "acme", Serving, "")}
	plans := &Plans{Policies: map[string]Policy{"gold": g}, Customers: map[string]Assignment{"acme": {Policy: "platinum"}}}
	_, err := Compute(events, nov, plans.Plan)
	if !errors.Is(err, ErrUnknownPolicy) || err.Error() != `instance "web-1": unknown policy "platinum" (assigned to customer "acme")` {
		t.Errorf("unknown policy: %v", err)
	}
	bad := g
	bad.TargetPercent = 101
	_, err = Compute(events, nov, onePolicy(bad))
	if err == nil || err.Error() != `instance "web-1": policy "gold": target_percent: 101 is not a percentage above 0 and at most 100` {
		t.Errorf("bad policy: %v", err)
	}
	if _, err := Compute(events, nov, nil); err == nil {
		t.Error("nil plans accepted")
	}
	if _, err := Compute(events, Window{}, onePolicy(g)); err == nil {
		t.Error("empty window accepted")
	}
	unsorted := []Event{events[0], ev(t, "2026-10-01T00:00:00Z", "web-2", "", Serving, "")}
	if _, err := Compute(unsorted, nov, onePolicy(g)); err == nil || !strings.HasPrefix(err.Error(), "events[1]: time:") {
		t.Errorf("unsorted: %v", err)
	}
}

func TestTimeline(t *testing.T) {
	t.Parallel()
	w := MonthWindow(month(t, "2026-11"), nil)
	ivs, err := Timeline(novemberEvents(t), "web-1", w)
	if err != nil {
		t.Fatal(err)
	}
	want := []Interval{
		{State: Serving, Customer: "acme", Start: tm(t, "2026-11-01T00:00:00Z"), End: tm(t, "2026-11-10T10:00:00Z"), Duration: secs(9*86400 + 36000)},
		{State: Down, Cause: CauseHostFailure, Customer: "acme", Start: tm(t, "2026-11-10T10:00:00Z"), End: tm(t, "2026-11-10T10:20:00Z"), Duration: secs(1200)},
		{State: Down, Cause: CauseFailover, Customer: "acme", Start: tm(t, "2026-11-10T10:20:00Z"), End: tm(t, "2026-11-10T10:22:00Z"), Duration: secs(120)},
		{State: Serving, Customer: "acme", Start: tm(t, "2026-11-10T10:22:00Z"), End: tm(t, "2026-12-01T00:00:00Z"), Duration: secs(2592000 - 9*86400 - 36000 - 1320)},
	}
	if !reflect.DeepEqual(ivs, want) {
		t.Errorf("Timeline =\n%+v\nwant\n%+v", ivs, want)
	}
	ivs, err = Timeline(novemberEvents(t), "old-1", MonthWindow(month(t, "2026-12"), nil))
	if err != nil || ivs != nil {
		t.Errorf("deleted instance: %v, %v", ivs, err)
	}
	var b bytes.Buffer
	if err := WriteTimelineText(&b, want); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "2026-11-10 10:00:00 UTC   2026-11-10 10:20:00 UTC   20m      down      host-failure   acme") {
		t.Errorf("text:\n%s", b.String())
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	r := mustCompute(t, novemberEvents(t), MonthWindow(month(t, "2026-11"), nil), onePolicy(gold(t)))
	var text bytes.Buffer
	if err := WriteText(&text, r); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"SLA report 2026-11 (UTC): 2026-11-01 00:00 to 2026-12-01 00:00",
		"web-1      acme       gold     99.949% !      99.95%   22m        0          2 (host-failure 1: 20m, failover 1: 2m)   10.00 (10%)",
		"acme       2           99.965%        1          22m        3           200.00    10.00",
		"Revenue 400.00, credits 20.00 (5.0% of revenue), 2 of 4 instances below target, 4 incidents, 1h22m down",
		"crash          1           1h         10.00     50.0%",
	} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, text.String())
		}
	}
	var c bytes.Buffer
	if err := WriteCSV(&c, r); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(c.String()), "\n")
	if len(lines) != 1+4+2+1 {
		t.Fatalf("CSV has %d lines:\n%s", len(lines), c.String())
	}
	if !strings.HasPrefix(lines[0], "row,month,time_zone,instance,customer,policy,monthly_price,") ||
		!strings.Contains(lines[0], ",host-failure_incidents,host-failure_downtime_seconds,host-failure_credit,") {
		t.Errorf("header = %s", lines[0])
	}
	if !strings.HasPrefix(lines[3], "instance,2026-11,UTC,web-1,acme,gold,100.00,99.95,2592000,2590680,1320,0,99.94907407407408,1,2,10,10.00,100.00,1,1200,9.09,1,120,0.91,") {
		t.Errorf("web-1 row = %s", lines[3])
	}
	if !strings.HasPrefix(lines[7], "total,2026-11,UTC,,,,,,") || !strings.Contains(lines[7], ",20.00,400.00,") {
		t.Errorf("total row = %s", lines[7])
	}
}
