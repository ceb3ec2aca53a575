package api_test

import (
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestOperationFilter(t *testing.T) {
	op := &api.Operation{Instance: "web-1", State: api.OpSucceeded}
	tests := []struct {
		name      string
		f         api.OperationFilter
		wantField string // "" = valid
		wantMsg   string
		match     bool
	}{
		{name: "empty matches all", match: true},
		{name: "instance", f: api.OperationFilter{Instance: "web-1"}, match: true},
		{name: "other instance", f: api.OperationFilter{Instance: "web-2"}},
		{name: "state", f: api.OperationFilter{State: api.OpSucceeded}, match: true},
		{name: "other state", f: api.OperationFilter{Instance: "web-1", State: api.OpFailed}},
		{name: "bad instance", f: api.OperationFilter{Instance: "Web_1"}, wantField: "instance"},
		{name: "bad state", f: api.OperationFilter{State: "running"}, wantField: "state",
			wantMsg: `state: must be Running, Succeeded, Failed or Cancelled, got "running"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Validate()
			if got := fieldOf(err); got != tc.wantField {
				t.Fatalf("Validate() = %v, want field %q", err, tc.wantField)
			}
			if tc.wantMsg != "" && err.Error() != tc.wantMsg {
				t.Errorf("Validate() = %q, want %q", err, tc.wantMsg)
			}
			if err == nil {
				if got := tc.f.Match(op); got != tc.match {
					t.Errorf("Match() = %v, want %v", got, tc.match)
				}
			}
		})
	}
}
