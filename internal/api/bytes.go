package api

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bytes is a size in bytes. In JSON it is written as a plain integer and read
// either as an integer or as a string with a unit ("256M", "1GiB", "20G"), so
// people can type sizes the way they think of them and scripts get numbers.
type Bytes int64

// Binary units: ferry, like QEMU and Ganeti, means 1024-based sizes whether
// the user writes "M", "MB" or "MiB".
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"tb", 1 << 40},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseBytes reads a size such as "512", "256M", "1.5G" or "20GiB".
// A bare number is bytes. Units are binary (M = MiB).
func ParseBytes(s string) (Bytes, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("empty size: write a number with a unit, such as 256M or 1G")
	}
	lower := strings.ToLower(in)
	mult := int64(1)
	num := lower
	for _, u := range byteUnits {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(lower, u.suffix))
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q has no number: write e.g. 256M or 1G", s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("size %q is negative", s)
		}
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return Bytes(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("size %q is not a number with a unit (B, K, M, G, T; e.g. 256M, 1.5G)", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Bytes(v), nil
}

// String formats b with the largest binary unit that divides it exactly,
// so the output parses back to the same value.
func (b Bytes) String() string {
	v := int64(b)
	if v == 0 {
		return "0"
	}
	for _, u := range []struct {
		s string
		m int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if v%u.m == 0 {
			return strconv.FormatInt(v/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(v, 10)
}

// Human formats b approximately (one decimal) for tables.
func (b Bytes) Human() string {
	v := float64(b)
	for _, u := range []string{"", "K", "M", "G", "T"} {
		if v < 1024 || u == "T" {
			if u == "" {
				return strconv.FormatInt(int64(b), 10)
			}
			return strconv.FormatFloat(v, 'f', 1, 64) + u
		}
		v /= 1024
	}
	return b.String()
}

// UnmarshalJSON accepts a JSON integer or a string with a unit.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		v, err := ParseBytes(s)
		if err != nil {
			return err
		}
		*b = v
		return nil
	}
	var n int64
	if err := json.Unmarshal(data, &n); err != nil {
		return fmt.Errorf("size must be an integer number of bytes or a string such as \"256M\"")
	}
	if n < 0 {
		return fmt.Errorf("size must not be negative")
	}
	*b = Bytes(n)
	return nil
}
