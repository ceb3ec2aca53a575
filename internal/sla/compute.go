package sla

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"time"
)

// Report is the SLA report of one window: a row per instance (and
// customer), totals per customer, and the provider's totals. Compute makes
// it; its JSON form is what `ferry sla report --json` and `ferry sla
// replay --json` print. Rows are sorted by instance then customer,
// customers by name; maps are written with sorted keys, so the JSON is
// deterministic.
type Report struct {
	// Month is the calendar month, TimeZone the zone it is taken in.
	Month    Month  `json:"month"`
	TimeZone string `json:"time_zone"`
	// From and To bound the window: [From, To), in TimeZone. To is
	// before the month's end in a live report of the current month.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// GeneratedAt is when the report was made. Compute leaves it zero
	// (and then it is not written) so that a replay reproduces a live
	// report exactly; callers may set it.
	GeneratedAt time.Time        `json:"generated_at,omitzero"`
	Instances   []InstanceReport `json:"instances"`
	Customers   []CustomerReport `json:"customers"`
	Totals      Totals           `json:"totals"`
}

// InstanceReport is one row: an instance, owned by one customer, over the
// part of the window it was in the ledger.
type InstanceReport struct {
	Instance string `json:"instance"`
	Customer string `json:"customer"`
	// Policy, TargetPercent and MonthlyPrice come from the instance's
	// Plan.
	Policy        string  `json:"policy"`
	TargetPercent float64 `json:"target_percent"`
	MonthlyPrice  Money   `json:"monthly_price"`
	// Window is how long the instance was in the ledger within the
	// report's window; Serving + Downtime + Excluded == Window exactly.
	Window   Seconds `json:"window_seconds"`
	Serving  Seconds `json:"serving_seconds"`
	Downtime Seconds `json:"downtime_seconds"`
	Excluded Seconds `json:"excluded_seconds"`
	// AvailabilityPercent is 100 × Serving / (Window − Excluded), or
	// 100 when that is zero (all the time was excluded).
	AvailabilityPercent float64 `json:"availability_percent"`
	// Breach says the availability is below TargetPercent.
	Breach bool `json:"breach"`
	// Incidents counts the periods down for one cause (see
	// IncidentsByCause); an incident that crosses the window's edge
	// counts in both months, with its length split.
	Incidents        int                  `json:"incidents"`
	IncidentsByCause map[Cause]CauseTotal `json:"incidents_by_cause,omitempty"`
	ExcludedByCause  map[Cause]Seconds    `json:"excluded_by_cause,omitempty"`
	// CreditPercent is the percentage of the lowest tier reached, and
	// Credit that share of MonthlyPrice, to the cent.
	CreditPercent float64 `json:"credit_percent"`
	Credit        Money   `json:"credit"`
	// CreditsByCause splits Credit among the causes of the downtime in
	// proportion to their downtime, to the cent (largest remainders);
	// it sums to Credit exactly.
	CreditsByCause map[Cause]Money `json:"credits_by_cause,omitempty"`
}

// CauseTotal is the number of incidents of one cause and their length.
type CauseTotal struct {
	Count    int     `json:"count"`
	Downtime Seconds `json:"downtime_seconds"`
}

// Summary is what a customer's totals and the provider's have in common:
// sums over rows, and the availability of the summed time.
type Summary struct {
	// Instances counts the rows summed.
	Instances int `json:"instances"`
	// Revenue sums the rows' MonthlyPrice: every instance in the
	// report is billed its full monthly price (no pro-rating).
	Revenue  Money   `json:"revenue"`
	Credits  Money   `json:"credits"`
	Window   Seconds `json:"window_seconds"`
	Serving  Seconds `json:"serving_seconds"`
	Downtime Seconds `json:"downtime_seconds"`
	Excluded Seconds `json:"excluded_seconds"`
	// AvailabilityPercent is that of the summed time: 100 × Serving /
	// (Window − Excluded), or 100.
	AvailabilityPercent float64              `json:"availability_percent"`
	Breaches            int                  `json:"breaches"`
	Incidents           int                  `json:"incidents"`
	IncidentsByCause    map[Cause]CauseTotal `json:"incidents_by_cause,omitempty"`
	CreditsByCause      map[Cause]Money      `json:"credits_by_cause,omitempty"`
}

// CustomerReport is the totals of one customer's rows.
type CustomerReport struct {
	Customer string `json:"customer"`
	Summary
}

// Totals is the provider's view: the sums of every row, and each cause's
// share of the credits (so the provider sees what failovers cost against
// migrations).
type Totals struct {
	Summary
	// Customers counts the distinct customers.
	Customers int `json:"customers"`
	// CreditSharePercent is each cause's share of Credits, in percent.
	CreditSharePercent map[Cause]float64 `json:"credit_share_percent,omitempty"`
}

// segment is a stretch of one instance's time in one state, clipped to
// the window.
type segment struct {
	customer   string
	state      State
	cause      Cause
	start, end time.Time
}

// ledger cuts events into each instance's segments within w, in time
// order. Deleted time is left out. events must pass CheckEvents.
func ledger(events []Event, w Window) map[string][]segment {
	byInst := make(map[string][]int)
	for i := range events {
		byInst[events[i].Instance] = append(byInst[events[i].Instance], i)
	}
	out := make(map[string][]segment, len(byInst))
	for inst, idx := range byInst {
		var segs []segment
		for k, i := range idx {
			e := &events[i]
			if e.State == Deleted {
				continue
			}
			start, end := e.Time, w.To
			if k+1 < len(idx) && events[idx[k+1]].Time.Before(end) {
				end = events[idx[k+1]].Time
			}
			if start.Before(w.From) {
				start = w.From
			}
			if !start.Before(end) {
				continue
			}
			segs = append(segs, segment{customer: e.Customer, state: e.State, cause: e.Cause,
				start: start.In(w.Location()), end: end.In(w.Location())})
		}
		if len(segs) > 0 {
			out[inst] = segs
		}
	}
	return out
}

// row accumulates one InstanceReport.
type row struct {
	serving, down, excluded time.Duration
	downBy                  map[Cause]time.Duration
	countBy                 map[Cause]int
	exclBy                  map[Cause]time.Duration
	incidents               int
	last                    *segment
}

// Compute makes the report of window w from events (which must pass
// CheckEvents; their order is that of time). plans gives each instance's
// policy and price; an error from it, or an invalid policy, is returned
// naming the instance. Compute is deterministic and safe for concurrent
// use; it keeps no reference to its arguments.
//
// Each instance is in the report for the part of w it was in the ledger:
// from its first event (an event before w gives its state when w begins)
// to w.To or its deletion. That time is cut into serving, down and
// excluded time, which add up to the row's window exactly. A live report
// of the current month takes w from LiveWindow, which ends it at now, so
// the month's remaining days are not assumed to be serving.
func Compute(events []Event, w Window, plans PlanFunc) (*Report, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	if plans == nil {
		return nil, errors.New("no plans: give Compute a PlanFunc")
	}
	if err := CheckEvents(events); err != nil {
		return nil, err
	}
	type key struct{ instance, customer string }
	rows := make(map[key]*row)
	for inst, segs := range ledger(events, w) {
		for i := range segs {
			s := &segs[i]
			k := key{inst, s.customer}
			r := rows[k]
			if r == nil {
				r = &row{downBy: map[Cause]time.Duration{}, countBy: map[Cause]int{}, exclBy: map[Cause]time.Duration{}}
				rows[k] = r
			}
			d := s.end.Sub(s.start)
			switch s.state {
			case Serving:
				r.serving += d
			case Down:
				r.down += d
				r.downBy[s.cause] += d
				if p := r.last; p == nil || p.state != Down || p.cause != s.cause || !p.end.Equal(s.start) {
					r.countBy[s.cause]++
					r.incidents++
				}
			case Excluded:
				r.excluded += d
				r.exclBy[s.cause] += d
			}
			r.last = s
		}
	}

	keys := slices.SortedFunc(maps.Keys(rows), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.instance, b.instance), cmp.Compare(a.customer, b.customer))
	})
	rep := &Report{
		Month: w.Month, TimeZone: w.Location().String(), From: w.From, To: w.To,
		Instances: make([]InstanceReport, 0, len(keys)),
		Customers: []CustomerReport{},
	}
	for _, k := range keys {
		r := rows[k]
		plan, err := plans(k.instance, k.customer)
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", k.instance, err)
		}
		if err := plan.Policy.Validate(); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, fmt.Errorf("instance %q: policy %q: %s: %w", k.instance, plan.Policy.Name, e.Field, e.Err)
			}
			return nil, fmt.Errorf("instance %q: policy %q: %w", k.instance, plan.Policy.Name, err)
		}
		if plan.MonthlyPrice < 0 || plan.MonthlyPrice > MaxMoney {
			return nil, fmt.Errorf("instance %q: monthly price %s is not from 0 to %s", k.instance, plan.MonthlyPrice, MaxMoney)
		}
		counted := r.serving + r.down
		ir := InstanceReport{
			Instance: k.instance, Customer: k.customer,
			Policy: plan.Policy.Name, TargetPercent: plan.Policy.TargetPercent, MonthlyPrice: plan.MonthlyPrice,
			Window: Seconds(r.serving + r.down + r.excluded), Serving: Seconds(r.serving),
			Downtime: Seconds(r.down), Excluded: Seconds(r.excluded),
			AvailabilityPercent: percent(r.serving, counted),
			Breach:              plan.Policy.Breached(r.serving, counted),
			Incidents:           r.incidents,
			CreditPercent:       plan.Policy.CreditPercent(r.serving, counted),
		}
		for c, n := range r.countBy {
			if ir.IncidentsByCause == nil {
				ir.IncidentsByCause = make(map[Cause]CauseTotal)
			}
			ir.IncidentsByCause[c] = CauseTotal{Count: n, Downtime: Seconds(r.downBy[c])}
		}
		for c, d := range r.exclBy {
			if ir.ExcludedByCause == nil {
				ir.ExcludedByCause = make(map[Cause]Seconds)
			}
			ir.ExcludedByCause[c] = Seconds(d)
		}
		ir.Credit = creditOf(plan.MonthlyPrice, ir.CreditPercent)
		ir.CreditsByCause = splitCredit(ir.Credit, r.downBy)
		rep.Instances = append(rep.Instances, ir)
	}

	byCustomer := make(map[string]*CustomerReport)
	for i := range rep.Instances {
		ir := &rep.Instances[i]
		c := byCustomer[ir.Customer]
		if c == nil {
			c = &CustomerReport{Customer: ir.Customer}
			byCustomer[ir.Customer] = c
		}
		c.add(ir)
		rep.Totals.add(ir)
	}
	for _, name := range slices.Sorted(maps.Keys(byCustomer)) {
		c := byCustomer[name]
		c.finish()
		rep.Customers = append(rep.Customers, *c)
	}
	rep.Totals.finish()
	rep.Totals.Customers = len(rep.Customers)
	if rep.Totals.Credits > 0 {
		rep.Totals.CreditSharePercent = make(map[Cause]float64)
		for c, m := range rep.Totals.CreditsByCause {
			rep.Totals.CreditSharePercent[c] = 100 * float64(m) / float64(rep.Totals.Credits)
		}
	}
	return rep, nil
}

// percent is 100 × serving / counted, or 100 when counted is zero.
func percent(serving, counted time.Duration) float64 {
	if counted <= 0 || serving >= counted {
		return 100
	}
	// Rounding could take 100·s/c just past its bounds.
	return min(max(100*float64(serving)/float64(counted), 0), 100)
}

// add sums a row into s.
func (s *Summary) add(ir *InstanceReport) {
	s.Instances++
	s.Revenue += ir.MonthlyPrice
	s.Credits += ir.Credit
	s.Window += ir.Window
	s.Serving += ir.Serving
	s.Downtime += ir.Downtime
	s.Excluded += ir.Excluded
	s.Incidents += ir.Incidents
	if ir.Breach {
		s.Breaches++
	}
	for c, t := range ir.IncidentsByCause {
		if s.IncidentsByCause == nil {
			s.IncidentsByCause = make(map[Cause]CauseTotal)
		}
		u := s.IncidentsByCause[c]
		u.Count += t.Count
		u.Downtime += t.Downtime
		s.IncidentsByCause[c] = u
	}
	for c, m := range ir.CreditsByCause {
		if s.CreditsByCause == nil {
			s.CreditsByCause = make(map[Cause]Money)
		}
		s.CreditsByCause[c] += m
	}
}

// finish computes what is not a sum.
func (s *Summary) finish() {
	s.AvailabilityPercent = percent(s.Serving.Duration(), (s.Serving + s.Downtime).Duration())
}

// splitCredit shares credit among causes in proportion to their downtime,
// to the cent: each gets the floor of its share, and the cents left go to
// the largest remainders (ties to the cause first in Causes). The parts sum
// to credit exactly. Credit with no downtime (impossible with valid tiers)
// goes to CauseUnknown.
func splitCredit(credit Money, downBy map[Cause]time.Duration) map[Cause]Money {
	if credit <= 0 {
		return nil
	}
	var total time.Duration
	causes := slices.SortedFunc(maps.Keys(downBy), func(a, b Cause) int { return causeIndex(a) - causeIndex(b) })
	for _, c := range causes {
		total += downBy[c]
	}
	if total <= 0 {
		return map[Cause]Money{CauseUnknown: credit}
	}
	out := make(map[Cause]Money, len(causes))
	rems := make([]*big.Int, len(causes))
	left := credit
	bigTotal := big.NewInt(int64(total))
	for i, c := range causes {
		q, r := new(big.Int).QuoRem(new(big.Int).Mul(big.NewInt(int64(credit)), big.NewInt(int64(downBy[c]))), bigTotal, new(big.Int))
		out[c] = Money(q.Int64())
		rems[i] = r
		left -= out[c]
	}
	order := make([]int, len(causes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return -rems[a].Cmp(rems[b]) })
	for i := 0; left > 0; i++ {
		out[causes[order[i%len(order)]]]++
		left--
	}
	for c, m := range out {
		if m == 0 {
			delete(out, c)
		}
	}
	return out
}
