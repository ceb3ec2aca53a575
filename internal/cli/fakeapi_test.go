package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/clusterfile"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

const testToken = "t0ken"

// testNow is the clock of every test: AGE columns are relative to it.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeAPI implements the user routes of docs/routes.md in memory. With
// autoStep, every GET of an instance moves it one phase towards its
// desired state, as the controller and agent would.
type fakeAPI struct {
	mu        sync.Mutex
	instances map[string]*api.Instance
	nodes     map[string]*api.Node
	images    []api.Image
	events    []api.Event
	rv        int
	autoStep  bool
	// failImage names an image whose instances fail while starting.
	failImage string
	// requests records "METHOD /path?query" of each authorised request.
	requests []string
	// bodies records the body of each POST, by path.
	bodies map[string]string
	// closeWatch makes the event stream end after the events instead of
	// staying open.
	closeWatch bool
	networks   map[string]*api.Network
	// logs holds each instance's console log.
	logs map[string]string
	// uploads records the Content-Length of each image upload, by name.
	uploads map[string]int64
	// console says how the console route behaves once switched: "echo"
	// (default: echo input, answer "uptime" a little later, until the
	// client goes) or "close" (close at once).
	console string
	// consoleIn is what the console route read, complete once consoleDone
	// is closed.
	consoleIn   bytes.Buffer
	consoleDone chan struct{}
	// statuses scripts GET /v1/instances/{name}: each GET of the instance
	// takes the next status of its list (the last one stays); a nil entry
	// answers 503 instead, as a server electing a leader does.
	statuses map[string][]*api.InstanceStatus
	// operations are answered by GET /v1/operations, filtered and newest
	// first as the server does.
	operations []api.Operation
	// cluster is what the /v1/cluster routes run the scheduler on.
	cluster scheduler.Snapshot
	// migrateOps scripts POST /v1/instances/{name}/migrate: the first
	// operation is created and answered, each GET of it then takes the
	// next one (the last one stays). Empty: a default operation.
	migrateOps []api.Operation
	// opScripts scripts GET /v1/operations/{name}, as statuses does for
	// instances.
	opScripts map[string][]api.Operation
	// nodeScripts scripts GET /v1/nodes/{name} the same way.
	nodeScripts map[string][]api.Node
	// sla is what the /v1/sla and /v1/maintenance routes serve
	// (sla_live_test.go).
	sla *fakeSLA
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{
		instances: map[string]*api.Instance{},
		nodes:     map[string]*api.Node{},
		bodies:    map[string]string{},
		images: []api.Image{
			{Meta: api.Meta{Name: "demo", CreatedAt: testNow.Add(-72 * time.Hour)}, Source: "builtin:demo", Size: 64 << 20, Ready: true, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
			{Meta: api.Meta{Name: "broken", CreatedAt: testNow.Add(-90 * time.Second)}, Source: "/srv/images/broken.img"},
		},
		networks:    map[string]*api.Network{},
		logs:        map[string]string{},
		uploads:     map[string]int64{},
		consoleDone: make(chan struct{}),
		statuses:    map[string][]*api.InstanceStatus{},
		opScripts:   map[string][]api.Operation{},
		nodeScripts: map[string][]api.Node{},
	}
	f.failImage = "broken"
	return f
}

// addInstance stores an instance as if it had been running for a while.
func (f *fakeAPI) addInstance(in api.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	in.ResourceVersion = strconv.Itoa(f.rv)
	f.instances[in.Name] = &in
}

func (f *fakeAPI) addNode(n api.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	n.ResourceVersion = strconv.Itoa(f.rv)
	f.nodes[n.Name] = &n
}

func (f *fakeAPI) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeAPI) body(path string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[path]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, field, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	writeJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg, Field: field}})
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Version{Version: "v9.9.9", GoVersion: "go1.26.8"})
	})
	mux.HandleFunc("GET /v1/instances", func(w http.ResponseWriter, r *http.Request) {
		l := api.List[api.Instance]{Items: []api.Instance{}, ResourceVersion: strconv.Itoa(f.rv)}
		for _, in := range f.instances {
			l.Items = append(l.Items, *in)
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name > l.Items[j].Name }) // reverse: the CLI sorts
		writeJSON(w, 200, l)
	})
	mux.HandleFunc("POST /v1/instances", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateInstanceRequest
		if err := api.DecodeBytes([]byte(f.bodies[r.URL.Path]), &req); err != nil {
			writeError(w, 400, "invalid", "", "%v", err)
			return
		}
		known := func(name string) bool {
			for _, im := range f.images {
				if im.Name == name {
					return true
				}
			}
			return false
		}
		if err := req.Validate(known); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Message)
			return
		}
		if _, ok := f.instances[req.Name]; ok {
			writeError(w, 409, "already_exists", "name", "instance %q already exists", req.Name)
			return
		}
		for _, in := range f.sortedInstances() {
			if req.Spec.IP != "" && in.Spec.IP == req.Spec.IP {
				writeError(w, 409, "conflict", "spec.ip", "address %s is already used by instance %q", req.Spec.IP, in.Name)
				return
			}
			if req.Spec.MAC != "" && in.Spec.MAC == req.Spec.MAC { // the message repeats the field, as some server errors do
				writeError(w, 409, "conflict", "spec.mac", "spec.mac: mac %s is used by instance %q", req.Spec.MAC, in.Name)
				return
			}
		}
		f.rv++
		in := &api.Instance{
			Meta:   api.Meta{Name: req.Name, ResourceVersion: strconv.Itoa(f.rv), UID: "uid-" + req.Name, CreatedAt: testNow},
			Spec:   req.Spec,
			Status: api.InstanceStatus{Phase: api.PhasePending, Since: testNow},
		}
		f.instances[req.Name] = in
		writeJSON(w, 201, in)
	})
	mux.HandleFunc("GET /v1/instances/{name}", func(w http.ResponseWriter, r *http.Request) {
		in, ok := f.instances[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "instance %q not found", r.PathValue("name"))
			return
		}
		if seq := f.statuses[in.Name]; len(seq) > 0 {
			st := seq[0]
			if len(seq) > 1 {
				f.statuses[in.Name] = seq[1:]
			}
			if st == nil {
				writeError(w, 503, "unavailable", "", "no leader")
				return
			}
			f.rv++
			in.Status, in.ResourceVersion = *st, strconv.Itoa(f.rv)
		}
		if f.autoStep {
			if f.step(in) {
				delete(f.instances, in.Name)
			}
		}
		writeJSON(w, 200, in)
	})
	action := func(state api.DesiredState) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			in, ok := f.instances[r.PathValue("name")]
			if !ok {
				writeError(w, 404, "not_found", "", "instance %q not found", r.PathValue("name"))
				return
			}
			f.rv++
			in.Spec.State = state
			in.ResourceVersion = strconv.Itoa(f.rv)
			writeJSON(w, 200, in)
		}
	}
	mux.HandleFunc("POST /v1/instances/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		on := r.URL.Query().Get("on")
		if on != "" && on != "n3" {
			writeError(w, 404, "not_found", "", "node %q not found", on)
			return
		}
		in, ok := f.instances[r.PathValue("name")]
		if on == "" || !ok {
			action(api.DesiredRunning)(w, r)
			return
		}
		if in.Spec.SharedPath() == "" {
			writeError(w, 400, "invalid", "on", "instance %q has a local disk on %s: moving it needs a migration, not a start elsewhere", in.Name, in.Status.Node)
			return
		}
		in.Status.Node, in.Status.ReplicaNode = on, ""
		action(api.DesiredRunning)(w, r)
	})
	mux.HandleFunc("POST /v1/instances/{name}/stop", action(api.DesiredStopped))
	mux.HandleFunc("DELETE /v1/instances/{name}", func(w http.ResponseWriter, r *http.Request) {
		in, ok := f.instances[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "instance %q not found", r.PathValue("name"))
			return
		}
		if r.URL.Query().Get("force") == "true" || in.Status.Node == "" {
			delete(f.instances, in.Name)
			writeJSON(w, 200, in)
			return
		}
		f.rv++
		in.Status.Deleting = true
		in.Status.Phase = api.PhaseDeleting
		in.ResourceVersion = strconv.Itoa(f.rv)
		writeJSON(w, 202, in)
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		l := api.List[api.Node]{Items: []api.Node{}}
		for _, n := range f.nodes {
			l.Items = append(l.Items, *n)
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
		writeJSON(w, 200, l)
	})
	mux.HandleFunc("GET /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		n, ok := f.nodes[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "node %q not found", r.PathValue("name"))
			return
		}
		if seq := f.nodeScripts[n.Name]; len(seq) > 0 {
			next := seq[0]
			if len(seq) > 1 {
				f.nodeScripts[n.Name] = seq[1:]
			}
			*n = next
		}
		writeJSON(w, 200, n)
	})
	mux.HandleFunc("DELETE /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := f.nodes[name]; !ok {
			writeError(w, 404, "not_found", "", "node %q not found", name)
			return
		}
		for _, in := range f.instances {
			if in.Status.Node == name && r.URL.Query().Get("force") != "true" {
				writeError(w, 409, "conflict", "", "node %q still holds instance %q; drain it or pass force", name, in.Name)
				return
			}
		}
		delete(f.nodes, name)
		w.WriteHeader(200)
	})
	mux.HandleFunc("POST /v1/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.JoinTokenRequest
		if err := api.DecodeBytes([]byte(f.bodies[r.URL.Path]), &req); err != nil {
			writeError(w, 400, "invalid", "", "%v", err)
			return
		}
		ttl := time.Duration(req.TTLSeconds) * time.Second
		if ttl == 0 {
			ttl = time.Hour
		}
		writeJSON(w, 201, api.JoinToken{Token: "ferry-join.abc123.s3cr3t", ExpiresAt: testNow.Add(ttl)})
	})
	mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.List[api.Image]{Items: f.images})
	})
	mux.HandleFunc("PUT /v1/images/{name}", func(w http.ResponseWriter, r *http.Request) {
		name, data := r.PathValue("name"), []byte(f.bodies[r.URL.Path])
		f.uploads[name] = r.ContentLength
		if bytes.HasPrefix(data, []byte("junk")) {
			writeError(w, 400, "invalid", "", "%s is not an ext4 disk image (no ext4 superblock)", name)
			return
		}
		sum := sha256.Sum256(data)
		im := api.Image{Meta: api.Meta{Name: name, CreatedAt: testNow}, Source: "upload", Size: api.Bytes(len(data)), SHA256: hex.EncodeToString(sum[:]), Label: "ferry-demo", Ready: true}
		f.images = slices.DeleteFunc(f.images, func(i api.Image) bool { return i.Name == name })
		f.images = append(f.images, im)
		writeJSON(w, 200, im)
	})
	mux.HandleFunc("DELETE /v1/images/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		i := slices.IndexFunc(f.images, func(i api.Image) bool { return i.Name == name })
		if i < 0 {
			writeError(w, 404, "not_found", "", "image %q not found", name)
			return
		}
		for _, in := range f.sortedInstances() {
			if in.Spec.Image == name {
				writeError(w, 409, "conflict", "", "image %q is used by instance %q", name, in.Name)
				return
			}
		}
		f.images = slices.Delete(f.images, i, i+1)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		l := api.List[api.Network]{Items: []api.Network{}}
		for _, n := range f.networks {
			l.Items = append(l.Items, *n)
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name > l.Items[j].Name }) // reverse: the CLI sorts
		writeJSON(w, 200, l)
	})
	mux.HandleFunc("GET /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		n, ok := f.networks[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "network %q not found", r.PathValue("name"))
			return
		}
		writeJSON(w, 200, n)
	})
	mux.HandleFunc("POST /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		var n api.Network
		if err := api.DecodeBytes([]byte(f.bodies[r.URL.Path]), &n); err != nil {
			writeError(w, 400, "invalid", "", "%v", err)
			return
		}
		if err := n.Validate(); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Message)
			return
		}
		if _, ok := f.networks[n.Name]; ok {
			writeError(w, 409, "already_exists", "name", "network %q already exists", n.Name)
			return
		}
		f.rv++
		n.ResourceVersion, n.UID, n.CreatedAt = strconv.Itoa(f.rv), "uid-"+n.Name, testNow
		f.networks[n.Name] = &n
		writeJSON(w, 201, n)
	})
	mux.HandleFunc("DELETE /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		n, ok := f.networks[name]
		if !ok {
			writeError(w, 404, "not_found", "", "network %q not found", name)
			return
		}
		for _, in := range f.sortedInstances() {
			if in.Spec.Network == name {
				writeError(w, 409, "conflict", "", "network %q still has instances (or changed); remove them first", name)
				return
			}
		}
		delete(f.networks, name)
		writeJSON(w, 200, n)
	})
	mux.HandleFunc("GET /v1/instances/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := f.instances[name]; !ok {
			writeError(w, 404, "not_found", "", "instance %q not found", name)
			return
		}
		log := f.logs[name]
		if n, _ := strconv.Atoi(r.URL.Query().Get("tail")); n > 0 {
			lines := strings.SplitAfter(log, "\n")
			if lines[len(lines)-1] == "" {
				lines = lines[:len(lines)-1]
			}
			log = strings.Join(lines[max(0, len(lines)-n):], "")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, log)
	})
	mux.HandleFunc("GET /v1/instances/{name}/console", f.serveConsole)
	mux.HandleFunc("GET /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		flt := api.OperationFilter{Instance: r.URL.Query().Get("instance"), State: r.URL.Query().Get("state")}
		if err := flt.Validate(); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Error())
			return
		}
		l := api.List[api.Operation]{Items: []api.Operation{}, ResourceVersion: strconv.Itoa(f.rv)}
		for _, op := range f.operations {
			if flt.Match(&op) {
				l.Items = append(l.Items, op)
			}
		}
		sort.SliceStable(l.Items, func(i, j int) bool { return l.Items[i].StartedAt.After(l.Items[j].StartedAt) })
		writeJSON(w, 200, l)
	})
	mux.HandleFunc("GET /v1/operations/{name}", func(w http.ResponseWriter, r *http.Request) {
		for i, op := range f.operations {
			if op.Name != r.PathValue("name") {
				continue
			}
			if seq := f.opScripts[op.Name]; len(seq) > 0 {
				op = seq[0]
				if len(seq) > 1 {
					f.opScripts[op.Name] = seq[1:]
				}
				f.operations[i] = op
			}
			writeJSON(w, 200, op)
			return
		}
		writeError(w, 404, "not_found", "", "operation %q not found", r.PathValue("name"))
	})
	mux.HandleFunc("POST /v1/instances/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		var req api.MigrateRequest
		if body := f.bodies[r.URL.Path]; body != "" {
			if err := api.DecodeBytes([]byte(body), &req); err != nil {
				writeError(w, 400, "invalid", "", "%v", err)
				return
			}
		}
		if err := req.Validate(); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Error())
			return
		}
		in, ok := f.instances[r.PathValue("name")]
		switch {
		case !ok:
			writeError(w, 404, "not_found", "", "instance %q not found", r.PathValue("name"))
			return
		case req.To != "" && f.nodes[req.To] == nil:
			writeError(w, 400, "invalid", "to", "node %q does not exist (see: ferry node ls)", req.To)
			return
		case in.Status.Phase != api.PhaseRunning:
			writeError(w, 409, "conflict", "", "instance %q is %s, not Running: only a running instance migrates", in.Name, in.Status.Phase)
			return
		}
		req = req.WithDefaults()
		ops := f.migrateOps
		if len(ops) == 0 {
			to := req.To
			if to == "" {
				to = in.Status.ReplicaNode
			}
			ops = []api.Operation{{Meta: api.Meta{Name: fmt.Sprintf("migrate-%s-%d-1", in.Name, in.Status.Epoch), CreatedAt: testNow},
				Type: api.OpMigrate, Mode: req.Mode, Instance: in.Name, Cause: "requested by admin", From: in.Status.Node, To: to,
				State: api.OpRunning, StartedAt: testNow, Steps: []api.OperationStep{{Name: api.StepRequested, At: testNow}}}}
		}
		f.operations = append(f.operations, ops[0])
		if len(ops) > 1 {
			f.opScripts[ops[0].Name] = ops[1:]
		}
		writeJSON(w, 202, ops[0])
	})
	mux.HandleFunc("POST /v1/operations/{name}/cancel", func(w http.ResponseWriter, r *http.Request) {
		for i, op := range f.operations {
			if op.Name != r.PathValue("name") {
				continue
			}
			switch {
			case op.Type != api.OpMigrate:
				writeError(w, 400, "invalid", "", "operation %q is a %s: only migrations can be cancelled", op.Name, op.Type)
			case op.State != api.OpRunning:
				writeError(w, 409, "conflict", "", "operation %q already ended: %s", op.Name, op.State)
			case op.Step(api.StepSwitched) != nil:
				writeError(w, 409, "conflict", "", "the disk's primary already moved to %s; the migration completes", op.To)
			default:
				op.State, op.Message, op.EndedAt = api.OpCancelled, "cancelled by admin in phase ready", testNow
				f.operations[i] = op
				writeJSON(w, 200, op)
			}
			return
		}
		writeError(w, 404, "not_found", "", "operation %q not found", r.PathValue("name"))
	})
	mux.HandleFunc("POST /v1/nodes/{name}/drain", func(w http.ResponseWriter, r *http.Request) {
		n, ok := f.nodes[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "node %q not found", r.PathValue("name"))
			return
		}
		var req api.DrainRequest
		if body := f.bodies[r.URL.Path]; body != "" {
			if err := api.DecodeBytes([]byte(body), &req); err != nil {
				writeError(w, 400, "invalid", "", "%v", err)
				return
			}
		}
		if err := req.Validate(); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Error())
			return
		}
		req = req.WithDefaults()
		f.rv++
		n.ResourceVersion = strconv.Itoa(f.rv)
		n.Spec.Unschedulable = true
		n.Spec.Drain = &api.DrainSpec{Mode: req.Mode, MaxConcurrent: req.MaxConcurrent, StartedAt: testNow, Replicas: req.Replicas}
		left := 0
		for _, in := range f.instances {
			if in.Status.Node == n.Name {
				left++
			}
		}
		n.Status.Drain = &api.DrainStatus{Remaining: left}
		if req.Replicas {
			for _, in := range f.instances {
				if in.Status.ReplicaNode == n.Name && in.Status.Node != n.Name {
					n.Status.Drain.Replicas++
				}
			}
		}
		writeJSON(w, 200, n)
	})
	mux.HandleFunc("POST /v1/nodes/{name}/undrain", func(w http.ResponseWriter, r *http.Request) {
		n, ok := f.nodes[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "node %q not found", r.PathValue("name"))
			return
		}
		var req api.UndrainRequest
		if body := f.bodies[r.URL.Path]; body != "" {
			if err := api.DecodeBytes([]byte(body), &req); err != nil {
				writeError(w, 400, "invalid", "", "%v", err)
				return
			}
		}
		if req.Restore && n.Spec.Drain == nil {
			writeError(w, 409, "conflict", "restore", "node %q is not being drained: there is nothing to restore", n.Name)
			return
		}
		f.rv++
		n.ResourceVersion = strconv.Itoa(f.rv)
		if req.Restore && len(n.Spec.Drain.Took) > 0 {
			n.Spec.Restore = &api.RestoreSpec{Instances: n.Spec.Drain.Took, Mode: n.Spec.Drain.Mode, MaxConcurrent: n.Spec.Drain.MaxConcurrent, StartedAt: testNow}
			n.Status.Drain = &api.DrainStatus{Restoring: len(n.Spec.Drain.Took)}
		} else {
			n.Status.Drain = nil
		}
		n.Spec.Drain, n.Spec.Unschedulable = nil, false
		writeJSON(w, 200, n)
	})
	mux.HandleFunc("PATCH /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		n, ok := f.nodes[r.PathValue("name")]
		if !ok {
			writeError(w, 404, "not_found", "", "node %q not found", r.PathValue("name"))
			return
		}
		var p api.NodePatch
		if err := api.DecodeBytes([]byte(f.bodies[r.URL.Path]), &p); err != nil {
			writeError(w, 400, "invalid", "", "%v", err)
			return
		}
		if err := p.Validate(); err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Error())
			return
		}
		if changed, _ := p.Apply(&n.Spec); changed {
			f.rv++
			n.ResourceVersion = strconv.Itoa(f.rv)
		}
		writeJSON(w, 200, n)
	})
	schedulerAnswer := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			writeError(w, 500, "internal", "", "scheduler: %v", err)
			return
		}
		writeJSON(w, 200, v)
	}
	mux.HandleFunc("GET /v1/cluster/check", func(w http.ResponseWriter, r *http.Request) {
		rep, err := scheduler.Check(f.cluster)
		schedulerAnswer(w, rep, err)
	})
	mux.HandleFunc("GET /v1/cluster/capacity", func(w http.ResponseWriter, r *http.Request) {
		size, err := api.ParseSize("size", r.URL.Query().Get("size"))
		if err != nil {
			var fe *api.FieldError
			errors.As(err, &fe)
			writeError(w, 400, "invalid", fe.Field, "%s", fe.Error())
			return
		}
		rep, err := scheduler.Capacity(f.cluster, scheduler.Resources{CPUs: int64(size.CPUs), MemMiB: size.Memory.MiBCeil(), DiskMiB: size.Disk.MiBCeil()})
		schedulerAnswer(w, rep, err)
	})
	mux.HandleFunc("GET /v1/cluster/rebalance", func(w http.ResponseWriter, r *http.Request) {
		var opts scheduler.RebalanceOptions
		if v := r.URL.Query().Get("maxMoves"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeError(w, 400, "invalid", "maxMoves", "must be a whole number from 0, got %q", v)
				return
			}
			opts.MaxMoves = n
		}
		plan, err := scheduler.Rebalance(f.cluster, opts)
		if plan.Moves == nil {
			plan.Moves = []scheduler.Move{}
		}
		schedulerAnswer(w, plan, err)
	})
	mux.HandleFunc("GET /v1/cluster/snapshot", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := clusterfile.WriteSnapshot(&buf, f.cluster); err != nil {
			writeError(w, 500, "internal", "", "%v", err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(buf.Bytes())
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if r.URL.Query().Get("watch") == "true" {
			limit = 20
		}
		if s := r.URL.Query().Get("limit"); s != "" {
			limit, _ = strconv.Atoi(s)
		}
		evs := f.events
		if len(evs) > limit {
			evs = evs[len(evs)-limit:]
		}
		if r.URL.Query().Get("watch") != "true" {
			writeJSON(w, 200, api.List[api.Event]{Items: evs})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, ev := range evs {
			_ = enc.Encode(ev)
		}
		_ = http.NewResponseController(w).Flush()
		if f.closeWatch {
			return
		}
		f.mu.Unlock() // let other requests in while the stream is open
		<-r.Context().Done()
		f.mu.Lock()
	})
	f.slaRoutes(mux)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeError(w, 401, "unauthorized", "", "missing or invalid bearer token")
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
		f.mu.Lock()
		defer f.mu.Unlock()
		line := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		f.requests = append(f.requests, line)
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			f.bodies[r.URL.Path] = string(body)
		}
		mux.ServeHTTP(w, r)
	})
}

// sortedInstances returns the instances by name, for deterministic answers.
func (f *fakeAPI) sortedInstances() []*api.Instance {
	out := make([]*api.Instance, 0, len(f.instances))
	for _, in := range f.instances {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// serveConsole switches to the console protocol the way the server does:
// 101, then raw bytes. It sends a banner with the 101, then behaves as
// f.console says. It runs with f.mu held, like every handler.
func (f *fakeAPI) serveConsole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	in, ok := f.instances[name]
	switch {
	case !ok:
		writeError(w, 404, "not_found", "", "instance %q not found", name)
		return
	case in.Status.Phase != api.PhaseRunning:
		writeError(w, 409, "conflict", "", "instance %q is not running (%s)", name, in.Status.Phase)
		return
	case r.Header.Get("Upgrade") != "ferry-console" || r.ProtoMajor != 1:
		writeError(w, 400, "invalid", "", "want an HTTP/1.1 Upgrade to ferry-console, got %s %q", r.Proto, r.Header.Get("Upgrade"))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, 500, "internal", "", "hijack: %v", err)
		return
	}
	mode := f.console
	f.mu.Unlock() // let other requests in while the session is open
	defer f.mu.Lock()
	var got bytes.Buffer
	defer func() {
		conn.Close()
		f.mu.Lock()
		f.consoleIn.Write(got.Bytes())
		f.mu.Unlock()
		close(f.consoleDone)
	}()
	_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ferry-console\r\n\r\n"+name+" login: ")
	if mode == "close" {
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := brw.Read(buf)
		got.Write(buf[:n])
		if _, werr := conn.Write(buf[:n]); werr != nil || err != nil {
			return
		}
		if bytes.Contains(buf[:n], []byte("uptime\n")) {
			time.Sleep(20 * time.Millisecond) // the guest takes its time
			_, _ = io.WriteString(conn, " 12:00:00 up 3 days\n")
		}
	}
}

// consoleInput waits for the console session to end and returns what the
// server read.
func (f *fakeAPI) consoleInput(t *testing.T) string {
	t.Helper()
	select {
	case <-f.consoleDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the console session did not end")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.consoleIn.String()
}

// step moves an instance one phase towards its desired state and reports
// whether it is gone (deleted).
func (f *fakeAPI) step(in *api.Instance) (gone bool) {
	f.rv++
	in.ResourceVersion = strconv.Itoa(f.rv)
	since := testNow.Add(time.Duration(f.rv) * time.Second)
	set := func(p api.Phase, msg string) {
		in.Status.Phase, in.Status.Since, in.Status.Message = p, since, msg
	}
	if in.Status.Deleting {
		if in.Status.Message == "destroying VM" {
			return true
		}
		set(api.PhaseDeleting, "destroying VM")
		return false
	}
	running := in.Spec.State == api.DesiredRunning
	switch in.Status.Phase {
	case api.PhasePending:
		if running {
			in.Status.Node, in.Status.ReplicaNode = "n1", "n2"
			set(api.PhaseScheduled, "")
		} else {
			set(api.PhaseStopped, "")
		}
	case api.PhaseScheduled, api.PhaseStopped, api.PhaseFailed:
		if running {
			set(api.PhaseStarting, "booting")
		}
	case api.PhaseStarting:
		switch {
		case !running:
			set(api.PhaseStopping, "")
		case in.Spec.Image == f.failImage:
			set(api.PhaseFailed, "")
			in.Status.LastError = "qemu: boot failed"
		default:
			set(api.PhaseRunning, "")
		}
	case api.PhaseRunning:
		if !running {
			set(api.PhaseStopping, "shutting down")
		}
	case api.PhaseStopping:
		set(api.PhaseStopped, "")
	}
	return false
}

// testEnv is a fake server and an environment pointing at it.
type testEnv struct {
	api    *fakeAPI
	srv    *httptest.Server
	dir    string
	caFile string
	env    map[string]string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	f := newFakeAPI()
	srv := httptest.NewUnstartedServer(f.handler())
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes that tests make fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testEnv{
		api: f, srv: srv, dir: dir, caFile: caFile,
		env: map[string]string{
			"HOME":            dir,
			"XDG_CONFIG_HOME": filepath.Join(dir, "xdg"),
			"FERRY_SERVER":    srv.URL,
			"FERRY_TOKEN":     testToken,
			"FERRY_CA_FILE":   caFile,
		},
	}
}

// result is what one run of the CLI printed and returned.
type result struct {
	stdout, stderr string
	err            error
}

// runOpts tune one run.
type runOpts struct {
	// cancelAfterLines cancels the command's context once stdout has that
	// many lines, to stop a stream.
	cancelAfterLines int
	// stdin is what the command reads; nil means nothing (EOF).
	stdin io.Reader
	// cancelOnStderr cancels the command's context once stderr contains
	// it, to interrupt a wait.
	cancelOnStderr string
}

func (e *testEnv) run(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout := &lineWriter{}
	if o.cancelAfterLines > 0 {
		stdout.after, stdout.fn = o.cancelAfterLines, cancel
	}
	stderr := &lineWriter{}
	if o.cancelOnStderr != "" {
		stderr.match, stderr.fn = o.cancelOnStderr, cancel
	}
	stdin := o.stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	root := NewRoot(RootOptions{
		Stdin:         stdin,
		Stdout:        stdout,
		Stderr:        stderr,
		Version:       "v1.2.3",
		Getenv:        func(k string) string { return e.env[k] },
		Now:           func() time.Time { return testNow },
		PollInterval:  time.Millisecond,
		ConsoleLinger: 50 * time.Millisecond,
	})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// lineWriter is a buffer that calls fn once it holds after lines, or
// once it contains match.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	after int
	match string
	fn    func()
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if w.fn != nil && (w.after > 0 && bytes.Count(w.buf.Bytes(), []byte("\n")) >= w.after ||
		w.match != "" && bytes.Contains(w.buf.Bytes(), []byte(w.match))) {
		w.fn()
		w.fn = nil
	}
	return n, err
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// check compares a result with expectations: substrings of stdout and
// stderr, and of the error (empty wantErr means success).
func (r result) check(t *testing.T, wantOut []string, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && r.err != nil:
		t.Errorf("error = %v, want none\nstderr: %s", r.err, r.stderr)
	case wantErr != "" && r.err == nil:
		t.Errorf("error = nil, want %q\nstdout: %s", wantErr, r.stdout)
	case wantErr != "" && !strings.Contains(r.err.Error(), wantErr):
		t.Errorf("error = %q, want containing %q", r.err, wantErr)
	}
	if wantErr != "" && r.err != nil && !strings.Contains(r.stderr, "Error: "+r.err.Error()) {
		t.Errorf("stderr = %q, want it to carry \"Error: %s\"", r.stderr, r.err)
	}
	for _, w := range wantOut {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout lacks %q; stdout:\n%s", w, r.stdout)
		}
	}
}
