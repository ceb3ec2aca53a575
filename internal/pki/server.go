package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// serverCommonName is the subject of every server certificate. Clients check
// the SANs, never the common name.
const serverCommonName = "ferry-server"

// maxHostnameLen is the longest DNS name (RFC 1035, section 2.3.4).
const maxHostnameLen = 253

// IssueServerCert issues a certificate for a ferry server with a fresh ECDSA
// P-256 key, for server authentication only. Each entry of hosts is an IP
// address (IPv6 optionally in brackets) or a DNS name; "localhost",
// 127.0.0.1 and ::1 are always included. The certificate is valid from
// shortly before now for validity, or [DefaultServerValidity] if validity is
// zero, and never beyond the CA's own expiry.
//
// The returned chain is the leaf followed by the CA certificate, so that a
// joining agent can find the CA whose fingerprint it pins (see
// [PinnedCATLSConfig]). Leaf is set.
func (ca *CA) IssueServerCert(hosts []string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if validity < 0 {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: negative validity %s", validity)
	}
	if validity == 0 {
		validity = DefaultServerValidity
	}
	dns, ips, err := splitHosts(append([]string{"localhost", "127.0.0.1", "::1"}, hosts...))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:  pkix.Name{CommonName: serverCommonName, Organization: []string{ServerOrganization}},
		KeyUsage: x509.KeyUsageDigitalSignature,
		// ClientAuth too: a server calls agents (console, logs) with it.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	leaf, err := ca.issue(tmpl, key.Public(), now, validity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// ServerOrganization is the subject O of every server certificate; agents
// accept calls only from certificates that carry it.
const ServerOrganization = "ferry:servers"

// IsServerCert reports whether cert is a ferry server's certificate (it
// must already have been verified against the cluster CA).
func IsServerCert(cert *x509.Certificate) bool {
	if cert == nil || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != ServerOrganization {
		return false
	}
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			return true
		}
	}
	return false
}

// splitHosts sorts hosts into DNS names and IP addresses, dropping
// duplicates and keeping the order of first appearance.
func splitHosts(hosts []string) (dns []string, ips []net.IP, err error) {
	seen := make(map[string]bool)
	for _, h := range hosts {
		host := strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[")
		if addr, perr := netip.ParseAddr(host); perr == nil {
			if addr.Zone() != "" {
				return nil, nil, fmt.Errorf("host %q: an IP address in a certificate cannot have a zone", h)
			}
			if !seen[addr.String()] {
				seen[addr.String()] = true
				ips = append(ips, net.IP(addr.AsSlice()))
			}
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(h, "."))
		if err := checkHostname(name); err != nil {
			return nil, nil, fmt.Errorf("host %q: not an IP address or DNS name: %w", h, err)
		}
		if !seen[name] {
			seen[name] = true
			dns = append(dns, name)
		}
	}
	return dns, ips, nil
}

// checkHostname accepts a lowercase DNS name: dot-separated labels of
// letters, digits and '-', none starting or ending with '-'.
func checkHostname(name string) error {
	if name == "" || len(name) > maxHostnameLen {
		return fmt.Errorf("length %d, want 1 to %d", len(name), maxHostnameLen)
	}
	for label := range strings.SplitSeq(name, ".") {
		if err := checkLabel(label); err != nil {
			return err
		}
	}
	return nil
}

// TLSCertificatePEM encodes a certificate as returned by [CA.IssueServerCert]
// for storage: the whole chain as CERTIFICATE blocks and the key as PKCS #8.
// [crypto/tls.X509KeyPair] reads them back.
func TLSCertificatePEM(cert tls.Certificate) (chainPEM, keyPEM []byte, err error) {
	if len(cert.Certificate) == 0 {
		return nil, nil, errors.New("pki: encode TLS certificate: empty chain")
	}
	for _, der := range cert.Certificate {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encode TLS certificate: %w", err)
	}
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}
