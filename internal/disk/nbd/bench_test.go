package nbd

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// benchRandomWrites issues b.N 4 KiB writes at random aligned offsets with
// 16 requests in flight (16 goroutines sharing one pipelined connection).
func benchRandomWrites(b *testing.B, backend Backend) {
	const block, depth = 4096, 16
	s := startServer(b, Config{Exports: map[string]Export{"": {Backend: backend}}, MinBlock: 512})
	c := dialClient(b, s.dial, "")
	blocks := uint64(backend.Size() / block)
	data := make([]byte, block)
	for i := range data {
		data[i] = byte(i)
	}
	b.SetBytes(block)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range depth {
		n := b.N / depth
		if g < b.N%depth {
			n++
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range n {
				if r := c.do(cmdWrite, 0, rng.Uint64N(blocks)*block, block, data); r.err != nil || r.errno != 0 {
					b.Errorf("write: %+v", r)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "IOPS")
}

// BenchmarkFileBackendNBD measures 4 KiB random writes at queue depth 16
// over a unix socket into a sparse file (no flushes: the page cache
// absorbs them).
func BenchmarkFileBackendNBD(b *testing.B) {
	fb, err := OpenFileBackend(newImage(b, 1<<30), false)
	if err != nil {
		b.Fatal(err)
	}
	defer fb.Close()
	benchRandomWrites(b, fb)
}

// BenchmarkMemBackendNBD is the same against memory, to show the
// protocol's own cost.
func BenchmarkMemBackendNBD(b *testing.B) {
	benchRandomWrites(b, newMemBackend(256<<20))
}
