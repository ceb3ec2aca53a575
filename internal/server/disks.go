package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errNotPrimary refuses a disk request from a node that is not the
// instance's primary: only the host that runs the VM speaks for its disk.
var errNotPrimary = errors.New("not the primary")

// outdateReplica is the control plane's half of the outdate-peer rule
// (architecture, property 4): a primary that lost its replica asks here
// before it writes alone. In one transaction the replica is recorded as
// outdated (so it will never be promoted with the data it has) and the
// epoch is raised (so the replica refuses the old primary's writes if they
// ever arrive). The primary then writes under the new epoch.
//
// The request is idempotent: a retry after a lost answer (epoch already
// raised past the request's, replica already outdated) gets the current
// epoch back.
func (s *Server) outdateReplica(w http.ResponseWriter, r *http.Request) {
	node := nodeFrom(r.Context())
	name := r.PathValue("name")
	var req api.OutdateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	var conflict string
	in, err := s.store.Instances.Modify(r.Context(), name, func(in *api.Instance) ([]clientv3.Op, error) {
		conflict = ""
		switch {
		case in.Status.Node != node:
			conflict = fmt.Sprintf("node %q is not the primary of %q (the primary is %s)", node, name, orDash(in.Status.Node))
			return nil, errNotPrimary
		case req.Epoch > in.Status.Epoch:
			conflict = fmt.Sprintf("epoch %d is ahead of the control plane's %d", req.Epoch, in.Status.Epoch)
			return nil, errNotPrimary
		case req.Epoch < in.Status.Epoch && in.Status.ReplicaOutdated:
			return nil, store.ErrUnchanged // a retry: already done
		case req.Epoch < in.Status.Epoch:
			conflict = fmt.Sprintf("epoch %d is stale: the control plane is at %d", req.Epoch, in.Status.Epoch)
			return nil, errNotPrimary
		}
		in.Status.Epoch++
		in.Status.ReplicaOutdated = true
		msg := fmt.Sprintf("primary %s lost replica %s; it writes alone under epoch %d", node, orDash(in.Status.ReplicaNode), in.Status.Epoch)
		return []clientv3.Op{s.instanceEvent(in, "ReplicaOutdated", msg)}, nil
	})
	switch {
	case errors.Is(err, errNotPrimary):
		writeError(w, http.StatusConflict, "conflict", "epoch", conflict)
		return
	case errors.Is(err, store.ErrUnchanged):
		in, err = s.store.Instances.Get(r.Context(), name)
	}
	if err != nil {
		s.storeError(w, "instance", name, err)
		return
	}
	if in.Status.Epoch > req.Epoch {
		s.log.Info("replica outdated", "instance", name, "node", node, "replica", in.Status.ReplicaNode, "epoch", in.Status.Epoch)
	}
	writeJSON(w, http.StatusOK, api.OutdateResponse{Epoch: in.Status.Epoch})
}

// reportDisk records the replication state of an instance's disk, as its
// primary sees it. A report under an older epoch than the record's is
// stale (it was overtaken by an outdate or a promotion) and is refused
// with 409: it must not clear ReplicaOutdated. Only a state change is an
// event; progress updates just refresh the status.
func (s *Server) reportDisk(w http.ResponseWriter, r *http.Request) {
	node := nodeFrom(r.Context())
	name := r.PathValue("name")
	var rep api.DiskStatus
	if !decodeBody(w, r, &rep) {
		return
	}
	if err := rep.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	var conflict string
	in, err := s.store.Instances.Modify(r.Context(), name, func(in *api.Instance) ([]clientv3.Op, error) {
		conflict = ""
		switch {
		case in.Status.Node != node:
			conflict = fmt.Sprintf("node %q is not the primary of %q", node, name)
			return nil, errNotPrimary
		case rep.Epoch < in.Status.Epoch:
			conflict = fmt.Sprintf("report under epoch %d is stale: the control plane is at %d", rep.Epoch, in.Status.Epoch)
			return nil, errNotPrimary
		}
		old := in.Status.Disk
		d := rep
		if d.At.IsZero() || d.At.After(now) {
			d.At = now
		}
		in.Status.Disk = &d
		var ops []clientv3.Op
		if d.State == api.DiskUpToDate && d.Epoch == in.Status.Epoch && in.Status.ReplicaOutdated {
			in.Status.ReplicaOutdated = false
		}
		if d.State == api.DiskDiverged && (old == nil || old.State != api.DiskDiverged) {
			// The control plane's choice (this primary) wins: the replica
			// host keeps its copy aside and takes a full sync
			// (property 8).
			in.Status.ReplicaResets++
			in.Status.ReplicaOutdated = true
			ops = append(ops, s.instanceEvent(in, "ReplicaReset", "replica on "+orDash(in.Status.ReplicaNode)+" diverged; it is kept aside there and fully resynced from "+node))
		}
		if old == nil || old.State != d.State || old.Reason != d.Reason {
			msg := d.State
			if d.Reason != "" {
				msg += ": " + d.Reason
			}
			if d.State == api.DiskUpToDate && d.Sync != nil && d.Sync.Done {
				msg += fmt.Sprintf(" (last resync sent %s)", api.Bytes(d.Sync.SentBytes).Human())
			}
			ops = append(ops, s.instanceEvent(in, "Disk"+d.State, msg))
		} else if sameDisk(old, &d) {
			return nil, store.ErrUnchanged
		}
		return ops, nil
	})
	switch {
	case errors.Is(err, errNotPrimary):
		writeError(w, http.StatusConflict, "conflict", "", conflict)
		return
	case errors.Is(err, store.ErrUnchanged):
		in, err = s.store.Instances.Get(r.Context(), name)
	}
	if err != nil {
		s.storeError(w, "instance", name, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// sameDisk reports whether two disk states differ only in their time.
func sameDisk(a, b *api.DiskStatus) bool {
	return a.State == b.State && a.Reason == b.Reason && a.Epoch == b.Epoch && a.DirtyBytes == b.DirtyBytes && a.Sync.Equal(b.Sync)
}
