package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// request is one request of the transmission phase, from reading to reply.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	off    uint64
	length uint32
	seq    uint64    // position in the connection's request stream
	start  time.Time // when the header was read

	// errno, if not 0, is the reply's error; set by validation, the
	// server does not call the backend.
	errno uint32
	// tracked marks write-type requests that flushes wait for.
	tracked bool
	// buf holds a WRITE's payload or a READ's data.
	buf *[]byte
}

// isWriteCmd reports whether typ changes the export's contents.
func isWriteCmd(typ uint16) bool {
	return typ == cmdWrite || typ == cmdTrim || typ == cmdWriteZeroes
}

// transmit runs the transmission phase for exp until the client
// disconnects, breaks the protocol, or the connection fails.
func (c *conn) transmit(exp *export) error {
	n := c.s.cfg.MaxInFlight
	c.exp = exp
	c.since = time.Now()
	c.slots = make(chan struct{}, n)
	c.work = make(chan *request)
	c.replies = make(chan *request, n)
	c.writes.init()

	c.s.mu.Lock()
	c.s.conns[c] = struct{}{}
	c.s.mu.Unlock()
	defer func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}()

	var workers sync.WaitGroup
	for range n {
		workers.Go(c.worker)
	}
	writeErr := make(chan error, 1)
	go func() { writeErr <- c.writer() }()

	err := c.readLoop()

	// Finish every request already read, send the replies, then close.
	close(c.work)
	workers.Wait()
	close(c.replies)
	// A failed reply write closes the connection, so the reader's error
	// is then only a consequence: report the writer's.
	if werr := <-writeErr; werr != nil && !errors.Is(err, ErrProtocol) {
		err = werr
	}
	_ = c.nc.Close()
	st := c.cmds.snapshot()
	c.log.Info("nbd: client disconnected", "export", exp.name, "err", err,
		"reads", st.Read.Requests, "writes", st.Write.Requests, "flushes", st.Flush.Requests,
		"bytesRead", st.Read.Bytes, "bytesWritten", st.Write.Bytes)
	return err
}

// readLoop reads requests and hands them to the workers until the client
// sends NBD_CMD_DISC or something ends the connection.
func (c *conn) readLoop() error {
	var hdr [requestHeaderLen]byte
	for seq := uint64(0); ; seq++ {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			switch {
			case errors.Is(err, io.EOF):
				c.log.Debug("nbd: client closed the connection without NBD_CMD_DISC")
				return nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				return nil // interrupted: the server is shutting down
			}
			return fmt.Errorf("nbd: read request: %w", err)
		}
		r := &request{
			flags:  be.Uint16(hdr[4:]),
			typ:    be.Uint16(hdr[6:]),
			cookie: be.Uint64(hdr[8:]),
			off:    be.Uint64(hdr[16:]),
			length: be.Uint32(hdr[24:]),
			seq:    seq,
			start:  time.Now(),
		}
		if magic := be.Uint32(hdr[0:]); magic != requestMagic {
			return protocolError("request magic %#x, want %#x", magic, requestMagic)
		}
		if r.typ == cmdDisc {
			c.log.Debug("nbd: client sent NBD_CMD_DISC")
			return nil
		}
		if r.typ == cmdWrite && r.length > maxPayload {
			return protocolError("NBD_CMD_WRITE with a payload of %d bytes (the limit is %d)", r.length, maxPayload)
		}
		c.slots <- struct{}{}
		r.errno = c.check(r)
		if r.typ == cmdWrite {
			if err := c.readPayload(r); err != nil {
				<-c.slots
				return err
			}
		}
		if r.errno == 0 && isWriteCmd(r.typ) && r.length > 0 {
			c.writes.start(r.seq)
			r.tracked = true
		}
		c.work <- r
	}
}

// readPayload reads a WRITE's data into a buffer, or discards it if the
// request is refused anyway.
func (c *conn) readPayload(r *request) error {
	if r.errno != 0 {
		if _, err := io.CopyN(io.Discard, c.br, int64(r.length)); err != nil {
			return fmt.Errorf("nbd: read NBD_CMD_WRITE payload: %w", err)
		}
		return nil
	}
	r.buf = c.s.bufs.get(int(r.length))
	if _, err := io.ReadFull(c.br, *r.buf); err != nil {
		c.s.bufs.put(r.buf)
		r.buf = nil
		return fmt.Errorf("nbd: read NBD_CMD_WRITE payload: %w", err)
	}
	return nil
}

// check validates a request against the protocol and the export, and
// returns the error to reply with, or 0 if the backend may see it.
func (c *conn) check(r *request) uint32 {
	exp := c.exp
	cfg := &c.s.cfg
	var allowed uint16
	switch r.typ {
	case cmdRead, cmdFlush:
		allowed = cmdFlagFUA // meaningless, but clients send it
	case cmdWrite, cmdTrim:
		allowed = cmdFlagFUA
	case cmdWriteZeroes:
		allowed = cmdFlagFUA | cmdFlagNoHole
	default: // CACHE, BLOCK_STATUS and the unknown: not advertised
		return errInval
	}
	if r.flags&^allowed != 0 {
		return errInval
	}
	if r.typ == cmdFlush {
		if r.off != 0 || r.length != 0 {
			return errInval
		}
		return 0
	}
	if r.typ != cmdRead && exp.ReadOnly {
		return errPerm
	}
	if r.typ == cmdTrim && exp.flags&tflagSendTrim == 0 {
		return errInval
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > cfg.MaxBlock {
		return errInval
	}
	if r.off > exp.size || uint64(r.length) > exp.size-r.off {
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	}
	// Aligned to the minimum block, except that a request may end at an
	// unaligned end of the export.
	if m := uint64(cfg.MinBlock); m > 1 {
		end := r.off + uint64(r.length)
		if r.off%m != 0 || (end%m != 0 && end != exp.size) {
			return errInval
		}
	}
	return 0
}

// worker runs requests on the backend until the work channel closes.
func (c *conn) worker() {
	for r := range c.work {
		c.run(r)
		c.replies <- r
	}
}

// run calls the backend for r and records the outcome in r.errno.
func (c *conn) run(r *request) {
	if r.errno != 0 {
		return
	}
	b := c.exp.Backend
	off, n := int64(r.off), int64(r.length)
	fua := r.flags&cmdFlagFUA != 0
	var err error
	switch r.typ {
	case cmdRead:
		if n == 0 {
			break
		}
		r.buf = c.s.bufs.get(int(n))
		var m int
		m, err = b.ReadAt(*r.buf, off)
		switch {
		case m == len(*r.buf):
			err = nil // io.ReaderAt may return io.EOF with a full read
		case err == nil:
			err = io.ErrUnexpectedEOF
		}
	case cmdWrite:
		if n == 0 {
			break
		}
		var m int
		if fw, ok := b.(FUAWriter); ok && fua {
			m, err = fw.WriteAtFUA(*r.buf, off)
			fua = false
		} else {
			m, err = b.WriteAt(*r.buf, off)
		}
		if err == nil && m != len(*r.buf) {
			err = io.ErrShortWrite
		}
	case cmdFlush:
		c.writes.waitBefore(r.seq)
		err = b.Flush()
		fua = false
	case cmdTrim:
		if n > 0 {
			err = b.(Trimmer).Trim(off, n)
		}
	case cmdWriteZeroes:
		if n == 0 {
			break
		}
		err = WriteZeroes(b, off, n, r.flags&cmdFlagNoHole == 0)
	}
	if err == nil && fua && isWriteCmd(r.typ) && n > 0 {
		err = b.Flush()
	}
	if r.tracked {
		c.writes.finish(r.seq)
	}
	if err != nil {
		r.errno = errnoOf(err)
		c.backendError(r, err)
	}
}

// backendError logs a backend failure, at most once a second per
// connection, counting the ones it leaves out.
func (c *conn) backendError(r *request, err error) {
	c.errMu.Lock()
	now := time.Now()
	if now.Sub(c.lastErrLog) < time.Second {
		c.quietErrs++
		c.errMu.Unlock()
		return
	}
	quiet := c.quietErrs
	c.lastErrLog, c.quietErrs = now, 0
	c.errMu.Unlock()
	c.log.Warn("nbd: backend error", "cmd", cmdName(r.typ), "offset", r.off, "length", r.length,
		"errno", r.errno, "err", err, "suppressed", quiet)
}

// writer sends replies in the order workers finish them, and releases
// each request's slot. It flushes whenever no other reply is waiting. After
// a write error it closes the connection, which stops the reader, and
// keeps draining replies without sending them.
func (c *conn) writer() error {
	var failed error
	var hdr [replyHeaderLen]byte
	for r := range c.replies {
		// Counted before sending, so a client that has its reply sees it
		// in the stats.
		var bytes uint64
		if r.typ != cmdFlush {
			bytes = uint64(r.length)
		}
		d := time.Since(r.start)
		c.cmds.add(r.typ, r.errno != 0, bytes, d)
		c.s.cmds.add(r.typ, r.errno != 0, bytes, d)
		if failed == nil {
			be.PutUint32(hdr[0:], simpleReplyMagic)
			be.PutUint32(hdr[4:], r.errno)
			be.PutUint64(hdr[8:], r.cookie)
			_, err := c.bw.Write(hdr[:])
			if err == nil && r.typ == cmdRead && r.errno == 0 && r.buf != nil {
				_, err = c.bw.Write(*r.buf)
			}
			if err == nil && len(c.replies) == 0 {
				err = c.bw.Flush()
			}
			if err != nil {
				failed = fmt.Errorf("nbd: send reply: %w", err)
				_ = c.nc.Close()
			}
		}
		if r.buf != nil {
			c.s.bufs.put(r.buf)
			r.buf = nil
		}
		<-c.slots
	}
	return failed
}

// stats returns the connection's counters.
func (c *conn) stats() ConnStats {
	return ConnStats{
		ID:       c.id,
		Remote:   remote(c.nc),
		Export:   c.exp.name,
		Since:    c.since,
		InFlight: len(c.slots),
		Commands: c.cmds.snapshot(),
	}
}

// writeTracker tracks the write-type requests of one connection that are
// in the backend, so that a flush can wait for those received before it.
type writeTracker struct {
	mu       sync.Mutex
	cond     sync.Cond
	inflight map[uint64]struct{} // sequence numbers
	waiters  int                 // flushes waiting, for tests
}

func (t *writeTracker) init() {
	t.cond.L = &t.mu
	t.inflight = make(map[uint64]struct{})
}

// start records that the write with sequence number seq was dispatched.
func (t *writeTracker) start(seq uint64) {
	t.mu.Lock()
	t.inflight[seq] = struct{}{}
	t.mu.Unlock()
}

// finish records that the write seq returned from the backend.
func (t *writeTracker) finish(seq uint64) {
	t.mu.Lock()
	delete(t.inflight, seq)
	t.mu.Unlock()
	t.cond.Broadcast()
}

// waitBefore waits until every write with a sequence number below seq has
// returned from the backend. Writes are started by the one reading
// goroutine in sequence order, so all of them are known by then.
func (t *writeTracker) waitBefore(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		pending := false
		for s := range t.inflight {
			if s < seq {
				pending = true
				break
			}
		}
		if !pending {
			return
		}
		t.waiters++
		t.cond.Wait()
		t.waiters--
	}
}
