package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// errStreamIdle ends a stream that stayed silent longer than the server's
// ping period allows.
var errStreamIdle = errors.New("assignment stream silent for too long")

// errRestream ends a stream so that the next one sends a fresh snapshot.
var errRestream = errors.New("fresh assignment snapshot needed after a self-fence")

// streamLoop follows the assignment stream until ctx ends, reconnecting with
// capped exponential backoff.
func (a *Agent) streamLoop(ctx context.Context) {
	backoff := a.tune.retryMin
	for {
		synced, err := a.streamOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if synced {
			backoff = a.tune.retryMin
		}
		a.log.Warn("assignment stream ended; reconnecting", "err", err, "in", backoff)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = nextBackoff(backoff, a.tune.retryMax)
	}
}

// streamOnce reads one assignment stream until it breaks. It reports whether
// the stream got as far as "synced".
func (a *Agent) streamOnce(ctx context.Context) (synced bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a.streamCancel.Store(&cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.serverURL+"/v1/agent/assignments", nil)
	if err != nil {
		return false, fmt.Errorf("assignment stream: %w", err)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	session := a.session.Add(1)
	resp, err := a.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("assignment stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("assignment stream: %w", readServerError(resp))
	}
	a.log.Debug("assignment stream connected")

	// The server pings an idle stream; silence means a dead connection.
	idle := time.AfterFunc(a.tune.streamIdle, func() { cancel(errStreamIdle) })
	defer idle.Stop()

	// snapshot holds the names of the initial "put" events, until "synced".
	snapshot := make(map[string]bool)
	dec := json.NewDecoder(resp.Body)
	for {
		var ev api.AssignmentEvent
		if err := dec.Decode(&ev); err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errStreamIdle) {
				return synced, fmt.Errorf("assignment stream: %w", errStreamIdle)
			}
			return synced, fmt.Errorf("assignment stream: %w", err)
		}
		idle.Reset(a.tune.streamIdle)
		switch ev.Type {
		case api.AssignPut:
			if ev.Instance == nil {
				a.log.Warn("assignment without instance ignored", "name", ev.Name)
				continue
			}
			name := ev.Instance.Name
			if err := api.ValidateName("name", name); err != nil {
				a.log.Warn("assignment with a bad name ignored", "err", err)
				continue
			}
			if !synced {
				snapshot[name] = true
			}
			a.assign(ev, session)
		case api.AssignDelete:
			name := ev.Name
			if name == "" && ev.Instance != nil {
				name = ev.Instance.Name
			}
			if err := api.ValidateName("name", name); err != nil {
				a.log.Warn("unassignment with a bad name ignored", "err", err)
				continue
			}
			delete(snapshot, name)
			a.release(name, "no longer assigned to this node", ev.Gone)
		case api.AssignSynced:
			if !synced {
				synced = true
				a.releaseStrays(ctx, snapshot)
			}
		case api.AssignPing:
		default:
			a.log.Debug("unknown assignment event ignored", "type", ev.Type)
		}
	}
}

// releaseStrays destroys, once the stream has sent its snapshot, every VM
// the agent knows (a worker, a handle or the driver's list) that is not in
// the snapshot: it was removed or moved away while the agent was not
// listening.
func (a *Agent) releaseStrays(ctx context.Context, snapshot map[string]bool) {
	known := make(map[string]bool)
	a.mu.Lock()
	for name, w := range a.workers {
		if !w.released {
			known[name] = true
		}
	}
	a.mu.Unlock()
	ids, err := a.driver.List(ctx)
	if err != nil {
		a.log.Error("listing VMs after sync", "err", err)
	}
	for _, id := range ids {
		known[id] = true
	}
	for _, name := range a.handleNames() {
		known[name] = true
	}
	for name := range known {
		if snapshot[name] {
			continue
		}
		if err := api.ValidateName("name", name); err != nil {
			a.log.Warn("driver lists a VM with a bad name; leaving it alone", "id", name)
			continue
		}
		a.release(name, "not assigned to this node", false)
	}
}

// handleNames lists the VMs with a persisted handle.
func (a *Agent) handleNames() []string {
	entries, err := os.ReadDir(a.vmsDir)
	if err != nil {
		a.log.Error("listing VM handles", "err", err)
		return nil
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !strings.HasSuffix(n, handleExt) {
			continue
		}
		name := strings.TrimSuffix(n, handleExt)
		if api.ValidateName("name", name) != nil {
			continue
		}
		names = append(names, name)
	}
	return names
}

// recoverVMs re-attaches to the VMs an earlier agent process left running,
// from their persisted handles. A VM the driver no longer knows is
// forgotten; the others wait for their assignment (or for "synced", which
// destroys those not assigned any more).
func (a *Agent) recoverVMs(ctx context.Context) {
	for _, name := range a.handleNames() {
		h, err := a.loadHandle(name)
		if err != nil {
			a.log.Error("cannot recover vm; leaving its handle", "vm", name, "err", err)
			continue
		}
		err = a.driver.Recover(ctx, h)
		switch {
		case err == nil:
			a.log.Info("recovered running vm", "vm", name, "startedAt", h.StartedAt)
			a.adopt(name, true)
		case errors.Is(err, vmm.ErrNotFound):
			a.log.Info("vm of handle is gone; forgetting it", "vm", name)
			if err := a.removeHandle(name); err != nil {
				a.log.Error("forgetting vm", "vm", name, "err", err)
			}
		default:
			a.log.Error("recovering vm", "vm", name, "err", err)
			a.adopt(name, false)
		}
	}
	a.sweepOrphans(ctx)
}

// sweepOrphans kills VMs that run without a handle: the agent died while
// starting them. No orphan QEMU may outlive the agent's knowledge of it.
func (a *Agent) sweepOrphans(ctx context.Context) {
	sw, ok := a.driver.(vmm.Sweeper)
	if !ok {
		return
	}
	entries, err := os.ReadDir(a.vmsDir)
	if err != nil {
		return
	}
	known := map[string]bool{}
	for _, n := range a.handleNames() {
		known[n] = true
	}
	for _, e := range entries {
		if !e.IsDir() || known[e.Name()] || api.ValidateName("name", e.Name()) != nil {
			continue
		}
		killed, err := sw.Sweep(ctx, e.Name(), a.vmDir(e.Name()))
		if err != nil {
			a.log.Error("sweeping an orphaned vm", "vm", e.Name(), "err", err)
		}
		if killed {
			a.log.Warn("killed a vm that ran without a handle (the agent died while starting it)", "vm", e.Name())
		}
	}
}
