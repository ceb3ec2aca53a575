package sla

import (
	"fmt"
	"time"
)

// Month is a calendar month, such as 2026-11. Which instants it covers
// depends on a time zone: see MonthWindow.
type Month struct {
	Year  int
	Month time.Month
}

// ParseMonth reads a month written YYYY-MM, such as "2026-11": four digits
// of year (0001 to 9999), a dash and two of month (01 to 12).
func ParseMonth(s string) (Month, error) {
	bad := fmt.Errorf("%q is not a month: write YYYY-MM, e.g. 2026-11", s)
	if len(s) != 7 || s[4] != '-' || !allDigits(s[:4]) || !allDigits(s[5:]) {
		return Month{}, bad
	}
	y := int(s[0]-'0')*1000 + int(s[1]-'0')*100 + int(s[2]-'0')*10 + int(s[3]-'0')
	m := int(s[5]-'0')*10 + int(s[6]-'0')
	switch {
	case y < 1:
		return Month{}, fmt.Errorf("%q is not a month: the year must be 0001 to 9999", s)
	case m < 1 || m > 12:
		return Month{}, fmt.Errorf("%q is not a month: the month must be 01 to 12", s)
	}
	return Month{Year: y, Month: time.Month(m)}, nil
}

// MonthOf returns the month that t falls in, in t's location.
func MonthOf(t time.Time) Month { return Month{Year: t.Year(), Month: t.Month()} }

// String writes m as YYYY-MM.
func (m Month) String() string { return fmt.Sprintf("%04d-%02d", m.Year, int(m.Month)) }

// IsZero reports whether m is the zero Month.
func (m Month) IsZero() bool { return m == Month{} }

// Next returns the month after m.
func (m Month) Next() Month {
	if m.Month == time.December {
		return Month{Year: m.Year + 1, Month: time.January}
	}
	return Month{Year: m.Year, Month: m.Month + 1}
}

// Prev returns the month before m.
func (m Month) Prev() Month {
	if m.Month == time.January {
		return Month{Year: m.Year - 1, Month: time.December}
	}
	return Month{Year: m.Year, Month: m.Month - 1}
}

// Bounds returns the first instant of m in loc and the first instant of
// the next month: the month is [start, end). Across a change of daylight
// saving time the month is an hour shorter or longer than its days.
func (m Month) Bounds(loc *time.Location) (start, end time.Time) {
	if loc == nil {
		loc = time.UTC
	}
	n := m.Next()
	return time.Date(m.Year, m.Month, 1, 0, 0, 0, 0, loc), time.Date(n.Year, n.Month, 1, 0, 0, 0, 0, loc)
}

// MarshalText writes m as YYYY-MM.
func (m Month) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads YYYY-MM.
func (m *Month) UnmarshalText(b []byte) error {
	v, err := ParseMonth(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Window is the span of time a report covers: [From, To), a month in a
// time zone or the part of it that has passed. Events outside it only set
// the state an instance is in when it begins.
type Window struct {
	// Month is the calendar month the window belongs to.
	Month Month
	// From is the month's first instant, in the month's location.
	From time.Time
	// To is the end: the next month's first instant, or earlier for a
	// month still running (see Cut).
	To time.Time
}

// MonthWindow returns the whole of month m in loc (nil means UTC). A
// replay uses it for any month, past or to come.
func MonthWindow(m Month, loc *time.Location) Window {
	from, to := m.Bounds(loc)
	return Window{Month: m, From: from, To: to}
}

// LiveWindow returns the window of a live report of month m in loc, made
// at now: the whole month if it has ended, else the month up to now. A
// month that has not begun is an error wrapping ErrMonthNotBegun, since a
// live report knows nothing of it (a replay answers what-if questions).
func LiveWindow(m Month, loc *time.Location, now time.Time) (Window, error) {
	w := MonthWindow(m, loc)
	if !now.After(w.From) {
		return Window{}, fmt.Errorf("month %s: %w (it begins %s, it is now %s): a live report covers months up to the current one; for what-if questions use ferry sla replay",
			m, ErrMonthNotBegun, w.From.Format("2006-01-02 15:04 MST"), now.In(w.From.Location()).Format("2006-01-02 15:04 MST"))
	}
	return w.Cut(now)
}

// Cut ends the window at t if t comes before its end. It is an error for
// t to be at or before the window's start.
func (w Window) Cut(t time.Time) (Window, error) {
	if !t.After(w.From) {
		return Window{}, fmt.Errorf("%s is not after the window's start %s", t.Format(time.RFC3339), w.From.Format(time.RFC3339))
	}
	if t.Before(w.To) {
		w.To = t.In(w.From.Location())
	}
	return w, nil
}

// Location returns the window's time zone.
func (w Window) Location() *time.Location { return w.From.Location() }

// Length returns To - From.
func (w Window) Length() time.Duration { return w.To.Sub(w.From) }

// check refuses an empty or backward window.
func (w Window) check() error {
	if !w.To.After(w.From) {
		return fmt.Errorf("window [%s, %s) is empty", w.From.Format(time.RFC3339), w.To.Format(time.RFC3339))
	}
	return nil
}
