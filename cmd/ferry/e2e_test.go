package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
)

// ferryBin is the binary under test, built once by TestMain.
var ferryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", ferryBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ferry:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProc starts a ferry process that is killed at the test's cleanup
// (its output is logged if the test failed).
func startProc(t *testing.T, args ...string) *e2e.Proc {
	t.Helper()
	p, err := e2e.StartProcess(exec.Command(ferryBin, args...))
	if err != nil {
		t.Fatalf("start ferry %v: %v", args, err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of ferry %v:\n%s", args, p.Output())
		}
	})
	return p
}

// cluster is a ferry server process plus an admin HTTP client.
type cluster struct {
	t       *testing.T
	dataDir string
	addr    string
	url     string
	token   string
	srv     *e2e.Proc
	client  *http.Client
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, dataDir: t.TempDir(), addr: freeAddr(t)}
	c.url = "https://" + c.addr
	c.startServer()
	data, err := os.ReadFile(filepath.Join(c.dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("admin token file: %v\n%s", err, c.srv.Output())
	}
	c.token = strings.TrimSpace(string(data))
	return c
}

func (c *cluster) startServer() {
	c.t.Helper()
	c.srv = startProc(c.t, "server", "--data-dir", c.dataDir, "--listen", c.addr,
		"--admin-token-file", filepath.Join(c.dataDir, "admin.token"), "--log-format", "json")
	waitUntil(c.t, 60*time.Second, "server ready", func() bool {
		if _, err := os.Stat(filepath.Join(c.dataDir, "ca.crt")); err != nil {
			return false
		}
		if c.client == nil {
			ca, err := os.ReadFile(filepath.Join(c.dataDir, "ca.crt"))
			if err != nil {
				return false
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			c.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
		}
		resp, err := c.client.Get(c.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// call does an authenticated API call and decodes the JSON answer.
func (c *cluster) call(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestServerKill9LosesNoAcknowledgedCreate kills the server with SIGKILL in
// the middle of a stream of creates; after a restart every create that was
// answered 201 must be there, complete, with its Created event.
func TestServerKill9LosesNoAcknowledgedCreate(t *testing.T) {
	c := startCluster(t)
	var (
		mu    sync.Mutex
		acked []string
	)
	stopCreates := make(chan struct{})
	var wg sync.WaitGroup
	const writers = 4
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopCreates:
					return
				default:
				}
				name := fmt.Sprintf("w%d-i%d", w, i)
				req := api.CreateInstanceRequest{Name: name, Spec: api.InstanceSpec{CPUs: 1, Memory: 64 << 20, Disk: 1 << 30, Image: "demo"}}
				code, err := c.call("POST", "/v1/instances", req, nil)
				if err == nil && code == http.StatusCreated {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
				if err != nil {
					return // the server is gone
				}
			}
		}()
	}
	waitUntil(t, 60*time.Second, "100 acknowledged creates", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 100
	})
	c.srv.Kill() // while the writers are still sending
	close(stopCreates)
	wg.Wait()
	mu.Lock()
	ackedAtKill := append([]string(nil), acked...)
	mu.Unlock()

	c.startServer()
	var list api.List[api.Instance]
	if code, err := c.call("GET", "/v1/instances", nil, &list); err != nil || code != 200 {
		t.Fatalf("list after restart: %d %v", code, err)
	}
	have := map[string]api.Instance{}
	for _, in := range list.Items {
		have[in.Name] = in
		if in.Spec.CPUs != 1 || in.Spec.Memory != 64<<20 || in.Spec.Image != "demo" || in.UID == "" || in.CreatedAt.IsZero() {
			t.Errorf("instance %s is incomplete after restart: %+v", in.Name, in)
		}
	}
	lost := 0
	for _, name := range ackedAtKill {
		if _, ok := have[name]; !ok {
			lost++
			t.Errorf("acknowledged create %s is missing after kill -9 and restart", name)
		}
	}
	var evs api.List[api.Event]
	if _, err := c.call("GET", "/v1/events?limit=10000", nil, &evs); err != nil {
		t.Fatal(err)
	}
	created := map[string]bool{}
	for _, e := range evs.Items {
		if e.Type == "Created" {
			created[e.Name] = true
		}
	}
	for name := range have {
		if !created[name] {
			t.Errorf("instance %s exists without its Created event (not one transaction)", name)
		}
	}
	t.Logf("acknowledged before kill: %d, present after restart: %d, lost: %d", len(ackedAtKill), len(have), lost)
}

// TestAgentKill9 checks that a killed agent's node goes NotReady within the
// lease TTL + 1 s and that a restarted agent re-adopts its identity.
func TestAgentKill9(t *testing.T) {
	c := startCluster(t)
	var jt api.JoinToken
	if code, err := c.call("POST", "/v1/join-tokens", struct{}{}, &jt); err != nil || code != 201 {
		t.Fatalf("join token: %d %v", code, err)
	}
	stateDir := t.TempDir()
	agentArgs := []string{"agent", "--server", c.url, "--state-dir", stateDir, "--name", "host-a", "--listen", "", "--api-listen", "", "--driver", "fake", "--log-format", "json"}
	ag := startProc(t, append(agentArgs, "--token", jt.Token)...)
	node := func() api.Node {
		var n api.Node
		if _, err := c.call("GET", "/v1/nodes/host-a", nil, &n); err != nil {
			t.Logf("get node: %v", err)
		}
		return n
	}
	waitUntil(t, 30*time.Second, "host-a Ready", func() bool { return node().Status.State == api.NodeReady })
	serial := node().Status.CertSerial

	var in api.Instance
	if code, err := c.call("POST", "/v1/instances", api.CreateInstanceRequest{Name: "vm1", Spec: api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo"}}, &in); err != nil || code != 201 {
		t.Fatalf("create: %d %v", code, err)
	}
	waitUntil(t, 30*time.Second, "vm1 Running", func() bool {
		_, _ = c.call("GET", "/v1/instances/vm1", nil, &in)
		return in.Status.Phase == api.PhaseRunning
	})

	ag.Kill()
	killed := time.Now()
	waitUntil(t, 10*time.Second, "host-a NotReady", func() bool { return node().Status.State == api.NodeNotReady })
	if d := time.Since(killed); d > 4*time.Second {
		t.Fatalf("host-a went NotReady %s after kill -9, want within TTL (3s) + 1s", d)
	} else {
		t.Logf("NotReady %s after kill -9", d.Round(10*time.Millisecond))
	}

	// Restart without a token: the identity comes from the state directory.
	startProc(t, agentArgs...)
	waitUntil(t, 30*time.Second, "host-a Ready again", func() bool { return node().Status.State == api.NodeReady })
	if got := node().Status.CertSerial; got != serial {
		t.Fatalf("restarted agent has certificate %s, want the original %s", got, serial)
	}
	var nodes api.List[api.Node]
	c.call("GET", "/v1/nodes", nil, &nodes)
	if len(nodes.Items) != 1 {
		t.Fatalf("%d nodes after restart, want 1", len(nodes.Items))
	}
	waitUntil(t, 30*time.Second, "vm1 Running after agent restart", func() bool {
		_, _ = c.call("GET", "/v1/instances/vm1", nil, &in)
		return in.Status.Phase == api.PhaseRunning && in.Status.Node == "host-a"
	})
}
