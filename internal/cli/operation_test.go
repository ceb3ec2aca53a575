package cli

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
)

// seedOperations adds, on top of seed, three failovers and the events of
// web-1's life around its own: it ran on n2, n2 died, it failed over to n1.
// web-2 is gone, but its running failover and events are still kept.
func seedOperations(f *fakeAPI) {
	at := func(clock string) time.Time {
		t, err := time.Parse("2006-01-02 15:04:05.000", "2025-06-01 "+clock)
		if err != nil {
			panic(err)
		}
		return t
	}
	web1 := at("10:09:55.800") // 110m4.2s before testNow
	f.operations = []api.Operation{
		{
			Meta: api.Meta{Name: "failover-web-1-3", ResourceVersion: "40", UID: "u-op3", CreatedAt: web1},
			Type: api.OpFailover, Instance: "web-1", Cause: "host n2's lease expired", From: "n2", To: "n1", Epoch: 3,
			State: api.OpSucceeded, Message: "serving on n1 4.2s after the failure was detected", BootsBefore: 2,
			StartedAt: web1, EndedAt: web1.Add(4500 * time.Millisecond),
			Steps: []api.OperationStep{
				{Name: api.StepDetected, At: web1, Message: "lease expired; last heartbeat 3.1s ago"},
				{Name: api.StepFenced, At: web1, Message: "n2's agent kills its VMs and freezes its disks once its heartbeats go unacknowledged"},
				{Name: api.StepPromoted, At: web1, Message: "n1 promoted under epoch 3; new replica n2"},
				{Name: api.StepBooted, At: web1.Add(3100 * time.Millisecond), Message: "booted on n1"},
				{Name: api.StepServing, At: web1.Add(4200 * time.Millisecond), Message: "its health probe answers on n1"},
			},
		},
		{
			Meta: api.Meta{Name: "failover-web-2-7", ResourceVersion: "52", CreatedAt: at("11:59:47.700")},
			Type: api.OpFailover, Instance: "web-2", Cause: "host n1's lease expired", From: "n1", To: "n3", Epoch: 7,
			State: api.OpRunning, BootsBefore: 1, StartedAt: at("11:59:47.700"),
			Steps: []api.OperationStep{
				{Name: api.StepDetected, At: at("11:59:47.700"), Message: "lease expired"},
				{Name: api.StepFenced, At: at("11:59:47.700")},
				{Name: api.StepPromoted, At: at("11:59:47.700"), Message: "n3 promoted under epoch 7; new replica n1"},
				{Name: api.StepBooted, At: at("11:59:57.500"), Message: "booted on n3"},
			},
		},
		{
			Meta: api.Meta{Name: "failover-db-2", ResourceVersion: "47", CreatedAt: at("11:30:00.000")},
			Type: api.OpFailover, Instance: "db", Cause: "host n1's lease expired", From: "n1", To: "n2", Epoch: 2,
			State: api.OpFailed, Message: "not serving on n2 after 5m0s: qemu: boot failed",
			StartedAt: at("11:30:00.000"), EndedAt: at("11:35:01.000"),
			Steps: []api.OperationStep{
				{Name: api.StepDetected, At: at("11:30:00.000"), Message: "lease expired"},
				{Name: api.StepFenced, At: at("11:30:00.000")},
				{Name: api.StepPromoted, At: at("11:30:00.000"), Message: "n2 promoted under epoch 2; new replica none (single node)"},
			},
		},
	}
	inst := func(id, clock, name, typ, node, msg string) api.Event {
		return api.Event{ID: id, Time: at(clock), Kind: api.KindInstance, Name: name, Type: typ, Node: node, Message: msg}
	}
	f.events = []api.Event{
		inst("1", "09:00:00.000", "web-1", "Created", "", "2 CPU, 512M memory, 4G disk, image demo"),
		inst("2", "09:00:01.000", "web-1", "Scheduled", "n2", "replica on n1"),
		inst("3", "09:00:05.000", "web-1", "Running", "n2", ""),
		inst("4", "10:09:52.700", "web-1", "NotServing", "n2", "host n2 is down"),
		{ID: "5", Time: web1, Kind: api.KindNode, Name: "n2", Type: "NodeNotReady", Node: "n2", Message: "lease expired; last heartbeat 3.1s ago"},
		inst("6", "10:09:55.800", "web-1", "FailoverStarted", "n1", "from n2 to n1 (lease expired; last heartbeat 3.1s ago); operation failover-web-1-3"),
		inst("7", "10:09:58.900", "web-1", "Booted", "n1", "boot 3"),
		inst("8", "10:10:00.000", "web-1", "Serving", "n1", ""),
		inst("9", "10:10:00.300", "web-1", "FailoverDone", "n1", "serving on n1 4.2s after the failure was detected"),
		// A node may have an instance's name: its events are not the instance's.
		{ID: "10", Time: at("11:00:00.000"), Kind: api.KindNode, Name: "web-1", Type: "NodeJoined", Node: "web-1"},
		inst("11", "11:30:00.000", "web-2", "Created", "", "1 CPU, 256M memory, 1G disk, image demo"),
		inst("12", "11:59:47.700", "web-2", "FailoverStarted", "n3", "from n1 to n3 (lease expired); operation failover-web-2-7"),
		inst("13", "11:59:58.000", "web-2", "DeleteRequested", "n3", ""),
	}
}

func TestOperationCommands(t *testing.T) {
	t.Parallel()
	const (
		lsHeader = "ID                 TYPE       INSTANCE   FROM   TO   STATE       STARTED   TOOK                MESSAGE\n"
		lsWeb2   = "failover-web-2-7   failover   web-2      n1     n3   Running     12s       running for 12.3s   booted: booted on n3\n"
		lsDB     = "failover-db-2      failover   db         n1     n2   Failed      30m       5m1s                not serving on n2 after 5m0s: qemu: boot failed\n"
		lsWeb1   = "failover-web-1-3   failover   web-1      n2     n1   Succeeded   1h50m     4.5s                serving on n1 4.2s after the failure was detected\n"
	)
	tests := []struct {
		name      string
		args      []string
		setup     func(*fakeAPI)
		wantOut   []string
		wantErr   string
		wantReqs  []string // nil: not checked; empty: none
		wantExact string
		wantJSON  any // stdout must decode to a value equal to this
	}{
		{
			name:      "ls",
			args:      []string{"operation", "ls"},
			wantExact: lsHeader + lsWeb2 + lsDB + lsWeb1,
			wantReqs:  []string{"GET /v1/operations"},
		},
		{
			name: "ls one instance",
			args: []string{"op", "ls", "--instance", "web-1"},
			wantExact: "" +
				"ID                 TYPE       INSTANCE   FROM   TO   STATE       STARTED   TOOK   MESSAGE\n" +
				"failover-web-1-3   failover   web-1      n2     n1   Succeeded   1h50m     4.5s   serving on n1 4.2s after the failure was detected\n",
			wantReqs: []string{"GET /v1/operations?instance=web-1"},
		},
		{
			name:     "ls --state in any case",
			args:     []string{"ops", "list", "--state", "failed"},
			wantOut:  []string{"failover-db-2"},
			wantReqs: []string{"GET /v1/operations?state=Failed"},
		},
		{
			name:      "ls instance and state, nothing matches",
			args:      []string{"operations", "ls", "--instance", "web-1", "--state", "Running"},
			wantExact: "ID   TYPE   INSTANCE   FROM   TO   STATE   STARTED   TOOK   MESSAGE\n",
			wantReqs:  []string{"GET /v1/operations?instance=web-1&state=Running"},
		},
		{
			name:     "ls bad --state",
			args:     []string{"operation", "ls", "--state", "done"},
			wantErr:  `--state: must be Running, Succeeded, Failed or Cancelled, got "done"`,
			wantReqs: []string{},
		},
		{
			name:     "ls bad --instance",
			args:     []string{"operation", "ls", "--instance", "Web_1"},
			wantErr:  `--instance: "Web_1" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name:    "ls unexpected argument",
			args:    []string{"operation", "ls", "web-1"},
			wantErr: `unexpected argument "web-1"`,
		},
		{
			name:     "ls --json",
			args:     []string{"operation", "ls", "--json", "--state", "Running"},
			wantOut:  []string{`"resourceVersion": "`, `"name": "failover-web-2-7"`, `"state": "Running"`, `"name": "booted"`},
			wantReqs: []string{"GET /v1/operations?state=Running"},
		},
		{
			name: "show",
			args: []string{"operation", "show", "failover-web-1-3"},
			wantExact: "" +
				"ID:                failover-web-1-3\n" +
				"Type:              failover\n" +
				"Instance:          web-1\n" +
				"Cause:             host n2's lease expired\n" +
				"From:              n2\n" +
				"To:                n1\n" +
				"Epoch:             3\n" +
				"State:             Succeeded\n" +
				"Message:           serving on n1 4.2s after the failure was detected\n" +
				"Started:           2025-06-01 10:09:55 UTC (1h50m ago)\n" +
				"Ended:             2025-06-01 10:10:00 UTC (1h49m ago)\n" +
				"Took:              4.5s\n" +
				"Boots before:      2\n" +
				"UID:               u-op3\n" +
				"Resource version:  40\n" +
				"\n" +
				"Steps:\n" +
				"  2025-06-01 10:09:55.800  +0.0s  detected  lease expired; last heartbeat 3.1s ago\n" +
				"  2025-06-01 10:09:55.800  +0.0s  fenced    n2's agent kills its VMs and freezes its disks once its heartbeats go unacknowledged\n" +
				"  2025-06-01 10:09:55.800  +0.0s  promoted  n1 promoted under epoch 3; new replica n2\n" +
				"  2025-06-01 10:09:58.900  +3.1s  booted    booted on n1\n" +
				"  2025-06-01 10:10:00.000  +4.2s  serving   its health probe answers on n1\n",
			wantReqs: []string{"GET /v1/operations/failover-web-1-3"},
		},
		{
			name: "show running, alias get",
			args: []string{"op", "get", "failover-web-2-7"},
			wantOut: []string{
				detail("State", "Running"), detail("Ended", "-"), detail("Took", "running for 12.3s"), detail("Message", "-"),
				"  2025-06-01 11:59:47.700  +0.0s  fenced\n",
				"  2025-06-01 11:59:57.500  +9.8s  booted    booted on n3\n",
			},
		},
		{
			name:    "show missing",
			args:    []string{"operation", "show", "failover-x-1"},
			wantErr: `operation "failover-x-1" not found`,
		},
		{
			name:    "show without ID",
			args:    []string{"operation", "show"},
			wantErr: "missing the operation ID (see: ferry operation ls)\nSee 'ferry operation show --help'.",
		},
		{
			name:     "show two IDs",
			args:     []string{"operation", "show", "a", "b"},
			wantErr:  "expected one operation ID, got 2 arguments: a b",
			wantReqs: []string{},
		},
		{
			name:    "show --json",
			args:    []string{"operation", "show", "failover-db-2", "--json"},
			wantOut: []string{`"name": "failover-db-2"`, `"state": "Failed"`, `"startedAt": "2025-06-01T11:30:00Z"`, `"endedAt": "2025-06-01T11:35:01Z"`},
		},
		{
			name: "instance history",
			args: []string{"instance", "history", "web-1"},
			wantExact: "" +
				"TIME                     WHAT             NODE        MESSAGE\n" +
				"2025-06-01 09:00:00.000  Created          -           2 CPU, 512M memory, 4G disk, image demo\n" +
				"2025-06-01 09:00:01.000  Scheduled        n2          replica on n1\n" +
				"2025-06-01 09:00:05.000  Running          n2\n" +
				"2025-06-01 10:09:52.700  NotServing       n2          host n2 is down\n" +
				"2025-06-01 10:09:55.800  FailoverStarted  n1          from n2 to n1 (lease expired; last heartbeat 3.1s ago); operation failover-web-1-3\n" +
				"2025-06-01 10:09:55.800  failover         n1          failover-web-1-3 from n2, Succeeded in 4.5s: serving on n1 4.2s after the failure was detected\n" +
				"                           2025-06-01 10:09:55.800  +0.0s  detected  lease expired; last heartbeat 3.1s ago\n" +
				"                           2025-06-01 10:09:55.800  +0.0s  fenced    n2's agent kills its VMs and freezes its disks once its heartbeats go unacknowledged\n" +
				"                           2025-06-01 10:09:55.800  +0.0s  promoted  n1 promoted under epoch 3; new replica n2\n" +
				"                           2025-06-01 10:09:58.900  +3.1s  booted    booted on n1\n" +
				"                           2025-06-01 10:10:00.000  +4.2s  serving   its health probe answers on n1\n" +
				"2025-06-01 10:09:58.900  Booted           n1          boot 3\n" +
				"2025-06-01 10:10:00.000  Serving          n1\n" +
				"2025-06-01 10:10:00.300  FailoverDone     n1          serving on n1 4.2s after the failure was detected\n",
			wantReqs: []string{"GET /v1/operations?instance=web-1", "GET /v1/events?limit=10000"},
		},
		{
			name: "history of a deleted instance, alias",
			args: []string{"i", "history", "web-2"},
			wantExact: "" +
				"TIME                     WHAT             NODE        MESSAGE\n" +
				"2025-06-01 11:30:00.000  Created          -           1 CPU, 256M memory, 1G disk, image demo\n" +
				"2025-06-01 11:59:47.700  FailoverStarted  n3          from n1 to n3 (lease expired); operation failover-web-2-7\n" +
				"2025-06-01 11:59:47.700  failover         n3          failover-web-2-7 from n1, running for 12.3s\n" +
				"                           2025-06-01 11:59:47.700  +0.0s  detected  lease expired\n" +
				"                           2025-06-01 11:59:47.700  +0.0s  fenced\n" +
				"                           2025-06-01 11:59:47.700  +0.0s  promoted  n3 promoted under epoch 7; new replica n1\n" +
				"                           2025-06-01 11:59:57.500  +9.8s  booted    booted on n3\n" +
				"2025-06-01 11:59:58.000  DeleteRequested  n3\n",
			wantReqs: []string{"GET /v1/operations?instance=web-2", "GET /v1/events?limit=10000"},
		},
		{
			name: "history with operations only",
			args: []string{"instance", "history", "db"},
			wantOut: []string{
				"2025-06-01 11:30:00.000  failover         n2          failover-db-2 from n1, Failed in 5m1s: not serving on n2 after 5m0s: qemu: boot failed\n",
				"  +0.0s  promoted  n2 promoted under epoch 2; new replica none (single node)\n",
			},
		},
		{
			name:     "history of an instance with nothing recorded",
			args:     []string{"instance", "history", "quiet"},
			setup:    func(f *fakeAPI) { f.addInstance(api.Instance{Meta: api.Meta{Name: "quiet"}}) },
			wantOut:  []string{`no operations or events recorded for instance "quiet"`},
			wantReqs: []string{"GET /v1/operations?instance=quiet", "GET /v1/events?limit=10000", "GET /v1/instances/quiet"},
		},
		{
			name:     "history of an unknown instance",
			args:     []string{"instance", "history", "nope"},
			wantErr:  `instance "nope" not found, and no operation or recent event names it`,
			wantReqs: []string{"GET /v1/operations?instance=nope", "GET /v1/events?limit=10000", "GET /v1/instances/nope"},
		},
		{
			name:     "history bad name",
			args:     []string{"instance", "history", "Web_1"},
			wantErr:  `NAME: "Web_1" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name: "history --json",
			args: []string{"instance", "history", "web-2", "--json"},
			wantJSON: map[string]any{
				"instance": "web-2",
				"items": []any{
					map[string]any{"time": "2025-06-01T11:30:00Z", "event": map[string]any{"id": "11", "time": "2025-06-01T11:30:00Z", "kind": "Instance", "name": "web-2", "type": "Created", "message": "1 CPU, 256M memory, 1G disk, image demo"}},
					map[string]any{"time": "2025-06-01T11:59:47.7Z", "event": map[string]any{"id": "12", "time": "2025-06-01T11:59:47.7Z", "kind": "Instance", "name": "web-2", "type": "FailoverStarted", "node": "n3", "message": "from n1 to n3 (lease expired); operation failover-web-2-7"}},
					map[string]any{"time": "2025-06-01T11:59:47.7Z", "operation": "failover-web-2-7"}, // compared by name below
					map[string]any{"time": "2025-06-01T11:59:58Z", "event": map[string]any{"id": "13", "time": "2025-06-01T11:59:58Z", "kind": "Instance", "name": "web-2", "type": "DeleteRequested", "node": "n3"}},
				},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			seedOperations(e.api)
			if tc.setup != nil {
				tc.setup(e.api)
			}
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) && !(len(got) == 0 && len(tc.wantReqs) == 0) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
			if tc.wantExact != "" && r.stdout != tc.wantExact {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, tc.wantExact)
			}
			if tc.wantJSON != nil {
				var got map[string]any
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
				}
				// Operations are compared by name: their full form is
				// checked by the show tests.
				for _, it := range got["items"].([]any) {
					if op, ok := it.(map[string]any)["operation"].(map[string]any); ok {
						it.(map[string]any)["operation"] = op["name"]
					}
				}
				if !reflect.DeepEqual(got, tc.wantJSON) {
					gotJSON, _ := json.MarshalIndent(got, "", "  ")
					t.Errorf("JSON stdout =\n%s\nwant %v", gotJSON, tc.wantJSON)
				}
			}
		})
	}
}

// TestOperationsHelp checks the group is registered with its aliases, and
// history under instance.
func TestOperationsHelp(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	for _, args := range [][]string{{"--help"}, {"instance", "--help"}, {"operation"}, {"op", "--help"}} {
		r := e.run(t, runOpts{}, args...)
		if r.err != nil {
			t.Fatalf("%q: %v", args, r.err)
		}
		var want []string
		switch args[0] {
		case "--help":
			want = []string{"operation"}
		case "instance":
			want = []string{"history"}
		default:
			want = []string{"ls", "show", "Aliases:", "op, ops, operations"}
		}
		for _, w := range want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%q output lacks %q:\n%s", args, w, r.stdout)
			}
		}
	}
}

// TestHistoryOrder checks the timeline's order on its own: oldest first,
// and at one instant events before the operation, events in commit order.
func TestHistoryOrder(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	seedOperations(e.api)
	r := e.run(t, runOpts{}, "--json", "instance", "history", "web-1")
	if r.err != nil {
		t.Fatal(r.err)
	}
	var h instanceHistory
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, it := range h.Items {
		if it.Operation != nil {
			order = append(order, "op:"+it.Operation.Name)
		} else {
			order = append(order, it.Event.ID)
		}
	}
	want := []string{"1", "2", "3", "4", "6", "op:failover-web-1-3", "7", "8", "9"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("order = %q, want %q", order, want)
	}
	if !sort.SliceIsSorted(h.Items, func(i, j int) bool { return h.Items[i].Time.Before(h.Items[j].Time) }) {
		t.Error("items are not oldest first")
	}
}

// TestOperationFlagError checks that a server's refusal of a filter (a
// server newer or stricter than this CLI) is reported against the flag.
func TestOperationFlagError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{&client.APIError{Status: 400, Code: "invalid", Field: "state", Message: `state: must be Running, Succeeded or Failed, got "x"`},
			`--state: must be Running, Succeeded or Failed, got "x"`},
		{&client.APIError{Status: 400, Code: "invalid", Field: "instance", Message: "too long"}, "--instance: too long"},
		{&client.APIError{Status: 400, Code: "invalid", Field: "limit", Message: "bad"}, "limit: bad (invalid)"},
		{&api.FieldError{Field: "state", Message: "must be X"}, "--state: must be X"},
		{nil, ""},
	}
	for _, tc := range tests {
		got := operationFlagError(tc.err)
		if (got == nil) != (tc.want == "") || got != nil && got.Error() != tc.want {
			t.Errorf("operationFlagError(%v) = %v, want %q", tc.err, got, tc.want)
		}
	}
}
