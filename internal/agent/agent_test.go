package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/vmm"
	"github.com/ferrycluster/ferry/internal/vmm/fake"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// waitTimeout bounds every wait for the agent to do something.
const waitTimeout = 15 * time.Second

// testTuning makes retries and restarts fast.
var testTuning = tuning{
	startBackoffMin: 50 * time.Millisecond,
	startBackoffMax: 400 * time.Millisecond,
	stableAfter:     time.Minute,
	retryMin:        20 * time.Millisecond,
	retryMax:        200 * time.Millisecond,
	streamIdle:      35 * time.Second,
	stopTimeout:     time.Second,
	reportTimeout:   5 * time.Second,
}

// metricValue returns the value of a gauge or counter.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	if g := pb.GetGauge(); g != nil {
		return g.GetValue()
	}
	return pb.GetCounter().GetValue()
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// never polls cond for d and fails if it ever holds.
func never(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasSubsequence reports whether want appears in got in order.
func hasSubsequence(got, want []api.Phase) bool {
	i := 0
	for _, p := range got {
		if i < len(want) && p == want[i] {
			i++
		}
	}
	return i == len(want)
}

// waitPhases waits until the reports about name include want, in order.
func waitPhases(t *testing.T, ts *testServer, name string, want ...api.Phase) {
	t.Helper()
	eventually(t, "reports "+strings.Join(phaseStrings(want), ", ")+" for "+name, func() bool {
		return hasSubsequence(ts.phasesOf(name), want)
	})
}

func phaseStrings(ps []api.Phase) []string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p))
	}
	return out
}

type runningAgent struct {
	*Agent
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func testConfig(t *testing.T, ts *testServer, dir string, d vmm.Driver) Config {
	return Config{
		ServerURL:         ts.url,
		JoinToken:         ts.newToken(),
		StateDir:          dir,
		NodeName:          "n1",
		Capacity:          api.Resources{CPUs: 4, Memory: 8 << 30, Disk: 100 << 30},
		Driver:            d,
		HeartbeatInterval: 100 * time.Millisecond,
		ListenAddr:        "127.0.0.1:0",
		Logger:            slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Version:           "test",
	}
}

// startAgent runs an agent with cfg until the test ends (or stop).
func startAgent(t *testing.T, cfg Config) *runningAgent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.tune = testTuning
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() { ra.stop() })
	return ra
}

// stop ends Run and returns its error.
func (ra *runningAgent) stop() error {
	ra.once.Do(func() {
		ra.cancel()
		select {
		case ra.err = <-ra.done:
		case <-time.After(waitTimeout):
			ra.t.Errorf("agent did not stop within %s", waitTimeout)
		}
	})
	return ra.err
}

// waitSynced waits until the agent has processed its stream up to a marker
// instance put after it connected: the marker runs.
func waitSynced(t *testing.T, ts *testServer, marker string) {
	t.Helper()
	ts.put(instance(marker, api.DesiredRunning))
	waitPhases(t, ts, marker, api.PhaseRunning)
}

func TestJoinThenRestartReusesIdentity(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	d := fake.New()
	cfg := testConfig(t, ts, dir, d)
	ra := startAgent(t, cfg)
	eventually(t, "a heartbeat from n1", func() bool { return len(ts.heartbeatsOf("n1")) > 0 })
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	st, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %o, want 600", keyFile, perm)
	}
	for _, f := range []string{certFile, caFile, nodeFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("after join: %v", err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		t.Fatal(err)
	}
	var saved savedNode
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}
	if want := (savedNode{Name: "n1", Server: ts.url}); saved != want {
		t.Errorf("%s = %+v, want %+v", nodeFile, saved, want)
	}

	// A different node name is refused.
	other := cfg
	other.NodeName = "n2"
	other.JoinToken = ""
	if _, err := New(other); err == nil || !strings.Contains(err.Error(), `"n1"`) {
		t.Errorf("New with NodeName n2 over the identity of n1: err = %v, want one naming n1", err)
	}

	// Restart without a token, a node name or a server URL: all saved.
	again := cfg
	again.JoinToken, again.NodeName, again.ServerURL = "", "", ""
	before := len(ts.heartbeatsOf("n1"))
	ra2 := startAgent(t, again)
	if got := ra2.NodeName(); got != "n1" {
		t.Errorf("NodeName() = %q, want n1", got)
	}
	eventually(t, "heartbeats after the restart", func() bool { return len(ts.heartbeatsOf("n1")) > before })
	if n := ts.joinCount(); n != 1 {
		t.Errorf("joins = %d, want 1", n)
	}
}

func TestJoinRejectedToken(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	cfg := testConfig(t, ts, dir, fake.New())
	cfg.JoinToken = ts.unknownToken()
	ra := startAgent(t, cfg)
	var err error
	select {
	case err = <-ra.done:
		ra.done <- err // for stop
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after a rejected join")
	}
	if err == nil || !strings.Contains(err.Error(), "join token is invalid, expired or already used") {
		t.Fatalf("Run = %v, want the server's message", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, certFile)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("%s after a failed join: %v, want it absent", certFile, serr)
	}
}

func TestHeartbeatsOnOwnConnection(t *testing.T) {
	ts := newTestServer(t)
	ts.setBlockStream(true)
	cfg := testConfig(t, ts, t.TempDir(), fake.New())
	ra := startAgent(t, cfg)

	eventually(t, "the assignment stream to be blocked", func() bool { return len(ts.streamAddrs()) > 0 })
	start := len(ts.heartbeatsOf("n1"))
	const n = 10
	eventually(t, "10 heartbeats while the stream is blocked", func() bool { return len(ts.heartbeatsOf("n1")) >= start+n })

	hbs := ts.heartbeatsOf("n1")[start : start+n]
	if span, lo := hbs[n-1].at.Sub(hbs[0].at), time.Duration(n-1)*cfg.HeartbeatInterval*8/10; span < lo {
		t.Errorf("%d heartbeats came within %s, want at least %s (one per interval)", n, span, lo)
	}
	if span, hi := hbs[n-1].at.Sub(hbs[0].at), time.Duration(n-1)*cfg.HeartbeatInterval*5; span > hi {
		t.Errorf("%d heartbeats took %s, want at most %s", n, span, hi)
	}
	stream := ts.streamAddrs()
	for _, hb := range hbs {
		if slices.Contains(stream, hb.remote) {
			t.Errorf("heartbeat came on the stream's connection %s", hb.remote)
		}
		if hb.hb.Capacity != cfg.Capacity || hb.hb.AgentVersion != "test" {
			t.Errorf("heartbeat = %+v, want capacity %+v and version test", hb.hb, cfg.Capacity)
		}
	}
	if ack := ra.LastAck(); ack.IsZero() || time.Since(ack) > 5*time.Second {
		t.Errorf("LastAck() = %v, want a recent time", ack)
	}

	// Metrics and health.
	addr := ra.MetricsAddr()
	if addr == "" {
		t.Fatal("MetricsAddr() is empty")
	}
	body := httpGet(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`ferry_agent_heartbeats_total{result="ok"}`,
		`ferry_agent_heartbeats_total{result="error"} 0`,
		"ferry_agent_reconcile_errors_total 0",
		"ferry_agent_vms 0",
		"ferry_agent_last_heartbeat_ack_timestamp_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if body := httpGet(t, "http://"+addr+"/healthz"); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %q, want ok", body)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, data)
	}
	return string(data)
}

func TestStartStopDelete(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	dir := t.TempDir()
	ra := startAgent(t, testConfig(t, ts, dir, d))

	ts.put(instance("web-1", api.DesiredRunning))
	waitPhases(t, ts, "web-1", api.PhaseStarting, api.PhaseRunning)
	spec, ok := d.Spec("web-1")
	if !ok {
		t.Fatal("the driver has no vm web-1")
	}
	want := vmm.Spec{ID: "web-1", CPUs: 2, MemoryMB: 256, StateDir: filepath.Join(dir, "vms", "web-1")}
	if spec != want {
		t.Errorf("driver got spec %+v, want %+v", spec, want)
	}
	h, err := ra.loadHandle("web-1")
	if err != nil || h.ID != "web-1" || h.Driver != fake.DriverName {
		t.Errorf("persisted handle = %+v, %v", h, err)
	}
	eventually(t, "the vms gauge to be 1", func() bool { return metricValue(t, ra.metrics.vms) == 1 })

	// Stop.
	ts.update("web-1", func(in *api.Instance) { in.Spec.State = api.DesiredStopped })
	waitPhases(t, ts, "web-1", api.PhaseRunning, api.PhaseStopping, api.PhaseStopped)
	if st, err := d.Inspect(context.Background(), "web-1"); err != nil || st.State != vmm.StateStopped {
		t.Errorf("after stop: Inspect = %+v, %v; want stopped", st, err)
	}
	eventually(t, "the vms gauge to be 0", func() bool { return metricValue(t, ra.metrics.vms) == 0 })

	// Start again, then delete.
	ts.update("web-1", func(in *api.Instance) { in.Spec.State = api.DesiredRunning })
	eventually(t, "web-1 running again", func() bool {
		st, err := d.Inspect(context.Background(), "web-1")
		return err == nil && st.State == vmm.StateRunning
	})
	waitPhases(t, ts, "web-1", api.PhaseStopped, api.PhaseStarting, api.PhaseRunning)
	ts.update("web-1", func(in *api.Instance) { in.Status.Deleting = true })
	eventually(t, "a Deleting report with Destroyed", func() bool {
		for _, r := range ts.reportsOf("web-1") {
			if r.Phase == api.PhaseDeleting && r.Destroyed {
				return true
			}
		}
		return false
	})
	if ids, _ := d.List(context.Background()); len(ids) != 0 {
		t.Errorf("after delete the driver lists %v, want none", ids)
	}
	if _, err := os.Stat(ra.handlePath("web-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("handle after delete: %v, want it gone", err)
	}
	eventually(t, "the worker of web-1 to end", func() bool {
		ra.mu.Lock()
		defer ra.mu.Unlock()
		_, ok := ra.workers["web-1"]
		return !ok
	})
	// No duplicate reports in a row.
	reps := ts.reportsOf("web-1")
	for i := 1; i < len(reps); i++ {
		if reps[i].InstanceReport == reps[i-1].InstanceReport {
			t.Errorf("report %d repeats report %d: %+v", i, i-1, reps[i].InstanceReport)
		}
	}
}

func TestStartFailureIsReportedAndRetried(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	d.FailStart("web-1", errors.New("no space for the disk"))
	ra := startAgent(t, testConfig(t, ts, t.TempDir(), d))

	ts.put(instance("web-1", api.DesiredRunning))
	eventually(t, "a Failed report with the start error", func() bool {
		for _, r := range ts.reportsOf("web-1") {
			if r.Phase == api.PhaseFailed && strings.Contains(r.Error, "no space for the disk") {
				return true
			}
		}
		return false
	})
	eventually(t, "reconcile errors counted", func() bool { return metricValue(t, ra.metrics.reconcileErrors) >= 1 })
	d.FailStart("web-1", nil)
	eventually(t, "web-1 running after the fault clears", func() bool {
		st, err := d.Inspect(context.Background(), "web-1")
		return err == nil && st.State == vmm.StateRunning
	})
	waitPhases(t, ts, "web-1", api.PhaseFailed, api.PhaseStarting, api.PhaseRunning)
}

func TestCrashIsReportedAndRestarted(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	ra := startAgent(t, testConfig(t, ts, t.TempDir(), d))

	ts.put(instance("web-1", api.DesiredRunning))
	waitPhases(t, ts, "web-1", api.PhaseRunning)
	if err := d.Crash("web-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a Failed report of the crash", func() bool {
		for _, r := range ts.reportsOf("web-1") {
			if r.Phase == api.PhaseFailed && strings.Contains(r.Error, fake.ErrCrashed.Error()) {
				return true
			}
		}
		return false
	})
	waitPhases(t, ts, "web-1", api.PhaseRunning, api.PhaseFailed, api.PhaseStarting, api.PhaseRunning)
	h, err := ra.loadHandle("web-1")
	if err != nil {
		t.Fatal(err)
	}
	if run := h.Data[fake.DataRun]; run != "2" {
		t.Errorf("handle after the restart is of run %s, want 2", run)
	}
	if st, err := d.Inspect(context.Background(), "web-1"); err != nil || st.State != vmm.StateRunning {
		t.Errorf("after the restart: Inspect = %+v, %v; want running", st, err)
	}
}

func TestAgentRestartRecoversRunningVM(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	dir := t.TempDir()
	cfg := testConfig(t, ts, dir, d)
	ra := startAgent(t, cfg)
	ts.put(instance("web-1", api.DesiredRunning))
	waitPhases(t, ts, "web-1", api.PhaseRunning)
	before, err := d.Inspect(context.Background(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	reportsBefore := len(ts.reportsOf("web-1"))

	cfg.JoinToken = ""
	ra2 := startAgent(t, cfg)
	waitSynced(t, ts, "marker")
	after, err := d.Inspect(context.Background(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if after.State != vmm.StateRunning || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("after the agent restart: %+v, want the same run as %+v", after, before)
	}
	h, err := ra2.loadHandle("web-1")
	if err != nil || h.Data[fake.DataRun] != "1" {
		t.Errorf("handle after the agent restart = %+v, %v; want run 1", h, err)
	}
	if got := ts.reportsOf("web-1")[reportsBefore:]; len(got) != 0 {
		t.Errorf("reports after the agent restart: %+v, want none (it was Running already)", got)
	}
	if g := metricValue(t, ra2.metrics.vms); g != 2 {
		t.Errorf("vms gauge = %v, want 2 (recovered web-1 and marker)", g)
	}

	// The recovered VM is still watched: a crash restarts it.
	if err := d.Crash("web-1"); err != nil {
		t.Fatal(err)
	}
	waitPhases(t, ts, "web-1", api.PhaseFailed, api.PhaseStarting, api.PhaseRunning)
}

func TestStrayVMsDestroyedAfterSync(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	dir := t.TempDir()
	cfg := testConfig(t, ts, dir, d)
	ra := startAgent(t, cfg)
	ts.put(instance("gone", api.DesiredRunning))
	ts.put(instance("kept", api.DesiredRunning))
	waitPhases(t, ts, "gone", api.PhaseRunning)
	waitPhases(t, ts, "kept", api.PhaseRunning)
	if err := ra.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// While the agent is away: "gone" is removed, and a VM the agent never
	// heard of appears in the driver.
	ts.forget("gone")
	if _, err := d.Start(context.Background(), vmm.Spec{ID: "stray", CPUs: 1, MemoryMB: 64}); err != nil {
		t.Fatal(err)
	}

	cfg.JoinToken = ""
	ra2 := startAgent(t, cfg)
	eventually(t, "the driver to list only kept", func() bool {
		ids, err := d.List(context.Background())
		return err == nil && slices.Equal(ids, []string{"kept"})
	})
	eventually(t, "the handle of gone to be removed", func() bool {
		_, err := os.Stat(ra2.handlePath("gone"))
		return errors.Is(err, os.ErrNotExist)
	})
	if st, err := d.Inspect(context.Background(), "kept"); err != nil || st.State != vmm.StateRunning {
		t.Errorf("kept: Inspect = %+v, %v; want running", st, err)
	}
	for _, name := range []string{"gone", "stray"} {
		for _, r := range ts.reportsOf(name) {
			if r.Phase == api.PhaseDeleting || r.Phase == api.PhaseStopped {
				t.Errorf("reported %+v about %s, which is not ours", r, name)
			}
		}
	}
}

func TestUnassignDestroysWithoutReport(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	startAgent(t, testConfig(t, ts, t.TempDir(), d))
	ts.put(instance("web-1", api.DesiredRunning))
	waitPhases(t, ts, "web-1", api.PhaseRunning)
	n := len(ts.reportsOf("web-1"))

	// Moved to another node: the stream says "delete".
	ts.mu.Lock()
	delete(ts.instances, "web-1")
	ts.broadcastLocked(api.AssignmentEvent{Type: api.AssignDelete, Name: "web-1"})
	ts.mu.Unlock()
	eventually(t, "web-1 destroyed", func() bool {
		_, err := d.Inspect(context.Background(), "web-1")
		return errors.Is(err, vmm.ErrNotFound)
	})
	if got := ts.reportsOf("web-1")[n:]; len(got) != 0 {
		t.Errorf("reports after the unassignment: %+v, want none", got)
	}
}

func TestConflictStopsActing(t *testing.T) {
	ts := newTestServer(t)
	d := fake.New()
	startAgent(t, testConfig(t, ts, t.TempDir(), d))
	ts.put(instance("web-1", api.DesiredRunning))
	waitPhases(t, ts, "web-1", api.PhaseRunning)

	// The instance was moved away, but the agent has not heard yet; its
	// crash report is refused.
	ts.setConflict("web-1")
	if err := d.Crash("web-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a refused report", func() bool {
		reps := ts.reportsOf("web-1")
		return len(reps) > 0 && reps[len(reps)-1].status == http.StatusConflict
	})
	// A put of the same stream session (here: the instance changes on the
	// server) does not make the agent act again: it may predate the 409.
	ts.update("web-1", func(in *api.Instance) { in.Spec.Owner = "someone" })
	n := len(ts.reportsOf("web-1"))
	// Well past several restart backoffs, nothing more happens to web-1.
	never(t, 20*testTuning.startBackoffMin, "the agent kept acting on web-1 after a 409", func() bool {
		st, err := d.Inspect(context.Background(), "web-1")
		return err != nil || st.State != vmm.StateCrashed || len(ts.reportsOf("web-1")) != n
	})
}

func TestNewValidatesConfig(t *testing.T) {
	ts := newTestServer(t)
	good := func(t *testing.T) Config { return testConfig(t, ts, t.TempDir(), fake.New()) }
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no driver", func(c *Config) { c.Driver = nil }, "Driver"},
		{"no state dir", func(c *Config) { c.StateDir = "" }, "StateDir"},
		{"no server", func(c *Config) { c.ServerURL = "" }, "ServerURL"},
		{"http server", func(c *Config) { c.ServerURL = "http://127.0.0.1:7443" }, "ServerURL"},
		{"server with path", func(c *Config) { c.ServerURL = "https://127.0.0.1:7443/v1" }, "ServerURL"},
		{"no token", func(c *Config) { c.JoinToken = "" }, "JoinToken"},
		{"bad token", func(c *Config) { c.JoinToken = "K1.nope" }, "JoinToken"},
		{"bad node name", func(c *Config) { c.NodeName = "Node_1" }, "NodeName"},
		{"negative interval", func(c *Config) { c.HeartbeatInterval = -time.Second }, "HeartbeatInterval"},
		{"negative cpus", func(c *Config) { c.Capacity.CPUs = -1 }, "Capacity.CPUs"},
		{"long version", func(c *Config) { c.Version = strings.Repeat("v", 65) }, "Version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good(t)
			tc.modify(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() error = %v, want one naming %s", err, tc.want)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		cfg := good(t)
		cfg.Capacity = api.Resources{}
		cfg.HeartbeatInterval = 0
		cfg.Logger = nil
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c := a.Capacity(); c.CPUs <= 0 || c.Memory <= 0 || c.Disk <= 0 {
			t.Errorf("Capacity() = %+v, want every field read from the host", c)
		}
		if a.interval != DefaultHeartbeatInterval {
			t.Errorf("interval = %s, want %s", a.interval, DefaultHeartbeatInterval)
		}
		if a.MetricsAddr() != "" || !a.LastAck().IsZero() {
			t.Errorf("before Run: MetricsAddr() = %q, LastAck() = %v; want empty", a.MetricsAddr(), a.LastAck())
		}
	})
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    api.Bytes
		wantErr bool
	}{
		{"typical", "MemTotal:       16316412 kB\nMemFree:         1000 kB\n", 16316412 << 10, false},
		{"not first", "Foo: 1 kB\nMemTotal: 1024 kB\n", 1 << 20, false},
		{"missing", "MemFree: 1 kB\n", 0, true},
		{"no unit", "MemTotal: 1024\n", 0, true},
		{"garbage", "MemTotal: lots kB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMemTotal([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseMemTotal(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
