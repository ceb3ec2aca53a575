package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needE2fsprogs skips the test when mkfs.ext4 or debugfs is missing.
func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if !hostHasTool(tool) {
			requireOrSkip(t, tool+" is not installed (install e2fsprogs)")
		}
	}
}

// testImage describes a small ext4 image for tests.
type testImage struct {
	files    map[string]string // path in the image -> contents
	symlinks map[string]string // path in the image -> target
	label    string
}

// build writes the image (8 MiB) to dir/name and returns its path.
func (ti testImage) build(t *testing.T, dir, name string) string {
	t.Helper()
	staging := filepath.Join(dir, name+".staging")
	for p, body := range ti.files {
		full := filepath.Join(staging, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range ti.symlinks {
		full := filepath.Join(staging, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, name)
	args := []string{"-q", "-F", "-b", "4096", "-d", staging}
	if ti.label != "" {
		args = append(args, "-L", ti.label)
	}
	out, err := exec.Command("mkfs.ext4", append(args, img, "8M")...).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// A long symlink target is stored in a data block (a "slow" symlink), which
// debugfs stat does not print.
var longTarget = "vmlinuz-" + strings.Repeat("x", 70)

var bootImages = map[string]testImage{
	"good": {label: "test-os", files: map[string]string{
		"boot/vmlinuz": "KERNEL", "boot/initrd.img": "INITRD",
	}},
	"symlinks": {files: map[string]string{
		"boot/vmlinuz-6.1.0": "KERNEL", "boot/initrd.img-6.1.0": "INITRD",
	}, symlinks: map[string]string{
		"boot/vmlinuz": "vmlinuz-6.1.0", "boot/initrd.img": "/boot/initrd.img-6.1.0",
	}},
	"slow symlink": {files: map[string]string{
		"boot/" + longTarget: "KERNEL", "boot/initrd.img": "INITRD",
	}, symlinks: map[string]string{"boot/vmlinuz": longTarget}},
	"debian root symlinks": {files: map[string]string{
		"boot/vmlinuz-6.1.0": "KERNEL", "boot/initrd.img-6.1.0": "INITRD",
	}, symlinks: map[string]string{
		"vmlinuz": "boot/vmlinuz-6.1.0", "initrd.img": "boot/initrd.img-6.1.0",
	}},
}

func TestExtractBoot(t *testing.T) {
	t.Parallel()
	needE2fsprogs(t)
	dir := t.TempDir()
	for name, ti := range bootImages {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			img := ti.build(t, dir, strings.ReplaceAll(name, " ", "-")+".img")
			out := t.TempDir()
			k, i, err := ExtractBoot(context.Background(), img, out)
			if err != nil {
				t.Fatalf("ExtractBoot: %v", err)
			}
			// "KERNEL" is no bzImage: ExtractBoot falls back to it as is.
			for _, c := range []struct{ path, want string }{{k, "KERNEL"}, {i, "INITRD"}} {
				b, err := os.ReadFile(c.path)
				if err != nil || string(b) != c.want {
					t.Errorf("%s = %q, %v; want %q", c.path, b, err, c.want)
				}
			}
			if filepath.Base(k) != "vmlinuz" || filepath.Base(i) != "initrd.img" || filepath.Dir(k) != out {
				t.Errorf("ExtractBoot() = %s, %s; want %s/vmlinuz, initrd.img", k, i, out)
			}
		})
	}
}

func TestExtractBootErrors(t *testing.T) {
	t.Parallel()
	needE2fsprogs(t)
	dir := t.TempDir()
	tests := []struct {
		name    string
		image   testImage
		wantErr string
		noBoot  bool
	}{
		{name: "no kernel", image: testImage{files: map[string]string{"boot/initrd.img": "I"}},
			wantErr: "has no /boot/vmlinuz: ferry boots the kernel inside the image; see `ferry image build-demo`", noBoot: true},
		{name: "no initrd", image: testImage{files: map[string]string{"boot/vmlinuz": "K"}},
			wantErr: "has no /boot/initrd.img", noBoot: true},
		{name: "empty kernel", image: testImage{files: map[string]string{"boot/vmlinuz": "", "boot/initrd.img": "I"}},
			wantErr: "/boot/vmlinuz is empty", noBoot: true},
		{name: "kernel is a directory", image: testImage{files: map[string]string{"boot/vmlinuz/x": "K", "boot/initrd.img": "I"}},
			wantErr: "is a directory, not a regular file"},
		{name: "symlink loop", image: testImage{files: map[string]string{"boot/initrd.img": "I"},
			symlinks: map[string]string{"boot/vmlinuz": "a", "boot/a": "vmlinuz"}},
			wantErr: "too many symbolic links"},
		{name: "dangling symlink", image: testImage{files: map[string]string{"boot/initrd.img": "I"},
			symlinks: map[string]string{"boot/vmlinuz": "gone"}},
			wantErr: "has no /boot/vmlinuz", noBoot: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := tc.image.build(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".img")
			_, _, err := ExtractBoot(context.Background(), img, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ExtractBoot() error = %v, want one containing %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), img) {
				t.Errorf("error %q does not name the image %s", err, img)
			}
			if got := errors.Is(err, ErrNoKernel); got != tc.noBoot {
				t.Errorf("errors.Is(%v, ErrNoKernel) = %v, want %v", err, got, tc.noBoot)
			}
		})
	}
	t.Run("not an image", func(t *testing.T) {
		t.Parallel()
		p := filepath.Join(dir, "zeros")
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := ExtractBoot(context.Background(), p, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "debugfs") {
			t.Fatalf("ExtractBoot(zeros) error = %v, want a debugfs error", err)
		}
	})
	t.Run("missing image", func(t *testing.T) {
		t.Parallel()
		if _, _, err := ExtractBoot(context.Background(), filepath.Join(dir, "nope"), t.TempDir()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("ExtractBoot(missing) error = %v, want ErrNotExist", err)
		}
	})
}

func TestInspect(t *testing.T) {
	t.Parallel()
	needE2fsprogs(t)
	dir := t.TempDir()
	good := bootImages["good"].build(t, dir, "good.img")
	noKernel := testImage{label: "bare", files: map[string]string{"etc/hostname": "x"}}.build(t, dir, "nokernel.img")

	// Damaged copies of the good image.
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	corrupt := append([]byte(nil), goodBytes...)
	corrupt[1080], corrupt[1081] = 0, 0
	truncated := write("truncated.img", goodBytes[:len(goodBytes)/2])
	truncatedOdd := write("truncated-odd.img", goodBytes[:len(goodBytes)/2+100])
	padded := write("padded.img", append(append([]byte(nil), goodBytes...), make([]byte, 100)...))

	sum := sha256.Sum256(goodBytes)
	tests := []struct {
		name     string
		path     string
		wantErr  error  // matched with errors.Is, if set
		errText  string // contained in the error, if set
		wantInfo *Info
	}{
		{name: "good", path: good, wantInfo: &Info{Size: 8 << 20, FSSize: 8 << 20, Label: "test-os", HasKernel: true, SHA256: hex.EncodeToString(sum[:])}},
		{name: "no kernel", path: noKernel, wantErr: ErrNoKernel, errText: "has no /boot/vmlinuz",
			wantInfo: &Info{Size: 8 << 20, FSSize: 8 << 20, Label: "bare"}},
		{name: "bad magic", path: write("corrupt.img", corrupt), wantErr: ErrNotExt4},
		{name: "truncated", path: truncated, wantErr: ErrTruncated, errText: "truncated"},
		{name: "truncated at an odd size", path: truncatedOdd, wantErr: ErrTruncated, errText: "truncated"},
		{name: "not a multiple of 512", path: padded, errText: "not a multiple of 512"},
		{name: "empty", path: write("empty.img", nil), errText: "empty"},
		{name: "tiny", path: write("tiny.img", make([]byte, 512)), wantErr: ErrNotExt4},
		{name: "directory", path: dir, errText: "not a regular file"},
		{name: "missing", path: filepath.Join(dir, "missing.img"), wantErr: os.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			info, err := Inspect(context.Background(), tc.path)
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil {
					t.Fatalf("Inspect(%s): %v", tc.path, err)
				}
			} else {
				if err == nil {
					t.Fatalf("Inspect(%s) succeeded, want an error", tc.path)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("Inspect() error = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errText) || !strings.Contains(err.Error(), tc.path) {
					t.Errorf("Inspect() error = %q, want one naming %s and containing %q", err, tc.path, tc.errText)
				}
			}
			switch {
			case tc.wantInfo == nil && info != nil:
				t.Errorf("Inspect() = %+v, want no Info", *info)
			case tc.wantInfo != nil && (info == nil || *info != *tc.wantInfo):
				t.Errorf("Inspect() = %+v, want %+v", info, *tc.wantInfo)
			}
		})
	}
}

func TestInspectCancelled(t *testing.T) {
	t.Parallel()
	needE2fsprogs(t)
	img := bootImages["good"].build(t, t.TempDir(), "good.img")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Inspect(ctx, img); !errors.Is(err, context.Canceled) {
		t.Fatalf("Inspect(cancelled) error = %v, want context.Canceled", err)
	}
}
