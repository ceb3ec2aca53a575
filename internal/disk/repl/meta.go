package repl

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Meta is the replication state of one disk, persisted next to its image
// (see [MetaPath]) so that it survives agent crashes and restarts. It is
// DRBD's generation-identifier scheme, simplified:
//
//   - Current identifies the data. Two disks with the same Current hold the
//     same data. A primary draws a new Current whenever it starts writing
//     without its peer (going degraded), pushing the old one onto History.
//   - BitmapGen, when non-zero, is the generation the peer was last known
//     to hold: the dirty bitmap then records every region written since.
//     A peer still at BitmapGen needs only the dirty regions.
//   - A peer whose Current is in History but is not BitmapGen needs a full
//     sync; a peer whose History contains our Current is ahead of us; any
//     other pair of generations has diverged.
type Meta struct {
	DiskID string `json:"disk_id"`
	// Epoch is the highest epoch this disk has seen on a link or been
	// given by the control plane.
	Epoch uint64 `json:"epoch"`
	// LinkEpoch is the highest epoch under which this disk was connected
	// to a peer. A primary may go degraded only with a higher epoch than
	// this: the control plane must have bumped it after the link broke.
	LinkEpoch uint64   `json:"link_epoch,omitempty"`
	Current   uint64   `json:"current"`
	History   []uint64 `json:"history,omitempty"`
	BitmapGen uint64   `json:"bitmap_gen,omitempty"`
	// Inconsistent is set while a resync into this disk is incomplete: the
	// disk then holds a mix of old and new data and must not be promoted.
	Inconsistent bool `json:"inconsistent,omitempty"`
	// PrimaryUnclean is set while a Primary has the disk open. If it is
	// still set at the next open, the primary died with writes in flight
	// that its peer may not have (or the reverse), so the next connection
	// does a full sync instead of trusting the generation IDs.
	PrimaryUnclean bool `json:"primary_unclean,omitempty"`
}

// MetaPath returns where the metadata of the image at diskPath lives.
func MetaPath(diskPath string) string { return diskPath + ".replmeta" }

// BitmapPath returns where the dirty bitmap of the image at diskPath lives.
func BitmapPath(diskPath string) string { return diskPath + ".replbitmap" }

// SeedCopyMeta writes, at metaPath, the metadata of a copy primary: a
// second Primary, stacked as the Backend of the one that serves the disk,
// that gives a new host a full copy while the disk stays in use (to move
// the disk there). It carries m's generation identifiers (m is the
// serving primary's Meta), so the new host, once synced, holds the same
// generation as the existing replica: either can then link to the other
// as its peer with no resync. Nothing else of m is kept: the copy primary
// was never linked, owes no one a resync, and is clean. A bitmap left at
// bitmapPath by an earlier copy is removed.
func SeedCopyMeta(metaPath, bitmapPath string, m Meta) error {
	if m.DiskID == "" || m.Current == 0 {
		return fmt.Errorf("repl: seed copy metadata: the disk's metadata has no identity yet (disk %q, generation %x)", m.DiskID, m.Current)
	}
	if err := os.Remove(bitmapPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("repl: seed copy metadata: %w", err)
	}
	seed := Meta{DiskID: m.DiskID, Epoch: m.Epoch, Current: m.Current, History: append([]uint64(nil), m.History...)}
	return writeFileAtomic(metaPath, &seed)
}

// metaStore guards a Meta and writes it atomically on every change.
type metaStore struct {
	path string
	mu   sync.Mutex
	m    Meta
}

// openMeta loads the metadata at path, or starts an empty one for diskID if
// the file does not exist. An existing file for another disk is an error:
// mixing up metadata would defeat divergence detection.
func openMeta(path, diskID string) (*metaStore, error) {
	s := &metaStore{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.m = Meta{DiskID: diskID}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("repl: read metadata: %w", err)
	}
	if err := json.Unmarshal(b, &s.m); err != nil {
		return nil, fmt.Errorf("repl: parse metadata %s: %w", path, err)
	}
	if s.m.DiskID != diskID {
		return nil, fmt.Errorf("repl: metadata %s is for disk %q, not %q", path, s.m.DiskID, diskID)
	}
	return s, nil
}

// get returns a copy of the metadata.
func (s *metaStore) get() Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m
	m.History = append([]uint64(nil), s.m.History...)
	return m
}

// update applies fn to a copy and persists it; the change is visible only
// once it is durable, so nothing acts on state a crash would forget.
func (s *metaStore) update(fn func(m *Meta)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m
	m.History = append([]uint64(nil), s.m.History...)
	fn(&m)
	if len(m.History) > maxHistory {
		m.History = m.History[:maxHistory]
	}
	if err := writeFileAtomic(s.path, &m); err != nil {
		return err
	}
	s.m = m
	return nil
}

// writeFileAtomic writes m to path through a temporary file, fsync and
// rename, then fsyncs the directory, so a crash leaves the old or the new
// file, never a torn one.
func writeFileAtomic(path string, m *Meta) (err error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("repl: encode metadata: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("repl: write metadata: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("repl: write metadata: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("repl: sync metadata: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("repl: close metadata: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("repl: rename metadata: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so that a rename or create in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("repl: open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("repl: sync directory %s: %w", dir, err)
	}
	return nil
}

// newGen draws a random, non-zero generation ID. Random IDs need no
// coordination between hosts and collide with negligible probability.
func newGen() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		if g := binary.BigEndian.Uint64(b[:]); g != 0 {
			return g
		}
	}
}

func contains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
