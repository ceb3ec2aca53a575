package repl

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// swapBackend is a Backend whose target can be replaced while requests
// flow: the way a copy primary is slid under a serving one.
type swapBackend struct {
	mu  sync.RWMutex
	cur nbd.Backend
}

func (s *swapBackend) get() (nbd.Backend, func()) {
	s.mu.RLock()
	return s.cur, s.mu.RUnlock
}

func (s *swapBackend) ReadAt(b []byte, off int64) (int, error) {
	be, done := s.get()
	defer done()
	return be.ReadAt(b, off)
}

func (s *swapBackend) WriteAt(b []byte, off int64) (int, error) {
	be, done := s.get()
	defer done()
	return be.WriteAt(b, off)
}

func (s *swapBackend) Size() int64 {
	be, done := s.get()
	defer done()
	return be.Size()
}

func (s *swapBackend) Flush() error {
	be, done := s.get()
	defer done()
	return be.Flush()
}

// TestCopyPrimaryMovesDisk moves a disk in use to a third host: a copy
// primary stacked under the serving one fills the new host while writes go
// on, and afterwards the new host links to the old replica as its primary
// with no resync at all, every copy identical.
func TestCopyPrimaryMovesDisk(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	sw := &swapBackend{}
	p := newPair(t, pairOpts{size: size, wrapPrim: func(b nbd.Backend) nbd.Backend { sw.cur = b; return sw }})
	p.connectFresh()
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 20 {
		if _, err := p.prim.WriteAt(randBytes(r, 64<<10), int64(i)*(2<<20)); err != nil {
			t.Fatal(err)
		}
	}

	// The new host: an empty image and a secondary at the disk's epoch.
	dir := t.TempDir()
	tpath := newImage(t, dir, "t.img", size)
	tback := openBackend(t, tpath)
	tsec, err := NewSecondary(SecondaryConfig{DiskID: testDisk, DiskPath: tpath, Backend: tback, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tsec.Close()

	// The copy primary over the same file, with metadata of its own.
	cmeta, cbm := p.ppath+".copy.replmeta", p.ppath+".copy.replbitmap"
	if err := SeedCopyMeta(cmeta, cbm, p.prim.Meta()); err != nil {
		t.Fatal(err)
	}
	file := sw.cur
	synced := make(chan Progress, 1)
	cp, err := NewPrimary(Config{DiskID: testDisk, DiskPath: p.ppath, Backend: file, MetaPath: cmeta, BitmapPath: cbm, Epoch: 1,
		OnProgress: func(pr Progress) {
			if pr.Done {
				synced <- pr
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := tcpPair(t)
	go func() { _ = tsec.Serve(context.Background(), b) }()
	sw.mu.Lock()
	err = cp.Connect(context.Background(), a)
	if err == nil {
		sw.cur = cp
	}
	sw.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}

	// Writes go on during the copy.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		r := rand.New(rand.NewPCG(9, 10))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.prim.WriteAt(randBytes(r, 4096), int64(r.IntN(size/4096))*4096); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var pr Progress
	select {
	case pr = <-synced:
	case <-time.After(30 * time.Second):
		t.Fatalf("copy did not finish: %+v", cp.Status())
	}
	close(stop)
	wg.Wait()
	if pr.SentBytes >= size/2 {
		t.Errorf("copy sent %d bytes of a %d-byte disk with little data: holes must be skipped", pr.SentBytes, size)
	}
	if st := cp.Status(); st.State != StateUpToDate {
		t.Fatalf("copy primary %s, want UpToDate", st.State)
	}

	// The switch: the serving primary and the copy close cleanly.
	if err := p.prim.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cp.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := tsec.Meta().Current, p.sec.Meta().Current; got != want {
		t.Fatalf("new host holds generation %x, the old replica %x: they must agree", got, want)
	}
	sameContents(t, p.ppath, tpath)
	sameContents(t, p.ppath, p.spath)
	if err := tsec.Close(); err != nil {
		t.Fatal(err)
	}

	// The new host becomes the primary and links to the old replica.
	if err := p.sec.SetEpoch(2); err != nil {
		t.Fatal(err)
	}
	np, err := NewPrimary(Config{DiskID: testDisk, DiskPath: tpath, Backend: tback, Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer np.Close()
	a2, b2 := tcpPair(t)
	go func() { _ = p.sec.Serve(context.Background(), b2) }()
	if err := np.Connect(context.Background(), a2); err != nil {
		t.Fatal(err)
	}
	if st := np.Status(); st.State != StateUpToDate {
		t.Fatalf("new primary is %s (%s) right after linking to the old replica: want UpToDate, no resync", st.State, st.Reason)
	}
	if _, err := np.WriteAt([]byte("after the move"), 0); err != nil {
		t.Fatal(err)
	}
	if err := np.Flush(); err != nil {
		t.Fatal(err)
	}
	sameContents(t, tpath, p.spath)
}

func TestSeedCopyMetaRefusesUnknownDisk(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []Meta{{}, {DiskID: "d"}} {
		if err := SeedCopyMeta(filepath.Join(dir, "m"), filepath.Join(dir, "b"), m); err == nil {
			t.Errorf("SeedCopyMeta(%+v) succeeded", m)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "m")); err == nil {
		t.Error("a refused seed wrote metadata")
	}
}
