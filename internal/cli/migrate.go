package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// This file implements `instance migrate`, `operation cancel`, `node drain`
// and `node undrain`, and follows their progress.

// migrateFlags are the flags of `instance migrate`.
type migrateFlags struct {
	to       string
	mode     string
	downtime time.Duration
	converge time.Duration
	fallback string
	maxBW    string
	waitFlags
}

func (a *app) newInstanceMigrateCmd() *cobra.Command {
	f := &migrateFlags{}
	cmd := &cobra.Command{
		Use:   "migrate NAME",
		Short: "Move an instance to another host, live or cold",
		Long: `Move an instance to another host. A live migration (the default) copies the
running guest's memory to the target and switches over with a pause of a
fraction of a second; a cold one shuts the guest down and boots it on the
target. A replicated disk moves by default to its replica's host, where it is
already in sync: the two hosts swap roles. --to may name any other host: the
disk is first copied there while the guest runs (a third copy, synchronous
once it caught up; holes are not sent), then the guest moves as above, the
target becomes the primary, the replica stays where it was and the source's
copy is dropped. The pause does not grow with the disk's size. On shared
storage the scheduler picks the target unless --to names one.

--downtime-limit is the longest pause a live migration may cause; QEMU keeps
copying until the rest fits in it. If it does not within --converge-timeout,
the migration goes on cold (--fallback cold, the default) or fails
(--fallback fail). --max-bandwidth caps the memory stream (bytes per second,
e.g. 100M), so a migration does not starve the hosts' other traffic.

With --wait it follows the migration: each step as it is done, a progress bar
while the disk is copied and while the memory is sent, then the result and the downtime; it exits non-zero
if the migration failed or was cancelled. Without it, follow it with
ferry operation show ID; cancel it with ferry operation cancel ID.`,
		Example: `  ferry instance migrate web-1 --wait
  ferry instance migrate web-1 --mode cold --wait
  ferry instance migrate db-1 --to n3 --downtime-limit 100ms --converge-timeout 2m --fallback fail`,
		Args: exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runMigrate(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.to, "to", "", "target host (default: the replica's host, or the scheduler's pick on shared storage)")
	fl.StringVar(&f.mode, "mode", api.MigrateLive, "live or cold")
	fl.DurationVar(&f.downtime, "downtime-limit", time.Duration(api.DefaultDowntimeLimitMS)*time.Millisecond, "live: the longest pause the switchover may cause")
	fl.DurationVar(&f.converge, "converge-timeout", time.Duration(api.DefaultConvergeSeconds)*time.Second, "live: how long the memory transfer may take")
	fl.StringVar(&f.fallback, "fallback", api.MigFallbackCold, "live: what a transfer that does not converge does: cold or fail")
	fl.StringVar(&f.maxBW, "max-bandwidth", "", "live: cap on the memory stream, per second, e.g. 100M (default: none)")
	f.waitFlags.bindFor(cmd, "follow the migration until it ends, printing its steps and progress", 10*time.Minute)
	return cmd
}

// request builds and checks the migrate request from the flags, naming the
// flag at fault.
func (f *migrateFlags) request() (api.MigrateRequest, error) {
	req := api.MigrateRequest{To: f.to, Mode: f.mode, Fallback: f.fallback}
	switch {
	case f.downtime < time.Millisecond || f.downtime > api.MaxDowntimeLimitMS*time.Millisecond:
		return req, &flagError{flag: "--downtime-limit", msg: fmt.Sprintf("must be between 1ms and %s, got %s", time.Duration(api.MaxDowntimeLimitMS)*time.Millisecond, f.downtime)}
	case f.downtime%time.Millisecond != 0:
		return req, &flagError{flag: "--downtime-limit", msg: fmt.Sprintf("must be a whole number of milliseconds, got %s", f.downtime)}
	case f.converge < time.Second || f.converge > api.MaxConvergeSeconds*time.Second:
		return req, &flagError{flag: "--converge-timeout", msg: fmt.Sprintf("must be between 1s and %s, got %s", time.Duration(api.MaxConvergeSeconds)*time.Second, f.converge)}
	case f.converge%time.Second != 0:
		return req, &flagError{flag: "--converge-timeout", msg: fmt.Sprintf("must be a whole number of seconds, got %s", f.converge)}
	}
	req.DowntimeLimitMS = int(f.downtime / time.Millisecond)
	req.ConvergeSeconds = int(f.converge / time.Second)
	if f.maxBW != "" {
		bw, err := api.ParseBytes(strings.TrimSuffix(f.maxBW, "/s"))
		if err != nil {
			return req, &flagError{flag: "--max-bandwidth", msg: err.Error(), err: err}
		}
		req.MaxBandwidth = int64(bw)
	}
	if err := req.Validate(); err != nil {
		return req, migrateFlagError(err)
	}
	return req, nil
}

// migrateFlagFor maps a field of a migrate request to its flag.
func migrateFlagFor(field string) string {
	switch field {
	case "to":
		return "--to"
	case "mode":
		return "--mode"
	case "downtimeLimitMs":
		return "--downtime-limit"
	case "convergeSeconds":
		return "--converge-timeout"
	case "fallback":
		return "--fallback"
	case "maxBandwidth":
		return "--max-bandwidth"
	case "maxConcurrent":
		return "--max-concurrent"
	case "restore":
		return "--restore"
	}
	return field
}

// migrateFlagError rewrites an error about a field of a migrate or drain
// request (local, or from the server) to name its flag.
func migrateFlagError(err error) error {
	var fe *api.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		return &flagError{flag: migrateFlagFor(fe.Field), msg: fe.Message, err: err}
	}
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Field != "" {
		return &flagError{flag: migrateFlagFor(ae.Field), msg: strings.TrimPrefix(ae.Message, ae.Field+": "), err: err}
	}
	return err
}

func (a *app) runMigrate(cmd *cobra.Command, name string, f *migrateFlags) error {
	req, err := f.request()
	if err != nil {
		return err
	}
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := a.requestContext(cmd)
	op, err := c.MigrateInstance(ctx, name, req)
	cancel()
	if err != nil {
		if client.IsNotFound(err) {
			return explain(err, conn, "instance", name)
		}
		return explain(migrateFlagError(err), conn, "instance", "")
	}
	if !f.wait {
		if a.g.JSON {
			return printJSON(a.stdout(), op)
		}
		fmt.Fprintf(a.stdout(), "migration %s started: %s %s from %s to %s (follow it: ferry operation show %s)\n",
			clean(op.Name), clean(name), clean(op.Mode), clean(op.From), clean(op.To), clean(op.Name))
		return nil
	}
	op, err = a.followOperation(cmd, c, conn, op, f.timeout)
	if err != nil {
		return err
	}
	if a.g.JSON {
		if err := printJSON(a.stdout(), op); err != nil {
			return err
		}
	} else if op.State == api.OpSucceeded {
		fmt.Fprintf(a.stdout(), "instance %q migrated %s from %s to %s in %s; downtime %s\n",
			name, clean(op.Mode), clean(op.From), clean(op.To), took(a.opts.Now(), op), downtime(op))
	}
	return operationOutcome(op)
}

// operationOutcome is nil for a succeeded operation, else an error that
// says how it ended.
func operationOutcome(op *api.Operation) error {
	switch op.State {
	case api.OpSucceeded:
		return nil
	case api.OpCancelled:
		return fmt.Errorf("%s %s was cancelled: %s", op.Type, op.Name, dash(clean(op.Message)))
	}
	return fmt.Errorf("%s %s failed: %s", op.Type, op.Name, dash(clean(op.Message)))
}

// downtime says how long a migration's guest was paused or down: "42 ms",
// "9.8s".
func downtime(op *api.Operation) string {
	d := time.Duration(op.DowntimeMS) * time.Millisecond
	if d < time.Second {
		return fmt.Sprintf("%d ms", op.DowntimeMS)
	}
	return elapsed(d)
}

// followOperation polls the operation until it ends, printing each new
// step to stderr and, while a live migration sends memory, a progress bar
// (not with --json). It returns the ended operation.
func (a *app) followOperation(cmd *cobra.Command, c *client.Client, conn *connection, op *api.Operation, timeout time.Duration) (*api.Operation, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	p := &opReporter{a: a, bar: !a.g.JSON}
	defer p.endBar()
	what := func() string {
		last := "none"
		if n := len(op.Steps); n > 0 {
			last = op.Steps[n-1].Name
		}
		return fmt.Sprintf("operation %s to end (last step: %s)", op.Name, last)
	}
	for {
		p.show(op)
		if op.State != api.OpRunning {
			return op, nil
		}
		if err := a.pause(ctx); err != nil {
			return op, waitError(cmd.Context(), err, timeout, what())
		}
		next, err := c.GetOperation(ctx, op.Name)
		switch {
		case err == nil:
			op = next
		case ctx.Err() != nil:
			return op, waitError(cmd.Context(), ctx.Err(), timeout, what())
		case retryable(err):
			p.problem(err)
		default:
			return op, explain(err, conn, "operation", op.Name)
		}
	}
}

// opReporter prints an operation's steps as they appear, and a progress
// bar for a live migration's memory transfer.
type opReporter struct {
	a       *app
	bar     bool
	steps   int
	lastErr string
	cur     *progressbar.ProgressBar
	total   int64
	kind    string // what the bar shows: "copy" (the disk) or "memory"
	drawn   time.Time
}

func (p *opReporter) show(op *api.Operation) {
	for ; p.steps < len(op.Steps); p.steps++ {
		p.endBar()
		st := op.Steps[p.steps]
		at := "-"
		if !st.At.IsZero() {
			at = st.At.Local().Format("15:04:05.000")
		}
		fmt.Fprintf(p.a.stderr(), "%s  %s  %s\n", at, clean(op.Name), clean(joinNonEmpty("  ", st.Name, st.Message)))
	}
	pr := op.Progress
	if !p.bar || op.State != api.OpRunning || pr == nil {
		return
	}
	var total, done int64
	var kind, text string
	switch {
	case pr.CopyTotal > 0 && op.Step(api.StepCopied) == nil:
		// A move to a host that held no replica: the disk copy first.
		kind, total, done = "copy", pr.CopyTotal, min(max(pr.CopyDone, 0), pr.CopyTotal)
		text = fmt.Sprintf("disk to %s: %s sent (holes skipped)", clean(op.To), fmtBytes(api.Bytes(pr.CopySent)))
	case pr.RAMTotal > 0 && op.Step(api.StepTransferred) == nil && op.Step(api.StepFallback) == nil:
		kind, total, done = "memory", pr.RAMTotal, min(max(pr.RAMTotal-pr.RAMRemaining, 0), pr.RAMTotal)
		text = fmt.Sprintf("%s sent, %s left to %s", fmtBytes(api.Bytes(pr.RAMTransferred)), fmtBytes(api.Bytes(pr.RAMRemaining)), clean(op.To))
	default:
		return
	}
	if p.cur == nil || total != p.total || kind != p.kind {
		p.endBar()
		p.cur = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.a.stderr()),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetDescription(text),
		)
		p.total, p.kind = total, kind
		_ = p.cur.Set64(done)
		p.drawn = time.Now()
		return
	}
	if time.Since(p.drawn) >= barThrottle {
		p.drawn = time.Now()
		p.cur.Describe(text)
		_ = p.cur.Set64(done)
	}
}

func (p *opReporter) endBar() {
	if p.cur == nil {
		return
	}
	fmt.Fprintln(p.a.stderr())
	p.cur = nil
}

func (p *opReporter) problem(err error) {
	msg := clean(err.Error())
	if msg == p.lastErr {
		return
	}
	p.lastErr = msg
	p.endBar()
	fmt.Fprintf(p.a.stderr(), "%s  (retrying: %s)\n", p.a.opts.Now().Local().Format("15:04:05.000"), msg)
}

func (a *app) newOperationCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a migration before its switch",
		Long: `Cancel a migration that has not switched its instance's disk to the target
yet: the instance stays on its host, the target drops what it prepared. A
migration past its switch completes; other operations cannot be cancelled.`,
		Example: "  ferry operation cancel migrate-web-1-3-1",
		Args:    exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := fetch(a, cmd, "operation", args[0], func(c *client.Client, ctx context.Context) (*api.Operation, error) {
				return c.CancelOperation(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), op)
			}
			fmt.Fprintf(a.stdout(), "operation %s cancelled: %s stays on %s\n", clean(op.Name), clean(op.Instance), clean(op.From))
			return nil
		},
	}
}

// drainFlags are the flags of `node drain`.
type drainFlags struct {
	mode     string
	max      int
	replicas bool
	waitFlags
}

func (a *app) newNodeDrainCmd() *cobra.Command {
	f := &drainFlags{}
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Move every instance off a node, a few at a time",
		Long: `Drain a node: cordon it (nothing new is placed there) and have the control
plane migrate each instance it runs to another host (to its replica's host),
--max-concurrent at a time. An instance that cannot move yet (not running, its
replica not in sync, no room) is shown with the reason and tried again. The
node is drained once it runs no instance. Its replicas stay unless
--replicas: fine for a short maintenance (each only resyncs what changed
while the host was away). For a host that leaves for long or for good,
--replicas gives each replica to another host too; the new one takes a full
sync, and until it is done the instance cannot fail over (as when its
replica host is down).
Undo with ferry node undrain NAME (--restore moves the instances back).

With --wait it prints the progress until the node is drained.`,
		Example: "  ferry node drain n1 --wait\n  ferry node drain n1 --mode cold --max-concurrent 4\n  ferry node drain n1 --replicas --wait",
		Args:    exactlyOneName("node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runDrain(cmd, args[0], f)
		},
	}
	cmd.Flags().StringVar(&f.mode, "mode", api.MigrateLive, "how instances move: live or cold")
	cmd.Flags().IntVar(&f.max, "max-concurrent", api.DefaultDrainConcurrency, "most migrations (and replica syncs) at once from or to the node")
	cmd.Flags().BoolVar(&f.replicas, "replicas", false, "move the replicas the node holds to other hosts too (each takes a full sync)")
	f.waitFlags.bindFor(cmd, "wait until the node is drained, printing progress", 30*time.Minute)
	return cmd
}

func (a *app) runDrain(cmd *cobra.Command, name string, f *drainFlags) error {
	req := api.DrainRequest{Mode: f.mode, MaxConcurrent: f.max, Replicas: f.replicas}
	if f.max < 1 || f.max > api.MaxDrainConcurrency {
		return &flagError{flag: "--max-concurrent", msg: fmt.Sprintf("must be between 1 and %d, got %d", api.MaxDrainConcurrency, f.max)}
	}
	if err := req.Validate(); err != nil {
		return migrateFlagError(err)
	}
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := a.requestContext(cmd)
	n, err := c.DrainNode(ctx, name, req)
	cancel()
	if err != nil {
		if client.IsNotFound(err) {
			return explain(err, conn, "node", name)
		}
		return explain(migrateFlagError(err), conn, "node", "")
	}
	if f.wait {
		n, err = a.waitNode(cmd, c, conn, n, f.timeout, "drained", func(n *api.Node) bool {
			return n.Spec.Drain == nil || (n.Status.Drain != nil && n.Status.Drain.Drained)
		})
		if err != nil {
			return err
		}
		if n.Spec.Drain == nil {
			return fmt.Errorf("the drain of node %q was ended (undrained) while waiting", name)
		}
	}
	if a.g.JSON {
		return printJSON(a.stdout(), n)
	}
	d := n.Spec.Drain
	if f.wait {
		msg := fmt.Sprintf("node %q drained: the drain moved %d instances (%s)", name, len(d.Took), dash(strings.Join(d.Took, ", ")))
		if d.Replicas {
			msg += fmt.Sprintf(" and %d replicas (%s)", len(d.MovedReplicas), dash(strings.Join(d.MovedReplicas, ", ")))
		}
		fmt.Fprintln(a.stdout(), clean(msg))
		return nil
	}
	var st api.DrainStatus
	if n.Status.Drain != nil {
		st = *n.Status.Drain
	}
	what := fmt.Sprintf("%d instances to move", st.Remaining)
	if d.Replicas {
		what += fmt.Sprintf(" and %d replicas", st.Replicas)
	}
	fmt.Fprintf(a.stdout(), "node %q draining: %s, %d at a time (%s)\n", name, what, d.MaxConcurrent, clean(d.Mode))
	return nil
}

// undrainFlags are the flags of `node undrain`.
type undrainFlags struct {
	restore bool
	waitFlags
}

func (a *app) newNodeUndrainCmd() *cobra.Command {
	f := &undrainFlags{}
	cmd := &cobra.Command{
		Use:     "undrain NAME",
		Aliases: []string{"uncordon"},
		Short:   "Make a node schedulable again, ending its drain",
		Long: `End a node's drain (or cordon): new instances may be placed there again.
Migrations in flight go on. --restore migrates the instances the drain moved
off the node back to it, as many at a time as the drain did; with --wait it
prints the progress until they all went back.`,
		Example: "  ferry node undrain n1\n  ferry node undrain n1 --restore --wait",
		Args:    exactlyOneName("node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runUndrain(cmd, args[0], f)
		},
	}
	cmd.Flags().BoolVar(&f.restore, "restore", false, "move the instances the drain took back to the node")
	f.waitFlags.bindFor(cmd, "with --restore, wait until the instances are back, printing progress", 30*time.Minute)
	return cmd
}

func (a *app) runUndrain(cmd *cobra.Command, name string, f *undrainFlags) error {
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := a.requestContext(cmd)
	n, err := c.UndrainNode(ctx, name, api.UndrainRequest{Restore: f.restore})
	cancel()
	if err != nil {
		if client.IsNotFound(err) {
			return explain(err, conn, "node", name)
		}
		return explain(migrateFlagError(err), conn, "node", "")
	}
	var back []string
	if n.Spec.Restore != nil {
		back = n.Spec.Restore.Instances
	}
	if f.wait && f.restore {
		n, err = a.waitNode(cmd, c, conn, n, f.timeout, "restored", func(n *api.Node) bool {
			return n.Spec.Restore == nil && (n.Status.Drain == nil || n.Status.Drain.Migrating == 0)
		})
		if err != nil {
			return err
		}
	}
	if a.g.JSON {
		return printJSON(a.stdout(), n)
	}
	switch {
	case f.wait && f.restore:
		fmt.Fprintf(a.stdout(), "node %q schedulable again; the instances the drain took are back (%s)\n", name, clean(dash(strings.Join(back, ", "))))
	case len(back) > 0:
		fmt.Fprintf(a.stdout(), "node %q schedulable again; moving back %d instances: %s\n", name, len(back), clean(strings.Join(back, ", ")))
	default:
		fmt.Fprintf(a.stdout(), "node %q schedulable again\n", name)
	}
	return nil
}

// waitNode polls the node until done holds, printing each change of its
// drain's progress to stderr.
func (a *app) waitNode(cmd *cobra.Command, c *client.Client, conn *connection, n *api.Node, timeout time.Duration, what string, done func(*api.Node) bool) (*api.Node, error) {
	name := n.Name
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	last, lastErr := "", ""
	line := func(s string) {
		fmt.Fprintf(a.stderr(), "%s  node/%s  %s\n", a.opts.Now().Local().Format("15:04:05"), name, s)
	}
	for {
		if s := drainProgress(n); s != last {
			last, lastErr = s, ""
			line(s)
		}
		if done(n) {
			return n, nil
		}
		if err := a.pause(ctx); err != nil {
			return n, waitError(cmd.Context(), err, timeout, fmt.Sprintf("node %q to be %s (now %s)", name, what, last))
		}
		next, err := c.GetNode(ctx, name)
		switch {
		case err == nil:
			n = next
		case client.IsNotFound(err):
			return n, &messageError{msg: fmt.Sprintf("node %q was removed while waiting for it to be %s", name, what), err: err}
		case ctx.Err() != nil:
			return n, waitError(cmd.Context(), ctx.Err(), timeout, fmt.Sprintf("node %q to be %s (now %s)", name, what, last))
		case retryable(err):
			if msg := clean(err.Error()); msg != lastErr {
				lastErr = msg
				line("(retrying: " + msg + ")")
			}
		default:
			return n, explain(err, conn, "node", name)
		}
	}
}

// drainProgress says in one line how a node's drain or restore goes:
// "draining: 2 left, 1 migrating; blocked: web-3 (its replica ...)".
func drainProgress(n *api.Node) string {
	st := n.Status.Drain
	if st == nil {
		st = &api.DrainStatus{}
	}
	var s string
	var blocked map[string]string
	switch {
	case n.Spec.Drain != nil && st.Drained:
		s = "drained"
	case n.Spec.Drain != nil:
		s = fmt.Sprintf("draining: %d left, %d migrating", st.Remaining, st.Migrating)
		if n.Spec.Drain.Replicas {
			s += fmt.Sprintf(", %d replicas left, %d syncing elsewhere", st.Replicas, st.Resyncing)
		}
		blocked = n.Spec.Drain.Blocked
	case n.Spec.Restore != nil:
		s = fmt.Sprintf("restoring: %d to move back, %d migrating", len(n.Spec.Restore.Instances), st.Migrating)
		blocked = n.Spec.Restore.Blocked
	case st.Migrating > 0:
		s = fmt.Sprintf("%d migrating", st.Migrating)
	default:
		s = "no migration in flight"
	}
	if len(blocked) > 0 {
		var parts []string
		for _, name := range sortedKeys(blocked) {
			parts = append(parts, name+" ("+blocked[name]+")")
		}
		s += "; blocked: " + strings.Join(parts, "; ")
	}
	return clean(s)
}

// describeMigration is the "Migration" line of `instance show`: "live to
// n2, phase ready (operation migrate-web-1-3-1)".
func describeMigration(m *api.MigrationStatus) string {
	s := fmt.Sprintf("%s from %s to %s, phase %s (operation %s)", m.Mode, m.Source, m.Target, m.Phase, m.Operation)
	if m.Copy {
		s += ", copying the disk there first (it held no replica)"
	}
	if m.Drain != "" {
		s += ", drain of " + m.Drain
	}
	return clean(s)
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
