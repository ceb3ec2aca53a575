package vmm

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteMigrationTLS fills dir with a host's credentials in the layout
// MigrationTLS.Dir describes: the CA certificate, and the host's
// certificate and key under both the server's and the client's names (a
// host is the target of some migrations and the source of others). Each
// file is replaced whole, so a migration starting meanwhile reads either
// the old credentials or the new.
func WriteMigrationTLS(dir string, caPEM, certPEM, keyPEM []byte) error {
	if len(caPEM) == 0 || len(certPEM) == 0 || len(keyPEM) == 0 {
		return fmt.Errorf("migration tls credentials in %s: a CA certificate, a certificate and a key are needed", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("migration tls credentials: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{"ca-cert.pem", caPEM},
		{"server-cert.pem", certPEM},
		{"server-key.pem", keyPEM},
		{"client-cert.pem", certPEM},
		{"client-key.pem", keyPEM},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		tmp, err := os.CreateTemp(dir, "."+f.name+".*")
		if err != nil {
			return fmt.Errorf("migration tls credentials: %w", err)
		}
		_, err = tmp.Write(f.data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("migration tls credentials: %s: %w", path, err)
		}
	}
	return nil
}
