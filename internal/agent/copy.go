package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/disk/nbd"
	"github.com/ferrycluster/ferry/internal/disk/repl"
)

// Moving a disk to a host that holds no copy of it (a migration with
// Copy set). The source stacks a second repl.Primary, the copy primary,
// under the one that serves the disk: every guest write goes to the local
// file, the replica host and the target, and the copy primary fills the
// target in the background (holes skipped) while the guest runs. Its
// metadata starts as the serving primary's generation (repl.SeedCopyMeta),
// so once in sync the target holds the same generation as the replica
// host: at the switch the target becomes the primary and links to the
// unchanged replica with no resync, and the source's copy is dropped. The
// downtime of the switch is that of a move to the replica host, whatever
// the disk's size.

// switchBackend is the serving primary's local disk: the file, or the copy
// primary over it while a copy runs. Requests in flight finish before the
// backend changes (the write lock), so none is lost between the two.
type switchBackend struct {
	mu  sync.RWMutex
	cur nbd.Backend
}

func (s *switchBackend) get() (nbd.Backend, func()) {
	s.mu.RLock()
	return s.cur, s.mu.RUnlock
}

// swap runs fn with no request in flight; if fn returns a backend, it
// serves from then on.
func (s *switchBackend) swap(fn func(cur nbd.Backend) (nbd.Backend, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := fn(s.cur)
	if err == nil && next != nil {
		s.cur = next
	}
	return err
}

func (s *switchBackend) ReadAt(b []byte, off int64) (int, error) {
	be, done := s.get()
	defer done()
	return be.ReadAt(b, off)
}

func (s *switchBackend) WriteAt(b []byte, off int64) (int, error) {
	be, done := s.get()
	defer done()
	return be.WriteAt(b, off)
}

func (s *switchBackend) WriteAtFUA(b []byte, off int64) (int, error) {
	be, done := s.get()
	defer done()
	return nbd.WriteAtFUA(be, b, off)
}

func (s *switchBackend) Size() int64 {
	be, done := s.get()
	defer done()
	return be.Size()
}

func (s *switchBackend) Flush() error {
	be, done := s.get()
	defer done()
	return be.Flush()
}

func (s *switchBackend) Trim(off, length int64) error {
	be, done := s.get()
	defer done()
	return nbd.Trim(be, off, length)
}

func (s *switchBackend) WriteZeroes(off, length int64, mayTrim bool) error {
	be, done := s.get()
	defer done()
	return nbd.WriteZeroes(be, off, length, mayTrim)
}

// CanMultiConn answers for the file: the copy primary adds no restriction
// (a write returns only once every disk has it).
func (s *switchBackend) CanMultiConn() bool {
	be, done := s.get()
	defer done()
	m, ok := be.(nbd.MultiConnBackend)
	return ok && m.CanMultiConn()
}

// diskCopy is a copy of the disk running towards a migration's target.
type diskCopy struct {
	op     string // the migration's operation
	target string
	prim   *repl.Primary
	lost   chan struct{} // closed when the link to the target broke
	once   sync.Once
}

// copyMetaPath and copyBitmapPath are the copy primary's state files, next
// to the serving primary's.
func copyMetaPath(disk string) string   { return disk + ".copy.replmeta" }
func copyBitmapPath(disk string) string { return disk + ".copy.replbitmap" }

// startCopy links a copy primary to the migration's target and slides it
// under the serving primary. The target's agent must hold an empty replica
// for it already (the assignment tells it to); until it does, the dial is
// refused and the caller retries.
func (d *replDisk) startCopy(ctx context.Context, m *api.MigrationStatus, diskID string) error {
	d.mu.Lock()
	busy := d.cp != nil
	d.mu.Unlock()
	if busy {
		return nil
	}
	if m.TargetAddress == "" {
		return fmt.Errorf("the target %s has no known address", m.Target)
	}
	conn, err := d.dial(ctx, api.Peer{Node: m.Target, Address: m.TargetAddress})
	if err != nil {
		return err
	}
	mp, bp := copyMetaPath(d.path), copyBitmapPath(d.path)
	if err := repl.SeedCopyMeta(mp, bp, d.prim.Meta()); err != nil {
		conn.Close()
		return err
	}
	c := &diskCopy{op: m.Operation, target: m.Target, lost: make(chan struct{})}
	prim, err := repl.NewPrimary(repl.Config{
		DiskID: diskID, DiskPath: d.path, Backend: d.be, MetaPath: mp, BitmapPath: bp,
		Epoch: d.prim.Status().Epoch,
		// The target holds no copy anyone relies on yet: losing it must
		// not hold the guest's writes. The copy goes on alone (its state
		// is private and dropped) and the migration fails.
		OnPeerLost: func(context.Context) repl.Decision {
			c.once.Do(func() { close(c.lost) })
			m := c.prim.Meta()
			return repl.Decision{PeerOutdated: true, Epoch: max(m.Epoch, m.LinkEpoch) + 1}
		},
	})
	if err != nil {
		conn.Close()
		return err
	}
	c.prim = prim
	err = d.sw.swap(func(nbd.Backend) (nbd.Backend, error) {
		if err := prim.Connect(ctx, conn); err != nil {
			return nil, err
		}
		return prim, nil
	})
	if err != nil {
		prim.Close()
		os.Remove(mp)
		os.Remove(bp)
		return fmt.Errorf("link the copy to %s: %w", m.Target, err)
	}
	d.mu.Lock()
	d.cp = c
	d.mu.Unlock()
	d.log.Info("copying the disk to the migration's target", "target", m.Target, "operation", m.Operation)
	return nil
}

// copyState returns the copy in flight, if any.
func (d *replDisk) copyState() *diskCopy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cp
}

// dropCopy takes the copy primary out from under the serving primary and
// closes it; the target's partial copy is its agent's to remove.
func (d *replDisk) dropCopy() error {
	d.mu.Lock()
	c := d.cp
	d.cp = nil
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	err := d.sw.swap(func(nbd.Backend) (nbd.Backend, error) { return d.be, nil })
	err = errors.Join(err, c.prim.Close())
	for _, p := range []string{copyMetaPath(d.path), copyBitmapPath(d.path)} {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	d.log.Info("disk copy stopped", "target", c.target)
	return err
}

// copyReady says whether the copy may take part in the switch: linked, in
// sync, and in the serving primary's generation (a copy that went on
// alone, or a serving primary that did, breaks the equality).
func (d *replDisk) copyReady() error {
	c := d.copyState()
	if c == nil {
		return errors.New("no copy of the disk is running to the target")
	}
	if st := c.prim.Status(); st.State != repl.StateUpToDate {
		return fmt.Errorf("the copy on %s is %s: %s", c.target, st.State, st.Reason)
	}
	if a, b := c.prim.Meta().Current, d.prim.Meta().Current; a != b {
		return fmt.Errorf("the copy on %s is of generation %x, the disk %x: a side wrote alone meanwhile", c.target, a, b)
	}
	return nil
}

// copyOut runs the copy phase of a migration on its source: start the
// copy, report its progress, and "copied" once the target is in sync. It
// returns when to look again.
func (w *worker) copyOut(ctx context.Context, gen uint64, inst *api.Instance, m *api.MigrationStatus) time.Duration {
	fail := func(err error) time.Duration {
		if d := w.a.disk(w.name); d != nil {
			if derr := d.dropCopy(); derr != nil {
				w.log.Warn("stopping the disk copy", "err", derr)
			}
		}
		return w.migrationFailed(ctx, gen, m, "disk copy for the migration failed; the vm runs on here", err)
	}
	d := w.a.disk(w.name)
	if d == nil || d.prim == nil {
		return fail(errors.New("the disk is not open here as primary"))
	}
	c := d.copyState()
	if c != nil && c.op != m.Operation {
		if err := d.dropCopy(); err != nil {
			w.log.Warn("stopping an old disk copy", "err", err)
		}
		c = nil
	}
	if c == nil {
		if err := d.startCopy(ctx, m, diskID(inst)); err != nil {
			if ctx.Err() != nil {
				return 0
			}
			// Most often the target has not set up its side yet.
			w.log.Info("cannot start the disk copy yet; retrying", "target", m.Target, "err", err)
			return time.Second
		}
		c = d.copyState()
	}
	select {
	case <-c.lost:
		return fail(fmt.Errorf("lost the link to %s during the disk copy", m.Target))
	default:
	}
	pr := c.prim.Progress()
	r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportCopying,
		CopyTotal: pr.TotalBytes, CopyDone: min(pr.DoneBytes, pr.TotalBytes), CopySent: pr.SentBytes}
	if d.copyReady() == nil && pr.Done {
		r.Phase = api.MigReportCopied
		r.Message = fmt.Sprintf("%s copied to %s: %s sent", api.Bytes(pr.TotalBytes).Human(), m.Target, api.Bytes(pr.SentBytes).Human())
	}
	if err := w.reportMigration(ctx, gen, r); err != nil {
		if errors.Is(err, errMigrationGone) || ctx.Err() != nil {
			return 0
		}
		return w.failed("report migration", err)
	}
	if r.Phase == api.MigReportCopied {
		w.log.Info("disk copied to the migration's target", "target", m.Target, "sent", pr.SentBytes)
		w.migDone = migDoneCopied
		return 0
	}
	return time.Second
}
