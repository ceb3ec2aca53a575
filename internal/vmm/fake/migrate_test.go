package fake_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/vmm"
	"github.com/ferrycluster/ferry/internal/vmm/fake"
)

func inspect(t *testing.T, d *fake.Driver, id string, state vmm.State, paused bool) vmm.Status {
	t.Helper()
	st, err := d.Inspect(t.Context(), id)
	if err != nil || st.State != state || st.Paused != paused {
		t.Fatalf("Inspect(%s) = %+v, %v; want %s, paused %t", id, st, err, state, paused)
	}
	return st
}

func mustIncoming(t *testing.T, d *fake.Driver, id, listen string) (vmm.Handle, string) {
	t.Helper()
	h, uri, err := d.StartIncoming(t.Context(), spec(id), vmm.IncomingOptions{Listen: listen})
	if err != nil {
		t.Fatalf("StartIncoming(%s, %s) = %v", id, listen, err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), id) })
	return h, uri
}

func TestMigrate(t *testing.T) {
	a, b := fake.New(fake.WithHost("a")), fake.New(fake.WithHost("b"))
	mustStart(t, a, "web-1")
	h, uri := mustIncoming(t, b, "web-1", "10.0.0.2:0")
	if !strings.HasPrefix(uri, "tcp:10.0.0.2:") || strings.HasSuffix(uri, ":0") || h.Data[fake.DataIncoming] != "true" || h.Data[fake.DataHost] != "b" {
		t.Fatalf("StartIncoming = %+v, %q", h, uri)
	}
	inspect(t, b, "web-1", vmm.StateRunning, true)
	if err := b.Resume(t.Context(), "web-1"); err == nil {
		t.Error("Resume of a target before its migration = nil, want an error")
	}
	targetExit := mustWait(t, b, "web-1")

	var reports []vmm.MigrationProgress
	res, err := a.Migrate(t.Context(), "web-1", uri, vmm.MigrateOptions{}, func(p vmm.MigrationProgress) { reports = append(reports, p) })
	if err != nil {
		t.Fatalf("Migrate = %v", err)
	}
	if res.Transferred != 64<<20 || len(reports) != 1 {
		t.Errorf("Migrate = %+v with %d progress reports, want 64 MiB and one report", res, len(reports))
	}
	inspect(t, a, "web-1", vmm.StateRunning, true)
	inspect(t, b, "web-1", vmm.StateRunning, true)
	if _, err := a.Migrate(t.Context(), "web-1", uri, vmm.MigrateOptions{}, nil); err == nil {
		t.Error("Migrate of a migrated source = nil, want an error")
	}
	// The target accepted its one migration: nobody listens on uri now.
	mustStart(t, a, "web-2")
	if _, err := a.Migrate(t.Context(), "web-2", uri, vmm.MigrateOptions{}, nil); err == nil {
		t.Error("a second Migrate to one target = nil, want an error")
	}
	if err := b.Resume(t.Context(), "web-1"); err != nil {
		t.Fatalf("Resume(target) = %v", err)
	}
	inspect(t, b, "web-1", vmm.StateRunning, false)
	if err := b.Resume(t.Context(), "web-1"); err != nil {
		t.Errorf("Resume of a running vm = %v, want nil", err)
	}
	sourceExit := mustWait(t, a, "web-1")
	if err := a.Destroy(t.Context(), "web-1"); err != nil {
		t.Fatal(err)
	}
	if r := recvOne(t, sourceExit); !errors.Is(r.Err, fake.ErrKilled) {
		t.Errorf("source exit = %+v, want ErrKilled", r)
	}
	select {
	case r := <-targetExit:
		t.Errorf("the target exited: %+v", r)
	default:
	}
}

func TestMigrateFailures(t *testing.T) {
	a, b := fake.New(fake.WithHost("a")), fake.New(fake.WithHost("b"))
	mustStart(t, a, "db")

	t.Run("nobody listens", func(t *testing.T) {
		if _, err := a.Migrate(t.Context(), "db", "tcp:10.0.0.9:4444", vmm.MigrateOptions{}, nil); err == nil {
			t.Fatal("Migrate to nowhere = nil, want an error")
		}
		inspect(t, a, "db", vmm.StateRunning, false)
	})
	t.Run("unknown source", func(t *testing.T) {
		if _, err := a.Migrate(t.Context(), "nope", "tcp:10.0.0.9:4444", vmm.MigrateOptions{}, nil); !errors.Is(err, vmm.ErrNotFound) {
			t.Fatalf("Migrate(unknown) = %v, want ErrNotFound", err)
		}
	})
	t.Run("address in use", func(t *testing.T) {
		mustIncoming(t, b, "db", "10.0.0.2:7777")
		if _, _, err := b.StartIncoming(t.Context(), spec("other"), vmm.IncomingOptions{Listen: "10.0.0.2:7777"}); err == nil {
			t.Fatal("StartIncoming on a taken address = nil, want an error")
		}
		if _, _, err := b.StartIncoming(t.Context(), spec("db"), vmm.IncomingOptions{Listen: "10.0.0.2:0"}); !errors.Is(err, vmm.ErrAlreadyRunning) {
			t.Fatalf("StartIncoming of a running id = %v, want ErrAlreadyRunning", err)
		}
		if err := b.Destroy(t.Context(), "db"); err != nil {
			t.Fatal(err)
		}
		// Destroy freed the address.
		mustIncoming(t, b, "other", "10.0.0.2:7777")
		if err := b.Destroy(t.Context(), "other"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("FailMigrate", func(t *testing.T) {
		_, uri := mustIncoming(t, b, "db", "10.0.0.2:0")
		ch := mustWait(t, b, "db")
		a.FailMigrate("db", vmm.ErrNotConverged)
		defer a.FailMigrate("db", nil)
		if _, err := a.Migrate(t.Context(), "db", uri, vmm.MigrateOptions{}, nil); !errors.Is(err, vmm.ErrNotConverged) {
			t.Fatalf("Migrate = %v, want ErrNotConverged", err)
		}
		inspect(t, a, "db", vmm.StateRunning, false)
		if r := recvOne(t, ch); !errors.Is(r.Err, vmm.ErrIncomingFailed) {
			t.Errorf("target exit = %+v, want ErrIncomingFailed", r)
		}
		inspect(t, b, "db", vmm.StateCrashed, false)
	})
	t.Run("cancelled ctx", func(t *testing.T) {
		_, uri := mustIncoming(t, b, "db", "10.0.0.2:0")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := a.Migrate(ctx, "db", uri, vmm.MigrateOptions{}, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("Migrate = %v, want context.Canceled", err)
		}
		inspect(t, a, "db", vmm.StateRunning, false)
		inspect(t, b, "db", vmm.StateRunning, true)
		if err := b.Destroy(t.Context(), "db"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("target crashed", func(t *testing.T) {
		_, uri := mustIncoming(t, b, "db", "10.0.0.2:0")
		if err := b.Crash("db"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Migrate(t.Context(), "db", uri, vmm.MigrateOptions{}, nil); err == nil {
			t.Fatal("Migrate to a crashed target = nil, want an error")
		}
		inspect(t, a, "db", vmm.StateRunning, false)
		st := inspect(t, b, "db", vmm.StateCrashed, false)
		if !strings.Contains(st.ExitError, vmm.ErrIncomingFailed.Error()) {
			t.Errorf("ExitError of a crashed target = %q", st.ExitError)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		_, uri := mustIncoming(t, b, "db", "10.0.0.2:0")
		if _, err := a.Migrate(t.Context(), "db", uri, vmm.MigrateOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		inspect(t, a, "db", vmm.StateRunning, true)
		if err := a.Resume(t.Context(), "db"); err != nil {
			t.Fatalf("Resume(source) = %v", err)
		}
		inspect(t, a, "db", vmm.StateRunning, false)
		// The target, never resumed, is stopped: it is killed.
		ch := mustWait(t, b, "db")
		if err := b.Stop(t.Context(), "db", 0); err != nil {
			t.Fatal(err)
		}
		if r := recvOne(t, ch); !errors.Is(r.Err, fake.ErrKilled) {
			t.Errorf("exit of a stopped paused target = %+v, want ErrKilled", r)
		}
		inspect(t, b, "db", vmm.StateStopped, false)
	})
}
