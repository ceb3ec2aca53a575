package repl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// eventBackend records when writes and flushes start and end, and can
// hold the WriteAt at chosen offsets until the test releases it.
type eventBackend struct {
	nbd.Backend
	mu      sync.Mutex
	events  []string
	gates   map[int64]chan struct{}
	entered chan int64
}

func newEventBackend(b nbd.Backend, gated ...int64) *eventBackend {
	e := &eventBackend{Backend: b, gates: map[int64]chan struct{}{}, entered: make(chan int64, 16)}
	for _, off := range gated {
		e.gates[off] = make(chan struct{})
	}
	return e
}

func (e *eventBackend) note(format string, args ...any) {
	e.mu.Lock()
	e.events = append(e.events, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

func (e *eventBackend) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// has reports whether event was recorded.
func (e *eventBackend) has(event string) bool { return slices.Contains(e.snapshot(), event) }

// before reports whether a was recorded, and before b if b was.
func (e *eventBackend) before(a, b string) bool {
	ev := e.snapshot()
	i, j := slices.Index(ev, a), slices.Index(ev, b)
	return i >= 0 && (j < 0 || i < j)
}

// release lets the held WriteAt at off go on; it may be called again.
func (e *eventBackend) release(off int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if g := e.gates[off]; g != nil {
		close(g)
		delete(e.gates, off)
	}
}

// releaseAll releases every gate, so a failed test does not hang.
func (e *eventBackend) releaseAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for off, g := range e.gates {
		close(g)
		delete(e.gates, off)
	}
}

func (e *eventBackend) WriteAt(b []byte, off int64) (int, error) {
	e.note("write %d start", off)
	e.mu.Lock()
	gate := e.gates[off]
	e.mu.Unlock()
	if gate != nil {
		e.entered <- off
		<-gate
	}
	n, err := e.Backend.WriteAt(b, off)
	e.note("write %d done", off)
	return n, err
}

func (e *eventBackend) Flush() error {
	e.note("flush start")
	err := e.Backend.Flush()
	e.note("flush done")
	return err
}

// rawPrimary drives a Secondary with hand-made frames, as a primary would.
type rawPrimary struct {
	t      *testing.T
	conn   net.Conn
	served chan error
	acks   chan *frame
}

// dialSecondary links a raw primary at epoch 1 to sec.
func dialSecondary(t *testing.T, sec *Secondary) *rawPrimary {
	t.Helper()
	a, b := tcpPair(t)
	r := &rawPrimary{t: t, conn: a, served: make(chan error, 1), acks: make(chan *frame, 64)}
	go func() { r.served <- sec.Serve(context.Background(), b) }()
	h := &hello{version: protoVersion, role: roleBytePrimary, size: uint64(sec.size), epoch: 1, diskID: testDisk}
	if err := writeFrame(a, &frame{typ: msgHello, payload: h.marshal()}); err != nil {
		t.Fatal(err)
	}
	if f, err := readFrame(a); err != nil || f.typ != msgHello {
		t.Fatalf("handshake reply = %+v, %v", f, err)
	}
	go func() {
		defer close(r.acks)
		for {
			f, err := readFrame(a)
			if err != nil {
				return
			}
			r.acks <- f
		}
	}()
	return r
}

func (r *rawPrimary) send(f *frame) {
	r.t.Helper()
	f.epoch = 1
	if err := writeFrame(r.conn, f); err != nil {
		r.t.Fatal(err)
	}
}

// ack waits for the next ACK.
func (r *rawPrimary) ack() *frame {
	r.t.Helper()
	select {
	case f, ok := <-r.acks:
		if !ok {
			r.t.Fatal("link closed while waiting for an ACK")
		}
		if f.typ != msgAck || f.code != codeOK {
			r.t.Fatalf("got %+v, want a successful ACK", f)
		}
		return f
	case <-time.After(10 * time.Second):
		r.t.Fatal("no ACK within 10 s")
		return nil
	}
}

// noAck checks that no ACK arrives for a while.
func (r *rawPrimary) noAck(what string) {
	r.t.Helper()
	select {
	case f := <-r.acks:
		r.t.Fatalf("%s: got ACK %d early", what, f.seq)
	case <-time.After(100 * time.Millisecond):
	}
}

func newTestSecondary(t *testing.T, size int64, wrap func(nbd.Backend) nbd.Backend) (*Secondary, nbd.Backend) {
	t.Helper()
	dir := t.TempDir()
	path := newImage(t, dir, "s.img", size)
	b := wrap(openBackend(t, path))
	sec, err := NewSecondary(SecondaryConfig{DiskID: testDisk, DiskPath: path, Backend: b, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sec.Close() })
	return sec, b
}

// TestSecondaryOrdersOverlappingWrites checks that the secondary applies
// writes concurrently, but those on overlapping ranges in the order
// received, and acknowledges each only after its WriteAt returned.
func TestSecondaryOrdersOverlappingWrites(t *testing.T) {
	t.Parallel()
	var ev *eventBackend
	sec, back := newTestSecondary(t, 1<<20, func(b nbd.Backend) nbd.Backend {
		ev = newEventBackend(b, 0)
		return ev
	})
	t.Cleanup(ev.releaseAll)
	r := dialSecondary(t, sec)
	a, b, c := bytes.Repeat([]byte{'A'}, 8192), bytes.Repeat([]byte{'B'}, 4096), bytes.Repeat([]byte{'C'}, 4096)
	r.send(&frame{typ: msgWrite, seq: 1, off: 0, length: 8192, payload: a})
	r.send(&frame{typ: msgWrite, seq: 2, off: 4096, length: 4096, payload: b})  // overlaps 1
	r.send(&frame{typ: msgWrite, seq: 3, off: 65536, length: 4096, payload: c}) // disjoint
	<-ev.entered                                                                // write 1 is in WriteAt, held

	// The disjoint write is not held up by write 1.
	if f := r.ack(); f.seq != 3 {
		t.Fatalf("first ACK is for %d, want 3 (the write that overlaps nothing)", f.seq)
	}
	r.noAck("writes 1 and 2 while write 1 is held")
	if ev.has("write 4096 start") {
		t.Fatal("write 2 started before write 1, which it overlaps, was written")
	}
	ev.release(0)
	seen := map[uint64]bool{}
	for range 2 {
		f := r.ack()
		seen[f.seq] = true
		if want := map[uint64]string{1: "write 0 done", 2: "write 4096 done"}[f.seq]; !ev.has(want) {
			t.Fatalf("ACK %d before its WriteAt returned", f.seq)
		}
	}
	if !seen[1] || !seen[2] {
		t.Fatalf("ACKs for %v, want 1 and 2", seen)
	}
	if !ev.before("write 0 done", "write 4096 start") {
		t.Fatalf("overlapping writes applied out of order: %v", ev.snapshot())
	}
	got := make([]byte, 8192)
	if _, err := back.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if want := append(a[:4096:4096], b...); !bytes.Equal(got, want) {
		t.Fatal("the later overlapping write did not win")
	}
}

// TestSecondaryFlushCoversEarlierWrites checks that a FLUSH waits for the
// writes received before it, flushes after them, and is acknowledged only
// after the flush; and that a FUA write is acknowledged only after a flush.
func TestSecondaryFlushCoversEarlierWrites(t *testing.T) {
	t.Parallel()
	var ev *eventBackend
	sec, _ := newTestSecondary(t, 1<<20, func(b nbd.Backend) nbd.Backend {
		ev = newEventBackend(b, 0)
		return ev
	})
	t.Cleanup(ev.releaseAll)
	r := dialSecondary(t, sec)
	r.send(&frame{typ: msgWrite, seq: 1, off: 0, length: 4096, payload: make([]byte, 4096)})
	r.send(&frame{typ: msgFlush, seq: 2})
	<-ev.entered
	r.noAck("write and flush while the write is held")
	if ev.has("flush start") {
		t.Fatal("FLUSH flushed before the write received before it was written")
	}
	ev.release(0)
	for range 2 {
		f := r.ack()
		switch f.seq {
		case 1:
			if !ev.has("write 0 done") {
				t.Fatal("write ACKed before its WriteAt returned")
			}
		case 2:
			if !ev.before("write 0 done", "flush start") || !ev.has("flush done") {
				t.Fatalf("FLUSH ACKed without a flush after the write: %v", ev.snapshot())
			}
		}
	}

	r.send(&frame{typ: msgWrite, flags: flagFUA, seq: 3, off: 8192, length: 4096, payload: make([]byte, 4096)})
	if f := r.ack(); f.seq != 3 {
		t.Fatalf("ACK %d, want 3", f.seq)
	}
	ev2 := ev.snapshot()
	i := slices.Index(ev2, "write 8192 done")
	if i < 0 || !slices.Contains(ev2[i:], "flush done") {
		t.Fatalf("FUA write ACKed without a flush after it: %v", ev2)
	}
}

// TestSecondaryConcurrentOverlapsMatchSerial sends many overlapping writes
// of random ranges at once and checks the result is what applying them one
// by one in order gives.
func TestSecondaryConcurrentOverlapsMatchSerial(t *testing.T) {
	const size = 256 << 10
	sec, back := newTestSecondary(t, size, func(b nbd.Backend) nbd.Backend { return b })
	r := dialSecondary(t, sec)
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 8))
	var frames []*frame
	for i := range 2000 {
		l := (1 + rng.IntN(16)) * 512
		off := rng.IntN((size-l)/512) * 512
		f := &frame{typ: msgWrite, seq: uint64(i + 1), epoch: 1, off: uint64(off), length: uint64(l)}
		if i%50 == 49 {
			f.typ = msgZero
			clear(want[off : off+l])
		} else {
			f.payload = fastBytes(uint64(i), l)
			copy(want[off:], f.payload)
		}
		frames = append(frames, f)
	}
	sent := make(chan error, 1)
	go func() {
		for _, f := range frames {
			if err := writeFrame(r.conn, f); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for range frames {
		r.ack()
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := back.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("concurrently applied writes differ from applying them in order")
	}
}

// failBackend fails WriteAt at one offset while fail is set, writing
// nothing.
type failBackend struct {
	nbd.Backend
	off  int64
	fail atomic.Bool
}

var errInjected = errors.New("injected local write error")

func (f *failBackend) WriteAt(b []byte, off int64) (int, error) {
	if f.fail.Load() && off == f.off {
		return 0, errInjected
	}
	return f.Backend.WriteAt(b, off)
}

// TestLocalWriteErrorResyncsPeer: the primary's own disk fails a write that
// the secondary applied. The write must fail, and the secondary must not
// keep the data the primary lacks: the region is resynced from the
// primary.
func TestLocalWriteErrorResyncsPeer(t *testing.T) {
	t.Parallel()
	const rs = DefaultRegionSize
	fb := &failBackend{off: 3 * rs}
	p := newPair(t, pairOpts{size: 4 << 20, wrapPrim: func(b nbd.Backend) nbd.Backend { fb.Backend = b; return fb }})
	p.connectFresh()
	old := bytes.Repeat([]byte{'o'}, 4096)
	if _, err := p.prim.WriteAt(old, 3*rs); err != nil {
		t.Fatal(err)
	}
	fb.fail.Store(true)
	if _, err := p.prim.WriteAt(bytes.Repeat([]byte{'n'}, 4096), 3*rs); !errors.Is(err, errInjected) {
		t.Fatalf("WriteAt with a failing local disk = %v, want the local error", err)
	}
	fb.fail.Store(false)
	p.waitSynced() // the repair
	st := p.prim.Status()
	if st.State != StateUpToDate || st.DirtyBytes != 0 {
		t.Errorf("after the repair Status() = %+v, want UpToDate and clean", st)
	}
	if m := p.prim.Meta(); m.BitmapGen != 0 {
		t.Errorf("after the repair BitmapGen = %x, want 0", m.BitmapGen)
	}
	got := make([]byte, 4096)
	if _, err := p.sback.ReadAt(got, 3*rs); err != nil || !bytes.Equal(got, old) {
		t.Errorf("secondary kept the write the primary failed (%q...), want the primary's data", got[:4])
	}
	if err := p.prim.Flush(); err != nil {
		t.Fatal(err)
	}
	sameContents(t, p.ppath, p.spath)
}

// readFailBackend is a failBackend whose ReadAt fails too while
// failRead is set.
type readFailBackend struct {
	failBackend
	failRead atomic.Bool
}

func (f *readFailBackend) ReadAt(b []byte, off int64) (int, error) {
	if f.failRead.Load() {
		return 0, errInjected
	}
	return f.Backend.ReadAt(b, off)
}

// TestLocalWriteErrorRecordedAcrossReconnect: when the repair cannot run
// before the link is lost, the region stays recorded, and the next
// connection resyncs it.
func TestLocalWriteErrorRecordedAcrossReconnect(t *testing.T) {
	t.Parallel()
	const rs = DefaultRegionSize
	fb := &readFailBackend{failBackend: failBackend{off: 2*rs + 4096}}
	p := newPair(t, pairOpts{size: 4 << 20, wrapPrim: func(b nbd.Backend) nbd.Backend { fb.Backend = b; return fb }})
	p.connectFresh()
	if _, err := p.prim.WriteAt(bytes.Repeat([]byte{'o'}, 8192), 2*rs); err != nil {
		t.Fatal(err)
	}
	fb.fail.Store(true)
	fb.failRead.Store(true) // the repair cannot read the region
	if _, err := p.prim.WriteAt(bytes.Repeat([]byte{'n'}, 4096), 2*rs+4096); !errors.Is(err, errInjected) {
		t.Fatalf("WriteAt = %v, want the local error", err)
	}
	if !p.prim.Bitmap().IsDirty(2) {
		t.Fatal("the region of the failed write is not marked dirty")
	}
	if m := p.prim.Meta(); m.BitmapGen != m.Current {
		t.Fatalf("BitmapGen = %x, want the peer's generation %x", m.BitmapGen, m.Current)
	}
	p.cut().reply <- Decision{} // stay frozen; the operator reconnects
	// The primary takes the decision on its own goroutine, and refuses a
	// connection until it has.
	p.awaitReason("staying frozen")
	fb.fail.Store(false)
	fb.failRead.Store(false)
	p.mustConnect()
	if pr := p.waitSynced(); pr.SentBytes != rs {
		t.Errorf("resync after reconnecting sent %d bytes, want the one region (%d)", pr.SentBytes, rs)
	}
	sameContents(t, p.ppath, p.spath)
}

// TestPrimaryOrdersOverlappingWrites: two overlapping writes in flight at
// once must reach both disks in the same order, whatever the timing of the
// local writes.
func TestPrimaryOrdersOverlappingWrites(t *testing.T) {
	t.Parallel()
	var ev *eventBackend
	p := newPair(t, pairOpts{size: 1 << 20, wrapPrim: func(b nbd.Backend) nbd.Backend {
		ev = newEventBackend(b, 0)
		return ev
	}})
	t.Cleanup(ev.releaseAll)
	p.connectFresh()
	a, b := bytes.Repeat([]byte{'A'}, 8192), bytes.Repeat([]byte{'B'}, 4096)
	done := make(chan error, 2)
	go func() { _, err := p.prim.WriteAt(a, 0); done <- err }()
	<-ev.entered // write A's local half is held
	go func() { _, err := p.prim.WriteAt(b, 4096); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("a write completed while the first, overlapping one was held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if ev.has("write 4096 start") {
		t.Fatal("the second overlapping write was applied locally before the first")
	}
	ev.release(0)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	sameContents(t, p.ppath, p.spath)
	got := make([]byte, 4096)
	if _, err := p.sback.ReadAt(got, 4096); err != nil || !bytes.Equal(got, b) {
		t.Fatal("the later write did not win")
	}
}

// TestUncleanPrimaryStaysUncleanUntilFullSync: a primary opened after an
// unclean shutdown owes its peer a full sync; closing it before it did one
// must not forget that.
func TestUncleanPrimaryStaysUncleanUntilFullSync(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	dir := t.TempDir()
	p := &pair{t: t, size: size, ppath: newImage(t, dir, "p.img", size), spath: newImage(t, dir, "s.img", size),
		lost: make(chan lostCall, 1), progress: make(chan Progress, 1), served: make(chan error, 4)}
	// Both disks agree on a generation, but the primary died with writes
	// in flight.
	if err := writeFileAtomic(MetaPath(p.ppath), &Meta{DiskID: testDisk, Epoch: 1, Current: 5, PrimaryUnclean: true}); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(MetaPath(p.spath), &Meta{DiskID: testDisk, Epoch: 1, Current: 5}); err != nil {
		t.Fatal(err)
	}
	p.pback, p.sback = openBackend(t, p.ppath), openBackend(t, p.spath)
	p.openSecondary(1)
	p.openPrimary(1, 0)
	if err := p.prim.Close(); err != nil {
		t.Fatal(err)
	}
	if m := p.prim.Meta(); !m.PrimaryUnclean {
		t.Fatal("closing a primary that never synced cleared PrimaryUnclean")
	}
	p.openPrimary(1, 0)
	p.mustConnect()
	if pr := p.waitSynced(); pr.TotalBytes != size {
		t.Errorf("sync after an unclean restart covered %d bytes, want a full sync of %d", pr.TotalBytes, size)
	}
	if err := p.prim.Close(); err != nil {
		t.Fatal(err)
	}
	if m := p.prim.Meta(); m.PrimaryUnclean {
		t.Error("PrimaryUnclean still set after a full sync and a clean Close")
	}
}

// TestSetEpochStopsQueuedWrites: SetEpoch waits for a write being applied,
// and a write received before the epoch was raised but not yet applied is
// refused, not applied, once SetEpoch returned.
func TestSetEpochStopsQueuedWrites(t *testing.T) {
	t.Parallel()
	var ev *eventBackend
	sec, back := newTestSecondary(t, 1<<20, func(b nbd.Backend) nbd.Backend {
		ev = newEventBackend(b, 0)
		return ev
	})
	t.Cleanup(ev.releaseAll)
	r := dialSecondary(t, sec)
	r.send(&frame{typ: msgWrite, seq: 1, off: 0, length: 4096, payload: bytes.Repeat([]byte{1}, 4096)})
	<-ev.entered // write 1 is being applied
	raised := make(chan error, 1)
	go func() { raised <- sec.SetEpoch(2) }()
	select {
	case err := <-raised:
		t.Fatalf("SetEpoch returned (%v) while a write of the old epoch was being applied", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Received before the epoch is raised (SetEpoch is still waiting), so
	// it passes the reader's check and waits in a worker.
	r.send(&frame{typ: msgWrite, seq: 2, off: 8192, length: 4096, payload: bytes.Repeat([]byte{2}, 4096)})
	time.Sleep(50 * time.Millisecond)
	ev.release(0)
	if err := <-raised; err != nil {
		t.Fatal(err)
	}
	var codes []uint32
	timeout := time.After(10 * time.Second)
collect:
	for {
		select {
		case f, ok := <-r.acks:
			if !ok {
				break collect // the secondary ended the link
			}
			codes = append(codes, f.code)
		case <-timeout:
			t.Fatalf("link still open 10 s after SetEpoch; ACK codes %v", codes)
		}
	}
	if !slices.Contains(codes, codeStaleEpoch) {
		t.Errorf("ACK codes %v, want a stale-epoch refusal of write 2", codes)
	}
	if err := <-r.served; !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("Serve = %v, want ErrStaleEpoch", err)
	}
	got := make([]byte, 1)
	if _, err := back.ReadAt(got, 8192); err != nil || got[0] != 0 {
		t.Errorf("byte at 8192 = %d, %v; want 0: a write of the old epoch was applied after SetEpoch", got[0], err)
	}
	if _, err := back.ReadAt(got, 0); err != nil || got[0] != 1 {
		t.Errorf("byte at 0 = %d, %v; want 1 (write 1 was accepted before the raise)", got[0], err)
	}
}
