package sla

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// State is what an instance is doing for the customer, as the ledger
// records it.
type State string

// States of an instance.
const (
	// Serving: the instance answers its health probe.
	Serving State = "serving"
	// Down: the instance does not serve, and the time counts against
	// the provider. A down event always carries its Cause.
	Down State = "down"
	// Excluded: the instance does not serve, but the policy does not
	// count the time (a customer's stop, maintenance announced in time).
	// The Cause says which: CauseCustomerStop or CauseMaintenance.
	Excluded State = "excluded"
	// Deleted: the instance left the ledger (it was deleted). Its window
	// ends here; a later event of the same name starts it again. This
	// state is ferry's addition to the three of the issue.
	Deleted State = "deleted"
)

// stateOrder is every State in the order reports use.
var stateOrder = [...]State{Serving, Down, Excluded, Deleted}

// States returns every State in the order reports use (a new slice each
// time).
func States() []State {
	out := stateOrder
	return out[:]
}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	switch s {
	case Serving, Down, Excluded, Deleted:
		return true
	}
	return false
}

// Cause is why an instance was not serving.
type Cause string

// Causes of downtime.
const (
	CauseHostFailure       Cause = "host-failure"        // the instance's host died
	CauseFailover          Cause = "failover"            // promoting the replica and booting there
	CauseMigration         Cause = "migration"           // the switch of a live or cold migration
	CauseCrash             Cause = "crash"               // the VM (QEMU) exited on its own
	CauseGuestNotAnswering Cause = "guest-not-answering" // the VM runs but its probe fails
	CauseCustomerStop      Cause = "customer-stop"       // the customer stopped it
	CauseMaintenance       Cause = "maintenance"         // the provider's maintenance
	CauseUnknown           Cause = "unknown"             // not serving, and nobody knows why
)

// causeOrder is every Cause in the order reports use.
var causeOrder = [...]Cause{
	CauseHostFailure, CauseFailover, CauseMigration, CauseCrash,
	CauseGuestNotAnswering, CauseCustomerStop, CauseMaintenance, CauseUnknown,
}

// Causes returns every Cause in the order reports use (CSV columns, the
// legend of the chart), as a new slice.
func Causes() []Cause {
	out := causeOrder
	return out[:]
}

// Valid reports whether c is one of Causes.
func (c Cause) Valid() bool {
	return causeIndex(c) < len(causeOrder)
}

// causeIndex orders causes as Causes does.
func causeIndex(c Cause) int {
	for i, k := range causeOrder {
		if c == k {
			return i
		}
	}
	return len(causeOrder)
}

// Money is an amount in cents (hundredths of the currency's unit). It is
// written in JSON and CSV as a decimal number with two decimals ("12.50"),
// so sums of amounts are exact: a report's totals equal the sum of its rows
// to the cent.
type Money int64

// MaxMoney bounds every price: 10 billion units. Sums over millions of
// instances cannot overflow.
const MaxMoney Money = 1e12

// ParseMoney reads a decimal amount such as "100", "9.99" or "1e2". More
// than two decimals (fractions of a cent), signs other than a leading '-',
// and amounts beyond MaxMoney are errors.
func ParseMoney(s string) (Money, error) {
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	mant, exp := body, 0
	if i := strings.IndexAny(body, "eE"); i >= 0 {
		mant = body[:i]
		e := body[i+1:]
		if len(e) > 0 && (e[0] == '+' || e[0] == '-') {
			e = e[1:]
		}
		n, err := strconv.Atoi(e)
		if err != nil || !allDigits(e) || n > 40 {
			return 0, fmt.Errorf("%q is not an amount such as 100 or 9.99", s)
		}
		exp = n
		if body[i+1] == '-' {
			exp = -n
		}
	}
	whole, frac, dot := strings.Cut(mant, ".")
	if whole == "" || dot && frac == "" || !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("%q is not an amount such as 100 or 9.99", s)
	}
	// value = digits × 10^scale cents
	digits := strings.TrimLeft(whole+frac, "0")
	scale := exp - len(frac) + 2
	for scale < 0 && digits != "" {
		if digits[len(digits)-1] != '0' {
			return 0, fmt.Errorf("%s has fractions of a cent: give at most two decimals", s)
		}
		digits = digits[:len(digits)-1]
		scale++
	}
	if digits == "" {
		return 0, nil
	}
	if len(digits)+scale > 13 {
		return 0, fmt.Errorf("%s is more than %s", s, MaxMoney)
	}
	digits += strings.Repeat("0", scale)
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || Money(n) > MaxMoney {
		return 0, fmt.Errorf("%s is more than %s", s, MaxMoney)
	}
	if neg {
		n = -n
	}
	return Money(n), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String writes m with two decimals: "12.50", "-0.05".
func (m Money) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-m)
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}

// Float returns m in units, for charts and estimates.
func (m Money) Float() float64 { return float64(m) / 100 }

// MarshalJSON writes m as a JSON number with two decimals.
func (m Money) MarshalJSON() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalJSON reads a JSON number as ParseMoney does.
func (m *Money) UnmarshalJSON(b []byte) error {
	v, err := ParseMoney(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Seconds is a duration written in JSON and CSV as a decimal number of
// seconds, exactly (to the nanosecond: "1320", "0.25"). Reports keep
// durations as Seconds so that their sums are exact.
type Seconds time.Duration

// Duration returns s as a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) }

// String writes s as a decimal number of seconds without trailing zeros.
func (s Seconds) String() string {
	sign := ""
	u := uint64(s)
	if s < 0 {
		sign, u = "-", uint64(-s)
	}
	whole, frac := u/uint64(time.Second), u%uint64(time.Second)
	if frac == 0 {
		return sign + strconv.FormatUint(whole, 10)
	}
	f := strings.TrimRight(fmt.Sprintf("%09d", frac), "0")
	return sign + strconv.FormatUint(whole, 10) + "." + f
}

// ParseSeconds reads what String writes: an optional '-', digits, and up
// to nine decimals.
func ParseSeconds(str string) (Seconds, error) {
	bad := fmt.Errorf("%q is not a number of seconds such as 1320 or 0.25", str)
	neg := strings.HasPrefix(str, "-")
	whole, frac, dot := strings.Cut(strings.TrimPrefix(str, "-"), ".")
	if whole == "" || dot && frac == "" || len(frac) > 9 || !allDigits(whole) || !allDigits(frac) {
		return 0, bad
	}
	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || w > uint64(1<<63-1)/uint64(time.Second)-1 {
		return 0, errors.Join(bad, errors.New("out of range"))
	}
	f := uint64(0)
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	}
	v := int64(w*uint64(time.Second) + f)
	if neg {
		v = -v
	}
	return Seconds(v), nil
}

// MarshalJSON writes s as a JSON number of seconds.
func (s Seconds) MarshalJSON() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON reads a JSON number of seconds as ParseSeconds does.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	v, err := ParseSeconds(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
