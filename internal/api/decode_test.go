package api_test

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ferrycluster/ferry/internal/api"
)

const validCreate = `{"name":"web-1","spec":{"cpus":2,"memory":"512M","disk":10737418240,"image":"debian-12","state":"running","owner":"acme"}}`

func TestDecodeBytesCreateInstance(t *testing.T) {
	want := api.CreateInstanceRequest{Name: "web-1", Spec: validSpec()}
	tests := []struct {
		name      string
		in        string
		want      *api.CreateInstanceRequest // checked when there is no error
		wantErr   bool
		wantField string // the field the error names; "" for none
	}{
		{name: "valid", in: validCreate, want: &want},
		{name: "surrounding whitespace", in: "\n\t " + validCreate + " \r\n", want: &want},
		{name: "partial object", in: `{"name":"web-1"}`, want: &api.CreateInstanceRequest{Name: "web-1"}},
		{name: "empty object", in: `{}`, want: &api.CreateInstanceRequest{}},
		{name: "escaped key", in: `{"n\u0061me":"web-1"}`, want: &api.CreateInstanceRequest{Name: "web-1"}},

		{name: "empty body", in: ``, wantErr: true},
		{name: "whitespace body", in: " \n\t", wantErr: true},
		{name: "unknown top-level field", in: `{"name":"a","extra":1}`, wantErr: true, wantField: "extra"},
		{name: "unknown nested field", in: `{"name":"a","spec":{"cpus":1,"gpus":1}}`, wantErr: true, wantField: "spec.gpus"},
		{name: "key in wrong case", in: `{"Name":"a"}`, wantErr: true, wantField: "Name"},
		{name: "nested key in wrong case", in: `{"spec":{"CPUs":1}}`, wantErr: true, wantField: "spec.CPUs"},
		{name: "duplicate key", in: `{"name":"a","name":"b"}`, wantErr: true, wantField: "name"},
		{name: "duplicate nested key", in: `{"spec":{"cpus":1,"cpus":2}}`, wantErr: true, wantField: "spec.cpus"},
		{name: "string for int", in: `{"spec":{"cpus":"2"}}`, wantErr: true, wantField: "spec.cpus"},
		{name: "float for int", in: `{"spec":{"cpus":1.5}}`, wantErr: true, wantField: "spec.cpus"},
		{name: "number for string", in: `{"name":5}`, wantErr: true, wantField: "name"},
		{name: "object for string", in: `{"spec":{"image":{}}}`, wantErr: true, wantField: "spec.image"},
		{name: "array for object", in: `{"spec":[]}`, wantErr: true, wantField: "spec"},
		{name: "bad size string", in: `{"spec":{"memory":"12Q"}}`, wantErr: true, wantField: "spec.memory"},
		{name: "negative size", in: `{"spec":{"memory":-5}}`, wantErr: true, wantField: "spec.memory"},
		{name: "negative size string", in: `{"spec":{"disk":"-1G"}}`, wantErr: true, wantField: "spec.disk"},
		{name: "size too large", in: `{"spec":{"disk":"9999999T"}}`, wantErr: true, wantField: "spec.disk"},
		{name: "fractional size number", in: `{"spec":{"disk":1.5}}`, wantErr: true, wantField: "spec.disk"},
		{name: "bool size", in: `{"spec":{"disk":true}}`, wantErr: true, wantField: "spec.disk"},
		{name: "array body", in: `[]`, wantErr: true},
		{name: "string body", in: `"web-1"`, wantErr: true},
		{name: "two objects", in: `{} {}`, wantErr: true},
		{name: "trailing garbage", in: `{}x`, wantErr: true},
		{name: "trailing bracket", in: `{}]`, wantErr: true},
		{name: "trailing brace", in: `{}}`, wantErr: true},
		{name: "trailing comma", in: `{},`, wantErr: true},
		{name: "trailing number", in: `{} 1`, wantErr: true},
		{name: "truncated", in: `{"name":"a"`, wantErr: true},
		{name: "truncated key", in: `{"na`, wantErr: true},
		{name: "syntax error", in: `{"name" "a"}`, wantErr: true},
		{name: "single quotes", in: `{'name':'a'}`, wantErr: true},
		{name: "comment", in: `{"name":"a"} // hi`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got api.CreateInstanceRequest
			err := api.DecodeBytes([]byte(tc.in), &got)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("DecodeBytes(%s) = %+v, want an error", tc.in, got)
				}
				var fe *api.FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("DecodeBytes(%s) = %v (%T), want a *api.FieldError", tc.in, err, err)
				}
				if fe.Field != tc.wantField {
					t.Errorf("DecodeBytes(%s) = %v, field %q, want field %q", tc.in, err, fe.Field, tc.wantField)
				}
				if fe.Message == "" {
					t.Errorf("DecodeBytes(%s) error has no message", tc.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeBytes(%s) = %v, want nil", tc.in, err)
			}
			if !reflect.DeepEqual(got, *tc.want) {
				t.Errorf("DecodeBytes(%s) = %+v, want %+v", tc.in, got, *tc.want)
			}
		})
	}
}

// TestDecodeBytesSizeErrorNamesField checks that a bad size reaches the user
// with the field and the reason, not only the reason.
func TestDecodeBytesSizeErrorNamesField(t *testing.T) {
	var r api.CreateInstanceRequest
	err := api.DecodeBytes([]byte(`{"spec":{"memory":"12Q"}}`), &r)
	if err == nil {
		t.Fatal("DecodeBytes(bad memory) = nil, want an error")
	}
	msg := err.Error()
	for _, want := range []string{"spec.memory", `"12Q"`, "256M"} {
		if !strings.Contains(msg, want) {
			t.Errorf("DecodeBytes(bad memory) = %q, want it to mention %s", msg, want)
		}
	}
}

func TestDecodeBytesOtherTypes(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		into      func() any
		want      any
		wantField string
		wantErr   bool
	}{
		{
			name: "join request",
			in:   `{"token":"t","node":"host-1","csr":"pem"}`,
			into: func() any { return new(api.JoinRequest) },
			want: &api.JoinRequest{Token: "t", Node: "host-1", CSR: "pem"},
		},
		{
			name: "heartbeat with sizes",
			in:   `{"capacity":{"cpus":8,"memory":"32G","disk":"1T"},"accel":"kvm"}`,
			into: func() any { return new(api.Heartbeat) },
			want: &api.Heartbeat{Capacity: api.Resources{CPUs: 8, Memory: 32 << 30, Disk: 1 << 40}, Accel: "kvm"},
		},
		{
			name:      "heartbeat bad size",
			in:        `{"capacity":{"cpus":8,"memory":"lots"}}`,
			into:      func() any { return new(api.Heartbeat) },
			wantErr:   true,
			wantField: "capacity.memory",
		},
		{
			name: "embedded meta fields",
			in:   `{"name":"web-1","uid":"u1","spec":{"cpus":1},"status":{"phase":"Running"}}`,
			into: func() any { return new(api.Instance) },
			want: &api.Instance{Meta: api.Meta{Name: "web-1", UID: "u1"}, Spec: api.InstanceSpec{CPUs: 1}, Status: api.InstanceStatus{Phase: api.PhaseRunning}},
		},
		{
			name:      "embedded meta field in wrong case",
			in:        `{"Uid":"u1"}`,
			into:      func() any { return new(api.Instance) },
			wantErr:   true,
			wantField: "Uid",
		},
		{
			name: "map keys are free",
			in:   `{"spec":{"labels":{"Zone":"a","zone":"b"}}}`,
			into: func() any { return new(api.Node) },
			want: &api.Node{Spec: api.NodeSpec{Labels: map[string]string{"Zone": "a", "zone": "b"}}},
		},
		{
			name:      "duplicate map key",
			in:        `{"spec":{"labels":{"zone":"a","zone":"b"}}}`,
			into:      func() any { return new(api.Node) },
			wantErr:   true,
			wantField: "spec.labels.zone",
		},
		{
			name:      "unknown field in a list item",
			in:        `{"items":[{"name":"a"},{"name":"b","bogus":1}]}`,
			into:      func() any { return new(api.List[api.Instance]) },
			wantErr:   true,
			wantField: "items[1].bogus",
		},
		{
			name: "join token request",
			in:   `{"ttlSeconds":60}`,
			into: func() any { return new(api.JoinTokenRequest) },
			want: &api.JoinTokenRequest{TTLSeconds: 60},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.into()
			err := api.DecodeBytes([]byte(tc.in), got)
			if tc.wantErr {
				if f := fieldOf(err); f != tc.wantField {
					t.Errorf("DecodeBytes(%s) = %v (field %q), want field %q", tc.in, err, f, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeBytes(%s) = %v, want nil", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DecodeBytes(%s) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestDecodeBodySize(t *testing.T) {
	// pad makes a valid body of exactly n bytes: an object, then spaces.
	pad := func(n int) []byte {
		b := []byte(`{"name":"a"}`)
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...)
	}
	tests := []struct {
		name    string
		body    []byte
		wantBig bool
	}{
		{name: "at the limit", body: pad(api.MaxBodyBytes)},
		{name: "one byte over", body: pad(api.MaxBodyBytes + 1), wantBig: true},
		{name: "far over", body: pad(4 * api.MaxBodyBytes), wantBig: true},
		{name: "over with garbage", body: bytes.Repeat([]byte("x"), api.MaxBodyBytes+1), wantBig: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			decoders := map[string]func(v any) error{
				"DecodeBytes": func(v any) error { return api.DecodeBytes(tc.body, v) },
				"Decode":      func(v any) error { return api.Decode(bytes.NewReader(tc.body), v) },
			}
			for fname, decode := range decoders {
				var r api.CreateInstanceRequest
				err := decode(&r)
				if got := errors.Is(err, api.ErrBodyTooLarge); got != tc.wantBig {
					t.Errorf("%s(%d bytes) = %v, want ErrBodyTooLarge: %v", fname, len(tc.body), err, tc.wantBig)
				}
				if !tc.wantBig && err != nil {
					t.Errorf("%s(%d bytes) = %v, want nil", fname, len(tc.body), err)
				}
			}
		})
	}
}

func TestDecodeReader(t *testing.T) {
	readErr := errors.New("connection reset")
	tests := []struct {
		name     string
		r        io.Reader
		wantErr  error // checked with errors.Is
		wantName string
	}{
		{name: "valid", r: strings.NewReader(validCreate), wantName: "web-1"},
		{name: "one byte at a time", r: iotest.OneByteReader(strings.NewReader(validCreate)), wantName: "web-1"},
		{name: "read error", r: iotest.ErrReader(readErr), wantErr: readErr},
		{name: "read error after data", r: io.MultiReader(strings.NewReader(`{"name":`), iotest.ErrReader(readErr)), wantErr: readErr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r api.CreateInstanceRequest
			err := api.Decode(tc.r, &r)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Decode() = %v, want an error wrapping %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || r.Name != tc.wantName {
				t.Errorf("Decode() = %v, name %q, want nil, name %q", err, r.Name, tc.wantName)
			}
		})
	}
}
