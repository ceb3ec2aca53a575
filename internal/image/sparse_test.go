package image

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

// allocated returns the bytes the filesystem allocated for path.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// chunk is data to write at an offset.
type chunk struct {
	off  int64
	data []byte
}

// writeSparse creates path of the given size with the chunks written in
// order; the rest is holes.
func writeSparse(t *testing.T, path string, size int64, chunks []chunk) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if _, err := f.WriteAt(c.data, c.off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSparseCopy(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	fill := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	tests := []struct {
		name   string
		size   int64
		chunks []chunk
		// wantCopied is the number of non-zero bytes, rounded to 4 KiB blocks.
		wantCopied int64
	}{
		{name: "empty", size: 0},
		{name: "all hole", size: 16 * mib},
		{
			name: "holes between data",
			size: 16 * mib,
			chunks: []chunk{
				{0, fill(4096, 'a')},
				{3 * mib, fill(mib, 'b')},
				{9*mib + 100, []byte("unaligned")},
				{16*mib - 4096, fill(4096, 'z')},
				{12 * mib, make([]byte, 2*mib)}, // written zeros: data to the fs, skipped
				{12*mib + 300000, []byte("x")},  // one non-zero block inside them
			},
			wantCopied: 4096 + mib + 4096 + 4096 + 4096,
		},
		{name: "dense", size: 2 * mib, chunks: []chunk{{0, fill(2*mib, 'd')}}, wantCopied: 2 * mib},
		{name: "odd size tail", size: mib + 123, chunks: []chunk{{mib, fill(123, 't')}}, wantCopied: 123},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			writeSparse(t, src, tc.size, tc.chunks)
			copied, err := SparseCopy(context.Background(), src, dst)
			if err != nil {
				t.Fatalf("SparseCopy: %v", err)
			}
			if copied != tc.wantCopied {
				t.Errorf("SparseCopy copied %d bytes, want %d", copied, tc.wantCopied)
			}
			a, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("dst differs from src (sizes %d, %d)", len(b), len(a))
			}
			// dst allocates no more than src, give or take a block or two of
			// filesystem metadata.
			if as, ad := allocated(t, src), allocated(t, dst); ad > as+8192 {
				t.Errorf("dst allocates %d bytes, src %d", ad, as)
			} else {
				t.Logf("allocated: src %d, dst %d bytes (size %d)", as, ad, tc.size)
			}
		})
	}
}

func TestSparseCopyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeSparse(t, src, 8<<20, []chunk{{4 << 20, []byte("data")}})

	t.Run("dst exists", func(t *testing.T) {
		dst := filepath.Join(dir, "exists")
		if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := SparseCopy(context.Background(), src, dst); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("SparseCopy onto an existing file: error = %v, want ErrExist", err)
		}
		if b, _ := os.ReadFile(dst); string(b) != "keep me" {
			t.Errorf("existing dst was changed to %q", b)
		}
	})
	t.Run("missing src", func(t *testing.T) {
		if _, err := SparseCopy(context.Background(), filepath.Join(dir, "nope"), filepath.Join(dir, "d1")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error = %v, want ErrNotExist", err)
		}
	})
	t.Run("src is a directory", func(t *testing.T) {
		if _, err := SparseCopy(context.Background(), dir, filepath.Join(dir, "d2")); err == nil {
			t.Fatal("SparseCopy of a directory succeeded")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		dst := filepath.Join(dir, "d3")
		if _, err := SparseCopy(ctx, src, dst); !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
		if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("dst left behind after a failed copy: %v", err)
		}
	})
}

func TestGrow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "disk")
	writeSparse(t, p, 1<<20, []chunk{{0, []byte("boot")}})
	before := allocated(t, p)
	tests := []struct {
		name    string
		size    int64
		wantErr bool
		want    int64
	}{
		{name: "grow", size: 64 << 20, want: 64 << 20},
		{name: "same size", size: 64 << 20, want: 64 << 20},
		{name: "shrink", size: 1 << 20, wantErr: true, want: 64 << 20},
		{name: "not a multiple of 512", size: 65<<20 + 1, wantErr: true, want: 64 << 20},
	}
	for _, tc := range tests {
		err := Grow(p, api.Bytes(tc.size))
		if (err != nil) != tc.wantErr {
			t.Fatalf("%s: Grow(%d) error = %v, want error %v", tc.name, tc.size, err, tc.wantErr)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != tc.want {
			t.Errorf("%s: size = %d, want %d", tc.name, fi.Size(), tc.want)
		}
	}
	if after := allocated(t, p); after > before+8192 {
		t.Errorf("Grow allocated space: %d bytes before, %d after", before, after)
	}
	if b, _ := os.ReadFile(p); string(b[:4]) != "boot" {
		t.Errorf("Grow changed the data: %q", b[:4])
	}
	if err := Grow(filepath.Join(dir, "missing"), 1<<20); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Grow(missing) error = %v, want ErrNotExist", err)
	}
}
