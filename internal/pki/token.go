package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Join and API token formats.
const (
	joinTokenPrefix = "K1."
	joinIDLen       = 8  // base32 characters (5 random bytes)
	secretBytes     = 32 // random bytes in a join secret or API token
	secretLen       = 43 // base64url characters of secretBytes, unpadded

	// APITokenPrefix starts every API token, so that a leaked token is easy
	// to recognise (by secret scanners, for instance).
	APITokenPrefix = "ferry_"
)

// ErrInvalidJoinToken is wrapped by every error of [ParseJoinToken].
var ErrInvalidJoinToken = errors.New("pki: invalid join token")

// Alphabets of token IDs (lowercase base32) and secrets (base64url).
const (
	idAlphabet     = "abcdefghijklmnopqrstuvwxyz234567"
	secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

// idEncoding is lowercase base32 without padding: 5 bytes are 8 characters.
var idEncoding = base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)

// secretEncoding is base64url without padding, rejecting non-canonical
// encodings so that a secret has exactly one spelling.
var secretEncoding = base64.RawURLEncoding.Strict()

// NewJoinToken returns a new join token for the cluster of ca:
//
//	"K1." + <CA fingerprint, 64 hex> + "." + <id, 8 base32> + "." + <secret, 43 base64url>
//
// The token is shown once to the operator. The server stores only id and
// secretHash ([HashSecret] of the secret) and, at join, finds the token by
// id and checks the secret with [CheckSecret].
func NewJoinToken(ca *CA) (token, id, secretHash string, err error) {
	if ca == nil {
		return "", "", "", errors.New("pki: new join token: nil CA")
	}
	var idRaw [5]byte
	var secretRaw [secretBytes]byte
	// crypto/rand.Read never returns an error: it crashes the program if
	// the system cannot supply randomness.
	_, _ = rand.Read(idRaw[:])
	_, _ = rand.Read(secretRaw[:])
	id = idEncoding.EncodeToString(idRaw[:])
	secret := secretEncoding.EncodeToString(secretRaw[:])
	return formatJoinToken(ca.Fingerprint(), id, secret), id, HashSecret(secret), nil
}

// formatJoinToken assembles a join token; caFingerprint is as [Fingerprint]
// returns it.
func formatJoinToken(caFingerprint, id, secret string) string {
	return joinTokenPrefix + strings.TrimPrefix(caFingerprint, fingerprintPrefix) + "." + id + "." + secret
}

// ParseJoinToken splits a join token made by [NewJoinToken] into the CA
// fingerprint (in the form [Fingerprint] returns, "sha256:" and 64 hex
// digits, ready for [PinnedCATLSConfig]), the token ID and the secret. It is
// strict: no surrounding space, lowercase hex and base32, canonical base64url.
// Errors wrap [ErrInvalidJoinToken] and never quote the token or any part of
// it, so they are safe to log.
func ParseJoinToken(s string) (caFingerprint, id, secret string, err error) {
	rest, ok := strings.CutPrefix(s, joinTokenPrefix)
	if !ok {
		return "", "", "", fmt.Errorf("%w: does not start with %q", ErrInvalidJoinToken, joinTokenPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: want 4 parts separated by '.', got %d", ErrInvalidJoinToken, len(parts)+1)
	}
	fp, id, secret := parts[0], parts[1], parts[2]
	if len(fp) != 2*sha256.Size || !isLowerHex(fp) {
		return "", "", "", fmt.Errorf("%w: CA fingerprint must be %d lowercase hex digits", ErrInvalidJoinToken, 2*sha256.Size)
	}
	if len(id) != joinIDLen {
		return "", "", "", fmt.Errorf("%w: token ID must be %d characters, got %d", ErrInvalidJoinToken, joinIDLen, len(id))
	}
	// Check the alphabet by hand: the decoders skip '\r' and '\n'.
	if !onlyBytesIn(id, idAlphabet) {
		return "", "", "", fmt.Errorf("%w: token ID must be lowercase base32 (a-z, 2-7)", ErrInvalidJoinToken)
	}
	if len(secret) != secretLen {
		return "", "", "", fmt.Errorf("%w: secret must be %d characters, got %d", ErrInvalidJoinToken, secretLen, len(secret))
	}
	// The decoder's error would quote the offending byte; do not wrap it.
	if raw, err := secretEncoding.DecodeString(secret); err != nil || len(raw) != secretBytes ||
		!onlyBytesIn(secret, secretAlphabet) {
		return "", "", "", fmt.Errorf("%w: secret is not canonical unpadded base64url of %d bytes", ErrInvalidJoinToken, secretBytes)
	}
	return fingerprintPrefix + fp, id, secret, nil
}

// HashSecret returns the lowercase hex SHA-256 of a join token secret, the
// form in which the server stores it. A fast hash is right here, unlike for
// passwords: secrets are 256 bits from crypto/rand, so guessing one from its
// hash is infeasible however fast the hash is, and a slow hash would only
// make the server easier to overload.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CheckSecret reports whether secret hashes to hash (as [HashSecret]),
// comparing in constant time.
func CheckSecret(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(hash)) == 1
}

// NewAPIToken returns a new API (bearer) token, [APITokenPrefix] followed by
// 43 base64url characters encoding 32 random bytes, and its hash as
// [HashAPIToken]. Show the token once; store only the hash.
func NewAPIToken() (token, hash string, err error) {
	var raw [secretBytes]byte
	// crypto/rand.Read never returns an error; see NewJoinToken.
	_, _ = rand.Read(raw[:])
	token = APITokenPrefix + secretEncoding.EncodeToString(raw[:])
	return token, HashAPIToken(token), nil
}

// HashAPIToken returns the lowercase hex SHA-256 of a whole API token, the
// form in which the server stores and looks it up. As with [HashSecret], a
// fast hash is right for 256-bit random tokens.
func HashAPIToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// onlyBytesIn reports whether every byte of s is in alphabet.
func onlyBytesIn(s, alphabet string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
