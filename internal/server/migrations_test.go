package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
)

// migEnv is a server with fake agents that heartbeat, for driving
// migrations through their protocol by hand.
type migEnv struct {
	t      *testing.T
	ts     *testServer
	agents map[string]*fakeAgent
	mu     sync.Mutex
	stops  map[string]func()
}

func newMigEnv(t *testing.T, nodes ...string) *migEnv {
	t.Helper()
	e := &migEnv{t: t, ts: startServer(t, nil), agents: map[string]*fakeAgent{}, stops: map[string]func(){}}
	for _, n := range nodes {
		a := e.ts.mustJoin(n)
		e.agents[n] = a
		e.stops[n] = a.keepBeating()
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			e.stop(n)
		}
	})
	waitFor(t, 10*time.Second, "nodes Ready", func() bool {
		var list api.List[api.Node]
		e.ts.do("GET", "/v1/nodes", nil, &list)
		ready := 0
		for _, n := range list.Items {
			if n.Status.State == api.NodeReady {
				ready++
			}
		}
		return ready == len(nodes)
	})
	return e
}

// stop ends a node's heartbeats: its lease expires a TTL later.
func (e *migEnv) stop(node string) {
	e.mu.Lock()
	stop := e.stops[node]
	delete(e.stops, node)
	e.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// running creates an instance, waits for its placement and makes it
// Running on its primary, with its replica in sync (synced) or not.
func (e *migEnv) running(name string, spec api.InstanceSpec, synced bool) api.Instance {
	e.t.Helper()
	e.ts.createInstance(name, spec)
	var in api.Instance
	waitFor(e.t, 10*time.Second, name+" placed", func() bool {
		in, _ = e.ts.getInstance(name)
		return in.Status.Node != "" && (spec.SharedPath() != "" || in.Status.ReplicaNode != "")
	})
	if code := e.agents[in.Status.Node].report(name, api.InstanceReport{Phase: api.PhaseRunning, Booted: true}); code != 200 {
		e.t.Fatalf("report %s Running = %d", name, code)
	}
	if synced && spec.SharedPath() == "" {
		if code := e.disk(in.Status.Node, name, api.DiskStatus{State: api.DiskUpToDate, Epoch: in.Status.Epoch}); code != 200 {
			e.t.Fatalf("report %s UpToDate = %d", name, code)
		}
	}
	in, _ = e.ts.getInstance(name)
	return in
}

func (e *migEnv) disk(node, name string, d api.DiskStatus) int {
	e.t.Helper()
	return doJSON(e.t, e.agents[node].client, "PUT", e.ts.url+"/v1/agent/instances/"+name+"/disk", "", d, nil)
}

// migrate asks for a migration; it returns the status and the operation
// or the error.
func (e *migEnv) migrate(name string, body any) (int, api.Operation, api.ErrorDetail) {
	e.t.Helper()
	var raw json.RawMessage
	code := e.ts.do("POST", "/v1/instances/"+name+"/migrate", body, &raw)
	var op api.Operation
	var eb api.ErrorBody
	if code == http.StatusAccepted {
		if err := json.Unmarshal(raw, &op); err != nil {
			e.t.Fatal(err)
		}
	} else if err := json.Unmarshal(raw, &eb); err != nil {
		e.t.Fatal(err)
	}
	return code, op, eb.Error
}

// mustMigrate starts a migration and returns its operation.
func (e *migEnv) mustMigrate(name string, req api.MigrateRequest) api.Operation {
	e.t.Helper()
	code, op, eb := e.migrate(name, req)
	if code != http.StatusAccepted {
		e.t.Fatalf("migrate %s %+v = %d %+v", name, req, code, eb)
	}
	return op
}

// report sends a migration report from node; it returns the status, the
// instance (on 200) and the error (otherwise).
func (e *migEnv) report(node, name string, rep api.MigrationReport) (int, api.Instance, api.ErrorDetail) {
	e.t.Helper()
	var raw json.RawMessage
	code := doJSON(e.t, e.agents[node].client, "PUT", e.ts.url+"/v1/agent/instances/"+name+"/migration", "", rep, &raw)
	var in api.Instance
	var eb api.ErrorBody
	if code == 200 {
		if err := json.Unmarshal(raw, &in); err != nil {
			e.t.Fatal(err)
		}
	} else if err := json.Unmarshal(raw, &eb); err != nil {
		e.t.Fatal(err)
	}
	return code, in, eb.Error
}

func (e *migEnv) mustReport(node, name string, rep api.MigrationReport) api.Instance {
	e.t.Helper()
	code, in, eb := e.report(node, name, rep)
	if code != 200 {
		e.t.Fatalf("%s reports %s for %s = %d %+v", node, rep.Phase, name, code, eb)
	}
	return in
}

func (e *migEnv) op(name string) api.Operation {
	e.t.Helper()
	var op api.Operation
	if code := e.ts.do("GET", "/v1/operations/"+name, nil, &op); code != 200 {
		e.t.Fatalf("GET operation %s = %d", name, code)
	}
	return op
}

func (e *migEnv) waitOp(name, state string) api.Operation {
	e.t.Helper()
	var op api.Operation
	waitFor(e.t, 15*time.Second, "operation "+name+" "+state, func() bool {
		op = e.op(name)
		return op.State == state
	})
	return op
}

func (e *migEnv) get(name string) api.Instance {
	e.t.Helper()
	in, code := e.ts.getInstance(name)
	if code != 200 {
		e.t.Fatalf("GET instance %s = %d", name, code)
	}
	return in
}

// events returns the types of the events about instance name, in order.
func (e *migEnv) events(name string) []string {
	e.t.Helper()
	var evs api.List[api.Event]
	e.ts.do("GET", "/v1/events?limit=1000", nil, &evs)
	var out []string
	for _, ev := range evs.Items {
		if ev.Kind == api.KindInstance && ev.Name == name {
			out = append(out, ev.Type)
		}
	}
	return out
}

func stepNames(op api.Operation) []string {
	out := []string{}
	for _, s := range op.Steps {
		out = append(out, s.Name)
	}
	return out
}

func contains(list []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, s := range list {
			found = found || s == w
		}
		if !found {
			return false
		}
	}
	return true
}

// nextFor returns the next assignment event about name that pred accepts.
func nextFor(t *testing.T, ch <-chan api.AssignmentEvent, name, what string, pred func(api.AssignmentEvent) bool) api.AssignmentEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream closed waiting for %s", what)
			}
			if ev.Name == name && pred(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestMigrateLive drives a live migration through the whole protocol:
// the operation and the status appear in one transaction, the target
// prepares, the source's progress is throttled, the switch swaps the
// disk's roles under one raised epoch (a retry changes nothing), the
// target resumes, and the controller ends the operation.
func TestMigrateLive(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	in := e.running("web", smallSpec(), true)
	src, dst, epoch := in.Status.Node, in.Status.ReplicaNode, in.Status.Epoch
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srcStream, dstStream := e.agents[src].stream(ctx), e.agents[dst].stream(ctx)
	nextFor(t, dstStream, "web", "the target's snapshot", func(ev api.AssignmentEvent) bool { return ev.Role == api.RoleSecondary })

	op := e.mustMigrate("web", api.MigrateRequest{MaxBandwidth: 64 << 20})
	wantName := fmt.Sprintf("migrate-web-%d-1", epoch)
	if op.Name != wantName || op.Type != api.OpMigrate || op.Mode != api.MigrateLive || op.From != src || op.To != dst ||
		op.State != api.OpRunning || op.Cause != "requested by admin" || !reflect.DeepEqual(stepNames(op), []string{api.StepRequested}) {
		t.Fatalf("operation = %+v", op)
	}
	in = e.get("web")
	m := in.Status.Migration
	if m == nil || in.Status.Operation != op.Name || m.Operation != op.Name || m.Phase != api.MigPrepare || m.Source != src || m.Target != dst ||
		m.Mode != api.MigrateLive || m.DowntimeLimitMS != 300 || m.ConvergeSeconds != 60 || m.Fallback != "cold" || m.Epoch != epoch || m.MaxBandwidth != 64<<20 {
		t.Fatalf("status after migrate: operation %q migration %+v", in.Status.Operation, m)
	}
	nextFor(t, dstStream, "web", "the target's put with the migration", func(ev api.AssignmentEvent) bool {
		return ev.Instance != nil && ev.Instance.Status.Migration != nil && ev.Role == api.RoleSecondary
	})

	rep := func(phase string) api.MigrationReport { return api.MigrationReport{Operation: op.Name, Phase: phase} }
	// Reports that do not fit are refused: the source is not the one
	// that prepares, the target does not send.
	ready := rep(api.MigReportReady)
	ready.URI = "tcp:10.0.0.2:49152"
	if code, _, eb := e.report(src, "web", ready); code != 409 || !strings.Contains(eb.Message, "does not fit") {
		t.Fatalf("ready from the source = %d %+v, want 409", code, eb)
	}
	if code, _, _ := e.report(src, "web", rep(api.MigReportTransferred)); code != 409 {
		t.Fatalf("transferred before ready = %d, want 409", code)
	}
	in = e.mustReport(dst, "web", ready)
	if in.Status.Migration.Phase != api.MigReady || in.Status.Migration.URI != ready.URI {
		t.Fatalf("after ready: %+v", in.Status.Migration)
	}
	e.mustReport(dst, "web", ready) // a retry is harmless

	progress := rep(api.MigReportTransferring)
	progress.RAMTotal, progress.RAMTransferred, progress.RAMRemaining = 256<<20, 120<<20, 40<<20
	e.mustReport(src, "web", progress)
	progress.RAMTransferred, progress.RAMRemaining = 200<<20, 10<<20
	e.mustReport(src, "web", progress) // within a second: dropped
	got := e.op(op.Name)
	if got.Message != "sent 120 MiB of 256 MiB, 40 MiB left" || got.Progress == nil || got.Progress.RAMTransferred != 120<<20 {
		t.Fatalf("progress: message %q progress %+v", got.Message, got.Progress)
	}
	if code, _, _ := e.report(dst, "web", progress); code != 409 {
		t.Fatalf("progress from the target = %d, want 409", code)
	}

	done := rep(api.MigReportTransferred)
	done.DowntimeMS, done.RAMTotal, done.RAMTransferred = 42, 256<<20, 260<<20
	in = e.mustReport(src, "web", done)
	m = in.Status.Migration
	if in.Status.Node != dst || in.Status.ReplicaNode != src || in.Status.Epoch != epoch+1 || in.Status.ReplicaOutdated ||
		in.Status.Phase != api.PhaseRunning || m == nil || m.Phase != api.MigSwitched || m.Epoch != epoch+1 {
		t.Fatalf("after the switch: node %s replica %s epoch %d outdated %v phase %s migration %+v",
			in.Status.Node, in.Status.ReplicaNode, in.Status.Epoch, in.Status.ReplicaOutdated, in.Status.Phase, m)
	}
	in = e.mustReport(src, "web", done) // the answer got lost: the same answer
	if in.Status.Epoch != epoch+1 || in.Status.Node != dst {
		t.Fatalf("retried switch: node %s epoch %d", in.Status.Node, in.Status.Epoch)
	}
	nextFor(t, dstStream, "web", "the target becoming primary", func(ev api.AssignmentEvent) bool { return ev.Role == api.RolePrimary })
	nextFor(t, srcStream, "web", "the source becoming secondary", func(ev api.AssignmentEvent) bool { return ev.Role == api.RoleSecondary })
	// The old primary no longer speaks for the disk or the instance.
	if code := e.disk(src, "web", api.DiskStatus{State: api.DiskUpToDate, Epoch: epoch + 1}); code != 409 {
		t.Fatalf("disk report from the old primary = %d, want 409", code)
	}
	if code, _, _ := e.report(src, "web", rep(api.MigReportResumed)); code != 409 {
		t.Fatalf("resumed from the source = %d, want 409", code)
	}
	in = e.mustReport(dst, "web", rep(api.MigReportResumed))
	if in.Status.Migration != nil {
		t.Fatalf("migration still set after resumed: %+v", in.Status.Migration)
	}
	e.mustReport(dst, "web", rep(api.MigReportResumed)) // a retry
	got = e.waitOp(op.Name, api.OpSucceeded)
	want := []string{api.StepRequested, api.StepPrepared, api.StepTransferred, api.StepSwitched, api.StepResumed}
	if !reflect.DeepEqual(stepNames(got), want) || got.Epoch != epoch+1 || got.DowntimeMS != 42 ||
		!strings.Contains(got.Message, "paused for 42 ms") || !strings.Contains(got.Step(api.StepTransferred).Message, "42 ms") {
		t.Fatalf("operation = steps %v epoch %d downtime %d message %q", stepNames(got), got.Epoch, got.DowntimeMS, got.Message)
	}
	in = e.get("web")
	if in.Status.Operation != "" || in.Status.Epoch != epoch+1 || in.Status.Boots != 1 {
		t.Fatalf("after: operation %q epoch %d boots %d", in.Status.Operation, in.Status.Epoch, in.Status.Boots)
	}
	if evs := e.events("web"); !contains(evs, "MigrationStarted", "MigrationReady", "MigrationSwitched", "MigrationResumed", "MigrationDone") {
		t.Fatalf("events %v", evs)
	}
	// Late reports of the ended migration are refused.
	if code, _, eb := e.report(src, "web", progress); code != 409 || !strings.Contains(eb.Message, "not in flight") {
		t.Fatalf("late progress = %d %+v, want 409", code, eb)
	}
	// A second migration takes it back, under a new name.
	e.disk(dst, "web", api.DiskStatus{State: api.DiskUpToDate, Epoch: epoch + 1})
	back := e.mustMigrate("web", api.MigrateRequest{To: src, Mode: api.MigrateCold})
	if back.Name != fmt.Sprintf("migrate-web-%d-1", epoch+1) || back.To != src || back.Mode != api.MigrateCold {
		t.Fatalf("second migration = %+v", back)
	}
}

// TestMigrateColdServing: a cold migration of an instance with an IP. The
// switch makes it Scheduled on the target and records that it does not
// serve; the target's boot (an ordinary status report) ends the
// migration's part on the instance; the operation ends when the probe
// answers there, with the downtime.
func TestMigrateColdServing(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	if code := e.ts.do("POST", "/v1/networks", api.Network{Meta: api.Meta{Name: "default"}, CIDR: "10.77.0.0/24"}, nil); code != 201 {
		t.Fatalf("create network = %d", code)
	}
	in := e.running("db", smallSpec(), true)
	src, dst := in.Status.Node, in.Status.ReplicaNode
	yes, no := true, false
	e.agents[src].report("db", api.InstanceReport{Phase: api.PhaseRunning, Serving: &yes, ServingAt: time.Now()})
	op := e.mustMigrate("db", api.MigrateRequest{Mode: api.MigrateCold})
	in = e.get("db")
	if m := in.Status.Migration; m == nil || m.Phase != api.MigStopping || m.Mode != api.MigrateCold || m.DowntimeLimitMS != 0 {
		t.Fatalf("cold migration status: %+v", m)
	}
	rep := func(phase string) api.MigrationReport { return api.MigrationReport{Operation: op.Name, Phase: phase} }
	if code, _, _ := e.report(src, "db", rep(api.MigReportTransferred)); code != 409 {
		t.Fatalf("transferred in a cold migration = %d, want 409", code)
	}
	in = e.mustReport(src, "db", rep(api.MigReportStopped))
	if in.Status.Node != dst || in.Status.ReplicaNode != src || in.Status.Phase != api.PhaseScheduled || in.Status.Serving ||
		in.Status.Migration == nil || in.Status.Migration.Phase != api.MigSwitched || !strings.Contains(in.Status.Message, "booting on "+dst) {
		t.Fatalf("after the cold switch: %+v", in.Status)
	}
	// The old host's status reports are not its to make any more.
	if code := e.agents[src].report("db", api.InstanceReport{Phase: api.PhaseStopped}); code != 409 {
		t.Fatalf("status from the old host = %d, want 409", code)
	}
	e.agents[dst].report("db", api.InstanceReport{Phase: api.PhaseStarting})
	if code := e.agents[dst].report("db", api.InstanceReport{Phase: api.PhaseRunning, Booted: true, Serving: &no}); code != 200 {
		t.Fatalf("booted report = %d", code)
	}
	in = e.get("db")
	got := e.op(op.Name)
	if in.Status.Migration != nil || got.Step(api.StepBooted) == nil || in.Status.Boots != 2 {
		t.Fatalf("after the boot: migration %+v steps %v boots %d", in.Status.Migration, stepNames(got), in.Status.Boots)
	}
	time.Sleep(200 * time.Millisecond)
	if got = e.op(op.Name); got.State != api.OpRunning {
		t.Fatalf("operation %s before the guest serves, want Running: %s", got.State, got.Message)
	}
	e.agents[dst].report("db", api.InstanceReport{Phase: api.PhaseRunning, Serving: &yes, ServingAt: time.Now()})
	got = e.waitOp(op.Name, api.OpSucceeded)
	want := []string{api.StepRequested, api.StepStopped, api.StepSwitched, api.StepBooted, api.StepServing}
	if !reflect.DeepEqual(stepNames(got), want) || got.DowntimeMS <= 0 || !strings.Contains(got.Message, "down for") {
		t.Fatalf("operation: steps %v downtime %d message %q", stepNames(got), got.DowntimeMS, got.Message)
	}
	if evs := e.events("db"); !contains(evs, "NotServing", "MigrationSwitched", "MigrationBooted", "Serving", "MigrationDone") {
		t.Fatalf("events %v", evs)
	}
}

// TestMigrateFallbackToCold: a live transfer that does not converge goes
// on cold when the request allows it, and fails otherwise.
func TestMigrateFallbackToCold(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	in := e.running("web", smallSpec(), true)
	src, dst := in.Status.Node, in.Status.ReplicaNode
	op := e.mustMigrate("web", api.MigrateRequest{ConvergeSeconds: 5})
	e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
	in = e.mustReport(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportFailed, Error: "the transfer did not converge in 5s (dirtying 80 MiB/s)"})
	m := in.Status.Migration
	if m == nil || m.Mode != api.MigrateCold || m.Phase != api.MigStopping || m.URI != "" {
		t.Fatalf("after the fallback: %+v", m)
	}
	got := e.op(op.Name)
	if got.Mode != api.MigrateCold || got.State != api.OpRunning || got.Step(api.StepFallback) == nil || !strings.Contains(got.Step(api.StepFallback).Message, "did not converge") {
		t.Fatalf("operation after the fallback: %+v", got)
	}
	if code, _, _ := e.report(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"}); code != 409 {
		t.Fatalf("ready after the fallback = %d, want 409", code)
	}
	e.mustReport(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportStopped})
	e.agents[dst].report("web", api.InstanceReport{Phase: api.PhaseRunning, Booted: true})
	got = e.waitOp(op.Name, api.OpSucceeded)
	want := []string{api.StepRequested, api.StepPrepared, api.StepFallback, api.StepStopped, api.StepSwitched, api.StepBooted}
	if !reflect.DeepEqual(stepNames(got), want) {
		t.Fatalf("steps %v, want %v", stepNames(got), want)
	}

	// With fallback "fail", the same report fails the migration.
	in = e.get("web")
	e.disk(in.Status.Node, "web", api.DiskStatus{State: api.DiskUpToDate, Epoch: in.Status.Epoch})
	src, dst = in.Status.Node, in.Status.ReplicaNode
	op = e.mustMigrate("web", api.MigrateRequest{Fallback: api.MigFallbackFail})
	e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
	e.mustReport(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportFailed, Error: "did not converge in 60s"})
	got = e.op(op.Name)
	in = e.get("web")
	if got.State != api.OpFailed || got.Message != src+": did not converge in 60s" || in.Status.Migration != nil || in.Status.Operation != "" || in.Status.Node != src {
		t.Fatalf("fallback fail: operation %s %q, instance on %s migration %+v operation %q", got.State, got.Message, in.Status.Node, in.Status.Migration, in.Status.Operation)
	}
}

// TestMigrateFailuresAndCancel: failures before the switch leave the
// instance where it was; a failure after it switches back (the target's
// copy outdated); cancel works before the switch only.
func TestMigrateFailuresAndCancel(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	in := e.running("web", smallSpec(), true)
	src, dst, epoch := in.Status.Node, in.Status.ReplicaNode, in.Status.Epoch

	t.Run("failure before the switch", func(t *testing.T) {
		op := e.mustMigrate("web", api.MigrateRequest{})
		e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportFailed, Error: "cannot start qemu"})
		got, in := e.op(op.Name), e.get("web")
		if got.State != api.OpFailed || got.Message != dst+": cannot start qemu" || in.Status.Migration != nil || in.Status.Operation != "" ||
			in.Status.Node != src || in.Status.Epoch != epoch {
			t.Fatalf("operation %s %q; instance %+v", got.State, got.Message, in.Status)
		}
		if evs := e.events("web"); !contains(evs, "MigrationFailed") {
			t.Fatalf("events %v", evs)
		}
		// Its reports are refused from now on: the agents roll back.
		if code, _, _ := e.report(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportTransferred}); code != 409 {
			t.Fatalf("transferred after the failure = %d, want 409", code)
		}
	})

	t.Run("cancel before the switch", func(t *testing.T) {
		op := e.mustMigrate("web", api.MigrateRequest{})
		if op.Name != fmt.Sprintf("migrate-web-%d-2", epoch) {
			t.Fatalf("second migration under epoch %d named %s", epoch, op.Name)
		}
		e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
		var got api.Operation
		if code := e.ts.do("POST", "/v1/operations/"+op.Name+"/cancel", nil, &got); code != 200 {
			t.Fatalf("cancel = %d", code)
		}
		in := e.get("web")
		if got.State != api.OpCancelled || got.Message != "cancelled by admin in phase ready" || got.EndedAt.IsZero() ||
			in.Status.Migration != nil || in.Status.Operation != "" || in.Status.Node != src {
			t.Fatalf("cancelled: %+v; instance %+v", got, in.Status)
		}
		// The source's switch comes too late: 409, it rolls back.
		if code, _, _ := e.report(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportTransferred}); code != 409 {
			t.Fatalf("transferred after the cancel = %d, want 409", code)
		}
		var eb api.ErrorBody
		if code := e.ts.do("POST", "/v1/operations/"+op.Name+"/cancel", nil, &eb); code != 409 || !strings.Contains(eb.Error.Message, "already ended") {
			t.Fatalf("cancel again = %d %+v, want 409", code, eb)
		}
		var list api.List[api.Operation]
		if code := e.ts.do("GET", "/v1/operations?state=Cancelled", nil, &list); code != 200 || len(list.Items) != 1 || list.Items[0].Name != op.Name {
			t.Fatalf("list Cancelled = %d %+v", code, list.Items)
		}
	})

	t.Run("failure after the switch", func(t *testing.T) {
		op := e.mustMigrate("web", api.MigrateRequest{})
		e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
		e.mustReport(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportTransferred, DowntimeMS: 10})
		var eb api.ErrorBody
		if code := e.ts.do("POST", "/v1/operations/"+op.Name+"/cancel", nil, &eb); code != 409 || !strings.Contains(eb.Error.Message, "already moved to "+dst) {
			t.Fatalf("cancel after the switch = %d %+v, want 409", code, eb)
		}
		if code, _, _ := e.report(src, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportFailed, Error: "x"}); code != 409 {
			t.Fatalf("failed from the source after the switch = %d, want 409", code)
		}
		in := e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportFailed, Error: "resume failed"})
		if in.Status.Node != src || in.Status.ReplicaNode != dst || in.Status.Epoch != epoch+2 || !in.Status.ReplicaOutdated ||
			in.Status.Phase != api.PhaseScheduled || in.Status.Migration != nil || in.Status.Operation != "" {
			t.Fatalf("after the switch back: %+v", in.Status)
		}
		got := e.op(op.Name)
		if got.State != api.OpFailed || got.Message != "target "+dst+" could not run it: resume failed; back on "+src {
			t.Fatalf("operation %s %q", got.State, got.Message)
		}
		// The replica is outdated now: no migration until it is in sync.
		e.agents[src].report("web", api.InstanceReport{Phase: api.PhaseRunning})
		code, _, eb2 := e.migrate("web", api.MigrateRequest{})
		if code != 409 || !strings.Contains(eb2.Message, "wait-synced web") {
			t.Fatalf("migrate with an outdated replica = %d %+v", code, eb2)
		}
	})

	t.Run("cancel refusals", func(t *testing.T) {
		var eb api.ErrorBody
		if code := e.ts.do("POST", "/v1/operations/nope/cancel", nil, &eb); code != 404 {
			t.Fatalf("cancel a missing operation = %d", code)
		}
		fo := &api.Operation{Meta: api.Meta{Name: "failover-x-1"}, Type: api.OpFailover, Instance: "x", State: api.OpRunning, StartedAt: time.Now()}
		if err := e.ts.store.Operations.Create(context.Background(), fo); err != nil {
			t.Fatal(err)
		}
		if code := e.ts.do("POST", "/v1/operations/failover-x-1/cancel", nil, &eb); code != 400 || !strings.Contains(eb.Error.Message, "only migrations") {
			t.Fatalf("cancel a failover = %d %+v, want 400", code, eb)
		}
	})
}

// TestMigrateValidation: every field of the request is checked, and the
// errors name it.
func TestMigrateValidation(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	e.running("web", smallSpec(), true)
	for _, tc := range []struct {
		body      string
		wantCode  int
		wantField string
	}{
		{`{"mode":"warp"}`, 400, "mode"},
		{`{"downtimeLimitMs":-1}`, 400, "downtimeLimitMs"},
		{`{"downtimeLimitMs":60001}`, 400, "downtimeLimitMs"},
		{`{"convergeSeconds":3601}`, 400, "convergeSeconds"},
		{`{"convergeSeconds":-5}`, 400, "convergeSeconds"},
		{`{"fallback":"retry"}`, 400, "fallback"},
		{`{"maxBandwidth":5}`, 400, "maxBandwidth"},
		{`{"to":"Bad_Name"}`, 400, "to"},
		{`{"to":"n9"}`, 400, "to"},
		{`{"speed":1}`, 400, "speed"},
		{`{"mode":1}`, 400, "mode"},
	} {
		t.Run(tc.body, func(t *testing.T) {
			code, _, eb := e.migrate("web", tc.body)
			if code != tc.wantCode || eb.Field != tc.wantField || eb.Code != "invalid" {
				t.Fatalf("migrate %s = %d %+v, want %d field %q", tc.body, code, eb, tc.wantCode, tc.wantField)
			}
		})
	}
	if code, _, _ := e.migrate("nope", `{}`); code != 404 {
		t.Fatalf("migrate a missing instance = %d, want 404", code)
	}
	// A report must be well formed, and about a migration of that instance.
	for _, rep := range []api.MigrationReport{{Phase: "ready", URI: "u"}, {Operation: "x", Phase: "done"}, {Operation: "x", Phase: "ready"}} {
		if code, _, _ := e.report("n1", "web", rep); code != 400 {
			t.Errorf("report %+v = %d, want 400", rep, code)
		}
	}
	if code, _, eb := e.report("n1", "web", api.MigrationReport{Operation: "migrate-other-1-1", Phase: "resumed"}); code != 409 || eb.Field != "operation" {
		t.Errorf("report of an unknown operation = %d %+v, want 409", code, eb)
	}
	if code := doJSON(t, e.ts.client, "PUT", e.ts.url+"/v1/agent/instances/web/migration", "", api.MigrationReport{Operation: "x", Phase: "resumed"}, nil); code != 401 {
		t.Errorf("report without a node certificate = %d, want 401", code)
	}
	// An empty body is the defaults.
	code, op, eb := e.migrate("web", nil)
	if code != 202 || op.Mode != api.MigrateLive {
		t.Fatalf("migrate with no body = %d %+v %+v", code, op, eb)
	}
}

// TestMigratePreconditions: each reason a migration cannot start now is a
// 409 that says what to do.
func TestMigratePreconditions(t *testing.T) {
	e := newMigEnv(t, "n1", "n2", "n3")
	ctx := context.Background()
	in := e.running("web", smallSpec(), true)
	src, dst := in.Status.Node, in.Status.ReplicaNode
	third := "n1"
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != src && n != dst {
			third = n
		}
	}
	stopped := smallSpec()
	stopped.State = api.DesiredStopped
	e.ts.createInstance("off", stopped)
	e.running("lag", smallSpec(), false)
	check := func(name string, body any, wantField, wantMsg string) {
		t.Helper()
		code, _, eb := e.migrate(name, body)
		if code != 409 || eb.Code != "conflict" || eb.Field != wantField || !strings.Contains(eb.Message, wantMsg) {
			t.Fatalf("migrate %s %v = %d %+v, want 409 field %q with %q", name, body, code, eb, wantField, wantMsg)
		}
	}
	check("off", nil, "", "start it first")
	check("lag", nil, "", "wait-synced lag")
	check("web", api.MigrateRequest{To: src}, "to", "already runs on "+src)

	f := true
	if code := e.ts.do("PATCH", "/v1/nodes/"+dst, api.NodePatch{Unschedulable: &f}, nil); code != 200 {
		t.Fatalf("cordon = %d", code)
	}
	check("web", nil, "", "unschedulable")
	nf := false
	e.ts.do("PATCH", "/v1/nodes/"+dst, api.NodePatch{Unschedulable: &nf}, nil)

	hog := &api.Instance{Meta: api.Meta{Name: "hog", CreatedAt: time.Now()}, Spec: api.InstanceSpec{CPUs: 1, Memory: 4 << 30, Disk: 1 << 30, Image: "demo", State: api.DesiredStopped},
		Status: api.InstanceStatus{Phase: api.PhaseStopped, Node: dst}}
	if err := e.ts.store.Instances.Create(ctx, hog); err != nil {
		t.Fatal(err)
	}
	check("web", nil, "", "no room")
	if err := e.ts.store.Instances.Delete(ctx, "hog", 0); err != nil {
		t.Fatal(err)
	}
	// A host that holds no replica needs room for a copy of the disk.
	full := &api.Instance{Meta: api.Meta{Name: "full", CreatedAt: time.Now()}, Spec: api.InstanceSpec{CPUs: 1, Memory: 1 << 20, Disk: 100 << 30, Image: "demo", State: api.DesiredStopped},
		Status: api.InstanceStatus{Phase: api.PhaseStopped, Node: third}}
	if err := e.ts.store.Instances.Create(ctx, full); err != nil {
		t.Fatal(err)
	}
	check("web", api.MigrateRequest{To: third}, "to", "no room for a copy of its")
	if err := e.ts.store.Instances.Delete(ctx, "full", 0); err != nil {
		t.Fatal(err)
	}

	op := e.mustMigrate("web", api.MigrateRequest{})
	check("web", nil, "", "in flight")
	if code := e.ts.do("POST", "/v1/operations/"+op.Name+"/cancel", nil, nil); code != 200 {
		t.Fatalf("cancel = %d", code)
	}

	e.stop(dst)
	waitFor(t, 10*time.Second, dst+" NotReady", func() bool {
		var n api.Node
		e.ts.do("GET", "/v1/nodes/"+dst, nil, &n)
		return n.Status.State == api.NodeNotReady
	})
	check("web", nil, "", "not Ready")
}

// TestMigrateCopy: a move to a host that holds no replica. The source
// copies the disk first (phase copy, with progress), then the migration
// goes on as usual; the switch makes the target the primary and keeps the
// replica where it was. A copy whose target dies fails the migration.
func TestMigrateCopy(t *testing.T) {
	e := newMigEnv(t, "n1", "n2", "n3")
	in := e.running("web", smallSpec(), true)
	src, replica, epoch := in.Status.Node, in.Status.ReplicaNode, in.Status.Epoch
	third := ""
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != src && n != replica {
			third = n
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tgtStream := e.agents[third].stream(ctx)

	op := e.mustMigrate("web", api.MigrateRequest{To: third, Mode: api.MigrateCold})
	in = e.get("web")
	m := in.Status.Migration
	if m == nil || !m.Copy || m.Phase != api.MigCopy || m.Target != third || m.TargetAddress != third+".test:7445" {
		t.Fatalf("migration = %+v", m)
	}
	if !strings.Contains(op.Steps[0].Message, "after copying") {
		t.Errorf("requested step %q does not say the disk is copied first", op.Steps[0].Message)
	}
	// The target holds the copy as a secondary of the source.
	nextFor(t, tgtStream, "web", "the target's assignment", func(ev api.AssignmentEvent) bool {
		return ev.Role == api.RoleSecondary && ev.Peer != nil && ev.Peer.Node == src
	})
	rep := func(phase string) api.MigrationReport { return api.MigrationReport{Operation: op.Name, Phase: phase} }
	// Only the source reports the copy, and only in phase copy.
	if code, _, _ := e.report(third, "web", rep(api.MigReportCopying)); code != 409 {
		t.Fatalf("copying from the target = %d, want 409", code)
	}
	if code, _, _ := e.report(src, "web", rep(api.MigReportStopped)); code != 409 {
		t.Fatalf("stopped during the copy = %d, want 409", code)
	}
	copying := rep(api.MigReportCopying)
	copying.CopyTotal, copying.CopyDone, copying.CopySent = 1<<30, 256<<20, 20<<20
	e.mustReport(src, "web", copying)
	got := e.op(op.Name)
	if got.Progress == nil || got.Progress.CopySent != 20<<20 || !strings.Contains(got.Message, "copying the disk to "+third) {
		t.Fatalf("copy progress: %q %+v", got.Message, got.Progress)
	}
	copied := rep(api.MigReportCopied)
	copied.CopyTotal, copied.CopyDone, copied.CopySent = 1<<30, 1<<30, 50<<20
	in = e.mustReport(src, "web", copied)
	if in.Status.Migration.Phase != api.MigStopping {
		t.Fatalf("after copied: phase %s, want %s", in.Status.Migration.Phase, api.MigStopping)
	}
	e.mustReport(src, "web", copied) // a retry
	in = e.mustReport(src, "web", rep(api.MigReportStopped))
	if in.Status.Node != third || in.Status.ReplicaNode != replica || in.Status.Epoch != epoch+1 || in.Status.ReplicaOutdated {
		t.Fatalf("after the switch: node %s replica %s epoch %d outdated %v", in.Status.Node, in.Status.ReplicaNode, in.Status.Epoch, in.Status.ReplicaOutdated)
	}
	got = e.op(op.Name)
	if !reflect.DeepEqual(stepNames(got), []string{api.StepRequested, api.StepCopied, api.StepStopped, api.StepSwitched}) ||
		got.Progress == nil || got.Progress.CopySent != 50<<20 || !strings.Contains(got.Step(api.StepSwitched).Message, "stays on "+replica) {
		t.Fatalf("operation: steps %v progress %+v", stepNames(got), got.Progress)
	}
	// The source is no longer assigned the instance at all.
	if assignedTo(&in, src) {
		t.Fatalf("the source %s is still assigned the instance", src)
	}

	// A copy whose target dies ends the migration; the guest stays.
	if code := e.agents[third].report("web", api.InstanceReport{Phase: api.PhaseRunning, Booted: true}); code != 200 {
		t.Fatalf("boot on the target = %d", code)
	}
	e.disk(third, "web", api.DiskStatus{State: api.DiskUpToDate, Epoch: epoch + 1})
	e.waitOp(op.Name, api.OpSucceeded)
	op2 := e.mustMigrate("web", api.MigrateRequest{To: src})
	if m := e.get("web").Status.Migration; m == nil || !m.Copy || m.Target != src {
		t.Fatalf("second move: %+v", m)
	}
	e.stop(src)
	got = e.waitOp(op2.Name, api.OpFailed)
	if !strings.Contains(got.Message, "target "+src+" died") {
		t.Fatalf("operation message %q", got.Message)
	}
	if in := e.get("web"); in.Status.Node != third || in.Status.Migration != nil {
		t.Fatalf("after the failed copy: node %s migration %+v", in.Status.Node, in.Status.Migration)
	}
}

// TestMigrateTargetDies: the controller's watchdog fails a migration
// whose target dies before the switch; the instance stays.
func TestMigrateTargetDies(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	in := e.running("web", smallSpec(), true)
	src, dst := in.Status.Node, in.Status.ReplicaNode
	op := e.mustMigrate("web", api.MigrateRequest{})
	e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
	e.stop(dst)
	got := e.waitOp(op.Name, api.OpFailed)
	in = e.get("web")
	if got.Message != "target "+dst+" died before the switch; web stays on "+src || in.Status.Migration != nil || in.Status.Operation != "" || in.Status.Node != src {
		t.Fatalf("operation %q; instance %+v", got.Message, in.Status)
	}
}

// TestMigrateSourceDies: the source dying mid-migration fails the
// instance over, and the failover's transaction ends the migration.
func TestMigrateSourceDies(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	in := e.running("web", smallSpec(), true)
	src, dst := in.Status.Node, in.Status.ReplicaNode
	op := e.mustMigrate("web", api.MigrateRequest{})
	e.mustReport(dst, "web", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
	e.stop(src)
	got := e.waitOp(op.Name, api.OpFailed)
	in = e.get("web")
	if got.Message != "source "+src+" died before the switch; failed over to "+dst || in.Status.Migration != nil || in.Status.Node != dst ||
		!strings.HasPrefix(in.Status.Operation, "failover-web-") {
		t.Fatalf("operation %q; instance %+v", got.Message, in.Status)
	}
}

// TestMigrateSharedStorage: on shared storage the scheduler picks the
// target, which gets the instance as secondary until the switch; after
// it the source has no part any more.
func TestMigrateSharedStorage(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	spec := smallSpec()
	spec.Storage = "shared:/mnt/ferry"
	in := e.running("s", spec, true)
	src := in.Status.Node
	dst := map[string]string{"n1": "n2", "n2": "n1"}[src]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srcStream, dstStream := e.agents[src].stream(ctx), e.agents[dst].stream(ctx)
	nextFor(t, srcStream, "s", "the source's snapshot", func(ev api.AssignmentEvent) bool { return ev.Role == api.RolePrimary })
	op := e.mustMigrate("s", api.MigrateRequest{})
	if op.To != dst {
		t.Fatalf("target %s, want %s", op.To, dst)
	}
	ev := nextFor(t, dstStream, "s", "the target's put", func(ev api.AssignmentEvent) bool { return ev.Type == api.AssignPut })
	if ev.Role != api.RoleSecondary || ev.Instance.Status.Migration == nil || ev.Instance.Status.Migration.Target != dst {
		t.Fatalf("target's assignment: %+v", ev)
	}
	e.mustReport(dst, "s", api.MigrationReport{Operation: op.Name, Phase: api.MigReportReady, URI: "tcp:x:1"})
	in = e.mustReport(src, "s", api.MigrationReport{Operation: op.Name, Phase: api.MigReportTransferred, DowntimeMS: 5})
	if in.Status.Node != dst || in.Status.ReplicaNode != "" || in.Status.ReplicaOutdated {
		t.Fatalf("after the switch: %+v", in.Status)
	}
	nextFor(t, dstStream, "s", "the target becoming primary", func(ev api.AssignmentEvent) bool { return ev.Role == api.RolePrimary })
	del := nextFor(t, srcStream, "s", "the source's delete", func(ev api.AssignmentEvent) bool { return ev.Type == api.AssignDelete })
	if del.Gone {
		t.Fatal("the source was told the instance is gone: it only moved")
	}
	e.mustReport(dst, "s", api.MigrationReport{Operation: op.Name, Phase: api.MigReportResumed})
	e.waitOp(op.Name, api.OpSucceeded)

	// A cancelled migration takes the instance away from its target again.
	op = e.mustMigrate("s", api.MigrateRequest{})
	nextFor(t, srcStream, "s", "the new target's put", func(ev api.AssignmentEvent) bool { return ev.Type == api.AssignPut && ev.Role == api.RoleSecondary })
	if code := e.ts.do("POST", "/v1/operations/"+op.Name+"/cancel", nil, nil); code != 200 {
		t.Fatalf("cancel = %d", code)
	}
	nextFor(t, srcStream, "s", "the delete after the cancel", func(ev api.AssignmentEvent) bool { return ev.Type == api.AssignDelete })
}

// TestMigrationOperationNames: names stay unique across retries under one
// epoch, and an instance with a similar name does not count.
func TestMigrationOperationNames(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	in := e.running("web", smallSpec(), true)
	ctx := context.Background()
	for _, name := range []string{fmt.Sprintf("migrate-web-%d-7", in.Status.Epoch), fmt.Sprintf("migrate-web-%d-x", in.Status.Epoch), fmt.Sprintf("migrate-web-%d-9-1", in.Status.Epoch)} {
		old := &api.Operation{Meta: api.Meta{Name: name}, Type: api.OpMigrate, Instance: "web", State: api.OpFailed}
		if err := e.ts.store.Operations.Create(ctx, old); err != nil && !strings.Contains(err.Error(), store.ErrExists.Error()) {
			t.Fatal(err)
		}
	}
	op := e.mustMigrate("web", api.MigrateRequest{})
	if want := fmt.Sprintf("migrate-web-%d-8", in.Status.Epoch); op.Name != want {
		t.Fatalf("name %s, want %s", op.Name, want)
	}
}

// completeLive plays both agents of the live migration in flight on name.
func (e *migEnv) completeLive(name string) {
	e.t.Helper()
	in := e.get(name)
	m := in.Status.Migration
	if m == nil {
		e.t.Fatalf("%s has no migration in flight", name)
	}
	e.mustReport(m.Target, name, api.MigrationReport{Operation: m.Operation, Phase: api.MigReportReady, URI: "tcp:x:1"})
	e.mustReport(m.Source, name, api.MigrationReport{Operation: m.Operation, Phase: api.MigReportTransferred, DowntimeMS: 3})
	in = e.mustReport(m.Target, name, api.MigrationReport{Operation: m.Operation, Phase: api.MigReportResumed})
	// The new primary reports its disk in sync, as its agent would.
	e.disk(m.Target, name, api.DiskStatus{State: api.DiskUpToDate, Epoch: in.Status.Epoch})
}

func (e *migEnv) node(name string) api.Node {
	e.t.Helper()
	var n api.Node
	if code := e.ts.do("GET", "/v1/nodes/"+name, nil, &n); code != 200 {
		e.t.Fatalf("GET node %s = %d", name, code)
	}
	return n
}

// TestDrainNode drains a node through the API with agents playing their
// parts: at most one migration at a time as asked, the node Drained at
// the end; an undrain with restore brings the instances back.
func TestDrainNode(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	var names []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("web-%d", i)
		e.running(name, smallSpec(), true)
		names = append(names, name)
	}
	// Validation.
	var eb api.ErrorBody
	for body, field := range map[string]string{`{"mode":"hot"}`: "mode", `{"maxConcurrent":65}`: "maxConcurrent", `{"maxConcurrent":-1}`: "maxConcurrent", `{"x":1}`: "x"} {
		if code := e.ts.do("POST", "/v1/nodes/n1/drain", body, &eb); code != 400 || eb.Error.Field != field {
			t.Errorf("drain %s = %d %+v, want 400 %s", body, code, eb, field)
		}
	}
	if code := e.ts.do("POST", "/v1/nodes/n9/drain", nil, &eb); code != 404 {
		t.Errorf("drain a missing node = %d", code)
	}
	if code := e.ts.do("POST", "/v1/nodes/n1/undrain", api.UndrainRequest{Restore: true}, &eb); code != 409 || eb.Error.Field != "restore" {
		t.Errorf("undrain --restore of a node not drained = %d %+v, want 409", code, eb)
	}

	on := func(node string) []string {
		var list api.List[api.Instance]
		e.ts.do("GET", "/v1/instances", nil, &list)
		var out []string
		for _, in := range list.Items {
			if in.Status.Node == node {
				out = append(out, in.Name)
			}
		}
		return out
	}
	// Gather every instance on n1 first (moving the others there).
	for _, name := range on("n2") {
		e.mustMigrate(name, api.MigrateRequest{To: "n1"})
		e.completeLive(name)
		e.waitOp(e.op(fmt.Sprintf("migrate-%s-%d-1", name, e.get(name).Status.Epoch-1)).Name, api.OpSucceeded)
	}
	if got := on("n1"); len(got) != 3 {
		t.Fatalf("on n1: %v", got)
	}

	var n api.Node
	if code := e.ts.do("POST", "/v1/nodes/n1/drain", api.DrainRequest{MaxConcurrent: 1}, &n); code != 200 {
		t.Fatalf("drain = %d", code)
	}
	if !n.Spec.Unschedulable || n.Spec.Drain == nil || n.Spec.Drain.Mode != api.MigrateLive || n.Spec.Drain.MaxConcurrent != 1 || n.Status.Drain == nil || n.Status.Drain.Remaining != 3 {
		t.Fatalf("drained node: spec %+v drain %+v status %+v", n.Spec, n.Spec.Drain, n.Status.Drain)
	}
	for moved := 0; moved < 3; moved++ {
		var busy []string
		waitFor(t, 10*time.Second, "a drain migration", func() bool {
			busy = nil
			for _, name := range names {
				if in := e.get(name); in.Status.Migration != nil {
					busy = append(busy, name)
				}
			}
			return len(busy) > 0
		})
		if len(busy) != 1 {
			t.Fatalf("migrations in flight %v, want one at a time", busy)
		}
		in := e.get(busy[0])
		if in.Status.Migration.Drain != "n1" || in.Status.Migration.Target != "n2" {
			t.Fatalf("drain migration %+v", in.Status.Migration)
		}
		e.completeLive(busy[0])
		waitFor(t, 10*time.Second, busy[0]+"'s migration to end", func() bool { return e.get(busy[0]).Status.Operation == "" })
	}
	waitFor(t, 10*time.Second, "n1 drained", func() bool {
		n = e.node("n1")
		return n.Status.Drain != nil && n.Status.Drain.Drained && !n.Spec.Drain.DrainedAt.IsZero()
	})
	if len(n.Spec.Drain.Took) != 3 || n.Status.Drain.Remaining != 0 {
		t.Fatalf("drained: %+v %+v", n.Spec.Drain, n.Status.Drain)
	}

	n = api.Node{}
	if code := e.ts.do("POST", "/v1/nodes/n1/undrain", api.UndrainRequest{Restore: true}, &n); code != 200 {
		t.Fatalf("undrain = %d", code)
	}
	if n.Spec.Unschedulable || n.Spec.Drain != nil || n.Spec.Restore == nil || len(n.Spec.Restore.Instances) != 3 {
		t.Fatalf("undrained: %+v restore %+v", n.Spec, n.Spec.Restore)
	}
	for moved := 0; moved < 3; moved++ {
		var busy string
		waitFor(t, 10*time.Second, "a restore migration", func() bool {
			for _, name := range names {
				if in := e.get(name); in.Status.Migration != nil {
					busy = name
					return true
				}
			}
			return false
		})
		e.completeLive(busy)
		waitFor(t, 10*time.Second, busy+"'s migration to end", func() bool { return e.get(busy).Status.Operation == "" })
	}
	if got := on("n1"); len(got) != 3 {
		t.Fatalf("after the restore, on n1: %v", got)
	}
	waitFor(t, 10*time.Second, "the restore to end", func() bool { return e.node("n1").Spec.Restore == nil })
	if evs := e.events("web-1"); !contains(evs, "MigrationStarted", "MigrationDone") {
		t.Fatalf("events %v", evs)
	}
}

// TestDrainNodeReplicas: a drain with replicas records it, and says so in
// its event; draining again without it is a change, not a no-op.
func TestDrainNodeReplicas(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	var n api.Node
	if code := e.ts.do("POST", "/v1/nodes/n1/drain", api.DrainRequest{Replicas: true}, &n); code != 200 {
		t.Fatalf("drain = %d", code)
	}
	if d := n.Spec.Drain; d == nil || !d.Replicas || n.Status.Drain == nil {
		t.Fatalf("drain %+v status %+v, want replicas", n.Spec.Drain, n.Status.Drain)
	}
	var evs api.List[api.Event]
	e.ts.do("GET", "/v1/events", nil, &evs)
	found := false
	for _, ev := range evs.Items {
		found = found || (ev.Type == "NodeDrain" && strings.Contains(ev.Message, "the replicas it holds move too"))
	}
	if !found {
		t.Errorf("no NodeDrain event naming the replicas in %+v", evs.Items)
	}
	n = api.Node{}
	if code := e.ts.do("POST", "/v1/nodes/n1/drain", api.DrainRequest{}, &n); code != 200 || n.Spec.Drain == nil || n.Spec.Drain.Replicas {
		t.Fatalf("drain again without replicas = %d, drain %+v", code, n.Spec.Drain)
	}
}
