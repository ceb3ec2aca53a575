package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// newTestCA returns a CA valid from now for the default period.
func newTestCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, time.Now(), 0)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

// newNodeCert returns a node certificate and key issued by ca.
func newNodeCert(t testing.TB, ca *CA, node string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, csrPEM, err := NewNodeKeyAndCSR(node)
	if err != nil {
		t.Fatalf("NewNodeKeyAndCSR(%q): %v", node, err)
	}
	certPEM, _, err = ca.SignNodeCSR(csrPEM, node, now, validity)
	if err != nil {
		t.Fatalf("SignNodeCSR(%q): %v", node, err)
	}
	return certPEM, keyPEM
}

func TestNewCA(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		cn           string
		validity     time.Duration
		wantNotAfter time.Time
		wantErr      bool
	}{
		{name: "default validity", cn: "ferry-ca", wantNotAfter: now.Add(DefaultCAValidity)},
		{name: "explicit validity", cn: "ferry-ca", validity: 48 * time.Hour, wantNotAfter: now.Add(48 * time.Hour)},
		{name: "empty common name", cn: " ", wantErr: true},
		{name: "negative validity", cn: "ferry-ca", validity: -time.Hour, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca, err := NewCA(tc.cn, now, tc.validity)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("NewCA(%q, %s) = nil error, want error", tc.cn, tc.validity)
				}
				if !strings.HasPrefix(err.Error(), "pki: ") {
					t.Errorf("error %q lacks the pki: prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewCA: %v", err)
			}
			c := ca.Certificate()
			if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero {
				t.Errorf("IsCA=%v BasicConstraintsValid=%v MaxPathLenZero=%v, want all true",
					c.IsCA, c.BasicConstraintsValid, c.MaxPathLenZero)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
				t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
			}
			if c.PublicKeyAlgorithm != x509.ECDSA {
				t.Errorf("PublicKeyAlgorithm = %v, want ECDSA", c.PublicKeyAlgorithm)
			}
			if !c.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("NotAfter = %s, want %s", c.NotAfter, tc.wantNotAfter)
			}
			if c.NotBefore.After(now) {
				t.Errorf("NotBefore = %s, after now %s", c.NotBefore, now)
			}
			if bits := c.SerialNumber.BitLen(); bits > 128 || bits < 64 {
				t.Errorf("serial has %d bits, want a random 128-bit number", bits)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
		})
	}
}

func TestCARoundTrip(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatalf("KeyPEM: %v", err)
	}
	loaded, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if got, want := loaded.Fingerprint(), ca.Fingerprint(); got != want {
		t.Errorf("Fingerprint after round trip = %s, want %s", got, want)
	}
	if !strings.HasPrefix(ca.Fingerprint(), "sha256:") || len(ca.Fingerprint()) != len("sha256:")+64 {
		t.Errorf("Fingerprint = %q, want sha256: and 64 hex digits", ca.Fingerprint())
	}
	if got, want := Fingerprint(loaded.Certificate()), ca.Fingerprint(); got != want {
		t.Errorf("Fingerprint(cert) = %s, want %s", got, want)
	}

	// A certificate issued by the loaded CA verifies against the original's pool.
	certPEM, _ := newNodeCert(t, loaded, "node-1", time.Now(), 0)
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:     ca.Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("node certificate from loaded CA does not verify against original CA: %v", err)
	}
}

func TestLoadCAErrors(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	other := newTestCA(t, "other-ca")
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := other.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey := newNodeCert(t, ca, "node-1", time.Now(), 0)
	_, csrPEM, err := NewNodeKeyAndCSR("node-1")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		cert    []byte
		key     []byte
		wantIs  error // nil: any error
		wantMsg string
	}{
		{name: "mismatched key", cert: ca.CertPEM(), key: otherKey, wantIs: ErrKeyMismatch},
		{name: "non-CA certificate", cert: nodeCert, key: nodeKey, wantIs: ErrNotCA},
		{name: "garbage certificate", cert: []byte("not a certificate"), key: caKey, wantMsg: "no CERTIFICATE PEM block"},
		{name: "garbage key", cert: ca.CertPEM(), key: []byte("not a key"), wantMsg: "no private key PEM block"},
		{name: "empty", wantMsg: "no CERTIFICATE PEM block"},
		{name: "CSR as certificate", cert: csrPEM, key: caKey, wantMsg: "no CERTIFICATE PEM block"},
		{name: "certificate as key", cert: ca.CertPEM(), key: ca.CertPEM(), wantMsg: "no private key PEM block"},
		{
			name:    "corrupt certificate DER",
			cert:    []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
			key:     caKey,
			wantMsg: "parse certificate",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := LoadCA(tc.cert, tc.key)
			if err == nil {
				t.Fatalf("LoadCA = %v, nil error; want error", got)
			}
			if !strings.HasPrefix(err.Error(), "pki: load CA: ") {
				t.Errorf("error %q lacks the pki: load CA: prefix", err)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("LoadCA error = %v, want errors.Is %v", err, tc.wantIs)
			}
			if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("LoadCA error = %q, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestIssueServerCert(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	now := time.Now()
	tests := []struct {
		name    string
		hosts   []string
		wantDNS []string
		wantIPs []string
		wantErr bool
	}{
		{
			name:    "defaults only",
			wantDNS: []string{"localhost"},
			wantIPs: []string{"127.0.0.1", "::1"},
		},
		{
			name:    "names and addresses",
			hosts:   []string{"ferry.example.com", "10.0.0.1", "[fd00::1]", "FERRY2.Example.com.", "localhost", "127.0.0.1"},
			wantDNS: []string{"localhost", "ferry.example.com", "ferry2.example.com"},
			wantIPs: []string{"127.0.0.1", "::1", "10.0.0.1", "fd00::1"},
		},
		{name: "empty host", hosts: []string{""}, wantErr: true},
		{name: "space in name", hosts: []string{"a b"}, wantErr: true},
		{name: "host with port", hosts: []string{"ferry.example.com:7443"}, wantErr: true},
		{name: "IP with zone", hosts: []string{"fe80::1%eth0"}, wantErr: true},
		{name: "wildcard", hosts: []string{"*.example.com"}, wantErr: true},
		{name: "label starts with dash", hosts: []string{"-a.example.com"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert, err := ca.IssueServerCert(tc.hosts, now, 0)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("IssueServerCert(%q) = nil error, want error", tc.hosts)
				}
				return
			}
			if err != nil {
				t.Fatalf("IssueServerCert(%q): %v", tc.hosts, err)
			}
			leaf := cert.Leaf
			if !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", leaf.DNSNames, tc.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("IPAddresses = %q, want %q", ips, tc.wantIPs)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage = %v, want [ServerAuth ClientAuth]", leaf.ExtKeyUsage)
			}
			if !IsServerCert(leaf) {
				t.Error("IsServerCert(server certificate) = false")
			}
			if leaf.IsCA {
				t.Error("server certificate is a CA")
			}
			if got, want := leaf.NotAfter, now.Add(DefaultServerValidity).Truncate(time.Second); !got.Equal(want) {
				t.Errorf("NotAfter = %s, want %s", got, want)
			}
			if len(cert.Certificate) != 2 || string(cert.Certificate[1]) != string(ca.Certificate().Raw) {
				t.Fatalf("chain has %d certificates, want leaf then CA", len(cert.Certificate))
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1", CurrentTime: now}); err != nil {
				t.Errorf("leaf does not verify for 127.0.0.1: %v", err)
			}

			// The PEM encoding reloads into the same chain.
			chainPEM, keyPEM, err := TLSCertificatePEM(cert)
			if err != nil {
				t.Fatalf("TLSCertificatePEM: %v", err)
			}
			back, err := tls.X509KeyPair(chainPEM, keyPEM)
			if err != nil {
				t.Fatalf("X509KeyPair(TLSCertificatePEM(cert)): %v", err)
			}
			if !slices.EqualFunc(back.Certificate, cert.Certificate, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Error("chain differs after a PEM round trip")
			}
		})
	}
}

func TestIssueClampsToCAExpiry(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ca, err := NewCA("short-ca", now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServerCert(nil, now, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cert.Leaf.NotAfter, ca.Certificate().NotAfter; !got.Equal(want) {
		t.Errorf("leaf NotAfter = %s, want the CA's %s", got, want)
	}

	// Once the CA has expired it issues nothing.
	later := now.Add(25 * time.Hour)
	if _, err := ca.IssueServerCert(nil, later, 0); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("IssueServerCert after CA expiry: error %v, want an expiry error", err)
	}
	_, csrPEM, err := NewNodeKeyAndCSR("node-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.SignNodeCSR(csrPEM, "node-1", later, 0); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("SignNodeCSR after CA expiry: error %v, want an expiry error", err)
	}
}

func TestParseCertificatePEMSkipsOtherBlocks(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificatePEM(append(key, ca.CertPEM()...))
	if err != nil {
		t.Fatalf("ParseCertificatePEM(key + cert): %v", err)
	}
	if Fingerprint(cert) != ca.Fingerprint() {
		t.Error("parsed the wrong certificate")
	}
}

func TestSerialString(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	s := SerialString(ca.Certificate())
	if s == "" || strings.ToLower(s) != s {
		t.Errorf("SerialString = %q, want lowercase hex", s)
	}
	if got := SerialString(nil); got != "" {
		t.Errorf("SerialString(nil) = %q, want empty", got)
	}
}
