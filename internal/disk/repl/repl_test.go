package repl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// Compile-time checks: the NBD server must be able to serve a Primary as
// is, with every optional interface.
var (
	_ nbd.Backend          = (*Primary)(nil)
	_ nbd.Trimmer          = (*Primary)(nil)
	_ nbd.ZeroWriter       = (*Primary)(nil)
	_ nbd.FUAWriter        = (*Primary)(nil)
	_ nbd.MultiConnBackend = (*Primary)(nil)
)

const testDisk = "vm-1"

// newImage creates a sparse image of size bytes and returns its path.
func newImage(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, name)
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

func openBackend(t *testing.T, path string) *nbd.FileBackend {
	t.Helper()
	b, err := nbd.OpenFileBackend(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// lostCall is one OnPeerLost call: the test answers on reply.
type lostCall struct {
	reply chan Decision
}

// pair is a primary and a secondary on two image files in one directory.
type pair struct {
	t            *testing.T
	size         int64
	ppath, spath string
	pback, sback nbd.Backend
	prim         *Primary
	sec          *Secondary
	lost         chan lostCall
	progress     chan Progress
	served       chan error
	secConn      net.Conn
}

type pairOpts struct {
	size       int64
	pEpoch     uint64
	sEpoch     uint64
	ackTimeout time.Duration
	wrapSec    func(nbd.Backend) nbd.Backend
	wrapPrim   func(nbd.Backend) nbd.Backend
}

func newPair(t *testing.T, o pairOpts) *pair {
	t.Helper()
	dir := t.TempDir()
	if o.pEpoch == 0 {
		o.pEpoch = 1
	}
	p := &pair{t: t, size: o.size, lost: make(chan lostCall, 4), progress: make(chan Progress, 1),
		served: make(chan error, 8)}
	p.ppath = newImage(t, dir, "p.img", o.size)
	p.spath = newImage(t, dir, "s.img", o.size)
	p.pback = openBackend(t, p.ppath)
	p.sback = openBackend(t, p.spath)
	if o.wrapSec != nil {
		p.sback = o.wrapSec(p.sback)
	}
	if o.wrapPrim != nil {
		p.pback = o.wrapPrim(p.pback)
	}
	p.openSecondary(o.sEpoch)
	p.openPrimary(o.pEpoch, o.ackTimeout)
	return p
}

func (p *pair) openPrimary(epoch uint64, ackTimeout time.Duration) {
	p.t.Helper()
	prim, err := NewPrimary(Config{DiskID: testDisk, DiskPath: p.ppath, Backend: p.pback, Epoch: epoch,
		AckTimeout: ackTimeout,
		OnPeerLost: func(ctx context.Context) Decision {
			c := lostCall{reply: make(chan Decision, 1)}
			p.lost <- c
			select {
			case d := <-c.reply:
				return d
			case <-ctx.Done():
				return Decision{}
			}
		},
		OnProgress: func(pr Progress) {
			if pr.Done {
				p.progress <- pr
			}
		}})
	if err != nil {
		p.t.Fatalf("NewPrimary: %v", err)
	}
	p.prim = prim
	p.t.Cleanup(func() { prim.Close() })
}

func (p *pair) openSecondary(epoch uint64) {
	p.t.Helper()
	sec, err := NewSecondary(SecondaryConfig{DiskID: testDisk, DiskPath: p.spath, Backend: p.sback, Epoch: epoch})
	if err != nil {
		p.t.Fatalf("NewSecondary: %v", err)
	}
	p.sec = sec
	p.t.Cleanup(func() { sec.Close() })
}

// connect links the pair over loopback TCP and returns Connect's error.
func (p *pair) connect() error {
	p.t.Helper()
	a, b := tcpPair(p.t)
	p.secConn = b
	sec := p.sec
	go func() { p.served <- sec.Serve(context.Background(), b) }()
	return p.prim.Connect(context.Background(), a)
}

func (p *pair) mustConnect() {
	p.t.Helper()
	if err := p.connect(); err != nil {
		p.t.Fatalf("Connect: %v", err)
	}
}

// connectFresh connects a new pair and waits for the initial full sync to
// the empty secondary, which every first connection does.
func (p *pair) connectFresh() {
	p.t.Helper()
	p.mustConnect()
	p.waitSynced()
}

// waitSynced waits for the resync to report completion.
func (p *pair) waitSynced() Progress {
	p.t.Helper()
	select {
	case pr := <-p.progress:
		return pr
	case <-time.After(30 * time.Second):
		p.t.Fatalf("resync did not finish; status %+v", p.prim.Status())
		return Progress{}
	}
}

// cut breaks the link from the secondary's side and waits for the primary
// to ask the control plane.
func (p *pair) cut() lostCall {
	p.t.Helper()
	p.secConn.Close()
	return p.awaitLost()
}

func (p *pair) awaitLost() lostCall {
	p.t.Helper()
	select {
	case c := <-p.lost:
		return c
	case <-time.After(10 * time.Second):
		p.t.Fatalf("OnPeerLost not called; status %+v", p.prim.Status())
		return lostCall{}
	}
}

// awaitReason waits until the primary's status reason contains sub.
func (p *pair) awaitReason(sub string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.prim.Status().Reason, sub) {
		if time.Now().After(deadline) {
			p.t.Fatalf("status reason never contained %q; status %+v", sub, p.prim.Status())
		}
		time.Sleep(time.Millisecond)
	}
}

// sameContents fails the test unless the two files hold the same bytes.
func sameContents(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := io.ReadFull(fa, ba)
		nb, _ := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s and %s differ in the 4 MiB at %d", a, b, off)
		}
		if ea != nil {
			return
		}
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// gateBackend blocks each WriteAt until the test releases it.
type gateBackend struct {
	nbd.Backend
	entered chan struct{}
	release chan struct{}
}

func (g *gateBackend) WriteAt(b []byte, off int64) (int, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Backend.WriteAt(b, off)
}

// returned reports whether ch has been closed, without waiting.
func returned(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestProtocolCWaitsForSecondary(t *testing.T) {
	t.Parallel()
	gate := &gateBackend{entered: make(chan struct{}), release: make(chan struct{})}
	p := newPair(t, pairOpts{size: 1 << 20, ackTimeout: time.Minute, wrapSec: func(b nbd.Backend) nbd.Backend {
		gate.Backend = b
		return gate
	}})
	p.connectFresh()

	data := bytes.Repeat([]byte{0xab}, 4096)
	done := make(chan struct{})
	var werr error
	go func() {
		defer close(done)
		_, werr = p.prim.WriteAt(data, 8192)
	}()
	<-gate.entered // the secondary has the request but has not written it
	if returned(done) {
		t.Fatal("WriteAt returned before the secondary wrote the data")
	}
	// The local half is done (reads are local), yet the write is pending.
	close(gate.release)
	<-done
	if werr != nil {
		t.Fatalf("WriteAt: %v", werr)
	}
	got := make([]byte, len(data))
	if _, err := p.sback.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("secondary ReadAt after WriteAt returned = %v, data equal %v", err, bytes.Equal(got, data))
	}
	if st := p.prim.Status(); st.State != StateUpToDate {
		t.Errorf("Status().State = %v, want %v", st.State, StateUpToDate)
	}
}

func TestConcurrentWorkloadIdentical(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	p := newPair(t, pairOpts{size: size})
	p.mustConnect()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 { // QEMU's queue depth
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				n := (1 + r.IntN(64)) * 512
				off := int64(r.IntN((size-n)/512)) * 512
				var err error
				switch op := r.IntN(10); {
				case op < 6:
					_, err = p.prim.WriteAt(randBytes(r, n), off)
				case op < 8:
					_, err = p.prim.WriteAtFUA(randBytes(r, n), off)
				case op < 9:
					err = p.prim.WriteZeroes(off, int64(n), r.IntN(2) == 0)
				default:
					err = p.prim.Flush()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("workload: %v", err)
	}
	p.waitSynced() // the initial full sync ran concurrently with the workload
	if err := p.prim.Flush(); err != nil {
		t.Fatal(err)
	}
	sameContents(t, p.ppath, p.spath)
}

func TestStaleEpochRejected(t *testing.T) {
	t.Parallel()
	t.Run("handshake", func(t *testing.T) {
		t.Parallel()
		p := newPair(t, pairOpts{size: 1 << 20, pEpoch: 4, sEpoch: 5})
		if err := p.connect(); !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("Connect with epoch 4 to a secondary at 5 = %v, want ErrStaleEpoch", err)
		}
		if err := <-p.served; !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("Serve = %v, want ErrStaleEpoch", err)
		}
		if _, err := p.prim.WriteAt([]byte{1}, 0); !errors.Is(err, ErrStaleEpoch) || !errors.Is(err, nbd.ErrShutdown) {
			t.Errorf("WriteAt on a stale primary = %v, want ErrStaleEpoch and nbd.ErrShutdown", err)
		}
	})
	t.Run("mid-link", func(t *testing.T) {
		t.Parallel()
		p := newPair(t, pairOpts{size: 1 << 20, pEpoch: 1})
		p.mustConnect()
		if _, err := p.prim.WriteAt([]byte{1}, 0); err != nil {
			t.Fatal(err)
		}
		// The control plane promoted someone else: this primary is a zombie.
		if err := p.sec.SetEpoch(2); err != nil {
			t.Fatal(err)
		}
		if _, err := p.prim.WriteAt([]byte{2}, 4096); !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("WriteAt after the secondary moved to epoch 2 = %v, want ErrStaleEpoch", err)
		}
		if err := <-p.served; !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("Serve = %v, want ErrStaleEpoch", err)
		}
		got := make([]byte, 1)
		if _, err := p.sback.ReadAt(got, 4096); err != nil || got[0] != 0 {
			t.Errorf("secondary byte at 4096 = %d, %v; want 0 (zombie write applied)", got[0], err)
		}
		if st := p.prim.Status(); st.State != StateFrozen {
			t.Errorf("zombie Status().State = %v, want %v", st.State, StateFrozen)
		}
	})
}

// TestLinkCutDegradeResync is the outdate-peer path end to end: the link
// breaks, I/O freezes, the control plane consents with a new epoch, writes
// continue and mark the bitmap, and a reconnect resyncs only those.
func TestLinkCutDegradeResync(t *testing.T) {
	t.Parallel()
	const size = 1 << 30
	const rs = DefaultRegionSize
	p := newPair(t, pairOpts{size: size, ackTimeout: 10 * time.Second})
	p.connectFresh()
	r := rand.New(rand.NewPCG(1, 2))
	if _, err := p.prim.WriteAt(randBytes(r, 1<<20), 0); err != nil {
		t.Fatal(err)
	}

	call := p.cut()
	if st := p.prim.Status(); st.State != StateFrozen {
		t.Fatalf("after the cut Status().State = %v, want %v", st.State, StateFrozen)
	}
	frozenDone := make(chan struct{})
	var frozenErr error
	go func() {
		defer close(frozenDone)
		_, frozenErr = p.prim.WriteAt(randBytes(rand.New(rand.NewPCG(3, 4)), rs), 5*rs)
	}()
	if returned(frozenDone) {
		t.Fatal("a write completed while the primary was frozen")
	}
	if err := p.prim.Degrade(1); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("Degrade at the link's own epoch = %v, want ErrStaleEpoch", err)
	}
	call.reply <- Decision{PeerOutdated: true, Epoch: 2}
	<-frozenDone
	if frozenErr != nil {
		t.Fatalf("write frozen across the decision: %v", frozenErr)
	}
	if st := p.prim.Status(); st.State != StateDegraded || st.Epoch != 2 {
		t.Fatalf("Status() = %+v, want Degraded at epoch 2", st)
	}

	// 10 MiB scattered over the 1 GiB disk, one region at a time.
	const nRegions = 10 << 20 / rs
	for i := range nRegions - 1 {
		off := int64(i) * 97 * rs % size
		if off == 5*rs {
			off += rs
		}
		if _, err := p.prim.WriteAt(randBytes(r, rs), off); err != nil {
			t.Fatal(err)
		}
	}
	wantDirty := int64(nRegions) * rs
	if got := p.prim.Status().DirtyBytes; got != wantDirty {
		t.Fatalf("DirtyBytes = %d, want %d", got, wantDirty)
	}

	p.mustConnect()
	// Guest writes continue during the resync.
	if _, err := p.prim.WriteAt(randBytes(r, 8192), 3*rs+100); err != nil {
		t.Fatal(err)
	}
	pr := p.waitSynced()
	if pr.SentBytes < wantDirty || pr.SentBytes > wantDirty+rs {
		t.Errorf("resync sent %d bytes, want about %d (the dirty regions only)", pr.SentBytes, wantDirty)
	}
	if pr.LeftBytes != 0 || pr.TotalBytes != wantDirty {
		t.Errorf("final progress %+v, want TotalBytes %d and nothing left", pr, wantDirty)
	}
	st := p.prim.Status()
	if st.State != StateUpToDate || st.DirtyBytes != 0 {
		t.Errorf("after resync Status() = %+v, want UpToDate and clean", st)
	}
	if pm, sm := p.prim.Meta(), p.sec.Meta(); pm.Current != sm.Current || sm.Inconsistent || pm.BitmapGen != 0 {
		t.Errorf("after resync primary meta %+v, secondary meta %+v; want same generation, consistent", pm, sm)
	}
	if err := p.prim.Flush(); err != nil {
		t.Fatal(err)
	}
	sameContents(t, p.ppath, p.spath)
}

func TestAckTimeoutFreezesUntilDecision(t *testing.T) {
	t.Parallel()
	gate := &gateBackend{entered: make(chan struct{}, 1), release: make(chan struct{})}
	// The timeout also covers the acks of the first full sync: 50 ms
	// failed that sync once under CI's load (the whole suite at once).
	// The hung write waits for it however long it is.
	p := newPair(t, pairOpts{size: 1 << 20, ackTimeout: 500 * time.Millisecond, wrapSec: func(b nbd.Backend) nbd.Backend {
		gate.Backend = b
		return gate
	}})
	p.connectFresh()
	defer close(gate.release)
	done := make(chan struct{})
	var werr error
	go func() {
		defer close(done)
		_, werr = p.prim.WriteAt([]byte{1}, 0)
	}()
	call := p.awaitLost() // the secondary hangs: the watchdog fires
	call.reply <- Decision{PeerOutdated: false}
	if returned(done) {
		t.Fatal("write returned although the control plane refused to outdate the peer")
	}
	if err := p.connect(); !errors.Is(err, ErrFrozen) {
		t.Errorf("Connect while frozen with writes in flight = %v, want ErrFrozen", err)
	}
	if err := p.prim.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	<-done
	if !errors.Is(werr, ErrClosed) || !errors.Is(werr, nbd.ErrShutdown) {
		t.Errorf("frozen write after Close = %v, want ErrClosed and nbd.ErrShutdown", werr)
	}
	if !p.prim.Bitmap().IsDirty(0) {
		// Close must track the write the peer may not have.
		reopened, err := OpenBitmap(BitmapPath(p.ppath), p.size, DefaultRegionSize)
		if err != nil {
			t.Fatal(err)
		}
		defer reopened.Close()
		if !reopened.IsDirty(0) {
			t.Error("unacknowledged write not marked dirty at Close")
		}
	}
}

func TestPrimaryRestartKeepsBitmap(t *testing.T) {
	t.Parallel()
	const rs = DefaultRegionSize
	p := newPair(t, pairOpts{size: 8 << 20})
	p.connectFresh()
	p.cut().reply <- Decision{PeerOutdated: true, Epoch: 2}
	for _, off := range []int64{0, 3 * rs, 7 * rs} {
		if _, err := p.prim.WriteAt([]byte("dirty"), off+10); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.prim.Close(); err != nil {
		t.Fatal(err)
	}
	p.openPrimary(2, 0)
	bm := p.prim.Bitmap()
	for _, i := range []int{0, 3, 7} {
		if !bm.IsDirty(i) {
			t.Errorf("after restart region %d is clean, want dirty", i)
		}
	}
	if bm.Count() != 3 {
		t.Errorf("after restart Count() = %d, want 3", bm.Count())
	}
	p.mustConnect()
	if pr := p.waitSynced(); pr.SentBytes != 3*rs {
		t.Errorf("resync after restart sent %d bytes, want %d", pr.SentBytes, 3*rs)
	}
	sameContents(t, p.ppath, p.spath)
}

func TestFullSyncSkipsHoles(t *testing.T) {
	t.Parallel()
	const rs = DefaultRegionSize
	const size = 256 << 20
	dir := t.TempDir()
	ppath := newImage(t, dir, "p.img", size)
	// An existing image with data in two places only.
	f, err := os.OpenFile(ppath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, off := range []int64{rs, 100 * rs} {
		if _, err := f.WriteAt(randBytes(r, rs), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	p := &pair{t: t, size: size, ppath: ppath, spath: newImage(t, dir, "s.img", size),
		lost: make(chan lostCall, 1), progress: make(chan Progress, 1), served: make(chan error, 4)}
	p.pback, p.sback = openBackend(t, p.ppath), openBackend(t, p.spath)
	p.openSecondary(0)
	p.openPrimary(1, 0)
	p.mustConnect()
	pr := p.waitSynced()
	if pr.SentBytes != 2*rs {
		t.Errorf("full sync to a new secondary sent %d bytes, want %d (holes skipped)", pr.SentBytes, 2*rs)
	}
	if pr.TotalBytes != size {
		t.Errorf("full sync TotalBytes = %d, want %d", pr.TotalBytes, size)
	}
	sameContents(t, p.ppath, p.spath)
}

func TestDivergenceDetected(t *testing.T) {
	t.Parallel()
	p := newPair(t, pairOpts{size: 4 << 20})
	p.connectFresh()
	if _, err := p.prim.WriteAt([]byte("common"), 0); err != nil {
		t.Fatal(err)
	}
	// Split brain: both sides write alone in epoch 2.
	p.cut().reply <- Decision{PeerOutdated: true, Epoch: 2}
	if _, err := p.prim.WriteAt([]byte("A side"), 4096); err != nil {
		t.Fatal(err)
	}
	p.sec.Close()
	bPrim, err := NewPrimary(Config{DiskID: testDisk, DiskPath: p.spath, Backend: p.sback, Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := bPrim.Degrade(2); err != nil {
		t.Fatalf("promoted replica Degrade(2): %v", err)
	}
	if _, err := bPrim.WriteAt([]byte("B side"), 8192); err != nil {
		t.Fatal(err)
	}
	if err := bPrim.Close(); err != nil {
		t.Fatal(err)
	}

	p.openSecondary(2)
	if err := p.connect(); !errors.Is(err, ErrDiverged) {
		t.Fatalf("Connect after split brain = %v, want ErrDiverged", err)
	}
	got := make([]byte, 6)
	if _, err := p.sback.ReadAt(got, 8192); err != nil || string(got) != "B side" {
		t.Fatalf("losing side's data changed by a refused link: %q, %v", got, err)
	}

	// The operator chose A: keep B's data aside, then full resync.
	p.sec.Close()
	aside, err := KeepAside(p.spath)
	if err != nil {
		t.Fatalf("KeepAside: %v", err)
	}
	b, err := os.ReadFile(aside)
	if err != nil || !bytes.Equal(b[8192:8198], []byte("B side")) {
		t.Fatalf("kept-aside image at %s lacks B's data: %v", aside, err)
	}
	p.sback = openBackend(t, p.spath)
	p.openSecondary(2)
	p.mustConnect()
	p.waitSynced()
	sameContents(t, p.ppath, p.spath)
}

func TestPlanSync(t *testing.T) {
	t.Parallel()
	m := Meta{Current: 30, History: []uint64{20, 10}, BitmapGen: 20}
	tests := []struct {
		name     string
		m        Meta
		needFull bool
		peer     hello
		want     syncMode
		wantErr  error
	}{
		{"same generation", Meta{Current: 30}, false, hello{current: 30}, syncNone, nil},
		{"same generation, unclean primary", Meta{Current: 30}, true, hello{current: 30}, syncFull, nil},
		{"peer at bitmap generation", m, false, hello{current: 20}, syncBitmap, nil},
		{"peer unclean", m, false, hello{current: 20, flags: helloPrimaryUnclean}, syncFull, nil},
		{"older ancestor", m, false, hello{current: 10}, syncFull, nil},
		{"brand-new peer", m, false, hello{}, syncFullToEmpty, nil},
		{"interrupted resync", m, false, hello{current: 20, flags: helloInconsistent}, syncBitmap, nil},
		{"inconsistent other", m, false, hello{current: 99, flags: helloInconsistent}, syncFull, nil},
		{"peer ahead", m, false, hello{current: 40, history: []uint64{30, 20}}, 0, ErrPeerAhead},
		{"diverged", m, false, hello{current: 31, history: []uint64{20, 10}}, 0, ErrDiverged},
		{"diverged even if unclean", m, true, hello{current: 31, history: []uint64{20}}, 0, ErrDiverged},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planSync(tc.m, tc.needFull, &tc.peer)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("planSync = %v, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("planSync = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestSecondaryRejectsOutOfBounds(t *testing.T) {
	t.Parallel()
	p := newPair(t, pairOpts{size: 1 << 20})
	a, b := tcpPair(t)
	go func() { p.served <- p.sec.Serve(context.Background(), b) }()
	h := &hello{version: protoVersion, role: roleBytePrimary, size: 1 << 20, epoch: 1, diskID: testDisk}
	if err := writeFrame(a, &frame{typ: msgHello, payload: h.marshal()}); err != nil {
		t.Fatal(err)
	}
	if f, err := readFrame(a); err != nil || f.typ != msgHello {
		t.Fatalf("handshake reply = %+v, %v", f, err)
	}
	bad := &frame{typ: msgWrite, seq: 1, epoch: 1, off: 1<<20 - 2, length: 4, payload: []byte("oops")}
	if err := writeFrame(a, bad); err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(a)
	if err != nil || f.typ != msgAck || f.code != codeInvalid {
		t.Fatalf("reply to an out-of-bounds WRITE = %+v, %v; want ACK codeInvalid", f, err)
	}
	if err := <-p.served; !errors.Is(err, errBadFrame) {
		t.Errorf("Serve = %v, want errBadFrame", err)
	}
	if fi, err := os.Stat(p.spath); err != nil || fi.Size() != 1<<20 {
		t.Errorf("secondary image size after a bad frame = %v, %v; want unchanged", fi.Size(), err)
	}
}

// TestDropLinkMovesToNewReplica: the control plane gives the replica to
// another host; the primary cuts its link, asks, writes alone under the
// new epoch, then fills the new, empty replica with a full sync.
func TestDropLinkMovesToNewReplica(t *testing.T) {
	t.Parallel()
	p := newPair(t, pairOpts{size: 4 << 20})
	p.connectFresh()
	if _, err := p.prim.WriteAt(bytes.Repeat([]byte{'a'}, 8192), 0); err != nil {
		t.Fatal(err)
	}
	if !p.prim.DropLink(errors.New("replica moved")) {
		t.Fatal("DropLink = false on a linked primary")
	}
	call := p.awaitLost()
	if st := p.prim.Status(); st.State != StateFrozen {
		t.Errorf("after DropLink state %s, want %s until the control plane decides", st.State, StateFrozen)
	}
	call.reply <- Decision{PeerOutdated: true, Epoch: 2}
	p.awaitReason("degraded")
	if p.prim.DropLink(errors.New("again")) {
		t.Error("DropLink = true with no link")
	}
	if _, err := p.prim.WriteAt(bytes.Repeat([]byte{'b'}, 4096), 1<<20); err != nil {
		t.Fatalf("write after the decision: %v", err)
	}
	// The new replica: an empty image on "another host", at the new epoch.
	p.spath = newImage(t, t.TempDir(), "new.img", p.size)
	p.sback = openBackend(t, p.spath)
	p.openSecondary(2)
	p.mustConnect()
	if pr := p.waitSynced(); pr.SentBytes == 0 {
		t.Error("the new replica got no data")
	}
	sameContents(t, p.ppath, p.spath)
}
