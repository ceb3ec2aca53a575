package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// joinTimeout bounds one join attempt.
const joinTimeout = 30 * time.Second

// identity returns the agent's mTLS client configuration, joining the
// cluster first if this node has no certificate yet.
func (a *Agent) identity(ctx context.Context) (*tls.Config, error) {
	if !a.joined {
		if err := a.join(ctx); err != nil {
			return nil, err
		}
		a.joined = true
	}
	return a.loadTLS()
}

// loadTLS reads the saved key, certificate and CA and checks that the
// certificate is this node's.
func (a *Agent) loadTLS() (*tls.Config, error) {
	read := func(name string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(a.stateDir, name))
		if err != nil {
			return nil, fmt.Errorf("load node identity: %w", err)
		}
		return data, nil
	}
	certPEM, err := read(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := read(caFile)
	if err != nil {
		return nil, err
	}
	cfg, err := pki.AgentTLSConfig(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("load node identity from %s: %w", a.stateDir, err)
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load node identity from %s: %w", a.stateDir, err)
	}
	node, err := pki.NodeFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("load node identity from %s: %w", a.stateDir, err)
	}
	if node != a.name {
		return nil, fmt.Errorf("load node identity from %s: %s is the certificate of node %q, but %s says %q",
			a.stateDir, certFile, node, nodeFile, a.name)
	}
	return cfg, nil
}

// join gets a node certificate with the join token and saves the identity.
// Network errors and 5xx answers are retried until ctx ends; a 4xx answer
// (token rejected, name taken) is returned with the server's message.
func (a *Agent) join(ctx context.Context) error {
	fingerprint, _, _, err := pki.ParseJoinToken(a.joinToken)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	pinned, err := pki.PinnedCATLSConfig(fingerprint, a.serverHost)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	keyPEM, csrPEM, err := pki.NewNodeKeyAndCSR(a.name)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	tr := newTransport(pinned, 10*time.Second)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	req := api.JoinRequest{Token: a.joinToken, Node: a.name, CSR: string(csrPEM)}
	var resp api.JoinResponse
	backoff := a.tune.retryMin
	for {
		a.log.Info("joining cluster", "server", a.serverURL)
		actx, cancel := context.WithTimeout(ctx, joinTimeout)
		err = doJSON(actx, client, http.MethodPost, a.serverURL+"/v1/join", req, &resp)
		cancel()
		if err == nil {
			break
		}
		if isPermanent(err) {
			return fmt.Errorf("join cluster at %s as node %q: %w", a.serverURL, a.name, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("join cluster at %s as node %q: %w (last error: %v)", a.serverURL, a.name, ctx.Err(), err)
		}
		a.log.Warn("join failed; retrying", "server", a.serverURL, "err", err, "in", backoff)
		if !sleepCtx(ctx, backoff) {
			return fmt.Errorf("join cluster at %s as node %q: %w (last error: %v)", a.serverURL, a.name, ctx.Err(), err)
		}
		backoff = nextBackoff(backoff, a.tune.retryMax)
	}

	certPEM, caPEM := []byte(resp.Certificate), []byte(resp.CA)
	if err := a.checkJoinResponse(fingerprint, certPEM, keyPEM, caPEM); err != nil {
		return fmt.Errorf("join cluster at %s as node %q: %w", a.serverURL, a.name, err)
	}
	if err := a.saveIdentity(certPEM, keyPEM, caPEM); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	a.log.Info("joined cluster", "server", a.serverURL)
	return nil
}

// checkJoinResponse checks that the CA is the one the token pins and that
// the certificate is this node's and matches its key.
func (a *Agent) checkJoinResponse(fingerprint string, certPEM, keyPEM, caPEM []byte) error {
	ca, err := pki.ParseCertificatePEM(caPEM)
	if err != nil {
		return fmt.Errorf("server sent a bad CA certificate: %w", err)
	}
	if got := pki.Fingerprint(ca); got != fingerprint {
		return fmt.Errorf("server sent CA %s, but the join token pins %s", got, fingerprint)
	}
	if _, err := pki.AgentTLSConfig(certPEM, keyPEM, caPEM); err != nil {
		return fmt.Errorf("server sent an unusable certificate: %w", err)
	}
	cert, err := pki.ParseCertificatePEM(certPEM)
	if err != nil {
		return fmt.Errorf("server sent a bad certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := cert.Verify(opts); err != nil {
		return fmt.Errorf("server sent a certificate not issued by the cluster CA: %w", err)
	}
	node, err := pki.NodeFromCert(cert)
	if err != nil {
		return fmt.Errorf("server sent a bad certificate: %w", err)
	}
	if node != a.name {
		return fmt.Errorf("server sent a certificate for node %q", node)
	}
	return nil
}

// saveIdentity writes the identity files, node.crt last: its presence is
// what marks a joined node.
func (a *Agent) saveIdentity(certPEM, keyPEM, caPEM []byte) error {
	info, err := json.MarshalIndent(savedNode{Name: a.name, Server: a.serverURL}, "", "  ")
	if err != nil {
		return fmt.Errorf("save node identity: %w", err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{keyFile, keyPEM, 0o600},
		{caFile, caPEM, 0o644},
		{nodeFile, append(info, '\n'), 0o644},
		{certFile, certPEM, 0o644},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(a.stateDir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("save node identity: %w", err)
		}
	}
	return nil
}

// migrationTLSDir is where QEMU reads this host's credentials for live
// migrations, under the state directory.
const migrationTLSDir = "migration-tls"

// migrationTLS writes this host's identity where QEMU reads it and returns
// the TLS settings of a live migration: the guest's memory crosses the
// cluster network encrypted, between hosts that each prove themselves
// with their node certificate. target names the host the source sends to
// (its certificate must carry that name); "" on the target.
func (a *Agent) migrationTLS(target string) (*vmm.MigrationTLS, error) {
	var pems [3][]byte
	for i, name := range []string{caFile, certFile, keyFile} {
		data, err := os.ReadFile(filepath.Join(a.stateDir, name))
		if err != nil {
			return nil, fmt.Errorf("migration tls: node identity: %w", err)
		}
		pems[i] = data
	}
	dir := filepath.Join(a.stateDir, migrationTLSDir)
	if err := vmm.WriteMigrationTLS(dir, pems[0], pems[1], pems[2]); err != nil {
		return nil, err
	}
	return &vmm.MigrationTLS{Dir: dir, Hostname: target}, nil
}
