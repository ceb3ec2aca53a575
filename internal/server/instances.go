package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (s *Server) knownImage(ctx context.Context) (func(string) bool, error) {
	imgs, _, err := s.store.Images.List(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(imgs))
	for _, im := range imgs {
		names[im.Name] = true
	}
	return func(n string) bool { return names[n] }, nil
}

// goneOps are the ledger's record that a deleted instance stops counting:
// from its deletion on, it is out of service by its customer's choice.
func (s *Server) goneOps(in *api.Instance) []clientv3.Op {
	if in.Status.Boots == 0 {
		return nil // it never ran: the ledger never heard of it
	}
	return []clientv3.Op{s.store.LedgerOp(api.LedgerEntry{Time: s.cfg.Now().UTC(), Instance: in.Name, Customer: in.Spec.Owner,
		Node: in.Status.Node, Deleted: true})}
}

func (s *Server) instanceEvent(in *api.Instance, typ, msg string) clientv3.Op {
	return s.store.EventOp(api.Event{Time: s.cfg.Now().UTC(), Kind: api.KindInstance, Name: in.Name, Type: typ, Node: in.Status.Node, Message: msg})
}

func (s *Server) createInstance(w http.ResponseWriter, r *http.Request) {
	var req api.CreateInstanceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	known, err := s.knownImage(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	if err := req.Validate(known); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	if im, err := s.store.Images.Get(ctx, req.Spec.Image); err == nil && im.Ready && im.Size > req.Spec.Disk {
		writeError(w, http.StatusBadRequest, "invalid", "spec.disk", fmt.Sprintf("must be at least the size of image %s (%s)", im.Name, im.Size))
		return
	}
	if _, err := s.store.Instances.Get(ctx, req.Name); err == nil {
		s.storeError(w, "instance", req.Name, store.ErrExists)
		return
	}
	requested := req.Spec
	// Auto-assigned addresses can race with another create; try again.
	for attempt := 0; attempt < 10; attempt++ {
		spec := requested
		idCmps, idOps, err := s.identity(ctx, &spec, req.Name)
		if err != nil {
			var ce *identityConflict
			var fe *api.FieldError
			switch {
			case errors.As(err, &ce):
				writeError(w, http.StatusConflict, "conflict", ce.Field, ce.Error())
			case errors.As(err, &fe):
				badRequest(w, err)
			default:
				s.internalError(w, err)
			}
			return
		}
		now := s.cfg.Now().UTC()
		in := &api.Instance{
			Meta:   api.Meta{Name: req.Name, UID: store.NewID(), CreatedAt: now},
			Spec:   spec,
			Status: api.InstanceStatus{Phase: api.PhasePending, Since: now, Message: "waiting for a host"},
		}
		cmp, op, err := s.store.Instances.CreateOps(in)
		if err != nil {
			s.internalError(w, err)
			return
		}
		msg := fmt.Sprintf("%d CPU, %s memory, %s disk, image %s", in.Spec.CPUs, in.Spec.Memory, in.Spec.Disk, in.Spec.Image)
		if spec.IP != "" {
			msg += fmt.Sprintf(", %s %s on %s", spec.MAC, spec.IP, spec.Network)
		}
		ok, rev, err := s.store.Txn(ctx, append([]clientv3.Cmp{cmp}, idCmps...), append([]clientv3.Op{op, s.instanceEvent(in, "Created", msg)}, idOps...)...)
		if err != nil {
			s.internalError(w, err)
			return
		}
		if ok {
			in.ResourceVersion = strconv.FormatInt(rev, 10)
			writeJSON(w, http.StatusCreated, in)
			return
		}
		if _, err := s.store.Instances.Get(ctx, req.Name); err == nil {
			s.storeError(w, "instance", req.Name, store.ErrExists)
			return
		}
		if requested.IP != "" && requested.MAC != "" {
			writeError(w, http.StatusConflict, "conflict", "spec.ip", "the requested IP or MAC was taken at the same moment by another instance")
			return
		}
	}
	s.storeError(w, "instance", req.Name, store.ErrConflict)
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request) {
	items, rev, err := s.store.Instances.List(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	list := api.List[api.Instance]{Items: make([]api.Instance, len(items)), ResourceVersion: strconv.FormatInt(rev, 10)}
	for i, in := range items {
		list.Items[i] = *in
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	in, err := s.store.Instances.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "instance", name, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// modifyInstance applies fn to the named instance. With a resourceVersion
// precondition it writes once and answers 409 if the object moved on;
// without one it retries on conflicts (fn is then re-applied to fresh data).
func (s *Server) modifyInstance(w http.ResponseWriter, r *http.Request, fn func(*api.Instance) ([]clientv3.Op, error)) {
	name := r.PathValue("name")
	rv, err := queryRevision(r)
	if err != nil {
		badRequest(w, err)
		return
	}
	var in *api.Instance
	if rv > 0 {
		in, err = s.store.Instances.Get(r.Context(), name)
		if err == nil && in.ResourceVersion != strconv.FormatInt(rv, 10) {
			err = fmt.Errorf("%s: %w", name, store.ErrConflict)
		}
		if err == nil {
			var ops []clientv3.Op
			ops, err = fn(in)
			if errors.Is(err, store.ErrUnchanged) {
				writeJSON(w, http.StatusOK, in)
				return
			}
			if err == nil {
				err = s.store.Instances.Update(r.Context(), in, ops...)
			}
		}
	} else {
		in, err = s.store.Instances.Modify(r.Context(), name, fn)
	}
	var fe *api.FieldError
	switch {
	case errors.As(err, &fe):
		badRequest(w, err)
	case errors.Is(err, errDeleting):
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("instance %q is being deleted", name))
	case err != nil:
		s.storeError(w, "instance", name, err)
	default:
		writeJSON(w, http.StatusOK, in)
	}
}

var errDeleting = errors.New("instance is being deleted")

func (s *Server) setDesired(state api.DesiredState, evType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.modifyInstance(w, r, func(in *api.Instance) ([]clientv3.Op, error) {
			if in.Status.Deleting {
				return nil, errDeleting
			}
			if in.Spec.State == state {
				return nil, store.ErrUnchanged
			}
			in.Spec.State = state
			return []clientv3.Op{s.instanceEvent(in, evType, "")}, nil
		})
	}
}

func (s *Server) startInstance(w http.ResponseWriter, r *http.Request) {
	on := r.URL.Query().Get("on")
	if on == "" {
		s.setDesired(api.DesiredRunning, "StartRequested")(w, r)
		return
	}
	if err := api.ValidateName("on", on); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	alive, _, err := s.store.AliveNodes(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	target, err := s.store.Nodes.Get(ctx, on)
	if err != nil {
		s.storeError(w, "node", on, err)
		return
	}
	if !alive[on] || target.Spec.Unschedulable {
		writeError(w, http.StatusConflict, "conflict", "on", fmt.Sprintf("node %q is not Ready and schedulable", on))
		return
	}
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	free := target.Status.Capacity.Sub(controller.Allocation(insts)[on])
	s.modifyInstance(w, r, func(in *api.Instance) ([]clientv3.Op, error) {
		if in.Status.Deleting {
			return nil, errDeleting
		}
		if in.Status.Node == on {
			in.Spec.State = api.DesiredRunning
			return []clientv3.Op{s.instanceEvent(in, "StartRequested", "")}, nil
		}
		if in.Spec.SharedPath() == "" {
			return nil, &api.FieldError{Field: "on", Message: fmt.Sprintf("instance %q has a local disk on %s: moving it needs a migration, not a start elsewhere", in.Name, orDash(in.Status.Node))}
		}
		// Never start it on a second host while the first may still run
		// it: only a VM its agent reported stopped (or never started) moves.
		switch in.Status.Phase {
		case api.PhaseStopped, api.PhaseFailed, api.PhasePending, api.PhaseScheduled:
		default:
			return nil, &api.FieldError{Field: "on", Message: fmt.Sprintf("instance %q is %s on %s: stop it first (`ferry instance stop %s --wait`)", in.Name, in.Status.Phase, orDash(in.Status.Node), in.Name)}
		}
		if in.Status.Phase == api.PhaseScheduled && in.Status.Node != "" && alive[in.Status.Node] {
			return nil, &api.FieldError{Field: "on", Message: fmt.Sprintf("instance %q is being started on %s", in.Name, in.Status.Node)}
		}
		if !free.Fits(in.Spec.HostResources()) {
			return nil, &api.FieldError{Field: "on", Message: fmt.Sprintf("node %q has no room for %s (free: %d CPU, %s memory)", on, in.Name, free.CPUs, free.Memory.Human())}
		}
		from := in.Status.Node
		now := s.cfg.Now().UTC()
		in.Spec.State = api.DesiredRunning
		in.Status.Node, in.Status.ReplicaNode = on, ""
		in.Status.Epoch++
		in.Status.ReplicaOutdated, in.Status.Disk = false, nil
		in.Status.Phase, in.Status.Since, in.Status.Message = api.PhaseScheduled, now, "moved from "+orDash(from)
		return []clientv3.Op{s.instanceEvent(in, "Moved", "from "+orDash(from)+" to "+on+" (shared storage)")}, nil
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (s *Server) stopInstance(w http.ResponseWriter, r *http.Request) {
	s.setDesired(api.DesiredStopped, "StopRequested")(w, r)
}

// updateInstance replaces the mutable parts of the spec. The body must carry
// the resourceVersion it was read at: a write based on stale data is refused.
func (s *Server) updateInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body api.Instance
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Name != "" && body.Name != name {
		writeError(w, http.StatusBadRequest, "invalid", "name", fmt.Sprintf("body names %q but the path names %q", body.Name, name))
		return
	}
	rv, err := store.ParseRevision(body.ResourceVersion)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "resourceVersion", "is required for updates: read the instance first and send back its resourceVersion")
		return
	}
	cur, err := s.store.Instances.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "instance", name, err)
		return
	}
	if cur.ResourceVersion != strconv.FormatInt(rv, 10) {
		s.storeError(w, "instance", name, store.ErrConflict)
		return
	}
	if cur.Status.Deleting {
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("instance %q is being deleted", name))
		return
	}
	spec := body.Spec
	if spec.State == "" {
		spec.State = cur.Spec.State
	}
	if err := spec.Validate(nil); err != nil {
		badRequest(w, err)
		return
	}
	switch {
	case spec.Image != cur.Spec.Image:
		writeError(w, http.StatusBadRequest, "invalid", "spec.image", "cannot change the image of an existing instance")
		return
	case spec.Disk != cur.Spec.Disk:
		writeError(w, http.StatusBadRequest, "invalid", "spec.disk", "cannot change the disk size of an existing instance")
		return
	case spec.Network != cur.Spec.Network, spec.IP != cur.Spec.IP, !strings.EqualFold(spec.MAC, cur.Spec.MAC):
		writeError(w, http.StatusBadRequest, "invalid", "spec.ip", "an instance keeps its network, IP and MAC for life; send them unchanged")
		return
	case spec.Storage != cur.Spec.Storage:
		writeError(w, http.StatusBadRequest, "invalid", "spec.storage", "cannot change where an existing instance's disk lives")
		return
	}
	cur.Spec = spec
	if err := s.store.Instances.Update(r.Context(), cur, s.instanceEvent(cur, "Updated", "")); err != nil {
		s.storeError(w, "instance", name, err)
		return
	}
	writeJSON(w, http.StatusOK, cur)
}

// deleteInstance removes an instance that never got a host at once;
// otherwise it marks it Deleting and its agent destroys the VM and disk,
// then reports back and the record goes. force removes the record now (the
// agent destroys whatever it still runs when it next syncs).
func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rv, err := queryRevision(r)
	if err != nil {
		badRequest(w, err)
		return
	}
	force, err := queryBool(r, "force")
	if err != nil {
		badRequest(w, err)
		return
	}
	for attempt := 0; attempt < 20; attempt++ {
		in, err := s.store.Instances.Get(r.Context(), name)
		if err != nil {
			s.storeError(w, "instance", name, err)
			return
		}
		if rv > 0 && in.ResourceVersion != strconv.FormatInt(rv, 10) {
			s.storeError(w, "instance", name, store.ErrConflict)
			return
		}
		cur, _ := store.ParseRevision(in.ResourceVersion)
		if force || in.Status.Node == "" {
			err = s.store.Instances.Delete(r.Context(), name, cur, append(append(s.releaseOps(in), s.goneOps(in)...), s.instanceEvent(in, "Deleted", ""))...)
			if err == nil {
				in.Status.Phase = api.PhaseDeleting
				writeJSON(w, http.StatusOK, in)
				return
			}
		} else {
			if in.Status.Deleting {
				writeJSON(w, http.StatusAccepted, in)
				return
			}
			in.Status.Deleting = true
			in.Status.Phase = api.PhaseDeleting
			in.Status.Since = s.cfg.Now().UTC()
			in.Status.Message = "waiting for " + in.Status.Node + " to destroy the VM and its disk"
			err = s.store.Instances.Update(r.Context(), in, s.instanceEvent(in, "DeleteRequested", ""))
			if err == nil {
				writeJSON(w, http.StatusAccepted, in)
				return
			}
		}
		if !errors.Is(err, store.ErrConflict) || rv > 0 {
			s.storeError(w, "instance", name, err)
			return
		}
	}
	s.storeError(w, "instance", name, store.ErrConflict)
}
