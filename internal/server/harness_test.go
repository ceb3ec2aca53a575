package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
)

// testServer is a running server with an embedded etcd and an admin client.
type testServer struct {
	*Server
	t      testing.TB
	url    string
	token  string
	client *http.Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startServer(t testing.TB, mod func(*Config)) *testServer {
	t.Helper()
	ts := startServerNoLeaderWait(t, mod)
	waitFor(t, 20*time.Second, "server leader elected", func() bool { return ts.IsLeader() })
	return ts
}

// startServerNoLeaderWait starts a server without waiting to lead (a second
// server of a cluster never does while the first runs).
func startServerNoLeaderWait(t testing.TB, mod func(*Config)) *testServer {
	t.Helper()
	cfg := Config{
		DataDir: t.TempDir(),
		Listen:  "127.0.0.1:0",
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	if err := s.Listen(); err != nil {
		cancel()
		s.Close()
		t.Fatalf("Listen: %v", err)
	}
	ts := &testServer{Server: s, t: t, url: s.URL(), token: s.AdminToken(), cancel: cancel, done: make(chan error, 1)}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM())
	ts.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	go func() { ts.done <- s.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop stops the server; later calls do nothing.
func (ts *testServer) stop() {
	ts.once.Do(func() {
		ts.cancel()
		select {
		case <-ts.done:
		case <-time.After(15 * time.Second):
			ts.t.Errorf("server did not stop")
		}
		ts.Close()
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do sends a request with the admin token and decodes a JSON answer into out.
func (ts *testServer) do(method, path string, body any, out any) int {
	ts.t.Helper()
	return doJSON(ts.t, ts.client, method, ts.url+path, ts.token, body, out)
}

func doJSON(t testing.TB, c *http.Client, method, url, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, data, err)
		}
	}
	return resp.StatusCode
}

func (ts *testServer) createInstance(name string, spec api.InstanceSpec) api.Instance {
	ts.t.Helper()
	var in api.Instance
	if code := ts.do("POST", "/v1/instances", api.CreateInstanceRequest{Name: name, Spec: spec}, &in); code != http.StatusCreated {
		ts.t.Fatalf("create %s: status %d", name, code)
	}
	return in
}

func (ts *testServer) getInstance(name string) (api.Instance, int) {
	ts.t.Helper()
	var in api.Instance
	code := ts.do("GET", "/v1/instances/"+name, nil, &in)
	return in, code
}

func smallSpec() api.InstanceSpec {
	return api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo"}
}

// fakeAgent speaks the agent side of the protocol directly.
type fakeAgent struct {
	t      testing.TB
	ts     *testServer
	name   string
	client *http.Client
	serial string
}

func (ts *testServer) joinToken() string {
	ts.t.Helper()
	var jt api.JoinToken
	if code := ts.do("POST", "/v1/join-tokens", struct{}{}, &jt); code != http.StatusCreated {
		ts.t.Fatalf("join-token: status %d", code)
	}
	return jt.Token
}

// join performs the join call and returns the HTTP status and the error body.
func (ts *testServer) join(name, token string) (*fakeAgent, int, api.ErrorBody) {
	ts.t.Helper()
	keyPEM, csrPEM, err := pki.NewNodeKeyAndCSR(name)
	if err != nil {
		ts.t.Fatal(err)
	}
	fp, _, _, _ := pki.ParseJoinToken(token)
	pinned, err := pki.PinnedCATLSConfig(fp, "127.0.0.1")
	if err != nil {
		ts.t.Fatal(err)
	}
	jc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: pinned}}
	body, _ := json.Marshal(api.JoinRequest{Token: token, Node: name, CSR: string(csrPEM)})
	resp, err := jc.Post(ts.url+"/v1/join", "application/json", bytes.NewReader(body))
	if err != nil {
		ts.t.Fatalf("join: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var eb api.ErrorBody
		_ = json.Unmarshal(data, &eb)
		return nil, resp.StatusCode, eb
	}
	var jr api.JoinResponse
	if err := json.Unmarshal(data, &jr); err != nil {
		ts.t.Fatal(err)
	}
	tlsCfg, err := pki.AgentTLSConfig([]byte(jr.Certificate), keyPEM, []byte(jr.CA))
	if err != nil {
		ts.t.Fatal(err)
	}
	cert, _ := pki.ParseCertificatePEM([]byte(jr.Certificate))
	return &fakeAgent{t: ts.t, ts: ts, name: name, serial: pki.SerialString(cert),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}}, 200, api.ErrorBody{}
}

func (ts *testServer) mustJoin(name string) *fakeAgent {
	ts.t.Helper()
	a, code, eb := ts.join(name, ts.joinToken())
	if code != 200 {
		ts.t.Fatalf("join %s: %d %+v", name, code, eb)
	}
	return a
}

func (a *fakeAgent) heartbeat() int {
	a.t.Helper()
	hb := api.Heartbeat{Capacity: api.Resources{CPUs: 4, Memory: 4 << 30, Disk: 100 << 30}, AgentVersion: "test"}
	return doJSON(a.t, a.client, "POST", a.ts.url+"/v1/agent/heartbeat", "", hb, nil)
}

// keepBeating heartbeats every 500 ms until the returned stop is called.
func (a *fakeAgent) keepBeating() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			hb := api.Heartbeat{Capacity: api.Resources{CPUs: 4, Memory: 4 << 30, Disk: 100 << 30}, Address: a.name + ".test:7445"}
			data, _ := json.Marshal(hb)
			if resp, err := a.client.Post(a.ts.url+"/v1/agent/heartbeat", "application/json", bytes.NewReader(data)); err == nil {
				resp.Body.Close()
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func (a *fakeAgent) report(name string, rep api.InstanceReport) int {
	a.t.Helper()
	return doJSON(a.t, a.client, "PUT", a.ts.url+"/v1/agent/instances/"+name+"/status", "", rep, nil)
}

// stream opens the assignment stream and delivers its events on a channel.
func (a *fakeAgent) stream(ctx context.Context) <-chan api.AssignmentEvent {
	a.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", a.ts.url+"/v1/agent/assignments", nil)
	c := &http.Client{Transport: a.client.Transport}
	resp, err := c.Do(req)
	if err != nil {
		a.t.Fatalf("assignments: %v", err)
	}
	if resp.StatusCode != 200 {
		a.t.Fatalf("assignments: status %d", resp.StatusCode)
	}
	out := make(chan api.AssignmentEvent, 100)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev api.AssignmentEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				out <- ev
			}
		}
	}()
	return out
}

func next(t testing.TB, ch <-chan api.AssignmentEvent, what string) api.AssignmentEvent {
	t.Helper()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream closed waiting for %s", what)
			}
			if ev.Type == api.AssignPing {
				continue
			}
			return ev
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
