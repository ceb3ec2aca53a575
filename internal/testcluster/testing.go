package testcluster

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

// New starts a cluster for a test and removes it when the test ends
// (t.Cleanup). It skips the test when the machine cannot build clusters
// (not root, no `ip`), except when the environment has CI=true, where that
// is a failure. Without cfg.Logger the cluster logs to the test's output.
//
// The first call in a test process also removes leftovers of earlier test
// processes that died without cleaning up (see [CleanupStale]), and installs
// a handler for SIGINT and SIGTERM that closes every cluster New made before
// the process dies of the signal. A process killed by SIGKILL or ended by a
// `go test` timeout (a panic) still leaves its namespaces behind; the next
// test process that calls New removes them.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if err := Preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
		}
		t.Skipf("skipping: %v", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	live.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		removed, err := CleanupStale(ctx)
		if len(removed) > 0 {
			t.Logf("testcluster: removed leftovers of dead test processes: %v", removed)
		}
		if err != nil {
			t.Logf("testcluster: removing leftovers of dead test processes: %v", err)
		}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go closeOnSignal(ch)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start test cluster: %v", err)
	}
	live.mu.Lock()
	live.clusters[c] = true
	live.mu.Unlock()
	t.Cleanup(func() {
		live.mu.Lock()
		delete(live.clusters, c)
		live.mu.Unlock()
		if err := c.Close(); err != nil {
			t.Errorf("close test cluster: %v", err)
		}
	})
	return c
}

// live holds the clusters New made that are not closed yet, for the signal
// handler. It is the package's only process-wide state: a signal is too.
var live = struct {
	once     sync.Once
	mu       sync.Mutex
	clusters map[*Cluster]bool
}{clusters: map[*Cluster]bool{}}

// closeOnSignal waits for SIGINT or SIGTERM on ch, closes the live
// clusters, then restores the default action and re-raises the signal, so
// the process ends as it would have.
func closeOnSignal(ch <-chan os.Signal) {
	sig := <-ch
	live.mu.Lock()
	for c := range live.clusters {
		_ = c.Close()
	}
	live.mu.Unlock()
	signal.Reset(syscall.SIGINT, syscall.SIGTERM)
	if s, ok := sig.(syscall.Signal); ok {
		_ = syscall.Kill(os.Getpid(), s)
	}
}
