package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/vmm"
	"github.com/ferrycluster/ferry/internal/vmm/vmmtest"
)

// bootTimeout bounds a guest's boot to its /init under TCG on a loaded
// 2-core machine (about 4 s idle).
const bootTimeout = 90 * time.Second

// deadline is a polling helper.
type deadline struct {
	d   time.Duration
	end time.Time
}

func within(d time.Duration) deadline { return deadline{d: d, end: time.Now().Add(d)} }

func (dl deadline) passed() bool { return time.Now().After(dl.end) }

func (dl deadline) sleep() { time.Sleep(50 * time.Millisecond) }

// testLogWriter sends a Driver's logs to t.Log until the test ends.
type testLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

// newTestDriver returns a Driver (TCG unless cfg says otherwise) whose VMs
// are destroyed when the test ends.
func newTestDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	if cfg.Accel == "" {
		cfg.Accel = AccelTCG
	}
	cfg.Logger = testLogger(t)
	d, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { destroyAll(t, d) })
	return d
}

func destroyAll(t *testing.T, d *Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids, _ := d.List(ctx)
	for _, id := range ids {
		if err := d.Destroy(ctx, id); err != nil {
			t.Errorf("cleanup: Destroy(%q) = %v", id, err)
		}
	}
	d.Close()
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// guestSpec is a spec that boots g.
func guestSpec(t *testing.T, g guest, id string) vmm.Spec {
	return vmm.Spec{
		ID:       id,
		CPUs:     1,
		MemoryMB: guestMemoryMB,
		Kernel:   g.kernel,
		Initrd:   g.initrd,
		Cmdline:  g.cmdline,
		StateDir: t.TempDir(),
	}
}

// startGuest starts spec on d and destroys it when the test ends (before
// its StateDir is removed).
func startGuest(t *testing.T, d *Driver, spec vmm.Spec) vmm.Handle {
	t.Helper()
	h, err := d.Start(ctxFor(t, time.Minute), spec)
	if err != nil {
		t.Fatalf("Start(%q) = %v", spec.ID, err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	return h
}

func recvExit(t *testing.T, ch <-chan vmm.ExitResult, timeout time.Duration) vmm.ExitResult {
	t.Helper()
	select {
	case res, ok := <-ch:
		if !ok {
			t.Fatal("Wait channel closed without a result")
		}
		return res
	case <-time.After(timeout):
		t.Fatalf("no exit result within %v", timeout)
	}
	return vmm.ExitResult{}
}

// guestDriver boots the test guest for every Start: the contract's specs
// have an empty disk and no kernel, on which a VM only idles in the BIOS and
// ignores the power button, so every Stop would wait out its timeout.
type guestDriver struct {
	*Driver
	g guest
}

func (d guestDriver) Start(ctx context.Context, spec vmm.Spec) (vmm.Handle, error) {
	spec.Kernel, spec.Initrd, spec.Cmdline = d.g.kernel, d.g.initrd, d.g.cmdline
	spec.MemoryMB = max(spec.MemoryMB, guestMemoryMB)
	return d.Driver.Start(ctx, spec)
}

func TestContract(t *testing.T) {
	g := buildGuest(t)
	vmmtest.TestDriver(t, func(t *testing.T) vmm.Driver {
		return guestDriver{Driver: newTestDriver(t, Config{}), g: g}
	})
}

func TestAccelAutoProbe(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	const probeTimeout = 5 * time.Second
	t0 := time.Now()
	d, err := New(t.Context(), Config{Accel: AccelAuto, ProbeTimeout: probeTimeout, Logger: testLogger(t)})
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("New(auto) = %v", err)
	}
	t.Cleanup(func() { destroyAll(t, d) })
	t.Logf("New(auto) chose %s in %v: %s", d.Accel(), took.Round(time.Millisecond), d.AccelReason())
	if took > probeTimeout+3*time.Second {
		t.Errorf("New(auto) took %v, want at most ProbeTimeout %v and a little", took, probeTimeout)
	}
	if want := os.Getenv("FERRY_TEST_ACCEL"); want != "" && d.Accel() != want {
		t.Errorf("Accel() = %q, want %q (FERRY_TEST_ACCEL)", d.Accel(), want)
	}
	switch d.Accel() {
	case AccelKVM:
		// The verdict must hold: the guest boots under KVM.
		spec := guestSpec(t, g, "kvm-check")
		startGuest(t, d, spec)
		waitForOutput(t, filepath.Join(spec.StateDir, ConsoleLogName), guestUp, within(30*time.Second))
	case AccelTCG:
		f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
		if err != nil {
			t.Logf("no usable %s (%v): nothing to cross-check", kvmDevice, err)
			return
		}
		f.Close()
		// KVM is there but was judged broken: check it independently, by
		// booting the guest under KVM with the kernel's messages on.
		kd := newTestDriver(t, Config{Accel: AccelKVM})
		spec := guestSpec(t, g, "kvm-check")
		spec.Cmdline = "console=ttyS0 earlyprintk=ttyS0 panic=-1"
		if _, err := kd.Start(ctxFor(t, time.Minute), spec); err != nil {
			t.Logf("as the probe found, a VM does not start under KVM: %v", err)
			return
		}
		time.Sleep(probeTimeout)
		out, _ := os.ReadFile(filepath.Join(spec.StateDir, ConsoleLogName))
		if bytes.Contains(out, []byte(probeBanner)) {
			t.Errorf("the probe chose TCG, but a kernel booted under KVM within %v:\n%s", probeTimeout, tail(out))
		}
	default:
		t.Errorf("Accel() = %q, want kvm or tcg", d.Accel())
	}
}

// TestProbeTimeout checks that a probe whose guest hangs ends within
// ProbeTimeout. With QEMU's default CPU model, KVM guests on this project's
// test machines hang in the kernel; elsewhere they boot and the test only
// checks the time.
func TestProbeTimeout(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	const probeTimeout = 3 * time.Second
	t0 := time.Now()
	d, err := New(t.Context(), Config{Accel: AccelAuto, ProbeTimeout: probeTimeout, ProbeKernel: g.kernel, CPUModel: "qemu64", Logger: testLogger(t)})
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("New(auto) = %v", err)
	}
	t.Logf("New(auto, cpu qemu64) chose %s in %v: %s", d.Accel(), took.Round(time.Millisecond), d.AccelReason())
	if took > probeTimeout+3*time.Second {
		t.Errorf("New(auto) took %v, want at most ProbeTimeout %v and a little", took, probeTimeout)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	requireQEMU(t)
	t.Run("tcg skips the probe", func(t *testing.T) {
		t0 := time.Now()
		d, err := New(t.Context(), Config{Accel: AccelTCG, ProbeKernel: "/nonexistent", ProbeTimeout: time.Hour})
		if err != nil {
			t.Fatalf("New(tcg) = %v", err)
		}
		if took := time.Since(t0); took > time.Second {
			t.Errorf("New(tcg) took %v, want no probe", took)
		}
		if d.Accel() != AccelTCG || d.AccelReason() != "configured" {
			t.Errorf("Accel(), AccelReason() = %q, %q; want tcg, configured", d.Accel(), d.AccelReason())
		}
		if c := d.Capabilities(); !c.RealDisks {
			t.Errorf("Capabilities() = %+v, want RealDisks", c)
		}
	})
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"unknown accel", Config{Accel: "hvf"}},
		{"missing binary", Config{Accel: AccelTCG, Binary: "/nonexistent/qemu-system-x86_64"}},
		{"negative stop timeout", Config{Accel: AccelTCG, StopTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(t.Context(), tc.cfg); err == nil {
				t.Errorf("New(%+v) = nil error, want one", tc.cfg)
			}
		})
	}
	t.Run("cancelled probe", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := New(ctx, Config{Accel: AccelAuto}); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("New(auto) with a cancelled ctx = %v, want nil or context.Canceled", err)
		}
	})
}

func TestConsoleAndCleanPowerOff(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	kernels := []struct{ name, path string }{{"bzImage", g.bzImage}}
	if g.kernel != g.bzImage {
		kernels = append(kernels, struct{ name, path string }{"uncompressed", g.kernel})
	}
	d := newTestDriver(t, Config{})
	for _, k := range kernels {
		t.Run(k.name, func(t *testing.T) {
			spec := guestSpec(t, g, "console-"+k.name)
			spec.Kernel = k.path
			testConsoleAndCleanPowerOff(t, d, g, spec)
		})
	}
}

func testConsoleAndCleanPowerOff(t *testing.T, d *Driver, g guest, spec vmm.Spec) {
	t0 := time.Now()
	h := startGuest(t, d, spec)
	started := time.Since(t0)
	logPath := filepath.Join(spec.StateDir, ConsoleLogName)
	waitForOutput(t, logPath, guestUp, within(bootTimeout))
	t.Logf("Start returned after %v; the guest's /init printed after %v", started.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	pid, err := os.ReadFile(filepath.Join(spec.StateDir, PIDFileName))
	if err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(h.PID) {
		t.Errorf("%s = %q, %v; want %d", PIDFileName, pid, err, h.PID)
	}

	// The console socket is read-write, and the log records the session.
	consoleRun(t, filepath.Join(spec.StateDir, ConsoleSocketName), "echo sock-$((6*7))", "sock-42", 30*time.Second)
	waitForOutput(t, logPath, "sock-42", within(10*time.Second))

	ch, err := d.Wait(t.Context(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := d.Stop(ctxFor(t, time.Minute), spec.ID, 30*time.Second); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	res := recvExit(t, ch, 10*time.Second)
	t.Logf("Stop of a booted guest took %v; exit: %v", time.Since(t0).Round(time.Millisecond), res.Err)
	if g.powerButton && res.Err != nil {
		t.Errorf("ExitResult.Err after the guest powered off = %v, want nil", res.Err)
	}
	st, err := d.Inspect(t.Context(), spec.ID)
	if err != nil || st.State != vmm.StateStopped {
		t.Errorf("Inspect = %+v, %v; want stopped", st, err)
	}
	if g.powerButton && st.ExitError != "" {
		t.Errorf("Inspect.ExitError = %q, want none", st.ExitError)
	}
}

func TestRecoverAfterAgentRestart(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	d1 := newTestDriver(t, Config{})
	spec := guestSpec(t, g, "survivor")
	h := startGuest(t, d1, spec)
	// The agent persists the handle as JSON and exits.
	data, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	d1.Close()
	var h2 vmm.Handle
	if err := json.Unmarshal(data, &h2); err != nil {
		t.Fatal(err)
	}

	d2 := newTestDriver(t, Config{})
	ctx := ctxFor(t, time.Minute)
	t0 := time.Now()
	if err := d2.Recover(ctx, h2); err != nil {
		t.Fatalf("Recover(handle) on a new Driver = %v", err)
	}
	t.Logf("Recover took %v", time.Since(t0).Round(time.Millisecond))
	if err := d2.Recover(ctx, h2); err != nil {
		t.Errorf("second Recover(handle) = %v, want nil", err)
	}
	st, err := d2.Inspect(ctx, spec.ID)
	if err != nil || st.State != vmm.StateRunning || !st.StartedAt.Equal(h.StartedAt) {
		t.Errorf("Inspect after Recover = %+v, %v; want running since %v", st, err, h.StartedAt)
	}

	// Handles that do not name this process are refused.
	d3 := newTestDriver(t, Config{})
	for _, tc := range []struct {
		name   string
		change func(h *vmm.Handle)
	}{
		{"reused pid", func(h *vmm.Handle) { h.Data[DataStartTime] = "1" }},
		{"other vm", func(h *vmm.Handle) { h.ID = "other" }},
		{"not qemu", func(h *vmm.Handle) {
			st, _ := readProcStat(os.Getpid())
			h.PID, h.Data[DataStartTime] = os.Getpid(), strconv.FormatUint(st.startTime, 10)
		}},
		{"other driver", func(h *vmm.Handle) { h.Driver = "fake" }},
	} {
		bad := h2
		bad.Data = map[string]string{}
		for k, v := range h2.Data {
			bad.Data[k] = v
		}
		tc.change(&bad)
		if err := d3.Recover(ctx, bad); !errors.Is(err, vmm.ErrNotFound) {
			t.Errorf("Recover(handle with %s) = %v, want ErrNotFound", tc.name, err)
		}
	}

	waitForOutput(t, filepath.Join(spec.StateDir, ConsoleLogName), guestUp, within(bootTimeout))
	ch, err := d2.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Announce(ctx, spec.ID); err != nil {
		t.Errorf("Announce on a recovered VM = %v", err)
	}
	if err := d2.Stop(ctx, spec.ID, 30*time.Second); err != nil {
		t.Fatalf("Stop of the recovered VM = %v", err)
	}
	res := recvExit(t, ch, 10*time.Second)
	if g.powerButton && res.Err != nil {
		t.Errorf("ExitResult.Err of a recovered VM that powered off = %v, want nil", res.Err)
	}
	if err := checkStart(h.PID, mustAtoi(t, h.Data[DataStartTime])); !errors.Is(err, errNoProcess) {
		t.Errorf("the QEMU process still runs after Stop returned")
	}
	if err := d2.Recover(ctx, h2); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Recover(handle) after Stop = %v, want ErrNotFound", err)
	}
	if err := d2.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{QMPSocketName, ConsoleSocketName, ConsoleLogName, PIDFileName, LogName} {
		if _, err := os.Stat(filepath.Join(spec.StateDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Destroy (%v)", name, err)
		}
	}
}

func mustAtoi(t *testing.T, s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWaitReportsKill(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	for _, recovered := range []bool{false, true} {
		name := "child"
		if recovered {
			name = "recovered"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := newTestDriver(t, Config{})
			spec := guestSpec(t, g, "victim")
			h := startGuest(t, d, spec)
			if recovered {
				d.Close()
				d = newTestDriver(t, Config{})
				if err := d.Recover(t.Context(), h); err != nil {
					t.Fatalf("Recover = %v", err)
				}
			}
			ch, err := d.Wait(t.Context(), spec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			res := recvExit(t, ch, 30*time.Second)
			t.Logf("exit after kill -9: %v", res.Err)
			if !errors.Is(res.Err, ErrCrashed) {
				t.Errorf("ExitResult.Err after kill -9 = %v, want ErrCrashed", res.Err)
			}
			st, err := d.Inspect(t.Context(), spec.ID)
			if err != nil || st.State != vmm.StateCrashed || st.ExitError == "" {
				t.Errorf("Inspect after kill -9 = %+v, %v; want crashed with an error", st, err)
			}
		})
	}
}

func TestStartFailsWithQEMUsError(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	d := newTestDriver(t, Config{})
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name   string
		change func(s *vmm.Spec)
		want   string
	}{
		{"kernel", func(s *vmm.Spec) { s.Kernel = missing }, "could not open kernel file"},
		{"initrd", func(s *vmm.Spec) { s.Initrd = missing }, "error reading initrd"},
		{"disk", func(s *vmm.Spec) { s.DiskPath = missing }, "Could not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := guestSpec(t, g, "broken-"+tc.name)
			tc.change(&spec)
			t0 := time.Now()
			_, err := d.Start(ctxFor(t, time.Minute), spec)
			took := time.Since(t0)
			t.Logf("Start took %v: %v", took.Round(time.Millisecond), err)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), missing) {
				t.Errorf("Start(missing %s) = %v, want an error quoting QEMU's %q and the path", tc.name, err, tc.want)
			}
			if took > 10*time.Second {
				t.Errorf("Start(missing %s) took %v, want a fast failure", tc.name, took)
			}
			if _, err := d.Inspect(t.Context(), spec.ID); !errors.Is(err, vmm.ErrNotFound) {
				t.Errorf("Inspect after a failed Start = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestStartRejectsBadSpecs(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	d := newTestDriver(t, Config{})
	for _, tc := range []struct {
		name   string
		change func(s *vmm.Spec)
	}{
		{"no state dir", func(s *vmm.Spec) { s.StateDir = "" }},
		{"long state dir", func(s *vmm.Spec) { s.StateDir = filepath.Join(s.StateDir, strings.Repeat("x", 100)) }},
		{"comma in id", func(s *vmm.Spec) { s.ID = "a,b" }},
		{"bad mac", func(s *vmm.Spec) { s.MAC = "52:54:00" }},
		{"cmdline without kernel", func(s *vmm.Spec) { s.Kernel = "" }},
		{"bad host forward", func(s *vmm.Spec) { s.UserNetHostFwd = "tcp:80" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := guestSpec(t, g, "bad")
			tc.change(&spec)
			if _, err := d.Start(t.Context(), spec); err == nil {
				t.Errorf("Start(%+v) = nil error, want one", spec)
			}
		})
	}
	if ids, _ := d.List(t.Context()); len(ids) != 0 {
		t.Errorf("List() after rejected Starts = %q, want none", ids)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// diskWith returns a 1 MiB raw disk image that starts with marker.
func diskWith(t *testing.T, marker string) string {
	path := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, 1<<20)
	copy(data, marker)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDevices(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	if !g.virtio {
		t.Skip("the host kernel has no loadable virtio modules for the test guest")
	}
	d := newTestDriver(t, Config{})
	t.Run("disk file and user net", func(t *testing.T) {
		t.Parallel()
		spec := guestSpec(t, g, "devices")
		spec.DiskPath = diskWith(t, "ferry-disk-marker-file")
		port := freePort(t)
		spec.UserNetHostFwd = fmt.Sprintf("tcp:%d-80", port)
		spec.MAC = "52:54:00:AB:CD:EF"
		startGuest(t, d, spec)
		waitForOutput(t, filepath.Join(spec.StateDir, ConsoleLogName), guestDiskLine+"ferry-disk-marker-file", within(bootTimeout))
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		var body []byte
		for dl := within(30 * time.Second); ; dl.sleep() {
			resp, err := http.Get(url)
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				if bytes.Contains(body, []byte(guestHTTP)) {
					break
				}
			}
			if dl.passed() {
				t.Fatalf("GET %s through the host forward: %v, %q", url, err, body)
			}
		}
		if err := d.Announce(t.Context(), spec.ID); err != nil {
			t.Errorf("Announce = %v", err)
		}
	})
	t.Run("nbd", func(t *testing.T) {
		t.Parallel()
		nbd, err := exec.LookPath("qemu-nbd")
		if err != nil {
			t.Skip("qemu-nbd is missing (package qemu-utils)")
		}
		spec := guestSpec(t, g, "nbd")
		sock := filepath.Join(t.TempDir(), "nbd.sock")
		disk := diskWith(t, "ferry-disk-marker-nbd")
		serve := func() *exec.Cmd {
			srv := exec.Command(nbd, "--socket="+sock, "--format=raw", "--persistent", "--export-name=ferry", disk)
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = srv.Process.Kill()
				_ = srv.Wait()
			})
			for dl := within(10 * time.Second); ; dl.sleep() {
				if _, err := os.Stat(sock); err == nil {
					return srv
				}
				if dl.passed() {
					t.Fatalf("qemu-nbd did not create %s", sock)
				}
			}
		}
		srv := serve()
		spec.DiskNBD, spec.DiskNBDExport = sock, "ferry"
		startGuest(t, d, spec)
		logPath := filepath.Join(spec.StateDir, ConsoleLogName)
		waitForOutput(t, logPath, guestDiskLine+"ferry-disk-marker-nbd", within(bootTimeout))

		// The NBD server restarts (as the agent that serves disks does)
		// and the guest reads its disk again, through the new server.
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		f, err := os.OpenFile(disk, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("ferry-disk-marker-new"), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		serve()
		consoleRun(t, filepath.Join(spec.StateDir, ConsoleSocketName),
			`echo 3 > /proc/sys/vm/drop_caches; echo "reread: $(head -c 64 /dev/vda | tr -cd 'a-zA-Z0-9-')"`,
			"reread: ferry-disk-marker-new", time.Minute)
	})
}

// consoleRun types a shell command line on a guest's serial console and
// waits until the console prints want. It stays connected until then: QEMU
// drops what a client typed but the guest has not read yet when the client
// goes.
func consoleRun(t *testing.T, sock, line, want string, timeout time.Duration) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial console: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write console: %v", err)
	}
	var got []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(got, []byte(want)) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("console: typed %q, waiting for %q: %v; got %q", line, want, err, tail(got))
		}
	}
}

func TestUnknownIDs(t *testing.T) {
	t.Parallel()
	requireQEMU(t)
	d := newTestDriver(t, Config{})
	ctx := t.Context()
	if err := d.Announce(ctx, "nope"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Announce(nope) = %v, want ErrNotFound", err)
	}
	if err := d.Destroy(ctx, "nope"); err != nil {
		t.Errorf("Destroy(nope) = %v, want nil", err)
	}
	d.Close()
	if _, err := d.Start(ctx, vmm.Spec{ID: "late", StateDir: t.TempDir()}); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if ids, _ := d.List(ctx); !slices.Equal(ids, []string{}) && ids != nil {
		t.Errorf("List() = %q, want none", ids)
	}
}

// qemuProcessesIn returns the PIDs of processes whose command line names a
// file in dir: the QEMUs of a StateDir.
func qemuProcessesIn(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		args, err := readCmdline(pid)
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err != nil || st.state == 'Z' {
			continue
		}
		for _, a := range args {
			if strings.Contains(a, dir+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func TestStartCancelledMidway(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	d := newTestDriver(t, Config{})
	for _, after := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			spec := guestSpec(t, g, "cancelled-"+after.String())
			ctx, cancel := context.WithTimeout(t.Context(), after)
			defer cancel()
			_, err := d.Start(ctx, spec)
			if err == nil {
				// Start won the race; that is allowed.
				if err := d.Destroy(t.Context(), spec.ID); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Start with a ctx that ends after %v = %v, want DeadlineExceeded", after, err)
			}
			if pids := qemuProcessesIn(t, spec.StateDir); len(pids) != 0 {
				t.Errorf("QEMU processes %v still run after a cancelled Start", pids)
			}
			if _, err := d.Inspect(t.Context(), spec.ID); !errors.Is(err, vmm.ErrNotFound) {
				t.Errorf("Inspect after a cancelled Start = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	t.Parallel()
	requireQEMU(t)
	d := newTestDriver(t, Config{})
	// No kernel and no disk: the VM idles in the BIOS, which ignores the
	// power button.
	spec := vmm.Spec{ID: "deaf", MemoryMB: 64, StateDir: t.TempDir()}
	h := startGuest(t, d, spec)
	ch, err := d.Wait(t.Context(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	t0 := time.Now()
	if err := d.Stop(ctxFor(t, time.Minute), spec.ID, timeout); err != nil {
		t.Fatalf("Stop = %v, want nil", err)
	}
	if took := time.Since(t0); took < timeout || took > timeout+5*time.Second {
		t.Errorf("Stop took %v, want the timeout %v and a little", took, timeout)
	}
	res := recvExit(t, ch, 10*time.Second)
	if !errors.Is(res.Err, ErrKilled) {
		t.Errorf("ExitResult.Err = %v, want ErrKilled", res.Err)
	}
	st, err := d.Inspect(t.Context(), spec.ID)
	if err != nil || st.State != vmm.StateStopped || !strings.Contains(st.ExitError, "did not power off") {
		t.Errorf("Inspect = %+v, %v; want stopped, saying the guest did not power off", st, err)
	}
	if pids := qemuProcessesIn(t, spec.StateDir); len(pids) != 0 || checkStart(h.PID, mustAtoi(t, h.Data[DataStartTime])) == nil {
		t.Errorf("QEMU still runs after Stop: %v", pids)
	}
}
