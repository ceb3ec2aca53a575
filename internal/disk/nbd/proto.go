package nbd

// Wire constants of the NBD protocol, as named in NetworkBlockDevice/nbd
// doc/proto.md. All integers on the wire are big-endian.
const (
	nbdMagic         = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic         = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic    = 0x0003e889045565a9
	requestMagic     = 0x25609513
	simpleReplyMagic = 0x67446698
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFlagFixedNewstyle = 1 << 0
	clientFlagNoZeroes      = 1 << 1
)

// Option types.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11
)

// Option reply types. Errors have bit 31 set.
const (
	repAck    = 1
	repServer = 2
	repInfo   = 3

	repErrUnsup   = 1<<31 + 1
	repErrPolicy  = 1<<31 + 2
	repErrInvalid = 1<<31 + 3
	repErrUnknown = 1<<31 + 6
	repErrTooBig  = 1<<31 + 9
)

// Information types of NBD_REP_INFO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagCanMultiConn    = 1 << 8
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
)

// Error values of replies.
const (
	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errNoSpc    = 28
	errShutdown = 108
)

// Sizes and limits.
const (
	// maxString is the longest string (export name, description) the
	// protocol allows.
	maxString = 4096
	// maxOptionLen is the longest option payload the server reads into
	// memory; longer ones are discarded and refused with
	// NBD_REP_ERR_TOO_BIG, up to maxOptionDiscard, beyond which the
	// connection is closed as a denial of service.
	maxOptionLen     = 64 << 10
	maxOptionDiscard = 1 << 20
	// maxPayload is the largest write payload the server accepts on the
	// wire: the spec says a payload of up to 32 MiB should not be treated
	// as a denial of service, even above the advertised maximum. Anything
	// larger closes the connection.
	maxPayload = 32 << 20

	requestHeaderLen = 28
	replyHeaderLen   = 16
	optHeaderLen     = 16
	optReplyHdrLen   = 20
)

// cmdName returns the protocol name of command typ, for logs.
func cmdName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return "unknown"
}
