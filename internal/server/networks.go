package server

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request) {
	var req api.Network
	if !decodeBody(w, r, &req) {
		return
	}
	req.ResourceVersion, req.UID = "", store.NewID()
	req.CreatedAt = s.cfg.Now().UTC()
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	if err := toNetid(&req).Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "", err.Error())
		return
	}
	ev := s.store.EventOp(api.Event{Time: req.CreatedAt, Kind: "Network", Name: req.Name, Type: "Created", Message: req.CIDR})
	if err := s.store.Networks.Create(r.Context(), &req, ev); err != nil {
		s.storeError(w, "network", req.Name, err)
		return
	}
	writeJSON(w, http.StatusCreated, req)
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request) {
	items, rev, err := s.store.Networks.List(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	list := api.List[api.Network]{Items: make([]api.Network, len(items)), ResourceVersion: strconv.FormatInt(rev, 10)}
	for i, n := range items {
		list.Items[i] = *n
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getNetwork(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, err := s.store.Networks.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "network", name, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

// deleteNetwork removes a network no instance uses. The check and the
// delete are one transaction: it requires the network's address pool to
// be empty.
func (s *Server) deleteNetwork(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	n, err := s.store.Networks.Get(ctx, name)
	if err != nil {
		s.storeError(w, "network", name, err)
		return
	}
	pool := s.store.Key(ipamDir + name + "/")
	rv, _ := store.ParseRevision(n.ResourceVersion)
	ok, _, err := s.store.Txn(ctx, []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.store.Key("networks/"+name)), "=", rv),
		clientv3.Compare(clientv3.CreateRevision(pool).WithPrefix(), "=", 0),
	}, s.store.Networks.DeleteOp(name), s.store.EventOp(api.Event{Time: s.cfg.Now().UTC(), Kind: "Network", Name: name, Type: "Deleted"}))
	if err != nil {
		s.internalError(w, err)
		return
	}
	if !ok {
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("network %q still has instances (or changed); remove them first", name))
		return
	}
	writeJSON(w, http.StatusOK, n)
}
