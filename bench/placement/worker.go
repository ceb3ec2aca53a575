package main

// ferry's side of each case runs in a child process (this binary,
// re-executed with -ferry-worker), so that its wall time and peak memory
// are measured exactly as the htools' are, reading the file included.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

const workerFlag = "-ferry-worker"

// workerOut is what a worker prints (JSON on stdout).
type workerOut struct {
	ReadSeconds float64 `json:"readSeconds,omitempty"` // reading the Ganeti file
	GenSeconds  float64 `json:"genSeconds,omitempty"`  // generating the cluster in memory
	Seconds     float64 `json:"seconds"`               // the scheduler calls alone

	Capacity *scheduler.CapacityReport `json:"capacity,omitempty"`
	Plan     *scheduler.Plan           `json:"plan,omitempty"`

	// Large rebalances: the plan's moves are left out of Plan, and its end
	// state is checked here instead, by the scheduler's Check and by the
	// generator's own htools-style memory test.
	Nodes         int  `json:"nodes,omitempty"`
	Instances     int  `json:"instances,omitempty"`
	MovesCount    int  `json:"movesCount,omitempty"`
	N1AfterCheck  *int `json:"n1AfterCheck,omitempty"`
	N1AfterGaneti *int `json:"n1AfterGaneti,omitempty"`

	Alloc *allocOut `json:"alloc,omitempty"`
}

// allocOut is the one-by-one allocation run.
type allocOut struct {
	Mode     string `json:"mode"` // which API placed them
	Wanted   int    `json:"wanted"`
	Placed   int    `json:"placed"`
	Refused  int    `json:"refused"`
	Complete bool   `json:"complete"` // false: stopped at the time budget
	// FirstError is the first error other than a refusal, if any.
	FirstError string `json:"firstError,omitempty"`
}

// workerMain runs one case:
//
//	capacity FILE DISK,MEM,CPU    scheduler.Capacity on a Ganeti file
//	rebalance FILE                scheduler.Rebalance on a Ganeti file
//	rebalance-gen NODES SEED      scheduler.Rebalance on a generated skewed cluster
//	alloc NODES COUNT SEED BUDGET COUNT instances one by one on NODES empty nodes
func workerMain(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: %s capacity|rebalance|rebalance-gen|alloc ARGS", workerFlag)
	}
	var out workerOut
	var err error
	switch args[0] {
	case "capacity":
		err = workerCapacity(args[1:], &out)
	case "rebalance":
		err = workerRebalance(args[1:], &out)
	case "rebalance-gen":
		err = workerRebalanceGen(args[1:], &out)
	case "alloc":
		err = workerAlloc(args[1:], &out)
	default:
		err = fmt.Errorf("unknown worker command %q", args[0])
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func readFile(file string, out *workerOut) (scheduler.Snapshot, error) {
	start := time.Now()
	f, err := os.Open(file)
	if err != nil {
		return scheduler.Snapshot{}, err
	}
	defer f.Close()
	s, err := clusterfile.ReadGaneti(f)
	out.ReadSeconds = time.Since(start).Seconds()
	return s, err
}

func parseSize(v string) (scheduler.Resources, error) {
	f := strings.Split(v, ",")
	if len(f) != 3 {
		return scheduler.Resources{}, fmt.Errorf("size %q: want DISK,MEM,CPU (MiB, MiB, count)", v)
	}
	var n [3]int64
	for i := range f {
		x, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil || x <= 0 {
			return scheduler.Resources{}, fmt.Errorf("size %q: want DISK,MEM,CPU (MiB, MiB, count)", v)
		}
		n[i] = x
	}
	return scheduler.Resources{DiskMiB: n[0], MemMiB: n[1], CPUs: n[2]}, nil
}

func workerCapacity(args []string, out *workerOut) error {
	if len(args) != 2 {
		return fmt.Errorf("capacity FILE DISK,MEM,CPU")
	}
	z, err := parseSize(args[1])
	if err != nil {
		return err
	}
	s, err := readFile(args[0], out)
	if err != nil {
		return err
	}
	start := time.Now()
	rep, err := scheduler.Capacity(s, z)
	out.Seconds = time.Since(start).Seconds()
	if err != nil {
		return fmt.Errorf("scheduler.Capacity: %w", err)
	}
	out.Capacity = &rep
	return nil
}

func workerRebalance(args []string, out *workerOut) error {
	if len(args) != 1 {
		return fmt.Errorf("rebalance FILE")
	}
	s, err := readFile(args[0], out)
	if err != nil {
		return err
	}
	start := time.Now()
	plan, err := scheduler.Rebalance(s, scheduler.RebalanceOptions{})
	out.Seconds = time.Since(start).Seconds()
	if err != nil {
		return fmt.Errorf("scheduler.Rebalance: %w", err)
	}
	out.Plan = &plan
	return nil
}

func workerRebalanceGen(args []string, out *workerOut) error {
	if len(args) != 2 {
		return fmt.Errorf("rebalance-gen NODES SEED")
	}
	n, err1 := strconv.Atoi(args[0])
	seed, err2 := strconv.ParseUint(args[1], 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("rebalance-gen NODES SEED: bad numbers %q %q", args[0], args[1])
	}
	start := time.Now()
	s, err := genSkewed(n, seed)
	out.GenSeconds = time.Since(start).Seconds()
	if err != nil {
		return err
	}
	out.Nodes, out.Instances = len(s.Nodes), len(s.Instances)
	start = time.Now()
	plan, err := scheduler.Rebalance(s, scheduler.RebalanceOptions{})
	out.Seconds = time.Since(start).Seconds()
	if err != nil {
		return fmt.Errorf("scheduler.Rebalance: %w", err)
	}
	after, err := applyMoves(s, plan.Moves)
	if err != nil {
		return fmt.Errorf("the plan of scheduler.Rebalance: %w", err)
	}
	g := ganetiN1(after)
	out.N1AfterGaneti = &g
	if rep, err := scheduler.Check(after); err == nil {
		out.N1AfterCheck = &rep.N1Failures
	}
	out.MovesCount = len(plan.Moves)
	plan.Moves = nil
	out.Plan = &plan
	return nil
}

func workerAlloc(args []string, out *workerOut) error {
	if len(args) != 4 {
		return fmt.Errorf("alloc NODES COUNT SEED BUDGET")
	}
	n, err1 := strconv.Atoi(args[0])
	count, err2 := strconv.Atoi(args[1])
	seed, err3 := strconv.ParseUint(args[2], 10, 64)
	budget, err4 := time.ParseDuration(args[3])
	if err := firstErr(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("alloc NODES COUNT SEED BUDGET: %w", err)
	}
	s := genEmpty(n, seed)
	insts := allocSizes(count, seed)
	out.Nodes = n
	a := &allocOut{Wanted: count}
	out.Alloc = a
	start := time.Now()
	mode, place, err := newAllocator(s)
	if err != nil {
		return fmt.Errorf("%s: %w", mode, err)
	}
	a.Mode = mode
	a.Complete = true
	for i, inst := range insts {
		if i%256 == 0 && time.Since(start) > budget {
			a.Complete = false
			break
		}
		_, err := place(inst)
		var refusal *scheduler.RefusalError
		switch {
		case err == nil:
			a.Placed++
		case errors.As(err, &refusal):
			a.Refused++
		default:
			if a.FirstError == "" {
				a.FirstError = err.Error()
			}
			if a.Placed == 0 && i >= 100 {
				out.Seconds = time.Since(start).Seconds()
				return fmt.Errorf("%s: %s", mode, a.FirstError)
			}
		}
	}
	out.Seconds = time.Since(start).Seconds()
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// applyMoves gives each moved instance its new pair, in order.
func applyMoves(s scheduler.Snapshot, moves []scheduler.Move) (scheduler.Snapshot, error) {
	insts := make([]scheduler.Instance, len(s.Instances))
	copy(insts, s.Instances)
	idx := make(map[string]int, len(insts))
	for i, in := range insts {
		idx[in.Name] = i
	}
	for k, m := range moves {
		i, ok := idx[m.Instance]
		if !ok {
			return s, fmt.Errorf("move %d: no instance %q", k+1, m.Instance)
		}
		insts[i].Primary, insts[i].Secondary = m.NewPrimary, m.NewSecondary
	}
	s.Instances = insts
	return s, nil
}
