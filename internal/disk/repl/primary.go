package repl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// Defaults for Config fields left zero.
const (
	DefaultAckTimeout    = 2 * time.Second
	DefaultResyncWorkers = 8
)

// Config configures a [Primary].
type Config struct {
	// DiskID names the disk; the secondary must serve the same one.
	DiskID string
	// DiskPath is the image's path. The metadata and the dirty bitmap live
	// next to it (MetaPath, BitmapPath); the image itself is opened
	// read-only to find holes (SEEK_DATA) during a full sync.
	DiskPath string
	// Backend is the local disk, usually an nbd.FileBackend over DiskPath.
	Backend nbd.Backend
	// MetaPath and BitmapPath override where the metadata and the dirty
	// bitmap live (default MetaPath(DiskPath), BitmapPath(DiskPath)): a
	// copy primary (see SeedCopyMeta) keeps its own next to the serving
	// primary's.
	MetaPath, BitmapPath string
	// Epoch is the epoch the control plane assigned with the primary role.
	Epoch uint64
	// RegionSize is the area one bitmap bit covers, a power of two;
	// default DefaultRegionSize. It must not change for an existing bitmap.
	RegionSize int64
	// AckTimeout is how long the peer may take to acknowledge a request
	// before the link counts as lost; default DefaultAckTimeout.
	AckTimeout time.Duration
	// OnPeerLost is called, in its own goroutine, when the link to the
	// secondary is lost; I/O is frozen meanwhile. If it returns a Decision
	// with PeerOutdated and an Epoch above the lost link's, the primary
	// continues degraded; otherwise it stays frozen. Its ctx is cancelled
	// by Close. Nil means: stay frozen until Degrade is called.
	OnPeerLost func(ctx context.Context) Decision
	// OnProgress, if set, receives resync progress at most every 100 ms and
	// once when the resync completes. It must not block for long.
	OnProgress func(Progress)
	// ResyncWorkers is the number of regions resynced concurrently;
	// default DefaultResyncWorkers.
	ResyncWorkers int
}

// pstate is the primary's state machine.
type pstate int

const (
	psFrozen    pstate = iota // no link and no consent to write alone: writes wait
	psConnected               // writes go to both disks
	psDegraded                // writes go to the local disk and mark the bitmap
	psStale                   // a higher epoch exists: writes fail
	psClosed
)

// Primary is an [nbd.Backend] that mirrors every write to a secondary
// before it returns (protocol C). Reads are served from the local disk
// only. It also implements nbd.Trimmer, nbd.ZeroWriter, nbd.FUAWriter and
// nbd.MultiConnBackend. All methods are safe for concurrent use, and many
// writes may be in flight at once: they are pipelined on the link and
// matched to their acknowledgements by sequence number.
//
// A new Primary is frozen: writes wait until Connect links it to its
// secondary or Degrade lets it write alone.
type Primary struct {
	cfg   Config
	local nbd.Backend
	size  int64
	meta  *metaStore
	bm    *Bitmap
	locks *regionLocks
	order rangeTracker // orders overlapping guest requests (see do)
	holes *os.File     // DiskPath, read-only, for SEEK_DATA
	seq   atomic.Uint64
	// syncMu serializes the end of a resync with marking regions that a
	// local write failed (localFailed), so that no such mark is left
	// behind when the resync declares the peer up to date.
	syncMu sync.Mutex
	// repaired is set when a region was marked by localFailed during the
	// current link: the peer may then hold data where this disk has a
	// hole, so resync must not skip holes.
	repaired atomic.Bool

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // link and resync goroutines
	connMu sync.Mutex     // serializes Connect, Degrade and Close

	mu       sync.Mutex
	cond     *sync.Cond // broadcast on every state change
	state    pstate
	epoch    uint64
	link     *plink
	frozen   []*pending // guest requests in flight when the link was lost
	deciding bool       // OnPeerLost is running
	reason   string
	needFull bool // the primary did not shut down cleanly last time
	syncing  bool
	prog     progressCounter
}

// progressCounter tracks one resync. Guarded by Primary.mu.
type progressCounter struct {
	total, done, sent int64
	start, lastReport time.Time
	finished          bool
}

// NewPrimary opens the disk's metadata and bitmap and returns a frozen
// Primary. It refuses a disk left inconsistent by an interrupted resync
// (ErrInconsistent) and an epoch lower than one the disk has already seen
// (ErrStaleEpoch).
func NewPrimary(cfg Config) (*Primary, error) {
	if cfg.Backend == nil || cfg.DiskPath == "" || cfg.DiskID == "" {
		return nil, fmt.Errorf("repl: primary: Backend, DiskPath and DiskID are required")
	}
	if cfg.RegionSize == 0 {
		cfg.RegionSize = DefaultRegionSize
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.ResyncWorkers <= 0 {
		cfg.ResyncWorkers = DefaultResyncWorkers
	}
	if cfg.MetaPath == "" {
		cfg.MetaPath = MetaPath(cfg.DiskPath)
	}
	if cfg.BitmapPath == "" {
		cfg.BitmapPath = BitmapPath(cfg.DiskPath)
	}
	meta, err := openMeta(cfg.MetaPath, cfg.DiskID)
	if err != nil {
		return nil, err
	}
	m := meta.get()
	if m.Inconsistent {
		return nil, fmt.Errorf("repl: primary %s: %w", cfg.DiskID, ErrInconsistent)
	}
	if cfg.Epoch < m.Epoch {
		return nil, fmt.Errorf("repl: primary %s: %w: epoch %d < %d already seen", cfg.DiskID, ErrStaleEpoch, cfg.Epoch, m.Epoch)
	}
	size := cfg.Backend.Size()
	bm, err := OpenBitmap(cfg.BitmapPath, size, cfg.RegionSize)
	if err != nil {
		return nil, err
	}
	holes, err := os.Open(cfg.DiskPath)
	if err != nil {
		bm.Close()
		return nil, fmt.Errorf("repl: primary: %w", err)
	}
	err = meta.update(func(m *Meta) {
		m.PrimaryUnclean = true
		m.Epoch = cfg.Epoch
		if m.Current == 0 {
			m.Current = newGen()
		}
	})
	if err != nil {
		bm.Close()
		holes.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Primary{cfg: cfg, local: cfg.Backend, size: size, meta: meta, bm: bm, holes: holes,
		locks: &regionLocks{regionSize: cfg.RegionSize}, ctx: ctx, cancel: cancel,
		state: psFrozen, epoch: cfg.Epoch, needFull: m.PrimaryUnclean,
		reason: "not connected to the secondary yet"}
	p.cond = sync.NewCond(&p.mu)
	return p, nil
}

// Bitmap returns the primary's dirty bitmap, for inspection.
func (p *Primary) Bitmap() *Bitmap { return p.bm }

// Meta returns a copy of the disk's replication metadata.
func (p *Primary) Meta() Meta { return p.meta.get() }

// Size returns the size of the disk.
func (p *Primary) Size() int64 { return p.size }

// ReadAt reads from the local disk only: under protocol C it has every
// write the secondary has.
func (p *Primary) ReadAt(b []byte, off int64) (int, error) { return p.local.ReadAt(b, off) }

// CanMultiConn reports whether the local backend allows several NBD
// connections; replication adds no restriction, because a write returns
// only once both disks have it and Flush covers every returned write.
func (p *Primary) CanMultiConn() bool {
	m, ok := p.local.(nbd.MultiConnBackend)
	return ok && m.CanMultiConn()
}

// WriteAt writes b at off on both disks and returns when both have it.
// While the primary is frozen it blocks; while degraded it marks the
// regions dirty (durably, for newly dirty regions) before writing locally.
// It does not retain b after it returns.
func (p *Primary) WriteAt(b []byte, off int64) (int, error) {
	return p.writeAt(b, off, false)
}

// WriteAtFUA is WriteAt, and makes b durable on both disks before it
// returns.
func (p *Primary) WriteAtFUA(b []byte, off int64) (int, error) {
	return p.writeAt(b, off, true)
}

func (p *Primary) writeAt(b []byte, off int64, fua bool) (int, error) {
	if off < 0 || off+int64(len(b)) > p.size {
		return 0, fmt.Errorf("repl: write %d+%d beyond disk size %d: %w", off, len(b), p.size, nbd.ErrInvalid)
	}
	done := 0
	for done < len(b) || len(b) == 0 {
		chunk := b[done:min(len(b), done+maxWriteLen)]
		o := off + int64(done)
		var flags uint8
		local := func() error {
			_, err := p.local.WriteAt(chunk, o)
			return err
		}
		if fua {
			flags = flagFUA
			local = func() error { _, err := nbd.WriteAtFUA(p.local, chunk, o); return err }
		}
		if len(chunk) == 0 {
			return 0, nil
		}
		if err := p.do(msgWrite, flags, o, int64(len(chunk)), chunk, local); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return done, nil
}

// Flush makes every write that returned before it durable on both disks.
func (p *Primary) Flush() error {
	return p.do(msgFlush, 0, 0, 0, nil, p.local.Flush)
}

// Trim discards a range on both disks. Like nbd.Trimmer it is a hint: if
// the local backend cannot trim, it does nothing at all, so the replicas
// stay identical.
func (p *Primary) Trim(off, length int64) error {
	t, ok := p.local.(nbd.Trimmer)
	if !ok || length == 0 {
		return nil
	}
	if err := p.checkRange(off, length); err != nil {
		return err
	}
	return p.do(msgTrim, 0, off, length, nil, func() error { return t.Trim(off, length) })
}

// WriteZeroes makes a range read as zeroes on both disks, without sending
// data. mayTrim has the meaning of nbd.ZeroWriter.
func (p *Primary) WriteZeroes(off, length int64, mayTrim bool) error {
	if length == 0 {
		return nil
	}
	if err := p.checkRange(off, length); err != nil {
		return err
	}
	var flags uint8
	if mayTrim {
		flags = flagMayTrim
	}
	local := func() error { return nbd.WriteZeroes(p.local, off, length, mayTrim) }
	return p.do(msgZero, flags, off, length, nil, local)
}

func (p *Primary) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off+length > p.size || off+length < off {
		return fmt.Errorf("repl: range %d+%d beyond disk size %d: %w", off, length, p.size, nbd.ErrInvalid)
	}
	return nil
}

// shutdownErr is what guest requests get once the primary is closed: the
// NBD client is told to disconnect.
func shutdownErr() error { return fmt.Errorf("%w: %w", ErrClosed, nbd.ErrShutdown) }

// staleErr is what guest requests get once a higher epoch was seen.
func staleErr() error { return fmt.Errorf("%w: %w", ErrStaleEpoch, nbd.ErrShutdown) }

// do runs one guest request: locally and on the peer in parallel when
// connected, locally after marking the bitmap when degraded, and not at
// all (waiting) when frozen. local performs the local half.
//
// Requests on overlapping ranges take effect in the same order on both
// disks: each waits until every overlapping request that came before it
// has completed. Otherwise two concurrent overlapping writes could land in
// one order here and in the other on the peer, and leave the replicas
// different.
//
// If the local half fails while the peer applied the request, the request
// fails and localFailed records the range for resync, so the disks do not
// stay silently different.
func (p *Primary) do(typ msgType, flags uint8, off, length int64, data []byte, local func() error) error {
	if typ != msgFlush {
		rl := p.locks.rlockRange(off, length)
		defer rl.unlock()
		op, waits := p.order.begin(off, length)
		defer p.order.end(op)
		waitAll(waits)
	}
	for {
		p.mu.Lock()
		for p.state == psFrozen {
			p.cond.Wait()
		}
		state, l, epoch := p.state, p.link, p.epoch
		p.mu.Unlock()
		switch state {
		case psClosed:
			return shutdownErr()
		case psStale:
			return staleErr()
		case psDegraded:
			if typ != msgFlush {
				if err := p.bm.Mark(off, length); err != nil {
					return err
				}
			}
			return local()
		}

		pd := &pending{seq: p.seq.Add(1), off: off, length: length, guest: true,
			sent: time.Now(), done: make(chan error, 1)}
		if err := l.register(pd); err != nil {
			p.peerLost(l, err) // make sure the state has left psConnected
			continue
		}
		// Sent before the local half runs, so the two disks write at the
		// same time; frames sent meanwhile by other requests go out in
		// the same batch (frameWriter).
		err := l.send(&frame{typ: typ, flags: flags, seq: pd.seq, epoch: epoch,
			off: uint64(off), length: uint64(length), payload: data})
		if err != nil {
			p.peerLost(l, err)
		}
		lerr := local()
		perr := <-pd.done
		if lerr != nil && typ != msgFlush && perr == nil {
			if err := p.localFailed(l, off, length); err != nil {
				lerr = errors.Join(lerr, err)
			}
		}
		if perr != nil {
			return perr
		}
		if lerr != nil {
			return fmt.Errorf("repl: local %v: %w", typ, lerr)
		}
		return nil
	}
}

// localFailed handles a guest request that the local disk failed while
// the peer applied it (or, if the link was lost meanwhile, may have): the
// disks may now differ in [off, off+length). It marks the regions dirty,
// durably and relative to the generation the peer holds (BitmapGen), and
// if connected starts a resync, which sends them from this disk. So the
// peer ends up equal to this disk again, and until it is, a reconnection
// resyncs them. If the marks cannot be recorded, the primary drops the
// link and does a full sync on its next connection, even after a restart.
func (p *Primary) localFailed(l *plink, off, length int64) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	var err error
	if p.meta.get().BitmapGen == 0 {
		err = p.meta.update(func(m *Meta) {
			if m.BitmapGen == 0 {
				m.BitmapGen = m.Current
			}
		})
	}
	if err == nil {
		err = p.bm.Mark(off, length)
	}
	if err != nil {
		err = fmt.Errorf("repl: cannot record a range that may differ on the peer: %w", err)
		p.mu.Lock()
		p.needFull = true // and Close keeps PrimaryUnclean set
		p.mu.Unlock()
		p.peerLost(l, err)
		return err
	}
	p.repaired.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == psConnected && p.link == l && !p.syncing {
		p.syncing = true
		p.reason = fmt.Sprintf("connected at epoch %d, resync of regions the local disk failed to write", l.epoch)
		token := p.meta.get().BitmapGen
		p.wg.Go(func() { p.resync(l, token, false) })
	}
	return nil
}

// Connect links the primary to its secondary over conn (which it then
// owns), after a handshake that checks the disk, the epochs and the
// generation identifiers. On success the primary is connected: guest
// requests go to both disks, and if the secondary lacks data a resync
// starts in the background. It fails with ErrStaleEpoch (the primary is
// then stale for good: writes fail), ErrDiverged, ErrPeerAhead,
// ErrMismatch, or ErrFrozen if the primary is waiting for a decision on a
// lost link. ctx bounds the handshake only.
func (p *Primary) Connect(ctx context.Context, conn net.Conn) (err error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	defer func() {
		if err != nil {
			_ = conn.Close()
		}
	}()
	p.mu.Lock()
	state, epoch := p.state, p.epoch
	busy := p.deciding || len(p.frozen) > 0
	p.mu.Unlock()
	switch {
	case state == psClosed:
		return shutdownErr()
	case state == psStale:
		return staleErr()
	case state == psConnected:
		return fmt.Errorf("repl: primary %s: already connected", p.cfg.DiskID)
	case state == psFrozen && busy:
		return fmt.Errorf("repl: primary %s: %w: waiting for the control plane", p.cfg.DiskID, ErrFrozen)
	}

	peer, err := p.handshake(ctx, conn, epoch)
	if err != nil {
		if errors.Is(err, ErrStaleEpoch) {
			p.becomeStale(err)
		}
		p.setReason(err.Error())
		return err
	}
	m := p.meta.get()
	p.mu.Lock()
	needFull := p.needFull
	p.mu.Unlock()
	mode, err := planSync(m, needFull, peer)
	if err != nil {
		err = fmt.Errorf("repl: primary %s: %w", p.cfg.DiskID, err)
		p.setReason(err.Error())
		return err
	}

	var token uint64
	peerZero := false
	switch mode {
	case syncNone:
		if p.bm.Count() > 0 {
			if err := p.bm.ClearAll(); err != nil {
				return err
			}
		}
	case syncBitmap:
		token = m.BitmapGen
	case syncFull, syncFullToEmpty:
		peerZero = mode == syncFullToEmpty
		if err := p.bm.MarkAll(); err != nil {
			return err
		}
		token = newGen()
	}
	err = p.meta.update(func(m *Meta) {
		m.Epoch = max(m.Epoch, epoch)
		m.LinkEpoch = max(m.LinkEpoch, epoch)
		m.BitmapGen = token
	})
	if err != nil {
		return err
	}

	l := &plink{p: p, conn: conn, epoch: epoch, out: newFrameWriter(conn), pend: make(map[uint64]*pending),
		closed: make(chan struct{})}
	p.mu.Lock()
	if p.state == psClosed {
		p.mu.Unlock()
		return shutdownErr()
	}
	p.link = l
	p.state = psConnected
	p.repaired.Store(false)
	p.syncing = mode != syncNone
	if p.syncing {
		p.reason = fmt.Sprintf("connected at epoch %d, resync (%v) in progress", epoch, mode)
	} else {
		p.reason = fmt.Sprintf("connected at epoch %d, peer up to date", epoch)
	}
	p.cond.Broadcast()
	p.mu.Unlock()

	p.wg.Add(2)
	go func() { defer p.wg.Done(); l.readLoop() }()
	go func() { defer p.wg.Done(); l.watchdog(p.cfg.AckTimeout) }()
	if mode != syncNone {
		p.wg.Go(func() { p.resync(l, token, peerZero) })
	}
	return nil
}

// handshake exchanges HELLOs and returns the secondary's.
func (p *Primary) handshake(ctx context.Context, conn net.Conn, epoch uint64) (*hello, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetDeadline(time.Time{})

	m := p.meta.get()
	h := &hello{version: protoVersion, role: roleBytePrimary, size: uint64(p.size), epoch: epoch,
		current: m.Current, history: m.History, diskID: p.cfg.DiskID}
	if err := writeFrame(conn, &frame{typ: msgHello, payload: h.marshal()}); err != nil {
		return nil, fmt.Errorf("repl: primary handshake: %w", err)
	}
	f, err := readFrame(conn)
	if err != nil {
		return nil, fmt.Errorf("repl: primary handshake: %w", err)
	}
	if f.typ == msgAck {
		return nil, fmt.Errorf("repl: primary handshake refused: %w", codeErr(f.code, string(f.payload)))
	}
	if f.typ != msgHello {
		return nil, fmt.Errorf("repl: primary handshake: %w: got type %d", errBadFrame, f.typ)
	}
	peer, err := unmarshalHello(f.payload)
	if err != nil {
		return nil, fmt.Errorf("repl: primary handshake: %w", err)
	}
	if peer.version != protoVersion || peer.role != roleByteSecondary ||
		peer.diskID != p.cfg.DiskID || int64(peer.size) != p.size {
		return nil, fmt.Errorf("repl: primary handshake: %w: peer has %q (%d bytes) v%d role %d",
			ErrMismatch, peer.diskID, peer.size, peer.version, peer.role)
	}
	return peer, nil
}

// codeErr turns an ACK error code into an error.
func codeErr(code uint32, msg string) error {
	var base error
	switch code {
	case codeStaleEpoch:
		base = ErrStaleEpoch
	case codeMismatch:
		base = ErrMismatch
	case codeBusy:
		base = ErrBusy
	case codeInvalid:
		base = errBadFrame
	default:
		base = ErrPeerIO
	}
	return fmt.Errorf("%w: %s", base, msg)
}

// syncMode is what a new link needs before the peer is up to date.
type syncMode int

const (
	syncNone        syncMode = iota // same generation: nothing to send
	syncBitmap                      // peer at BitmapGen: send the dirty regions
	syncFull                        // peer is an older ancestor, or crashed state: send everything
	syncFullToEmpty                 // brand-new peer: send everything but holes
)

func (m syncMode) String() string {
	return [...]string{"none", "bitmap", "full", "full-to-empty"}[m]
}

// planSync decides, from the primary's metadata and the secondary's HELLO,
// how to bring the secondary up to date, or that it must not be: the
// generation rules described on Meta. needFull is set when this primary
// did not shut down cleanly.
func planSync(m Meta, needFull bool, peer *hello) (syncMode, error) {
	inconsistent := peer.flags&helloInconsistent != 0
	unclean := needFull || peer.flags&helloPrimaryUnclean != 0
	full := func(mode syncMode) syncMode {
		if unclean {
			return syncFull
		}
		return mode
	}
	switch {
	case peer.current == 0 && len(peer.history) == 0 && !inconsistent:
		return syncFullToEmpty, nil
	case inconsistent && m.BitmapGen != 0 && peer.current == m.BitmapGen:
		// An interrupted resync from this primary: the bitmap still has
		// every region it had not finished.
		return syncBitmap, nil
	case inconsistent:
		return syncFull, nil
	case m.BitmapGen != 0 && peer.current == m.BitmapGen:
		return full(syncBitmap), nil
	case peer.current == m.Current:
		return full(syncNone), nil
	case contains(m.History, peer.current):
		return syncFull, nil
	case contains(peer.history, m.Current):
		return 0, fmt.Errorf("%w: primary generation %x is in the peer's history", ErrPeerAhead, m.Current)
	}
	return 0, fmt.Errorf("%w: primary generation %x (history %x), peer %x (history %x)",
		ErrDiverged, m.Current, m.History, peer.current, peer.history)
}

// Degrade lets a frozen primary write without its peer. The caller must
// first have had the control plane mark the peer outdated and assign epoch,
// which must be at least the primary's epoch and higher than any epoch the
// disk was linked under (property 4). Requests frozen in flight are marked
// dirty, then complete. OnPeerLost's decision is applied through Degrade.
func (p *Primary) Degrade(epoch uint64) error {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	m := p.meta.get()
	p.mu.Lock()
	state, cur, frozen := p.state, p.epoch, append([]*pending(nil), p.frozen...)
	p.mu.Unlock()
	switch {
	case state == psClosed:
		return shutdownErr()
	case state == psStale:
		return staleErr()
	case state == psConnected:
		return fmt.Errorf("repl: primary %s: cannot degrade while connected", p.cfg.DiskID)
	case epoch < cur || epoch <= m.LinkEpoch:
		return fmt.Errorf("repl: primary %s: degrade at epoch %d: %w: must be >= %d and > link epoch %d",
			p.cfg.DiskID, epoch, ErrStaleEpoch, cur, m.LinkEpoch)
	case state == psDegraded:
		p.mu.Lock()
		p.epoch = epoch
		p.mu.Unlock()
		return p.meta.update(func(m *Meta) { m.Epoch = max(m.Epoch, epoch) })
	}
	// A new generation first: from now on this disk holds data its peer
	// never saw, and the bitmap records it relative to the peer's.
	err := p.meta.update(func(m *Meta) {
		if m.BitmapGen == 0 {
			m.BitmapGen = m.Current
		}
		m.History = append([]uint64{m.Current}, m.History...)
		m.Current = newGen()
		m.Epoch = max(m.Epoch, epoch)
	})
	if err != nil {
		return err
	}
	for _, pd := range frozen {
		if pd.guest && pd.length > 0 { // a FLUSH changes no data
			if err := p.bm.Mark(pd.off, pd.length); err != nil {
				return err
			}
		}
	}
	p.mu.Lock()
	p.state = psDegraded
	p.epoch = epoch
	p.frozen = nil
	p.reason = fmt.Sprintf("degraded at epoch %d: peer outdated by the control plane", epoch)
	p.cond.Broadcast()
	p.mu.Unlock()
	for _, pd := range frozen {
		pd.done <- nil
	}
	return nil
}

// peerLost handles the loss of link l: the primary freezes, requests in
// flight wait for the control plane's decision, and OnPeerLost is asked.
// It is idempotent.
func (p *Primary) peerLost(l *plink, cause error) {
	pends, first := l.fail(cause)
	if !first {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pd := range pends {
		if pd.guest && p.state != psClosed {
			p.frozen = append(p.frozen, pd)
		} else if p.state == psClosed {
			pd.done <- shutdownErr()
		} else {
			pd.done <- fmt.Errorf("repl: link lost: %w", cause)
		}
	}
	if p.link != l || p.state != psConnected {
		return
	}
	p.link = nil
	p.state = psFrozen
	p.syncing = false
	p.reason = fmt.Sprintf("frozen: lost the secondary (%v); waiting for the control plane", cause)
	p.deciding = true
	go p.decide()
}

// DropLink cuts the link to the peer as if it had been lost, with cause:
// the primary freezes and asks the control plane through OnPeerLost, as on
// any loss. The control plane calls for it when it gives the replica to
// another host: the old peer must stop counting as the replica before the
// new one can link. It reports whether there was a link to cut.
func (p *Primary) DropLink(cause error) bool {
	p.mu.Lock()
	l := p.link
	p.mu.Unlock()
	if l == nil {
		return false
	}
	p.peerLost(l, cause)
	return true
}

// decide asks the control plane, through OnPeerLost, whether to continue
// degraded. It is not waited for by Close: a hung callback must not block
// shutdown, and its ctx is cancelled.
func (p *Primary) decide() {
	var d Decision
	if p.cfg.OnPeerLost != nil {
		d = p.cfg.OnPeerLost(p.ctx)
	}
	p.mu.Lock()
	p.deciding = false
	p.mu.Unlock()
	var err error
	if !d.PeerOutdated {
		err = errors.New("the control plane did not mark the peer outdated")
	} else {
		err = p.Degrade(d.Epoch)
	}
	if err != nil {
		p.mu.Lock()
		if p.state == psFrozen {
			p.reason = fmt.Sprintf("frozen: lost the secondary; staying frozen: %v", err)
		}
		p.mu.Unlock()
	}
}

// becomeStale makes every request fail: a higher epoch exists, so this
// primary is a zombie and must not write (property 3).
func (p *Primary) becomeStale(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == psClosed {
		return
	}
	p.state = psStale
	p.link = nil
	p.syncing = false
	p.reason = fmt.Sprintf("stale: %v", cause)
	for _, pd := range p.frozen {
		pd.done <- staleErr()
	}
	p.frozen = nil
	p.cond.Broadcast()
}

func (p *Primary) setReason(r string) {
	p.mu.Lock()
	p.reason = r
	p.mu.Unlock()
}

// Status returns a snapshot of the primary's state.
func (p *Primary) Status() Status {
	dirty := p.bm.DirtyBytes()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{Role: RolePrimary, Epoch: p.epoch, SyncedBytes: p.prog.done, TotalBytes: p.prog.total,
		DirtyBytes: dirty, Reason: p.reason}
	switch p.state {
	case psConnected:
		st.State = StateUpToDate
		if p.syncing {
			st.State = StateSyncing
		}
	case psDegraded:
		st.State = StateDegraded
	default:
		st.State = StateFrozen
	}
	return st
}

// Progress returns the progress of the current or last resync.
func (p *Primary) Progress() Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.progressLocked(time.Now())
}

func (p *Primary) progressLocked(now time.Time) Progress {
	c := &p.prog
	pr := Progress{TotalBytes: c.total, DoneBytes: c.done, LeftBytes: c.total - c.done,
		SentBytes: c.sent, Done: c.finished}
	if el := now.Sub(c.start).Seconds(); el > 0 && !c.start.IsZero() {
		pr.Rate = float64(c.done) / el
		if pr.Rate > 0 && !c.finished {
			pr.ETA = time.Duration(float64(pr.LeftBytes) / pr.Rate * float64(time.Second))
		}
	}
	return pr
}

// Close stops replication. Requests in flight or frozen fail with an error
// wrapping ErrClosed and nbd.ErrShutdown; any whose peer acknowledgement
// is missing are marked dirty first, so the next connection resends them.
// It flushes the local disk, records a clean shutdown, and closes the
// bitmap; it does not close the Backend.
func (p *Primary) Close() error {
	p.connMu.Lock()
	p.mu.Lock()
	if p.state == psClosed {
		p.mu.Unlock()
		p.connMu.Unlock()
		return nil
	}
	p.state = psClosed
	l := p.link
	p.link = nil
	frozen := p.frozen
	p.frozen = nil
	p.reason = "closed"
	p.cond.Broadcast()
	p.mu.Unlock()
	p.connMu.Unlock()
	p.cancel()

	var unacked []*pending
	if l != nil {
		pends, _ := l.fail(ErrClosed)
		unacked = pends
	}
	unacked = append(unacked, frozen...)
	var errs []error
	if len(unacked) > 0 {
		// These writes may be on one disk only: track them, relative to
		// the peer's current generation if nothing is tracked yet.
		errs = append(errs, p.meta.update(func(m *Meta) {
			if m.BitmapGen == 0 {
				m.BitmapGen = m.Current
			}
		}))
		for _, pd := range unacked {
			if pd.guest && pd.length > 0 {
				errs = append(errs, p.bm.Mark(pd.off, pd.length))
			}
		}
	}
	for _, pd := range unacked {
		pd.done <- shutdownErr()
	}
	p.wg.Wait()
	errs = append(errs, p.local.Flush())
	// A primary that still owes its peer a full sync (it was opened
	// after an unclean shutdown and never completed one, or could not
	// record a range) stays unclean, so the next one does it.
	p.mu.Lock()
	needFull := p.needFull
	p.mu.Unlock()
	if err := errors.Join(errs...); err == nil && !needFull {
		errs = append(errs, p.meta.update(func(m *Meta) { m.PrimaryUnclean = false }))
	}
	errs = append(errs, p.bm.Close(), p.holes.Close())
	return errors.Join(errs...)
}
