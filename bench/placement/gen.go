package main

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// The synthetic clusters: three node generations, instances of mixed sizes,
// every instance replicated DRBD-style (a primary and a secondary holding
// its disk). Everything is in MiB, as Ganeti counts it.

const (
	gib = 1024 // MiB
	tib = 1024 * gib
)

// cpuRatio is the vCPU overcommit both tools allow (Ganeti's default
// vcpu-ratio, the scheduler's default CPURatio).
const cpuRatio = 4

// generation is one kind of host, and its share of a cluster's nodes.
type generation struct {
	cap   scheduler.Resources
	share int // percent
}

var generations = []generation{
	{scheduler.Resources{CPUs: 16, MemMiB: 64 * gib, DiskMiB: 1 * tib}, 40},
	{scheduler.Resources{CPUs: 32, MemMiB: 128 * gib, DiskMiB: 2 * tib}, 40},
	{scheduler.Resources{CPUs: 48, MemMiB: 256 * gib, DiskMiB: 4 * tib}, 20},
}

// weighted is a value drawn with a weight.
type weighted struct{ v, w int64 }

var (
	// Mean about 4.9 GiB.
	memSizes = []weighted{{1 * gib, 20}, {2 * gib, 25}, {4 * gib, 25}, {8 * gib, 20}, {16 * gib, 10}}
	// Mean about 44 GiB.
	diskSizes = []weighted{{10 * gib, 30}, {20 * gib, 30}, {50 * gib, 20}, {100 * gib, 15}, {200 * gib, 5}}
)

func draw(r *rand.Rand, ws []weighted) int64 {
	var total int64
	for _, w := range ws {
		total += w.w
	}
	x := r.Int64N(total)
	for _, w := range ws {
		if x < w.w {
			return w.v
		}
		x -= w.w
	}
	return ws[len(ws)-1].v
}

// randomSize draws an instance size: 1-16 GiB of memory, 1-8 vCPUs
// (roughly one per 2 GiB, give or take), 10-200 GiB of disk.
func randomSize(r *rand.Rand) scheduler.Resources {
	mem := draw(r, memSizes)
	cpus := max(1, min(8, mem/(2*gib)+r.Int64N(3)-1))
	return scheduler.Resources{CPUs: cpus, MemMiB: mem, DiskMiB: draw(r, diskSizes)}
}

func nodeName(i int) string { return fmt.Sprintf("node-%05d", i+1) }
func instName(i int) string { return fmt.Sprintf("inst-%06d", i+1) }

// newNodes makes n nodes of the three generations in their shares, in a
// seeded random order.
func newNodes(r *rand.Rand, n int) []scheduler.Node {
	nodes := make([]scheduler.Node, 0, n)
	for gi, g := range generations {
		k := n * g.share / 100
		if gi == len(generations)-1 {
			k = n - len(nodes)
		}
		for range k {
			nodes = append(nodes, scheduler.Node{Capacity: g.cap})
		}
	}
	r.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	for i := range nodes {
		nodes[i].Name = nodeName(i)
	}
	return nodes
}

// state tracks what the generator has placed, with Ganeti's view of N+1:
// a node fails it when its free memory is less than the memory of the
// instances that would fail over onto it when their primary, any single
// other node, dies (htools' rMem: the largest per-peer sum).
type state struct {
	nodes []scheduler.Node
	insts []scheduler.Instance
	pri   []int // instance -> primary node index
	sec   []int // instance -> secondary node index
	mem   []int64
	cpu   []int64
	disk  []int64
	// peer[x][p] is the memory of instances with primary p and secondary x.
	peer []map[int]int64
}

func newState(nodes []scheduler.Node) *state {
	st := &state{nodes: nodes, mem: make([]int64, len(nodes)), cpu: make([]int64, len(nodes)),
		disk: make([]int64, len(nodes)), peer: make([]map[int]int64, len(nodes))}
	for i := range st.peer {
		st.peer[i] = map[int]int64{}
	}
	return st
}

func (st *state) free(x int) int64 { return st.nodes[x].Capacity.MemMiB - st.mem[x] }

func (st *state) rmem(x int) int64 {
	var m int64
	for _, v := range st.peer[x] {
		m = max(m, v)
	}
	return m
}

func (st *state) failsN1(x int) bool { return st.free(x) < st.rmem(x) }

func (st *state) n1Failures() int {
	n := 0
	for x := range st.nodes {
		if st.failsN1(x) {
			n++
		}
	}
	return n
}

// fitsPrimary says whether node p can run an instance of size z (capacity
// only; N+1 is the caller's business).
func (st *state) fitsPrimary(p int, z scheduler.Resources) bool {
	c := st.nodes[p].Capacity
	return st.mem[p]+z.MemMiB <= c.MemMiB && st.cpu[p]+z.CPUs <= cpuRatio*c.CPUs && st.disk[p]+z.DiskMiB <= c.DiskMiB
}

func (st *state) fitsDisk(x int, z scheduler.Resources) bool {
	return st.disk[x]+z.DiskMiB <= st.nodes[x].Capacity.DiskMiB
}

func (st *state) add(z scheduler.Resources, p, s int) {
	i := len(st.insts)
	st.insts = append(st.insts, scheduler.Instance{Name: instName(i), Size: z})
	st.pri, st.sec = append(st.pri, p), append(st.sec, s)
	st.mem[p] += z.MemMiB
	st.cpu[p] += z.CPUs
	st.disk[p] += z.DiskMiB
	st.disk[s] += z.DiskMiB
	st.peer[s][p] += z.MemMiB
}

// moveSecondary gives instance i the secondary s.
func (st *state) moveSecondary(i, s int) {
	z, p, old := st.insts[i].Size, st.pri[i], st.sec[i]
	st.disk[old] -= z.DiskMiB
	st.peer[old][p] -= z.MemMiB
	if st.peer[old][p] == 0 {
		delete(st.peer[old], p)
	}
	st.disk[s] += z.DiskMiB
	st.peer[s][p] += z.MemMiB
	st.sec[i] = s
}

func (st *state) snapshot() scheduler.Snapshot {
	insts := slices.Clone(st.insts)
	for i := range insts {
		insts[i].Primary = st.nodes[st.pri[i]].Name
		insts[i].Secondary = st.nodes[st.sec[i]].Name
	}
	return scheduler.Snapshot{Nodes: slices.Clone(st.nodes), Instances: insts}
}

// genClean makes an N+1-clean cluster of n nodes with 3 instances per node
// spread evenly: primaries round robin, each secondary on a node that keeps
// every node N+1, the one replicating the fewest other nodes first.
func genClean(n int, seed uint64) (scheduler.Snapshot, error) {
	r := rand.New(rand.NewPCG(seed, 0xc1ea))
	st := newState(newNodes(r, n))
	order := make([]int, n)
	for k := range 3 * n {
		p := k % n
		placed := false
		for range 20 { // redraw a size that fits nowhere
			z := randomSize(r)
			if !st.fitsPrimary(p, z) || st.free(p)-z.MemMiB < st.rmem(p) {
				continue
			}
			for i := range order {
				order[i] = i
			}
			r.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
			slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(st.peer[a]), len(st.peer[b])) })
			for _, s := range order {
				if s == p || !st.fitsDisk(s, z) || st.peer[s][p]+z.MemMiB > st.free(s) {
					continue
				}
				st.add(z, p, s)
				placed = true
				break
			}
			if placed {
				break
			}
		}
		if !placed {
			return scheduler.Snapshot{}, fmt.Errorf("clean %d nodes: instance %d fits nowhere", n, k)
		}
	}
	if f := st.n1Failures(); f != 0 {
		return scheduler.Snapshot{}, fmt.Errorf("clean %d nodes: %d nodes fail N+1", n, f)
	}
	return st.snapshot(), nil
}

// skewedShare is the share of instances packed onto a third of the nodes,
// and skewedFail the share of nodes failing N+1 the generator aims at.
const (
	skewedShare = 0.6
	skewedFail  = 0.25
)

// genSkewed makes a cluster of n nodes with about 8 instances per node, 60%
// of them (primaries and secondaries) packed onto a random third of the
// nodes, the rest spread at random over the others, and then concentrates
// or spreads secondaries until a quarter of the nodes fail N+1 (Ganeti's
// memory test). No node is over its capacity.
func genSkewed(n int, seed uint64) (scheduler.Snapshot, error) {
	r := rand.New(rand.NewPCG(seed, 0x5ce7))
	st := newState(newNodes(r, n))
	perm := r.Perm(n)
	nh := max(2, n/3)
	hot, cold := perm[:nh], perm[nh:]
	isHot := make([]bool, n)
	for _, h := range hot {
		isHot[h] = true
	}
	pick := func(set []int, ok func(int) bool) int {
		// A random node of set for which ok holds: a few random tries,
		// then a scan from a random start.
		for range 8 {
			if x := set[r.IntN(len(set))]; ok(x) {
				return x
			}
		}
		start := r.IntN(len(set))
		for i := range set {
			if x := set[(start+i)%len(set)]; ok(x) {
				return x
			}
		}
		return -1
	}
	for range 8 * n {
		z := randomSize(r)
		first, second := cold, hot
		if r.Float64() < skewedShare {
			first, second = hot, cold
		}
		fits := func(x int) bool { return st.fitsPrimary(x, z) }
		p := pick(first, fits)
		if p < 0 {
			if p = pick(second, fits); p < 0 {
				continue // full: about 8 per node, not exactly
			}
		}
		set := cold
		if isHot[p] {
			set = hot
		}
		disk := func(x int) bool { return x != p && st.fitsDisk(x, z) }
		s := pick(set, disk)
		if s < 0 {
			if s = pick(perm, disk); s < 0 {
				continue
			}
		}
		st.add(z, p, s)
	}
	target := int(float64(n)*skewedFail + 0.5)
	prim := make([][]int, n) // instances by primary, largest memory first
	for i, p := range st.pri {
		prim[p] = append(prim[p], i)
	}
	for _, is := range prim {
		slices.SortStableFunc(is, func(a, b int) int { return cmp.Compare(st.insts[b].Size.MemMiB, st.insts[a].Size.MemMiB) })
	}
	// Too few failing: make the tightest passing nodes fail, one by one, by
	// moving onto each the secondaries of some instances of one peer, taken
	// from nodes that pass N+1 (and still pass without them).
	failures := st.n1Failures()
	if failures < target {
		var cands []int
		for x := range n {
			if !st.failsN1(x) {
				cands = append(cands, x)
			}
		}
		slices.SortStableFunc(cands, func(a, b int) int {
			return cmp.Compare(st.free(a)-st.rmem(a), st.free(b)-st.rmem(b))
		})
		failing := make([]bool, n)
		for x := range n {
			failing[x] = st.failsN1(x)
		}
		for _, x := range cands {
			if failures >= target {
				break
			}
			for _, p := range r.Perm(n) {
				if p == x || st.peer[x][p]+st.mem[p] <= st.free(x) {
					continue // even all of p's instances would not do
				}
				var need []int
				sum, disk := st.peer[x][p], int64(0)
				for _, i := range prim[p] {
					if sum > st.free(x) {
						break
					}
					z := st.insts[i].Size
					if st.sec[i] == x || failing[st.sec[i]] || !st.fitsDisk(x, scheduler.Resources{DiskMiB: disk + z.DiskMiB}) {
						continue
					}
					need = append(need, i)
					sum += z.MemMiB
					disk += z.DiskMiB
				}
				if sum <= st.free(x) {
					continue
				}
				for _, i := range need {
					st.moveSecondary(i, x)
				}
				failing[x] = true
				failures++
				break
			}
		}
	}
	// Too many failing: heal the failing nodes with the smallest deficit by
	// moving secondaries of their largest peer to cold nodes that keep N+1.
	if failures > target {
		var fail []int
		for x := range n {
			if st.failsN1(x) {
				fail = append(fail, x)
			}
		}
		slices.SortStableFunc(fail, func(a, b int) int {
			return cmp.Compare(st.rmem(a)-st.free(a), st.rmem(b)-st.free(b))
		})
		for _, x := range fail {
			if failures <= target {
				break
			}
			for st.failsN1(x) {
				worst, wm := -1, int64(-1)
				for p, m := range st.peer[x] {
					if m > wm || (m == wm && p < worst) {
						worst, wm = p, m
					}
				}
				moved := false
				for _, i := range prim[worst] {
					if st.sec[i] != x {
						continue
					}
					z := st.insts[i].Size
					s := pick(cold, func(y int) bool {
						return y != worst && y != x && st.fitsDisk(y, z) && st.peer[y][worst]+z.MemMiB <= st.free(y)
					})
					if s >= 0 {
						st.moveSecondary(i, s)
						moved = true
						break
					}
				}
				if !moved {
					break
				}
			}
			if !st.failsN1(x) {
				failures--
			}
		}
	}
	if got := st.n1Failures(); got != target {
		return scheduler.Snapshot{}, fmt.Errorf("skewed %d nodes: %d nodes fail N+1, not %d", n, got, target)
	}
	return st.snapshot(), nil
}

// genEmpty makes n nodes and no instances, for the allocation run.
func genEmpty(n int, seed uint64) scheduler.Snapshot {
	r := rand.New(rand.NewPCG(seed, 0xe3e3))
	return scheduler.Snapshot{Nodes: newNodes(r, n)}
}

// allocSizes draws k instance sizes to allocate, unplaced.
func allocSizes(k int, seed uint64) []scheduler.Instance {
	r := rand.New(rand.NewPCG(seed, 0xa11c))
	insts := make([]scheduler.Instance, k)
	for i := range insts {
		insts[i] = scheduler.Instance{Name: fmt.Sprintf("new-%06d", i+1), Size: randomSize(r)}
	}
	return insts
}

// ganetiN1 counts the nodes of s failing N+1 by htools' memory test, as the
// generator sees it (a cross-check of hcheck and of the scheduler's Check).
func ganetiN1(s scheduler.Snapshot) int {
	idx := make(map[string]int, len(s.Nodes))
	for i, nd := range s.Nodes {
		idx[nd.Name] = i
	}
	st := newState(s.Nodes)
	for _, in := range s.Instances {
		p, ok1 := idx[in.Primary]
		q, ok2 := idx[in.Secondary]
		if !ok1 || !ok2 {
			continue
		}
		st.mem[p] += in.Size.MemMiB
		st.peer[q][p] += in.Size.MemMiB
	}
	return st.n1Failures()
}

// busiestThird is the share of the instances that run on the third of the
// nodes with the most primaries.
func busiestThird(s scheduler.Snapshot) float64 {
	if len(s.Instances) == 0 {
		return 0
	}
	count := map[string]int{}
	for _, in := range s.Instances {
		count[in.Primary]++
	}
	per := make([]int, 0, len(s.Nodes))
	for _, nd := range s.Nodes {
		per = append(per, count[nd.Name])
	}
	slices.Sort(per)
	top := 0
	for _, c := range per[len(per)-len(per)/3:] {
		top += c
	}
	return float64(top) / float64(len(s.Instances))
}
