package scheduler

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Search breadth. Up to exhaustiveNodes nodes every pair of nodes is tried;
// beyond, the candidates are the few nodes with the most room (targets) and
// the few worst-off nodes (sources), so a decision costs the same on 100 or
// 10,000 nodes.
const (
	exhaustiveNodes = 40
	allocCandidates = 16
	rebalanceSource = 8
	rebalanceTarget = 24
	// refreshEvery is how many allocations reuse one candidate list.
	refreshEvery = 8
)

// Score returns the cluster score of s (lower is better).
func Score(s Snapshot) (float64, error) {
	c, err := NewCluster(s)
	if err != nil {
		return 0, err
	}
	return c.Score(), nil
}

// Check evaluates the cluster: N+1 failures per node, over-allocation,
// anti-affinity conflicts and the score. It fails only on an inconsistent
// snapshot (an instance on an unknown node, a name used twice).
func Check(s Snapshot) (CheckReport, error) {
	c, err := NewCluster(s)
	if err != nil {
		return CheckReport{}, err
	}
	return c.Check(), nil
}

// Check evaluates the cluster as it is now.
func (c *Cluster) Check() CheckReport {
	r := CheckReport{Instances: len(c.insts), Conflicts: c.conflicts, Score: c.Score(), Nodes: make([]NodeReport, len(c.nodes))}
	for i := range c.nodes {
		n := &c.nodes[i]
		nr := NodeReport{
			Name:        n.name,
			Capacity:    c.src[i].Capacity,
			Used:        Resources{CPUs: n.usedCPU, MemMiB: n.usedMem, DiskMiB: n.usedDisk},
			Reserve:     Resources{CPUs: n.resCPU, MemMiB: n.resMem},
			Primaries:   n.nPri,
			Secondaries: n.nSec,
			Offline:     n.offline,
		}
		if !n.offline {
			if n.n1 > 0 {
				nr.N1Fail, nr.N1Reason = true, c.n1Reason(int32(i))
				r.N1Failures++
			}
			if n.over {
				nr.Over, nr.OverReason = true, c.overReason(int32(i))
				r.Over++
			}
		}
		r.Nodes[i] = nr
	}
	for i := range c.insts {
		in := &c.insts[i]
		if in.p == none {
			continue
		}
		if c.nodes[in.p].offline || (!in.shared && in.s != none && c.nodes[in.s].offline) {
			r.Unprotected++
		}
	}
	return r
}

// n1Reason says which node's death node i could not absorb, and by how much.
func (c *Cluster) n1Reason(i int32) string {
	n := &c.nodes[i]
	worst, worstMem := none, int64(-1)
	for p, f := range n.fo {
		if f.mem > worstMem || (f.mem == worstMem && p < worst) {
			worst, worstMem = p, f.mem
		}
	}
	free := int64(n.capMem) - n.usedMem
	if float64(n.usedMem+n.resMem) > n.capMem {
		return fmt.Sprintf("if %s dies, the instances it replicates here need %s of memory; %s is free", c.nodeName(worst), mib(worstMem), mib(free))
	}
	return fmt.Sprintf("if a node dies, the instances it replicates here need %d CPUs; %.0f are free (with overcommit)", n.resCPU, n.capCPU-float64(n.usedCPU))
}

func (c *Cluster) overReason(i int32) string {
	n := &c.nodes[i]
	switch {
	case float64(n.usedMem) > n.capMem:
		return fmt.Sprintf("memory: %s allocated, %s available", mib(n.usedMem), mib(int64(n.capMem)))
	case float64(n.usedCPU) > n.capCPU:
		return fmt.Sprintf("cpu: %d allocated, %.0f available (with overcommit)", n.usedCPU, n.capCPU)
	default:
		return fmt.Sprintf("disk: %s allocated, %s available", mib(n.usedDisk), mib(int64(n.capDisk)))
	}
}

// mib prints a size given in MiB the way people read it.
func mib(v int64) string {
	switch {
	case v >= 1<<20 || v <= -1<<20:
		return fmt.Sprintf("%.1f TiB", float64(v)/(1<<20))
	case v >= 1<<10 || v <= -1<<10:
		return fmt.Sprintf("%.1f GiB", float64(v)/(1<<10))
	}
	return fmt.Sprintf("%d MiB", v)
}

// Allocate chooses a primary and (unless the disk is shared or the cluster
// has one node) a secondary for inst, keeping capacity, placement rules and
// N+1; it returns a *RefusalError when nothing fits.
func Allocate(s Snapshot, inst Instance, opts AllocateOptions) (Placement, error) {
	c, err := NewCluster(s)
	if err != nil {
		return Placement{}, err
	}
	return c.Allocate(inst, opts)
}

// Allocate places inst as the function Allocate does and, when it fits,
// records it in the cluster, so the next allocation sees it. inst's
// Primary and Secondary are ignored.
func (c *Cluster) Allocate(inst Instance, opts AllocateOptions) (Placement, error) {
	if inst.Name == "" {
		return Placement{}, fmt.Errorf("instance name is empty")
	}
	if _, dup := c.byInst[inst.Name]; dup {
		return Placement{}, fmt.Errorf("instance %q is already in the cluster", inst.Name)
	}
	if err := nonNegative(fmt.Sprintf("instance %q size", inst.Name), inst.Size); err != nil {
		return Placement{}, err
	}
	g := none
	if inst.Group != "" {
		var ok bool
		if g, ok = c.groups[inst.Group]; !ok {
			g = int32(len(c.groups))
			c.groups[inst.Group] = g
		}
	}
	i := int32(len(c.insts))
	c.insts = append(c.insts, instState{name: inst.Name, size: inst.Size, p: none, s: none, group: g, shared: inst.SharedDisk})
	p, s, score, ok := c.bestPair(i, !opts.Force)
	if !ok && opts.Force {
		p, s, score, ok = c.bestPair(i, false)
	}
	if !ok {
		err := c.refusal(i)
		c.insts = c.insts[:i]
		return Placement{}, err
	}
	c.byInst[inst.Name] = i
	if len(inst.Tags) > 0 {
		c.tags[i] = inst.Tags
	}
	c.move(i, p, s)
	c.allocs++
	return Placement{Primary: c.nodeName(p), Secondary: c.nodeName(s), ScoreAfter: score}, nil
}

// wantsSecondary reports whether instance i needs a replica: its disk is
// local and some other node could hold it.
func (c *Cluster) wantsSecondary(i int32) bool {
	return !c.insts[i].shared && c.sched > 1
}

// bestPair finds the placement of unplaced instance i with the lowest
// score.
func (c *Cluster) bestPair(i int32, keepN1 bool) (p, s int32, score float64, ok bool) {
	prims := c.allocTargets()
	secs := prims
	if !c.wantsSecondary(i) {
		secs = []int32{none}
	}
	score = math.Inf(1)
	p, s = none, none
	for _, cp := range prims {
		for _, cs := range secs {
			if cp == cs || !c.eligible(i, cp, cs) {
				continue
			}
			sc, fits := c.try(i, cp, cs, keepN1)
			if fits && sc < score {
				p, s, score, ok = cp, cs, sc, true
			}
		}
	}
	return p, s, score, ok
}

// allocTargets returns the nodes worth trying for a new instance: all of
// them on a small cluster, else the ones with the most room, refreshed
// every few allocations.
func (c *Cluster) allocTargets() []int32 {
	if len(c.nodes) <= exhaustiveNodes*4 {
		return c.all
	}
	if c.cands == nil || c.allocs-c.candsAt >= refreshEvery {
		c.cands = c.roomiest(allocCandidates, c.cands[:0])
		c.candsAt = c.allocs
	}
	return c.cands
}

// roomiest appends to dst the k schedulable nodes with the lowest use.
func (c *Cluster) roomiest(k int, dst []int32) []int32 {
	return c.topK(k, dst, func(i int32) (float64, bool) {
		n := &c.nodes[i]
		if !n.sched || n.n1 > 0 || n.over {
			return 0, false
		}
		return -(n.metric[metricReserve] + n.metric[metricCPU] + n.metric[metricDisk]), true
	})
}

// topK appends to dst the (at most) k nodes with the highest key, best
// first; key's false excludes a node.
func (c *Cluster) topK(k int, dst []int32, key func(int32) (float64, bool)) []int32 {
	h := &nodeHeap{}
	for i := range c.nodes {
		v, ok := key(int32(i))
		if !ok {
			continue
		}
		if h.Len() < k {
			heap.Push(h, keyed{int32(i), v})
		} else if v > (*h)[0].key {
			(*h)[0] = keyed{int32(i), v}
			heap.Fix(h, 0)
		}
	}
	start := len(dst)
	for h.Len() > 0 {
		dst = append(dst, heap.Pop(h).(keyed).node)
	}
	for a, b := start, len(dst)-1; a < b; a, b = a+1, b-1 {
		dst[a], dst[b] = dst[b], dst[a]
	}
	return dst
}

type keyed struct {
	node int32
	key  float64
}

// nodeHeap is a min-heap on key (ties: higher index first out, so that
// the kept set prefers lower indexes).
type nodeHeap []keyed

func (h nodeHeap) Len() int { return len(h) }
func (h nodeHeap) Less(a, b int) bool {
	if h[a].key != h[b].key {
		return h[a].key < h[b].key
	}
	return h[a].node > h[b].node
}
func (h nodeHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *nodeHeap) Push(x any)   { *h = append(*h, x.(keyed)) }
func (h *nodeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// refusal explains why unplaced instance i fits nowhere.
func (c *Cluster) refusal(i int32) *RefusalError {
	in := &c.insts[i]
	need := in.size
	sched := 0
	var bestMem, bestCPU, bestDisk float64
	var memNode, cpuNode, diskNode string
	for k := range c.nodes {
		n := &c.nodes[k]
		if !n.sched {
			continue
		}
		sched++
		// What the node could take while keeping its own N+1 reserve.
		if f := n.capMem - float64(n.usedMem+n.resMem); f > bestMem {
			bestMem, memNode = f, n.name
		}
		if f := n.capCPU - float64(n.usedCPU+n.resCPU); f > bestCPU {
			bestCPU, cpuNode = f, n.name
		}
		if f := n.capDisk - float64(n.usedDisk); f > bestDisk {
			bestDisk, diskNode = f, n.name
		}
	}
	most := func(node, unit string) string {
		if node == "" {
			return "every schedulable node is full"
		}
		return fmt.Sprintf("the most is %s (on %s)", unit, node)
	}
	switch {
	case sched == 0:
		return &RefusalError{Resource: "nodes", Message: "no node is online and schedulable"}
	case float64(need.MemMiB) > bestMem:
		return &RefusalError{Resource: "memory", Message: fmt.Sprintf("no node has %s of memory free while keeping N+1; %s", mib(need.MemMiB), most(memNode, mib(int64(bestMem))))}
	case float64(need.CPUs) > bestCPU:
		return &RefusalError{Resource: "cpu", Message: fmt.Sprintf("no node has %d CPUs free while keeping N+1 (overcommit %.1fx); %s", need.CPUs, c.pol.CPURatio, most(cpuNode, fmt.Sprintf("%.0f", bestCPU)))}
	case !in.shared && float64(need.DiskMiB) > bestDisk:
		return &RefusalError{Resource: "disk", Message: fmt.Sprintf("no node has %s of disk free; %s", mib(need.DiskMiB), most(diskNode, mib(int64(bestDisk))))}
	case c.wantsSecondary(i):
		return &RefusalError{Resource: "memory", Message: fmt.Sprintf("no pair of nodes can take %s of memory as primary and its failover as secondary while keeping N+1 (placement rules: different nodes%s)", mib(need.MemMiB), c.spreadRule())}
	}
	return &RefusalError{Resource: "spread", Message: "no node satisfies the placement rules (anti-affinity group " + c.groupName(in.group) + ")"}
}

func (c *Cluster) spreadRule() string {
	if c.pol.SpreadLabel == "" {
		return ""
	}
	return ", different " + c.pol.SpreadLabel
}

func (c *Cluster) groupName(g int32) string {
	for name, i := range c.groups {
		if i == g {
			return name
		}
	}
	return "-"
}

// Capacity counts how many more instances of size fit while keeping N+1,
// by placing them one by one as Allocate would. The order of placements
// decides how well they pack, so it packs once with the policy's weights
// and again with each resource's spread weighed heavier (the resource that
// runs out first is the one worth balancing), and reports the best: a
// count some sequence of real allocations reaches.
func Capacity(s Snapshot, size Resources) (CapacityReport, error) {
	if size.CPUs <= 0 && size.MemMiB <= 0 && size.DiskMiB <= 0 {
		return CapacityReport{}, fmt.Errorf("size: give at least one of cpus, memory and disk greater than zero")
	}
	base := withDefaults(s.Policy).Weights
	variants := []Weights{base}
	for _, f := range []func(*Weights){
		func(w *Weights) { w.Disk *= 3 },
		func(w *Weights) { w.Disk *= 9 },
		func(w *Weights) { w.Disk *= 30 },
		func(w *Weights) { w.Mem *= 3; w.Reserve *= 3 },
		func(w *Weights) { w.Disk *= 3; w.Mem *= 3; w.Reserve *= 3 },
		func(w *Weights) { w.CPU *= 3 },
	} {
		w := base
		f(&w)
		variants = append(variants, w)
	}
	// The packings are independent: run them side by side.
	reports := make([]CapacityReport, len(variants))
	errs := make([]error, len(variants))
	var wg sync.WaitGroup
	for k, w := range variants {
		v := s
		v.Policy.Weights = w
		wg.Go(func() { reports[k], errs[k] = capacityOnce(v, size) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return CapacityReport{}, err
	}
	best := reports[0]
	for _, r := range reports[1:] {
		if r.Fit > best.Fit {
			best = r
		}
	}
	return best, nil
}

func capacityOnce(s Snapshot, size Resources) (CapacityReport, error) {
	c, err := NewCluster(s)
	if err != nil {
		return CapacityReport{}, err
	}
	r := CapacityReport{Size: size}
	for {
		_, err := c.Allocate(Instance{Name: fmt.Sprintf("\x00capacity-%d", r.Fit), Size: size}, AllocateOptions{})
		var ref *RefusalError
		switch {
		case err == nil:
			r.Fit++
			continue
		case asRefusal(err, &ref):
			r.Limit, r.Reason = ref.Resource, ref.Message
		default:
			return CapacityReport{}, err
		}
		break
	}
	r.ScoreAfter = c.Score()
	return r, nil
}

func asRefusal(err error, ref **RefusalError) bool {
	r, ok := err.(*RefusalError)
	if ok {
		*ref = r
	}
	return ok
}

// Secondary chooses a new secondary for instance name, keeping its
// primary: the node that takes its replica with the lowest score, keeping
// N+1 when any node can. It returns "" with a *RefusalError when no node
// has room for the disk. The cluster is not changed.
func (c *Cluster) Secondary(name string) (string, error) {
	i, ok := c.byInst[name]
	if !ok {
		return "", fmt.Errorf("instance %q is not in the cluster", name)
	}
	in := &c.insts[i]
	if in.p == none {
		return "", fmt.Errorf("instance %q has no primary", name)
	}
	for _, keepN1 := range []bool{true, false} {
		best, score := none, math.Inf(1)
		for _, s := range c.all {
			if s == in.p || s == in.s || !c.eligible(i, in.p, s) {
				continue
			}
			sc, fits := c.try(i, in.p, s, keepN1)
			if fits && sc < score {
				best, score = s, sc
			}
		}
		if best != none {
			return c.nodeName(best), nil
		}
	}
	return "", &RefusalError{Resource: "disk", Message: fmt.Sprintf("no other schedulable node has %s of disk free for the replica of %s", mib(in.size.DiskMiB), name)}
}

// Place puts instance name on primary and secondary ("" for none) as
// decided elsewhere (a failover, a move the caller made), so that later
// decisions on this Cluster see it. It checks only that the nodes exist.
func (c *Cluster) Place(name, primary, secondary string) error {
	i, ok := c.byInst[name]
	if !ok {
		return fmt.Errorf("instance %q is not in the cluster", name)
	}
	p, err := c.nodeRef(name, "primary", primary)
	if err != nil {
		return err
	}
	s, err := c.nodeRef(name, "secondary", secondary)
	if err != nil {
		return err
	}
	if p != none && p == s {
		return fmt.Errorf("instance %q: primary and secondary are both %s", name, primary)
	}
	c.move(i, p, s)
	return nil
}
