package repl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    frame
	}{
		{"write", frame{typ: msgWrite, flags: flagFUA, seq: 7, epoch: 3, off: 4096, length: 3, payload: []byte("abc")}},
		{"trim", frame{typ: msgTrim, seq: 8, epoch: 3, off: 0, length: 1 << 30}},
		{"zero", frame{typ: msgZero, flags: flagMayTrim | flagResync, seq: 9, epoch: 1, off: 512, length: 512}},
		{"flush", frame{typ: msgFlush, seq: 10, epoch: 1}},
		{"ack error", frame{typ: msgAck, seq: 11, code: codeIO, payload: []byte("boom")}},
		{"hello", frame{typ: msgHello, payload: (&hello{version: 1, role: roleBytePrimary, size: 1 << 20,
			epoch: 2, current: 5, history: []uint64{4, 3}, diskID: "vm-1"}).marshal()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := appendFrame(nil, &tc.f)
			got, err := readFrame(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("readFrame(%s) error: %v", tc.name, err)
			}
			if got.payload == nil {
				got.payload = tc.f.payload[:0:0]
				if tc.f.payload == nil {
					got.payload = nil
				}
			}
			if !reflect.DeepEqual(*got, tc.f) {
				t.Errorf("readFrame(%s) = %+v, want %+v", tc.name, *got, tc.f)
			}
		})
	}
}

func TestReadFrameRejects(t *testing.T) {
	t.Parallel()
	good := appendFrame(nil, &frame{typ: msgWrite, seq: 1, epoch: 1, off: 0, length: 4, payload: []byte("abcd")})
	mutate := func(fn func(b []byte)) []byte {
		b := bytes.Clone(good)
		fn(b)
		return b
	}
	be := binary.BigEndian
	tests := []struct {
		name string
		in   []byte
	}{
		{"bad magic", mutate(func(b []byte) { b[0] = 'X' })},
		{"unknown type", mutate(func(b []byte) { b[4] = 99 })},
		{"unknown flag", mutate(func(b []byte) { b[5] = 0x80 })},
		{"reserved set", mutate(func(b []byte) { b[6] = 1 })},
		{"payload mismatch", mutate(func(b []byte) { be.PutUint64(b[32:], 5) })},
		{"huge write", mutate(func(b []byte) { be.PutUint64(b[32:], maxWriteLen+1); be.PutUint32(b[44:], maxWriteLen+1) })},
		{"offset overflow", mutate(func(b []byte) { be.PutUint64(b[24:], 1<<63-2) })},
		{"flush with range", appendFrame(nil, &frame{typ: msgFlush, off: 1})},
		{"trim with payload", appendFrame(nil, &frame{typ: msgTrim, length: 1, payload: []byte{1}})},
		{"trim empty", appendFrame(nil, &frame{typ: msgTrim})},
		{"ack too long", appendFrame(nil, &frame{typ: msgAck, payload: make([]byte, maxMsgLen+1)})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := readFrame(bytes.NewReader(tc.in)); !errors.Is(err, errBadFrame) {
				t.Errorf("readFrame(%s) = %v, want errBadFrame", tc.name, err)
			}
		})
	}
}

func TestCheckRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		off, length uint64
		size        int64
		ok          bool
	}{
		{0, 10, 10, true},
		{5, 5, 10, true},
		{5, 6, 10, false},
		{10, 1, 10, false},
	}
	for _, tc := range tests {
		if err := checkRange(tc.off, tc.length, tc.size); (err == nil) != tc.ok {
			t.Errorf("checkRange(%d, %d, %d) = %v, want ok=%v", tc.off, tc.length, tc.size, err, tc.ok)
		}
	}
}

func TestHelloRoundTrip(t *testing.T) {
	t.Parallel()
	h := &hello{version: 1, role: roleByteSecondary, flags: helloInconsistent, size: 99, epoch: 7,
		current: 42, history: []uint64{41, 40}, diskID: "disk"}
	got, err := unmarshalHello(h.marshal())
	if err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("unmarshalHello(marshal(h)) = %+v, %v; want %+v", got, err, h)
	}
	for n := range len(h.marshal()) {
		if _, err := unmarshalHello(h.marshal()[:n]); err == nil {
			t.Errorf("unmarshalHello(truncated to %d) succeeded", n)
		}
	}
}

// FuzzReadFrame checks that the decoder never panics or over-allocates on
// arbitrary input, and that whatever it accepts re-encodes to the same
// bytes. It also feeds accepted bodies to the HELLO and SYNC decoders.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, &frame{typ: msgWrite, seq: 1, epoch: 1, length: 3, payload: []byte("abc")}))
	f.Add(appendFrame(nil, &frame{typ: msgAck, seq: 1, code: 2, payload: []byte("stale")}))
	f.Add(appendFrame(nil, &frame{typ: msgHello, payload: (&hello{version: 1, role: 2, diskID: "d"}).marshal()}))
	f.Add(appendFrame(nil, &frame{typ: msgSyncDone, payload: (&genInfo{current: 1, history: []uint64{2}}).marshal()}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := readFrame(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(fr.payload) > maxWriteLen {
			t.Fatalf("payload of %d bytes accepted", len(fr.payload))
		}
		enc := appendFrame(nil, fr)
		if !bytes.Equal(enc, data[:len(enc)]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, data[:len(enc)])
		}
		switch fr.typ {
		case msgHello:
			if h, err := unmarshalHello(fr.payload); err == nil {
				if !bytes.Equal(h.marshal(), fr.payload) {
					t.Fatalf("HELLO re-encoding differs")
				}
			}
		case msgSyncDone:
			_, _ = unmarshalGenInfo(fr.payload)
		}
	})
}
