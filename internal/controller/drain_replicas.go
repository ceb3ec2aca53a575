package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Replica moves. A drain with Replicas also gives each replica the node
// holds (of an instance running elsewhere) to another host, the one the
// scheduler picks for the instance's secondary. One transaction with the
// node record names the new host, marks the replica outdated and raises
// the epoch: from then on the old copy is no replica (it is never
// promoted, and the primary's reports under the old epoch cannot mark the
// new, empty one in sync). The primary's agent, told of its new peer,
// cuts its link to the old one and asks the control plane, as for any
// loss; it writes alone under the raised epoch while it fills the new
// replica with a full (sparse) sync, whose end clears the outdated mark.
// Until then the instance cannot fail over, as when its replica host is
// down: this is what Ganeti's replace-disks to a new secondary does too.
// The old copy stays on the drained host (as after any move away from a
// host); deleting the instance does not reach it.

// drainReplicas moves the replicas off node n as the drain's free slots
// allow, adding to blocked the instances whose replica cannot move now. It
// returns how many replicas are still on the node or syncing elsewhere
// (the work left) and the events to record.
func (c *Controller) drainReplicas(ctx context.Context, v *MigrationView, n *api.Node, slots int, blocked map[string]string, now time.Time) (left int, evs []api.Event, err error) {
	d := n.Spec.Drain
	// Counted as the drain's status counts them.
	syncing := NewDrainIndex(v.Instances).resyncing(n.Name, d.MovedReplicas)
	slots -= syncing
	left = syncing
	var cluster *scheduler.Cluster
	for _, in := range sortedByName(v.Instances) {
		if !holdsReplica(in, n.Name) {
			continue
		}
		left++
		why := ""
		switch {
		case in.Status.Migration != nil:
			why = "its migration is in flight; its replica moves once it has ended"
		case !v.Alive[in.Status.Node]:
			why = "its primary " + in.Status.Node + " is down: the copy here may be its only current one"
		case slots <= 0:
			if old, ok := d.Blocked[in.Name]; ok {
				blocked[in.Name] = old
			}
			continue
		}
		if why == "" {
			if cluster == nil {
				placed := v.Instances
				cluster, err = scheduler.NewCluster(withMigrations(Snapshot(v.Nodes, v.Alive, placed, v.Policy), placed, v.Alive))
				if err != nil {
					return left, evs, fmt.Errorf("replica moves: %w", err)
				}
			}
			to, serr := cluster.Secondary(in.Name)
			var ref *scheduler.RefusalError
			switch {
			case errors.As(serr, &ref):
				why = "no other host can take its replica: " + ref.Message
			case serr != nil:
				return left, evs, serr
			default:
				if err := c.moveReplica(ctx, v, n, in, to, now); err != nil {
					if benign(err) {
						continue // changed meanwhile: the next pass looks again
					}
					return left, evs, err
				}
				if err := cluster.Place(in.Name, in.Status.Node, to); err != nil {
					c.log.Warn("scheduler view out of step", "instance", in.Name, "err", err)
				}
				slots--
				continue
			}
		}
		blocked[in.Name] = why
		if d.Blocked[in.Name] != why {
			evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: n.Name, Type: "DrainBlocked",
				Message: "cannot move its replica off " + n.Name + " yet: " + why})
		}
	}
	return left, evs, nil
}

// holdsReplica reports whether node holds the replica of in, an instance
// running elsewhere that is not being deleted (what a drain with Replicas
// moves, and what its status counts).
func holdsReplica(in *api.Instance, node string) bool {
	return in.Status.ReplicaNode == node && in.Status.Node != node && in.Status.Node != "" &&
		!in.Status.Deleting && in.Spec.SharedPath() == ""
}

// moveReplica gives in's replica to host to, in one transaction with the
// node record (which lists the instance in MovedReplicas). On success the
// view and n are those after the commit.
func (c *Controller) moveReplica(ctx context.Context, v *MigrationView, n *api.Node, in *api.Instance, to string, now time.Time) error {
	next := *in
	next.Status.ReplicaNode = to
	next.Status.ReplicaOutdated = true
	next.Status.Epoch++
	next.Status.Disk = nil
	msg := fmt.Sprintf("replica moves from %s to %s (drain of %s); it takes a full sync there, and %s writes alone under epoch %d until it is done",
		n.Name, to, n.Name, in.Status.Node, next.Status.Epoch)
	icmp, iop, err := c.s.Instances.UpdateOps(&next)
	if err != nil {
		return err
	}
	nn := *n
	nn.Spec = cloneNodeSpec(n.Spec)
	dr := nn.Spec.Drain
	if !slices.Contains(dr.MovedReplicas, in.Name) {
		dr.MovedReplicas = append(dr.MovedReplicas, in.Name)
	}
	delete(dr.Blocked, in.Name)
	dr.DrainedAt = time.Time{}
	ncmp, nop, err := c.s.Nodes.UpdateOps(&nn)
	if err != nil {
		return err
	}
	ev := c.s.EventOp(api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: to, Type: "ReplicaMoved", Message: msg})
	ok, rev, err := c.s.Txn(ctx, []clientv3.Cmp{icmp, ncmp}, iop, nop, ev)
	if err != nil {
		return err
	}
	if !ok {
		return store.ErrConflict
	}
	r := strconv.FormatInt(rev, 10)
	next.ResourceVersion, nn.ResourceVersion = r, r
	*n = nn
	v.replace(&next, nil)
	c.log.Info("replica moved", "instance", in.Name, "from", n.Name, "to", to, "epoch", next.Status.Epoch)
	return nil
}
