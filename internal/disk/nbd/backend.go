package nbd

import (
	"errors"
	"syscall"
)

// Backend is the block device an export serves: a fixed-size range of bytes
// that can be read, written and made durable. It is shaped like
// [io.ReaderAt] and [io.WriterAt] and follows their contracts, with these
// additions.
//
// The server calls a Backend from several goroutines at once, for one or
// many connections, including for overlapping ranges; NBD gives no ordering
// between requests in flight together, so neither need the Backend. The
// server never passes a range outside [0, Size()).
//
// ReadAt reads len(p) bytes at offset off. It returns n == len(p) on
// success (err may then be nil or [io.EOF]); if n < len(p) it must return
// a non-nil error, and the client gets an error reply.
//
// WriteAt writes len(p) bytes at offset off and returns n == len(p), or an
// error. When WriteAt returns, the data must be visible to every later
// ReadAt, from any connection; it need not be durable until Flush.
//
// Implementations must not retain p after ReadAt or WriteAt returns: the
// server reuses its buffers. A Backend that ships writes elsewhere
// asynchronously (a replica, say) must copy p first.
//
// Size returns the size of the export in bytes. The server asks once per
// connection, when the client selects the export; it must not change while
// connections are open.
//
// Flush makes every write that had returned before Flush was called
// durable, whichever connection it came from (fdatasync(2) on a file).
//
// The server answers the client only after the Backend call returns, so a
// Backend that mirrors writes (write locally, send to a peer, wait for both)
// gets synchronous replication without further help. Errors map to NBD
// error codes: [ErrReadOnly], EPERM, EACCES and EROFS become NBD_EPERM;
// [ErrNoSpace], ENOSPC, EDQUOT and EFBIG become NBD_ENOSPC; [ErrInvalid] and
// EINVAL become NBD_EINVAL; [ErrShutdown] becomes NBD_ESHUTDOWN (the client
// must then disconnect); anything else becomes NBD_EIO. Errors are matched
// with [errors.Is], so wrapped errors work.
type Backend interface {
	ReadAt(p []byte, off int64) (n int, err error)
	WriteAt(p []byte, off int64) (n int, err error)
	Size() int64
	Flush() error
}

// Trimmer is implemented by a Backend that can discard a range
// (NBD_CMD_TRIM). Trim is a hint: afterwards the range may read as anything
// until it is written again, so doing nothing is a valid implementation.
// The server advertises NBD_FLAG_SEND_TRIM only for backends that implement
// Trimmer. Trim may be called concurrently with any other method.
type Trimmer interface {
	Trim(off, length int64) error
}

// ZeroWriter is implemented by a Backend that can write zeroes without a
// data buffer (NBD_CMD_WRITE_ZEROES). After WriteZeroes returns nil, the
// range must read as zeroes. If mayTrim is false (the client set
// NBD_CMD_FLAG_NO_HOLE), the range must stay allocated, so that later writes
// to it cannot fail for lack of space; if it is true the backend may
// deallocate it. A Backend without ZeroWriter gets the zeroes through
// WriteAt, in chunks of at most 1 MiB.
type ZeroWriter interface {
	WriteZeroes(off, length int64, mayTrim bool) error
}

// FUAWriter is implemented by a Backend that can write one request durably
// (NBD_CMD_FLAG_FUA) more cheaply than WriteAt followed by Flush, which is
// what the server does for backends without it. WriteAtFUA has the contract
// of WriteAt, and also makes p durable before it returns; it need not make
// other writes durable.
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (n int, err error)
}

// MultiConnBackend is implemented by a Backend that knows whether several
// connections may safely use it at once: whether a write returned to one
// connection is visible to reads on all others, and whether Flush (and FUA)
// make writes from every connection durable. If CanMultiConn returns true,
// the server advertises NBD_FLAG_CAN_MULTI_CONN, and clients such as nbdcopy
// and QEMU may open several connections to the export.
type MultiConnBackend interface {
	CanMultiConn() bool
}

// Errors a Backend can return to choose the NBD error the client sees.
var (
	// ErrReadOnly makes the client see NBD_EPERM.
	ErrReadOnly = errors.New("nbd: export is read-only")
	// ErrNoSpace makes the client see NBD_ENOSPC.
	ErrNoSpace = errors.New("nbd: no space left")
	// ErrInvalid makes the client see NBD_EINVAL.
	ErrInvalid = errors.New("nbd: invalid request")
	// ErrShutdown makes the client see NBD_ESHUTDOWN, after which the
	// client must disconnect. A backend that has lost the right to write
	// (a fenced replica, say) can use it.
	ErrShutdown = errors.New("nbd: server is shutting down")
)

// errnoOf maps a backend error to an NBD error value; nil maps to 0.
func errnoOf(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrReadOnly), errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EROFS):
		return errPerm
	case errors.Is(err, ErrNoSpace), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	case errors.Is(err, ErrInvalid), errors.Is(err, syscall.EINVAL):
		return errInval
	case errors.Is(err, ErrShutdown):
		return errShutdown
	}
	return errIO
}

// Helpers for code that forwards requests to a Backend whose optional
// interfaces it does not know (a replicating primary, a gate, a switch
// between backends): each uses the optional interface when b has it and
// the plain equivalent otherwise.

// WriteAtFUA writes p at off durably: through b's FUAWriter, else WriteAt
// followed by Flush.
func WriteAtFUA(b Backend, p []byte, off int64) (int, error) {
	if fw, ok := b.(FUAWriter); ok {
		return fw.WriteAtFUA(p, off)
	}
	n, err := b.WriteAt(p, off)
	if err == nil {
		err = b.Flush()
	}
	return n, err
}

// Trim discards a range through b's Trimmer; a backend without one does
// nothing, which a trim (a hint) allows.
func Trim(b Backend, off, length int64) error {
	if t, ok := b.(Trimmer); ok {
		return t.Trim(off, length)
	}
	return nil
}

// WriteZeroes makes a range of b read as zeroes: through b's ZeroWriter
// (mayTrim as there), else with plain writes of zeroes.
func WriteZeroes(b Backend, off, length int64, mayTrim bool) error {
	if z, ok := b.(ZeroWriter); ok {
		return z.WriteZeroes(off, length, mayTrim)
	}
	return writeZeroes(b, off, length)
}
