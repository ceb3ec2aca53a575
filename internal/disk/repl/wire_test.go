package repl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// tlsPair returns the two ends of a loopback TLS connection, each over a
// LinkConn, handshaken.
func tlsPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "secondary"},
		DNSNames: []string{"secondary"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	a, b := tcpPair(t)
	c := tls.Client(LinkConn(a), &tls.Config{RootCAs: pool, ServerName: "secondary"})
	s := tls.Server(LinkConn(b), &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	errc := make(chan error, 1)
	go func() { errc <- s.Handshake() }()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// fastBytes returns n pseudo-random bytes, cheaply.
func fastBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	_, _ = mrand.NewChaCha8(key).Read(b)
	return b
}

// TestFrameWriterConcurrent sends frames of all sizes from many goroutines,
// with send and with hold/release, and checks that every frame arrives
// exactly once and intact, over plain TCP, over a LinkConn and over TLS on
// a LinkConn.
//
// It and the other CPU-heavy tests do not run in parallel: under the race
// detector on a small machine they would starve tests with 50 ms ACK
// timeouts.
func TestFrameWriterConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name string
		pair func(t *testing.T) (net.Conn, net.Conn)
	}{
		{"tcp", tcpPair},
		{"linkconn", func(t *testing.T) (net.Conn, net.Conn) { a, b := tcpPair(t); return LinkConn(a), LinkConn(b) }},
		{"tls", tlsPair},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.pair(t)
			w := newFrameWriter(a)
			const senders, each = 8, 150
			sums := make([]uint32, senders*each+1)
			var busy sync.WaitGroup
			var holding sync.Mutex // pairs hold with release, as the secondary does
			inflight := 0
			errs := make(chan error, senders)
			for g := range senders {
				busy.Go(func() {
					r := mrand.New(mrand.NewPCG(uint64(g), 9))
					for i := range each {
						seq := uint64(g*each + i + 1)
						n := r.IntN(8 << 10)
						if r.IntN(10) == 0 {
							n = bigPayload + r.IntN(300<<10)
						}
						f := &frame{typ: msgWrite, seq: seq, epoch: 1, length: uint64(max(n, 1)), payload: fastBytes(seq, max(n, 1))}
						sums[seq] = crc32.ChecksumIEEE(f.payload)
						var err error
						if len(f.payload) < bigPayload && r.IntN(2) == 0 {
							holding.Lock()
							inflight++
							holding.Unlock()
							err = w.hold(f)
							time.Sleep(time.Duration(r.IntN(20)) * time.Microsecond)
							holding.Lock()
							inflight--
							last := inflight == 0
							holding.Unlock()
							if rerr := w.release(last); err == nil {
								err = rerr
							}
						} else {
							err = w.send(f)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			got := make(map[uint64]uint32) // seq -> checksum received
			done := make(chan error, 1)
			go func() {
				rd := LinkConn(b) // a second read-ahead layer does no harm
				for len(got) < senders*each {
					f, err := readFrame(rd)
					if err != nil {
						done <- err
						return
					}
					if _, dup := got[f.seq]; dup {
						done <- fmt.Errorf("frame %d received twice", f.seq)
						return
					}
					got[f.seq] = crc32.ChecksumIEEE(f.payload)
				}
				done <- nil
			}()
			busy.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("not every frame arrived")
			}
			for seq, sum := range got {
				if sum != sums[seq] {
					t.Errorf("frame %d corrupted", seq)
				}
			}
		})
	}
}

// TestFrameWriterFailsAfterError: once the connection failed, senders get
// an error instead of blocking.
func TestFrameWriterFailsAfterError(t *testing.T) {
	t.Parallel()
	a, b := tcpPair(t)
	b.Close()
	a.Close()
	w := newFrameWriter(a)
	if err := w.send(&frame{typ: msgAck, seq: 1}); err == nil {
		t.Fatal("send on a closed connection succeeded")
	}
	if err := w.hold(&frame{typ: msgAck, seq: 2}); err == nil {
		t.Fatal("hold after a failed send succeeded")
	}
	if err := w.send(&frame{typ: msgWrite, seq: 3, length: bigPayload, payload: make([]byte, bigPayload)}); err == nil {
		t.Fatal("big send after a failed send succeeded")
	}
}

// TestReplicationOverTLSLinkConn runs a concurrent workload with small and
// large writes through a primary and a secondary linked by TLS over
// LinkConn, as the agent links them, and checks the replicas are equal.
func TestReplicationOverTLSLinkConn(t *testing.T) {
	const size = 32 << 20
	p := newPair(t, pairOpts{size: size})
	c, s := tlsPair(t)
	go func() { p.served <- p.sec.Serve(context.Background(), s) }()
	if err := p.prim.Connect(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(w), 3))
			for range 60 {
				n := (1 + r.IntN(16)) * 4096
				if r.IntN(8) == 0 {
					n = 1 << 20
				}
				off := int64(r.IntN((size-n)/4096)) * 4096
				// Few flushes: other tests in parallel have tight ACK
				// timeouts that fsync storms would trip.
				var err error
				switch r.IntN(30) {
				case 0:
					err = p.prim.Flush()
				case 1:
					_, err = p.prim.WriteAtFUA(fastBytes(r.Uint64(), n), off)
				default:
					_, err = p.prim.WriteAt(fastBytes(r.Uint64(), n), off)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p.waitSynced()
	if err := p.prim.Flush(); err != nil {
		t.Fatal(err)
	}
	sameContents(t, p.ppath, p.spath)
}

func TestPayloadPool(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 4096, 4097, 1 << 20, maxWriteLen} {
		b := getPayload(n)
		if len(b) != n || cap(b)&(cap(b)-1) != 0 || cap(b) < 4096 {
			t.Errorf("getPayload(%d): len %d cap %d", n, len(b), cap(b))
		}
		putPayload(b)
		if b2 := getPayload(n); len(b2) != n {
			t.Errorf("getPayload(%d) after put: len %d", n, len(b2))
		}
	}
	putPayload(make([]byte, 5000)) // not from the pool: ignored
	_ = bytes.MinRead
	var _ nbd.Backend = (*Primary)(nil)
}
