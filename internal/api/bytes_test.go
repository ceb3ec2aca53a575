package api_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
	"pgregory.net/rapid"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    api.Bytes
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "512", want: 512},
		{in: "007", want: 7},
		{in: "512b", want: 512},
		{in: "512B", want: 512},
		{in: "1k", want: 1 << 10},
		{in: "1K", want: 1 << 10},
		{in: "1kb", want: 1 << 10},
		{in: "1KiB", want: 1 << 10},
		{in: "1KIB", want: 1 << 10},
		{in: "256M", want: 256 << 20},
		{in: "256mb", want: 256 << 20},
		{in: "256MiB", want: 256 << 20},
		{in: "1G", want: 1 << 30},
		{in: "20GiB", want: 20 << 30},
		{in: "2t", want: 2 << 40},
		{in: "3TB", want: 3 << 40},
		{in: " 1G ", want: 1 << 30},
		{in: "1 G", want: 1 << 30},
		{in: "1 kib", want: 1 << 10},
		{in: "1.5G", want: 3 << 29},
		{in: "0.5k", want: 512},
		{in: ".5K", want: 512},
		{in: "1.K", want: 1 << 10},
		{in: "1.5", want: 1},    // a fraction of a byte is dropped
		{in: "0.1K", want: 102}, // 102.4 bytes
		{in: "1.0000000000000000000000001K", want: 1 << 10},
		{in: "8388607T", want: 8388607 << 40},
		{in: "8388607.5T", want: 8388607<<40 + 1<<39},
		{in: "9223372036854775807", want: math.MaxInt64},
		{in: "9223372036854775807B", want: math.MaxInt64},
		{in: "9223372036854775807.9", want: math.MaxInt64},

		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "G", wantErr: true},
		{in: "kb", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-1G", wantErr: true},
		{in: "-0", wantErr: true},
		{in: "-", wantErr: true},
		{in: "+1", wantErr: true},
		{in: "1e3", wantErr: true},
		{in: "1e3K", wantErr: true},
		{in: "0x10", wantErr: true},
		{in: "0x1p4", wantErr: true},
		{in: "1_000", wantErr: true},
		{in: "1.2.3", wantErr: true},
		{in: ".", wantErr: true},
		{in: ".K", wantErr: true},
		{in: "1,5G", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "1Q", wantErr: true},
		{in: "1ib", wantErr: true},
		{in: "1GG", wantErr: true},
		{in: "1 0", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "inf", wantErr: true},
		{in: "Infinity", wantErr: true},
		{in: "８K", wantErr: true}, // a full-width digit
		{in: "8388608T", wantErr: true},
		{in: "8388607.99999999999999T", want: 8388607<<40 + 1<<40 - 1},
		{in: "9223372036854775808", wantErr: true},
		{in: "99999999999999999999999", wantErr: true},
		{in: "9007199254740992K", wantErr: true},
		{in: strings.Repeat("1", 65), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := api.ParseBytes(tc.in)
			switch {
			case tc.wantErr && err == nil:
				t.Errorf("ParseBytes(%q) = %d, want an error", tc.in, got)
			case !tc.wantErr && err != nil:
				t.Errorf("ParseBytes(%q) = %v, want %d", tc.in, err, tc.want)
			case !tc.wantErr && got != tc.want:
				t.Errorf("ParseBytes(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

// TestParseBytesErrorQuotesInput checks that the message names what the
// user typed, so a CLI flag error can be fixed without guessing.
func TestParseBytesErrorQuotesInput(t *testing.T) {
	for _, in := range []string{"", "12Q", "-5M", "9999999999T"} {
		t.Run(in, func(t *testing.T) {
			_, err := api.ParseBytes(in)
			if err == nil {
				t.Fatalf("ParseBytes(%q) = nil error, want one", in)
			}
			if q := fmt.Sprintf("%q", in); !strings.Contains(err.Error(), q) {
				t.Errorf("ParseBytes(%q) error = %q, want it to quote the input as %s", in, err, q)
			}
		})
	}
}

func TestBytesString(t *testing.T) {
	tests := []struct {
		in   api.Bytes
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{1536, "1536"},
		{1 << 20, "1M"},
		{1<<20 + 1024, "1025K"},
		{3 << 30, "3G"},
		{1025 << 30, "1025G"},
		{1 << 40, "1T"},
		{8388607 << 40, "8388607T"},
		{math.MaxInt64, "9223372036854775807"},
		{-1024, "-1K"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.in.String(); got != tc.want {
				t.Errorf("Bytes(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
			}
		})
	}
}

func TestBytesHuman(t *testing.T) {
	tests := []struct {
		in   api.Bytes
		want string
	}{
		{0, "0"},
		{1023, "1023"},
		{1024, "1.0K"},
		{1536, "1.5K"},
		{1 << 20, "1.0M"},
		{1<<30 + 1<<29, "1.5G"},
		{5 << 40, "5.0T"},
		{2000 << 40, "2000.0T"},
		{-5, "-5"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.in.Human(); got != tc.want {
				t.Errorf("Bytes(%d).Human() = %q, want %q", int64(tc.in), got, tc.want)
			}
		})
	}
}

func TestBytesStringParsesBack(t *testing.T) {
	for _, b := range []api.Bytes{0, 1, 1023, 1024, 1025, 1 << 20, 3 << 30, 1<<40 + 1, 8388607 << 40, math.MaxInt64} {
		t.Run(b.String(), func(t *testing.T) {
			got, err := api.ParseBytes(b.String())
			if err != nil || got != b {
				t.Errorf("ParseBytes(%q) = %d, %v, want %d, nil", b.String(), got, err, int64(b))
			}
		})
	}
}

func TestBytesUnmarshalJSON(t *testing.T) {
	const unchanged = api.Bytes(7)
	tests := []struct {
		name    string
		in      string
		want    api.Bytes
		wantErr bool
	}{
		{name: "integer", in: `1073741824`, want: 1 << 30},
		{name: "zero", in: `0`, want: 0},
		{name: "minus zero", in: `-0`, want: 0},
		{name: "string with unit", in: `"1G"`, want: 1 << 30},
		{name: "string without unit", in: `"512"`, want: 512},
		{name: "string with spaces", in: `" 256 MiB "`, want: 256 << 20},
		{name: "escaped string", in: `"1\u0047"`, want: 1 << 30},
		{name: "null leaves the value", in: `null`, want: unchanged},
		{name: "max", in: `9223372036854775807`, want: math.MaxInt64},

		{name: "negative integer", in: `-5`, wantErr: true},
		{name: "fraction", in: `1.5`, wantErr: true},
		{name: "exponent", in: `1e9`, wantErr: true},
		{name: "integer too large", in: `9223372036854775808`, wantErr: true},
		{name: "negative too large", in: `-9223372036854775809`, wantErr: true},
		{name: "bad unit", in: `"12Q"`, wantErr: true},
		{name: "negative string", in: `"-1G"`, wantErr: true},
		{name: "empty string", in: `""`, wantErr: true},
		{name: "string too large", in: `"8388608T"`, wantErr: true},
		{name: "bool", in: `true`, wantErr: true},
		{name: "array", in: `[1]`, wantErr: true},
		{name: "object", in: `{"n":1}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := unchanged
			err := json.Unmarshal([]byte(tc.in), &b)
			switch {
			case tc.wantErr && err == nil:
				t.Errorf("Unmarshal(%s) = %d, want an error", tc.in, int64(b))
			case !tc.wantErr && err != nil:
				t.Errorf("Unmarshal(%s) = %v, want %d", tc.in, err, int64(tc.want))
			case !tc.wantErr && b != tc.want:
				t.Errorf("Unmarshal(%s) = %d, want %d", tc.in, int64(b), int64(tc.want))
			}
		})
	}
}

func TestBytesMarshalJSONIsInteger(t *testing.T) {
	for _, b := range []api.Bytes{0, 1, 1 << 30, math.MaxInt64} {
		t.Run(b.String(), func(t *testing.T) {
			data, err := json.Marshal(b)
			if err != nil {
				t.Fatalf("Marshal(%d) = %v", int64(b), err)
			}
			if want := fmt.Sprint(int64(b)); string(data) != want {
				t.Errorf("Marshal(%d) = %s, want %s", int64(b), data, want)
			}
			var back api.Bytes
			if err := json.Unmarshal(data, &back); err != nil || back != b {
				t.Errorf("Unmarshal(%s) = %d, %v, want %d, nil", data, int64(back), err, int64(b))
			}
		})
	}
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"", 1}, {"b", 1},
	{"k", 1 << 10}, {"kb", 1 << 10}, {"kib", 1 << 10},
	{"m", 1 << 20}, {"mb", 1 << 20}, {"mib", 1 << 20},
	{"g", 1 << 30}, {"gb", 1 << 30}, {"gib", 1 << 30},
	{"t", 1 << 40}, {"tb", 1 << 40}, {"tib", 1 << 40},
}

// randomCase upper-cases the letters of s where the mask's bits say so.
func randomCase(s string, mask uint64) string {
	r := []byte(s)
	for i := range r {
		if mask&(1<<i) != 0 {
			r[i] = byte(strings.ToUpper(string(r[i]))[0])
		}
	}
	return string(r)
}

func TestBytesRapidStringRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Mix arbitrary values with exact multiples of each unit, which is
		// where String picks a suffix.
		var b api.Bytes
		if rapid.Bool().Draw(t, "multiple") {
			u := rapid.SampledFrom(units).Draw(t, "unit")
			n := rapid.Int64Range(0, math.MaxInt64/u.mult).Draw(t, "n")
			b = api.Bytes(n * u.mult)
		} else {
			b = api.Bytes(rapid.Int64Range(0, math.MaxInt64).Draw(t, "b"))
		}
		s := b.String()
		got, err := api.ParseBytes(s)
		if err != nil || got != b {
			t.Fatalf("ParseBytes(%q) = %d, %v, want %d, nil", s, int64(got), err, int64(b))
		}
	})
}

func TestBytesRapidParseWithUnit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		u := rapid.SampledFrom(units).Draw(t, "unit")
		n := rapid.Int64Range(0, math.MaxInt64/u.mult).Draw(t, "n")
		space := rapid.SampledFrom([]string{"", " "}).Draw(t, "space")
		s := fmt.Sprintf("%d%s%s", n, space, randomCase(u.suffix, rapid.Uint64().Draw(t, "case")))
		got, err := api.ParseBytes(s)
		if err != nil || int64(got) != n*u.mult {
			t.Fatalf("ParseBytes(%q) = %d, %v, want %d, nil", s, int64(got), err, n*u.mult)
		}
		// The same size in JSON, as a string, decodes to the same value.
		var fromJSON api.Bytes
		q, _ := json.Marshal(s)
		if err := json.Unmarshal(q, &fromJSON); err != nil || fromJSON != got {
			t.Fatalf("Unmarshal(%s) = %d, %v, want %d, nil", q, int64(fromJSON), err, int64(got))
		}
	})
}
