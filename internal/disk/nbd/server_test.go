package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	mb := newMemBackend(1 << 20)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{}},
		{name: "512-byte disk", cfg: Config{MinBlock: 512, PreferredBlock: 4096, MaxBlock: 1 << 20}},
		{name: "min 64k", cfg: Config{MinBlock: 1 << 16}},
		{name: "min not power of two", cfg: Config{MinBlock: 384}, wantErr: "MinBlock 384"},
		{name: "min too big", cfg: Config{MinBlock: 1 << 17}, wantErr: "MinBlock"},
		{name: "preferred below 512", cfg: Config{PreferredBlock: 256}, wantErr: "PreferredBlock 256"},
		{name: "preferred below min", cfg: Config{MinBlock: 8192, PreferredBlock: 4096}, wantErr: "PreferredBlock 4096"},
		{name: "max below preferred", cfg: Config{MaxBlock: 1024}, wantErr: "MaxBlock 1024"},
		{name: "max above 32 MiB", cfg: Config{MaxBlock: 64 << 20}, wantErr: "MaxBlock"},
		{name: "max not multiple of min", cfg: Config{MinBlock: 4096, MaxBlock: 4096*3 + 1}, wantErr: "multiple"},
		{name: "negative in-flight", cfg: Config{MaxInFlight: -1}, wantErr: "MaxInFlight"},
		{name: "no backend", cfg: Config{Exports: map[string]Export{"a": {}}}, wantErr: `export "a" has no backend`},
		{name: "long name", cfg: Config{Exports: map[string]Export{strings.Repeat("x", 5000): {Backend: mb}}}, wantErr: "longer than 4096"},
		{name: "long description", cfg: Config{Exports: map[string]Export{"a": {Backend: mb, Description: strings.Repeat("x", 5000)}}}, wantErr: "description"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestInvalidConfigRefusesToServe(t *testing.T) {
	t.Parallel()
	s := NewServer(Config{MinBlock: 3})
	cli, done := pipeServer(t.Context(), s)
	defer cli.Close()
	if err := waitErr(t, done); err == nil || !strings.Contains(err.Error(), "MinBlock") {
		t.Errorf("ServeConn = %v, want the config error", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(t.Context(), l); err == nil {
		t.Errorf("Serve = nil, want the config error")
	}
}

func TestGreeting(t *testing.T) {
	t.Parallel()
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: newMemBackend(4096)}}})
	cli, done := pipeServer(t.Context(), s)
	rc := newRawClient(cli)
	flags, err := rc.greet()
	if err != nil {
		t.Fatal(err)
	}
	if want := uint16(flagFixedNewstyle | flagNoZeroes); flags != want {
		t.Errorf("handshake flags = %#x, want %#x", flags, want)
	}
	cli.Close()
	if err := waitErr(t, done); err == nil {
		t.Errorf("ServeConn after the client hung up in the handshake = nil, want an error")
	}
	if st := s.Stats(); st.Accepted != 1 || st.HandshakeFailures != 1 || st.Active != 0 {
		t.Errorf("Stats() = %+v, want 1 accepted, 1 handshake failure, 0 active", st)
	}
}

// TestOptions runs every option, valid and not, on one connection: the
// server must answer each and keep parsing.
func TestOptions(t *testing.T) {
	t.Parallel()
	mb := newMemBackend(1 << 20)
	s := NewServer(Config{
		Exports: map[string]Export{
			"disk":  {Backend: mb, Description: "the disk"},
			"ro":    {Backend: plainBackend{mb}, ReadOnly: true},
			"empty": {Backend: newMemBackend(0)},
		},
		Lookup: func(name string) (Export, bool) {
			if name == "dynamic" {
				return Export{Backend: newMemBackend(8192)}, true
			}
			return Export{}, false
		},
		MinBlock: 512,
	})
	cli, done := pipeServer(t.Context(), s)
	defer cli.Close()
	rc := newRawClient(cli)
	if err := rc.start(); err != nil {
		t.Fatal(err)
	}

	listReply := func(names ...string) []optReplyMsg {
		var out []optReplyMsg
		for _, n := range names {
			d := be.AppendUint32(nil, uint32(len(n)))
			d = append(d, n...)
			if n == "disk" {
				d = append(d, "the disk"...)
			}
			out = append(out, optReplyMsg{opt: optList, typ: repServer, data: d})
		}
		return append(out, optReplyMsg{opt: optList, typ: repAck, data: []byte{}})
	}
	tests := []struct {
		name     string
		opt      uint32
		data     []byte
		wantType uint32 // type of the final reply
		want     []optReplyMsg
		wantInfo *exportInfo
	}{
		{name: "list", opt: optList, wantType: repAck, want: listReply("disk", "empty", "ro")},
		{name: "list with data", opt: optList, data: []byte{1}, wantType: repErrInvalid},
		{name: "structured reply", opt: optStructuredReply, wantType: repErrUnsup},
		{name: "starttls", opt: optStartTLS, wantType: repErrUnsup},
		{name: "list meta context", opt: optListMetaContext, data: infoGoData("disk"), wantType: repErrUnsup},
		{name: "set meta context", opt: optSetMetaContext, data: infoGoData("disk"), wantType: repErrUnsup},
		{name: "extended headers", opt: optExtendedHeaders, wantType: repErrUnsup},
		{name: "unknown option", opt: 0xdead, data: []byte("whatever"), wantType: repErrUnsup},
		{name: "option too big", opt: 0xdead, data: make([]byte, maxOptionLen+1), wantType: repErrTooBig},
		{name: "info too short", opt: optInfo, data: []byte{0, 0, 0, 0, 0}, wantType: repErrInvalid},
		{name: "info name overruns", opt: optInfo, data: []byte{0, 0, 0, 9, 'd', 'i', 's', 'k', 0, 0}, wantType: repErrInvalid},
		{name: "info request count overruns", opt: optInfo, data: append(infoGoData("disk"), 0), wantType: repErrInvalid},
		{name: "info name too long", opt: optInfo, data: infoGoData(strings.Repeat("x", maxString+1)), wantType: repErrInvalid},
		{name: "info unknown export", opt: optInfo, data: infoGoData("nope"), wantType: repErrUnknown},
		{name: "go unknown export", opt: optGo, data: infoGoData("nope"), wantType: repErrUnknown},
		{
			name: "info all", opt: optInfo, data: infoGoData("disk", infoName, infoDescription, infoBlockSize, 77), wantType: repAck,
			wantInfo: &exportInfo{
				size: 1 << 20, flags: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn,
				name: "disk", hasName: true, description: "the disk", hasDesc: true,
				hasBlocks: true, minBlock: 512, prefBlock: 4096, maxBlk: DefaultMaxBlock,
			},
		},
		{
			name: "info read-only without requests", opt: optInfo, data: infoGoData("ro"), wantType: repAck,
			wantInfo: &exportInfo{
				size: 1 << 20, flags: tflagHasFlags | tflagSendFlush | tflagReadOnly,
				hasBlocks: true, minBlock: 512, prefBlock: 4096, maxBlk: DefaultMaxBlock,
			},
		},
		{
			name: "info empty description omitted", opt: optInfo, data: infoGoData("empty", infoDescription), wantType: repAck,
			wantInfo: &exportInfo{
				size: 0, flags: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn,
				hasBlocks: true, minBlock: 512, prefBlock: 4096, maxBlk: DefaultMaxBlock,
			},
		},
		{
			name: "info via lookup", opt: optInfo, data: infoGoData("dynamic", infoName), wantType: repAck,
			wantInfo: &exportInfo{
				size: 8192, flags: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn,
				name: "dynamic", hasName: true, hasBlocks: true, minBlock: 512, prefBlock: 4096, maxBlk: DefaultMaxBlock,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := rc.sendOpt(tc.opt, tc.data); err != nil {
				t.Fatal(err)
			}
			got, err := rc.readOptReplies(tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if last := got[len(got)-1]; last.typ != tc.wantType {
				t.Fatalf("%s: final reply type %#x (%q), want %#x", optName(tc.opt), last.typ, last.data, tc.wantType)
			}
			if tc.wantType&(1<<31) != 0 && len(got) != 1 {
				t.Errorf("%s: %d replies before the error, want none", optName(tc.opt), len(got)-1)
			}
			if tc.want != nil && fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%s replies = %v, want %v", optName(tc.opt), got, tc.want)
			}
			if tc.wantInfo != nil {
				info, err := parseInfos(got)
				if err != nil {
					t.Fatal(err)
				}
				if info != *tc.wantInfo {
					t.Errorf("%s info = %+v, want %+v", optName(tc.opt), info, *tc.wantInfo)
				}
			}
		})
	}

	// After all that, the connection still works.
	info, err := rc.goExport("disk")
	if err != nil {
		t.Fatal(err)
	}
	c := startClient(rc, info)
	if r := c.read(0, 512); r.err != nil || r.errno != 0 {
		t.Errorf("read after the options = %+v", r)
	}
	if err := c.disc(); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, done); err != nil {
		t.Errorf("ServeConn = %v, want nil", err)
	}
}

func TestAbort(t *testing.T) {
	t.Parallel()
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: newMemBackend(4096)}}})
	cli, done := pipeServer(t.Context(), s)
	defer cli.Close()
	rc := newRawClient(cli)
	if err := rc.start(); err != nil {
		t.Fatal(err)
	}
	if err := rc.sendOpt(optAbort, []byte("ignored")); err != nil {
		t.Fatal(err)
	}
	r, err := rc.readOptReply()
	if err != nil || r.typ != repAck || r.opt != optAbort {
		t.Fatalf("reply to NBD_OPT_ABORT = %+v, %v; want NBD_REP_ACK", r, err)
	}
	if err := waitErr(t, done); err != nil {
		t.Errorf("ServeConn after NBD_OPT_ABORT = %v, want nil", err)
	}
	if st := s.Stats(); st.HandshakeFailures != 0 {
		t.Errorf("HandshakeFailures = %d after an abort, want 0", st.HandshakeFailures)
	}
}

func TestExportName(t *testing.T) {
	t.Parallel()
	mb := newMemBackend(1 << 16)
	copy(mb.data, "hello")
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: mb}, "ro": {Backend: mb, ReadOnly: true}}})
	tests := []struct {
		name     string
		export   string
		noZeroes bool
		wantErr  error
		want     uint16
	}{
		{name: "default export with zeroes", export: "", want: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn},
		{name: "read-only without zeroes", export: "ro", noZeroes: true, want: tflagHasFlags | tflagSendFlush | tflagReadOnly | tflagCanMultiConn},
		{name: "unknown export", export: "nope", wantErr: ErrUnknownExport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cli, done := pipeServer(t.Context(), s)
			defer cli.Close()
			rc := newRawClient(cli)
			if _, err := rc.greet(); err != nil {
				t.Fatal(err)
			}
			flags := uint32(clientFlagFixedNewstyle)
			if tc.noZeroes {
				flags |= clientFlagNoZeroes
			}
			if err := rc.sendFlags(flags); err != nil {
				t.Fatal(err)
			}
			if err := rc.sendOpt(optExportName, []byte(tc.export)); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != nil {
				if _, err := rc.br.ReadByte(); err == nil {
					t.Errorf("server answered NBD_OPT_EXPORT_NAME for an unknown export")
				}
				if err := waitErr(t, done); !errors.Is(err, tc.wantErr) {
					t.Errorf("ServeConn = %v, want %v", err, tc.wantErr)
				}
				return
			}
			n := 10
			if !tc.noZeroes {
				n += 124
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(rc.br, b); err != nil {
				t.Fatal(err)
			}
			if size, fl := be.Uint64(b), be.Uint16(b[8:]); size != 1<<16 || fl != tc.want {
				t.Errorf("NBD_OPT_EXPORT_NAME reply: size %d flags %#x, want %d and %#x", size, fl, 1<<16, tc.want)
			}
			if !bytes.Equal(b[10:], make([]byte, n-10)) {
				t.Errorf("padding is not zeroes")
			}
			c := startClient(rc, exportInfo{size: 1 << 16})
			if r := c.read(0, 5); r.err != nil || string(r.data) != "hello" {
				t.Errorf("read = %+v, want hello", r)
			}
			if err := c.disc(); err != nil {
				t.Fatal(err)
			}
			if err := waitErr(t, done); err != nil {
				t.Errorf("ServeConn = %v", err)
			}
		})
	}
}

func TestHandshakeViolations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		send []byte
	}{
		{name: "unknown client flag", send: []byte{0, 0, 0, 4}},
		{name: "bad option magic", send: append([]byte{0, 0, 0, 1}, []byte("IHAVEOPX\x00\x00\x00\x03\x00\x00\x00\x00")...)},
		{name: "huge option", send: append([]byte{0, 0, 0, 1}, []byte("IHAVEOPT\x00\x00\xff\xff\x7f\x00\x00\x00")...)},
		{name: "long export name", send: append(append([]byte{0, 0, 0, 1}, []byte("IHAVEOPT\x00\x00\x00\x01\x00\x00\x13\x88")...), make([]byte, 5000)...)},
		{name: "huge export name", send: append([]byte{0, 0, 0, 1}, []byte("IHAVEOPT\x00\x00\x00\x01\x00\x01\x00\x01")...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewServer(Config{Exports: map[string]Export{"": {Backend: newMemBackend(4096)}}})
			cli, done := pipeServer(t.Context(), s)
			defer cli.Close()
			rc := newRawClient(cli)
			if _, err := rc.greet(); err != nil {
				t.Fatal(err)
			}
			go func() { _, _ = cli.Write(tc.send) }()
			if err := waitErr(t, done); !errors.Is(err, ErrProtocol) {
				t.Errorf("ServeConn = %v, want ErrProtocol", err)
			}
			if st := s.Stats(); st.ProtocolErrors != 1 || st.HandshakeFailures != 1 {
				t.Errorf("Stats() = %+v, want 1 protocol error and 1 handshake failure", st)
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: newMemBackend(4096)}}, HandshakeTimeout: 50 * time.Millisecond})
	cli, done := pipeServer(t.Context(), s)
	defer cli.Close()
	if _, err := newRawClient(cli).greet(); err != nil {
		t.Fatal(err)
	}
	// Send nothing more: the server must give up on its own.
	if err := waitErr(t, done); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ServeConn = %v, want a deadline error", err)
	}
}

func TestTransmissionFlags(t *testing.T) {
	t.Parallel()
	mb := newMemBackend(4096)
	tests := []struct {
		name string
		e    Export
		want uint16
	}{
		{name: "memory", e: Export{Backend: mb}, want: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn},
		{name: "plain", e: Export{Backend: plainBackend{mb}}, want: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendWriteZeroes},
		{name: "read-only", e: Export{Backend: plainBackend{mb}, ReadOnly: true}, want: tflagHasFlags | tflagSendFlush | tflagReadOnly},
		{name: "file", e: Export{Backend: &FileBackend{}}, want: tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn},
	}
	for _, tc := range tests {
		if got := transmissionFlags(tc.e); got != tc.want {
			t.Errorf("transmissionFlags(%s) = %#x, want %#x", tc.name, got, tc.want)
		}
	}
}

// TestCommands checks each command's effect on the backend.
func TestCommands(t *testing.T) {
	t.Parallel()
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	tests := []struct {
		name  string
		fua   bool // backend implements FUAWriter
		plain bool // backend implements only Backend
		run   func(t *testing.T, c *client, m *memBackend)
	}{
		{name: "write then read", run: func(t *testing.T, c *client, m *memBackend) {
			data := pattern(8192, 1)
			if r := c.write(4096, data, 0); r.err != nil || r.errno != 0 {
				t.Fatalf("write = %+v", r)
			}
			if !bytes.Equal(m.bytes(4096, 8192), data) {
				t.Errorf("backend does not hold the written data")
			}
			if r := c.read(4096, 8192); r.err != nil || r.errno != 0 || !bytes.Equal(r.data, data) {
				t.Errorf("read back = errno %d err %v, data equal %v", r.errno, r.err, bytes.Equal(r.data, data))
			}
			if m.flushes.Load() != 0 {
				t.Errorf("a write without FUA flushed")
			}
		}},
		{name: "unaligned write with min block 1", run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.write(3, []byte("abc"), 0); r.errno != 0 || string(m.bytes(3, 3)) != "abc" {
				t.Errorf("write 3 bytes at 3 = %+v, backend %q", r, m.bytes(3, 3))
			}
		}},
		{name: "last byte", run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.write(1<<20-1, []byte{9}, 0); r.errno != 0 {
				t.Errorf("write of the last byte = %+v", r)
			}
			if r := c.read(1<<20-1, 1); r.errno != 0 || r.data[0] != 9 {
				t.Errorf("read of the last byte = %+v", r)
			}
		}},
		{name: "zero-length requests", run: func(t *testing.T, c *client, m *memBackend) {
			for _, typ := range []uint16{cmdRead, cmdWrite, cmdTrim, cmdWriteZeroes} {
				if r := c.do(typ, 0, 1<<20, 0, nil); r.err != nil || r.errno != 0 {
					t.Errorf("zero-length %s at the end = %+v", cmdName(typ), r)
				}
			}
			if n := m.reads.Load() + m.writes.Load() + m.trims.Load() + m.zeroes.Load(); n != 0 {
				t.Errorf("zero-length requests made %d backend calls, want 0", n)
			}
		}},
		{name: "FUA write falls back to flush", run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.write(0, pattern(512, 3), cmdFlagFUA); r.errno != 0 {
				t.Fatalf("write FUA = %+v", r)
			}
			if m.flushes.Load() != 1 || m.flushSaw.Load() != 1 {
				t.Errorf("flushes = %d (saw %d writes), want 1 after the write", m.flushes.Load(), m.flushSaw.Load())
			}
		}},
		{name: "FUA write uses FUAWriter", fua: true, run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.write(0, pattern(512, 3), cmdFlagFUA); r.errno != 0 {
				t.Fatalf("write FUA = %+v", r)
			}
			if m.fuaWrites.Load() != 1 || m.flushes.Load() != 0 {
				t.Errorf("fuaWrites = %d, flushes = %d; want 1 and 0", m.fuaWrites.Load(), m.flushes.Load())
			}
		}},
		{name: "flush", run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.do(cmdFlush, cmdFlagFUA, 0, 0, nil); r.errno != 0 {
				t.Fatalf("flush = %+v", r)
			}
			if m.flushes.Load() != 1 {
				t.Errorf("flushes = %d, want 1", m.flushes.Load())
			}
		}},
		{name: "trim", run: func(t *testing.T, c *client, m *memBackend) {
			c.write(0, pattern(4096, 5), 0)
			if r := c.do(cmdTrim, 0, 1024, 2048, nil); r.errno != 0 {
				t.Fatalf("trim = %+v", r)
			}
			if m.trims.Load() != 1 || !bytes.Equal(m.bytes(1024, 2048), make([]byte, 2048)) {
				t.Errorf("trim did not reach the backend")
			}
		}},
		{name: "trim FUA flushes", run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.do(cmdTrim, cmdFlagFUA, 0, 4096, nil); r.errno != 0 || m.flushes.Load() != 1 {
				t.Errorf("trim FUA = %+v, flushes %d; want success and 1 flush", r, m.flushes.Load())
			}
		}},
		{name: "write zeroes may trim", run: func(t *testing.T, c *client, m *memBackend) {
			c.write(0, pattern(4096, 5), 0)
			if r := c.do(cmdWriteZeroes, 0, 0, 4096, nil); r.errno != 0 {
				t.Fatalf("write zeroes = %+v", r)
			}
			if m.zeroes.Load() != 1 || !m.lastMayTrim.Load() || !bytes.Equal(m.bytes(0, 4096), make([]byte, 4096)) {
				t.Errorf("write zeroes: calls %d mayTrim %v", m.zeroes.Load(), m.lastMayTrim.Load())
			}
		}},
		{name: "write zeroes no hole FUA", run: func(t *testing.T, c *client, m *memBackend) {
			if r := c.do(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFUA, 0, 4096, nil); r.errno != 0 {
				t.Fatalf("write zeroes = %+v", r)
			}
			if m.lastMayTrim.Load() || m.flushes.Load() != 1 {
				t.Errorf("NO_HOLE gave mayTrim %v; FUA gave %d flushes, want false and 1", m.lastMayTrim.Load(), m.flushes.Load())
			}
		}},
		{name: "write zeroes without ZeroWriter", plain: true, run: func(t *testing.T, c *client, m *memBackend) {
			c.write(0, pattern(3<<20, 5), 0)
			if r := c.do(cmdWriteZeroes, 0, 1, 3<<20-2, nil); r.errno != 0 {
				t.Fatalf("write zeroes = %+v", r)
			}
			if got := m.bytes(0, 3<<20); got[0] == 0 || got[3<<20-1] == 0 || !bytes.Equal(got[1:3<<20-1], make([]byte, 3<<20-2)) {
				t.Errorf("zeroes written through WriteAt are wrong")
			}
			if w := m.writes.Load(); w != 1+3 {
				t.Errorf("WriteAt calls = %d, want 1 + 3 chunks of at most 1 MiB", w)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMemBackend(4 << 20)
			m.size = 1 << 20
			if tc.plain {
				m.size = 4 << 20
			}
			var b Backend = m
			switch {
			case tc.fua:
				b = fuaBackend{m}
			case tc.plain:
				b = plainBackend{m}
			}
			s := startServer(t, Config{Exports: map[string]Export{"": {Backend: b}}})
			c := dialClient(t, s.dial, "")
			tc.run(t, c, m)
			if m.outOfRange.Load() {
				t.Errorf("the backend was called outside the export")
			}
		})
	}
}

// TestRequestErrors checks that invalid requests get the right error, never
// reach the backend, and leave the connection usable.
func TestRequestErrors(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	const maxBlock = 64 << 10
	big := make([]byte, maxBlock+512)
	tests := []struct {
		name     string
		readOnly bool
		plain    bool
		minBlock uint32
		typ      uint16
		flags    uint16
		off      uint64
		length   uint32
		data     []byte
		want     uint32
	}{
		{name: "read past end", typ: cmdRead, off: size - 512, length: 1024, want: errInval},
		{name: "read offset past end", typ: cmdRead, off: size + 1, length: 0, want: errInval},
		{name: "read offset overflow", typ: cmdRead, off: 1<<64 - 1, length: 2, want: errInval},
		{name: "read over max block", typ: cmdRead, off: 0, length: maxBlock + 512, want: errInval},
		{name: "read with DF", typ: cmdRead, flags: cmdFlagDF, off: 0, length: 512, want: errInval},
		{name: "read with unknown flag", typ: cmdRead, flags: 1 << 12, off: 0, length: 512, want: errInval},
		{name: "write past end", typ: cmdWrite, off: size - 256, length: 512, data: make([]byte, 512), want: errNoSpc},
		{name: "write over max block", typ: cmdWrite, off: 0, length: uint32(len(big)), data: big, want: errInval},
		{name: "write with NO_HOLE", typ: cmdWrite, flags: cmdFlagNoHole, off: 0, length: 512, data: make([]byte, 512), want: errInval},
		{name: "write read-only", readOnly: true, typ: cmdWrite, off: 0, length: 512, data: make([]byte, 512), want: errPerm},
		{name: "write unaligned offset", minBlock: 512, typ: cmdWrite, off: 256, length: 512, data: make([]byte, 512), want: errInval},
		{name: "write unaligned length", minBlock: 512, typ: cmdWrite, off: 0, length: 100, data: make([]byte, 100), want: errInval},
		{name: "read unaligned", minBlock: 4096, typ: cmdRead, off: 4096, length: 512, want: errInval},
		{name: "trim past end", typ: cmdTrim, off: size, length: 1, want: errInval},
		{name: "trim read-only", readOnly: true, typ: cmdTrim, off: 0, length: 512, want: errPerm},
		{name: "trim not advertised", plain: true, typ: cmdTrim, off: 0, length: 512, want: errInval},
		{name: "trim unaligned", minBlock: 512, typ: cmdTrim, off: 1, length: 512, want: errInval},
		{name: "write zeroes past end", typ: cmdWriteZeroes, off: size - 512, length: 1024, want: errNoSpc},
		{name: "write zeroes read-only", readOnly: true, typ: cmdWriteZeroes, off: 0, length: 512, want: errPerm},
		{name: "write zeroes fast zero", typ: cmdWriteZeroes, flags: cmdFlagFastZero, off: 0, length: 512, want: errInval},
		{name: "write zeroes unaligned", minBlock: 512, typ: cmdWriteZeroes, off: 512, length: 1, want: errInval},
		{name: "flush with offset", typ: cmdFlush, off: 512, want: errInval},
		{name: "flush with length", typ: cmdFlush, length: 512, want: errInval},
		{name: "flush with NO_HOLE", typ: cmdFlush, flags: cmdFlagNoHole, want: errInval},
		{name: "cache", typ: cmdCache, off: 0, length: 512, want: errInval},
		{name: "block status", typ: cmdBlockStatus, off: 0, length: 512, want: errInval},
		{name: "unknown command", typ: 99, off: 0, length: 512, want: errInval},
		{name: "block status with REQ_ONE", typ: cmdBlockStatus, flags: cmdFlagReqOne, off: 0, length: 512, want: errInval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMemBackend(size + 4096)
			m.size = size
			var b Backend = m
			if tc.plain {
				b = plainBackend{m}
			}
			s := startServer(t, Config{
				Exports:  map[string]Export{"": {Backend: b, ReadOnly: tc.readOnly}},
				MinBlock: tc.minBlock, MaxBlock: maxBlock,
			})
			c := dialClient(t, s.dial, "")
			r := c.do(tc.typ, tc.flags, tc.off, tc.length, tc.data)
			if r.err != nil || r.errno != tc.want || len(r.data) != 0 {
				t.Errorf("%s(flags %#x, off %d, len %d) = errno %d, err %v, %d bytes; want errno %d and no data",
					cmdName(tc.typ), tc.flags, tc.off, tc.length, r.errno, r.err, len(r.data), tc.want)
			}
			calls := m.reads.Load() + m.writes.Load() + m.flushes.Load() + m.trims.Load() + m.zeroes.Load()
			if calls != 0 {
				t.Errorf("the backend was called %d times for a refused request", calls)
			}
			// The connection goes on.
			if r := c.read(0, max(512, tc.minBlock)); r.err != nil || r.errno != 0 {
				t.Errorf("read after the refused request = %+v", r)
			}
			if st := s.Stats().Commands; st.Read.Requests+st.Other.Requests+st.Write.Requests+st.Trim.Requests+
				st.WriteZeroes.Requests+st.Flush.Requests != 2 {
				t.Errorf("requests counted = %+v, want 2", st)
			}
		})
	}
}

// TestUnalignedEnd allows a request that ends at an export size that is not
// a multiple of the minimum block.
func TestUnalignedEnd(t *testing.T) {
	t.Parallel()
	m := newMemBackend(4096 + 100)
	s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}, MinBlock: 512})
	c := dialClient(t, s.dial, "")
	if r := c.write(4096, bytes.Repeat([]byte{7}, 100), 0); r.errno != 0 {
		t.Errorf("write of the unaligned tail = %+v, want success", r)
	}
	if r := c.read(3584, 612); r.errno != 0 || r.data[611] != 7 {
		t.Errorf("read of the unaligned tail = %+v, want success", r)
	}
}

func TestBackendErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		set    func(m *memBackend)
		typ    uint16
		flags  uint16
		want   uint32
		reason string
	}{
		{name: "ENOSPC", set: func(m *memBackend) { m.writeErr = fmt.Errorf("pwrite: %w", syscall.ENOSPC) }, typ: cmdWrite, want: errNoSpc},
		{name: "EDQUOT", set: func(m *memBackend) { m.writeErr = syscall.EDQUOT }, typ: cmdWrite, want: errNoSpc},
		{name: "EFBIG", set: func(m *memBackend) { m.writeErr = syscall.EFBIG }, typ: cmdWrite, want: errNoSpc},
		{name: "ErrNoSpace", set: func(m *memBackend) { m.writeErr = ErrNoSpace }, typ: cmdWrite, want: errNoSpc},
		{name: "EROFS", set: func(m *memBackend) { m.writeErr = syscall.EROFS }, typ: cmdWrite, want: errPerm},
		{name: "ErrReadOnly", set: func(m *memBackend) { m.writeErr = fmt.Errorf("fenced: %w", ErrReadOnly) }, typ: cmdWrite, want: errPerm},
		{name: "EINVAL", set: func(m *memBackend) { m.readErr = syscall.EINVAL }, typ: cmdRead, want: errInval},
		{name: "ErrInvalid", set: func(m *memBackend) { m.readErr = ErrInvalid }, typ: cmdRead, want: errInval},
		{name: "ErrShutdown", set: func(m *memBackend) { m.writeErr = ErrShutdown }, typ: cmdWrite, want: errShutdown},
		{name: "other read error", set: func(m *memBackend) { m.readErr = errors.New("disk on fire") }, typ: cmdRead, want: errIO},
		{name: "EIO", set: func(m *memBackend) { m.readErr = syscall.EIO }, typ: cmdRead, want: errIO},
		{name: "short read", set: func(m *memBackend) { m.shortRead = true }, typ: cmdRead, want: errIO},
		{name: "flush error", set: func(m *memBackend) { m.flushErr = syscall.EIO }, typ: cmdFlush, want: errIO},
		{name: "FUA flush error", set: func(m *memBackend) { m.flushErr = syscall.ENOSPC }, typ: cmdWrite, flags: cmdFlagFUA, want: errNoSpc},
		{name: "trim error", set: func(m *memBackend) { m.trimErr = syscall.EPERM }, typ: cmdTrim, want: errPerm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMemBackend(1 << 20)
			tc.set(m)
			s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}})
			c := dialClient(t, s.dial, "")
			var length uint32 = 4096
			var data []byte
			switch tc.typ {
			case cmdWrite:
				data = make([]byte, length)
			case cmdFlush:
				length = 0
			}
			r := c.do(tc.typ, tc.flags, 0, length, data)
			if r.err != nil || r.errno != tc.want || r.data != nil {
				t.Errorf("%s = errno %d, err %v, %d bytes; want errno %d, no data", cmdName(tc.typ), r.errno, r.err, len(r.data), tc.want)
			}
			if r := c.do(cmdFlush, 0, 0, 0, nil); r.err != nil {
				t.Errorf("connection broken after a backend error: %v", r.err)
			}
			if st := s.Stats().Commands; st.Read.Errors+st.Write.Errors+st.Trim.Errors+st.Flush.Errors == 0 {
				t.Errorf("no error counted: %+v", st)
			}
		})
	}
}

func TestProtocolViolations(t *testing.T) {
	t.Parallel()
	header := func(magic uint32, typ uint16, length uint32) []byte {
		b := make([]byte, requestHeaderLen)
		be.PutUint32(b[0:], magic)
		be.PutUint16(b[6:], typ)
		be.PutUint32(b[24:], length)
		return b
	}
	tests := []struct {
		name string
		send []byte
	}{
		{name: "bad magic", send: header(0x12345678, cmdRead, 512)},
		{name: "extended header magic", send: header(0x21e41c71, cmdRead, 512)},
		{name: "historic magic", send: header(0x12560953, cmdRead, 512)},
		{name: "write payload over 32 MiB", send: header(requestMagic, cmdWrite, maxPayload+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMemBackend(1 << 20)
			s := NewServer(Config{Exports: map[string]Export{"": {Backend: m}}})
			cli, done := pipeServer(t.Context(), s)
			defer cli.Close()
			c, err := newClient(cli, "")
			if err != nil {
				t.Fatal(err)
			}
			ok := c.send(cmdWrite, 0, 0, 3, []byte("abc"))
			c.wmu.Lock()
			_, _ = cli.Write(tc.send)
			c.wmu.Unlock()
			if err := waitErr(t, done); !errors.Is(err, ErrProtocol) {
				t.Errorf("ServeConn = %v, want ErrProtocol", err)
			}
			// The request before the bad one was still answered.
			if r := <-ok; r.err != nil || r.errno != 0 || string(m.bytes(0, 3)) != "abc" {
				t.Errorf("write before the violation = %+v", r)
			}
			<-c.done
			if st := s.Stats(); st.ProtocolErrors != 1 || m.reads.Load() != 0 {
				t.Errorf("ProtocolErrors = %d, reads = %d; want 1 and 0", st.ProtocolErrors, m.reads.Load())
			}
		})
	}
}

// TestDisconnectFinishesInFlight sends pipelined writes and NBD_CMD_DISC:
// the server must complete the writes before closing.
func TestDisconnectFinishesInFlight(t *testing.T) {
	t.Parallel()
	m := newMemBackend(1 << 20)
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: m}}, MaxInFlight: 4})
	cli, done := pipeServer(t.Context(), s)
	c, err := newClient(cli, "")
	if err != nil {
		t.Fatal(err)
	}
	var replies []<-chan reply
	for i := range 32 {
		replies = append(replies, c.send(cmdWrite, 0, uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096)))
	}
	if err := c.disc(); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, done); err != nil {
		t.Errorf("ServeConn = %v, want nil", err)
	}
	for i, ch := range replies {
		if r := <-ch; r.err != nil || r.errno != 0 {
			t.Errorf("write %d = %+v", i, r)
		}
		if got := m.bytes(int64(i)*4096, 1)[0]; got != byte(i+1) {
			t.Errorf("block %d = %d, want %d", i, got, i+1)
		}
	}
}

// gatedBackend returns a memBackend whose writes wait until the test
// closes gate.
func gatedBackend(size int64) *memBackend {
	m := newMemBackend(size)
	m.gate = make(chan struct{})
	m.entered = make(chan struct{}, 64)
	return m
}

// flushWaiters returns how many flushes are waiting for earlier writes on
// the server's connections.
func flushWaiters(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		c.writes.mu.Lock()
		n += c.writes.waiters
		c.writes.mu.Unlock()
	}
	return n
}

func TestFlushWaitsForEarlierWrites(t *testing.T) {
	t.Parallel()
	m := gatedBackend(1 << 20)
	s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}})
	c := dialClient(t, s.dial, "")
	w := c.send(cmdWrite, 0, 0, 512, make([]byte, 512))
	<-m.entered // the write is in the backend
	f := c.send(cmdFlush, 0, 0, 0, nil)
	waitFor(t, "the flush to wait for the write", func() bool { return flushWaiters(s.Server) == 1 })
	if n := m.flushes.Load(); n != 0 {
		t.Fatalf("Flush called while an earlier write was in the backend")
	}
	close(m.gate)
	if r := <-w; r.errno != 0 || r.err != nil {
		t.Fatalf("write = %+v", r)
	}
	if r := <-f; r.errno != 0 || r.err != nil {
		t.Fatalf("flush = %+v", r)
	}
	if m.flushSaw.Load() != 1 {
		t.Errorf("Flush saw %d completed writes, want 1", m.flushSaw.Load())
	}
}

func TestFlushDoesNotWaitForLaterWrites(t *testing.T) {
	t.Parallel()
	m := gatedBackend(1 << 20)
	s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}})
	c := dialClient(t, s.dial, "")
	f := c.send(cmdFlush, 0, 0, 0, nil)
	w := c.send(cmdWrite, 0, 0, 512, make([]byte, 512))
	<-m.entered
	// The later write is stuck in the backend; the flush must not wait.
	if r := <-f; r.errno != 0 || r.err != nil {
		t.Fatalf("flush = %+v", r)
	}
	close(m.gate)
	if r := <-w; r.errno != 0 || r.err != nil {
		t.Fatalf("write = %+v", r)
	}
}

// TestPipelining checks that requests of one connection reach the backend
// concurrently, up to MaxInFlight and no further.
func TestPipelining(t *testing.T) {
	t.Parallel()
	const inFlight = 4
	m := gatedBackend(1 << 20)
	s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}, MaxInFlight: inFlight})
	c := dialClient(t, s.dial, "")
	var replies []<-chan reply
	for i := range 3 * inFlight {
		replies = append(replies, c.send(cmdWrite, 0, uint64(i)*512, 512, make([]byte, 512)))
	}
	for range inFlight {
		<-m.entered
	}
	// All slots are taken by writes waiting in the backend.
	waitFor(t, "MaxInFlight requests in flight", func() bool {
		cs := s.Connections()
		return len(cs) == 1 && cs[0].InFlight == inFlight
	})
	if got := m.active.Load(); got != inFlight {
		t.Errorf("%d backend calls at once, want %d", got, inFlight)
	}
	close(m.gate)
	for i, ch := range replies {
		if r := <-ch; r.errno != 0 || r.err != nil {
			t.Errorf("write %d = %+v", i, r)
		}
	}
	if got := m.maxActive.Load(); got > inFlight {
		t.Errorf("up to %d backend calls at once, want at most MaxInFlight = %d", got, inFlight)
	}
}

func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	const conns, perConn, block = 4, 64, 4096
	m := newMemBackend(conns * perConn * block)
	s, addr := startTCPServer(t, Config{Exports: map[string]Export{"disk": {Backend: m}}})
	dial := func() (net.Conn, error) { return net.Dial("tcp", addr) }
	errs := make(chan error, conns)
	for i := range conns {
		c := dialClient(t, dial, "disk")
		go func() {
			errs <- func() error {
				var replies []<-chan reply
				for j := range perConn {
					off := uint64((i*perConn + j) * block)
					replies = append(replies, c.send(cmdWrite, 0, off, block, bytes.Repeat([]byte{byte(i*perConn + j)}, block)))
				}
				for _, ch := range replies {
					if r := <-ch; r.err != nil || r.errno != 0 {
						return fmt.Errorf("conn %d: write = %+v", i, r)
					}
				}
				if r := c.flush(); r.errno != 0 {
					return fmt.Errorf("conn %d: flush = %+v", i, r)
				}
				for j := range perConn {
					off := uint64((i*perConn + j) * block)
					if r := c.read(off, block); r.errno != 0 || !bytes.Equal(r.data, bytes.Repeat([]byte{byte(i*perConn + j)}, block)) {
						return fmt.Errorf("conn %d: block %d read back wrong", i, j)
					}
				}
				return c.disc()
			}()
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	st := s.Stats()
	if st.Commands.Write.Requests != conns*perConn || st.Commands.Write.Bytes != conns*perConn*block ||
		st.Commands.Read.Bytes != conns*perConn*block || st.Commands.Flush.Requests != conns {
		t.Errorf("Stats().Commands = %+v", st.Commands)
	}
}

// TestMultiConnVisibility writes on one connection and reads on another.
func TestMultiConnVisibility(t *testing.T) {
	t.Parallel()
	m := newMemBackend(1 << 20)
	s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}})
	a := dialClient(t, s.dial, "")
	b := dialClient(t, s.dial, "")
	if a.info.flags&tflagCanMultiConn == 0 {
		t.Fatalf("flags %#x lack NBD_FLAG_CAN_MULTI_CONN", a.info.flags)
	}
	if r := a.write(512, []byte("shared"), cmdFlagFUA); r.errno != 0 {
		t.Fatal(r)
	}
	if r := b.read(512, 6); string(r.data) != "shared" {
		t.Errorf("other connection read %q, want shared", r.data)
	}
	conns := s.Connections()
	if len(conns) != 2 || conns[0].ID >= conns[1].ID || conns[0].Export != "" || conns[0].Commands.Write.Requests != 1 ||
		conns[1].Commands.Read.Requests != 1 || conns[0].Since.IsZero() {
		t.Errorf("Connections() = %+v", conns)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	m := newMemBackend(1 << 20)
	s := startServer(t, Config{Exports: map[string]Export{"": {Backend: m}}})
	c := dialClient(t, s.dial, "")
	c.write(0, make([]byte, 1000), 0)
	c.read(0, 300)
	c.read(1<<20, 1)
	c.flush()
	c.do(cmdTrim, 0, 0, 4096, nil)
	c.do(cmdWriteZeroes, 0, 0, 8192, nil)
	c.do(cmdCache, 0, 0, 1, nil)
	if err := c.disc(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection to end", func() bool { return s.Stats().Active == 0 })
	got := s.Stats()
	cmds := got.Commands
	want := []struct {
		name  string
		got   CommandStats
		reqs  uint64
		errs  uint64
		bytes uint64
	}{
		{"read", cmds.Read, 2, 1, 300},
		{"write", cmds.Write, 1, 0, 1000},
		{"flush", cmds.Flush, 1, 0, 0},
		{"trim", cmds.Trim, 1, 0, 4096},
		{"write zeroes", cmds.WriteZeroes, 1, 0, 8192},
		{"other", cmds.Other, 1, 1, 0},
	}
	for _, w := range want {
		if w.got.Requests != w.reqs || w.got.Errors != w.errs || w.got.Bytes != w.bytes {
			t.Errorf("%s stats = %+v, want %d requests, %d errors, %d bytes", w.name, w.got, w.reqs, w.errs, w.bytes)
		}
	}
	if cmds.Read.Time <= 0 {
		t.Errorf("read time = %v, want > 0", cmds.Read.Time)
	}
	if got.Accepted != 1 || got.Active != 0 || len(s.Connections()) != 0 {
		t.Errorf("Stats() = %+v, Connections() = %v", got, s.Connections())
	}
}

func TestLookupNotListed(t *testing.T) {
	t.Parallel()
	m := newMemBackend(4096)
	s := startServer(t, Config{Lookup: func(name string) (Export, bool) {
		return Export{Backend: m}, name == "vm-1"
	}})
	nc, err := s.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := newRawClient(nc)
	if err := rc.start(); err != nil {
		t.Fatal(err)
	}
	if err := rc.sendOpt(optList, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := rc.readOptReplies(optList); err != nil || len(got) != 1 || got[0].typ != repAck {
		t.Errorf("NBD_OPT_LIST = %v, %v; want only NBD_REP_ACK", got, err)
	}
	if _, err := rc.goExport("vm-1"); err != nil {
		t.Errorf("NBD_OPT_GO vm-1: %v", err)
	}
}

// TestShutdown cancels Serve's context while a request is in the backend:
// the request completes and is answered, then the connection closes and
// Serve returns.
func TestShutdown(t *testing.T) {
	t.Parallel()
	m := gatedBackend(1 << 20)
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: m}}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	c := dialClient(t, func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) }, "")
	w := c.send(cmdWrite, 0, 0, 512, bytes.Repeat([]byte{1}, 512))
	<-m.entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v with a request in the backend", err)
	default:
	}
	close(m.gate)
	if r := <-w; r.err != nil || r.errno != 0 {
		t.Errorf("in-flight write across shutdown = %+v, want success", r)
	}
	if err := waitErr(t, served); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	<-c.done // the server closed the connection
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Errorf("listener still accepts after Serve returned")
	}
}

func TestShutdownDuringHandshake(t *testing.T) {
	t.Parallel()
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: newMemBackend(4096)}}})
	ctx, cancel := context.WithCancel(t.Context())
	cli, done := pipeServer(ctx, s)
	defer cli.Close()
	if _, err := newRawClient(cli).greet(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := waitErr(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("ServeConn = %v, want context.Canceled", err)
	}
}

func TestClientHangsUp(t *testing.T) {
	t.Parallel()
	m := newMemBackend(1 << 20)
	s := NewServer(Config{Exports: map[string]Export{"": {Backend: m}}})
	cli, done := pipeServer(t.Context(), s)
	c, err := newClient(cli, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.write(0, []byte("x"), 0); r.errno != 0 {
		t.Fatal(r)
	}
	c.Close()
	if err := waitErr(t, done); err != nil {
		t.Errorf("ServeConn after the client closed between requests = %v, want nil", err)
	}
}

func TestErrnoOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want uint32
	}{
		{nil, 0},
		{syscall.EPERM, errPerm},
		{syscall.EACCES, errPerm},
		{&net.OpError{Op: "write", Err: syscall.ENOSPC}, errNoSpc},
		{io.ErrUnexpectedEOF, errIO},
		{fmt.Errorf("x: %w", ErrShutdown), errShutdown},
	}
	for _, tc := range tests {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
