package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/testcluster"
)

// The crash test: a writer sends sequence-numbered, checksummed 4 KiB
// blocks through the replicating primary and records every write the
// primary acknowledged; at a random moment the primary process is killed
// with SIGKILL; then the secondary's image must hold every acknowledged
// block (the same one, or a later write of the same place), intact.

const (
	crashDisk  = 64 << 20
	blockSize  = 4096
	blockMagic = "FRYBLOCK"
)

// block builds the content written at off as write number seq.
func block(off, seq uint64) []byte {
	b := make([]byte, blockSize)
	copy(b, blockMagic)
	binary.BigEndian.PutUint64(b[8:], off)
	binary.BigEndian.PutUint64(b[16:], seq)
	r := rand.New(rand.NewPCG(off, seq))
	for i := 32; i+8 <= blockSize; i += 8 {
		binary.BigEndian.PutUint64(b[i:], r.Uint64())
	}
	binary.BigEndian.PutUint32(b[24:], crc32.ChecksumIEEE(b[28:]))
	return b
}

// parseBlock returns the seq of a valid block written at off.
func parseBlock(b []byte, off uint64) (uint64, bool) {
	if !bytes.Equal(b[:8], []byte(blockMagic)) || binary.BigEndian.Uint64(b[8:]) != off {
		return 0, false
	}
	if crc32.ChecksumIEEE(b[28:]) != binary.BigEndian.Uint32(b[24:]) {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[16:]), true
}

type crashResult struct{ acked, lost int }

// crashPoints runs n kill points and adds up acknowledged and lost writes.
func crashPoints(self, dir string, n int) (crashResult, error) {
	var total crashResult
	if err := testcluster.Preflight(); err != nil {
		return total, err
	}
	ctx := context.Background()
	hc, err := testcluster.Start(ctx, testcluster.Config{Hosts: 1, RootLeg: true})
	if err != nil {
		return total, err
	}
	defer hc.Close()
	h := hc.Hosts()[0]
	certDir := filepath.Join(dir, "certs")
	if err := writeCerts(certDir, "primary", "secondary"); err != nil {
		return total, err
	}
	for i := 0; i < n; i++ {
		r, err := crashOnce(ctx, self, dir, certDir, h, i)
		if err != nil {
			return total, fmt.Errorf("kill point %d: %w", i+1, err)
		}
		total.acked += r.acked
		total.lost += r.lost
		fmt.Printf("kill point %3d: %5d acknowledged writes, %d lost\n", i+1, r.acked, r.lost)
	}
	return total, nil
}

func crashOnce(ctx context.Context, self, dir, certDir string, h *testcluster.Host, i int) (crashResult, error) {
	var res crashResult
	file := filepath.Join(dir, fmt.Sprintf("crash-%d.img", i))
	peer := file + ".secondary"
	defer func() {
		for _, p := range []string{file, peer} {
			os.Remove(p)
			matches, _ := filepath.Glob(p + ".repl*")
			for _, m := range matches {
				os.Remove(m)
			}
		}
	}()
	for _, p := range []string{file, peer} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return res, err
		}
		if err := os.Truncate(p, crashDisk); err != nil {
			return res, err
		}
	}
	sec := h.Command(ctx, self, "secondary", "-file", peer, "-certs", certDir, "-listen", ":"+replPort)
	sec.Stderr = os.Stderr
	if err := h.Start(sec); err != nil {
		return res, err
	}
	defer func() { _ = sec.Process.Signal(syscall.SIGTERM); _ = sec.Wait() }()
	sock := filepath.Join(dir, "crash.sock")
	prim := exec.Command(self, "serve-primary", "-file", file, "-socket", sock, "-certs", certDir,
		"-peer", net.JoinHostPort(h.IP.String(), replPort))
	stop, err := startProc(prim, sock)
	if err != nil {
		return res, err
	}
	defer stop()
	c, err := dialNBD(sock)
	if err != nil {
		return res, err
	}
	defer c.close()

	acked := map[uint64]uint64{} // offset -> latest acknowledged seq
	var mu sync.Mutex
	killAt := time.Now().Add(time.Duration(200+rand.IntN(1300)) * time.Millisecond)
	sem := make(chan struct{}, 8) // queue depth
	var wg sync.WaitGroup
	blocks := uint64(crashDisk / blockSize)
	// No two writes to one block are in flight at once: the order of
	// concurrent overlapping writes is undefined in NBD (and in any disk),
	// so only sequential writes to a block have a "latest".
	busy := map[uint64]bool{}
	for seq := uint64(1); time.Now().Before(killAt); seq++ {
		sem <- struct{}{}
		mu.Lock()
		off := rand.Uint64N(blocks) * blockSize
		for busy[off] {
			off = rand.Uint64N(blocks) * blockSize
		}
		busy[off] = true
		mu.Unlock()
		wg.Add(1)
		ch := c.send(cmdWrite, off, block(off, seq), blockSize)
		go func(off, seq uint64) {
			defer wg.Done()
			defer func() { <-sem }()
			err := <-ch
			mu.Lock()
			defer mu.Unlock()
			// An unacknowledged write may or may not have landed: only the
			// last acknowledged one is demanded.
			if err == nil {
				if seq > acked[off] {
					acked[off] = seq
				}
				res.acked++
			}
			delete(busy, off)
		}(off, seq)
	}
	_ = prim.Process.Signal(syscall.SIGKILL) // the primary dies with writes in flight
	c.close()
	wg.Wait()

	// Every write the primary acknowledged must be on the secondary.
	data, err := os.ReadFile(peer)
	if err != nil {
		return res, err
	}
	for off, seq := range acked {
		got, ok := parseBlock(data[off:off+blockSize], off)
		if !ok || got < seq {
			res.lost++
		}
	}
	return res, nil
}
