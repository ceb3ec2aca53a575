package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

func (a *app) newOperationCmd() *cobra.Command {
	cmd := newGroup("operation", "List, show and cancel long actions: failovers, migrations", "op", "ops", "operations")
	cmd.Long = `Operations are the long actions ferry takes on an instance, such as a failover
when the instance's host dies or a migration: their cause, each step with its
time, and how they ended. A migration can be cancelled before its switch. See
also: ferry instance history NAME.`
	cmd.AddCommand(a.newOperationListCmd(), a.newOperationShowCmd(), a.newOperationCancelCmd())
	return cmd
}

func (a *app) newOperationListCmd() *cobra.Command {
	var instance, state string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List operations, newest first",
		Long: `List operations, newest first. --instance keeps those of one instance (which
may have been deleted since), --state those Running, Succeeded, Failed or Cancelled.
TOOK is how long the operation took, or how long it has been running.`,
		Example: "  ferry operation ls\n  ferry ops ls --instance web-1 --state Failed",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := operationFilter(instance, state)
			if err != nil {
				return err
			}
			list, err := fetch(a, cmd, "operation", "", func(c *client.Client, ctx context.Context) (*api.List[api.Operation], error) {
				return c.ListOperations(ctx, f.Instance, f.State)
			})
			if err != nil {
				return operationFlagError(err)
			}
			if a.g.JSON {
				return printJSON(a.stdout(), list)
			}
			return a.printOperations(list.Items)
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "only the operations of this instance")
	cmd.Flags().StringVar(&state, "state", "", "only the operations in this state: Running, Succeeded, Failed or Cancelled")
	return cmd
}

// operationFilter checks the flags of `operation ls`; --state is taken in
// any case (failed, FAILED) and sent as the API spells it.
func operationFilter(instance, state string) (api.OperationFilter, error) {
	f := api.OperationFilter{Instance: instance, State: state}
	for _, s := range api.OperationStates {
		if strings.EqualFold(state, s) {
			f.State = s
		}
	}
	return f, operationFlagError(f.Validate())
}

// operationFlagError rewrites an error about the query parameter
// "instance" or "state" (local, or from the server) to name its flag.
func operationFlagError(err error) error {
	var fe *api.FieldError
	if errors.As(err, &fe) && (fe.Field == "instance" || fe.Field == "state") {
		return &flagError{flag: "--" + fe.Field, msg: fe.Message, err: err}
	}
	var ae *client.APIError
	if errors.As(err, &ae) && (ae.Field == "instance" || ae.Field == "state") {
		return &flagError{flag: "--" + ae.Field, msg: strings.TrimPrefix(ae.Message, ae.Field+": "), err: err}
	}
	return err
}

func (a *app) printOperations(items []api.Operation) error {
	now := a.opts.Now()
	t := newTable(a.stdout(), "ID", "TYPE", "INSTANCE", "FROM", "TO", "STATE", "STARTED", "TOOK", "MESSAGE")
	for i := range items {
		op := &items[i]
		t.row(op.Name, op.Type, op.Instance, op.From, op.To, op.State, ago(now, op.StartedAt), took(now, op), operationMessage(op))
	}
	return t.flush()
}

// took says how long an operation took ("4.2s"), or how long it has been
// running ("running for 12s").
func took(now time.Time, op *api.Operation) string {
	switch {
	case op.StartedAt.IsZero():
		return "-"
	case op.State == api.OpRunning || op.EndedAt.IsZero():
		return "running for " + elapsed(now.Sub(op.StartedAt))
	}
	return elapsed(op.EndedAt.Sub(op.StartedAt))
}

// elapsed formats the length of an operation or the offset of a step:
// tenths of a second below a minute (4.2s), else as AGE does (3m5s, 2h).
func elapsed(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Minute {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return shortDuration(d)
}

// operationMessage is how an operation ended or, while it runs, its last
// step so far.
func operationMessage(op *api.Operation) string {
	if op.Message != "" || len(op.Steps) == 0 {
		return op.Message
	}
	last := op.Steps[len(op.Steps)-1]
	return joinNonEmpty(": ", last.Name, last.Message)
}

func (a *app) newOperationShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Aliases: []string{"get", "describe"},
		Short:   "Show an operation and its steps",
		Long: `Show an operation: its cause, hosts and outcome, then each step with its time
and the time since the operation began.`,
		Example: "  ferry operation show failover-web-1-3",
		Args:    exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := fetch(a, cmd, "operation", args[0], func(c *client.Client, ctx context.Context) (*api.Operation, error) {
				return c.GetOperation(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), op)
			}
			return a.printOperation(op)
		},
	}
}

func (a *app) printOperation(op *api.Operation) error {
	now := a.opts.Now()
	d := newDetails(a.stdout())
	d.add("ID", op.Name)
	d.add("Type", op.Type)
	if op.Mode != "" {
		d.add("Mode", op.Mode)
	}
	d.add("Instance", op.Instance)
	d.add("Cause", op.Cause)
	d.add("From", op.From)
	d.add("To", op.To)
	if op.Epoch != 0 {
		d.add("Epoch", strconv.FormatUint(op.Epoch, 10))
	} else {
		d.add("Epoch", "")
	}
	d.add("State", op.State)
	d.add("Message", op.Message)
	d.add("Started", timestamp(now, op.StartedAt))
	d.add("Ended", timestamp(now, op.EndedAt))
	d.add("Took", took(now, op))
	if p := op.Progress; p != nil && op.State == api.OpRunning {
		d.add("Progress", fmt.Sprintf("%s of %s sent, %s left (at %s)", fmtBytes(api.Bytes(p.RAMTransferred)), fmtBytes(api.Bytes(p.RAMTotal)), fmtBytes(api.Bytes(p.RAMRemaining)), p.At.Local().Format(stepTimeFormat)))
	}
	if op.DowntimeMS > 0 {
		d.add("Downtime", downtime(op))
	}
	d.add("Boots before", strconv.Itoa(op.BootsBefore))
	d.add("UID", op.UID)
	d.add("Resource version", op.ResourceVersion)
	if err := d.flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout())
	fmt.Fprintln(a.stdout(), "Steps:")
	return printSteps(a.stdout(), op, "  ")
}

// stepTimeFormat shows steps to the millisecond: a failover's steps are
// often less than a second apart.
const stepTimeFormat = "2006-01-02 15:04:05.000"

// printSteps writes one line per step of op, each prefixed with indent: its
// time, the time since the operation began, its name and its message, e.g.
// "2025-06-01 11:58:03.100  +3.1s  promoted  host-2 promoted under epoch 3".
func printSteps(w io.Writer, op *api.Operation, indent string) error {
	if len(op.Steps) == 0 {
		_, err := fmt.Fprintln(w, indent+"(none yet)")
		return err
	}
	start := op.StartedAt
	if start.IsZero() {
		start = op.Steps[0].At
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, st := range op.Steps {
		at := "-"
		if !st.At.IsZero() {
			at = st.At.Local().Format(stepTimeFormat)
		}
		line := fmt.Sprintf("%s%s\t+%s\t%s\t%s", indent, at, elapsed(st.At.Sub(start)), clean(dash(st.Name)), clean(st.Message))
		fmt.Fprintln(tw, strings.TrimRight(line, "\t"))
	}
	return tw.Flush()
}

// historyEventLimit is how many of the cluster's most recent events
// `instance history` searches: the most the events API returns at once.
const historyEventLimit = 10000

// historyEntry is one item of an instance's history: an operation (at its
// start) or an event.
type historyEntry struct {
	Time      time.Time      `json:"time"`
	Operation *api.Operation `json:"operation,omitempty"`
	Event     *api.Event     `json:"event,omitempty"`
}

// instanceHistory is what `instance history --json` prints.
type instanceHistory struct {
	Instance string         `json:"instance"`
	Items    []historyEntry `json:"items"`
}

func (a *app) newInstanceHistoryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history NAME",
		Short: "Show what happened to an instance: its operations and events",
		Long: `Show an instance's history as one timeline, oldest first: its events, and the
operations ferry ran on it (such as failovers), each at the time it began with
its steps, as in ferry operation show. It works for a deleted instance too, as
long as its operations or events are kept. Events come from the cluster's
most recent ` + strconv.Itoa(historyEventLimit) + `.`,
		Example: "  ferry instance history web-1\n  ferry instance history web-1 --json",
		Args:    exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runInstanceHistory(cmd, args[0])
		},
	}
}

func (a *app) runInstanceHistory(cmd *cobra.Command, name string) error {
	if err := api.ValidateName("NAME", name); err != nil {
		return err
	}
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := a.requestContext(cmd)
	defer cancel()
	ops, err := c.ListOperations(ctx, name, "")
	if err != nil {
		return explain(err, conn, "operation", "")
	}
	evs, err := c.ListEvents(ctx, historyEventLimit)
	if err != nil {
		return explain(err, conn, "event", "")
	}
	h := instanceHistory{Instance: name, Items: []historyEntry{}}
	for i := range evs.Items {
		if ev := &evs.Items[i]; ev.Kind == api.KindInstance && ev.Name == name {
			h.Items = append(h.Items, historyEntry{Time: ev.Time, Event: ev})
		}
	}
	for i := range ops.Items {
		op := &ops.Items[i]
		at := op.StartedAt
		if at.IsZero() {
			at = op.CreatedAt
		}
		h.Items = append(h.Items, historyEntry{Time: at, Operation: op})
	}
	// Oldest first; at the same instant an event (such as the
	// FailoverStarted that records an operation's start) comes before
	// the operation, and events keep their commit order.
	sort.SliceStable(h.Items, func(i, j int) bool {
		x, y := h.Items[i], h.Items[j]
		if !x.Time.Equal(y.Time) {
			return x.Time.Before(y.Time)
		}
		return x.Event != nil && y.Event == nil
	})
	if len(h.Items) == 0 {
		// Nothing recorded: a typo, or an instance whose history was
		// trimmed away. Tell them apart.
		if _, err := c.GetInstance(ctx, name); err != nil {
			if client.IsNotFound(err) {
				return &messageError{msg: fmt.Sprintf("instance %q not found, and no operation or recent event names it", name), err: err}
			}
			return explain(err, conn, "instance", name)
		}
	}
	if a.g.JSON {
		return printJSON(a.stdout(), h)
	}
	if len(h.Items) == 0 {
		fmt.Fprintf(a.stdout(), "no operations or events recorded for instance %q\n", name)
		return nil
	}
	if len(evs.Items) >= historyEventLimit {
		fmt.Fprintf(a.stderr(), "note: only the cluster's %d most recent events were searched\n", historyEventLimit)
	}
	return a.printHistory(h)
}

// historyFormat lays out the timeline: time, what happened, where, and the
// details.
const historyFormat = "%-23s  %-15s  %-10s  %s"

func (a *app) printHistory(h instanceHistory) error {
	w := a.stdout()
	row := func(cols ...any) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(historyFormat, cols...), " "))
	}
	row("TIME", "WHAT", "NODE", "MESSAGE")
	for _, e := range h.Items {
		t := "-"
		if !e.Time.IsZero() {
			t = e.Time.Local().Format(stepTimeFormat)
		}
		if ev := e.Event; ev != nil {
			row(t, clean(dash(ev.Type)), clean(dash(ev.Node)), clean(ev.Message))
			continue
		}
		op := e.Operation
		row(t, clean(dash(op.Type)), clean(dash(op.To)), clean(operationSummary(a.opts.Now(), op)))
		if err := printSteps(w, op, strings.Repeat(" ", 27)); err != nil {
			return err
		}
	}
	return nil
}

// operationSummary says in one line which operation it is and how it went:
// "failover-web-1-3 from n2, Succeeded in 4.2s: serving on n1 ...", or
// "failover-web-2-7 from n1, running for 12.3s".
func operationSummary(now time.Time, op *api.Operation) string {
	s := op.Name
	if op.From != "" {
		s += " from " + op.From
	}
	if op.State == api.OpRunning || op.EndedAt.IsZero() {
		return s + ", " + took(now, op)
	}
	s += ", " + dash(op.State) + " in " + took(now, op)
	if op.Message != "" {
		s += ": " + op.Message
	}
	return s
}

// exactlyOneID accepts exactly one positional argument, an operation's ID.
func exactlyOneID(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 1 && strings.TrimSpace(args[0]) != "":
		return nil
	case len(args) == 0 || strings.TrimSpace(args[0]) == "":
		return withHint(errors.New("missing the operation ID (see: ferry operation ls)"), usageHint(cmd))
	}
	return withHint(fmt.Errorf("expected one operation ID, got %d arguments: %s", len(args), strings.Join(args, " ")), usageHint(cmd))
}
