package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/testcluster"
)

// The crash test: a writer sends sequence-numbered, checksummed 4 KiB
// blocks through the replicating primary and records every write the
// primary acknowledged; at a random moment the primary dies; then the
// secondary's image must hold every acknowledged block (the same one, or a
// later write of the same place), intact.
//
// It has two kill modes (see killMode). In both, the writer runs in this
// process, in the root namespace, and speaks NBD to the primary over a
// unix socket (a path in the file system, which reaches across network
// namespaces), and the secondary runs in host namespace B of a test
// cluster:
//
//   - killProcess: the primary process runs in the root namespace and
//     replicates through the root leg; kill -9 of that process.
//   - killHost (the end-to-end variant): the primary runs in host
//     namespace A and replicates to B over the simulated LAN; the whole of
//     host A dies: its cable is pulled and every process in it is killed.

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

// killMode is how a kill point kills the primary.
type killMode int

const (
	// killProcess: kill -9 of the primary process, which runs in the root
	// namespace.
	killProcess killMode = iota
	// killHost: the primary runs in host namespace A, and host A dies as a
	// whole (see crashRig.killHostA).
	killHost
)

func (m killMode) String() string {
	if m == killHost {
		return "host"
	}
	return "process"
}

// crashResult adds up kill points: acknowledged writes, and those of them
// missing or damaged on the secondary afterwards, over both modes; and the
// same of the whole-host kill points alone.
type crashResult struct {
	acked, lost         int
	hostAcked, hostLost int
}

// hostKillPoints is the number of whole-host kill points that goes with n
// process kill points in bench/disk/run: a fifth as many, at least one.
func hostKillPoints(n int) int { return (n + 4) / 5 }

// crashRig is what the kill points of one crashPoints call share.
type crashRig struct {
	self, dir, certDir string
	hc                 *testcluster.Cluster
	a                  *testcluster.Host // the primary's host (killHost)
	b                  *testcluster.Host // the secondary's host
}

// crashPoints runs procKills process kill points, then hostKills
// whole-host kill points, on one test cluster of two hosts.
func crashPoints(self, dir string, procKills, hostKills int) (crashResult, error) {
	var total crashResult
	if err := testcluster.Preflight(); err != nil {
		return total, err
	}
	ctx := context.Background()
	// The root leg carries the replication of a primary in the root
	// namespace; a primary on host A needs only the LAN.
	hc, err := testcluster.Start(ctx, testcluster.Config{Hosts: 2, RootLeg: procKills > 0})
	if err != nil {
		return total, err
	}
	defer hc.Close()
	hosts := hc.Hosts()
	r := &crashRig{self: self, dir: dir, certDir: filepath.Join(dir, "certs"), hc: hc, a: hosts[0], b: hosts[1]}
	if err := writeCerts(r.certDir, "primary", "secondary"); err != nil {
		return total, err
	}
	for _, run := range []struct {
		mode killMode
		n    int
	}{{killProcess, procKills}, {killHost, hostKills}} {
		for i := range run.n {
			p, err := r.crashOnce(ctx, run.mode, i)
			if err != nil {
				return total, fmt.Errorf("%s kill point %d: %w", run.mode, i+1, err)
			}
			total.acked += p.acked
			total.lost += p.lost
			if run.mode == killHost {
				total.hostAcked += p.acked
				total.hostLost += p.lost
			}
			fmt.Printf("%-7s kill point %3d: %5d acknowledged writes, %d lost, %d in flight at the kill\n",
				run.mode, i+1, p.acked, p.lost, p.inflight)
		}
	}
	return total, nil
}

// pointResult is the outcome of one kill point.
type pointResult struct {
	acked, lost int
	inflight    int // writes sent but never acknowledged
}

// crashOnce runs one kill point in the given mode.
func (r *crashRig) crashOnce(ctx context.Context, mode killMode, i int) (res pointResult, err error) {
	file := filepath.Join(r.dir, fmt.Sprintf("crash-%s-%d.img", mode, i))
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
	sec := r.b.Command(ctx, r.self, "secondary", "-file", peer, "-certs", r.certDir, "-listen", ":"+replPort)
	stopSec, err := startServer(sec, r.b.Start, "")
	if err != nil {
		return res, fmt.Errorf("secondary: %w", err)
	}
	defer stopSec()

	sock := filepath.Join(r.dir, "crash.sock")
	args := []string{"serve-primary", "-file", file, "-socket", sock, "-certs", r.certDir,
		"-peer", net.JoinHostPort(r.b.IP.String(), replPort)}
	var prim *exec.Cmd
	var start func(*exec.Cmd) error
	var kill func(landed func()) error // calls landed the moment the fault lands
	switch mode {
	case killProcess:
		prim = exec.Command(r.self, args...)
		start = (*exec.Cmd).Start
		kill = func(landed func()) error {
			defer landed()
			return prim.Process.Kill()
		}
	case killHost:
		prim = r.a.Command(ctx, r.self, args...)
		start = r.a.Start
		kill = r.killHostA
		// The next kill point needs host A back: the cable goes in again
		// only after this one has read the secondary's image, so the dead
		// host stays dead (and mute) until then.
		defer func() {
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if herr := r.hc.HealLinks(hctx, r.a); herr != nil {
				err = errors.Join(err, herr)
			}
		}()
	}
	stopPrim, err := startServer(prim, start, sock)
	if err != nil {
		return res, fmt.Errorf("primary: %w", err)
	}
	defer stopPrim()
	if mode == killHost {
		// The whole point of this mode: the primary is inside host A.
		pids, err := r.a.Pids()
		if err != nil {
			return res, err
		}
		if !slices.Contains(pids, prim.Process.Pid) {
			return res, fmt.Errorf("primary (pid %d) is not in %s (pids %v)", prim.Process.Pid, r.a.Namespace, pids)
		}
	}
	c, err := dialNBD(sock)
	if err != nil {
		return res, err
	}
	defer c.close()

	// The kill comes from a timer, at a random moment whatever the writer
	// is doing. The writer sends nothing new once the fault has landed
	// (the cable is out, or SIGKILL sent), so the writes counted in flight
	// at the kill are those the fault caught, not ones sent to a primary
	// already dead; but it goes on until then, so writes are in flight
	// when it lands (killing a host takes a few milliseconds).
	dying, killed := make(chan struct{}), make(chan struct{})
	var killErr error
	time.AfterFunc(time.Duration(200+rand.IntN(1300))*time.Millisecond, func() {
		killErr = kill(sync.OnceFunc(func() { close(dying) }))
		close(killed)
	})

	acked := map[uint64]uint64{} // offset -> latest acknowledged seq
	var mu sync.Mutex
	sem := make(chan struct{}, 8) // queue depth
	var wg sync.WaitGroup
	blocks := uint64(crashDisk / blockSize)
	// No two writes to one block are in flight at once: the order of
	// concurrent overlapping writes is undefined in NBD (and in any disk),
	// so only sequential writes to a block have a "latest".
	busy := map[uint64]bool{}
writing:
	for seq := uint64(1); ; seq++ {
		select {
		case <-dying:
			break writing
		default:
		}
		select {
		case <-dying:
			break writing
		case sem <- struct{}{}:
		}
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
			} else {
				res.inflight++
			}
			delete(busy, off)
		}(off, seq)
	}
	<-killed
	// The primary is dead: its end of the socket is closed, so the reader
	// gets every reply it sent before dying, then EOF, and fails the rest.
	// Closing our end first could drop acknowledgements still unread.
	if !waitTimeout(&wg, 10*time.Second) {
		c.close()
		wg.Wait()
	}
	if killErr != nil {
		return res, fmt.Errorf("kill the primary: %w", killErr)
	}

	// Every write the primary acknowledged must be on the secondary, which
	// is stopped first, so its image no longer changes.
	if err := stopSec(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/disk: %s kill point %d: the secondary did not stop cleanly: %v\n", mode, i+1, err)
	}
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

// killHostA kills host A as a power cut would: first its cable is pulled
// (CutLinks), then every process in it is killed -9 (KillHost).
//
// KillHost alone would model a kill -9 of every process, not a dead host:
// the namespace's kernel lives on, so it would close the killed primary's
// TCP connection to the secondary with a FIN or RST, and keep transmitting
// (and retransmitting) the replication frames still queued in its socket
// buffers, which could reach the secondary after the "death". A machine
// that loses power sends nothing more: the secondary just stops hearing
// from it, its connection half-open. Pulling the cable makes the kernel's
// afterlife invisible, and it stays pulled until the kill point has read
// the secondary's image (crashOnce heals it for the next kill point).
//
// The cable goes first, not after the kill: cut after, a window would
// remain in which the kernel sends those late frames and the FIN. Cut
// first, there is a window (the microseconds until KillHost's SIGKILL) in
// which the primary lives on without network; it cannot acknowledge a
// write in it that the secondary does not have, since acknowledgements
// from the secondary no longer arrive, and the bench's primary has no
// OnPeerLost, so on losing its peer it freezes rather than going degraded
// (and its ack timeout is seconds anyway).
func (r *crashRig) killHostA(landed func()) error {
	defer landed() // also on failure, so the writer stops
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.hc.CutLinks(ctx, r.a); err != nil {
		return err
	}
	landed()
	return r.hc.KillHost(ctx, r.a)
}

// startServer starts cmd with start and, when sock is not "", waits until
// it serves NBD there. stop ends it (SIGTERM, and SIGKILL after 10 seconds)
// and returns how it exited; calling it again returns the same.
func startServer(cmd *exec.Cmd, start func(*exec.Cmd) error, sock string) (stop func() error, err error) {
	if sock != "" {
		os.Remove(sock) // a dead primary's socket of an earlier kill point
	}
	cmd.Stderr = os.Stderr
	if err := start(cmd); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop = sync.OnceValue(func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		return waitErr
	})
	if sock == "" {
		return stop, nil
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return stop, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("exited before serving %s: %v", sock, waitErr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = stop()
			return nil, fmt.Errorf("socket %s did not appear", sock)
		}
	}
}

// waitTimeout waits for wg at most d and reports whether it is done.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
