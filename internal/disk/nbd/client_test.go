package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// This file holds the test harness: an NBD client written from the
// protocol document, an in-memory backend, and helpers to start servers.

// optReplyMsg is one option reply as the client sees it.
type optReplyMsg struct {
	opt, typ uint32
	data     []byte
}

// rawClient speaks the handshake phase.
type rawClient struct {
	nc net.Conn
	br *bufio.Reader
}

func newRawClient(nc net.Conn) *rawClient {
	return &rawClient{nc: nc, br: bufio.NewReader(nc)}
}

// greet reads the server's greeting and returns its handshake flags.
func (c *rawClient) greet() (uint16, error) {
	var g [18]byte
	if _, err := io.ReadFull(c.br, g[:]); err != nil {
		return 0, fmt.Errorf("read greeting: %w", err)
	}
	if m := be.Uint64(g[0:]); m != nbdMagic {
		return 0, fmt.Errorf("greeting magic %#x", m)
	}
	if m := be.Uint64(g[8:]); m != optMagic {
		return 0, fmt.Errorf("greeting option magic %#x", m)
	}
	return be.Uint16(g[16:]), nil
}

func (c *rawClient) sendFlags(flags uint32) error {
	return binaryWrite(c.nc, flags)
}

// start greets and sends fixed-newstyle and no-zeroes flags.
func (c *rawClient) start() error {
	if _, err := c.greet(); err != nil {
		return err
	}
	return c.sendFlags(clientFlagFixedNewstyle | clientFlagNoZeroes)
}

func (c *rawClient) sendOpt(opt uint32, data []byte) error {
	b := make([]byte, optHeaderLen, optHeaderLen+len(data))
	be.PutUint64(b[0:], optMagic)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], uint32(len(data)))
	_, err := c.nc.Write(append(b, data...))
	return err
}

func (c *rawClient) readOptReply() (optReplyMsg, error) {
	var h [optReplyHdrLen]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return optReplyMsg{}, fmt.Errorf("read option reply: %w", err)
	}
	if m := be.Uint64(h[0:]); m != optReplyMagic {
		return optReplyMsg{}, fmt.Errorf("option reply magic %#x", m)
	}
	r := optReplyMsg{opt: be.Uint32(h[8:]), typ: be.Uint32(h[12:]), data: make([]byte, be.Uint32(h[16:]))}
	if _, err := io.ReadFull(c.br, r.data); err != nil {
		return optReplyMsg{}, fmt.Errorf("read option reply data: %w", err)
	}
	return r, nil
}

// readOptReplies reads replies to opt until a final one (not
// NBD_REP_INFO or NBD_REP_SERVER).
func (c *rawClient) readOptReplies(opt uint32) ([]optReplyMsg, error) {
	var out []optReplyMsg
	for {
		r, err := c.readOptReply()
		if err != nil {
			return out, err
		}
		if r.opt != opt {
			return out, fmt.Errorf("reply for option %d, want %d", r.opt, opt)
		}
		out = append(out, r)
		if r.typ != repInfo && r.typ != repServer {
			return out, nil
		}
	}
}

// infoGoData encodes the data of NBD_OPT_INFO or NBD_OPT_GO.
func infoGoData(name string, infos ...uint16) []byte {
	b := make([]byte, 4, 4+len(name)+2+2*len(infos))
	be.PutUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO or NBD_OPT_GO told the client.
type exportInfo struct {
	size                        uint64
	flags                       uint16
	name, description           string
	hasName, hasDesc, hasBlocks bool
	minBlock, prefBlock, maxBlk uint32
}

func parseInfos(replies []optReplyMsg) (exportInfo, error) {
	var info exportInfo
	for _, r := range replies {
		if r.typ != repInfo {
			continue
		}
		if len(r.data) < 2 {
			return info, fmt.Errorf("NBD_REP_INFO of %d bytes", len(r.data))
		}
		switch be.Uint16(r.data) {
		case infoExport:
			if len(r.data) != 12 {
				return info, fmt.Errorf("NBD_INFO_EXPORT of %d bytes", len(r.data))
			}
			info.size, info.flags = be.Uint64(r.data[2:]), be.Uint16(r.data[10:])
		case infoName:
			info.name, info.hasName = string(r.data[2:]), true
		case infoDescription:
			info.description, info.hasDesc = string(r.data[2:]), true
		case infoBlockSize:
			if len(r.data) != 14 {
				return info, fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes", len(r.data))
			}
			info.hasBlocks = true
			info.minBlock, info.prefBlock, info.maxBlk = be.Uint32(r.data[2:]), be.Uint32(r.data[6:]), be.Uint32(r.data[10:])
		}
	}
	return info, nil
}

// goExport sends NBD_OPT_GO and returns what the server said; it fails
// unless the reply ends with NBD_REP_ACK.
func (c *rawClient) goExport(name string) (exportInfo, error) {
	if err := c.sendOpt(optGo, infoGoData(name, infoBlockSize)); err != nil {
		return exportInfo{}, err
	}
	replies, err := c.readOptReplies(optGo)
	if err != nil {
		return exportInfo{}, err
	}
	if last := replies[len(replies)-1]; last.typ != repAck {
		return exportInfo{}, fmt.Errorf("NBD_OPT_GO %q: reply type %#x: %s", name, last.typ, last.data)
	}
	return parseInfos(replies)
}

// reply is a simple reply as the client sees it.
type reply struct {
	errno uint32
	data  []byte
	err   error // the connection failed
}

type pending struct {
	length uint32
	read   bool
	ch     chan reply
}

// client is a test NBD client in the transmission phase. Its methods may be
// called concurrently; requests are pipelined.
type client struct {
	*rawClient
	info exportInfo

	wmu sync.Mutex // serialises request writes

	mu      sync.Mutex
	cookie  uint64
	pending map[uint64]*pending
	err     error
	done    chan struct{}
}

// dialClient connects with dial and enters the transmission phase of
// export name.
func dialClient(t testing.TB, dial func() (net.Conn, error), name string) *client {
	t.Helper()
	nc, err := dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c, err := newClient(nc, name)
	if err != nil {
		nc.Close()
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newClient(nc net.Conn, name string) (*client, error) {
	rc := newRawClient(nc)
	if err := rc.start(); err != nil {
		return nil, err
	}
	info, err := rc.goExport(name)
	if err != nil {
		return nil, err
	}
	return startClient(rc, info), nil
}

// startClient starts the reply reader of a client whose handshake is done.
func startClient(rc *rawClient, info exportInfo) *client {
	c := &client{rawClient: rc, info: info, pending: make(map[uint64]*pending), done: make(chan struct{})}
	go c.readReplies()
	return c
}

func (c *client) readReplies() {
	defer close(c.done)
	fail := func(err error) {
		c.mu.Lock()
		c.err = err
		for k, p := range c.pending {
			p.ch <- reply{err: err}
			delete(c.pending, k)
		}
		c.mu.Unlock()
	}
	for {
		var h [replyHeaderLen]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			fail(fmt.Errorf("read reply: %w", err))
			return
		}
		if m := be.Uint32(h[0:]); m != simpleReplyMagic {
			fail(fmt.Errorf("reply magic %#x", m))
			return
		}
		errno, cookie := be.Uint32(h[4:]), be.Uint64(h[8:])
		c.mu.Lock()
		p, ok := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if !ok {
			fail(fmt.Errorf("reply for unknown cookie %d", cookie))
			return
		}
		r := reply{errno: errno}
		if p.read && errno == 0 {
			r.data = make([]byte, p.length)
			if _, err := io.ReadFull(c.br, r.data); err != nil {
				p.ch <- reply{err: err}
				fail(fmt.Errorf("read reply data: %w", err))
				return
			}
		}
		p.ch <- r
	}
}

// send sends a request and returns the channel its reply arrives on.
func (c *client) send(typ, flags uint16, off uint64, length uint32, data []byte) <-chan reply {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		ch <- reply{err: c.err}
		return ch
	}
	c.cookie++
	cookie := c.cookie
	if typ != cmdDisc {
		c.pending[cookie] = &pending{length: length, read: typ == cmdRead, ch: ch}
	}
	c.mu.Unlock()
	var b [requestHeaderLen]byte
	be.PutUint32(b[0:], requestMagic)
	be.PutUint16(b[4:], flags)
	be.PutUint16(b[6:], typ)
	be.PutUint64(b[8:], cookie)
	be.PutUint64(b[16:], off)
	be.PutUint32(b[24:], length)
	bufs := net.Buffers{b[:], data}
	c.wmu.Lock()
	_, err := bufs.WriteTo(c.nc)
	c.wmu.Unlock()
	if err != nil {
		c.mu.Lock()
		if _, ok := c.pending[cookie]; ok {
			delete(c.pending, cookie)
			ch <- reply{err: err}
		}
		c.mu.Unlock()
	}
	return ch
}

// do sends a request and waits up to 10 s for its reply.
func (c *client) do(typ, flags uint16, off uint64, length uint32, data []byte) reply {
	select {
	case r := <-c.send(typ, flags, off, length, data):
		return r
	case <-time.After(10 * time.Second):
		return reply{err: errors.New("no reply within 10s")}
	}
}

func (c *client) read(off uint64, n uint32) reply { return c.do(cmdRead, 0, off, n, nil) }

func (c *client) write(off uint64, data []byte, flags uint16) reply {
	return c.do(cmdWrite, flags, off, uint32(len(data)), data)
}

func (c *client) flush() reply { return c.do(cmdFlush, 0, 0, 0, nil) }

// disc sends NBD_CMD_DISC and waits for the server to close.
func (c *client) disc() error {
	c.send(cmdDisc, 0, 0, 0, nil)
	select {
	case <-c.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("server did not close the connection within 10s of NBD_CMD_DISC")
	}
}

// Close closes the connection and waits for the reply reader.
func (c *client) Close() error {
	err := c.nc.Close()
	<-c.done
	return err
}

func binaryWrite(w io.Writer, v uint32) error {
	var b [4]byte
	be.PutUint32(b[:], v)
	_, err := w.Write(b[:])
	return err
}

// memBackend is an in-memory Backend that records how it is used and can
// be told to fail or block.
type memBackend struct {
	mu   sync.RWMutex
	data []byte
	size int64 // Size(); data may be longer, as a guard zone

	readErr, writeErr, flushErr, trimErr error // returned if set
	shortRead                            bool

	// gate, if set, is waited on by every WriteAt; entered receives a
	// value as each WriteAt starts waiting.
	gate    chan struct{}
	entered chan struct{}

	reads, writes, flushes, trims, zeroes, fuaWrites atomic.Int64
	lastMayTrim                                      atomic.Bool
	completedWrites                                  atomic.Int64
	flushSaw                                         atomic.Int64 // completedWrites at the last Flush
	active, maxActive                                atomic.Int64
	outOfRange                                       atomic.Bool
}

func newMemBackend(size int64) *memBackend {
	return &memBackend{data: make([]byte, size), size: size}
}

func (m *memBackend) enter() {
	n := m.active.Add(1)
	for {
		old := m.maxActive.Load()
		if n <= old || m.maxActive.CompareAndSwap(old, n) {
			break
		}
	}
}

func (m *memBackend) exit() { m.active.Add(-1) }

func (m *memBackend) check(off, n int64) bool {
	if off < 0 || n < 0 || off > m.size || n > m.size-off {
		m.outOfRange.Store(true)
		return false
	}
	return true
}

func (m *memBackend) ReadAt(p []byte, off int64) (int, error) {
	m.enter()
	defer m.exit()
	m.reads.Add(1)
	if !m.check(off, int64(len(p))) {
		return 0, errors.New("memBackend: read out of range")
	}
	if m.readErr != nil {
		return 0, m.readErr
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.shortRead {
		return copy(p[:len(p)/2], m.data[off:]), nil
	}
	return copy(p, m.data[off:]), nil
}

func (m *memBackend) WriteAt(p []byte, off int64) (int, error) {
	m.enter()
	defer m.exit()
	if m.gate != nil {
		m.entered <- struct{}{}
		<-m.gate
	}
	m.writes.Add(1)
	if !m.check(off, int64(len(p))) {
		return 0, errors.New("memBackend: write out of range")
	}
	if m.writeErr != nil {
		return 0, m.writeErr
	}
	m.mu.Lock()
	copy(m.data[off:], p)
	m.mu.Unlock()
	m.completedWrites.Add(1)
	return len(p), nil
}

func (m *memBackend) Size() int64 { return m.size }

func (m *memBackend) Flush() error {
	m.flushes.Add(1)
	m.flushSaw.Store(m.completedWrites.Load())
	return m.flushErr
}

func (m *memBackend) Trim(off, length int64) error {
	m.trims.Add(1)
	if !m.check(off, length) {
		return errors.New("memBackend: trim out of range")
	}
	if m.trimErr != nil {
		return m.trimErr
	}
	m.zero(off, length)
	return nil
}

func (m *memBackend) WriteZeroes(off, length int64, mayTrim bool) error {
	m.zeroes.Add(1)
	m.lastMayTrim.Store(mayTrim)
	if !m.check(off, length) {
		return errors.New("memBackend: write zeroes out of range")
	}
	m.zero(off, length)
	return nil
}

func (m *memBackend) zero(off, length int64) {
	m.mu.Lock()
	clear(m.data[off : off+length])
	m.mu.Unlock()
}

func (m *memBackend) bytes(off, n int64) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data[off:off+n]...)
}

func (m *memBackend) CanMultiConn() bool { return true }

// fuaBackend adds FUAWriter to memBackend.
type fuaBackend struct{ *memBackend }

func (f fuaBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	f.fuaWrites.Add(1)
	return f.WriteAt(p, off)
}

// plainBackend has only the four Backend methods.
type plainBackend struct{ m *memBackend }

func (p plainBackend) ReadAt(b []byte, off int64) (int, error)  { return p.m.ReadAt(b, off) }
func (p plainBackend) WriteAt(b []byte, off int64) (int, error) { return p.m.WriteAt(b, off) }
func (p plainBackend) Size() int64                              { return p.m.Size() }
func (p plainBackend) Flush() error                             { return p.m.Flush() }

// testServer is a Server listening on a unix socket in a temporary
// directory.
type testServer struct {
	*Server
	sock string
}

// startServer serves cfg on a unix socket until the test ends, and fails
// the test if Serve returns an error.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return serveOn(t, cfg, l, sock)
}

// startTCPServer is startServer on TCP loopback.
func startTCPServer(t testing.TB, cfg Config) (*testServer, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return serveOn(t, cfg, l, ""), l.Addr().String()
}

func serveOn(t testing.TB, cfg Config, l net.Listener, sock string) *testServer {
	s := NewServer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return within 20s of cancellation")
		}
	})
	return &testServer{Server: s, sock: sock}
}

func (s *testServer) dial() (net.Conn, error) { return net.Dial("unix", s.sock) }

// pipeServer runs ServeConn on one end of a net.Pipe and returns the other
// end and a channel with ServeConn's result.
func pipeServer(ctx context.Context, s *Server) (net.Conn, <-chan error) {
	cli, srv := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(ctx, srv) }()
	return cli, done
}

// waitErr waits up to 10 s for a ServeConn result.
func waitErr(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return within 10s")
		return nil
	}
}

// waitFor polls cond until it holds, failing the test after 10 s. It is for
// conditions observable only through counters; events with channels are
// waited on directly.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
