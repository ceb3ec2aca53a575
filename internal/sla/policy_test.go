package sla

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	p := gold(t)
	want := Policy{Name: "gold", TargetPercent: 99.95, Window: "month", MonthlyPrice: 10000,
		Tiers: []Tier{{99.95, 10}, {99, 25}, {95, 100}}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("ParsePolicy = %+v, want %+v", p, want)
	}
	if !p.ExcludesCustomerStops() || p.MaintenanceNotice() != 48*time.Hour {
		t.Errorf("defaults: %v, %v", p.ExcludesCustomerStops(), p.MaintenanceNotice())
	}
	var b bytes.Buffer
	if err := WritePolicy(&b, p); err != nil {
		t.Fatal(err)
	}
	again, err := ParsePolicy(&b)
	if err != nil || !reflect.DeepEqual(again, p) {
		t.Errorf("round trip = %+v, %v", again, err)
	}

	full := `{
  "name": "silver-2",
  "target_percent": 99.5,
  "monthly_price": 12.5,
  "exclude_customer_stops": false,
  "maintenance_notice_hours": 0
}`
	p, err = ParsePolicy(strings.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	if p.Window != "month" || p.Tiers != nil || p.MonthlyPrice != 1250 || p.ExcludesCustomerStops() || p.MaintenanceNotice() != 0 {
		t.Errorf("ParsePolicy(full) = %+v", p)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"overlapping tiers", `{"name":"gold","target_percent":99.95,
 "tiers":[{"below_percent":99.95,"credit_percent":10},
          {"below_percent":99.95,"credit_percent":25}]}`,
			"policy line 3, column 28: tiers[1].below_percent: 99.95 overlaps tiers[0]: two tiers cannot start at the same availability"},
		{"credits decrease", `{"name":"gold","target_percent":99.95,"tiers":[{"below_percent":99,"credit_percent":25},{"below_percent":95,"credit_percent":10}]}`,
			"policy line 1, column 126: tiers[1].credit_percent: 10% conflicts with tiers[0]: below 99% earns 25% but below 95% only 10%; a lower availability must never earn a smaller credit"},
		{"credits decrease, other order", `{"name":"gold","target_percent":99.95,"tiers":[{"below_percent":95,"credit_percent":10},{"below_percent":99,"credit_percent":25}]}`,
			"policy line 1, column 126: tiers[1].credit_percent: 25% conflicts with tiers[0]: below 99% earns 25% but below 95% only 10%; a lower availability must never earn a smaller credit"},
		{"target above 100", `{"name":"gold","target_percent":100.5}`,
			"policy line 1, column 33: target_percent: 100.5 is not a percentage above 0 and at most 100"},
		{"target 0", `{"name":"gold","target_percent":0}`,
			"policy line 1, column 33: target_percent: 0 is not a percentage above 0 and at most 100"},
		{"missing target", `{"name":"gold"}`,
			`policy line 1, column 1: target_percent: missing: give the promised availability, e.g. "target_percent":99.95`},
		{"missing name", `{"target_percent":99}`, `policy line 1, column 1: name: missing: name the policy, e.g. "name":"gold"`},
		{"bad name", `{"name":"Gold!","target_percent":99}`,
			`policy line 1, column 9: name: "Gold!" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit`},
		{"window", `{"name":"gold","target_percent":99,"window":"week"}`,
			`policy line 1, column 45: window: "week" is not supported: the only window is "month" (the calendar month)`},
		{"negative price", `{"name":"gold","target_percent":99,"monthly_price":-1}`,
			"policy line 1, column 52: monthly_price: -1.00 is not an amount from 0 to 10000000000.00"},
		{"fraction of a cent", `{"name":"gold","target_percent":99,"monthly_price":9.999}`,
			"policy line 1, column 52: monthly_price: 9.999 has fractions of a cent: give at most two decimals"},
		{"credit above 100", `{"name":"gold","target_percent":99,"tiers":[{"below_percent":99,"credit_percent":150}]}`,
			"policy line 1, column 82: tiers[0].credit_percent: 150 is not a percentage from 0 to 100"},
		{"below 0", `{"name":"gold","target_percent":99,"tiers":[{"below_percent":0,"credit_percent":10}]}`,
			"policy line 1, column 62: tiers[0].below_percent: 0 is not a percentage above 0 and at most 100"},
		{"tier without credit", `{"name":"gold","target_percent":99,"tiers":[{"below_percent":99}]}`,
			"policy line 1, column 45: tiers[0]: missing credit_percent: the share of the monthly price credited"},
		{"unknown field", `{"name":"gold","target_percent":99,"tiers":[{"below_percent":99,"credit":10}]}`,
			`policy line 1, column 65: tiers[0]: unknown field "credit" (known: below_percent, credit_percent)`},
		{"unknown top field", `{"name":"gold","target":99}`,
			`policy line 1, column 16: unknown field "target" (known: name, target_percent, window, monthly_price, tiers, exclude_customer_stops, maintenance_notice_hours)`},
		{"repeated field", `{"name":"gold","name":"x","target_percent":99}`, `policy line 1, column 16: field "name" given twice`},
		{"string for a number", `{"name":"gold","target_percent":"99.95"}`,
			`policy line 1, column 33: target_percent: want a number, got "99.95"`},
		{"tiers not an array", `{"name":"gold","target_percent":99,"tiers":{}}`,
			"policy line 1, column 44: tiers: want an array of tiers, got an object"},
		{"notice hours", `{"name":"gold","target_percent":99,"maintenance_notice_hours":1.5}`,
			"policy line 1, column 63: maintenance_notice_hours: 1.5 is not a whole number of hours from 0 to 8784"},
		{"data after", `{"name":"gold","target_percent":99} {}`, "policy line 1, column 37: unexpected data after the object: an object"},
		{"syntax", "{\"name\":\"gold\",\n\"target_percent\":99,}", "policy line 2, column 20: invalid character '}' looking for beginning of object key string"},
		{"empty", ``, "policy line 1, column 1: unexpected end of JSON"},
		{"huge exponent", `{"name":"gold","target_percent":1e999}`, "policy line 1, column 33: target_percent: 1e999 is out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParsePolicy(strings.NewReader(tc.in))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v (%T), want an *Error", err, err)
			}
			if err.Error() != tc.want {
				t.Errorf("error =\n%s\nwant\n%s", err, tc.want)
			}
		})
	}
}

func TestTier(t *testing.T) {
	t.Parallel()
	p := gold(t)
	month := 30 * 24 * time.Hour // 2 592 000 s
	tests := []struct {
		name       string
		down       time.Duration
		wantCredit float64
		wantBreach bool
	}{
		{"no downtime", 0, 0, false},
		{"exactly 99.95%", 1296 * time.Second, 0, false},
		{"a nanosecond more", 1296*time.Second + 1, 10, true},
		{"22 minutes: 99.949%", 22 * time.Minute, 10, true},
		{"exactly 99%", 25920 * time.Second, 10, true},
		{"just under 99%", 25920*time.Second + time.Millisecond, 25, true},
		{"just under 95%", 129600*time.Second + time.Second, 100, true},
		{"all month", month, 100, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			serving := month - tc.down
			if got := p.CreditPercent(serving, month); got != tc.wantCredit {
				t.Errorf("CreditPercent(down %v) = %v, want %v", tc.down, got, tc.wantCredit)
			}
			if got := p.Breached(serving, month); got != tc.wantBreach {
				t.Errorf("Breached(down %v) = %v, want %v", tc.down, got, tc.wantBreach)
			}
		})
	}
	if got := p.CreditPercent(0, 0); got != 0 {
		t.Errorf("CreditPercent with nothing counted = %v, want 0 (100%% available)", got)
	}
	for _, tc := range []struct {
		price Money
		pct   float64
		want  Money
	}{
		{10000, 10, 1000}, {999, 10, 100}, {999, 25, 250}, {1, 50, 1}, {1, 49, 0}, {333, 12.5, 42}, {0, 100, 0}, {MaxMoney, 100, MaxMoney},
	} {
		if got := creditOf(tc.price, tc.pct); got != tc.want {
			t.Errorf("creditOf(%s, %v) = %s, want %s", tc.price, tc.pct, got, tc.want)
		}
	}
}

func TestPlans(t *testing.T) {
	t.Parallel()
	g := gold(t)
	silver := Policy{Name: "silver", TargetPercent: 99, MonthlyPrice: 5000}
	special := Money(7000)
	plans := &Plans{
		Policies:  map[string]Policy{"gold": g, "silver": silver},
		Default:   "silver",
		Customers: map[string]Assignment{"acme": {Policy: "gold"}, "evil": {Policy: "platinum"}},
		Instances: map[string]Assignment{"db-1": {Policy: "silver", MonthlyPrice: &special}},
	}
	tests := []struct {
		instance, customer string
		policy             string
		price              Money
		err                error
	}{
		{"web-1", "acme", "gold", 10000, nil},
		{"db-1", "acme", "silver", 7000, nil},
		{"web-2", "", "silver", 5000, nil},
		{"web-3", "other", "silver", 5000, nil},
		{"web-4", "evil", "", 0, ErrUnknownPolicy},
	}
	for _, tc := range tests {
		got, err := plans.Plan(tc.instance, tc.customer)
		if !errors.Is(err, tc.err) || err == nil && (got.Policy.Name != tc.policy || got.MonthlyPrice != tc.price) {
			t.Errorf("Plan(%s, %s) = %s %s, %v; want %s %s, %v", tc.instance, tc.customer, got.Policy.Name, got.MonthlyPrice, err, tc.policy, tc.price, tc.err)
		}
	}
	_, err := plans.Plan("web-4", "evil")
	if want := `unknown policy "platinum" (assigned to customer "evil")`; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	plans.Default = ""
	if _, err := plans.Plan("web-2", ""); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("no default: %v", err)
	}
}
