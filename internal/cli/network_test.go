package cli

import (
	"reflect"
	"strings"
	"testing"
)

func TestNetworkCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		wantOut   []string
		wantErr   string
		wantReqs  []string // nil: not checked
		wantBody  string   // body of the create request, if checked
		wantExact string
	}{
		{
			name:     "create",
			args:     []string{"network", "create", "dmz", "--cidr", "10.99.0.0/24", "--gateway", "10.99.0.1", "--reserve", "10.99.0.2,10.99.0.3", "--reserve", "10.99.0.8-10.99.0.15"},
			wantOut:  []string{`network "dmz" created (10.99.0.0/24, gateway 10.99.0.1)`},
			wantReqs: []string{"POST /v1/networks"},
			wantBody: `{"name":"dmz","cidr":"10.99.0.0/24","gateway":"10.99.0.1","reserved":["10.99.0.2","10.99.0.3","10.99.0.8-10.99.0.15"]}`,
		},
		{
			name:     "create minimal, alias net",
			args:     []string{"net", "create", "dmz", "--cidr", "10.99.0.0/24"},
			wantOut:  []string{`network "dmz" created (10.99.0.0/24)`},
			wantBody: `{"name":"dmz","cidr":"10.99.0.0/24"}`,
		},
		{
			name:    "create --json",
			args:    []string{"--json", "network", "create", "dmz", "--cidr", "10.99.0.0/24"},
			wantOut: []string{`"name": "dmz"`, `"cidr": "10.99.0.0/24"`, `"uid": "uid-dmz"`},
		},
		{
			name:     "create without --cidr",
			args:     []string{"network", "create", "dmz"},
			wantErr:  "--cidr is required, e.g. --cidr 10.77.0.0/24",
			wantReqs: []string{},
		},
		{
			name:     "create bad --cidr",
			args:     []string{"network", "create", "dmz", "--cidr", "10.99.0.1/24"},
			wantErr:  `--cidr: "10.99.0.1/24" has host bits set; did you mean 10.99.0.0/24?`,
			wantReqs: []string{},
		},
		{
			name:     "create --gateway outside",
			args:     []string{"network", "create", "dmz", "--cidr", "10.99.0.0/24", "--gateway", "10.1.0.1"},
			wantErr:  `--gateway: "10.1.0.1" is not an address inside 10.99.0.0/24`,
			wantReqs: []string{},
		},
		{
			name:     "create bad name",
			args:     []string{"network", "create", "DMZ", "--cidr", "10.99.0.0/24"},
			wantErr:  `NAME: "DMZ" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name:    "create existing",
			args:    []string{"network", "create", "lan", "--cidr", "10.77.0.0/24"},
			wantErr: `network "lan" already exists`,
		},
		{
			name: "ls",
			args: []string{"network", "ls"},
			wantExact: "" +
				"NAME    CIDR           GATEWAY     RESERVED\n" +
				"empty   10.88.0.0/16   -           -\n" +
				"lan     10.77.0.0/24   10.77.0.1   10.77.0.2,10.77.0.3\n",
			wantReqs: []string{"GET /v1/networks"},
		},
		{
			name:    "show",
			args:    []string{"networks", "show", "lan"},
			wantOut: []string{detail("Name", "lan"), detail("CIDR", "10.77.0.0/24"), detail("Gateway", "10.77.0.1"), detail("Reserved", "10.77.0.2, 10.77.0.3"), detail("Created", "2025-06-01 08:00:00 UTC (4h ago)")},
		},
		{
			name:    "show missing",
			args:    []string{"network", "show", "x"},
			wantErr: `network "x" not found`,
		},
		{
			name:     "rm",
			args:     []string{"network", "rm", "empty"},
			wantOut:  []string{`network "empty" removed`},
			wantReqs: []string{"DELETE /v1/networks/empty"},
		},
		{
			name:    "rm in use",
			args:    []string{"network", "rm", "lan"},
			wantErr: `network "lan" still has instances (or changed); remove them first (conflict)`,
		},
		{
			name:    "rm missing",
			args:    []string{"net", "delete", "x"},
			wantErr: `network "x" not found`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) && !(len(got) == 0 && len(tc.wantReqs) == 0) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
			if tc.wantBody != "" {
				if got := strings.TrimSpace(e.api.body("/v1/networks")); got != tc.wantBody {
					t.Errorf("create body = %s, want %s", got, tc.wantBody)
				}
			}
			if tc.wantExact != "" && r.stdout != tc.wantExact {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, tc.wantExact)
			}
		})
	}
}
