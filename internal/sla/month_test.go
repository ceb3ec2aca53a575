package sla

import (
	"errors"
	"testing"
	"time"
)

func TestParseMonth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Month
		err  string
	}{
		{"2026-11", Month{2026, time.November}, ""},
		{"0001-01", Month{1, time.January}, ""},
		{"9999-12", Month{9999, time.December}, ""},
		{"2026-13", Month{}, `"2026-13" is not a month: the month must be 01 to 12`},
		{"2026-00", Month{}, `"2026-00" is not a month: the month must be 01 to 12`},
		{"0000-05", Month{}, `"0000-05" is not a month: the year must be 0001 to 9999`},
		{"2026-1", Month{}, `"2026-1" is not a month: write YYYY-MM, e.g. 2026-11`},
		{"26-11", Month{}, `"26-11" is not a month: write YYYY-MM, e.g. 2026-11`},
		{" 2026-11", Month{}, `" 2026-11" is not a month: write YYYY-MM, e.g. 2026-11`},
		{"2026/11", Month{}, `"2026/11" is not a month: write YYYY-MM, e.g. 2026-11`},
		{"2026-1a", Month{}, `"2026-1a" is not a month: write YYYY-MM, e.g. 2026-11`},
		{"", Month{}, `"" is not a month: write YYYY-MM, e.g. 2026-11`},
	} {
		got, err := ParseMonth(tc.in)
		if tc.err == "" && (err != nil || got != tc.want) || tc.err != "" && (err == nil || err.Error() != tc.err) {
			t.Errorf("ParseMonth(%q) = %v, %v; want %v, %q", tc.in, got, err, tc.want, tc.err)
		}
		if tc.err == "" && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
	if (Month{2026, time.December}).Next() != (Month{2027, time.January}) || (Month{2026, time.January}).Prev() != (Month{2025, time.December}) {
		t.Error("Next/Prev across a year")
	}
}

func TestMonthWindow(t *testing.T) {
	t.Parallel()
	b := berlin(t)
	for _, tc := range []struct {
		month string
		loc   *time.Location
		from  string
		len   time.Duration
	}{
		{"2026-02", time.UTC, "2026-02-01T00:00:00Z", 28 * 24 * time.Hour},
		{"2028-02", time.UTC, "2028-02-01T00:00:00Z", 29 * 24 * time.Hour},
		{"2026-11", nil, "2026-11-01T00:00:00Z", 30 * 24 * time.Hour},
		{"2026-02", b, "2026-01-31T23:00:00Z", 28 * 24 * time.Hour},
		{"2026-03", b, "2026-02-28T23:00:00Z", 31*24*time.Hour - time.Hour}, // summer time begins
		{"2026-10", b, "2026-09-30T22:00:00Z", 31*24*time.Hour + time.Hour}, // and ends
	} {
		w := MonthWindow(month(t, tc.month), tc.loc)
		if !w.From.Equal(tm(t, tc.from)) || w.Length() != tc.len {
			t.Errorf("MonthWindow(%s, %v) = [%v, %v), length %v; want from %s, length %v", tc.month, tc.loc, w.From, w.To, w.Length(), tc.from, tc.len)
		}
	}
}

func TestLiveWindow(t *testing.T) {
	t.Parallel()
	m := month(t, "2026-11")
	now := tm(t, "2026-11-10T12:00:00Z")
	w, err := LiveWindow(m, nil, now)
	if err != nil || !w.To.Equal(now) || !w.From.Equal(tm(t, "2026-11-01T00:00:00Z")) {
		t.Errorf("current month: %+v, %v", w, err)
	}
	w, err = LiveWindow(month(t, "2026-10"), nil, now)
	if err != nil || !w.To.Equal(tm(t, "2026-11-01T00:00:00Z")) {
		t.Errorf("past month: %+v, %v", w, err)
	}
	_, err = LiveWindow(month(t, "2026-12"), nil, now)
	want := "month 2026-12: the month has not begun (it begins 2026-12-01 00:00 UTC, it is now 2026-11-10 12:00 UTC): a live report covers months up to the current one; for what-if questions use ferry sla replay"
	if !errors.Is(err, ErrMonthNotBegun) || err.Error() != want {
		t.Errorf("future month: %v", err)
	}
	if _, err := LiveWindow(m, nil, tm(t, "2026-11-01T00:00:00Z")); !errors.Is(err, ErrMonthNotBegun) {
		t.Errorf("first instant of the month: %v", err)
	}
	if _, err := (Window{}).Cut(now); err != nil {
		t.Errorf("Cut of a zero window: %v", err)
	}
}
