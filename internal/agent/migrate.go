package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/disk/repl"
	"github.com/ferrycluster/ferry/internal/netid"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// Migrations, as this host's agent takes part in them. The control plane
// records a migration on the instance (Status.Migration) and both hosts see
// it in their assignments:
//
//   - live, on the target: start a QEMU that waits for the memory stream,
//     its disk served through a closed gate, and report "ready" with its
//     address;
//   - live, on the source: send the memory; once QEMU says it completed
//     (the guest is paused, every write it made is on both disks), close
//     the disk cleanly and report "transferred": the server swaps the
//     disk's roles in the same transaction;
//   - cold, on the source: shut the guest down, close the disk, report
//     "stopped" (the same switch);
//   - after the switch, on the target: open the disk as primary (the gate
//     opens), resume the guest, announce it, report "resumed" (live); or
//     boot it as any primary does (cold).
//
// Anything that goes wrong before the switch leaves the guest on the
// source: a cancelled or failed transfer resumes it there.

// errMigrationGone is a migration report the server refused (409): the
// migration was cancelled or ended meanwhile.
var errMigrationGone = errors.New("the migration is no longer in flight")

// Phases this worker finished for a migration (w.migDone).
const (
	migDoneCopied      = "copied"
	migDoneReady       = "ready"
	migDoneSent        = "sent"
	migDoneResumed     = "resumed"
	migDoneFailed      = "failed"
	incomingListenPort = "0"
)

// setMigCancel records how to stop this worker's current transfer when the
// migration disappears from its assignment.
func (w *worker) setMigCancel(op string, cancel context.CancelFunc) {
	w.a.mu.Lock()
	defer w.a.mu.Unlock()
	w.migCancelOp, w.migCancel = op, cancel
}

// cancelStaleMigrationLocked stops a transfer whose migration is no longer
// on the instance (cancelled, failed, or superseded). a.mu must be held.
func (w *worker) cancelStaleMigrationLocked(inst *api.Instance) {
	if w.migCancel == nil {
		return
	}
	if m := inst.Status.Migration; m == nil || m.Operation != w.migCancelOp {
		w.migCancel()
		w.migCancel, w.migCancelOp = nil, ""
	}
}

// reconcileMigration does this host's part of the instance's migration, if
// any. It reports whether it handled the pass (the caller does nothing
// more this time).
func (w *worker) reconcileMigration(ctx context.Context, gen uint64, inst *api.Instance, nw *api.Network, im *api.Image, role string, peer *api.Peer) (time.Duration, bool) {
	m := inst.Status.Migration
	me := w.a.name
	if m == nil || m.Operation != w.migOp {
		w.migOp, w.migDone = "", ""
		if m != nil {
			w.migOp = m.Operation
		}
	}
	if d := w.a.disk(w.name); d != nil {
		if c := d.copyState(); c != nil && (m == nil || m.Operation != c.op || m.Source != me) {
			// The migration that wanted the copy ended before the
			// switch: the disk goes on without it.
			if err := d.dropCopy(); err != nil {
				w.log.Warn("stopping the disk copy", "err", err)
			}
		}
	}
	switch {
	case m == nil:
		if w.incoming != nil {
			// The migration was cancelled or failed before the switch
			// (or its source died and this host took the instance
			// over): the waiting VM never got the guest; it goes, and
			// a primary boots the instance afresh.
			w.log.Info("migration ended before the switch; removing the incoming vm")
			if err := w.destroy(ctx); err != nil {
				return w.failed("remove incoming vm", err), true
			}
			w.dropIncomingServer()
		}
		return 0, false
	case m.Source == me && role == api.RolePrimary && m.Copy && m.Phase == api.MigCopy:
		if w.migDone == migDoneCopied || w.migDone == migDoneFailed {
			return 0, false // the guest runs on here meanwhile
		}
		return w.copyOut(ctx, gen, inst, m), false
	case m.Target == me && m.Mode == api.MigrateLive && (m.Phase == api.MigPrepare || m.Phase == api.MigReady):
		return w.prepareIncoming(ctx, gen, inst, nw, im, peer, m), true
	case m.Target == me && m.Mode == api.MigrateLive && m.Phase == api.MigSwitched && role == api.RolePrimary && w.migDone != migDoneResumed:
		return w.resumeIncoming(ctx, gen, inst, peer, m)
	case m.Source == me && role == api.RolePrimary && m.Mode == api.MigrateLive && m.Phase == api.MigReady && (w.migDone == "" || w.migDone == migDoneCopied):
		return w.migrateOut(ctx, gen, inst, peer, m), true
	case m.Source == me && role == api.RolePrimary && m.Mode == api.MigrateCold && m.Phase == api.MigStopping && (w.migDone == "" || w.migDone == migDoneCopied):
		return w.stopForMigration(ctx, gen, inst, peer, m), true
	case m.Source == me && role == api.RolePrimary && w.migDone == migDoneSent:
		return 0, true // paused for good; the switch makes this host the replica
	}
	return 0, false
}

// prepareIncoming starts, on the target, the VM that waits for the memory
// stream, and reports where it listens.
func (w *worker) prepareIncoming(ctx context.Context, gen uint64, inst *api.Instance, nw *api.Network, im *api.Image, peer *api.Peer, m *api.MigrationStatus) time.Duration {
	if w.migDone == migDoneReady || w.migDone == migDoneFailed {
		return 0
	}
	fail := func(err error) time.Duration {
		return w.migrationFailed(ctx, gen, m, "cannot take the incoming migration", err)
	}
	mig, ok := w.a.driver.(vmm.Migrator)
	if !ok {
		return fail(fmt.Errorf("the %s driver cannot take live migrations", w.a.driver.Name()))
	}
	if w.incoming == nil && !w.running {
		if replicated(inst) && w.a.realVMs() {
			// The replica must go on taking writes during the transfer.
			if err := w.ensureSecondary(inst, peer); err != nil {
				return fail(err)
			}
		}
		spec, uri, err := w.startIncoming(ctx, mig, inst, nw, im)
		if err != nil {
			return fail(err)
		}
		w.log.Info("waiting for the live migration", "uri", uri, "cpus", spec.CPUs, "memoryMB", spec.MemoryMB)
		w.incomingURI = uri
	}
	r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportReady, URI: w.incomingURI}
	if err := w.reportMigration(ctx, gen, r); err != nil {
		if errors.Is(err, errMigrationGone) {
			return 0
		}
		return w.failed("report migration", err)
	}
	w.migDone = migDoneReady
	return 0
}

// startIncoming starts the waiting VM: the source's spec, its disk served
// through a closed gate (or, on shared storage, the shared file).
func (w *worker) startIncoming(ctx context.Context, mig vmm.Migrator, inst *api.Instance, nw *api.Network, _ *api.Image) (vmm.Spec, string, error) {
	a := w.a
	spec := vmm.Spec{ID: w.name, CPUs: inst.Spec.CPUs, MemoryMB: int(inst.Spec.Memory >> 20), StateDir: a.vmDir(w.name)}
	if err := os.MkdirAll(spec.StateDir, stateDirMod); err != nil {
		return spec, "", err
	}
	host, _, err := net.SplitHostPort(a.heartbeat.Address)
	if err != nil || host == "" {
		return spec, "", fmt.Errorf("this host has no cluster address to receive the migration on (%q)", a.heartbeat.Address)
	}
	if a.realVMs() {
		disk := a.diskPath(inst)
		st, err := os.Stat(disk)
		if err != nil {
			return spec, "", fmt.Errorf("disk of %s: %w", w.name, err)
		}
		if replicated(inst) {
			g := newGate(st.Size())
			if f, err := os.Open(disk); err == nil {
				g.early = f
				w.incomingEarly = f
			}
			srv, err := startGatedServer(a.runCtx, filepath.Join(spec.StateDir, diskSockName), g, w.name, w.log.With("disk", "incoming"))
			if err != nil {
				w.closeIncomingEarly()
				return spec, "", fmt.Errorf("disk of %s: nbd socket: %w", w.name, err)
			}
			w.incoming = srv
			spec.DiskNBD = srv.sock
		} else {
			spec.DiskPath = disk
		}
		// The same kernel and option ROMs as the source: QEMU checks the
		// memory regions match.
		if err := w.bootAndNIC(ctx, inst, nw, disk, &spec); err != nil {
			w.dropIncomingServer()
			return spec, "", err
		}
	}
	tls, err := a.migrationTLS("")
	if err != nil {
		w.dropIncomingServer()
		return spec, "", err
	}
	h, uri, err := mig.StartIncoming(ctx, spec, vmm.IncomingOptions{Listen: net.JoinHostPort(host, incomingListenPort), TLS: tls})
	if err != nil {
		w.dropIncomingServer()
		return spec, "", fmt.Errorf("start incoming vm: %w", err)
	}
	if err := a.saveHandle(h); err != nil {
		w.log.Error("persisting vm handle", "err", err)
	}
	w.setRunning(true)
	if err := w.watch(ctx); err != nil {
		w.setRunning(false)
		w.dropIncomingServer()
		return spec, "", fmt.Errorf("incoming vm exited as it started: %w", err)
	}
	if w.incoming == nil {
		// Shared storage: no gate, but the worker still knows it waits.
		w.incoming = &gatedServer{gate: newGate(0), cancel: func() {}}
	}
	return spec, uri, nil
}

func (w *worker) dropIncomingServer() {
	if w.incoming != nil {
		w.incoming.close()
		w.incoming = nil
	}
	w.closeIncomingEarly()
}

func (w *worker) closeIncomingEarly() {
	if w.incomingEarly != nil {
		w.incomingEarly.Close()
		w.incomingEarly = nil
	}
}

// resumeIncoming runs the migrated guest on this host, now the disk's
// primary.
func (w *worker) resumeIncoming(ctx context.Context, gen uint64, inst *api.Instance, peer *api.Peer, m *api.MigrationStatus) (time.Duration, bool) {
	mig, ok := w.a.driver.(vmm.Migrator)
	if !ok || !w.running {
		// The waiting VM is gone (this agent restarted, say): boot the
		// instance as any primary does, and say so.
		w.log.Warn("the migrated vm is gone; booting the instance instead")
		w.migDone = migDoneResumed
		w.dropIncomingServer()
		r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportResumed, Message: "the incoming vm was lost; booted instead"}
		if err := w.reportMigration(ctx, gen, r); err != nil && !errors.Is(err, errMigrationGone) {
			w.migDone = ""
			return w.failed("report migration", err), true
		}
		return 0, false
	}
	if replicated(inst) && w.a.realVMs() {
		if _, err := w.ensurePrimary(inst, peer); err != nil {
			return w.failed("open disk as primary", err), true
		}
	} else {
		w.dropIncomingServer()
	}
	if err := mig.Resume(ctx, w.name); err != nil {
		w.migDone = migDoneResumed
		r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportFailed, Error: "resume: " + err.Error()}
		if rerr := w.reportMigration(ctx, gen, r); rerr != nil && !errors.Is(rerr, errMigrationGone) {
			w.migDone = ""
		}
		return w.failed("resume migrated vm", err), true
	}
	if an, ok := w.a.driver.(vmm.Announcer); ok {
		if err := an.Announce(ctx, w.name); err != nil {
			w.log.Warn("announce-self failed", "err", err)
		}
	}
	w.startedAt = time.Now()
	w.startProbe(inst)
	w.log.Info("migrated vm running here")
	w.migDone = migDoneResumed
	r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportResumed}
	if err := w.reportMigration(ctx, gen, r); err != nil && !errors.Is(err, errMigrationGone) {
		w.migDone = ""
		return w.failed("report migration", err), true
	}
	return 0, false // let the normal pass report Running
}

// migrateOut sends the running guest to the target and, once it is there,
// hands the disk over.
func (w *worker) migrateOut(ctx context.Context, gen uint64, inst *api.Instance, peer *api.Peer, m *api.MigrationStatus) time.Duration {
	fail := func(err error) time.Duration {
		return w.migrationFailed(ctx, gen, m, "live migration failed; the vm runs on here", err)
	}
	mig, ok := w.a.driver.(vmm.Migrator)
	if !ok {
		return fail(fmt.Errorf("the %s driver cannot live-migrate", w.a.driver.Name()))
	}
	if !w.running {
		return fail(errors.New("the vm is not running here"))
	}
	d := w.a.disk(w.name)
	if err := diskCanSwitch(d, inst, m); err != nil {
		return fail(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.setMigCancel(m.Operation, cancel)
	defer w.setMigCancel("", nil)
	tls, err := w.a.migrationTLS(m.Target)
	if err != nil {
		return fail(err)
	}
	opts := vmm.MigrateOptions{
		TLS:             tls,
		DowntimeLimit:   time.Duration(m.DowntimeLimitMS) * time.Millisecond,
		ConvergeTimeout: time.Duration(m.ConvergeSeconds) * time.Second,
		MaxBandwidth:    m.MaxBandwidth,
	}
	progress := newProgressReporter(w, gen, m.Operation)
	defer progress.stop()
	w.log.Info("live migration starting", "to", m.Target, "uri", m.URI)
	res, err := mig.Migrate(mctx, w.name, m.URI, opts, progress.update)
	switch {
	case errors.Is(err, vmm.ErrNotConverged):
		return fail(fmt.Errorf("did not converge within %ds (the guest dirties memory faster than it can be sent)", m.ConvergeSeconds))
	case err != nil && mctx.Err() != nil && ctx.Err() == nil:
		w.log.Info("live migration cancelled; the vm runs on here")
		w.migDone = migDoneFailed
		return 0
	case err != nil:
		return fail(err)
	}
	// The guest is paused here for good and every write it made is on
	// both disks: hand the disk over.
	progress.stop()
	w.stopProbe()
	// Frames for the guest go on reaching this host's tap until the
	// target announces it; taking the tap down makes the bridges forget
	// this port and flood them, so they reach the target at once.
	tap := netid.TapName(w.name)
	if err := netid.SetTapUp(tap, false); err != nil {
		w.log.Warn("taking the migrated vm's tap down", "err", err)
	}
	rollback := func(why error) time.Duration {
		w.log.Warn("switch refused; resuming the vm here", "err", why)
		if err := netid.SetTapUp(tap, true); err != nil {
			w.log.Warn("bringing the vm's tap back up", "err", err)
		}
		if replicated(inst) && w.a.realVMs() {
			if _, err := w.ensurePrimary(inst, peer); err != nil {
				return w.failed("reopen disk", err)
			}
		}
		if err := mig.Resume(ctx, w.name); err != nil {
			return w.failed("resume vm", err)
		}
		w.startProbe(inst)
		w.migDone = migDoneFailed
		return 0
	}
	if d != nil && d.prim != nil {
		if err := diskCanSwitch(d, inst, m); err != nil {
			return rollback(fmt.Errorf("during the transfer: %w", err))
		}
		if err := w.a.closeDisk(w.name, "", false); err != nil {
			return rollback(fmt.Errorf("close disk: %w", err))
		}
	}
	w.log.Info("live migration transferred", "downtime", res.Downtime, "total", res.TotalTime, "bytes", res.Transferred)
	r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportTransferred, DowntimeMS: res.Downtime.Milliseconds(),
		RAMTransferred: res.Transferred, Message: fmt.Sprintf("sent %d MiB in %s", res.Transferred>>20, res.TotalTime.Round(time.Millisecond))}
	if err := w.reportMigration(ctx, gen, r); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		return rollback(err)
	}
	w.migDone = migDoneSent
	return 0
}

// stopForMigration shuts the guest down for a cold migration and hands the
// disk over.
func (w *worker) stopForMigration(ctx context.Context, gen uint64, inst *api.Instance, _ *api.Peer, m *api.MigrationStatus) time.Duration {
	fail := func(err error) time.Duration {
		return w.migrationFailed(ctx, gen, m, "cold migration failed here", err)
	}
	if w.running {
		w.log.Info("shutting the guest down for a cold migration", "to", m.Target)
		w.unwatch()
		w.stopProbe()
		if err := w.a.driver.Stop(ctx, w.name, w.a.tune.stopTimeout); err != nil {
			if werr := w.watch(ctx); werr != nil {
				w.setRunning(false)
			}
			return fail(fmt.Errorf("stop vm: %w", err))
		}
		w.setRunning(false)
	}
	if d := w.a.disk(w.name); d != nil && d.prim != nil {
		if err := diskCanSwitch(d, inst, m); err != nil {
			return fail(err)
		}
		if err := w.a.closeDisk(w.name, "", false); err != nil {
			return fail(fmt.Errorf("close disk: %w", err))
		}
	}
	r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportStopped}
	if err := w.reportMigration(ctx, gen, r); err != nil {
		if errors.Is(err, errMigrationGone) {
			w.migDone = migDoneFailed // cancelled: the normal pass boots it here again
			return 0
		}
		return w.failed("report migration", err)
	}
	w.migDone = migDoneSent
	return 0
}

// migrationFailed logs why this host's part of migration m failed (what
// says which part) and reports it, once: until the report is taken, the
// worker retries it (migDone stays empty); a migration already gone needs
// none.
func (w *worker) migrationFailed(ctx context.Context, gen uint64, m *api.MigrationStatus, what string, err error) time.Duration {
	w.migDone = migDoneFailed
	w.log.Warn(what, "err", err)
	r := api.MigrationReport{Operation: m.Operation, Phase: api.MigReportFailed, Error: err.Error()}
	if rerr := w.reportMigration(ctx, gen, r); rerr != nil && !errors.Is(rerr, errMigrationGone) {
		w.migDone = ""
		return w.failed("report migration", rerr)
	}
	return 0
}

// diskCanSwitch says why the disk d cannot change hands now, or nil: the
// replica must be up to date, and on a move to a host that held no copy,
// that copy too.
func diskCanSwitch(d *replDisk, inst *api.Instance, m *api.MigrationStatus) error {
	if d == nil || d.prim == nil {
		return nil // not replicated by this agent (shared storage, fake VMs)
	}
	if st := d.prim.Status(); st.State != repl.StateUpToDate {
		return fmt.Errorf("the replica on %s is not up to date (%s): the disk cannot change hands", orNone(inst.Status.ReplicaNode), st.State)
	}
	if m.Copy {
		if err := d.copyReady(); err != nil {
			return fmt.Errorf("the disk cannot change hands: %w", err)
		}
	}
	return nil
}

// reportMigration sends r, retrying network errors and 5xx answers until
// it goes through, ctx ends or a newer assignment supersedes it. A 409
// returns errMigrationGone.
func (w *worker) reportMigration(ctx context.Context, gen uint64, r api.MigrationReport) error {
	u := w.a.serverURL + "/v1/agent/instances/" + url.PathEscape(w.name) + "/migration"
	backoff := w.a.tune.retryMin
	for {
		rctx, cancel := context.WithTimeout(ctx, w.a.tune.reportTimeout)
		err := doJSON(rctx, w.a.client, http.MethodPut, u, r, nil)
		cancel()
		switch status := statusOf(err); {
		case err == nil:
			return nil
		case status == http.StatusConflict || status == http.StatusNotFound:
			return fmt.Errorf("report migration %s: %w: %w", r.Phase, errMigrationGone, err)
		case isPermanent(err):
			return fmt.Errorf("report migration %s: %w", r.Phase, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.Phase != api.MigReportTransferred && w.superseded(gen) {
			return errSuperseded
		}
		w.log.Warn("migration report failed; retrying", "phase", r.Phase, "err", err, "in", backoff)
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
		backoff = nextBackoff(backoff, w.a.tune.retryMax)
	}
}

// progressReporter sends a live transfer's progress to the server at most
// once a second, off the migration's own goroutine.
type progressReporter struct {
	w    *worker
	gen  uint64
	op   string
	last time.Time
	ch   chan vmm.MigrationProgress
	done chan struct{}
}

func newProgressReporter(w *worker, gen uint64, op string) *progressReporter {
	p := &progressReporter{w: w, gen: gen, op: op, ch: make(chan vmm.MigrationProgress, 1), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progressReporter) update(pr vmm.MigrationProgress) {
	if time.Since(p.last) < time.Second {
		return
	}
	p.last = time.Now()
	select {
	case p.ch <- pr:
	default:
	}
}

func (p *progressReporter) loop() {
	for {
		select {
		case <-p.done:
			return
		case pr := <-p.ch:
			r := api.MigrationReport{Operation: p.op, Phase: api.MigReportTransferring,
				RAMTotal: pr.Total, RAMTransferred: pr.Transferred, RAMRemaining: pr.Remaining}
			ctx, cancel := context.WithTimeout(p.w.a.runCtx, p.w.a.tune.reportTimeout)
			u := p.w.a.serverURL + "/v1/agent/instances/" + url.PathEscape(p.w.name) + "/migration"
			if err := doJSON(ctx, p.w.a.client, http.MethodPut, u, r, nil); err != nil {
				p.w.log.Debug("migration progress report failed", "err", err)
			}
			cancel()
		}
	}
}

func (p *progressReporter) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
