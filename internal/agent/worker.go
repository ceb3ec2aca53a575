package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/image"
	"github.com/ferrycluster/ferry/internal/vmm"
)

var (
	// errNotOurs means the server answered a report with 409 (or 404): the
	// instance is not assigned to this node any more.
	errNotOurs = errors.New("instance is not assigned to this node")
	// errSuperseded ends a report's retries when a newer assignment came.
	errSuperseded = errors.New("superseded by a newer assignment")
)

// worker reconciles one instance. Each instance has its own goroutine, so a
// slow driver call for one never delays another. The stream hands it the
// latest assignment and pokes it; the worker acts on whatever is latest.
type worker struct {
	a    *Agent
	name string
	log  *slog.Logger
	// wake is poked (without blocking) when the assignment changed.
	wake chan struct{}

	// Guarded by a.mu.
	desired *api.Instance // nil: not known yet, or released
	network *api.Network  // the instance's network, if it has a NIC
	image   *api.Image    // the instance's image record
	role    string        // api.RolePrimary or api.RoleSecondary
	peer    *api.Peer     // the other host of a replicated disk
	gone    bool          // released because the instance was deleted
	// dropDisk: released after a disk move (Copy) that left this host's
	// copy of no use: it is removed, as if gone.
	dropDisk bool
	// serving is the prober's latest verdict not yet reported (nil: none).
	serving   *bool
	servingAt time.Time
	session   uint64 // the stream session desired came from
	released  bool   // not ours: destroy locally, report nothing
	why       string // why it was released, for the log
	gen       uint64 // counts changes of desired and released

	// Owned by the worker goroutine (set before it starts).
	running   bool
	exitCh    <-chan vmm.ExitResult // nil unless watching the VM
	stopWatch context.CancelFunc
	startedAt time.Time
	backoff   time.Duration
	notBefore time.Time // no start attempt before then
	// exitReport is an unexpected exit not reported yet.
	exitReport *api.InstanceReport
	// sent is the last report the server accepted.
	sent *api.InstanceReport
	// fenced is set when the server answered 409: the worker does nothing
	// until it is released, or assigned by a stream session newer than
	// fencedSession. Later puts of the same session may predate the 409
	// (echoes of earlier reports); a real reassignment comes after a
	// "delete" (which ends this worker) or in a new session's snapshot.
	fenced        bool
	fencedSession uint64
	// holdRestart keeps a VM that stopped by itself down, as its restart
	// policy says, until the desired state changes.
	holdRestart bool
	// bootPending is set from a VM start until a report of it is accepted.
	bootPending bool
	// bootWarm is set once the replica's boot files were pre-extracted;
	// not before bootWarmAt.
	bootWarm   bool
	bootWarmAt time.Time
	// stopProbing ends the health prober of the running VM.
	stopProbing context.CancelFunc
	// incoming, on a live migration's target, serves the disk of the VM
	// waiting for the memory stream, through a gate that opens when this
	// host becomes the disk's primary (ensurePrimary takes it over).
	incoming *gatedServer
	// incomingEarly is the replica file the incoming gate reads from
	// until it opens.
	incomingEarly *os.File
	// migOp is the migration this worker last acted on, and migDone how
	// far it got; incomingURI is where its incoming VM listens.
	migOp, migDone, incomingURI string
	// migCancel stops the transfer of migration migCancelOp (guarded by
	// a.mu: assign calls it when the migration is gone).
	migCancelOp string
	migCancel   context.CancelFunc
}

// bootRewarmDelay is how long a host that gave its guest away waits before
// it prepares the boot files again as the replica.
const bootRewarmDelay = 20 * time.Second

// workerLocked returns the worker of name, creating and starting it (after
// calling init on it) if there is none. a.mu must be held and Run must have
// set a.runCtx.
func (a *Agent) workerLocked(name string, init func(*worker)) *worker {
	if w, ok := a.workers[name]; ok {
		return w
	}
	w := &worker{a: a, name: name, log: a.log.With("vm", name), wake: make(chan struct{}, 1)}
	if init != nil {
		init(w)
	}
	a.workers[name] = w
	a.wg.Add(1)
	go w.run(a.runCtx)
	return w
}

// assign hands an assignment, received in stream session session, to the
// instance's worker.
func (a *Agent) assign(ev api.AssignmentEvent, session uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	inst := ev.Instance
	w := a.workerLocked(inst.Name, nil)
	w.desired, w.session, w.released, w.why, w.gone, w.dropDisk = inst, session, false, "", false, false
	w.network, w.image, w.role, w.peer = ev.Network, ev.Image, ev.Role, ev.Peer
	w.cancelStaleMigrationLocked(inst)
	if w.role == "" {
		w.role = api.RolePrimary // a server that predates roles
	}
	if inst.Spec.State == api.DesiredStopped || inst.Status.Deleting {
		w.holdRestart = false // a later start is a new decision
	}
	w.gen++
	w.poke()
}

// release tells the instance's worker that the instance is not this node's:
// it destroys the VM without reporting, then ends. gone says the instance
// was deleted, so its disk goes too; otherwise the disk stays (it may be
// the copy that matters).
func (a *Agent) release(name, why string, gone bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.workerLocked(name, nil)
	// A host that took part in a move to a host without a replica holds
	// no copy anyone needs once it is released: the source's was replaced
	// by the target's at the switch, and a target's is unfinished (the
	// migration ended before the switch).
	w.dropDisk = false
	if in := w.desired; in != nil && !gone {
		if m := in.Status.Migration; m != nil && m.Copy && (m.Source == a.name || m.Target == a.name) {
			w.dropDisk = true
		}
	}
	w.desired, w.released, w.why, w.gone = nil, true, why, gone
	w.gen++
	w.poke()
}

// adopt creates the worker of a VM found at start: running if the driver
// recovered it. The worker waits for its assignment.
func (a *Agent) adopt(name string, running bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.workerLocked(name, func(w *worker) {
		if !running {
			return
		}
		w.setRunning(true)
		if err := w.watch(a.runCtx); err != nil {
			w.log.Warn("recovered vm cannot be watched", "err", err)
			w.setRunning(false)
		}
	})
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// superseded reports whether the assignment changed since generation gen.
func (w *worker) superseded(gen uint64) bool {
	w.a.mu.Lock()
	defer w.a.mu.Unlock()
	return w.gen != gen
}

// run is the worker's loop: it reconciles when poked, when a retry is due
// and when the VM exits, until ctx ends or the instance was released and
// its VM destroyed.
func (w *worker) run(ctx context.Context) {
	defer w.a.wg.Done()
	defer w.unwatch()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var retryC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-retryC:
			retryC = nil
		case res, ok := <-w.exitCh:
			w.exited(res, ok)
		}
		wait, done := w.reconcile(ctx)
		if done || ctx.Err() != nil {
			return
		}
		if wait > 0 {
			retry.Reset(wait)
			retryC = retry.C
		} else {
			retry.Stop()
			retryC = nil
		}
	}
}

// reconcile makes the VM match the latest assignment. It returns how long
// to wait before trying again (0: until something happens) and whether the
// worker is finished.
func (w *worker) reconcile(ctx context.Context) (wait time.Duration, done bool) {
	w.a.mu.Lock()
	inst, session, released, why, gen := w.desired, w.session, w.released, w.why, w.gen
	nw, im, role, peer, gone := w.network, w.image, w.role, w.peer, w.gone || w.dropDisk
	w.a.mu.Unlock()

	if released {
		return w.reconcileReleased(ctx, gen, why, gone)
	}
	if inst == nil {
		return 0, false // a recovered VM waiting for its assignment
	}
	if w.a.fenceBlocks(session) {
		return 0, false // fenced, or the assignment predates the fence
	}
	if !inst.Status.Deleting {
		migWait, handled := w.reconcileMigration(ctx, gen, inst, nw, im, role, peer)
		if handled {
			return migWait, false
		}
		if migWait > 0 {
			// A migration step that runs beside the normal pass (a
			// disk copy) wants another look by then.
			defer func() {
				if !done && (wait == 0 || migWait < wait) {
					wait = migWait
				}
			}()
		}
	}
	if role == api.RoleSecondary {
		return w.reconcileSecondary(ctx, inst, peer)
	}
	if w.a.realVMs() && replicated(inst) && !inst.Status.Deleting {
		// Serve the disk as soon as it exists: a VM recovered after an
		// agent restart is waiting (NBD reconnect) for it.
		if _, err := os.Stat(w.a.diskPath(inst)); err == nil {
			if _, err := w.ensurePrimary(inst, peer); err != nil {
				return w.failed("serve disk", err), false
			}
		}
	}
	if w.fenced {
		if session <= w.fencedSession {
			return 0, false
		}
		w.log.Info("instance assigned again; acting on it")
		w.fenced, w.sent = false, nil
	}
	if r := w.exitReport; r != nil && !inst.Status.Deleting {
		w.exitReport = nil
		if err := w.report(ctx, gen, inst, *r); err != nil {
			if !errors.Is(err, errNotOurs) {
				w.exitReport = r
			}
			return w.reportFailed(err)
		}
	}
	switch {
	case inst.Status.Deleting:
		return w.reconcileDeleting(ctx, gen, inst)
	case inst.Spec.State == api.DesiredStopped:
		return w.reconcileStopped(ctx, gen, inst)
	default:
		wait, done := w.reconcileRunning(ctx, gen, inst, nw, im, peer)
		if w.running && !done {
			w.reportServing(ctx, gen, inst)
		}
		return wait, done
	}
}

// reportServing sends the prober's latest verdict, if it has not been sent.
func (w *worker) reportServing(ctx context.Context, gen uint64, inst *api.Instance) {
	w.a.mu.Lock()
	serving, at := w.serving, w.servingAt
	w.a.mu.Unlock()
	if serving == nil {
		return
	}
	r := api.InstanceReport{Phase: api.PhaseRunning, Serving: serving, ServingAt: at}
	if err := w.report(ctx, gen, inst, r); err != nil {
		w.reportFailed(err)
		return
	}
	w.a.mu.Lock()
	if w.serving == serving {
		w.serving = nil
	}
	w.a.mu.Unlock()
}

// reconcileReleased destroys the VM of an instance that is not ours; the
// worker ends unless a new assignment came meanwhile.
func (w *worker) reconcileReleased(ctx context.Context, gen uint64, why string, gone bool) (time.Duration, bool) {
	err := w.destroy(ctx)
	if err == nil {
		err = w.unprepare(nil, false)
	}
	if err == nil {
		local := ""
		if gone {
			local = w.a.localDiskPath(w.name)
		}
		err = w.a.closeDisk(w.name, local, gone)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		return w.failed("destroy vm", err), false
	}
	w.log.Info("vm destroyed", "reason", why)
	w.a.mu.Lock()
	defer w.a.mu.Unlock()
	if w.released && w.gen == gen {
		delete(w.a.workers, w.name)
		return 0, true
	}
	return 0, false
}

// reconcileDeleting destroys the VM of an instance being deleted and tells
// the server it is gone.
func (w *worker) reconcileDeleting(ctx context.Context, gen uint64, inst *api.Instance) (time.Duration, bool) {
	err := w.destroy(ctx)
	if err == nil {
		err = w.a.closeDisk(w.name, w.a.diskPath(inst), true)
	}
	if err == nil {
		err = w.unprepare(inst, true)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		d := w.failed("destroy vm", err)
		if rerr := w.report(ctx, gen, inst, api.InstanceReport{Phase: api.PhaseDeleting, Error: err.Error()}); rerr != nil {
			w.reportFailed(rerr)
		}
		return d, false
	}
	if err := w.report(ctx, gen, inst, api.InstanceReport{Phase: api.PhaseDeleting, Destroyed: true}); err != nil {
		return w.reportFailed(err)
	}
	return 0, false
}

// reconcileSecondary makes this host hold the instance's replica. A replica
// host never runs the VM: one left running here (this host was the primary
// before) is destroyed first.
func (w *worker) reconcileSecondary(ctx context.Context, inst *api.Instance, peer *api.Peer) (time.Duration, bool) {
	if w.running && w.a.realVMs() && !inst.Status.Deleting {
		// Take the replica first: after a migration away from here the
		// new primary is dialling this host, and every guest write
		// there waits for the link. The VM left here cannot write: the
		// primary that served its disk is closed.
		if err := w.ensureSecondary(inst, peer); err != nil {
			return w.failed("hold replica", err), false
		}
	}
	if w.running {
		w.log.Warn("this host holds the replica now; destroying the vm it ran")
		if err := w.destroy(ctx); err != nil {
			return w.failed("destroy vm", err), false
		}
		if err := w.unprepare(nil, false); err != nil {
			return w.failed("destroy vm", err), false
		}
		// destroy removed the VM's directory with its unpacked
		// kernel: warm it again, or the next failover or cold migration
		// here unpacks it while the guest is down. Not at once: this
		// host just handed the guest over (a migration), and unpacking
		// takes a core for a second that the guest needs now.
		w.bootWarm = false
		w.bootWarmAt = time.Now().Add(bootRewarmDelay)
	}
	if !w.a.realVMs() || inst.Status.Deleting {
		return 0, false
	}
	if err := w.ensureSecondary(inst, peer); err != nil {
		return w.failed("hold replica", err), false
	}
	w.backoff = 0
	if wait := time.Until(w.bootWarmAt); !w.bootWarm && wait > 0 {
		return wait, false
	}
	if !inst.Status.ReplicaOutdated && !w.bootWarm {
		// Unpack the guest's kernel now, while nothing waits for it, so a
		// failover here skips that second (ExtractBoot keeps an unpacked
		// kernel whose source has not changed). The replica is being
		// written meanwhile, so this may read garbage: the boot after a
		// promotion extracts again and checks.
		w.bootWarm = true
		dir := filepath.Join(w.a.vmDir(w.name), "boot")
		if err := os.MkdirAll(dir, stateDirMod); err == nil {
			if _, _, err := image.PreExtractBoot(ctx, w.a.diskPath(inst), dir); err != nil {
				w.log.Debug("pre-extracting boot files on the replica", "err", err)
			}
		}
	}
	return 0, false
}

// reconcileStopped stops the VM of an instance that should not run.
func (w *worker) reconcileStopped(ctx context.Context, gen uint64, inst *api.Instance) (time.Duration, bool) {
	if !w.running {
		return w.ensure(ctx, gen, inst, api.PhaseStopped)
	}
	if err := w.report(ctx, gen, inst, api.InstanceReport{Phase: api.PhaseStopping}); err != nil {
		return w.reportFailed(err)
	}
	w.log.Info("stopping vm")
	if err := w.a.driver.Stop(ctx, w.name, w.a.tune.stopTimeout); err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		d := w.failed("stop vm", err)
		r := api.InstanceReport{Phase: api.PhaseStopping, Error: fmt.Sprintf("stop vm: %v", err)}
		if rerr := w.report(ctx, gen, inst, r); rerr != nil {
			w.reportFailed(rerr)
		}
		return d, false
	}
	// The exit this caused is expected: drop it.
	w.unwatch()
	w.stopProbe()
	w.setRunning(false)
	w.backoff, w.notBefore = 0, time.Time{}
	w.log.Info("vm stopped")
	if err := w.report(ctx, gen, inst, api.InstanceReport{Phase: api.PhaseStopped, Serving: new(bool), ServingAt: time.Now().UTC()}); err != nil {
		return w.reportFailed(err)
	}
	return 0, false
}

// reconcileRunning starts the VM of an instance that should run, no sooner
// than the backoff after a failed start or an exit allows.
func (w *worker) reconcileRunning(ctx context.Context, gen uint64, inst *api.Instance, nw *api.Network, im *api.Image, peer *api.Peer) (time.Duration, bool) {
	if w.running {
		return w.ensure(ctx, gen, inst, api.PhaseRunning)
	}
	if wait := time.Until(w.notBefore); wait > 0 {
		return wait, false
	}
	if err := w.report(ctx, gen, inst, api.InstanceReport{Phase: api.PhaseStarting}); err != nil {
		return w.reportFailed(err)
	}
	w.a.mu.Lock()
	held := w.holdRestart
	w.a.mu.Unlock()
	if held {
		return 0, false // the restart policy says no; wait for a new desired state
	}
	if err := w.start(ctx, inst, nw, im, peer); err != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		d := w.failed("start vm", err)
		r := api.InstanceReport{Phase: api.PhaseFailed, Message: fmt.Sprintf("start failed; retrying in %s", d), Error: err.Error()}
		if rerr := w.report(ctx, gen, inst, r); rerr != nil {
			w.reportFailed(rerr)
		}
		return d, false
	}
	// The boot is reported until a report carrying it is accepted: a
	// report superseded by a new assignment (a stream reconnect, say) must
	// not lose it.
	w.bootPending = true
	r := api.InstanceReport{Phase: api.PhaseRunning, Booted: true}
	if inst.Spec.IP == "" {
		serving := true // nothing to probe: serving means running
		r.Serving, r.ServingAt = &serving, w.startedAt.UTC()
	}
	if err := w.report(ctx, gen, inst, r); err != nil {
		return w.reportFailed(err)
	}
	w.bootPending = false
	return 0, false
}

// start boots the VM, persists its handle and watches it.
func (w *worker) start(ctx context.Context, inst *api.Instance, nw *api.Network, im *api.Image, peer *api.Peer) error {
	spec, err := w.prepare(ctx, inst, nw, im, peer)
	if err != nil {
		return err
	}
	w.log.Info("starting vm", "cpus", spec.CPUs, "memoryMB", spec.MemoryMB)
	h, err := w.a.driver.Start(ctx, spec)
	switch {
	case errors.Is(err, vmm.ErrAlreadyRunning):
		// Running though the agent did not know: adopt it.
		w.log.Warn("vm was already running; adopting it")
	case err != nil:
		return err
	default:
		if err := w.a.saveHandle(h); err != nil {
			// The VM runs, but a restarted agent will not find it.
			w.a.metrics.reconcileErrors.Inc()
			w.log.Error("persisting vm handle", "err", err)
		}
	}
	w.startedAt = time.Now()
	w.setRunning(true)
	if err := w.watch(ctx); err != nil {
		w.setRunning(false)
		return fmt.Errorf("vm exited as it started: %w", err)
	}
	if an, ok := w.a.driver.(vmm.Announcer); ok {
		// Tell the LAN where the instance's MAC is now, at once, rather
		// than when the guest first speaks.
		if err := an.Announce(ctx, w.name); err != nil {
			w.log.Warn("announce-self failed", "err", err)
		}
	}
	w.startProbe(inst)
	w.log.Info("vm running")
	return nil
}

// destroy kills the VM and forgets it: driver resources, handle and
// directory.
func (w *worker) destroy(ctx context.Context) error {
	w.unwatch()
	w.stopProbe()
	if err := w.a.driver.Destroy(ctx, w.name); err != nil {
		if w.running {
			if werr := w.watch(ctx); werr != nil {
				w.setRunning(false)
			}
		}
		return fmt.Errorf("destroy vm %s: %w", w.name, err)
	}
	w.setRunning(false)
	w.exitReport = nil
	w.backoff, w.notBefore = 0, time.Time{}
	if err := w.a.removeHandle(w.name); err != nil {
		return err
	}
	if err := os.RemoveAll(w.a.vmDir(w.name)); err != nil {
		return fmt.Errorf("destroy vm %s: %w", w.name, err)
	}
	return nil
}

// exited handles a VM's exit the agent did not cause: it is reported at
// the next reconcile and a running instance is started again after a
// backoff.
func (w *worker) exited(res vmm.ExitResult, ok bool) {
	w.exitCh = nil
	if w.stopWatch != nil {
		w.stopWatch()
		w.stopWatch = nil
	}
	if !ok {
		return // the agent is stopping
	}
	w.setRunning(false)
	if w.incoming != nil {
		// A VM waiting for a live migration ends by itself when the
		// migration fails; the migration's own report says why.
		w.log.Info("incoming vm exited", "err", res.Err)
		return
	}
	at := res.At
	if at.IsZero() {
		at = time.Now()
	}
	if w.startedAt.IsZero() || at.Sub(w.startedAt) >= w.a.tune.stableAfter {
		w.backoff = 0
	}
	w.stopProbe()
	d := w.nextDelay()
	r := api.InstanceReport{Phase: api.PhaseStopped, Message: "the guest shut down", Serving: new(bool), ServingAt: at}
	switch {
	case w.a.fenced.Load():
		r = api.InstanceReport{Phase: api.PhaseFailed, Message: "killed by self-fencing: the control plane stopped acknowledging this host's heartbeats", Error: "self-fenced", Serving: new(bool), ServingAt: at}
	case res.Err != nil:
		r = api.InstanceReport{Phase: api.PhaseFailed, Message: "the vm exited unexpectedly", Error: res.Err.Error(), Serving: new(bool), ServingAt: at}
	}
	w.a.mu.Lock()
	policy := api.RestartAlways
	if w.desired != nil && w.desired.Spec.RestartPolicy != "" {
		policy = w.desired.Spec.RestartPolicy
	}
	w.serving = nil
	w.a.mu.Unlock()
	hold := policy == api.RestartNever || (policy == api.RestartOnFailure && res.Err == nil)
	if hold {
		w.a.mu.Lock()
		w.holdRestart = true
		w.a.mu.Unlock()
		r.GuestStopped = true
		r.Message += "; not restarted (restart policy " + string(policy) + ")"
		w.log.Warn("vm exited; restart policy keeps it stopped", "err", res.Err, "policy", policy)
	} else {
		r.Message += fmt.Sprintf("; restarting in %s", d)
		w.log.Warn("vm exited", "err", res.Err, "restartAfter", d)
	}
	w.exitReport = &r
}

// ensure reports phase unless it is what the server last heard (or, before
// any report, already shows).
func (w *worker) ensure(ctx context.Context, gen uint64, inst *api.Instance, phase api.Phase) (time.Duration, bool) {
	if w.bootPending && phase == api.PhaseRunning {
		if err := w.report(ctx, gen, inst, api.InstanceReport{Phase: phase, Booted: true}); err != nil {
			return w.reportFailed(err)
		}
		w.bootPending = false
		return 0, false
	}
	if w.sent != nil && w.sent.Phase == phase {
		return 0, false
	}
	if w.sent == nil && inst.Status.Phase == phase && inst.Status.LastError == "" {
		return 0, false
	}
	if err := w.report(ctx, gen, inst, api.InstanceReport{Phase: phase}); err != nil {
		return w.reportFailed(err)
	}
	return 0, false
}

// report sends r unless it is the last report sent. It retries network
// errors and 5xx answers until it succeeds, ctx ends or a newer assignment
// supersedes it. A 409 (or 404) returns errNotOurs. Other 4xx answers are
// logged and dropped: retrying cannot change them.
func (w *worker) report(ctx context.Context, gen uint64, inst *api.Instance, r api.InstanceReport) error {
	if w.sent != nil && *w.sent == r {
		return nil
	}
	u := w.a.serverURL + "/v1/agent/instances/" + url.PathEscape(w.name) + "/status"
	backoff := w.a.tune.retryMin
	for {
		rctx, cancel := context.WithTimeout(ctx, w.a.tune.reportTimeout)
		err := doJSON(rctx, w.a.client, http.MethodPut, u, r, nil)
		cancel()
		if err == nil {
			w.sent = &r
			w.log.Debug("reported", "phase", r.Phase, "error", r.Error, "destroyed", r.Destroyed)
			return nil
		}
		switch status := statusOf(err); {
		case status == http.StatusConflict || status == http.StatusNotFound:
			return fmt.Errorf("report %s: %w: %w", r.Phase, errNotOurs, err)
		case isPermanent(err):
			w.log.Error("server rejected report", "phase", r.Phase, "err", err)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if w.superseded(gen) {
			return errSuperseded
		}
		w.log.Warn("report failed; retrying", "phase", r.Phase, "err", err, "in", backoff)
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
		backoff = nextBackoff(backoff, w.a.tune.retryMax)
		if w.superseded(gen) {
			return errSuperseded
		}
	}
}

// reportFailed handles a report that did not go through: on errNotOurs the
// worker stops acting on the instance until it is assigned again. Other
// errors (ctx, superseded) need no retry timer: the worker is woken anyway.
func (w *worker) reportFailed(err error) (time.Duration, bool) {
	if errors.Is(err, errNotOurs) {
		w.log.Warn("server says the instance is not assigned to this node; no longer acting on it", "err", err)
		w.fenced, w.fencedSession = true, w.a.session.Load()
		w.exitReport = nil
	}
	return 0, false
}

// failed records a failed driver action and returns the wait before the
// next attempt.
func (w *worker) failed(action string, err error) time.Duration {
	w.a.metrics.reconcileErrors.Inc()
	d := w.nextDelay()
	w.log.Warn(action+" failed", "err", err, "retryIn", d)
	return d
}

// nextDelay grows the backoff and sets the earliest next start.
func (w *worker) nextDelay() time.Duration {
	if w.backoff == 0 {
		w.backoff = w.a.tune.startBackoffMin
	} else {
		w.backoff = nextBackoff(w.backoff, w.a.tune.startBackoffMax)
	}
	w.notBefore = time.Now().Add(w.backoff)
	return w.backoff
}

// watch starts watching the VM for exits.
func (w *worker) watch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	ch, err := w.a.driver.Wait(wctx, w.name)
	if err != nil {
		cancel()
		return fmt.Errorf("watch vm %s: %w", w.name, err)
	}
	w.exitCh, w.stopWatch = ch, cancel
	return nil
}

// unwatch stops watching the VM; an exit already delivered is dropped.
func (w *worker) unwatch() {
	if w.stopWatch != nil {
		w.stopWatch()
	}
	w.exitCh, w.stopWatch = nil, nil
}

func (w *worker) setRunning(running bool) {
	if w.running == running {
		return
	}
	w.running = running
	if running {
		w.a.metrics.vms.Inc()
	} else {
		w.a.metrics.vms.Dec()
	}
}
