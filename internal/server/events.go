package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

const maxEventLimit = 10000

// events lists recent events, or with watch=true streams them live as
// newline-delimited JSON: the last `limit` first, then every new one in
// commit order, with nothing missed in between (the watch starts at the
// revision the list was read at).
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	watch, err := queryBool(r, "watch")
	if err != nil {
		badRequest(w, err)
		return
	}
	limit := int64(100)
	if watch {
		limit = 20
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > maxEventLimit {
			writeError(w, http.StatusBadRequest, "invalid", "limit", fmt.Sprintf("must be an integer between 0 and %d, got %q", maxEventLimit, v))
			return
		}
		limit = n
	}
	ctx := r.Context()
	var evs []api.Event
	var rev int64
	if limit > 0 {
		evs, rev, err = s.store.ListEvents(ctx, limit)
	} else {
		// No history wanted: still learn the revision to watch from.
		_, rev, err = s.store.ListEvents(ctx, 1)
	}
	if err != nil {
		s.internalError(w, err)
		return
	}
	if !watch {
		if evs == nil {
			evs = []api.Event{}
		}
		writeJSON(w, http.StatusOK, api.List[api.Event]{Items: evs, ResourceVersion: strconv.FormatInt(rev, 10)})
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, ev := range evs {
		if enc.Encode(ev) != nil {
			return
		}
	}
	flusher.Flush()
	ch, werr := s.store.WatchEvents(ctx, rev)
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			// A blank line keeps proxies from closing an idle stream;
			// clients skip it.
			if _, err := w.Write([]byte("\n")); err != nil {
				return
			}
			flusher.Flush()
		case ev, ok := <-ch:
			if !ok {
				s.log.Debug("event watch ended", "err", werr())
				return
			}
			if enc.Encode(ev) != nil {
				return
			}
			flusher.Flush()
		}
	}
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	items, rev, err := s.store.Images.List(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	list := api.List[api.Image]{Items: make([]api.Image, len(items)), ResourceVersion: strconv.FormatInt(rev, 10)}
	for i, im := range items {
		list.Items[i] = *im
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	im, err := s.store.Images.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "image", name, err)
		return
	}
	writeJSON(w, http.StatusOK, im)
}
