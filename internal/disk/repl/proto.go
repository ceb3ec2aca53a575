package repl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Wire constants. The magic and version let either side reject a peer
// speaking something else before it interprets a single length field.
const (
	frameMagic   uint32 = 0x46525931 // "FRY1"
	protoVersion uint16 = 1
	headerSize          = 48

	// maxWriteLen bounds a WRITE payload: the largest NBD request QEMU
	// sends is 32 MiB, and a bound keeps a corrupt header from making the
	// receiver allocate gigabytes.
	maxWriteLen = 32 << 20
	// maxMsgLen bounds ACK messages and HELLO/SYNC bodies.
	maxMsgLen = 4096
	// maxHistory bounds the generation history carried in a HELLO.
	maxHistory = 32
	// maxDiskIDLen bounds the disk ID carried in a HELLO.
	maxDiskIDLen = 256
)

// msgType is the kind of a frame.
type msgType uint8

const (
	msgHello     msgType = 1
	msgWrite     msgType = 2
	msgTrim      msgType = 3
	msgZero      msgType = 4
	msgFlush     msgType = 5
	msgAck       msgType = 6
	msgSyncStart msgType = 7
	msgSyncDone  msgType = 8
)

// Frame flags.
const (
	flagFUA     uint8 = 1 << 0 // WRITE: durable on the secondary before the ACK
	flagMayTrim uint8 = 1 << 1 // ZERO: the range may be deallocated
	flagResync  uint8 = 1 << 2 // WRITE/ZERO: sent by resync, not by the guest
	knownFlags        = flagFUA | flagMayTrim | flagResync
)

// ACK codes. They travel on the wire, so their values never change.
const (
	codeOK         uint32 = 0
	codeIO         uint32 = 1 // the secondary's local I/O failed
	codeStaleEpoch uint32 = 2 // the sender's epoch is lower than the secondary's
	codeInvalid    uint32 = 3 // malformed or out-of-bounds request
	codeMismatch   uint32 = 4 // wrong disk ID, size or protocol version
	codeBusy       uint32 = 5 // the secondary cannot serve this link now
)

// HELLO flags.
const (
	helloInconsistent   uint8 = 1 << 0 // a resync into this disk is incomplete
	helloPrimaryUnclean uint8 = 1 << 1 // this disk was a primary that did not shut down cleanly
)

// Roles carried in a HELLO.
const (
	roleByteSecondary uint8 = 1
	roleBytePrimary   uint8 = 2
)

// errBadFrame is wrapped by every frame validation error: the link is
// closed, never repaired, because the stream can no longer be trusted.
var errBadFrame = errors.New("repl: bad frame")

// frame is one message on the link. Which fields mean something depends on
// typ; readFrame enforces that the others are zero.
type frame struct {
	typ     msgType
	flags   uint8
	seq     uint64
	epoch   uint64
	off     uint64
	length  uint64 // range length for WRITE/TRIM/ZERO
	code    uint32 // ACK only
	payload []byte // WRITE data, ACK message, HELLO/SYNC body
}

// encodeHeader fills hdr (headerSize bytes) for f.
func encodeHeader(hdr []byte, f *frame) {
	be := binary.BigEndian
	be.PutUint32(hdr[0:], frameMagic)
	hdr[4] = byte(f.typ)
	hdr[5] = f.flags
	hdr[6], hdr[7] = 0, 0
	be.PutUint64(hdr[8:], f.seq)
	be.PutUint64(hdr[16:], f.epoch)
	be.PutUint64(hdr[24:], f.off)
	be.PutUint64(hdr[32:], f.length)
	be.PutUint32(hdr[40:], f.code)
	be.PutUint32(hdr[44:], uint32(len(f.payload)))
}

// appendFrame appends the encoding of f to b.
func appendFrame(b []byte, f *frame) []byte {
	var hdr [headerSize]byte
	encodeHeader(hdr[:], f)
	b = append(b, hdr[:]...)
	return append(b, f.payload...)
}

// writeFrame writes f to w with a single Write (so a TLS connection sends
// one record, not two). It is for the handshake; links send through a
// frameWriter.
func writeFrame(w io.Writer, f *frame) error {
	_, err := w.Write(appendFrame(make([]byte, 0, headerSize+len(f.payload)), f))
	return err
}

// readFrame reads and validates one frame. It checks everything that can
// be checked without knowing the disk (magic, type, flags, lengths, and
// that off+length does not overflow); range bounds against the disk size
// are checked by the receiver with checkRange. Any error other than an I/O
// error wraps errBadFrame.
func readFrame(r io.Reader) (*frame, error) { return readFrameWith(r, nil) }

// readFrameWith is readFrame with WRITE payloads allocated by alloc, if
// not nil (getPayload: the receiver gives them back with putPayload).
func readFrameWith(r io.Reader, alloc func(int) []byte) (*frame, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	be := binary.BigEndian
	if m := be.Uint32(hdr[0:]); m != frameMagic {
		return nil, fmt.Errorf("%w: magic %#x", errBadFrame, m)
	}
	f := &frame{
		typ:    msgType(hdr[4]),
		flags:  hdr[5],
		seq:    be.Uint64(hdr[8:]),
		epoch:  be.Uint64(hdr[16:]),
		off:    be.Uint64(hdr[24:]),
		length: be.Uint64(hdr[32:]),
		code:   be.Uint32(hdr[40:]),
	}
	plen := be.Uint32(hdr[44:])
	if hdr[6] != 0 || hdr[7] != 0 {
		return nil, fmt.Errorf("%w: reserved bytes set", errBadFrame)
	}
	if f.flags&^knownFlags != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", errBadFrame, f.flags)
	}
	if f.off > math.MaxInt64 || f.length > math.MaxInt64 || f.off+f.length > math.MaxInt64 {
		return nil, fmt.Errorf("%w: range %d+%d overflows", errBadFrame, f.off, f.length)
	}
	rangeless := f.off == 0 && f.length == 0
	switch f.typ {
	case msgWrite:
		if f.length == 0 || f.length > maxWriteLen || uint64(plen) != f.length || f.code != 0 {
			return nil, fmt.Errorf("%w: WRITE length %d, payload %d", errBadFrame, f.length, plen)
		}
	case msgTrim, msgZero:
		if plen != 0 || f.code != 0 || f.length == 0 {
			return nil, fmt.Errorf("%w: TRIM/ZERO length %d, payload %d", errBadFrame, f.length, plen)
		}
	case msgFlush:
		if plen != 0 || f.code != 0 || !rangeless || f.flags != 0 {
			return nil, fmt.Errorf("%w: FLUSH with fields set", errBadFrame)
		}
	case msgAck:
		if plen > maxMsgLen || !rangeless || f.flags != 0 {
			return nil, fmt.Errorf("%w: ACK payload %d", errBadFrame, plen)
		}
	case msgHello, msgSyncStart, msgSyncDone:
		if plen > maxMsgLen || f.code != 0 || !rangeless || f.flags != 0 {
			return nil, fmt.Errorf("%w: control frame payload %d", errBadFrame, plen)
		}
	default:
		return nil, fmt.Errorf("%w: unknown type %d", errBadFrame, f.typ)
	}
	if plen > 0 {
		if alloc != nil && f.typ == msgWrite {
			f.payload = alloc(int(plen))
		} else {
			f.payload = make([]byte, plen)
		}
		if _, err := io.ReadFull(r, f.payload); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// checkRange reports whether [off, off+length) lies inside a disk of size
// bytes. readFrame has already ruled out overflow.
func checkRange(off, length uint64, size int64) error {
	if off+length > uint64(size) {
		return fmt.Errorf("%w: range %d+%d beyond disk size %d", errBadFrame, off, length, size)
	}
	return nil
}

// hello is the handshake body. Both sides send one: the primary first.
type hello struct {
	version uint16
	role    uint8
	flags   uint8
	size    uint64
	epoch   uint64
	current uint64   // generation ID of the data; 0 for a brand-new disk
	history []uint64 // earlier generation IDs, newest first
	diskID  string
}

func (h *hello) marshal() []byte {
	be := binary.BigEndian
	b := make([]byte, 0, 32+8*len(h.history)+len(h.diskID))
	b = be.AppendUint16(b, h.version)
	b = append(b, h.role, h.flags)
	b = be.AppendUint64(b, h.size)
	b = be.AppendUint64(b, h.epoch)
	b = be.AppendUint64(b, h.current)
	b = append(b, byte(len(h.history)))
	for _, g := range h.history {
		b = be.AppendUint64(b, g)
	}
	b = be.AppendUint16(b, uint16(len(h.diskID)))
	return append(b, h.diskID...)
}

func unmarshalHello(b []byte) (*hello, error) {
	be := binary.BigEndian
	bad := func(what string) error { return fmt.Errorf("%w: HELLO %s", errBadFrame, what) }
	if len(b) < 2+2+8+8+8+1 {
		return nil, bad("too short")
	}
	h := &hello{version: be.Uint16(b), role: b[2], flags: b[3]}
	h.size = be.Uint64(b[4:])
	h.epoch = be.Uint64(b[12:])
	h.current = be.Uint64(b[20:])
	n := int(b[28])
	b = b[29:]
	if n > maxHistory || len(b) < 8*n+2 {
		return nil, bad("history")
	}
	for i := 0; i < n; i++ {
		h.history = append(h.history, be.Uint64(b[8*i:]))
	}
	b = b[8*n:]
	idLen := int(be.Uint16(b))
	b = b[2:]
	if idLen > maxDiskIDLen || len(b) != idLen {
		return nil, bad("disk ID")
	}
	h.diskID = string(b)
	if h.role != roleBytePrimary && h.role != roleByteSecondary {
		return nil, bad("role")
	}
	if h.size > math.MaxInt64 {
		return nil, bad("size")
	}
	return h, nil
}

// genInfo is the body of SYNCDONE: the generation the secondary now holds.
type genInfo struct {
	current uint64
	history []uint64
}

func (g *genInfo) marshal() []byte {
	be := binary.BigEndian
	b := be.AppendUint64(nil, g.current)
	b = append(b, byte(len(g.history)))
	for _, h := range g.history {
		b = be.AppendUint64(b, h)
	}
	return b
}

func unmarshalGenInfo(b []byte) (*genInfo, error) {
	be := binary.BigEndian
	if len(b) < 9 {
		return nil, fmt.Errorf("%w: generation body too short", errBadFrame)
	}
	g := &genInfo{current: be.Uint64(b)}
	n := int(b[8])
	b = b[9:]
	if n > maxHistory || len(b) != 8*n {
		return nil, fmt.Errorf("%w: generation history", errBadFrame)
	}
	for i := 0; i < n; i++ {
		g.history = append(g.history, be.Uint64(b[8*i:]))
	}
	return g, nil
}
