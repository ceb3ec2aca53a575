package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Validity periods used when a caller passes a zero validity.
const (
	// DefaultCAValidity is the validity of a CA made by NewCA: ten years.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultServerValidity is the validity of a server certificate: a year.
	DefaultServerValidity = 365 * 24 * time.Hour
	// DefaultNodeValidity is the validity of a node certificate: a year.
	DefaultNodeValidity = 365 * 24 * time.Hour
)

// backdate is how far before "now" every certificate becomes valid, so that a
// peer whose clock is a little behind the issuer's still accepts a freshly
// issued certificate.
const backdate = 5 * time.Minute

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY" // PKCS #8
	pemECKey       = "EC PRIVATE KEY"
	pemRSAKey      = "RSA PRIVATE KEY"
	pemCSR         = "CERTIFICATE REQUEST"
	pemCSROld      = "NEW CERTIFICATE REQUEST"
)

// fingerprintPrefix starts every fingerprint returned by [Fingerprint].
const fingerprintPrefix = "sha256:"

// ErrNotCA is returned by [LoadCA] when the certificate is not a CA
// certificate allowed to sign certificates.
var ErrNotCA = errors.New("pki: certificate is not a CA")

// ErrKeyMismatch is returned by [LoadCA] when the private key does not belong
// to the certificate.
var ErrKeyMismatch = errors.New("pki: private key does not match certificate")

// CA is the cluster certificate authority: its certificate and private key.
// Make one with [NewCA] or [LoadCA]; the zero value is not usable. It is
// immutable after construction and safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates a self-signed CA with an ECDSA P-256 key. The certificate is
// valid from shortly before now for validity, or [DefaultCAValidity] if
// validity is zero; it may sign certificates and CRLs but not intermediate
// CAs.
func NewCA(commonName string, now time.Time, validity time.Duration) (*CA, error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, errors.New("pki: new CA: empty common name")
	}
	if validity < 0 {
		return nil, fmt.Errorf("pki: new CA: negative validity %s", validity)
	}
	if validity == 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: parse certificate: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCA builds a CA from the PEM encodings returned by [CA.CertPEM] and
// [CA.KeyPEM]. The key may be PKCS #8, SEC 1 (EC) or PKCS #1 (RSA). It
// returns an error wrapping [ErrNotCA] if the certificate is not a CA allowed
// to sign certificates, and one wrapping [ErrKeyMismatch] if the key does not
// belong to the certificate. It does not check the validity period.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("pki: load CA: %q: %w (basic constraints do not mark it as a CA)",
			cert.Subject.CommonName, ErrNotCA)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki: load CA: %q: %w (key usage does not allow signing certificates)",
			cert.Subject.CommonName, ErrNotCA)
	}
	key, err := parsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("pki: load CA: %q: %w", cert.Subject.CommonName, ErrKeyMismatch)
	}
	return &CA{cert: cert, key: key}, nil
}

// Certificate returns the CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: ca.cert.Raw})
}

// KeyPEM returns the CA private key as a PEM-encoded PKCS #8 block. It is the
// cluster's most sensitive secret: store it only where servers can read it.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// Pool returns a new certificate pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// Fingerprint returns the CA certificate's fingerprint, as [Fingerprint].
func (ca *CA) Fingerprint() string { return Fingerprint(ca.cert) }

// Fingerprint returns "sha256:" followed by the lowercase hex SHA-256 of the
// certificate's DER encoding. cert must not be nil.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// normalizeFingerprint accepts "sha256:<64 hex>" or bare 64 hex digits, in
// either case, and returns the canonical form that [Fingerprint] produces.
func normalizeFingerprint(s string) (string, error) {
	h := strings.ToLower(s)
	h = strings.TrimPrefix(h, fingerprintPrefix)
	if len(h) != 2*sha256.Size || !isLowerHex(h) {
		return "", fmt.Errorf("pki: invalid CA fingerprint %q: want %s followed by %d hex digits",
			s, fingerprintPrefix, 2*sha256.Size)
	}
	return fingerprintPrefix + h, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// SerialString returns the certificate's serial number as lowercase hex, the
// form ferry stores and shows.
func SerialString(cert *x509.Certificate) string {
	if cert == nil || cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// ParseCertificatePEM parses the first CERTIFICATE block in data.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("pki: no CERTIFICATE PEM block found")
		}
		if block.Type != pemCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse certificate: %w", err)
		}
		return cert, nil
	}
}

// parsePrivateKeyPEM parses the first private key block in data.
func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("pki: no private key PEM block found")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case pemECKey:
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case pemRSAKey:
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pki: parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("pki: unsupported private key type %T", key)
		}
		return signer, nil
	}
}

// checkPublicKey accepts ECDSA keys on the NIST curves and RSA keys of 2048
// to 8192 bits; everything else is refused.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("pki: unsupported ECDSA curve %s", k.Params().Name)
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 || bits > 8192 {
			return fmt.Errorf("pki: RSA key of %d bits: want 2048 to 8192", bits)
		}
		return nil
	default:
		return fmt.Errorf("pki: unsupported public key type %T: want ECDSA or RSA", pub)
	}
}

// newSerial returns a random, positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// issue fills in the serial and validity period of tmpl and signs it for pub.
// The certificate never outlives the CA.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("CA certificate expired at %s", ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}
