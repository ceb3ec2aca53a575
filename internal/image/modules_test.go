package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeModuleTree writes a fake /lib/modules/<version> directory.
func writeModuleTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestModuleResolve(t *testing.T) {
	t.Parallel()
	dir := writeModuleTree(t, map[string]string{
		"modules.dep": `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/char/hw_random/virtio-rng.ko.zst: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/a.ko: kernel/b.ko
kernel/b.ko: kernel/a.ko
`,
		"modules.softdep": "# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c post: nothing\n",
		"modules.alias":   "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias pci:v*d* virtio_pci\n",
		"modules.builtin": "kernel/drivers/block/virtio_blk.ko\n",
	})
	ix, err := loadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := func(ms []kmod) string {
		var s []string
		for _, m := range ms {
			n := m.name
			if !m.required {
				n += "?"
			}
			s = append(s, n)
		}
		return strings.Join(s, " ")
	}
	tests := []struct {
		name     string
		want     []string
		optional []string
		order    string
		wantErr  string
	}{
		{
			name:  "ext4 with soft dependencies first",
			want:  []string{"ext4"},
			order: "crc32c_generic? crc32c_intel? crc16 mbcache jbd2 ext4",
		},
		{
			name:  "dependencies before modules, once",
			want:  []string{"virtio_pci", "virtio_blk", "virtio-rng"},
			order: "virtio_ring virtio virtio_pci virtio_rng",
		},
		{
			name:     "optional and missing",
			want:     []string{"virtio_ring"},
			optional: []string{"button", "virtio_pci"},
			order:    "virtio_ring virtio? virtio_pci?",
		},
		{name: "missing required", want: []string{"nosuch"}, wantErr: "nosuch is neither"},
		{name: "cycle", want: []string{"a"}, wantErr: "cycle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ix.resolve(tc.want, tc.optional)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("resolve(%q) error = %v, want one containing %q", tc.want, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve(%q): %v", tc.want, err)
			}
			if s := names(got); s != tc.order {
				t.Errorf("resolve(%q) = %q, want %q", tc.want, s, tc.order)
			}
		})
	}
}

func TestModuleResolveUpgradesOptional(t *testing.T) {
	t.Parallel()
	dir := writeModuleTree(t, map[string]string{
		"modules.dep": "kernel/x.ko: kernel/dep.ko\nkernel/dep.ko:\nkernel/y.ko:\n",
		// y pulls x in as a soft (optional) dependency; then x is wanted.
		"modules.softdep": "softdep y pre: x\n",
	})
	ix, err := loadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ix.resolve([]string{"y", "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		if !m.required {
			t.Errorf("module %s is optional, want required", m.name)
		}
	}
}

func TestLoadModuleIndexNeedsModulesDep(t *testing.T) {
	t.Parallel()
	if _, err := loadModuleIndex(t.TempDir()); err == nil {
		t.Fatal("loadModuleIndex of an empty directory succeeded")
	}
}

func TestReadModule(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := []byte("\x7fELF fake module contents")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(want)
	zw.Close()
	cases := map[string]string{
		"plain": write("m.ko", want),
		"gzip":  write("m.ko.gz", gz.Bytes()),
	}
	for _, tool := range []struct{ name, ext string }{{"xz", ".ko.xz"}, {"zstd", ".ko.zst"}} {
		if !hostHasTool(tool.name) {
			t.Logf("%s not installed; not testing %s", tool.name, tool.ext)
			continue
		}
		cmd := exec.Command(tool.name, "-c")
		cmd.Stdin = bytes.NewReader(want)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s -c: %v", tool.name, err)
		}
		cases[tool.name] = write("m"+tool.ext, out)
	}
	for name, p := range cases {
		got, err := readModule(context.Background(), p)
		if err != nil {
			t.Errorf("%s: readModule(%s): %v", name, p, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: readModule(%s) = %q, want %q", name, p, got, want)
		}
	}
	if _, err := readModule(context.Background(), write("m.ko.bz2", []byte("x"))); err == nil {
		t.Error("readModule(.ko.bz2) succeeded, want an error")
	}
	if _, err := readModule(context.Background(), write("bad.ko.gz", []byte("not gzip"))); err == nil {
		t.Error("readModule(corrupt .ko.gz) succeeded, want an error")
	}
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"6.1.0-56-amd64", "6.1.0-56-amd64", 0},
		{"6.10.2", "6.9.11", 1},
		{"6.1.0-56-amd64", "6.1.0-9-amd64", 1},
		{"5.10.0-30-amd64", "6.1.0-1-amd64", -1},
		{"6.1.0", "6.1.0-1", -1},
		{"06.1", "6.1", 0},
	}
	sign := func(n int) int { return min(max(n, -1), 1) }
	for _, tc := range tests {
		if got := sign(compareVersions(tc.a, tc.b)); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := sign(compareVersions(tc.b, tc.a)); got != -tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestNewestKernel(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	boot, mods := filepath.Join(root, "boot"), filepath.Join(root, "modules")
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := newestKernel(boot, mods); err == nil {
		t.Fatal("newestKernel with no modules directory succeeded")
	}
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64", "6.18.44-custom"} {
		mk(filepath.Join(mods, v, "modules.dep"))
	}
	// 6.18.44-custom has modules but no kernel in /boot: the running
	// kernel of a container host often looks like that.
	mk(filepath.Join(boot, "vmlinuz-6.1.0-9-amd64"))
	mk(filepath.Join(boot, "vmlinuz-6.1.0-56-amd64"))
	got, err := newestKernel(boot, mods)
	if err != nil {
		t.Fatal(err)
	}
	if got != "6.1.0-56-amd64" {
		t.Errorf("newestKernel() = %q, want 6.1.0-56-amd64", got)
	}
}

func TestBusyboxApplets(t *testing.T) {
	t.Parallel()
	if _, err := busyboxApplets(context.Background(), "/bin/sh"); err == nil || !strings.Contains(err.Error(), "busybox") {
		t.Errorf("busyboxApplets(/bin/sh) error = %v, want a busybox error", err)
	}
	if regularFile(hostBusybox) != nil {
		requireOrSkip(t, hostBusybox+" is missing (install busybox-static)")
	}
	applets, err := busyboxApplets(context.Background(), hostBusybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sbin/init", "usr/sbin/httpd", "sbin/acpid", "bin/sync", "usr/sbin/arping"} {
		if !slices.Contains(applets, want) {
			t.Errorf("busybox has no %s", want)
		}
	}
}
