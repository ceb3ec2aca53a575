package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/store"
)

// EtcdBinary is where Debian's etcd-server package installs the etcd
// server that External runs.
const EtcdBinary = "/usr/bin/etcd"

// startTimeout bounds how long a test waits for an etcd to serve.
const startTimeout = 30 * time.Second

// Embedded starts an etcd member inside the test process with its data in
// t.TempDir() and returns its client endpoints. The member is closed when
// the test and its subtests finish.
func Embedded(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{Dir: t.TempDir(), StartTimeout: startTimeout})
	if err != nil {
		t.Fatalf("storetest: start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e.Endpoints()
}

// External starts the etcd binary at EtcdBinary as a single-member cluster
// on free loopback ports with its data in t.TempDir(), waits until it
// answers, and returns its client endpoints. Cleanup kills the process and
// waits for it to exit. Without the binary the test is skipped (scripts/setup
// installs it), except when CI=true, where a missing etcd fails the test.
func External(t testing.TB) []string {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		msg := fmt.Sprintf("storetest: %s not found (%v); scripts/setup installs it (Debian package etcd-server)", EtcdBinary, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	// A free port can be taken by someone else before etcd binds it; etcd
	// then exits at once and another pair of ports is tried.
	var lastErr error
	for range 3 {
		endpoints, err := startExternal(t)
		if err == nil {
			return endpoints
		}
		lastErr = err
	}
	t.Fatalf("storetest: start %s: %v", EtcdBinary, lastErr)
	return nil
}

func startExternal(t testing.TB) ([]string, error) {
	client, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	peer, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cu, pu := "http://"+client, "http://"+peer
	dir := filepath.Join(t.TempDir(), "etcd")
	cmd := exec.Command(EtcdBinary,
		"--name", "storetest",
		"--data-dir", dir,
		"--listen-client-urls", cu,
		"--advertise-client-urls", cu,
		"--listen-peer-urls", pu,
		"--initial-advertise-peer-urls", pu,
		"--initial-cluster", "storetest="+pu,
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-level", "error",
	)
	// The server's output is kept for the failure message only.
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(startTimeout)
	hc := &http.Client{Timeout: time.Second}
	for {
		if healthy(hc, cu) {
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("etcd exited before serving (%v):\n%s", waitErr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("etcd not serving at %s after %s:\n%s", cu, startTimeout, out.String())
		}
	}
	t.Cleanup(stop)
	return []string{cu}, nil
}

// healthy reports whether the etcd at url has a leader and serves reads.
func healthy(hc *http.Client, url string) bool {
	resp, err := hc.Get(url + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// NewStore connects to endpoints and returns a Store under a prefix unique
// to this call ("/ferry-test/<random>/"), so tests can share one etcd
// without seeing each other's keys. The client is closed at cleanup.
func NewStore(t testing.TB, endpoints []string) *store.Store {
	t.Helper()
	return NewStoreWithPrefix(t, endpoints, "/ferry-test/"+store.NewID()+"/")
}

// NewStoreWithPrefix connects to endpoints with a client of its own and
// returns a Store under prefix. Pass another store's s.Key("") to act as a
// second server of the same cluster. The client is closed at cleanup.
func NewStoreWithPrefix(t testing.TB, endpoints []string, prefix string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cli, err := store.Connect(ctx, endpoints)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return store.New(cli, prefix)
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// syncBuffer is a bytes.Buffer safe for the writes of a child's stdout and
// stderr copiers and a concurrent read.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
