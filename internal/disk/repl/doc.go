// Package repl replicates one block device synchronously from a primary
// host to a secondary host, with the semantics of DRBD's protocol C: a
// write is complete only when both disks have it.
//
// Its job is to make property 2 of the architecture true (no acknowledged
// write is lost when one host dies) without ever breaking properties 3, 4
// and 8:
//
//   - Every link carries the primary's epoch. A [Secondary] refuses a
//     handshake or a frame whose epoch is lower than its own, so a zombie
//     primary cannot write into a replica that the control plane has since
//     promoted or re-assigned ([ErrStaleEpoch]).
//   - A [Primary] that loses its secondary freezes I/O: writes neither fail
//     nor complete. It asks the control plane through [Config.OnPeerLost]
//     and continues degraded only if the control plane has marked the peer
//     outdated and handed out a higher epoch (DRBD's outdate-peer rule).
//   - While degraded, every write first marks its region in a persistent
//     [Bitmap]. A reconnect resyncs only those regions, in the background,
//     while I/O continues.
//   - Each disk carries generation identifiers (a current ID and its
//     history). When both sides were written independently, the handshake
//     fails with [ErrDiverged] and nothing is merged; [KeepAside] moves the
//     losing image out of the way so an operator can recover it.
//   - The replicas never differ silently while connected. Requests on
//     overlapping ranges take effect in the same order on both disks (the
//     primary holds back a request until the overlapping ones before it
//     completed). A write that the primary's own disk fails, after the
//     secondary may have applied it, fails, and its regions are marked in
//     the bitmap (relative to the peer's generation) and resynced from the
//     primary; if even that cannot be recorded, the link is dropped and the
//     next connection does a full sync.
//
// A Primary implements [nbd.Backend] and its optional interfaces, so the NBD
// server serves a replicated disk unchanged. All exported methods are safe
// for concurrent use.
//
// # Wire protocol
//
// Frames are a fixed 48-byte big-endian header followed by a payload of at
// most 32 MiB. The primary opens with HELLO (version, disk ID, size, role,
// epoch, generation identifiers, flags); the secondary answers with its own
// HELLO or with an ACK carrying an error code, and closes. Then the primary
// sends WRITE{seq, off, len, fua, data}, TRIM/ZERO{seq, off, len},
// FLUSH{seq}, SYNCSTART and SYNCDONE, pipelined, and the secondary answers
// each with ACK{seq, code, message} in any order. Any malformed frame closes
// the link.
//
// The secondary applies several requests at a time, but those on
// overlapping ranges in the order received; a FLUSH waits for every request
// received before it, and SYNCSTART and SYNCDONE for all requests before
// them while holding back those after. It acknowledges a request only once
// it took effect locally (a FUA write or a FLUSH once flushed).
//
// # Performance
//
// Both sides batch frames (group commit): frames sent while a write to the
// connection is in progress go out together with the next write, and the
// secondary holds an ACK while other writes it received are still being
// applied (50 µs as long as writes keep completing, 1 ms at most), so
// their ACKs share one write. System calls and
// wake-ups, not bandwidth, dominate the cost of replicating small writes,
// so callers should also wrap the TCP connection in [LinkConn] before TLS:
// it sends a batch's TLS records with one system call and reads ahead.
package repl
