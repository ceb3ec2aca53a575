// Command failover measures ferry's automatic failover on simulated hosts
// with real QEMU guests: for each fault (the primary host's processes all
// killed, its cable pulled, its replica's host killed, the primary cut off
// from the control plane only, the server killed mid-failover) it repeats a
// failover run while a client polls the guest every 100 ms, and prints the
// median and worst time from the fault to serving again, with a breakdown
// (detect, promote, boot, announce), next to the bare boot time of the same
// image measured in the same run. With -load it also runs a loaded primary
// host (every core busy) for that long and counts false failovers and
// self-fences, which must be 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/ferrycluster/ferry/internal/e2e"
)

func main() {
	bin := flag.String("ferry", "bin/ferry", "ferry binary")
	reps := flag.Int("reps", 10, "failovers per fault")
	load := flag.Duration("load", 2*time.Minute, "how long to load the primary's host looking for false failovers (0 skips it)")
	flag.Parse()
	if err := run(*bin, *reps, *load); err != nil {
		fmt.Fprintln(os.Stderr, "bench/failover:", err)
		os.Exit(1)
	}
}

func run(bin string, reps int, load time.Duration) error {
	ctx := context.Background()
	c, err := e2e.StartDemo(ctx, bin, "ferry-bench-failover-", 3)
	if err != nil {
		return err
	}
	defer c.Close()
	var bare []time.Duration
	for i := 0; i < max(1, min(reps, 3)); i++ {
		b, err := c.BareBoot(ctx)
		if err != nil {
			return err
		}
		bare = append(bare, b)
		fmt.Printf("bare boot %d: %.2fs\n", i+1, b.Seconds())
	}
	if _, err := c.ProtectedInstance(ctx, "ha-1"); err != nil {
		return fmt.Errorf("%w\n%s", err, c.Diagnostics())
	}
	faults := e2e.AllFaults
	if reps == 1 {
		faults = []e2e.Fault{e2e.FaultKillHost} // --quick: one run, under a minute
	}
	var primary []time.Duration
	var maxGapReplica time.Duration
	var detect, promote, boot, announce []time.Duration
	minMargin := time.Duration(1 << 62)
	lost, double := 0, 0
	for _, fault := range faults {
		for i := 0; i < reps; i++ {
			res, err := c.RunFailover(ctx, "ha-1", fault)
			fmt.Printf("%2d %s\n", i+1, res)
			if err != nil {
				return fmt.Errorf("%s run %d: %w\n%s", fault, i+1, err, c.Diagnostics())
			}
			lost += res.LostWrites
			double += res.DoubleRunning
			if fault == e2e.FaultReplicaDies {
				maxGapReplica = max(maxGapReplica, res.LongestGap)
			}
			if fault != e2e.FaultReplicaDies {
				primary = append(primary, res.Serving)
				detect, promote = append(detect, res.Detect), append(promote, res.Promote)
				boot, announce = append(boot, res.Boot), append(announce, res.Announce)
			}
			if fault == e2e.FaultLinksDown || fault == e2e.FaultPartitionCP {
				minMargin = min(minMargin, res.FenceMargin)
			}
			if _, err := c.WaitProtected(ctx, "ha-1", 3*time.Minute); err != nil {
				return fmt.Errorf("%s run %d: %w\n%s", fault, i+1, err, c.Diagnostics())
			}
		}
	}
	falseFailovers := "not-run"
	if load > 0 {
		fmt.Printf("slow host: every core busy, 300±50 ms to the server, for %s...\n", load)
		r, err := c.RunSlowHost(ctx, "ha-1", load, 300*time.Millisecond, 50*time.Millisecond)
		if err != nil {
			return err
		}
		fmt.Printf("slow host %s: %d failovers, %d self-fences, %d reboots\n", r.Node, r.Failovers, r.Fences, r.Reboots)
		falseFailovers = fmt.Sprint(r.Failovers + r.Fences)
	}
	mb := median(bare)
	mf := median(primary)
	margin := "n/a"
	if minMargin != time.Duration(1<<62) {
		margin = fmt.Sprintf("%.2f", minMargin.Seconds())
	}
	fmt.Printf("breakdown (medians): detect %.2fs promote %.2fs boot %.2fs announce %.2fs; min fence margin %s s\n",
		median(detect).Seconds(), median(promote).Seconds(), median(boot).Seconds(), median(announce).Seconds(), margin)
	fmt.Printf("RESULT bare_boot_s=%.2f failover_median_s=%.2f failover_max_s=%.2f failover_minus_bare_s=%.2f detect_s=%.2f promote_s=%.2f boot_s=%.2f announce_s=%.2f min_fence_margin_s=%s replica_dies_max_gap_s=%.2f lost_acked_writes=%d double_running=%d false_failovers=%s reps=%d\n",
		mb.Seconds(), mf.Seconds(), slices.Max(primary).Seconds(), (mf - mb).Seconds(),
		median(detect).Seconds(), median(promote).Seconds(), median(boot).Seconds(), median(announce).Seconds(),
		margin, maxGapReplica.Seconds(), lost, double, falseFailovers, reps)
	return nil
}

func median(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
