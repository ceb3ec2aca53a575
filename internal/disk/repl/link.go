package repl

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"time"
)

// pending is a request sent on a link and not yet acknowledged.
type pending struct {
	seq         uint64
	off, length int64
	guest       bool // a guest request (not resync or control): frozen, not failed, on link loss
	sent        time.Time
	done        chan error // buffered(1); receives exactly one result
}

// plink is the primary's side of one link.
type plink struct {
	p      *Primary
	conn   net.Conn
	epoch  uint64
	out    *frameWriter
	closed chan struct{}

	mu   sync.Mutex
	pend map[uint64]*pending
	dead bool
	err  error
}

// register records pd before its frame is sent, so its ACK cannot arrive
// unmatched. It fails once the link is dead.
func (l *plink) register(pd *pending) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return l.err
	}
	l.pend[pd.seq] = pd
	return nil
}

// send sends one frame, batched with those sent concurrently (see
// frameWriter).
func (l *plink) send(f *frame) error {
	if err := l.out.send(f); err != nil {
		return fmt.Errorf("repl: send: %w", err)
	}
	return nil
}

// fail kills the link once and hands back the requests still in flight;
// first says whether this call was the one that killed it.
func (l *plink) fail(cause error) (pends []*pending, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return nil, false
	}
	l.dead = true
	l.err = cause
	for _, pd := range l.pend {
		pends = append(pends, pd)
	}
	l.pend = nil
	close(l.closed)
	_ = l.conn.Close()
	return pends, true
}

// readLoop receives ACKs until the link dies. An error ACK for a guest
// request counts as losing the peer (its disk failed it), so the request
// stays unanswered until the control plane decides; a stale-epoch ACK
// makes the primary stale.
func (l *plink) readLoop() {
	rd := bufio.NewReaderSize(l.conn, linkBufSize)
	for {
		f, err := readFrame(rd)
		if err != nil {
			l.p.peerLost(l, fmt.Errorf("repl: receive: %w", err))
			return
		}
		if f.typ != msgAck {
			l.p.peerLost(l, fmt.Errorf("%w: primary got type %d", errBadFrame, f.typ))
			return
		}
		switch f.code {
		case codeOK:
		case codeStaleEpoch:
			err := codeErr(f.code, string(f.payload))
			pends, _ := l.fail(err)
			for _, pd := range pends {
				pd.done <- staleErr()
			}
			l.p.becomeStale(err)
			return
		default:
			l.p.peerLost(l, codeErr(f.code, string(f.payload)))
			return
		}
		l.mu.Lock()
		pd, ok := l.pend[f.seq]
		delete(l.pend, f.seq)
		l.mu.Unlock()
		if !ok {
			l.p.peerLost(l, fmt.Errorf("%w: ACK for unknown request %d", errBadFrame, f.seq))
			return
		}
		pd.done <- nil
	}
}

// watchdog declares the peer lost when its oldest unanswered request is
// older than timeout. A peer that is merely slow looks the same; the
// control plane, not this timer, decides what happens next (property 7).
func (l *plink) watchdog(timeout time.Duration) {
	t := time.NewTicker(max(timeout/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-l.closed:
			return
		case now := <-t.C:
			l.mu.Lock()
			var oldest time.Time
			for _, pd := range l.pend {
				if oldest.IsZero() || pd.sent.Before(oldest) {
					oldest = pd.sent
				}
			}
			l.mu.Unlock()
			if !oldest.IsZero() && now.Sub(oldest) > timeout {
				l.p.peerLost(l, fmt.Errorf("%w after %v", ErrAckTimeout, timeout))
				return
			}
		}
	}
}

// request sends a control or resync frame and waits for its ACK.
func (l *plink) request(f *frame) error {
	pd := &pending{seq: l.p.seq.Add(1), sent: time.Now(), done: make(chan error, 1)}
	if err := l.register(pd); err != nil {
		return err
	}
	f.seq, f.epoch = pd.seq, l.epoch
	if err := l.send(f); err != nil {
		l.p.peerLost(l, err)
	}
	return <-pd.done
}
