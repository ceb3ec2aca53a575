package server

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errNothingToRestore refuses an undrain --restore of a node that is not
// being drained.
var errNothingToRestore = errors.New("nothing to restore")

// drainNode cordons a node and records a drain: the leader's controller
// then migrates its instances elsewhere, a few at a time. Draining a node
// being drained changes its mode and concurrency; it keeps what it took.
func (s *Server) drainNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.DrainRequest
	if !optionalBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	req = req.WithDefaults()
	ctx := r.Context()
	user := userFrom(ctx)
	now := s.cfg.Now().UTC()
	n, err := s.store.Nodes.Modify(ctx, name, func(n *api.Node) ([]clientv3.Op, error) {
		d := n.Spec.Drain
		if d != nil && n.Spec.Unschedulable && n.Spec.Restore == nil && d.Mode == req.Mode && d.MaxConcurrent == req.MaxConcurrent && d.Replicas == req.Replicas {
			return nil, store.ErrUnchanged
		}
		if d == nil {
			d = &api.DrainSpec{StartedAt: now}
		} else {
			cp := *d
			d = &cp
		}
		d.Mode, d.MaxConcurrent, d.Replicas = req.Mode, req.MaxConcurrent, req.Replicas
		if d.Replicas {
			d.DrainedAt = time.Time{} // the replicas are work left
		}
		n.Spec.Drain, n.Spec.Unschedulable, n.Spec.Restore = d, true, nil
		msg := fmt.Sprintf("drain requested by %s: %s migrations, %d at a time", user, req.Mode, req.MaxConcurrent)
		if d.Replicas {
			msg += "; the replicas it holds move too"
		}
		return []clientv3.Op{s.nodeEvent(name, "NodeDrain", msg)}, nil
	})
	if err != nil {
		s.storeError(w, "node", name, err)
		return
	}
	s.writeNode(w, r, n)
}

// undrainNode makes a node schedulable again and ends its drain; with
// restore, the controller moves the instances the drain took back to it.
func (s *Server) undrainNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.UndrainRequest
	if !optionalBody(w, r, &req) {
		return
	}
	ctx := r.Context()
	user := userFrom(ctx)
	now := s.cfg.Now().UTC()
	n, err := s.store.Nodes.Modify(ctx, name, func(n *api.Node) ([]clientv3.Op, error) {
		d := n.Spec.Drain
		if req.Restore && d == nil {
			if n.Spec.Restore != nil {
				return nil, store.ErrUnchanged // restoring already
			}
			return nil, errNothingToRestore
		}
		if d == nil && !n.Spec.Unschedulable && n.Spec.Restore == nil {
			return nil, store.ErrUnchanged
		}
		msg := "undrain requested by " + user
		n.Spec.Restore = nil
		if req.Restore && len(d.Took) > 0 {
			n.Spec.Restore = &api.RestoreSpec{Instances: append([]string(nil), d.Took...), Mode: d.Mode, MaxConcurrent: d.MaxConcurrent, StartedAt: now}
			msg += fmt.Sprintf("; moving back %d instances the drain took", len(d.Took))
		}
		n.Spec.Drain, n.Spec.Unschedulable = nil, false
		return []clientv3.Op{s.nodeEvent(name, "NodeUndrain", msg)}, nil
	})
	switch {
	case errors.Is(err, errNothingToRestore):
		writeError(w, http.StatusConflict, "conflict", "restore", fmt.Sprintf("node %q is not being drained: there is nothing to restore", name))
		return
	case err != nil:
		s.storeError(w, "node", name, err)
		return
	}
	s.writeNode(w, r, n)
}

// writeNode answers a node with its derived status.
func (s *Server) writeNode(w http.ResponseWriter, r *http.Request, n *api.Node) {
	ctx := r.Context()
	alive, _, err := s.store.AliveNodes(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	nodeView(n, alive, insts)
	writeJSON(w, http.StatusOK, n)
}

// allocation is controller.Allocation, for nodeView's callers.
var allocation = controller.Allocation
