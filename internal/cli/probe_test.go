package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestParseProbe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    *api.Probe
		wantErr string
	}{
		{in: "tcp:22", want: &api.Probe{Type: "tcp", Ports: []int{22}}},
		{in: "tcp:22,80", want: &api.Probe{Type: "tcp", Ports: []int{22, 80}}},
		{in: " tcp:22, 80 ", want: &api.Probe{Type: "tcp", Ports: []int{22, 80}}},
		{in: "http:80", want: &api.Probe{Type: "http", Ports: []int{80}}},
		{in: "http:80/healthz", want: &api.Probe{Type: "http", Ports: []int{80}, Path: "/healthz"}},
		{in: "http:80,8080/a/b?full=1", want: &api.Probe{Type: "http", Ports: []int{80, 8080}, Path: "/a/b?full=1"}},
		{in: "http:443/", want: &api.Probe{Type: "http", Ports: []int{443}, Path: "/"}},
		{in: "", wantErr: `--probe: "" is not a probe: use tcp:PORT[,PORT...] or http:PORT[,PORT...][/PATH], e.g. tcp:22,80 or http:80/healthz`},
		{in: "22", wantErr: `--probe: "22" is not a probe: use tcp:PORT`},
		{in: ":22", wantErr: `--probe: ":22" is not a probe`},
		{in: "udp:53", wantErr: `--probe: unknown probe type "udp": use tcp:PORT`},
		{in: "TCP:22", wantErr: `--probe: unknown probe type "TCP"`},
		{in: "tcp:", wantErr: `--probe: "tcp:" gives no port: use tcp:PORT`},
		{in: "http:/healthz", wantErr: `--probe: "http:/healthz" gives no port`},
		{in: "tcp:22/healthz", wantErr: `--probe: a tcp probe has no path, got "tcp:22/healthz"; did you mean http:22/healthz?`},
		{in: "tcp:0", wantErr: `--probe: "0" is not a TCP port (1-65535)`},
		{in: "tcp:65536", wantErr: `--probe: "65536" is not a TCP port (1-65535)`},
		{in: "tcp:ssh", wantErr: `--probe: "ssh" is not a TCP port (1-65535)`},
		{in: "tcp:22,,80", wantErr: `--probe: "" is not a TCP port (1-65535)`},
		{in: "http:80healthz", wantErr: `--probe: "80healthz" is not a TCP port (1-65535)`},
		{in: "tcp:1,2,3,4,5,6,7,8,9", wantErr: "--probe: give 1 to 8 ports, got 9"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseProbe(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseProbe(%q) = %+v, %v, want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseProbe(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
			}
			if back := formatProbe(*got); back != strings.ReplaceAll(strings.TrimSpace(tc.in), " ", "") {
				t.Errorf("formatProbe(parseProbe(%q)) = %q, want the input back", tc.in, back)
			}
		})
	}
}
