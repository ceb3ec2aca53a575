package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// Self-fencing (architecture, property 1). The control plane fails a host's
// instances over when the host's lease expires, TTL after the last
// heartbeat it acknowledged. Before that can happen, an agent that has had
// no heartbeat acknowledged for FenceAfter (less than the TTL) kills every
// VM it runs with SIGKILL and freezes their disks, so an instance never
// runs in two places. When acknowledgements come back it acts again only on
// a fresh assignment snapshot, taken after the fence: by then the control
// plane has either failed the instances over (and this host holds, at
// most, an outdated replica) or kept them here.

// fenceRecordName is the file in the state directory where every fence is
// appended (JSON lines), for operators and tests that check its timing.
const fenceRecordName = "fences.jsonl"

// FenceRecord describes one self-fence.
type FenceRecord struct {
	// LastAck is when the last acknowledged heartbeat was sent: the lease
	// expires TTL after it, at the earliest.
	LastAck time.Time `json:"lastAck"`
	// Started and Done bracket the kills.
	Started time.Time `json:"started"`
	Done    time.Time `json:"done"`
	// VMs are the VMs killed.
	VMs []string `json:"vms"`
}

// fenceLoop watches the heartbeat acknowledgements and fences the host
// when they stop for fenceAfter; it unfences when they resume.
func (a *Agent) fenceLoop(ctx context.Context, startedAt time.Time) {
	if a.fenceAfter <= 0 {
		return
	}
	t := time.NewTicker(a.fenceAfter / 20)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ref := a.LastAck()
		if ref.IsZero() {
			// Never acknowledged since this agent started: VMs it
			// recovered must not outlive an unreachable control plane.
			// (They ran without an agent before, so the first contact
			// gets a grace of one more fenceAfter.)
			ref = startedAt.Add(a.fenceAfter)
		}
		age := time.Since(ref)
		if !a.fenced.Load() && len(a.guardCmd) > 0 {
			a.touchAlive()
		}
		switch fenced := a.fenced.Load(); {
		case !fenced && age > a.fenceAfter:
			a.fence(ctx, a.LastAck())
		case fenced && age < a.fenceAfter:
			a.unfence()
		}
	}
}

// fence kills every VM and freezes every primary disk.
func (a *Agent) fence(ctx context.Context, lastAck time.Time) {
	a.fenced.Store(true)
	rec := FenceRecord{LastAck: lastAck, Started: time.Now()}
	ids, err := a.driver.List(ctx)
	if err != nil {
		a.log.Error("self-fence: listing VMs", "err", err)
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if err := a.driver.Destroy(ctx, id); err != nil {
				a.log.Error("self-fence: killing vm", "vm", id, "err", err)
			}
		})
	}
	// Freeze the disks: no primary writes anything from now on.
	a.mu.Lock()
	var prims []string
	for name, d := range a.disks {
		if d.role == api.RolePrimary {
			prims = append(prims, name)
		}
	}
	a.mu.Unlock()
	for _, name := range prims {
		wg.Go(func() {
			if err := a.closeDisk(name, "", false); err != nil {
				a.log.Warn("self-fence: closing disk", "vm", name, "err", err)
			}
		})
	}
	wg.Wait()
	rec.Done, rec.VMs = time.Now(), ids
	a.metrics.fences.Inc()
	a.log.Error("self-fenced: no heartbeat acknowledged by the control plane; killed every VM and froze their disks",
		"lastAck", rec.LastAck, "fencedAt", rec.Done, "took", rec.Done.Sub(rec.Started), "vms", ids)
	if b, err := json.Marshal(rec); err == nil {
		f, err := os.OpenFile(filepath.Join(a.stateDir, fenceRecordName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err == nil {
			_, _ = f.Write(append(b, '\n'))
			_ = f.Sync()
			f.Close()
		}
	}
	a.pokeAll()
}

// unfence lets workers act again, on a fresh assignment snapshot only.
func (a *Agent) unfence() {
	a.unfencedSession.Store(a.session.Load())
	a.fenced.Store(false)
	a.log.Warn("heartbeats acknowledged again; acting on a fresh assignment snapshot")
	if p := a.streamCancel.Load(); p != nil {
		(*p)(errRestream)
	}
	a.pokeAll()
}

// fenceBlocks reports whether a worker must not act on an assignment of
// stream session session: the host is fenced, or the assignment predates
// the end of the last fence.
func (a *Agent) fenceBlocks(session uint64) bool {
	return a.fenced.Load() || (a.unfencedSession.Load() > 0 && session <= a.unfencedSession.Load())
}

// pokeAll wakes every worker.
func (a *Agent) pokeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.workers {
		w.poke()
	}
}

// FenceRecords reads the fences recorded in stateDir.
func FenceRecords(stateDir string) ([]FenceRecord, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, fenceRecordName))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []FenceRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var r FenceRecord
		if err := dec.Decode(&r); err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
