package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
)

// zeroChunk is the largest buffer of zeroes written at once when a range
// has to be zeroed with plain writes.
const zeroChunk = 1 << 20

// errUnsupported reports that the kernel or file system cannot do an
// operation, so the caller falls back to a slower one.
var errUnsupported = errors.New("nbd: operation not supported")

// FileBackend is a [Backend] over a raw image file, usually sparse, or a
// block device. Reads and writes are pread(2) and pwrite(2); Flush is
// fdatasync(2); a FUA write is pwritev2(2) with RWF_DSYNC; Trim punches a
// hole (fallocate(2) FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE); WriteZeroes
// punches a hole when it may, or uses FALLOC_FL_ZERO_RANGE, and writes
// zeroes where the file system supports neither. It implements [Trimmer],
// [ZeroWriter], [FUAWriter] and [MultiConnBackend] (every connection shares
// one file and the kernel's page cache, so multi-conn is safe).
//
// The file must not be resized while the backend is in use. A FileBackend
// is safe for concurrent use.
type FileBackend struct {
	f    *os.File
	rc   syscall.RawConn
	size int64

	// Each is set once the file system has said it cannot do that
	// operation, so later calls go straight to the fallback.
	noPunch     atomic.Bool
	noZeroRange atomic.Bool
	noDSync     atomic.Bool
}

// OpenFileBackend opens the image file or block device at path, read-write
// or read-only, and returns a FileBackend over it. Close closes the file.
func OpenFileBackend(path string, readOnly bool) (*FileBackend, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("nbd: open backend: %w", err)
	}
	b, err := NewFileBackend(f)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return b, nil
}

// NewFileBackend returns a FileBackend over f, a regular file or a block
// device, whose current size becomes the size of the export. The
// FileBackend owns f from then on: Close closes it.
func NewFileBackend(f *os.File) (*FileBackend, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("nbd: backend: %w", err)
	}
	var size int64
	switch {
	case fi.Mode().IsRegular():
		size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("nbd: backend %s: size of block device: %w", f.Name(), err)
		}
	default:
		return nil, fmt.Errorf("nbd: backend %s: not a regular file or block device (mode %v)", f.Name(), fi.Mode())
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("nbd: backend %s: %w", f.Name(), err)
	}
	return &FileBackend{f: f, rc: rc, size: size}, nil
}

// ReadAt reads len(p) bytes at off with pread(2). It follows
// [io.ReaderAt].
func (b *FileBackend) ReadAt(p []byte, off int64) (int, error) {
	return b.f.ReadAt(p, off)
}

// WriteAt writes p at off with pwrite(2). It follows [io.WriterAt].
func (b *FileBackend) WriteAt(p []byte, off int64) (int, error) {
	return b.f.WriteAt(p, off)
}

// WriteAtFUA writes p at off and makes it durable before returning, with
// one pwritev2(2) call with RWF_DSYNC where the kernel supports it, or
// WriteAt followed by Flush where not.
func (b *FileBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	if !b.noDSync.Load() {
		n, err := pwriteDSync(b.rc, p, off)
		if !errors.Is(err, errUnsupported) {
			if err != nil {
				err = &os.PathError{Op: "pwritev2", Path: b.f.Name(), Err: err}
			}
			return n, err
		}
		b.noDSync.Store(true)
	}
	n, err := b.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, b.Flush()
}

// Size returns the size of the file when the backend was created.
func (b *FileBackend) Size() int64 { return b.size }

// Flush makes every completed write durable with fdatasync(2).
func (b *FileBackend) Flush() error {
	if err := fdatasync(b.f, b.rc); err != nil {
		return &os.PathError{Op: "fdatasync", Path: b.f.Name(), Err: err}
	}
	return nil
}

// Trim punches a hole over the range, so it reads as zeroes and takes no
// space. Trim is a hint: where the file system cannot punch holes it does
// nothing and returns nil.
func (b *FileBackend) Trim(off, length int64) error {
	if length == 0 || b.noPunch.Load() {
		return nil
	}
	err := punchHole(b.rc, off, length)
	if errors.Is(err, errUnsupported) {
		b.noPunch.Store(true)
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "fallocate punch hole", Path: b.f.Name(), Err: err}
	}
	return nil
}

// WriteZeroes makes the range read as zeroes: it punches a hole if mayTrim
// is true, else it asks the file system to zero the range in place
// (FALLOC_FL_ZERO_RANGE, which keeps it allocated), and it writes zeroes
// where neither works.
func (b *FileBackend) WriteZeroes(off, length int64, mayTrim bool) error {
	if length == 0 {
		return nil
	}
	if mayTrim && !b.noPunch.Load() {
		err := punchHole(b.rc, off, length)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errUnsupported) {
			return &os.PathError{Op: "fallocate punch hole", Path: b.f.Name(), Err: err}
		}
		b.noPunch.Store(true)
	}
	if !b.noZeroRange.Load() {
		err := zeroRange(b.rc, off, length)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errUnsupported) {
			return &os.PathError{Op: "fallocate zero range", Path: b.f.Name(), Err: err}
		}
		b.noZeroRange.Store(true)
	}
	return writeZeroes(b, off, length)
}

// CanMultiConn returns true: all connections share one file and the page
// cache, and fdatasync covers writes from all of them.
func (b *FileBackend) CanMultiConn() bool { return true }

// Close closes the file. The backend must not be used afterwards.
func (b *FileBackend) Close() error { return b.f.Close() }

// writeZeroes zeroes a range of w with plain writes of at most zeroChunk.
func writeZeroes(w io.WriterAt, off, length int64) error {
	buf := make([]byte, min(length, zeroChunk))
	for length > 0 {
		n := min(length, int64(len(buf)))
		if _, err := w.WriteAt(buf[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}
