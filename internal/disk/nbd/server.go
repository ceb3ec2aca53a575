package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config fields.
const (
	// DefaultMinBlock is the default Config.MinBlock: any byte is
	// addressable, as the protocol's defaults say for a file.
	DefaultMinBlock = 1
	// DefaultPreferredBlock is the default Config.PreferredBlock.
	DefaultPreferredBlock = 4096
	// DefaultMaxBlock is the default (and largest) Config.MaxBlock, 32 MiB.
	DefaultMaxBlock = 32 << 20
	// DefaultMaxInFlight is the default Config.MaxInFlight, which matches
	// the 16 requests QEMU's NBD client keeps in flight.
	DefaultMaxInFlight = 16
	// DefaultHandshakeTimeout is the default Config.HandshakeTimeout.
	DefaultHandshakeTimeout = 30 * time.Second
)

// shutdownGrace is how long a connection may take to write its last
// replies once the server's context is cancelled.
const shutdownGrace = 5 * time.Second

// ErrProtocol is wrapped by the error ServeConn returns when it closed the
// connection because the client broke the NBD protocol.
var ErrProtocol = errors.New("nbd: protocol violation")

// ErrUnknownExport is wrapped by the error ServeConn returns when a client
// used NBD_OPT_EXPORT_NAME with a name that has no export (the protocol
// leaves the server no way to answer but closing the connection).
var ErrUnknownExport = errors.New("nbd: unknown export")

// Export is one block device a Server serves.
type Export struct {
	// Backend is the device. Required.
	Backend Backend
	// ReadOnly makes the server advertise NBD_FLAG_READ_ONLY and refuse
	// write-type requests with NBD_EPERM without calling the backend.
	ReadOnly bool
	// Description is an optional text for humans, sent with NBD_OPT_LIST
	// and NBD_INFO_DESCRIPTION. At most 4096 bytes.
	Description string
}

// Config configures a Server. Every field but the exports is optional; a
// zero value means the default.
type Config struct {
	// Exports maps export names to exports. The empty name is the default
	// export, which clients get when they ask for no name (QEMU's
	// nbd+unix:///?socket=... URI, for instance). NewServer copies the
	// map.
	Exports map[string]Export
	// Lookup, if not nil, is asked for names that are not in Exports,
	// each time a client selects an export or asks about one. It must be
	// safe for concurrent use. Exports found only through Lookup are not
	// listed by NBD_OPT_LIST.
	Lookup func(name string) (Export, bool)

	// MinBlock, PreferredBlock and MaxBlock are the size constraints
	// advertised with NBD_INFO_BLOCK_SIZE, in bytes. MinBlock (default 1)
	// is the alignment of every request's offset and length; it must be a
	// power of two no larger than 65536, and 512 suits clients that
	// expect a disk. PreferredBlock (default 4096) must be a power of two
	// at least max(MinBlock, 512). MaxBlock (default and maximum 32 MiB)
	// is the largest read or write, at least PreferredBlock. The server
	// enforces them whether or not the client asked for them.
	MinBlock, PreferredBlock, MaxBlock uint32

	// MaxInFlight is the number of requests per connection the server
	// works on at once (default 16). The server stops reading from a
	// connection while that many are in progress, so a connection holds
	// at most MaxInFlight*MaxBlock bytes of buffers.
	MaxInFlight int

	// HandshakeTimeout bounds the handshake (default 30 s; negative means
	// no limit).
	HandshakeTimeout time.Duration

	// Logger receives connection events and errors. Nil discards them.
	Logger *slog.Logger
}

// Validate reports whether c is usable, after applying defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	switch {
	case !pow2(c.MinBlock) || c.MinBlock > 1<<16:
		return fmt.Errorf("nbd: MinBlock %d is not a power of two up to 65536", c.MinBlock)
	case !pow2(c.PreferredBlock) || c.PreferredBlock < max(c.MinBlock, 512):
		return fmt.Errorf("nbd: PreferredBlock %d is not a power of two of at least max(MinBlock, 512)", c.PreferredBlock)
	case c.MaxBlock < c.PreferredBlock || c.MaxBlock > maxPayload:
		return fmt.Errorf("nbd: MaxBlock %d is not between PreferredBlock %d and 32 MiB", c.MaxBlock, c.PreferredBlock)
	case c.MaxBlock%c.MinBlock != 0:
		return fmt.Errorf("nbd: MaxBlock %d is not a multiple of MinBlock %d", c.MaxBlock, c.MinBlock)
	case c.MaxInFlight < 1 || c.MaxInFlight > 1024:
		return fmt.Errorf("nbd: MaxInFlight %d is not between 1 and 1024", c.MaxInFlight)
	}
	for name, e := range c.Exports {
		switch {
		case len(name) > maxString:
			return fmt.Errorf("nbd: export name %.40q... is longer than %d bytes", name, maxString)
		case e.Backend == nil:
			return fmt.Errorf("nbd: export %q has no backend", name)
		case len(e.Description) > maxString:
			return fmt.Errorf("nbd: export %q: description is longer than %d bytes", name, maxString)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MinBlock == 0 {
		c.MinBlock = DefaultMinBlock
	}
	if c.PreferredBlock == 0 {
		c.PreferredBlock = max(DefaultPreferredBlock, c.MinBlock)
	}
	if c.MaxBlock == 0 {
		c.MaxBlock = DefaultMaxBlock
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Server serves NBD exports. Create one with NewServer; it is safe for
// concurrent use, and one Server can serve any number of listeners and
// connections.
type Server struct {
	cfg    Config
	cfgErr error
	log    *slog.Logger
	bufs   bufPool

	nextID            atomic.Uint64
	accepted          atomic.Uint64
	handshakeFailures atomic.Uint64
	protocolErrors    atomic.Uint64
	cmds              counters

	mu     sync.Mutex
	active int
	conns  map[*conn]struct{} // in the transmission phase
}

// NewServer returns a Server for cfg. It does no I/O and cannot fail: if
// cfg is invalid (see Config.Validate), Serve and ServeConn return the
// error.
func NewServer(cfg Config) *Server {
	cfg = cfg.withDefaults()
	exports := make(map[string]Export, len(cfg.Exports))
	for name, e := range cfg.Exports {
		exports[name] = e
	}
	cfg.Exports = exports
	return &Server{
		cfg:    cfg,
		cfgErr: cfg.Validate(),
		log:    cfg.Logger,
		conns:  make(map[*conn]struct{}),
	}
}

// Serve accepts connections on l and serves each in its own goroutine
// until ctx is cancelled. Cancelling ctx closes l, stops every connection
// from reading further requests, waits for the backend calls in progress
// (however long they take: the server never abandons a write the backend
// is doing), gives their replies up to 5 seconds to be sent, and closes
// the connections. Serve returns nil once all that is done, or an error if
// l fails otherwise. Serve always closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	defer l.Close()
	if s.cfgErr != nil {
		return s.cfgErr
	}
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.Is(err, net.ErrClosed) || !errors.As(err, &ne) {
				return fmt.Errorf("nbd: accept on %s: %w", l.Addr(), err)
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nbd: accept failed; retrying", "addr", l.Addr().String(), "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		wg.Go(func() {
			if err := s.ServeConn(ctx, nc); err != nil && ctx.Err() == nil {
				s.log.Warn("nbd: connection ended with an error", "remote", remote(nc), "err", err)
			}
		})
	}
}

// ServeConn serves one client connection: the handshake, then requests
// until the client disconnects. It closes nc before returning. Cancelling
// ctx ends the connection as described at Serve. ServeConn returns nil if
// the client disconnected cleanly (NBD_OPT_ABORT, NBD_CMD_DISC, or closing
// the connection between requests), ctx's error if ctx ended it, and
// otherwise the error that ended it, wrapping ErrProtocol if the client
// broke the protocol.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	defer nc.Close()
	if s.cfgErr != nil {
		return s.cfgErr
	}
	s.accepted.Add(1)
	s.mu.Lock()
	s.active++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()

	c := newConn(s, nc)
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()

	exp, err := c.handshake(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.handshakeFailures.Add(1)
		if errors.Is(err, ErrProtocol) {
			s.protocolErrors.Add(1)
		}
		c.log.Warn("nbd: handshake failed; closing connection", "err", err)
		return err
	}
	if exp == nil { // NBD_OPT_ABORT
		c.log.Debug("nbd: client aborted the handshake")
		return nil
	}
	err = c.transmit(exp)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, ErrProtocol) {
		s.protocolErrors.Add(1)
		c.log.Warn("nbd: closing connection", "err", err)
	}
	return err
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	active := s.active
	s.mu.Unlock()
	return ServerStats{
		Accepted:          s.accepted.Load(),
		Active:            active,
		HandshakeFailures: s.handshakeFailures.Load(),
		ProtocolErrors:    s.protocolErrors.Load(),
		Commands:          s.cmds.snapshot(),
	}
}

// Connections returns the counters of every connection in the transmission
// phase, ordered by ID.
func (s *Server) Connections() []ConnStats {
	s.mu.Lock()
	out := make([]ConnStats, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c.stats())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// export is an export selected by a client, with what the server told it.
type export struct {
	Export
	name  string
	size  uint64
	flags uint16
}

// open resolves name to an export, or reports that there is none.
func (s *Server) open(name string) (*export, bool) {
	e, ok := s.cfg.Exports[name]
	if !ok && s.cfg.Lookup != nil {
		e, ok = s.cfg.Lookup(name)
	}
	if !ok || e.Backend == nil {
		return nil, false
	}
	size := e.Backend.Size()
	if size < 0 {
		s.log.Error("nbd: backend reports a negative size", "export", name, "size", size)
		return nil, false
	}
	return &export{Export: e, name: name, size: uint64(size), flags: transmissionFlags(e)}, true
}

// listNames returns the names NBD_OPT_LIST reports, sorted.
func (s *Server) listNames() []string {
	names := make([]string, 0, len(s.cfg.Exports))
	for name := range s.cfg.Exports {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// transmissionFlags returns the transmission flags advertised for e.
func transmissionFlags(e Export) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush)
	if e.ReadOnly {
		f |= tflagReadOnly
	} else {
		f |= tflagSendFUA | tflagSendWriteZeroes
		if _, ok := e.Backend.(Trimmer); ok {
			f |= tflagSendTrim
		}
	}
	if mc, ok := e.Backend.(MultiConnBackend); ok && mc.CanMultiConn() {
		f |= tflagCanMultiConn
	}
	return f
}

// remote returns the address of nc's peer for logs.
func remote(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// bufPool recycles request buffers in power-of-two size classes from 4 KiB
// to 32 MiB.
type bufPool struct {
	classes [bufClasses]sync.Pool
}

const (
	bufMinShift = 12
	bufClasses  = 25 - bufMinShift + 1
)

func bufClass(n int) int {
	if n <= 1<<bufMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - bufMinShift
}

// get returns a buffer of length n.
func (p *bufPool) get(n int) *[]byte {
	i := bufClass(n)
	if i >= bufClasses {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[i].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(i+bufMinShift))
	return &b
}

// put recycles a buffer that get returned.
func (p *bufPool) put(b *[]byte) {
	i := bufClass(cap(*b))
	if i < bufClasses && cap(*b) == 1<<(i+bufMinShift) {
		p.classes[i].Put(b)
	}
}
