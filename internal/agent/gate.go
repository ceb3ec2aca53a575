package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

// gate is an NBD backend that holds every request until it is opened onto
// the real disk. A live migration's target QEMU connects to its disk long
// before this host may write it: the disk's primary is still the source.
// The gate lets QEMU connect at once and makes any request wait until the
// control plane switched the disk's roles and this host opened the disk as
// primary. It advertises what a replicating primary supports (trim, write
// zeroes, FUA), so nothing changes for QEMU when the gate opens.
type gate struct {
	size  int64
	ready chan struct{} // closed by open or close
	mu    sync.Mutex
	be    nbd.Backend // nil until open; nil after close
	// early, if set, answers reads before the gate opens: QEMU reads a
	// little of its disk as it opens it (before any guest runs), and must
	// not wait for a switch that only comes after it is up.
	early io.ReaderAt
}

func newGate(size int64) *gate { return &gate{size: size, ready: make(chan struct{})} }

// readEarly returns whether reads are answered from early now (the gate
// is not open yet).
func (g *gate) readEarly() io.ReaderAt {
	if g.early == nil {
		return nil
	}
	select {
	case <-g.ready:
		return nil
	default:
		return g.early
	}
}

// open lets requests through to be, once.
func (g *gate) open(be nbd.Backend) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ready:
		return
	default:
	}
	g.be = be
	close(g.ready)
}

// close fails every waiting and future request with a shutdown.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.be = nil
	select {
	case <-g.ready:
	default:
		close(g.ready)
	}
}

func (g *gate) backend() (nbd.Backend, error) {
	<-g.ready
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.be == nil {
		return nil, nbd.ErrShutdown
	}
	return g.be, nil
}

func (g *gate) Size() int64 { return g.size }

func (g *gate) ReadAt(p []byte, off int64) (int, error) {
	if r := g.readEarly(); r != nil {
		n, err := r.ReadAt(p, off)
		if err == io.EOF && n == len(p) {
			err = nil
		}
		return n, err
	}
	be, err := g.backend()
	if err != nil {
		return 0, err
	}
	return be.ReadAt(p, off)
}

func (g *gate) WriteAt(p []byte, off int64) (int, error) {
	be, err := g.backend()
	if err != nil {
		return 0, err
	}
	return be.WriteAt(p, off)
}

func (g *gate) WriteAtFUA(p []byte, off int64) (int, error) {
	be, err := g.backend()
	if err != nil {
		return 0, err
	}
	return nbd.WriteAtFUA(be, p, off)
}

func (g *gate) Flush() error {
	be, err := g.backend()
	if err != nil {
		return err
	}
	return be.Flush()
}

func (g *gate) Trim(off, length int64) error {
	be, err := g.backend()
	if err != nil {
		return err
	}
	return nbd.Trim(be, off, length)
}

func (g *gate) WriteZeroes(off, length int64, mayTrim bool) error {
	be, err := g.backend()
	if err != nil {
		return err
	}
	return nbd.WriteZeroes(be, off, length, mayTrim)
}

// CanMultiConn is false: the target QEMU opens one connection, and the
// answer must not depend on a backend that is not there yet.
func (g *gate) CanMultiConn() bool { return false }

// gatedServer serves a gate over NBD on a unix socket: the disk QEMU sees.
type gatedServer struct {
	gate   *gate
	sock   string
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startGatedServer listens on sock (replacing a stale socket file) and
// serves g until close.
func startGatedServer(ctx context.Context, sock string, g *gate, desc string, log *slog.Logger) (*gatedServer, error) {
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &gatedServer{gate: g, sock: sock, cancel: cancel}
	srv := nbd.NewServer(nbd.Config{
		Exports:  map[string]nbd.Export{"": {Backend: g, Description: desc}},
		MinBlock: 512,
		Logger:   log,
	})
	s.wg.Go(func() {
		if err := srv.Serve(ctx, ln); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			log.Error("nbd server stopped", "err", err)
		}
	})
	return s, nil
}

// close fails pending requests, stops serving and removes the socket.
func (s *gatedServer) close() {
	s.stop()
	s.wait()
}

// stop stops accepting requests without waiting for those in flight (a
// frozen primary may hold them until it is closed).
func (s *gatedServer) stop() {
	s.gate.close()
	s.cancel()
}

// wait waits for the server to end and removes the socket.
func (s *gatedServer) wait() {
	s.wg.Wait()
	os.Remove(s.sock)
}
