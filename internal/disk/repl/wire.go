package repl

import (
	"bufio"
	"crypto/tls"
	"io"
	"math/bits"
	"net"
	"sync"
	"time"
)

// bigPayload is the payload size from which frameWriter writes a payload
// from the sender's slice instead of copying it into its buffer.
const bigPayload = 64 << 10

// maxSpare bounds the buffer a frameWriter keeps between batches.
const maxSpare = 1 << 20

// Frames queued with hold wait at most holdAge when requests keep
// finishing (see release), and at most holdTime in any case: a timer then
// writes them.
const (
	holdAge  = 50 * time.Microsecond
	holdTime = time.Millisecond
)

// frameWriter sends frames on one connection with group commit. A frame is
// appended to a buffer; a sender that finds no write in progress becomes
// the writer: it writes the buffer with one Write, and goes on writing
// whatever the others appended meanwhile until the buffer is empty. Frames
// that arrive while a write is in progress thus go out together, in one
// Write (on TLS, one record and one system call per 16 KiB instead of two
// per frame), while a frame sent on an idle link goes out at once: there
// is no timer and no added latency.
//
// Small payloads are copied, so send never retains them. A payload of
// bigPayload bytes or more is written from the caller's slice, and send
// then returns only once it was written (or the connection failed).
//
// A sender that knows that more frames will follow in a moment (other
// requests are being applied) queues its frame with hold instead, and
// calls release when done; the last of them writes the lot with one write.
// The wait is bounded by holdAge as long as requests keep finishing, and
// by a timer (holdTime) in any case.
type frameWriter struct {
	w    io.Writer
	cork *linkConn // under w, if any: a batch is written with one system call

	mu        sync.Mutex
	written   sync.Cond // broadcast after each batch
	buf       []byte    // frames not yet taken by the writer
	segs      []segment // big payloads to insert into buf
	spare     []byte
	spareSegs []segment
	writing   bool
	taken     uint64 // batches taken by the writer
	done      uint64 // batches written (or failed)
	err       error  // sticky: the connection is broken
	timer     *time.Timer
	armed     bool      // timer set for frames queued by hold
	heldAt    time.Time // when the oldest frame queued by hold was queued
}

// segment is a payload written from the caller's slice after buf[:at].
type segment struct {
	at   int
	data []byte
}

func newFrameWriter(w io.Writer) *frameWriter {
	fw := &frameWriter{w: w, cork: corkerOf(w)}
	fw.written.L = &fw.mu
	return fw
}

// send queues f and writes it, possibly with other frames, unless another
// sender is writing already and will. It fails once the connection failed.
// A nil error does not mean the peer has the frame: only its ACK says so.
func (w *frameWriter) send(f *frame) error {
	var hdr [headerSize]byte
	encodeHeader(hdr[:], f)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.buf = append(w.buf, hdr[:]...)
	big := len(f.payload) >= bigPayload
	if big {
		w.segs = append(w.segs, segment{at: len(w.buf), data: f.payload})
	} else {
		w.buf = append(w.buf, f.payload...)
	}
	batch := w.taken + 1 // the batch this frame goes out with
	if !w.writing {
		w.writing = true
		w.flushLocked()
		w.writing = false
	}
	for big && w.done < batch && w.err == nil {
		w.written.Wait()
	}
	return w.err
}

// hold queues f, whose payload must be smaller than bigPayload, to be
// written by the next send or flush, by a write in progress, or by the
// timer after holdTime.
func (w *frameWriter) hold(f *frame) error {
	var hdr [headerSize]byte
	encodeHeader(hdr[:], f)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.buf = append(w.buf, hdr[:]...)
	w.buf = append(w.buf, f.payload...)
	if !w.writing && !w.armed {
		w.armed = true
		w.heldAt = time.Now()
		if w.timer == nil {
			w.timer = time.AfterFunc(holdTime, func() { _ = w.flush() })
		} else {
			w.timer.Reset(holdTime)
		}
	}
	return nil
}

// release is called by a sender that queued a frame with hold, once it
// finished what it was doing meanwhile; last says no other such sender is
// still busy. It writes the queued frames if last, or if the oldest has
// waited holdAge already.
func (w *frameWriter) release(last bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.writing && len(w.buf) > 0 && (last || time.Since(w.heldAt) >= holdAge) {
		w.writing = true
		w.flushLocked()
		w.writing = false
	}
	return w.err
}

// flush writes the frames queued by hold, unless a write in progress will.
func (w *frameWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.writing && len(w.buf) > 0 {
		w.writing = true
		w.flushLocked()
		w.writing = false
	}
	return w.err
}

// flushLocked writes batches until none is left, unlocking w.mu around
// each Write.
func (w *frameWriter) flushLocked() {
	for len(w.buf) > 0 && w.err == nil {
		buf, segs := w.buf, w.segs
		w.buf, w.segs = w.spare[:0], w.spareSegs[:0]
		w.spare, w.spareSegs = nil, nil
		w.armed = false
		w.taken++
		w.mu.Unlock()
		var err error
		if w.cork != nil {
			w.cork.cork()
			err = writeBatch(w.w, buf, segs)
			if uerr := w.cork.uncork(); err == nil {
				err = uerr
			}
		} else {
			err = writeBatch(w.w, buf, segs)
		}
		w.mu.Lock()
		w.done++
		if err != nil {
			w.err = err
		}
		clear(segs) // drop the references to callers' payloads
		if cap(buf) <= maxSpare {
			w.spare = buf[:0]
		}
		w.spareSegs = segs[:0]
		w.written.Broadcast()
	}
}

// writeBatch writes buf with the segments inserted at their offsets.
func writeBatch(w io.Writer, buf []byte, segs []segment) error {
	pos := 0
	for _, s := range segs {
		if _, err := w.Write(buf[pos:s.at]); err != nil {
			return err
		}
		if _, err := w.Write(s.data); err != nil {
			return err
		}
		pos = s.at
	}
	if pos == len(buf) {
		return nil
	}
	_, err := w.Write(buf[pos:])
	return err
}

// Payload buffers are pooled by power-of-two size class, from 4 KiB to
// maxWriteLen, so that receiving a WRITE does not allocate (and the garbage
// collector does not run) once the pools are warm.
const (
	minPoolShift = 12
	maxPoolShift = 25 // maxWriteLen
)

var payloadPools [maxPoolShift - minPoolShift + 1]sync.Pool

func poolClass(n int) int {
	if n <= 1<<minPoolShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minPoolShift
}

// getPayload returns a buffer of n bytes, pooled when n > 0 and n <=
// maxWriteLen. Give it back with putPayload once it is no longer used.
func getPayload(n int) []byte {
	if n <= 0 || n > maxWriteLen {
		return make([]byte, n)
	}
	c := poolClass(n)
	if b, ok := payloadPools[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(c+minPoolShift))
}

// putPayload returns a buffer obtained from getPayload to its pool.
func putPayload(b []byte) {
	c := cap(b)
	if c < 1<<minPoolShift || c > maxWriteLen || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	payloadPools[poolClass(c)].Put(&b)
}

// connBufSize is the write and read-ahead buffer of a [LinkConn].
const connBufSize = 256 << 10

// LinkConn wraps the transport connection of a replication link (the TCP
// connection, under TLS) to save system calls, which dominate the cost of
// replication. Pass it to tls.Client or tls.Server and the result to
// [Primary.Connect] or [Secondary.Serve]; both sides may use it or not,
// independently.
//
// It reads ahead, so that one system call fetches many TLS records. And
// while a link is writing a batch of frames, it collects the TLS records of
// the batch and writes them with one system call per 256 KiB rather than
// one per record (16 KiB). Any other write, such as a handshake message,
// goes through at once.
func LinkConn(c net.Conn) net.Conn {
	return &linkConn{Conn: c, rd: bufio.NewReaderSize(c, connBufSize)}
}

// linkConn is the connection returned by LinkConn.
type linkConn struct {
	net.Conn
	rd *bufio.Reader // used by one reader at a time, as crypto/tls does

	wmu    sync.Mutex
	corked bool
	wbuf   []byte
}

func (c *linkConn) Read(p []byte) (int, error) { return c.rd.Read(p) }

func (c *linkConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(c.wbuf)+len(p) > connBufSize {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= connBufSize {
			return c.Conn.Write(p)
		}
	}
	if c.wbuf == nil {
		c.wbuf = make([]byte, 0, connBufSize)
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// cork makes writes collect in the buffer until uncork.
func (c *linkConn) cork() {
	c.wmu.Lock()
	c.corked = true
	c.wmu.Unlock()
}

// uncork writes what was collected since cork, and lets writes through.
func (c *linkConn) uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *linkConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

// corkerOf returns the linkConn under w, directly or under TLS, or nil.
func corkerOf(w io.Writer) *linkConn {
	switch c := w.(type) {
	case *linkConn:
		return c
	case *tls.Conn:
		lc, _ := c.NetConn().(*linkConn)
		return lc
	}
	return nil
}
