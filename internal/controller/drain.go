package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Drains. `ferry node drain` records a DrainSpec on the node (and cordons
// it); each pass the leader starts migrations for the instances whose
// primary is the node, through PlanMigration as the API does, never more
// than the drain's MaxConcurrent in flight from or to the node. Each start
// is one transaction with the node record, which lists the instance in
// Took. An instance that cannot move now is listed in Blocked with the
// reason (and gets an event when the reason is new), and tried again next
// pass; one whose drain migration failed, after a backoff (drainBackoff).
// A drain with Replicas moves the node's replicas too (drainReplicas).
// `ferry node undrain --restore` records a RestoreSpec instead: the
// instances of Took go back, the same way, and each stays listed until it
// runs on the node again (a failed move back is retried, with the same
// backoff), is gone, or can never go back.

// drains works on every node being drained or restored.
func (c *Controller) drains(ctx context.Context, nodes []*api.Node, alive map[string]bool) error {
	busy := false
	for _, n := range nodes {
		busy = busy || n.Spec.Drain != nil || n.Spec.Restore != nil
	}
	if !busy {
		return nil
	}
	v, err := LoadMigrationView(ctx, c.s, c.cfg.Policy())
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	v.Alive = alive
	var errs []error
	for _, n := range nodes {
		var err error
		switch {
		case n.Spec.Drain != nil:
			err = c.drainNode(ctx, v, n)
		case n.Spec.Restore != nil:
			err = c.restoreNode(ctx, v, n)
		}
		if err != nil && !benign(err) {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// migratingAt counts the migrations in flight from or to node.
func migratingAt(v *MigrationView, node string) int {
	k := 0
	for _, in := range v.Instances {
		if m := in.Status.Migration; m != nil && (m.Source == node || m.Target == node) {
			k++
		}
	}
	return k
}

// startFor starts one migration planned for a drain or a restore, in one
// transaction with the node record as fn changes it. On success the view
// and the node record are those after the commit.
func (c *Controller) startFor(ctx context.Context, v *MigrationView, n *api.Node, st *MigrationStart, fn func(*api.NodeSpec)) error {
	next := *n
	next.Spec = cloneNodeSpec(n.Spec)
	fn(&next.Spec)
	ncmp, nop, err := c.s.Nodes.UpdateOps(&next)
	if err != nil {
		return err
	}
	if _, err := st.Commit(ctx, c.s, []clientv3.Cmp{ncmp}, nop); err != nil {
		return err
	}
	next.ResourceVersion = st.Instance.ResourceVersion
	*n = next
	v.replace(st.Instance, st.Operation)
	c.log.Info("migration started", "operation", st.Operation.Name, "instance", st.Instance.Name, "from", st.Operation.From, "to", st.Operation.To, "cause", st.Operation.Cause)
	return nil
}

func cloneNodeSpec(s api.NodeSpec) api.NodeSpec {
	s.Labels = maps.Clone(s.Labels)
	if s.Drain != nil {
		d := *s.Drain
		d.Took = slices.Clone(d.Took)
		d.Blocked = maps.Clone(d.Blocked)
		d.MovedReplicas = slices.Clone(d.MovedReplicas)
		s.Drain = &d
	}
	if s.Restore != nil {
		r := *s.Restore
		r.Instances = slices.Clone(r.Instances)
		r.Blocked = maps.Clone(r.Blocked)
		s.Restore = &r
	}
	return s
}

// A drain (or restore) migration that failed or was cancelled is not
// started again at once: the cause may last (a target that cannot take
// the guest, say), and a drain that retried every pass would pile up an
// operation record per pass. It waits drainRetryMin after the first
// failure, twice as long after each further one, at most drainRetryMax.
const (
	drainRetryMin = 5 * time.Second
	drainRetryMax = 5 * time.Minute
)

// drainBackoff says why the drain or restore (work) must not try to move in yet,
// after its migrations of in (those mine selects, begun since it started)
// that failed or were cancelled since the last one that succeeded, or ""
// if it may.
func drainBackoff(v *MigrationView, in *api.Instance, work string, mine func(*api.Operation) bool, since, now time.Time) string {
	var ops []*api.Operation
	for _, op := range v.Operations {
		if op.Type != api.OpMigrate || op.Instance != in.Name || !mine(op) || op.StartedAt.Before(since) {
			continue
		}
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b *api.Operation) int { return a.StartedAt.Compare(b.StartedAt) })
	k := 0
	var last *api.Operation
	for _, op := range ops {
		switch op.State {
		case api.OpFailed, api.OpCancelled:
			k++
			last = op
		case api.OpSucceeded:
			k, last = 0, nil
		}
	}
	if last == nil {
		return ""
	}
	wait := drainRetryMin
	for i := 1; i < k && wait < drainRetryMax; i++ {
		wait *= 2
	}
	wait = min(wait, drainRetryMax)
	ended := last.EndedAt
	if ended.IsZero() {
		ended = last.StartedAt
	}
	at := ended.Add(wait)
	if !now.Before(at) {
		return ""
	}
	what := "failed"
	if last.State == api.OpCancelled {
		what = "was cancelled"
	}
	return fmt.Sprintf("its migration %s %s (%s); the %s tries again at %s (%d attempts failed)",
		last.Name, what, last.Message, work, at.Format(time.RFC3339), k)
}

// drainNode starts the migrations off a node being drained that its
// concurrency allows, and records the instances that cannot move.
func (c *Controller) drainNode(ctx context.Context, v *MigrationView, n *api.Node) error {
	now := c.cfg.Now().UTC()
	d := n.Spec.Drain
	limit := d.MaxConcurrent
	if limit <= 0 {
		limit = api.DefaultDrainConcurrency
	}
	slots := limit - migratingAt(v, n.Name)
	blocked := map[string]string{}
	var evs []api.Event
	remaining := 0
	for _, in := range sortedByName(v.Instances) {
		if in.Status.Node != n.Name {
			continue
		}
		remaining++
		if m := in.Status.Migration; m != nil && m.Source == n.Name {
			continue // on its way
		}
		if slots <= 0 {
			if why, ok := d.Blocked[in.Name]; ok {
				blocked[in.Name] = why
			}
			continue
		}
		cause := "drain of " + n.Name
		mine := func(op *api.Operation) bool { return op.From == n.Name && op.Cause == cause }
		if why := drainBackoff(v, in, "drain", mine, d.StartedAt, now); why != "" {
			blocked[in.Name] = why
			if d.Blocked[in.Name] != why {
				evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: n.Name, Type: "DrainBlocked",
					Message: "cannot move off " + n.Name + " yet: " + why})
			}
			continue
		}
		st, err := PlanMigration(v, in, api.MigrateRequest{Mode: d.Mode}, MigrateOptions{Cause: cause, Drain: n.Name, Now: now})
		var ref *Refusal
		switch {
		case errors.As(err, &ref):
			blocked[in.Name] = ref.Message
			if d.Blocked[in.Name] != ref.Message {
				evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: n.Name, Type: "DrainBlocked",
					Message: "cannot move off " + n.Name + " yet: " + ref.Message})
			}
			continue
		case err != nil:
			return err
		}
		err = c.startFor(ctx, v, n, st, func(s *api.NodeSpec) {
			if !slices.Contains(s.Drain.Took, in.Name) {
				s.Drain.Took = append(s.Drain.Took, in.Name)
			}
			delete(s.Drain.Blocked, in.Name)
			s.Drain.DrainedAt = time.Time{}
		})
		if err != nil {
			return err
		}
		d = n.Spec.Drain
		slots--
	}
	replicasLeft := 0
	if d.Replicas {
		left, revs, err := c.drainReplicas(ctx, v, n, slots, blocked, now)
		if err != nil {
			return err
		}
		replicasLeft, evs = left, append(evs, revs...)
		d = n.Spec.Drain
	}
	next := cloneNodeSpec(n.Spec)
	nd := next.Drain
	if len(blocked) == 0 {
		blocked = nil
	}
	nd.Blocked = blocked
	var ops []clientv3.Op
	switch {
	case remaining == 0 && replicasLeft == 0 && migratingAt(v, n.Name) == 0 && nd.DrainedAt.IsZero():
		nd.DrainedAt = now
		msg := fmt.Sprintf("no instance runs on %s any more; the drain moved %d", n.Name, len(nd.Took))
		if nd.Replicas {
			msg += fmt.Sprintf(", and %d replicas, now in sync on other hosts", len(nd.MovedReplicas))
		}
		ops = append(ops, c.s.EventOp(api.Event{Time: now, Kind: api.KindNode, Name: n.Name, Node: n.Name, Type: "NodeDrained", Message: msg}))
	case remaining > 0 || replicasLeft > 0:
		nd.DrainedAt = time.Time{}
	}
	if maps.Equal(nd.Blocked, d.Blocked) && nd.DrainedAt.Equal(d.DrainedAt) && len(evs) == 0 {
		return nil
	}
	for _, ev := range evs {
		ops = append(ops, c.s.EventOp(ev))
	}
	up := *n
	up.Spec = next
	if err := c.s.Nodes.Update(ctx, &up, ops...); err != nil {
		return err
	}
	*n = up
	return nil
}

// restoreNode starts the migrations back to a node an undrain --restore
// asked for, as its concurrency allows. An instance leaves the restore
// when it runs on the node again, is gone, or can never go back; one whose
// move back failed is tried again after a backoff. The restore ends when
// none is left.
func (c *Controller) restoreNode(ctx context.Context, v *MigrationView, n *api.Node) error {
	now := c.cfg.Now().UTC()
	r := n.Spec.Restore
	limit := r.MaxConcurrent
	if limit <= 0 {
		limit = api.DefaultDrainConcurrency
	}
	slots := limit - migratingAt(v, n.Name)
	byName := map[string]*api.Instance{}
	for _, in := range v.Instances {
		byName[in.Name] = in
	}
	cause := "restore after the drain of " + n.Name
	mine := func(op *api.Operation) bool { return op.To == n.Name && op.Cause == cause }
	pending := slices.Clone(r.Instances)
	blocked := map[string]string{}
	var evs []api.Event
	drop := func(name, why string) {
		pending = slices.DeleteFunc(pending, func(s string) bool { return s == name })
		if why != "" {
			evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: name, Node: n.Name, Type: "RestoreSkipped",
				Message: "not moved back to " + n.Name + ": " + why})
		}
	}
	block := func(name, why string) {
		blocked[name] = why
		if r.Blocked[name] != why {
			evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: name, Node: n.Name, Type: "RestoreBlocked",
				Message: "cannot move back to " + n.Name + " yet: " + why})
		}
	}
	for _, name := range r.Instances {
		in := byName[name]
		switch {
		case in == nil:
			drop(name, "")
			continue
		case in.Status.Node == n.Name && in.Status.Migration == nil:
			drop(name, "") // back
			continue
		case in.Status.Migration != nil && in.Status.Migration.Target == n.Name:
			continue // on its way back
		case slots <= 0:
			if why, ok := r.Blocked[name]; ok {
				blocked[name] = why
			}
			continue
		}
		if why := drainBackoff(v, in, "restore", mine, r.StartedAt, now); why != "" {
			block(name, why)
			continue
		}
		st, err := PlanMigration(v, in, api.MigrateRequest{To: n.Name, Mode: r.Mode}, MigrateOptions{Cause: cause, Now: now})
		var ref *Refusal
		switch {
		case errors.As(err, &ref) && ref.Permanent:
			drop(name, ref.Message)
			continue
		case errors.As(err, &ref):
			block(name, ref.Message)
			continue
		case err != nil:
			return err
		}
		err = c.startFor(ctx, v, n, st, func(s *api.NodeSpec) {
			if s.Restore != nil {
				delete(s.Restore.Blocked, name)
			}
		})
		if err != nil {
			return err
		}
		slots--
		if n.Spec.Restore == nil {
			return nil
		}
		r = n.Spec.Restore
	}
	next := cloneNodeSpec(n.Spec)
	if next.Restore == nil {
		return nil
	}
	if len(blocked) == 0 {
		blocked = nil
	}
	next.Restore.Instances, next.Restore.Blocked = pending, blocked
	if len(pending) == 0 {
		next.Restore = nil
		evs = append(evs, api.Event{Time: now, Kind: api.KindNode, Name: n.Name, Node: n.Name, Type: "NodeRestored",
			Message: "the restore after the drain of " + n.Name + " is done"})
	} else if slices.Equal(pending, r.Instances) && maps.Equal(blocked, r.Blocked) && len(evs) == 0 {
		return nil
	}
	ops := make([]clientv3.Op, 0, len(evs))
	for _, ev := range evs {
		ops = append(ops, c.s.EventOp(ev))
	}
	up := *n
	up.Spec = next
	if err := c.s.Nodes.Update(ctx, &up, ops...); err != nil {
		return err
	}
	*n = up
	return nil
}
