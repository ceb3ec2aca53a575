package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/sla"
	"github.com/spf13/cobra"
)

func (a *app) newSLACmd() *cobra.Command {
	cmd := newGroup("sla", "Availability, incidents and credits against SLA policies")
	cmd.Long = `Measure each instance's availability per calendar month against its SLA
policy: serving time / (month - excluded time), the incidents by cause, and the
credit owed by the policy's tiers; totals per customer and for the provider
(revenue, credits, and which causes the credits went to).

policy, assign, unassign, assignments, report, incidents and export work on
the cluster's ledger (see also ` + "`ferry maintenance`" + `). replay works offline, on
files, with no server contacted; so does forecast when given its rates.`
	cmd.AddCommand(a.newSLAReplayCmd(), a.newSLAForecastCmd())
	cmd.AddCommand(a.newSLALiveCmds()...)
	return cmd
}

// slaFormats are the output flags of a report.
type slaFormats struct {
	csv bool
	svg string
}

func (a *app) newSLAReplayCmd() *cobra.Command {
	var (
		policies []string
		assigns  []string
		monthArg string
		tz       string
		until    string
		price    string
		out      slaFormats
	)
	cmd := &cobra.Command{
		Use:   "replay EVENTS --policy POLICY --month YYYY-MM",
		Short: "Compute an SLA report offline from an events file (audits, disputes, what-if)",
		Long: `Compute the SLA report of one month from files, with no cluster: for audits,
customer disputes and what-if questions (any month, even one still to come).
It is the report ` + "`ferry sla report`" + ` makes, and a replay of ` + "`ferry sla export`" + `
reproduces it exactly. A live report of the current month ends when it is made;
give that time as --until to reproduce it, or the replay takes every instance
to stay in its last state until the month ends.

EVENTS is JSON lines ("-" for standard input), one state change each, sorted by
time:

  {"time":"2026-02-28T23:50:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure"}

state is serving, down, excluded (not counted: the cause says customer-stop or
maintenance) or deleted; cause is one of host-failure, failover, migration,
crash, guest-not-answering, customer-stop, maintenance, unknown (required when
down); "node" may name the host. An instance is in the ledger from its first
event (events before the month give its state when the month begins).

POLICY is JSON:

  {"name":"gold","target_percent":99.95,"window":"month","monthly_price":100,
   "tiers":[{"below_percent":99.95,"credit_percent":10},
            {"below_percent":99,"credit_percent":25},
            {"below_percent":95,"credit_percent":100}]}

The lowest tier whose below_percent the availability is under applies.
--policy may be repeated: the first one applies to every instance that
--assign does not give another. Every instance is billed its full monthly
price (the policy's, or --price).`,
		Example: `  ferry sla replay events.jsonl --policy gold.json --month 2026-02
  ferry sla export --month 2026-02 | ferry sla replay - --policy gold.json --month 2026-02 --json
  ferry sla replay events.jsonl --policy gold.json --policy silver.json --assign customer:acme=silver --month 2026-02 --csv
  ferry sla replay events.jsonl --policy gold.json --month 2026-03 --tz Europe/Berlin --svg march.svg`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch len(args) {
			case 1:
				return nil
			case 0:
				return withHint(errors.New(`missing the EVENTS file (JSON lines; "-" for standard input)`), usageHint(cmd))
			}
			return withHint(fmt.Errorf("expected one EVENTS file, got %d arguments: %s", len(args), strings.Join(args, " ")), usageHint(cmd))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(a.g.JSON); err != nil {
				return err
			}
			w, err := reportWindow(monthArg, tz, until)
			if err != nil {
				return err
			}
			pols, err := readPolicies(policies, args[0], a.stdin())
			if err != nil {
				return err
			}
			plans, err := planFlags(pols, assigns, price)
			if err != nil {
				return err
			}
			events, err := readEvents(args[0], a.stdin())
			if err != nil {
				return err
			}
			rep, err := sla.Compute(events, w, plans)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return a.writeReport(rep, events, w, out)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&policies, "policy", nil, "policy JSON file (repeatable; the first is the default; - for standard input)")
	fl.StringArrayVar(&assigns, "assign", nil, "give an instance or a customer another --policy, and optionally its own monthly price: instance:NAME=POLICY[@PRICE] or customer:NAME=POLICY[@PRICE] (repeatable)")
	fl.StringVar(&monthArg, "month", "", "the calendar month, YYYY-MM")
	fl.StringVar(&tz, "tz", "UTC", "time zone the month is taken in, e.g. Europe/Berlin")
	fl.StringVar(&until, "until", "", "end the report at this RFC 3339 time, as a live report of the current month ends at its making")
	fl.StringVar(&price, "price", "", "monthly price of every instance, instead of the policies' monthly_price")
	out.bind(cmd)
	return cmd
}

// bind adds the output flags.
func (f *slaFormats) bind(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.csv, "csv", false, "print the report as CSV: a row per instance, per customer and the total")
	cmd.Flags().StringVar(&f.svg, "svg", "", "also draw the report as an SVG chart into this file")
}

// check refuses two output formats at once.
func (f *slaFormats) check(json bool) error {
	if f.csv && json {
		return &flagError{flag: "--csv", msg: "cannot be combined with --json: choose one output format"}
	}
	if f.svg == "-" {
		return &flagError{flag: "--svg", msg: "give a file name: standard output carries the report"}
	}
	return nil
}

// writeReport prints rep in the chosen format and draws the chart.
func (a *app) writeReport(rep *sla.Report, events []sla.Event, w sla.Window, out slaFormats) error {
	if out.svg != "" {
		tls, err := sla.Timelines(events, w)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := sla.RenderSVG(&b, rep, tls); err != nil {
			return err
		}
		if err := os.WriteFile(out.svg, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--svg: %w", err)
		}
	}
	var err error
	switch {
	case a.g.JSON:
		err = sla.WriteJSON(a.stdout(), rep)
	case out.csv:
		err = sla.WriteCSV(a.stdout(), rep)
	default:
		err = sla.WriteText(a.stdout(), rep)
		if err == nil && out.svg != "" {
			fmt.Fprintf(a.stdout(), "\nchart written to %s\n", out.svg)
		}
	}
	return err
}

// reportWindow reads --month, --tz and --until.
func reportWindow(monthArg, tz, until string) (sla.Window, error) {
	if monthArg == "" {
		return sla.Window{}, &flagError{flag: "--month", msg: "required: give the calendar month, e.g. --month 2026-02"}
	}
	m, err := sla.ParseMonth(monthArg)
	if err != nil {
		return sla.Window{}, &flagError{flag: "--month", msg: err.Error(), err: err}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil || tz == "" {
		return sla.Window{}, &flagError{flag: "--tz", msg: fmt.Sprintf("unknown time zone %q: give an IANA name such as Europe/Berlin, or UTC", tz), err: err}
	}
	w := sla.MonthWindow(m, loc)
	if until != "" {
		t, err := time.Parse(time.RFC3339Nano, until)
		if err != nil {
			return sla.Window{}, &flagError{flag: "--until", msg: fmt.Sprintf("%q is not an RFC 3339 time such as 2026-02-14T12:00:00Z", until), err: err}
		}
		cut, err := w.Cut(t)
		if err != nil {
			return sla.Window{}, &flagError{flag: "--until", msg: fmt.Sprintf("%s is not after the start of %s (%s)", until, m, w.From.Format(time.RFC3339)), err: err}
		}
		w = cut
	}
	return w, nil
}

// openArg opens a file argument; "-" is standard input.
func openArg(path string, stdin io.Reader) (io.ReadCloser, error) {
	if path == "-" {
		return io.NopCloser(stdin), nil
	}
	return os.Open(path)
}

// readEvents reads the EVENTS argument.
func readEvents(path string, stdin io.Reader) ([]sla.Event, error) {
	f, err := openArg(path, stdin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	events, err := sla.ParseEvents(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return events, nil
}

// readPolicies reads the --policy files, in order. eventsPath is the
// events argument, which may also claim standard input.
func readPolicies(paths []string, eventsPath string, stdin io.Reader) ([]sla.Policy, error) {
	if len(paths) == 0 {
		return nil, &flagError{flag: "--policy", msg: "required: give a policy JSON file, e.g. --policy gold.json (see --help for the format)"}
	}
	var out []sla.Policy
	seen := map[string]string{}
	stdinUsed := eventsPath == "-"
	for _, path := range paths {
		if path == "-" {
			if stdinUsed {
				return nil, &flagError{flag: "--policy", msg: "standard input (-) can be read only once"}
			}
			stdinUsed = true
		}
		f, err := openArg(path, stdin)
		if err != nil {
			return nil, &flagError{flag: "--policy", msg: err.Error(), err: err}
		}
		p, err := sla.ParsePolicy(f)
		f.Close()
		if err != nil {
			return nil, &flagError{flag: "--policy " + path, msg: err.Error(), err: err}
		}
		if other, dup := seen[p.Name]; dup {
			return nil, &flagError{flag: "--policy " + path, msg: fmt.Sprintf("policy %q is also defined by %s: give each policy a name of its own", p.Name, other)}
		}
		seen[p.Name] = path
		out = append(out, p)
	}
	return out, nil
}

// planFlags builds the plans of --policy, --assign and --price.
func planFlags(pols []sla.Policy, assigns []string, price string) (sla.PlanFunc, error) {
	plans := &sla.Plans{Policies: map[string]sla.Policy{}, Default: pols[0].Name,
		Instances: map[string]sla.Assignment{}, Customers: map[string]sla.Assignment{}}
	var names []string
	for _, p := range pols {
		plans.Policies[p.Name] = p
		names = append(names, p.Name)
	}
	sort.Strings(names)
	for _, a := range assigns {
		kind, rest, _ := strings.Cut(a, ":")
		name, policy, ok := strings.Cut(rest, "=")
		policy, priceText, priced := strings.Cut(policy, "@")
		if !ok || name == "" || policy == "" || kind != "instance" && kind != "customer" {
			return nil, &flagError{flag: "--assign", msg: fmt.Sprintf("%q: write instance:NAME=POLICY or customer:NAME=POLICY, optionally with @PRICE", a)}
		}
		var asg sla.Assignment
		if priced {
			p, err := sla.ParseMoney(priceText)
			if err == nil && (p < 0 || p > sla.MaxMoney) {
				err = fmt.Errorf("%s is not an amount from 0 to %s", priceText, sla.MaxMoney)
			}
			if err != nil {
				return nil, &flagError{flag: "--assign", msg: fmt.Sprintf("%q: price: %v", a, err), err: err}
			}
			asg.MonthlyPrice = &p
		}
		if _, known := plans.Policies[policy]; !known {
			return nil, &flagError{flag: "--assign", msg: fmt.Sprintf("%q: %s %q: the --policy files define %s", a, sla.ErrUnknownPolicy, policy, strings.Join(names, ", ")), err: sla.ErrUnknownPolicy}
		}
		m := plans.Instances
		if kind == "customer" {
			m = plans.Customers
		}
		if prev, dup := m[name]; dup && prev.Policy != policy {
			return nil, &flagError{flag: "--assign", msg: fmt.Sprintf("%s %q is assigned both %q and %q", kind, name, prev.Policy, policy)}
		}
		asg.Policy = policy
		m[name] = asg
	}
	if price == "" {
		return plans.Plan, nil
	}
	p, err := sla.ParseMoney(price)
	if err == nil && (p < 0 || p > sla.MaxMoney) {
		err = fmt.Errorf("%s is not an amount from 0 to %s", price, sla.MaxMoney)
	}
	if err != nil {
		return nil, &flagError{flag: "--price", msg: err.Error(), err: err}
	}
	return func(instance, customer string) (sla.Plan, error) {
		plan, err := plans.Plan(instance, customer)
		plan.MonthlyPrice = p
		return plan, err
	}, nil
}

func (a *app) newSLAForecastCmd() *cobra.Command {
	var (
		policies             []string
		failures, migrations float64
		failover, migration  time.Duration
		monthDays            int
	)
	cmd := &cobra.Command{
		Use:   "forecast [--policy POLICY --host-failures-per-month F --failover-downtime D]",
		Short: "Forecast monthly availability and credits per policy from failure rates",
		Long: `Forecast, for one instance and one month, the expected downtime and
availability, the chance of missing the target or owing a credit, and the
expected credit, for each --policy.

With none of the flags below, the server forecasts for every policy of the
cluster, from the host failures, failover and migration downtimes and
migrations it has seen. With them, the forecast is made offline from the
rates given and the --policy files.

The model: the instance's host fails K times in the month and the instance is
migrated J times, K and J independent and Poisson-distributed with the
rates given; each failover costs --failover-downtime and each migration
--migration-downtime. The expected credit sums the policy's credit over every
(K, J) weighted by its probability. Nothing is excluded.`,
		Example: `  ferry sla forecast
  ferry sla forecast --policy gold.json --host-failures-per-month 0.02 --failover-downtime 8s
  ferry sla forecast --policy gold.json --policy silver.json --host-failures-per-month 0.1 --failover-downtime 10s --migrations-per-month 2 --migration-downtime 500ms --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			offline := false
			for _, name := range []string{"policy", "host-failures-per-month", "failover-downtime", "migrations-per-month", "migration-downtime", "month-days"} {
				offline = offline || fl.Changed(name)
			}
			if !offline {
				return a.runLiveForecast(cmd)
			}
			switch {
			case !fl.Changed("host-failures-per-month"):
				return &flagError{flag: "--host-failures-per-month", msg: "required: give the host failures per host-month observed, e.g. 0.02"}
			case !fl.Changed("failover-downtime"):
				return &flagError{flag: "--failover-downtime", msg: "required: give the mean downtime of a failover, e.g. 8s"}
			case fl.Changed("migrations-per-month") != fl.Changed("migration-downtime"):
				return &flagError{flag: "--migration-downtime", msg: "give --migrations-per-month and --migration-downtime together, e.g. --migrations-per-month 2 --migration-downtime 500ms"}
			case failures < 0:
				return &flagError{flag: "--host-failures-per-month", msg: "must not be negative"}
			case migrations < 0:
				return &flagError{flag: "--migrations-per-month", msg: "must not be negative"}
			case failover < 0:
				return &flagError{flag: "--failover-downtime", msg: "must not be negative"}
			case migration < 0:
				return &flagError{flag: "--migration-downtime", msg: "must not be negative"}
			case monthDays < 1 || monthDays > 31:
				return &flagError{flag: "--month-days", msg: fmt.Sprintf("%d is not a number of days from 1 to 31", monthDays)}
			}
			pols, err := readPolicies(policies, "", a.stdin())
			if err != nil {
				return err
			}
			f, err := sla.Forecast(sla.ForecastInput{
				HostFailuresPerMonth: failures, FailoverDowntime: sla.Seconds(failover),
				MigrationsPerMonth: migrations, MigrationDowntime: sla.Seconds(migration),
				Month: sla.Seconds(time.Duration(monthDays) * 24 * time.Hour),
			}, pols)
			if err != nil {
				return err
			}
			if a.g.JSON {
				return sla.WriteJSON(a.stdout(), f)
			}
			return sla.WriteForecastText(a.stdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&policies, "policy", nil, "policy JSON file (repeatable; - for standard input)")
	fl.Float64Var(&failures, "host-failures-per-month", 0, "host failures per host-month (failures observed / host-months observed)")
	fl.DurationVar(&failover, "failover-downtime", 0, "mean downtime of an instance whose host failed, e.g. 8s")
	fl.Float64Var(&migrations, "migrations-per-month", 0, "migrations per instance-month")
	fl.DurationVar(&migration, "migration-downtime", 0, "mean downtime of a migration, e.g. 500ms")
	fl.IntVar(&monthDays, "month-days", 30, "length of the month in days")
	return cmd
}
