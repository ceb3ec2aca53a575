package api_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestValidateLabels(t *testing.T) {
	tests := []struct {
		name      string
		labels    map[string]string
		wantField string
		wantMsg   string
	}{
		{name: "none"},
		{name: "ok", labels: map[string]string{"rack": "r1", "topology/zone": "eu-West.1", "a_b": "X"}},
		{name: "upper-case key", labels: map[string]string{"Rack": "r1"}, wantField: "spec.labels.Rack", wantMsg: `label key "Rack" is not valid`},
		{name: "key ends with a dash", labels: map[string]string{"rack-": "r1"}, wantField: "spec.labels.rack-", wantMsg: "not valid"},
		{name: "key too long", labels: map[string]string{strings.Repeat("k", 64): "v"}, wantField: "spec.labels." + strings.Repeat("k", 64), wantMsg: "at most 63"},
		{name: "empty value", labels: map[string]string{"rack": ""}, wantField: "spec.labels.rack", wantMsg: `label "rack" has an empty value`},
		{name: "value with a space", labels: map[string]string{"rack": "r 1"}, wantField: "spec.labels.rack", wantMsg: `value "r 1" of label "rack" is not valid`},
		{name: "value too long", labels: map[string]string{"rack": strings.Repeat("v", 64)}, wantField: "spec.labels.rack", wantMsg: "at most 63"},
		{name: "first bad key in order", labels: map[string]string{"zz": "b a d", "aa": "b a d"}, wantField: "spec.labels.aa"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := api.ValidateLabels("spec.labels", tc.labels)
			if got := fieldOf(err); got != tc.wantField {
				t.Fatalf("ValidateLabels(%v) = %v (field %q), want field %q", tc.labels, err, got, tc.wantField)
			}
			if err != nil && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("ValidateLabels(%v) = %v, want it to say %q", tc.labels, err, tc.wantMsg)
			}
		})
	}
	many := map[string]string{}
	for i := range api.MaxLabels + 1 {
		many["k"+strings.Repeat("x", i)] = "v"
	}
	if fieldOf(api.ValidateLabels("spec.labels", many)) != "spec.labels" {
		t.Fatal("too many labels accepted")
	}
}

func TestNodePatch(t *testing.T) {
	str := func(s string) *string { return &s }
	yes := true
	tests := []struct {
		name        string
		patch       api.NodePatch
		spec        api.NodeSpec
		wantField   string // validation error field ("<no field>" for one without)
		wantSpec    api.NodeSpec
		wantChanged bool
		wantDesc    string
	}{
		{name: "set on empty", patch: api.NodePatch{Labels: map[string]*string{"rack": str("r1")}},
			wantSpec: api.NodeSpec{Labels: map[string]string{"rack": "r1"}}, wantChanged: true, wantDesc: "rack=r1"},
		{name: "set, replace and remove", patch: api.NodePatch{Labels: map[string]*string{"rack": str("r2"), "zone": nil, "row": str("7")}},
			spec:     api.NodeSpec{Labels: map[string]string{"rack": "r1", "zone": "a"}},
			wantSpec: api.NodeSpec{Labels: map[string]string{"rack": "r2", "row": "7"}}, wantChanged: true, wantDesc: "rack=r2, row=7, zone removed"},
		{name: "remove the last gives nil", patch: api.NodePatch{Labels: map[string]*string{"rack": nil}},
			spec: api.NodeSpec{Labels: map[string]string{"rack": "r1"}}, wantSpec: api.NodeSpec{}, wantChanged: true, wantDesc: "rack removed"},
		{name: "no change", patch: api.NodePatch{Labels: map[string]*string{"rack": str("r1"), "gone": nil}},
			spec: api.NodeSpec{Labels: map[string]string{"rack": "r1"}}, wantSpec: api.NodeSpec{Labels: map[string]string{"rack": "r1"}}, wantDesc: "gone removed, rack=r1"},
		{name: "cordon", patch: api.NodePatch{Unschedulable: &yes}, wantSpec: api.NodeSpec{Unschedulable: true}, wantChanged: true, wantDesc: "unschedulable"},
		{name: "empty", patch: api.NodePatch{}, wantField: "<no field>"},
		{name: "bad key", patch: api.NodePatch{Labels: map[string]*string{"Rack": nil}}, wantField: "labels.Rack"},
		{name: "bad value", patch: api.NodePatch{Labels: map[string]*string{"rack": str("")}}, wantField: "labels.rack"},
		{name: "bad version", patch: api.NodePatch{Labels: map[string]*string{"rack": nil}, ResourceVersion: "x"}, wantField: "resourceVersion"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.patch.Validate()
			if got := fieldOf(err); got != tc.wantField {
				t.Fatalf("Validate = %v (field %q), want field %q", err, got, tc.wantField)
			}
			if err != nil {
				return
			}
			spec := tc.spec
			changed, err := tc.patch.Apply(&spec)
			if err != nil || changed != tc.wantChanged || !reflect.DeepEqual(spec, tc.wantSpec) {
				t.Fatalf("Apply = %v, %v, spec %+v; want %v, spec %+v", changed, err, spec, tc.wantChanged, tc.wantSpec)
			}
			if got := tc.patch.Describe(); got != tc.wantDesc {
				t.Fatalf("Describe = %q, want %q", got, tc.wantDesc)
			}
		})
	}
	// Decoding: null removes.
	var p api.NodePatch
	if err := api.DecodeBytes([]byte(`{"labels":{"rack":"r1","zone":null}}`), &p); err != nil {
		t.Fatal(err)
	}
	if v, ok := p.Labels["zone"]; !ok || v != nil || *p.Labels["rack"] != "r1" {
		t.Fatalf("decoded %+v, want rack set and zone nil", p.Labels)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    api.Resources
		wantMsg string
	}{
		{in: "1cpu,2G,20G", want: api.Resources{CPUs: 1, Memory: 2 << 30, Disk: 20 << 30}},
		{in: " 4CPUs, 512M , 1.5G ", want: api.Resources{CPUs: 4, Memory: 512 << 20, Disk: 3 << 29}},
		{in: "", wantMsg: "size: is empty; expected CPUScpu,MEMORY,DISK such as 1cpu,2G,20G"},
		{in: "lots", wantMsg: `size: "lots" has 1 parts, not 3; expected`},
		{in: "1,2G,20G", wantMsg: `the first part must be a CPU count with the suffix cpu, got "1"`},
		{in: "0cpu,2G,20G", wantMsg: "the CPU count must be a whole number between 1 and 1024"},
		{in: "1.5cpu,2G,20G", wantMsg: "the CPU count must be a whole number"},
		{in: "1cpu,2Q,20G", wantMsg: `memory: size "2Q" is not a number with a unit`},
		{in: "1cpu,1K,20G", wantMsg: "memory must be between 16M and 16T"},
		{in: "1cpu,2G,", wantMsg: `disk: size "" is empty`},
		{in: "1cpu,2G,128T", wantMsg: "disk must be between 1M and 64T"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := api.ParseSize("size", tc.in)
			switch {
			case tc.wantMsg == "" && (err != nil || got != tc.want):
				t.Fatalf("ParseSize(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			case tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg) || fieldOf(err) != "size" || !strings.Contains(err.Error(), "1cpu,2G,20G")):
				t.Fatalf("ParseSize(%q) = %v, want an error on field size saying %q and showing the form", tc.in, err, tc.wantMsg)
			}
			if err == nil {
				if back, err := api.ParseSize("size", api.FormatSize(got)); err != nil || back != got {
					t.Fatalf("FormatSize(%+v) = %q reads back as %+v, %v", got, api.FormatSize(got), back, err)
				}
			}
		})
	}
}

func TestMiB(t *testing.T) {
	tests := []struct {
		b           api.Bytes
		ceil, floor int64
	}{
		{0, 0, 0},
		{-5, 0, 0},
		{1, 1, 0},
		{1 << 20, 1, 1},
		{1<<20 + 1, 2, 1},
		{16<<30 + 123456789, 16384 + 118, 16384 + 117},
	}
	for _, tc := range tests {
		if c, f := tc.b.MiBCeil(), tc.b.MiBFloor(); c != tc.ceil || f != tc.floor {
			t.Errorf("%d bytes: MiBCeil %d MiBFloor %d, want %d and %d", tc.b, c, f, tc.ceil, tc.floor)
		}
	}
}
