package server

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/ferrycluster/ferry/internal/api"
)

// listOperations lists operations (failovers, ...), newest first, optionally
// only those of one instance (?instance=NAME) or in one state
// (?state=Running|Succeeded|Failed).
func (s *Server) listOperations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := api.OperationFilter{Instance: q.Get("instance"), State: q.Get("state")}
	if err := f.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	items, rev, err := s.store.Operations.List(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	list := api.List[api.Operation]{Items: make([]api.Operation, 0, len(items)), ResourceVersion: strconv.FormatInt(rev, 10)}
	for _, op := range items {
		if f.Match(op) {
			list.Items = append(list.Items, *op)
		}
	}
	sortOperations(list.Items)
	writeJSON(w, http.StatusOK, list)
}

// sortOperations orders operations newest first by StartedAt; operations
// that started at the same time are ordered by name.
func sortOperations(ops []api.Operation) {
	sort.SliceStable(ops, func(i, j int) bool {
		if !ops[i].StartedAt.Equal(ops[j].StartedAt) {
			return ops[i].StartedAt.After(ops[j].StartedAt)
		}
		return ops[i].Name < ops[j].Name
	})
}

func (s *Server) getOperation(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	op, err := s.store.Operations.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "operation", name, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}
