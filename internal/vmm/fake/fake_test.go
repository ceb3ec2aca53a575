package fake_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/vmm"
	"github.com/ferrycluster/ferry/internal/vmm/fake"
	"github.com/ferrycluster/ferry/internal/vmm/vmmtest"
)

// deadline bounds every wait in these tests; the fake answers at once, so
// reaching it means a bug, not a slow machine.
const deadline = 10 * time.Second

func TestContract(t *testing.T) {
	vmmtest.TestDriver(t, func(t *testing.T) vmm.Driver { return fake.New() })
}

func TestContractWithStartDelay(t *testing.T) {
	vmmtest.TestDriver(t, func(t *testing.T) vmm.Driver {
		return fake.New(fake.WithStartDelay(time.Millisecond))
	})
}

// manualClock is a Clock that moves only when the test says so.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []manualTimer
	// armed receives a value each time After is called.
	armed chan struct{}
}

type manualTimer struct {
	at time.Time
	ch chan time.Time
}

func newManualClock() *manualClock {
	return &manualClock{
		now:   time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		armed: make(chan struct{}, 100),
	}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
	} else {
		c.timers = append(c.timers, manualTimer{at: c.now.Add(d), ch: ch})
	}
	c.armed <- struct{}{}
	return ch
}

// Advance moves the clock by d and fires every timer that is due.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(c.now) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- c.now
	}
	c.timers = kept
}

// waitArmed waits until some goroutine has called After.
func (c *manualClock) waitArmed(t *testing.T) {
	t.Helper()
	select {
	case <-c.armed:
	case <-time.After(deadline):
		t.Fatalf("nobody called Clock.After within %v", deadline)
	}
}

func spec(id string) vmm.Spec {
	return vmm.Spec{ID: id, CPUs: 1, MemoryMB: 64, DiskPath: "/nonexistent/" + id + ".img", MAC: "52:54:00:00:00:01"}
}

func mustStart(t *testing.T, d *fake.Driver, id string) vmm.Handle {
	t.Helper()
	h, err := d.Start(t.Context(), spec(id))
	if err != nil {
		t.Fatalf("Start(%q) = %v, want nil", id, err)
	}
	return h
}

func mustWait(t *testing.T, d *fake.Driver, id string) <-chan vmm.ExitResult {
	t.Helper()
	ch, err := d.Wait(t.Context(), id)
	if err != nil {
		t.Fatalf("Wait(%q) = %v, want nil", id, err)
	}
	return ch
}

// recvOne returns the one ExitResult on ch and checks that ch is then closed.
func recvOne(t *testing.T, ch <-chan vmm.ExitResult) vmm.ExitResult {
	t.Helper()
	var res vmm.ExitResult
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatalf("Wait channel closed without an ExitResult")
		}
		res = r
	case <-time.After(deadline):
		t.Fatalf("no ExitResult within %v", deadline)
	}
	select {
	case r, ok := <-ch:
		if ok {
			t.Fatalf("Wait channel delivered a second ExitResult %+v", r)
		}
	case <-time.After(deadline):
		t.Fatalf("Wait channel not closed within %v", deadline)
	}
	return res
}

func TestHandle(t *testing.T) {
	clock := newManualClock()
	d := fake.New(fake.WithClock(clock), fake.WithHost("host-1"))
	h := mustStart(t, d, "vm-a")
	want := vmm.Handle{
		ID:        "vm-a",
		Driver:    "fake",
		StartedAt: clock.Now(),
		Data:      map[string]string{fake.DataHost: "host-1", fake.DataRun: "1"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("Start(vm-a) = %+v, want %+v", h, want)
	}
	// Changing the returned handle must not change the driver's copy.
	h.Data[fake.DataRun] = "99"
	if err := d.Recover(t.Context(), want); err != nil {
		t.Errorf("Recover(%+v) = %v, want nil", want, err)
	}
	if err := d.Stop(t.Context(), "vm-a", time.Second); err != nil {
		t.Fatalf("Stop(vm-a) = %v", err)
	}
	h2 := mustStart(t, d, "vm-a")
	if got := h2.Data[fake.DataRun]; got != "2" {
		t.Errorf("second Start(vm-a).Data[run] = %q, want %q", got, "2")
	}
	if got, ok := d.Spec("vm-a"); !ok || !reflect.DeepEqual(got, spec("vm-a")) {
		t.Errorf("Spec(vm-a) = %+v, %v, want %+v, true", got, ok, spec("vm-a"))
	}
	if _, ok := d.Spec("nope"); ok {
		t.Errorf("Spec(nope) found a spec, want none")
	}
}

func TestStopIsClean(t *testing.T) {
	clock := newManualClock()
	d := fake.New(fake.WithClock(clock))
	mustStart(t, d, "vm-a")
	ch := mustWait(t, d, "vm-a")
	clock.Advance(time.Hour)
	if err := d.Stop(t.Context(), "vm-a", time.Second); err != nil {
		t.Fatalf("Stop(vm-a) = %v", err)
	}
	want := vmm.ExitResult{ID: "vm-a", At: clock.Now()}
	if got := recvOne(t, ch); got != want {
		t.Errorf("ExitResult after Stop = %+v, want %+v", got, want)
	}
	st, err := d.Inspect(t.Context(), "vm-a")
	if err != nil {
		t.Fatalf("Inspect(vm-a) = %v", err)
	}
	if st.State != vmm.StateStopped || st.ExitError != "" {
		t.Errorf("Inspect(vm-a) = %+v, want state %q and no ExitError", st, vmm.StateStopped)
	}
	// Wait after the end delivers the same result again.
	if got := recvOne(t, mustWait(t, d, "vm-a")); got != want {
		t.Errorf("Wait after Stop delivered %+v, want %+v", got, want)
	}
	// Recover treats a stopped VM like a dead process.
	if err := d.Recover(t.Context(), vmm.Handle{ID: "vm-a", Driver: "fake", Data: map[string]string{fake.DataRun: "1", fake.DataHost: ""}}); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Recover(stopped vm-a) = %v, want ErrNotFound", err)
	}
}

func TestCrash(t *testing.T) {
	d := fake.New()
	h := mustStart(t, d, "vm-a")
	mustStart(t, d, "vm-b")
	ch := mustWait(t, d, "vm-a")
	other := mustWait(t, d, "vm-b")
	if err := d.Crash("vm-a"); err != nil {
		t.Fatalf("Crash(vm-a) = %v, want nil", err)
	}
	res := recvOne(t, ch)
	if res.ID != "vm-a" || !errors.Is(res.Err, fake.ErrCrashed) {
		t.Errorf("ExitResult after Crash = %+v, want ID vm-a and an error wrapping ErrCrashed", res)
	}
	st, err := d.Inspect(t.Context(), "vm-a")
	if err != nil {
		t.Fatalf("Inspect(vm-a) = %v", err)
	}
	if st.State != vmm.StateCrashed || st.ExitError == "" {
		t.Errorf("Inspect(vm-a) after Crash = %+v, want state %q with an ExitError", st, vmm.StateCrashed)
	}
	if err := d.Recover(t.Context(), h); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Recover(crashed vm-a) = %v, want ErrNotFound", err)
	}
	if got := recvOne(t, mustWait(t, d, "vm-a")); !errors.Is(got.Err, fake.ErrCrashed) {
		t.Errorf("Wait after Crash delivered %+v, want the crash", got)
	}
	// Other VMs are untouched.
	select {
	case r := <-other:
		t.Errorf("vm-b's Wait got %+v after vm-a crashed", r)
	default:
	}
	if err := d.Crash("vm-a"); err != nil {
		t.Errorf("Crash(vm-a) again = %v, want nil", err)
	}
	if err := d.Crash("nope"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Crash(nope) = %v, want ErrNotFound", err)
	}
	// A crashed VM can be started again.
	mustStart(t, d, "vm-a")
}

func TestDestroyKills(t *testing.T) {
	d := fake.New()
	mustStart(t, d, "vm-a")
	ch := mustWait(t, d, "vm-a")
	if err := d.Destroy(t.Context(), "vm-a"); err != nil {
		t.Fatalf("Destroy(vm-a) = %v", err)
	}
	if res := recvOne(t, ch); !errors.Is(res.Err, fake.ErrKilled) {
		t.Errorf("ExitResult after Destroy = %+v, want an error wrapping ErrKilled", res)
	}
	if _, err := d.Wait(t.Context(), "vm-a"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Wait(vm-a) after Destroy = %v, want ErrNotFound", err)
	}
}

func TestFailStart(t *testing.T) {
	boom := errors.New("boom")
	type call struct {
		id  string
		err error
	}
	tests := []struct {
		name    string
		calls   []call
		id      string
		wantErr error
	}{
		{name: "failing id", calls: []call{{"vm-a", boom}}, id: "vm-a", wantErr: boom},
		{name: "other id unaffected", calls: []call{{"vm-a", boom}}, id: "vm-b"},
		{name: "clearing unknown id", calls: []call{{"vm-a", nil}}, id: "vm-a"},
		{name: "set then cleared", calls: []call{{"vm-a", boom}, {"vm-a", nil}}, id: "vm-a"},
		{name: "cleared then set", calls: []call{{"vm-a", nil}, {"vm-a", boom}}, id: "vm-a", wantErr: boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := fake.New()
			for _, c := range tc.calls {
				d.FailStart(c.id, c.err)
			}
			_, err := d.Start(t.Context(), spec(tc.id))
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Start(%q) = %v, want %v", tc.id, err, tc.wantErr)
			}
			_, ierr := d.Inspect(t.Context(), tc.id)
			if tc.wantErr != nil && !errors.Is(ierr, vmm.ErrNotFound) {
				t.Errorf("Inspect(%q) after a failed Start = %v, want ErrNotFound", tc.id, ierr)
			}
			if tc.wantErr == nil && ierr != nil {
				t.Errorf("Inspect(%q) = %v, want nil", tc.id, ierr)
			}
		})
	}
}

func TestStartDelay(t *testing.T) {
	clock := newManualClock()
	d := fake.New(fake.WithClock(clock), fake.WithStartDelay(5*time.Second))
	type result struct {
		h   vmm.Handle
		err error
	}
	done := make(chan result, 1)
	go func() {
		h, err := d.Start(t.Context(), spec("vm-a"))
		done <- result{h, err}
	}()
	clock.waitArmed(t)

	// While it boots, the VM is not known but its ID is taken.
	if _, err := d.Inspect(t.Context(), "vm-a"); !errors.Is(err, vmm.ErrNotFound) {
		t.Errorf("Inspect(vm-a) during the delay = %v, want ErrNotFound", err)
	}
	if _, err := d.Start(t.Context(), spec("vm-a")); !errors.Is(err, vmm.ErrAlreadyRunning) {
		t.Errorf("second Start(vm-a) during the delay = %v, want ErrAlreadyRunning", err)
	}
	select {
	case r := <-done:
		t.Fatalf("Start(vm-a) returned %+v before the delay passed", r)
	default:
	}

	clock.Advance(5 * time.Second)
	var r result
	select {
	case r = <-done:
	case <-time.After(deadline):
		t.Fatalf("Start(vm-a) did not return within %v of the delay passing", deadline)
	}
	if r.err != nil {
		t.Fatalf("Start(vm-a) = %v, want nil", r.err)
	}
	if want := clock.Now(); !r.h.StartedAt.Equal(want) {
		t.Errorf("Start(vm-a).StartedAt = %v, want %v", r.h.StartedAt, want)
	}
}

func TestStartDelayCancelled(t *testing.T) {
	clock := newManualClock()
	d := fake.New(fake.WithClock(clock), fake.WithStartDelay(time.Minute))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := d.Start(ctx, spec("vm-a"))
		done <- err
	}()
	clock.waitArmed(t)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start(vm-a) after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(deadline):
		t.Fatalf("Start(vm-a) did not return within %v of cancel", deadline)
	}
	if ids, _ := d.List(t.Context()); len(ids) != 0 {
		t.Errorf("List() after a cancelled Start = %q, want none", ids)
	}
	// The ID is free again.
	go func() {
		_, err := d.Start(t.Context(), spec("vm-a"))
		done <- err
	}()
	clock.waitArmed(t)
	clock.Advance(time.Minute)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start(vm-a) after a cancelled one = %v, want nil", err)
		}
	case <-time.After(deadline):
		t.Fatalf("Start(vm-a) did not return within %v", deadline)
	}
}

func TestFailStartDuringDelay(t *testing.T) {
	clock := newManualClock()
	d := fake.New(fake.WithClock(clock), fake.WithStartDelay(time.Second))
	boom := errors.New("boom")
	done := make(chan error, 1)
	go func() {
		_, err := d.Start(t.Context(), spec("vm-a"))
		done <- err
	}()
	clock.waitArmed(t)
	d.FailStart("vm-a", boom)
	clock.Advance(time.Second)
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Errorf("Start(vm-a) = %v, want an error wrapping boom", err)
		}
	case <-time.After(deadline):
		t.Fatalf("Start(vm-a) did not return within %v", deadline)
	}
}

func TestRecover(t *testing.T) {
	d := fake.New(fake.WithHost("host-1"))
	h := mustStart(t, d, "vm-a")
	stale := h
	stale.Data = map[string]string{fake.DataHost: "host-1", fake.DataRun: "0"}
	otherHost := h
	otherHost.Data = map[string]string{fake.DataHost: "host-2", fake.DataRun: "1"}
	otherDriver := h
	otherDriver.Driver = "qemu"
	tests := []struct {
		name string
		d    *fake.Driver
		h    vmm.Handle
		want error
	}{
		{name: "own handle", d: d, h: h},
		{name: "new driver does not know it", d: fake.New(fake.WithHost("host-1")), h: h, want: vmm.ErrNotFound},
		{name: "handle of an earlier run", d: d, h: stale, want: vmm.ErrNotFound},
		{name: "handle from another host", d: d, h: otherHost, want: vmm.ErrNotFound},
		{name: "handle of another driver", d: d, h: otherDriver, want: vmm.ErrNotFound},
		{name: "empty handle", d: d, h: vmm.Handle{}, want: vmm.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.d.Recover(t.Context(), tc.h)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Errorf("Recover(%+v) = %v, want %v", tc.h, err, tc.want)
			}
		})
	}
}

func TestWaitContextAlreadyDone(t *testing.T) {
	d := fake.New()
	mustStart(t, d, "vm-a")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ch, err := d.Wait(ctx, "vm-a")
	if err != nil {
		t.Fatalf("Wait(vm-a) = %v", err)
	}
	// Closed at once, even if the VM stops right after.
	if err := d.Stop(t.Context(), "vm-a", 0); err != nil {
		t.Fatalf("Stop(vm-a) = %v", err)
	}
	if r, ok := <-ch; ok {
		t.Errorf("Wait with a done ctx delivered %+v, want a closed channel", r)
	}
}

// TestConcurrentChaos runs every method at once on a few IDs; with -race it
// checks the locking, and afterwards that every Wait channel was answered
// with at most one value and closed.
func TestConcurrentChaos(t *testing.T) {
	d := fake.New()
	ids := []string{"vm-0", "vm-1", "vm-2"}
	const workers, rounds = 8, 200
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		chans []<-chan vmm.ExitResult
	)
	for w := range workers {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			for i := range rounds {
				id := ids[(w+i)%len(ids)]
				switch (w*7 + i) % 7 {
				case 0, 1:
					_, err := d.Start(ctx, spec(id))
					if err != nil && !errors.Is(err, vmm.ErrAlreadyRunning) {
						t.Errorf("Start(%q) = %v", id, err)
					}
				case 2:
					if ch, err := d.Wait(ctx, id); err == nil {
						mu.Lock()
						chans = append(chans, ch)
						mu.Unlock()
					}
				case 3:
					_ = d.Stop(ctx, id, 0)
				case 4:
					_ = d.Crash(id)
				case 5:
					_ = d.Destroy(ctx, id)
				case 6:
					_, _ = d.Inspect(ctx, id)
					_, _ = d.List(ctx)
				}
			}
		})
	}
	wg.Wait()
	// End every run so that every waiter is answered.
	for _, id := range ids {
		if err := d.Destroy(t.Context(), id); err != nil {
			t.Fatalf("Destroy(%q) = %v", id, err)
		}
	}
	for i, ch := range chans {
		n := 0
		timeout := time.After(deadline)
	drain:
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					break drain
				}
				n++
			case <-timeout:
				t.Fatalf("Wait channel %d not closed within %v", i, deadline)
			}
		}
		if n > 1 {
			t.Errorf("Wait channel %d delivered %d results, want at most 1", i, n)
		}
	}
}
