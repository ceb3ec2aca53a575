package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/sla"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The SLA ledger's store adapter and API. The ledger itself is written by
// the status changes (store.LedgerOp, controller.LedgerOps); here it is
// read back with the policies, their assignments and the maintenance
// windows, and handed to package sla, which does all the arithmetic. A
// report is therefore a pure function of what etcd holds and the instant
// it is cut at: any server, before or after a restart or a leader change,
// computes the same one, and `ferry sla replay` of an export reproduces it.

// maxPolicyBytes bounds a policy body.
const maxPolicyBytes = 64 << 10

// listSLAPolicies answers GET /v1/sla/policies.
func (s *Server) listSLAPolicies(w http.ResponseWriter, r *http.Request) {
	docs, err := s.store.SLAPolicies.List(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	out := api.List[sla.Policy]{Items: make([]sla.Policy, 0, len(docs))}
	for _, d := range docs {
		out.Items = append(out.Items, d.Value)
	}
	writeJSON(w, http.StatusOK, out)
}

// getSLAPolicy answers GET /v1/sla/policies/{name}.
func (s *Server) getSLAPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, err := s.store.SLAPolicies.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "policy", name, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// putSLAPolicy creates or replaces a policy (PUT /v1/sla/policies/{name}).
// The body is the policy file's format, checked as strictly as the file.
func (s *Server) putSLAPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, err := sla.ParsePolicy(http.MaxBytesReader(w, r.Body, maxPolicyBytes))
	if err != nil {
		slaBadRequest(w, err)
		return
	}
	if p.Name != name {
		writeError(w, http.StatusBadRequest, "invalid", "name", fmt.Sprintf("the policy is named %q but the path says %q", p.Name, name))
		return
	}
	// "If-None-Match: *" creates only: an existing policy is not replaced.
	var cmps []clientv3.Cmp
	if r.Header.Get("If-None-Match") == "*" {
		cmps = append(cmps, s.store.SLAPolicies.AbsentCmp(name))
	}
	if err := s.store.SLAPolicies.Put(r.Context(), name, p, cmps...); err != nil {
		if len(cmps) > 0 && errors.Is(err, store.ErrConflict) {
			err = store.ErrExists
		}
		s.storeError(w, "policy", name, err)
		return
	}
	s.log.Info("sla policy saved", "policy", name, "by", userFrom(r.Context()))
	writeJSON(w, http.StatusOK, p)
}

// deleteSLAPolicy refuses to delete a policy that is assigned: the reports
// of the instances under it would fail.
func (s *Server) deleteSLAPolicy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	plans, err := s.slaPlans(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	if _, ok := plans.Policies[name]; !ok {
		s.storeError(w, "policy", name, store.ErrNotFound)
		return
	}
	var users []string
	for kind, m := range map[string]map[string]sla.Assignment{"instance": plans.Instances, "customer": plans.Customers} {
		for who, a := range m {
			if a.Policy == name {
				users = append(users, kind+" "+who)
			}
		}
	}
	if len(users) > 0 {
		slices.Sort(users)
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("policy %q is assigned to %s; unassign it first (`ferry sla unassign`)", name, strings.Join(users, ", ")))
		return
	}
	if err := s.store.SLAPolicies.Delete(ctx, name); err != nil {
		s.storeError(w, "policy", name, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// slaAssignments is GET /v1/sla/assignments's answer.
type slaAssignments struct {
	Instances map[string]sla.Assignment `json:"instances"`
	Customers map[string]sla.Assignment `json:"customers"`
}

func (s *Server) listSLAAssignments(w http.ResponseWriter, r *http.Request) {
	plans, err := s.slaPlans(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, slaAssignments{Instances: plans.Instances, Customers: plans.Customers})
}

// assignmentDocs returns the store of the path's kind of assignment.
func (s *Server) assignmentDocs(w http.ResponseWriter, r *http.Request) (*store.Docs[sla.Assignment], string, bool) {
	name := r.PathValue("name")
	switch r.PathValue("kind") {
	case "instances":
		if err := api.ValidateName("name", name); err != nil {
			badRequest(w, err)
			return nil, "", false
		}
		return s.store.SLAInstances, name, true
	case "customers":
		// A customer is an instance's owner: any short printable name.
		if err := api.ValidateOwner("name", name); err != nil || name == "" {
			if err == nil {
				err = &api.FieldError{Field: "name", Message: "name: is required"}
			}
			badRequest(w, err)
			return nil, "", false
		}
		return s.store.SLACustomers, name, true
	}
	writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("no assignments of %q: assign to instances or customers", r.PathValue("kind")))
	return nil, "", false
}

// putSLAAssignment gives an instance or a customer a policy and a price
// (PUT /v1/sla/assignments/{kind}/{name}). The policy must exist.
func (s *Server) putSLAAssignment(w http.ResponseWriter, r *http.Request) {
	docs, name, ok := s.assignmentDocs(w, r)
	if !ok {
		return
	}
	var a sla.Assignment
	if !decodeBody(w, r, &a) {
		return
	}
	if a.Policy == "" {
		writeError(w, http.StatusBadRequest, "invalid", "policy", "is required: the name of a policy (see `ferry sla policy ls`)")
		return
	}
	if a.MonthlyPrice != nil && (*a.MonthlyPrice < 0 || *a.MonthlyPrice > sla.MaxMoney) {
		writeError(w, http.StatusBadRequest, "invalid", "monthly_price", fmt.Sprintf("must be between 0 and %s", sla.MaxMoney))
		return
	}
	ctx := r.Context()
	if _, err := s.store.SLAPolicies.Get(ctx, a.Policy); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusBadRequest, "invalid", "policy", fmt.Sprintf("unknown policy %q: create it first (`ferry sla policy create`)", a.Policy))
			return
		}
		s.internalError(w, err)
		return
	}
	// The policy must still exist when the assignment lands.
	if err := docs.Put(ctx, name, a, s.store.SLAPolicies.ExistsCmp(a.Policy)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeError(w, http.StatusConflict, "conflict", "policy", fmt.Sprintf("policy %q was deleted meanwhile", a.Policy))
			return
		}
		s.storeError(w, "assignment", name, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) deleteSLAAssignment(w http.ResponseWriter, r *http.Request) {
	docs, name, ok := s.assignmentDocs(w, r)
	if !ok {
		return
	}
	if err := docs.Delete(r.Context(), name); err != nil {
		s.storeError(w, "assignment", name, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// scheduleMaintenance announces a maintenance window (POST
// /v1/maintenance); its announcement time is the server's clock.
func (s *Server) scheduleMaintenance(w http.ResponseWriter, r *http.Request) {
	var req api.MaintenanceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	if _, err := s.store.Nodes.Get(ctx, req.Node); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusBadRequest, "invalid", "node", fmt.Sprintf("node %q does not exist (see: ferry node ls)", req.Node))
			return
		}
		s.internalError(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	if req.End.Before(now) {
		writeError(w, http.StatusBadRequest, "invalid", "end", "the window is over already: a maintenance window is announced before it ends")
		return
	}
	m := api.Maintenance{ID: "mnt-" + store.NewID(), Node: req.Node, Start: req.Start.UTC(), End: req.End.UTC(),
		AnnouncedAt: now, Reason: req.Reason, By: userFrom(ctx)}
	if err := s.store.Maintenance.Put(ctx, m.ID, m); err != nil {
		s.internalError(w, err)
		return
	}
	ev := api.Event{Time: now, Kind: api.KindNode, Name: m.Node, Node: m.Node, Type: "MaintenanceScheduled",
		Message: fmt.Sprintf("%s, announced %s ahead: %s", m, m.Start.Sub(now).Round(time.Minute), m.Reason)}
	if _, _, err := s.store.Txn(ctx, nil, s.store.EventOp(ev)); err != nil {
		s.log.Warn("recording maintenance event", "err", err)
	}
	s.log.Info("maintenance scheduled", "maintenance", m.String(), "by", m.By)
	writeJSON(w, http.StatusCreated, m)
}

func (s *Server) listMaintenance(w http.ResponseWriter, r *http.Request) {
	docs, err := s.store.Maintenance.List(r.Context())
	if err != nil {
		s.internalError(w, err)
		return
	}
	out := api.List[api.Maintenance]{Items: make([]api.Maintenance, 0, len(docs))}
	for _, d := range docs {
		out.Items = append(out.Items, d.Value)
	}
	slices.SortFunc(out.Items, func(a, b api.Maintenance) int { return a.Start.Compare(b.Start) })
	writeJSON(w, http.StatusOK, out)
}

// cancelMaintenance deletes a window. One that has begun stays: the
// ledger's past must not change under a report already given.
func (s *Server) cancelMaintenance(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	m, err := s.store.Maintenance.Get(ctx, id)
	if err != nil {
		s.storeError(w, "maintenance", id, err)
		return
	}
	if !m.Start.After(s.cfg.Now()) {
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("maintenance %s began at %s: it is part of the SLA record and cannot be cancelled", id, m.Start.Format(time.RFC3339)))
		return
	}
	if err := s.store.Maintenance.Delete(ctx, id); err != nil {
		s.storeError(w, "maintenance", id, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// slaPlans loads the policies and their assignments.
func (s *Server) slaPlans(ctx context.Context) (*sla.Plans, error) {
	pols, err := s.store.SLAPolicies.List(ctx)
	if err != nil {
		return nil, err
	}
	plans := &sla.Plans{Policies: map[string]sla.Policy{}, Instances: map[string]sla.Assignment{}, Customers: map[string]sla.Assignment{}}
	for _, p := range pols {
		plans.Policies[p.Name] = p.Value
	}
	for _, src := range []struct {
		docs *store.Docs[sla.Assignment]
		into map[string]sla.Assignment
	}{{s.store.SLAInstances, plans.Instances}, {s.store.SLACustomers, plans.Customers}} {
		docs, err := src.docs.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			src.into[d.Name] = d.Value
		}
	}
	return plans, nil
}

// slaLedger is what every report is computed from.
type slaLedger struct {
	events []sla.Event
	plans  *sla.Plans
	// unpriced names the instances in the ledger that no policy covers:
	// they are left out of reports.
	unpriced []string
}

// loadSLALedger reads the ledger, the maintenance windows and the plans,
// and classifies the ledger into events. An outage that a host's
// maintenance window covers (a host failure, a failover or a migration
// off it while the window is open) counts as maintenance: Classify then
// excludes it if the window was announced early enough for the policy.
func (s *Server) loadSLALedger(ctx context.Context) (*slaLedger, error) {
	plans, err := s.slaPlans(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := s.store.ListLedger(ctx, time.Time{}, time.Time{})
	if err != nil {
		return nil, err
	}
	mdocs, err := s.store.Maintenance.List(ctx)
	if err != nil {
		return nil, err
	}
	windows := make([]sla.Maintenance, 0, len(mdocs))
	for _, d := range mdocs {
		windows = append(windows, sla.Maintenance{Node: d.Value.Node, Start: d.Value.Start, End: d.Value.End, AnnouncedAt: d.Value.AnnouncedAt})
	}
	out := &slaLedger{plans: plans}
	skipped := map[string]bool{}
	entries := make([]sla.Entry, 0, len(raw))
	for _, e := range raw {
		if _, err := plans.Plan(e.Instance, e.Customer); err != nil {
			if !skipped[e.Instance] {
				skipped[e.Instance] = true
				out.unpriced = append(out.unpriced, e.Instance)
			}
			continue
		}
		en := sla.Entry{Time: e.Time, Instance: e.Instance, Customer: e.Customer, Node: e.Node, Serving: e.Serving,
			Cause: sla.Cause(e.Cause), Deleted: e.Deleted}
		if !e.Serving && !e.Deleted && inMaintenance(windows, e.Node, e.Time) {
			switch e.Cause {
			case api.CauseHostFailure, api.CauseFailover, api.CauseMigration:
				en.Cause = sla.Cause(api.CauseMaintenance)
			}
		}
		entries = append(entries, en)
	}
	out.events, err = sla.Classify(entries, windows, plans.Plan)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// inMaintenance reports whether node is in one of its maintenance windows
// at t.
func inMaintenance(windows []sla.Maintenance, node string, t time.Time) bool {
	for _, m := range windows {
		if m.Node == node && !t.Before(m.Start) && t.Before(m.End) {
			return true
		}
	}
	return false
}

// slaWindow reads ?month= (default: this month) and ?tz= (default UTC)
// and returns the live window: the month cut at now. It writes the error
// answer itself.
func (s *Server) slaWindow(w http.ResponseWriter, r *http.Request) (sla.Window, bool) {
	q := r.URL.Query()
	loc := time.UTC
	if tz := q.Get("tz"); tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil || strings.HasPrefix(tz, "/") {
			writeError(w, http.StatusBadRequest, "invalid", "tz", fmt.Sprintf("unknown time zone %q: use an IANA name such as Europe/Berlin", tz))
			return sla.Window{}, false
		}
		loc = l
	}
	now := s.cfg.Now()
	month := sla.MonthOf(now.In(loc))
	if m := q.Get("month"); m != "" {
		pm, err := sla.ParseMonth(m)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid", "month", err.Error())
			return sla.Window{}, false
		}
		month = pm
	}
	win, err := sla.LiveWindow(month, loc, now)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, sla.ErrMonthNotBegun) {
			msg = fmt.Sprintf("month %s has not begun: a live report covers the past; for a what-if, export the ledger and use `ferry sla replay`", month)
		}
		writeError(w, http.StatusBadRequest, "invalid", "month", msg)
		return sla.Window{}, false
	}
	return win, true
}

// slaLoad reads the request's window (see slaWindow) and the ledger; it
// writes the error answer itself.
func (s *Server) slaLoad(w http.ResponseWriter, r *http.Request) (sla.Window, *slaLedger, bool) {
	win, ok := s.slaWindow(w, r)
	if !ok {
		return win, nil, false
	}
	led, err := s.loadSLALedger(r.Context())
	if err != nil {
		s.internalError(w, err)
		return win, nil, false
	}
	return win, led, true
}

// slaReport answers GET /v1/sla/report?month=&tz=&customer=.
func (s *Server) slaReport(w http.ResponseWriter, r *http.Request) {
	win, led, ok := s.slaLoad(w, r)
	if !ok {
		return
	}
	events := led.events
	if c := r.URL.Query().Get("customer"); c != "" {
		events = slices.DeleteFunc(slices.Clone(events), func(e sla.Event) bool { return e.Customer != c })
	}
	rep, err := sla.Compute(events, win, led.plans.Plan)
	if err != nil {
		s.internalError(w, fmt.Errorf("sla report: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if len(led.unpriced) > 0 {
		w.Header().Set("Ferry-Unpriced", strings.Join(led.unpriced, ","))
	}
	if err := sla.WriteJSON(w, rep); err != nil {
		s.log.Warn("writing sla report", "err", err)
	}
}

// slaIncidents answers GET /v1/sla/incidents/{name}: one instance's
// timeline over the month.
func (s *Server) slaIncidents(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	win, led, ok := s.slaLoad(w, r)
	if !ok {
		return
	}
	known := slices.ContainsFunc(led.events, func(e sla.Event) bool { return e.Instance == name })
	if !known {
		why := "it never served, or no policy covers it (`ferry sla assign`)"
		writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("instance %q is not in the SLA ledger: %s", name, why))
		return
	}
	ivs, err := sla.Timeline(led.events, name, win)
	if err != nil {
		s.internalError(w, err)
		return
	}
	if ivs == nil {
		ivs = []sla.Interval{}
	}
	w.Header().Set("Content-Type", "application/json")
	if err := sla.WriteJSON(w, api.List[sla.Interval]{Items: ivs}); err != nil {
		s.log.Warn("writing sla incidents", "err", err)
	}
}

// slaExport answers GET /v1/sla/export: the month's events as JSON lines,
// what `ferry sla replay` reads.
func (s *Server) slaExport(w http.ResponseWriter, r *http.Request) {
	win, led, ok := s.slaLoad(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Ferry-Window-End", win.To.UTC().Format(time.RFC3339Nano))
	if err := sla.WriteEvents(w, sla.Slice(led.events, win)); err != nil {
		s.log.Warn("writing sla export", "err", err)
	}
}

// slaForecast answers GET /v1/sla/forecast: the expected monthly
// availability and credits of each policy, from what this cluster has
// seen: host failures per host-month (nodes' ages from their records),
// the mean measured downtime of its failovers and of its migrations, and
// migrations per instance-month.
func (s *Server) slaForecast(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	in, err := s.forecastInput(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	plans, err := s.slaPlans(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	pols := make([]sla.Policy, 0, len(plans.Policies))
	for _, p := range plans.Policies {
		pols = append(pols, p)
	}
	slices.SortFunc(pols, func(a, b sla.Policy) int { return strings.Compare(a.Name, b.Name) })
	if len(pols) == 0 {
		writeError(w, http.StatusConflict, "conflict", "", "no SLA policy exists yet: create one first (`ferry sla policy create`)")
		return
	}
	rep, err := sla.Forecast(in, pols)
	if err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := sla.WriteJSON(w, rep); err != nil {
		s.log.Warn("writing sla forecast", "err", err)
	}
}

// month is the length forecasts count in: 30 days.
const forecastMonth = 30 * 24 * time.Hour

// forecastInput measures the forecast's inputs from the operations and the
// nodes' and instances' lifetimes.
func (s *Server) forecastInput(ctx context.Context) (sla.ForecastInput, error) {
	now := s.cfg.Now()
	nodes, _, err := s.store.Nodes.List(ctx)
	if err != nil {
		return sla.ForecastInput{}, err
	}
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		return sla.ForecastInput{}, err
	}
	ops, _, err := s.store.Operations.List(ctx)
	if err != nil {
		return sla.ForecastInput{}, err
	}
	var hostTime, instTime time.Duration
	for _, n := range nodes {
		hostTime += now.Sub(n.CreatedAt)
	}
	for _, in := range insts {
		instTime += now.Sub(in.CreatedAt)
	}
	failedHosts := map[string]bool{} // one host failure takes down many instances
	var failovers, migrations int
	var failoverDown, migrationDown time.Duration
	for _, op := range ops {
		if op.State != api.OpSucceeded {
			continue
		}
		switch op.Type {
		case api.OpFailover:
			failedHosts[op.From+"@"+op.StartedAt.Truncate(time.Minute).String()] = true
			if d, ok := op.Step(api.StepDetected), op.Step(api.StepServing); ok != nil && d != nil {
				failoverDown += ok.At.Sub(d.At)
				failovers++
			}
		case api.OpMigrate:
			migrations++
			migrationDown += time.Duration(op.DowntimeMS) * time.Millisecond
		}
	}
	in := sla.ForecastInput{Month: sla.Seconds(forecastMonth)}
	if hostTime > 0 {
		in.HostFailuresPerMonth = float64(len(failedHosts)) / (hostTime.Hours() / forecastMonth.Hours())
	}
	if instTime > 0 {
		in.MigrationsPerMonth = float64(migrations) / (instTime.Hours() / forecastMonth.Hours())
	}
	if failovers > 0 {
		in.FailoverDowntime = sla.Seconds(failoverDown / time.Duration(failovers))
	}
	if migrations > 0 {
		in.MigrationDowntime = sla.Seconds(migrationDown / time.Duration(migrations))
	}
	in.HostFailuresPerMonth = min(in.HostFailuresPerMonth, 100)
	in.MigrationsPerMonth = min(in.MigrationsPerMonth, 100)
	return in, nil
}

// slaBadRequest answers a policy the sla package refused, naming its
// field.
func slaBadRequest(w http.ResponseWriter, err error) {
	var se *sla.Error
	if errors.As(err, &se) {
		writeError(w, http.StatusBadRequest, "invalid", se.Field, err.Error())
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "", fmt.Sprintf("a policy is at most %d bytes", maxPolicyBytes))
		return
	}
	badRequest(w, err)
}
