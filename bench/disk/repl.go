package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
	"github.com/ferrycluster/ferry/internal/disk/repl"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// Mode (c): the primary serves NBD here (root namespace) and replicates
// over TLS with node certificates, through the simulated LAN's veth pairs,
// to a secondary running in a host namespace.

const replPort = "7446"

type replSetup struct {
	start   server
	cleanup func()
}

// replMode builds the peer's namespace and certificates, or returns nil
// (with a message) where namespaces cannot be made.
func replMode(self, dir string) *replSetup {
	if err := testcluster.Preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/disk: skipping the replicated mode: %v\n", err)
		return nil
	}
	ctx := context.Background()
	hc, err := testcluster.Start(ctx, testcluster.Config{Hosts: 1, RootLeg: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/disk: skipping the replicated mode: %v\n", err)
		return nil
	}
	h := hc.Hosts()[0]
	certDir := filepath.Join(dir, "certs")
	if err := writeCerts(certDir, "primary", "secondary"); err != nil {
		hc.Close()
		fmt.Fprintf(os.Stderr, "bench/disk: skipping the replicated mode: %v\n", err)
		return nil
	}
	return &replSetup{
		cleanup: func() { hc.Close() },
		start: func(file, sock string) (func(), error) {
			peerFile := file + ".secondary"
			os.Remove(peerFile)
			for _, p := range []string{peerFile, repl.MetaPath(peerFile), repl.MetaPath(file), repl.BitmapPath(file)} {
				os.Remove(p)
			}
			if err := os.WriteFile(peerFile, nil, 0o600); err != nil {
				return nil, err
			}
			if err := os.Truncate(peerFile, fileSize); err != nil {
				return nil, err
			}
			sec := withPprof(h.Command(ctx, self, "secondary", "-file", peerFile, "-certs", certDir, "-listen", ":"+replPort),
				filepath.Join(profileDir, "ferry-repl-secondary.pprof.sock"))
			sec.Stderr = os.Stderr
			if err := h.Start(sec); err != nil {
				return nil, err
			}
			stopSec := func() {
				_ = sec.Process.Signal(syscall.SIGTERM)
				_ = sec.Wait()
			}
			stopPrim, err := startProc(withPprof(exec.Command(self, "serve-primary", "-file", file, "-socket", sock,
				"-certs", certDir, "-peer", net.JoinHostPort(h.IP.String(), replPort)),
				filepath.Join(profileDir, "ferry-repl-primary.pprof.sock")), sock)
			if err != nil {
				stopSec()
				return nil, err
			}
			return func() { stopPrim(); stopSec() }, nil
		},
	}
}

// writeCerts makes a throwaway cluster CA and node certificates.
func writeCerts(dir string, nodes ...string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewCA("bench", time.Now(), 0)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o600); err != nil {
		return err
	}
	for _, n := range nodes {
		key, csr, err := pki.NewNodeKeyAndCSR(n)
		if err != nil {
			return err
		}
		cert, _, err := ca.SignNodeCSR(csr, n, time.Now(), 0)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, n+".key"), key, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, n+".crt"), cert, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func nodeTLS(dir, node string) (*tls.Config, error) {
	read := func(n string) []byte { b, _ := os.ReadFile(filepath.Join(dir, n)); return b }
	return pki.AgentTLSConfig(read(node+".crt"), read(node+".key"), read("ca.crt"))
}

func openBackend(file string) (*nbd.FileBackend, error) {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return nbd.NewFileBackend(f)
}

// serveSecondary accepts the primary's TLS link and serves it until SIGTERM.
func serveSecondary(args []string) error {
	fs := flag.NewFlagSet("secondary", flag.ContinueOnError)
	file := fs.String("file", "", "disk image")
	certs := fs.String("certs", "", "certificate directory")
	listen := fs.String("listen", ":"+replPort, "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	startPprof()
	be, err := openBackend(*file)
	if err != nil {
		return err
	}
	sec, err := repl.NewSecondary(repl.SecondaryConfig{DiskID: "bench", DiskPath: *file, Backend: be, Epoch: 1})
	if err != nil {
		return err
	}
	defer sec.Close()
	cfg, err := nodeTLS(*certs, "secondary")
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); l.Close() }()
	for {
		raw, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		c := tls.Server(repl.LinkConn(raw), cfg)
		if err := sec.Serve(ctx, c); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintln(os.Stderr, "secondary:", err)
		}
	}
}

// servePrimary connects to the secondary, then serves NBD over the
// replicating backend until SIGTERM.
func servePrimary(args []string) error {
	fs := flag.NewFlagSet("serve-primary", flag.ContinueOnError)
	file := fs.String("file", "", "disk image")
	sock := fs.String("socket", "", "NBD unix socket")
	certs := fs.String("certs", "", "certificate directory")
	peer := fs.String("peer", "", "secondary host:port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	startPprof()
	be, err := openBackend(*file)
	if err != nil {
		return err
	}
	p, err := repl.NewPrimary(repl.Config{DiskID: "bench", DiskPath: *file, Backend: be, Epoch: 1})
	if err != nil {
		return err
	}
	defer p.Close()
	cfg, err := nodeTLS(*certs, "primary")
	if err != nil {
		return err
	}
	cfg.ServerName = "secondary"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn net.Conn
	for {
		var d net.Dialer
		var raw net.Conn
		if raw, err = d.DialContext(ctx, "tcp", *peer); err == nil {
			tc := tls.Client(repl.LinkConn(raw), cfg)
			if err = tc.HandshakeContext(ctx); err == nil {
				conn = tc
				break
			}
			raw.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dial secondary %s: %w", *peer, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := p.Connect(ctx, conn); err != nil {
		return fmt.Errorf("connect to secondary: %w", err)
	}
	return serveBackend(p, *sock)
}
