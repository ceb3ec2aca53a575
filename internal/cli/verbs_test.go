package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestNodeImageVersionCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		env       map[string]string // overrides of the test environment; "" deletes
		wantOut   []string
		wantErr   string
		wantReqs  []string
		wantExact string
	}{
		{
			name: "node ls",
			args: []string{"node", "ls"},
			wantExact: "" +
				"NAME   STATE                    CPUS(ALLOC/CAP)   MEMORY(ALLOC/CAP)   DISK(ALLOC/CAP)   SINCE   ADDRESS\n" +
				"n1     Ready                    2/4               512M/8G             4G/100G           5h      10.0.0.1\n" +
				"n2     NotReady,Unschedulable   0/8               0/16.1G             0/200G            30s     10.0.0.2\n",
		},
		{
			name:    "node show",
			args:    []string{"nodes", "show", "n1"},
			wantOut: []string{"State:", "Ready", "Capacity:", "4 CPUs, 8G memory, 100G disk", "Allocated:", "2 CPUs, 512M memory, 4G disk", "Free:", "2 CPUs, 7.5G memory, 96G disk", "Labels:", "rack=r1,zone=a", "Accelerator:", "kvm", "(1s ago)"},
		},
		{
			name:    "node show missing",
			args:    []string{"node", "show", "x"},
			wantErr: `node "x" not found`,
		},
		{
			name:     "node join-token",
			args:     []string{"node", "join-token", "--ttl", "30m"},
			wantOut:  []string{"    ferry-join.abc123.s3cr3t\n", "valid until 2025-06-01 12:30:00", "ferry agent --server https://127.0.0.1:", " --token ferry-join.abc123.s3cr3t\n"},
			wantReqs: []string{"POST /v1/join-tokens"},
		},
		{
			name:    "node join-token --json",
			args:    []string{"node", "join-token", "--json"},
			wantOut: []string{`"token": "ferry-join.abc123.s3cr3t"`, `"expiresAt": "2025-06-01T13:00:00Z"`},
		},
		{
			name:    "node join-token bad ttl",
			args:    []string{"node", "join-token", "--ttl", "-1h"},
			wantErr: "--ttl: must be between 1s and 168h",
		},
		{
			name:     "node rm",
			args:     []string{"node", "rm", "n2"},
			wantOut:  []string{`node "n2" removed`},
			wantReqs: []string{"DELETE /v1/nodes/n2"},
		},
		{
			name:    "node rm busy",
			args:    []string{"node", "rm", "n1"},
			wantErr: `node "n1" still holds instance "web-1"; drain it or pass force (conflict)`,
		},
		{
			name:     "node rm --force",
			args:     []string{"node", "rm", "n1", "--force"},
			wantOut:  []string{`node "n1" removed`},
			wantReqs: []string{"DELETE /v1/nodes/n1?force=true"},
		},
		{
			name:    "node rm missing",
			args:    []string{"node", "rm", "x"},
			wantErr: `node "x" not found`,
		},
		{
			name: "image ls",
			args: []string{"image", "ls"},
			wantExact: "" +
				"NAME     READY   SIZE   SHA256         SOURCE                   AGE\n" +
				"broken   no      -      -              /srv/images/broken.img   90s\n" +
				"demo     yes     64M    9f86d081884c   builtin:demo             3d\n",
		},
		{
			name:    "version",
			args:    []string{"version"},
			wantOut: []string{"Client: v1.2.3 (go", "Server: v9.9.9 (go1.26.8) at https://127.0.0.1:"},
		},
		{
			name:    "version, server unreachable",
			args:    []string{"version"},
			env:     map[string]string{"FERRY_SERVER": "https://127.0.0.1:1"},
			wantOut: []string{"Client: v1.2.3", "Server: unavailable: GET https://127.0.0.1:1/v1/version: dial tcp 127.0.0.1:1:", "Is the ferry server running at https://127.0.0.1:1?"},
		},
		{
			name:    "version, nothing configured",
			args:    []string{"version"},
			env:     map[string]string{"FERRY_SERVER": "", "FERRY_TOKEN": ""},
			wantOut: []string{"Client: v1.2.3", "Server: unavailable: no server configured: run `ferry dev`, or pass --server and --token"},
		},
		{
			name:    "no server configured",
			args:    []string{"instance", "ls"},
			env:     map[string]string{"FERRY_SERVER": "", "FERRY_TOKEN": ""},
			wantErr: "no server configured: run `ferry dev`, or pass --server and --token",
		},
		{
			name:    "no token",
			args:    []string{"instance", "ls"},
			env:     map[string]string{"FERRY_TOKEN": ""},
			wantErr: "no token for server https://127.0.0.1:",
		},
		{
			name:    "wrong token",
			args:    []string{"instance", "ls", "--token", "nope"},
			wantErr: "the server rejected the token: missing or invalid bearer token (unauthorized)\nCheck --token or FERRY_TOKEN.",
		},
		{
			name:    "untrusted server certificate",
			args:    []string{"node", "ls"},
			env:     map[string]string{"FERRY_CA_FILE": ""},
			wantErr: "The server's certificate is not trusted: pass --ca-file",
		},
		{
			name:    "missing CA file",
			args:    []string{"node", "ls", "--ca-file", "/nonexistent/ca.crt"},
			wantErr: "reading the CA file: open /nonexistent/ca.crt: no such file or directory",
		},
		{
			name:    "http refused",
			args:    []string{"node", "ls", "--server", "http://127.0.0.1:7443"},
			wantErr: `only https:// is supported`,
		},
		{
			name:    "bad --log-format",
			args:    []string{"--log-format", "xml", "version"},
			wantErr: `invalid argument "xml" for "--log-format" flag: must be "text" or "json"`,
		},
		{
			name:    "unknown command",
			args:    []string{"frobnicate"},
			wantErr: `unknown command "frobnicate" for "ferry"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			for k, v := range tc.env {
				e.env[k] = v
			}
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantExact != "" && r.stdout != tc.wantExact {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, tc.wantExact)
			}
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
		})
	}
}

func TestJoinTokenTTLSent(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.run(t, runOpts{}, "node", "join-token", "--ttl", "30m")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got, want := strings.TrimSpace(e.api.body("/v1/join-tokens")), `{"ttlSeconds":1800}`; got != want {
		t.Errorf("join-token body = %s, want %s", got, want)
	}
}

func TestEventsCommand(t *testing.T) {
	t.Parallel()
	local := func(d time.Duration) string { return testNow.Add(d).Local().Format("2006-01-02 15:04:05") }
	header := "TIME                 OBJECT                        TYPE           NODE          MESSAGE\n"
	lines := header +
		local(-3*time.Hour) + "  instance/web-1                Created        -\n" +
		local(-2*time.Hour) + "  instance/web-1                Running        n1            booted in 4s\n" +
		local(-30*time.Second) + "  node/n2                       NodeNotReady   n2            lease expired [2J\n"
	tests := []struct {
		name        string
		args        []string
		cancelAfter int
		closeWatch  bool
		wantExact   string
		wantJSON    int // number of JSON lines expected
		wantErr     string
		wantReq     string
	}{
		{name: "no-watch", args: []string{"events", "--no-watch"}, wantExact: lines, wantReq: "GET /v1/events"},
		{name: "no-watch limit", args: []string{"events", "--no-watch", "--limit", "1"}, wantExact: header + strings.SplitAfter(lines, "\n")[3], wantReq: "GET /v1/events?limit=1"},
		{name: "watch until interrupted", args: []string{"events"}, cancelAfter: 4, wantExact: lines, wantReq: "GET /v1/events?watch=true"},
		{name: "watch limit", args: []string{"events", "--limit", "2"}, cancelAfter: 3, wantExact: header + strings.Join(strings.SplitAfter(lines, "\n")[2:4], ""), wantReq: "GET /v1/events?limit=2&watch=true"},
		{name: "watch json", args: []string{"events", "--json"}, cancelAfter: 3, wantJSON: 3, wantReq: "GET /v1/events?watch=true"},
		{name: "server ends the stream", args: []string{"events"}, closeWatch: true, wantErr: "the server closed the event stream", wantReq: "GET /v1/events?watch=true"},
		{name: "negative limit", args: []string{"events", "--limit", "-1"}, wantErr: "--limit: must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			e.api.closeWatch = tc.closeWatch
			r := e.run(t, runOpts{cancelAfterLines: tc.cancelAfter}, tc.args...)
			r.check(t, nil, tc.wantErr)
			if tc.wantExact != "" && r.stdout != tc.wantExact {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, tc.wantExact)
			}
			if tc.wantJSON > 0 {
				got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
				if len(got) != tc.wantJSON {
					t.Fatalf("got %d lines, want %d JSON lines:\n%s", len(got), tc.wantJSON, r.stdout)
				}
				for i, l := range got {
					var ev api.Event
					if err := json.Unmarshal([]byte(l), &ev); err != nil {
						t.Fatalf("line %d is not an event: %v", i, err)
					}
					if !reflect.DeepEqual(normalise(ev), normalise(e.api.events[i])) {
						t.Errorf("line %d = %+v, want %+v", i, ev, e.api.events[i])
					}
				}
			}
			if tc.wantReq != "" {
				if got := e.api.requestLog(); len(got) != 1 || got[0] != tc.wantReq {
					t.Errorf("requests = %q, want [%q]", got, tc.wantReq)
				}
			}
		})
	}
}
