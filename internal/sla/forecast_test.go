package sla

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestForecast(t *testing.T) {
	t.Parallel()
	g := gold(t)
	silver := Policy{Name: "silver", TargetPercent: 99, MonthlyPrice: 5000, Tiers: []Tier{{99, 10}}}
	near := func(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

	t.Run("nothing goes wrong", func(t *testing.T) {
		t.Parallel()
		f, err := Forecast(ForecastInput{}, []Policy{g})
		if err != nil {
			t.Fatal(err)
		}
		p := f.Policies[0]
		if p.ExpectedAvailabilityPercent != 100 || p.ExpectedCredit != 0 || p.BreachProbability != 0 || p.ExpectedDowntime != 0 {
			t.Errorf("forecast = %+v", p)
		}
		if f.Input.Month != Seconds(DefaultForecastMonth) {
			t.Errorf("month = %v", f.Input.Month)
		}
	})
	t.Run("one failure a month of 22 minutes", func(t *testing.T) {
		t.Parallel()
		// Any failure (P = 1 − e⁻¹) brings a 30-day month below
		// 99.95 % (one is 99.949 %): 10 %. Below 99 % takes 20
		// failures, which a Poisson(1) law all but never gives.
		f, err := Forecast(ForecastInput{HostFailuresPerMonth: 1, FailoverDowntime: Seconds(22 * time.Minute)}, []Policy{g, silver})
		if err != nil {
			t.Fatal(err)
		}
		p := f.Policies[0]
		pAny := 1 - math.Exp(-1)
		if !near(p.ExpectedCreditPercent, 10*pAny, 1e-9) || !near(p.ExpectedCredit, 10*pAny, 1e-9) ||
			!near(p.BreachProbability, pAny, 1e-9) || !near(p.CreditProbability, pAny, 1e-9) {
			t.Errorf("gold = %+v, want credit %% %v", p, 10*pAny)
		}
		if d := p.ExpectedDowntime.Duration(); d < 22*time.Minute-time.Microsecond || d > 22*time.Minute+time.Microsecond {
			t.Errorf("expected downtime %v, want 22m", d)
		}
		if !near(p.ExpectedAvailabilityPercent, 100*(1-1320.0/2592000), 1e-9) {
			t.Errorf("expected availability %v", p.ExpectedAvailabilityPercent)
		}
		// Silver: below 99 % takes 20 failures.
		if s := f.Policies[1]; s.ExpectedCredit > 1e-12 || s.BreachProbability > 1e-15 {
			t.Errorf("silver = %+v", s)
		}
		var b bytes.Buffer
		if err := WriteForecastText(&b, f); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"host failures 1 (22m each)", "gold     99.95%   22m                 99.949%                 63.2%       63.2%       6.32 (6.321% of 100.00)"} {
			if !strings.Contains(b.String(), s) {
				t.Errorf("text lacks %q:\n%s", s, b.String())
			}
		}
	})
	t.Run("failovers and migrations", func(t *testing.T) {
		t.Parallel()
		in := ForecastInput{HostFailuresPerMonth: 0.05, FailoverDowntime: Seconds(8 * time.Second),
			MigrationsPerMonth: 2, MigrationDowntime: Seconds(500 * time.Millisecond)}
		f, err := Forecast(in, []Policy{g})
		if err != nil {
			t.Fatal(err)
		}
		p := f.Policies[0]
		if d := p.ExpectedDowntime.Duration(); d < 1400*time.Millisecond-time.Microsecond || d > 1400*time.Millisecond+time.Microsecond {
			t.Errorf("expected downtime %v, want 1.4s", d)
		}
		if p.ExpectedCredit != 0 {
			t.Errorf("seconds of downtime earned credit: %+v", p)
		}
	})
	t.Run("many failures", func(t *testing.T) {
		t.Parallel()
		f, err := Forecast(ForecastInput{HostFailuresPerMonth: 100, FailoverDowntime: Seconds(24 * time.Hour)}, []Policy{g})
		if err != nil {
			t.Fatal(err)
		}
		if p := f.Policies[0]; !near(p.ExpectedCreditPercent, 100, 1e-9) || !near(p.ExpectedAvailabilityPercent, 0, 1e-6) {
			t.Errorf("forecast = %+v", p)
		}
	})
	for _, in := range []ForecastInput{
		{HostFailuresPerMonth: -1}, {HostFailuresPerMonth: math.NaN()}, {MigrationsPerMonth: 101},
		{FailoverDowntime: -1}, {MigrationDowntime: -1}, {Month: Seconds(time.Minute)},
	} {
		if _, err := Forecast(in, []Policy{g}); err == nil {
			t.Errorf("Forecast(%+v) succeeded", in)
		}
	}
	if _, err := Forecast(ForecastInput{}, nil); err == nil {
		t.Error("no policies accepted")
	}
}
