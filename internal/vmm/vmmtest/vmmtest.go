// Package vmmtest holds the contract test that every vmm.Driver (fake, qemu)
// must pass, so the agent can rely on the same behaviour from each.
package vmmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/vmm"
)

// Timeout bounds each step of the contract test that waits for a driver: a
// Start, an exit result, a closed channel. It is generous for drivers that
// boot real VMs under emulation; the fake driver answers at once.
const Timeout = 2 * time.Minute

// StopTimeout is the timeout the contract test passes to Stop.
const StopTimeout = 10 * time.Second

// diskSize is the size of the empty raw disk each test VM gets: enough for a
// real VMM to start, and since it has no boot sector the guest sits idle.
const diskSize = 1 << 20

// TestDriver runs the vmm.Driver contract against fresh drivers made by
// newDriver, one per subtest. newDriver should register any cleanup it needs
// with t.Cleanup; TestDriver itself destroys every VM a subtest leaves.
func TestDriver(t *testing.T, newDriver func(t *testing.T) vmm.Driver) {
	tests := []struct {
		name string
		run  func(t *testing.T, d vmm.Driver)
	}{
		{"Name", testName},
		{"StartInspectList", testStartInspectList},
		{"StartEmptyIDFails", testStartEmptyID},
		{"StartCancelledContextFails", testStartCancelled},
		{"StartTwiceIsAlreadyRunning", testStartTwice},
		{"StopDeliversOneExitResult", testStopDeliversOneExit},
		{"StopWakesEveryWaiter", testStopWakesEveryWaiter},
		{"WaitAfterStopDoesNotBlock", testWaitAfterStop},
		{"WaitCancelClosesChannel", testWaitCancel},
		{"WaitUnknownIsNotFound", testWaitUnknown},
		{"StopUnknownIsNil", testStopUnknown},
		{"StopTwiceIsNil", testStopTwice},
		{"StartAgainAfterStop", testRestart},
		{"DestroyIsIdempotent", testDestroy},
		{"InspectUnknownIsNotFound", testInspectUnknown},
		{"Recover", testRecover},
		{"ConcurrentStartsOfDifferentIDs", testConcurrentDifferentIDs},
		{"ConcurrentStartsOfOneID", testConcurrentOneID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t)
			t.Cleanup(func() { destroyAll(t, d) })
			tc.run(t, d)
		})
	}
}

// ctxFor returns a context that ends after Timeout or with the test.
func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// newSpec returns a small spec for id with its own state directory and an
// empty sparse disk image.
func newSpec(t *testing.T, id string) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatalf("create disk: %v", err)
	}
	if err := f.Truncate(diskSize); err != nil {
		t.Fatalf("truncate disk: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close disk: %v", err)
	}
	return vmm.Spec{
		ID:       id,
		CPUs:     1,
		MemoryMB: 64,
		DiskPath: disk,
		MAC:      "52:54:00:12:34:56",
		StateDir: dir,
	}
}

func start(t *testing.T, d vmm.Driver, id string) vmm.Handle {
	t.Helper()
	h, err := d.Start(ctxFor(t), newSpec(t, id))
	if err != nil {
		t.Fatalf("Start(%q) = %v, want nil", id, err)
	}
	return h
}

func wait(t *testing.T, d vmm.Driver, ctx context.Context, id string) <-chan vmm.ExitResult {
	t.Helper()
	ch, err := d.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait(%q) = %v, want nil", id, err)
	}
	if ch == nil {
		t.Fatalf("Wait(%q) returned a nil channel", id)
	}
	return ch
}

func stop(t *testing.T, d vmm.Driver, id string) {
	t.Helper()
	if err := d.Stop(ctxFor(t), id, StopTimeout); err != nil {
		t.Fatalf("Stop(%q) = %v, want nil", id, err)
	}
}

// recvResult waits for one ExitResult on ch.
func recvResult(t *testing.T, ch <-chan vmm.ExitResult, id string) vmm.ExitResult {
	t.Helper()
	select {
	case res, ok := <-ch:
		if !ok {
			t.Fatalf("Wait(%q) channel closed without an ExitResult", id)
		}
		if res.ID != id {
			t.Errorf("ExitResult.ID = %q, want %q", res.ID, id)
		}
		return res
	case <-time.After(Timeout):
		t.Fatalf("no ExitResult for %q within %v", id, Timeout)
	}
	return vmm.ExitResult{}
}

// recvClosed waits for ch to be closed, failing on any value.
func recvClosed(t *testing.T, ch <-chan vmm.ExitResult, id string) {
	t.Helper()
	select {
	case res, ok := <-ch:
		if ok {
			t.Fatalf("Wait(%q) channel delivered %+v, want it closed with no more values", id, res)
		}
	case <-time.After(Timeout):
		t.Fatalf("Wait(%q) channel not closed within %v", id, Timeout)
	}
}

func inspect(t *testing.T, d vmm.Driver, id string) vmm.Status {
	t.Helper()
	st, err := d.Inspect(ctxFor(t), id)
	if err != nil {
		t.Fatalf("Inspect(%q) = %v, want nil", id, err)
	}
	if st.ID != id {
		t.Errorf("Inspect(%q).ID = %q, want %q", id, st.ID, id)
	}
	return st
}

func list(t *testing.T, d vmm.Driver) []string {
	t.Helper()
	ids, err := d.List(ctxFor(t))
	if err != nil {
		t.Fatalf("List() = %v, want nil", err)
	}
	return ids
}

func destroyAll(t *testing.T, d vmm.Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	ids, err := d.List(ctx)
	if err != nil {
		t.Errorf("cleanup: List() = %v", err)
		return
	}
	for _, id := range ids {
		if err := d.Destroy(ctx, id); err != nil {
			t.Errorf("cleanup: Destroy(%q) = %v", id, err)
		}
	}
}

func testName(t *testing.T, d vmm.Driver) {
	if d.Name() == "" {
		t.Errorf("Name() = %q, want a non-empty name", d.Name())
	}
}

func testStartInspectList(t *testing.T, d vmm.Driver) {
	h := start(t, d, "vm-a")
	if h.ID != "vm-a" {
		t.Errorf("Start(vm-a).ID = %q, want %q", h.ID, "vm-a")
	}
	if h.Driver != d.Name() {
		t.Errorf("Start(vm-a).Driver = %q, want %q", h.Driver, d.Name())
	}
	if h.StartedAt.IsZero() {
		t.Errorf("Start(vm-a).StartedAt is zero, want the start time")
	}
	st := inspect(t, d, "vm-a")
	if st.State != vmm.StateRunning {
		t.Errorf("Inspect(vm-a).State = %q, want %q", st.State, vmm.StateRunning)
	}
	if !st.StartedAt.Equal(h.StartedAt) {
		t.Errorf("Inspect(vm-a).StartedAt = %v, want %v as in the handle", st.StartedAt, h.StartedAt)
	}
	if st.ExitError != "" {
		t.Errorf("Inspect(vm-a).ExitError = %q, want empty while running", st.ExitError)
	}
	start(t, d, "vm-b")
	ids := list(t, d)
	slices.Sort(ids)
	if want := []string{"vm-a", "vm-b"}; !slices.Equal(ids, want) {
		t.Errorf("List() = %q, want %q", ids, want)
	}
}

func testStartEmptyID(t *testing.T, d vmm.Driver) {
	if _, err := d.Start(ctxFor(t), newSpec(t, "")); err == nil {
		t.Errorf("Start(\"\") = nil, want an error")
	}
}

func testStartCancelled(t *testing.T, d vmm.Driver) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Start(ctx, newSpec(t, "vm-a")); err == nil {
		t.Fatalf("Start(vm-a) with a cancelled ctx = nil, want an error")
	}
	if st, err := d.Inspect(ctxFor(t), "vm-a"); err == nil && st.State == vmm.StateRunning {
		t.Errorf("Inspect(vm-a) after a cancelled Start = %q, want not running", st.State)
	}
}

func testStartTwice(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	_, err := d.Start(ctxFor(t), newSpec(t, "vm-a"))
	if !errors.Is(err, vmm.ErrAlreadyRunning) {
		t.Errorf("second Start(vm-a) = %v, want ErrAlreadyRunning", err)
	}
	if st := inspect(t, d, "vm-a"); st.State != vmm.StateRunning {
		t.Errorf("Inspect(vm-a).State after a second Start = %q, want %q", st.State, vmm.StateRunning)
	}
}

func testStopDeliversOneExit(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	ch := wait(t, d, ctxFor(t), "vm-a")
	stop(t, d, "vm-a")
	recvResult(t, ch, "vm-a")
	recvClosed(t, ch, "vm-a")
	if st := inspect(t, d, "vm-a"); st.State == vmm.StateRunning {
		t.Errorf("Inspect(vm-a).State after Stop = %q, want not running", st.State)
	}
	if ids := list(t, d); !slices.Contains(ids, "vm-a") {
		t.Errorf("List() after Stop = %q, want it to contain vm-a until Destroy", ids)
	}
}

func testStopWakesEveryWaiter(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	chs := []<-chan vmm.ExitResult{
		wait(t, d, ctxFor(t), "vm-a"),
		wait(t, d, ctxFor(t), "vm-a"),
		wait(t, d, ctxFor(t), "vm-a"),
	}
	stop(t, d, "vm-a")
	for _, ch := range chs {
		recvResult(t, ch, "vm-a")
		recvClosed(t, ch, "vm-a")
	}
}

func testWaitAfterStop(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	stop(t, d, "vm-a")
	ch := wait(t, d, ctxFor(t), "vm-a")
	// A driver may deliver the run's result again or none, but must not
	// leave the caller waiting for a VM that no longer runs.
	select {
	case res, ok := <-ch:
		if ok {
			if res.ID != "vm-a" {
				t.Errorf("ExitResult.ID = %q, want vm-a", res.ID)
			}
			recvClosed(t, ch, "vm-a")
		}
	case <-time.After(Timeout):
		t.Fatalf("Wait(vm-a) after Stop: channel not closed within %v", Timeout)
	}
}

func testWaitCancel(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	ctx, cancel := context.WithCancel(t.Context())
	ch := wait(t, d, ctx, "vm-a")
	cancel()
	recvClosed(t, ch, "vm-a")
	if st := inspect(t, d, "vm-a"); st.State != vmm.StateRunning {
		t.Errorf("Inspect(vm-a).State after a cancelled Wait = %q, want %q", st.State, vmm.StateRunning)
	}
	// A Wait whose ctx is already done closes its channel without a value.
	ch = wait(t, d, ctx, "vm-a")
	recvClosed(t, ch, "vm-a")
}

func testWaitUnknown(t *testing.T, d vmm.Driver) {
	if _, err := d.Wait(ctxFor(t), "nope"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Wait(nope) = %v, want ErrNotFound", err)
	}
}

func testStopUnknown(t *testing.T, d vmm.Driver) {
	if err := d.Stop(ctxFor(t), "nope", StopTimeout); err != nil {
		t.Errorf("Stop(nope) = %v, want nil", err)
	}
}

func testStopTwice(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	stop(t, d, "vm-a")
	stop(t, d, "vm-a")
}

func testRestart(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	stop(t, d, "vm-a")
	start(t, d, "vm-a")
	if st := inspect(t, d, "vm-a"); st.State != vmm.StateRunning {
		t.Errorf("Inspect(vm-a).State after a second Start = %q, want %q", st.State, vmm.StateRunning)
	}
	// The new run has its own exit.
	ch := wait(t, d, ctxFor(t), "vm-a")
	stop(t, d, "vm-a")
	recvResult(t, ch, "vm-a")
	recvClosed(t, ch, "vm-a")
}

func testDestroy(t *testing.T, d vmm.Driver) {
	start(t, d, "vm-a")
	start(t, d, "vm-b")
	ch := wait(t, d, ctxFor(t), "vm-a")
	if err := d.Destroy(ctxFor(t), "vm-a"); err != nil {
		t.Fatalf("Destroy(vm-a) = %v, want nil", err)
	}
	if res := recvResult(t, ch, "vm-a"); res.Err == nil {
		t.Errorf("ExitResult.Err after Destroy of a running VM = nil, want the kill")
	}
	recvClosed(t, ch, "vm-a")
	if _, err := d.Inspect(ctxFor(t), "vm-a"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Inspect(vm-a) after Destroy = %v, want ErrNotFound", err)
	}
	if ids := list(t, d); !slices.Equal(ids, []string{"vm-b"}) {
		t.Errorf("List() after Destroy(vm-a) = %q, want [vm-b]", ids)
	}
	for _, id := range []string{"vm-a", "never-started"} {
		if err := d.Destroy(ctxFor(t), id); err != nil {
			t.Errorf("Destroy(%q) = %v, want nil", id, err)
		}
	}
	// A stopped VM can be destroyed too, and an ID can be used again.
	stop(t, d, "vm-b")
	if err := d.Destroy(ctxFor(t), "vm-b"); err != nil {
		t.Errorf("Destroy(vm-b) after Stop = %v, want nil", err)
	}
	start(t, d, "vm-a")
}

func testInspectUnknown(t *testing.T, d vmm.Driver) {
	if _, err := d.Inspect(ctxFor(t), "nope"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Inspect(nope) = %v, want ErrNotFound", err)
	}
}

func testRecover(t *testing.T, d vmm.Driver) {
	h := start(t, d, "vm-a")
	if err := d.Recover(ctxFor(t), h); err != nil {
		t.Errorf("Recover(handle of running vm-a) = %v, want nil", err)
	}
	if st := inspect(t, d, "vm-a"); st.State != vmm.StateRunning {
		t.Errorf("Inspect(vm-a).State after Recover = %q, want %q", st.State, vmm.StateRunning)
	}
	unknown := h
	unknown.ID = "never-started"
	if err := d.Recover(ctxFor(t), unknown); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Recover(handle of never-started) = %v, want ErrNotFound", err)
	}
	if err := d.Destroy(ctxFor(t), "vm-a"); err != nil {
		t.Fatalf("Destroy(vm-a) = %v, want nil", err)
	}
	if err := d.Recover(ctxFor(t), h); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Recover(handle of destroyed vm-a) = %v, want ErrNotFound", err)
	}
}

func testConcurrentDifferentIDs(t *testing.T, d vmm.Driver) {
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("vm-%d", i)
		spec := newSpec(t, ids[i])
		ctx := ctxFor(t)
		wg.Go(func() {
			_, errs[i] = d.Start(ctx, spec)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Start(%q) = %v, want nil", ids[i], err)
		}
	}
	got := list(t, d)
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Errorf("List() = %q, want %q", got, ids)
	}
	for _, id := range ids {
		if st := inspect(t, d, id); st.State != vmm.StateRunning {
			t.Errorf("Inspect(%q).State = %q, want %q", id, st.State, vmm.StateRunning)
		}
	}
}

func testConcurrentOneID(t *testing.T, d vmm.Driver) {
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		spec := newSpec(t, "vm-a")
		ctx := ctxFor(t)
		wg.Go(func() {
			_, errs[i] = d.Start(ctx, spec)
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, vmm.ErrAlreadyRunning):
			t.Errorf("concurrent Start(vm-a) = %v, want nil or ErrAlreadyRunning", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent Start(vm-a) calls succeeded, want exactly 1", ok, n)
	}
}
