package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
)

// Sizes of the demo image.
const (
	// DefaultDemoSize is the size of the demo image when DemoOptions.Size is 0.
	DefaultDemoSize api.Bytes = 256 << 20
	// MinDemoSize is the smallest demo image BuildDemo makes.
	MinDemoSize api.Bytes = 64 << 20
)

// DemoLabel is the ext4 label of the demo image's filesystem.
const DemoLabel = "ferry-demo"

// Kernel modules of the demo initramfs. demoModules are needed to find and
// mount the root disk and to reach the network: the guest powers off if one
// fails to load. demoOptionalModules are loaded if they can be: the ACPI
// power button and the input events acpid reads (for a clean shutdown on
// QEMU's system_powerdown), and virtio-rng for entropy.
var (
	demoModules         = []string{"virtio_pci", "virtio_blk", "virtio_net", "ext4"}
	demoOptionalModules = []string{"button", "evdev", "virtio_rng"}
)

// Where BuildDemo finds the host's kernel, modules and busybox.
const (
	hostBootDir    = "/boot"
	hostModulesDir = "/lib/modules"
	hostBusybox    = "/bin/busybox"
)

//go:embed guest
var guestFiles embed.FS

// DemoOptions configures BuildDemo.
type DemoOptions struct {
	// Out is the path of the raw image to write. It is replaced atomically:
	// the image is built next to it and renamed into place.
	Out string
	// Size is the size of the image (and of its filesystem). 0 means
	// DefaultDemoSize; it is rounded up to a whole MiB and must be at least
	// MinDemoSize. The file is sparse: it allocates about 28 MiB.
	Size api.Bytes
	// KernelVersion selects the host kernel to copy into the image, as named
	// in /lib/modules. Empty means the newest version in /lib/modules that
	// has a matching /boot/vmlinuz-<version>.
	KernelVersion string
	// Progress, if not nil, is called with a short description of each
	// step, on the goroutine that called BuildDemo.
	Progress func(step string)
}

// DemoInfo describes an image written by BuildDemo.
type DemoInfo struct {
	// Path is the image file, DemoOptions.Out.
	Path string
	// Size is the size of the image file.
	Size api.Bytes
	// KernelVersion is the version of the kernel inside the image.
	KernelVersion string
	// Modules are the kernel modules in the initramfs, in load order.
	Modules []string
}

// BuildDemo writes the ferry demo image to opts.Out: one ext4 filesystem
// (label DemoLabel) holding busybox, the host's kernel at /boot/vmlinuz and
// an initramfs at /boot/initrd.img. It mounts nothing and needs no loop
// device: it fills a staging directory and runs `mkfs.ext4 -d`.
//
// The guest reads ferry.name=NAME, ferry.ip=A.B.C.D/PREFIX and
// ferry.gw=A.B.C.D from the kernel command line (see BootArgs), counts its
// boots in /var/lib/demo/boots, appends a durable line to
// /var/lib/demo/counter every second, answers GET / on port 80 with
// {"name":NAME,"boots":N,"counter":N} and powers off cleanly on an ACPI
// power button press (QEMU system_powerdown).
//
// BuildDemo needs busybox-static (/bin/busybox), a kernel (/boot/vmlinuz-V
// with /lib/modules/V) and mkfs.ext4 from e2fsprogs 1.43 or newer.
// Cancelling ctx stops the build and leaves opts.Out untouched.
func BuildDemo(ctx context.Context, opts DemoOptions) (*DemoInfo, error) {
	b := demoBuilder{
		bootDir:    hostBootDir,
		modulesDir: hostModulesDir,
		busybox:    hostBusybox,
		progress:   opts.Progress,
	}
	return b.build(ctx, opts)
}

// demoBuilder holds the host paths BuildDemo reads.
type demoBuilder struct {
	bootDir, modulesDir, busybox string
	progress                     func(string)
}

func (b *demoBuilder) step(format string, args ...any) {
	if b.progress != nil {
		b.progress(fmt.Sprintf(format, args...))
	}
}

func (b *demoBuilder) build(ctx context.Context, opts DemoOptions) (*DemoInfo, error) {
	if opts.Out == "" {
		return nil, errors.New("build demo image: no output path")
	}
	size := opts.Size
	if size == 0 {
		size = DefaultDemoSize
	}
	size = (size + (1<<20 - 1)) &^ (1<<20 - 1)
	if size < MinDemoSize {
		return nil, fmt.Errorf("build demo image %s: size %s is below the minimum %s", opts.Out, size, MinDemoSize)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: mkfs.ext4 not found (install e2fsprogs): %w", opts.Out, err)
	}

	ver := opts.KernelVersion
	if ver == "." || ver == ".." || strings.ContainsAny(ver, "/\x00") {
		return nil, fmt.Errorf("build demo image %s: bad kernel version %q", opts.Out, ver)
	}
	if ver == "" {
		if ver, err = newestKernel(b.bootDir, b.modulesDir); err != nil {
			return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
		}
	}
	kernel := filepath.Join(b.bootDir, "vmlinuz-"+ver)
	if err := regularFile(kernel); err != nil {
		return nil, fmt.Errorf("build demo image %s: kernel %s: %w", opts.Out, ver, err)
	}
	b.step("kernel %s (%s)", ver, kernel)

	applets, err := busyboxApplets(ctx, b.busybox)
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}

	ix, err := loadModuleIndex(filepath.Join(b.modulesDir, ver))
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: kernel %s: %w", opts.Out, ver, err)
	}
	mods, err := ix.resolve(demoModules, demoOptionalModules)
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: kernel %s: %w", opts.Out, ver, err)
	}
	names := make([]string, len(mods))
	for i, m := range mods {
		names[i] = m.name
	}
	b.step("initramfs with busybox and modules %s", strings.Join(names, " "))
	initrd, err := b.initramfs(ctx, ver, ix.dir, mods, applets)
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: initramfs: %w", opts.Out, err)
	}

	staging, err := os.MkdirTemp("", "ferry-demo-staging-")
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}
	defer os.RemoveAll(staging)
	b.step("root tree in %s", staging)
	if err := b.rootTree(staging, ver, kernel, initrd, applets); err != nil {
		return nil, fmt.Errorf("build demo image %s: root tree: %w", opts.Out, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Build next to Out and rename, so Out is never a half-written image.
	tmp, err := os.CreateTemp(filepath.Dir(opts.Out), "."+filepath.Base(opts.Out)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}
	tmpName := tmp.Name()
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmpName)
		}
	}()
	err = tmp.Truncate(int64(size))
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp makes it 0600
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}

	b.step("mkfs.ext4 %s (%s)", opts.Out, size)
	var out bytes.Buffer
	// 4 KiB blocks: mke2fs would pick 1 KiB ones for a filesystem this small.
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-b", "4096", "-L", DemoLabel,
		"-d", staging, tmpName, fmt.Sprintf("%dk", size>>10))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("build demo image %s: mkfs.ext4: %w: %s", opts.Out, err, strings.TrimSpace(out.String()))
	}
	if err := syncPath(tmpName); err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}
	if err := os.Rename(tmpName, opts.Out); err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}
	keep = true
	if err := syncPath(filepath.Dir(opts.Out)); err != nil {
		return nil, fmt.Errorf("build demo image %s: %w", opts.Out, err)
	}
	b.step("wrote %s", opts.Out)
	return &DemoInfo{Path: opts.Out, Size: size, KernelVersion: ver, Modules: names}, nil
}

// BootArgs returns the kernel command line that boots an image built by
// BuildDemo as instance name, with eth0 at ipCIDR (A.B.C.D/PREFIX; empty
// leaves eth0 down) and default gateway gw (may be empty). The console is the
// first serial port; "quiet" keeps the kernel to errors there (its full log
// costs most of a second under TCG; the guest's own steps still print), and
// "panic=-1" makes a kernel panic end the VM (with QEMU's -no-reboot) rather
// than hang. The arguments must not contain spaces; the guest also drops
// any character of name other than letters, digits, '.' and '-'.
func BootArgs(name, ipCIDR, gw string) string {
	args := []string{"console=ttyS0", "root=/dev/vda", "panic=-1", "quiet"}
	if name != "" {
		args = append(args, "ferry.name="+name)
	}
	if ipCIDR != "" {
		args = append(args, "ferry.ip="+ipCIDR)
	}
	if gw != "" {
		args = append(args, "ferry.gw="+gw)
	}
	return strings.Join(args, " ")
}

// newestKernel returns the newest kernel version in modulesDir that has a
// kernel image bootDir/vmlinuz-<version> and a modules.dep.
func newestKernel(bootDir, modulesDir string) (string, error) {
	entries, err := os.ReadDir(modulesDir)
	if err != nil {
		return "", fmt.Errorf("find a kernel: %w (install linux-image-amd64)", err)
	}
	best := ""
	var seen []string
	for _, e := range entries {
		v := e.Name()
		seen = append(seen, v)
		if regularFile(filepath.Join(bootDir, "vmlinuz-"+v)) != nil ||
			regularFile(filepath.Join(modulesDir, v, "modules.dep")) != nil {
			continue
		}
		if best == "" || compareVersions(v, best) > 0 {
			best = v
		}
	}
	if best == "" {
		return "", fmt.Errorf("find a kernel: no version in %s (%s) has a %s/vmlinuz-<version> and a modules.dep (install linux-image-amd64)",
			modulesDir, strings.Join(seen, ", "), bootDir)
	}
	return best, nil
}

// compareVersions orders kernel versions: runs of digits compare as numbers,
// other runs as strings ("6.10.2" > "6.9.11").
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ra, restA := versionRun(a)
		rb, restB := versionRun(b)
		da, db := ra[0] >= '0' && ra[0] <= '9', rb[0] >= '0' && rb[0] <= '9'
		switch {
		case da && db:
			ra, rb = strings.TrimLeft(ra, "0"), strings.TrimLeft(rb, "0")
			if len(ra) != len(rb) {
				return len(ra) - len(rb)
			}
			if c := strings.Compare(ra, rb); c != 0 {
				return c
			}
		case da != db:
			if da {
				return 1
			}
			return -1
		default:
			if c := strings.Compare(ra, rb); c != 0 {
				return c
			}
		}
		a, b = restA, restB
	}
	return len(a) - len(b)
}

// versionRun splits s into its leading run of digits or of non-digits and
// the rest.
func versionRun(s string) (string, string) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], s[i:]
}

// busyboxApplets checks that bb is a statically linked busybox (the guest
// has no C library) and returns its applets as paths relative to / such as
// "sbin/acpid", from `busybox --list-full`.
func busyboxApplets(ctx context.Context, bb string) ([]string, error) {
	f, err := elf.Open(bb)
	if err != nil {
		return nil, fmt.Errorf("busybox %s: %w (install busybox-static)", bb, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			return nil, fmt.Errorf("busybox %s is dynamically linked; the guest needs a static one (install busybox-static)", bb)
		}
	}
	f.Close()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bb, "--list-full")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("busybox %s --list-full: %w: %s", bb, err, strings.TrimSpace(stderr.String()))
	}
	var applets []string
	for _, a := range strings.Fields(stdout.String()) {
		a = path.Clean(strings.TrimPrefix(a, "/"))
		if a == "." || strings.HasPrefix(a, "..") || path.Base(a) == "busybox" || path.Base(a) == "linuxrc" {
			continue
		}
		applets = append(applets, a)
	}
	for _, need := range []string{"sbin/init", "bin/sh", "usr/sbin/httpd", "sbin/acpid", "sbin/switch_root", "sbin/insmod"} {
		if !slices.Contains(applets, need) {
			return nil, fmt.Errorf("busybox %s has no %s applet", bb, path.Base(need))
		}
	}
	return applets, nil
}

// guestFile returns an embedded file of the guest directory.
func guestFile(name string) []byte {
	b, err := guestFiles.ReadFile("guest/" + name)
	if err != nil {
		panic("image: missing embedded guest file " + name) // a build defect
	}
	return b
}

// initramfs returns the gzip'ed newc cpio archive of the demo initramfs:
// busybox, the modules mods (decompressed), the list /etc/modules the /init
// script loads them from, and /init.
func (b *demoBuilder) initramfs(ctx context.Context, ver, modDir string, mods []kmod, applets []string) ([]byte, error) {
	bb, err := os.ReadFile(b.busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	cw := newCPIOWriter(zw)
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys", "tmp"} {
		if err := cw.dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The kernel opens /dev/console for /init before devtmpfs is mounted.
	if err := cw.charDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := cw.charDev("dev/null", 0o666, 1, 3); err != nil {
		return nil, err
	}
	if err := cw.file("bin/busybox", 0o755, bb); err != nil {
		return nil, err
	}
	seen := map[string]bool{"busybox": true}
	for _, a := range applets {
		n := path.Base(a)
		if seen[n] {
			continue
		}
		seen[n] = true
		if err := cw.symlink("bin/"+n, "busybox"); err != nil {
			return nil, err
		}
	}

	// Modules keep their path under lib/modules/<version>, as plain .ko.
	type modFile struct {
		dst  string
		data []byte
	}
	var files []modFile
	var list strings.Builder
	dirs := map[string]bool{}
	for _, m := range mods {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := readModule(ctx, filepath.Join(modDir, m.path))
		if err != nil {
			return nil, err
		}
		rel := m.path
		if i := strings.LastIndex(rel, ".ko"); i >= 0 {
			rel = rel[:i] + ".ko"
		}
		dst := path.Join("lib/modules", ver, rel)
		for d := path.Dir(dst); d != "lib/modules"; d = path.Dir(d) {
			dirs[d] = true
		}
		need := "optional"
		if m.required {
			need = "required"
		}
		fmt.Fprintf(&list, "%s /%s %s\n", m.name, dst, need)
		files = append(files, modFile{dst, data})
	}
	// Sorted, a directory comes before everything inside it.
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := cw.dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := cw.file(f.dst, 0o644, f.data); err != nil {
			return nil, err
		}
	}
	if err := cw.file("etc/modules", 0o644, []byte(list.String())); err != nil {
		return nil, err
	}
	if err := cw.file("etc/ferry-initramfs", 0o644, []byte("ferry demo initramfs, kernel "+ver+"\n")); err != nil {
		return nil, err
	}
	if err := cw.file("init", 0o755, guestFile("initramfs-init")); err != nil {
		return nil, err
	}
	if err := cw.close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// rootTree fills dir with the demo image's root filesystem.
func (b *demoBuilder) rootTree(dir, ver, kernel string, initrd []byte, applets []string) error {
	for _, d := range []struct {
		name string
		perm os.FileMode
	}{
		{"bin", 0o755}, {"boot", 0o755}, {"dev", 0o755}, {"etc/acpi/PWRF", 0o755},
		{"etc/init.d", 0o755}, {"lib", 0o755}, {"mnt", 0o755}, {"proc", 0o555},
		{"root", 0o700}, {"run", 0o755}, {"sbin", 0o755}, {"srv/www/cgi-bin", 0o755},
		{"sys", 0o555}, {"tmp", 0o777 | os.ModeSticky}, {"usr/bin", 0o755}, {"usr/sbin", 0o755},
		{"var/lib/demo", 0o755}, {"var/log", 0o755},
	} {
		p := filepath.Join(dir, d.name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		// Chmod: MkdirAll's mode is filtered by the umask.
		if err := os.Chmod(p, d.perm); err != nil {
			return err
		}
	}
	if err := copyFile(b.busybox, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		p := filepath.Join(dir, a)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", p); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	if err := copyFile(kernel, filepath.Join(dir, "boot/vmlinuz"), 0o644); err != nil {
		return err
	}
	bbVersion := "busybox"
	// busybox without arguments prints its version first (and exits 1).
	out, _ := exec.Command(b.busybox).Output()
	if line, _, _ := strings.Cut(string(out), "\n"); line != "" {
		bbVersion = line
	}
	files := []struct {
		name string
		perm os.FileMode
		data []byte
	}{
		{"boot/initrd.img", 0o644, initrd},
		{"sbin/init-demo", 0o755, guestFile("init-demo")},
		{"etc/inittab", 0o644, guestFile("inittab")},
		{"etc/init.d/rcS", 0o755, guestFile("rcS")},
		{"etc/init.d/rcK", 0o755, guestFile("rcK")},
		{"etc/init.d/acpid", 0o755, guestFile("acpid")},
		{"etc/acpi/PWRF/00000080", 0o755, guestFile("power-button")},
		{"usr/sbin/demo-counter", 0o755, guestFile("demo-counter")},
		{"srv/www/cgi-bin/index.cgi", 0o755, guestFile("index.cgi")},
		{"srv/www/cgi-bin/fill.cgi", 0o755, guestFile("fill.cgi")},
		{"etc/hostname", 0o644, []byte("ferry-demo\n")},
		{"etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n")},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{"etc/group", 0o644, []byte("root:x:0:\ntty:x:5:\n")},
		{"etc/shadow", 0o600, []byte("root:*:1:0:99999:7:::\n")},
		{"etc/fstab", 0o644, []byte("/dev/vda / ext4 rw 0 1\n")},
		{"etc/ferry-demo", 0o644, []byte(fmt.Sprintf(
			"ferry demo image\nkernel %s\n%s\n", ver, bbVersion))},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(dir, f.name), f.perm); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies the regular file src to a new file dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Chmod(perm)
}

// regularFile returns nil if p is a regular file (after symlinks).
func regularFile(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}

// syncPath fsyncs the file or directory p.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}
