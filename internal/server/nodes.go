package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	defaultJoinTokenTTL = time.Hour
	nodeCertLife        = 365 * 24 * time.Hour
)

func (s *Server) nodeEvent(node, typ, msg string) clientv3.Op {
	return s.store.EventOp(api.Event{Time: s.cfg.Now().UTC(), Kind: api.KindNode, Name: node, Type: typ, Node: node, Message: msg})
}

// nodeView fills the derived parts of a node's status: its state comes
// from the lease (the source of truth), its allocation and drain progress
// from the instances.
func nodeView(n *api.Node, alive map[string]bool, insts []*api.Instance) {
	nodeViewAlloc(n, alive, allocation(insts), controller.NewDrainIndex(insts))
}

func nodeViewAlloc(n *api.Node, alive map[string]bool, alloc map[string]api.Resources, drains *controller.DrainIndex) {
	state := api.NodeNotReady
	if alive[n.Name] {
		state = api.NodeReady
	}
	if state != n.Status.State {
		// The controller records the transition soon; until then the lease
		// is the truth and Since is the last heartbeat seen.
		n.Status.State = state
		if !n.Status.LastHeartbeat.IsZero() {
			n.Status.Since = n.Status.LastHeartbeat
		}
	}
	n.Status.Allocated = alloc[n.Name]
	n.Status.Drain = drains.Status(n)
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	nodes, rev, err := s.store.Nodes.List(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
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
	alloc, drains := controller.Allocation(insts), controller.NewDrainIndex(insts)
	list := api.List[api.Node]{Items: make([]api.Node, len(nodes)), ResourceVersion: strconv.FormatInt(rev, 10)}
	for i, n := range nodes {
		nodeViewAlloc(n, alive, alloc, drains)
		list.Items[i] = *n
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	n, err := s.store.Nodes.Get(ctx, name)
	if err != nil {
		s.storeError(w, "node", name, err)
		return
	}
	s.writeNode(w, r, n)
}

// patchNode applies a merge patch to a node's spec (labels, cordon) in one
// etcd transaction with its NodeUpdated event. The transaction compares the
// node's revision, as the heartbeat's writes of its status do, so neither
// can undo the other. With resourceVersion in the body it writes once and
// answers 409 if the node moved on; without, it retries on conflicts.
func (s *Server) patchNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var p api.NodePatch
	if !decodeBody(w, r, &p) {
		return
	}
	if err := p.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	apply := func(n *api.Node) ([]clientv3.Op, error) {
		changed, err := p.Apply(&n.Spec)
		if err != nil {
			return nil, err
		}
		if !changed {
			return nil, store.ErrUnchanged
		}
		return []clientv3.Op{s.nodeEvent(name, "NodeUpdated", p.Describe())}, nil
	}
	var n *api.Node
	var err error
	if p.ResourceVersion != "" {
		n, err = s.store.Nodes.Get(ctx, name)
		if err == nil && n.ResourceVersion != p.ResourceVersion {
			err = store.ErrConflict
		}
		if err == nil {
			var ops []clientv3.Op
			ops, err = apply(n)
			switch {
			case errors.Is(err, store.ErrUnchanged):
				err = nil
			case err == nil:
				err = s.store.Nodes.Update(ctx, n, ops...)
			}
		}
	} else {
		n, err = s.store.Nodes.Modify(ctx, name, apply)
	}
	var fe *api.FieldError
	switch {
	case errors.As(err, &fe):
		badRequest(w, err)
		return
	case err != nil:
		s.storeError(w, "node", name, err)
		return
	}
	s.writeNode(w, r, n)
}

// deleteNode removes a node from the cluster and revokes its certificate,
// in one transaction, so the agent is refused from then on.
func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	force, err := queryBool(r, "force")
	if err != nil {
		badRequest(w, err)
		return
	}
	n, err := s.store.Nodes.Get(ctx, name)
	if err != nil {
		s.storeError(w, "node", name, err)
		return
	}
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	var on []string
	for _, in := range insts {
		if in.Status.Node == name || in.Status.ReplicaNode == name {
			on = append(on, in.Name)
		}
	}
	if len(on) > 0 && !force {
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("node %q still holds instances %s; move them first or pass --force", name, strings.Join(on, ", ")))
		return
	}
	rv, _ := store.ParseRevision(n.ResourceVersion)
	ops := []clientv3.Op{s.nodeEvent(name, "NodeRemoved", "certificate "+n.Status.CertSerial+" revoked")}
	if n.Status.CertSerial != "" {
		op, err := s.store.PutJSONOp(revokedDir+n.Status.CertSerial, revokedRecord{Node: name, RevokedAt: s.cfg.Now().UTC()})
		if err != nil {
			s.internalError(w, err)
			return
		}
		ops = append(ops, op)
	}
	if err := s.store.Nodes.Delete(ctx, name, rv, ops...); err != nil {
		s.storeError(w, "node", name, err)
		return
	}
	s.markRevoked(n.Status.CertSerial)
	if err := s.leases.Expire(ctx, name); err != nil {
		s.log.Warn("expire lease of removed node", "node", name, "err", err)
	}
	writeJSON(w, http.StatusOK, n)
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request) {
	var req api.JoinTokenRequest
	if r.ContentLength != 0 {
		if !decodeBody(w, r, &req) {
			return
		}
	}
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ttl := defaultJoinTokenTTL
	if req.TTLSeconds > 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	token, id, hash, err := pki.NewJoinToken(s.ca)
	if err != nil {
		s.internalError(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	rec := joinTokenRecord{SecretHash: hash, ExpiresAt: now.Add(ttl), CreatedAt: now}
	if err := s.store.CreateJSON(r.Context(), joinTokensDir+id, rec); err != nil {
		s.internalError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.JoinToken{Token: token, ExpiresAt: rec.ExpiresAt})
}

// join turns a one-time join token into a node certificate. Marking the
// token used and creating the node happen in one transaction, so a token
// can never admit two nodes, and a node name can never be taken twice.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	fp, id, secret, err := pki.ParseJoinToken(req.Token)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", err.Error())
		return
	}
	if fp != s.ca.Fingerprint() {
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", "the token was issued by another cluster (CA fingerprint differs)")
		return
	}
	ctx := r.Context()
	var rec joinTokenRecord
	trev, err := s.store.GetJSON(ctx, joinTokensDir+id, &rec)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", "unknown join token; create one with `ferry node join-token`")
		return
	}
	if err != nil {
		s.internalError(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	switch {
	case !pki.CheckSecret(secret, rec.SecretHash):
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", "invalid join token")
		return
	case rec.Used:
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", "this join token was already used; create a new one with `ferry node join-token`")
		return
	case now.After(rec.ExpiresAt):
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", fmt.Sprintf("this join token expired at %s; create a new one with `ferry node join-token`", rec.ExpiresAt.Format(time.RFC3339)))
		return
	}
	certPEM, serial, err := s.ca.SignNodeCSR([]byte(req.CSR), req.Node, now, nodeCertLife)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "csr", err.Error())
		return
	}
	rec.Used, rec.UsedBy = true, req.Node
	useOp, err := s.store.PutJSONOp(joinTokensDir+id, rec)
	if err != nil {
		s.internalError(w, err)
		return
	}
	node := &api.Node{
		Meta:   api.Meta{Name: req.Node, UID: store.NewID(), CreatedAt: now},
		Status: api.NodeStatus{State: api.NodeNotReady, Since: now, CertSerial: serial},
	}
	ncmp, nop, err := s.store.Nodes.CreateOps(node)
	if err != nil {
		s.internalError(w, err)
		return
	}
	ok, _, err := s.store.Txn(ctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.store.Key(joinTokensDir+id)), "=", trev), ncmp},
		useOp, nop, s.nodeEvent(req.Node, "NodeJoined", "certificate "+serial))
	if err != nil {
		s.internalError(w, err)
		return
	}
	if !ok {
		if _, err := s.store.Nodes.Get(ctx, req.Node); err == nil {
			writeError(w, http.StatusConflict, "already_exists", "node", fmt.Sprintf("a node named %q is already a member; remove it with `ferry node rm %s` or choose another name", req.Node, req.Node))
			return
		}
		writeError(w, http.StatusUnauthorized, "unauthorized", "token", "this join token was already used; create a new one with `ferry node join-token`")
		return
	}
	s.log.Info("node joined", "node", req.Node, "serial", serial)
	writeJSON(w, http.StatusOK, api.JoinResponse{Certificate: string(certPEM), CA: string(s.ca.CertPEM())})
}

func (s *Server) isRevoked(serial string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revoked[serial]
}

func (s *Server) markRevoked(serial string) {
	if serial == "" {
		return
	}
	s.mu.Lock()
	s.revoked[serial] = true
	s.mu.Unlock()
}

// watchRevocations keeps the in-memory set of revoked certificate serials
// in step with etcd, so a revocation done through any server takes effect on
// every server. (A removed node is refused anyway: its record is gone.)
func (s *Server) watchRevocations(ctx context.Context) {
	for ctx.Err() == nil {
		resp, err := s.etcd.Get(ctx, s.store.Key(revokedDir), clientv3.WithPrefix())
		if err == nil {
			for _, kv := range resp.Kvs {
				s.markRevoked(strings.TrimPrefix(string(kv.Key), s.store.Key(revokedDir)))
			}
			wch := s.etcd.Watch(clientv3.WithRequireLeader(ctx), s.store.Key(revokedDir), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut {
						s.markRevoked(strings.TrimPrefix(string(ev.Kv.Key), s.store.Key(revokedDir)))
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
