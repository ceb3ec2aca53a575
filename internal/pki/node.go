package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// NodeOrganization is the subject organization of every node certificate. It
// tells node certificates apart from server certificates signed by the same
// CA; [NodeFromCert] requires it.
const NodeOrganization = "ferry:nodes"

// maxLabelLen is the longest DNS label (RFC 1035, section 2.3.4).
const maxLabelLen = 63

// NewNodeKeyAndCSR generates, on the agent, an ECDSA P-256 key and a
// certificate signing request whose common name is node. Both are returned
// PEM-encoded; the key as PKCS #8. Only the CSR leaves the host.
func NewNodeKeyAndCSR(node string) (keyPEM, csrPEM []byte, err error) {
	if err := checkLabel(node); err != nil {
		return nil, nil, fmt.Errorf("pki: new node CSR: node name %q: %w", node, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new node CSR: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: node},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new node CSR: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new node CSR: marshal key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: keyDER})
	csrPEM = pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
	return keyPEM, csrPEM, nil
}

// SignNodeCSR issues, on the server, the certificate of node from the
// PEM-encoded CSR the agent sent. The CSR must be correctly self-signed, its
// common name must equal node, and its key must be ECDSA (P-256, P-384 or
// P-521) or RSA of at least 2048 bits. Nothing else is taken from the CSR:
// the certificate's subject is CN=node, O=[NodeOrganization], its only SAN is
// the DNS name node, and it is valid for both client and server
// authentication (agents also serve each other over the replication link).
// It is valid from shortly before now for validity, or [DefaultNodeValidity]
// if validity is zero, and never beyond the CA's own expiry.
//
// It returns the certificate PEM-encoded and its serial as [SerialString].
func (ca *CA) SignNodeCSR(csrPEM []byte, node string, now time.Time, validity time.Duration) (certPEM []byte, serial string, err error) {
	if err := checkLabel(node); err != nil {
		return nil, "", fmt.Errorf("pki: sign node CSR: node name %q: %w", node, err)
	}
	if validity < 0 {
		return nil, "", fmt.Errorf("pki: sign node CSR: negative validity %s", validity)
	}
	if validity == 0 {
		validity = DefaultNodeValidity
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, "", errors.New("pki: sign node CSR: no PEM block found")
	}
	if block.Type != pemCSR && block.Type != pemCSROld {
		return nil, "", fmt.Errorf("pki: sign node CSR: PEM block is %q, want %q", block.Type, pemCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("pki: sign node CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("pki: sign node CSR: bad signature: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, "", fmt.Errorf("pki: sign node CSR: %w", err)
	}
	if cn := csr.Subject.CommonName; cn != node {
		return nil, "", fmt.Errorf("pki: sign node CSR: common name %q does not match node %q", cn, node)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: node, Organization: []string{NodeOrganization}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{node},
	}
	cert, err := ca.issue(tmpl, csr.PublicKey, now, validity)
	if err != nil {
		return nil, "", fmt.Errorf("pki: sign node CSR for %q: %w", node, err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw})
	return certPEM, SerialString(cert), nil
}

// NodeFromCert returns the node name of a node certificate: its common name,
// after checking that it is a valid node name (a lowercase DNS label of 1 to
// 63 characters) and that the subject organization is [NodeOrganization].
// It does not verify the certificate: call it on a certificate that
// crypto/tls has already verified against the CA, such as
// ConnectionState.PeerCertificates[0] on a connection configured by
// [ServerTLSConfig] or [AgentTLSConfig].
func NodeFromCert(cert *x509.Certificate) (node string, err error) {
	if cert == nil {
		return "", errors.New("pki: node from certificate: no certificate")
	}
	if !slices.Contains(cert.Subject.Organization, NodeOrganization) {
		return "", fmt.Errorf("pki: node from certificate: %q is not a node certificate (organization is not %q)",
			cert.Subject.CommonName, NodeOrganization)
	}
	cn := cert.Subject.CommonName
	if err := checkLabel(cn); err != nil {
		return "", fmt.Errorf("pki: node from certificate: common name %q: %w", cn, err)
	}
	return cn, nil
}

// checkLabel accepts a lowercase DNS label: 1 to 63 letters, digits and '-',
// starting and ending with a letter or digit. Node names are such labels, the
// same rule as api.ValidateName.
func checkLabel(s string) error {
	if len(s) == 0 || len(s) > maxLabelLen {
		return fmt.Errorf("length %d, want 1 to %d", len(s), maxLabelLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return errors.New("want lowercase letters, digits and '-', starting and ending with a letter or digit")
		}
	}
	return nil
}
