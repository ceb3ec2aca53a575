package cli

import (
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
)

// clientConfig shortens client.Config in tables.
type clientConfig = client.Config

func TestShortDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{45 * time.Second, "45s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5*time.Minute + 30*time.Second, "5m30s"},
		{45 * time.Minute, "45m"},
		{90 * time.Minute, "1h30m"},
		{2 * time.Hour, "2h"},
		{20 * time.Hour, "20h"},
		{50 * time.Hour, "2d"},
		{400 * 24 * time.Hour, "400d"},
	}
	for _, tc := range tests {
		if got := shortDuration(tc.in); got != tc.want {
			t.Errorf("shortDuration(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFmtBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   api.Bytes
		want string
	}{
		{0, "0"},
		{512, "512"},
		{2000, "2.0K"},
		{256 << 20, "256M"},
		{1536 << 20, "1.5G"},
		{7680 << 20, "7.5G"},
		{100 << 30, "100G"},
		{16<<30 + 123456789, "16.1G"},
		{2 << 40, "2T"},
	}
	for _, tc := range tests {
		if got := fmtBytes(tc.in); got != tc.want {
			t.Errorf("fmtBytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://10.0.0.1:7443", "https://10.0.0.1:7443"},
		{"ferry-join.abc_1=", "ferry-join.abc_1="},
		{"", "''"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"$(rm -rf /)", "'$(rm -rf /)'"},
	}
	for _, tc := range tests {
		if got := shellQuote(tc.in); got != tc.want {
			t.Errorf("shellQuote(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestClean(t *testing.T) {
	t.Parallel()
	if got, want := clean("a\nb\x1b[2J\u009bc"), "a b [2J c"; got != want {
		t.Errorf("clean() = %q, want %q", got, want)
	}
}
