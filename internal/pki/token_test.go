package pki

import (
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestJoinTokenRoundTrip(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ferry-ca")
	token, id, hash, err := NewJoinToken(ca)
	if err != nil {
		t.Fatalf("NewJoinToken: %v", err)
	}
	if want := 3 + 64 + 1 + 8 + 1 + 43; len(token) != want {
		t.Errorf("len(token) = %d, want %d", len(token), want)
	}
	fp, gotID, secret, err := ParseJoinToken(token)
	if err != nil {
		t.Fatalf("ParseJoinToken(NewJoinToken()): %v", err)
	}
	if fp != ca.Fingerprint() {
		t.Errorf("fingerprint = %s, want %s", fp, ca.Fingerprint())
	}
	if gotID != id {
		t.Errorf("id = %q, want %q", gotID, id)
	}
	if got := formatJoinToken(fp, gotID, secret); got != token {
		t.Errorf("reassembled token differs from the original")
	}
	if !CheckSecret(secret, hash) {
		t.Error("CheckSecret(secret, hash) = false, want true")
	}
	if HashSecret(secret) != hash {
		t.Error("HashSecret(secret) differs from the returned hash")
	}
	if strings.Contains(hash, secret) || strings.Contains(token, hash) {
		t.Error("hash reveals the secret or the token contains the hash")
	}

	// Fresh tokens differ.
	token2, id2, hash2, err := NewJoinToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	if token2 == token || id2 == id || hash2 == hash {
		t.Error("two join tokens share a part")
	}

	if _, _, _, err := NewJoinToken(nil); err == nil {
		t.Error("NewJoinToken(nil) = nil error, want error")
	}
}

func TestCheckSecret(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("A", 43)
	hash := HashSecret(secret)
	tests := []struct {
		name   string
		secret string
		hash   string
		want   bool
	}{
		{name: "match", secret: secret, hash: hash, want: true},
		{name: "other secret", secret: strings.Repeat("B", 43), hash: hash},
		{name: "empty secret", secret: "", hash: hash},
		{name: "empty hash", secret: secret, hash: ""},
		{name: "uppercase hash", secret: secret, hash: strings.ToUpper(hash)},
		{name: "truncated hash", secret: secret, hash: hash[:63]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := CheckSecret(tc.secret, tc.hash); got != tc.want {
				t.Errorf("CheckSecret(%q, %q) = %v, want %v", tc.secret, tc.hash, got, tc.want)
			}
		})
	}
}

func TestParseJoinTokenMalformed(t *testing.T) {
	t.Parallel()
	fp := strings.Repeat("0123456789abcdef", 4)
	id := "abcdef23"
	secret := "Zm9vYmFyLWZvb2Jhci1mb29iYXItZm9vYmFyLWZvb2E" // 43 canonical base64url chars
	valid := "K1." + fp + "." + id + "." + secret
	if _, _, _, err := ParseJoinToken(valid); err != nil {
		t.Fatalf("ParseJoinToken(valid fixture): %v", err)
	}

	tests := []struct {
		name    string
		token   string
		wantMsg string
	}{
		{name: "empty", token: "", wantMsg: "does not start with"},
		{name: "other version", token: "K2." + fp + "." + id + "." + secret, wantMsg: "does not start with"},
		{name: "lowercase prefix", token: "k1." + fp + "." + id + "." + secret, wantMsg: "does not start with"},
		{name: "leading space", token: " " + valid, wantMsg: "does not start with"},
		{name: "prefix only", token: "K1.", wantMsg: "want 4 parts"},
		{name: "missing id", token: "K1." + fp + "." + secret, wantMsg: "want 4 parts"},
		{name: "extra part", token: valid + ".x", wantMsg: "want 4 parts"},
		{name: "short fingerprint", token: "K1." + fp[:63] + "." + id + "." + secret, wantMsg: "fingerprint"},
		{name: "uppercase fingerprint", token: "K1." + strings.ToUpper(fp) + "." + id + "." + secret, wantMsg: "fingerprint"},
		{name: "fingerprint with sha256 prefix", token: "K1.sha256:" + fp + "." + id + "." + secret, wantMsg: "fingerprint"},
		{name: "non-hex fingerprint", token: "K1." + strings.Repeat("g", 64) + "." + id + "." + secret, wantMsg: "fingerprint"},
		{name: "short id", token: "K1." + fp + ".abc." + secret, wantMsg: "token ID"},
		{name: "uppercase id", token: "K1." + fp + ".ABCDEF23." + secret, wantMsg: "token ID"},
		{name: "id with digit 1", token: "K1." + fp + ".abcdef21." + secret, wantMsg: "token ID"},
		{name: "id with newline", token: "K1." + fp + ".abcd\nef2." + secret, wantMsg: "token ID"},
		{name: "short secret", token: "K1." + fp + "." + id + "." + secret[:42], wantMsg: "secret"},
		{name: "padded secret", token: "K1." + fp + "." + id + "." + secret + "=", wantMsg: "secret"},
		{name: "standard base64 secret", token: "K1." + fp + "." + id + ".+" + secret[1:], wantMsg: "secret"},
		{name: "non-canonical secret", token: "K1." + fp + "." + id + "." + secret[:42] + "F", wantMsg: "secret"},
		{name: "secret with newline", token: "K1." + fp + "." + id + "." + secret[:21] + "\n" + secret[22:], wantMsg: "secret"},
		{name: "trailing newline", token: valid + "\n", wantMsg: "secret"},
		{name: "empty secret", token: "K1." + fp + "." + id + ".", wantMsg: "secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gotFP, gotID, gotSecret, err := ParseJoinToken(tc.token)
			if err == nil {
				t.Fatalf("ParseJoinToken(%q) = %q, %q, %q, nil; want error", tc.token, gotFP, gotID, gotSecret)
			}
			if !errors.Is(err, ErrInvalidJoinToken) {
				t.Errorf("error %v does not wrap ErrInvalidJoinToken", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error = %q, want it to mention %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), secret[:8]) {
				t.Errorf("error %q echoes the secret", err)
			}
			if gotFP != "" || gotID != "" || gotSecret != "" {
				t.Error("parts returned along with an error")
			}
		})
	}
}

func TestAPIToken(t *testing.T) {
	t.Parallel()
	token, hash, err := NewAPIToken()
	if err != nil {
		t.Fatalf("NewAPIToken: %v", err)
	}
	if !strings.HasPrefix(token, APITokenPrefix) || len(token) != len(APITokenPrefix)+43 {
		t.Errorf("token %q: want %q and 43 characters", token, APITokenPrefix)
	}
	if _, err := secretEncoding.DecodeString(strings.TrimPrefix(token, APITokenPrefix)); err != nil {
		t.Errorf("token body is not base64url: %v", err)
	}
	if HashAPIToken(token) != hash {
		t.Error("HashAPIToken(token) differs from the returned hash")
	}
	if len(hash) != 64 || !isLowerHex(hash) {
		t.Errorf("hash %q: want 64 lowercase hex digits", hash)
	}
	token2, hash2, err := NewAPIToken()
	if err != nil {
		t.Fatal(err)
	}
	if token2 == token || hash2 == hash {
		t.Error("two API tokens are equal")
	}
}

func FuzzParseJoinToken(f *testing.F) {
	ca, err := NewCA("fuzz-ca", time.Now(), 0)
	if err != nil {
		f.Fatal(err)
	}
	token, _, _, err := NewJoinToken(ca)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		token,
		"",
		"K1.",
		"K1...",
		"K1." + strings.Repeat("a", 64) + ".aaaaaaaa." + strings.Repeat("A", 43),
		token + "\n",
		strings.Replace(token, ".", "..", 1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fp, id, secret, err := ParseJoinToken(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidJoinToken) {
				t.Fatalf("error %v does not wrap ErrInvalidJoinToken", err)
			}
			return
		}
		if got := formatJoinToken(fp, id, secret); got != s {
			t.Fatalf("ParseJoinToken(%q) reassembles to %q", s, got)
		}
		if _, err := normalizeFingerprint(fp); err != nil {
			t.Fatalf("parsed fingerprint %q is not valid: %v", fp, err)
		}
	})
}

func FuzzSignNodeCSR(f *testing.F) {
	ca, err := NewCA("fuzz-ca", time.Now(), 0)
	if err != nil {
		f.Fatal(err)
	}
	_, csrPEM, err := NewNodeKeyAndCSR("node-1")
	if err != nil {
		f.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	f.Add(csrPEM)
	f.Add(block.Bytes)
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n\n-----END CERTIFICATE REQUEST-----\n"))
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		// data as given, and data as the DER inside a CSR PEM block so that
		// the fuzzer reaches the ASN.1 parser quickly.
		inputs := [][]byte{data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: data})}
		for _, in := range inputs {
			certPEM, serial, err := ca.SignNodeCSR(in, "node-1", now, 0)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "pki: sign node CSR") {
					t.Fatalf("error %q lacks the pki: sign node CSR prefix", err)
				}
				continue
			}
			cert, err := ParseCertificatePEM(certPEM)
			if err != nil {
				t.Fatalf("issued certificate does not parse: %v", err)
			}
			if node, err := NodeFromCert(cert); err != nil || node != "node-1" {
				t.Fatalf("issued certificate for %q, %v; want node-1", node, err)
			}
			if SerialString(cert) != serial {
				t.Fatalf("serial %q, certificate has %q", serial, SerialString(cert))
			}
		}
	})
}
