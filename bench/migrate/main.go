// Command migrate measures ferry's migrations on simulated hosts with real
// QEMU guests, side by side with a bare QEMU boot of the same image in the
// same run: the downtime of a cold and of a live migration to the
// instance's replica host (the longest gap of a client polling the guest's
// HTTP service every 50 ms, and QEMU's own pause for live), and a live move
// to a host that holds no copy of the disk, for a 1 GiB and a 4 GiB disk
// holding the same data (about 50 MiB): its time, its downtime and the
// bytes the disk copy sent, which should follow the data, not the disk's
// size. Every migration checks that data the guest fsync'ed before it is
// still there after it (lost_writes, which must be 0).
//
// The reference for live migration is a bare QEMU live migration of the
// same image between two of the simulated hosts (shared disk file, plain
// TCP, the target starting the guest by itself), measured by the same
// client.
//
// Rounds alternate the measurements (bare boot, cold, live, bare live,
// move 1 GiB, move 4 GiB) so a noisy machine weighs on all of them alike; the figures
// are medians over the rounds.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/e2e"
)

func main() {
	bin := flag.String("ferry", "bin/ferry", "ferry binary")
	reps := flag.Int("reps", 5, "rounds (each: a bare boot, a cold and a live migration, a move of each disk)")
	usedMiB := flag.Int("used-mib", 50, "data on the moved disks, MiB (as the disk file allocates it on its host)")
	flag.DurationVar(&moveTimeout, "move-timeout", 2*time.Minute, "cancel a move still running after this long (0: never; the control plane's watchdog fails one stuck for 3 minutes in a phase)")
	flag.Parse()
	if err := run(*bin, *reps, *usedMiB); err != nil {
		fmt.Fprintln(os.Stderr, "bench/migrate:", err)
		os.Exit(1)
	}
}

// moveTimeout bounds a move (see the flag).
var moveTimeout time.Duration

// move is one disk size's moves to a host without a replica.
type move struct {
	label    string // "1g", "4g"
	instance string
	disk     api.Bytes

	took, downtime, copied []time.Duration
	sent, used             []int64
	// stopped says why no more moves of this disk are tried (refused by
	// the server, failed, no host to move to); empty while they go on.
	stopped string
	// status is "ok", "refused", "failed" or "no-target" for RESULT.
	status string
}

func run(bin string, reps, usedMiB int) error {
	ctx := context.Background()
	reps = max(1, reps)
	// 4 hosts: a move needs one holding no copy besides primary and replica.
	c, err := e2e.StartDemo(ctx, bin, "ferry-bench-migrate-", 4)
	if err != nil {
		return err
	}
	defer c.Close()

	const mig = "mig-1"
	moves := []*move{
		{label: "1g", instance: "mv-1g", disk: 1 << 30, status: "ok"},
		{label: "4g", instance: "mv-4g", disk: 4 << 30, status: "ok"},
	}
	start := time.Now()
	if err := c.CreateSizedInstance(ctx, mig, 1<<30); err != nil {
		return err
	}
	for _, m := range moves {
		if err := c.CreateSizedInstance(ctx, m.instance, m.disk); err != nil {
			return err
		}
	}
	for _, name := range []string{mig, moves[0].instance, moves[1].instance} {
		in, err := c.WaitProtected(ctx, name, 4*time.Minute)
		if err != nil {
			return fmt.Errorf("%w\n%s", err, c.Diagnostics())
		}
		alloc, _ := c.DiskAllocated(in.Status.Node, name)
		fmt.Printf("%s: serving on %s, replica on %s, disk %s (%.1f MiB allocated) after %.1fs\n",
			name, in.Status.Node, in.Status.ReplicaNode, in.Spec.Disk, mib(alloc), time.Since(start).Seconds())
	}

	var bare, cold, live, qemu, bareLive, bareQEMU []time.Duration
	lost, liveReboots, liveFallbacks, coldBootsWrong := 0, 0, 0, 0
	for round := 1; round <= reps; round++ {
		b, err := c.BareBoot(ctx)
		if err != nil {
			return err
		}
		bare = append(bare, b)
		fmt.Printf("round %d: bare boot %.2fs\n", round, b.Seconds())

		res, err := migrateToReplica(ctx, c.Cluster, mig, api.MigrateCold)
		if err != nil {
			return err
		}
		lost += res.LostWrites
		if res.BootsAfter != res.BootsBefore+1 {
			coldBootsWrong++
		}
		cold = append(cold, res.Downtime)
		fmt.Printf("round %d: cold: downtime %.2fs, took %.2fs (%s -> %s, boots %d -> %d, lost writes %d; %s)\n",
			round, res.Downtime.Seconds(), res.Took.Seconds(), res.From, res.To, res.BootsBefore, res.BootsAfter, res.LostWrites,
			timeline(res.Operation))

		res, err = migrateToReplica(ctx, c.Cluster, mig, api.MigrateLive)
		if err != nil {
			return err
		}
		lost += res.LostWrites
		if res.BootsAfter != res.BootsBefore {
			liveReboots++
		}
		if res.Operation.Mode != api.MigrateLive {
			liveFallbacks++ // fell back to cold: its downtime is a cold one
			fmt.Printf("round %d: live migration fell back to %s: %s\n", round, res.Operation.Mode, res.Operation.Message)
		} else {
			live = append(live, res.Downtime)
			qemu = append(qemu, res.QEMUDowntime)
		}
		fmt.Printf("round %d: live: downtime %.3fs from +%.2fs (QEMU %dms), took %.2fs (%s -> %s, boots %d -> %d, lost writes %d; %s)\n",
			round, res.Downtime.Seconds(), res.GapFrom.Seconds(), res.QEMUDowntime.Milliseconds(), res.Took.Seconds(), res.From, res.To,
			res.BootsBefore, res.BootsAfter, res.LostWrites, timeline(res.Operation))

		bl, err := c.BareLiveMigration(ctx)
		if err != nil {
			return fmt.Errorf("bare live migration: %w", err)
		}
		bareLive, bareQEMU = append(bareLive, bl.Downtime), append(bareQEMU, bl.QEMUDowntime)
		fmt.Printf("round %d: bare live: downtime %.3fs from +%.2fs (QEMU %dms, total %dms)\n",
			round, bl.Downtime.Seconds(), bl.GapFrom.Seconds(), bl.QEMUDowntime.Milliseconds(), bl.Total.Milliseconds())

		for _, m := range moves {
			l, err := m.once(ctx, c.Cluster, round, usedMiB)
			lost += l
			if err != nil {
				return err
			}
		}
	}

	mb, mc := median(bare), median(cold)
	fmt.Printf("cold migration: %.2fs against a bare boot of %.2fs (target: at most bare boot + 1 s: %s)\n",
		mc.Seconds(), mb.Seconds(), verdict(mc <= mb+time.Second))
	if liveReboots > 0 || coldBootsWrong > 0 {
		fmt.Printf("WARNING: %d live migrations rebooted the guest, %d cold ones did not boot it exactly once\n", liveReboots, coldBootsWrong)
	}
	for _, m := range moves {
		if m.stopped != "" {
			fmt.Printf("move %s: %s\n", m.label, m.stopped)
		}
	}
	ratio := "n/a"
	b1, b4 := moves[0].bytes(), moves[1].bytes()
	if b1 > 0 && b4 > 0 {
		r := float64(b4) / float64(b1)
		ratio = fmt.Sprintf("%.3f", r)
		fmt.Printf("bytes the copy sent, 4 GiB disk against 1 GiB with the same data: %s (target: about 1: %s)\n",
			ratio, verdict(r < 1.25))
	}
	if lost != 0 {
		fmt.Printf("WARNING: %d migrations lost data the guest had fsync'ed\n", lost)
	}
	liveS, qemuMS, liveVsBare := "n/a", "n/a", "n/a"
	mbl := median(bareLive)
	if len(live) > 0 {
		ml := median(live)
		liveS = fmt.Sprintf("%.3f", ml.Seconds())
		qemuMS = fmt.Sprint(median(qemu).Milliseconds())
		liveVsBare = fmt.Sprintf("%.3f", ml.Seconds()/mbl.Seconds())
		fmt.Printf("live migration: %.3fs against a bare QEMU live migration of %.3fs (ratio %s); target: at most 0.5 s: %s\n",
			ml.Seconds(), mbl.Seconds(), liveVsBare, verdict(ml <= 500*time.Millisecond))
	}
	fields := []string{
		kv("bare_boot_s", "%.2f", mb.Seconds()),
		kv("cold_downtime_s", "%.2f", mc.Seconds()),
		"live_downtime_s=" + liveS,
		"qemu_downtime_ms=" + qemuMS,
		kv("bare_live_downtime_s", "%.3f", mbl.Seconds()),
		"live_vs_bare=" + liveVsBare,
		kv("bare_live_qemu_ms", "%d", median(bareQEMU).Milliseconds()),
		"move_bytes_1g=" + moves[0].bytesField(),
		"move_bytes_4g=" + moves[1].bytesField(),
		"move_s_1g=" + moves[0].secs(moves[0].took, "%.2f"),
		"move_s_4g=" + moves[1].secs(moves[1].took, "%.2f"),
		kv("lost_writes", "%d", lost),
		kv("cold_minus_boot_s", "%.2f", (mc - mb).Seconds()),
		"bytes_ratio_4g_vs_1g=" + ratio,
		// Beyond the keys above:
		kv("cold_vs_boot", "%.3f", mc.Seconds()/mb.Seconds()),
		"move_downtime_s_1g=" + moves[0].secs(moves[0].downtime, "%.3f"),
		"move_downtime_s_4g=" + moves[1].secs(moves[1].downtime, "%.3f"),
		"move_copy_s_1g=" + moves[0].secs(moves[0].copied, "%.2f"),
		"move_copy_s_4g=" + moves[1].secs(moves[1].copied, "%.2f"),
		"move_used_mib_1g=" + moves[0].usedField(),
		"move_used_mib_4g=" + moves[1].usedField(),
		kv("live_reboots", "%d", liveReboots),
		kv("live_fallbacks", "%d", liveFallbacks),
		"move_1g=" + moves[0].status,
		"move_4g=" + moves[1].status,
		kv("reps", "%d", reps),
	}
	fmt.Println("RESULT " + strings.Join(fields, " "))
	return nil
}

// migrateToReplica runs one migration of name to its replica's host and
// waits until it is protected again; a migration that does not succeed is
// an error (with the processes' output).
func migrateToReplica(ctx context.Context, c *e2e.Cluster, name, mode string) (e2e.MigrationResult, error) {
	res, err := c.RunMigration(ctx, name, api.MigrateRequest{Mode: mode}, nil)
	if err != nil {
		return res, fmt.Errorf("%s migration: %w\n%s", mode, err, c.Diagnostics())
	}
	if res.Operation.State != api.OpSucceeded || res.To == res.From {
		return res, fmt.Errorf("%s migration did not move %s: %s\n%s", mode, name, res, c.Diagnostics())
	}
	if _, err := c.WaitProtected(ctx, name, 3*time.Minute); err != nil {
		return res, fmt.Errorf("after a %s migration: %w\n%s", mode, err, c.Diagnostics())
	}
	return res, nil
}

// once moves m's instance live to a host that holds no copy of its disk,
// after topping its data up to usedMiB. It returns the writes lost; a
// refusal by the server or a failed move is recorded in m (and ends m's
// moves), not an error: the feature may not be there yet.
func (m *move) once(ctx context.Context, c *e2e.Cluster, round, usedMiB int) (lost int, err error) {
	if m.stopped != "" {
		return 0, nil
	}
	target, stale, err := c.HostWithoutCopy(ctx, m.instance)
	if err != nil {
		return 0, err
	}
	if target == "" {
		m.stopped, m.status = "not measured: no Ready host without a copy of the disk", "no-target"
		fmt.Printf("round %d: move %s: %s\n", round, m.label, m.stopped)
		return 0, nil
	}
	// RunMigration writes (and fsyncs) 1 MiB more itself.
	used, err := c.FillTo(ctx, m.instance, int64(usedMiB)<<20, 1)
	if err != nil {
		return 0, fmt.Errorf("move %s: filling the disk: %w", m.label, err)
	}
	note := ""
	if stale {
		note = " (it has a disk file of the instance left from an earlier move)"
	}
	fmt.Printf("round %d: move %s: %s disk with %.1f MiB allocated (+1 MiB) to %s%s...\n",
		round, m.label, m.disk, mib(used), target, note)
	// The operation's progress turns to the memory transfer once the copy
	// is done: a watcher keeps the copy's last figures.
	var w copyWatch
	res, err := c.RunMigration(ctx, m.instance, api.MigrateRequest{To: target, Mode: api.MigrateLive}, func(op *api.Operation) error {
		w.start(ctx, c, op.Name, moveTimeout)
		return nil
	})
	w.stop()
	if ae := (*client.APIError)(nil); errors.As(err, &ae) {
		m.stopped = fmt.Sprintf("NOT MEASURED: the server refused the move (%d): %s", ae.Status, ae.Error())
		m.status = "refused"
		fmt.Printf("round %d: move %s: %s\n", round, m.label, m.stopped)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("move %s: %w\n%s", m.label, err, c.Diagnostics())
	}
	lost = res.LostWrites
	op := res.Operation
	if op.State != api.OpSucceeded || res.To != target {
		w.see(op)
		m.stopped = fmt.Sprintf("NOT MEASURED: the move ended %s on %s: %s (steps: %s; copy progress %s)",
			op.State, res.To, op.Message, timeline(op), w.String())
		m.status = "failed"
		fmt.Printf("round %d: move %s: %s\n", round, m.label, m.stopped)
		fmt.Fprintf(os.Stderr, "move %s failed; the processes' output:\n%s\n", m.label, c.Diagnostics())
		if _, err := c.WaitProtected(ctx, m.instance, 3*time.Minute); err != nil {
			return lost, fmt.Errorf("after a failed move: %w", err)
		}
		return lost, nil
	}
	m.took = append(m.took, res.Took)
	m.downtime = append(m.downtime, res.Downtime)
	m.used = append(m.used, used)
	w.see(op)
	sent := int64(-1)
	if w.seen {
		sent = w.sent
		m.sent = append(m.sent, sent)
	}
	copyS := time.Duration(-1)
	if cs := op.Step(api.StepCopied); cs != nil {
		from := op.StartedAt
		if rq := op.Step(api.StepRequested); rq != nil {
			from = rq.At
		}
		copyS = cs.At.Sub(from)
		m.copied = append(m.copied, copyS)
	}
	sentS := "unknown (the operation reports no copy progress)"
	if sent >= 0 {
		sentS = fmt.Sprintf("%d bytes (%.1f MiB of %.1f MiB)", sent, mib(sent), mib(w.total))
	}
	copyStr := "n/a (no copied step)"
	if copyS >= 0 {
		copyStr = fmt.Sprintf("%.2fs", copyS.Seconds())
	}
	fmt.Printf("round %d: move %s: took %.2fs (copy %s), downtime %.3fs from +%.2fs (QEMU %dms, mode %s), copy sent %s, %s -> %s, lost writes %d; %s\n",
		round, m.label, res.Took.Seconds(), copyStr, res.Downtime.Seconds(), res.GapFrom.Seconds(), res.QEMUDowntime.Milliseconds(), op.Mode,
		sentS, res.From, res.To, res.LostWrites, timeline(op))
	if _, err := c.WaitProtected(ctx, m.instance, 3*time.Minute); err != nil {
		return lost, fmt.Errorf("after move %s: %w\n%s", m.label, err, c.Diagnostics())
	}
	return lost, nil
}

// copyWatch follows a move's operation for the disk copy's progress,
// which the memory transfer's progress replaces in the operation later.
type copyWatch struct {
	mu          sync.Mutex
	seen        bool
	sent, total int64
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

// start follows operation name until stop; if it still runs after
// timeout (0: no limit), it cancels it (once).
func (w *copyWatch) start(ctx context.Context, c *e2e.Cluster, name string, timeout time.Duration) {
	ctx, w.cancel = context.WithCancel(ctx)
	began := time.Now()
	w.wg.Go(func() {
		cancelled := false
		for ctx.Err() == nil {
			if op, err := c.Client.GetOperation(ctx, name); err == nil {
				w.see(op)
				if op.State != api.OpRunning {
					return
				}
			}
			if timeout > 0 && !cancelled && time.Since(began) > timeout {
				cancelled = true
				_, err := c.Client.CancelOperation(ctx, name)
				fmt.Printf("move still running after %s: cancelling %s (%v)\n", timeout, name, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

func (w *copyWatch) stop() {
	if w.cancel != nil {
		w.cancel()
		w.wg.Wait()
	}
}

// see records op's copy progress, keeping the highest figures seen.
func (w *copyWatch) see(op *api.Operation) {
	p := op.Progress
	if p == nil || (p.CopySent == 0 && p.CopyTotal == 0 && p.CopyDone == 0) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = true
	w.sent, w.total = max(w.sent, p.CopySent), max(w.total, p.CopyTotal)
}

func (w *copyWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.seen {
		return "never reported"
	}
	return fmt.Sprintf("sent %d bytes of %d", w.sent, w.total)
}

// bytes is the median of the bytes the copies sent, 0 if none is known.
func (m *move) bytes() int64 {
	if len(m.sent) == 0 {
		return 0
	}
	s := slices.Clone(m.sent)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func (m *move) bytesField() string {
	if b := m.bytes(); b > 0 {
		return fmt.Sprint(b)
	}
	return "n/a"
}

func (m *move) usedField() string {
	if len(m.used) == 0 {
		return "n/a"
	}
	s := slices.Clone(m.used)
	slices.Sort(s)
	return fmt.Sprintf("%.1f", mib(s[(len(s)-1)/2])+1) // +1: RunMigration's own MiB
}

func (m *move) secs(v []time.Duration, format string) string {
	if len(v) == 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, median(v).Seconds())
}

// timeline is the operation's steps with their times from its start, e.g.
// "requested +0.00s, stopped +5.81s, switched +5.90s".
func timeline(op *api.Operation) string {
	var parts []string
	for _, s := range op.Steps {
		parts = append(parts, fmt.Sprintf("%s +%.2fs", s.Name, s.At.Sub(op.StartedAt).Seconds()))
	}
	if !op.EndedAt.IsZero() {
		parts = append(parts, fmt.Sprintf("ended +%.2fs", op.EndedAt.Sub(op.StartedAt).Seconds()))
	}
	return strings.Join(parts, ", ")
}

func kv(key, format string, v any) string { return key + "=" + fmt.Sprintf(format, v) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
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
