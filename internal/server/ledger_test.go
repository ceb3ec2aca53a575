package server

import (
	"context"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// TestLedgerRecordsServingChanges: every serving change the control plane
// records lands in the SLA ledger once, with the cause the state implies:
// a guest that stops answering, a customer stop, a host failure, a
// deletion.
func TestLedgerRecordsServingChanges(t *testing.T) {
	e := newMigEnv(t, "n1", "n2")
	spec := smallSpec()
	spec.Owner = "acme"
	in := e.running("web", spec, true)
	node := in.Status.Node
	t0 := time.Now().UTC().Truncate(time.Second)
	serving := func(v bool, at time.Time, phase api.Phase) {
		t.Helper()
		if code := e.agents[node].report("web", api.InstanceReport{Phase: phase, Serving: &v, ServingAt: at}); code != 200 {
			t.Fatalf("report serving=%v = %d", v, code)
		}
	}
	serving(true, t0, api.PhaseRunning)
	serving(true, t0.Add(time.Second), api.PhaseRunning) // no change: no entry
	serving(false, t0.Add(2*time.Second), api.PhaseRunning)
	serving(true, t0.Add(3*time.Second), api.PhaseRunning)
	serving(false, t0.Add(4*time.Second), api.PhaseFailed)
	serving(true, t0.Add(5*time.Second), api.PhaseRunning)
	if code := e.ts.do("POST", "/v1/instances/web/stop", nil, nil); code != 200 && code != 202 {
		t.Fatalf("stop = %d", code)
	}
	serving(false, t0.Add(6*time.Second), api.PhaseStopped)

	got, err := e.ts.store.ListLedger(context.Background(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		serving bool
		cause   string
	}{{true, ""}, {false, api.CauseNotAnswering}, {true, ""}, {false, api.CauseCrash}, {true, ""}, {false, api.CauseCustomerStop}}
	if len(got) != len(want) {
		t.Fatalf("ledger has %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Serving != w.serving || g.Cause != w.cause || g.Instance != "web" || g.Customer != "acme" || g.Node != node ||
			!g.Time.Equal(t0.Add(time.Duration(i)*time.Second+min(time.Duration(i), 1)*time.Second)) {
			t.Errorf("entry %d = %+v, want serving %v cause %q", i, g, w.serving, w.cause)
		}
	}
	// A window of the ledger.
	part, err := e.ts.store.ListLedger(context.Background(), t0.Add(2*time.Second), t0.Add(4*time.Second))
	if err != nil || len(part) != 2 {
		t.Fatalf("ledger [t0+2s, t0+4s) = %d entries (%v), want 2", len(part), err)
	}
}
