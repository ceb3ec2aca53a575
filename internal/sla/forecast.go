package sla

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
	"time"
)

// DefaultForecastMonth is the month length of a forecast: 30 days.
const DefaultForecastMonth = 30 * 24 * time.Hour

// ForecastInput is what a forecast starts from: how often things go wrong
// and what each costs in downtime.
type ForecastInput struct {
	// HostFailuresPerMonth is the rate of host failures per host-month
	// (failures observed / host-months observed). Each instance lives on
	// one host, so it is also the rate at which an instance loses its
	// host.
	HostFailuresPerMonth float64 `json:"host_failures_per_month"`
	// FailoverDowntime is the mean downtime of an instance whose host
	// failed: detection, promotion and boot on the replica's host.
	FailoverDowntime Seconds `json:"failover_downtime_seconds"`
	// MigrationsPerMonth is the rate of migrations per instance-month
	// (drains, rebalancing).
	MigrationsPerMonth float64 `json:"migrations_per_month"`
	// MigrationDowntime is the mean downtime of one migration.
	MigrationDowntime Seconds `json:"migration_downtime_seconds"`
	// Month is the month's length; zero means DefaultForecastMonth.
	Month Seconds `json:"month_seconds"`
}

// ForecastReport is the forecast for each policy, per instance-month.
type ForecastReport struct {
	Input    ForecastInput    `json:"input"`
	Policies []PolicyForecast `json:"policies"`
}

// PolicyForecast is the forecast of one policy for one instance-month.
type PolicyForecast struct {
	Policy        string  `json:"policy"`
	TargetPercent float64 `json:"target_percent"`
	MonthlyPrice  Money   `json:"monthly_price"`
	// ExpectedDowntime is the mean downtime in a month.
	ExpectedDowntime Seconds `json:"expected_downtime_seconds"`
	// ExpectedAvailabilityPercent is 100 × (1 − ExpectedDowntime / month).
	ExpectedAvailabilityPercent float64 `json:"expected_availability_percent"`
	// BreachProbability is the chance that a month ends below the target.
	BreachProbability float64 `json:"breach_probability"`
	// CreditProbability is the chance that a month earns any credit.
	CreditProbability float64 `json:"credit_probability"`
	// ExpectedCreditPercent is the mean credit percentage, and
	// ExpectedCredit that share of MonthlyPrice (in units, not rounded).
	ExpectedCreditPercent float64 `json:"expected_credit_percent"`
	ExpectedCredit        float64 `json:"expected_credit"`
}

// maxRate bounds the rates of a forecast: more than 100 outages a month
// is not a service worth a forecast, and it bounds the sums' terms.
const maxRate = 100

// Forecast estimates, for each policy, the availability and credits of one
// instance-month.
//
// The model: in a month of length T an instance loses its host K times
// and is migrated J times, K ~ Poisson(HostFailuresPerMonth) and J ~
// Poisson(MigrationsPerMonth), independent; every failover costs
// FailoverDowntime and every migration MigrationDowntime, so the downtime
// is D = K·FailoverDowntime + J·MigrationDowntime (at most T) and the
// availability A = 1 − D/T, with no excluded time. Then
//
//	E[credit %] = Σ_k Σ_j P(K=k)·P(J=j)·credit%(A(k, j))
//
// where credit% is the policy's tier for A, compared exactly as Compute
// does; the breach and credit probabilities are the same sums of
// indicators. Each sum runs over k up to λ + 12√λ + 20 (and at most until
// D reaches T); the neglected tail, below 1e-12, is counted at the last
// term, which errs towards more credit. Outages are taken at their mean
// length: variance in a single outage's length is not modelled.
func Forecast(in ForecastInput, policies []Policy) (*ForecastReport, error) {
	month := in.Month.Duration()
	if month == 0 {
		month = DefaultForecastMonth
		in.Month = Seconds(month)
	}
	switch {
	case !(in.HostFailuresPerMonth >= 0 && in.HostFailuresPerMonth <= maxRate):
		return nil, fmt.Errorf("host failures per month: %s is not a rate from 0 to %d", fmtFloat(in.HostFailuresPerMonth), maxRate)
	case !(in.MigrationsPerMonth >= 0 && in.MigrationsPerMonth <= maxRate):
		return nil, fmt.Errorf("migrations per month: %s is not a rate from 0 to %d", fmtFloat(in.MigrationsPerMonth), maxRate)
	case in.FailoverDowntime < 0:
		return nil, fmt.Errorf("failover downtime: %s is negative", in.FailoverDowntime)
	case in.MigrationDowntime < 0:
		return nil, fmt.Errorf("migration downtime: %s is negative", in.MigrationDowntime)
	case month < time.Hour:
		return nil, fmt.Errorf("month: %s is shorter than an hour", in.Month)
	case len(policies) == 0:
		return nil, errors.New("no policy to forecast")
	}
	for i := range policies {
		if err := policies[i].Validate(); err != nil {
			return nil, err
		}
	}
	fails := poisson(in.HostFailuresPerMonth, in.FailoverDowntime.Duration(), month)
	migs := poisson(in.MigrationsPerMonth, in.MigrationDowntime.Duration(), month)

	out := &ForecastReport{Input: in, Policies: make([]PolicyForecast, 0, len(policies))}
	for i := range policies {
		p := &policies[i]
		var down, pct, breach, credit float64
		for k, pk := range fails {
			for j, pj := range migs {
				pr := pk * pj
				d := addCap(mulCap(in.FailoverDowntime.Duration(), k, month), mulCap(in.MigrationDowntime.Duration(), j, month), month)
				serving := month - d
				down += pr * float64(d)
				c := p.CreditPercent(serving, month)
				pct += pr * c
				if p.Breached(serving, month) {
					breach += pr
				}
				if c > 0 {
					credit += pr
				}
			}
		}
		out.Policies = append(out.Policies, PolicyForecast{
			Policy: p.Name, TargetPercent: p.TargetPercent, MonthlyPrice: p.MonthlyPrice,
			ExpectedDowntime:            Seconds(math.Round(down)),
			ExpectedAvailabilityPercent: 100 * (1 - down/float64(month)),
			BreachProbability:           clamp01(breach),
			CreditProbability:           clamp01(credit),
			ExpectedCreditPercent:       pct,
			ExpectedCredit:              p.MonthlyPrice.Float() * pct / 100,
		})
	}
	return out, nil
}

// poisson returns P(N = k) for k = 0, 1, ... of N ~ Poisson(lambda), with
// the tail beyond the last term added to it. The terms stop early once k
// outages of length each fill the month (all later ones look the same).
func poisson(lambda float64, each, month time.Duration) []float64 {
	if lambda == 0 {
		return []float64{1}
	}
	last := int(math.Ceil(lambda + 12*math.Sqrt(lambda) + 20))
	if each > 0 {
		last = min(last, int(month/each)+1)
	}
	p := make([]float64, last+1)
	sum := 0.0
	for k := range p {
		p[k] = math.Exp(-lambda + float64(k)*math.Log(lambda) - lgamma(k+1))
		sum += p[k]
	}
	p[last] += max(0, 1-sum)
	return p
}

func lgamma(n int) float64 {
	v, _ := math.Lgamma(float64(n))
	return v
}

// mulCap is d·k, at most limit.
func mulCap(d time.Duration, k int, limit time.Duration) time.Duration {
	if k == 0 || d == 0 {
		return 0
	}
	if d >= limit || time.Duration(k) > limit/d {
		return limit
	}
	return min(d*time.Duration(k), limit)
}

// addCap is a+b, at most limit.
func addCap(a, b, limit time.Duration) time.Duration {
	if a >= limit-b {
		return limit
	}
	return a + b
}

func clamp01(f float64) float64 { return min(max(f, 0), 1) }

// WriteForecastText writes a forecast for a terminal: the inputs, then a
// row per policy.
func WriteForecastText(w io.Writer, f *ForecastReport) error {
	in := f.Input
	fmt.Fprintf(w, "Per instance and %s month: host failures %s (%s each), migrations %s (%s each)\n\n",
		FormatDuration(in.Month.Duration()), fmtFloat(in.HostFailuresPerMonth), FormatDuration(in.FailoverDowntime.Duration()),
		fmtFloat(in.MigrationsPerMonth), FormatDuration(in.MigrationDowntime.Duration()))
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tTARGET\tEXPECTED DOWNTIME\tEXPECTED AVAILABILITY\tP(BREACH)\tP(CREDIT)\tEXPECTED CREDIT")
	for _, p := range f.Policies {
		fmt.Fprintf(tw, "%s\t%s%%\t%s\t%s\t%s\t%s\t%s (%s%% of %s)\n", clean(p.Policy), fmtFloat(p.TargetPercent),
			FormatDuration(p.ExpectedDowntime.Duration()), FormatPercent(p.ExpectedAvailabilityPercent),
			probability(p.BreachProbability), probability(p.CreditProbability),
			strconv.FormatFloat(p.ExpectedCredit, 'f', 2, 64), strconv.FormatFloat(p.ExpectedCreditPercent, 'f', 3, 64), p.MonthlyPrice)
	}
	return tw.Flush()
}

// probability writes a probability as a percentage with enough digits to
// tell small ones apart: "12.3%", "0.0041%".
func probability(p float64) string {
	switch {
	case p == 0:
		return "0%"
	case p >= 0.001:
		return strconv.FormatFloat(100*p, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(100*p, 'g', 2, 64) + "%"
}
