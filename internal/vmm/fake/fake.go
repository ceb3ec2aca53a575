package fake

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/vmm"
)

// DriverName is the name the fake driver reports and puts in its handles.
const DriverName = "fake"

// Handle.Data keys the fake driver fills.
const (
	// DataHost is the Driver's host name (see WithHost).
	DataHost = "host"
	// DataRun counts the starts of one ID on one Driver, from 1.
	DataRun = "run"
)

// Errors the fake driver delivers in ExitResult.Err and Status.ExitError.
var (
	// ErrCrashed is the exit error of a VM ended by Crash.
	ErrCrashed = errors.New("fake: vm crashed")
	// ErrKilled is the exit error of a running VM ended by Destroy.
	ErrKilled = errors.New("fake: vm killed")
)

// Clock is the time source of a Driver. A simulation passes a virtual clock;
// the default is the system clock.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Option configures a Driver.
type Option func(*Driver)

// WithClock makes the Driver take time stamps and start delays from c.
func WithClock(c Clock) Option {
	return func(d *Driver) { d.clock = c }
}

// WithStartDelay makes every Start wait d (on the Driver's clock) before the
// VM counts as running, as a real boot does. Cancelling Start's ctx during the
// delay abandons the start.
func WithStartDelay(delay time.Duration) Option {
	return func(d *Driver) { d.startDelay = delay }
}

// WithHost names the host the Driver stands for. The name is written into
// every handle, and Recover accepts only handles with the same name, so in a
// simulation of many hosts a handle cannot be recovered on the wrong one.
func WithHost(name string) Option {
	return func(d *Driver) { d.host = name }
}

// Driver is the fake vmm.Driver. Its zero value is not usable; call New.
// All methods are safe for concurrent use and never block one another for
// longer than a map update, except Start during its configured delay, which
// blocks only that call.
type Driver struct {
	clock      Clock
	startDelay time.Duration
	host       string

	mu sync.Mutex
	// vms holds every VM started and not destroyed, in its latest run.
	vms map[string]*vm
	// starting holds IDs whose Start is waiting out the start delay.
	starting map[string]bool
	// runs counts starts per ID, so handles of earlier runs are stale.
	runs map[string]int
	// failStart holds the error Start returns for an ID.
	failStart map[string]error
	// failMigrate holds the error Migrate returns for an ID.
	failMigrate map[string]error
}

// vm is one run of one VM. A new Start makes a new vm.
type vm struct {
	spec      vmm.Spec
	handle    vmm.Handle
	state     vmm.State
	startedAt time.Time
	// exit is the result of this run once it has ended.
	exit    vmm.ExitResult
	waiters map[*waiter]struct{}

	// Live migration (see migrate.go).
	//
	// incoming is set for a VM from StartIncoming until it is resumed;
	// received once a migration to it completed. uri is where it listens
	// while it waits.
	incoming, received bool
	uri                string
	// tls says the target was started with TLS: a source must migrate
	// with it too, as QEMU's would.
	tls bool
	// migrated is set on a source whose migration completed, until it is
	// resumed; migrating while a Migrate of it runs.
	migrated, migrating bool
}

// paused reports whether v's CPUs would be stopped for a migration.
func (v *vm) paused() bool { return v.incoming || v.migrated }

// waiter is one Wait call that has not been answered.
type waiter struct {
	ch   chan vmm.ExitResult
	stop func() bool // unregisters the context.AfterFunc
}

var (
	_ vmm.Driver   = (*Driver)(nil)
	_ vmm.Migrator = (*Driver)(nil)
)

// New returns a Driver with no VMs.
func New(opts ...Option) *Driver {
	d := &Driver{
		clock:       realClock{},
		vms:         make(map[string]*vm),
		starting:    make(map[string]bool),
		runs:        make(map[string]int),
		failStart:   make(map[string]error),
		failMigrate: make(map[string]error),
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Name returns "fake".
func (d *Driver) Name() string { return DriverName }

// FailStart makes every later Start of id fail with an error wrapping err,
// until FailStart(id, nil) clears it. A Start already waiting out its delay
// fails too.
func (d *Driver) FailStart(id string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.failStart, id)
		return
	}
	d.failStart[id] = err
}

// Start records a running VM for spec.ID after the start delay, if any. It
// returns ErrAlreadyRunning while a VM with that ID runs or is being started,
// the error set by FailStart, or ctx's error if ctx ends first. A VM that
// stopped or crashed is started again as a new run.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Handle, error) {
	if spec.ID == "" {
		return vmm.Handle{}, errors.New("fake: start vm: spec has no ID")
	}
	if err := ctx.Err(); err != nil {
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	d.mu.Lock()
	if v, ok := d.vms[spec.ID]; (ok && v.state == vmm.StateRunning) || d.starting[spec.ID] {
		d.mu.Unlock()
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, vmm.ErrAlreadyRunning)
	}
	d.starting[spec.ID] = true
	d.mu.Unlock()

	if d.startDelay > 0 {
		select {
		case <-d.clock.After(d.startDelay):
		case <-ctx.Done():
			d.mu.Lock()
			delete(d.starting, spec.ID)
			d.mu.Unlock()
			return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, ctx.Err())
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.starting, spec.ID)
	if err := d.failStart[spec.ID]; err != nil {
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	d.runs[spec.ID]++
	now := d.clock.Now()
	h := vmm.Handle{
		ID:        spec.ID,
		Driver:    DriverName,
		StartedAt: now,
		Data: map[string]string{
			DataHost: d.host,
			DataRun:  strconv.Itoa(d.runs[spec.ID]),
		},
	}
	d.vms[spec.ID] = &vm{
		spec:      spec,
		handle:    h,
		state:     vmm.StateRunning,
		startedAt: now,
		waiters:   make(map[*waiter]struct{}),
	}
	return copyHandle(h), nil
}

// Recover succeeds if h was issued by this Driver for the run of the VM that
// is still going. Otherwise, as for a VM whose process is gone, it returns an
// error wrapping ErrNotFound.
func (d *Driver) Recover(ctx context.Context, h vmm.Handle) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[h.ID]
	if !ok || v.state != vmm.StateRunning || h.Driver != DriverName ||
		h.Data[DataHost] != v.handle.Data[DataHost] || h.Data[DataRun] != v.handle.Data[DataRun] {
		return fmt.Errorf("recover vm %s: %w", h.ID, vmm.ErrNotFound)
	}
	return nil
}

// Wait returns a channel that receives the ExitResult of the VM's current run
// when it ends and is then closed. If the run has already ended, the result
// is delivered at once. Cancelling ctx closes the channel without a value.
// Wait returns an error wrapping ErrNotFound for an unknown ID.
func (d *Driver) Wait(ctx context.Context, id string) (<-chan vmm.ExitResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	if !ok {
		return nil, fmt.Errorf("wait vm %s: %w", id, vmm.ErrNotFound)
	}
	ch := make(chan vmm.ExitResult, 1)
	if v.state != vmm.StateRunning {
		ch <- v.exit
		close(ch)
		return ch, nil
	}
	if ctx.Err() != nil {
		close(ch)
		return ch, nil
	}
	w := &waiter{ch: ch}
	v.waiters[w] = struct{}{}
	// The callback runs in its own goroutine and takes d.mu, so registering
	// it under d.mu cannot deadlock even if ctx is already done.
	w.stop = context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, ok := v.waiters[w]; ok {
			delete(v.waiters, w)
			close(w.ch)
		}
	})
	return ch, nil
}

// Stop ends a running VM cleanly: every Wait receives an ExitResult with a
// nil Err. The timeout is ignored, as a fake guest always obeys. A VM
// paused for a migration cannot obey: it is killed, as by the qemu driver
// (StateStopped, with an Err wrapping ErrKilled). Stopping a VM that is not
// running, or unknown, returns nil.
func (d *Driver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.vms[id]; ok && v.state == vmm.StateRunning {
		var err error
		if v.paused() {
			err = fmt.Errorf("vm %s: %w: stopped while paused for a live migration", id, ErrKilled)
		}
		d.endLocked(v, vmm.StateStopped, err)
	}
	return nil
}

// Crash ends a running VM as if its process died: every Wait receives an
// ExitResult whose Err wraps ErrCrashed, and Inspect reports StateCrashed.
// Crash returns an error wrapping ErrNotFound for an unknown ID and nil for
// a VM that is not running.
func (d *Driver) Crash(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	if !ok {
		return fmt.Errorf("crash vm %s: %w", id, vmm.ErrNotFound)
	}
	if v.state == vmm.StateRunning {
		err := fmt.Errorf("vm %s: %w", id, ErrCrashed)
		if v.incoming {
			err = fmt.Errorf("%w: %w", vmm.ErrIncomingFailed, err)
		}
		d.endLocked(v, vmm.StateCrashed, err)
	}
	return nil
}

// Destroy forgets the VM. If it runs, it is killed first: every Wait receives
// an ExitResult whose Err wraps ErrKilled. Destroying an unknown ID returns
// nil. FailStart settings for the ID are kept.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	if !ok {
		return nil
	}
	if v.state == vmm.StateRunning {
		d.endLocked(v, vmm.StateCrashed, fmt.Errorf("vm %s: %w", id, ErrKilled))
	}
	delete(d.vms, id)
	return nil
}

// endLocked ends v's run and answers its waiters. d.mu must be held.
func (d *Driver) endLocked(v *vm, state vmm.State, err error) {
	if v.uri != "" {
		unlisten(v.uri, v)
		v.uri = ""
	}
	v.state = state
	v.exit = vmm.ExitResult{ID: v.spec.ID, Err: err, At: d.clock.Now()}
	for w := range v.waiters {
		delete(v.waiters, w)
		w.stop()
		w.ch <- v.exit
		close(w.ch)
	}
}

// Inspect reports the state of the VM's latest run, or an error wrapping
// ErrNotFound. A VM whose Start is still waiting out its delay is not known
// yet.
func (d *Driver) Inspect(ctx context.Context, id string) (vmm.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	if !ok {
		return vmm.Status{}, fmt.Errorf("inspect vm %s: %w", id, vmm.ErrNotFound)
	}
	st := vmm.Status{ID: id, State: v.state, StartedAt: v.startedAt}
	if v.state != vmm.StateRunning && v.exit.Err != nil {
		st.ExitError = v.exit.Err.Error()
	}
	st.Paused = v.state == vmm.StateRunning && v.paused()
	return st, nil
}

// List returns the IDs of every VM started and not destroyed, sorted.
func (d *Driver) List(ctx context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.vms))
	for id := range d.vms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Spec returns the spec the VM was last started with, so a test can check
// what its caller asked for.
func (d *Driver) Spec(id string) (vmm.Spec, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	if !ok {
		return vmm.Spec{}, false
	}
	return v.spec, true
}

func copyHandle(h vmm.Handle) vmm.Handle {
	h.Data = maps.Clone(h.Data)
	return h
}
