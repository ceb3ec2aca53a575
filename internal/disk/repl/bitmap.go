package repl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// DefaultRegionSize is the disk area one bitmap bit covers. 64 KiB keeps
// the bitmap of a 1 TiB disk at 2 MiB while resending at most 64 KiB for a
// 4 KiB write.
const DefaultRegionSize = 64 << 10

const (
	bitmapMagic      = "FRYBMAP1"
	bitmapHeaderSize = 32
)

// Bitmap is a persistent dirty bitmap: one bit per region of a disk, set
// when the region was written without the peer getting it. It lives in its
// own file (see [BitmapPath]) and is updated and fsync'ed before a write to
// a newly dirtied region is acknowledged, so that after any crash every
// region the peer may lack is still marked. Marking a region that is
// already durably dirty costs no I/O.
//
// Clearing is not fsync'ed: a bit that comes back after a crash only makes
// resync send a region again.
//
// A Bitmap is safe for concurrent use. The caller must not clear a region
// while a write to it is between Mark and its completion; the Primary
// guarantees this with region locks.
type Bitmap struct {
	f          *os.File
	size       int64
	regionSize int64
	n          int // number of regions

	// durable has a bit set for each region whose dirty bit is known to be
	// on disk: Mark's fast path reads it without locking.
	durable []atomic.Uint64

	mu    sync.Mutex
	bits  []byte // the file's bit array, guarded by mu
	count int    // number of set bits, guarded by mu
	// err is sticky: after a failed write or sync the in-memory bits may
	// be ahead of the file, so no later Mark may trust them.
	err error
}

// OpenBitmap opens the bitmap file at path for a disk of size bytes, or
// creates an all-clean one. An existing file made for another size or
// region size is an error rather than silently reinterpreted.
func OpenBitmap(path string, size, regionSize int64) (*Bitmap, error) {
	if regionSize <= 0 || regionSize&(regionSize-1) != 0 || size < 0 {
		return nil, fmt.Errorf("repl: bitmap: bad region size %d or disk size %d", regionSize, size)
	}
	n := int((size + regionSize - 1) / regionSize)
	nbytes := (n + 7) / 8
	b := &Bitmap{size: size, regionSize: regionSize, n: n, bits: make([]byte, nbytes),
		durable: make([]atomic.Uint64, (n+63)/64)}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return createBitmap(path, b)
	}
	if err != nil {
		return nil, fmt.Errorf("repl: open bitmap: %w", err)
	}
	b.f = f
	hdr := make([]byte, bitmapHeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("repl: read bitmap header %s: %w", path, err)
	}
	if !bytes.Equal(hdr[:8], []byte(bitmapMagic)) ||
		int64(binary.BigEndian.Uint64(hdr[8:])) != size ||
		int64(binary.BigEndian.Uint64(hdr[16:])) != regionSize {
		f.Close()
		return nil, fmt.Errorf("repl: bitmap %s was made for another disk size or region size", path)
	}
	if _, err := f.ReadAt(b.bits, bitmapHeaderSize); err != nil && nbytes > 0 {
		f.Close()
		return nil, fmt.Errorf("repl: read bitmap %s: %w", path, err)
	}
	for i := 0; i < n; i++ {
		if b.bits[i/8]&(1<<(i%8)) != 0 {
			b.count++
			b.durable[i/64].Or(1 << (i % 64))
		}
	}
	return b, nil
}

func createBitmap(path string, b *Bitmap) (*Bitmap, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("repl: create bitmap: %w", err)
	}
	hdr := make([]byte, bitmapHeaderSize)
	copy(hdr, bitmapMagic)
	binary.BigEndian.PutUint64(hdr[8:], uint64(b.size))
	binary.BigEndian.PutUint64(hdr[16:], uint64(b.regionSize))
	_, err = f.Write(append(hdr, b.bits...))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("repl: create bitmap %s: %w", path, err)
	}
	b.f = f
	return b, nil
}

// RegionSize returns the number of disk bytes one bit covers.
func (b *Bitmap) RegionSize() int64 { return b.regionSize }

// Regions returns the number of regions (bits).
func (b *Bitmap) Regions() int { return b.n }

// regionRange returns the first and last region touched by [off, off+length).
func (b *Bitmap) regionRange(off, length int64) (int, int) {
	if length <= 0 {
		length = 1
	}
	first := int(off / b.regionSize)
	last := int((off + length - 1) / b.regionSize)
	return first, min(last, b.n-1)
}

// Mark marks every region touched by [off, off+length) dirty and returns
// once the marks are durable. It returns at once, without I/O, when all of
// them already were.
func (b *Bitmap) Mark(off, length int64) error {
	first, last := b.regionRange(off, length)
	if b.allDurable(first, last) {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	changed := false
	for i := first; i <= last; i++ {
		if b.bits[i/8]&(1<<(i%8)) == 0 {
			b.bits[i/8] |= 1 << (i % 8)
			b.count++
			changed = true
		}
	}
	// Bits already set were set and synced under mu by an earlier caller
	// (or loaded from the file), so only new bits need I/O.
	if changed {
		// Writing under mu keeps the file equal to the in-memory bytes
		// even when neighbouring bits change concurrently.
		lo, hi := first/8, last/8+1
		if _, err := b.f.WriteAt(b.bits[lo:hi], bitmapHeaderSize+int64(lo)); err != nil {
			b.err = fmt.Errorf("repl: write bitmap: %w", err)
			return b.err
		}
		if err := b.f.Sync(); err != nil {
			b.err = fmt.Errorf("repl: sync bitmap: %w", err)
			return b.err
		}
	}
	for i := first; i <= last; i++ {
		b.durable[i/64].Or(1 << (i % 64))
	}
	return nil
}

func (b *Bitmap) allDurable(first, last int) bool {
	for i := first; i <= last; i++ {
		if b.durable[i/64].Load()&(1<<(i%64)) == 0 {
			return false
		}
	}
	return true
}

// MarkAll marks every region dirty, durably: the start of a full sync.
func (b *Bitmap) MarkAll() error {
	if b.n == 0 {
		return nil
	}
	return b.Mark(0, b.size)
}

// IsDirty reports whether region i is dirty.
func (b *Bitmap) IsDirty(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return i >= 0 && i < b.n && b.bits[i/8]&(1<<(i%8)) != 0
}

// Clear marks region i clean. The change reaches the file but is not
// fsync'ed (see the type's comment).
func (b *Bitmap) Clear(i int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i < 0 || i >= b.n || b.bits[i/8]&(1<<(i%8)) == 0 {
		return nil
	}
	b.bits[i/8] &^= 1 << (i % 8)
	b.count--
	b.durable[i/64].And(^uint64(1 << (i % 64)))
	if _, err := b.f.WriteAt(b.bits[i/8:i/8+1], bitmapHeaderSize+int64(i/8)); err != nil {
		return fmt.Errorf("repl: write bitmap: %w", err)
	}
	return nil
}

// ClearAll marks every region clean and syncs the file.
func (b *Bitmap) ClearAll() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.bits)
	b.count = 0
	for i := range b.durable {
		b.durable[i].Store(0)
	}
	if _, err := b.f.WriteAt(b.bits, bitmapHeaderSize); err != nil {
		return fmt.Errorf("repl: write bitmap: %w", err)
	}
	if err := b.f.Sync(); err != nil {
		return fmt.Errorf("repl: sync bitmap: %w", err)
	}
	return nil
}

// NextDirty returns the first dirty region at or after from, or -1.
func (b *Bitmap) NextDirty(from int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := max(from, 0); i < b.n; {
		if i%8 == 0 && b.bits[i/8] == 0 {
			i += 8
			continue
		}
		if i%8 == 0 {
			return i + bits.TrailingZeros8(b.bits[i/8])
		}
		if b.bits[i/8]&(1<<(i%8)) != 0 {
			return i
		}
		i++
	}
	return -1
}

// Count returns the number of dirty regions.
func (b *Bitmap) Count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}

// DirtyBytes returns how many disk bytes the dirty regions cover.
func (b *Bitmap) DirtyBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := int64(b.count) * b.regionSize
	// The last region may be short.
	if last := b.n - 1; last >= 0 && b.bits[last/8]&(1<<(last%8)) != 0 {
		n -= int64(b.n)*b.regionSize - b.size
	}
	return n
}

// Close closes the bitmap file.
func (b *Bitmap) Close() error { return b.f.Close() }
