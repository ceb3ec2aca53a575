package nbd

import (
	"sync/atomic"
	"time"
)

// CommandStats counts the requests of one command.
type CommandStats struct {
	// Requests is the number of requests received, including those
	// answered with an error.
	Requests uint64
	// Errors is the number of requests answered with an error, whether
	// the server rejected them or the backend failed.
	Errors uint64
	// Bytes is the number of bytes read, written, trimmed or zeroed by
	// successful requests (0 for FLUSH).
	Bytes uint64
	// Time is the total time from reading each request to handing its
	// reply to the connection, including time spent waiting for a worker.
	Time time.Duration
}

// Commands holds one CommandStats per command. Other counts unknown and
// unsupported commands.
type Commands struct {
	Read, Write, Flush, Trim, WriteZeroes, Other CommandStats
}

// ServerStats is a snapshot of a Server's counters since it was created.
type ServerStats struct {
	// Accepted is the number of connections ServeConn was given.
	Accepted uint64
	// Active is the number of connections being served now.
	Active int
	// HandshakeFailures counts connections that ended before the
	// transmission phase other than by NBD_OPT_ABORT.
	HandshakeFailures uint64
	// ProtocolErrors counts connections closed because the client broke
	// the protocol (bad magic, oversized payload, and so on).
	ProtocolErrors uint64
	// Commands sums the request counters of every connection, past and
	// present.
	Commands Commands
}

// ConnStats describes one connection in the transmission phase.
type ConnStats struct {
	// ID numbers connections in the order the server accepted them.
	ID uint64
	// Remote is the client's address, as the net.Conn reports it ("@" or
	// empty for unnamed unix sockets).
	Remote string
	// Export is the name of the export the client chose.
	Export string
	// Since is when the connection entered the transmission phase.
	Since time.Time
	// InFlight is the number of requests read but not yet answered.
	InFlight int
	// Commands counts the requests of this connection.
	Commands Commands
}

// Counter indices, one per Commands field.
const (
	statRead = iota
	statWrite
	statFlush
	statTrim
	statWriteZeroes
	statOther
	numStats
)

// statIndex returns the counter index of command typ.
func statIndex(typ uint16) int {
	switch typ {
	case cmdRead:
		return statRead
	case cmdWrite:
		return statWrite
	case cmdFlush:
		return statFlush
	case cmdTrim:
		return statTrim
	case cmdWriteZeroes:
		return statWriteZeroes
	}
	return statOther
}

// cmdCounters is the atomic form of CommandStats.
type cmdCounters struct {
	requests, errors, bytes, nanos atomic.Uint64
}

// counters is the atomic form of Commands.
type counters [numStats]cmdCounters

// add records one request of command typ.
func (c *counters) add(typ uint16, failed bool, bytes uint64, d time.Duration) {
	x := &c[statIndex(typ)]
	x.requests.Add(1)
	if failed {
		x.errors.Add(1)
	} else {
		x.bytes.Add(bytes)
	}
	x.nanos.Add(uint64(max(d, 0)))
}

func (c *counters) snapshot() Commands {
	get := func(i int) CommandStats {
		return CommandStats{
			Requests: c[i].requests.Load(),
			Errors:   c[i].errors.Load(),
			Bytes:    c[i].bytes.Load(),
			Time:     time.Duration(c[i].nanos.Load()),
		}
	}
	return Commands{
		Read:        get(statRead),
		Write:       get(statWrite),
		Flush:       get(statFlush),
		Trim:        get(statTrim),
		WriteZeroes: get(statWriteZeroes),
		Other:       get(statOther),
	}
}
