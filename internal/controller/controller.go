package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Config wires a controller.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	Now    func() time.Time
	// Errors counts failed reconcile passes (may be nil).
	Errors prometheus.Counter
	// Resync is how often a full pass runs even without changes; default 5 s.
	Resync time.Duration
	// KeepEvents bounds the event history; default 10000.
	KeepEvents int64
	// NodeTTL is the node lease TTL: a node whose lease expired sent its
	// last heartbeat about that long ago. Default 3 s.
	NodeTTL time.Duration
	// StableFor is how long a node must have been Ready before it takes a
	// failed-over instance or a new replica (hysteresis against flapping
	// hosts); default 10 s.
	StableFor time.Duration
	// CPURatio is how many virtual CPUs a physical CPU may carry when
	// placing instances (overcommit); default 4.
	CPURatio float64
	// MemRatio is the memory overcommit ratio; default 1 (none).
	MemRatio float64
	// SpreadLabel names the node label whose values are failure domains
	// (such as "rack"): an instance's primary and replica then sit in
	// different ones. Default "": only different nodes.
	SpreadLabel string
}

// Policy is the scheduler policy the controller places with.
func (cfg Config) Policy() scheduler.Policy {
	return Policy(cfg.CPURatio, cfg.MemRatio, cfg.SpreadLabel)
}

// Controller runs the leader's loops.
type Controller struct {
	cfg Config
	log *slog.Logger
	s   *store.Store
}

// New returns a controller; it does no I/O.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Second
	}
	if cfg.KeepEvents == 0 {
		cfg.KeepEvents = 10000
	}
	if cfg.NodeTTL == 0 {
		cfg.NodeTTL = 3 * time.Second
	}
	if cfg.StableFor == 0 {
		cfg.StableFor = 10 * time.Second
	}
	if cfg.CPURatio <= 0 {
		cfg.CPURatio = DefaultCPURatio
	}
	if cfg.MemRatio <= 0 {
		cfg.MemRatio = DefaultMemRatio
	}
	return &Controller{cfg: cfg, log: cfg.Logger, s: cfg.Store}
}

// Run reconciles until ctx ends (the leadership was lost or the server stops).
// Any change to instances or node liveness triggers a pass at once; a timer
// catches anything a broken watch missed.
func (c *Controller) Run(ctx context.Context) {
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	go c.watchLoop(ctx, poke)
	resync := time.NewTicker(c.cfg.Resync)
	defer resync.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-trigger:
		case <-resync.C:
		case <-prune.C:
			if n, err := c.s.PruneEvents(ctx, c.cfg.KeepEvents); err != nil {
				c.fail("prune events", err)
			} else if n > 0 {
				c.log.Debug("pruned events", "deleted", n)
			}
			continue
		}
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			c.fail("reconcile", err)
		}
	}
}

func (c *Controller) fail(what string, err error) {
	c.log.Warn(what+" failed", "err", err)
	if c.cfg.Errors != nil {
		c.cfg.Errors.Inc()
	}
}

// watchLoop pokes the reconcile loop on every relevant change.
func (c *Controller) watchLoop(ctx context.Context, poke func()) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		insts := c.s.Instances.Watch(wctx, 0)
		nodes := c.s.Nodes.Watch(wctx, 0)
		alive := c.s.WatchAlive(wctx, 0)
		for open := true; open; {
			select {
			case _, ok := <-insts.C:
				open = ok
			case _, ok := <-nodes.C:
				open = ok
			case _, ok := <-alive:
				open = ok
			case <-ctx.Done():
				open = false
			}
			poke()
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Reconcile runs one full pass: node liveness, then placement.
func (c *Controller) Reconcile(ctx context.Context) error {
	nodes, _, err := c.s.Nodes.List(ctx)
	if err != nil {
		return err
	}
	alive, _, err := c.s.AliveNodes(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range nodes {
		if err := c.syncNodeState(ctx, n, alive[n.Name]); err != nil {
			errs = append(errs, err)
		}
	}
	insts, _, err := c.s.Instances.List(ctx)
	if err != nil {
		return err
	}
	if err := c.failover(ctx, nodes, alive, insts); err != nil {
		errs = append(errs, err)
	}
	if err := c.trackOperations(ctx, alive, insts); err != nil {
		errs = append(errs, err)
	}
	if err := c.drains(ctx, nodes, alive); err != nil {
		errs = append(errs, err)
	}
	if err := c.place(ctx, nodes, alive, insts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncNodeState records a lease expiry as the node going NotReady. (Ready
// is recorded by the heartbeat that created the lease, in that transaction.)
func (c *Controller) syncNodeState(ctx context.Context, n *api.Node, alive bool) error {
	if alive || n.Status.State == api.NodeNotReady {
		return nil
	}
	now := c.cfg.Now().UTC()
	n.Status.State = api.NodeNotReady
	n.Status.Since = now
	msg := fmt.Sprintf("lease expired: no heartbeat for %s", c.cfg.NodeTTL)
	ev := c.s.EventOp(api.Event{Time: now, Kind: api.KindNode, Name: n.Name, Node: n.Name, Type: "NodeNotReady", Message: msg})
	err := c.s.Nodes.Update(ctx, n, ev)
	if benign(err) {
		return nil // someone wrote in between; the next pass looks again
	}
	if err == nil {
		c.log.Info("node not ready", "node", n.Name, "reason", msg)
	}
	return err
}

// Allocation sums what instances take from each node: their size on their
// host (less a disk on shared storage), and their disk on the host of their
// replica. Placement and `ferry node ls` both read it, so they agree.
func Allocation(instances []*api.Instance) map[string]api.Resources {
	out := map[string]api.Resources{}
	for _, in := range instances {
		if in.Status.Node != "" {
			out[in.Status.Node] = out[in.Status.Node].Add(in.Spec.HostResources())
		}
		if in.Status.ReplicaNode != "" {
			out[in.Status.ReplicaNode] = out[in.Status.ReplicaNode].Add(api.Resources{Disk: in.Spec.Disk})
		}
	}
	return out
}

// place assigns every Pending instance a host and a replica host, in
// creation order, with the scheduler: one scheduler.Cluster per pass, so
// each placement counts those made before it. An instance the scheduler
// refuses (no host keeps capacity, placement rules and N+1) stays Pending
// with the refusal as its message, and an Unschedulable event the first
// time that reason appears.
func (c *Controller) place(ctx context.Context, nodes []*api.Node, alive map[string]bool, insts []*api.Instance) error {
	var pending, placed []*api.Instance
	for _, in := range insts {
		switch {
		case in.Status.Phase == api.PhasePending && in.Status.Node == "" && !in.Status.Deleting:
			pending = append(pending, in)
		case in.Status.Node != "" || in.Status.ReplicaNode != "":
			placed = append(placed, in)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	sort.SliceStable(pending, func(i, j int) bool { return pending[i].CreatedAt.Before(pending[j].CreatedAt) })
	cluster, err := scheduler.NewCluster(withMigrations(Snapshot(nodes, alive, placed, c.cfg.Policy()), placed, alive))
	if err != nil {
		return fmt.Errorf("placement: %w", err)
	}
	var errs []error
	for _, in := range pending {
		p, err := cluster.Allocate(SchedulerInstance(in), scheduler.AllocateOptions{})
		now := c.cfg.Now().UTC()
		var refusal *scheduler.RefusalError
		switch {
		case errors.As(err, &refusal):
			reason := refusal.Error()
			if in.Status.Message == reason {
				continue
			}
			in.Status.Message = reason
			ev := c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Type: "Unschedulable", Message: reason})
			if err := c.s.Instances.Update(ctx, in, ev); err != nil && !benign(err) {
				errs = append(errs, err)
			}
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("place %s: %w", in.Name, err))
			continue
		}
		host, replica := p.Primary, p.Secondary
		if in.Spec.SharedPath() != "" {
			replica = "" // shared storage is not replicated by ferry
		}
		in.Status.Node, in.Status.ReplicaNode = host, replica
		// A new primary writes under a new epoch; a new replica holds
		// nothing yet, so it must not be promoted until its primary says
		// it is up to date.
		in.Status.Epoch++
		in.Status.ReplicaOutdated = replica != ""
		in.Status.Phase, in.Status.Since = api.PhaseScheduled, now
		in.Status.Message = "placed on " + host
		ev := c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Type: "Scheduled", Node: host, Message: "replica on " + orNone(replica)})
		err = c.s.Instances.Update(ctx, in, ev)
		switch {
		case err == nil:
			c.log.Info("placed instance", "instance", in.Name, "node", host, "replica", replica, "score", p.ScoreAfter)
		case benign(err):
			// Changed or removed meanwhile, or the leadership moved on;
			// the next pass (here or on the new leader) sees it fresh. The
			// cluster keeps counting the placement for the rest of this
			// pass, which only errs on the careful side.
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// benign reports errors that only mean "look again": the object changed
// or went away since it was read, or this server is no longer the leader.
func benign(err error) bool {
	return errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNotLeader)
}

func orNone(s string) string {
	if s == "" {
		return "none (single node)"
	}
	return s
}
