package pki

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs one TLS connection over loopback TCP between a server with
// scfg and a client with ccfg. The server writes one byte after its
// handshake and the client reads it, so that a client certificate rejected
// by the server (which TLS 1.3 reports only after the client's handshake
// returns) shows up on both sides. It returns the server's view of the
// connection and each side's error.
func handshake(t *testing.T, scfg, ccfg *tls.Config) (state tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	type result struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, scfg)
		defer tc.Close()
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{'x'})
		done <- result{err: err, state: tc.ConnectionState()}
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, ccfg)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	tc.Close()
	r := <-done
	return r.state, r.err, clientErr
}

func TestServerTLSConfig(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	foreign := newTestCA(t, "foreign-ca")
	now := time.Now()
	serverCert, err := ca.IssueServerCert([]string{"ferry.test"}, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	scfg := ServerTLSConfig(serverCert, ca.Pool())

	goodCert, goodKey := newNodeCert(t, ca, "node-1", now, 0)
	foreignCert, foreignKey := newNodeCert(t, foreign, "node-1", now, 0)
	// Every cluster's CA might share a name; the TLS client then cannot tell
	// that its certificate is not the one the server asks for.
	sameName := newTestCA(t, "ferry-ca")
	sameNameCert, sameNameKey := newNodeCert(t, sameName, "node-1", now, 0)
	expiredCert, expiredKey := newNodeCert(t, ca, "node-1", now.Add(-48*time.Hour), time.Hour)

	tests := []struct {
		name     string
		certPEM  []byte // nil: a user client with no certificate
		keyPEM   []byte
		wantNode string // node the server sees; empty: none
		force    bool   // present the certificate even if its issuer is not among the server's CAs
		wantErr  string // expected server handshake error; empty: success
	}{
		{name: "agent with node certificate", certPEM: goodCert, keyPEM: goodKey, wantNode: "node-1"},
		{name: "user without certificate"},
		{
			name: "certificate from foreign CA", certPEM: foreignCert, keyPEM: foreignKey, force: true,
			wantErr: "certificate signed by unknown authority",
		},
		{
			name: "certificate from foreign CA with the same name", certPEM: sameNameCert, keyPEM: sameNameKey,
			wantErr: "certificate signed by unknown authority",
		},
		// crypto/tls withholds a certificate whose issuer the server did not
		// list; the connection is then anonymous, like a user's.
		{name: "certificate from foreign CA withheld by client", certPEM: foreignCert, keyPEM: foreignKey},
		{name: "expired node certificate", certPEM: expiredCert, keyPEM: expiredKey, wantErr: "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ccfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: "ferry.test"}
			if tc.certPEM != nil {
				agent, err := AgentTLSConfig(tc.certPEM, tc.keyPEM, ca.CertPEM())
				if err != nil {
					t.Fatalf("AgentTLSConfig: %v", err)
				}
				agent.ServerName = "ferry.test"
				if tc.force {
					cert := agent.Certificates[0]
					agent.Certificates = nil
					agent.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
						return &cert, nil
					}
				}
				ccfg = agent
			}
			state, serverErr, clientErr := handshake(t, scfg, ccfg)
			if tc.wantErr != "" {
				if serverErr == nil || !strings.Contains(serverErr.Error(), tc.wantErr) {
					t.Errorf("server handshake error = %v, want %q", serverErr, tc.wantErr)
				}
				if clientErr == nil {
					t.Error("client saw no error, want the server's rejection")
				}
				return
			}
			if serverErr != nil || clientErr != nil {
				t.Fatalf("handshake failed: server %v, client %v", serverErr, clientErr)
			}
			if state.Version != tls.VersionTLS13 {
				t.Errorf("version = %x, want TLS 1.3", state.Version)
			}
			if tc.wantNode == "" {
				if len(state.PeerCertificates) != 0 {
					t.Errorf("server saw %d client certificates, want none", len(state.PeerCertificates))
				}
				return
			}
			if len(state.VerifiedChains) == 0 {
				t.Fatal("server did not verify the client certificate")
			}
			if node, err := NodeFromCert(state.PeerCertificates[0]); err != nil || node != tc.wantNode {
				t.Errorf("NodeFromCert(peer) = %q, %v; want %q", node, err, tc.wantNode)
			}
		})
	}
}

func TestServerTLSConfigRejectsTLS12(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	serverCert, err := ca.IssueServerCert(nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12}
	_, serverErr, _ := handshake(t, ServerTLSConfig(serverCert, ca.Pool()), ccfg)
	if serverErr == nil {
		t.Error("TLS 1.2 client accepted, want rejection")
	}
}

// TestAgentToAgent checks the replication link: both ends use AgentTLSConfig,
// the dialer names the peer node, and the listener identifies the dialer.
func TestAgentToAgent(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	foreign := newTestCA(t, "foreign-ca")
	now := time.Now()
	aCert, aKey := newNodeCert(t, ca, "node-a", now, 0)
	bCert, bKey := newNodeCert(t, ca, "node-b", now, 0)
	fCert, fKey := newNodeCert(t, foreign, "node-a", now, 0)
	agent := func(cert, key []byte) *tls.Config {
		cfg, err := AgentTLSConfig(cert, key, ca.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	tests := []struct {
		name       string
		client     *tls.Config
		serverName string
		wantNode   string
		wantErr    bool
	}{
		{name: "peer node", client: agent(aCert, aKey), serverName: "node-b", wantNode: "node-a"},
		{name: "wrong peer name", client: agent(aCert, aKey), serverName: "node-c", wantErr: true},
		{name: "no client certificate", client: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}, serverName: "node-b", wantErr: true},
		{name: "foreign client certificate", client: agent(fCert, fKey), serverName: "node-b", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ccfg := tc.client.Clone()
			ccfg.ServerName = tc.serverName
			state, serverErr, clientErr := handshake(t, agent(bCert, bKey), ccfg)
			if tc.wantErr {
				if serverErr == nil && clientErr == nil {
					t.Fatal("handshake succeeded, want failure")
				}
				return
			}
			if serverErr != nil || clientErr != nil {
				t.Fatalf("handshake failed: server %v, client %v", serverErr, clientErr)
			}
			if node, err := NodeFromCert(state.PeerCertificates[0]); err != nil || node != tc.wantNode {
				t.Errorf("NodeFromCert(peer) = %q, %v; want %q", node, err, tc.wantNode)
			}
		})
	}
}

func TestAgentTLSConfigErrors(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	cert, key := newNodeCert(t, ca, "node-1", time.Now(), 0)
	_, otherKey, err := NewNodeKeyAndCSR("node-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		cert, key, caPM []byte
	}{
		{name: "no CA", cert: cert, key: key, caPM: []byte("junk")},
		{name: "key of another node", cert: cert, key: otherKey, caPM: ca.CertPEM()},
		{name: "no certificate", key: key, caPM: ca.CertPEM()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := AgentTLSConfig(tc.cert, tc.key, tc.caPM); err == nil || !strings.HasPrefix(err.Error(), "pki: ") {
				t.Errorf("AgentTLSConfig error = %v, want a pki: error", err)
			}
		})
	}
}

func TestPinnedCATLSConfig(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	foreign := newTestCA(t, "foreign-ca")
	now := time.Now()
	serverCert, err := ca.IssueServerCert([]string{"ferry.test", "192.0.2.10"}, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An impostor whose own leaf comes from a foreign CA but who appends the
	// real (public) CA certificate to its chain.
	impostor, err := foreign.IssueServerCert([]string{"ferry.test"}, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	impostor.Certificate = append(impostor.Certificate, ca.Certificate().Raw)
	// A node of the cluster: its certificate is valid for server
	// authentication, but only for its own node name.
	nodeCertPEM, nodeKeyPEM := newNodeCert(t, ca, "node-1", now, 0)
	nodeCert, err := tls.X509KeyPair(append(nodeCertPEM, ca.CertPEM()...), nodeKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The server certificate without the CA after it.
	leafOnly := serverCert
	leafOnly.Certificate = leafOnly.Certificate[:1]
	expired, err := ca.IssueServerCert(nil, now.Add(-48*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		server      tls.Certificate
		fingerprint string
		serverName  string
		wantErr     string // empty: success
		wantIs      error
	}{
		{name: "right fingerprint", server: serverCert, fingerprint: ca.Fingerprint(), serverName: "ferry.test"},
		{name: "dialled by IP", server: serverCert, fingerprint: ca.Fingerprint(), serverName: "192.0.2.10"},
		{name: "localhost", server: serverCert, fingerprint: ca.Fingerprint(), serverName: "127.0.0.1"},
		{name: "bare hex from token", server: serverCert, fingerprint: strings.TrimPrefix(ca.Fingerprint(), "sha256:"), serverName: "ferry.test"},
		{name: "wrong fingerprint", server: serverCert, fingerprint: foreign.Fingerprint(), serverName: "ferry.test", wantIs: ErrFingerprintMismatch},
		{name: "impostor appending the real CA", server: impostor, fingerprint: ca.Fingerprint(), serverName: "ferry.test", wantErr: "unknown authority"},
		{name: "wrong host name", server: serverCert, fingerprint: ca.Fingerprint(), serverName: "evil.test", wantErr: "certificate is valid for"},
		{name: "wrong IP", server: serverCert, fingerprint: ca.Fingerprint(), serverName: "192.0.2.11", wantErr: "certificate is valid for"},
		{name: "node certificate for a server address", server: nodeCert, fingerprint: ca.Fingerprint(), serverName: "ferry.test", wantErr: "certificate is valid for"},
		{name: "chain without CA", server: leafOnly, fingerprint: ca.Fingerprint(), serverName: "ferry.test", wantIs: ErrFingerprintMismatch},
		{name: "expired server certificate", server: expired, fingerprint: ca.Fingerprint(), serverName: "localhost", wantErr: "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ccfg, err := PinnedCATLSConfig(tc.fingerprint, tc.serverName)
			if err != nil {
				t.Fatalf("PinnedCATLSConfig: %v", err)
			}
			scfg := ServerTLSConfig(tc.server, ca.Pool())
			_, _, clientErr := handshake(t, scfg, ccfg)
			if tc.wantErr == "" && tc.wantIs == nil {
				if clientErr != nil {
					t.Fatalf("join handshake: %v", clientErr)
				}
				return
			}
			if clientErr == nil {
				t.Fatal("join handshake succeeded, want failure")
			}
			if tc.wantIs != nil && !errors.Is(clientErr, tc.wantIs) {
				t.Errorf("error = %v, want errors.Is %v", clientErr, tc.wantIs)
			}
			if tc.wantErr != "" && !strings.Contains(clientErr.Error(), tc.wantErr) {
				t.Errorf("error = %v, want it to mention %q", clientErr, tc.wantErr)
			}
		})
	}
}

func TestPinnedCATLSConfigClock(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	serverCert, err := ca.IssueServerCert(nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := PinnedCATLSConfig(ca.Fingerprint(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ccfg.Time = func() time.Time { return time.Now().Add(2 * DefaultServerValidity) }
	_, _, clientErr := handshake(t, ServerTLSConfig(serverCert, ca.Pool()), ccfg)
	if clientErr == nil || !strings.Contains(clientErr.Error(), "expired") {
		t.Errorf("handshake with a clock two years ahead: %v, want an expiry error", clientErr)
	}
}

func TestPinnedCATLSConfigErrors(t *testing.T) {
	t.Parallel()
	valid := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name, fingerprint, serverName string
	}{
		{name: "empty fingerprint", serverName: "ferry.test"},
		{name: "short fingerprint", fingerprint: "sha256:abcd", serverName: "ferry.test"},
		{name: "non-hex fingerprint", fingerprint: "sha256:" + strings.Repeat("zz", 32), serverName: "ferry.test"},
		{name: "other hash", fingerprint: "sha1:" + strings.Repeat("ab", 32), serverName: "ferry.test"},
		{name: "empty server name", fingerprint: valid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := PinnedCATLSConfig(tc.fingerprint, tc.serverName); err == nil || !strings.HasPrefix(err.Error(), "pki: ") {
				t.Errorf("PinnedCATLSConfig(%q, %q) error = %v, want a pki: error", tc.fingerprint, tc.serverName, err)
			}
		})
	}
}
