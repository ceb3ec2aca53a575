package server

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type authKind int

const (
	authNone  authKind = iota
	authUser           // bearer API token
	authAgent          // node client certificate
)

// Route is one entry of the API; the table is the single source the mux and
// the OpenAPI conformance test both read.
type Route struct {
	Method string
	Path   string
	auth   authKind
	h      http.HandlerFunc
}

// Routes returns the API's routes (method and path pattern).
func (s *Server) Routes() []Route { return s.routeTable() }

func (s *Server) routeTable() []Route {
	return []Route{
		{"GET", "/healthz", authNone, s.healthz},
		{"GET", "/readyz", authNone, s.readyz},
		{"GET", "/v1/version", authUser, s.version},
		{"GET", "/v1/instances", authUser, s.listInstances},
		{"POST", "/v1/instances", authUser, s.createInstance},
		{"GET", "/v1/instances/{name}", authUser, s.getInstance},
		{"PUT", "/v1/instances/{name}", authUser, s.updateInstance},
		{"POST", "/v1/instances/{name}/start", authUser, s.startInstance},
		{"POST", "/v1/instances/{name}/stop", authUser, s.stopInstance},
		{"POST", "/v1/instances/{name}/migrate", authUser, s.migrateInstance},
		{"DELETE", "/v1/instances/{name}", authUser, s.deleteInstance},
		{"GET", "/v1/instances/{name}/logs", authUser, s.instanceLogs},
		{"GET", "/v1/instances/{name}/console", authUser, s.instanceConsole},
		{"GET", "/v1/nodes", authUser, s.listNodes},
		{"GET", "/v1/nodes/{name}", authUser, s.getNode},
		{"PATCH", "/v1/nodes/{name}", authUser, s.patchNode},
		{"DELETE", "/v1/nodes/{name}", authUser, s.deleteNode},
		{"POST", "/v1/nodes/{name}/drain", authUser, s.drainNode},
		{"POST", "/v1/nodes/{name}/undrain", authUser, s.undrainNode},
		{"POST", "/v1/join-tokens", authUser, s.createJoinToken},
		{"GET", "/v1/images", authUser, s.listImages},
		{"GET", "/v1/images/{name}", authUser, s.getImage},
		{"PUT", "/v1/images/{name}", authUser, s.uploadImage},
		{"DELETE", "/v1/images/{name}", authUser, s.deleteImage},
		{"GET", "/v1/networks", authUser, s.listNetworks},
		{"POST", "/v1/networks", authUser, s.createNetwork},
		{"GET", "/v1/networks/{name}", authUser, s.getNetwork},
		{"DELETE", "/v1/networks/{name}", authUser, s.deleteNetwork},
		{"GET", "/v1/events", authUser, s.events},
		{"GET", "/v1/operations", authUser, s.listOperations},
		{"GET", "/v1/operations/{name}", authUser, s.getOperation},
		{"POST", "/v1/operations/{name}/cancel", authUser, s.cancelOperation},
		{"GET", "/v1/sla/policies", authUser, s.listSLAPolicies},
		{"GET", "/v1/sla/policies/{name}", authUser, s.getSLAPolicy},
		{"PUT", "/v1/sla/policies/{name}", authUser, s.putSLAPolicy},
		{"DELETE", "/v1/sla/policies/{name}", authUser, s.deleteSLAPolicy},
		{"GET", "/v1/sla/assignments", authUser, s.listSLAAssignments},
		{"PUT", "/v1/sla/assignments/{kind}/{name}", authUser, s.putSLAAssignment},
		{"DELETE", "/v1/sla/assignments/{kind}/{name}", authUser, s.deleteSLAAssignment},
		{"GET", "/v1/sla/report", authUser, s.slaReport},
		{"GET", "/v1/sla/incidents/{name}", authUser, s.slaIncidents},
		{"GET", "/v1/sla/export", authUser, s.slaExport},
		{"GET", "/v1/sla/forecast", authUser, s.slaForecast},
		{"GET", "/v1/maintenance", authUser, s.listMaintenance},
		{"POST", "/v1/maintenance", authUser, s.scheduleMaintenance},
		{"DELETE", "/v1/maintenance/{id}", authUser, s.cancelMaintenance},
		{"GET", "/v1/cluster/check", authUser, s.clusterCheck},
		{"GET", "/v1/cluster/capacity", authUser, s.clusterCapacity},
		{"GET", "/v1/cluster/rebalance", authUser, s.clusterRebalance},
		{"GET", "/v1/cluster/snapshot", authUser, s.clusterSnapshot},
		{"POST", "/v1/join", authNone, s.join},
		{"POST", "/v1/agent/heartbeat", authAgent, s.heartbeat},
		{"GET", "/v1/agent/assignments", authAgent, s.assignments},
		{"PUT", "/v1/agent/instances/{name}/status", authAgent, s.reportStatus},
		{"PUT", "/v1/agent/instances/{name}/disk", authAgent, s.reportDisk},
		{"POST", "/v1/agent/instances/{name}/outdate-replica", authAgent, s.outdateReplica},
		{"PUT", "/v1/agent/instances/{name}/migration", authAgent, s.reportMigration},
		{"GET", "/v1/agent/images/{name}", authAgent, s.downloadImage},
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("no route %s %s; see docs/api/openapi.yaml", r.Method, r.URL.Path))
	})
	return mux
}

type ctxKey int

const (
	nodeKey ctxKey = 0
	userKey ctxKey = 1
)

// userFrom returns the name of the token's user of a user request
// ("admin"), or "a user" if its token record has none.
func userFrom(ctx context.Context) string {
	if u, _ := ctx.Value(userKey).(string); u != "" {
		return u
	}
	return "a user"
}

// nodeFrom returns the authenticated node of an agent request.
func nodeFrom(ctx context.Context) string {
	if n := nodeRecord(ctx); n != nil {
		return n.Name
	}
	return ""
}

// nodeRecord returns the node record authAgent read for this request.
func nodeRecord(ctx context.Context) *api.Node { v, _ := ctx.Value(nodeKey).(*api.Node); return v }

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// Hijack lets the console take over the connection.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked (HTTP/2?)")
	}
	r.code = http.StatusSwitchingProtocols
	return hj.Hijack()
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in handler", "route", rt.Path, "panic", p, "stack", string(debug.Stack()))
				writeError(rec, http.StatusInternalServerError, "internal", "", "internal error")
			}
			s.metrics.observe(rt.Method, rt.Path, rec.code, time.Since(start))
		}()
		if !(rt.Method == "PUT" && rt.Path == "/v1/images/{name}") { // image uploads stream
			r.Body = http.MaxBytesReader(rec, r.Body, api.MaxBodyBytes)
		}
		switch rt.auth {
		case authUser:
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || tok == "" {
				writeError(rec, http.StatusUnauthorized, "unauthorized", "", "missing bearer token: pass --token or run `ferry dev` to configure one")
				return
			}
			user, valid, err := s.checkToken(r.Context(), tok)
			if err != nil {
				s.internalError(rec, err)
				return
			}
			if !valid {
				writeError(rec, http.StatusUnauthorized, "unauthorized", "", "invalid token")
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), userKey, user))
		case authAgent:
			node, status, msg := s.authAgent(r)
			if status != 0 {
				writeError(rec, status, codeFor(status), "", msg)
				return
			}
			// The record travels with the request: the heartbeat handler
			// compares against it instead of reading it again.
			r = r.WithContext(context.WithValue(r.Context(), nodeKey, node))
		}
		rt.h(rec, r)
	})
}

// authAgent checks the client certificate that TLS already verified against
// the cluster CA: it must name a node that exists and is not revoked.
func (s *Server) authAgent(r *http.Request) (*api.Node, int, string) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, http.StatusUnauthorized, "agent routes need a node certificate signed by the cluster CA"
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if !hasClientAuth(leaf) {
		return nil, http.StatusForbidden, "certificate is not a client certificate"
	}
	node, err := pki.NodeFromCert(leaf)
	if err != nil {
		return nil, http.StatusForbidden, err.Error()
	}
	serial := pki.SerialString(leaf)
	if s.isRevoked(serial) {
		return nil, http.StatusForbidden, fmt.Sprintf("certificate %s of node %q is revoked", serial, node)
	}
	n, err := s.store.Nodes.Get(r.Context(), node)
	if errors.Is(err, store.ErrNotFound) {
		return nil, http.StatusForbidden, fmt.Sprintf("node %q is not a member of this cluster (removed?); join again with a new token", node)
	}
	if err != nil {
		return nil, http.StatusServiceUnavailable, err.Error()
	}
	if n.Status.CertSerial != "" && n.Status.CertSerial != serial {
		return nil, http.StatusForbidden, fmt.Sprintf("certificate %s is not the current one of node %q", serial, node)
	}
	return n, 0, ""
}

func hasClientAuth(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			return true
		}
	}
	return false
}

func codeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	return "internal"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, field, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg, Field: field}})
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error("request failed", "err", err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", "the cluster store did not answer in time; retry")
		return
	}
	writeError(w, http.StatusInternalServerError, "internal", "", "internal error: "+err.Error())
}

// storeError maps store sentinels to HTTP answers.
func (s *Server) storeError(w http.ResponseWriter, kind, name string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("%s %q not found", kind, name))
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, "already_exists", "name", fmt.Sprintf("%s %q already exists", kind, name))
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", "resourceVersion", fmt.Sprintf("%s %q was changed since you read it; read it again and retry", kind, name))
	default:
		s.internalError(w, err)
	}
}

// decodeBody reads a strict JSON body; it writes the error answer itself
// and returns false if the body is not acceptable.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	err := api.Decode(r.Body, v)
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	if errors.Is(err, api.ErrBodyTooLarge) || errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "", fmt.Sprintf("request body is larger than %d bytes", api.MaxBodyBytes))
		return false
	}
	badRequest(w, err)
	return false
}

func badRequest(w http.ResponseWriter, err error) {
	var fe *api.FieldError
	if errors.As(err, &fe) {
		writeError(w, http.StatusBadRequest, "invalid", fe.Field, fe.Error())
		return
	}
	writeError(w, http.StatusBadRequest, "invalid", "", err.Error())
}

// queryRevision reads an optional ?resourceVersion= precondition.
func queryRevision(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("resourceVersion")
	if v == "" {
		return 0, nil
	}
	rv, err := strconv.ParseInt(v, 10, 64)
	if err != nil || rv <= 0 {
		return 0, &api.FieldError{Field: "resourceVersion", Message: fmt.Sprintf("%q is not a positive integer", v)}
	}
	return rv, nil
}

func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &api.FieldError{Field: name, Message: fmt.Sprintf("%q is not true or false", v)}
	}
	return b, nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	leader, err := s.store.Leader(ctx)
	if err != nil {
		http.Error(w, "etcd not reachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if leader == "" {
		http.Error(w, "no leader elected yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Version{Version: s.cfg.Version, GoVersion: goVersion()})
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return ""
}
