package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

const testToken = "s3cret-token"

// newTLSServer starts an HTTPS test server and returns a client trusting it.
func newTLSServer(t *testing.T, h http.Handler) (*httptest.Server, *Client) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	c, err := New(Config{Server: srv.URL, Token: testToken, CAPEM: certPEM(srv)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return srv, c
}

func certPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// otherCAPEM returns a self-signed CA certificate that signed nothing.
func otherCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      Config
		wantBase string
		wantErr  string
	}{
		{name: "https", cfg: Config{Server: "https://10.0.0.1:7443"}, wantBase: "https://10.0.0.1:7443"},
		{name: "trailing slash", cfg: Config{Server: "https://h:7443/"}, wantBase: "https://h:7443"},
		{name: "path prefix", cfg: Config{Server: "https://h/ferry/"}, wantBase: "https://h/ferry"},
		{name: "no scheme", cfg: Config{Server: "h:7443"}, wantBase: "https://h:7443"},
		{name: "empty", cfg: Config{}, wantErr: "no server address"},
		{name: "http", cfg: Config{Server: "http://h:7443"}, wantErr: "only https:// is supported"},
		{name: "no host", cfg: Config{Server: "https://"}, wantErr: "has no host"},
		{name: "userinfo", cfg: Config{Server: "https://u:p@h"}, wantErr: "scheme://host"},
		{name: "bad CA", cfg: Config{Server: "https://h", CAPEM: []byte("not pem")}, wantErr: "no PEM certificate"},
		{name: "token newline", cfg: Config{Server: "https://h", Token: "abc\n"}, wantErr: "control characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New(%+v) error = %v, want containing %q", tc.cfg, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v): %v", tc.cfg, err)
			}
			if got := c.Server(); got != tc.wantBase {
				t.Errorf("Server() = %q, want %q", got, tc.wantBase)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Version{Version: "v1"})
	})
	t.Run("server certificate from another CA", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewTLSServer(ok)
		defer srv.Close()
		c, err := New(Config{Server: srv.URL, Token: testToken, CAPEM: otherCAPEM(t)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Version(context.Background())
		var uerr *tls.CertificateVerificationError
		if !errors.As(err, &uerr) {
			t.Fatalf("Version() error = %v, want a certificate verification error", err)
		}
	})
	t.Run("TLS 1.2 server refused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewUnstartedServer(ok)
		srv.TLS = &tls.Config{MaxVersion: tls.VersionTLS12}
		srv.StartTLS()
		defer srv.Close()
		c, err := New(Config{Server: srv.URL, Token: testToken, CAPEM: certPEM(srv)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Version(context.Background()); err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Fatalf("Version() error = %v, want a protocol version error", err)
		}
	})
	t.Run("redirect not followed", func(t *testing.T) {
		t.Parallel()
		_, c := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/v1/version", http.StatusFound)
		}))
		_, err := c.Version(context.Background())
		var aerr *APIError
		if !errors.As(err, &aerr) || aerr.Status != http.StatusFound {
			t.Fatalf("Version() error = %v, want an APIError with status 302", err)
		}
	})
}

// request is what the test server saw.
type request struct {
	Method, Path, Query, Auth, ContentType string
	Body                                   string
}

func TestMethods(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	inst := api.Instance{
		Meta: api.Meta{Name: "web-1", ResourceVersion: "7", CreatedAt: created},
		Spec: api.InstanceSpec{CPUs: 2, Memory: 256 << 20, Disk: 1 << 30, Image: "demo", State: api.DesiredRunning},
		Status: api.InstanceStatus{
			Phase: api.PhaseRunning, Node: "n1", ReplicaNode: "n2", Since: created,
		},
	}
	node := api.Node{Meta: api.Meta{Name: "n1"}, Status: api.NodeStatus{State: api.NodeReady, Capacity: api.Resources{CPUs: 4}}}
	img := api.Image{Meta: api.Meta{Name: "demo"}, Source: "builtin:demo", Size: 1 << 30}
	network := api.Network{Meta: api.Meta{Name: "lan", CreatedAt: created}, CIDR: "10.77.0.0/24", Gateway: "10.77.0.1", Reserved: []string{"10.77.0.2"}}
	ev := api.Event{ID: "1", Time: created, Kind: api.KindInstance, Name: "web-1", Type: "Running", Node: "n1"}
	check := scheduler.CheckReport{Nodes: []scheduler.NodeReport{{Name: "n1", N1Fail: true, N1Reason: "if n2 dies ..."}}, Instances: 3, N1Failures: 1, Score: 1.5}
	capacity := scheduler.CapacityReport{Size: scheduler.Resources{CPUs: 1, MemMiB: 2048, DiskMiB: 20480}, Fit: 7, Limit: "memory", Reason: "no node has 2.0 GiB"}
	plan := scheduler.Plan{ScoreBefore: 2, ScoreAfter: 1, N1Before: 1, Bytes: 1 << 30, Moves: []scheduler.Move{
		{Instance: "web-1", Kind: scheduler.MoveFailover, OldPrimary: "n1", OldSecondary: "n2", NewPrimary: "n2", NewSecondary: "n1", Bytes: 1 << 30, ScoreAfter: 1},
	}}
	op := api.Operation{
		Meta: api.Meta{Name: "failover-web-1-3", ResourceVersion: "12", CreatedAt: created},
		Type: api.OpFailover, Instance: "web-1", Cause: "host n1's lease expired", From: "n1", To: "n2", Epoch: 3,
		State: api.OpSucceeded, Message: "serving on n2 4.2s after the failure was detected", BootsBefore: 1,
		StartedAt: created, EndedAt: created.Add(4200 * time.Millisecond),
		Steps: []api.OperationStep{
			{Name: api.StepDetected, At: created, Message: "lease expired"},
			{Name: api.StepServing, At: created.Add(4200 * time.Millisecond)},
		},
	}

	tests := []struct {
		name       string
		call       func(ctx context.Context, c *Client) (any, error)
		status     int
		respBody   any // marshalled to JSON; nil sends no body
		want       request
		wantResult any
	}{
		{
			name:       "Version",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.Version(ctx) },
			respBody:   api.Version{Version: "v0.1.0", GoVersion: "go1.26"},
			want:       request{Method: "GET", Path: "/v1/version"},
			wantResult: &api.Version{Version: "v0.1.0", GoVersion: "go1.26"},
		},
		{
			name: "CreateInstance",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateInstance(ctx, api.CreateInstanceRequest{Name: "web-1", Spec: inst.Spec})
			},
			status:     http.StatusCreated,
			respBody:   inst,
			want:       request{Method: "POST", Path: "/v1/instances", ContentType: "application/json", Body: `{"name":"web-1","spec":{"cpus":2,"memory":268435456,"disk":1073741824,"image":"demo","state":"running"}}`},
			wantResult: &inst,
		},
		{
			name:       "ListInstances",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListInstances(ctx) },
			respBody:   api.List[api.Instance]{Items: []api.Instance{inst}, ResourceVersion: "9"},
			want:       request{Method: "GET", Path: "/v1/instances"},
			wantResult: &api.List[api.Instance]{Items: []api.Instance{inst}, ResourceVersion: "9"},
		},
		{
			name:       "ListInstances empty list is not nil",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListInstances(ctx) },
			respBody:   map[string]any{"items": nil},
			want:       request{Method: "GET", Path: "/v1/instances"},
			wantResult: &api.List[api.Instance]{Items: []api.Instance{}},
		},
		{
			name:       "GetInstance",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.GetInstance(ctx, "web-1") },
			respBody:   inst,
			want:       request{Method: "GET", Path: "/v1/instances/web-1"},
			wantResult: &inst,
		},
		{
			name:       "GetInstance escapes the name",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.GetInstance(ctx, "a/b") },
			respBody:   inst,
			want:       request{Method: "GET", Path: "/v1/instances/a%2Fb"},
			wantResult: &inst,
		},
		{
			name:       "UpdateInstance",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.UpdateInstance(ctx, &inst) },
			respBody:   inst,
			want:       request{Method: "PUT", Path: "/v1/instances/web-1", ContentType: "application/json", Body: mustJSON(inst)},
			wantResult: &inst,
		},
		{
			name:       "StartInstance",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.StartInstance(ctx, "web-1", "") },
			respBody:   inst,
			want:       request{Method: "POST", Path: "/v1/instances/web-1/start"},
			wantResult: &inst,
		},
		{
			name:       "StopInstance with resourceVersion",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.StopInstance(ctx, "web-1", "7") },
			respBody:   inst,
			want:       request{Method: "POST", Path: "/v1/instances/web-1/stop", Query: "resourceVersion=7"},
			wantResult: &inst,
		},
		{
			name: "DeleteInstance accepted",
			call: func(ctx context.Context, c *Client) (any, error) {
				i, removed, err := c.DeleteInstance(ctx, "web-1", "7", true)
				return []any{i, removed}, err
			},
			status:     http.StatusAccepted,
			respBody:   inst,
			want:       request{Method: "DELETE", Path: "/v1/instances/web-1", Query: "force=true&resourceVersion=7"},
			wantResult: []any{&inst, false},
		},
		{
			name: "DeleteInstance removed at once, no body",
			call: func(ctx context.Context, c *Client) (any, error) {
				i, removed, err := c.DeleteInstance(ctx, "web-1", "", false)
				return []any{i, removed}, err
			},
			status:     http.StatusOK,
			want:       request{Method: "DELETE", Path: "/v1/instances/web-1"},
			wantResult: []any{(*api.Instance)(nil), true},
		},
		{
			name:       "ListNodes",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListNodes(ctx) },
			respBody:   api.List[api.Node]{Items: []api.Node{node}},
			want:       request{Method: "GET", Path: "/v1/nodes"},
			wantResult: &api.List[api.Node]{Items: []api.Node{node}},
		},
		{
			name:       "GetNode",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.GetNode(ctx, "n1") },
			respBody:   node,
			want:       request{Method: "GET", Path: "/v1/nodes/n1"},
			wantResult: &node,
		},
		{
			name:       "DeleteNode force",
			call:       func(ctx context.Context, c *Client) (any, error) { return nil, c.DeleteNode(ctx, "n1", true) },
			want:       request{Method: "DELETE", Path: "/v1/nodes/n1", Query: "force=true"},
			wantResult: nil,
		},
		{
			name: "CreateJoinToken rounds the TTL up",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateJoinToken(ctx, 1500*time.Millisecond)
			},
			status:     http.StatusCreated,
			respBody:   api.JoinToken{Token: "tok", ExpiresAt: created},
			want:       request{Method: "POST", Path: "/v1/join-tokens", ContentType: "application/json", Body: `{"ttlSeconds":2}`},
			wantResult: &api.JoinToken{Token: "tok", ExpiresAt: created},
		},
		{
			name:       "CreateJoinToken default TTL sends {}",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.CreateJoinToken(ctx, 0) },
			status:     http.StatusCreated,
			respBody:   api.JoinToken{Token: "tok"},
			want:       request{Method: "POST", Path: "/v1/join-tokens", ContentType: "application/json", Body: `{}`},
			wantResult: &api.JoinToken{Token: "tok"},
		},
		{
			name:       "ListImages",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListImages(ctx) },
			respBody:   api.List[api.Image]{Items: []api.Image{img}},
			want:       request{Method: "GET", Path: "/v1/images"},
			wantResult: &api.List[api.Image]{Items: []api.Image{img}},
		},
		{
			name:       "GetImage",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.GetImage(ctx, "demo") },
			respBody:   img,
			want:       request{Method: "GET", Path: "/v1/images/demo"},
			wantResult: &img,
		},
		{
			name:       "StartInstanceOn",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.StartInstanceOn(ctx, "web-1", "n3") },
			respBody:   inst,
			want:       request{Method: "POST", Path: "/v1/instances/web-1/start", Query: "on=n3"},
			wantResult: &inst,
		},
		{
			name:       "DeleteImage",
			call:       func(ctx context.Context, c *Client) (any, error) { return nil, c.DeleteImage(ctx, "demo") },
			status:     http.StatusNoContent,
			want:       request{Method: "DELETE", Path: "/v1/images/demo"},
			wantResult: nil,
		},
		{
			name:       "ListNetworks",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListNetworks(ctx) },
			respBody:   api.List[api.Network]{Items: []api.Network{network}},
			want:       request{Method: "GET", Path: "/v1/networks"},
			wantResult: &api.List[api.Network]{Items: []api.Network{network}},
		},
		{
			name:       "GetNetwork",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.GetNetwork(ctx, "lan") },
			respBody:   network,
			want:       request{Method: "GET", Path: "/v1/networks/lan"},
			wantResult: &network,
		},
		{
			name: "CreateNetwork sends only what a user sets",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateNetwork(ctx, api.Network{Meta: api.Meta{Name: "lan", UID: "ignored"}, CIDR: "10.77.0.0/24"})
			},
			status:     http.StatusCreated,
			respBody:   network,
			want:       request{Method: "POST", Path: "/v1/networks", ContentType: "application/json", Body: `{"name":"lan","cidr":"10.77.0.0/24"}`},
			wantResult: &network,
		},
		{
			name: "CreateNetwork with gateway and reserved",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.CreateNetwork(ctx, network)
			},
			status:     http.StatusCreated,
			respBody:   network,
			want:       request{Method: "POST", Path: "/v1/networks", ContentType: "application/json", Body: `{"name":"lan","cidr":"10.77.0.0/24","gateway":"10.77.0.1","reserved":["10.77.0.2"]}`},
			wantResult: &network,
		},
		{
			name:       "DeleteNetwork",
			call:       func(ctx context.Context, c *Client) (any, error) { return nil, c.DeleteNetwork(ctx, "lan") },
			respBody:   network,
			want:       request{Method: "DELETE", Path: "/v1/networks/lan"},
			wantResult: nil,
		},
		{
			name:       "ListEvents with limit",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListEvents(ctx, 5) },
			respBody:   api.List[api.Event]{Items: []api.Event{ev}},
			want:       request{Method: "GET", Path: "/v1/events", Query: "limit=5"},
			wantResult: &api.List[api.Event]{Items: []api.Event{ev}},
		},
		{
			name:       "ListEvents default limit",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListEvents(ctx, 0) },
			respBody:   api.List[api.Event]{Items: []api.Event{ev}},
			want:       request{Method: "GET", Path: "/v1/events"},
			wantResult: &api.List[api.Event]{Items: []api.Event{ev}},
		},
		{
			name:       "ListOperations",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ListOperations(ctx, "", "") },
			respBody:   api.List[api.Operation]{Items: []api.Operation{op}, ResourceVersion: "14"},
			want:       request{Method: "GET", Path: "/v1/operations"},
			wantResult: &api.List[api.Operation]{Items: []api.Operation{op}, ResourceVersion: "14"},
		},
		{
			name: "ListOperations filtered",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ListOperations(ctx, "web-1", api.OpRunning)
			},
			respBody:   map[string]any{"items": nil},
			want:       request{Method: "GET", Path: "/v1/operations", Query: "instance=web-1&state=Running"},
			wantResult: &api.List[api.Operation]{Items: []api.Operation{}},
		},
		{
			name:       "GetOperation",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.GetOperation(ctx, "failover-web-1-3") },
			respBody:   op,
			want:       request{Method: "GET", Path: "/v1/operations/failover-web-1-3"},
			wantResult: &op,
		},
		{
			name:       "ClusterCheck",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ClusterCheck(ctx) },
			respBody:   check,
			want:       request{Method: "GET", Path: "/v1/cluster/check"},
			wantResult: &check,
		},
		{
			name: "ClusterCapacity",
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ClusterCapacity(ctx, api.Resources{CPUs: 1, Memory: 2 << 30, Disk: 20 << 30})
			},
			respBody:   capacity,
			want:       request{Method: "GET", Path: "/v1/cluster/capacity", Query: "size=1cpu%2C2G%2C20G"},
			wantResult: &capacity,
		},
		{
			name:       "ClusterRebalance",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ClusterRebalance(ctx, 5) },
			respBody:   plan,
			want:       request{Method: "GET", Path: "/v1/cluster/rebalance", Query: "maxMoves=5"},
			wantResult: &plan,
		},
		{
			name:       "ClusterRebalance without a limit, empty plan",
			call:       func(ctx context.Context, c *Client) (any, error) { return c.ClusterRebalance(ctx, 0) },
			respBody:   map[string]any{"scoreBefore": 0.5, "scoreAfter": 0.5, "moves": nil},
			want:       request{Method: "GET", Path: "/v1/cluster/rebalance"},
			wantResult: &scheduler.Plan{ScoreBefore: 0.5, ScoreAfter: 0.5, Moves: []scheduler.Move{}},
		},
		{
			name: "PatchNode",
			call: func(ctx context.Context, c *Client) (any, error) {
				r1 := "r1"
				return c.PatchNode(ctx, "n1", api.NodePatch{Labels: map[string]*string{"rack": &r1, "zone": nil}})
			},
			respBody:   node,
			want:       request{Method: "PATCH", Path: "/v1/nodes/n1", ContentType: "application/json", Body: `{"labels":{"rack":"r1","zone":null}}`},
			wantResult: &node,
		},
		{
			name: "unknown response fields are ignored",
			call: func(ctx context.Context, c *Client) (any, error) { return c.Version(ctx) },
			respBody: map[string]any{
				"version": "v2", "goVersion": "go1.30", "commit": "abc",
			},
			want:       request{Method: "GET", Path: "/v1/version"},
			wantResult: &api.Version{Version: "v2", GoVersion: "go1.30"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan request, 1)
			_, c := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				got <- request{
					Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
					Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
					Body: strings.TrimSpace(string(body)),
				}
				status := tc.status
				if status == 0 {
					status = http.StatusOK
				}
				if tc.respBody == nil {
					w.WriteHeader(status)
					return
				}
				writeJSON(w, status, tc.respBody)
			}))
			res, err := tc.call(context.Background(), c)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			req := <-got
			want := tc.want
			want.Auth = "Bearer " + testToken
			if req != want {
				t.Errorf("request = %+v, want %+v", req, want)
			}
			if res == nil && tc.wantResult == nil {
				return
			}
			if !reflect.DeepEqual(res, tc.wantResult) {
				t.Errorf("result = %#v, want %#v", res, tc.wantResult)
			}
		})
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestEmptyNameRefused(t *testing.T) {
	t.Parallel()
	c, err := New(Config{Server: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"GetInstance":    func() error { _, err := c.GetInstance(ctx, ""); return err },
		"StartInstance":  func() error { _, err := c.StartInstance(ctx, "", ""); return err },
		"DeleteInstance": func() error { _, _, err := c.DeleteInstance(ctx, "", "", false); return err },
		"UpdateInstance": func() error { _, err := c.UpdateInstance(ctx, &api.Instance{}); return err },
		"DeleteNode":     func() error { return c.DeleteNode(ctx, "", false) },
		"GetImage":       func() error { _, err := c.GetImage(ctx, ""); return err },
		"DeleteImage":    func() error { return c.DeleteImage(ctx, "") },
		"UploadImage":    func() error { _, err := c.UploadImage(ctx, "", strings.NewReader("x"), 1, nil); return err },
		"GetNetwork":     func() error { _, err := c.GetNetwork(ctx, ""); return err },
		"DeleteNetwork":  func() error { return c.DeleteNetwork(ctx, "") },
		"GetOperation":   func() error { _, err := c.GetOperation(ctx, ""); return err },
		"StartOn":        func() error { _, err := c.StartInstanceOn(ctx, "", "n1"); return err },
		"InstanceLogs":   func() error { _, err := c.InstanceLogs(ctx, "", 0); return err },
		"Console":        func() error { _, err := c.Console(ctx, ""); return err },
		"PatchNode":      func() error { _, err := c.PatchNode(ctx, "", api.NodePatch{}); return err },
	}
	for name, call := range calls {
		if err := call(); err == nil || !strings.Contains(err.Error(), "name is empty") {
			t.Errorf("%s(\"\") error = %v, want \"name is empty\"", name, err)
		}
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		status       int
		body         string
		want         APIError
		wantMsg      string
		wantNotFound bool
		wantConflict bool
		wantUnauth   bool
	}{
		{
			name:    "invalid with field",
			status:  400,
			body:    `{"error":{"code":"invalid","message":"must be between 16M and 16T (e.g. 256M), got 8.0M","field":"spec.memory"}}`,
			want:    APIError{Status: 400, Code: "invalid", Message: "must be between 16M and 16T (e.g. 256M), got 8.0M", Field: "spec.memory"},
			wantMsg: "spec.memory: must be between 16M and 16T (e.g. 256M), got 8.0M (invalid)",
		},
		{
			name:         "not found",
			status:       404,
			body:         `{"error":{"code":"not_found","message":"instance \"x\" not found"}}`,
			want:         APIError{Status: 404, Code: "not_found", Message: `instance "x" not found`},
			wantMsg:      `instance "x" not found (not_found)`,
			wantNotFound: true,
		},
		{
			name:         "conflict",
			status:       409,
			body:         `{"error":{"code":"conflict","message":"resourceVersion 7 is stale"}}`,
			want:         APIError{Status: 409, Code: "conflict", Message: "resourceVersion 7 is stale"},
			wantMsg:      "resourceVersion 7 is stale (conflict)",
			wantConflict: true,
		},
		{
			name:         "already exists",
			status:       409,
			body:         `{"error":{"code":"already_exists","message":"instance \"x\" already exists"}}`,
			want:         APIError{Status: 409, Code: "already_exists", Message: `instance "x" already exists`},
			wantMsg:      `instance "x" already exists (already_exists)`,
			wantConflict: true,
		},
		{
			name:       "unauthorized",
			status:     401,
			body:       `{"error":{"code":"unauthorized","message":"bad token"}}`,
			want:       APIError{Status: 401, Code: "unauthorized", Message: "bad token"},
			wantMsg:    "bad token (unauthorized)",
			wantUnauth: true,
		},
		{
			name:    "missing code derived from status",
			status:  503,
			body:    `{"error":{"message":"not leader yet"}}`,
			want:    APIError{Status: 503, Code: "unavailable", Message: "not leader yet"},
			wantMsg: "not leader yet (unavailable)",
		},
		{
			name:    "HTML from a proxy",
			status:  502,
			body:    "<html>Bad \x1b[31mGateway</html>\nmore",
			want:    APIError{Status: 502, Code: "internal", Message: "server answered 502 Bad Gateway: <html>Bad [31mGateway</html>"},
			wantMsg: "server answered 502 Bad Gateway: <html>Bad [31mGateway</html> (internal)",
		},
		{
			name:         "plain 404 from a mux",
			status:       404,
			body:         "404 page not found\n",
			want:         APIError{Status: 404, Code: "not_found", Message: "server answered 404 Not Found: 404 page not found"},
			wantMsg:      "server answered 404 Not Found: 404 page not found (not_found)",
			wantNotFound: true,
		},
		{
			name:    "empty body",
			status:  500,
			want:    APIError{Status: 500, Code: "internal", Message: "server answered 500 Internal Server Error"},
			wantMsg: "server answered 500 Internal Server Error (internal)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			_, err := c.GetInstance(context.Background(), "x")
			var aerr *APIError
			if !errors.As(err, &aerr) {
				t.Fatalf("GetInstance error = %v (%T), want *APIError", err, err)
			}
			if *aerr != tc.want {
				t.Errorf("APIError = %+v, want %+v", *aerr, tc.want)
			}
			if got := err.Error(); got != tc.wantMsg {
				t.Errorf("Error() = %q, want %q", got, tc.wantMsg)
			}
			if got := IsNotFound(err); got != tc.wantNotFound {
				t.Errorf("IsNotFound = %v, want %v", got, tc.wantNotFound)
			}
			if got := IsConflict(err); got != tc.wantConflict {
				t.Errorf("IsConflict = %v, want %v", got, tc.wantConflict)
			}
			if got := IsUnauthorized(err); got != tc.wantUnauth {
				t.Errorf("IsUnauthorized = %v, want %v", got, tc.wantUnauth)
			}
		})
	}
}

func TestIsHelpersOnOtherErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{nil, errors.New("plain"), context.Canceled} {
		if IsNotFound(err) || IsConflict(err) || IsUnauthorized(err) {
			t.Errorf("helpers true for %v", err)
		}
	}
	wrapped := errors.Join(errors.New("ctx"), &APIError{Status: 404})
	if !IsNotFound(wrapped) {
		t.Errorf("IsNotFound(wrapped 404) = false, want true")
	}
}

func TestClusterSnapshot(t *testing.T) {
	t.Parallel()
	doc := "{\n  \"version\": 1,\n  \"nodes\": []\n}\n"
	_, c := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/v1/cluster/snapshot" || r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, doc)
	}))
	got, err := c.ClusterSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != doc {
		t.Fatalf("snapshot = %q, want the document unchanged %q", got, doc)
	}
	_, bad := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "not json") }))
	if _, err := bad.ClusterSnapshot(context.Background()); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("a non-JSON answer: %v", err)
	}
}
