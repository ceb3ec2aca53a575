package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ferrycluster/ferry/internal/api"
)

// Whence values of lseek(2) that find data and holes in sparse files
// (Linux, and the same values on the BSDs and Solaris).
const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// copyBlock is the granularity at which SparseCopy leaves all-zero data out
// of dst; filesystem blocks are 4 KiB or a divisor of it.
const copyBlock = 4096

// SparseCopy creates dst as a sparse copy of the regular file src and returns
// the number of bytes it wrote. dst must not exist; it gets src's size and
// permission bits. Only src's data extents are read (lseek SEEK_DATA and
// SEEK_HOLE); within them, all-zero 4 KiB blocks are skipped too, so a
// copy allocates no more than src, often less. Where the filesystem cannot
// report holes, all of src is read and its zero blocks skipped. dst and its
// directory are fsynced before SparseCopy returns; on error dst is removed.
// src must not change during the copy. Cancelling ctx stops the copy.
func SparseCopy(ctx context.Context, src, dst string) (copied int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("sparse copy: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return 0, fmt.Errorf("sparse copy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("sparse copy %s: not a regular file (%s)", src, fi.Mode().Type())
	}
	size := fi.Size()

	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return 0, fmt.Errorf("sparse copy %s: %w", src, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("sparse copy %s to %s: %w", src, dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
			copied = 0
		}
	}()
	if err := out.Truncate(size); err != nil {
		return 0, fmt.Errorf("sparse copy %s to %s: %w", src, dst, err)
	}

	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		start, err := in.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break // only a hole is left
			}
			if off == 0 && errors.Is(err, syscall.EINVAL) {
				// No SEEK_DATA here: treat the whole file as data.
				n, err := copyRange(ctx, in, out, 0, size, buf)
				copied += n
				if err != nil {
					return copied, fmt.Errorf("sparse copy %s to %s: %w", src, dst, err)
				}
				break
			}
			return copied, fmt.Errorf("sparse copy %s: seek data: %w", src, err)
		}
		end, err := in.Seek(start, seekHole)
		if err != nil {
			return copied, fmt.Errorf("sparse copy %s: seek hole: %w", src, err)
		}
		end = min(end, size)
		n, err := copyRange(ctx, in, out, start, end, buf)
		copied += n
		if err != nil {
			return copied, fmt.Errorf("sparse copy %s to %s: %w", src, dst, err)
		}
		off = end
	}
	if err := out.Sync(); err != nil {
		return copied, fmt.Errorf("sparse copy %s to %s: %w", src, dst, err)
	}
	if err := syncPath(filepath.Dir(dst)); err != nil {
		return copied, fmt.Errorf("sparse copy %s to %s: %w", src, dst, err)
	}
	return copied, nil
}

// copyRange copies [start, end) of in to the same offsets of out, leaving
// out all-zero copyBlock-aligned blocks (out reads as zeros there already),
// and returns the number of bytes written.
func copyRange(ctx context.Context, in io.ReaderAt, out io.WriterAt, start, end int64, buf []byte) (int64, error) {
	var written int64
	zero := make([]byte, copyBlock)
	for off := start; off < end; {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		n := int64(len(buf))
		if end-off < n {
			n = end - off
		}
		if _, err := in.ReadAt(buf[:n], off); err != nil {
			return written, err
		}
		// Write each run of blocks that are not all zero.
		chunk := buf[:n]
		for i := 0; i < len(chunk); {
			j := min(i+copyBlock-int((off+int64(i))%copyBlock), len(chunk))
			if bytes.Equal(chunk[i:j], zero[:j-i]) {
				i = j
				continue
			}
			k := j
			for k < len(chunk) {
				l := min(k+copyBlock, len(chunk))
				if bytes.Equal(chunk[k:l], zero[:l-k]) {
					break
				}
				k = l
			}
			if _, err := out.WriteAt(chunk[i:k], off+int64(i)); err != nil {
				return written, err
			}
			written += int64(k - i)
			i = k
		}
		off += n
	}
	return written, nil
}

// Grow extends the image file at path to size bytes by adding a hole at its
// end, and fsyncs it: how an instance's disk gets bigger than the image it
// was copied from. Only the file grows: the ext4 filesystem inside keeps its
// size, and resizing it (resize2fs, or growing it from the guest) is out of
// scope here. size must be a multiple of 512 and not smaller than the file;
// growing a file to its own size does nothing.
func Grow(path string, size api.Bytes) error {
	if size%512 != 0 {
		return fmt.Errorf("grow %s: size %d is not a multiple of 512", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("grow image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("grow image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("grow %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	switch cur := fi.Size(); {
	case int64(size) == cur:
		return nil
	case int64(size) < cur:
		return fmt.Errorf("grow %s: new size %d is smaller than the file (%d bytes); shrinking would destroy data", path, size, cur)
	}
	if err := f.Truncate(int64(size)); err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	return f.Close()
}
