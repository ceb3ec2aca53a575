package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/scheduler"
	"github.com/spf13/cobra"
)

// errNeedsMigration is why `cluster rebalance` only plans.
const errNeedsMigration = "executing moves needs live migration (not available yet); use --dry-run"

func (a *app) newClusterCmd() *cobra.Command {
	cmd := newGroup("cluster", "Check N+1, count free capacity and plan rebalancing")
	cmd.Long = `Ask the scheduler about the whole cluster: whether every host can fail and its
instances still fit elsewhere (N+1), how many more instances of a size fit, and
which moves would even out the load.

check, capacity and rebalance --dry-run ask the server, or work offline on a
file with no server contacted: --from FILE reads ferry's snapshot JSON (as
written by ferry cluster snapshot), --from-ganeti FILE reads Ganeti's htools
text format (as written by hscan or hail's --save). FILE "-" is standard input.`
	cmd.AddCommand(
		a.newClusterCheckCmd(),
		a.newClusterCapacityCmd(),
		a.newClusterRebalanceCmd(),
		a.newClusterSnapshotCmd(),
	)
	return cmd
}

// sourceFlags choose where a cluster verb gets the cluster from: the
// server (neither set), or a file.
type sourceFlags struct {
	from, fromGaneti string
}

func (s *sourceFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.from, "from", "", "work offline on ferry's snapshot JSON in this file (- for stdin)")
	cmd.Flags().StringVar(&s.fromGaneti, "from-ganeti", "", "work offline on Ganeti's htools text format in this file (- for stdin)")
	cmd.MarkFlagsMutuallyExclusive("from", "from-ganeti")
}

// offline reports whether a file was given.
func (s *sourceFlags) offline() bool { return s.from != "" || s.fromGaneti != "" }

// load reads the file the flags name.
func (s *sourceFlags) load(stdin io.Reader) (scheduler.Snapshot, error) {
	flag, path, read := "--from", s.from, clusterfile.ReadSnapshot
	if s.fromGaneti != "" {
		flag, path, read = "--from-ganeti", s.fromGaneti, clusterfile.ReadGaneti
	}
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return scheduler.Snapshot{}, fmt.Errorf("%s: %w", flag, err)
		}
		defer f.Close()
		r = f
	}
	snap, err := read(r)
	if err != nil {
		return scheduler.Snapshot{}, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return snap, nil
}

// describe names the file the flags name, for errors about its contents.
func (s *sourceFlags) describe() string {
	if s.fromGaneti != "" {
		return "--from-ganeti " + s.fromGaneti
	}
	return "--from " + s.from
}

func (a *app) newClusterCheckCmd() *cobra.Command {
	var src sourceFlags
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that every host can fail and its instances still fit elsewhere (N+1)",
		Long: `Check the cluster as hcheck does: for each host, whether it could take the
instances that fail over onto it when any other host dies (N+1), and whether
more is allocated on it than it has (after overcommit); then the counts of
anti-affinity conflicts and unprotected instances, and the cluster score
(lower is better). It exits with status 1 when it finds a problem.`,
		Example: "  ferry cluster check\n  ferry cluster check --from snapshot.json\n  ferry cluster check --from-ganeti cluster.data --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep *scheduler.CheckReport
			if src.offline() {
				snap, err := src.load(a.stdin())
				if err != nil {
					return err
				}
				r, err := scheduler.Check(snap)
				if err != nil {
					return fmt.Errorf("%s: %w", src.describe(), err)
				}
				rep = &r
			} else {
				var err error
				if rep, err = fetch(a, cmd, "cluster", "", (*client.Client).ClusterCheck); err != nil {
					return err
				}
			}
			if a.g.JSON {
				if err := printJSON(a.stdout(), rep); err != nil {
					return err
				}
			} else if err := a.printCheck(rep); err != nil {
				return err
			}
			if !rep.OK() {
				return errors.New("cluster check found problems: " + checkProblems(rep))
			}
			return nil
		},
	}
	src.bind(cmd)
	return cmd
}

// checkProblems lists a report's problems in words: "1 node fails N+1,
// 2 unprotected instances".
func checkProblems(r *scheduler.CheckReport) string {
	var out []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			out = append(out, "1 "+one)
		case n > 1:
			out = append(out, strconv.Itoa(n)+" "+many)
		}
	}
	add(r.N1Failures, "node fails N+1", "nodes fail N+1")
	add(r.Over, "node is over-allocated", "nodes are over-allocated")
	add(r.Conflicts, "anti-affinity conflict", "anti-affinity conflicts")
	add(r.Unprotected, "unprotected instance", "unprotected instances")
	return strings.Join(out, ", ")
}

func (a *app) printCheck(r *scheduler.CheckReport) error {
	w := a.stdout()
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	offline, problems := 0, 0
	for _, n := range r.Nodes {
		if n.Offline {
			offline++
			if n.Primaries+n.Secondaries > 0 {
				fmt.Fprintf(tw, "%s\toffline\t%d primaries and %d replicas need a new home\n", clean(n.Name), n.Primaries, n.Secondaries)
				problems++
			}
		}
		if n.N1Fail {
			fmt.Fprintf(tw, "%s\tfails N+1\t%s\n", clean(n.Name), clean(n.N1Reason))
			problems++
		}
		if n.Over {
			fmt.Fprintf(tw, "%s\tover-allocated\t%s\n", clean(n.Name), clean(n.OverReason))
			problems++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if problems > 0 {
		fmt.Fprintln(w)
	}
	nodes := strconv.Itoa(len(r.Nodes))
	if offline > 0 {
		nodes += fmt.Sprintf(" (%d offline)", offline)
	}
	d := newDetails(w)
	d.add("Nodes", nodes)
	d.add("Instances", strconv.Itoa(r.Instances))
	d.add("N+1 failures", strconv.Itoa(r.N1Failures))
	d.add("Over-allocated", strconv.Itoa(r.Over))
	d.add("Group conflicts", strconv.Itoa(r.Conflicts))
	d.add("Unprotected", strconv.Itoa(r.Unprotected))
	d.add("Score", formatScore(r.Score))
	if err := d.flush(); err != nil {
		return err
	}
	if r.OK() {
		fmt.Fprintln(w, "OK: every node can fail and its instances still fit elsewhere (N+1)")
	}
	return nil
}

// formatScore writes a cluster score with four decimals.
func formatScore(s float64) string { return strconv.FormatFloat(s, 'f', 4, 64) }

func (a *app) newClusterCapacityCmd() *cobra.Command {
	var src sourceFlags
	var size string
	cmd := &cobra.Command{
		Use:   "capacity --size CPUScpu,MEMORY,DISK",
		Short: "Count how many more instances of a size fit while keeping N+1",
		Long: `Count how many more instances of one size fit, placing them one by one as the
scheduler would, while every host can still fail and its instances fit
elsewhere (N+1); and say which resource runs out first (as hspace does).`,
		Example: "  ferry cluster capacity --size 1cpu,2G,20G\n  ferry cluster capacity --size 2cpu,4G,40G --from-ganeti cluster.data",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("size") {
				return withHint(fmt.Errorf("--size is required: give %s", api.SizeForm), usageHint(cmd))
			}
			res, err := api.ParseSize("--size", size)
			if err != nil {
				return err
			}
			var rep *scheduler.CapacityReport
			if src.offline() {
				snap, err := src.load(a.stdin())
				if err != nil {
					return err
				}
				r, err := scheduler.Capacity(snap, scheduler.Resources{CPUs: int64(res.CPUs), MemMiB: res.Memory.MiBCeil(), DiskMiB: res.Disk.MiBCeil()})
				if err != nil {
					return fmt.Errorf("%s: %w", src.describe(), err)
				}
				rep = &r
			} else {
				rep, err = fetch(a, cmd, "cluster", "", func(c *client.Client, ctx context.Context) (*scheduler.CapacityReport, error) {
					return c.ClusterCapacity(ctx, res)
				})
				if err != nil {
					return sizeFlagError(err)
				}
			}
			if a.g.JSON {
				return printJSON(a.stdout(), rep)
			}
			fmt.Fprintln(a.stdout(), capacitySentence(rep))
			return nil
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "instance size: "+api.SizeForm)
	src.bind(cmd)
	return cmd
}

// sizeFlagError rewrites the server's refusal of the size parameter to
// name the flag.
func sizeFlagError(err error) error {
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Field == "size" {
		return &flagError{flag: "--size", msg: strings.TrimPrefix(ae.Message, "size: "), err: err}
	}
	return err
}

// capacitySentence says a capacity report in one line: "12 more instances
// of 1 CPU, 2 GiB, 20 GiB fit while keeping N+1; memory runs out first
// (...)".
func capacitySentence(r *scheduler.CapacityReport) string {
	cpus := "1 CPU"
	if r.Size.CPUs != 1 {
		cpus = fmt.Sprintf("%d CPUs", r.Size.CPUs)
	}
	what := "instances"
	verb := "fit"
	if r.Fit == 1 {
		what, verb = "instance", "fits"
	}
	s := fmt.Sprintf("%d more %s of %s, %s, %s %s while keeping N+1", r.Fit, what, cpus, fmtMiB(r.Size.MemMiB), fmtMiB(r.Size.DiskMiB), verb)
	if limit := limitPhrase(r.Limit); limit != "" {
		s += "; " + limit
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return clean(s)
}

// limitPhrase says which resource ran out.
func limitPhrase(limit string) string {
	switch limit {
	case "":
		return ""
	case "memory":
		return "memory runs out first"
	case "cpu":
		return "CPUs run out first"
	case "disk":
		return "disk runs out first"
	case "nodes":
		return "there are too few online, schedulable nodes"
	case "spread":
		return "the placement rules stop it first"
	}
	return limit + " runs out first"
}

// fmtMiB writes a size given in MiB: "512 MiB", "2 GiB", "1.5 GiB", "2 TiB".
func fmtMiB(v int64) string {
	unit := func(div int64, name string) string {
		if v%div == 0 {
			return strconv.FormatInt(v/div, 10) + " " + name
		}
		return strconv.FormatFloat(float64(v)/float64(div), 'f', 1, 64) + " " + name
	}
	switch {
	case v >= 1<<20:
		return unit(1<<20, "TiB")
	case v >= 1<<10:
		return unit(1<<10, "GiB")
	}
	return strconv.FormatInt(v, 10) + " MiB"
}

func (a *app) newClusterRebalanceCmd() *cobra.Command {
	var src sourceFlags
	var dryRun bool
	var maxMoves int
	cmd := &cobra.Command{
		Use:   "rebalance --dry-run [--max-moves N]",
		Short: "Plan the moves that even out the cluster (dry run)",
		Long: `Plan moves that lower the cluster score (as hbal does), best first, until no
move gains enough or --max-moves is reached, and print each move with what it
copies and the score after it, then the gain. Only --dry-run is available:
` + errNeedsMigration + `.`,
		Example: "  ferry cluster rebalance --dry-run\n  ferry cluster rebalance --dry-run --max-moves 5 --from snapshot.json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dryRun {
				return errors.New(errNeedsMigration)
			}
			if maxMoves < 0 {
				return fmt.Errorf("--max-moves: must be 0 (no limit) or more, got %d", maxMoves)
			}
			var plan *scheduler.Plan
			if src.offline() {
				snap, err := src.load(a.stdin())
				if err != nil {
					return err
				}
				p, err := scheduler.Rebalance(snap, scheduler.RebalanceOptions{MaxMoves: maxMoves})
				if err != nil {
					return fmt.Errorf("%s: %w", src.describe(), err)
				}
				plan = &p
			} else {
				var err error
				plan, err = fetch(a, cmd, "cluster", "", func(c *client.Client, ctx context.Context) (*scheduler.Plan, error) {
					return c.ClusterRebalance(ctx, maxMoves)
				})
				if err != nil {
					return err
				}
			}
			if plan.Moves == nil {
				plan.Moves = []scheduler.Move{}
			}
			if a.g.JSON {
				return printJSON(a.stdout(), plan)
			}
			return a.printPlan(plan)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print the plan (required: moves cannot be executed yet)")
	cmd.Flags().IntVar(&maxMoves, "max-moves", 0, "stop the plan after this many moves (0: no limit)")
	src.bind(cmd)
	return cmd
}

// pair writes an instance's hosts as "primary:secondary" ("n1:-" without a
// secondary).
func pair(primary, secondary string) string {
	return clean(dash(primary)) + ":" + clean(dash(secondary))
}

func (a *app) printPlan(p *scheduler.Plan) error {
	w := a.stdout()
	if len(p.Moves) == 0 {
		fmt.Fprintf(w, "no move improves the cluster (score %s, N+1 failures %d)\n", formatScore(p.ScoreBefore), p.N1Before)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for i, m := range p.Moves {
		fmt.Fprintf(tw, "%d.\t%s\t%s => %s\t%s\tcopies %s\tscore %s\n", i+1, clean(m.Instance),
			pair(m.OldPrimary, m.OldSecondary), pair(m.NewPrimary, m.NewSecondary),
			clean(string(m.Kind)), fmtBytes(api.Bytes(m.Bytes)), formatScore(m.ScoreAfter))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	moves := "1 move"
	if len(p.Moves) != 1 {
		moves = fmt.Sprintf("%d moves", len(p.Moves))
	}
	fmt.Fprintf(w, "\nscore %s → %s, N+1 failures %d → %d, %s, %s copied\n",
		formatScore(p.ScoreBefore), formatScore(p.ScoreAfter), p.N1Before, p.N1After, moves, fmtBytes(api.Bytes(p.Bytes)))
	fmt.Fprintln(w, "dry run: nothing was moved; "+strings.TrimSuffix(errNeedsMigration, "; use --dry-run"))
	return nil
}

func (a *app) newClusterSnapshotCmd() *cobra.Command {
	var src sourceFlags
	var out string
	cmd := &cobra.Command{
		Use:   "snapshot [-o FILE]",
		Short: "Write the cluster as the scheduler sees it, as ferry's snapshot JSON",
		Long: `Write the cluster as the scheduler sees it (nodes with capacity, labels and
state; instances with their size, hosts and group; the placement policy) as
ferry's snapshot JSON, to standard output or to -o FILE. The other cluster
verbs read it offline with --from FILE. With --from-ganeti FILE it converts
Ganeti's htools text format instead of asking the server.`,
		Example: "  ferry cluster snapshot -o snapshot.json\n  ferry cluster check --from snapshot.json\n  ferry cluster snapshot --from-ganeti cluster.data -o snapshot.json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var doc []byte
			var snap scheduler.Snapshot
			if src.offline() {
				var err error
				if snap, err = src.load(a.stdin()); err != nil {
					return err
				}
				var buf bytes.Buffer
				if err := clusterfile.WriteSnapshot(&buf, snap); err != nil {
					return err
				}
				doc = buf.Bytes()
			} else {
				var err error
				if doc, err = fetch(a, cmd, "cluster", "", (*client.Client).ClusterSnapshot); err != nil {
					return err
				}
				if snap, err = clusterfile.ReadSnapshot(bytes.NewReader(doc)); err != nil {
					return fmt.Errorf("the server's snapshot: %w", err)
				}
			}
			if len(doc) > 0 && doc[len(doc)-1] != '\n' {
				doc = append(doc, '\n')
			}
			if out == "" || out == "-" {
				_, err := a.stdout().Write(doc)
				return err
			}
			if err := os.WriteFile(out, doc, 0o644); err != nil {
				return fmt.Errorf("-o: %w", err)
			}
			if !a.g.JSON {
				fmt.Fprintf(a.stdout(), "snapshot of %d nodes and %d instances written to %s\n", len(snap.Nodes), len(snap.Instances), out)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the snapshot to this file instead of standard output")
	cmd.Flags().StringVar(&src.fromGaneti, "from-ganeti", "", "convert Ganeti's htools text format in this file (- for stdin) instead of asking the server")
	return cmd
}
