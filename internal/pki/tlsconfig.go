package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrFingerprintMismatch is returned by a handshake configured by
// [PinnedCATLSConfig] when no CA certificate in the server's chain has the
// pinned fingerprint.
var ErrFingerprintMismatch = errors.New("pki: server's CA does not match the pinned fingerprint")

// ServerTLSConfig returns the TLS configuration of a ferry server: TLS 1.3
// only, presenting serverCert, and verifying a client certificate against ca
// if the client offers one. Users connect without a certificate and
// authenticate with a bearer token; agents connect with their node
// certificate, whose node the handler reads with [NodeFromCert]. A client
// certificate that does not verify (foreign CA, expired, not for client
// authentication) fails the handshake.
func ServerTLSConfig(serverCert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca,
	}
}

// AgentTLSConfig returns the TLS configuration of an agent from its node
// certificate and key and the CA certificate, all PEM-encoded (certPEM may
// hold a chain). It is TLS 1.3 only, presents the node certificate, and
// trusts only the CA.
//
// As a client (to a server, or to a peer agent) it verifies the server's
// certificate against the CA and the name dialled, as crypto/tls does: set
// ServerName to the server's host, or to the peer's node name when dialling
// another agent by IP, since a node certificate's only SAN is its node name.
// As a server (the replication link) it requires and verifies a client
// certificate from the CA; identify the peer with [NodeFromCert].
func AgentTLSConfig(certPEM, keyPEM, caPEM []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: agent TLS config: node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("pki: agent TLS config: no CA certificate found in CA PEM")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// PinnedCATLSConfig returns a client TLS configuration for the join call,
// made before the agent has the CA certificate. It trusts no system roots and
// no CA but the one whose fingerprint is caFingerprint ("sha256:" and 64 hex
// digits, or the bare hex digits carried in a join token).
//
// During the handshake it looks in the server's chain for a CA certificate
// with that fingerprint (servers send it after their leaf, see
// [CA.IssueServerCert]), then verifies the leaf against it as the only root:
// a complete chain verification at the current time, for server
// authentication, with serverName among the leaf's SANs. serverName is the
// host the client dials (a DNS name or an IP address, without a port); it is
// a parameter because crypto/tls does not report a dialled IP address to the
// verification callback (IPs are not sent in SNI). If no CA in the chain has
// the fingerprint, the handshake fails with an error wrapping
// [ErrFingerprintMismatch].
//
// The configuration sets InsecureSkipVerify only to replace crypto/tls's
// verification with this one, which runs in VerifyConnection, so it also
// covers resumed sessions. The current time comes from the returned
// config's Time field if it is set before use, else from time.Now.
func PinnedCATLSConfig(caFingerprint, serverName string) (*tls.Config, error) {
	fp, err := normalizeFingerprint(caFingerprint)
	if err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(strings.TrimSuffix(serverName, "]"), "[")
	if host == "" {
		return nil, errors.New("pki: pinned CA TLS config: empty server name")
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: host,
		// An empty pool: should InsecureSkipVerify ever be dropped, every
		// handshake fails rather than falls back to the system roots.
		RootCAs:            x509.NewCertPool(),
		InsecureSkipVerify: true,
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		now := time.Now()
		if cfg.Time != nil {
			now = cfg.Time()
		}
		return verifyPinned(cs.PeerCertificates, fp, host, now)
	}
	return cfg, nil
}

// verifyPinned verifies that chain[0] is a server certificate for host,
// issued by a CA certificate in chain[1:] whose fingerprint is fp.
func verifyPinned(chain []*x509.Certificate, fp, host string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("pki: server presented no certificate")
	}
	var ca *x509.Certificate
	var offered []string
	for _, c := range chain[1:] {
		if !c.BasicConstraintsValid || !c.IsCA {
			continue
		}
		f := Fingerprint(c)
		if f == fp {
			ca = c
			break
		}
		offered = append(offered, f)
	}
	if ca == nil {
		if len(offered) == 0 {
			return fmt.Errorf("%w: the server sent no CA certificate (pinned %s)", ErrFingerprintMismatch, fp)
		}
		return fmt.Errorf("%w: pinned %s, server sent %s", ErrFingerprintMismatch, fp, strings.Join(offered, ", "))
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:       roots,
		DNSName:     host,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("pki: verify server certificate against pinned CA: %w", err)
	}
	return nil
}
