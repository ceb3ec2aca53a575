package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ferrycluster/ferry/internal/testcluster"
)

// TestCrashShort is the CI version of the crash test: three kill -9
// points of a replicating primary, every acknowledged write must be on the
// secondary (bench/disk/run runs 100).
func TestCrashShort(t *testing.T) {
	if err := testcluster.Preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bench-disk")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	res, err := crashPoints(bin, dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.acked == 0 {
		t.Fatal("no write was acknowledged: the test proved nothing")
	}
	if res.lost != 0 {
		t.Fatalf("%d of %d acknowledged writes lost after kill -9 of the primary", res.lost, res.acked)
	}
	t.Logf("%d acknowledged writes, none lost", res.acked)
}
