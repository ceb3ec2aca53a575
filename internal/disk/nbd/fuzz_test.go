package nbd

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// fuzzRequest encodes one request for seed corpora.
func fuzzRequest(typ, flags uint16, off uint64, length uint32, payload []byte) []byte {
	b := make([]byte, requestHeaderLen)
	be.PutUint32(b[0:], requestMagic)
	be.PutUint16(b[4:], flags)
	be.PutUint16(b[6:], typ)
	be.PutUint64(b[8:], 0x1122334455667788)
	be.PutUint64(b[16:], off)
	be.PutUint32(b[24:], length)
	return append(b, payload...)
}

// fuzzOption encodes one option for seed corpora.
func fuzzOption(opt uint32, data []byte) []byte {
	b := make([]byte, optHeaderLen)
	be.PutUint64(b[0:], optMagic)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], uint32(len(data)))
	return append(b, data...)
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// fuzzExportSize is the export size in the fuzz tests; the memory backend
// behind it is larger, and any call beyond this size fails the test.
const fuzzExportSize = 64 << 10

func fuzzServer() (*Server, *memBackend) {
	m := newMemBackend(2 * fuzzExportSize)
	m.size = fuzzExportSize
	s := NewServer(Config{
		Exports:          map[string]Export{"": {Backend: m}, "ro": {Backend: m, ReadOnly: true}},
		MinBlock:         512,
		MaxBlock:         16 << 10,
		MaxInFlight:      4,
		HandshakeTimeout: 5 * time.Second,
	})
	return s, m
}

// feed writes input to the server end of a pipe after the handshake and
// makes sure ServeConn returns; it discards what the server sends. A
// server that hangs fails the test with every goroutine's stack.
func feed(t *testing.T, cli net.Conn, done <-chan error, input []byte) {
	t.Helper()
	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, cli)
		close(drained)
	}()
	go func() {
		_, _ = cli.Write(input) // fails once the server closes; that is fine
		cli.Close()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("ServeConn did not return within 20s; goroutines:\n%s", buf)
	}
	cli.Close()
	<-drained
}

func FuzzRequestParsing(f *testing.F) {
	f.Add(fuzzRequest(cmdRead, 0, 0, 512, nil))
	f.Add(concat(fuzzRequest(cmdWrite, cmdFlagFUA, 512, 512, make([]byte, 512)), fuzzRequest(cmdRead, 0, 512, 512, nil)))
	f.Add(fuzzRequest(cmdWrite, 0, fuzzExportSize-512, 1024, make([]byte, 1024)))
	f.Add(fuzzRequest(cmdWrite, 0, 0, 32<<10, make([]byte, 32<<10)))
	f.Add(fuzzRequest(cmdWrite, 0, 0, 600, make([]byte, 100)))
	f.Add(fuzzRequest(cmdWrite, 0, 0, maxPayload+1, nil))
	f.Add(concat(fuzzRequest(cmdTrim, 0, 0, 4096, nil), fuzzRequest(cmdWriteZeroes, cmdFlagNoHole, 4096, 4096, nil), fuzzRequest(cmdFlush, 0, 0, 0, nil)))
	f.Add(fuzzRequest(cmdWriteZeroes, cmdFlagFastZero, 1<<63, 1<<31, nil))
	f.Add(fuzzRequest(cmdRead, 0, 1<<64-512, 1024, nil))
	f.Add(fuzzRequest(cmdDisc, 0, 0, 0, nil))
	f.Add(concat(fuzzRequest(cmdFlush, 0, 0, 0, nil), fuzzRequest(cmdDisc, 0, 0, 0, nil), fuzzRequest(cmdWrite, 0, 0, 512, make([]byte, 512))))
	f.Add(fuzzRequest(77, 0xffff, 0, 0, nil))
	f.Add([]byte{0x25, 0x60, 0x95, 0x13, 0, 0})
	f.Add([]byte("garbage, not a request at all"))
	f.Fuzz(func(t *testing.T, input []byte) {
		for _, name := range []string{"", "ro"} {
			s, m := fuzzServer()
			ctx, cancel := context.WithCancel(context.Background())
			cli, done := pipeServer(ctx, s)
			rc := newRawClient(cli)
			if err := rc.start(); err != nil {
				t.Fatal(err)
			}
			if _, err := rc.goExport(name); err != nil {
				t.Fatal(err)
			}
			feed(t, cli, done, input)
			cancel()
			if m.outOfRange.Load() {
				t.Fatalf("export %q: the backend was called outside the export", name)
			}
			if name == "ro" && m.writes.Load()+m.trims.Load()+m.zeroes.Load() != 0 {
				t.Fatalf("a read-only export was written to")
			}
			if st := s.Stats(); st.Active != 0 {
				t.Fatalf("%d connections still active", st.Active)
			}
		}
	})
}

func FuzzOptionParsing(f *testing.F) {
	flags := []byte{0, 0, 0, 3}
	f.Add(concat(flags, fuzzOption(optGo, infoGoData("", infoBlockSize)), fuzzRequest(cmdRead, 0, 0, 512, nil)))
	f.Add(concat(flags, fuzzOption(optList, nil), fuzzOption(optAbort, nil)))
	f.Add(concat(flags, fuzzOption(optInfo, infoGoData("ro", infoName, infoDescription)), fuzzOption(optExportName, []byte("ro"))))
	f.Add(concat(flags, fuzzOption(optStructuredReply, nil), fuzzOption(optSetMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 15})))
	f.Add(concat(flags, fuzzOption(optExportName, []byte("missing"))))
	f.Add(concat(flags, fuzzOption(optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	f.Add(concat(flags, fuzzOption(optGo, []byte{0, 0, 0, 0, 0xff, 0xff})))
	f.Add(concat(flags, fuzzOption(0xffffffff, []byte("xyz"))))
	f.Add(concat([]byte{0, 0, 0, 1}, fuzzOption(optExportName, nil)))
	f.Add(concat([]byte{0xff, 0, 0, 0}))
	f.Add(concat(flags, []byte("IHAVEOPT\x00\x00\x00\x07\xff\xff\xff\xff")))
	f.Fuzz(func(t *testing.T, input []byte) {
		s, m := fuzzServer()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cli, done := pipeServer(ctx, s)
		if _, err := newRawClient(cli).greet(); err != nil {
			t.Fatal(err)
		}
		feed(t, cli, done, input)
		if m.outOfRange.Load() {
			t.Fatalf("the backend was called outside the export")
		}
		if st := s.Stats(); st.Active != 0 {
			t.Fatalf("%d connections still active", st.Active)
		}
	})
}
