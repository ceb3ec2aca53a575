package nbd

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestInteropQemuBoot boots the host kernel under QEMU (TCG) with a tiny
// busybox initramfs and the export as a virtio disk attached with
// -blockdev driver=nbd: the guest prints the sha256 of /dev/vda, writes a
// marker with fsync, and powers off.
func TestInteropQemuBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest (about 10 s); skipped with -short")
	}
	// Not parallel: TCG boot time doubles when the other interop tests
	// compete for the CPUs.
	qemu := needTool(t, "qemu-system-x86_64", "qemu-system-x86")
	kernel, modDir := hostKernel(t)
	busybox := staticBusybox(t)

	// The modules that make /dev/vda appear, in load order.
	var mods []cpioFile
	for _, m := range []string{
		"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
		"drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
		"drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
	} {
		data, err := os.ReadFile(filepath.Join(modDir, "kernel", m))
		if err != nil {
			requireOrSkip(t, fmt.Sprintf("kernel module %s: %v (uncompressed virtio modules are needed)", m, err))
		}
		mods = append(mods, cpioFile{name: "lib/modules/" + filepath.Base(m), mode: 0o100644, data: data})
	}
	var loads []string
	for _, m := range mods {
		loads = append(loads, "/"+m.name)
	}
	init := `#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in ` + strings.Join(loads, " ") + `; do /bin/busybox insmod $m || echo "FERRY-ERR insmod $m"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done
echo "FERRY-SUM $(/bin/busybox sha256sum /dev/vda)"
echo ferry-guest-was-here | /bin/busybox dd of=/dev/vda bs=512 seek=1 conv=notrunc,fsync 2>/dev/null || echo FERRY-ERR dd
echo FERRY-DONE
/bin/busybox poweroff -f
`
	files := append([]cpioFile{
		{name: "bin", mode: 0o40755}, {name: "dev", mode: 0o40755}, {name: "proc", mode: 0o40755},
		{name: "sys", mode: 0o40755}, {name: "lib", mode: 0o40755}, {name: "lib/modules", mode: 0o40755},
		{name: "dev/console", mode: 0o20600, rmajor: 5, rminor: 1},
		{name: "bin/busybox", mode: 0o100755, data: busybox},
		{name: "bin/sh", mode: 0o120777, data: []byte("busybox")},
		{name: "init", mode: 0o100755, data: []byte(init)},
	}, mods...)
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.gz")
	if err := os.WriteFile(initrd, gzipCPIO(t, files), 0o644); err != nil {
		t.Fatal(err)
	}

	const size = 8 << 20
	s := newInteropServer(t, size, Config{MinBlock: 512})
	writeSource(t, s.img, size, 3)
	want := fileSum(t, s.img)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet",
		"-blockdev", "driver=nbd,node-name=disk0,server.type=unix,server.path="+s.sock+",export=disk",
		"-device", "virtio-blk-pci,drive=disk0",
	)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("qemu: %v after %v\n%s", err, elapsed, out)
	}
	var got string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "FERRY-SUM" {
			got = f[1]
		}
		if strings.Contains(line, "FERRY-ERR") {
			t.Errorf("guest: %s", strings.TrimSpace(line))
		}
	}
	if got != want || !strings.Contains(string(out), "FERRY-DONE") {
		t.Fatalf("guest sha256 of /dev/vda = %q, want %s; guest output:\n%s", got, want, out)
	}
	img, err := os.ReadFile(s.img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img[512:], []byte("ferry-guest-was-here\n")) {
		t.Errorf("the guest's write is not in the image: %q", img[512:540])
	}
	st := s.Stats().Commands
	if st.Read.Bytes < size || st.Write.Requests == 0 || st.Flush.Requests == 0 {
		t.Errorf("server stats = %+v; want all %d bytes read, a write and a flush", st, size)
	}
	t.Logf("guest booted, checksummed %d MiB over NBD and powered off in %v", size>>20, elapsed.Round(10*time.Millisecond))
}

// hostKernel returns the newest /boot/vmlinuz-* with modules, or skips.
func hostKernel(t *testing.T) (kernel, modDir string) {
	t.Helper()
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(kernels)))
	for _, k := range kernels {
		ver := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		dir := filepath.Join("/lib/modules", ver)
		if f, err := os.Open(k); err == nil {
			f.Close()
			if _, err := os.Stat(dir); err == nil {
				return k, dir
			}
		}
	}
	requireOrSkip(t, "no readable /boot/vmlinuz-* with /lib/modules (Debian package linux-image-amd64)")
	return "", ""
}

// staticBusybox returns the host's busybox if it is statically linked, or
// skips.
func staticBusybox(t *testing.T) []byte {
	t.Helper()
	const path = "/bin/busybox"
	f, err := elf.Open(path)
	if err != nil {
		requireOrSkip(t, fmt.Sprintf("%s: %v (Debian package busybox-static)", path, err))
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			requireOrSkip(t, path+" is dynamically linked (Debian package busybox-static)")
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// cpioFile is one entry of a newc cpio archive.
type cpioFile struct {
	name           string
	mode           uint32 // type and permission bits, as in stat(2)
	rmajor, rminor uint32
	data           []byte // contents, or a symlink's target
}

// gzipCPIO returns a gzipped newc cpio archive of files, as the kernel
// unpacks an initramfs.
func gzipCPIO(t *testing.T, files []cpioFile) []byte {
	t.Helper()
	var raw bytes.Buffer
	pad := func() {
		for raw.Len()%4 != 0 {
			raw.WriteByte(0)
		}
	}
	add := func(ino int, f cpioFile) {
		nlink := 1
		if f.mode&0o170000 == 0o40000 {
			nlink = 2
		}
		fmt.Fprintf(&raw, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, f.mode, 0, 0, nlink, 0, len(f.data), 0, 0, f.rmajor, f.rminor, len(f.name)+1, 0)
		raw.WriteString(f.name)
		raw.WriteByte(0)
		pad()
		raw.Write(f.data)
		pad()
	}
	for i, f := range files {
		add(i+1, f)
	}
	add(0, cpioFile{name: "TRAILER!!!"})
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
