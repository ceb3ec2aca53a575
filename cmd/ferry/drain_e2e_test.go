package main

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/e2e"
)

// TestDrain drains a host that is the primary of three real guests on
// replicated disks, two migrations at a time, while a client polls each
// guest's HTTP service every 50 ms: every guest moves to another host (no
// lost fsync'ed write; live: no reboot, cold: one), each move is a migrate
// operation that succeeded, never more than two ran at once, and the node
// stays cordoned. Then `undrain --restore` brings the three back the same
// way and makes the node schedulable again.
//
// The drain is cold unless FERRY_E2E_DRAIN_MODE=live: under TCG a guest
// occasionally panics right after a live migration that QEMU reported
// complete (about 2 in 100 migrations in repeated drains; see the issue
// notes), which would make this test fail at random in CI. Live
// migration itself is tested by TestMigrate and TestMigrateServerRestart;
// the drain's logic does not depend on the mode.
func TestDrain(t *testing.T) {
	mode := api.MigrateCold
	if os.Getenv("FERRY_E2E_DRAIN_MODE") == api.MigrateLive {
		mode = api.MigrateLive
	}
	c := startVMs(t, 3)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	node := e2e.NodeName(0)
	names := []string{"dr-1", "dr-2", "dr-3"}
	setup := time.Now()
	must(t, c.ProtectedInstancesOn(ctx, node, names))
	t.Logf("three protected instances on %s in %s", node, time.Since(setup).Round(time.Second))

	// check holds for a drain and a restore alike: every guest moved live,
	// by one migration that succeeded, and ran on and on.
	check := func(t *testing.T, res e2e.DrainResult, cause string, wantOn func(mv e2e.MoveResult) bool) {
		t.Helper()
		t.Logf("%s", res)
		if res.MaxOverlap > res.Limit || res.MaxMigrating > res.Limit {
			t.Errorf("up to %d migrations from or to %s at once by the operations, %d by its status: the limit is %d", res.MaxOverlap, node, res.MaxMigrating, res.Limit)
		}
		// Three instances and room for two: the first two go together.
		if res.MaxOverlap < res.Limit {
			t.Errorf("at most %d migrations at once: the drain did not use its limit of %d", res.MaxOverlap, res.Limit)
		}
		for _, mv := range res.Moves {
			if len(mv.Operations) != 1 {
				t.Errorf("%s: %d migrations, want 1", mv.Instance, len(mv.Operations))
			}
			for _, op := range mv.Operations {
				if op.State != api.OpSucceeded {
					t.Errorf("%s: operation %s ended %s: %s", mv.Instance, op.Name, op.State, op.Message)
				}
				if op.Mode != mode || op.Cause != cause || op.From != mv.From || op.To != mv.To {
					t.Errorf("%s: operation %s is %s from %s to %s because %q; want %s from %s to %s because of %q", mv.Instance, op.Name, op.Mode, op.From, op.To, op.Cause, mode, mv.From, mv.To, cause)
				}
			}
			if !wantOn(mv) {
				t.Errorf("%s is on %s (it was on %s)", mv.Instance, mv.To, mv.From)
			}
			switch {
			case mode == api.MigrateLive && mv.BootsAfter != mv.BootsBefore:
				t.Errorf("%s rebooted (boots %d -> %d): a live migration must keep it running; its console on %s:\n%s",
					mv.Instance, mv.BootsBefore, mv.BootsAfter, mv.To, c.ConsoleTail(mv.To, mv.Instance, 80))
			case mode == api.MigrateCold && mv.BootsAfter != mv.BootsBefore+1:
				t.Errorf("%s: boots %d -> %d: a cold migration is one reboot; its console on %s:\n%s",
					mv.Instance, mv.BootsBefore, mv.BootsAfter, mv.To, c.ConsoleTail(mv.To, mv.Instance, 80))
			}
			if mv.LostWrites != 0 {
				t.Errorf("%s: data the guest had fsync'ed before is gone", mv.Instance)
			}
			if mv.CounterAfter < mv.CounterBefore {
				t.Errorf("%s: the guest's durable counter went back from %d to %d", mv.Instance, mv.CounterBefore, mv.CounterAfter)
			}
			// Very loose: on two cores, two guests moving at once under
			// TCG (each target starting a QEMU, the sources sending the
			// memory) starve all three of CPU, and a guest that answers
			// later than the client's 250 ms counts as silent: gaps of
			// 2 to 8 s were seen, while QEMU paused each guest for at
			// most half a second. bench/migrate holds the 0.5 s target
			// for one migration; this catches a guest that stopped.
			limit := 20 * time.Second
			if mode == api.MigrateCold {
				limit = time.Minute // a reboot, two at a time
			}
			if mv.Downtime > limit {
				t.Errorf("%s did not answer for %s", mv.Instance, mv.Downtime)
			}
			in, err := c.Client.GetInstance(ctx, mv.Instance)
			must(t, err)
			if in.Status.Phase != api.PhaseRunning || in.Status.Migration != nil || in.Status.ReplicaNode != mv.From {
				t.Errorf("%s: %s, migration %+v, replica on %q (want Running, none, %s)", mv.Instance, in.Status.Phase, in.Status.Migration, in.Status.ReplicaNode, mv.From)
			}
			qemus, err := c.InstanceQEMUs(mv.Instance)
			must(t, err)
			if len(qemus) != 1 || qemus[mv.To] != 1 {
				t.Errorf("%s runs as QEMU processes %v, want one on %s", mv.Instance, qemus, mv.To)
			}
		}
	}

	t.Run("drain", func(t *testing.T) {
		res, err := c.RunDrain(ctx, node, api.DrainRequest{Mode: mode, MaxConcurrent: 2}, names)
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, "drain of "+node, func(mv e2e.MoveResult) bool { return mv.To != node && mv.To != "" })
		// The controller records when it saw the node empty.
		var n *api.Node
		must(t, c.Wait(ctx, 30*time.Second, node+" recorded as drained", func() bool {
			got, err := c.Client.GetNode(ctx, node)
			n = got
			return err == nil && got.Spec.Drain != nil && !got.Spec.Drain.DrainedAt.IsZero()
		}))
		if !n.Spec.Unschedulable || n.Status.Drain == nil || !n.Status.Drain.Drained || n.Status.Drain.Remaining != 0 {
			t.Fatalf("after the drain %s has spec %+v, drain status %+v: want cordoned and drained", node, n.Spec, n.Status.Drain)
		}
		if took := slices.Sorted(slices.Values(n.Spec.Drain.Took)); !slices.Equal(took, names) {
			t.Errorf("the drain took %v, want %v", took, names)
		}
		// A drained node takes no new instance, not even its replica.
		spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo"}
		_, err = c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: "dr-new", Spec: spec})
		must(t, err)
		var in *api.Instance
		must(t, c.Wait(ctx, time.Minute, "dr-new placed", func() bool {
			in, err = c.Client.GetInstance(ctx, "dr-new")
			return err == nil && in.Status.Node != "" && in.Status.ReplicaNode != ""
		}))
		if in.Status.Node == node || in.Status.ReplicaNode == node {
			t.Errorf("a new instance was placed on the drained %s (primary %s, replica %s)", node, in.Status.Node, in.Status.ReplicaNode)
		}
		_, _, err = c.Client.DeleteInstance(ctx, "dr-new", "", false)
		must(t, err)
		must(t, c.Wait(ctx, 2*time.Minute, "dr-new deleted", func() bool {
			_, err := c.Client.GetInstance(ctx, "dr-new")
			return client.IsNotFound(err)
		}))
		for _, name := range names {
			if _, err := c.WaitProtected(ctx, name, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	})
	if t.Failed() {
		return
	}
	t.Run("undrain-restore", func(t *testing.T) {
		res, err := c.RunRestore(ctx, node, names)
		if err != nil {
			t.Fatal(err)
		}
		check(t, res, "restore after the drain of "+node, func(mv e2e.MoveResult) bool { return mv.To == node })
		n := res.NodeAfter
		if n.Spec.Unschedulable || n.Spec.Drain != nil || n.Spec.Restore != nil || n.Status.Drain != nil {
			t.Errorf("after the restore %s has spec %+v, drain status %+v: want schedulable, no drain, no restore", node, n.Spec, n.Status.Drain)
		}
		for _, name := range names {
			if _, err := c.WaitProtected(ctx, name, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	})
}
