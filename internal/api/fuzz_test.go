package api_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

// FuzzDecodeCreateInstance feeds arbitrary bodies to the create endpoint's
// decoding and validation. Neither may panic, and a request that passes both
// must survive being encoded and decoded again unchanged.
func FuzzDecodeCreateInstance(f *testing.F) {
	for _, seed := range []string{
		validCreate,
		`{"name":"a","spec":{"cpus":1,"memory":16777216,"disk":"1M","image":"i"}}`,
		`{"name":"b","spec":{"cpus":1024,"memory":"16T","disk":"64TiB","image":"x-1","state":"stopped","owner":"Zoë \u003c\u003e"}}`,
		`{"name":"c","spec":{"cpus":1,"memory":"1.5G","disk":"0.5G","image":"i"}}`,
		`{"name":"a","name":"b"}`,
		`{"Name":"a"}`,
		`{"name":"a","spec":{"memory":"12Q"}}`,
		`{"name":"a","spec":{"memory":-1}}`,
		`{"name":"a","spec":{"cpus":"1"}}`,
		`{"name":"a","spec":{"gpus":1}}`,
		`{} {}`,
		`{"name":"a"`,
		`null`,
		`[]`,
		``,
		`{"spec":{"owner":"\u0000"}}`,
		`{"name":"\ud800"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r api.CreateInstanceRequest
		if err := api.DecodeBytes(data, &r); err != nil {
			return
		}
		if err := r.Validate(nil); err != nil {
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("Marshal(%+v) = %v", r, err)
		}
		var again api.CreateInstanceRequest
		if err := api.DecodeBytes(out, &again); err != nil {
			t.Fatalf("DecodeBytes(%s) = %v, re-encoding a valid request (from %q)", out, err, data)
		}
		if err := again.Validate(nil); err != nil {
			t.Fatalf("Validate(%+v) = %v, re-decoding a valid request (from %q)", again, err, data)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("DecodeBytes(Marshal(r)) = %+v, want %+v (from %q)", again, r, data)
		}
	})
}

// FuzzParseBytes feeds arbitrary strings to ParseBytes. It may not panic, and
// what it accepts must format with String to something that parses back to
// the same size, and must decode the same from a JSON string.
func FuzzParseBytes(f *testing.F) {
	for _, seed := range []string{
		"0", "512", "1K", "256M", "1.5G", "20GiB", "3tb", " 1 g ", ".5k", "1.",
		"8388607T", "8388607.99999T", "8388608T", "9223372036854775807", "9223372036854775808",
		"", "-1", "+1", "1e3", "0x1p4", "NaN", "inf", "1Q", "kb", "1.2.3",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := api.ParseBytes(s)
		if err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ParseBytes(%q) = %d, want a non-negative size", s, int64(b))
		}
		back, err := api.ParseBytes(b.String())
		if err != nil || back != b {
			t.Fatalf("ParseBytes(%q) = %d, %v, want %d, nil (String of ParseBytes(%q))", b.String(), int64(back), err, int64(b), s)
		}
		q, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("Marshal(%q) = %v", s, err)
		}
		var fromJSON api.Bytes
		if err := json.Unmarshal(q, &fromJSON); err != nil || fromJSON != b {
			t.Fatalf("Unmarshal(%s) = %d, %v, want %d, nil", q, int64(fromJSON), err, int64(b))
		}
	})
}
