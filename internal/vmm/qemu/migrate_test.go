package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/vmm"
)

func TestSplitListen(t *testing.T) {
	for _, tc := range []struct {
		in, host, port string
		ok             bool
	}{
		{"127.0.0.1:0", "127.0.0.1", "0", true},
		{"10.0.0.2:49153", "10.0.0.2", "49153", true},
		{"[::1]:0", "::1", "0", true},
		{"node-b.example:4444", "node-b.example", "4444", true},
		{":0", "", "", false},
		{"127.0.0.1", "", "", false},
		{"127.0.0.1:65536", "", "", false},
		{"127.0.0.1:-1", "", "", false},
		{"127.0.0.1:x", "", "", false},
		{"127.0.0.1:080", "", "", false},
		{"a,to=9:0", "", "", false},
	} {
		host, port, err := splitListen(tc.in)
		if (err == nil) != tc.ok || host != tc.host || port != tc.port {
			t.Errorf("splitListen(%q) = %q, %q, %v; want %q, %q, ok %t", tc.in, host, port, err, tc.host, tc.port, tc.ok)
		}
	}
}

func TestCheckMigrationURI(t *testing.T) {
	for _, uri := range []string{"tcp:10.0.0.2:49153", "tcp:[::1]:4444", "unix:/run/mig.sock"} {
		if err := checkMigrationURI(uri); err != nil {
			t.Errorf("checkMigrationURI(%q) = %v, want nil", uri, err)
		}
	}
	for _, uri := range []string{"", "tcp:", "tcp:10.0.0.2", "tcp:10.0.0.2:0", "exec:cat > /tmp/x", "unix:", "fd:3", "10.0.0.2:4444", "rdma:1.2.3.4:5"} {
		if err := checkMigrationURI(uri); err == nil {
			t.Errorf("checkMigrationURI(%q) = nil, want an error", uri)
		}
	}
}

func TestCheckTLS(t *testing.T) {
	tests := []struct {
		tls *vmm.MigrationTLS
		ok  bool
	}{
		{nil, true},
		{&vmm.MigrationTLS{Dir: "/var/lib/ferry/migration-tls"}, true},
		{&vmm.MigrationTLS{Dir: "/d", Hostname: "host-2"}, true},
		{&vmm.MigrationTLS{Hostname: "host-2"}, false},
		{&vmm.MigrationTLS{Dir: "/d", Hostname: "host-2,dir=/etc"}, false},
		{&vmm.MigrationTLS{Dir: "/d", Hostname: "a b"}, false},
	}
	for _, tc := range tests {
		if err := checkTLS(tc.tls); (err == nil) != tc.ok {
			t.Errorf("checkTLS(%+v) = %v, want ok=%v", tc.tls, err, tc.ok)
		}
	}
}

// TestMigrationInfo decodes query-migrate answers as QEMU 7.2 gives them.
func TestMigrationInfo(t *testing.T) {
	const completed = `{"status": "completed", "setup-time": 4, "downtime": 26, "total-time": 621, "ram": {"total": 134750208,
		"postcopy-requests": 0, "dirty-sync-count": 3, "multifd-bytes": 0, "pages-per-second": 0, "downtime-bytes": 151855,
		"page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 381.3, "transferred": 52779000,
		"dirty-sync-missed-zero-copy": 0, "precopy-bytes": 500924, "duplicate": 32848, "dirty-pages-rate": 25,
		"skipped": 0, "normal-bytes": 356352, "normal": 87}}`
	var mi migrationInfo
	if err := json.Unmarshal([]byte(completed), &mi); err != nil {
		t.Fatal(err)
	}
	if mi.active() {
		t.Error("a completed migration is active")
	}
	want := vmm.MigrationResult{TotalTime: 621 * time.Millisecond, Downtime: 26 * time.Millisecond, SetupTime: 4 * time.Millisecond, Transferred: 52779000}
	if got := mi.result(); got != want {
		t.Errorf("result() = %+v, want %+v", got, want)
	}
	p := mi.progress()
	if p.Status != "completed" || p.Total != 134750208 || p.DirtyRate != 25*4096 || p.Iterations != 3 || p.Elapsed != 621*time.Millisecond {
		t.Errorf("progress() = %+v", p)
	}

	const incoming = `{"socket-address": [{"port": "39553", "ipv4": true, "host": "127.0.0.1", "type": "inet"}]}`
	mi = migrationInfo{}
	if err := json.Unmarshal([]byte(incoming), &mi); err != nil {
		t.Fatal(err)
	}
	if mi.active() || len(mi.SocketAddress) != 1 || strings.Trim(string(mi.SocketAddress[0].Port), `"`) != "39553" {
		t.Errorf("incoming info = %+v", mi)
	}
	for _, s := range []string{"setup", "active", "cancelling", "device", "pre-switchover"} {
		if !(migrationInfo{Status: s}).active() {
			t.Errorf("status %s is not active", s)
		}
	}
}

// migrationGuest is what the migration tests need of one booted guest.
type migrationGuest struct {
	spec vmm.Spec
	// disk is the image file the VM's disk shows, behind DiskNBD if set.
	disk string
}

// nbdServe serves disk with qemu-nbd on a new unix socket, as an agent
// serves its replica of an instance's disk, until the test ends.
func nbdServe(t *testing.T, disk string) string {
	t.Helper()
	nbd, err := exec.LookPath("qemu-nbd")
	if err != nil {
		t.Fatalf("qemu-nbd: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "nbd.sock")
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
			return sock
		}
		if dl.passed() {
			t.Fatalf("qemu-nbd did not create %s", sock)
		}
	}
}

// migrationSpec returns a spec for the test guest with, if the guest has
// virtio drivers, a NIC on user networking (HTTP forwarded) and a disk: an
// NBD export if qemu-nbd is there (as ferry runs disks), else a file.
func migrationSpec(t *testing.T, g guest, id string) migrationGuest {
	spec := guestSpec(t, g, id)
	if !g.virtio {
		t.Logf("the host kernel has no loadable virtio modules: the guest gets no disk and no NIC")
		return migrationGuest{spec: spec}
	}
	spec.MAC = "52:54:00:12:34:56"
	spec.UserNetHostFwd = fmt.Sprintf("tcp:%d-80", freePort(t))
	disk := diskWith(t, "ferry-disk-marker-migrate")
	if _, err := exec.LookPath("qemu-nbd"); err == nil {
		spec.DiskNBD, spec.DiskNBDExport = nbdServe(t, disk), "ferry"
	} else {
		t.Logf("qemu-nbd is missing (package qemu-utils): the disk is a file")
		spec.DiskPath = disk
	}
	return migrationGuest{spec: spec, disk: disk}
}

// targetOf returns the spec of a migration target of src on another host:
// the same VM, with its own state dir, its own copy of the disk (served by
// its own NBD server) and its own host port. The kernel is left out, as
// StartIncoming allows.
func targetOf(t *testing.T, src migrationGuest) migrationGuest {
	dst := src
	dst.spec.StateDir = t.TempDir()
	dst.spec.Kernel, dst.spec.Initrd, dst.spec.Cmdline = "", "", ""
	if src.spec.UserNetHostFwd != "" {
		dst.spec.UserNetHostFwd = fmt.Sprintf("tcp:%d-80", freePort(t))
	}
	if src.disk != "" {
		data, err := os.ReadFile(src.disk)
		if err != nil {
			t.Fatal(err)
		}
		dst.disk = filepath.Join(t.TempDir(), "replica.img")
		if err := os.WriteFile(dst.disk, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if src.spec.DiskNBD != "" {
			dst.spec.DiskNBD = nbdServe(t, dst.disk)
		} else {
			dst.spec.DiskPath = dst.disk
		}
	}
	return dst
}

// identity is what tells one boot of the guest from another.
type identity struct {
	bootID string
	uptime float64
	mark   string
}

var identityRE = regexp.MustCompile(`id=([0-9a-f-]{36}) up=([0-9.]+) mark=(\S*)\r?\n`)

// guestIdentity asks the guest on its console for its boot ID (random at
// each boot), its uptime and the mark kept in its memory (a file on the
// initramfs).
func guestIdentity(t *testing.T, spec vmm.Spec) identity {
	t.Helper()
	m := consoleMatch(t, filepath.Join(spec.StateDir, ConsoleSocketName),
		`echo "id=$(cat /proc/sys/kernel/random/boot_id) up=$(cut -d' ' -f1 /proc/uptime) mark=$(cat /tmp/mark 2>/dev/null)"`,
		identityRE, time.Minute)
	up, err := strconv.ParseFloat(m[2], 64)
	if err != nil {
		t.Fatal(err)
	}
	return identity{bootID: m[1], uptime: up, mark: m[3]}
}

// consoleMatch types line on a guest's console and returns the submatches
// of re in what the console prints.
func consoleMatch(t *testing.T, sock, line string, re *regexp.Regexp, timeout time.Duration) []string {
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
	for {
		if m := re.FindStringSubmatch(string(got)); m != nil {
			return m
		}
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("console: typed %q, waiting for %v: %v; got %q", line, re, err, tail(got))
		}
	}
}

// runState returns QEMU's runstate of VM id.
func runState(t *testing.T, d *Driver, id string) string {
	t.Helper()
	v := d.lookup(id)
	if v == nil {
		t.Fatalf("no vm %s", id)
	}
	var status struct {
		Status string `json:"status"`
	}
	if err := d.command(v, "query-status", nil, &status); err != nil {
		t.Fatalf("query-status of %s: %v", id, err)
	}
	return status.Status
}

// waitRunState waits until VM id's runstate is want.
func waitRunState(t *testing.T, d *Driver, id, want string) {
	t.Helper()
	var got string
	for dl := within(30 * time.Second); ; dl.sleep() {
		if got = runState(t, d, id); got == want {
			return
		}
		if dl.passed() {
			t.Fatalf("vm %s is %q after %v, want %q", id, got, dl.d, want)
		}
	}
}

func checkInspect(t *testing.T, d vmm.Driver, id string, state vmm.State, paused bool) vmm.Status {
	t.Helper()
	st, err := d.Inspect(t.Context(), id)
	if err != nil || st.State != state || st.Paused != paused {
		t.Errorf("Inspect(%s) = %+v, %v; want %s, paused %t", id, st, err, state, paused)
	}
	return st
}

// startIncoming starts a target for src on d.
func startIncoming(t *testing.T, d *Driver, src migrationGuest) (migrationGuest, vmm.Handle, string) {
	t.Helper()
	dst := targetOf(t, src)
	t0 := time.Now()
	h, uri, err := d.StartIncoming(ctxFor(t, time.Minute), dst.spec, vmm.IncomingOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("StartIncoming = %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), dst.spec.ID) })
	t.Logf("StartIncoming took %v, listens on %s", time.Since(t0).Round(time.Millisecond), uri)
	if err := checkMigrationURI(uri); err != nil || !strings.HasPrefix(uri, "tcp:127.0.0.1:") {
		t.Fatalf("StartIncoming returned uri %q (%v), want tcp:127.0.0.1:PORT", uri, err)
	}
	if h.Data[DataIncoming] != "true" || h.PID == 0 {
		t.Errorf("StartIncoming handle = %+v, want a pid and %s", h, DataIncoming)
	}
	return dst, h, uri
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	hostA := newTestDriver(t, Config{})
	hostB := newTestDriver(t, Config{})
	src := migrationSpec(t, g, "mover")
	id := src.spec.ID
	startGuest(t, hostA, src.spec)
	waitForOutput(t, filepath.Join(src.spec.StateDir, ConsoleLogName), guestUp, within(bootTimeout))
	consoleRun(t, filepath.Join(src.spec.StateDir, ConsoleSocketName),
		`echo ferry-mark-$((6*7)) > /tmp/mark; echo "marked $(cat /tmp/mark)"`, "marked ferry-mark-42", time.Minute)
	before := guestIdentity(t, src.spec)

	dst, h, uri := startIncoming(t, hostB, src)
	checkInspect(t, hostB, id, vmm.StateRunning, true)
	if s := runState(t, hostB, id); s != runstateInmigrate {
		t.Errorf("target runstate = %q, want %s", s, runstateInmigrate)
	}
	// The agent restarts on host B: the target is recovered, still paused.
	hostB.Close()
	hostB = newTestDriver(t, Config{})
	if err := hostB.Recover(t.Context(), h); err != nil {
		t.Fatalf("Recover(target) = %v", err)
	}
	checkInspect(t, hostB, id, vmm.StateRunning, true)
	targetExit, err := hostB.Wait(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	sourceExit, err := hostA.Wait(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}

	var reports []vmm.MigrationProgress
	t0 := time.Now()
	res, err := hostA.Migrate(ctxFor(t, 2*time.Minute), id, uri, vmm.MigrateOptions{}, func(p vmm.MigrationProgress) {
		reports = append(reports, p)
	})
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("Migrate = %v", err)
	}
	t.Logf("migrated an idle %d MiB guest over loopback (TCG): Migrate took %v; QEMU: total %v, downtime %v, setup %v, %.1f MiB sent; %d progress reports",
		src.spec.MemoryMB, took.Round(time.Millisecond), res.TotalTime, res.Downtime, res.SetupTime, float64(res.Transferred)/(1<<20), len(reports))
	for _, p := range reports {
		t.Logf("progress: %+v", p)
	}
	if res.TotalTime <= 0 || res.Transferred <= 0 || res.Downtime < 0 || res.Downtime > res.TotalTime {
		t.Errorf("MigrationResult = %+v, want a total time, a downtime within it, and bytes", res)
	}
	checkInspect(t, hostA, id, vmm.StateRunning, true)
	if s := runState(t, hostA, id); s != runstatePostmigrate {
		t.Errorf("source runstate after Migrate = %q, want %s", s, runstatePostmigrate)
	}
	if _, err := hostA.Migrate(t.Context(), id, uri, vmm.MigrateOptions{}, nil); err == nil {
		t.Error("a second Migrate of a migrated source = nil, want an error")
	}
	// The target holds the guest but has not run it.
	waitRunState(t, hostB, id, runstatePaused)
	checkInspect(t, hostB, id, vmm.StateRunning, true)
	if out, _ := os.ReadFile(filepath.Join(dst.spec.StateDir, ConsoleLogName)); len(out) != 0 {
		t.Errorf("the target printed on its console before Resume: %q", tail(out))
	}

	t0 = time.Now()
	if err := hostB.Resume(ctxFor(t, time.Minute), id); err != nil {
		t.Fatalf("Resume(target) = %v", err)
	}
	t.Logf("Resume took %v", time.Since(t0).Round(time.Millisecond))
	checkInspect(t, hostB, id, vmm.StateRunning, false)
	if s := runState(t, hostB, id); s != runstateRunning {
		t.Errorf("target runstate after Resume = %q, want running", s)
	}
	if err := hostB.Resume(t.Context(), id); err != nil {
		t.Errorf("Resume of a running vm = %v, want nil", err)
	}
	after := guestIdentity(t, dst.spec)
	t.Logf("before: %+v; after: %+v", before, after)
	if after.bootID != before.bootID || after.mark != "ferry-mark-42" || after.uptime < before.uptime {
		t.Errorf("the target runs %+v, want the source's boot %+v, its mark and a later uptime", after, before)
	}
	if err := hostB.Announce(t.Context(), id); err != nil {
		t.Errorf("Announce(target) = %v", err)
	}

	if dst.spec.DiskNBD != "" {
		// The target reads its disk through its own NBD server: change
		// its replica and read again.
		f, err := os.OpenFile(dst.disk, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("ferry-disk-marker-target"), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		consoleRun(t, filepath.Join(dst.spec.StateDir, ConsoleSocketName),
			`echo 3 > /proc/sys/vm/drop_caches; echo "reread: $(head -c 64 /dev/vda | tr -cd 'a-zA-Z0-9-')"`,
			"reread: ferry-disk-marker-target", time.Minute)
	}
	if dst.spec.UserNetHostFwd != "" {
		port := strings.TrimSuffix(strings.TrimPrefix(dst.spec.UserNetHostFwd, "tcp:"), "-80")
		url := "http://127.0.0.1:" + port + "/"
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
				t.Fatalf("GET %s on the target: %v, %q", url, err, body)
			}
		}
	}

	if err := hostA.Destroy(t.Context(), id); err != nil {
		t.Fatalf("Destroy(source) = %v", err)
	}
	if r := recvExit(t, sourceExit, 30*time.Second); !errors.Is(r.Err, ErrKilled) {
		t.Errorf("source exit after Destroy = %v, want ErrKilled", r.Err)
	}
	select {
	case r := <-targetExit:
		t.Errorf("the target exited: %+v", r)
	default:
	}
	checkInspect(t, hostB, id, vmm.StateRunning, false)
}

// failedMigration checks that the source runs on, unpaused and the same
// boot, after a migration that did not complete, and that the target went
// away (by itself or not) with an exit error of an incoming VM.
func failedMigration(t *testing.T, hostA, hostB *Driver, src migrationGuest, before identity, targetExit <-chan vmm.ExitResult, want error) {
	t.Helper()
	checkInspect(t, hostA, src.spec.ID, vmm.StateRunning, false)
	if s := runState(t, hostA, src.spec.ID); s != runstateRunning {
		t.Errorf("source runstate after a failed migration = %q, want running", s)
	}
	if now := guestIdentity(t, src.spec); now.bootID != before.bootID || now.mark != before.mark {
		t.Errorf("the source runs %+v, want the boot %+v", now, before)
	}
	r := recvExit(t, targetExit, time.Minute)
	t.Logf("target exit: %v", r.Err)
	if !errors.Is(r.Err, want) {
		t.Errorf("target exit = %v, want %v", r.Err, want)
	}
	if err := hostB.Destroy(t.Context(), src.spec.ID); err != nil {
		t.Errorf("Destroy(target) = %v", err)
	}
}

func TestMigrateFailures(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	hostA := newTestDriver(t, Config{})
	hostB := newTestDriver(t, Config{})
	src := migrationSpec(t, g, "stayer")
	id := src.spec.ID
	h := startGuest(t, hostA, src.spec)
	waitForOutput(t, filepath.Join(src.spec.StateDir, ConsoleLogName), guestUp, within(bootTimeout))
	consoleRun(t, filepath.Join(src.spec.StateDir, ConsoleSocketName),
		`echo ferry-mark-$((6*7)) > /tmp/mark; echo "marked $(cat /tmp/mark)"`, "marked ferry-mark-42", time.Minute)
	before := guestIdentity(t, src.spec)
	// The source outlives the subtests, and so must its driver.
	outer, ctx := t, t.Context()
	sourceExit, err := hostA.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		select {
		case r := <-sourceExit:
			t.Errorf("the source exited: %+v", r)
		default:
		}
	}()
	// slow keeps a migration under way for many seconds: the guest has
	// tens of MiB of non-zero memory.
	slow := vmm.MigrateOptions{MaxBandwidth: 1 << 20}

	t.Run("ctx cancelled", func(t *testing.T) {
		_, _, uri := startIncoming(t, hostB, src)
		targetExit, err := hostB.Wait(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		t0 := time.Now()
		_, err = hostA.Migrate(ctx, id, uri, slow, func(p vmm.MigrationProgress) {
			if p.Status == "active" && p.Transferred > 0 {
				cancel()
			}
		})
		t.Logf("Migrate returned after %v: %v", time.Since(t0).Round(time.Millisecond), err)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Migrate with a cancelled ctx = %v, want context.Canceled", err)
		}
		failedMigration(t, hostA, hostB, src, before, targetExit, vmm.ErrIncomingFailed)
	})

	t.Run("not converged", func(t *testing.T) {
		_, _, uri := startIncoming(t, hostB, src)
		targetExit, err := hostB.Wait(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		opts := slow
		opts.ConvergeTimeout = 2 * time.Second
		t0 := time.Now()
		_, err = hostA.Migrate(ctxFor(t, time.Minute), id, uri, opts, nil)
		took := time.Since(t0)
		t.Logf("Migrate returned after %v: %v", took.Round(time.Millisecond), err)
		if !errors.Is(err, vmm.ErrNotConverged) {
			t.Fatalf("Migrate at 1 MiB/s within 2 s = %v, want ErrNotConverged", err)
		}
		if took < opts.ConvergeTimeout || took > opts.ConvergeTimeout+15*time.Second {
			t.Errorf("Migrate took %v, want ConvergeTimeout %v and a little", took, opts.ConvergeTimeout)
		}
		failedMigration(t, hostA, hostB, src, before, targetExit, vmm.ErrIncomingFailed)
	})

	t.Run("target killed", func(t *testing.T) {
		_, th, uri := startIncoming(t, hostB, src)
		targetExit, err := hostB.Wait(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		killed := false
		_, err = hostA.Migrate(ctxFor(t, time.Minute), id, uri, slow, func(p vmm.MigrationProgress) {
			if p.Status == "active" && !killed {
				killed = true
				if err := syscall.Kill(th.PID, syscall.SIGKILL); err != nil {
					t.Errorf("kill target: %v", err)
				}
			}
		})
		t.Logf("Migrate to a killed target: %v", err)
		if err == nil || errors.Is(err, vmm.ErrNotConverged) || errors.Is(err, context.Canceled) {
			t.Fatalf("Migrate to a target killed midway = %v, want a failure", err)
		}
		failedMigration(t, hostA, hostB, src, before, targetExit, ErrCrashed)
	})

	t.Run("nobody listens", func(t *testing.T) {
		_, err := hostA.Migrate(ctxFor(t, time.Minute), id, fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t)), vmm.MigrateOptions{}, nil)
		t.Logf("Migrate to a closed port: %v", err)
		if err == nil {
			t.Fatal("Migrate to a closed port = nil, want an error")
		}
		checkInspect(t, hostA, id, vmm.StateRunning, false)
	})

	t.Run("listen address in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dst := targetOf(t, src)
		_, _, err = hostB.StartIncoming(ctxFor(t, time.Minute), dst.spec, vmm.IncomingOptions{Listen: l.Addr().String()})
		t.Logf("StartIncoming on a taken port: %v", err)
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("StartIncoming on a taken port = %v, want an error saying so", err)
		}
		if _, err := hostB.Inspect(t.Context(), id); !errors.Is(err, vmm.ErrNotFound) {
			t.Errorf("Inspect after a failed StartIncoming = %v", err)
		}
		if pids := qemuProcessesIn(t, dst.spec.StateDir); len(pids) != 0 {
			t.Errorf("QEMU processes %v still run after a failed StartIncoming", pids)
		}
		if _, _, err := hostB.StartIncoming(t.Context(), dst.spec, vmm.IncomingOptions{Listen: "127.0.0.1"}); err == nil {
			t.Error("StartIncoming without a port = nil, want an error")
		}
	})

	t.Run("rollback", func(t *testing.T) {
		_, _, uri := startIncoming(t, hostB, src)
		res, err := hostA.Migrate(ctxFor(t, time.Minute), id, uri, vmm.MigrateOptions{}, nil)
		if err != nil {
			t.Fatalf("Migrate = %v", err)
		}
		t.Logf("migrated: %+v", res)
		checkInspect(t, hostA, id, vmm.StateRunning, true)
		// The migration is abandoned: the source takes its disk back and
		// runs on; the target, which never ran, is destroyed.
		if err := hostA.Resume(ctxFor(t, time.Minute), id); err != nil {
			t.Fatalf("Resume(source) = %v", err)
		}
		if err := hostB.Destroy(t.Context(), id); err != nil {
			t.Errorf("Destroy(target) = %v", err)
		}
		checkInspect(t, hostA, id, vmm.StateRunning, false)
		if now := guestIdentity(t, src.spec); now.bootID != before.bootID || now.uptime < before.uptime {
			t.Errorf("the source runs %+v after the rollback, want the boot %+v", now, before)
		}
		if src.spec.DiskNBD != "" || src.spec.DiskPath != "" {
			consoleRun(t, filepath.Join(src.spec.StateDir, ConsoleSocketName),
				`echo 3 > /proc/sys/vm/drop_caches; echo "reread: $(head -c 64 /dev/vda | tr -cd 'a-zA-Z0-9-')"`,
				"reread: ferry-disk-marker-migrate", time.Minute)
		}
	})

	t.Run("stop incoming", func(t *testing.T) {
		startIncoming(t, hostB, src)
		ch, err := hostB.Wait(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := hostB.Stop(ctxFor(t, time.Minute), id, 30*time.Second); err != nil {
			t.Fatalf("Stop(target) = %v", err)
		}
		if took := time.Since(t0); took > 10*time.Second {
			t.Errorf("Stop of a paused target took %v, want a kill at once", took)
		}
		if r := recvExit(t, ch, 10*time.Second); !errors.Is(r.Err, ErrKilled) {
			t.Errorf("exit of a stopped target = %v, want ErrKilled", r.Err)
		}
		checkInspect(t, hostB, id, vmm.StateStopped, false)
	})

	// Last, as the source changes drivers: the agent dies during a
	// migration (its driver is closed); the next one recovers the source
	// and cancels the migration nobody follows.
	t.Run("recover cancels an orphaned migration", func(t *testing.T) {
		_, _, uri := startIncoming(t, hostB, src)
		targetExit, err := hostB.Wait(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		_, err = hostA.Migrate(ctxFor(t, time.Minute), id, uri, slow, func(p vmm.MigrationProgress) {
			if p.Status == "active" {
				hostA.Close()
			}
		})
		t.Logf("Migrate on a closed driver: %v", err)
		if err == nil {
			t.Fatal("Migrate on a driver closed midway = nil, want an error")
		}
		hostA = newTestDriver(outer, Config{})
		if err := hostA.Recover(t.Context(), h); err != nil {
			t.Fatalf("Recover(source) = %v", err)
		}
		failedMigration(t, hostA, hostB, src, before, targetExit, vmm.ErrIncomingFailed)
		sourceExit, err = hostA.Wait(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
	})
}

// tlsDirs writes migration credentials for host-a and host-b, issued by
// one cluster CA, and returns their directories.
func tlsDirs(t *testing.T) (a, b string) {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := func(node string) string {
		key, csr, err := pki.NewNodeKeyAndCSR(node)
		if err != nil {
			t.Fatal(err)
		}
		cert, _, err := ca.SignNodeCSR(csr, node, time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(t.TempDir(), "migration-tls")
		if err := vmm.WriteMigrationTLS(d, ca.CertPEM(), cert, key); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return dir("host-a"), dir("host-b")
}

// TestMigrateTLS: a migration over TLS with the hosts' cluster
// certificates; the guest then goes back without TLS (it still holds its
// credentials from coming in); a source without TLS, or one that expects
// another host's name, cannot send to a target that wants TLS, and its
// guest runs on.
func TestMigrateTLS(t *testing.T) {
	t.Parallel()
	g := buildGuest(t)
	hostA := newTestDriver(t, Config{})
	hostB := newTestDriver(t, Config{})
	dirA, dirB := tlsDirs(t)
	src := migrationSpec(t, g, "tls-mover")
	id := src.spec.ID
	startGuest(t, hostA, src.spec)
	waitForOutput(t, filepath.Join(src.spec.StateDir, ConsoleLogName), guestUp, within(bootTimeout))
	before := guestIdentity(t, src.spec)

	incoming := func(d *Driver, g migrationGuest, tls *vmm.MigrationTLS) (migrationGuest, string) {
		t.Helper()
		dst := targetOf(t, g)
		_, uri, err := d.StartIncoming(ctxFor(t, time.Minute), dst.spec, vmm.IncomingOptions{Listen: "127.0.0.1:0", TLS: tls})
		if err != nil {
			t.Fatalf("StartIncoming = %v", err)
		}
		t.Cleanup(func() { _ = d.Destroy(context.Background(), dst.spec.ID) })
		return dst, uri
	}
	refused := func(from, to *Driver, g migrationGuest, opts vmm.MigrateOptions, why string) {
		t.Helper()
		_, uri := incoming(to, g, &vmm.MigrationTLS{Dir: dirB})
		_, err := from.Migrate(ctxFor(t, time.Minute), id, uri, opts, nil)
		t.Logf("%s: %v", why, err)
		if err == nil {
			t.Fatalf("%s: Migrate = nil, want an error", why)
		}
		checkInspect(t, from, id, vmm.StateRunning, false)
		if err := to.Destroy(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	refused(hostA, hostB, src, vmm.MigrateOptions{}, "a source without tls")
	refused(hostA, hostB, src, vmm.MigrateOptions{TLS: &vmm.MigrationTLS{Dir: dirA, Hostname: "host-c"}}, "a source that expects host-c")

	dst, uri := incoming(hostB, src, &vmm.MigrationTLS{Dir: dirB})
	res, err := hostA.Migrate(ctxFor(t, 2*time.Minute), id, uri, vmm.MigrateOptions{TLS: &vmm.MigrationTLS{Dir: dirA, Hostname: "host-b"}}, nil)
	if err != nil {
		t.Fatalf("Migrate over tls = %v", err)
	}
	t.Logf("over tls: total %v, downtime %v, %.1f MiB", res.TotalTime, res.Downtime, float64(res.Transferred)/(1<<20))
	if err := hostB.Resume(ctxFor(t, time.Minute), id); err != nil {
		t.Fatalf("Resume = %v", err)
	}
	if err := hostA.Destroy(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if after := guestIdentity(t, dst.spec); after.bootID != before.bootID {
		t.Fatalf("the target runs boot %s, want the source's %s", after.bootID, before.bootID)
	}

	back, uri := incoming(hostA, dst, nil)
	if _, err := hostB.Migrate(ctxFor(t, 2*time.Minute), id, uri, vmm.MigrateOptions{}, nil); err != nil {
		t.Fatalf("Migrate back without tls = %v", err)
	}
	if err := hostA.Resume(ctxFor(t, time.Minute), id); err != nil {
		t.Fatalf("Resume = %v", err)
	}
	if after := guestIdentity(t, back.spec); after.bootID != before.bootID {
		t.Fatalf("back on host a the guest runs boot %s, want %s", after.bootID, before.bootID)
	}
}
