package vmm

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteMigrationTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "migration-tls")
	if err := WriteMigrationTLS(dir, []byte("ca"), []byte("cert"), []byte("key")); err != nil {
		t.Fatal(err)
	}
	// Again, with renewed credentials: each file is replaced.
	if err := WriteMigrationTLS(dir, []byte("ca2"), []byte("cert2"), []byte("key2")); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ca-cert.pem": "ca2", "server-cert.pem": "cert2", "server-key.pem": "key2", "client-cert.pem": "cert2", "client-key.pem": "key2"}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("%d files in %s, want %d (no temporary files left)", len(entries), dir, len(want))
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != data {
			t.Errorf("%s = %q, %v; want %q", name, got, err, data)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, %v; want 0700 (it holds the host's key)", fi.Mode().Perm(), err)
	}
	for _, bad := range [][3][]byte{{nil, []byte("c"), []byte("k")}, {[]byte("ca"), nil, []byte("k")}, {[]byte("ca"), []byte("c"), nil}} {
		if err := WriteMigrationTLS(filepath.Join(t.TempDir(), "x"), bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("WriteMigrationTLS with a missing part = nil, want an error")
		}
	}
}
