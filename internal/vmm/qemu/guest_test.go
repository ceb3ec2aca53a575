package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The test guest: the host's kernel with a busybox initramfs built here.
// Its /init loads the modules it finds for the ACPI power button (busybox
// acpid powers off on a press) and virtio, prints the disk's first bytes,
// serves HTTP on port 80 if it has a NIC, prints guestUp, and runs a shell
// on the console.

const (
	guestUp       = "ferry-test-guest up"
	guestDiskLine = "ferry-test-disk: "
	guestHTTP     = "ferry-test-http"
	// guestMemoryMB: a Debian kernel needs more than 64 MB to decompress.
	guestMemoryMB = 128
	guestCmdline  = "console=ttyS0 quiet panic=-1"
)

const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules.list); do insmod /lib/$m; done
acpid -d >/dev/null 2>&1 &
if [ -e /sys/block/vda ]; then
	while [ ! -b /dev/vda ]; do sleep 0.1; done
	echo "` + guestDiskLine + `$(head -c 64 /dev/vda | tr -cd 'a-zA-Z0-9-')"
fi
if [ -d /sys/class/net/eth0 ]; then
	ip link set lo up
	ip link set eth0 up
	ip addr add 10.0.2.15/24 dev eth0
	mkdir -p /www
	echo ` + guestHTTP + ` > /www/index.html
	httpd -p 80 -h /www
fi
echo "` + guestUp + `"
while :; do sh; done
`

const guestPowerOff = `#!/bin/sh
poweroff -f
`

// guest is a bootable test guest.
type guest struct {
	// kernel is an uncompressed copy of bzImage if one could be made,
	// else bzImage: the host's kernel.
	kernel, bzImage, initrd, cmdline string
	// powerButton: the guest powers off on an ACPI power button press.
	powerButton bool
	// virtio: the guest has drivers for virtio disks and NICs.
	virtio bool
}

// requireQEMU skips the test if QEMU or a host kernel is missing, unless
// CI=true, where it fails. It returns the kernel.
func requireQEMU(t *testing.T) string {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s; CI=true, so this fails instead of skipping", what)
		}
		t.Skipf("%s: skipping the tests that boot real VMs", what)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing("/bin/busybox is missing (package busybox-static)")
	}
	if _, err := findBinary(); err != nil {
		missing(DefaultBinary + " is missing (package qemu-system-x86)")
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	slices.SortFunc(kernels, compareVersions)
	for i := len(kernels) - 1; i >= 0; i-- {
		if f, err := os.Open(kernels[i]); err == nil {
			f.Close()
			return kernels[i]
		}
	}
	missing("no readable /boot/vmlinuz-* (package linux-image-amd64)")
	return ""
}

func findBinary() (string, error) { return exec.LookPath(DefaultBinary) }

// fixture is the test guest, built once per test binary into a directory
// that TestMain removes.
var fixture struct {
	dir  string
	once sync.Once
	g    guest
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixture.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildGuest returns the test guest, skipping the test if QEMU or a host
// kernel is missing (failing instead if CI=true).
func buildGuest(t *testing.T) guest {
	t.Helper()
	kernel := requireQEMU(t)
	fixture.once.Do(func() { fixture.g, fixture.err = makeGuest(kernel, fixture.dir) })
	if fixture.err != nil {
		t.Fatalf("build the test guest: %v", fixture.err)
	}
	if !fixture.g.powerButton {
		t.Logf("no power button module for kernel %s: stops fall back to kill after the timeout", kernel)
	}
	return fixture.g
}

// makeGuest writes the test guest's initramfs (and, if it can, an
// uncompressed kernel) into dir.
func makeGuest(kernel, dir string) (guest, error) {
	g := guest{kernel: kernel, bzImage: kernel, cmdline: guestCmdline}
	w := newCPIO()
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "etc", "etc/acpi", "etc/acpi/PWRF", "tmp"} {
		w.dir(d)
	}
	w.device("dev/console", 5, 1)
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return g, err
	}
	w.file("bin/busybox", 0o755, busybox)
	w.file("init", 0o755, []byte(guestInit))
	w.file("etc/acpi/PWRF/00000080", 0o755, []byte(guestPowerOff))

	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	mods, have, err := guestModules("/lib/modules/" + release)
	if err != nil {
		return g, err
	}
	var list []string
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join("/lib/modules", release, m))
		if err != nil {
			return g, err
		}
		w.file("lib/"+filepath.Base(m), 0o644, data)
		list = append(list, filepath.Base(m))
	}
	w.file("lib/modules.list", 0o644, []byte(strings.Join(list, "\n")+"\n"))
	g.powerButton = have["button"] && have["evdev"]
	g.virtio = have["virtio_pci"] && have["virtio_blk"] && have["virtio_net"]
	g.initrd = filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(g.initrd, w.finish(), 0o644); err != nil {
		return g, err
	}
	if vmlinux, err := uncompressKernel(kernel, "/boot/config-"+release, dir); err == nil {
		g.kernel = vmlinux
	}
	return g, nil
}

// uncompressKernel extracts the ELF kernel from an xz-compressed bzImage,
// for kernels that QEMU can boot that way (CONFIG_PVH). Under TCG this
// saves the kernel's self-decompression, about 4 s of an 8 s boot.
func uncompressKernel(bzImage, config, dir string) (string, error) {
	cfg, err := os.ReadFile(config)
	if err != nil {
		return "", err
	}
	if !bytes.Contains(cfg, []byte("\nCONFIG_PVH=y\n")) {
		return "", fmt.Errorf("%s: no CONFIG_PVH", config)
	}
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return "", err
	}
	i := bytes.Index(data, []byte("\xfd7zXZ\x00"))
	if i < 0 {
		return "", fmt.Errorf("%s: no xz payload", bzImage)
	}
	out := filepath.Join(dir, "vmlinux")
	cmd := exec.Command("xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(data[i:])
	elf, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("xz: %w", err)
	}
	if !bytes.HasPrefix(elf, []byte("\x7fELF")) {
		return "", fmt.Errorf("%s: the payload is not an ELF kernel", bzImage)
	}
	return out, os.WriteFile(out, elf, 0o644)
}

// guestModules returns the modules (paths under dir, dependencies first) the
// guest loads, and which of the wanted ones it has, built in or loadable.
// Only uncompressed modules are used: busybox insmod may not decompress.
func guestModules(dir string) ([]string, map[string]bool, error) {
	wanted := []string{"evdev", "button", "virtio_pci", "virtio_blk", "virtio_net"}
	have := map[string]bool{}
	builtin, _ := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	for _, w := range wanted {
		if bytes.Contains(builtin, []byte("/"+w+".ko\n")) {
			have[w] = true
		}
	}
	depFile, err := os.Open(filepath.Join(dir, "modules.dep"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, have, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer depFile.Close()
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(depFile)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[strings.TrimSuffix(filepath.Base(mod), ".ko")] = mod
	}
	var order []string
	added := map[string]bool{}
	var add func(mod string) bool
	add = func(mod string) bool {
		if added[mod] {
			return true
		}
		if !strings.HasSuffix(mod, ".ko") {
			return false
		}
		// modules.dep lists the deepest dependencies last.
		ds := deps[mod]
		for i := len(ds) - 1; i >= 0; i-- {
			if !add(ds[i]) {
				return false
			}
		}
		added[mod] = true
		order = append(order, mod)
		return true
	}
	for _, w := range wanted {
		if have[w] {
			continue
		}
		if mod, ok := byName[w]; ok && add(mod) {
			have[w] = true
		}
	}
	return order, have, sc.Err()
}

// cpioWriter writes a "newc" cpio archive, the initramfs format.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

func newCPIO() *cpioWriter { return &cpioWriter{ino: 1} }

func (w *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	w.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string) { w.entry(name, 0o040755, 0, 0, nil) }

func (w *cpioWriter) file(name string, perm uint32, data []byte) {
	w.entry(name, 0o100000|perm, 0, 0, data)
}

func (w *cpioWriter) device(name string, major, minor int) {
	w.entry(name, 0o020600, major, minor, nil)
}

func (w *cpioWriter) finish() []byte {
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	return w.buf.Bytes()
}

// waitForOutput waits until the file at path contains want, failing the
// test after timeout; it returns the file's contents.
func waitForOutput(t *testing.T, path, want string, timeout deadline) string {
	t.Helper()
	for {
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, []byte(want)) {
			return string(data)
		}
		if timeout.passed() {
			t.Fatalf("%s does not contain %q after %v; it has:\n%s", path, want, timeout.d, tail(data))
		}
		timeout.sleep()
	}
}

func tail(data []byte) string {
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}
