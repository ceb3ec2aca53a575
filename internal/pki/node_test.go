package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"
)

// csrFor returns a PEM CSR with common name cn signed by key.
func csrFor(t testing.TB, cn string, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn},
	}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// mutateDER decodes a PEM block, applies f to its DER bytes and re-encodes it.
func mutateDER(t testing.TB, pemBytes []byte, f func([]byte)) []byte {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("mutateDER: no PEM block")
	}
	der := bytes.Clone(block.Bytes)
	f(der)
	return pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der})
}

func TestNewNodeKeyAndCSR(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		node    string
		wantErr bool
	}{
		{name: "simple", node: "node-1"},
		{name: "63 characters", node: strings.Repeat("a", 63)},
		{name: "empty", node: "", wantErr: true},
		{name: "64 characters", node: strings.Repeat("a", 64), wantErr: true},
		{name: "uppercase", node: "Node-1", wantErr: true},
		{name: "leading dash", node: "-node", wantErr: true},
		{name: "trailing dash", node: "node-", wantErr: true},
		{name: "dot", node: "node.example", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			keyPEM, csrPEM, err := NewNodeKeyAndCSR(tc.node)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("NewNodeKeyAndCSR(%q) = nil error, want error", tc.node)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewNodeKeyAndCSR(%q): %v", tc.node, err)
			}
			key, err := parsePrivateKeyPEM(keyPEM)
			if err != nil {
				t.Fatalf("key: %v", err)
			}
			if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("key is %T, want ECDSA P-256", key)
			}
			block, _ := pem.Decode(csrPEM)
			csr, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Fatalf("CSR: %v", err)
			}
			if csr.Subject.CommonName != tc.node {
				t.Errorf("CSR common name = %q, want %q", csr.Subject.CommonName, tc.node)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
		})
	}
}

func TestSignNodeCSR(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	now := time.Now()

	_, good, err := NewNodeKeyAndCSR("node-a")
	if err != nil {
		t.Fatal(err)
	}
	// The last DER byte is inside the signature value; flipping it keeps the
	// CSR parseable but breaks the signature.
	badSig := mutateDER(t, good, func(der []byte) { der[len(der)-1] ^= 0x01 })
	// Rewriting the common name (same length) breaks the signature too: an
	// intercepted CSR cannot be reused for another node.
	renamed := mutateDER(t, good, func(der []byte) {
		i := bytes.Index(der, []byte("node-a"))
		if i < 0 {
			t.Fatal("common name not found in CSR DER")
		}
		copy(der[i:], "node-b")
	})
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _ := newNodeCert(t, ca, "node-a", now, 0)

	tests := []struct {
		name     string
		csr      []byte
		node     string
		validity time.Duration
		wantErr  string // empty: success
	}{
		{name: "valid", csr: good, node: "node-a"},
		{name: "valid with validity", csr: good, node: "node-a", validity: time.Hour},
		{name: "RSA 2048", csr: csrFor(t, "node-a", rsa2048), node: "node-a"},
		{name: "ECDSA P-384", csr: csrFor(t, "node-a", p384), node: "node-a"},
		{name: "common name mismatch", csr: good, node: "node-b", wantErr: "does not match node"},
		{name: "tampered signature", csr: badSig, node: "node-a", wantErr: "bad signature"},
		{name: "tampered common name", csr: renamed, node: "node-b", wantErr: "bad signature"},
		{name: "RSA 1024", csr: csrFor(t, "node-a", rsa1024), node: "node-a", wantErr: "RSA key of 1024 bits"},
		{name: "Ed25519", csr: csrFor(t, "node-a", edKey), node: "node-a", wantErr: "unsupported public key type"},
		{name: "invalid node name", csr: csrFor(t, "Node_A", p384), node: "Node_A", wantErr: "node name"},
		{name: "negative validity", csr: good, node: "node-a", validity: -time.Hour, wantErr: "negative validity"},
		{name: "garbage", csr: []byte("hello"), node: "node-a", wantErr: "no PEM block"},
		{name: "certificate instead of CSR", csr: certPEM, node: "node-a", wantErr: "PEM block is \"CERTIFICATE\""},
		{
			name:    "corrupt DER",
			csr:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 0x02, 0x01}}),
			node:    "node-a",
			wantErr: "asn1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certPEM, serial, err := ca.SignNodeCSR(tc.csr, tc.node, now, tc.validity)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("SignNodeCSR(%s) = nil error, want %q", tc.name, tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "pki: sign node CSR") || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("SignNodeCSR error = %q, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("SignNodeCSR: %v", err)
			}
			cert, err := ParseCertificatePEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if got := SerialString(cert); got != serial {
				t.Errorf("serial = %q, want SerialString(cert) = %q", serial, got)
			}
			if got, err := NodeFromCert(cert); err != nil || got != tc.node {
				t.Errorf("NodeFromCert = %q, %v; want %q", got, err, tc.node)
			}
			if !slices.Equal(cert.DNSNames, []string{tc.node}) || len(cert.IPAddresses) != 0 {
				t.Errorf("SANs = %q %v, want only DNS %q", cert.DNSNames, cert.IPAddresses, tc.node)
			}
			wantEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
			if !slices.Equal(cert.ExtKeyUsage, wantEKU) {
				t.Errorf("ExtKeyUsage = %v, want %v", cert.ExtKeyUsage, wantEKU)
			}
			validity := tc.validity
			if validity == 0 {
				validity = DefaultNodeValidity
			}
			if want := now.Add(validity).Truncate(time.Second); !cert.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %s, want %s", cert.NotAfter, want)
			}
			for _, eku := range wantEKU {
				if _, err := cert.Verify(x509.VerifyOptions{
					Roots: ca.Pool(), DNSName: tc.node, CurrentTime: now,
					KeyUsages: []x509.ExtKeyUsage{eku},
				}); err != nil {
					t.Errorf("verify for %v: %v", eku, err)
				}
			}
		})
	}
}

func TestSignNodeCSRSerialsDiffer(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	_, csrPEM, err := NewNodeKeyAndCSR("node-a")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	for range 20 {
		_, serial, err := ca.SignNodeCSR(csrPEM, "node-a", time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if seen[serial] {
			t.Fatalf("serial %s issued twice", serial)
		}
		seen[serial] = true
	}
}

func TestNodeFromCert(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	server, err := ca.IssueServerCert(nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	withSubject := func(cn string, org ...string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: org}}
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    string
		wantErr bool
	}{
		{name: "node", cert: withSubject("node-1", NodeOrganization), want: "node-1"},
		{name: "other organizations too", cert: withSubject("node-1", "acme", NodeOrganization), want: "node-1"},
		{name: "nil", cert: nil, wantErr: true},
		{name: "server certificate", cert: server.Leaf, wantErr: true},
		{name: "no organization", cert: withSubject("node-1"), wantErr: true},
		{name: "uppercase", cert: withSubject("Node-1", NodeOrganization), wantErr: true},
		{name: "empty common name", cert: withSubject("", NodeOrganization), wantErr: true},
		{name: "64 characters", cert: withSubject(strings.Repeat("n", 64), NodeOrganization), wantErr: true},
		{name: "DNS name, not label", cert: withSubject("node-1.example.com", NodeOrganization), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := NodeFromCert(tc.cert)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("NodeFromCert = %q, nil error; want error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("NodeFromCert = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
