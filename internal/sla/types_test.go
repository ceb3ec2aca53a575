package sla

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseMoney(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Money
		wantErr bool
	}{
		{"100", 10000, false},
		{"9.99", 999, false},
		{"9.9", 990, false},
		{"0", 0, false},
		{"0.00", 0, false},
		{"-1.5", -150, false},
		{"1e2", 10000, false},
		{"1.5E+1", 1500, false},
		{"123e-2", 123, false},
		{"1230e-3", 123, false},
		{"10000000000", 1000000000000, false},
		{"10000000000.01", 0, true},
		{"9.999", 0, true},
		{"1e-3", 0, true},
		{"", 0, true},
		{".5", 0, true},
		{"5.", 0, true},
		{"+5", 0, true},
		{"1e", 0, true},
		{"1e++2", 0, true},
		{"1/2", 0, true},
		{"1e999999999", 0, true},
		{"NaN", 0, true},
		{"\"5\"", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseMoney(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseMoney(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestMoneyAndSecondsJSON(t *testing.T) {
	t.Parallel()
	for _, m := range []Money{0, 1, 10, 100, 999, 123456, -5, -150, MaxMoney} {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back Money
		if err := json.Unmarshal(b, &back); err != nil || back != m {
			t.Errorf("Money %d -> %s -> %d, %v", m, b, back, err)
		}
	}
	for _, s := range []Seconds{0, 1, Seconds(time.Second), Seconds(1320 * time.Second), Seconds(250 * time.Millisecond), -Seconds(time.Nanosecond), Seconds(31 * 24 * time.Hour), Seconds(1<<62 + 1)} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back Seconds
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("Seconds %d -> %s -> %d, %v", s, b, back, err)
		}
	}
	if got := Seconds(1320 * time.Second).String(); got != "1320" {
		t.Errorf("String = %q", got)
	}
	if got := Seconds(1500 * time.Millisecond).String(); got != "1.5" {
		t.Errorf("String = %q", got)
	}
	if got := Money(1050).String(); got != "10.50" {
		t.Errorf("String = %q", got)
	}
	for _, bad := range []string{"1e3", "1.0000000001", "", "-", "x", "99999999999999999999"} {
		if _, err := ParseSeconds(bad); err == nil {
			t.Errorf("ParseSeconds(%q) succeeded", bad)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"}, {250 * time.Millisecond, "0.25s"}, {45 * time.Second, "45s"}, {22 * time.Minute, "22m"},
		{22*time.Minute + 5*time.Second, "22m5s"}, {65 * time.Minute, "1h5m"}, {76 * time.Hour, "3d4h"}, {48 * time.Hour, "2d"},
	} {
		if got := FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	for _, tc := range []struct {
		p    float64
		want string
	}{
		{100, "100.000%"}, {99.99995, "99.999%"}, {99.94907407407408, "99.949%"}, {99.95, "99.950%"}, {0, "0.000%"},
		{100 * (1 - 1296.0/2592000), "99.950%"},
	} {
		if got := FormatPercent(tc.p); got != tc.want {
			t.Errorf("FormatPercent(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestListsAreCopies(t *testing.T) {
	t.Parallel()
	c, s := Causes(), States()
	c[0], s[0] = "x", "x"
	if Causes()[0] != CauseHostFailure || States()[0] != Serving || !CauseHostFailure.Valid() || !Serving.Valid() {
		t.Error("changing a returned list changed the package's")
	}
	if len(Causes()) != 8 || len(States()) != 4 || Cause("x").Valid() || State("x").Valid() {
		t.Error("lists")
	}
}
