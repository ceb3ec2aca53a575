// Package nbd is ferry's NBD server: it serves a block device [Backend] to
// QEMU's built-in NBD client (or any other NBD client) over a unix socket or
// TCP, speaking the fixed newstyle protocol of the NetworkBlockDevice/nbd
// specification (doc/proto.md).
//
// # Protocol
//
// The handshake is fixed newstyle with NBD_FLAG_NO_ZEROES. The server
// answers NBD_OPT_GO and NBD_OPT_INFO (with NBD_INFO_EXPORT, NBD_INFO_NAME,
// NBD_INFO_DESCRIPTION and NBD_INFO_BLOCK_SIZE), NBD_OPT_LIST, NBD_OPT_ABORT
// and the old NBD_OPT_EXPORT_NAME. Every other option, including
// NBD_OPT_STRUCTURED_REPLY, NBD_OPT_STARTTLS and the metadata-context
// options, is refused with NBD_REP_ERR_UNSUP, so replies in the transmission
// phase are always simple replies. The transmission phase implements
// NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_FLUSH, NBD_CMD_TRIM (if the backend
// is a [Trimmer]), NBD_CMD_WRITE_ZEROES (with NBD_CMD_FLAG_NO_HOLE) and
// NBD_CMD_DISC, with NBD_CMD_FLAG_FUA on every write-type command, and
// advertises NBD_FLAG_CAN_MULTI_CONN when the backend says it is safe
// ([MultiConnBackend]).
//
// # Concurrency and ordering
//
// Each connection has one goroutine reading requests, a bounded pool of
// [Config.MaxInFlight] workers calling the backend, and one goroutine
// writing replies, so a client may pipeline requests and receives replies in
// completion order. The server calls the backend for every request, and
// sends the reply only after that call has returned: a write is acknowledged
// only once the backend says it is done, and a write with
// NBD_CMD_FLAG_FUA only once the backend says it is durable.
//
// NBD_CMD_FLUSH covers at least every write-type request (WRITE, TRIM,
// WRITE_ZEROES) received on the same connection before the flush: the
// flush waits until those have returned from the backend, then calls
// [Backend.Flush]. This is stronger than the protocol's rule that a flush
// covers the writes whose replies the client had received. Writes on other
// connections are covered when the client waited for their replies before
// sending the flush, as the protocol requires of multi-connection clients,
// because [Backend.Flush] makes every completed write durable.
//
// # Validation
//
// Every request is checked before the backend sees it: the command and its
// flags must be known and advertised, offset and length must lie inside the
// export, be aligned to [Config.MinBlock], and (for reads and writes) not
// exceed [Config.MaxBlock]. A bad request gets an error reply (NBD_EINVAL,
// NBD_ENOSPC for writes past the end, NBD_EPERM for writes to a read-only
// export) and the connection continues; a request that breaks the framing
// (wrong magic, a write payload over 32 MiB) closes the connection with a
// log line saying why. Backend errors map to NBD errors as described at
// [Backend].
//
// A [Server] is safe for concurrent use; [Server.Stats] and
// [Server.Connections] report plain counters for metrics.
package nbd
