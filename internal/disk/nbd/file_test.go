package nbd

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// newImage creates a sparse file of size bytes and returns its path.
func newImage(t testing.TB, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// allocated returns the bytes of disk the file at path uses.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no st_blocks on this platform")
	}
	return st.Blocks * 512
}

func openImage(t *testing.T, size int64) (*FileBackend, string) {
	t.Helper()
	path := newImage(t, size)
	b, err := OpenFileBackend(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, path
}

func TestFileBackendReadWrite(t *testing.T) {
	t.Parallel()
	b, path := openImage(t, 1<<20)
	if b.Size() != 1<<20 {
		t.Errorf("Size() = %d, want %d", b.Size(), 1<<20)
	}
	data := bytes.Repeat([]byte("ferry"), 1000)
	if n, err := b.WriteAt(data, 4096); n != len(data) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if n, err := b.WriteAtFUA(data[:512], 65536); n != 512 || err != nil {
		t.Fatalf("WriteAtFUA = %d, %v", n, err)
	}
	if err := b.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got := make([]byte, len(data))
	if n, err := b.ReadAt(got, 4096); n != len(got) || err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadAt = %d, %v; data equal %v", n, err, bytes.Equal(got, data))
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk[65536:65536+512], data[:512]) {
		t.Errorf("the FUA write is not in the file")
	}
	// Reading past the end is an error, as for any io.ReaderAt.
	if n, err := b.ReadAt(make([]byte, 10), 1<<20-5); n != 5 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt across the end = %d, %v; want 5, EOF", n, err)
	}
}

func TestFileBackendTrimAndZero(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	ones := bytes.Repeat([]byte{0xff}, size)
	tests := []struct {
		name string
		// prepare sets up the backend (for instance, forces a fallback).
		prepare   func(b *FileBackend)
		op        func(b *FileBackend) error
		wantHole  bool // the range must be deallocated
		wantAlloc bool // the range must stay allocated
	}{
		{name: "trim", op: func(b *FileBackend) error { return b.Trim(1<<20, 2<<20) }, wantHole: true},
		{name: "write zeroes may trim", op: func(b *FileBackend) error { return b.WriteZeroes(1<<20, 2<<20, true) }, wantHole: true},
		{name: "write zeroes no hole", op: func(b *FileBackend) error { return b.WriteZeroes(1<<20, 2<<20, false) }, wantAlloc: true},
		{name: "write zeroes without punch", prepare: func(b *FileBackend) { b.noPunch.Store(true) },
			op: func(b *FileBackend) error { return b.WriteZeroes(1<<20, 2<<20, true) }, wantAlloc: true},
		{name: "write zeroes with plain writes", prepare: func(b *FileBackend) { b.noPunch.Store(true); b.noZeroRange.Store(true) },
			op: func(b *FileBackend) error { return b.WriteZeroes(1<<20, 2<<20, true) }, wantAlloc: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, path := openImage(t, size)
			if _, err := b.WriteAt(ones, 0); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(); err != nil {
				t.Fatal(err)
			}
			before := allocated(t, path)
			if tc.prepare != nil {
				tc.prepare(b)
			}
			if err := tc.op(b); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			got := make([]byte, size)
			if _, err := b.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(ones)
			clear(want[1<<20 : 3<<20])
			if !bytes.Equal(got, want) {
				t.Errorf("%s: contents are wrong (only [1 MiB, 3 MiB) must read as zeroes)", tc.name)
			}
			after := allocated(t, path)
			if tc.wantHole && !b.noPunch.Load() && after > before-(2<<20) {
				t.Errorf("%s: allocation went from %d to %d bytes, want a 2 MiB hole", tc.name, before, after)
			}
			if tc.wantAlloc && after < before {
				t.Errorf("%s: allocation went from %d to %d bytes, want no hole (NO_HOLE)", tc.name, before, after)
			}
		})
	}
}

func TestFileBackendZeroLength(t *testing.T) {
	t.Parallel()
	b, _ := openImage(t, 4096)
	if err := b.Trim(0, 0); err != nil {
		t.Errorf("Trim(0, 0) = %v", err)
	}
	if err := b.WriteZeroes(0, 0, false); err != nil {
		t.Errorf("WriteZeroes(0, 0) = %v", err)
	}
}

func TestFileBackendFUAFallback(t *testing.T) {
	t.Parallel()
	b, _ := openImage(t, 4096)
	b.noDSync.Store(true)
	if n, err := b.WriteAtFUA([]byte("abc"), 10); n != 3 || err != nil {
		t.Fatalf("WriteAtFUA = %d, %v", n, err)
	}
	got := make([]byte, 3)
	if _, err := b.ReadAt(got, 10); err != nil || string(got) != "abc" {
		t.Errorf("ReadAt = %q, %v", got, err)
	}
}

func TestFileBackendReadOnly(t *testing.T) {
	t.Parallel()
	path := newImage(t, 4096)
	b, err := OpenFileBackend(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteAt([]byte("x"), 0); err == nil {
		t.Errorf("WriteAt on a read-only backend succeeded")
	}
	if _, err := b.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Errorf("ReadAt: %v", err)
	}
}

func TestFileBackendOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := OpenFileBackend(filepath.Join(dir, "missing.img"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFileBackend(missing) = %v, want ErrNotExist", err)
	}
	if _, err := OpenFileBackend(dir, true); err == nil {
		t.Errorf("OpenFileBackend(directory) succeeded")
	}
	if _, err := OpenFileBackend("/dev/null", true); err == nil {
		t.Errorf("OpenFileBackend(/dev/null) succeeded; a character device is not a disk")
	}
}

// TestFileBackendServed runs the commands through the server against a
// file.
func TestFileBackendServed(t *testing.T) {
	t.Parallel()
	b, path := openImage(t, 1<<20)
	s := startServer(t, Config{Exports: map[string]Export{"disk": {Backend: b}}, MinBlock: 512})
	c := dialClient(t, s.dial, "disk")
	data := bytes.Repeat([]byte{0xab}, 64<<10)
	for _, r := range []reply{
		c.write(0, data, 0),
		c.write(64<<10, data, cmdFlagFUA),
		c.do(cmdTrim, 0, 4096, 4096, nil),
		c.do(cmdWriteZeroes, cmdFlagNoHole, 8192, 4096, nil),
		c.do(cmdWriteZeroes, cmdFlagFUA, 12288, 4096, nil),
		c.flush(),
	} {
		if r.err != nil || r.errno != 0 {
			t.Fatalf("request failed: %+v", r)
		}
	}
	want := bytes.Repeat([]byte{0xab}, 128<<10)
	clear(want[4096 : 4*4096])
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk[:128<<10], want) {
		t.Errorf("file contents after the requests are wrong")
	}
	if r := c.read(0, 128<<10); !bytes.Equal(r.data, want) {
		t.Errorf("read back through NBD is wrong")
	}
}
