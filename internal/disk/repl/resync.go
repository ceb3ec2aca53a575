package repl

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// progressInterval limits how often OnProgress is called.
const progressInterval = 100 * time.Millisecond

// resync brings the peer of link l up to date by sending every dirty
// region, while guest I/O continues. token is the generation the peer
// records while it is inconsistent, so that an interrupted resync can
// resume from the bitmap. peerZero says the peer is brand new (all
// zeroes), so regions that are holes here need not be sent at all.
// Losing the link just ends it: the bitmap keeps what is left.
func (p *Primary) resync(l *plink, token uint64, peerZero bool) {
	total := p.bm.DirtyBytes()
	p.mu.Lock()
	p.prog = progressCounter{total: total, start: time.Now()}
	p.mu.Unlock()

	for {
		var body [16]byte
		binary.BigEndian.PutUint64(body[:], token)
		binary.BigEndian.PutUint64(body[8:], uint64(total))
		if err := l.request(&frame{typ: msgSyncStart, payload: body[:]}); err != nil {
			return
		}
		for p.bm.Count() > 0 {
			if err := p.resyncPass(l, peerZero); err != nil {
				return
			}
		}
		m := p.meta.get()
		done := &genInfo{current: m.Current, history: m.History}
		if err := l.request(&frame{typ: msgSyncDone, payload: done.marshal()}); err != nil {
			return
		}
		// A local write may have failed, and marked a region, since the
		// last pass (localFailed): then the peer is not up to date after
		// all, and the resync goes on. syncMu stays held from this check
		// to the end, so that a later mark starts a new resync instead.
		p.syncMu.Lock()
		if p.bm.Count() == 0 {
			break
		}
		p.syncMu.Unlock()
		total = p.bm.DirtyBytes()
		p.mu.Lock()
		p.prog.total += total
		p.mu.Unlock()
	}
	if err := p.meta.update(func(m *Meta) { m.BitmapGen = 0 }); err != nil {
		p.syncMu.Unlock()
		p.peerLost(l, err)
		return
	}
	p.mu.Lock()
	if p.link == l {
		p.syncing = false
		p.needFull = false
		p.prog.finished = true
		p.reason = fmt.Sprintf("connected at epoch %d, peer up to date", l.epoch)
	}
	pr := p.progressLocked(time.Now())
	p.mu.Unlock()
	p.syncMu.Unlock()
	if p.cfg.OnProgress != nil {
		p.cfg.OnProgress(pr)
	}
}

// resyncPass sends each region dirty at the start of the pass, with
// ResyncWorkers regions in flight. It returns the first error.
func (p *Primary) resyncPass(l *plink, peerZero bool) error {
	regions := make(chan int)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for range p.cfg.ResyncWorkers {
		wg.Go(func() {
			for i := range regions {
				if err := p.syncRegion(l, i, peerZero); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := p.bm.NextDirty(0); i >= 0; i = p.bm.NextDirty(i + 1) {
		select {
		case regions <- i:
		case <-l.closed:
		}
		if isClosed(l.closed) {
			break
		}
	}
	close(regions)
	wg.Wait()
	if firstErr == nil && isClosed(l.closed) {
		firstErr = fmt.Errorf("repl: resync: link closed")
	}
	return firstErr
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// syncRegion sends region i to the peer and clears its bit. It holds the
// region's write lock throughout, so no guest write to the region can run
// between reading it here and the peer applying it (see regionLocks).
func (p *Primary) syncRegion(l *plink, i int, peerZero bool) error {
	unlock := p.locks.lockRegion(i)
	defer unlock()
	if !p.bm.IsDirty(i) {
		return nil
	}
	off := int64(i) * p.cfg.RegionSize
	n := min(p.cfg.RegionSize, p.size-off)
	hole := isHole(p.holes, off, n)
	var buf []byte
	if !hole {
		buf = make([]byte, n)
		if _, err := p.local.ReadAt(buf, off); err != nil {
			return fmt.Errorf("repl: resync read: %w", err)
		}
		hole = allZero(buf)
	}
	var sent int64
	switch {
	case hole && peerZero && !p.repaired.Load():
	case hole:
		f := &frame{typ: msgZero, flags: flagMayTrim | flagResync, off: uint64(off), length: uint64(n)}
		if err := l.request(f); err != nil {
			return err
		}
	default:
		f := &frame{typ: msgWrite, flags: flagResync, off: uint64(off), length: uint64(n), payload: buf}
		if err := l.request(f); err != nil {
			return err
		}
		sent = n
	}
	if err := p.bm.Clear(i); err != nil {
		return err
	}
	p.mu.Lock()
	p.prog.done += n
	p.prog.sent += sent
	now := time.Now()
	report := p.cfg.OnProgress != nil && now.Sub(p.prog.lastReport) >= progressInterval
	var pr Progress
	if report {
		p.prog.lastReport = now
		pr = p.progressLocked(now)
	}
	p.mu.Unlock()
	if report {
		p.cfg.OnProgress(pr)
	}
	return nil
}
