package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestBuildDemoOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    DemoOptions
		wantErr string
	}{
		{"no output", DemoOptions{}, "no output path"},
		{"too small", DemoOptions{Out: filepath.Join(t.TempDir(), "x.img"), Size: 63 << 20}, "below the minimum 64M"},
		{"unknown kernel", DemoOptions{Out: filepath.Join(t.TempDir(), "x.img"), KernelVersion: "0.0-none"}, "kernel 0.0-none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := BuildDemo(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("BuildDemo(%+v) error = %v, want one containing %q", tc.opts, err, tc.wantErr)
			}
			if tc.opts.Out != "" {
				if _, err := os.Stat(tc.opts.Out); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed build left %s behind: %v", tc.opts.Out, err)
				}
			}
		})
	}
}

// needDemoDeps skips the test unless BuildDemo can run here.
func needDemoDeps(t *testing.T) {
	t.Helper()
	needE2fsprogs(t)
	needBusybox(t)
	if _, err := newestKernel(hostBootDir, hostModulesDir); err != nil {
		requireOrSkip(t, "no kernel to put in the demo image: "+err.Error())
	}
}

func TestBuildDemo(t *testing.T) {
	t.Parallel()
	needDemoDeps(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "demo.img")
	var steps []string
	info, err := BuildDemo(t.Context(), DemoOptions{
		Out:      out,
		Size:     100<<20 + 1, // rounded up to 101M
		Progress: func(s string) { steps = append(steps, s) },
	})
	if err != nil {
		t.Fatalf("BuildDemo: %v", err)
	}
	t.Logf("steps: %q", steps)
	if info.Path != out || info.Size != 101<<20 || info.KernelVersion == "" {
		t.Errorf("BuildDemo() = %+v", *info)
	}
	for _, m := range []string{"virtio_pci", "virtio_blk", "virtio_net", "ext4", "button", "evdev"} {
		if !slices.Contains(info.Modules, m) {
			t.Errorf("modules %q lack %s", info.Modules, m)
		}
	}
	if i, j := slices.Index(info.Modules, "jbd2"), slices.Index(info.Modules, "ext4"); i < 0 || i > j {
		t.Errorf("modules %q: jbd2 must come before ext4", info.Modules)
	}
	if len(steps) < 4 {
		t.Errorf("Progress called %d times: %q", len(steps), steps)
	}
	if a := allocated(t, out); a > 64<<20 {
		t.Errorf("image allocates %d bytes of %d: not sparse", a, info.Size)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %q", leftovers)
	}

	img, err := Inspect(t.Context(), out)
	if err != nil {
		t.Fatalf("Inspect(demo): %v", err)
	}
	if img.Label != DemoLabel || !img.HasKernel || img.Size != info.Size || img.FSSize != info.Size {
		t.Errorf("Inspect(demo) = %+v", *img)
	}

	// Executables keep their mode in the image.
	for _, p := range []string{"/sbin/init-demo", "/etc/init.d/rcS", "/etc/init.d/rcK", "/usr/sbin/demo-counter",
		"/etc/acpi/PWRF/00000080", "/srv/www/cgi-bin/index.cgi", "/bin/busybox"} {
		st, err := debugfs(t.Context(), out, "stat", p)
		if err != nil {
			t.Errorf("stat %s: %v", p, err)
			continue
		}
		if !strings.Contains(st, "Mode:  0755") {
			t.Errorf("%s is not mode 0755: %s", p, firstLines(st, 1))
		}
	}
	if st, err := debugfs(t.Context(), out, "stat", "/tmp"); err != nil || !strings.Contains(st, "Mode:  01777") {
		t.Errorf("/tmp is not mode 01777: %v %s", err, firstLines(st, 1))
	}
	if st, err := debugfs(t.Context(), out, "stat", "/usr/sbin/httpd"); err != nil || !strings.Contains(st, `Fast link dest: "/bin/busybox"`) {
		t.Errorf("/usr/sbin/httpd is not a link to busybox: %v %s", err, firstLines(st, 20))
	}

	// The initramfs: /init, a console, busybox and every listed module.
	_, initrd, err := ExtractBoot(t.Context(), out, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	entries := readInitramfs(t, initrd)
	byName := map[string]cpioEntry{}
	for _, e := range entries {
		byName[e.name] = e
	}
	if e, ok := byName["dev/console"]; !ok || e.mode != cpioCharDev|0o600 || e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("dev/console = %+v, want a char device 5:1", e)
	}
	if e := byName["init"]; !bytes.Equal(e.data, guestFile("initramfs-init")) || e.mode != cpioRegular|0o755 {
		t.Errorf("init is not the guest's initramfs-init with mode 0755")
	}
	if e := byName["bin/switch_root"]; e.mode != cpioSymlink|0o777 || string(e.data) != "busybox" {
		t.Errorf("bin/switch_root = %+v, want a link to busybox", e)
	}
	list := strings.Split(strings.TrimSpace(string(byName["etc/modules"].data)), "\n")
	if len(list) != len(info.Modules) {
		t.Errorf("etc/modules has %d lines, DemoInfo %d modules", len(list), len(info.Modules))
	}
	for _, line := range list {
		f := strings.Fields(line)
		if len(f) != 3 || (f[2] != "required" && f[2] != "optional") {
			t.Errorf("bad etc/modules line %q", line)
			continue
		}
		e, ok := byName[strings.TrimPrefix(f[1], "/")]
		if !ok || !bytes.HasPrefix(e.data, []byte("\x7fELF")) {
			t.Errorf("module %s: %s is missing or not an uncompressed ELF module", f[0], f[1])
		}
	}
	fi, err := os.Stat(initrd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs: %d bytes compressed, %d entries, modules %q", fi.Size(), len(entries), info.Modules)
}

// readInitramfs returns the entries of a gzip'ed newc archive.
func readInitramfs(t *testing.T, path string) []cpioEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(raw)
	if err != nil {
		t.Fatalf("initramfs %s: %v", path, err)
	}
	return entries
}

// demoStatus is the answer of the demo guest's HTTP service.
type demoStatus struct {
	Name    string `json:"name"`
	Boots   int    `json:"boots"`
	Counter int    `json:"counter"`
}

// testVM is a QEMU process booting a demo image, for TestDemoBoots.
type testVM struct {
	t       *testing.T
	cmd     *exec.Cmd
	done    chan struct{} // closed when QEMU has exited
	waitErr error         // set before done is closed
	url     string
	qmp     string
	log     string
	started time.Time
}

// startVM boots img with kernel, initrd and the kernel command line
// cmdline under TCG, the guest's port 80 forwarded to a loopback port. name
// names the console log.
func startVM(t *testing.T, qemu, kernel, initrd, img, name, cmdline string) *testVM {
	t.Helper()
	// Unix socket paths are limited to 108 bytes; t.TempDir() may be long.
	sockDir, err := os.MkdirTemp("", "ferry-qmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	port := freePort(t)
	vm := &testVM{
		t:    t,
		done: make(chan struct{}),
		url:  fmt.Sprintf("http://127.0.0.1:%d/", port),
		qmp:  filepath.Join(sockDir, "qmp.sock"),
		log:  filepath.Join(t.TempDir(), name+".serial.log"),
	}
	vm.cmd = exec.Command(qemu,
		"-accel", "tcg", "-m", "256", "-smp", "1",
		"-nographic", "-monitor", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", cmdline,
		"-drive", "file="+img+",format=raw,if=virtio",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:80", port),
		// romfile=: no iPXE option ROM, which the guest never uses.
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		"-qmp", "unix:"+vm.qmp+",server=on,wait=off",
		"-serial", "file:"+vm.log,
	)
	var stderr bytes.Buffer
	vm.cmd.Stdout, vm.cmd.Stderr = &stderr, &stderr
	vm.started = time.Now()
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() {
		vm.waitErr = vm.cmd.Wait()
		if vm.waitErr != nil && stderr.Len() > 0 {
			vm.waitErr = fmt.Errorf("%w: %s", vm.waitErr, strings.TrimSpace(stderr.String()))
		}
		close(vm.done)
	}()
	t.Cleanup(func() {
		select {
		case <-vm.done:
		default:
			vm.cmd.Process.Kill()
			<-vm.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(vm.log)
			t.Logf("serial console of %s:\n%s", name, lastLines(string(b), 60))
		}
	})
	return vm
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// status polls the guest's HTTP service until ok accepts an answer, QEMU
// exits or the deadline passes.
func (vm *testVM) status(timeout time.Duration, ok func(demoStatus) bool) demoStatus {
	vm.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		resp, err := client.Get(vm.url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			var st demoStatus
			switch {
			case rerr != nil:
				last = rerr.Error()
			case resp.StatusCode != http.StatusOK:
				last = fmt.Sprintf("%s: %s", resp.Status, body)
			default:
				if err := json.Unmarshal(body, &st); err != nil {
					last = fmt.Sprintf("bad JSON %q: %v", body, err)
				} else if ok(st) {
					return st
				} else {
					last = string(bytes.TrimSpace(body))
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-vm.done:
			vm.t.Fatalf("QEMU exited while waiting for the guest's HTTP service (%v); last answer: %s", vm.waitErr, last)
		case <-deadline.C:
			vm.t.Fatalf("no suitable answer from %s within %v; last: %s", vm.url, timeout, last)
		case <-tick.C:
		}
	}
}

// qmp runs one QMP command and returns its "return" value.
func (vm *testVM) qmpCommand(command string) {
	vm.t.Helper()
	conn, err := net.DialTimeout("unix", vm.qmp, 5*time.Second)
	if err != nil {
		vm.t.Fatalf("connect QMP: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(bufio.NewReader(conn))
	var greeting map[string]json.RawMessage
	if err := dec.Decode(&greeting); err != nil || greeting["QMP"] == nil {
		vm.t.Fatalf("QMP greeting: %v %v", greeting, err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", cmd); err != nil {
			vm.t.Fatalf("QMP %s: %v", cmd, err)
		}
		for { // skip asynchronous events until the command's answer
			var msg map[string]json.RawMessage
			if err := dec.Decode(&msg); err != nil {
				vm.t.Fatalf("QMP %s: %v", cmd, err)
			}
			if e, ok := msg["error"]; ok {
				vm.t.Fatalf("QMP %s: error %s", cmd, e)
			}
			if _, ok := msg["return"]; ok {
				break
			}
		}
	}
}

// waitExit waits until QEMU exits by itself and returns how long it took.
func (vm *testVM) waitExit(timeout time.Duration) time.Duration {
	vm.t.Helper()
	start := time.Now()
	select {
	case <-vm.done:
		if vm.waitErr != nil {
			vm.t.Fatalf("QEMU exited with %v", vm.waitErr)
		}
		return time.Since(start)
	case <-time.After(timeout):
		vm.t.Fatalf("QEMU still running %v after system_powerdown", timeout)
	}
	return 0
}

// serial returns the guest's console output so far.
func (vm *testVM) serial() string {
	b, err := os.ReadFile(vm.log)
	if err != nil {
		vm.t.Fatal(err)
	}
	return string(b)
}

// guestTimeline picks the uptimes of the guest's main boot steps out of its
// console output.
func guestTimeline(console string) string {
	steps := []struct{ name, marker string }{
		{"/init", "ferry-initramfs: ["},
		{"modules loaded", "waiting up to"},
		{"root mounted", "switching to the root"},
		{"system ready", "system ready"},
	}
	var out []string
	for _, st := range steps {
		i := strings.Index(console, st.marker)
		if i < 0 {
			continue
		}
		line := console[strings.LastIndex(console[:i], "\n")+1:]
		line, _, _ = strings.Cut(line, "\n")
		if _, rest, ok := strings.Cut(line, ": ["); ok {
			if up, _, ok := strings.Cut(rest, "s]"); ok {
				out = append(out, st.name+" "+up)
			}
		}
	}
	return strings.Join(out, ", ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestDemoFailsFast boots the demo image with a root disk that does not
// exist: the initramfs must say so and power the VM off, not hang.
func TestDemoFailsFast(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		requireOrSkip(t, "qemu-system-x86_64 is not installed (install qemu-system-x86)")
	}
	needDemoDeps(t)
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	// Not parallel: VMs under TCG compete for the CPU.
	dir := t.TempDir()
	img := filepath.Join(dir, "demo.img")
	if _, err := BuildDemo(t.Context(), DemoOptions{Out: img, Size: MinDemoSize}); err != nil {
		t.Fatalf("BuildDemo: %v", err)
	}
	kernel, initrd, err := ExtractBoot(t.Context(), img, dir)
	if err != nil {
		t.Fatalf("ExtractBoot: %v", err)
	}
	cmdline := strings.Replace(BootArgs("broken", "", ""), "root=/dev/vda", "root=/dev/vdz ferry.rootwait=1", 1)
	vm := startVM(t, qemu, kernel, initrd, img, "broken", cmdline)
	vm.waitExit(60 * time.Second)
	console := vm.serial()
	const want = "ferry-initramfs: FATAL: root disk /dev/vdz did not appear within 1s"
	if !strings.Contains(console, want) || !strings.Contains(console, "powering off") {
		t.Fatalf("console lacks %q and a power off:\n%s", want, lastLines(console, 20))
	}
	t.Logf("a VM without its root disk powered off %v after it started", time.Since(vm.started).Round(10*time.Millisecond))
}

// TestDemoBoots builds the demo image and boots it three times under QEMU
// (TCG): it must serve its name, count boots, power off by itself on
// system_powerdown, and keep its counter across that clean shutdown and
// across QEMU being killed.
func TestDemoBoots(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		requireOrSkip(t, "qemu-system-x86_64 is not installed (install qemu-system-x86)")
	}
	needDemoDeps(t)
	if testing.Short() {
		t.Skip("boots three VMs (about a minute under TCG); skipped with -short")
	}
	// Not parallel: VMs under TCG compete for the CPU, and this measures
	// boot times.
	dir := t.TempDir()
	img := filepath.Join(dir, "demo.img")
	start := time.Now()
	info, err := BuildDemo(t.Context(), DemoOptions{Out: img})
	if err != nil {
		t.Fatalf("BuildDemo: %v", err)
	}
	t.Logf("built %s (%s, kernel %s) in %v", img, info.Size, info.KernelVersion, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	kernel, initrd, err := ExtractBoot(t.Context(), img, dir)
	if err != nil {
		t.Fatalf("ExtractBoot: %v", err)
	}
	t.Logf("extracted %s and %s in %v", filepath.Base(kernel), filepath.Base(initrd), time.Since(start).Round(time.Millisecond))
	bzImage := filepath.Join(dir, "vmlinuz")

	// Boot 1, with the kernel ExtractBoot chose (unpacked when it can be).
	cmdline := BootArgs("t1", "10.0.2.15/24", "10.0.2.2")
	vm := startVM(t, qemu, kernel, initrd, img, "boot1", cmdline)
	first := vm.status(60*time.Second, func(demoStatus) bool { return true })
	t.Logf("boot 1 (%s): first HTTP answer %+v after %v", filepath.Base(kernel), first, time.Since(vm.started).Round(10*time.Millisecond))
	if first.Name != "t1" || first.Boots != 1 {
		t.Fatalf("boot 1 answered %+v, want name t1, boots 1", first)
	}
	t.Logf("boot 1 guest timeline (seconds since the kernel started): %s", guestTimeline(vm.serial()))
	running := vm.status(10*time.Second, func(s demoStatus) bool { return s.Counter >= first.Counter+2 })
	vm.qmpCommand("system_powerdown")
	t.Logf("boot 1: powered off %v after system_powerdown", vm.waitExit(20*time.Second).Round(10*time.Millisecond))
	for _, want := range []string{"ACPI power button", "root filesystem synced and read-only"} {
		if !strings.Contains(vm.serial(), want) {
			t.Errorf("boot 1 console lacks %q", want)
		}
	}

	// Boot 2, with the compressed bzImage: the fallback path.
	vm = startVM(t, qemu, bzImage, initrd, img, "boot2", cmdline)
	again := vm.status(60*time.Second, func(demoStatus) bool { return true })
	t.Logf("boot 2 (vmlinuz, compressed): first HTTP answer %+v after %v", again, time.Since(vm.started).Round(10*time.Millisecond))
	if again.Name != "t1" || again.Boots != 2 {
		t.Fatalf("boot 2 answered %+v, want name t1, boots 2", again)
	}
	if again.Counter < running.Counter {
		t.Fatalf("boot 2 counter %d is below %d, reported before the powerdown", again.Counter, running.Counter)
	}
	served := vm.status(10*time.Second, func(s demoStatus) bool { return s.Counter > again.Counter })

	// Boot 2 ends in a crash: QEMU killed. What the guest served was on
	// disk, so boot 3 resumes at or after it.
	if err := vm.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-vm.done
	vm = startVM(t, qemu, kernel, initrd, img, "boot3", cmdline)
	third := vm.status(60*time.Second, func(demoStatus) bool { return true })
	t.Logf("boot 3 after QEMU was killed: first HTTP answer %+v after %v", third, time.Since(vm.started).Round(10*time.Millisecond))
	if third.Boots != 3 || third.Counter < served.Counter {
		t.Fatalf("boot 3 answered %+v, want boots 3 and counter >= %d, served before the kill", third, served.Counter)
	}
	last := vm.status(10*time.Second, func(s demoStatus) bool { return s.Counter > third.Counter })
	vm.qmpCommand("system_powerdown")
	vm.waitExit(20 * time.Second)

	// The counter file: 1, 2, 3, ... with no gap and no repeat across the
	// three boots, up to at least the last value served.
	data, err := debugfs(t.Context(), img, "cat", "/var/lib/demo/counter")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	for i, line := range lines {
		n, ts, ok := strings.Cut(line, " ")
		if v, err := strconv.Atoi(n); !ok || err != nil || v != i+1 {
			t.Fatalf("counter line %d is %q, want %d TIMESTAMP", i+1, line, i+1)
		}
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			t.Fatalf("counter line %d has a bad timestamp: %q", i+1, line)
		}
	}
	if len(lines) < last.Counter {
		t.Fatalf("counter file ends at %d, but the guest served %d", len(lines), last.Counter)
	}
	boots, err := debugfs(t.Context(), img, "cat", "/var/lib/demo/boots")
	if err != nil || strings.TrimSpace(boots) != "3" {
		t.Errorf("/var/lib/demo/boots = %q, %v; want 3", boots, err)
	}
	t.Logf("counter: served %d before the powerdown, resumed at %d; served %d before the kill, resumed at %d; %d lines on disk",
		running.Counter, again.Counter, served.Counter, third.Counter, len(lines))
	fi, _ := os.Stat(img)
	t.Logf("image: %s, %s allocated", api.Bytes(fi.Size()), api.Bytes(allocated(t, img)).Human())
}
