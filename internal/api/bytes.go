package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
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

// maxSizeLen caps the length of a size string: no valid size needs more, and
// it keeps the exact arithmetic on fractions cheap.
const maxSizeLen = 64

// ParseBytes reads a size such as "512", "256M", "1.5G" or "20GiB".
// A bare number is bytes. Units are binary (M = MiB) and case-insensitive.
// The number is decimal digits with an optional fraction; a fraction of a
// byte is dropped ("1.5" is 1 byte, "0.1K" is 102).
func ParseBytes(s string) (Bytes, error) {
	b, reason := parseBytes(s)
	switch reason {
	case "":
		return b, nil
	case reasonTooLarge, reasonNegative:
		return 0, fmt.Errorf("size %q is %s", s, reason)
	}
	return 0, fmt.Errorf("size %q is %s: write a number with a binary unit (B, K, M, G, T), such as 256M or 1.5G", s, reason)
}

// Reasons parseBytes gives for rejecting a size.
const (
	reasonEmpty     = "empty"
	reasonTooLong   = "too long"
	reasonNoNumber  = "missing its number"
	reasonNegative  = "negative"
	reasonTooLarge  = "too large"
	reasonNotNumber = "not a number with a unit"
)

// parseBytes is ParseBytes without the error message: it returns the size or
// a short reason why s is not one.
func parseBytes(s string) (Bytes, string) {
	in := strings.TrimSpace(s)
	switch {
	case in == "":
		return 0, reasonEmpty
	case len(in) > maxSizeLen:
		return 0, reasonTooLong
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
		return 0, reasonNoNumber
	}
	if num[0] == '-' && isDecimal(num[1:]) {
		return 0, reasonNegative
	}
	whole, frac, _ := strings.Cut(num, ".")
	if !isDecimal(num) {
		return 0, reasonNotNumber
	}
	var n int64
	if whole != "" {
		var err error
		// whole is all digits, so the only possible error is overflow.
		if n, err = strconv.ParseInt(whole, 10, 64); err != nil {
			return 0, reasonTooLarge
		}
	}
	if n > math.MaxInt64/mult {
		return 0, reasonTooLarge
	}
	v := n * mult
	if frac != "" {
		// floor(0.frac * mult), exactly; it is below mult, so it fits.
		f, _ := new(big.Int).SetString(frac, 10)
		f.Mul(f, big.NewInt(mult))
		f.Quo(f, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
		if v > math.MaxInt64-f.Int64() {
			return 0, reasonTooLarge
		}
		v += f.Int64()
	}
	return Bytes(v), ""
}

// isDecimal reports whether s is digits with at most one '.', and at least
// one digit: "12", "1.5", ".5" and "1." are, "", ".", "1e3" and "+1" are not.
func isDecimal(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
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

// bytesType is the reflect.Type of Bytes, which DecodeBytes recognises in
// the errors UnmarshalJSON returns.
var bytesType = reflect.TypeFor[Bytes]()

// UnmarshalJSON accepts a JSON integer or a string with a unit; null leaves b
// unchanged. It rejects anything else with a *json.UnmarshalTypeError whose
// Value describes the JSON value and why it is not a size, such as
// `string "12Q" (not a number with a unit)`. encoding/json adds the field
// path to that error type only, so DecodeBytes can name the field.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return bytesTypeError("string")
		}
		v, reason := parseBytes(s)
		if reason != "" {
			return bytesTypeError(fmt.Sprintf("string %q (%s)", s, reason))
		}
		*b = v
		return nil
	}
	var n int64
	if err := json.Unmarshal(data, &n); err != nil {
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			return bytesTypeError("invalid JSON")
		}
		value := typeErr.Value
		if text, ok := strings.CutPrefix(value, "number "); ok {
			reason := "not an integer"
			switch {
			case strings.HasPrefix(text, "-"):
				reason = "negative"
			case isDecimal(text) && !strings.Contains(text, "."):
				reason = "too large"
			}
			value += " (" + reason + ")"
		}
		return bytesTypeError(value)
	}
	if n < 0 {
		return bytesTypeError(fmt.Sprintf("number %d (negative)", n))
	}
	*b = Bytes(n)
	return nil
}

func bytesTypeError(value string) error {
	return &json.UnmarshalTypeError{Value: value, Type: bytesType}
}
