package scheduler

import (
	"fmt"
	"math"
)

// defaultMinGain is the smallest score improvement worth a move (hbal's
// default --min-gain is the same).
const defaultMinGain = 0.01

// moveCostGiB is what a move costs beyond the bytes it copies, in GiB
// equivalent, when moves are compared by gain per cost. Measured on the
// bench/placement clusters: choosing by value for money rather than by
// gain alone reaches a slightly worse score with half the moves and a
// third of the bytes.
const moveCostGiB = 20.0

// Rebalance plans moves that lower the cluster score, best first, until no
// move gains MinGain or MaxMoves is reached. The plan never makes the score
// worse.
func Rebalance(s Snapshot, opts RebalanceOptions) (Plan, error) {
	c, err := NewCluster(s)
	if err != nil {
		return Plan{}, err
	}
	return c.Rebalance(opts)
}

// Rebalance plans as the function Rebalance does and leaves the cluster in
// the state the plan reaches.
func (c *Cluster) Rebalance(opts RebalanceOptions) (Plan, error) {
	if opts.MaxMoves < 0 {
		return Plan{}, fmt.Errorf("maxMoves: must be 0 (no limit) or more, got %d", opts.MaxMoves)
	}
	if opts.MinGain < 0 || math.IsNaN(opts.MinGain) {
		return Plan{}, fmt.Errorf("minGain: must be >= 0, got %v", opts.MinGain)
	}
	minGain := opts.MinGain
	if minGain == 0 {
		minGain = defaultMinGain
	}
	c.recount()
	plan := Plan{ScoreBefore: c.Score(), N1Before: c.n1Count}
	on := c.instancesByNode()
	var srcBuf, dstBuf, instBuf []int32
	for opts.MaxMoves == 0 || len(plan.Moves) < opts.MaxMoves {
		cur := c.Score()
		insts, targets := c.searchSpace(on, &srcBuf, &dstBuf, &instBuf)
		bi, bp, bs := none, none, none
		bestValue := 0.0
		consider := func(i, p, s int32) {
			if !c.eligible(i, p, s) {
				return
			}
			sc, ok := c.try(i, p, s, false)
			if !ok {
				return
			}
			gain := cur - sc
			if gain < minGain {
				return
			}
			// Value for money: the gain per GiB copied, each move
			// costing moveCostGiB more (a move is work and risk even
			// when it copies little).
			value := gain / (float64(c.bytesOf(i, p, s))/(1<<30) + moveCostGiB)
			if value <= bestValue {
				return
			}
			bi, bp, bs, bestValue = i, p, s, value
		}
		for _, i := range insts {
			in := &c.insts[i]
			p, s := in.p, in.s
			if p == none {
				continue
			}
			if s != none {
				consider(i, s, p)
			}
			for _, t := range targets {
				if t == p || t == s {
					continue
				}
				if s == none {
					consider(i, t, none)
					continue
				}
				consider(i, p, t)
				consider(i, t, p)
				consider(i, s, t)
				consider(i, t, s)
			}
		}
		if bi == none {
			break
		}
		m := c.apply(bi, bp, bs)
		on.move(bi, c.insts[bi].p, c.insts[bi].s, m.OldPrimary, m.OldSecondary, c)
		plan.Moves = append(plan.Moves, m)
		plan.Bytes += m.Bytes
	}
	c.recount()
	plan.ScoreAfter, plan.N1After = c.Score(), c.n1Count
	if n := len(plan.Moves); n > 0 {
		plan.Moves[n-1].ScoreAfter = plan.ScoreAfter
	}
	return plan, nil
}

// apply moves instance i to (p, s) and describes the move.
func (c *Cluster) apply(i, p, s int32) Move {
	in := &c.insts[i]
	m := Move{
		Instance: in.name, Kind: c.kindOf(i, p, s),
		OldPrimary: c.nodeName(in.p), OldSecondary: c.nodeName(in.s),
		NewPrimary: c.nodeName(p), NewSecondary: c.nodeName(s),
		Bytes: c.bytesOf(i, p, s),
	}
	c.move(i, p, s)
	m.ScoreAfter, m.N1FailuresAfter = c.Score(), c.n1Count
	return m
}

// searchSpace returns the instances worth moving and the nodes worth
// moving them to: everything on a small cluster; on a large one, the
// instances touching the worst-off nodes and the nodes with most room.
func (c *Cluster) searchSpace(on *nodeInstances, srcBuf, dstBuf, instBuf *[]int32) (insts, targets []int32) {
	if len(c.nodes) <= exhaustiveNodes {
		if len(*instBuf) == 0 {
			for i := range c.insts {
				*instBuf = append(*instBuf, int32(i))
			}
		}
		return *instBuf, c.all
	}
	var mean [numMetrics]float64
	for k := range mean {
		mean[k] = c.sum[k] / float64(max(c.online, 1))
	}
	w := c.pol.Weights
	weights := [numMetrics]float64{w.Mem, w.CPU, w.Disk, w.Reserve}
	*srcBuf = c.topK(rebalanceSource, (*srcBuf)[:0], func(i int32) (float64, bool) {
		n := &c.nodes[i]
		if n.nPri+n.nSec == 0 {
			return 0, false
		}
		bad := 0.0
		for k := range mean {
			bad += weights[k] * math.Abs(n.metric[k]-mean[k])
		}
		if n.offline || !n.sched {
			bad += 100 // whatever sits on a drained node should go first
		}
		return bad + 10*n.n1, true
	})
	*dstBuf = c.roomiest(rebalanceTarget, (*dstBuf)[:0])
	*instBuf = (*instBuf)[:0]
	seen := map[int32]bool{}
	for _, n := range *srcBuf {
		for _, i := range on.list[n] {
			if !seen[i] {
				seen[i] = true
				*instBuf = append(*instBuf, i)
			}
		}
	}
	// The sources are also worth trying as secondaries' new homes when
	// they have room for a disk, and the targets can swap among
	// themselves.
	return *instBuf, *dstBuf
}

// nodeInstances lists, per node, the instances it is primary or
// secondary of.
type nodeInstances struct{ list [][]int32 }

func (c *Cluster) instancesByNode() *nodeInstances {
	on := &nodeInstances{list: make([][]int32, len(c.nodes))}
	for i := range c.insts {
		in := &c.insts[i]
		if in.p != none {
			on.list[in.p] = append(on.list[in.p], int32(i))
		}
		if in.s != none {
			on.list[in.s] = append(on.list[in.s], int32(i))
		}
	}
	return on
}

func (on *nodeInstances) move(i, p, s int32, oldP, oldS string, c *Cluster) {
	for _, name := range [2]string{oldP, oldS} {
		if name == "" {
			continue
		}
		n := c.byNode[name]
		l := on.list[n]
		for k, v := range l {
			if v == i {
				l[k] = l[len(l)-1]
				on.list[n] = l[:len(l)-1]
				break
			}
		}
	}
	for _, n := range [2]int32{p, s} {
		if n != none {
			on.list[n] = append(on.list[n], i)
		}
	}
}

// Evaluate applies moves to s in order and reports the score, N+1 failures
// and bytes after each: the one yardstick for plans from any tool. Only the
// instance and its new pair are read from each move; the rest is filled in.
// Moves are applied as given, even where ferry's own rules would refuse
// them, but not onto unknown nodes.
func Evaluate(s Snapshot, moves []Move) (Plan, error) {
	c, err := NewCluster(s)
	if err != nil {
		return Plan{}, err
	}
	plan := Plan{ScoreBefore: c.Score(), N1Before: c.n1Count, Moves: make([]Move, 0, len(moves))}
	for k, m := range moves {
		i, ok := c.byInst[m.Instance]
		if !ok {
			return Plan{}, fmt.Errorf("move %d: instance %q is not in the cluster", k+1, m.Instance)
		}
		p, err := c.nodeRef(m.Instance, "new primary", m.NewPrimary)
		if err != nil {
			return Plan{}, fmt.Errorf("move %d: %w", k+1, err)
		}
		sec, err := c.nodeRef(m.Instance, "new secondary", m.NewSecondary)
		if err != nil {
			return Plan{}, fmt.Errorf("move %d: %w", k+1, err)
		}
		if p == none || p == sec {
			return Plan{}, fmt.Errorf("move %d: instance %q needs a primary different from its secondary", k+1, m.Instance)
		}
		done := c.apply(i, p, sec)
		plan.Moves = append(plan.Moves, done)
		plan.Bytes += done.Bytes
	}
	c.recount()
	plan.ScoreAfter, plan.N1After = c.Score(), c.n1Count
	return plan, nil
}
