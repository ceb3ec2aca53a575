package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/sla"
	"github.com/spf13/cobra"
)

// The live side of `ferry sla` (policies, assignments, reports from the
// cluster's ledger) and `ferry maintenance`. Everything a flag can get
// wrong is checked here, with package sla and package api, before any
// request; what only the server can know (a policy in use, a node that
// does not exist) comes back from it and is reported against the flag
// it concerns.

// newSLALiveCmds returns the sla subcommands that talk to the server.
func (a *app) newSLALiveCmds() []*cobra.Command {
	return []*cobra.Command{
		a.newSLAPolicyCmd(),
		a.newSLAAssignCmd(),
		a.newSLAUnassignCmd(),
		a.newSLAAssignmentsCmd(),
		a.newSLAReportCmd(),
		a.newSLAIncidentsCmd(),
		a.newSLAExportCmd(),
	}
}

// ---- policies ----

func (a *app) newSLAPolicyCmd() *cobra.Command {
	cmd := newGroup("policy", "Create, list, show and delete SLA policies", "policies")
	cmd.AddCommand(a.newSLAPolicyCreateCmd(), a.newSLAPolicyListCmd(), a.newSLAPolicyShowCmd(), a.newSLAPolicyDeleteCmd())
	return cmd
}

// policyFlags are the flags of `sla policy create`.
type policyFlags struct {
	file    string
	target  float64
	price   string
	tiers   []string
	exclude bool
	notice  time.Duration
	replace bool
}

// policyFlagNames are the flags that build a policy without -f.
var policyFlagNames = []string{"target", "price", "tier", "exclude-customer-stops", "maintenance-notice"}

func (a *app) newSLAPolicyCreateCmd() *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "create NAME --target PERCENT [--price AMOUNT] [--tier BELOW=CREDIT]... | create -f POLICY.json",
		Short: "Create an SLA policy: a target, a price and credit tiers",
		Long: `Create an SLA policy, from flags or from a policy file (-f, the format of
` + "`ferry sla replay --policy`" + `; - for standard input).

--target is the promised availability per calendar month, in percent. Each
--tier BELOW=CREDIT credits CREDIT percent of the monthly price when the
month's availability is under BELOW percent; the lowest tier reached applies,
and a lower availability must never earn a smaller credit. --price is the
monthly price of an instance under the policy (an assignment may override it).

Time a customer stopped their instance is excluded unless
--exclude-customer-stops=false; maintenance is excluded when it was announced
at least --maintenance-notice (whole hours) before it began.

The policy is checked before it is sent. An existing policy is replaced only
with --replace (its instances' reports change with it, past months included).`,
		Example: `  ferry sla policy create gold --target 99.95 --price 100 --tier 99.95=10 --tier 99=25 --tier 95=100
  ferry sla policy create silver --target 99.5 --price 40 --tier 99.5=10 --maintenance-notice 96h
  ferry sla policy create -f gold.json --replace`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) > 1:
				return withHint(fmt.Errorf("expected one policy NAME, got %d arguments: %s", len(args), strings.Join(args, " ")), usageHint(cmd))
			case len(args) == 0 && f.file == "":
				return withHint(errors.New("missing the policy NAME (or give the whole policy with -f POLICY.json)"), usageHint(cmd))
			case len(args) == 1 && strings.TrimSpace(args[0]) == "":
				return withHint(errors.New("missing the policy NAME"), usageHint(cmd))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			p, tierArgs, err := f.policy(cmd, args, a)
			if err != nil {
				return err
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			existed := false
			var got *sla.Policy
			if f.replace {
				if _, err := c.GetSLAPolicy(ctx, p.Name); err == nil {
					existed = true
				} else if !client.IsNotFound(err) {
					return explain(err, conn, "policy", p.Name)
				}
				got, err = c.PutSLAPolicy(ctx, p)
			} else {
				// Create only: the server refuses, in the same
				// transaction, to replace a policy of that name.
				got, err = c.CreateSLAPolicy(ctx, p)
				if client.IsExists(err) {
					return withHint(fmt.Errorf("policy %q already exists", p.Name),
						"Pass --replace to replace it (the reports of its instances change with it), or see 'ferry sla policy show "+p.Name+"'.")
				}
			}
			if err != nil {
				return explain(policyServerError(err, tierArgs, f.file), conn, "policy", "")
			}
			if a.g.JSON {
				return printJSON(a.stdout(), got)
			}
			verb := "created"
			if existed {
				verb = "replaced"
			}
			fmt.Fprintf(a.stdout(), "policy %q %s: %s\n", got.Name, verb, policySummary(got))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "read the whole policy from this JSON file (- for standard input) instead of the flags")
	fl.Float64Var(&f.target, "target", 0, "promised availability per calendar month, in percent, e.g. 99.95")
	fl.StringVar(&f.price, "price", "", "monthly price of one instance, e.g. 100 or 9.99 (default 0)")
	fl.StringArrayVar(&f.tiers, "tier", nil, "credit tier BELOW=CREDIT: CREDIT percent of the price when availability is under BELOW percent (repeatable)")
	fl.BoolVar(&f.exclude, "exclude-customer-stops", sla.DefaultExcludeCustomerStops, "do not count the time customers stopped their instances")
	fl.DurationVar(&f.notice, "maintenance-notice", sla.DefaultMaintenanceNoticeHours*time.Hour, "notice maintenance needs to be excluded, in whole hours")
	fl.BoolVar(&f.replace, "replace", false, "replace the policy if it exists")
	return cmd
}

// policy builds and checks the policy of the command line. tierArgs are
// the --tier values, in order, to name the one at fault.
func (f *policyFlags) policy(cmd *cobra.Command, args []string, a *app) (sla.Policy, []string, error) {
	fl := cmd.Flags()
	if f.file != "" {
		for _, name := range policyFlagNames {
			if fl.Changed(name) {
				return sla.Policy{}, nil, &flagError{flag: "--" + name, msg: "cannot be combined with -f: the file gives the whole policy"}
			}
		}
		r, err := openArg(f.file, a.stdin())
		if err != nil {
			return sla.Policy{}, nil, &flagError{flag: "-f", msg: err.Error(), err: err}
		}
		p, err := sla.ParsePolicy(r)
		r.Close()
		if err != nil {
			return sla.Policy{}, nil, &flagError{flag: "-f " + f.file, msg: err.Error(), err: err}
		}
		if len(args) == 1 && args[0] != p.Name {
			return sla.Policy{}, nil, &flagError{flag: "NAME", msg: fmt.Sprintf("%q differs from the name in %s (%q): leave NAME out, or make them agree", args[0], f.file, p.Name)}
		}
		return p, nil, nil
	}
	p := sla.Policy{Name: args[0], Window: sla.WindowMonth}
	if !fl.Changed("target") {
		return p, nil, &flagError{flag: "--target", msg: "required: give the promised availability in percent, e.g. --target 99.95"}
	}
	p.TargetPercent = f.target
	if f.price != "" {
		m, err := sla.ParseMoney(f.price)
		if err != nil {
			return p, nil, &flagError{flag: "--price", msg: err.Error(), err: err}
		}
		p.MonthlyPrice = m
	}
	for _, arg := range f.tiers {
		t, err := parseTier(arg)
		if err != nil {
			return p, nil, err
		}
		p.Tiers = append(p.Tiers, t)
	}
	if fl.Changed("exclude-customer-stops") {
		v := f.exclude
		p.ExcludeCustomerStops = &v
	}
	if fl.Changed("maintenance-notice") {
		if f.notice < 0 || f.notice%time.Hour != 0 {
			return p, nil, &flagError{flag: "--maintenance-notice", msg: fmt.Sprintf("%s is not a whole number of hours: give e.g. 48h (0 excludes any announced maintenance)", f.notice)}
		}
		h := int(f.notice / time.Hour)
		p.MaintenanceNoticeHours = &h
	}
	if err := p.Validate(); err != nil {
		return p, nil, policyFlagError(err, f.tiers)
	}
	return p, f.tiers, nil
}

// parseTier reads a --tier BELOW=CREDIT (each may end in '%').
func parseTier(arg string) (sla.Tier, error) {
	bad := &flagError{flag: "--tier", msg: fmt.Sprintf("%q: write BELOW=CREDIT, e.g. --tier 99.95=10 for a 10%% credit below 99.95%% availability", arg)}
	below, credit, ok := strings.Cut(arg, "=")
	if !ok {
		return sla.Tier{}, bad
	}
	b, err1 := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(below), "%"), 64)
	c, err2 := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(credit), "%"), 64)
	if err1 != nil || err2 != nil {
		return sla.Tier{}, bad
	}
	return sla.Tier{BelowPercent: b, CreditPercent: c}, nil
}

// policyFields maps a policy's JSON fields to the flags of `policy create`.
var policyFieldFlags = map[string]string{
	"name":                     "NAME",
	"target_percent":           "--target",
	"monthly_price":            "--price",
	"exclude_customer_stops":   "--exclude-customer-stops",
	"maintenance_notice_hours": "--maintenance-notice",
}

// tierRE matches a tier's field path, "tiers[1]" or "tiers[1].below_percent".
var tierRE = regexp.MustCompile(`tiers\[(\d+)\](\.[a-z_]+)?`)

// fieldFlag names the flag of a policy field; tierArgs are the --tier
// values.
func fieldFlag(field string, tierArgs []string) (string, bool) {
	if f, ok := policyFieldFlags[field]; ok {
		return f, true
	}
	if m := tierRE.FindStringSubmatch(field); m != nil && m[0] == field {
		if i, err := strconv.Atoi(m[1]); err == nil && i < len(tierArgs) {
			return "--tier " + tierArgs[i], true
		}
		return "--tier", true
	}
	return "", false
}

// tierRefs rewrites "tiers[0]" in a message as the --tier it came from.
func tierRefs(msg string, tierArgs []string) string {
	return tierRE.ReplaceAllStringFunc(msg, func(s string) string {
		m := tierRE.FindStringSubmatch(s)
		i, err := strconv.Atoi(m[1])
		if err != nil || i >= len(tierArgs) || m[2] != "" {
			return s
		}
		return "--tier " + tierArgs[i]
	})
}

// policyFlagError reports a policy Validate refused against its flag.
func policyFlagError(err error, tierArgs []string) error {
	var se *sla.Error
	if !errors.As(err, &se) {
		return err
	}
	flag, ok := fieldFlag(se.Field, tierArgs)
	if !ok {
		return err
	}
	msg := "invalid"
	if se.Err != nil {
		msg = tierRefs(se.Err.Error(), tierArgs)
	}
	return &flagError{flag: flag, msg: msg, err: err}
}

// policyServerError reports the server's refusal of a policy against its
// flag (or the file).
func policyServerError(err error, tierArgs []string, file string) error {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Field == "" || ae.Status != 400 {
		return err
	}
	if file != "" {
		return &flagError{flag: "-f " + file, msg: ae.Message, err: err}
	}
	flag, ok := fieldFlag(ae.Field, tierArgs)
	if !ok {
		return err
	}
	return &flagError{flag: flag, msg: tierRefs(strings.TrimPrefix(ae.Message, ae.Field+": "), tierArgs), err: err}
}

// sortedTiers returns p's tiers from the highest availability down.
func sortedTiers(p *sla.Policy) []sla.Tier {
	ts := slices.Clone(p.Tiers)
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].BelowPercent > ts[j].BelowPercent })
	return ts
}

// pct writes a percentage as it would be typed: 99.95, 100.
func pct(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// tiersText is "99.95=10, 99=25, 95=100" (the --tier syntax), or "none".
func tiersText(p *sla.Policy) string {
	var parts []string
	for _, t := range sortedTiers(p) {
		parts = append(parts, pct(t.BelowPercent)+"="+pct(t.CreditPercent))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// creditsText is "10% below 99.95%, 25% below 99%", or "none".
func creditsText(p *sla.Policy) string {
	var parts []string
	for _, t := range sortedTiers(p) {
		parts = append(parts, pct(t.CreditPercent)+"% below "+pct(t.BelowPercent)+"%")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// hoursText writes a whole number of hours as "48h".
func hoursText(d time.Duration) string { return strconv.FormatInt(int64(d/time.Hour), 10) + "h" }

// policySummary is one line about p.
func policySummary(p *sla.Policy) string {
	return fmt.Sprintf("target %s%%, price %s, credits %s", pct(p.TargetPercent), p.MonthlyPrice, creditsText(p))
}

func (a *app) newSLAPolicyListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List SLA policies",
		Long: `List SLA policies. TIERS are BELOW=CREDIT: CREDIT percent of the monthly price
when the month's availability is under BELOW percent. NOTICE is how long ahead
maintenance must be announced to be excluded.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pols, err := fetch(a, cmd, "policy", "", (*client.Client).ListSLAPolicies)
			if err != nil {
				return err
			}
			sort.Slice(pols, func(i, j int) bool { return pols[i].Name < pols[j].Name })
			if a.g.JSON {
				return printJSON(a.stdout(), api.List[sla.Policy]{Items: nonNil(pols)})
			}
			if len(pols) == 0 {
				fmt.Fprintln(a.stdout(), "No SLA policies. Create one with 'ferry sla policy create'.")
				return nil
			}
			t := newTable(a.stdout(), "NAME", "TARGET", "PRICE", "TIERS(BELOW=CREDIT)", "NOTICE", "EXCLUDES CUSTOMER STOPS")
			for i := range pols {
				p := &pols[i]
				t.row(p.Name, pct(p.TargetPercent)+"%", p.MonthlyPrice.String(), tiersText(p), hoursText(p.MaintenanceNotice()), yesNo(p.ExcludesCustomerStops()))
			}
			return t.flush()
		},
	}
}

// nonNil makes a nil slice empty, so that JSON has [] and not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *app) newSLAPolicyShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show an SLA policy",
		Args:    exactlyOneName("policy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := fetch(a, cmd, "policy", args[0], func(c *client.Client, ctx context.Context) (*sla.Policy, error) {
				return c.GetSLAPolicy(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), p)
			}
			window := p.Window
			if window == "" || window == sla.WindowMonth {
				window = "calendar month"
			}
			stops := "excluded"
			if !p.ExcludesCustomerStops() {
				stops = "counted as downtime"
			}
			d := newDetails(a.stdout())
			d.add("Name", p.Name)
			d.add("Target", pct(p.TargetPercent)+"% per "+window)
			d.add("Monthly price", p.MonthlyPrice.String())
			d.add("Credits", creditsText(p))
			d.add("Customer stops", stops)
			d.add("Maintenance notice", hoursText(p.MaintenanceNotice())+" (maintenance announced at least this long ahead is excluded)")
			return d.flush()
		},
	}
}

func (a *app) newSLAPolicyDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm", "remove"},
		Short:   "Delete an SLA policy that is not assigned",
		Args:    exactlyOneName("policy"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := fetch(a, cmd, "policy", args[0], func(c *client.Client, ctx context.Context) (struct{}, error) {
				return struct{}{}, c.DeleteSLAPolicy(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout(), "policy %q deleted\n", args[0])
			return nil
		},
	}
}

// ---- assignments ----

// assignTarget is --instance or --customer of assign and unassign.
type assignTarget struct {
	instance, customer string
}

func (t *assignTarget) bind(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&t.instance, "instance", "", what+" of this instance")
	cmd.Flags().StringVar(&t.customer, "customer", "", what+" of this customer (an instance's owner), for its instances without one of their own")
}

// resolve returns the client's kind ("instances" or "customers"), the
// word for messages and the name.
func (t *assignTarget) resolve() (kind, word, name string, err error) {
	switch {
	case t.instance != "" && t.customer != "":
		return "", "", "", &flagError{flag: "--customer", msg: "cannot be combined with --instance: assign one at a time"}
	case t.instance != "":
		if err := api.ValidateName("", t.instance); err != nil {
			return "", "", "", &flagError{flag: "--instance", msg: strings.TrimPrefix(err.Error(), ": "), err: err}
		}
		return "instances", "instance", t.instance, nil
	case t.customer != "":
		if len(t.customer) > 128 || strings.ContainsFunc(t.customer, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return "", "", "", &flagError{flag: "--customer", msg: fmt.Sprintf("%q is not a customer name: at most 128 characters, no control characters", t.customer)}
		}
		return "customers", "customer", t.customer, nil
	}
	return "", "", "", &flagError{flag: "--instance", msg: "required: give --instance NAME or --customer NAME"}
}

// assignmentServerError reports the server's refusal against a flag.
func assignmentServerError(err error, targetFlag string) error {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Field == "" || ae.Status != 400 {
		return err
	}
	flag := map[string]string{"policy": "--policy", "monthly_price": "--price", "name": targetFlag}[ae.Field]
	if flag == "" {
		return err
	}
	return &flagError{flag: flag, msg: strings.TrimPrefix(ae.Message, ae.Field+": "), err: err}
}

// assignmentJSON is what `sla assign --json` prints.
type assignmentJSON struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	sla.Assignment
}

func (a *app) newSLAAssignCmd() *cobra.Command {
	var (
		target assignTarget
		policy string
		price  string
	)
	cmd := &cobra.Command{
		Use:   "assign (--instance NAME | --customer NAME) --policy POLICY [--price AMOUNT]",
		Short: "Put an instance or a customer under an SLA policy",
		Long: `Put an instance, or every instance of a customer, under an SLA policy. An
instance's own assignment comes first, then its customer's. --price overrides
the policy's monthly price for it. Assigning again replaces the assignment.`,
		Example: `  ferry sla assign --customer acme --policy gold
  ferry sla assign --instance web-1 --policy silver --price 55`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kind, word, name, err := target.resolve()
			if err != nil {
				return err
			}
			if policy == "" {
				return &flagError{flag: "--policy", msg: "required: name the policy (see 'ferry sla policy ls')"}
			}
			if err := api.ValidateName("", policy); err != nil {
				return &flagError{flag: "--policy", msg: strings.TrimPrefix(err.Error(), ": "), err: err}
			}
			as := sla.Assignment{Policy: policy}
			if price != "" {
				m, err := sla.ParseMoney(price)
				if err == nil && (m < 0 || m > sla.MaxMoney) {
					err = fmt.Errorf("%s is not an amount from 0 to %s", price, sla.MaxMoney)
				}
				if err != nil {
					return &flagError{flag: "--price", msg: err.Error(), err: err}
				}
				as.MonthlyPrice = &m
			}
			if _, err := fetch(a, cmd, word, "", func(c *client.Client, ctx context.Context) (struct{}, error) {
				return struct{}{}, assignmentServerError(c.AssignSLA(ctx, kind, name, as), "--"+word)
			}); err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), assignmentJSON{Kind: word, Name: name, Assignment: as})
			}
			how := "at the policy's price"
			if as.MonthlyPrice != nil {
				how = "at " + as.MonthlyPrice.String() + " a month"
			}
			fmt.Fprintf(a.stdout(), "%s %q is under policy %q, %s\n", word, name, policy, how)
			return nil
		},
	}
	target.bind(cmd, "the policy")
	cmd.Flags().StringVar(&policy, "policy", "", "name of the policy")
	cmd.Flags().StringVar(&price, "price", "", "monthly price instead of the policy's, e.g. 55 or 9.99")
	return cmd
}

func (a *app) newSLAUnassignCmd() *cobra.Command {
	var target assignTarget
	cmd := &cobra.Command{
		Use:   "unassign (--instance NAME | --customer NAME)",
		Short: "Remove the SLA policy assignment of an instance or a customer",
		Long: `Remove an assignment. An instance that loses its own falls back to its
customer's; one with neither is left out of reports.`,
		Example: "  ferry sla unassign --instance web-1\n  ferry sla unassign --customer acme",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kind, word, name, err := target.resolve()
			if err != nil {
				return err
			}
			if _, err := fetch(a, cmd, word, "", func(c *client.Client, ctx context.Context) (struct{}, error) {
				err := c.UnassignSLA(ctx, kind, name)
				if client.IsNotFound(err) {
					return struct{}{}, &messageError{msg: fmt.Sprintf("%s %q has no SLA assignment (see 'ferry sla assignments')", word, name), err: err}
				}
				return struct{}{}, assignmentServerError(err, "--"+word)
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout(), "%s %q is no longer assigned a policy\n", word, name)
			return nil
		},
	}
	target.bind(cmd, "remove the assignment")
	return cmd
}

func (a *app) newSLAAssignmentsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "assignments",
		Short: "List which instances and customers are under which SLA policy",
		Long: `List the SLA assignments. An instance's own assignment comes first, then its
customer's. PRICE is the monthly price, or the policy's when not overridden.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			as, err := fetch(a, cmd, "assignment", "", (*client.Client).ListSLAAssignments)
			if err != nil {
				return err
			}
			if as.Instances == nil {
				as.Instances = map[string]sla.Assignment{}
			}
			if as.Customers == nil {
				as.Customers = map[string]sla.Assignment{}
			}
			if a.g.JSON {
				return printJSON(a.stdout(), as)
			}
			if len(as.Instances)+len(as.Customers) == 0 {
				fmt.Fprintln(a.stdout(), "No SLA assignments. Assign a policy with 'ferry sla assign'.")
				return nil
			}
			t := newTable(a.stdout(), "KIND", "NAME", "POLICY", "PRICE")
			for _, k := range []struct {
				word string
				m    map[string]sla.Assignment
			}{{"customer", as.Customers}, {"instance", as.Instances}} {
				names := make([]string, 0, len(k.m))
				for n := range k.m {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					v := k.m[n]
					price := "policy's"
					if v.MonthlyPrice != nil {
						price = v.MonthlyPrice.String()
					}
					t.row(k.word, n, v.Policy, price)
				}
			}
			return t.flush()
		},
	}
}

// ---- reports ----

// slaQueryFlags are --month and --tz of a live report.
type slaQueryFlags struct {
	month, tz string
}

func (f *slaQueryFlags) bind(cmd *cobra.Command, monthHelp string) {
	cmd.Flags().StringVar(&f.month, "month", "", monthHelp)
	cmd.Flags().StringVar(&f.tz, "tz", "", "time zone the month is taken in, e.g. Europe/Berlin (default UTC)")
}

// query checks the flags and returns the query and the time zone. A
// month that has not begun (by the local clock) is refused: the server
// knows only the past.
func (f *slaQueryFlags) query(now time.Time) (client.SLAQuery, *time.Location, error) {
	q := client.SLAQuery{Month: f.month, TZ: f.tz}
	loc := time.UTC
	if f.tz != "" {
		l, err := time.LoadLocation(f.tz)
		if err != nil || strings.HasPrefix(f.tz, "/") {
			return q, nil, &flagError{flag: "--tz", msg: fmt.Sprintf("unknown time zone %q: give an IANA name such as Europe/Berlin, or UTC", f.tz), err: err}
		}
		loc = l
	}
	if f.month != "" {
		m, err := sla.ParseMonth(f.month)
		if err != nil {
			return q, nil, &flagError{flag: "--month", msg: err.Error(), err: err}
		}
		if start, _ := m.Bounds(loc); start.After(now) {
			return q, nil, &flagError{flag: "--month", msg: fmt.Sprintf("%s has not begun: the cluster reports on months up to the current one (%s); for a what-if, use 'ferry sla replay'",
				m, sla.MonthOf(now.In(loc))), err: sla.ErrMonthNotBegun}
		}
	}
	return q, loc, nil
}

// queryServerError reports the server's refusal of --month or --tz.
func queryServerError(err error) error {
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == 400 && (ae.Field == "month" || ae.Field == "tz") {
		return &flagError{flag: "--" + ae.Field, msg: strings.TrimPrefix(ae.Message, ae.Field+": "), err: err}
	}
	return err
}

func (a *app) newSLAReportCmd() *cobra.Command {
	var (
		q        slaQueryFlags
		customer string
		out      slaFormats
	)
	cmd := &cobra.Command{
		Use:   "report [--month YYYY-MM] [--tz ZONE] [--customer NAME]",
		Short: "Report availability, incidents and credits of a month from the cluster's ledger",
		Long: `Report each instance's availability in a calendar month against its policy,
its incidents by cause and the credit owed, with totals per customer and for
the provider, from the cluster's SLA ledger. The current month's report ends
now. --customer keeps one customer's instances.

The report is a table; --json prints the report document, --csv one CSV
table, and --svg also draws it (availability bars and timelines) into a file.
` + "`ferry sla export`" + ` saves the month's events, from which ` + "`ferry sla replay`" + `
reproduces the report.`,
		Example: `  ferry sla report
  ferry sla report --month 2026-11 --customer acme
  ferry sla report --month 2026-11 --tz Europe/Berlin --csv > nov.csv
  ferry sla report --month 2026-11 --svg nov.svg`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(a.g.JSON); err != nil {
				return err
			}
			query, loc, err := q.query(a.opts.Now())
			if err != nil {
				return err
			}
			query.Customer = customer
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			rep, unpriced, err := c.SLAReport(ctx, query)
			if err != nil {
				return explain(queryServerError(err), conn, "report", "")
			}
			if len(unpriced) > 0 {
				fmt.Fprintf(a.stderr(), "Warning: no SLA policy covers %s: the report leaves them out (ferry sla assign --instance NAME --policy POLICY, or --customer)\n", strings.Join(unpriced, ", "))
			}
			var events []sla.Event
			var w sla.Window
			if out.svg != "" {
				// The timelines of the report's own month and window.
				if l, err := time.LoadLocation(rep.TimeZone); err == nil && rep.TimeZone != "" {
					loc = l
				}
				query.Month, query.TZ = rep.Month.String(), rep.TimeZone
				var b bytes.Buffer
				if err := c.SLAExport(ctx, query, &b); err != nil {
					return explain(queryServerError(err), conn, "export", "")
				}
				if events, err = sla.ParseEvents(&b); err != nil {
					return fmt.Errorf("the server's export of %s: %w", rep.Month, err)
				}
				w = sla.Window{Month: rep.Month, From: rep.From.In(loc), To: rep.To.In(loc)}
			}
			return a.writeReport(rep, events, w, out)
		},
	}
	q.bind(cmd, "the calendar month, YYYY-MM (default: the current one, up to now)")
	cmd.Flags().StringVar(&customer, "customer", "", "only the instances of this customer")
	out.bind(cmd)
	return cmd
}

func (a *app) newSLAIncidentsCmd() *cobra.Command {
	var q slaQueryFlags
	cmd := &cobra.Command{
		Use:   "incidents NAME [--month YYYY-MM] [--tz ZONE]",
		Short: "Show an instance's timeline in a month: when it served, was down and why",
		Long: `Show an instance's timeline in a calendar month from the cluster's ledger: the
stretches it was serving, down (with the cause) or excluded (a customer's stop,
maintenance announced in time), in the month's time zone.`,
		Example: "  ferry sla incidents web-1\n  ferry sla incidents web-1 --month 2026-11 --tz Europe/Berlin --json",
		Args:    exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			query, loc, err := q.query(a.opts.Now())
			if err != nil {
				return err
			}
			// The server's 404 says why the instance is not in the ledger;
			// explain gets no name so as to keep it.
			ivs, err := fetch(a, cmd, "instance", "", func(c *client.Client, ctx context.Context) ([]sla.Interval, error) {
				ivs, err := c.SLAIncidents(ctx, args[0], query)
				return ivs, queryServerError(err)
			})
			if err != nil {
				return err
			}
			for i := range ivs {
				ivs[i].Start, ivs[i].End = ivs[i].Start.In(loc), ivs[i].End.In(loc)
			}
			if a.g.JSON {
				return sla.WriteJSON(a.stdout(), api.List[sla.Interval]{Items: nonNil(ivs)})
			}
			month := "the current month"
			if q.month != "" {
				month = q.month
			}
			if len(ivs) == 0 {
				fmt.Fprintf(a.stdout(), "%s has no time in the ledger in %s (%s)\n", clean(args[0]), month, loc)
				return nil
			}
			if err := sla.WriteTimelineText(a.stdout(), ivs); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout(), "\n%s\n", timelineSummary(ivs))
			return nil
		},
	}
	q.bind(cmd, "the calendar month, YYYY-MM (default: the current one, up to now)")
	return cmd
}

// timelineSummary sums a timeline: "serving 30d23h, down 22m in 1
// incident (host-failure 22m), excluded 0".
func timelineSummary(ivs []sla.Interval) string {
	var serving, down, excluded time.Duration
	incidents := 0
	byCause := map[sla.Cause]time.Duration{}
	for _, iv := range ivs {
		d := iv.Duration.Duration()
		switch iv.State {
		case sla.Serving:
			serving += d
		case sla.Down:
			down += d
			incidents++
			byCause[iv.Cause] += d
		case sla.Excluded:
			excluded += d
		}
	}
	s := fmt.Sprintf("serving %s, down %s", sla.FormatDuration(serving), sla.FormatDuration(down))
	if incidents > 0 {
		var parts []string
		for _, c := range sla.Causes() {
			if d, ok := byCause[c]; ok {
				parts = append(parts, fmt.Sprintf("%s %s", c, sla.FormatDuration(d)))
			}
		}
		s += fmt.Sprintf(" in %d %s (%s)", incidents, plural(incidents, "incident", "incidents"), strings.Join(parts, ", "))
	}
	return s + ", excluded " + sla.FormatDuration(excluded)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (a *app) newSLAExportCmd() *cobra.Command {
	var (
		q      slaQueryFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "export --month YYYY-MM [--tz ZONE] [-o FILE]",
		Short: "Export a month's ledger events, for `ferry sla replay`",
		Long: `Write a month's events from the cluster's SLA ledger as JSON lines (the format
` + "`ferry sla replay`" + ` reads), to standard output or -o FILE. Replayed with the
same policies and the same --tz, they give the same report as ` + "`ferry sla report`" + `;
for the current month, whose report ends when it is made, give that time as
the replay's --until.`,
		Example: `  ferry sla export --month 2026-11 -o nov.jsonl
  ferry sla export --month 2026-11 | ferry sla replay - --policy gold.json --month 2026-11`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.month == "" {
				return &flagError{flag: "--month", msg: fmt.Sprintf("required: give the calendar month, e.g. --month %s", sla.MonthOf(a.opts.Now().UTC()))}
			}
			query, loc, err := q.query(a.opts.Now())
			if err != nil {
				return err
			}
			if output == "-" {
				output = ""
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context()) // an export may be long: no request timeout
			defer cancel()
			if output == "" {
				return explain(queryServerError(c.SLAExport(ctx, query, a.stdout())), conn, "export", "")
			}
			// Into a temporary file renamed at the end, so that a failed
			// export leaves no partial file behind.
			tmp, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".*")
			if err != nil {
				return &flagError{flag: "-o", msg: err.Error(), err: err}
			}
			defer os.Remove(tmp.Name())
			err = c.SLAExport(ctx, query, tmp)
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return explain(queryServerError(err), conn, "export", "")
			}
			if err := os.Chmod(tmp.Name(), 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), output); err != nil {
				return &flagError{flag: "-o", msg: err.Error(), err: err}
			}
			fmt.Fprintf(a.stdout(), "events of %s (%s) written to %s\n", q.month, loc, output)
			return nil
		},
	}
	q.bind(cmd, "the calendar month, YYYY-MM")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of standard output")
	return cmd
}

// runLiveForecast is `ferry sla forecast` with no offline flag: the server
// measures the inputs from the cluster and forecasts for every policy.
func (a *app) runLiveForecast(cmd *cobra.Command) error {
	f, err := fetch(a, cmd, "forecast", "", (*client.Client).SLAForecast)
	if err != nil {
		return err
	}
	if a.g.JSON {
		return sla.WriteJSON(a.stdout(), f)
	}
	return sla.WriteForecastText(a.stdout(), f)
}

// ---- maintenance ----

func (a *app) newMaintenanceCmd() *cobra.Command {
	cmd := newGroup("maintenance", "Announce maintenance windows of hosts, excluded from SLAs when announced in time", "maint")
	cmd.Long = `Announce a host's maintenance ahead of time. Downtime it causes to the host's
instances counts as maintenance in the SLA ledger, and is excluded from an
instance's availability when the window was announced at least its policy's
maintenance notice before it began.`
	cmd.AddCommand(a.newMaintenanceScheduleCmd(), a.newMaintenanceListCmd(), a.newMaintenanceCancelCmd())
	return cmd
}

// relativeSlack is added to a "+DURATION" time before it is rounded up
// to the minute: the server records the announcement a little after the
// client computed the time (latency, clocks a little apart), and
// "--start +72h" must still give 72 hours of notice by its clock.
const relativeSlack = 30 * time.Second

// parseWhen reads a time flag: RFC 3339, "now", or "+DURATION" from now
// (with relativeSlack, rounded up to the whole minute).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now.Truncate(time.Second), nil
	case strings.HasPrefix(s, "+"):
		d, err := time.ParseDuration(s[1:])
		if err != nil || d <= 0 {
			return time.Time{}, &flagError{flag: flag, msg: fmt.Sprintf("%q is not a positive duration from now, such as +30m or +72h", s), err: err}
		}
		return ceilMinute(now.Add(d + relativeSlack)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &flagError{flag: flag, msg: fmt.Sprintf("%q is not a time: give RFC 3339 (2026-12-01T02:00:00Z), now, or +DURATION such as +72h", s), err: err}
	}
	return t, nil
}

// ceilMinute rounds t up to the whole minute.
func ceilMinute(t time.Time) time.Time {
	if r := t.Truncate(time.Minute); r.Before(t) {
		return r.Add(time.Minute)
	}
	return t
}

// when formats a time for maintenance messages, in the local zone.
func when(t time.Time) string { return t.Local().Format("2006-01-02 15:04 MST") }

// noticeText writes how long ahead something was announced: "72h",
// "71h30m", "45m".
func noticeText(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Truncate(time.Minute)
	h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
	switch {
	case h > 0 && m > 0:
		return fmt.Sprintf("%dh%dm", h, m)
	case h > 0:
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dm", m)
}

// joinAnd writes "a", "a and b", "a, b and c".
func joinAnd(parts []string, and string) string {
	if len(parts) <= 1 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " " + and + " " + parts[len(parts)-1]
}

// noticeReport says how much notice m was given and under which policies
// that excludes its downtime; a second line, if any, says when it would
// have to start to be excluded under the others.
func noticeReport(m *api.Maintenance, pols []sla.Policy) string {
	notice := m.Start.Sub(m.AnnouncedAt)
	head := "announced " + noticeText(notice) + " ahead"
	switch {
	case notice < 0 && notice > -time.Minute || notice >= 0 && notice < time.Minute:
		head = "announced as it begins"
	case notice < 0:
		head = "announced " + noticeText(notice) + " after it began"
	}
	if len(pols) == 0 {
		return head + " (there is no SLA policy to compare it with)"
	}
	pols = slices.Clone(pols)
	sort.Slice(pols, func(i, j int) bool { return pols[i].Name < pols[j].Name })
	var in, out []string
	var longest time.Duration
	for i := range pols {
		p := &pols[i]
		need := p.MaintenanceNotice()
		if notice >= need {
			in = append(in, fmt.Sprintf("%s (%s notice)", p.Name, hoursText(need)))
			continue
		}
		out = append(out, fmt.Sprintf("%s (%s)", p.Name, hoursText(need)))
		longest = max(longest, need)
	}
	var s string
	switch {
	case len(out) == 0:
		s = head + ": excluded under " + joinAnd(in, "and")
	case len(in) == 0:
		s = head + ": not excluded under " + joinAnd(out, "or") + ": it counts as downtime"
	default:
		s = head + ": excluded under " + joinAnd(in, "and") + ", not under " + joinAnd(out, "or")
	}
	if len(out) > 0 {
		s += fmt.Sprintf("\nto be excluded under every policy, a window announced now must start at or after %s (%s ahead)",
			when(ceilMinute(m.AnnouncedAt.Add(longest))), hoursText(longest))
	}
	return s
}

func (a *app) newMaintenanceScheduleCmd() *cobra.Command {
	var (
		start, end, reason string
		duration           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "schedule NODE --start TIME (--duration D | --end TIME) [--reason TEXT]",
		Short: "Announce a maintenance window of a host",
		Long: `Announce a maintenance window of a host, from --start for --duration (or until
--end). TIME is RFC 3339 (2026-12-01T02:00:00Z), now, or +DURATION from now
(+30m, +72h; rounded up to a whole minute at least 30s further, so that the
notice is still DURATION when the server records the announcement). A window
lasts at most 7 days.

The server records when it was announced; the command then says, for each SLA
policy, whether the window's downtime will be excluded (announced at least the
policy's maintenance notice ahead) or count against the instances' availability.`,
		Example: `  ferry maintenance schedule n1 --start 2026-12-01T02:00:00Z --duration 2h --reason "kernel update"
  ferry maintenance schedule n1 --start +72h --end +74h`,
		Args: exactlyOneName("node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			now := a.opts.Now()
			if start == "" {
				return &flagError{flag: "--start", msg: "required: when the maintenance begins: RFC 3339, now, or +DURATION such as +72h"}
			}
			endFlag := "--end"
			switch {
			case fl.Changed("duration") && fl.Changed("end"):
				return &flagError{flag: "--end", msg: "cannot be combined with --duration: give one of them"}
			case !fl.Changed("duration") && !fl.Changed("end"):
				return &flagError{flag: "--duration", msg: "required: give how long the maintenance lasts, e.g. --duration 2h, or when it ends with --end"}
			case fl.Changed("duration"):
				endFlag = "--duration"
				if duration <= 0 {
					return &flagError{flag: "--duration", msg: fmt.Sprintf("%s is not a positive duration, such as 2h", duration)}
				}
			}
			req := api.MaintenanceRequest{Node: args[0], Reason: reason}
			var err error
			if req.Start, err = parseWhen("--start", start, now); err != nil {
				return err
			}
			if endFlag == "--duration" {
				req.End = req.Start.Add(duration)
			} else if req.End, err = parseWhen("--end", end, now); err != nil {
				return err
			}
			if err := maintenanceFlagError(req.Validate(), endFlag); err != nil {
				return err
			}
			if !req.End.After(now) {
				return &flagError{flag: endFlag, msg: fmt.Sprintf("the window ends at %s, which has passed: announce maintenance before it ends", when(req.End))}
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			m, err := c.ScheduleMaintenance(ctx, req)
			if err != nil {
				return explain(maintenanceFlagError(err, endFlag), conn, "maintenance", "")
			}
			if a.g.JSON {
				return printJSON(a.stdout(), m)
			}
			fmt.Fprintf(a.stdout(), "maintenance %s scheduled on %s from %s to %s (%s)\n",
				clean(m.ID), clean(m.Node), when(m.Start), when(m.End), sla.FormatDuration(m.End.Sub(m.Start)))
			if m.AnnouncedAt.IsZero() {
				m.AnnouncedAt = now
			}
			pols, err := c.ListSLAPolicies(ctx)
			if err != nil {
				fmt.Fprintf(a.stderr(), "Warning: the window is scheduled, but the SLA policies could not be read to compare its notice: %v\n", err)
				return nil
			}
			fmt.Fprintln(a.stdout(), noticeReport(m, pols))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&start, "start", "", "when the maintenance begins: RFC 3339, now, or +DURATION from now")
	fl.DurationVar(&duration, "duration", 0, "how long it lasts, e.g. 2h")
	fl.StringVar(&end, "end", "", "when it ends, instead of --duration: RFC 3339 or +DURATION from now")
	fl.StringVar(&reason, "reason", "", "what the maintenance is for, shown with the window")
	return cmd
}

// maintenanceFlagError reports a field error of a maintenance request
// (local or the server's) against its flag.
func maintenanceFlagError(err error, endFlag string) error {
	if err == nil {
		return nil
	}
	field, msg := "", ""
	var fe *api.FieldError
	var ae *client.APIError
	switch {
	case errors.As(err, &fe):
		field, msg = fe.Field, fe.Message
	case errors.As(err, &ae) && ae.Status == 400:
		field, msg = ae.Field, strings.TrimPrefix(ae.Message, ae.Field+": ")
	}
	flag := map[string]string{"node": "NODE", "start": "--start", "end": endFlag, "reason": "--reason"}[field]
	if flag == "" {
		return err
	}
	return &flagError{flag: flag, msg: msg, err: err}
}

func (a *app) newMaintenanceListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List maintenance windows",
		Long: `List maintenance windows by start. NOTICE is how long before its start the
window was announced; STATE is scheduled, in progress or over.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := fetch(a, cmd, "maintenance", "", (*client.Client).ListMaintenance)
			if err != nil {
				return err
			}
			sort.SliceStable(ms, func(i, j int) bool { return ms[i].Start.Before(ms[j].Start) })
			if a.g.JSON {
				return printJSON(a.stdout(), api.List[api.Maintenance]{Items: nonNil(ms)})
			}
			if len(ms) == 0 {
				fmt.Fprintln(a.stdout(), "No maintenance windows. Announce one with 'ferry maintenance schedule'.")
				return nil
			}
			now := a.opts.Now()
			t := newTable(a.stdout(), "ID", "NODE", "START", "END", "LENGTH", "NOTICE", "STATE", "REASON", "BY")
			for _, m := range ms {
				state := "scheduled"
				switch {
				case !now.Before(m.End):
					state = "over"
				case !now.Before(m.Start):
					state = "in progress"
				}
				notice := "-"
				if !m.AnnouncedAt.IsZero() {
					if d := m.Start.Sub(m.AnnouncedAt); d >= 0 {
						notice = noticeText(d)
					} else {
						notice = "late " + noticeText(d)
					}
				}
				t.row(m.ID, m.Node, when(m.Start), when(m.End), sla.FormatDuration(m.End.Sub(m.Start)), notice, state, m.Reason, m.By)
			}
			return t.flush()
		},
	}
}

func (a *app) newMaintenanceCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "cancel ID",
		Aliases: []string{"rm", "delete"},
		Short:   "Cancel a maintenance window that has not begun",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 && strings.TrimSpace(args[0]) != "":
				return nil
			case len(args) == 0 || strings.TrimSpace(args[0]) == "":
				return withHint(errors.New("missing the maintenance ID (see: ferry maintenance ls)"), usageHint(cmd))
			}
			return withHint(fmt.Errorf("expected one maintenance ID, got %d arguments: %s", len(args), strings.Join(args, " ")), usageHint(cmd))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := fetch(a, cmd, "maintenance", args[0], func(c *client.Client, ctx context.Context) (struct{}, error) {
				return struct{}{}, c.CancelMaintenance(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout(), "maintenance %s cancelled\n", clean(args[0]))
			return nil
		},
	}
}
