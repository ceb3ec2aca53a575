package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ferrycluster/ferry/internal/api"
)

// Info describes an image file checked by Inspect.
type Info struct {
	// Size is the size of the file.
	Size api.Bytes
	// FSSize is the size of the ext4 filesystem in it (at most Size).
	FSSize api.Bytes
	// Label is the filesystem's label, possibly empty.
	Label string
	// HasKernel reports that the image has a kernel at KernelPath and an
	// initramfs at InitrdPath (see ExtractBoot).
	HasKernel bool
	// SHA256 is the hex SHA-256 of the whole file.
	SHA256 string
}

// Inspect validates the image file at path before it is imported: a regular
// file whose size is a non-zero multiple of 512, holding an ext4 filesystem
// (superblock magic 0xEF53 at offset 1080) no larger than the file, with a
// kernel and an initramfs in /boot. It reads the file once to hash it.
//
// The errors match ErrNotExt4 (no superblock), ErrTruncated (the file is
// shorter than its filesystem) and ErrNoKernel; with ErrNoKernel, Inspect
// also returns the Info, HasKernel false and SHA256 empty. Cancelling ctx
// stops it.
func Inspect(ctx context.Context, path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("inspect image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspect image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("inspect image %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	size := fi.Size()
	switch {
	case size == 0:
		return nil, fmt.Errorf("inspect image %s: file is empty", path)
	case size < superblockOffset+superblockSize:
		return nil, fmt.Errorf("inspect image %s: %w: %d bytes is too small to hold one", path, ErrNotExt4, size)
	}
	buf := make([]byte, superblockSize)
	if _, err := f.ReadAt(buf, superblockOffset); err != nil {
		return nil, fmt.Errorf("inspect image %s: read superblock: %w", path, err)
	}
	sb, err := parseSuperblock(buf)
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: %w", path, err)
	}
	if fs := sb.FSBytes(); fs > size {
		return nil, fmt.Errorf("inspect image %s: %w: the file has %d bytes, its filesystem %d (%d blocks of %d)",
			path, ErrTruncated, size, fs, sb.Blocks, sb.BlockSize)
	}
	if size%512 != 0 {
		return nil, fmt.Errorf("inspect image %s: size %d is not a multiple of 512 bytes, as a raw disk's must be", path, size)
	}
	info := &Info{Size: api.Bytes(size), FSSize: api.Bytes(sb.FSBytes()), Label: sb.Label}

	if _, _, err := findBootFile(ctx, path, kernelPaths); err != nil {
		return noKernel(info, err)
	}
	if _, _, err := findBootFile(ctx, path, initrdPaths); err != nil {
		return noKernel(info, err)
	}
	info.HasKernel = true

	sum, err := hashFile(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("inspect image %s: %w", path, err)
	}
	info.SHA256 = sum
	return info, nil
}

// noKernel returns info along with err if err is ErrNoKernel, otherwise
// only err.
func noKernel(info *Info, err error) (*Info, error) {
	if errors.Is(err, ErrNoKernel) {
		return info, err
	}
	return nil, err
}

// hashFile returns the hex SHA-256 of f from its start, checking ctx between
// chunks.
func hashFile(ctx context.Context, f *os.File) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	r := io.NewSectionReader(f, 0, 1<<62)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("hash: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
