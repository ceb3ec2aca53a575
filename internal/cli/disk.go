package cli

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// This file formats the replication state of an instance's disk (show, ls)
// and implements `instance wait-synced`.

// Why an instance's disk has no replica.
const (
	whyShared    = "shared storage"
	whyUnplaced  = "not placed yet"
	whyNoReplica = "no second host"
)

// diskUnreplicated says why an instance's disk has no replica (whyShared,
// whyUnplaced, whyNoReplica), or "" if it has one: a local disk on a placed
// instance with a replica host.
func diskUnreplicated(in *api.Instance) string {
	switch {
	case in.Spec.SharedPath() != "":
		return whyShared
	case in.Spec.Storage != "" && in.Spec.Storage != "local":
		return "storage " + in.Spec.Storage
	case in.Status.Node == "":
		return whyUnplaced
	case in.Status.ReplicaNode == "":
		return whyNoReplica
	}
	return ""
}

// currentDisk returns the primary's report of the disk's replication if it
// was made under the instance's current epoch, else nil: a report from an
// older epoch (before a placement, promotion or outdate) says nothing about
// the disk now.
func currentDisk(in *api.Instance) *api.DiskStatus {
	if d := in.Status.Disk; d != nil && d.Epoch >= in.Status.Epoch {
		return d
	}
	return nil
}

// diskReplication is the "Disk replication" line of `instance show`, e.g.
// "UpToDate (epoch 3)", "Syncing 42% (174M of 300M left, 31M/s, about 6s
// left)", "Degraded: replica unreachable; replica lacks 10M", "none (shared
// storage)".
func diskReplication(in *api.Instance) string {
	if why := diskUnreplicated(in); why != "" {
		return "none (" + why + ")"
	}
	d := in.Status.Disk
	switch {
	case d == nil:
		return "waiting for the primary's first report"
	case currentDisk(in) == nil:
		return fmt.Sprintf("waiting for the primary's report under epoch %d (last: %s under epoch %d)", in.Status.Epoch, clean(d.State), d.Epoch)
	}
	return describeDisk(d)
}

// describeDisk formats a disk report: its state, its progress when
// syncing, its reason, what the replica lacks and what the last resync sent.
func describeDisk(d *api.DiskStatus) string {
	s := clean(d.State)
	switch d.State {
	case api.DiskUpToDate:
		s += fmt.Sprintf(" (epoch %d)", d.Epoch)
	case api.DiskSyncing:
		if p := syncProgress(d.Sync); p != "" {
			s += " " + p
		}
	}
	if r := clean(d.Reason); r != "" {
		s += ": " + r
	}
	if d.DirtyBytes > 0 && d.State != api.DiskUpToDate && d.State != api.DiskSyncing {
		s += "; replica lacks " + fmtBytes(api.Bytes(d.DirtyBytes))
	}
	if d.Sync != nil && d.Sync.Done && d.State != api.DiskSyncing {
		s += "; last resync sent " + fmtBytes(api.Bytes(d.Sync.SentBytes))
	}
	return s
}

// syncPercent is how much of a resync is done, in whole percent; 100 only
// once everything is.
func syncPercent(s *api.DiskSync) int {
	p := int(math.Floor(s.Percent()))
	switch {
	case p >= 100 && s.DoneBytes < s.TotalBytes:
		return 99
	case p > 100:
		return 100
	case p < 0:
		return 0
	}
	return p
}

// syncProgress formats a resync in progress: "42% (174M of 300M left,
// 31M/s, about 6s left)". It is "" when the resync's size is unknown.
func syncProgress(s *api.DiskSync) string {
	if s == nil || s.TotalBytes <= 0 {
		return ""
	}
	parts := []string{fmt.Sprintf("%s of %s left", fmtBytes(api.Bytes(max(s.TotalBytes-s.DoneBytes, 0))), fmtBytes(api.Bytes(s.TotalBytes)))}
	if s.BytesPerSecond > 0 {
		parts = append(parts, fmtBytes(api.Bytes(s.BytesPerSecond))+"/s")
	}
	if s.ETASeconds > 0 {
		parts = append(parts, "about "+shortDuration(time.Duration(math.Ceil(s.ETASeconds))*time.Second)+" left")
	}
	return fmt.Sprintf("%d%% (%s)", syncPercent(s), strings.Join(parts, ", "))
}

// diskColumn is the DISK-REPL column of `instance ls`: the state, with the
// percentage when syncing; "" (shown "-") when the disk is not replicated.
func diskColumn(in *api.Instance) string {
	if diskUnreplicated(in) != "" {
		return ""
	}
	d := currentDisk(in)
	switch {
	case d == nil:
		return "Unreported"
	case d.State == api.DiskSyncing && d.Sync != nil && d.Sync.TotalBytes > 0:
		return fmt.Sprintf("%s %d%%", d.State, syncPercent(d.Sync))
	}
	return d.State
}

// replicaState is the "Replica" line of `instance show`: whether the
// control plane holds the replica up to date (only then may it be
// promoted), and how often it was reset after diverging.
func replicaState(in *api.Instance) string {
	if diskUnreplicated(in) != "" {
		return ""
	}
	s := "up to date (protected: it can take over if this host dies)"
	if in.Status.ReplicaOutdated {
		s = "outdated: UNPROTECTED until it is synced (it may lack writes, so it is never promoted)"
	}
	switch n := in.Status.ReplicaResets; n {
	case 0:
	case 1:
		s += "; reset once after diverging"
	default:
		s += fmt.Sprintf("; reset %d times after diverging", n)
	}
	return s
}

// diskSynced reports whether the instance's replica holds every write: the
// primary reports the disk UpToDate under the current epoch, and the
// control plane no longer marks the replica outdated.
func diskSynced(in *api.Instance) bool {
	d := currentDisk(in)
	return diskUnreplicated(in) == "" && d != nil && d.State == api.DiskUpToDate &&
		d.Epoch == in.Status.Epoch && !in.Status.ReplicaOutdated
}

// syncState says where a wait for the disk to be in sync stands, for
// progress lines and errors: "Degraded: replica unreachable; replica lacks
// 10M", "Pending: no node has room ...".
func syncState(in *api.Instance) string {
	if diskUnreplicated(in) == whyUnplaced {
		return clean(joinNonEmpty(": ", string(in.Status.Phase)+", not placed yet", in.Status.Message))
	}
	s := diskReplication(in)
	if d := currentDisk(in); d != nil && d.State == api.DiskUpToDate && in.Status.ReplicaOutdated {
		s += "; the control plane still marks the replica outdated"
	}
	return s
}

// syncKey identifies a state of the wait: a progress line is printed when
// it changes (not when a resync progresses or the replica lacks more).
func syncKey(in *api.Instance) string {
	if why := diskUnreplicated(in); why != "" {
		return "none\x00" + why + "\x00" + in.Status.Message
	}
	d := currentDisk(in)
	if d == nil {
		return fmt.Sprintf("unreported\x00%d", in.Status.Epoch)
	}
	return fmt.Sprintf("%s\x00%s\x00%d\x00%t", d.State, d.Reason, d.Epoch, in.Status.ReplicaOutdated)
}

// notReplicatedError says why there is no replica to wait for, or is nil
// when there is one (or may be once the instance is placed).
func notReplicatedError(in *api.Instance) error {
	switch why := diskUnreplicated(in); why {
	case "", whyUnplaced:
		return nil
	case whyShared:
		return fmt.Errorf("instance %q is not replicated: its disk is on shared storage (%s), which ferry does not replicate; there is no replica to wait for", in.Name, clean(in.Spec.Storage))
	case whyNoReplica:
		return fmt.Errorf("instance %q is not replicated: it runs on %s without a replica host (no other Ready, schedulable host had room for its disk when it was placed); there is no replica to wait for", in.Name, clean(in.Status.Node))
	default:
		return fmt.Errorf("instance %q is not replicated (%s); there is no replica to wait for", in.Name, clean(why))
	}
}

func (a *app) newInstanceWaitSyncedCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait-synced NAME",
		Short: "Wait until an instance's disk replica holds every write",
		Long: `Wait until the replica of an instance's disk is in sync: its primary host
reports the disk UpToDate under the instance's current epoch, and the control
plane no longer marks the replica outdated. Only then can the instance fail
over to its replica host without losing writes; a new instance's replica is
outdated until its first full sync is done.

While the disk resyncs, a progress bar goes to stderr; every other change
(Degraded, Frozen, Diverged, ...) is printed as one line, with its reason. An
instance not placed yet is waited for. It fails at once if the disk is not
replicated (shared storage, or no second host for the replica), and when
--timeout passes, naming the state the disk was in. With --json it prints the
instance once in sync, and no progress bar.`,
		Example: `  ferry instance create web-1 --wait && ferry instance wait-synced web-1
  ferry instance wait-synced web-1 --timeout 30m --json`,
		Args: exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runWaitSynced(cmd, args[0], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait")
	return cmd
}

func (a *app) runWaitSynced(cmd *cobra.Command, name string, timeout time.Duration) error {
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := a.requestContext(cmd)
	inst, err := c.GetInstance(ctx, name)
	cancel()
	if err != nil {
		return explain(err, conn, "instance", name)
	}
	inst, err = a.waitSynced(cmd, c, conn, inst, timeout)
	if err != nil {
		return err
	}
	if a.g.JSON {
		return printJSON(a.stdout(), inst)
	}
	fmt.Fprintf(a.stdout(), "instance %q: replica on %s in sync, disk %s\n", name, clean(inst.Status.ReplicaNode), describeDisk(inst.Status.Disk))
	return nil
}

// waitSynced polls the instance until its disk is in sync (diskSynced),
// reporting progress to stderr, and returns it then.
func (a *app) waitSynced(cmd *cobra.Command, c *client.Client, conn *connection, start *api.Instance, timeout time.Duration) (*api.Instance, error) {
	name := start.Name
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	p := &syncReporter{a: a, name: name, bar: !a.g.JSON}
	defer p.endBar(nil)
	what := func(inst *api.Instance) string {
		return fmt.Sprintf("the disk of instance %q to be in sync (now %s)", name, syncState(inst))
	}
	inst := start
	for {
		if err := notReplicatedError(inst); err != nil {
			return inst, err
		}
		p.show(inst)
		switch {
		case diskSynced(inst):
			return inst, nil
		case inst.Status.Deleting:
			return inst, fmt.Errorf("instance %q is being deleted", name)
		}
		if err := a.pause(ctx); err != nil {
			return inst, waitError(cmd.Context(), err, timeout, what(inst))
		}
		next, err := c.GetInstance(ctx, name)
		switch {
		case err == nil:
			inst = next
		case client.IsNotFound(err):
			return inst, &messageError{msg: fmt.Sprintf("instance %q was deleted while waiting for its disk to be in sync", name), err: err}
		case ctx.Err() != nil:
			return inst, waitError(cmd.Context(), ctx.Err(), timeout, what(inst))
		case retryable(err):
			p.problem(err)
		default:
			return inst, explain(err, conn, "instance", name)
		}
	}
}

// barThrottle is how often the progress bar is redrawn at most.
const barThrottle = 100 * time.Millisecond

// syncReporter prints what changes while waiting for a disk to be in sync:
// one line per state change, and a progress bar while it resyncs.
//
// The bar shows the primary's figures (done, rate, time left) rather than
// the ones progressbar computes from the updates it is given: a wait often
// joins a resync under way, whose first update would count everything done
// so far as done at once.
type syncReporter struct {
	a    *app
	name string
	// bar says whether to show a progress bar while syncing.
	bar     bool
	last    string
	lastErr string
	// cur is the bar being shown, for a resync of curTotal bytes of which
	// curDone were done at the last report; it was last drawn at drawn.
	cur      *progressbar.ProgressBar
	curTotal int64
	curDone  int64
	drawn    time.Time
}

func (p *syncReporter) show(in *api.Instance) {
	if key := syncKey(in); key != p.last {
		p.endBar(in)
		p.last, p.lastErr = key, ""
		line := syncState(in)
		if in.Status.Node != "" {
			line = "disk " + line
		}
		p.a.progressLine(p.name, line)
	}
	d := currentDisk(in)
	if !p.bar || d == nil || d.State != api.DiskSyncing || d.Sync == nil || d.Sync.TotalBytes <= 0 {
		return
	}
	s := d.Sync
	if p.cur == nil || s.TotalBytes != p.curTotal || s.DoneBytes < p.curDone {
		// A new resync: a new bar.
		p.endBar(nil)
		p.cur = progressbar.NewOptions64(s.TotalBytes,
			progressbar.OptionSetWriter(p.a.stderr()),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetDescription(barText(s, in.Status.ReplicaNode)),
		)
		p.curTotal, p.curDone, p.drawn = s.TotalBytes, s.DoneBytes, time.Now()
		if s.DoneBytes > 0 {
			_ = p.cur.Set64(min(s.DoneBytes, s.TotalBytes))
		} else {
			_ = p.cur.RenderBlank()
		}
		return
	}
	p.curDone = s.DoneBytes
	if time.Since(p.drawn) >= barThrottle || s.DoneBytes >= s.TotalBytes {
		p.draw(s, in.Status.ReplicaNode)
	}
}

// draw shows a resync's progress on the bar.
func (p *syncReporter) draw(s *api.DiskSync, replica string) {
	p.drawn = time.Now()
	// Describe draws the bar with the new text, then Set64 with the new
	// position if its percentage changed.
	p.cur.Describe(barText(s, replica))
	_ = p.cur.Set64(min(s.DoneBytes, s.TotalBytes))
}

// barText is what the progress bar says after the bar: "30M of 300M synced
// to n2, 30M/s, about 9s left".
func barText(s *api.DiskSync, replica string) string {
	parts := []string{fmt.Sprintf("%s of %s synced to %s", fmtBytes(api.Bytes(s.DoneBytes)), fmtBytes(api.Bytes(s.TotalBytes)), clean(replica))}
	if s.BytesPerSecond > 0 && !s.Done {
		parts = append(parts, fmtBytes(api.Bytes(s.BytesPerSecond))+"/s")
	}
	if s.ETASeconds > 0 && !s.Done {
		parts = append(parts, "about "+shortDuration(time.Duration(math.Ceil(s.ETASeconds))*time.Second)+" left")
	}
	return strings.Join(parts, ", ")
}

// endBar ends the progress bar's line, if one is shown. next, if not nil,
// is the report that follows: if it says the bar's resync completed, the
// bar is filled first.
func (p *syncReporter) endBar(next *api.Instance) {
	if p.cur == nil {
		return
	}
	if next != nil {
		if d := currentDisk(next); d != nil && d.Sync != nil && d.Sync.Done && d.Sync.TotalBytes == p.curTotal {
			p.draw(d.Sync, next.Status.ReplicaNode)
		}
	}
	fmt.Fprintln(p.a.stderr())
	p.cur = nil
}

func (p *syncReporter) problem(err error) {
	msg := clean(err.Error())
	if msg == p.lastErr {
		return
	}
	p.lastErr = msg
	p.endBar(nil)
	p.a.progressLine(p.name, "(retrying: "+msg+")")
}
