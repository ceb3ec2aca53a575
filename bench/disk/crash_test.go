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
	bin, dir := crashTestBinary(t)
	res, err := crashPoints(bin, dir, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkCrash(t, res.acked, res.lost, "kill -9 of the primary process")
}

// TestCrashHostShort is the CI version of the end-to-end crash test: two
// points at which the primary's whole host namespace dies (cable pulled,
// every process killed -9), every acknowledged write must be on the
// secondary's host (bench/disk/run runs 20).
func TestCrashHostShort(t *testing.T) {
	bin, dir := crashTestBinary(t)
	res, err := crashPoints(bin, dir, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.hostAcked != res.acked || res.hostLost != res.lost {
		t.Fatalf("whole-host counts %d/%d differ from the totals %d/%d of a run with only whole-host kill points",
			res.hostAcked, res.hostLost, res.acked, res.lost)
	}
	checkCrash(t, res.hostAcked, res.hostLost, "the death of the primary's host")
}

// crashTestBinary skips the test where network namespaces cannot be made
// (a failure under CI=true), and builds the bench binary, which the crash
// test runs as primary and secondary.
func crashTestBinary(t *testing.T) (bin, dir string) {
	t.Helper()
	if err := testcluster.Preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
		}
		t.Skipf("skipping: the crash test needs network namespaces: %v", err)
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "bench-disk")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin, dir
}

func checkCrash(t *testing.T, acked, lost int, what string) {
	t.Helper()
	if acked == 0 {
		t.Fatal("no write was acknowledged: the test proved nothing")
	}
	if lost != 0 {
		t.Fatalf("%d of %d acknowledged writes lost after %s", lost, acked, what)
	}
	t.Logf("%d acknowledged writes, none lost after %s", acked, what)
}
