package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
)

// TestFailover breaks the host of a real guest on a replicated disk in the
// three ways CI runs (bench/failover repeats them): its processes are all
// killed; its cable is pulled (it must fence itself before its lease
// expires); its replica's host dies (it goes on degraded). Each time a
// client polls the guest's HTTP service every 100 ms, and the guest must
// serve again, on one host only, with every write it had fsync'ed.
func TestFailover(t *testing.T) {
	c := startVMs(t, 3)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	if _, err := c.ProtectedInstance(ctx, "ha-1"); err != nil {
		t.Fatal(err)
	}
	for _, fault := range e2e.Faults {
		ok := t.Run(string(fault), func(t *testing.T) {
			res, err := c.RunFailover(ctx, "ha-1", fault)
			t.Logf("%s", res)
			if err != nil {
				t.Fatal(err)
			}
			if res.DoubleRunning != 0 {
				t.Errorf("the instance ran on two hosts at once in %d samples", res.DoubleRunning)
			}
			if res.LostWrites != 0 {
				t.Error("data the guest had fsync'ed before the fault is gone")
			}
			if res.CounterAfter < res.CounterBefore {
				t.Errorf("the guest's durable counter went back from %d to %d", res.CounterBefore, res.CounterAfter)
			}
			switch fault {
			case e2e.FaultReplicaDies:
				if res.To != res.From {
					t.Errorf("the instance moved from %s to %s when only its replica died", res.From, res.To)
				}
				if res.LongestGap > 5*time.Second {
					t.Errorf("the guest did not answer for %s while its primary went on without the replica", res.LongestGap)
				}
				in, err := c.Client.GetInstance(ctx, "ha-1")
				must(t, err)
				if !in.Status.ReplicaOutdated {
					t.Error("the dead replica is not recorded as outdated")
				}
			default:
				if res.To == res.From || res.To == "" {
					t.Errorf("not failed over: %s -> %q", res.From, res.To)
				}
				// Generous for a loaded CI machine; bench/failover holds
				// the 10 s target.
				if res.Serving > 30*time.Second {
					t.Errorf("serving again %s after the fault", res.Serving)
				}
			}
			if fault == e2e.FaultLinksDown && res.FenceMargin <= 0 {
				t.Errorf("the cut-off host fenced itself %s after the control plane detected the failure: it must be before", -res.FenceMargin)
			}
			// The failed host is back: the instance is protected again
			// and runs on one host only.
			in, err := c.WaitProtected(ctx, "ha-1", 3*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if in.Status.Phase != api.PhaseRunning {
				t.Fatalf("ha-1 is %s after recovery", in.Status.Phase)
			}
		})
		if !ok {
			break
		}
	}
}

// TestNoFalseFailover makes the host of a protected instance slow but not
// dead: every core busy and 300 ms ± 50 ms on its path to the server; then
// its cable is pulled for less than the lease TTL. Neither may cost the
// customer a failover, a self-fence or a reboot (architecture, property
// 7). CI runs the slow host for 30 s; FERRY_SLOW_HOST=2m runs the issue's
// two minutes (bench/failover does).
func TestNoFalseFailover(t *testing.T) {
	d := 30 * time.Second
	if v := os.Getenv("FERRY_SLOW_HOST"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("FERRY_SLOW_HOST: %v", err)
		}
	}
	c := startVMs(t, 2)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	in, err := c.ProtectedInstance(ctx, "calm-1")
	must(t, err)
	res, err := c.RunSlowHost(ctx, "calm-1", d, 300*time.Millisecond, 50*time.Millisecond)
	must(t, err)
	t.Logf("slow host %s for %s: %d failovers, %d self-fences, %d reboots", res.Node, d, res.Failovers, res.Fences, res.Reboots)
	if res.Failovers+res.Fences+res.Reboots != 0 {
		t.Fatalf("a slow host was treated as dead: %+v", res)
	}

	// A cable pulled for 1.5 s (less than the 3 s lease TTL).
	h, err := c.HostOf(in.Status.Node)
	must(t, err)
	before, err := c.Client.ListOperations(ctx, "calm-1", "")
	must(t, err)
	fences, err := agent.FenceRecords(c.AgentDir(in.Status.Node))
	must(t, err)
	must(t, c.Hosts.CutLinks(ctx, h))
	time.Sleep(1500 * time.Millisecond) // the length of the outage itself
	must(t, c.Hosts.HealLinks(ctx, h))
	// Watch for longer than the TTL: nothing may happen.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		after, err := c.Client.ListOperations(ctx, "calm-1", "")
		if err == nil && len(after.Items) != len(before.Items) {
			t.Fatalf("a 1.5 s link outage caused a failover: %+v", after.Items[0])
		}
		time.Sleep(200 * time.Millisecond)
	}
	if now, _ := agent.FenceRecords(c.AgentDir(in.Status.Node)); len(now) != len(fences) {
		t.Fatalf("a 1.5 s link outage made the host fence itself: %+v", now[len(now)-1])
	}
	got, err := c.Client.GetInstance(ctx, "calm-1")
	must(t, err)
	if got.Status.Boots != in.Status.Boots || got.Status.Node != in.Status.Node {
		t.Fatalf("after a 1.5 s link outage: boots %d -> %d, node %s -> %s", in.Status.Boots, got.Status.Boots, in.Status.Node, got.Status.Node)
	}
}

// TestAgentDeathKillsItsVMs kills -9 the primary's agent alone: its QEMU
// survives the agent on purpose (a quick restart must not reboot the
// guest), but the control plane fails the instance over once the lease
// expires, so the VM guard must kill the old QEMU before that: the
// instance never runs on two hosts.
func TestAgentDeathKillsItsVMs(t *testing.T) {
	c := startVMs(t, 2)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	in, err := c.ProtectedInstance(ctx, "solo-1")
	must(t, err)
	h, err := c.HostOf(in.Status.Node)
	must(t, err)
	if qemuProcesses(t, h) != 1 {
		t.Fatalf("%d QEMU processes on %s before the test, want 1", qemuProcesses(t, h), in.Status.Node)
	}
	killed := time.Now()
	c.Agent(in.Status.Node).Kill()
	must(t, c.Wait(ctx, 10*time.Second, "the guard to kill the orphaned QEMU", func() bool { return qemuProcesses(t, h) == 0 }))
	took := time.Since(killed)
	t.Logf("QEMU killed %s after its agent died", took.Round(10*time.Millisecond))
	// The fence deadline is 2 s; the lease (3 s) must not expire first.
	if took > 3*time.Second {
		t.Fatalf("the orphaned QEMU ran %s after its agent died: longer than the lease", took)
	}
	// The lease expires and the instance fails over to its replica.
	must(t, c.Wait(ctx, time.Minute, "solo-1 failed over", func() bool {
		got, err := c.Client.GetInstance(ctx, "solo-1")
		return err == nil && got.Status.Node != in.Status.Node && got.Status.Node != ""
	}))
	// Serving there (unprotected: its only other host is the one whose
	// agent is dead).
	var got *api.Instance
	must(t, c.Wait(ctx, 2*time.Minute, "solo-1 serving on its new host", func() bool {
		got, err = c.Client.GetInstance(ctx, "solo-1")
		return err == nil && got.Status.Serving && got.Status.Operation == ""
	}))
	if got.Status.Node == in.Status.Node || qemuProcesses(t, h) != 0 {
		t.Fatalf("after the failover: on %s, %d QEMU left on the dead agent's host", got.Status.Node, qemuProcesses(t, h))
	}
}
