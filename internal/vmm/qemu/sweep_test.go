package qemu

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestSweep(t *testing.T) {
	t.Parallel()
	// Nothing to sweep: no pidfile, or a pidfile naming another process.
	d := newTestDriver(t, Config{Accel: AccelTCG})
	empty := t.TempDir()
	if killed, err := d.Sweep(t.Context(), "nobody", empty); killed || err != nil {
		t.Fatalf("Sweep(no pidfile) = %v, %v; want false, nil", killed, err)
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, PIDFileName), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if killed, err := d.Sweep(t.Context(), "victim", other); killed || err != nil {
		t.Fatalf("Sweep(pidfile of a non-QEMU process) = %v, %v; want false, nil", killed, err)
	}

	// A QEMU whose handle was lost: a new driver finds and kills it.
	g := buildGuest(t)
	spec := guestSpec(t, g, "orphan")
	h := startGuest(t, d, spec)
	d.Close()
	fresh := newTestDriver(t, Config{Accel: AccelTCG})
	killed, err := fresh.Sweep(t.Context(), spec.ID, spec.StateDir)
	if err != nil || !killed {
		t.Fatalf("Sweep(orphan) = %v, %v; want true, nil", killed, err)
	}
	if _, err := readCmdline(h.PID); err == nil {
		t.Fatalf("QEMU %d still runs after Sweep", h.PID)
	}
}
