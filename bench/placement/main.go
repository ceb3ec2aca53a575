// Command placement compares ferry's scheduler with Ganeti's htools (3.0.2:
// hspace, hbal, hcheck) side by side, on the same synthetic clusters
// written in Ganeti's text backend format and read by both.
//
//   - Capacity, on N+1-clean clusters (about 3 instances per node, spread
//     evenly; hcheck must find no problem) of 10, 30 and 100 nodes: how
//     many more instances of one size fit while keeping N+1, hspace
//     --standard-alloc against scheduler.Capacity.
//   - Balancing, on skewed clusters (about 8 instances per node, 60% of
//     them packed onto a third of the nodes, a quarter of the nodes failing
//     N+1) of 10, 30 and 100 nodes: hbal's plan (stopped at 10 minutes on
//     100 nodes) against scheduler.Rebalance's, both evaluated by one
//     evaluator, scheduler.Evaluate (score, N+1 failures, moves, bytes
//     moved), and, as a cross-check, by hcheck on the end state.
//   - Wall time and peak memory (maximum RSS) of every tool run: ferry's
//     side runs as a child process too (this binary, re-executed with
//     -ferry-worker), reading the same file.
//   - ferry alone: rebalancing skewed clusters of 1,000 and 10,000 nodes,
//     and allocating 100,000 instances one by one onto 10,000 nodes.
//
// It prints tables and ends with one line
// `RESULT fit_ratio_vs_hspace=... moves_ratio_vs_hbal=... ...`; -out FILE
// also writes every figure as JSON. -quick runs the 10- and 30-node cases
// only, with hbal stopped at -hbal-limit.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

type config struct {
	quick          bool
	out, dir       string
	seed           uint64
	size           scheduler.Resources
	sizes          []int
	large          []int
	hbalLimit      time.Duration // hbal on the 10- and 30-node clusters (0: none)
	hbalLimitLarge time.Duration // hbal on larger ones
	toolLimit      time.Duration // any other run
	allocNodes     int
	allocCount     int
	allocBudget    time.Duration
	hbalArgs       []string // extra hbal options
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerFlag {
		if err := workerMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "ferry-worker:", err)
			os.Exit(1)
		}
		return
	}
	var c config
	var size, sizes, large, hbalArgs string
	flag.BoolVar(&c.quick, "quick", false, "10- and 30-node cases only, hbal stopped at -hbal-limit, no ferry-only cases (under a minute)")
	flag.StringVar(&c.out, "out", "", "write all results as JSON to this `file`")
	flag.StringVar(&c.dir, "dir", "", "write the cluster files to this `directory` and keep them (default: a temporary one, removed)")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the cluster generator")
	flag.StringVar(&size, "size", "40960,4096,2", "instance size for capacity: `DISK,MEM,CPU` (MiB, MiB, vCPUs), as hspace's --standard-alloc")
	flag.StringVar(&sizes, "nodes", "10,30,100", "node counts of the side-by-side cases")
	flag.StringVar(&large, "large", "1000,10000", "node counts of the ferry-only rebalance cases")
	flag.DurationVar(&c.hbalLimit, "hbal-limit", 0, "stop hbal after this long on the 10- and 30-node cases (0: never; -quick: 10s)")
	flag.DurationVar(&c.hbalLimitLarge, "hbal-limit-large", 10*time.Minute, "stop hbal after this long on larger cases")
	flag.StringVar(&hbalArgs, "hbal-args", "", "extra hbal `options`, such as --ignore-dynu (default: none, hbal's defaults)")
	flag.DurationVar(&c.toolLimit, "tool-limit", 30*time.Minute, "stop any other tool run after this long")
	flag.IntVar(&c.allocNodes, "alloc-nodes", 10000, "nodes of the allocation run")
	flag.IntVar(&c.allocCount, "alloc-count", 100000, "instances of the allocation run")
	flag.DurationVar(&c.allocBudget, "alloc-budget", 5*time.Minute, "stop the allocation run after this long")
	flag.Parse()
	c.hbalArgs = strings.Fields(hbalArgs)
	var err error
	if c.size, err = parseSize(size); err == nil {
		if c.sizes, err = ints(sizes); err == nil {
			c.large, err = ints(large)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/placement:", err)
		os.Exit(2)
	}
	if c.quick {
		c.sizes = filter(c.sizes, func(n int) bool { return n <= 30 })
		c.large = nil
		c.allocCount = 0
		if c.hbalLimit == 0 {
			c.hbalLimit = 10 * time.Second
		}
	}
	if err := runBench(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench/placement:", err)
		os.Exit(1)
	}
}

func ints(s string) ([]int, error) {
	var v []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 2 {
			return nil, fmt.Errorf("bad node count %q", f)
		}
		v = append(v, n)
	}
	return v, nil
}

func filter(v []int, keep func(int) bool) []int {
	var out []int
	for _, x := range v {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

// Results, as written by -out.

type results struct {
	Date      string              `json:"date"`
	LoadStart string              `json:"loadAverageAtStart"`
	LoadEnd   string              `json:"loadAverageAtEnd"`
	HbalArgs  []string            `json:"hbalExtraArgs,omitempty"`
	Quick     bool                `json:"quick"`
	Seed      uint64              `json:"seed"`
	Size      scheduler.Resources `json:"capacitySize"`
	HbalLimit map[string]string   `json:"hbalLimit"`
	Clusters  []clusterInfo       `json:"clusters"`
	Capacity  []capacityCase      `json:"capacity"`
	Balance   []balanceCase       `json:"balance"`
	Large     []largeCase         `json:"large,omitempty"`
	Alloc     *allocCase          `json:"alloc,omitempty"`
	Targets   []target            `json:"targets"`
	Result    string              `json:"result"`
}

type clusterInfo struct {
	Name      string `json:"name"`
	Shape     string `json:"shape"`
	Nodes     int    `json:"nodes"`
	Instances int    `json:"instances"`
	File      string `json:"file"`
	Seed      uint64 `json:"seed"`
	// N+1 failures as hcheck counts them, and as the generator does.
	HcheckN1  int `json:"hcheckN1Failures"`
	HcheckGN1 int `json:"hcheckGlobalN1Failures"`
	GenN1     int `json:"generatorN1Failures"`
	// BusiestThird is the share of instances whose primary is on the third
	// of the nodes with the most primaries.
	BusiestThird float64 `json:"busiestThirdShare"`
	Score        float64 `json:"ganetiScore"`
}

// toolRun is one run of one tool: its process's wall time and peak RSS.
type toolRun struct {
	Tool     string  `json:"tool"`
	WallS    float64 `json:"wallSeconds"`
	PeakMiB  float64 `json:"peakMiB"`
	TimedOut bool    `json:"stoppedAtLimit,omitempty"`
	// InnerS is the time of the scheduler call alone (ferry).
	InnerS float64 `json:"innerSeconds,omitempty"`
	Error  string  `json:"error,omitempty"`
}

func (t *toolRun) set(p proc, err error) {
	t.WallS, t.PeakMiB, t.TimedOut = p.Wall.Seconds(), p.PeakMiB, p.TimedOut
	if err != nil {
		t.Error = err.Error()
	}
}

type capacityCase struct {
	Cluster string  `json:"cluster"`
	Nodes   int     `json:"nodes"`
	Hspace  capRun  `json:"hspace"`
	Ferry   capRun  `json:"ferry"`
	Ratio   float64 `json:"fitRatio"` // ferry / hspace; NaN: unknown
}

type capRun struct {
	toolRun
	Fit   int    `json:"fit"`
	Limit string `json:"limit,omitempty"`
}

type balanceCase struct {
	Cluster   string   `json:"cluster"`
	Nodes     int      `json:"nodes"`
	Instances int      `json:"instances"`
	HbalLimit string   `json:"hbalLimit,omitempty"`
	Hbal      planEval `json:"hbal"`
	Ferry     planEval `json:"ferry"`
}

// planEval is one tool's plan, evaluated by scheduler.Evaluate on the
// cluster read from the file, and by hcheck on the end state.
type planEval struct {
	toolRun
	Complete bool `json:"complete"` // the tool finished its plan (hbal: not stopped)
	Moves    int  `json:"moves"`
	// OwnScore is the tool's own final score (hbal's, in Ganeti's metric).
	OwnScore    float64 `json:"ownScore"`
	Evaluated   bool    `json:"evaluated"`
	EvalError   string  `json:"evaluateError,omitempty"`
	ScoreBefore float64 `json:"scoreBefore"`
	ScoreAfter  float64 `json:"scoreAfter"`
	N1Before    int     `json:"n1Before"`
	N1After     int     `json:"n1After"`
	Bytes       int64   `json:"bytes"`
	// Ganeti's view of the end state (hcheck --no-simulation): its score,
	// and its score without the terms of dynamic load (--ignore-dynu),
	// which without load data count instances per node.
	GanetiChecked bool    `json:"ganetiChecked"`
	GanetiScore   float64 `json:"ganetiScore"`
	GanetiStatic  float64 `json:"ganetiScoreIgnoreDynu"`
	GanetiN1      int     `json:"ganetiN1"`
	GenN1         int     `json:"generatorN1"`
}

type largeCase struct {
	toolRun
	Nodes         int     `json:"nodes"`
	Instances     int     `json:"instances"`
	PlanS         float64 `json:"planSeconds"`
	Moves         int     `json:"moves"`
	N1Before      int     `json:"n1Before"`
	N1After       int     `json:"n1After"`
	N1AfterCheck  int     `json:"n1AfterCheck"`
	N1AfterGaneti int     `json:"n1AfterGaneti"`
	ScoreBefore   float64 `json:"scoreBefore"`
	ScoreAfter    float64 `json:"scoreAfter"`
	Bytes         int64   `json:"bytes"`
}

type allocCase struct {
	toolRun
	allocOut
	Nodes int `json:"nodes"`
}

type target struct {
	What   string `json:"what"`
	Figure string `json:"figure"`
	Met    string `json:"met"` // met, not met, unknown
}

func runBench(c config) error {
	ctx := context.Background()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := c.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ferry-bench-placement-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, tool := range []string{"hbal", "hspace", "hcheck"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian: apt-get install ganeti-htools)", tool)
		}
	}
	res := &results{Date: time.Now().UTC().Format("2006-01-02"), Quick: c.quick, Seed: c.seed, Size: c.size,
		HbalLimit: map[string]string{}, LoadStart: loadAverage(), HbalArgs: c.hbalArgs}
	fmt.Printf("bench/placement: ferry's scheduler against htools 3.0.2 (hspace, hbal), seed %d; load average %s\n", c.seed, res.LoadStart)
	fmt.Printf("hspace -t FILE --disk-template=drbd --standard-alloc=%s --machine-readable; hbal -t FILE %s\n",
		standardAlloc(c.size), strings.Join(c.hbalArgs, " "))
	if c.hbalLimit > 0 {
		fmt.Printf("hbal is stopped after %s on the 10- and 30-node clusters", c.hbalLimit)
		if c.quick {
			fmt.Printf(" (--quick: its plan there is partial and its time a lower bound)")
		}
		fmt.Println()
	}
	worker := func(limit time.Duration, args ...string) (workerOut, proc, error) {
		p, err := run(ctx, limit, self, append([]string{workerFlag}, args...)...)
		var out workerOut
		if err == nil && p.TimedOut {
			err = fmt.Errorf("stopped at the %s limit", limit)
		}
		if err == nil {
			err = json.Unmarshal(p.Stdout, &out)
		}
		return out, p, err
	}

	// Capacity, on clean clusters.
	for _, n := range c.sizes {
		ci, file, err := makeCluster(ctx, dir, "clean", n, c.seed)
		if err != nil {
			return err
		}
		res.Clusters = append(res.Clusters, ci)
		cc := capacityCase{Cluster: ci.Name, Nodes: n, Ratio: math.NaN()}
		cc.Hspace.Tool, cc.Ferry.Tool = "hspace", "ferry"
		hs, err := hspace(ctx, c.toolLimit, file, c.size)
		cc.Hspace.set(hs.proc, err)
		cc.Hspace.Fit, cc.Hspace.Limit = hs.Fit, hs.Reason
		if hs.TimedOut {
			cc.Hspace.Error = "stopped at the time limit"
		}
		out, p, err := worker(c.toolLimit, "capacity", file, standardAlloc(c.size))
		cc.Ferry.set(p, err)
		if err == nil {
			cc.Ferry.InnerS = out.Seconds
			cc.Ferry.Fit, cc.Ferry.Limit = out.Capacity.Fit, out.Capacity.Limit
			if cc.Hspace.Error == "" && cc.Hspace.Fit > 0 {
				cc.Ratio = float64(cc.Ferry.Fit) / float64(cc.Hspace.Fit)
			}
		}
		fmt.Printf("capacity %s: hspace %s, ferry %s\n", ci.Name, cc.Hspace.brief(fmt.Sprintf("fit %d (%s)", cc.Hspace.Fit, cc.Hspace.Limit)),
			cc.Ferry.brief(fmt.Sprintf("fit %d (%s)", cc.Ferry.Fit, cc.Ferry.Limit)))
		res.Capacity = append(res.Capacity, cc)
	}

	// Balancing, on skewed clusters.
	for _, n := range c.sizes {
		ci, file, err := makeCluster(ctx, dir, "skewed", n, c.seed)
		if err != nil {
			return err
		}
		res.Clusters = append(res.Clusters, ci)
		snap, err := readSnapshotFile(file)
		if err != nil {
			return err
		}
		bc := balanceCase{Cluster: ci.Name, Nodes: n, Instances: ci.Instances}
		limit := c.hbalLimit
		if n > 30 {
			limit = c.hbalLimitLarge
		}
		if limit > 0 {
			bc.HbalLimit = limit.String()
			res.HbalLimit[ci.Name] = limit.String()
		} else {
			limit = c.toolLimit
		}
		bc.Hbal.Tool, bc.Ferry.Tool = "hbal", "ferry"
		hb, err := hbal(ctx, limit, file, c.hbalArgs...)
		bc.Hbal.set(hb.proc, err)
		bc.Hbal.Complete, bc.Hbal.Moves, bc.Hbal.OwnScore = hb.Complete, len(hb.Steps), hb.FinalScore
		if err == nil {
			evaluate(ctx, dir, ci.Name+"-hbal", snap, hb.moves(), &bc.Hbal)
		}
		out, p, err := worker(c.toolLimit, "rebalance", file)
		bc.Ferry.set(p, err)
		if err == nil {
			bc.Ferry.InnerS, bc.Ferry.Complete = out.Seconds, true
			bc.Ferry.Moves, bc.Ferry.OwnScore = len(out.Plan.Moves), out.Plan.ScoreAfter
			evaluate(ctx, dir, ci.Name+"-ferry", snap, out.Plan.Moves, &bc.Ferry)
		}
		fmt.Printf("balance %s: hbal %s; ferry %s\n", ci.Name, bc.Hbal.brief(), bc.Ferry.brief())
		res.Balance = append(res.Balance, bc)
	}

	// ferry alone, large clusters.
	for _, n := range c.large {
		lc := largeCase{Nodes: n}
		lc.Tool = "ferry"
		out, p, err := worker(c.toolLimit, "rebalance-gen", strconv.Itoa(n), strconv.FormatUint(c.seed, 10))
		lc.set(p, err)
		if err == nil {
			lc.InnerS, lc.PlanS = out.Seconds, out.Seconds
			lc.Instances, lc.Moves = out.Instances, out.MovesCount
			lc.N1Before, lc.N1After = out.Plan.N1Before, out.Plan.N1After
			lc.N1AfterCheck, lc.N1AfterGaneti = deref(out.N1AfterCheck), deref(out.N1AfterGaneti)
			lc.ScoreBefore, lc.ScoreAfter, lc.Bytes = out.Plan.ScoreBefore, out.Plan.ScoreAfter, out.Plan.Bytes
			fmt.Printf("ferry alone, skewed-%d: %d moves, N+1 failures %d -> %d, plan %.2fs (wall %.2fs, peak %.0f MiB)\n",
				n, lc.Moves, lc.N1Before, lc.N1After, lc.PlanS, lc.WallS, lc.PeakMiB)
		} else {
			fmt.Printf("ferry alone, skewed-%d: error: %s\n", n, lc.Error)
		}
		res.Large = append(res.Large, lc)
	}

	// ferry alone, one-by-one allocation.
	if c.allocCount > 0 {
		ac := &allocCase{Nodes: c.allocNodes}
		ac.Tool = "ferry"
		out, p, err := worker(c.allocBudget+c.toolLimit, "alloc", strconv.Itoa(c.allocNodes), strconv.Itoa(c.allocCount),
			strconv.FormatUint(c.seed, 10), c.allocBudget.String())
		ac.set(p, err)
		if out.Alloc != nil {
			ac.allocOut = *out.Alloc
		}
		ac.InnerS = out.Seconds
		if err == nil {
			fmt.Printf("ferry alone, allocate %d onto %d nodes one by one (%s): %d placed, %d refused in %.2fs%s\n",
				ac.Wanted, ac.Nodes, ac.Mode, ac.Placed, ac.Refused, ac.InnerS, map[bool]string{false: " (stopped at the time budget)", true: ""}[ac.Complete])
		} else {
			fmt.Printf("ferry alone, allocation: error: %s\n", ac.Error)
		}
		res.Alloc = ac
	}

	res.LoadEnd = loadAverage()
	printTables(os.Stdout, res)
	fmt.Printf("load average (1, 5, 15 min) at start %s, at end %s\n\n", res.LoadStart, res.LoadEnd)
	res.Result = resultLine(c, res)
	printTargets(os.Stdout, res)
	if c.out != "" {
		b, err := json.MarshalIndent(jsonSafe(res), "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Println(res.Result)
	return nil
}

func deref(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}

// makeCluster generates a cluster, writes it as a Ganeti file and checks it
// with hcheck: a clean one must have no problem at all (else the next seed
// is tried), a skewed one about a quarter of its nodes failing N+1.
func makeCluster(ctx context.Context, dir, shape string, n int, seed uint64) (clusterInfo, string, error) {
	name := fmt.Sprintf("%s-%d", shape, n)
	file := filepath.Join(dir, name+".data")
	for try := range 10 {
		sd := seed + uint64(try)*1000
		var s scheduler.Snapshot
		var err error
		if shape == "clean" {
			s, err = genClean(n, sd)
		} else {
			s, err = genSkewed(n, sd)
		}
		if err != nil {
			fmt.Printf("%s, seed %d: %v; next seed\n", name, sd, err)
			continue
		}
		if err := writeSnapshotFile(file, s); err != nil {
			return clusterInfo{}, "", err
		}
		hc, err := hcheck(ctx, file)
		if err != nil {
			return clusterInfo{}, "", err
		}
		ci := clusterInfo{Name: name, Shape: shape, Nodes: n, Instances: len(s.Instances), File: file, Seed: sd,
			HcheckN1: hc.N1Fail, HcheckGN1: hc.GN1, GenN1: ganetiN1(s), Score: hc.Score, BusiestThird: busiestThird(s)}
		if shape == "clean" && (hc.N1Fail != 0 || hc.GN1 != 0 || hc.Other != 0) {
			fmt.Printf("%s, seed %d: hcheck finds %d nodes failing N+1, %d not evacuable, %d other problems; next seed\n",
				name, sd, hc.N1Fail, hc.GN1, hc.Other)
			continue
		}
		verdict := "no problems"
		if shape == "skewed" {
			verdict = fmt.Sprintf("%d of %d nodes fail N+1 (%.0f%%; generator: %d)", hc.N1Fail, n, 100*float64(hc.N1Fail)/float64(n), ci.GenN1)
			if hc.N1Fail != ci.GenN1 {
				verdict += " — hcheck and the generator disagree"
			}
		}
		fmt.Printf("%s: %d nodes, %d instances (%.0f%% on the busiest third), seed %d; hcheck: %s; Ganeti score %.2f\n",
			name, n, ci.Instances, 100*ci.BusiestThird, sd, verdict, hc.Score)
		return ci, file, nil
	}
	return clusterInfo{}, "", fmt.Errorf("%s: no seed out of 10 gives a cluster of that shape", name)
}

func writeSnapshotFile(file string, s scheduler.Snapshot) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := clusterfile.WriteGaneti(f, s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readSnapshotFile(file string) (scheduler.Snapshot, error) {
	f, err := os.Open(file)
	if err != nil {
		return scheduler.Snapshot{}, err
	}
	defer f.Close()
	return clusterfile.ReadGaneti(f)
}

// evaluate runs scheduler.Evaluate on a tool's moves, and hcheck on the
// end state they lead to.
func evaluate(ctx context.Context, dir, name string, s scheduler.Snapshot, moves []scheduler.Move, pe *planEval) {
	if plan, err := scheduler.Evaluate(s, moves); err != nil {
		pe.EvalError = "scheduler.Evaluate: " + err.Error()
	} else {
		pe.Evaluated = true
		pe.ScoreBefore, pe.ScoreAfter = plan.ScoreBefore, plan.ScoreAfter
		pe.N1Before, pe.N1After, pe.Bytes = plan.N1Before, plan.N1After, plan.Bytes
	}
	after, err := applyMoves(s, moves)
	if err != nil {
		pe.EvalError = strings.TrimPrefix(pe.EvalError+"; ", "; ") + err.Error()
		return
	}
	pe.GenN1 = ganetiN1(after)
	file := filepath.Join(dir, name+".data")
	if err := writeSnapshotFile(file, after); err != nil {
		pe.EvalError = strings.TrimPrefix(pe.EvalError+"; ", "; ") + err.Error()
		return
	}
	hc, err := hcheck(ctx, file)
	if err == nil {
		var st hcheckResult
		if st, err = hcheck(ctx, file, "--ignore-dynu"); err == nil {
			pe.GanetiChecked, pe.GanetiScore, pe.GanetiN1, pe.GanetiStatic = true, hc.Score, hc.N1Fail, st.Score
		}
	}
	if err != nil {
		pe.EvalError = strings.TrimPrefix(pe.EvalError+"; ", "; ") + err.Error()
	}
}

func (t toolRun) brief(what ...string) string {
	if t.Error != "" {
		return "error: " + t.Error
	}
	s := strings.Join(what, " ")
	if t.TimedOut {
		s += " (stopped at its time limit)"
	}
	return strings.TrimSpace(fmt.Sprintf("%s %.2fs %.0f MiB", s, t.WallS, t.PeakMiB))
}

func (pe planEval) brief() string {
	if pe.Error != "" {
		return "error: " + pe.Error
	}
	s := fmt.Sprintf("%d moves", pe.Moves)
	if pe.Evaluated {
		s += fmt.Sprintf(", score %.4g -> %.4g, N+1 failures %d -> %d, %s moved", pe.ScoreBefore, pe.ScoreAfter, pe.N1Before, pe.N1After, gibs(pe.Bytes))
	} else if pe.EvalError != "" {
		s += " (not evaluated: " + pe.EvalError + ")"
	}
	return pe.toolRun.brief(s)
}

func gibs(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

// printTables prints the results as Markdown tables.
func printTables(w io.Writer, r *results) {
	z := r.Size
	fmt.Fprintf(w, "\nCapacity: instances of %d MiB memory, %d vCPUs, %d MiB disk (DRBD) that still fit keeping N+1 (clean clusters)\n\n",
		z.MemMiB, z.CPUs, z.DiskMiB)
	fmt.Fprintln(w, "| cluster | tool | fit | limit | wall s | peak MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, cc := range r.Capacity {
		for _, t := range []capRun{cc.Hspace, cc.Ferry} {
			fit, limit := strconv.Itoa(t.Fit), t.Limit
			if t.Error != "" {
				fit, limit = "error", t.Error
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.0f |\n", cc.Cluster, t.Tool, fit, limit, wall(t.toolRun), t.PeakMiB)
		}
	}
	fmt.Fprintf(w, "\nBalancing (skewed clusters): both plans evaluated by scheduler.Evaluate; \"Ganeti\" columns: hcheck on the end state,\n"+
		"its score in full and without the dynamic-load terms (--ignore-dynu; without load data they weigh instance counts)\n\n")
	fmt.Fprintln(w, "| cluster | tool | moves | score before → after | N+1 failures before → after | moved | Ganeti score after (no dynu) | Ganeti N+1 after | wall s | peak MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, bc := range r.Balance {
		for _, pe := range []planEval{bc.Hbal, bc.Ferry} {
			if pe.Error != "" {
				fmt.Fprintf(w, "| %s | %s | error: %s | | | | | | %s | %.0f |\n", bc.Cluster, pe.Tool, pe.Error, wall(pe.toolRun), pe.PeakMiB)
				continue
			}
			moves := strconv.Itoa(pe.Moves)
			if !pe.Complete {
				moves += " (partial)"
			}
			score, n1, moved := "n/a", "n/a", "n/a"
			if pe.Evaluated {
				score = fmt.Sprintf("%.4f → %.4f", pe.ScoreBefore, pe.ScoreAfter)
				n1 = fmt.Sprintf("%d → %d", pe.N1Before, pe.N1After)
				moved = gibs(pe.Bytes)
			}
			gs, gn := "n/a", "n/a"
			if pe.GanetiChecked {
				gs, gn = fmt.Sprintf("%.4f (%.4f)", pe.GanetiScore, pe.GanetiStatic), strconv.Itoa(pe.GanetiN1)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f |\n",
				bc.Cluster, pe.Tool, moves, score, n1, moved, gs, gn, wall(pe.toolRun), pe.PeakMiB)
		}
	}
	for _, bc := range r.Balance {
		if bc.Hbal.EvalError != "" || bc.Ferry.EvalError != "" {
			fmt.Fprintf(w, "\n%s: hbal: %s; ferry: %s\n", bc.Cluster, orNone(bc.Hbal.EvalError), orNone(bc.Ferry.EvalError))
		}
	}
	if len(r.Large) > 0 {
		fmt.Fprintf(w, "\nferry alone, skewed clusters: scheduler.Rebalance (plan s: the call alone; wall s: the process, generating the cluster included)\n\n")
		fmt.Fprintln(w, "| nodes | instances | moves | score before → after | N+1 failures before → after (Check; htools test) | moved | plan s | wall s | peak MiB |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, lc := range r.Large {
			if lc.Error != "" {
				fmt.Fprintf(w, "| %d | | error: %s | | | | | %s | %.0f |\n", lc.Nodes, lc.Error, wall(lc.toolRun), lc.PeakMiB)
				continue
			}
			fmt.Fprintf(w, "| %d | %d | %d | %.4f → %.4f | %d → %d (%d; %d) | %s | %.2f | %s | %.0f |\n",
				lc.Nodes, lc.Instances, lc.Moves, lc.ScoreBefore, lc.ScoreAfter, lc.N1Before, lc.N1After,
				lc.N1AfterCheck, lc.N1AfterGaneti, gibs(lc.Bytes), lc.PlanS, wall(lc.toolRun), lc.PeakMiB)
		}
	}
	if a := r.Alloc; a != nil {
		fmt.Fprintf(w, "\nferry alone, one-by-one allocation onto %d empty nodes (%s):\n", a.Nodes, orNone(a.Mode))
		if a.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", a.Error)
		} else {
			fmt.Fprintf(w, "  %d of %d placed, %d refused, in %.2f s (wall %s s, peak %.0f MiB)%s\n", a.Placed, a.Wanted, a.Refused, a.InnerS,
				wall(a.toolRun), a.PeakMiB, map[bool]string{false: "; stopped at the time budget", true: ""}[a.Complete])
		}
	}
	fmt.Fprintln(w)
}

func wall(t toolRun) string {
	s := fmt.Sprintf("%.2f", t.WallS)
	if t.TimedOut {
		s += " (stopped)"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", a/b)
}

// resultLine computes the RESULT line: ratios ferry / Ganeti on the 30-node
// cases (or the largest side-by-side case below 30 if 30 was not run).
func resultLine(c config, r *results) string {
	fit, moves, bytes, score, tm := "n/a", "n/a", "n/a", "n/a", "n/a"
	var extra []string
	if cc := pickCap(r.Capacity); cc != nil {
		if cc.Ferry.Error == "" && cc.Hspace.Error == "" {
			fit = ratio(float64(cc.Ferry.Fit), float64(cc.Hspace.Fit))
		}
		extra = append(extra, fmt.Sprintf("hspace_fit=%d ferry_fit=%s", cc.Hspace.Fit, okInt(cc.Ferry.Error == "", cc.Ferry.Fit)))
	}
	if bc := pickBal(r.Balance); bc != nil {
		h, f := bc.Hbal, bc.Ferry
		ok := h.Error == "" && f.Error == ""
		if ok && h.Evaluated && f.Evaluated {
			moves = ratio(float64(f.Moves), float64(h.Moves))
			bytes = ratio(float64(f.Bytes), float64(h.Bytes))
			score = ratio(f.ScoreAfter, h.ScoreAfter)
		}
		if ok {
			tm = ratio(f.WallS, h.WallS)
		}
		extra = append(extra, fmt.Sprintf("hbal_moves=%d ferry_moves=%s hbal_n1_after=%s ferry_n1_after=%s hbal_s=%.2f ferry_s=%s",
			h.Moves, okInt(f.Error == "", f.Moves), okInt(h.Evaluated, h.N1After), okInt(f.Evaluated, f.N1After), h.WallS, okFloat(f.Error == "", f.WallS)))
		if h.TimedOut {
			extra = append(extra, fmt.Sprintf("hbal_stopped_at_s=%.0f", h.WallS))
		}
	}
	plan := "n/a"
	for _, lc := range r.Large {
		if lc.Nodes == 10000 && lc.Error == "" {
			plan = fmt.Sprintf("%.2f", lc.PlanS)
			extra = append(extra, fmt.Sprintf("plan_10k_n1_after=%d", lc.N1After))
		}
	}
	alloc := "n/a"
	if a := r.Alloc; a != nil && a.Error == "" && a.Wanted == 100000 && a.Nodes == 10000 {
		if a.Complete {
			alloc = fmt.Sprintf("%.2f", a.InnerS)
		}
		extra = append(extra, fmt.Sprintf("alloc_placed=%d", a.Placed))
	}
	return fmt.Sprintf("RESULT fit_ratio_vs_hspace=%s moves_ratio_vs_hbal=%s bytes_ratio_vs_hbal=%s score_ratio_vs_hbal=%s time_ratio_vs_hbal_30=%s plan_10k_s=%s alloc_100k_s=%s %s quick=%t",
		fit, moves, bytes, score, tm, plan, alloc, strings.Join(extra, " "), c.quick)
}

func okInt(ok bool, v int) string {
	if !ok {
		return "n/a"
	}
	return strconv.Itoa(v)
}

func okFloat(ok bool, v float64) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

// pickCap and pickBal choose the case the RESULT line reports: 30 nodes.
func pickCap(cs []capacityCase) *capacityCase {
	for i := range cs {
		if cs[i].Nodes == 30 {
			return &cs[i]
		}
	}
	return nil
}

func pickBal(bs []balanceCase) *balanceCase {
	for i := range bs {
		if bs[i].Nodes == 30 {
			return &bs[i]
		}
	}
	return nil
}

// printTargets marks the targets met or not.
func printTargets(w io.Writer, r *results) {
	add := func(what, figure string, met *bool) {
		m := "unknown"
		if met != nil {
			m = map[bool]string{true: "met", false: "not met"}[*met]
		}
		r.Targets = append(r.Targets, target{what, figure, m})
	}
	// partial marks a comparison with a plan hbal did not finish: its
	// moves and bytes are those of a stopped run, not of its answer.
	partial := func(what, figure string) {
		r.Targets = append(r.Targets, target{what, figure, "n/a (hbal stopped)"})
	}
	b := func(v bool) *bool { return &v }
	for _, cc := range r.Capacity {
		var met *bool
		if cc.Ferry.Error == "" && cc.Hspace.Error == "" {
			met = b(cc.Ferry.Fit >= cc.Hspace.Fit)
		}
		add(fmt.Sprintf("%s: fit at least as many as hspace", cc.Cluster), fmt.Sprintf("ferry %s, hspace %d", okInt(cc.Ferry.Error == "", cc.Ferry.Fit), cc.Hspace.Fit), met)
	}
	for _, bc := range r.Balance {
		h, f := bc.Hbal, bc.Ferry
		var met *bool
		fig := "n/a"
		if h.Evaluated && f.Evaluated && h.Error == "" && f.Error == "" {
			met = b(f.ScoreAfter <= h.ScoreAfter && f.Moves <= h.Moves && f.Bytes <= h.Bytes)
			fig = fmt.Sprintf("score %.4f vs %.4f, moves %d vs %d, moved %s vs %s", f.ScoreAfter, h.ScoreAfter, f.Moves, h.Moves, gibs(f.Bytes), gibs(h.Bytes))
		}
		what := fmt.Sprintf("%s: score ≤ hbal's with no more moves and bytes", bc.Cluster)
		if h.Error == "" && !h.Complete {
			partial(what, fmt.Sprintf("%s; N+1 failures after %s vs %s", fig, okInt(f.Evaluated, f.N1After), okInt(h.Evaluated, h.N1After)))
		} else {
			add(what, fig, met)
		}
		if bc.Nodes == 30 {
			var tm *bool
			fig := "n/a"
			if h.Error == "" && f.Error == "" {
				tm = b(f.WallS*5 < h.WallS)
				fig = fmt.Sprintf("ferry %.2fs, hbal %.2fs", f.WallS, h.WallS)
				if h.TimedOut {
					fig += " (hbal stopped: its full time is longer)"
				}
			}
			add(fmt.Sprintf("%s: under a fifth of hbal's time", bc.Cluster), fig, tm)
		}
	}
	for _, lc := range r.Large {
		if lc.Nodes != 10000 {
			continue
		}
		var met *bool
		fig := "n/a"
		if lc.Error == "" {
			met = b(lc.PlanS < 60 && lc.N1After == 0)
			fig = fmt.Sprintf("%.2fs, N+1 failures after: %d", lc.PlanS, lc.N1After)
		}
		add("10,000 nodes: an N+1-clean plan in under 60 s", fig, met)
	}
	if a := r.Alloc; a != nil {
		var met *bool
		fig := "n/a"
		if a.Error == "" {
			met = b(a.Complete && a.InnerS < 10)
			fig = fmt.Sprintf("%d placed in %.2fs", a.Placed, a.InnerS)
			if !a.Complete {
				fig += " (stopped at the time budget)"
			}
		}
		add(fmt.Sprintf("%d instances onto %d nodes one by one in under 10 s", a.Wanted, a.Nodes), fig, met)
	}
	fmt.Fprintln(w, "Targets:")
	for _, t := range r.Targets {
		fmt.Fprintf(w, "  %-56s %-9s %s\n", t.What, t.Met, t.Figure)
	}
	fmt.Fprintln(w)
}

// jsonSafe replaces NaN ratios, which JSON cannot hold, by -1.
func jsonSafe(r *results) *results {
	c := *r
	c.Capacity = append([]capacityCase(nil), r.Capacity...)
	for i := range c.Capacity {
		if math.IsNaN(c.Capacity[i].Ratio) {
			c.Capacity[i].Ratio = -1
		}
	}
	return &c
}

// loadAverage is the machine's load average (1, 5 and 15 minutes): the
// machine may be shared, and every figure here is a time.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
