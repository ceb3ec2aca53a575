package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
)

// testServer implements just enough of docs/routes.md for an agent: join,
// heartbeat, the assignment stream and status reports. Every instance it
// holds is assigned to whichever node asks.
type testServer struct {
	t   *testing.T
	ca  *pki.CA
	srv *httptest.Server
	url string

	mu         sync.Mutex
	tokens     map[string]string // token ID -> secret hash, until used
	joins      []string          // nodes that joined
	heartbeats []heartbeatRecord
	streams    []string // remote address of each assignment stream
	// blockStream makes the assignment handler hang without answering.
	blockStream bool
	instances   map[string]api.Instance
	rv          int
	reports     map[string][]reportRecord
	conflict    map[string]bool // answer 409 to reports about these
	subs        map[chan api.AssignmentEvent]bool
}

type heartbeatRecord struct {
	node   string
	remote string
	at     time.Time
	hb     api.Heartbeat
}

type reportRecord struct {
	api.InstanceReport
	status int // what the server answered
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ca, err := pki.NewCA("ferry test CA", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		t:         t,
		ca:        ca,
		tokens:    make(map[string]string),
		instances: make(map[string]api.Instance),
		reports:   make(map[string][]reportRecord),
		conflict:  make(map[string]bool),
		subs:      make(map[chan api.AssignmentEvent]bool),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/join", ts.join)
	mux.HandleFunc("POST /v1/agent/heartbeat", ts.heartbeat)
	mux.HandleFunc("GET /v1/agent/assignments", ts.assignments)
	mux.HandleFunc("PUT /v1/agent/instances/{name}/status", ts.status)
	cert, err := ca.IssueServerCert(nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = httptest.NewUnstartedServer(mux)
	ts.srv.TLS = pki.ServerTLSConfig(cert, ca.Pool())
	ts.srv.StartTLS()
	ts.url = ts.srv.URL
	t.Cleanup(ts.srv.Close)
	return ts
}

// newToken returns a join token the server accepts once.
func (ts *testServer) newToken() string {
	token, id, hash, err := pki.NewJoinToken(ts.ca)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.mu.Lock()
	ts.tokens[id] = hash
	ts.mu.Unlock()
	return token
}

// unknownToken returns a well-formed join token the server never issued.
func (ts *testServer) unknownToken() string {
	token, _, _, err := pki.NewJoinToken(ts.ca)
	if err != nil {
		ts.t.Fatal(err)
	}
	return token
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg}})
}

func nodeOf(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", false
	}
	node, err := pki.NodeFromCert(r.TLS.VerifiedChains[0][0])
	return node, err == nil
}

func (ts *testServer) join(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if err := api.Decode(r.Body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	_, id, secret, err := pki.ParseJoinToken(req.Token)
	ts.mu.Lock()
	hash, ok := ts.tokens[id]
	if err != nil || !ok || !pki.CheckSecret(secret, hash) {
		ts.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "unauthorized", "join token is invalid, expired or already used")
		return
	}
	delete(ts.tokens, id)
	ts.joins = append(ts.joins, req.Node)
	ts.mu.Unlock()
	cert, _, err := ts.ca.SignNodeCSR([]byte(req.CSR), req.Node, time.Now(), 0)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, api.JoinResponse{Certificate: string(cert), CA: string(ts.ca.CertPEM())})
}

func (ts *testServer) heartbeat(w http.ResponseWriter, r *http.Request) {
	node, ok := nodeOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "no node certificate")
		return
	}
	var hb api.Heartbeat
	if err := api.Decode(r.Body, &hb); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if err := hb.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	now := time.Now()
	ts.mu.Lock()
	ts.heartbeats = append(ts.heartbeats, heartbeatRecord{node: node, remote: r.RemoteAddr, at: now, hb: hb})
	ts.mu.Unlock()
	writeJSON(w, http.StatusOK, api.HeartbeatAck{Node: node, Time: now, TTLSec: 3})
}

func (ts *testServer) assignments(w http.ResponseWriter, r *http.Request) {
	if _, ok := nodeOf(r); !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "no node certificate")
		return
	}
	ts.mu.Lock()
	ts.streams = append(ts.streams, r.RemoteAddr)
	if ts.blockStream {
		ts.mu.Unlock()
		<-r.Context().Done()
		return
	}
	var snapshot []api.AssignmentEvent
	for _, name := range slices.Sorted(maps.Keys(ts.instances)) {
		in := ts.instances[name]
		snapshot = append(snapshot, api.AssignmentEvent{Type: api.AssignPut, Name: name, Instance: &in})
	}
	snapshot = append(snapshot, api.AssignmentEvent{Type: api.AssignSynced})
	sub := make(chan api.AssignmentEvent, 1000)
	ts.subs[sub] = true
	ts.mu.Unlock()
	defer func() {
		ts.mu.Lock()
		delete(ts.subs, sub)
		ts.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher := w.(http.Flusher)
	for _, ev := range snapshot {
		if enc.Encode(ev) != nil {
			return
		}
	}
	flusher.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-sub:
			if enc.Encode(ev) != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// broadcastLocked sends ev to every stream. ts.mu must be held.
func (ts *testServer) broadcastLocked(ev api.AssignmentEvent) {
	for sub := range ts.subs {
		select {
		case sub <- ev:
		default:
			ts.t.Errorf("assignment stream subscriber is full; dropped %s %s", ev.Type, ev.Name)
		}
	}
}

func (ts *testServer) status(w http.ResponseWriter, r *http.Request) {
	if _, ok := nodeOf(r); !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "no node certificate")
		return
	}
	name := r.PathValue("name")
	var rep api.InstanceReport
	if err := api.Decode(r.Body, &rep); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if err := rep.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	record := func(status int) { ts.reports[name] = append(ts.reports[name], reportRecord{rep, status}) }
	in, ok := ts.instances[name]
	switch {
	case ts.conflict[name]:
		record(http.StatusConflict)
		writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("instance %q is not assigned to this node", name))
		return
	case !ok:
		record(http.StatusNotFound)
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("instance %q not found", name))
		return
	}
	record(http.StatusOK)
	if rep.Destroyed && in.Status.Deleting {
		delete(ts.instances, name)
		ts.broadcastLocked(api.AssignmentEvent{Type: api.AssignDelete, Name: name})
		writeJSON(w, http.StatusOK, in)
		return
	}
	if in.Status.Deleting {
		writeJSON(w, http.StatusOK, in)
		return
	}
	if in.Status.Phase != rep.Phase || in.Status.Message != rep.Message || in.Status.LastError != rep.Error {
		in.Status.Phase, in.Status.Message, in.Status.LastError = rep.Phase, rep.Message, rep.Error
		ts.putLocked(in)
	}
	writeJSON(w, http.StatusOK, in)
}

// putLocked stores in with a new resource version and streams it.
func (ts *testServer) putLocked(in api.Instance) {
	ts.rv++
	in.ResourceVersion = strconv.Itoa(ts.rv)
	ts.instances[in.Name] = in
	cp := in
	ts.broadcastLocked(api.AssignmentEvent{Type: api.AssignPut, Name: in.Name, Instance: &cp})
}

// put assigns an instance (or changes it) and streams it.
func (ts *testServer) put(in api.Instance) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.putLocked(in)
}

// update changes a stored instance with f and streams it.
func (ts *testServer) update(name string, f func(*api.Instance)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	in, ok := ts.instances[name]
	if !ok {
		ts.t.Fatalf("update: no instance %q", name)
	}
	f(&in)
	ts.putLocked(in)
}

// forget drops an instance without telling any stream, as if it was
// removed while the agent was away.
func (ts *testServer) forget(name string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.instances, name)
}

func (ts *testServer) setConflict(name string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.conflict[name] = true
}

func (ts *testServer) setBlockStream(b bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.blockStream = b
}

func (ts *testServer) reportsOf(name string) []reportRecord {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.reports[name])
}

func (ts *testServer) phasesOf(name string) []api.Phase {
	var phases []api.Phase
	for _, r := range ts.reportsOf(name) {
		phases = append(phases, r.Phase)
	}
	return phases
}

func (ts *testServer) heartbeatsOf(node string) []heartbeatRecord {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []heartbeatRecord
	for _, hb := range ts.heartbeats {
		if hb.node == node {
			out = append(out, hb)
		}
	}
	return out
}

func (ts *testServer) streamAddrs() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.streams)
}

func (ts *testServer) joinCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.joins)
}

// instance returns a small instance spec in the given desired state.
func instance(name string, state api.DesiredState) api.Instance {
	return api.Instance{
		Meta: api.Meta{Name: name, CreatedAt: time.Now()},
		Spec: api.InstanceSpec{CPUs: 2, Memory: 256 << 20, Disk: 1 << 30, Image: "demo", State: state},
		Status: api.InstanceStatus{
			Phase: api.PhaseScheduled,
			Node:  "n1",
		},
	}
}
