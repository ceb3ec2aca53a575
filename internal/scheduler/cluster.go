package scheduler

import (
	"fmt"
	"math"
)

// The four per-node figures whose spread across nodes the score measures.
const (
	metricMem = iota
	metricCPU
	metricDisk
	metricReserve
	numMetrics
)

// none marks a missing node index (no secondary, not placed).
const none int32 = -1

// Cluster is a snapshot indexed for fast decisions: the scheduler's working
// state. Allocate and Apply change it; everything else only reads it. A
// Cluster is not safe for concurrent use.
type Cluster struct {
	pol   Policy
	nodes []nodeState
	insts []instState
	// byNode and byInst find indexes by name.
	byNode map[string]int32
	byInst map[string]int32
	// groups names the anti-affinity groups; groupOn counts the instances
	// of each group per primary node.
	groups  map[string]int32
	groupOn map[groupNode]int32
	// src keeps the nodes as given and tags keeps instance tags, so that
	// Snapshot gives back what it was given.
	src  []Node
	tags map[int32][]string
	// Running sums over online nodes, for the spreads.
	online    int
	sum, sum2 [numMetrics]float64
	// n1 is the N+1 penalty summed over failing nodes (1 + how far past
	// the limit); n1Count counts them.
	n1        float64
	n1Count   int
	over      int
	conflicts int
	// sched counts the schedulable nodes; all lists them.
	sched int
	all   []int32
	// cands is the allocation candidate list, chosen at allocation
	// number candsAt; allocs counts allocations.
	cands           []int32
	allocs, candsAt int
}

type groupNode struct{ group, node int32 }

// nodeState is one node with what is placed on it.
type nodeState struct {
	name    string
	capCPU  float64 // physical CPUs times the overcommit ratio
	capMem  float64
	capDisk float64
	domain  string // value of the spread label
	sched   bool   // takes new primaries and secondaries
	offline bool
	// used is what primaries take (CPU, memory, disk) plus the disks of
	// the replicas held here.
	usedCPU, usedMem, usedDisk int64
	// fo sums, per primary node, the instances replicated here: what
	// lands here if that node dies. resMem and resCPU are the largest.
	fo             map[int32]failover
	resMem, resCPU int64
	nPri, nSec     int
	// Cached figures as counted in the cluster's sums.
	metric [numMetrics]float64
	n1     float64 // 0, or 1 + how far past its N+1 limit
	over   bool
}

type failover struct{ mem, cpu int64 }

type instState struct {
	name   string
	size   Resources
	p, s   int32
	group  int32
	shared bool
}

// NewCluster indexes s. It fails on an inconsistent snapshot: a name used
// twice, a negative size, or an instance on an unknown node.
func NewCluster(s Snapshot) (*Cluster, error) {
	c := &Cluster{
		pol:     withDefaults(s.Policy),
		byNode:  make(map[string]int32, len(s.Nodes)),
		byInst:  make(map[string]int32, len(s.Instances)),
		groups:  map[string]int32{},
		groupOn: map[groupNode]int32{},
		nodes:   make([]nodeState, 0, len(s.Nodes)),
		src:     append([]Node(nil), s.Nodes...),
		tags:    map[int32][]string{},
		insts:   make([]instState, 0, len(s.Instances)),
	}
	if err := validPolicy(s.Policy); err != nil {
		return nil, err
	}
	for i, n := range s.Nodes {
		if n.Name == "" {
			return nil, fmt.Errorf("nodes[%d]: name is empty", i)
		}
		if _, dup := c.byNode[n.Name]; dup {
			return nil, fmt.Errorf("nodes[%d]: node %q appears twice", i, n.Name)
		}
		if err := nonNegative(fmt.Sprintf("node %q capacity", n.Name), n.Capacity); err != nil {
			return nil, err
		}
		c.byNode[n.Name] = int32(len(c.nodes))
		ns := nodeState{
			name:    n.Name,
			capCPU:  float64(n.Capacity.CPUs) * c.pol.CPURatio,
			capMem:  float64(n.Capacity.MemMiB) * c.pol.MemRatio,
			capDisk: float64(n.Capacity.DiskMiB),
			sched:   !n.Unschedulable && !n.Offline,
			offline: n.Offline,
		}
		if c.pol.SpreadLabel != "" {
			ns.domain = n.Labels[c.pol.SpreadLabel]
		}
		c.nodes = append(c.nodes, ns)
		if ns.sched {
			c.sched++
			c.all = append(c.all, int32(len(c.nodes)-1))
		}
	}
	for i := range c.nodes {
		c.count(int32(i), +1)
	}
	for i, in := range s.Instances {
		if in.Name == "" {
			return nil, fmt.Errorf("instances[%d]: name is empty", i)
		}
		if _, dup := c.byInst[in.Name]; dup {
			return nil, fmt.Errorf("instances[%d]: instance %q appears twice", i, in.Name)
		}
		if err := nonNegative(fmt.Sprintf("instance %q size", in.Name), in.Size); err != nil {
			return nil, err
		}
		p, err := c.nodeRef(in.Name, "primary", in.Primary)
		if err != nil {
			return nil, err
		}
		sec, err := c.nodeRef(in.Name, "secondary", in.Secondary)
		if err != nil {
			return nil, err
		}
		if p == none && sec != none {
			return nil, fmt.Errorf("instance %q has a secondary (%s) but no primary", in.Name, in.Secondary)
		}
		if p != none && p == sec {
			return nil, fmt.Errorf("instance %q has %s as both primary and secondary", in.Name, in.Primary)
		}
		g := none
		if in.Group != "" {
			var ok bool
			if g, ok = c.groups[in.Group]; !ok {
				g = int32(len(c.groups))
				c.groups[in.Group] = g
			}
		}
		c.byInst[in.Name] = int32(len(c.insts))
		if len(in.Tags) > 0 {
			c.tags[int32(len(c.insts))] = in.Tags
		}
		c.insts = append(c.insts, instState{name: in.Name, size: in.Size, p: none, s: none, group: g, shared: in.SharedDisk})
		c.move(int32(len(c.insts)-1), p, sec)
	}
	return c, nil
}

func (c *Cluster) nodeRef(inst, role, name string) (int32, error) {
	if name == "" {
		return none, nil
	}
	i, ok := c.byNode[name]
	if !ok {
		return none, fmt.Errorf("instance %q: %s node %q is not in the cluster", inst, role, name)
	}
	return i, nil
}

func nonNegative(what string, r Resources) error {
	if r.CPUs < 0 || r.MemMiB < 0 || r.DiskMiB < 0 {
		return fmt.Errorf("%s: cpus, memory and disk must not be negative (got %d, %d MiB, %d MiB)", what, r.CPUs, r.MemMiB, r.DiskMiB)
	}
	return nil
}

func validPolicy(p Policy) error {
	if p.CPURatio < 0 || math.IsNaN(p.CPURatio) || math.IsInf(p.CPURatio, 0) {
		return fmt.Errorf("policy.cpuRatio: must be a positive number, got %v", p.CPURatio)
	}
	if p.MemRatio < 0 || math.IsNaN(p.MemRatio) || math.IsInf(p.MemRatio, 0) {
		return fmt.Errorf("policy.memRatio: must be a positive number, got %v", p.MemRatio)
	}
	w := p.Weights
	for _, f := range []struct {
		name string
		v    float64
	}{{"mem", w.Mem}, {"cpu", w.CPU}, {"disk", w.Disk}, {"reserve", w.Reserve}, {"n1", w.N1}, {"over", w.Over}, {"conflict", w.Conflict}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("policy.weights.%s: must be a number >= 0, got %v", f.name, f.v)
		}
	}
	return nil
}

// withDefaults fills in the policy's zero values.
func withDefaults(p Policy) Policy {
	if p.CPURatio == 0 {
		p.CPURatio = 4
	}
	if p.MemRatio == 0 {
		p.MemRatio = 1
	}
	w := &p.Weights
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&w.Mem, 1)
	def(&w.CPU, 1)
	def(&w.Disk, 1)
	def(&w.Reserve, 1)
	def(&w.N1, 1)
	def(&w.Over, 2)
	def(&w.Conflict, 0.5)
	return p
}

// count adds (sign +1) or takes out (-1) node i's cached figures from the
// cluster's sums.
func (c *Cluster) count(i int32, sign float64) {
	n := &c.nodes[i]
	if n.offline {
		return
	}
	if sign > 0 {
		n.metric, n.n1, n.over = c.figures(n, n.usedCPU, n.usedMem, n.usedDisk, n.resMem, n.resCPU)
	}
	c.online += int(sign)
	for k := 0; k < numMetrics; k++ {
		c.sum[k] += sign * n.metric[k]
		c.sum2[k] += sign * n.metric[k] * n.metric[k]
	}
	c.n1 += sign * n.n1
	if n.n1 > 0 {
		c.n1Count += int(sign)
	}
	if n.over {
		c.over += int(sign)
	}
}

// figures computes a node's metrics, N+1 penalty and over-allocation for
// the given use.
func (c *Cluster) figures(n *nodeState, cpu, mem, disk, resMem, resCPU int64) (m [numMetrics]float64, n1 float64, over bool) {
	m[metricMem] = frac(float64(mem), n.capMem)
	m[metricCPU] = frac(float64(cpu), n.capCPU)
	m[metricDisk] = frac(float64(disk), n.capDisk)
	m[metricReserve] = frac(float64(mem+resMem), n.capMem)
	over = float64(mem) > n.capMem || float64(cpu) > n.capCPU || float64(disk) > n.capDisk
	excess := math.Max(m[metricReserve]-1, frac(float64(cpu+resCPU), n.capCPU)-1)
	// A node that replicates nothing has nothing to take over: an
	// over-allocated one counts as over, not as failing N+1.
	if (resMem > 0 && float64(mem+resMem) > n.capMem) || (resCPU > 0 && float64(cpu+resCPU) > n.capCPU) {
		n1 = 1 + math.Max(excess, 0)
	}
	return m, n1, over
}

// frac is used/capacity, with an empty node counting as full once used.
func frac(used, capacity float64) float64 {
	if capacity <= 0 {
		if used > 0 {
			return 2
		}
		return 0
	}
	return used / capacity
}

// Score returns the cluster score: lower is better.
func (c *Cluster) Score() float64 {
	return c.scoreOf(c.sum, c.sum2, c.online, c.n1, c.over, c.conflicts)
}

func (c *Cluster) scoreOf(sum, sum2 [numMetrics]float64, online int, n1 float64, over, conflicts int) float64 {
	w := c.pol.Weights
	weights := [numMetrics]float64{w.Mem, w.CPU, w.Disk, w.Reserve}
	s := 0.0
	if online > 0 {
		for k := 0; k < numMetrics; k++ {
			mean := sum[k] / float64(online)
			v := sum2[k]/float64(online) - mean*mean
			if v > 0 {
				s += weights[k] * math.Sqrt(v)
			}
		}
	}
	return s + w.N1*n1 + w.Over*float64(over) + w.Conflict*float64(conflicts)
}

// move puts instance i on primary p and secondary s (none to take it off),
// updating every sum.
func (c *Cluster) move(i, p, s int32) {
	in := &c.insts[i]
	c.place(i, -1)
	in.p, in.s = p, s
	c.place(i, +1)
}

// place adds (sign +1) or removes (-1) instance i's use at its current
// primary and secondary.
func (c *Cluster) place(i int32, sign int64) {
	in := &c.insts[i]
	if in.p == none {
		return
	}
	disk := in.size.DiskMiB
	if in.shared {
		disk = 0
	}
	p := &c.nodes[in.p]
	c.count(in.p, -1)
	p.usedCPU += sign * in.size.CPUs
	p.usedMem += sign * in.size.MemMiB
	p.usedDisk += sign * disk
	p.nPri += int(sign)
	c.count(in.p, +1)
	if in.s != none {
		s := &c.nodes[in.s]
		c.count(in.s, -1)
		s.usedDisk += sign * disk
		s.nSec += int(sign)
		if s.fo == nil {
			s.fo = map[int32]failover{}
		}
		f := s.fo[in.p]
		f.mem += sign * in.size.MemMiB
		f.cpu += sign * in.size.CPUs
		if f.mem == 0 && f.cpu == 0 {
			delete(s.fo, in.p)
		} else {
			s.fo[in.p] = f
		}
		s.resMem, s.resCPU = maxFailover(s.fo, none, failover{}, none, failover{})
		c.count(in.s, +1)
	}
	if in.group != none {
		k := groupNode{in.group, in.p}
		before := c.groupOn[k]
		after := before + int32(sign)
		c.conflicts += conflictsOf(after) - conflictsOf(before)
		if after == 0 {
			delete(c.groupOn, k)
		} else {
			c.groupOn[k] = after
		}
	}
}

// conflictsOf counts the instances in excess of one of a group on a node.
func conflictsOf(n int32) int {
	if n > 1 {
		return int(n - 1)
	}
	return 0
}

// maxFailover returns the largest memory and CPU over fo's entries, with
// entry a changed by da and entry b by db (none: no change).
func maxFailover(fo map[int32]failover, a int32, da failover, b int32, db failover) (mem, cpu int64) {
	seenA, seenB := a == none, b == none
	for k, f := range fo {
		if k == a {
			f.mem, f.cpu, seenA = f.mem+da.mem, f.cpu+da.cpu, true
		}
		if k == b {
			f.mem, f.cpu, seenB = f.mem+db.mem, f.cpu+db.cpu, true
		}
		mem, cpu = max(mem, f.mem), max(cpu, f.cpu)
	}
	if !seenA {
		mem, cpu = max(mem, da.mem), max(cpu, da.cpu)
	}
	if !seenB {
		mem, cpu = max(mem, db.mem), max(cpu, db.cpu)
	}
	return mem, cpu
}

// nodeDelta is how a candidate move changes one node.
type nodeDelta struct {
	node           int32
	cpu, mem, disk int64
	foA, foB       int32 // primaries whose failover entry here changes
	dA, dB         failover
	pri, sec       int
}

// effect lists the nodes a move of instance i to (p, s) changes, and how.
// It returns at most four deltas in ds.
func (c *Cluster) effect(i, p, s int32, ds *[4]nodeDelta) int {
	in := &c.insts[i]
	n := 0
	get := func(node int32) *nodeDelta {
		for k := 0; k < n; k++ {
			if ds[k].node == node {
				return &ds[k]
			}
		}
		ds[n] = nodeDelta{node: node, foA: none, foB: none}
		n++
		return &ds[n-1]
	}
	disk := in.size.DiskMiB
	if in.shared {
		disk = 0
	}
	addFO := func(d *nodeDelta, prim int32, f failover) {
		switch {
		case d.foA == none || d.foA == prim:
			d.foA = prim
			d.dA.mem += f.mem
			d.dA.cpu += f.cpu
		default:
			d.foB = prim
			d.dB.mem += f.mem
			d.dB.cpu += f.cpu
		}
	}
	apply := func(prim, sec int32, sign int64) {
		if prim == none {
			return
		}
		d := get(prim)
		d.cpu += sign * in.size.CPUs
		d.mem += sign * in.size.MemMiB
		d.disk += sign * disk
		d.pri += int(sign)
		if sec != none {
			d := get(sec)
			d.disk += sign * disk
			d.sec += int(sign)
			addFO(d, prim, failover{sign * in.size.MemMiB, sign * in.size.CPUs})
		}
	}
	apply(in.p, in.s, -1)
	apply(p, s, +1)
	return n
}

// try returns the score the cluster would have with instance i on (p, s),
// and whether that placement keeps every node it touches within capacity
// (and, with keepN1, within N+1). It changes nothing.
func (c *Cluster) try(i, p, s int32, keepN1 bool) (score float64, ok bool) {
	var ds [4]nodeDelta
	n := c.effect(i, p, s, &ds)
	sum, sum2 := c.sum, c.sum2
	n1, over := c.n1, c.over
	for k := 0; k < n; k++ {
		d := &ds[k]
		node := &c.nodes[d.node]
		resMem, resCPU := node.resMem, node.resCPU
		switch {
		case d.foA == none:
		case d.foB == none && d.dA.mem >= 0 && d.dA.cpu >= 0:
			// Growth only: the largest entry is the old largest or the
			// grown one, no need to look at the others.
			f := node.fo[d.foA]
			resMem, resCPU = max(resMem, f.mem+d.dA.mem), max(resCPU, f.cpu+d.dA.cpu)
		default:
			resMem, resCPU = maxFailover(node.fo, d.foA, d.dA, d.foB, d.dB)
		}
		m, nn1, nover := c.figures(node, node.usedCPU+d.cpu, node.usedMem+d.mem, node.usedDisk+d.disk, resMem, resCPU)
		grows := d.cpu > 0 || d.mem > 0 || d.disk > 0 || d.dA.mem > 0 || d.dA.cpu > 0 || d.dB.mem > 0 || d.dB.cpu > 0
		if nover && grows {
			return 0, false
		}
		if keepN1 && nn1 > 0 && grows {
			return 0, false
		}
		if node.offline {
			continue
		}
		for k := 0; k < numMetrics; k++ {
			sum[k] += m[k] - node.metric[k]
			sum2[k] += m[k]*m[k] - node.metric[k]*node.metric[k]
		}
		n1 += nn1 - node.n1
		if nover != node.over {
			if nover {
				over++
			} else {
				over--
			}
		}
	}
	conflicts := c.conflicts
	in := &c.insts[i]
	if in.group != none && in.p != p {
		if in.p != none {
			before := c.groupOn[groupNode{in.group, in.p}]
			conflicts += conflictsOf(before-1) - conflictsOf(before)
		}
		if p != none {
			before := c.groupOn[groupNode{in.group, p}]
			conflicts += conflictsOf(before+1) - conflictsOf(before)
		}
	}
	return c.scoreOf(sum, sum2, c.online, n1, over, conflicts), true
}

// eligible reports whether (p, s) may newly hold instance i: both
// schedulable, different, in different failure domains when the policy
// spreads, and no second instance of i's group on p.
func (c *Cluster) eligible(i, p, s int32) bool {
	in := &c.insts[i]
	if p == none || p == s {
		return false
	}
	if p != in.p && !c.nodes[p].sched {
		return false
	}
	if s != none {
		if s != in.s && s != in.p && !c.nodes[s].sched {
			return false
		}
		if c.pol.SpreadLabel != "" && c.nodes[p].domain != "" && c.nodes[p].domain == c.nodes[s].domain {
			return false
		}
	}
	if in.group != none && p != in.p && c.groupOn[groupNode{in.group, p}] > 0 {
		return false
	}
	return true
}

// bytesOf is what moving instance i to (p, s) copies between hosts: the
// memory when the primary changes, and the disk for each node of the new
// pair that held no copy.
func (c *Cluster) bytesOf(i, p, s int32) int64 {
	in := &c.insts[i]
	var mib int64
	if p != in.p {
		mib += in.size.MemMiB
	}
	if !in.shared {
		for _, n := range [2]int32{p, s} {
			if n != none && n != in.p && n != in.s {
				mib += in.size.DiskMiB
			}
		}
	}
	return mib << 20
}

// kindOf names the move of instance i to (p, s) in hbal's terms.
func (c *Cluster) kindOf(i, p, s int32) MoveKind {
	in := &c.insts[i]
	switch {
	case p == in.s && s == in.p:
		return MoveFailover
	case p == in.p && s != in.s:
		return MoveReplaceSecondary
	case s == in.p && p != in.s:
		return MoveReplaceAndFailover
	case p == in.s && s != in.p:
		return MoveFailoverAndReplace
	case s == in.s && p != in.p:
		return MovePrimary
	}
	return MoveOther
}

// nodeName returns a node's name, or "" for none.
func (c *Cluster) nodeName(i int32) string {
	if i == none {
		return ""
	}
	return c.nodes[i].name
}

// Snapshot returns the cluster as it is now.
func (c *Cluster) Snapshot() Snapshot {
	s := Snapshot{Policy: c.pol, Nodes: append([]Node(nil), c.src...), Instances: make([]Instance, len(c.insts))}
	names := make([]string, len(c.groups))
	for g, i := range c.groups {
		names[i] = g
	}
	for i := range c.insts {
		in := &c.insts[i]
		s.Instances[i] = Instance{Name: in.name, Size: in.size, Primary: c.nodeName(in.p), Secondary: c.nodeName(in.s), SharedDisk: in.shared, Tags: c.tags[int32(i)]}
		if in.group != none {
			s.Instances[i].Group = names[in.group]
		}
	}
	return s
}

// recount recomputes every sum from the nodes, dropping the rounding
// drift of many small updates.
func (c *Cluster) recount() {
	c.online, c.sum, c.sum2, c.n1, c.n1Count, c.over = 0, [numMetrics]float64{}, [numMetrics]float64{}, 0, 0, 0
	for i := range c.nodes {
		c.count(int32(i), +1)
	}
}
