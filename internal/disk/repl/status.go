package repl

import (
	"errors"
	"time"
)

// Errors returned by this package. Check them with [errors.Is].
var (
	// ErrStaleEpoch means the secondary holds a higher epoch than the
	// primary: the control plane has moved on, and this primary is a
	// zombie that must stop writing (property 3).
	ErrStaleEpoch = errors.New("repl: stale epoch")
	// ErrDiverged means both disks were written independently since they
	// last agreed; nothing is merged (property 8). See [KeepAside].
	ErrDiverged = errors.New("repl: replicas have diverged")
	// ErrPeerAhead means the secondary holds newer data than the primary:
	// the primary would overwrite it, so the link is refused.
	ErrPeerAhead = errors.New("repl: peer has newer data than this primary")
	// ErrMismatch means the peer serves another disk, another size or
	// another protocol version.
	ErrMismatch = errors.New("repl: peer disk or protocol mismatch")
	// ErrFrozen means the primary is frozen after losing its peer and is
	// waiting for the control plane's decision.
	ErrFrozen = errors.New("repl: primary is frozen")
	// ErrInconsistent means the disk holds a half-finished resync and must
	// not serve as a primary.
	ErrInconsistent = errors.New("repl: disk is inconsistent (incomplete resync)")
	// ErrAckTimeout means the peer did not acknowledge a request in time.
	ErrAckTimeout = errors.New("repl: peer acknowledgement timed out")
	// ErrClosed means the Primary or Secondary was closed.
	ErrClosed = errors.New("repl: closed")
	// ErrPeerIO means the secondary reported a local I/O error.
	ErrPeerIO = errors.New("repl: peer I/O error")
	// ErrBusy means the secondary refused the link because it is closing
	// or already serving a primary with a higher epoch.
	ErrBusy = errors.New("repl: peer busy")
)

// Role is the part a host plays for one disk.
type Role string

// Roles.
const (
	RolePrimary   Role = "primary"
	RoleSecondary Role = "secondary"
)

// State is the replication state of one side of a disk.
type State string

// States, after DRBD's disk and connection states.
const (
	// StateUpToDate: connected, and the peer has every acknowledged write.
	StateUpToDate State = "UpToDate"
	// StateSyncing: connected, resync of the dirty regions in progress.
	StateSyncing State = "Syncing"
	// StateOutdated: a secondary without a primary, or with an incomplete
	// resync; it may lack writes and must not be promoted on its own say.
	StateOutdated State = "Outdated"
	// StateDegraded: a primary writing without its peer, with the control
	// plane's consent; every write marks the dirty bitmap.
	StateDegraded State = "Degraded"
	// StateFrozen: a primary without a peer and without consent to go on;
	// writes block. Also the state of a primary that met a higher epoch.
	StateFrozen State = "Frozen"
)

// Status is a snapshot of one side's replication state.
type Status struct {
	Role  Role
	Epoch uint64
	State State
	// SyncedBytes and TotalBytes give resync progress: TotalBytes is what
	// the current (or last) resync had to cover.
	SyncedBytes int64
	TotalBytes  int64
	// DirtyBytes is what the peer is known to lack (primary only).
	DirtyBytes int64
	// Reason explains the state in words, for operators.
	Reason string
}

// Progress describes a running resync.
type Progress struct {
	// TotalBytes is the disk area the resync covers (the dirty regions
	// when it started); DoneBytes of it are handled, LeftBytes remain.
	TotalBytes, DoneBytes, LeftBytes int64
	// SentBytes is the data actually sent to the peer: regions found to be
	// holes are skipped or sent as a zero request without data.
	SentBytes int64
	// Rate is the average rate in disk bytes per second since the start.
	Rate float64
	// ETA is the estimated time left at that rate; 0 when unknown or done.
	ETA time.Duration
	// Done is set on the last report, when the peer is up to date.
	Done bool
}

// Decision is the control plane's answer after a primary lost its peer.
type Decision struct {
	// PeerOutdated says the control plane has recorded the peer as
	// outdated, so it will not be promoted with the data it has.
	PeerOutdated bool
	// Epoch is the new epoch the control plane assigned to this primary.
	// It must be higher than any epoch used on the lost link.
	Epoch uint64
}
