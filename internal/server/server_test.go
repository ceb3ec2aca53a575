package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/store/storetest"
)

func TestAuthentication(t *testing.T) {
	ts := startServer(t, nil)
	if ts.token == "" {
		t.Fatal("first start did not create an admin token")
	}
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "ferry_not-a-real-token", http.StatusUnauthorized},
		{"admin token", ts.token, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body api.ErrorBody
			code := doJSON(t, ts.client, "GET", ts.url+"/v1/instances", tc.token, nil, &body)
			if code != tc.want {
				t.Fatalf("GET /v1/instances with %s = %d, want %d", tc.name, code, tc.want)
			}
			if tc.want == http.StatusUnauthorized && body.Error.Code != "unauthorized" {
				t.Fatalf("error code = %q, want unauthorized", body.Error.Code)
			}
		})
	}
	// Agent routes refuse a user token without a certificate.
	if code := doJSON(t, ts.client, "POST", ts.url+"/v1/agent/heartbeat", ts.token, api.Heartbeat{}, nil); code != http.StatusUnauthorized {
		t.Fatalf("heartbeat without certificate = %d, want 401", code)
	}
}

func TestCreateValidation(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantField string
	}{
		{"ok", `{"name":"web-1","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"demo"}}`, 201, ""},
		{"duplicate", `{"name":"web-1","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"demo"}}`, 409, "name"},
		{"bad name", `{"name":"Web_1","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"demo"}}`, 400, "name"},
		{"zero cpus", `{"name":"a","spec":{"cpus":0,"memory":"256M","disk":"1G","image":"demo"}}`, 400, "spec.cpus"},
		{"tiny memory", `{"name":"a","spec":{"cpus":1,"memory":"1K","disk":"1G","image":"demo"}}`, 400, "spec.memory"},
		{"unknown image", `{"name":"a","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"nope"}}`, 400, "spec.image"},
		{"bad group", `{"name":"a","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"demo","group":"Web_1"}}`, 400, "spec.group"},
		{"unknown field", `{"name":"a","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"demo","gpu":1}}`, 400, "spec.gpu"},
		{"wrong type", `{"name":"a","spec":{"cpus":"one","memory":"256M","disk":"1G","image":"demo"}}`, 400, "spec.cpus"},
		{"malformed", `{"name":`, 400, ""},
		{"trailing data", `{"name":"a","spec":{"cpus":1,"memory":"256M","disk":"1G","image":"demo"}} {}`, 400, ""},
		{"empty", ``, 400, ""},
		{"oversized", `{"name":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`, 413, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var eb api.ErrorBody
			var out any = &eb
			if tc.wantCode == 201 {
				out = nil
			}
			code := ts.do("POST", "/v1/instances", tc.body, out)
			if code != tc.wantCode {
				t.Fatalf("POST %s = %d (%+v), want %d", tc.name, code, eb, tc.wantCode)
			}
			if tc.wantCode >= 400 {
				if eb.Error.Message == "" || eb.Error.Code == "" {
					t.Fatalf("error body lacks code or message: %+v", eb)
				}
				if tc.wantField != "" && eb.Error.Field != tc.wantField {
					t.Fatalf("error field = %q, want %q (%s)", eb.Error.Field, tc.wantField, eb.Error.Message)
				}
			}
		})
	}
	var list api.List[api.Instance]
	ts.do("GET", "/v1/instances", nil, &list)
	if len(list.Items) != 1 {
		t.Fatalf("after the table, %d instances exist, want 1 (no half-written state)", len(list.Items))
	}
}

func TestOptimisticConcurrency(t *testing.T) {
	ts := startServer(t, nil)
	ts.createInstance("db", smallSpec())
	// Let the controller record why db waits (there is no node), so no
	// other writer races with the test's own writes below.
	var in api.Instance
	waitFor(t, 10*time.Second, "controller's pending reason", func() bool {
		in, _ = ts.getInstance("db")
		return strings.Contains(in.Status.Message, "no node")
	})
	stale := in.ResourceVersion
	// A first update with the right version succeeds.
	in.Spec.CPUs = 2
	var upd api.Instance
	if code := ts.do("PUT", "/v1/instances/db", in, &upd); code != 200 {
		t.Fatalf("PUT with current resourceVersion = %d, want 200", code)
	}
	if upd.Spec.CPUs != 2 || upd.ResourceVersion == stale {
		t.Fatalf("PUT result = %+v", upd)
	}
	// A second writer that read the old version is refused.
	in.Spec.CPUs = 3
	var eb api.ErrorBody
	if code := ts.do("PUT", "/v1/instances/db", in, &eb); code != http.StatusConflict || eb.Error.Code != "conflict" {
		t.Fatalf("PUT with stale resourceVersion = %d %+v, want 409 conflict", code, eb)
	}
	if code := ts.do("POST", "/v1/instances/db/stop?resourceVersion="+stale, nil, &eb); code != http.StatusConflict {
		t.Fatalf("stop with stale resourceVersion = %d, want 409", code)
	}
	if code := ts.do("DELETE", "/v1/instances/db?resourceVersion="+stale, nil, &eb); code != http.StatusConflict {
		t.Fatalf("delete with stale resourceVersion = %d, want 409", code)
	}
	got, _ := ts.getInstance("db")
	if got.Spec.CPUs != 2 {
		t.Fatalf("cpus = %d after refused writes, want 2", got.Spec.CPUs)
	}
	// Without a precondition, stop applies to the latest version.
	var stopped api.Instance
	if code := ts.do("POST", "/v1/instances/db/stop", nil, &stopped); code != 200 || stopped.Spec.State != api.DesiredStopped {
		t.Fatalf("stop = %d %+v", code, stopped.Spec)
	}
	// Immutable fields.
	stopped.Spec.Image = "other"
	if code := ts.do("PUT", "/v1/instances/db", stopped, &eb); code != 400 || eb.Error.Field != "spec.image" {
		t.Fatalf("PUT changing image = %d %+v, want 400 spec.image", code, eb)
	}
}

func TestJoinHeartbeatAndPlacement(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.mustJoin("node-1")
	var n api.Node
	ts.do("GET", "/v1/nodes/node-1", nil, &n)
	if n.Status.State != api.NodeNotReady {
		t.Fatalf("joined node without heartbeat is %s, want NotReady", n.Status.State)
	}
	stop := a.keepBeating()
	defer stop()
	waitFor(t, 5*time.Second, "node-1 Ready", func() bool {
		ts.do("GET", "/v1/nodes/node-1", nil, &n)
		return n.Status.State == api.NodeReady && n.Status.Capacity.CPUs == 4
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := a.stream(ctx)
	if ev := next(t, stream, "synced"); ev.Type != api.AssignSynced {
		t.Fatalf("first event = %+v, want synced", ev)
	}
	ts.createInstance("web", smallSpec())
	ev := next(t, stream, "put web")
	if ev.Type != api.AssignPut || ev.Name != "web" || ev.Instance.Status.Node != "node-1" {
		t.Fatalf("assignment = %+v", ev)
	}
	for _, ph := range []api.Phase{api.PhaseStarting, api.PhaseRunning} {
		if code := a.report("web", api.InstanceReport{Phase: ph}); code != 200 {
			t.Fatalf("report %s = %d", ph, code)
		}
	}
	in, _ := ts.getInstance("web")
	if in.Status.Phase != api.PhaseRunning || in.Status.Node != "node-1" {
		t.Fatalf("status = %+v", in.Status)
	}
	ts.do("GET", "/v1/nodes/node-1", nil, &n)
	if n.Status.Allocated.CPUs != 1 || n.Status.Allocated.Memory != 256<<20 {
		t.Fatalf("allocated = %+v", n.Status.Allocated)
	}
	// Another node may not report on web.
	b := ts.mustJoin("node-2")
	if code := b.report("web", api.InstanceReport{Phase: api.PhaseFailed, Error: "zombie"}); code != http.StatusConflict {
		t.Fatalf("report from a node that does not hold web = %d, want 409", code)
	}
	// Delete: marked Deleting, agent destroys, record goes.
	if code := ts.do("DELETE", "/v1/instances/web", nil, &in); code != http.StatusAccepted || in.Status.Phase != api.PhaseDeleting {
		t.Fatalf("delete = %d %+v", code, in.Status)
	}
	for ev = next(t, stream, "put web deleting"); ev.Instance == nil || !ev.Instance.Status.Deleting; ev = next(t, stream, "put web deleting") {
		if ev.Type != api.AssignPut {
			t.Fatalf("assignment after delete = %+v, want a put with deleting set", ev)
		}
	}
	if code := a.report("web", api.InstanceReport{Phase: api.PhaseDeleting, Destroyed: true}); code != 200 {
		t.Fatalf("destroyed report = %d", code)
	}
	if _, code := ts.getInstance("web"); code != 404 {
		t.Fatalf("instance after destroy: %d, want 404", code)
	}
	if ev := next(t, stream, "delete web"); ev.Type != api.AssignDelete || ev.Name != "web" {
		t.Fatalf("assignment = %+v, want delete web", ev)
	}
}

func TestUnschedulableWaitsForRoom(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.mustJoin("small")
	stop := a.keepBeating()
	defer stop()
	big := smallSpec()
	big.Memory = 8 << 30
	ts.createInstance("big", big)
	waitFor(t, 10*time.Second, "reason for pending", func() bool {
		in, _ := ts.getInstance("big")
		return in.Status.Phase == api.PhasePending && strings.Contains(in.Status.Message, "of memory free")
	})
	ts.createInstance("fits", smallSpec())
	waitFor(t, 10*time.Second, "fits scheduled", func() bool {
		in, _ := ts.getInstance("fits")
		return in.Status.Node == "small"
	})
}

func TestNodeNotReadyWithinTTL(t *testing.T) {
	ts := startServer(t, nil) // default TTL 3 s
	a := ts.mustJoin("n1")
	stop := a.keepBeating()
	var n api.Node
	waitFor(t, 5*time.Second, "Ready", func() bool {
		ts.do("GET", "/v1/nodes/n1", nil, &n)
		return n.Status.State == api.NodeReady
	})
	stop()
	stopped := time.Now()
	waitFor(t, 10*time.Second, "NotReady", func() bool {
		ts.do("GET", "/v1/nodes/n1", nil, &n)
		return n.Status.State == api.NodeNotReady
	})
	// The last heartbeat was at most 500 ms before stop.
	if d := time.Since(stopped); d > 4*time.Second+500*time.Millisecond {
		t.Fatalf("NotReady after %s, want within TTL + 1 s", d)
	}
	var evs api.List[api.Event]
	waitFor(t, 10*time.Second, "NodeNotReady event", func() bool {
		ts.do("GET", "/v1/events", nil, &evs)
		for _, e := range evs.Items {
			if e.Type == "NodeNotReady" && e.Name == "n1" {
				return true
			}
		}
		return false
	})
}

func TestJoinRefusals(t *testing.T) {
	now := time.Now()
	// The leader's controller reads the clock on every pass, concurrently
	// with the test moving it.
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	ts := startServer(t, func(c *Config) { c.Now = func() time.Time { return *clock.Load() } })
	tok := ts.joinToken()
	if _, code, _ := ts.join("first", tok); code != 200 {
		t.Fatalf("first join = %d", code)
	}
	if _, code, eb := ts.join("second", tok); code != http.StatusUnauthorized || !strings.Contains(eb.Error.Message, "already used") {
		t.Fatalf("reused token = %d %+v, want 401 already used", code, eb)
	}
	if _, code, eb := ts.join("first", ts.joinToken()); code != http.StatusConflict {
		t.Fatalf("duplicate node name = %d %+v, want 409", code, eb)
	}
	expiring := ts.joinToken()
	later := now.Add(2 * time.Hour)
	clock.Store(&later)
	if _, code, eb := ts.join("late", expiring); code != http.StatusUnauthorized || !strings.Contains(eb.Error.Message, "expired") {
		t.Fatalf("expired token = %d %+v, want 401 expired", code, eb)
	}
	// A token of another cluster.
	foreign, err := pki.NewCA("other", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	ftok, _, _, _ := pki.NewJoinToken(foreign)
	fp, _, _, _ := pki.ParseJoinToken(ftok)
	pinned, _ := pki.PinnedCATLSConfig(fp, "127.0.0.1")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: pinned}}
	if _, err := c.Get(ts.url + "/healthz"); err == nil {
		t.Fatal("a client pinned to another CA completed the TLS handshake")
	}
}

func TestAgentCertificateRefusals(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.mustJoin("n1")
	if code := a.heartbeat(); code != 200 {
		t.Fatalf("heartbeat = %d", code)
	}

	// Revoked: node rm revokes the certificate.
	if code := ts.do("DELETE", "/v1/nodes/n1", nil, nil); code != 200 {
		t.Fatalf("node rm = %d", code)
	}
	if code := a.heartbeat(); code != http.StatusForbidden {
		t.Fatalf("heartbeat with revoked cert = %d, want 403", code)
	}

	// Foreign: a certificate from another CA fails the TLS handshake.
	now := time.Now()
	other, _ := pki.NewCA("other", now, 0)
	keyPEM, csrPEM, _ := pki.NewNodeKeyAndCSR("n2")
	certPEM, _, err := other.SignNodeCSR(csrPEM, "n2", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := heartbeatWith(ts, certPEM, keyPEM); err == nil {
		t.Fatal("a certificate from a foreign CA was accepted")
	}

	// Expired: signed by the cluster CA, but no longer valid.
	ca, err := pki.LoadCA(ts.caPEMs())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, _ = pki.NewNodeKeyAndCSR("n3")
	certPEM, _, err = ca.SignNodeCSR(csrPEM, "n3", now.Add(-48*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := heartbeatWith(ts, certPEM, keyPEM); err == nil {
		t.Fatal("an expired certificate was accepted")
	}
}

func (ts *testServer) caPEMs() ([]byte, []byte) {
	var rec caRecord
	if _, err := ts.store.GetJSON(context.Background(), caPath, &rec); err != nil {
		ts.t.Fatal(err)
	}
	return []byte(rec.CertPEM), []byte(rec.KeyPEM)
}

// heartbeatWith sends one heartbeat with the given certificate and returns
// an error if the request did not get a 200.
func heartbeatWith(ts *testServer, certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.CAPEM())
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}}
	resp, err := c.Post(ts.url+"/v1/agent/heartbeat", "application/json",
		strings.NewReader(`{"capacity":{"cpus":1,"memory":1073741824,"disk":0}}`))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return &httpStatusError{resp.StatusCode}
	}
	return nil
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return http.StatusText(e.code) }

func TestMetricsAndHealth(t *testing.T) {
	ts := startServer(t, nil)
	ts.createInstance("m1", smallSpec())
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := ts.client.Get(ts.url + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	resp, err := ts.client.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`ferry_instances{phase="Pending"} 1`, `ferry_nodes{state="Ready"} 0`, `ferry_api_request_duration_seconds_bucket{code="201",method="POST",route="/v1/instances"`, `ferry_server_is_leader 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestExternalEtcd runs the server against a separate etcd process (Debian's
// etcd-server package), as `ferry server --etcd-endpoints` does.
func TestExternalEtcd(t *testing.T) {
	endpoints := storetest.External(t)
	ts := startServer(t, func(c *Config) { c.EtcdEndpoints = endpoints })
	if ts.embedded != nil {
		t.Fatal("server started an embedded etcd despite EtcdEndpoints")
	}
	ts.createInstance("ext-1", smallSpec())
	a := ts.mustJoin("ext-node")
	stop := a.keepBeating()
	defer stop()
	waitFor(t, 10*time.Second, "ext-1 placed on ext-node", func() bool {
		in, _ := ts.getInstance("ext-1")
		return in.Status.Node == "ext-node"
	})
	// The state is in the external etcd: a second server on it sees it.
	ts2 := startServerNoLeaderWait(t, func(c *Config) { c.EtcdEndpoints = endpoints })
	ts2.token = ts.token
	if in, code := ts2.getInstance("ext-1"); code != 200 || in.Status.Node != "ext-node" {
		t.Fatalf("second server sees ext-1 as %d %+v", code, in.Status)
	}
	if ts2.AdminToken() != "" {
		t.Fatal("second server on the same etcd created another admin token")
	}
}
