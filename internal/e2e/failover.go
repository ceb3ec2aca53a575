package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// Fault is a way a host fails in a failover run.
type Fault string

// The faults of the chaos tests and bench/failover.
const (
	// FaultKillHost kills -9 every process of the primary's host.
	FaultKillHost Fault = "kill-host"
	// FaultLinksDown pulls the primary host's cable: it is cut off from
	// everything and must fence itself.
	FaultLinksDown Fault = "links-down"
	// FaultReplicaDies kills every process of the replica's host: the
	// primary goes on degraded, with the control plane's consent.
	FaultReplicaDies Fault = "replica-dies"
	// FaultPartitionCP cuts the primary's host off from the control plane
	// only; its replication link stays up. It must fence itself.
	FaultPartitionCP Fault = "cp-partition"
	// FaultServerKill kills the primary's host, then kills -9 the server
	// as soon as the failover has started, and restarts it: the failover
	// must resume.
	FaultServerKill Fault = "server-kill"
)

// Faults lists the faults CI runs; AllFaults every one (bench/failover).
var (
	Faults    = []Fault{FaultKillHost, FaultLinksDown, FaultReplicaDies}
	AllFaults = []Fault{FaultKillHost, FaultLinksDown, FaultReplicaDies, FaultPartitionCP, FaultServerKill}
)

// FailoverResult is what one failover run measured. Durations are from the
// fault unless said otherwise.
type FailoverResult struct {
	Fault    Fault
	Instance string
	From, To string
	// Serving is the time from the fault to the client's first answer from
	// the instance's new boot (FaultReplicaDies: its first answer after
	// the fault, same boot).
	Serving time.Duration
	// LongestGap is the longest time the client went without an answer.
	LongestGap time.Duration
	// Breakdown, from the failover operation's steps: Detect (fault to
	// detected), Promote (detected to promoted), Boot (promoted to
	// booted), Announce (booted to the client's first answer).
	Detect, Promote, Boot, Announce time.Duration
	// Fenced is the time from the fault to the old host's self-fence
	// (FaultLinksDown), and FenceMargin how long before the failover's
	// detection the fence was done (must be positive).
	Fenced, FenceMargin time.Duration
	// CounterBefore and CounterAfter are the guest's durable counter last
	// seen before the fault and first seen after it.
	CounterBefore, CounterAfter int
	// DoubleRunning counts samples in which the instance's VM ran on two
	// hosts at once.
	DoubleRunning int
	// LostWrites is 1 if data the guest had fsync'ed before the fault was
	// not there afterwards.
	LostWrites int
}

// String is one line for logs and the bench's table.
func (r FailoverResult) String() string {
	return fmt.Sprintf("%-12s %s->%s serving after %5.2fs (detect %.2fs promote %.2fs boot %.2fs announce %.2fs) longest gap %.2fs fenced %.2fs margin %.2fs counter %d->%d double=%d lost=%d",
		r.Fault, r.From, r.To, r.Serving.Seconds(), r.Detect.Seconds(), r.Promote.Seconds(), r.Boot.Seconds(), r.Announce.Seconds(),
		r.LongestGap.Seconds(), r.Fenced.Seconds(), r.FenceMargin.Seconds(), r.CounterBefore, r.CounterAfter, r.DoubleRunning, r.LostWrites)
}

// HostOf returns the simulated host of a node.
func (c *Cluster) HostOf(node string) (*testcluster.Host, error) {
	for i, h := range c.Hosts.Hosts() {
		if NodeName(i) == node {
			return h, nil
		}
	}
	return nil, fmt.Errorf("e2e: no host for node %q", node)
}

// ProtectedInstance creates (unless it exists) a demo instance on a local,
// replicated disk and waits until it serves with its replica up to date.
func (c *Cluster) ProtectedInstance(ctx context.Context, name string) (*api.Instance, error) {
	if _, err := c.Client.GetInstance(ctx, name); err != nil {
		spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo",
			Probe: &api.Probe{Type: "http", Ports: []int{80}}}
		if _, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Spec: spec}); err != nil {
			return nil, err
		}
	}
	return c.WaitProtected(ctx, name, 3*time.Minute)
}

// WaitProtected waits until the instance serves, no operation runs on it and
// its replica is up to date.
func (c *Cluster) WaitProtected(ctx context.Context, name string, d time.Duration) (*api.Instance, error) {
	var in *api.Instance
	err := c.Wait(ctx, d, name+" serving with its replica up to date", func() bool {
		got, err := c.Client.GetInstance(ctx, name)
		if err != nil {
			return false
		}
		in = got
		return got.Status.Serving && got.Status.Operation == "" && !got.Status.ReplicaOutdated &&
			got.Status.Disk != nil && got.Status.Disk.State == api.DiskUpToDate
	})
	return in, err
}

// RunFailover injects fault into the host of the protected instance name
// (its primary, or its replica for FaultReplicaDies) while a client polls
// the instance every 100 ms, waits until it serves again, checks what must
// hold, and brings the failed host back. The instance must be protected
// (see WaitProtected) when it is called.
func (c *Cluster) RunFailover(ctx context.Context, name string, fault Fault) (FailoverResult, error) {
	res := FailoverResult{Fault: fault, Instance: name}
	in, err := c.Client.GetInstance(ctx, name)
	if err != nil {
		return res, err
	}
	ip := in.Spec.IP
	victim := in.Status.Node
	if fault == FaultReplicaDies {
		victim = in.Status.ReplicaNode
	}
	res.From = in.Status.Node
	h, err := c.HostOf(victim)
	if err != nil {
		return res, err
	}
	fill, err := c.Fill(ctx, ip, 1) // fsync'ed before the fault: must survive it
	if err != nil {
		return res, err
	}
	before, err := c.GetWithin(ctx, ip, 2*time.Second)
	if err != nil {
		return res, fmt.Errorf("e2e: %s does not answer before the fault: %w", name, err)
	}

	// The client polls every 100 ms; a sampler counts hosts running QEMU.
	pl, err := c.startPoller(ctx, ip, 100*time.Millisecond, 300*time.Millisecond)
	if err != nil {
		return res, err
	}
	defer pl.end()
	sctx, stopSampler := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var double int
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for sctx.Err() == nil {
			if c.hostsRunningQEMU() > 1 {
				mu.Lock()
				double++
				mu.Unlock()
			}
			select {
			case <-sctx.Done():
			case <-t.C:
			}
		}
	})
	defer func() { stopSampler(); wg.Wait() }()

	faultAt := time.Now()
	switch fault {
	case FaultKillHost, FaultReplicaDies, FaultServerKill:
		err = c.Hosts.KillHost(ctx, h)
	case FaultLinksDown:
		err = c.Hosts.CutLinks(ctx, h)
	case FaultPartitionCP:
		err = c.Hosts.Partition(ctx, h, c.Hosts.RootIP())
	default:
		err = fmt.Errorf("e2e: unknown fault %q", fault)
	}
	if err != nil {
		return res, err
	}
	if fault == FaultServerKill {
		if err := c.killServerMidFailover(ctx, name, faultAt); err != nil {
			return res, err
		}
	}

	// Wait for an answer after the fault: from a new boot when the primary
	// failed, from the same one when the replica did.
	var after DemoAnswer
	err = c.Wait(ctx, 2*time.Minute, name+" answering after "+string(fault), func() bool {
		q, ok := pl.first(faultAt, func(q poll) bool { return fault == FaultReplicaDies || q.ans.Boots > before.Boots })
		if ok {
			after, res.Serving = q.ans, q.at.Sub(faultAt)
		}
		return ok
	})
	if err != nil {
		return res, err
	}
	res.CounterBefore, res.CounterAfter = before.Counter, after.Counter
	// Keep watching a few seconds for a second host answering or running.
	time.Sleep(3 * time.Second)
	pl.end()
	stopSampler()
	wg.Wait()
	mu.Lock()
	res.DoubleRunning = double
	mu.Unlock()
	res.LongestGap = pl.gaps(faultAt).Longest

	now, err := c.Fill(ctx, ip, 0)
	if err != nil {
		return res, fmt.Errorf("e2e: reading back the data written before the fault: %w", err)
	}
	if now.SHA256 != fill.SHA256 {
		res.LostWrites = 1
	}
	in, err = c.Client.GetInstance(ctx, name)
	if err != nil {
		return res, err
	}
	res.To = in.Status.Node

	if fault != FaultReplicaDies {
		if err := c.breakdown(ctx, &res, faultAt, victim); err != nil {
			return res, err
		}
	}
	// Bring the failed host back: it must not run the instance again.
	switch fault {
	case FaultLinksDown:
		err = c.Hosts.HealLinks(ctx, h)
	case FaultPartitionCP:
		err = c.Hosts.Heal(ctx, h)
	default:
		err = c.StartAgent(ctx, h, victim, "")
	}
	if err != nil {
		return res, fmt.Errorf("e2e: bringing %s back: %w", victim, err)
	}
	return res, nil
}

// breakdown fills the failover's step times from its operation, and the
// fence's from the old host's agent.
func (c *Cluster) breakdown(ctx context.Context, res *FailoverResult, faultAt time.Time, victim string) error {
	var op *api.Operation
	err := c.Wait(ctx, time.Minute, "the failover operation to end", func() bool {
		in, err := c.Client.GetInstance(ctx, res.Instance)
		if err != nil || in.Status.Operation != "" {
			return false
		}
		ops, err := c.Client.ListOperations(ctx, res.Instance, "")
		if err != nil || len(ops.Items) == 0 {
			return false
		}
		for i := range ops.Items {
			o := &ops.Items[i]
			if o.StartedAt.After(faultAt) && (op == nil || o.StartedAt.After(op.StartedAt)) {
				op = o
			}
		}
		return op != nil && op.State != api.OpRunning
	})
	if err != nil {
		return err
	}
	if op.State != api.OpSucceeded {
		return fmt.Errorf("e2e: failover operation %s %s: %s", op.Name, op.State, op.Message)
	}
	at := func(step string) time.Time {
		if s := op.Step(step); s != nil {
			return s.At
		}
		return time.Time{}
	}
	res.Detect = at(api.StepDetected).Sub(faultAt)
	res.Promote = at(api.StepPromoted).Sub(at(api.StepDetected))
	res.Boot = at(api.StepBooted).Sub(at(api.StepPromoted))
	res.Announce = res.Serving - at(api.StepBooted).Sub(faultAt)
	if res.Fault == FaultLinksDown || res.Fault == FaultPartitionCP {
		recs, err := agent.FenceRecords(c.AgentDir(victim))
		if err != nil {
			return err
		}
		var fence *agent.FenceRecord
		for i := range recs {
			if recs[i].Done.After(faultAt) {
				fence = &recs[i]
				break
			}
		}
		if fence == nil {
			return errors.New("e2e: the cut-off host did not fence itself")
		}
		res.Fenced = fence.Done.Sub(faultAt)
		res.FenceMargin = at(api.StepDetected).Sub(fence.Done)
	}
	return nil
}

// killServerMidFailover waits until the failover of name has started,
// then kills the server with SIGKILL and starts it again on its data.
func (c *Cluster) killServerMidFailover(ctx context.Context, name string, faultAt time.Time) error {
	err := c.Wait(ctx, time.Minute, "the failover to start", func() bool {
		ops, err := c.Client.ListOperations(ctx, name, "")
		if err != nil {
			return false
		}
		for _, o := range ops.Items {
			if o.StartedAt.After(faultAt) {
				return true
			}
		}
		return false
	})
	if err != nil {
		return err
	}
	c.Server().Kill()
	u, err := url.Parse(c.URL)
	if err != nil {
		return err
	}
	return c.StartServer(ctx, u.Host)
}

// hostsRunningQEMU counts the hosts with a QEMU process.
func (c *Cluster) hostsRunningQEMU() int {
	n := 0
	for _, h := range c.Hosts.Hosts() {
		if pids, err := QEMUPids(h); err == nil && len(pids) > 0 {
			n++
		}
	}
	return n
}

// QEMUPids returns the QEMU processes running in a host's namespace.
func QEMUPids(h *testcluster.Host) ([]int, error) {
	pids, err := h.Pids()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.HasPrefix(string(comm), "qemu") {
			out = append(out, pid)
		}
	}
	return out, nil
}
