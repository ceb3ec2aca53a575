package sla

import (
	"strings"
	"time"
	_ "time/tzdata" // Europe/Berlin, whatever the test machine has
)

// tb is what the helpers need of a *testing.T, a *testing.F or a
// *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// goldJSON is the policy of the issue.
const goldJSON = `{"name":"gold","target_percent":99.95,"window":"month","monthly_price":100,"tiers":[{"below_percent":99.95,"credit_percent":10},{"below_percent":99,"credit_percent":25},{"below_percent":95,"credit_percent":100}]}`

func gold(t tb) Policy {
	t.Helper()
	p, err := ParsePolicy(strings.NewReader(goldJSON))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// onePolicy is a PlanFunc giving every instance p at its price.
func onePolicy(p Policy) PlanFunc {
	return func(string, string) (Plan, error) { return Plan{Policy: p, MonthlyPrice: p.MonthlyPrice}, nil }
}

func tm(t tb, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v.UTC()
}

func month(t tb, s string) Month {
	t.Helper()
	m, err := ParseMonth(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func berlin(t tb) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// ev builds an event.
func ev(t tb, at, instance, customer string, st State, c Cause) Event {
	t.Helper()
	return Event{Time: tm(t, at), Instance: instance, Customer: customer, State: st, Cause: c}
}

func mustCompute(t tb, events []Event, w Window, plans PlanFunc) *Report {
	t.Helper()
	r, err := Compute(events, w, plans)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rowOf returns the report's row of instance.
func rowOf(t tb, r *Report, instance string) InstanceReport {
	t.Helper()
	for _, ir := range r.Instances {
		if ir.Instance == instance {
			return ir
		}
	}
	t.Fatalf("no row for %s in %+v", instance, r.Instances)
	return InstanceReport{}
}
