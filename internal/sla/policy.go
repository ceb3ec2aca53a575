package sla

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"regexp"
	"strconv"
	"time"
)

// WindowMonth is the only window a Policy has: the calendar month.
const WindowMonth = "month"

// Defaults of a Policy's exclusion settings.
const (
	// DefaultExcludeCustomerStops: a customer's own stops do not count.
	DefaultExcludeCustomerStops = true
	// DefaultMaintenanceNoticeHours: maintenance announced at least 48
	// hours before it begins does not count.
	DefaultMaintenanceNoticeHours = 48
	// maxNoticeHours bounds maintenance_notice_hours (a year).
	maxNoticeHours = 366 * 24
)

// Policy is an availability promise and what breaking it costs: a target,
// what is excluded, and credits in tiers. Its JSON form, as ParsePolicy
// reads it:
//
//	{"name":"gold","target_percent":99.95,"window":"month","monthly_price":100,
//	 "tiers":[{"below_percent":99.95,"credit_percent":10},
//	          {"below_percent":99,"credit_percent":25},
//	          {"below_percent":95,"credit_percent":100}],
//	 "exclude_customer_stops":true,"maintenance_notice_hours":48}
type Policy struct {
	// Name identifies the policy: a DNS label (lowercase letters,
	// digits and '-', at most 63), so it can be a key in the store.
	Name string `json:"name"`
	// TargetPercent is the promised availability, in (0, 100].
	TargetPercent float64 `json:"target_percent"`
	// Window is what availability is measured over: only "month" (the
	// calendar month in the report's time zone) exists. Empty means
	// month; ParsePolicy fills it in.
	Window string `json:"window"`
	// MonthlyPrice is the default price of one instance for a month,
	// which credits are a share of; a Plan may override it.
	MonthlyPrice Money `json:"monthly_price"`
	// Tiers is the credit schedule, in any order: a month whose
	// availability is below a tier's BelowPercent earns its
	// CreditPercent, and the lowest tier reached applies.
	Tiers []Tier `json:"tiers,omitempty"`
	// ExcludeCustomerStops says whether time stopped by the customer is
	// excluded; nil means DefaultExcludeCustomerStops. See Classify.
	ExcludeCustomerStops *bool `json:"exclude_customer_stops,omitempty"`
	// MaintenanceNoticeHours is how long before it begins maintenance
	// must be announced to be excluded; nil means
	// DefaultMaintenanceNoticeHours. See Classify.
	MaintenanceNoticeHours *int `json:"maintenance_notice_hours,omitempty"`
}

// Tier is one step of a credit schedule.
type Tier struct {
	// BelowPercent: the tier applies to an availability strictly below
	// it, in (0, 100].
	BelowPercent float64 `json:"below_percent"`
	// CreditPercent is the share of the monthly price credited, in
	// [0, 100].
	CreditPercent float64 `json:"credit_percent"`
}

// ExcludesCustomerStops returns ExcludeCustomerStops or its default.
func (p *Policy) ExcludesCustomerStops() bool {
	if p.ExcludeCustomerStops == nil {
		return DefaultExcludeCustomerStops
	}
	return *p.ExcludeCustomerStops
}

// MaintenanceNotice returns MaintenanceNoticeHours, or its default, as a
// duration.
func (p *Policy) MaintenanceNotice() time.Duration {
	h := DefaultMaintenanceNoticeHours
	if p.MaintenanceNoticeHours != nil {
		h = *p.MaintenanceNoticeHours
	}
	return time.Duration(h) * time.Hour
}

// policyNameRE is the rule of api.ValidateName: a DNS label.
var policyNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Validate checks p. The error is an *Error with Input "policy" naming the
// field, such as "tiers[1].below_percent".
func (p *Policy) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &Error{Input: "policy", Field: field, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case p.Name == "":
		return bad("name", "missing: name the policy, e.g. \"gold\"")
	case len(p.Name) > 63:
		return bad("name", "%q is %d characters long; at most 63 are allowed", p.Name, len(p.Name))
	case !policyNameRE.MatchString(p.Name):
		return bad("name", "%q is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit", p.Name)
	}
	if !(p.TargetPercent > 0 && p.TargetPercent <= 100) {
		return bad("target_percent", "%s is not a percentage above 0 and at most 100", fmtFloat(p.TargetPercent))
	}
	if p.Window != "" && p.Window != WindowMonth {
		return bad("window", "%q is not supported: the only window is %q (the calendar month)", p.Window, WindowMonth)
	}
	if p.MonthlyPrice < 0 || p.MonthlyPrice > MaxMoney {
		return bad("monthly_price", "%s is not an amount from 0 to %s", p.MonthlyPrice, MaxMoney)
	}
	for i, t := range p.Tiers {
		f := fmt.Sprintf("tiers[%d]", i)
		if !(t.BelowPercent > 0 && t.BelowPercent <= 100) {
			return bad(f+".below_percent", "%s is not a percentage above 0 and at most 100", fmtFloat(t.BelowPercent))
		}
		if !(t.CreditPercent >= 0 && t.CreditPercent <= 100) {
			return bad(f+".credit_percent", "%s is not a percentage from 0 to 100", fmtFloat(t.CreditPercent))
		}
	}
	for i, t := range p.Tiers {
		for j, u := range p.Tiers[:i] {
			switch {
			case t.BelowPercent == u.BelowPercent:
				return bad(fmt.Sprintf("tiers[%d].below_percent", i), "%s overlaps tiers[%d]: two tiers cannot start at the same availability", fmtFloat(t.BelowPercent), j)
			case t.BelowPercent < u.BelowPercent && t.CreditPercent < u.CreditPercent,
				t.BelowPercent > u.BelowPercent && t.CreditPercent > u.CreditPercent:
				lo, hi := t, u
				if t.BelowPercent > u.BelowPercent {
					lo, hi = u, t
				}
				return bad(fmt.Sprintf("tiers[%d].credit_percent", i),
					"%s%% conflicts with tiers[%d]: below %s%% earns %s%% but below %s%% only %s%%; a lower availability must never earn a smaller credit",
					fmtFloat(t.CreditPercent), j, fmtFloat(hi.BelowPercent), fmtFloat(hi.CreditPercent), fmtFloat(lo.BelowPercent), fmtFloat(lo.CreditPercent))
			}
		}
	}
	if h := p.MaintenanceNoticeHours; h != nil && (*h < 0 || *h > maxNoticeHours) {
		return bad("maintenance_notice_hours", "%d is not a number of hours from 0 to %d", *h, maxNoticeHours)
	}
	return nil
}

// fmtFloat writes a percentage as it would be typed: 99.95, 100, 0.5.
func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// ratOf is f as the shortest decimal that reads back as f (what the user
// typed), exactly.
func ratOf(f float64) *big.Rat {
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
	if !ok {
		return new(big.Rat) // NaN or ±Inf: Validate refuses them
	}
	return r
}

// below reports whether serving/counted, as a percentage, is strictly
// below pct, exactly: 100·serving < pct·counted. An empty counted time is
// an availability of 100 %.
func below(serving, counted time.Duration, pct float64) bool {
	if counted <= 0 {
		serving, counted = 1, 1
	}
	lhs := new(big.Rat).SetInt64(int64(serving))
	lhs.Mul(lhs, big.NewRat(100, 1))
	rhs := new(big.Rat).SetInt64(int64(counted))
	rhs.Mul(rhs, ratOf(pct))
	return lhs.Cmp(rhs) < 0
}

// Tier returns the tier that applies to an availability of serving out of
// counted (the window less the excluded time): the lowest tier whose
// BelowPercent the availability is under. ok is false when none is.
// Comparisons are exact: 99.95 % of a month is not below 99.95.
func (p *Policy) Tier(serving, counted time.Duration) (t Tier, ok bool) {
	for _, u := range p.Tiers {
		if below(serving, counted, u.BelowPercent) && (!ok || u.BelowPercent < t.BelowPercent) {
			t, ok = u, true
		}
	}
	return t, ok
}

// CreditPercent returns the credit percentage for an availability of
// serving out of counted: that of Tier, or 0.
func (p *Policy) CreditPercent(serving, counted time.Duration) float64 {
	t, _ := p.Tier(serving, counted)
	return t.CreditPercent
}

// Breached reports whether serving out of counted is below the target.
func (p *Policy) Breached(serving, counted time.Duration) bool {
	return below(serving, counted, p.TargetPercent)
}

// creditOf is pct percent of price, rounded to the cent (halves up).
func creditOf(price Money, pct float64) Money {
	if price <= 0 || pct <= 0 {
		return 0
	}
	r := new(big.Rat).SetInt64(int64(price))
	r.Mul(r, ratOf(pct))
	r.Quo(r, big.NewRat(100, 1))
	// floor(r + 1/2) = floor((2·num + den) / (2·den))
	num := new(big.Int).Mul(r.Num(), big.NewInt(2))
	num.Add(num, r.Denom())
	den := new(big.Int).Mul(r.Denom(), big.NewInt(2))
	return Money(num.Quo(num, den).Int64())
}

// policyFields are the JSON fields of a policy, in the order WritePolicy
// writes them.
var policyFields = []string{"name", "target_percent", "window", "monthly_price", "tiers", "exclude_customer_stops", "maintenance_notice_hours"}

// ParsePolicy reads a policy in JSON (see Policy) and validates it.
// Decoding is strict: unknown or repeated fields, values of the wrong type
// and data after the object are errors. name and target_percent are
// required; window defaults to "month", monthly_price to 0, tiers to none
// (no credits). The error is an *Error naming the line, column and field:
//
//	policy line 4, column 33: tiers[1].below_percent: 99.95 overlaps tiers[0]: ...
func ParsePolicy(r io.Reader) (Policy, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return Policy{}, fmt.Errorf("reading policy: %w", err)
	}
	if len(data) > 1<<20 {
		return Policy{}, &Error{Input: "policy", Err: fmt.Errorf("longer than %d bytes", 1<<20)}
	}
	w := newWalker("policy", data, 0, true)
	var p Policy
	var seenName, seenTarget bool
	err = w.object("", func(key, path string, _ int) error {
		var err error
		var off int
		switch key {
		case "name":
			seenName = true
			p.Name, err = w.str(path)
		case "target_percent":
			seenTarget = true
			p.TargetPercent, err = w.float(path)
		case "window":
			p.Window, err = w.str(path)
		case "monthly_price":
			var n json.Number
			if n, off, err = w.number(path); err == nil {
				if p.MonthlyPrice, err = ParseMoney(string(n)); err != nil {
					err = w.errorAt(off, path, err)
				}
			}
		case "tiers":
			p.Tiers, err = w.tiers(path)
		case "exclude_customer_stops":
			var b bool
			b, err = w.boolean(path)
			p.ExcludeCustomerStops = &b
		case "maintenance_notice_hours":
			var n json.Number
			if n, off, err = w.number(path); err == nil {
				h, perr := strconv.Atoi(string(n))
				if perr != nil || h < 0 || h > maxNoticeHours {
					err = w.errorf(off, path, "%s is not a whole number of hours from 0 to %d", n, maxNoticeHours)
				}
				p.MaintenanceNoticeHours = &h
			}
		}
		return err
	}, policyFields...)
	if err == nil {
		err = w.end()
	}
	if err != nil {
		return Policy{}, err
	}
	switch {
	case !seenName:
		return Policy{}, w.locate("name", fmt.Errorf("missing: name the policy, e.g. \"name\":\"gold\""))
	case !seenTarget:
		return Policy{}, w.locate("target_percent", fmt.Errorf("missing: give the promised availability, e.g. \"target_percent\":99.95"))
	}
	if p.Window == "" {
		p.Window = WindowMonth
	}
	if err := p.Validate(); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return Policy{}, w.locate(e.Field, e.Err)
		}
		return Policy{}, err
	}
	return p, nil
}

// tiers reads the array of tiers.
func (w *jsonWalker) tiers(path string) ([]Tier, error) {
	tok, off, err := w.token()
	if err != nil {
		return nil, err
	}
	w.pos[path] = off
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, w.errorf(off, path, "want an array of tiers, got %s", describe(tok))
	}
	var tiers []Tier
	for w.dec.More() {
		var t Tier
		var seenBelow, seenCredit bool
		p := fmt.Sprintf("%s[%d]", path, len(tiers))
		err := w.object(p, func(key, path string, off int) error {
			var err error
			switch key {
			case "below_percent":
				seenBelow = true
				t.BelowPercent, err = w.float(path)
			case "credit_percent":
				seenCredit = true
				t.CreditPercent, err = w.float(path)
			}
			return err
		}, "below_percent", "credit_percent")
		if err != nil {
			return nil, err
		}
		switch {
		case !seenBelow:
			return nil, w.locate(p, fmt.Errorf("missing below_percent: the availability under which the tier applies"))
		case !seenCredit:
			return nil, w.locate(p, fmt.Errorf("missing credit_percent: the share of the monthly price credited"))
		}
		tiers = append(tiers, t)
	}
	if _, _, err := w.token(); err != nil { // ']'
		return nil, err
	}
	return tiers, nil
}

// WritePolicy writes p as indented JSON, after checking it with Validate:
// what it writes, ParsePolicy reads back equal (with window "month").
func WritePolicy(w io.Writer, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Window == "" {
		p.Window = WindowMonth
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Plan is what applies to one instance: its policy and its monthly price.
type Plan struct {
	Policy       Policy
	MonthlyPrice Money
}

// PlanFunc returns the plan of an instance owned by customer. Compute and
// Classify call it once per instance and customer; its error is reported
// with the instance's name. Plans.Plan is one.
type PlanFunc func(instance, customer string) (Plan, error)

// Assignment gives an instance or a customer a policy, and optionally a
// monthly price other than the policy's.
type Assignment struct {
	Policy       string `json:"policy"`
	MonthlyPrice *Money `json:"monthly_price,omitempty"`
}

// Plans resolves the plan of each instance from named policies and
// assignments: the instance's own assignment, else its customer's, else
// Default.
type Plans struct {
	// Policies by name.
	Policies map[string]Policy
	// Default names the policy of instances with no assignment; empty
	// means such instances are an error (ErrNoPolicy).
	Default string
	// Instances and Customers assign policies by name.
	Instances map[string]Assignment
	Customers map[string]Assignment
}

// Plan returns the plan of instance, owned by customer. A policy name that
// is not in Policies is an error wrapping ErrUnknownPolicy, and no policy
// at all one wrapping ErrNoPolicy.
func (p *Plans) Plan(instance, customer string) (Plan, error) {
	a, by := Assignment{Policy: p.Default}, "the default"
	if v, ok := p.Instances[instance]; ok {
		a, by = v, "assigned to the instance"
	} else if v, ok := p.Customers[customer]; ok && customer != "" {
		a, by = v, fmt.Sprintf("assigned to customer %q", customer)
	}
	if a.Policy == "" {
		return Plan{}, fmt.Errorf("%w: assign the instance or its customer a policy, or set a default", ErrNoPolicy)
	}
	pol, ok := p.Policies[a.Policy]
	if !ok {
		return Plan{}, fmt.Errorf("%w %q (%s)", ErrUnknownPolicy, a.Policy, by)
	}
	price := pol.MonthlyPrice
	if a.MonthlyPrice != nil {
		price = *a.MonthlyPrice
	}
	return Plan{Policy: pol, MonthlyPrice: price}, nil
}
