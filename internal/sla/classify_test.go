package sla

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	g := gold(t)
	no := false
	strict := g
	strict.Name, strict.ExcludeCustomerStops = "strict", &no
	plans := &Plans{Policies: map[string]Policy{"gold": g, "strict": strict}, Default: "gold",
		Customers: map[string]Assignment{"beta": {Policy: "strict"}}}
	windows := []Maintenance{
		// Announced five days ahead: excused.
		{Node: "n1", Start: tm(t, "2026-11-10T02:00:00Z"), End: tm(t, "2026-11-10T04:00:00Z"), AnnouncedAt: tm(t, "2026-11-05T00:00:00Z")},
		// Announced 14 hours ahead: not under a 48-hour notice.
		{Node: "n2", Start: tm(t, "2026-11-12T02:00:00Z"), End: tm(t, "2026-11-12T03:00:00Z"), AnnouncedAt: tm(t, "2026-11-11T12:00:00Z")},
	}
	entry := func(at, inst, cust, node string, serving bool, c Cause) Entry {
		return Entry{Time: tm(t, at), Instance: inst, Customer: cust, Node: node, Serving: serving, Cause: c}
	}
	entries := []Entry{
		entry("2026-11-10T04:30:00Z", "a", "acme", "n1", true, ""),
		entry("2026-11-10T01:30:00Z", "a", "acme", "n1", false, CauseMaintenance), // 30 min early, 30 min late
		entry("2026-11-12T02:00:00Z", "b", "acme", "n2", false, CauseMaintenance),
		entry("2026-11-12T03:00:00Z", "b", "acme", "n2", true, ""),
		entry("2026-11-15T00:00:00Z", "c", "beta", "n1", false, CauseCustomerStop),
		entry("2026-11-16T00:00:00Z", "c", "beta", "n1", true, ""),
		entry("2026-11-15T00:00:00Z", "d", "acme", "n1", false, CauseCustomerStop),
		entry("2026-11-16T00:00:00Z", "d", "acme", "n1", true, ""),
		entry("2026-11-17T00:00:00Z", "e", "acme", "n3", false, CauseCrash),
		entry("2026-11-17T00:00:00Z", "e", "acme", "n3", false, ""), // the same time: the last wins
		entry("2026-11-17T00:10:00Z", "e", "acme", "n3", true, ""),
		entry("2026-11-17T00:20:00Z", "e", "acme", "n3", true, ""), // no change
		entry("2026-11-10T02:30:00Z", "f", "acme", "n1", false, CauseHostFailure),
		entry("2026-11-10T02:40:00Z", "f", "acme", "n1", true, ""),
		entry("2026-11-18T00:00:00Z", "f", "acme", "n1", true, ""),
		{Time: tm(t, "2026-11-20T00:00:00Z"), Instance: "f", Customer: "acme", Node: "n1", Deleted: true},
	}
	got, err := Classify(entries, windows, plans.Plan)
	if err != nil {
		t.Fatal(err)
	}
	e := func(at, inst, cust, node string, st State, c Cause) Event {
		return Event{Time: tm(t, at), Instance: inst, Customer: cust, Node: node, State: st, Cause: c}
	}
	want := []Event{
		e("2026-11-10T01:30:00Z", "a", "acme", "n1", Down, CauseMaintenance),
		e("2026-11-10T02:00:00Z", "a", "acme", "n1", Excluded, CauseMaintenance),
		e("2026-11-10T02:30:00Z", "f", "acme", "n1", Down, CauseHostFailure),
		e("2026-11-10T02:40:00Z", "f", "acme", "n1", Serving, ""),
		e("2026-11-10T04:00:00Z", "a", "acme", "n1", Down, CauseMaintenance),
		e("2026-11-10T04:30:00Z", "a", "acme", "n1", Serving, ""),
		e("2026-11-12T02:00:00Z", "b", "acme", "n2", Down, CauseMaintenance),
		e("2026-11-12T03:00:00Z", "b", "acme", "n2", Serving, ""),
		e("2026-11-15T00:00:00Z", "c", "beta", "n1", Down, CauseCustomerStop),
		e("2026-11-15T00:00:00Z", "d", "acme", "n1", Excluded, CauseCustomerStop),
		e("2026-11-16T00:00:00Z", "c", "beta", "n1", Serving, ""),
		e("2026-11-16T00:00:00Z", "d", "acme", "n1", Serving, ""),
		e("2026-11-17T00:00:00Z", "e", "acme", "n3", Down, CauseUnknown),
		e("2026-11-17T00:10:00Z", "e", "acme", "n3", Serving, ""),
		e("2026-11-20T00:00:00Z", "f", "acme", "n1", Deleted, ""),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Classify =")
		for _, g := range got {
			t.Errorf("  %v %s %s %s %s", g.Time.Format(time.RFC3339), g.Instance, g.Customer, g.State, g.Cause)
		}
	}

	// Without plans: the defaults.
	got, err = Classify(entries[4:6], nil, nil)
	if err != nil || len(got) != 2 || got[0].State != Excluded {
		t.Errorf("Classify without plans = %+v, %v", got, err)
	}
}

func TestClassifyErrors(t *testing.T) {
	t.Parallel()
	now := tm(t, "2026-11-01T00:00:00Z")
	plans := &Plans{Policies: map[string]Policy{"gold": gold(t)}}
	for _, tc := range []struct {
		name    string
		entries []Entry
		windows []Maintenance
		want    string
	}{
		{"no time", []Entry{{Instance: "a"}}, nil, "entries[0]: time: missing"},
		{"no instance", []Entry{{Time: now}}, nil, "entries[0]: instance: missing"},
		{"bad cause", []Entry{{Time: now, Instance: "a", Cause: "x"}}, nil, `entries[0]: cause: "x" is not a cause`},
		{"window backwards", nil, []Maintenance{{Node: "n", Start: now, End: now, AnnouncedAt: now}}, "maintenance[0]: end: must be after start"},
		{"window not announced", nil, []Maintenance{{Node: "n", Start: now, End: now.Add(time.Hour)}}, "maintenance[0]: announced_at: missing"},
		{"no policy", []Entry{{Time: now, Instance: "a", Customer: "acme", Cause: CauseCustomerStop}}, nil, `instance "a": no policy applies`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Classify(tc.entries, tc.windows, plans.Plan)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error = %v, want %s...", err, tc.want)
			}
		})
	}
	_, err := Classify([]Entry{{Time: now, Instance: "a", Cause: CauseMaintenance}}, nil, plans.Plan)
	if !errors.Is(err, ErrNoPolicy) {
		t.Errorf("error = %v", err)
	}
}

// TestReplayOfExport is the promise: a replay of an export
// reproduces the live report exactly. The live side classifies raw entries
// and reports on the month so far; the export writes the events the month
// needs, and the replay reads them back and reports on the same window.
func TestReplayOfExport(t *testing.T) {
	t.Parallel()
	loc := berlin(t)
	g := gold(t)
	plans := &Plans{Policies: map[string]Policy{"gold": g}, Default: "gold"}
	windows := []Maintenance{{Node: "n1", Start: tm(t, "2026-11-10T02:00:00Z"), End: tm(t, "2026-11-10T04:00:00Z"), AnnouncedAt: tm(t, "2026-11-01T00:00:00Z")}}
	var entries []Entry
	// A ledger from September on, with outages every few days,
	// nanosecond times and one across the month's start in Berlin.
	at := tm(t, "2026-09-03T07:00:00.123456789Z")
	causes := []Cause{CauseHostFailure, CauseMigration, CauseCrash, CauseMaintenance, CauseCustomerStop, CauseGuestNotAnswering}
	for i := 0; at.Before(tm(t, "2026-11-25T00:00:00Z")); i++ {
		inst := []string{"web-1", "web-2", "db-1"}[i%3]
		cust := map[string]string{"web-1": "acme", "web-2": "acme", "db-1": "beta"}[inst]
		entries = append(entries,
			Entry{Time: at, Instance: inst, Customer: cust, Node: "n1", Cause: causes[i%len(causes)]},
			Entry{Time: at.Add(time.Duration(i+1) * 37 * time.Second), Instance: inst, Customer: cust, Node: "n1", Serving: true})
		at = at.Add(31*time.Hour + 17*time.Minute)
	}
	entries = append(entries,
		Entry{Time: tm(t, "2026-10-31T22:50:00Z"), Instance: "edge", Customer: "acme", Cause: CauseCrash},
		Entry{Time: tm(t, "2026-10-31T23:20:00Z"), Instance: "edge", Customer: "acme", Serving: true})
	live, err := Classify(entries, windows, plans.Plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		month string
		now   string
	}{
		{"the current month", "2026-11", "2026-11-20T12:34:56.5Z"},
		{"a past month", "2026-10", "2026-11-20T12:34:56.5Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := tm(t, tc.now)
			w, err := LiveWindow(month(t, tc.month), loc, now)
			if err != nil {
				t.Fatal(err)
			}
			want := mustCompute(t, live, w, plans.Plan)
			if want.Totals.Incidents == 0 {
				t.Fatal("the ledger has no incidents in the month: the test proves nothing")
			}

			var export bytes.Buffer
			if err := WriteEvents(&export, Slice(live, w)); err != nil {
				t.Fatal(err)
			}
			replayed, err := ParseEvents(&export)
			if err != nil {
				t.Fatal(err)
			}
			rw := MonthWindow(month(t, tc.month), loc)
			if rw, err = rw.Cut(now); err != nil {
				t.Fatal(err)
			}
			got := mustCompute(t, replayed, rw, plans.Plan)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("replay differs:\n%+v\nlive:\n%+v", got, want)
			}
			var a, b bytes.Buffer
			if err := WriteJSON(&a, want); err != nil {
				t.Fatal(err)
			}
			if err := WriteJSON(&b, got); err != nil {
				t.Fatal(err)
			}
			if a.String() != b.String() {
				t.Errorf("JSON differs")
			}
			for _, name := range []string{"web-1", "edge"} {
				tl1, err1 := Timeline(live, name, w)
				tl2, err2 := Timeline(replayed, name, rw)
				if err1 != nil || err2 != nil || !reflect.DeepEqual(tl1, tl2) {
					t.Errorf("timeline of %s differs: %v %v\n%+v\n%+v", name, err1, err2, tl1, tl2)
				}
			}
		})
	}
	// The crash at 23:50 Berlin time on 31 October went on to 00:20 on
	// 1 November: 10 minutes in October, 20 in November (in UTC all of
	// it is in October).
	for _, tc := range []struct {
		month string
		loc   *time.Location
		want  time.Duration
	}{
		{"2026-10", loc, 10 * time.Minute}, {"2026-11", loc, 20 * time.Minute},
		{"2026-10", time.UTC, 30 * time.Minute}, {"2026-11", time.UTC, 0},
	} {
		r := mustCompute(t, live, MonthWindow(month(t, tc.month), tc.loc), plans.Plan)
		if got := rowOf(t, r, "edge").Downtime.Duration(); got != tc.want {
			t.Errorf("edge in %s %s: downtime %v, want %v", tc.month, tc.loc, got, tc.want)
		}
	}
}
