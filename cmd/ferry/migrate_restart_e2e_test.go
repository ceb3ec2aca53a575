package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
)

// TestMigrateServerRestart kills -9 the (only) server in the middle of a
// live migration of a real guest on a replicated disk, while its memory
// streams at a capped rate, and restarts it on its data. The migration is
// recorded in etcd, so the restarted server must carry it on: left alone
// it completes (or ends failed, the guest back on its source); cancelled
// with `ferry operation cancel` after the restart, it ends cancelled with
// the guest on its source. Either way the guest runs, without a reboot, on
// exactly one host at the end (never none meanwhile), no fsync'ed write is
// lost, and the operation ends within a deadline instead of staying
// Running.
func TestMigrateServerRestart(t *testing.T) {
	// A restart of the server under load can outlast the default fence
	// deadline (2 s), and then both hosts fence themselves, as they must
	// when they cannot tell a dead server from a partition. This test is
	// about the migration's state surviving the restart: longer leases.
	c := startVMsWith(t, e2e.Options{Hosts: 2, NodeTTL: 8 * time.Second})
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	const name = "rs-1"
	if _, err := c.ProtectedInstance(ctx, name); err != nil {
		t.Fatal(err)
	}

	// run migrates rs-1 as req says, kills and restarts the server once
	// the memory streams, then cancels the migration through the CLI if
	// cancel is set; it checks what must hold whatever the outcome.
	run := func(t *testing.T, req api.MigrateRequest, cancel bool) e2e.MigrationResult {
		t.Helper()
		fences := map[string]int{}
		for i := range c.Hosts.Hosts() {
			recs, err := agent.FenceRecords(c.AgentDir(e2e.NodeName(i)))
			must(t, err)
			fences[e2e.NodeName(i)] = len(recs)
		}
		qemus := c.WatchQEMUs(ctx, name, 50*time.Millisecond)
		defer qemus.Stop()
		var killed, restarted time.Time
		var atKill *api.Operation
		res, err := c.RunMigration(ctx, name, req, func(op *api.Operation) error {
			err := c.Wait(ctx, 2*time.Minute, op.Name+" transferring", func() bool {
				got, err := c.Client.GetOperation(ctx, op.Name)
				if err != nil {
					return false
				}
				atKill = got
				return got.State != api.OpRunning || got.Step(api.StepPrepared) != nil && got.Progress != nil && got.Progress.RAMTransferred > 0
			})
			if err != nil {
				return err
			}
			if atKill.State != api.OpRunning {
				return fmt.Errorf("operation %s ended %s before the kill: %s", atKill.Name, atKill.State, atKill.Message)
			}
			var away time.Duration
			killed, away, err = c.RestartServer(ctx)
			if err != nil {
				return err
			}
			restarted = killed.Add(away)
			t.Logf("server killed %s into the transfer (%s of %s sent), back after %s",
				killed.Sub(atKill.StartedAt).Round(time.Millisecond), api.Bytes(atKill.Progress.RAMTransferred).Human(),
				api.Bytes(atKill.Progress.RAMTotal).Human(), away.Round(time.Millisecond))
			// The restarted server still has the migration.
			got, err := c.Client.GetOperation(ctx, op.Name)
			if err != nil {
				return fmt.Errorf("operation %s after the restart: %w", op.Name, err)
			}
			in, err := c.Client.GetInstance(ctx, name)
			if err != nil {
				return err
			}
			t.Logf("after the restart: operation %s %s (%s); instance on %s, migration %+v", got.Name, got.State, got.Message, in.Status.Node, in.Status.Migration)
			if !cancel {
				return nil
			}
			if got.State != api.OpRunning {
				return fmt.Errorf("operation %s ended %s (%s) before it could be cancelled: the transfer was meant to outlast the restart", got.Name, got.State, got.Message)
			}
			out, err := c.CLI(ctx, "operation", "cancel", op.Name)
			t.Logf("ferry operation cancel %s: %s", op.Name, out)
			return err
		})
		if err != nil {
			// Leave no migration in flight for the next subtest.
			if op := res.Operation; op != nil && op.State == api.OpRunning {
				_, cerr := c.Client.CancelOperation(ctx, op.Name)
				t.Logf("cancelling %s after the failure: %v", op.Name, cerr)
			}
			t.Fatalf("%v (%s)", err, res)
		}
		t.Logf("%s", res)
		for _, st := range res.Operation.Steps {
			t.Logf("  step %-11s %+6.2fs from the kill: %s", st.Name, st.At.Sub(killed).Seconds(), st.Message)
		}
		if atKill == nil || atKill.State != api.OpRunning || atKill.Step(api.StepTransferred) != nil {
			t.Fatalf("the server was not killed mid-transfer: operation then %+v", atKill)
		}
		op := res.Operation
		// Ended, and soon after the server came back.
		if op.State == api.OpRunning || op.EndedAt.IsZero() {
			t.Fatalf("operation %s still %s", op.Name, op.State)
		}
		if d := op.EndedAt.Sub(restarted); d > 3*time.Minute {
			t.Errorf("operation %s ended %s after the server came back", op.Name, d.Round(time.Second))
		}
		// Settled: one QEMU for the guest, where the control plane says.
		var in *api.Instance
		var per map[string]int
		err = c.Wait(ctx, time.Minute, name+" running as one QEMU where it is placed", func() bool {
			got, err := c.Client.GetInstance(ctx, name)
			if err != nil {
				return false
			}
			in = got
			per, err = c.InstanceQEMUs(name)
			return err == nil && len(per) == 1 && per[got.Status.Node] == 1 && got.Status.Migration == nil
		})
		if err != nil {
			if in == nil {
				t.Fatal(err)
			}
			t.Fatalf("%v: QEMUs %v, instance on %s, migration %+v", err, per, in.Status.Node, in.Status.Migration)
		}
		st := qemus.Stop()
		t.Logf("QEMUs of %s: %d samples, %d with none, at most %d on %d hosts", name, st.Samples, st.Zero, st.Most, st.MostHosts)
		if st.Zero > 0 {
			t.Errorf("%s ran nowhere in %d samples (the first %s after the kill)", name, st.Zero, st.FirstZero.Sub(killed).Round(time.Millisecond))
		}
		if st.Most > 2 {
			t.Errorf("%s had %d QEMU processes at once", name, st.Most)
		}
		if res.LostWrites != 0 {
			t.Error("data the guest had fsync'ed before the migration is gone")
		}
		if res.CounterAfter < res.CounterBefore {
			t.Errorf("the guest's durable counter went back from %d to %d", res.CounterBefore, res.CounterAfter)
		}
		if res.BootsAfter != res.BootsBefore {
			t.Errorf("the guest rebooted (boots %d -> %d)", res.BootsBefore, res.BootsAfter)
		}
		// The guest does not need the control plane to run: the restart
		// must not silence it (loose, for a loaded machine).
		if res.Downtime > 20*time.Second {
			t.Errorf("the guest did not answer for %s", res.Downtime)
		}
		switch op.State {
		case api.OpSucceeded:
			if res.To == res.From || in.Status.ReplicaNode != res.From {
				t.Errorf("operation %s succeeded, yet %s is on %s with its replica on %s (it was on %s)", op.Name, name, res.To, in.Status.ReplicaNode, res.From)
			}
		default:
			if res.To != res.From {
				t.Errorf("operation %s ended %s, yet %s moved from %s to %s", op.Name, op.State, name, res.From, res.To)
			}
		}
		for i := range c.Hosts.Hosts() {
			n := e2e.NodeName(i)
			recs, err := agent.FenceRecords(c.AgentDir(n))
			must(t, err)
			if len(recs) != fences[n] {
				t.Errorf("%s fenced itself while the server restarted: %+v", n, recs[fences[n]:])
			}
		}
		if _, err := c.WaitProtected(ctx, name, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		return res
	}

	// Left alone after the restart: the transfer goes on and the
	// migration completes. At 16 MiB/s it takes seconds, so the kill comes
	// in its middle; slower, it would not converge: the guest, polled every
	// 50 ms, keeps dirtying about 2 MiB, more than a 300 ms pause sends
	// at 4 MiB/s.
	t.Run("resume", func(t *testing.T) {
		res := run(t, api.MigrateRequest{Mode: api.MigrateLive, MaxBandwidth: 16 << 20, ConvergeSeconds: 600}, false)
		if res.Operation.State != api.OpSucceeded {
			t.Logf("the migration did not complete after the restart; it ended %s: %s", res.Operation.State, res.Operation.Message)
		}
	})
	// Cancelled after the restart: a transfer at 1 MiB/s takes minutes.
	t.Run("cancel", func(t *testing.T) {
		res := run(t, api.MigrateRequest{Mode: api.MigrateLive, MaxBandwidth: 1 << 20, ConvergeSeconds: 600}, true)
		if res.Operation.State != api.OpCancelled {
			t.Errorf("operation %s ended %s (%s), want %s", res.Operation.Name, res.Operation.State, res.Operation.Message, api.OpCancelled)
		}
	})
}
