package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

// The /v1/cluster routes run the scheduler over the cluster as the store
// has it, read-only: the same view and policy the controller places with.

// policy is the scheduler policy of this server's flags.
func (s *Server) policy() scheduler.Policy {
	return controller.Policy(s.cfg.CPURatio, s.cfg.MemRatio, s.cfg.SpreadLabel)
}

// snapshot reads the cluster as the scheduler sees it.
func (s *Server) snapshot(ctx context.Context) (scheduler.Snapshot, error) {
	nodes, _, err := s.store.Nodes.List(ctx)
	if err != nil {
		return scheduler.Snapshot{}, err
	}
	alive, _, err := s.store.AliveNodes(ctx)
	if err != nil {
		return scheduler.Snapshot{}, err
	}
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		return scheduler.Snapshot{}, err
	}
	return controller.Snapshot(nodes, alive, insts, s.policy()), nil
}

// schedulerError answers a failure of the scheduler itself (an
// inconsistent snapshot): the request was fine, the cluster data is not.
func (s *Server) schedulerError(w http.ResponseWriter, err error) {
	s.log.Error("scheduler failed", "err", err)
	writeError(w, http.StatusInternalServerError, "internal", "", "scheduler: "+err.Error())
}

func (s *Server) clusterCheck(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	rep, err := scheduler.Check(snap)
	if err != nil {
		s.schedulerError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) clusterCapacity(w http.ResponseWriter, r *http.Request) {
	size, err := api.ParseSize("size", r.URL.Query().Get("size"))
	if err != nil {
		badRequest(w, err)
		return
	}
	snap, err := s.snapshot(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	rep, err := scheduler.Capacity(snap, controller.SchedulerSize(size))
	if err != nil {
		s.schedulerError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// maxRebalanceMoves caps ?maxMoves: a plan longer than this is not one
// anybody reads.
const maxRebalanceMoves = 10000

func (s *Server) clusterRebalance(w http.ResponseWriter, r *http.Request) {
	var opts scheduler.RebalanceOptions
	if v := r.URL.Query().Get("maxMoves"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxRebalanceMoves {
			badRequest(w, &api.FieldError{Field: "maxMoves", Message: fmt.Sprintf("must be a whole number from 0 (no limit) to %d, got %q", maxRebalanceMoves, v)})
			return
		}
		opts.MaxMoves = n
	}
	snap, err := s.snapshot(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	plan, err := scheduler.Rebalance(snap, opts)
	if err != nil {
		s.schedulerError(w, err)
		return
	}
	if plan.Moves == nil {
		plan.Moves = []scheduler.Move{}
	}
	writeJSON(w, http.StatusOK, plan)
}

// clusterSnapshot answers ferry's snapshot document, as clusterfile
// writes it, so `ferry cluster snapshot > f.json` then `--from f.json`
// works offline.
func (s *Server) clusterSnapshot(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	var buf bytes.Buffer
	if err := clusterfile.WriteSnapshot(&buf, snap); err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}
