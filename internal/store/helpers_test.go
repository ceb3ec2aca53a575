package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// testTimeout bounds every wait in these tests; a healthy run needs a
// fraction of it.
const testTimeout = 20 * time.Second

// testCtx returns a context cancelled at the end of the test or after
// testTimeout, whichever comes first.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newInstance(name string) *api.Instance {
	return &api.Instance{
		Meta: api.Meta{Name: name, UID: "uid-" + name, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		Spec: api.InstanceSpec{CPUs: 1, Memory: 512 << 20, Disk: 1 << 30, Image: "demo", State: "running"},
	}
}

// waitFor polls cond until it holds or timeout passes, and reports how long
// it took. It fails the test on timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
	return time.Since(start)
}

// recv returns the next value from ch, failing the test if ch is closed or
// nothing arrives within testTimeout.
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("channel closed, want a value")
		}
		return v
	case <-time.After(testTimeout):
		t.Fatalf("nothing received after %v", testTimeout)
	}
	panic("unreachable")
}

// waitClosed fails the test unless ch is closed (after draining it) within
// testTimeout.
func waitClosed[T any](t testing.TB, ch <-chan T) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("channel not closed after %v", testTimeout)
		}
	}
}
