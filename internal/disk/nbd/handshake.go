package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

var be = binary.BigEndian

// conn is one client connection.
type conn struct {
	s   *Server
	nc  net.Conn
	id  uint64
	log *slog.Logger
	br  *bufio.Reader
	bw  *bufio.Writer

	// Set by the handshake.
	noZeroes bool

	// Set when the transmission phase starts.
	exp     *export
	since   time.Time
	slots   chan struct{} // one per request between reading and replying
	work    chan *request
	replies chan *request
	writes  writeTracker
	cmds    counters

	errMu      sync.Mutex
	lastErrLog time.Time
	quietErrs  int
}

func newConn(s *Server, nc net.Conn) *conn {
	id := s.nextID.Add(1)
	return &conn{
		s:   s,
		nc:  nc,
		id:  id,
		log: s.log.With("conn", id, "remote", remote(nc)),
		br:  bufio.NewReaderSize(nc, 128<<10),
		bw:  bufio.NewWriterSize(nc, 128<<10),
	}
}

// interrupt stops the connection from reading and gives it shutdownGrace to
// write its remaining replies. It runs when the server's context ends.
func (c *conn) interrupt() {
	now := time.Now()
	_ = c.nc.SetReadDeadline(now)
	_ = c.nc.SetWriteDeadline(now.Add(shutdownGrace))
}

// protocolError returns an error wrapping ErrProtocol.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// handshake runs the fixed newstyle handshake and option haggling. It
// returns the export the client chose, or nil and no error if the client
// sent NBD_OPT_ABORT.
func (c *conn) handshake(ctx context.Context) (*export, error) {
	if t := c.s.cfg.HandshakeTimeout; t > 0 {
		_ = c.nc.SetDeadline(time.Now().Add(t))
	}
	exp, err := c.haggle()
	if err != nil || exp == nil {
		return exp, err
	}
	// Clear the timeout, then look at ctx: if it was cancelled before the
	// deadline was cleared, interrupt's deadlines may be gone.
	_ = c.nc.SetDeadline(time.Time{})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return exp, nil
}

func (c *conn) haggle() (*export, error) {
	var greeting [18]byte
	be.PutUint64(greeting[0:], nbdMagic)
	be.PutUint64(greeting[8:], optMagic)
	be.PutUint16(greeting[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.bw.Write(greeting[:]); err != nil {
		return nil, fmt.Errorf("nbd: send greeting: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, fmt.Errorf("nbd: send greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return nil, fmt.Errorf("nbd: read client flags: %w", err)
	}
	flags := be.Uint32(cf[:])
	if flags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		return nil, protocolError("unknown client flags %#x", flags)
	}
	c.noZeroes = flags&clientFlagNoZeroes != 0

	for {
		var h [optHeaderLen]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, fmt.Errorf("nbd: read option: %w", err)
		}
		magic, opt, length := be.Uint64(h[0:]), be.Uint32(h[8:]), be.Uint32(h[12:])
		if magic != optMagic {
			return nil, protocolError("option magic %#x, want %#x", magic, uint64(optMagic))
		}
		if length > maxOptionLen {
			if opt == optExportName || length > maxOptionDiscard {
				return nil, protocolError("option %s with %d bytes of data", optName(opt), length)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(length)); err != nil {
				return nil, fmt.Errorf("nbd: read option %s: %w", optName(opt), err)
			}
			if err := c.optError(opt, repErrTooBig, "option data of %d bytes is too long", length); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return nil, fmt.Errorf("nbd: read option %s: %w", optName(opt), err)
		}
		c.log.Debug("nbd: option", "option", optName(opt), "len", length)

		var err error
		switch opt {
		case optExportName:
			return c.exportName(data)
		case optAbort:
			// The client may close without reading the reply.
			_ = c.optReply(opt, repAck, nil)
			return nil, nil
		case optList:
			err = c.list(opt, data)
		case optInfo, optGo:
			var exp *export
			exp, err = c.infoGo(opt, data)
			if err == nil && exp != nil && opt == optGo {
				c.log.Info("nbd: client connected", "export", exp.name, "size", exp.size,
					"flags", fmt.Sprintf("%#x", exp.flags))
				return exp, nil
			}
		default:
			err = c.optError(opt, repErrUnsup, "option %s is not supported", optName(opt))
		}
		if err != nil {
			return nil, err
		}
	}
}

// optReply sends one option reply and flushes it.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [optReplyHdrLen]byte
	be.PutUint64(h[0:], optReplyMagic)
	be.PutUint32(h[8:], opt)
	be.PutUint32(h[12:], typ)
	be.PutUint32(h[16:], uint32(len(data)))
	_, _ = c.bw.Write(h[:])
	_, _ = c.bw.Write(data)
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("nbd: reply to option %s: %w", optName(opt), err)
	}
	return nil
}

// optError sends an error reply with a message for humans.
func (c *conn) optError(opt, typ uint32, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.log.Debug("nbd: option refused", "option", optName(opt), "reason", msg)
	return c.optReply(opt, typ, []byte(msg))
}

// exportName handles NBD_OPT_EXPORT_NAME, which cannot fail politely.
func (c *conn) exportName(data []byte) (*export, error) {
	if len(data) > maxString {
		return nil, protocolError("NBD_OPT_EXPORT_NAME with a name of %d bytes", len(data))
	}
	exp, ok := c.s.open(string(data))
	if !ok {
		return nil, fmt.Errorf("%w %q (NBD_OPT_EXPORT_NAME)", ErrUnknownExport, data)
	}
	var b [8 + 2 + 124]byte
	be.PutUint64(b[0:], exp.size)
	be.PutUint16(b[8:], exp.flags)
	n := len(b)
	if c.noZeroes {
		n = 10
	}
	_, _ = c.bw.Write(b[:n])
	if err := c.bw.Flush(); err != nil {
		return nil, fmt.Errorf("nbd: reply to NBD_OPT_EXPORT_NAME: %w", err)
	}
	c.log.Info("nbd: client connected", "export", exp.name, "size", exp.size,
		"flags", fmt.Sprintf("%#x", exp.flags), "via", "NBD_OPT_EXPORT_NAME")
	return exp, nil
}

// list handles NBD_OPT_LIST.
func (c *conn) list(opt uint32, data []byte) error {
	if len(data) != 0 {
		return c.optError(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
	}
	for _, name := range c.s.listNames() {
		desc := c.s.cfg.Exports[name].Description
		b := make([]byte, 4, 4+len(name)+len(desc))
		be.PutUint32(b, uint32(len(name)))
		b = append(b, name...)
		b = append(b, desc...)
		if err := c.optReply(opt, repServer, b); err != nil {
			return err
		}
	}
	return c.optReply(opt, repAck, nil)
}

// infoGo handles NBD_OPT_INFO and NBD_OPT_GO. It returns the export if the
// reply ended with NBD_REP_ACK.
func (c *conn) infoGo(opt uint32, data []byte) (*export, error) {
	if len(data) < 6 {
		return nil, c.optError(opt, repErrInvalid, "%s data of %d bytes is too short", optName(opt), len(data))
	}
	nameLen := be.Uint32(data)
	if uint64(nameLen) > uint64(len(data)-6) {
		return nil, c.optError(opt, repErrInvalid, "%s name length %d exceeds the option", optName(opt), nameLen)
	}
	if nameLen > maxString {
		return nil, c.optError(opt, repErrInvalid, "%s name of %d bytes is too long", optName(opt), nameLen)
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	n := int(be.Uint16(rest))
	if len(rest) != 2+2*n {
		return nil, c.optError(opt, repErrInvalid, "%s has %d information requests but %d bytes for them", optName(opt), n, len(rest)-2)
	}
	var wantName, wantDesc bool
	for i := range n {
		switch be.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}

	exp, ok := c.s.open(name)
	if !ok {
		return nil, c.optError(opt, repErrUnknown, "export %q does not exist", name)
	}
	var b [14]byte
	be.PutUint16(b[0:], infoExport)
	be.PutUint64(b[2:], exp.size)
	be.PutUint16(b[10:], exp.flags)
	if err := c.optReply(opt, repInfo, b[:12]); err != nil {
		return nil, err
	}
	if wantName {
		if err := c.optReply(opt, repInfo, append([]byte{0, infoName}, name...)); err != nil {
			return nil, err
		}
	}
	if wantDesc && exp.Description != "" {
		if err := c.optReply(opt, repInfo, append([]byte{0, infoDescription}, exp.Description...)); err != nil {
			return nil, err
		}
	}
	// Sent even if not asked for: clients ignore information they do not
	// understand, and the server enforces these constraints regardless.
	cfg := &c.s.cfg
	be.PutUint16(b[0:], infoBlockSize)
	be.PutUint32(b[2:], cfg.MinBlock)
	be.PutUint32(b[6:], cfg.PreferredBlock)
	be.PutUint32(b[10:], cfg.MaxBlock)
	if err := c.optReply(opt, repInfo, b[:14]); err != nil {
		return nil, err
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return nil, err
	}
	return exp, nil
}

// optName returns the protocol name of option opt, for logs and messages.
func optName(opt uint32) string {
	switch opt {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optAbort:
		return "NBD_OPT_ABORT"
	case optList:
		return "NBD_OPT_LIST"
	case optStartTLS:
		return "NBD_OPT_STARTTLS"
	case optInfo:
		return "NBD_OPT_INFO"
	case optGo:
		return "NBD_OPT_GO"
	case optStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case optListMetaContext:
		return "NBD_OPT_LIST_META_CONTEXT"
	case optSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	case optExtendedHeaders:
		return "NBD_OPT_EXTENDED_HEADERS"
	}
	return fmt.Sprintf("option %d", opt)
}
