package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// MoveResult is what a client polling one instance every 50 ms saw while a
// drain or a restore moved it.
type MoveResult struct {
	Instance, From, To string
	// Operations are the instance's migrations started from the drain's
	// (or restore's) request on, oldest first.
	Operations []*api.Operation
	// Downtime is the longest gap between two answers of the client, from
	// the request to a few seconds after the last migration ended.
	Downtime time.Duration
	// GapFrom is when the longest gap began (the last answer before it),
	// from the request.
	GapFrom                     time.Duration
	BootsBefore, BootsAfter     int
	CounterBefore, CounterAfter int
	// LostWrites is 1 when data the guest fsync'ed before the request is
	// not there after it.
	LostWrites int
	// Answers counts the client's answers from the request on.
	Answers int
	// Requested is when the drain or restore was requested.
	Requested time.Time
}

func (r MoveResult) String() string {
	var ops []string
	for _, op := range r.Operations {
		steps := []string{fmt.Sprintf("started %s", op.StartedAt.Sub(r.Requested).Round(time.Millisecond))}
		for _, st := range op.Steps {
			steps = append(steps, fmt.Sprintf("%s %s", st.Name, st.At.Sub(r.Requested).Round(time.Millisecond)))
		}
		ops = append(ops, fmt.Sprintf("%s %s (%s) [%s]", op.Name, op.State, op.Message, strings.Join(steps, ", ")))
	}
	return fmt.Sprintf("%s %s -> %s: downtime %s (from %s on), boots %d -> %d, counter %d -> %d, lost writes %d, %d answers; %s",
		r.Instance, r.From, r.To, r.Downtime.Round(time.Millisecond), r.GapFrom.Round(time.Millisecond), r.BootsBefore, r.BootsAfter,
		r.CounterBefore, r.CounterAfter, r.LostWrites, r.Answers, strings.Join(ops, "; "))
}

// DrainResult is what a drain (or an undrain --restore) of a node looked
// like from outside.
type DrainResult struct {
	Node string
	// Limit is the drain's MaxConcurrent.
	Limit int
	// Moves has one entry per instance watched, in the order given.
	Moves []MoveResult
	// Took runs from the request to the end of the last migration.
	Took time.Duration
	// MaxOverlap is the most migrations from or to the node in flight at
	// once, from the operations' records: each counts from its start to
	// the step that took it off the instance (resumed, or booted when
	// cold), or its end.
	MaxOverlap int
	// MaxMigrating is the most migrations from or to the node that the
	// node's status (status.drain.migrating) showed, polled every 50 ms.
	MaxMigrating int
	// NodeAfter is the node when the last migration had ended.
	NodeAfter *api.Node
}

func (r DrainResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: took %s, at most %d migrations at once by the operations (%d seen in its status), limit %d",
		r.Node, r.Took.Round(time.Millisecond), r.MaxOverlap, r.MaxMigrating, r.Limit)
	for _, m := range r.Moves {
		fmt.Fprintf(&b, "\n  %s", m)
	}
	return b.String()
}

// RunDrain drains node as req says while a client polls each of the named
// instances (protected, with node as their primary) every 50 ms, waits
// until the drain is done (no instance left on node, no migration from or
// to it) and every migration it started has ended, and reports what the
// clients saw.
func (c *Cluster) RunDrain(ctx context.Context, node string, req api.DrainRequest, names []string) (DrainResult, error) {
	limit := req.WithDefaults().MaxConcurrent
	return c.watchMoves(ctx, node, limit, names, func() error {
		_, err := c.Client.DrainNode(ctx, node, req)
		return err
	}, func(n *api.Node) bool {
		d := n.Status.Drain
		return d != nil && d.Drained && d.Migrating == 0
	})
}

// RunRestore ends the drain of node with an undrain --restore while a
// client polls each of the named instances every 50 ms, waits until the
// restore is done (nothing left to move back, no migration from or to the
// node) and every migration it started has ended, and reports what the
// clients saw.
func (c *Cluster) RunRestore(ctx context.Context, node string, names []string) (DrainResult, error) {
	n, err := c.Client.GetNode(ctx, node)
	if err != nil {
		return DrainResult{Node: node}, err
	}
	if n.Spec.Drain == nil {
		return DrainResult{Node: node}, fmt.Errorf("e2e: %s is not being drained", node)
	}
	limit := n.Spec.Drain.MaxConcurrent
	return c.watchMoves(ctx, node, limit, names, func() error {
		_, err := c.Client.UndrainNode(ctx, node, api.UndrainRequest{Restore: true})
		return err
	}, func(n *api.Node) bool {
		return n.Spec.Restore == nil && (n.Status.Drain == nil || n.Status.Drain.Migrating == 0)
	})
}

// watchMoves runs act (a drain or a restore of node) while a client polls
// each instance, until done says the node is through and every migration
// of the instances started since act has ended.
func (c *Cluster) watchMoves(ctx context.Context, node string, limit int, names []string, act func() error, done func(*api.Node) bool) (DrainResult, error) {
	res := DrainResult{Node: node, Limit: limit, Moves: make([]MoveResult, len(names))}
	ips := make([]string, len(names))
	fills := make([]FillAnswer, len(names))
	for i, name := range names {
		mv := &res.Moves[i]
		mv.Instance = name
		in, err := c.Client.GetInstance(ctx, name)
		if err != nil {
			return res, err
		}
		ips[i], mv.From = in.Spec.IP, in.Status.Node
		if fills[i], err = c.Fill(ctx, ips[i], 1); err != nil {
			return res, fmt.Errorf("e2e: %s: %w", name, err)
		}
		before, err := c.GetWithin(ctx, ips[i], 2*time.Second)
		if err != nil {
			return res, fmt.Errorf("e2e: %s does not answer before the migrations off or onto %s: %w", name, node, err)
		}
		mv.BootsBefore, mv.CounterBefore = before.Boots, before.Counter
	}
	pollers := make([]*poller, len(names))
	defer func() {
		for _, pl := range pollers {
			if pl != nil {
				pl.end()
			}
		}
	}()
	for i := range names {
		pl, err := c.startPoller(ctx, ips[i], pollEvery, 250*time.Millisecond)
		if err != nil {
			return res, fmt.Errorf("e2e: %s: %w", names[i], err)
		}
		pollers[i] = pl
	}
	// The node's own view of the migrations from or to it.
	sctx, stopSampler := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxMigrating := 0
	wg.Go(func() {
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for sctx.Err() == nil {
			if n, err := c.Client.GetNode(sctx, node); err == nil && n.Status.Drain != nil {
				mu.Lock()
				maxMigrating = max(maxMigrating, n.Status.Drain.Migrating)
				mu.Unlock()
			}
			select {
			case <-sctx.Done():
			case <-t.C:
			}
		}
	})
	defer func() { stopSampler(); wg.Wait() }()

	start := time.Now()
	if err := act(); err != nil {
		return res, err
	}
	var ops [][]*api.Operation
	err := c.Wait(ctx, 6*time.Minute, "the migrations off or onto "+node+" to end", func() bool {
		n, err := c.Client.GetNode(ctx, node)
		if err != nil || !done(n) {
			return false
		}
		all := make([][]*api.Operation, len(names))
		for i, name := range names {
			list, err := c.Client.ListOperations(ctx, name, "")
			if err != nil {
				return false
			}
			for j := range list.Items {
				op := &list.Items[j]
				if op.Type != api.OpMigrate || op.StartedAt.Before(start) {
					continue
				}
				if op.State == api.OpRunning {
					return false
				}
				all[i] = append(all[i], op)
			}
			slices.SortFunc(all[i], func(a, b *api.Operation) int { return a.StartedAt.Compare(b.StartedAt) })
		}
		ops, res.NodeAfter = all, n
		return true
	})
	res.Took = time.Since(start)
	if err != nil {
		if n, gerr := c.Client.GetNode(ctx, node); gerr == nil {
			err = fmt.Errorf("%w (node spec %+v, drain status %+v)", err, n.Spec, n.Status.Drain)
		}
		return res, err
	}
	// Every guest must answer again, then a little more watching for late
	// gaps.
	end := time.Now()
	for i, name := range names {
		pl := pollers[i]
		if err := c.Wait(ctx, 2*time.Minute, name+" answering after the migrations", func() bool {
			_, ok := pl.first(end, func(poll) bool { return true })
			return ok
		}); err != nil {
			if in, gerr := c.Client.GetInstance(ctx, name); gerr == nil {
				err = fmt.Errorf("%w: %s is %s on %s (boots %d, %s); its console there:\n%s", err, name, in.Status.Phase,
					in.Status.Node, in.Status.Boots, in.Status.Message, c.ConsoleTail(in.Status.Node, name, 40))
			}
			return res, err
		}
	}
	time.Sleep(2 * time.Second)
	stopSampler()
	wg.Wait()
	res.MaxMigrating = maxMigrating
	var all []*api.Operation
	for i, name := range names {
		pollers[i].end()
		mv := &res.Moves[i]
		mv.Operations, mv.Requested = ops[i], start
		all = append(all, ops[i]...)
		g := pollers[i].gaps(start)
		mv.Downtime, mv.Answers, mv.GapFrom = g.Longest, g.Answers, g.From.Sub(start)
		mv.BootsAfter, mv.CounterAfter = g.Last.Boots, g.Last.Counter
		now, err := c.Fill(ctx, ips[i], 0)
		if err != nil {
			return res, fmt.Errorf("e2e: %s: reading back the data written before the migrations: %w", name, err)
		}
		if now.SHA256 != fills[i].SHA256 {
			mv.LostWrites = 1
		}
		in, err := c.Client.GetInstance(ctx, name)
		if err != nil {
			return res, err
		}
		mv.To = in.Status.Node
	}
	res.MaxOverlap = maxOverlap(all)
	return res, nil
}

// maxOverlap is the most operations in flight at once, each from its start
// to the step that took the migration off the instance (resumed, or
// booted when cold: the drain counts it no more from then on), or its end.
func maxOverlap(ops []*api.Operation) int {
	type edge struct {
		at time.Time
		d  int
	}
	var edges []edge
	for _, op := range ops {
		end := op.EndedAt
		for _, s := range []string{api.StepResumed, api.StepBooted} {
			if st := op.Step(s); st != nil && st.At.Before(end) {
				end = st.At
			}
		}
		edges = append(edges, edge{op.StartedAt, +1}, edge{end, -1})
	}
	// Ends before starts at the same instant: a migration that starts as
	// another one leaves did not overlap it.
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d
	})
	k, most := 0, 0
	for _, e := range edges {
		k += e.d
		most = max(most, k)
	}
	return most
}

// ProtectedInstancesOn creates the named demo instances (as
// ProtectedInstance does) with their primary on node: each is placed while
// all hosts but node and one other are cordoned (the others take turns, so
// the replicas spread), the ones the scheduler made primary on the other
// host are migrated cold to node (their replica's host), and the cordons
// are lifted. It returns once every instance serves from node with its
// replica up to date.
func (c *Cluster) ProtectedInstancesOn(ctx context.Context, node string, names []string) error {
	var others []string
	for i := range c.Hosts.Hosts() {
		if n := NodeName(i); n != node {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return errors.New("e2e: ProtectedInstancesOn needs at least two hosts")
	}
	cordon := func(name string, on bool) error {
		_, err := c.Client.PatchNode(ctx, name, api.NodePatch{Unschedulable: &on})
		return err
	}
	defer func() {
		for _, o := range others {
			_ = cordon(o, false)
		}
	}()
	spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo",
		Probe: &api.Probe{Type: "http", Ports: []int{80}}}
	for i, name := range names {
		peer := others[i%len(others)]
		for _, o := range others {
			if err := cordon(o, o != peer); err != nil {
				return err
			}
		}
		if _, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Spec: spec}); err != nil {
			return err
		}
		err := c.Wait(ctx, time.Minute, name+" placed", func() bool {
			in, err := c.Client.GetInstance(ctx, name)
			return err == nil && in.Status.Node != "" && in.Status.ReplicaNode != ""
		})
		if err != nil {
			return err
		}
	}
	for _, o := range others {
		if err := cordon(o, false); err != nil {
			return err
		}
	}
	var ops []string
	for _, name := range names {
		in, err := c.WaitProtected(ctx, name, 3*time.Minute)
		if err != nil {
			return err
		}
		switch {
		case in.Status.Node == node:
		case in.Status.ReplicaNode == node:
			// Cold: the setup needs the guest there, not a live move
			// (which hits the open TCG panic now and then, issue 6).
			op, err := c.Client.MigrateInstance(ctx, name, api.MigrateRequest{To: node, Mode: api.MigrateCold})
			if err != nil {
				return fmt.Errorf("e2e: moving %s to %s: %w", name, node, err)
			}
			ops = append(ops, op.Name)
		default:
			return fmt.Errorf("e2e: %s was placed on %s and %s, not on %s", name, in.Status.Node, in.Status.ReplicaNode, node)
		}
	}
	for _, name := range ops {
		var op *api.Operation
		err := c.Wait(ctx, 4*time.Minute, "operation "+name+" to end", func() bool {
			got, err := c.Client.GetOperation(ctx, name)
			op = got
			return err == nil && got.State != api.OpRunning
		})
		if err != nil {
			return err
		}
		if op.State != api.OpSucceeded {
			return fmt.Errorf("e2e: moving %s to %s: operation %s %s: %s", op.Instance, node, op.Name, op.State, op.Message)
		}
	}
	for _, name := range names {
		in, err := c.WaitProtected(ctx, name, 3*time.Minute)
		if err != nil {
			return err
		}
		if in.Status.Node != node {
			return fmt.Errorf("e2e: %s runs on %s, not %s", name, in.Status.Node, node)
		}
	}
	return nil
}

// InstanceQEMUs counts, per node, the QEMU processes of the named instance
// (those whose -name is the instance's): during a live migration there are
// two (the target's waits, paused), else one where it runs.
func (c *Cluster) InstanceQEMUs(name string) (map[string]int, error) {
	out := map[string]int{}
	for i, h := range c.Hosts.Hosts() {
		pids, err := QEMUPids(h)
		if err != nil {
			return nil, err
		}
		for _, pid := range pids {
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil {
				continue // gone meanwhile
			}
			args := bytes.Split(cmdline, []byte{0})
			for j := 0; j+1 < len(args); j++ {
				if string(args[j]) == "-name" && qemuGuestName(string(args[j+1])) == name {
					out[NodeName(i)]++
					break
				}
			}
		}
	}
	return out, nil
}

// qemuGuestName is the guest name in QEMU's -name argument
// ("guest=web-1,debug-threads=on", or just "web-1").
func qemuGuestName(arg string) string {
	for _, part := range strings.Split(arg, ",") {
		if v, ok := strings.CutPrefix(part, "guest="); ok {
			return v
		}
	}
	first, _, _ := strings.Cut(arg, ",")
	return first
}

// RestartServer kills the server with SIGKILL and starts it again on its
// data at the same address (c.Client is then a client of the new one). It
// returns when the killed server was gone and how long the API was away.
func (c *Cluster) RestartServer(ctx context.Context) (time.Time, time.Duration, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return time.Time{}, 0, err
	}
	c.Server().Kill()
	killed := time.Now()
	err = c.StartServer(ctx, u.Host)
	return killed, time.Since(killed), err
}

// CLI runs the ferry command line against the cluster, as its admin, and
// returns what it printed.
func (c *Cluster) CLI(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args = append([]string{"--server", c.URL, "--token", c.Token, "--ca-file", filepath.Join(c.opts.Dir, "server", "ca.crt")}, args...)
	cmd := exec.CommandContext(ctx, c.opts.Binary, args...)
	cmd.Env = append(os.Environ(), "FERRY_CONFIG="+filepath.Join(c.opts.Dir, "no-cli-config"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("e2e: ferry %s: %w: %s", strings.Join(args[6:], " "), err, out)
	}
	return string(out), nil
}

// QEMUWatch samples, on every host, the QEMU processes of one instance.
type QEMUWatch struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
	mu   sync.Mutex
	st   QEMUStats
}

// QEMUStats is what a QEMUWatch saw.
type QEMUStats struct {
	Samples int
	// Zero counts samples with no QEMU of the instance on any host (the
	// guest was not running anywhere).
	Zero int
	// Most is the most QEMU processes of the instance at once (2 during a
	// live migration: the target's waits), MostHosts the most hosts with
	// one.
	Most, MostHosts int
	// FirstZero is the first sample with none.
	FirstZero time.Time
}

// WatchQEMUs samples the QEMU processes of instance name every period
// until Stop.
func (c *Cluster) WatchQEMUs(ctx context.Context, name string, period time.Duration) *QEMUWatch {
	wctx, stop := context.WithCancel(ctx)
	w := &QEMUWatch{stop: stop}
	w.wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for wctx.Err() == nil {
			at := time.Now()
			if per, err := c.InstanceQEMUs(name); err == nil {
				total := 0
				for _, k := range per {
					total += k
				}
				w.mu.Lock()
				w.st.Samples++
				if total == 0 {
					if w.st.Zero == 0 {
						w.st.FirstZero = at
					}
					w.st.Zero++
				}
				w.st.Most, w.st.MostHosts = max(w.st.Most, total), max(w.st.MostHosts, len(per))
				w.mu.Unlock()
			}
			select {
			case <-wctx.Done():
			case <-t.C:
			}
		}
	})
	return w
}

// Stop ends the sampling and returns what it saw; it may be called more
// than once.
func (w *QEMUWatch) Stop() QEMUStats {
	w.stop()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// ConsoleTail returns the last n lines of the serial console of instance
// name's VM on node (what its guest printed: a panic, a reboot), for a
// failed test.
func (c *Cluster) ConsoleTail(node, name string, n int) string {
	b, err := os.ReadFile(filepath.Join(c.AgentDir(node), "vms", name, "console.log"))
	if err != nil {
		return err.Error()
	}
	return tail(string(b), n)
}
