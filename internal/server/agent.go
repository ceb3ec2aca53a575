package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// heartbeat refreshes the node's lease. It does the least work it can: the
// lease refresh is one etcd round trip; the node record is written only
// when the node becomes Ready or what it reports changed.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	node := nodeFrom(r.Context())
	var hb api.Heartbeat
	if !decodeBody(w, r, &hb) {
		return
	}
	if err := hb.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	now := s.cfg.Now().UTC()
	created, err := s.leases.Refresh(ctx, node, func() ([]clientv3.Op, []clientv3.Cmp, error) {
		n, err := s.store.Nodes.Get(ctx, node)
		if err != nil {
			return nil, nil, err
		}
		applyHeartbeat(n, hb, now)
		n.Status.State, n.Status.Since = api.NodeReady, now
		cmp, op, err := s.store.Nodes.UpdateOps(n)
		if err != nil {
			return nil, nil, err
		}
		return []clientv3.Op{op, s.nodeEvent(node, "NodeReady", "")}, []clientv3.Cmp{cmp}, nil
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		s.metrics.heartbeats.WithLabelValues("error").Inc()
		s.internalError(w, err)
		return
	}
	if !created && heartbeatChanges(nodeRecord(ctx), hb) {
		// Record what changed (capacity, address, version), not every beat.
		// The record read to authenticate the request says whether anything
		// did; Modify then checks again against the current one.
		_, err := s.store.Nodes.Modify(ctx, node, func(n *api.Node) ([]clientv3.Op, error) {
			if !heartbeatChanges(n, hb) {
				return nil, store.ErrUnchanged
			}
			applyHeartbeat(n, hb, now)
			return nil, nil
		})
		if err != nil {
			s.metrics.heartbeats.WithLabelValues("error").Inc()
			s.storeError(w, "node", node, err)
			return
		}
	}
	s.metrics.heartbeats.WithLabelValues("ok").Inc()
	writeJSON(w, http.StatusOK, api.HeartbeatAck{Node: node, Time: now, TTLSec: int(s.cfg.NodeTTL / time.Second)})
}

// heartbeatChanges reports whether hb would change what n records (or n
// has never recorded a heartbeat).
func heartbeatChanges(n *api.Node, hb api.Heartbeat) bool {
	if n == nil || n.Status.LastHeartbeat.IsZero() {
		return true
	}
	after := *n
	applyHeartbeat(&after, hb, n.Status.LastHeartbeat)
	return after.Status != n.Status
}

func applyHeartbeat(n *api.Node, hb api.Heartbeat, at time.Time) {
	n.Status.Capacity = hb.Capacity
	n.Status.Address = hb.Address
	n.Status.AgentVersion = hb.AgentVersion
	n.Status.Accel = hb.Accel
	n.Status.LastHeartbeat = at
}

// assignments streams the instances placed on the calling node: a snapshot,
// "synced", then every change, as newline-delimited JSON.
func (s *Server) assignments(w http.ResponseWriter, r *http.Request) {
	node := nodeFrom(r.Context())
	ctx := r.Context()
	flusher, ok := w.(http.Flusher)
	if !ok {
		s.internalError(w, errors.New("streaming unsupported"))
		return
	}
	items, rev, err := s.store.Instances.List(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(ev api.AssignmentEvent) bool {
		if err := enc.Encode(ev); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	put := func(in *api.Instance) api.AssignmentEvent {
		ev := api.AssignmentEvent{Type: api.AssignPut, Name: in.Name, Instance: in, Role: api.RolePrimary}
		peer := in.Status.ReplicaNode
		if in.Status.Node != node {
			ev.Role, peer = api.RoleSecondary, in.Status.Node
		}
		if peer != "" {
			ev.Peer = &api.Peer{Node: peer}
			if n, err := s.store.Nodes.Get(ctx, peer); err == nil {
				ev.Peer.Address = n.Status.Address
			}
		}
		if in.Spec.Network != "" {
			if nw, err := s.store.Networks.Get(ctx, in.Spec.Network); err == nil {
				ev.Network = nw
			}
		}
		if im, err := s.store.Images.Get(ctx, in.Spec.Image); err == nil {
			ev.Image = im
		}
		return ev
	}
	mine := map[string]bool{}
	for _, in := range items {
		if assignedTo(in, node) {
			mine[in.Name] = true
			if !send(put(in)) {
				return
			}
		}
	}
	if !send(api.AssignmentEvent{Type: api.AssignSynced}) {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := s.store.Instances.Watch(wctx, rev)
	ping := time.NewTicker(10 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			if !send(api.AssignmentEvent{Type: api.AssignPing}) {
				return
			}
		case ev, ok := <-watch.C:
			if !ok {
				// The agent reconnects and gets a fresh snapshot.
				s.log.Debug("assignment watch ended", "node", node, "err", watch.Err())
				return
			}
			switch {
			case !ev.Deleted && assignedTo(ev.Object, node):
				mine[ev.Name] = true
				if !send(put(ev.Object)) {
					return
				}
			case mine[ev.Name]:
				delete(mine, ev.Name)
				if !send(api.AssignmentEvent{Type: api.AssignDelete, Name: ev.Name, Gone: ev.Deleted}) {
					return
				}
			}
		}
	}
}

// assignedTo reports whether node has a part in the instance: it runs it
// (primary) or holds its disk's replica (secondary).
func assignedTo(in *api.Instance, node string) bool {
	if m := in.Status.Migration; m != nil && m.Target == node {
		// A migration's target (on shared storage it holds no replica)
		// gets the instance as secondary until the switch.
		return true
	}
	return in.Status.Node == node || (in.Status.ReplicaNode == node && in.Spec.SharedPath() == "")
}

// reportStatus records what an agent observed about one of its instances.
// An agent may only report on instances placed on its own node: a host that
// lost an instance (it was moved away) cannot overwrite the new host's view.
func (s *Server) reportStatus(w http.ResponseWriter, r *http.Request) {
	node := nodeFrom(r.Context())
	name := r.PathValue("name")
	var rep api.InstanceReport
	if !decodeBody(w, r, &rep) {
		return
	}
	if err := rep.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	now := s.cfg.Now().UTC()
	errNotYours := errors.New("not assigned")
	for attempt := 0; attempt < 50; attempt++ {
		in, err := s.store.Instances.Get(ctx, name)
		if err != nil {
			s.storeError(w, "instance", name, err)
			return
		}
		if in.Status.Node != node {
			err = errNotYours
		}
		if err == nil && rep.Destroyed && in.Status.Deleting {
			rv, _ := store.ParseRevision(in.ResourceVersion)
			err = s.store.Instances.Delete(ctx, name, rv, append(append(s.releaseOps(in), s.goneOps(in)...), s.instanceEvent(in, "Deleted", "VM and disk destroyed on "+node))...)
			if err == nil {
				in.Status.Phase = api.PhaseDeleting
				writeJSON(w, http.StatusOK, in)
				return
			}
		} else if err == nil {
			evs := applyReport(in, rep, now)
			if len(evs) == 0 {
				writeJSON(w, http.StatusOK, in)
				return
			}
			for i := range evs {
				evs[i].Kind, evs[i].Name, evs[i].Node = api.KindInstance, in.Name, node
			}
			if m := in.Status.Migration; rep.Booted && m != nil && m.Phase == api.MigSwitched && m.Target == node {
				// A cold migration's target booted the guest: the
				// migration is done but for the serving, which the
				// controller waits for.
				err = s.migrationBooted(ctx, in, evs, s.cfg.Now().UTC())
			} else {
				ops := make([]clientv3.Op, len(evs))
				for i, ev := range evs {
					ops[i] = s.store.EventOp(ev)
				}
				ops = append(ops, controller.LedgerOps(s.store, in, evs...)...)
				err = s.store.Instances.Update(ctx, in, ops...)
			}
			if err == nil {
				writeJSON(w, http.StatusOK, in)
				return
			}
		}
		switch {
		case errors.Is(err, errNotYours):
			writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("instance %q is not assigned to node %q", name, node))
			return
		case errors.Is(err, store.ErrConflict):
			continue
		default:
			s.storeError(w, "instance", name, err)
			return
		}
	}
	s.storeError(w, "instance", name, store.ErrConflict)
}

// migrationBooted records, with a status report that says the target
// booted the guest after a migration's switch, the "booted" step and the
// end of the migration's part on the instance, in one transaction.
func (s *Server) migrationBooted(ctx context.Context, in *api.Instance, evs []api.Event, now time.Time) error {
	m := in.Status.Migration
	in.Status.Migration = nil
	op, err := s.store.Operations.Get(ctx, m.Operation)
	switch {
	case errors.Is(err, store.ErrNotFound):
		op = nil
	case err != nil:
		return err
	case op.State == api.OpRunning && op.Step(api.StepBooted) == nil:
		op.Steps = append(op.Steps, api.OperationStep{Name: api.StepBooted, At: now, Message: "booted on " + m.Target})
	}
	evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: m.Target, Type: "MigrationBooted",
		Message: fmt.Sprintf("the guest booted on %s (%s); operation %s", m.Target, m.Mode, m.Operation)})
	return controller.CommitMigrationChange(ctx, s.store, in.Name, in, op, evs...)
}

// applyReport folds a report into the status and returns the events it
// deserves: a phase change, a serving change (timed by the agent, which saw
// it: that is the customer's view the SLA ledger needs), a boot.
func applyReport(in *api.Instance, rep api.InstanceReport, now time.Time) []api.Event {
	if in.Status.Deleting {
		// Keep showing Deleting until the agent says the VM is destroyed.
		return nil
	}
	var evs []api.Event
	if in.Status.Phase != rep.Phase || in.Status.LastError != rep.Error || in.Status.Message != rep.Message {
		msg := rep.Message
		if rep.Error != "" {
			msg = rep.Error
		}
		if in.Status.Phase != rep.Phase {
			in.Status.Since = now
		}
		in.Status.Phase, in.Status.Message, in.Status.LastError = rep.Phase, rep.Message, rep.Error
		evs = append(evs, api.Event{Time: now, Type: string(rep.Phase), Message: msg})
	}
	if rep.GuestStopped && in.Spec.State != api.DesiredStopped {
		in.Spec.State = api.DesiredStopped
		evs = append(evs, api.Event{Time: now, Type: "GuestStopped", Message: "restart policy " + string(in.Spec.RestartPolicy) + " keeps it stopped"})
	}
	if rep.Booted {
		in.Status.Boots++
		evs = append(evs, api.Event{Time: now, Type: "Booted", Message: fmt.Sprintf("boot %d", in.Status.Boots)})
	}
	if rep.Serving != nil && *rep.Serving != in.Status.Serving {
		at := rep.ServingAt.UTC()
		if at.IsZero() || at.After(now.Add(time.Minute)) {
			at = now // a missing or implausible agent clock
		}
		in.Status.Serving, in.Status.ServingSince = *rep.Serving, at
		ev := api.Event{Time: at, Type: "Serving"}
		if !*rep.Serving {
			ev.Type, ev.Cause = "NotServing", controller.NotServingCause(in, rep.Phase)
		}
		evs = append(evs, ev)
	}
	return evs
}
