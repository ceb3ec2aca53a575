package fake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/ferrycluster/ferry/internal/vmm"
)

// DataIncoming is "true" in the handle of a VM from StartIncoming.
const DataIncoming = "incoming"

// firstPort is the port StartIncoming gives the first listen address with
// port 0; later ones get the next ports.
const firstPort = 49152

// listeners holds every fake VM waiting for an incoming migration, by the
// URI it listens on. It is shared by all Drivers in the process, so that a
// simulation of many hosts (one Driver each) can migrate between them.
// Lock order: a Driver's mu, then listeners.mu; never the other way.
var listeners = struct {
	mu   sync.Mutex
	m    map[string]listener
	next int
}{m: make(map[string]listener), next: firstPort}

type listener struct {
	d *Driver
	v *vm
}

// unlisten removes uri from listeners if v still holds it.
func unlisten(uri string, v *vm) {
	listeners.mu.Lock()
	defer listeners.mu.Unlock()
	if l, ok := listeners.m[uri]; ok && l.v == v {
		delete(listeners.m, uri)
	}
}

// FailMigrate makes every later Migrate of id fail with an error wrapping
// err (such as vmm.ErrNotConverged), as a migration that QEMU reports
// failed: the source runs on and the target's process ends with an error
// wrapping vmm.ErrIncomingFailed. FailMigrate(id, nil) clears it.
func (d *Driver) FailMigrate(id string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.failMigrate, id)
		return
	}
	d.failMigrate[id] = err
}

// StartIncoming records a paused VM for spec.ID that waits for a migration
// on opts.Listen ("host:port"; port 0 takes the next free one of a counter
// from 49152), with opts.TLS or not (a Migrate to it must agree) and returns its handle and URI ("tcp:host:port"). It fails as
// Start does (ErrAlreadyRunning, FailStart), and if another fake VM in the
// process listens on the same address. Unlike Start, it does not wait out
// the start delay. The VM is Paused until Resume; Stop kills it.
func (d *Driver) StartIncoming(ctx context.Context, spec vmm.Spec, opts vmm.IncomingOptions) (vmm.Handle, string, error) {
	listen := opts.Listen
	fail := func(err error) (vmm.Handle, string, error) {
		return vmm.Handle{}, "", fmt.Errorf("start incoming vm %s: %w", spec.ID, err)
	}
	if spec.ID == "" {
		return vmm.Handle{}, "", errors.New("fake: start incoming vm: spec has no ID")
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fail(err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); host == "" || err != nil || strconv.FormatUint(p, 10) != port {
		return fail(fmt.Errorf("listen address %q: want host:port", listen))
	}
	d.mu.Lock()
	if v, ok := d.vms[spec.ID]; (ok && v.state == vmm.StateRunning) || d.starting[spec.ID] {
		d.mu.Unlock()
		return fail(vmm.ErrAlreadyRunning)
	}
	if err := d.failStart[spec.ID]; err != nil {
		d.mu.Unlock()
		return fail(err)
	}
	d.starting[spec.ID] = true
	d.mu.Unlock()

	v := &vm{spec: spec, state: vmm.StateRunning, waiters: make(map[*waiter]struct{}), incoming: true, tls: opts.TLS != nil}
	listeners.mu.Lock()
	if port == "0" {
		for {
			v.uri = "tcp:" + net.JoinHostPort(host, strconv.Itoa(listeners.next))
			listeners.next++
			if _, taken := listeners.m[v.uri]; !taken {
				break
			}
		}
	} else {
		v.uri = "tcp:" + net.JoinHostPort(host, port)
	}
	_, taken := listeners.m[v.uri]
	if !taken {
		listeners.m[v.uri] = listener{d: d, v: v}
	}
	listeners.mu.Unlock()

	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.starting, spec.ID)
	if taken {
		return fail(fmt.Errorf("listen on %s: address already in use", listen))
	}
	d.runs[spec.ID]++
	now := d.clock.Now()
	v.startedAt = now
	v.handle = vmm.Handle{
		ID:        spec.ID,
		Driver:    DriverName,
		StartedAt: now,
		Data: map[string]string{
			DataHost:     d.host,
			DataRun:      strconv.Itoa(d.runs[spec.ID]),
			DataIncoming: "true",
		},
	}
	d.vms[spec.ID] = v
	return copyHandle(v.handle), v.uri, nil
}

// Migrate completes at once: the target listening on uri (in any Driver of
// the process) receives VM id, which stays paused there until Resume, and
// the source is paused (Inspect reports it Paused) until Destroy or Resume.
// progress, if not nil, is called once. It fails, the source running on,
// if nobody listens on uri (as for a refused connection), if the target
// has already received a migration, ended or been destroyed, if ctx has
// ended, or with the error set by FailMigrate (and then the target ends,
// as QEMU's does). MigrationResult.Transferred is the VM's memory size;
// the times are zero.
func (d *Driver) Migrate(ctx context.Context, id, uri string, opts vmm.MigrateOptions, progress func(vmm.MigrationProgress)) (vmm.MigrationResult, error) {
	fail := func(err error) (vmm.MigrationResult, error) {
		return vmm.MigrationResult{}, fmt.Errorf("migrate vm %s: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	d.mu.Lock()
	v, ok := d.vms[id]
	var err error
	switch {
	case !ok || v.state != vmm.StateRunning:
		err = vmm.ErrNotFound
	case v.migrating:
		err = errors.New("another migration of it is under way")
	case v.paused():
		err = errors.New("it is paused for a migration")
	default:
		v.migrating = true
	}
	failWith := d.failMigrate[id]
	d.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	defer func() {
		d.mu.Lock()
		v.migrating = false
		d.mu.Unlock()
	}()

	// The target accepts one connection.
	listeners.mu.Lock()
	l, ok := listeners.m[uri]
	delete(listeners.m, uri)
	listeners.mu.Unlock()
	if !ok {
		return fail(fmt.Errorf("migration failed: connect to %s: connection refused", uri))
	}
	l.d.mu.Lock()
	switch {
	case l.v.state != vmm.StateRunning || !l.v.incoming || l.v.received:
		err = fmt.Errorf("migration failed: the target at %s is gone", uri)
	case l.v.tls != (opts.TLS != nil):
		err = fmt.Errorf("migration failed: the target at %s and the source disagree on TLS", uri)
	case failWith != nil:
		err = fmt.Errorf("migration failed: %w", failWith)
		l.d.endLocked(l.v, vmm.StateCrashed, fmt.Errorf("%w: vm %s: %w", vmm.ErrIncomingFailed, l.v.spec.ID, ErrCrashed))
	default:
		l.v.received = true
		l.v.uri = ""
	}
	l.d.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	mem := int64(v.spec.MemoryMB) << 20
	if progress != nil {
		progress(vmm.MigrationProgress{Status: "active", Total: mem, Transferred: mem})
	}
	d.mu.Lock()
	if v.state == vmm.StateRunning {
		v.migrated = true
	}
	d.mu.Unlock()
	return vmm.MigrationResult{Transferred: mem}, nil
}

// Resume lets a paused VM run: a target that has received its migration,
// or a migrated source (a rollback). Resuming a running VM that is not
// paused returns nil. Unlike the qemu driver, which waits, it fails at once
// for a target whose migration has not completed.
func (d *Driver) Resume(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("resume vm %s: %w", id, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	switch {
	case !ok || v.state != vmm.StateRunning:
		return fmt.Errorf("resume vm %s: %w", id, vmm.ErrNotFound)
	case v.migrating:
		return fmt.Errorf("resume vm %s: a migration of it is under way", id)
	case v.incoming && !v.received:
		return fmt.Errorf("resume vm %s: its incoming migration has not completed", id)
	}
	v.incoming, v.received, v.migrated = false, false, false
	return nil
}
