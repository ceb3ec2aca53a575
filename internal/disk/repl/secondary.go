package repl

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// handshakeTimeout bounds how long either side waits for the peer's HELLO,
// so a silent peer cannot hold a connection slot forever.
const handshakeTimeout = 10 * time.Second

const (
	// secWorkers is the number of requests a Secondary applies
	// concurrently on one link.
	secWorkers = 8
	// secBufferBytes bounds the WRITE payloads a Secondary holds in memory
	// on one link (received, not yet written); one larger WRITE is always
	// admitted.
	secBufferBytes = 64 << 20
	// linkBufSize is the read buffer of either side of a link.
	linkBufSize = 64 << 10
	// closeWriteTimeout bounds how long a Secondary that is ending a link
	// still tries to send the last ACKs, so a peer that stopped reading
	// cannot hold it.
	closeWriteTimeout = 2 * time.Second
)

// SecondaryConfig configures a [Secondary].
type SecondaryConfig struct {
	// DiskID names the disk; a primary serving another disk is refused.
	DiskID string
	// DiskPath is the image's path; the metadata lives at MetaPath(DiskPath).
	DiskPath string
	// Backend is the local disk. Writes from the primary are applied to it.
	Backend nbd.Backend
	// Epoch is the epoch the control plane assigned with the secondary
	// role. A primary with a lower epoch is refused. The secondary's floor
	// is the higher of this and the epoch it last persisted.
	Epoch uint64
}

// Secondary serves one disk to a primary over a link: it applies the
// primary's writes, several at a time but those on overlapping ranges in
// the order received, acknowledges a write only after its local WriteAt
// returned (and a FUA write or a FLUSH only after a local Flush, a FLUSH
// only once every write received before it was written), and refuses
// anything from a primary whose epoch is lower than its own. It serves one
// link at a time; a new link from a primary with an equal or higher epoch
// replaces the old one.
type Secondary struct {
	cfg   SecondaryConfig
	local nbd.Backend
	size  int64
	meta  *metaStore
	epoch atomic.Uint64
	// applyMu is read-held while a request takes effect on the local disk
	// (after checking its epoch), and write-held by SetEpoch while raising
	// the epoch: once SetEpoch returns, no request from a lower epoch is
	// being applied or will be.
	applyMu sync.RWMutex

	mu      sync.Mutex
	active  *secLink
	syncing bool
	synced  int64 // resync bytes received since SYNCSTART
	total   int64 // resync size announced in SYNCSTART
	reason  string
	closed  bool
}

// secLink is the state of one link served by a Secondary.
type secLink struct {
	conn  net.Conn
	epoch uint64
	out   *frameWriter
	done  chan struct{} // closed when the link has stopped writing to the disk

	// The reader hands requests to secWorkers workers; order makes those
	// on overlapping ranges take effect in the order received.
	order   rangeTracker
	work    chan *secOp
	workers sync.WaitGroup
	budget  byteBudget
	failMu  sync.Mutex
	failErr error // why a worker ended the link, if one did

	// writing counts the WRITEs dispatched and not yet written locally.
	// While it is not zero, more ACKs are about to follow, so an ACK is
	// queued (frameWriter.hold) and the last WRITE to finish sends them
	// all.
	writing atomic.Int32
}

// secOp is a request handed to a worker.
type secOp struct {
	f     *frame
	op    *rangeOp        // WRITE/TRIM/ZERO: ended once applied locally
	waits []chan struct{} // what must take effect first
}

// byteBudget bounds the payload bytes held by a link.
type byteBudget struct {
	mu   sync.Mutex
	cond sync.Cond
	used int
}

// acquire waits until n more bytes fit, or nothing is held.
func (b *byteBudget) acquire(n int) {
	b.mu.Lock()
	if b.cond.L == nil {
		b.cond.L = &b.mu
	}
	for b.used > 0 && b.used+n > secBufferBytes {
		b.cond.Wait()
	}
	b.used += n
	b.mu.Unlock()
}

func (b *byteBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	if b.cond.L != nil {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
}

// NewSecondary returns a Secondary for the disk in cfg. It loads the disk's
// metadata, creating it for a brand-new disk.
func NewSecondary(cfg SecondaryConfig) (*Secondary, error) {
	if cfg.Backend == nil || cfg.DiskPath == "" || cfg.DiskID == "" {
		return nil, fmt.Errorf("repl: secondary: Backend, DiskPath and DiskID are required")
	}
	meta, err := openMeta(MetaPath(cfg.DiskPath), cfg.DiskID)
	if err != nil {
		return nil, err
	}
	s := &Secondary{cfg: cfg, local: cfg.Backend, size: cfg.Backend.Size(), meta: meta,
		reason: "waiting for the primary"}
	m := meta.get()
	if cfg.Epoch > m.Epoch {
		if err := meta.update(func(m *Meta) { m.Epoch = cfg.Epoch }); err != nil {
			return nil, err
		}
	}
	s.epoch.Store(max(cfg.Epoch, m.Epoch))
	return s, nil
}

// SetEpoch raises the secondary's epoch, persistently. The control plane
// calls it (through the agent) when it promotes another host or reassigns
// this replica: from then on, a primary with a lower epoch is refused. A
// link already open to such a primary is not cut here: its next frame is
// answered with a stale-epoch error and the link closed, so the zombie
// learns why (ErrStaleEpoch) instead of seeing a plain disconnect.
// A lower epoch is ignored.
func (s *Secondary) SetEpoch(epoch uint64) error {
	if epoch <= s.epoch.Load() {
		return nil
	}
	if err := s.meta.update(func(m *Meta) { m.Epoch = max(m.Epoch, epoch) }); err != nil {
		return err
	}
	s.applyMu.Lock()
	if epoch > s.epoch.Load() {
		s.epoch.Store(epoch)
	}
	s.applyMu.Unlock()
	return nil
}

// Meta returns a copy of the disk's replication metadata.
func (s *Secondary) Meta() Meta { return s.meta.get() }

// Status returns the secondary's current state.
func (s *Secondary) Status() Status {
	m := s.meta.get()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Role: RoleSecondary, Epoch: s.epoch.Load(), SyncedBytes: s.synced,
		TotalBytes: s.total, Reason: s.reason}
	switch {
	case s.active != nil && (s.syncing || m.Inconsistent):
		st.State = StateSyncing
	case s.active != nil:
		st.State = StateUpToDate
	default:
		st.State = StateOutdated
	}
	return st
}

// Close closes the active link, if any, and makes later Serve calls fail.
// It does not close the Backend.
func (s *Secondary) Close() error {
	s.mu.Lock()
	s.closed = true
	l := s.active
	s.mu.Unlock()
	if l != nil {
		_ = l.conn.Close()
		<-l.done
	}
	return nil
}

// Serve runs the secondary's side of one link until it ends, and returns
// why it ended: the peer closed it, ctx was cancelled, the frame stream was
// invalid, or the primary was refused (ErrStaleEpoch, ErrMismatch). Serve
// closes conn before returning.
func (s *Secondary) Serve(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	l, err := s.handshake(conn)
	if err != nil {
		return err
	}
	l.work = make(chan *secOp)
	for range secWorkers {
		l.workers.Go(func() {
			for op := range l.work {
				s.run(l, op)
			}
		})
	}
	defer func() {
		// Finish every request already received, so that a new link
		// never races with this one's writes; their ACKs still go out
		// if the peer is listening.
		_ = conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		close(l.work)
		l.workers.Wait()
		s.mu.Lock()
		if s.active == l {
			s.active = nil
			s.syncing = false
			s.reason = "primary disconnected"
		}
		s.mu.Unlock()
		close(l.done)
	}()
	rd := bufio.NewReaderSize(conn, linkBufSize)
	alloc := func(n int) []byte {
		l.budget.acquire(n)
		return getPayload(n)
	}
	for {
		f, err := readFrameWith(rd, alloc)
		if err != nil {
			if ferr := l.failure(); ferr != nil {
				return fmt.Errorf("repl: secondary %s: %w", s.cfg.DiskID, ferr)
			}
			return fmt.Errorf("repl: secondary %s: read: %w", s.cfg.DiskID, err)
		}
		if err := s.dispatch(l, f); err != nil {
			return fmt.Errorf("repl: secondary %s: %w", s.cfg.DiskID, err)
		}
	}
}

// handshake reads the primary's HELLO, refuses it or answers with the
// secondary's, and installs the link as the active one.
func (s *Secondary) handshake(conn net.Conn) (*secLink, error) {
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	f, err := readFrame(conn)
	if err != nil {
		return nil, fmt.Errorf("repl: secondary handshake: %w", err)
	}
	if f.typ != msgHello {
		return nil, fmt.Errorf("repl: secondary handshake: %w: got type %d, want HELLO", errBadFrame, f.typ)
	}
	h, err := unmarshalHello(f.payload)
	if err != nil {
		return nil, fmt.Errorf("repl: secondary handshake: %w", err)
	}
	refuse := func(code uint32, err error) (*secLink, error) {
		_ = writeFrame(conn, &frame{typ: msgAck, code: code, payload: []byte(err.Error())})
		return nil, err
	}
	switch {
	case h.version != protoVersion || h.role != roleBytePrimary:
		return refuse(codeMismatch, fmt.Errorf("%w: version %d role %d", ErrMismatch, h.version, h.role))
	case h.diskID != s.cfg.DiskID || int64(h.size) != s.size:
		return refuse(codeMismatch, fmt.Errorf("%w: primary serves %q (%d bytes), this is %q (%d bytes)",
			ErrMismatch, h.diskID, h.size, s.cfg.DiskID, s.size))
	case h.epoch < s.epoch.Load():
		return refuse(codeStaleEpoch, fmt.Errorf("%w: primary epoch %d < secondary epoch %d",
			ErrStaleEpoch, h.epoch, s.epoch.Load()))
	}
	if err := s.SetEpoch(h.epoch); err != nil {
		return refuse(codeIO, err)
	}
	if err := s.meta.update(func(m *Meta) { m.LinkEpoch = max(m.LinkEpoch, h.epoch) }); err != nil {
		return refuse(codeIO, err)
	}

	l := &secLink{conn: conn, epoch: h.epoch, out: newFrameWriter(conn), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return refuse(codeBusy, fmt.Errorf("%w: secondary closed", ErrBusy))
	}
	old := s.active
	s.active = l
	s.reason = fmt.Sprintf("connected to primary at epoch %d", h.epoch)
	s.mu.Unlock()
	if old != nil {
		// The new primary's epoch is at least the old one's: it wins, and
		// the old link must be fully stopped before the new one writes.
		_ = old.conn.Close()
		<-old.done
	}
	uninstall := func() {
		s.mu.Lock()
		if s.active == l {
			s.active = nil
		}
		s.mu.Unlock()
		close(l.done)
	}
	// The epoch may have been raised between the check and now.
	if h.epoch < s.epoch.Load() {
		uninstall()
		return refuse(codeStaleEpoch, fmt.Errorf("%w: primary epoch %d", ErrStaleEpoch, h.epoch))
	}

	m := s.meta.get()
	var flags uint8
	if m.Inconsistent {
		flags |= helloInconsistent
	}
	if m.PrimaryUnclean {
		flags |= helloPrimaryUnclean
	}
	reply := &hello{version: protoVersion, role: roleByteSecondary, flags: flags, size: uint64(s.size),
		epoch: s.epoch.Load(), current: m.Current, history: m.History, diskID: s.cfg.DiskID}
	if err := writeFrame(conn, &frame{typ: msgHello, payload: reply.marshal()}); err != nil {
		uninstall()
		return nil, fmt.Errorf("repl: secondary handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return l, nil
}

// ack sends the answer to request seq. A failed send closes the link: the
// reader then sees the error and Serve returns.
func (l *secLink) ack(seq uint64, code uint32, msg string) {
	if len(msg) > maxMsgLen {
		msg = msg[:maxMsgLen]
	}
	if err := l.out.send(&frame{typ: msgAck, seq: seq, code: code, payload: []byte(msg)}); err != nil {
		_ = l.conn.Close()
	}
}

// fail ends the link from a worker, recording why for Serve.
func (l *secLink) fail(err error) {
	l.failMu.Lock()
	if l.failErr == nil {
		l.failErr = err
	}
	l.failMu.Unlock()
	_ = l.conn.Close()
}

func (l *secLink) failure() error {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	return l.failErr
}

// ackErr acknowledges seq with err, or with success if err is nil.
func (l *secLink) ackErr(seq uint64, err error) {
	if err != nil {
		l.ack(seq, codeIO, err.Error())
		return
	}
	l.ack(seq, codeOK, "")
}

// dispatch checks one frame in the reader and hands it to the workers, or
// executes it at once if it is a SYNCSTART or SYNCDONE. WRITE, TRIM and
// ZERO requests are ordered by range: each waits for the requests received
// before it that overlap it. A FLUSH waits for every request received
// before it, so it covers them all, not only the acknowledged ones.
// SYNCSTART and SYNCDONE wait for every request received before them and
// hold back those received after. A returned error ends the link.
func (s *Secondary) dispatch(l *secLink, f *frame) error {
	if f.epoch != l.epoch {
		l.ack(f.seq, codeInvalid, "epoch changed on the link")
		return fmt.Errorf("%w: frame epoch %d on a link at epoch %d", errBadFrame, f.epoch, l.epoch)
	}
	if cur := s.epoch.Load(); f.epoch < cur {
		l.ack(f.seq, codeStaleEpoch, fmt.Sprintf("epoch %d < %d", f.epoch, cur))
		return fmt.Errorf("%w: frame epoch %d < %d", ErrStaleEpoch, f.epoch, cur)
	}
	switch f.typ {
	case msgWrite, msgTrim, msgZero:
		if err := checkRange(f.off, f.length, s.size); err != nil {
			l.ack(f.seq, codeInvalid, err.Error())
			return err
		}
		op, waits := l.order.begin(int64(f.off), int64(f.length))
		if f.typ == msgWrite {
			l.writing.Add(1)
		}
		l.work <- &secOp{f: f, op: op, waits: waits}
	case msgFlush:
		l.work <- &secOp{f: f, waits: l.order.barrier()}
	case msgSyncStart, msgSyncDone:
		waitAll(l.order.barrier())
		return s.control(l, f)
	default:
		l.ack(f.seq, codeInvalid, "unexpected frame")
		return fmt.Errorf("%w: unexpected type %d", errBadFrame, f.typ)
	}
	return nil
}

// run executes one request in a worker, once what it waits for took
// effect, and acknowledges it. The epoch is checked again under applyMu
// right before the request takes effect, so that a request that waited
// while SetEpoch raised the epoch is refused, not applied.
func (s *Secondary) run(l *secLink, op *secOp) {
	waitAll(op.waits)
	f := op.f
	if f.typ == msgFlush {
		l.ackErr(f.seq, s.local.Flush())
		return
	}
	var err error
	s.applyMu.RLock()
	cur := s.epoch.Load()
	stale := f.epoch < cur
	if !stale {
		err = s.applyData(f)
	}
	s.applyMu.RUnlock()
	l.order.end(op.op)
	write, fua := f.typ == msgWrite, f.flags&flagFUA != 0
	if write {
		l.budget.release(len(f.payload))
		putPayload(f.payload)
		f.payload = nil
	}
	held := write && !stale && err == nil && !fua
	if held {
		// Queued before the count drops, so that whoever brings it to
		// zero sends this ACK too.
		if herr := l.out.hold(&frame{typ: msgAck, seq: f.seq}); herr != nil {
			_ = l.conn.Close()
		}
	}
	if write {
		if rerr := l.out.release(l.writing.Add(-1) == 0); rerr != nil {
			_ = l.conn.Close()
		}
	}
	switch {
	case held:
		return
	case stale:
		l.ack(f.seq, codeStaleEpoch, fmt.Sprintf("epoch %d < %d", f.epoch, cur))
		l.fail(fmt.Errorf("%w: frame epoch %d < %d", ErrStaleEpoch, f.epoch, cur))
		return
	case err == nil && fua:
		err = s.local.Flush()
	}
	l.ackErr(f.seq, err)
}

// applyData makes a WRITE, TRIM or ZERO take effect on the local disk.
func (s *Secondary) applyData(f *frame) error {
	off, length := int64(f.off), int64(f.length)
	var err error
	switch f.typ {
	case msgWrite:
		_, err = s.local.WriteAt(f.payload, off)
	case msgTrim:
		err = nbd.Trim(s.local, off, length)
	case msgZero:
		err = nbd.WriteZeroes(s.local, off, length, f.flags&flagMayTrim != 0)
	}
	if err == nil && f.flags&flagResync != 0 {
		s.addSynced(length)
	}
	return err
}

func (s *Secondary) addSynced(n int64) {
	s.mu.Lock()
	s.synced += n
	s.mu.Unlock()
}

// control executes a SYNCSTART or SYNCDONE, in the reader, once every
// request received before it took effect.
func (s *Secondary) control(l *secLink, f *frame) error {
	switch f.typ {
	case msgSyncStart:
		if len(f.payload) != 16 {
			l.ack(f.seq, codeInvalid, "bad SYNCSTART")
			return fmt.Errorf("%w: SYNCSTART body of %d bytes", errBadFrame, len(f.payload))
		}
		token := binary.BigEndian.Uint64(f.payload)
		total := int64(binary.BigEndian.Uint64(f.payload[8:]))
		// From the first resync write on, the disk is a mix of old and new
		// data: record that durably before acknowledging.
		err := s.meta.update(func(m *Meta) {
			m.Inconsistent = true
			m.Current = token
			m.PrimaryUnclean = false
		})
		if err == nil {
			s.mu.Lock()
			s.syncing, s.synced, s.total = true, 0, total
			s.reason = "resync in progress"
			s.mu.Unlock()
		}
		l.ackErr(f.seq, err)
	case msgSyncDone:
		g, err := unmarshalGenInfo(f.payload)
		if err != nil {
			l.ack(f.seq, codeInvalid, err.Error())
			return err
		}
		// The resynced data must be durable before the disk claims to be
		// consistent at the primary's generation.
		err = s.local.Flush()
		if err == nil {
			err = s.meta.update(func(m *Meta) {
				m.Current = g.current
				m.History = g.history
				m.Inconsistent = false
			})
		}
		if err == nil {
			s.mu.Lock()
			s.syncing = false
			s.reason = fmt.Sprintf("up to date with primary at epoch %d", l.epoch)
			s.mu.Unlock()
		}
		l.ackErr(f.seq, err)
	}
	return nil
}
