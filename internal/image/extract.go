package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Where an image keeps the kernel and initramfs ferry boots it with.
const (
	KernelPath = "/boot/vmlinuz"
	InitrdPath = "/boot/initrd.img"
)

// ErrNoKernel means an image has no kernel at KernelPath or no initramfs at
// InitrdPath. ferry boots the kernel inside the image, so it cannot boot one
// without them.
var ErrNoKernel = errors.New("image: no kernel or initramfs in /boot")

// Fallbacks: Debian keeps its /vmlinuz and /initrd.img symlinks in / unless
// told otherwise.
var (
	kernelPaths = []string{KernelPath, "/vmlinuz"}
	initrdPaths = []string{InitrdPath, "/initrd.img"}
)

// PreExtractBoot is ExtractBoot at the lowest CPU priority, for work done
// ahead of need (a replica host readying the boot files of a guest that
// may fail over to it) beside guests that are running.
func PreExtractBoot(ctx context.Context, imagePath, outDir string) (kernelPath, initrdPath string, err error) {
	err = runYielding(func() error {
		var e error
		kernelPath, initrdPath, e = ExtractBoot(ctx, imagePath, outDir)
		return e
	})
	return kernelPath, initrdPath, err
}

// ExtractBoot copies the kernel (KernelPath) and initramfs (InitrdPath) out
// of the ext4 image at imagePath into outDir, as outDir/vmlinuz and
// outDir/initrd.img, without mounting the image (it runs debugfs), and
// returns the paths to give QEMU's -kernel and -initrd. Symbolic links
// inside the image are followed, and Debian's /vmlinuz and /initrd.img are
// accepted when /boot has neither. An image without them yields an error
// matching ErrNoKernel.
//
// When the kernel can be unpacked (see UnpackKernel), ExtractBoot also
// writes outDir/vmlinux and returns that as kernelPath: the guest then skips
// decompressing itself, seconds under TCG (the file is larger: 66 MB for
// Debian 12's kernel). Otherwise kernelPath is the bzImage outDir/vmlinuz,
// which boots the same way, more slowly. outDir must exist.
//
// Every output is written under a temporary name and renamed, so a reader
// never sees a partial file. Cancelling ctx stops debugfs and returns
// ctx's error.
func ExtractBoot(ctx context.Context, imagePath, outDir string) (kernelPath, initrdPath string, err error) {
	if err := regularFile(imagePath); err != nil {
		return "", "", fmt.Errorf("extract boot files: image: %w", err)
	}
	kernel, ksize, err := findBootFile(ctx, imagePath, kernelPaths)
	if err != nil {
		return "", "", err
	}
	initrd, isize, err := findBootFile(ctx, imagePath, initrdPaths)
	if err != nil {
		return "", "", err
	}
	kernelPath = filepath.Join(outDir, "vmlinuz")
	initrdPath = filepath.Join(outDir, "initrd.img")
	if err := dumpFile(ctx, imagePath, kernel, ksize, kernelPath); err != nil {
		return "", "", err
	}
	if err := dumpFile(ctx, imagePath, initrd, isize, initrdPath); err != nil {
		return "", "", err
	}
	vmlinux := filepath.Join(outDir, "vmlinux")
	// Unpacking takes most of a second: keep the result for the next boot
	// of the same kernel (outDir is the VM's own and outlives a stop).
	stamp := vmlinux + ".sha256"
	sum, err := fileSHA256(kernelPath)
	if err != nil {
		return "", "", fmt.Errorf("extract boot files of %s: %w", imagePath, err)
	}
	if old, err := os.ReadFile(stamp); err == nil && string(old) == sum {
		if _, err := os.Stat(vmlinux); err == nil {
			return vmlinux, initrdPath, nil
		}
	}
	_ = os.Remove(stamp)
	switch err := UnpackKernel(ctx, kernelPath, vmlinux); {
	case err == nil:
		kernelPath = vmlinux
		if err := os.WriteFile(stamp, []byte(sum), 0o644); err != nil {
			return "", "", fmt.Errorf("extract boot files of %s: %w", imagePath, err)
		}
	case ctx.Err() != nil:
		return "", "", ctx.Err()
	default:
		// The bzImage boots too; a stale vmlinux must not be used instead.
		if rerr := os.Remove(vmlinux); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return "", "", fmt.Errorf("extract boot files of %s: %w", imagePath, rerr)
		}
	}
	return kernelPath, initrdPath, nil
}

// findBootFile returns the first of candidates that exists in the image as a
// non-empty regular file (after symlinks), with its path and size.
func findBootFile(ctx context.Context, img string, candidates []string) (string, int64, error) {
	for _, c := range candidates {
		p, size, err := resolveFile(ctx, img, c)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return "", 0, err
		}
		if size == 0 {
			return "", 0, fmt.Errorf("image %s: %s is empty: %w", img, p, ErrNoKernel)
		}
		return p, size, nil
	}
	return "", 0, fmt.Errorf("image %s has no %s: ferry boots the kernel inside the image; see `ferry image build-demo`: %w",
		img, candidates[0], ErrNoKernel)
}

// errNotFound is what resolveFile returns for a missing path.
var errNotFound = errors.New("not found")

// maxSymlinks bounds how many links resolveFile follows.
const maxSymlinks = 8

var (
	statTypeRE   = regexp.MustCompile(`(?m)^Inode: \d+\s+Type: (\S+)`)
	statSizeRE   = regexp.MustCompile(`(?m)^User:.*\sSize: (\d+)`)
	statFastLink = regexp.MustCompile(`(?m)^Fast link dest: "(.*)"$`)
	// debugfsBanner is the version line debugfs prints on standard error,
	// such as "debugfs 1.47.0 (5-Feb-2023)".
	debugfsBanner = regexp.MustCompile(`^debugfs \d+\.\d+\S* \(.*\)$`)
)

// resolveFile follows p inside the image to a regular file and returns its
// path and size. A missing path yields errNotFound.
func resolveFile(ctx context.Context, img, p string) (string, int64, error) {
	orig := p
	for range maxSymlinks + 1 {
		out, err := debugfs(ctx, img, "stat", p)
		if err != nil {
			if strings.Contains(err.Error(), "File not found") {
				return "", 0, errNotFound
			}
			return "", 0, err
		}
		m := statTypeRE.FindStringSubmatch(out)
		if m == nil {
			return "", 0, fmt.Errorf("image %s: cannot parse debugfs stat of %s: %q", img, p, firstLines(out, 3))
		}
		switch m[1] {
		case "regular":
			sm := statSizeRE.FindStringSubmatch(out)
			if sm == nil {
				return "", 0, fmt.Errorf("image %s: no size in debugfs stat of %s", img, p)
			}
			size, err := strconv.ParseInt(sm[1], 10, 64)
			if err != nil {
				return "", 0, fmt.Errorf("image %s: size of %s: %w", img, p, err)
			}
			return p, size, nil
		case "symlink":
			var target string
			if fm := statFastLink.FindStringSubmatch(out); fm != nil {
				target = fm[1]
			} else if target, err = debugfs(ctx, img, "cat", p); err != nil {
				return "", 0, err
			}
			if target == "" {
				return "", 0, fmt.Errorf("image %s: %s is an empty symlink", img, p)
			}
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = path.Clean(target)
		default:
			return "", 0, fmt.Errorf("image %s: %s is a %s, not a regular file", img, p, m[1])
		}
	}
	return "", 0, fmt.Errorf("image %s: too many symbolic links resolving %s", img, orig)
}

// dumpFile copies the file src of the image to dst via a temporary file and
// checks that it has the size the image says.
func dumpFile(ctx context.Context, img, src string, size int64, dst string) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return fmt.Errorf("extract %s from %s: %w", src, img, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op after the rename
	if _, err := debugfs(ctx, img, "dump", src, tmpName); err != nil {
		return err
	}
	fi, err := os.Stat(tmpName)
	if err != nil {
		return fmt.Errorf("extract %s from %s: %w", src, img, err)
	}
	if fi.Size() != size || size == 0 {
		return fmt.Errorf("extract %s from %s: debugfs wrote %d bytes, want %d", src, img, fi.Size(), size)
	}
	if err := os.Chmod(tmpName, 0o644); err != nil {
		return fmt.Errorf("extract %s from %s: %w", src, img, err)
	}
	if err := os.Rename(tmpName, dst); err != nil {
		return fmt.Errorf("extract %s from %s: %w", src, img, err)
	}
	return nil
}

// debugfs runs one read-only debugfs request on img and returns its standard
// output. debugfs exits 0 even when a request fails, so any line on standard
// error other than its version banner is an error.
func debugfs(ctx context.Context, img, request string, args ...string) (string, error) {
	bin, err := exec.LookPath("debugfs")
	if err != nil {
		return "", fmt.Errorf("image %s: debugfs not found (install e2fsprogs): %w", img, err)
	}
	req := request
	for _, a := range args {
		if strings.ContainsAny(a, "\"\n\r\\") {
			return "", fmt.Errorf("image %s: unsupported path %q", img, a)
		}
		req += ` "` + a + `"`
	}
	var stdout, stderr bytes.Buffer
	// -c (catastrophic mode, read-only) skips the allocation bitmaps:
	// the image may be a replica that a running guest is writing, whose
	// bitmaps can be mid-update (a checksum mismatch would refuse the
	// whole file system), while the boot files it reads do not change.
	cmd := exec.CommandContext(ctx, bin, "-c", "-R", req, img)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	var msgs []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || debugfsBanner.MatchString(line) {
			continue
		}
		msgs = append(msgs, line)
	}
	if runErr != nil || len(msgs) > 0 {
		msg := strings.Join(msgs, "; ")
		if runErr != nil {
			return "", fmt.Errorf("image %s: debugfs %s: %w: %s", img, req, runErr, msg)
		}
		return "", fmt.Errorf("image %s: debugfs %s: %s", img, req, msg)
	}
	return stdout.String(), nil
}

// firstLines returns at most n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// fileSHA256 returns the hex SHA-256 of a file's contents.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
