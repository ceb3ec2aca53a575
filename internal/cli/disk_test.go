package cli

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// replicated returns a running instance with a local disk on n1, its
// replica on n2, under epoch 3, with the replica outdated, as mod changes it.
func replicated(mod func(*api.InstanceStatus)) *api.Instance {
	in := &api.Instance{
		Meta: api.Meta{Name: "web-1", CreatedAt: testNow.Add(-3 * time.Hour)},
		Spec: api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo", State: api.DesiredRunning},
		Status: api.InstanceStatus{
			Phase: api.PhaseRunning, Node: "n1", ReplicaNode: "n2", Since: testNow.Add(-time.Hour),
			Epoch: 3, ReplicaOutdated: true,
		},
	}
	if mod != nil {
		mod(&in.Status)
	}
	return in
}

// disk returns a report under epoch 3.
func disk(state, reason string, sync *api.DiskSync) *api.DiskStatus {
	return &api.DiskStatus{State: state, Reason: reason, Epoch: 3, Sync: sync, At: testNow.Add(-time.Second)}
}

func TestDiskFormatting(t *testing.T) {
	t.Parallel()
	const outdated = "outdated: UNPROTECTED until it is synced (it may lack writes, so it is never promoted)"
	withDisk := func(d *api.DiskStatus, inSync bool) *api.Instance {
		return replicated(func(s *api.InstanceStatus) { s.Disk, s.ReplicaOutdated = d, !inSync })
	}
	dirty := func(d *api.DiskStatus, n int64) *api.DiskStatus { d.DirtyBytes = n; return d }
	tests := []struct {
		name    string
		in      *api.Instance
		show    string // the "Disk replication" line of show
		replica string // the "Replica" line of show ("" is shown "-")
		column  string // the DISK-REPL column of ls ("" is shown "-")
		synced  bool   // whether wait-synced is done
	}{
		{
			name: "shared storage",
			in: replicated(func(s *api.InstanceStatus) {
				s.ReplicaNode, s.Epoch, s.ReplicaOutdated = "", 2, false
			}),
			show: "none (shared storage)",
		},
		{
			name: "not placed",
			in:   replicated(func(s *api.InstanceStatus) { *s = api.InstanceStatus{Phase: api.PhasePending} }),
			show: "none (not placed yet)",
		},
		{
			name: "no replica host",
			in:   replicated(func(s *api.InstanceStatus) { s.ReplicaNode, s.ReplicaOutdated = "", false }),
			show: "none (no second host)",
		},
		{
			name:    "no report yet",
			in:      replicated(nil),
			show:    "waiting for the primary's first report",
			replica: outdated, column: "Unreported",
		},
		{
			name:    "report from an older epoch",
			in:      replicated(func(s *api.InstanceStatus) { s.Disk = disk(api.DiskUpToDate, "", nil); s.Disk.Epoch = 2 }),
			show:    "waiting for the primary's report under epoch 3 (last: UpToDate under epoch 2)",
			replica: outdated, column: "Unreported",
		},
		{
			name:    "UpToDate",
			in:      withDisk(disk(api.DiskUpToDate, "", nil), true),
			show:    "UpToDate (epoch 3)",
			replica: "up to date (protected: it can take over if this host dies)", column: "UpToDate", synced: true,
		},
		{
			name:    "UpToDate after a resync",
			in:      withDisk(disk(api.DiskUpToDate, "", &api.DiskSync{TotalBytes: 300 << 20, DoneBytes: 300 << 20, SentBytes: 10695475, Done: true}), true),
			show:    "UpToDate (epoch 3); last resync sent 10.2M",
			replica: "up to date (protected: it can take over if this host dies)", column: "UpToDate", synced: true,
		},
		{
			name:    "UpToDate, replica still marked outdated",
			in:      withDisk(disk(api.DiskUpToDate, "", nil), false),
			show:    "UpToDate (epoch 3)",
			replica: outdated, column: "UpToDate",
		},
		{
			name:    "Syncing",
			in:      withDisk(disk(api.DiskSyncing, "", &api.DiskSync{TotalBytes: 300 << 20, DoneBytes: 126 << 20, SentBytes: 100 << 20, BytesPerSecond: 31 << 20, ETASeconds: 3.2}), false),
			show:    "Syncing 42% (174M of 300M left, 31M/s, about 4s left)",
			replica: outdated, column: "Syncing 42%",
		},
		{
			name:    "Syncing, just started",
			in:      withDisk(disk(api.DiskSyncing, "first full sync", &api.DiskSync{TotalBytes: 1 << 30}), false),
			show:    "Syncing 0% (1G of 1G left): first full sync",
			replica: outdated, column: "Syncing 0%",
		},
		{
			name:    "Syncing, nearly done",
			in:      withDisk(disk(api.DiskSyncing, "", &api.DiskSync{TotalBytes: 3000 << 20, DoneBytes: 2999 << 20, BytesPerSecond: 1.5 * (1 << 20), ETASeconds: 0.4}), false),
			show:    "Syncing 99% (1M of 2.9G left, 1.5M/s, about 1s left)",
			replica: outdated, column: "Syncing 99%",
		},
		{
			name:    "Syncing, size unknown",
			in:      withDisk(disk(api.DiskSyncing, "", nil), false),
			show:    "Syncing",
			replica: outdated, column: "Syncing",
		},
		{
			name:    "Degraded",
			in:      withDisk(dirty(disk(api.DiskDegraded, "replica n2 unreachable", nil), 10<<20), false),
			show:    "Degraded: replica n2 unreachable; replica lacks 10M",
			replica: outdated, column: "Degraded",
		},
		{
			name:    "Degraded after a resync, no reason",
			in:      withDisk(dirty(disk(api.DiskDegraded, "", &api.DiskSync{TotalBytes: 1 << 30, DoneBytes: 1 << 30, SentBytes: 300 << 20, Done: true}), 4096), false),
			show:    "Degraded; replica lacks 4K; last resync sent 300M",
			replica: outdated, column: "Degraded",
		},
		{
			name:    "Frozen",
			in:      withDisk(disk(api.DiskFrozen, "replica lost; asking the control plane to outdate it", nil), true),
			show:    "Frozen: replica lost; asking the control plane to outdate it",
			replica: "up to date (protected: it can take over if this host dies)", column: "Frozen",
		},
		{
			name: "Diverged",
			in: replicated(func(s *api.InstanceStatus) {
				s.Disk, s.ReplicaResets = disk(api.DiskDiverged, "replica wrote under epoch 4", nil), 2
			}),
			show:    "Diverged: replica wrote under epoch 4",
			replica: outdated + "; reset 2 times after diverging", column: "Diverged",
		},
		{
			name: "Outdated",
			in: replicated(func(s *api.InstanceStatus) {
				s.Disk, s.ReplicaResets = disk(api.DiskOutdated, "peer says this copy is outdated", nil), 1
			}),
			show:    "Outdated: peer says this copy is outdated",
			replica: outdated + "; reset once after diverging", column: "Outdated",
		},
		{
			name:    "Unreplicated",
			in:      withDisk(disk(api.DiskUnreplicated, "no peer\nassigned\x1b[2J", nil), false),
			show:    "Unreplicated: no peer assigned [2J",
			replica: outdated, column: "Unreplicated",
		},
		{
			name:    "StaleEpoch",
			in:      withDisk(dirty(disk(api.DiskStaleEpoch, "replica is at epoch 5", nil), 1<<20), false),
			show:    "StaleEpoch: replica is at epoch 5; replica lacks 1M",
			replica: outdated, column: "StaleEpoch",
		},
	}
	tests[0].in.Spec.Storage = "shared:/mnt/ferry"
	tests[3].in.Spec.Storage = "local"
	var states []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := diskReplication(tc.in); got != tc.show {
				t.Errorf("diskReplication() = %q, want %q", got, tc.show)
			}
			if got := replicaState(tc.in); got != tc.replica {
				t.Errorf("replicaState() = %q, want %q", got, tc.replica)
			}
			if got := diskColumn(tc.in); got != tc.column {
				t.Errorf("diskColumn() = %q, want %q", got, tc.column)
			}
			if got := diskSynced(tc.in); got != tc.synced {
				t.Errorf("diskSynced() = %v, want %v", got, tc.synced)
			}
		})
		if d := currentDisk(tc.in); d != nil {
			states = append(states, d.State)
		}
	}
	for _, s := range api.DiskStates {
		if !slices.Contains(states, s) {
			t.Errorf("no test of disk state %s", s)
		}
	}
}

func TestInstanceListDiskColumn(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	add := func(name string, mod func(*api.InstanceStatus)) {
		in := replicated(mod)
		in.Name = name
		e.api.addInstance(*in)
	}
	add("a", func(s *api.InstanceStatus) { s.Disk = disk(api.DiskDegraded, "replica n2 unreachable", nil) })
	add("b", func(s *api.InstanceStatus) { s.Disk, s.ReplicaOutdated = disk(api.DiskUpToDate, "", nil), false })
	add("c", func(s *api.InstanceStatus) {
		s.Disk = disk(api.DiskSyncing, "", &api.DiskSync{TotalBytes: 1 << 30, DoneBytes: 1 << 29})
	})
	add("d", nil)
	add("e", func(s *api.InstanceStatus) { s.ReplicaNode, s.ReplicaOutdated = "", false })
	r := e.run(t, runOpts{}, "instance", "ls")
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := "" +
		"NAME   PHASE     SERVING   NODE   REPLICA   DISK-REPL     IP   CPUS   MEMORY   DISK   AGE   SINCE\n" +
		"a      Running   no        n1     n2        Degraded      -    1      256M     1G     3h    1h\n" +
		"b      Running   no        n1     n2        UpToDate      -    1      256M     1G     3h    1h\n" +
		"c      Running   no        n1     n2        Syncing 50%   -    1      256M     1G     3h    1h\n" +
		"d      Running   no        n1     n2        Unreported    -    1      256M     1G     3h    1h\n" +
		"e      Running   no        n1     -         -             -    1      256M     1G     3h    1h\n"
	if r.stdout != want {
		t.Errorf("stdout =\n%s\nwant\n%s", r.stdout, want)
	}
}

// waitStatuses are the statuses of web-1 (local disk on n1, replica on n2)
// that the wait-synced tests script.
var (
	degraded = replicated(func(s *api.InstanceStatus) {
		s.Disk = disk(api.DiskDegraded, "replica n2 unreachable", nil)
		s.Disk.DirtyBytes = 10 << 20
	}).Status
	syncing10 = replicated(func(s *api.InstanceStatus) {
		s.Disk = disk(api.DiskSyncing, "", &api.DiskSync{TotalBytes: 300 << 20, DoneBytes: 30 << 20, SentBytes: 20 << 20, BytesPerSecond: 30 << 20, ETASeconds: 9})
	}).Status
	syncing80 = replicated(func(s *api.InstanceStatus) {
		s.Disk = disk(api.DiskSyncing, "", &api.DiskSync{TotalBytes: 300 << 20, DoneBytes: 240 << 20, SentBytes: 200 << 20, BytesPerSecond: 30 << 20, ETASeconds: 2})
	}).Status
	upToDate = replicated(func(s *api.InstanceStatus) {
		s.Disk = disk(api.DiskUpToDate, "", &api.DiskSync{TotalBytes: 300 << 20, DoneBytes: 300 << 20, SentBytes: 250 << 20, Done: true})
		s.ReplicaOutdated = false
	}).Status
)

func TestWaitSynced(t *testing.T) {
	t.Parallel()
	ptrs := func(sts ...api.InstanceStatus) []*api.InstanceStatus {
		out := make([]*api.InstanceStatus, len(sts))
		for i := range sts {
			out[i] = &sts[i]
		}
		return out
	}
	at := func(s string) string { return testNow.Local().Format("15:04:05") + "  instance/web-1  " + s }
	line := func(s string) string { return at(s) + "\n" }
	tests := []struct {
		name     string
		args     []string
		statuses []*api.InstanceStatus // of web-1, one per GET
		setup    func(*fakeAPI)
		cancelOn string // interrupt once stderr holds this
		wantOut  []string
		wantErr  string
		// wantStderr must appear on stderr in this order.
		wantStderr []string
		noStderr   []string
		wantGets   int // GETs of the instance the server must have seen (0: not checked)
	}{
		{
			name:     "Degraded, Syncing, UpToDate",
			args:     []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(degraded, syncing10, syncing80, upToDate),
			wantOut:  []string{`instance "web-1": replica on n2 in sync, disk UpToDate (epoch 3); last resync sent 250M` + "\n"},
			wantStderr: []string{
				line("disk Degraded: replica n2 unreachable; replica lacks 10M"),
				line("disk Syncing 10% (270M of 300M left, 30M/s, about 9s left)"),
				"\r  10% |███ ", "|  30M of 300M synced to n2, 30M/s, about 9s left \r",
				"\r 100% |█████", "|  300M of 300M synced to n2 \n",
				line("disk UpToDate (epoch 3); last resync sent 250M"),
			},
			wantGets: 4,
		},
		{
			name:       "--json",
			args:       []string{"--json", "instance", "wait-synced", "web-1"},
			statuses:   ptrs(degraded, syncing10, syncing80, upToDate),
			wantOut:    []string{`"state": "UpToDate"`, `"name": "web-1"`},
			wantStderr: []string{line("disk Degraded: replica n2 unreachable; replica lacks 10M"), at("disk Syncing 10%"), at("disk UpToDate (epoch 3)")},
			noStderr:   []string{"synced to", "|"},
			wantGets:   4,
		},
		{
			name:     "already in sync",
			args:     []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(upToDate),
			wantOut:  []string{`instance "web-1": replica on n2 in sync`},
			noStderr: []string{"synced to"},
			wantGets: 1,
		},
		{
			name: "a new resync replaces the bar",
			args: []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(syncing80, replicated(func(s *api.InstanceStatus) {
				s.Disk = disk(api.DiskSyncing, "", &api.DiskSync{TotalBytes: 200 << 20, DoneBytes: 20 << 20})
			}).Status, upToDate),
			wantStderr: []string{"\r  80% |", "|  240M of 300M synced to n2, 30M/s, about 2s left \n", "\r  10% |", "|  20M of 200M synced to n2 \n", at("disk UpToDate")},
			noStderr:   []string{"100%"}, // the new resync was not of 300M: the bar is not filled
			wantGets:   3,
		},
		{
			name: "waits for a report under the current epoch",
			args: []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(
				replicated(func(s *api.InstanceStatus) { s.Disk = disk(api.DiskUpToDate, "", nil); s.Disk.Epoch = 2 }).Status,
				degraded, upToDate),
			wantStderr: []string{line("disk waiting for the primary's report under epoch 3 (last: UpToDate under epoch 2)"), at("disk Degraded"), at("disk UpToDate")},
			wantGets:   3,
		},
		{
			name: "waits for the control plane to clear ReplicaOutdated",
			args: []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(
				replicated(func(s *api.InstanceStatus) { s.Disk = disk(api.DiskUpToDate, "", nil) }).Status,
				upToDate),
			wantStderr: []string{line("disk UpToDate (epoch 3); the control plane still marks the replica outdated"), line("disk UpToDate (epoch 3); last resync sent 250M")},
			wantGets:   2,
		},
		{
			name: "waits for placement",
			args: []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(
				api.InstanceStatus{Phase: api.PhasePending, Message: "no node has room for 1 CPU"},
				replicated(func(s *api.InstanceStatus) { s.Phase, s.Epoch = api.PhaseScheduled, 1 }).Status,
				replicated(func(s *api.InstanceStatus) {
					s.Epoch, s.ReplicaOutdated, s.Disk = 1, false, disk(api.DiskUpToDate, "", nil)
					s.Disk.Epoch = 1
				}).Status),
			wantOut:    []string{`instance "web-1": replica on n2 in sync, disk UpToDate (epoch 1)`},
			wantStderr: []string{line("Pending, not placed yet: no node has room for 1 CPU"), line("disk waiting for the primary's first report"), line("disk UpToDate (epoch 1)")},
			wantGets:   3,
		},
		{
			name:       "retries a server error",
			args:       []string{"instance", "wait-synced", "web-1"},
			statuses:   []*api.InstanceStatus{&syncing10, nil, nil, &upToDate},
			wantStderr: []string{at("disk Syncing 10%"), "\n" + line("(retrying: no leader (unavailable))"), at("disk UpToDate")},
			wantGets:   4,
		},
		{
			name:     "shared storage",
			args:     []string{"instance", "wait-synced", "db"},
			wantErr:  `instance "db" is not replicated: its disk is on shared storage (shared:/mnt/ferry), which ferry does not replicate; there is no replica to wait for`,
			noStderr: []string{"instance/db"},
		},
		{
			name:     "no replica host",
			args:     []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(replicated(func(s *api.InstanceStatus) { s.ReplicaNode, s.ReplicaOutdated = "", false }).Status),
			wantErr:  `instance "web-1" is not replicated: it runs on n1 without a replica host (no other Ready, schedulable host had room for its disk when it was placed)`,
			wantGets: 1,
		},
		{
			name: "placed without a replica host",
			args: []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(api.InstanceStatus{Phase: api.PhasePending},
				replicated(func(s *api.InstanceStatus) { s.ReplicaNode, s.ReplicaOutdated = "", false }).Status),
			wantErr:    `instance "web-1" is not replicated: it runs on n1 without a replica host`,
			wantStderr: []string{line("Pending, not placed yet")},
			wantGets:   2,
		},
		{
			name:     "timeout",
			args:     []string{"instance", "wait-synced", "web-1", "--timeout", "20ms"},
			statuses: ptrs(degraded),
			wantErr:  `timed out after 20ms waiting for the disk of instance "web-1" to be in sync (now Degraded: replica n2 unreachable; replica lacks 10M)`,
		},
		{
			name:     "timeout while syncing",
			args:     []string{"instance", "wait-synced", "web-1", "--timeout", "20ms"},
			statuses: ptrs(syncing10),
			wantErr:  `timed out after 20ms waiting for the disk of instance "web-1" to be in sync (now Syncing 10% (270M of 300M left, 30M/s, about 9s left))`,
		},
		{
			name:     "interrupted",
			args:     []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(degraded),
			cancelOn: "disk Degraded",
			wantErr:  `interrupted while waiting for the disk of instance "web-1" to be in sync (now Degraded: replica n2 unreachable; replica lacks 10M): context canceled`,
		},
		{
			name:     "being deleted",
			args:     []string{"instance", "wait-synced", "web-1"},
			statuses: ptrs(replicated(func(s *api.InstanceStatus) { s.Deleting, s.Phase = true, api.PhaseDeleting }).Status),
			wantErr:  `instance "web-1" is being deleted`,
		},
		{
			name:     "not found",
			args:     []string{"instance", "wait-synced", "x"},
			wantErr:  `instance "x" not found`,
			wantGets: -1,
		},
		{
			name:    "without NAME",
			args:    []string{"instance", "wait-synced"},
			wantErr: "missing the instance NAME",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			if tc.statuses != nil {
				e.api.statuses["web-1"] = tc.statuses
			}
			r := e.run(t, runOpts{cancelOnStderr: tc.cancelOn}, tc.args...)
			r.check(t, tc.wantOut, tc.wantErr)
			rest := r.stderr
			for _, w := range tc.wantStderr {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("stderr lacks %q (in this order); stderr:\n%q", w, r.stderr)
					break
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tc.noStderr {
				if strings.Contains(r.stderr, w) {
					t.Errorf("stderr has %q; stderr:\n%q", w, r.stderr)
				}
			}
			if tc.wantGets != 0 {
				want := slices.Repeat([]string{"GET /v1/instances/" + tc.args[len(tc.args)-1]}, max(tc.wantGets, 1))
				if got := e.api.requestLog(); !reflect.DeepEqual(got, want) {
					t.Errorf("requests = %q, want %q", got, want)
				}
			}
			if slices.Contains(tc.args, "--json") && r.err == nil {
				var in api.Instance
				dec := json.NewDecoder(strings.NewReader(r.stdout))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&in); err != nil {
					t.Fatalf("stdout is not an instance: %v\n%s", err, r.stdout)
				}
				if !diskSynced(&in) {
					t.Errorf("printed instance is not in sync: %+v", in.Status)
				}
			}
		})
	}
}
