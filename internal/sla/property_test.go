package sla

import (
	"bytes"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// genMonth draws a month between 2020 and 2030.
func genMonth(t *rapid.T) Month {
	return Month{Year: rapid.IntRange(2020, 2030).Draw(t, "year"), Month: time.Month(rapid.IntRange(1, 12).Draw(t, "month"))}
}

// genLocation draws a time zone: UTC, Berlin (with summer time) or a
// fixed offset.
func genLocation(t *rapid.T, b *time.Location) *time.Location {
	switch rapid.IntRange(0, 2).Draw(t, "zone") {
	case 0:
		return time.UTC
	case 1:
		return b
	}
	return time.FixedZone("X", rapid.IntRange(-12, 14).Draw(t, "offset")*3600)
}

// genEvents draws a valid ledger around month m: up to four instances,
// events from 40 days before the month to 40 days after, at whole
// seconds or nanoseconds. With deletions false nobody is deleted, and an
// instance keeps its customer.
func genEvents(t *rapid.T, m Month, deletions bool) []Event {
	from, _ := m.Bounds(time.UTC)
	base := from.Add(-40 * 24 * time.Hour)
	span := int64(110 * 24 * time.Hour / time.Second)
	n := rapid.IntRange(0, 40).Draw(t, "events")
	offsets := make([]int64, n)
	for i := range offsets {
		offsets[i] = rapid.Int64Range(0, span).Draw(t, "offset")
	}
	slices.Sort(offsets)
	customers := map[string]string{}
	at := map[string]bool{} // instance@time
	var events []Event
	for _, off := range offsets {
		when := base.Add(time.Duration(off) * time.Second)
		if rapid.Bool().Draw(t, "ns") {
			when = when.Add(time.Duration(rapid.IntRange(0, 999999999).Draw(t, "nanos")))
		}
		if len(events) > 0 && when.Before(events[len(events)-1].Time) {
			when = events[len(events)-1].Time
		}
		inst := rapid.SampledFrom([]string{"a", "b", "c", "d"}).Draw(t, "instance")
		key := inst + "@" + when.String()
		if at[key] {
			continue
		}
		at[key] = true
		cust, ok := customers[inst]
		if !ok || deletions && rapid.IntRange(0, 9).Draw(t, "new owner") == 0 {
			cust = rapid.SampledFrom([]string{"", "acme", "beta"}).Draw(t, "customer")
			customers[inst] = cust
		}
		states := []State{Serving, Down, Excluded}
		if deletions {
			states = append(states, Deleted)
		}
		st := rapid.SampledFrom(states).Draw(t, "state")
		var c Cause
		switch st {
		case Down:
			c = rapid.SampledFrom(Causes()).Draw(t, "cause")
		case Excluded:
			c = rapid.SampledFrom([]Cause{CauseCustomerStop, CauseMaintenance}).Draw(t, "cause")
		}
		events = append(events, Event{Time: when, Instance: inst, Customer: cust, State: st, Cause: c})
	}
	return events
}

// genPolicy draws a valid policy.
func genPolicy(t *rapid.T) Policy {
	p := Policy{Name: "p", TargetPercent: rapid.SampledFrom([]float64{90, 99, 99.5, 99.9, 99.95, 99.99, 100}).Draw(t, "target"),
		MonthlyPrice: Money(rapid.Int64Range(0, 1000000).Draw(t, "price"))}
	credit := 0.0
	for _, below := range []float64{100, 99.99, 99.95, 99.9, 99, 95, 50} {
		if rapid.Bool().Draw(t, "tier") {
			credit = min(100, credit+float64(rapid.IntRange(0, 40).Draw(t, "credit")))
			p.Tiers = append(p.Tiers, Tier{BelowPercent: below, CreditPercent: credit})
		}
	}
	return p
}

func TestPropertyReport(t *testing.T) {
	t.Parallel()
	b := berlin(t)
	rapid.Check(t, func(t *rapid.T) {
		m := genMonth(t)
		loc := genLocation(t, b)
		deletions := rapid.Bool().Draw(t, "deletions")
		events := genEvents(t, m, deletions)
		pol := genPolicy(t)
		w := MonthWindow(m, loc)
		if rapid.Bool().Draw(t, "cut") {
			cut := w.From.Add(time.Duration(rapid.Int64Range(1, int64(w.Length())).Draw(t, "cut at")))
			var err error
			if w, err = w.Cut(cut); err != nil {
				t.Fatal(err)
			}
		}
		r, err := Compute(events, w, onePolicy(pol))
		if err != nil {
			t.Fatal(err)
		}

		firsts := map[string]time.Time{}
		for _, e := range events {
			if _, ok := firsts[e.Instance]; !ok {
				firsts[e.Instance] = e.Time
			}
		}
		var sum Summary
		byCustomer := map[string]*Summary{}
		for i := range r.Instances {
			ir := &r.Instances[i]
			// Availability in [0, 1].
			if ir.AvailabilityPercent < 0 || ir.AvailabilityPercent > 100 {
				t.Fatalf("%s: availability %v", ir.Instance, ir.AvailabilityPercent)
			}
			// The states tile the window exactly.
			if ir.Serving+ir.Downtime+ir.Excluded != ir.Window || ir.Window <= 0 || ir.Window.Duration() > w.Length() {
				t.Fatalf("%s: %v + %v + %v != %v (window %v)", ir.Instance, ir.Serving, ir.Downtime, ir.Excluded, ir.Window, w.Length())
			}
			// Without deletions, the window runs from the first event
			// (or the month's start) to the window's end.
			if !deletions {
				start := firsts[ir.Instance]
				if start.Before(w.From) {
					start = w.From
				}
				if want := Seconds(w.To.Sub(start)); ir.Window != want {
					t.Fatalf("%s: window %v, want %v", ir.Instance, ir.Window, want)
				}
			}
			var down Seconds
			var credits Money
			incidents := 0
			for _, c := range ir.IncidentsByCause {
				down += c.Downtime
				incidents += c.Count
			}
			for _, c := range ir.CreditsByCause {
				credits += c
			}
			if down != ir.Downtime || incidents != ir.Incidents || credits != ir.Credit {
				t.Fatalf("%s: causes do not add up: %+v", ir.Instance, ir)
			}
			if ir.Credit < 0 || ir.Credit > ir.MonthlyPrice {
				t.Fatalf("%s: credit %v of %v", ir.Instance, ir.Credit, ir.MonthlyPrice)
			}
			sum.add(ir)
			if byCustomer[ir.Customer] == nil {
				byCustomer[ir.Customer] = &Summary{}
			}
			byCustomer[ir.Customer].add(ir)
		}
		// Totals equal the sums of the rows; customers too.
		sum.finish()
		if !reflect.DeepEqual(sum, r.Totals.Summary) {
			t.Fatalf("totals %+v\nsum of rows %+v", r.Totals.Summary, sum)
		}
		if len(r.Customers) != len(byCustomer) || r.Totals.Customers != len(byCustomer) {
			t.Fatalf("customers %d, want %d", len(r.Customers), len(byCustomer))
		}
		var fromCustomers Summary
		for _, c := range r.Customers {
			want := byCustomer[c.Customer]
			want.finish()
			if !reflect.DeepEqual(*want, c.Summary) {
				t.Fatalf("customer %q: %+v, want %+v", c.Customer, c.Summary, *want)
			}
			fromCustomers.Revenue += c.Revenue
			fromCustomers.Credits += c.Credits
			fromCustomers.Downtime += c.Downtime
		}
		if fromCustomers.Revenue != r.Totals.Revenue || fromCustomers.Credits != r.Totals.Credits || fromCustomers.Downtime != r.Totals.Downtime {
			t.Fatalf("customers do not add up to the totals")
		}

		// The same report twice, and from the events a replay needs.
		again := mustCompute(t, Slice(events, w), w, onePolicy(pol))
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("report of Slice differs:\n%+v\n%+v", r, again)
		}

		// Timelines tile each row too, inside the window, in order.
		tls, err := Timelines(events, w)
		if err != nil {
			t.Fatal(err)
		}
		for _, ir := range r.Instances {
			var serving, down, excl Seconds
			var last time.Time
			for _, iv := range tls[ir.Instance] {
				if iv.Start.Before(w.From) || iv.End.After(w.To) || !iv.End.After(iv.Start) || iv.Start.Before(last) || iv.Duration != Seconds(iv.End.Sub(iv.Start)) {
					t.Fatalf("%s: bad interval %+v", ir.Instance, iv)
				}
				last = iv.End
				if iv.Customer != ir.Customer {
					continue
				}
				switch iv.State {
				case Serving:
					serving += iv.Duration
				case Down:
					down += iv.Duration
				case Excluded:
					excl += iv.Duration
				}
			}
			if serving != ir.Serving || down != ir.Downtime || excl != ir.Excluded {
				t.Fatalf("%s: timeline %v/%v/%v, report %v/%v/%v", ir.Instance, serving, down, excl, ir.Serving, ir.Downtime, ir.Excluded)
			}
		}
	})
}

// TestPropertyMonthSplit: two adjacent months' reports add up to a report
// of a window covering both, in any time zone: an outage crossing
// midnight at the end of a month is split between them, nothing lost or
// counted twice.
func TestPropertyMonthSplit(t *testing.T) {
	t.Parallel()
	b := berlin(t)
	rapid.Check(t, func(t *rapid.T) {
		m := genMonth(t)
		loc := genLocation(t, b)
		events := genEvents(t, m, rapid.Bool().Draw(t, "deletions"))
		plans := onePolicy(Policy{Name: "p", TargetPercent: 99})
		w1, w2 := MonthWindow(m, loc), MonthWindow(m.Next(), loc)
		both := Window{Month: m, From: w1.From, To: w2.To}
		r1 := mustCompute(t, events, w1, plans)
		r2 := mustCompute(t, events, w2, plans)
		rb := mustCompute(t, events, both, plans)
		type key struct{ i, c string }
		sums := map[key][4]Seconds{}
		for _, r := range []*Report{r1, r2} {
			for _, ir := range r.Instances {
				k := key{ir.Instance, ir.Customer}
				s := sums[k]
				sums[k] = [4]Seconds{s[0] + ir.Window, s[1] + ir.Serving, s[2] + ir.Downtime, s[3] + ir.Excluded}
			}
		}
		if len(sums) != len(rb.Instances) {
			t.Fatalf("%d rows over two months, %d over both", len(sums), len(rb.Instances))
		}
		for _, ir := range rb.Instances {
			if got, want := sums[key{ir.Instance, ir.Customer}], [4]Seconds{ir.Window, ir.Serving, ir.Downtime, ir.Excluded}; got != want {
				t.Fatalf("%s: the months add up to %v, both together %v", ir.Instance, got, want)
			}
		}
	})
}

// TestPropertyTimeZone: one outage near a month's end, reported in UTC
// and in Europe/Berlin. In each zone the month's downtime is the part of
// the outage inside that zone's month, and the two months together hold
// all of it.
func TestPropertyTimeZone(t *testing.T) {
	t.Parallel()
	b := berlin(t)
	rapid.Check(t, func(t *rapid.T) {
		m := genMonth(t)
		_, end := m.Bounds(time.UTC)
		start := end.Add(time.Duration(rapid.Int64Range(-6*3600, 6*3600).Draw(t, "start")) * time.Second)
		length := time.Duration(rapid.Int64Range(1, 12*3600*1000).Draw(t, "length ms")) * time.Millisecond
		events := []Event{
			{Time: start.Add(-60 * 24 * time.Hour), Instance: "a", State: Serving},
			{Time: start, Instance: "a", State: Down, Cause: CauseHostFailure},
			{Time: start.Add(length), Instance: "a", State: Serving},
		}
		plans := onePolicy(Policy{Name: "p", TargetPercent: 99})
		for _, loc := range []*time.Location{time.UTC, b} {
			var total time.Duration
			for _, mm := range []Month{m, m.Next()} {
				w := MonthWindow(mm, loc)
				r := mustCompute(t, events, w, plans)
				want := overlap(start, start.Add(length), w.From, w.To)
				var got time.Duration
				incidents := 0
				if len(r.Instances) == 1 {
					got, incidents = r.Instances[0].Downtime.Duration(), r.Instances[0].Incidents
				}
				if got != want || (want > 0) != (incidents == 1) {
					t.Fatalf("%s in %s: downtime %v (%d incidents), want %v", mm, loc, got, incidents, want)
				}
				total += got
			}
			// The outage starts within 6 hours of the UTC month's end and
			// lasts at most 12: with Berlin's 1-2 hour offset it is in
			// these two months.
			if total != length {
				t.Fatalf("%s: the two months hold %v of a %v outage", loc, total, length)
			}
		}
	})
}

func overlap(a0, a1, b0, b1 time.Time) time.Duration {
	s, e := a0, a1
	if b0.After(s) {
		s = b0
	}
	if b1.Before(e) {
		e = b1
	}
	if !e.After(s) {
		return 0
	}
	return e.Sub(s)
}

// TestPropertyEventsRoundTrip: what WriteEvents writes, ParseEvents reads
// back equal.
func TestPropertyEventsRoundTrip(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		events := genEvents(t, genMonth(t), true)
		for i := range events {
			if rapid.IntRange(0, 4).Draw(t, "node?") == 0 {
				events[i].Node = rapid.StringMatching(`[a-z0-9<>&"é -]{1,12}`).Draw(t, "node")
			}
		}
		var b bytes.Buffer
		if err := WriteEvents(&b, events); err != nil {
			t.Fatal(err)
		}
		got, err := ParseEvents(&b)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 0 {
			events = nil
		}
		if !reflect.DeepEqual(got, events) {
			t.Fatalf("round trip:\n%+v\n%+v", got, events)
		}
	})
}

// TestPropertyClassify: whatever the entries, Classify gives valid events
// in which every stop is down or excluded and every excluded period has an
// excusing cause; with no maintenance windows and no customer stops, the
// downtime equals that of the entries.
func TestPropertyClassify(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		m := genMonth(t)
		from, _ := m.Bounds(time.UTC)
		n := rapid.IntRange(0, 30).Draw(t, "entries")
		entries := make([]Entry, n)
		for i := range entries {
			entries[i] = Entry{
				Time:     from.Add(time.Duration(rapid.Int64Range(0, 40*24*3600).Draw(t, "at")) * time.Second),
				Instance: rapid.SampledFrom([]string{"a", "b"}).Draw(t, "instance"),
				Node:     rapid.SampledFrom([]string{"", "n1", "n2"}).Draw(t, "node"),
				Serving:  rapid.Bool().Draw(t, "serving"),
				Cause:    rapid.SampledFrom(append([]Cause{""}, Causes()...)).Draw(t, "cause"),
				Deleted:  rapid.IntRange(0, 9).Draw(t, "deleted") == 0,
			}
		}
		var windows []Maintenance
		for range rapid.IntRange(0, 3).Draw(t, "windows") {
			s := from.Add(time.Duration(rapid.Int64Range(0, 40*24).Draw(t, "start h")) * time.Hour)
			windows = append(windows, Maintenance{Node: rapid.SampledFrom([]string{"n1", "n2"}).Draw(t, "node"), Start: s,
				End: s.Add(time.Duration(rapid.Int64Range(1, 48).Draw(t, "hours")) * time.Hour), AnnouncedAt: s.Add(-time.Duration(rapid.Int64Range(0, 96).Draw(t, "notice")) * time.Hour)})
		}
		events, err := Classify(entries, windows, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckEvents(events); err != nil {
			t.Fatal(err)
		}
		w := MonthWindow(m, time.UTC)
		r := mustCompute(t, events, w, onePolicy(Policy{Name: "p", TargetPercent: 99}))
		if len(windows) == 0 {
			for _, ir := range r.Instances {
				if ex := ir.ExcludedByCause[CauseMaintenance]; ex != 0 {
					t.Fatalf("%s: maintenance excluded with no window: %v", ir.Instance, ex)
				}
			}
		}
	})
}
