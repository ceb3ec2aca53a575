package cli

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// seed stores a small cluster: two instances, two nodes, two networks,
// three events and a console log.
func seed(f *fakeAPI) {
	f.addInstance(api.Instance{
		Meta: api.Meta{Name: "web-1", UID: "u-web", CreatedAt: testNow.Add(-3 * time.Hour)},
		Spec: api.InstanceSpec{
			CPUs: 2, Memory: 512 << 20, Disk: 4 << 30, Image: "demo", State: api.DesiredRunning, Owner: "acme", Group: "web",
			Network: "lan", IP: "10.77.0.20", MAC: "0e:f0:00:12:34:56",
			Probe: &api.Probe{Type: "http", Ports: []int{80, 8080}, Path: "/healthz"}, RestartPolicy: api.RestartOnFailure,
		},
		Status: api.InstanceStatus{
			Phase: api.PhaseRunning, Node: "n1", ReplicaNode: "n2", Since: testNow.Add(-2 * time.Hour),
			Message: "up", LastError: "disk resync took 3s",
			Serving: true, ServingSince: testNow.Add(-110 * time.Minute), Boots: 3,
			Epoch: 3, ReplicaOutdated: true,
			Disk: &api.DiskStatus{State: api.DiskSyncing, Epoch: 3, At: testNow.Add(-time.Second),
				Sync: &api.DiskSync{TotalBytes: 300 << 20, DoneBytes: 126 << 20, SentBytes: 100 << 20, BytesPerSecond: 31 << 20, ETASeconds: 5.6}},
		},
	})
	f.addInstance(api.Instance{
		Meta:   api.Meta{Name: "db", CreatedAt: testNow.Add(-50 * time.Hour)},
		Spec:   api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo", State: api.DesiredStopped, Storage: "shared:/mnt/ferry"},
		Status: api.InstanceStatus{Phase: api.PhaseStopped, Since: testNow.Add(-90 * time.Second)},
	})
	f.networks["lan"] = &api.Network{
		Meta: api.Meta{Name: "lan", UID: "u-lan", ResourceVersion: "3", CreatedAt: testNow.Add(-4 * time.Hour)},
		CIDR: "10.77.0.0/24", Gateway: "10.77.0.1", Reserved: []string{"10.77.0.2", "10.77.0.3"},
	}
	f.networks["empty"] = &api.Network{Meta: api.Meta{Name: "empty", CreatedAt: testNow.Add(-time.Hour)}, CIDR: "10.88.0.0/16"}
	f.logs["web-1"] = "Booting ferry demo\nweb-1 login: \x1b[0m\nline 3\n"
	f.addNode(api.Node{
		Meta: api.Meta{Name: "n1", CreatedAt: testNow.Add(-100 * time.Hour)},
		Spec: api.NodeSpec{Labels: map[string]string{"zone": "a", "rack": "r1"}},
		Status: api.NodeStatus{
			State: api.NodeReady, Since: testNow.Add(-5 * time.Hour), Address: "10.0.0.1",
			Capacity:      api.Resources{CPUs: 4, Memory: 8 << 30, Disk: 100 << 30},
			Allocated:     api.Resources{CPUs: 2, Memory: 512 << 20, Disk: 4 << 30},
			AgentVersion:  "v1.2.3",
			Accel:         "kvm",
			LastHeartbeat: testNow.Add(-time.Second),
		},
	})
	f.addNode(api.Node{
		Meta: api.Meta{Name: "n2", CreatedAt: testNow.Add(-100 * time.Hour)},
		Spec: api.NodeSpec{Unschedulable: true},
		Status: api.NodeStatus{
			State: api.NodeNotReady, Since: testNow.Add(-30 * time.Second), Address: "10.0.0.2",
			Capacity: api.Resources{CPUs: 8, Memory: 16<<30 + 123456789, Disk: 200 << 30},
		},
	})
	f.events = []api.Event{
		{ID: "1", Time: testNow.Add(-3 * time.Hour), Kind: api.KindInstance, Name: "web-1", Type: "Created"},
		{ID: "2", Time: testNow.Add(-2 * time.Hour), Kind: api.KindInstance, Name: "web-1", Type: "Running", Node: "n1", Message: "booted in 4s"},
		{ID: "3", Time: testNow.Add(-30 * time.Second), Kind: api.KindNode, Name: "n2", Type: "NodeNotReady", Node: "n2", Message: "lease expired\x1b[2J"},
	}
}

func TestInstanceCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		autoStep  bool
		wantOut   []string
		wantErr   string
		wantReqs  []string // requests the server must have seen, in order (nil: not checked)
		wantBody  string   // body of the create request, if checked
		wantProg  []string // substrings of the --wait progress on stderr
		wantExact string   // whole stdout, if checked
	}{
		{
			name: "ls",
			args: []string{"instance", "ls"},
			wantExact: "" +
				"NAME    PHASE     SERVING   NODE   REPLICA   DISK-REPL     IP           CPUS   MEMORY   DISK   AGE   SINCE\n" +
				"db      Stopped   no        -      -         -             -            1      256M     1G     2d    90s\n" +
				"web-1   Running   yes       n1     n2        Syncing 42%   10.77.0.20   2      512M     4G     3h    2h\n",
		},
		{
			name:     "aliases",
			args:     []string{"i", "list"},
			wantOut:  []string{"web-1", "db"},
			wantReqs: []string{"GET /v1/instances"},
		},
		{
			name:     "create",
			args:     []string{"instance", "create", "web-2", "--cpus", "2", "--memory", "1.5G", "--disk", "20GiB", "--owner", "acme"},
			wantOut:  []string{`instance "web-2" created (Pending)`},
			wantBody: `{"name":"web-2","spec":{"cpus":2,"memory":1610612736,"disk":21474836480,"image":"demo","state":"running","owner":"acme"}}`,
		},
		{
			name:     "create stopped",
			args:     []string{"inst", "create", "web-2", "--stopped"},
			wantOut:  []string{`instance "web-2" created (Pending)`},
			wantBody: `{"name":"web-2","spec":{"cpus":1,"memory":268435456,"disk":1073741824,"image":"demo","state":"stopped"}}`,
		},
		{
			name:     "create --memory not a size",
			args:     []string{"instance", "create", "web-2", "--memory", "12X"},
			wantErr:  `--memory: size "12X" is not a number with a unit`,
			wantReqs: []string{},
		},
		{
			name:     "create --memory too small",
			args:     []string{"instance", "create", "web-2", "--memory", "8M"},
			wantErr:  "--memory: must be between 16M and 16T (e.g. 256M), got 8.0M",
			wantReqs: []string{},
		},
		{
			name:     "create --disk not whole MiB",
			args:     []string{"instance", "create", "web-2", "--disk", "1000000"},
			wantErr:  "--disk: must be between 1M and 64T",
			wantReqs: []string{},
		},
		{
			name:     "create --cpus 0",
			args:     []string{"instance", "create", "web-2", "--cpus", "0"},
			wantErr:  "--cpus: must be between 1 and 1024, got 0",
			wantReqs: []string{},
		},
		{
			name:     "create bad name",
			args:     []string{"instance", "create", "Web_2"},
			wantErr:  `NAME: "Web_2" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name:    "create unknown image (server-side field error)",
			args:    []string{"instance", "create", "web-2", "--image", "nope"},
			wantErr: "--image: image \"nope\" is not registered; see `ferry image ls`",
		},
		{
			name:    "create existing",
			args:    []string{"instance", "create", "web-1"},
			wantErr: `instance "web-1" already exists`,
		},
		{
			name: "create with network, storage, probe and restart policy",
			args: []string{"instance", "create", "web-2", "--network", "lan", "--ip", "10.77.0.21", "--mac", "0e:f0:00:00:00:21",
				"--storage", "shared:/mnt/ferry", "--probe", "http:80,8080/healthz", "--restart", "on-failure"},
			wantOut:  []string{`instance "web-2" created (Pending)`},
			wantBody: `{"name":"web-2","spec":{"cpus":1,"memory":268435456,"disk":1073741824,"image":"demo","state":"running","network":"lan","mac":"0e:f0:00:00:00:21","ip":"10.77.0.21","storage":"shared:/mnt/ferry","probe":{"type":"http","ports":[80,8080],"path":"/healthz"},"restartPolicy":"on-failure"}}`,
		},
		{
			name:     "create --probe tcp",
			args:     []string{"instance", "create", "web-2", "--probe", "tcp:22", "--storage", "local"},
			wantBody: `{"name":"web-2","spec":{"cpus":1,"memory":268435456,"disk":1073741824,"image":"demo","state":"running","storage":"local","probe":{"type":"tcp","ports":[22]}}}`,
		},
		{
			name:     "create bad --probe",
			args:     []string{"instance", "create", "web-2", "--probe", "udp:53"},
			wantErr:  `--probe: unknown probe type "udp"`,
			wantReqs: []string{},
		},
		{
			name:     "create bad --ip",
			args:     []string{"instance", "create", "web-2", "--ip", "10.77.0.300"},
			wantErr:  `--ip: "10.77.0.300" is not an IPv4 address such as 10.77.0.20`,
			wantReqs: []string{},
		},
		{
			name:     "create bad --mac",
			args:     []string{"instance", "create", "web-2", "--mac", "01:00:5e:00:00:01"},
			wantErr:  `--mac: "01:00:5e:00:00:01" is a multicast address`,
			wantReqs: []string{},
		},
		{
			name:     "create bad --storage",
			args:     []string{"instance", "create", "web-2", "--storage", "shared:mnt"},
			wantErr:  `--storage: shared storage needs a clean absolute directory, e.g. shared:/mnt/ferry, got "shared:mnt"`,
			wantReqs: []string{},
		},
		{
			name:     "create unknown --storage",
			args:     []string{"instance", "create", "web-2", "--storage", "nfs"},
			wantErr:  `--storage: must be "local" or "shared:/absolute/dir", got "nfs"`,
			wantReqs: []string{},
		},
		{
			name:     "create bad --restart",
			args:     []string{"instance", "create", "web-2", "--restart", "sometimes"},
			wantErr:  `--restart: must be always, on-failure or never, got "sometimes"`,
			wantReqs: []string{},
		},
		{
			name:     "create --group",
			args:     []string{"instance", "create", "web-2", "--group", "web"},
			wantOut:  []string{`instance "web-2" created (Pending)`},
			wantBody: `{"name":"web-2","spec":{"cpus":1,"memory":268435456,"disk":1073741824,"image":"demo","state":"running","group":"web"}}`,
		},
		{
			name:     "create bad --group",
			args:     []string{"instance", "create", "web-2", "--group", "Web_1"},
			wantErr:  `--group: "Web_1" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name:     "create bad --network",
			args:     []string{"instance", "create", "web-2", "--network", "LAN"},
			wantErr:  `--network: "LAN" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name:    "create --ip taken (server-side conflict on a field)",
			args:    []string{"instance", "create", "web-2", "--ip", "10.77.0.20"},
			wantErr: `--ip: address 10.77.0.20 is already used by instance "web-1"`,
		},
		{
			name:    "create --mac taken (field repeated in the message)",
			args:    []string{"instance", "create", "web-2", "--mac", "0e:f0:00:12:34:56"},
			wantErr: `--mac: mac 0e:f0:00:12:34:56 is used by instance "web-1"`,
		},
		{
			name:    "create --cpus not a number",
			args:    []string{"instance", "create", "web-2", "--cpus", "two"},
			wantErr: `invalid argument "two" for "--cpus" flag`,
		},
		{
			name:     "create --wait",
			args:     []string{"instance", "create", "web-2", "--wait"},
			autoStep: true,
			wantOut:  []string{`instance "web-2" created and Running on n1 (replica on n2)`},
			wantProg: []string{"instance/web-2  Pending\n", "instance/web-2  Scheduled on n1 (replica on n2)\n", "Starting on n1 (replica on n2): booting\n", "instance/web-2  Running on n1"},
		},
		{
			name:     "create --stopped --wait",
			args:     []string{"instance", "create", "web-2", "--stopped", "--wait"},
			autoStep: true,
			wantOut:  []string{`instance "web-2" created and Stopped`},
		},
		{
			name:     "create --wait fails",
			args:     []string{"instance", "create", "bad", "--image", "broken", "--wait"},
			autoStep: true,
			wantErr:  `instance "bad" failed: qemu: boot failed`,
		},
		{
			name:    "create --wait times out",
			args:    []string{"instance", "create", "web-2", "--wait", "--timeout", "20ms"},
			wantErr: `timed out after 20ms waiting for instance "web-2" to be Running (now Pending)`,
		},
		{
			name:     "create --wait --json",
			args:     []string{"--json", "instance", "create", "web-2", "--wait"},
			autoStep: true,
			wantOut:  []string{`"phase": "Running"`, `"name": "web-2"`},
		},
		{
			name:    "show",
			args:    []string{"instance", "show", "web-1"},
			wantOut: []string{"Name:", "web-1", "Owner:", "acme", "512M", "Desired state:", "running", "Host:", "n1", "Replica host:", "n2", "Last error:", "disk resync took 3s", "(2h ago)", "Resource version:"},
		},
		{
			name: "show network, storage, probe, serving",
			args: []string{"instance", "show", "web-1"},
			wantOut: []string{
				detail("Network", "lan"), detail("IP", "10.77.0.20"), detail("MAC", "0e:f0:00:12:34:56"),
				detail("Storage", "local"), detail("Probe", "http:80,8080/healthz"), detail("Restart policy", "on-failure"), detail("Group", "web"),
				strings.TrimSuffix(detail("Serving", "yes, since "), "\n"), "(1h50m ago)\n", detail("Boots", "3"),
				detail("Replica host", "n2") + detail("Disk replication", "Syncing 42% (174M of 300M left, 31M/s, about 6s left)") +
					detail("Replica", "outdated: UNPROTECTED until it is synced (it may lack writes, so it is never promoted)") + detail("Network", "lan"),
			},
		},
		{
			name: "show defaults",
			args: []string{"instance", "show", "db"},
			wantOut: []string{
				detail("Storage", "shared:/mnt/ferry"), detail("Probe", "tcp:22,80 (default)"), detail("Restart policy", "always (default)"),
				detail("Serving", "no"), detail("Boots", "0"), detail("Network", "-"),
				detail("Disk replication", "none (shared storage)"), detail("Replica", "-"), detail("Group", "-"),
			},
		},
		{
			name:    "show missing",
			args:    []string{"instance", "show", "x"},
			wantErr: `instance "x" not found`,
		},
		{
			name:    "show without NAME",
			args:    []string{"instance", "show"},
			wantErr: "missing the instance NAME",
		},
		{
			name:    "show two names",
			args:    []string{"instance", "show", "a", "b"},
			wantErr: "expected one instance NAME, got 2 arguments",
		},
		{
			name:     "start",
			args:     []string{"instance", "start", "db"},
			wantOut:  []string{`instance "db": desired state running (now Stopped)`},
			wantReqs: []string{"POST /v1/instances/db/start"},
		},
		{
			name:     "start --on",
			args:     []string{"instance", "start", "db", "--on", "n3"},
			wantOut:  []string{`instance "db": desired state running on n3 (now Stopped)`},
			wantReqs: []string{"POST /v1/instances/db/start?on=n3"},
		},
		{
			name:     "start --on --wait",
			args:     []string{"instance", "start", "db", "--on", "n3", "--wait"},
			autoStep: true,
			wantOut:  []string{`instance "db" is Running on n3`},
			wantProg: []string{"instance/db  Starting on n3: booting\n"},
		},
		{
			name:    "start --on a local disk",
			args:    []string{"instance", "start", "web-1", "--on", "n3"},
			wantErr: `--on: instance "web-1" has a local disk on n1: moving it needs a migration, not a start elsewhere`,
		},
		{
			name:    "start --on unknown node",
			args:    []string{"instance", "start", "db", "--on", "n9"},
			wantErr: `node "n9" not found (not_found)`,
		},
		{
			name:    "start --on missing instance",
			args:    []string{"instance", "start", "x", "--on", "n3"},
			wantErr: `instance "x" not found (not_found)`,
		},
		{
			name:     "start --on empty",
			args:     []string{"instance", "start", "db", "--on", ""},
			wantErr:  "--on: is required",
			wantReqs: []string{},
		},
		{
			name:    "stop has no --on",
			args:    []string{"instance", "stop", "db", "--on", "n3"},
			wantErr: "unknown flag: --on",
		},
		{
			name:     "start --wait",
			args:     []string{"instance", "start", "db", "--wait"},
			autoStep: true,
			wantOut:  []string{`instance "db" is Running`},
		},
		{
			name:     "stop --wait",
			args:     []string{"instance", "stop", "web-1", "--wait"},
			autoStep: true,
			wantOut:  []string{`instance "web-1" is Stopped on n1 (replica on n2)`},
			wantProg: []string{"Running on n1 (replica on n2): up\n", "Stopping on n1 (replica on n2): shutting down\n", "Stopped on n1"},
		},
		{
			name:    "stop missing",
			args:    []string{"instance", "stop", "x"},
			wantErr: `instance "x" not found`,
		},
		{
			name:     "rm",
			args:     []string{"instance", "rm", "web-1"},
			wantOut:  []string{`instance "web-1" is being deleted`},
			wantReqs: []string{"DELETE /v1/instances/web-1"},
		},
		{
			name:     "rm --force",
			args:     []string{"instance", "rm", "web-1", "--force"},
			wantOut:  []string{`instance "web-1" deleted`},
			wantReqs: []string{"DELETE /v1/instances/web-1?force=true"},
		},
		{
			name:     "rm --wait",
			args:     []string{"instance", "delete", "web-1", "--wait"},
			autoStep: true,
			wantOut:  []string{`instance "web-1" deleted`},
			wantReqs: []string{"DELETE /v1/instances/web-1", "GET /v1/instances/web-1", "GET /v1/instances/web-1", "GET /v1/instances/web-1"},
		},
		{
			name:    "rm missing",
			args:    []string{"instance", "rm", "x"},
			wantErr: `instance "x" not found`,
		},
		{
			name:    "unknown subcommand",
			args:    []string{"instance", "frob"},
			wantErr: `unknown command "frob" for "ferry instance"`,
		},
		{
			name:    "ls takes no arguments",
			args:    []string{"instance", "ls", "web-1"},
			wantErr: `unexpected argument "web-1"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			e.api.autoStep = tc.autoStep
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) && !(len(got) == 0 && len(tc.wantReqs) == 0) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
			if tc.wantBody != "" {
				if got := strings.TrimSpace(e.api.body("/v1/instances")); got != tc.wantBody {
					t.Errorf("create body = %s, want %s", got, tc.wantBody)
				}
			}
			for _, p := range tc.wantProg {
				if !strings.Contains(r.stderr, p) {
					t.Errorf("progress lacks %q; stderr:\n%s", p, r.stderr)
				}
			}
			if tc.wantExact != "" && r.stdout != tc.wantExact {
				t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, tc.wantExact)
			}
		})
	}
}

// TestJSONOutput checks that --json prints the API objects, lists as the
// api.List object, for every read verb.
func TestJSONOutput(t *testing.T) {
	t.Parallel()
	ref := newFakeAPI()
	seed(ref)
	instances := func() any {
		l := api.List[api.Instance]{ResourceVersion: "4"}
		for _, n := range []string{"web-1", "db"} {
			l.Items = append(l.Items, *ref.instances[n])
		}
		return l
	}
	tests := []struct {
		name string
		args []string
		into func() any // a pointer to decode stdout into
		want any
	}{
		{name: "instance ls", args: []string{"instance", "ls", "--json"}, into: func() any { return &api.List[api.Instance]{} }, want: instances()},
		{name: "instance show", args: []string{"--json", "instance", "show", "web-1"}, into: func() any { return &api.Instance{} }, want: *ref.instances["web-1"]},
		{name: "node ls", args: []string{"--json", "node", "ls"}, into: func() any { return &api.List[api.Node]{} }, want: api.List[api.Node]{Items: []api.Node{*ref.nodes["n1"], *ref.nodes["n2"]}}},
		{name: "node show", args: []string{"--json", "node", "show", "n2"}, into: func() any { return &api.Node{} }, want: *ref.nodes["n2"]},
		{name: "image ls", args: []string{"--json", "image", "ls"}, into: func() any { return &api.List[api.Image]{} }, want: api.List[api.Image]{Items: ref.images}},
		{name: "network ls", args: []string{"--json", "network", "ls"}, into: func() any { return &api.List[api.Network]{} }, want: api.List[api.Network]{Items: []api.Network{*ref.networks["lan"], *ref.networks["empty"]}}},
		{name: "network show", args: []string{"--json", "net", "show", "lan"}, into: func() any { return &api.Network{} }, want: *ref.networks["lan"]},
		{name: "events --no-watch", args: []string{"--json", "events", "--no-watch"}, into: func() any { return &api.List[api.Event]{} }, want: api.List[api.Event]{Items: ref.events}},
		{name: "version", args: []string{"--json", "version"}, into: func() any { return &versionInfo{} }, want: versionInfo{
			Client: api.Version{Version: "v1.2.3", GoVersion: runtime.Version()},
			Server: &api.Version{Version: "v9.9.9", GoVersion: "go1.26.8"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			r := e.run(t, runOpts{}, tc.args...)
			if r.err != nil {
				t.Fatalf("%v: %v", tc.args, r.err)
			}
			if !strings.HasPrefix(r.stdout, "{\n  \"") {
				t.Errorf("stdout is not indented JSON:\n%s", r.stdout)
			}
			got := tc.into()
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(got); err != nil {
				t.Fatalf("decoding %s: %v", r.stdout, err)
			}
			if v, ok := got.(*versionInfo); ok {
				v.ServerURL = "" // the test server's port varies
			}
			if g := reflect.ValueOf(got).Elem().Interface(); !reflect.DeepEqual(normalise(g), normalise(tc.want)) {
				t.Errorf("decoded %+v\nwant %+v", g, tc.want)
			}
		})
	}
}

// normalise round-trips v through JSON, so that times compare by value.
func normalise(v any) any {
	data, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(data, &out)
	return out
}

// detail is one line of a `show` verb's output.
func detail(key, value string) string { return fmt.Sprintf("%-19s%s\n", key+":", value) }
