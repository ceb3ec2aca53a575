package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// migrationScript is a live migration of web-1 from n1 to n2 as the
// operation reads at each poll: requested, prepared with progress, more
// progress, switched, then ended as end says.
func migrationScript(end string) []api.Operation {
	at := func(d time.Duration) time.Time { return testNow.Add(d) }
	base := api.Operation{
		Meta: api.Meta{Name: "migrate-web-1-3-1", CreatedAt: at(0)},
		Type: api.OpMigrate, Mode: api.MigrateLive, Instance: "web-1", Cause: "requested by admin", From: "n1", To: "n2", Epoch: 3,
		State: api.OpRunning, StartedAt: at(0),
	}
	steps := []api.OperationStep{
		{Name: api.StepRequested, At: at(0), Message: "live migration from n1 to n2"},
		{Name: api.StepPrepared, At: at(500 * time.Millisecond), Message: "n2 waits for the memory at tcp:10.0.0.2:49152"},
		{Name: api.StepTransferred, At: at(3 * time.Second), Message: "256M of memory sent; the guest was paused for 42 ms"},
		{Name: api.StepSwitched, At: at(3 * time.Second), Message: "disk primary now n2 under epoch 4; its replica on n1"},
		{Name: api.StepResumed, At: at(3100 * time.Millisecond), Message: "the guest runs on n2"},
	}
	mk := func(n int, mod func(*api.Operation)) api.Operation {
		op := base
		op.Steps = append([]api.OperationStep(nil), steps[:n]...)
		if mod != nil {
			mod(&op)
		}
		return op
	}
	progress := func(done, left int64) func(*api.Operation) {
		return func(op *api.Operation) {
			op.Progress = &api.MigrationProgress{RAMTotal: 256 << 20, RAMTransferred: done << 20, RAMRemaining: left << 20, At: at(time.Second)}
			op.Message = "sent some"
		}
	}
	ops := []api.Operation{
		mk(1, nil),
		mk(2, progress(100, 156)),
		mk(2, progress(200, 56)),
		mk(4, func(op *api.Operation) { op.DowntimeMS, op.Epoch = 42, 4 }),
	}
	switch end {
	case api.OpSucceeded:
		ops = append(ops, mk(5, func(op *api.Operation) {
			op.DowntimeMS, op.Epoch = 42, 4
			op.State, op.EndedAt, op.Message = api.OpSucceeded, at(3200*time.Millisecond), "moved live to n2 in 3.2s; the guest was paused for 42 ms"
		}))
	default:
		ops[3] = mk(2, func(op *api.Operation) {
			op.State, op.EndedAt, op.Message = end, at(2*time.Second), "n2: cannot start qemu"
		})
		ops = ops[:4]
	}
	return ops
}

func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		setup    func(*fakeAPI)
		wantOut  []string
		wantErr  string
		wantErrs []string // substrings of stderr
		wantReqs []string
		wantBody string // the POST body of the migrate request, as JSON
	}{
		{
			name:     "migrate",
			args:     []string{"instance", "migrate", "web-1"},
			wantOut:  []string{"migration migrate-web-1-3-1 started: web-1 live from n1 to n2 (follow it: ferry operation show migrate-web-1-3-1)\n"},
			wantReqs: []string{"POST /v1/instances/web-1/migrate"},
			wantBody: `{"mode":"live","downtimeLimitMs":300,"convergeSeconds":60,"fallback":"cold"}`,
		},
		{
			name:     "migrate with every flag",
			args:     []string{"i", "migrate", "web-1", "--to", "n2", "--mode", "cold", "--downtime-limit", "1.5s", "--converge-timeout", "2m", "--fallback", "fail", "--max-bandwidth", "100M/s"},
			wantOut:  []string{"started: web-1 cold from n1 to n2"},
			wantBody: `{"to":"n2","mode":"cold","downtimeLimitMs":1500,"convergeSeconds":120,"fallback":"fail","maxBandwidth":104857600}`,
		},
		{name: "bad --max-bandwidth", args: []string{"instance", "migrate", "web-1", "--max-bandwidth", "fast"}, wantErr: "--max-bandwidth: ", wantReqs: []string{}},
		{name: "small --max-bandwidth", args: []string{"instance", "migrate", "web-1", "--max-bandwidth", "1K"}, wantErr: "--max-bandwidth: must be 0 (no cap) or between 1M and 1T per second", wantReqs: []string{}},
		{name: "bad --mode", args: []string{"instance", "migrate", "web-1", "--mode", "warp"}, wantErr: `--mode: must be live or cold, got "warp"`, wantReqs: []string{}},
		{name: "bad --fallback", args: []string{"instance", "migrate", "web-1", "--fallback", "retry"}, wantErr: "--fallback: must be cold", wantReqs: []string{}},
		{name: "bad --downtime-limit", args: []string{"instance", "migrate", "web-1", "--downtime-limit", "2m"}, wantErr: "--downtime-limit: must be between 1ms and 1m0s, got 2m0s", wantReqs: []string{}},
		{name: "sub-ms --downtime-limit", args: []string{"instance", "migrate", "web-1", "--downtime-limit", "1500us"}, wantErr: "--downtime-limit: must be a whole number of milliseconds", wantReqs: []string{}},
		{name: "bad --converge-timeout", args: []string{"instance", "migrate", "web-1", "--converge-timeout", "1.5s"}, wantErr: "--converge-timeout: must be a whole number of seconds", wantReqs: []string{}},
		{name: "bad --to", args: []string{"instance", "migrate", "web-1", "--to", "N_1"}, wantErr: `--to: "N_1" is not a valid name`, wantReqs: []string{}},
		{name: "unknown --to", args: []string{"instance", "migrate", "web-1", "--to", "n9"}, wantErr: `--to: node "n9" does not exist`},
		{name: "missing instance", args: []string{"instance", "migrate", "nope"}, wantErr: `instance "nope" not found`},
		{name: "refused", args: []string{"instance", "migrate", "db"}, wantErr: `instance "db" is Stopped, not Running: only a running instance migrates (conflict)`},
		{
			name:  "migrate --wait",
			args:  []string{"instance", "migrate", "web-1", "--wait"},
			setup: func(f *fakeAPI) { f.migrateOps = migrationScript(api.OpSucceeded) },
			wantOut: []string{
				`instance "web-1" migrated live from n1 to n2 in 3.2s; downtime 42 ms` + "\n",
			},
			wantErrs: []string{
				"migrate-web-1-3-1  requested  live migration from n1 to n2\n",
				"migrate-web-1-3-1  prepared  n2 waits for the memory at tcp:10.0.0.2:49152\n",
				"sent, 156M left to n2",
				"migrate-web-1-3-1  transferred  256M of memory sent; the guest was paused for 42 ms\n",
				"migrate-web-1-3-1  switched  disk primary now n2 under epoch 4; its replica on n1\n",
				"migrate-web-1-3-1  resumed  the guest runs on n2\n",
			},
		},
		{
			name:    "migrate --wait fails",
			args:    []string{"instance", "migrate", "web-1", "--wait"},
			setup:   func(f *fakeAPI) { f.migrateOps = migrationScript(api.OpFailed) },
			wantErr: "migrate migrate-web-1-3-1 failed: n2: cannot start qemu",
		},
		{
			name:    "migrate --wait cancelled",
			args:    []string{"instance", "migrate", "web-1", "--wait"},
			setup:   func(f *fakeAPI) { f.migrateOps = migrationScript(api.OpCancelled) },
			wantErr: "migrate migrate-web-1-3-1 was cancelled",
		},
		{
			name:     "cancel",
			args:     []string{"operation", "cancel", "migrate-web-1-3-1"},
			setup:    func(f *fakeAPI) { f.operations = migrationScript(api.OpSucceeded)[:2] },
			wantOut:  []string{"operation migrate-web-1-3-1 cancelled: web-1 stays on n1\n"},
			wantReqs: []string{"POST /v1/operations/migrate-web-1-3-1/cancel"},
		},
		{
			name:    "cancel after the switch",
			args:    []string{"op", "cancel", "migrate-web-1-3-1"},
			setup:   func(f *fakeAPI) { f.operations = migrationScript(api.OpSucceeded)[3:4] },
			wantErr: "the disk's primary already moved to n2; the migration completes",
		},
		{
			name:    "cancel a failover",
			args:    []string{"op", "cancel", "failover-web-1-3"},
			setup:   seedOperations,
			wantErr: "only migrations can be cancelled",
		},
		{name: "cancel a missing operation", args: []string{"op", "cancel", "nope"}, wantErr: `operation "nope" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			if tc.setup != nil {
				tc.setup(e.api)
			}
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			for _, w := range tc.wantErrs {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q; stderr:\n%s", w, r.stderr)
				}
			}
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) && !(len(got) == 0 && len(tc.wantReqs) == 0) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
			if tc.wantBody != "" {
				if got := e.api.body("/v1/instances/web-1/migrate"); got != tc.wantBody {
					t.Errorf("body = %s, want %s", got, tc.wantBody)
				}
			}
		})
	}
}

// TestMigrateWaitJSON: --json prints the final operation (and no progress
// bar), and the exit follows its state.
func TestMigrateWaitJSON(t *testing.T) {
	t.Parallel()
	for _, end := range []string{api.OpSucceeded, api.OpFailed} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			e.api.migrateOps = migrationScript(end)
			r := e.run(t, runOpts{}, "instance", "migrate", "web-1", "--wait", "--json")
			var op api.Operation
			if err := json.Unmarshal([]byte(r.stdout), &op); err != nil {
				t.Fatalf("stdout is not an operation: %v\n%s", err, r.stdout)
			}
			if op.State != end || (end == api.OpSucceeded) != (r.err == nil) {
				t.Fatalf("operation %s, error %v", op.State, r.err)
			}
			if strings.Contains(r.stderr, "left to n2") {
				t.Errorf("a progress bar with --json:\n%s", r.stderr)
			}
		})
	}
}

func TestDrainCommands(t *testing.T) {
	t.Parallel()
	drained := func(f *fakeAPI) {
		n := *f.nodes["n1"]
		n.Spec.Unschedulable = true
		n.Spec.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: testNow}
		a, b, c := n, n, n
		ad, bd, cd := *n.Spec.Drain, *n.Spec.Drain, *n.Spec.Drain
		ad.Took, ad.Blocked = []string{"web-1"}, map[string]string{"db": "instance \"db\" has desired state stopped"}
		a.Spec.Drain, a.Status.Drain = &ad, &api.DrainStatus{Remaining: 2, Migrating: 1}
		bd.Took = []string{"web-1", "db"}
		b.Spec.Drain, b.Status.Drain = &bd, &api.DrainStatus{Remaining: 1, Migrating: 1}
		cd.Took, cd.DrainedAt = []string{"web-1", "db"}, testNow
		c.Spec.Drain, c.Status.Drain = &cd, &api.DrainStatus{Drained: true}
		f.nodeScripts["n1"] = []api.Node{a, b, c}
	}
	tests := []struct {
		name     string
		args     []string
		setup    func(*fakeAPI)
		wantOut  []string
		wantErr  string
		wantErrs []string
		wantBody string
		path     string
	}{
		{
			name:     "drain",
			args:     []string{"node", "drain", "n1"},
			wantOut:  []string{`node "n1" draining: 1 instances to move, 2 at a time (live)` + "\n"},
			wantBody: `{"mode":"live","maxConcurrent":2}`, path: "/v1/nodes/n1/drain",
		},
		{
			name:     "drain cold",
			args:     []string{"node", "drain", "n1", "--mode", "cold", "--max-concurrent", "4"},
			wantOut:  []string{"4 at a time (cold)"},
			wantBody: `{"mode":"cold","maxConcurrent":4}`, path: "/v1/nodes/n1/drain",
		},
		{
			name:     "drain --replicas",
			args:     []string{"node", "drain", "n1", "--replicas"},
			wantOut:  []string{`node "n1" draining: 1 instances to move and 0 replicas, 2 at a time (live)` + "\n"},
			wantBody: `{"mode":"live","maxConcurrent":2,"replicas":true}`, path: "/v1/nodes/n1/drain",
		},
		{
			name: "drain --replicas --wait",
			args: []string{"node", "drain", "n1", "--replicas", "--wait"},
			setup: func(f *fakeAPI) {
				n := *f.nodes["n1"]
				n.Spec.Unschedulable = true
				a, b := n, n
				a.Spec.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: testNow, Replicas: true,
					Took: []string{"web-1"}, MovedReplicas: []string{"db"}}
				a.Status.Drain = &api.DrainStatus{Replicas: 1, Resyncing: 1}
				bd := *a.Spec.Drain
				bd.DrainedAt = testNow
				b.Spec.Drain, b.Status.Drain = &bd, &api.DrainStatus{Drained: true}
				f.nodeScripts["n1"] = []api.Node{a, b}
			},
			wantOut:  []string{`node "n1" drained: the drain moved 1 instances (web-1) and 1 replicas (db)` + "\n"},
			wantErrs: []string{"node/n1  draining: 0 left, 0 migrating, 1 replicas left, 1 syncing elsewhere\n", "node/n1  drained\n"},
		},
		{name: "bad --mode", args: []string{"node", "drain", "n1", "--mode", "hot"}, wantErr: "--mode: must be live or cold"},
		{name: "bad --max-concurrent", args: []string{"node", "drain", "n1", "--max-concurrent", "0"}, wantErr: "--max-concurrent: must be between 1 and 64, got 0"},
		{name: "missing node", args: []string{"node", "drain", "n9"}, wantErr: `node "n9" not found`},
		{
			name:  "drain --wait",
			args:  []string{"node", "drain", "n1", "--wait"},
			setup: drained,
			wantOut: []string{
				`node "n1" drained: the drain moved 2 instances (web-1, db)` + "\n",
			},
			wantErrs: []string{
				"node/n1  draining: 1 left, 0 migrating\n",
				`node/n1  draining: 2 left, 1 migrating; blocked: db (instance "db" has desired state stopped)` + "\n",
				"node/n1  draining: 1 left, 1 migrating\n",
				"node/n1  drained\n",
			},
		},
		{
			name:     "undrain",
			args:     []string{"node", "undrain", "n2"},
			wantOut:  []string{`node "n2" schedulable again` + "\n"},
			wantBody: `{}`, path: "/v1/nodes/n2/undrain",
		},
		{
			name:    "undrain --restore of a node not drained",
			args:    []string{"node", "undrain", "n2", "--restore"},
			wantErr: `--restore: node "n2" is not being drained: there is nothing to restore`,
		},
		{
			name: "undrain --restore",
			args: []string{"node", "uncordon", "n1", "--restore"},
			setup: func(f *fakeAPI) {
				f.nodes["n1"].Spec.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, Took: []string{"web-1", "db"}}
			},
			wantOut:  []string{`node "n1" schedulable again; moving back 2 instances: web-1, db` + "\n"},
			wantBody: `{"restore":true}`, path: "/v1/nodes/n1/undrain",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			if tc.setup != nil {
				tc.setup(e.api)
			}
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			for _, w := range tc.wantErrs {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q; stderr:\n%s", w, r.stderr)
				}
			}
			if tc.wantBody != "" {
				if got := e.api.body(tc.path); got != tc.wantBody {
					t.Errorf("body = %s, want %s", got, tc.wantBody)
				}
			}
		})
	}
}

// TestMigrationShown: instance show, operation show and node ls/show
// show a migration, its mode and a drain.
func TestMigrationShown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	seed(e.api)
	in := e.api.instances["web-1"]
	in.Status.Migration = &api.MigrationStatus{Operation: "migrate-web-1-3-1", Mode: api.MigrateLive, Source: "n1", Target: "n2", Phase: api.MigReady, Drain: "n1"}
	ops := migrationScript(api.OpSucceeded)
	e.api.operations = []api.Operation{ops[2], ops[4]}
	e.api.operations[1].Name = "migrate-web-1-2-1"
	n1 := e.api.nodes["n1"]
	n1.Spec.Unschedulable = true
	n1.Spec.Drain = &api.DrainSpec{Mode: api.MigrateLive, MaxConcurrent: 2, StartedAt: testNow.Add(-time.Minute), Took: []string{"web-1"}}
	n1.Status.Drain = &api.DrainStatus{Remaining: 2, Migrating: 1}

	r := e.run(t, runOpts{}, "instance", "show", "web-1")
	r.check(t, []string{"Migration:         live from n1 to n2, phase ready (operation migrate-web-1-3-1), drain of n1\n"}, "")
	r = e.run(t, runOpts{}, "operation", "show", "migrate-web-1-3-1")
	r.check(t, []string{"Type:              migrate\n", "Mode:              live\n", "Progress:          200M of 256M sent, 56M left"}, "")
	r = e.run(t, runOpts{}, "operation", "show", "migrate-web-1-2-1")
	r.check(t, []string{"Downtime:          42 ms\n", "  resumed      the guest runs on n2\n"}, "")
	r = e.run(t, runOpts{}, "node", "ls")
	r.check(t, []string{"n1     Ready,Draining (2 left)", "n2     NotReady,Unschedulable"}, "")
	r = e.run(t, runOpts{}, "node", "show", "n1")
	r.check(t, []string{"Drain:               live, 2 at a time, since", "Drain progress:      draining: 2 left, 1 migrating\n", "Drain took:          web-1\n"}, "")
	n1.Status.Drain = &api.DrainStatus{Drained: true}
	r = e.run(t, runOpts{}, "node", "ls")
	r.check(t, []string{"n1     Ready,Drained "}, "")
}
