package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
)

// TestDrainReplicas drains, with --replicas, the host that holds a real
// guest's replica: the guest keeps running on its primary (no reboot),
// its replica goes to the third host with a full sync, and the node ends
// drained. Then the primary's host is killed: the guest must fail over to
// the new replica's host with every write it had fsync'ed, which only a
// complete, current copy there allows.
func TestDrainReplicas(t *testing.T) {
	c := startVMs(t, 3)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	in, err := c.ProtectedInstance(ctx, "rp-1")
	if err != nil {
		t.Fatal(err)
	}
	primary, old := in.Status.Node, in.Status.ReplicaNode
	third := ""
	for i := range 3 {
		if n := e2e.NodeName(i); n != primary && n != old {
			third = n
		}
	}
	before, err := c.Get(ctx, in.Spec.IP)
	must(t, err)
	// Data for the full sync to carry (the failover below checks the
	// guest's durable counter, written across the whole test, and a last
	// fsync'ed file).
	_, err = c.Fill(ctx, in.Spec.IP, 4)
	must(t, err)

	start := time.Now()
	if _, err := c.Client.DrainNode(ctx, old, api.DrainRequest{Replicas: true}); err != nil {
		t.Fatal(err)
	}
	var last *api.Node
	err = c.Wait(ctx, 3*time.Minute, old+" drained of its replica", func() bool {
		n, err := c.Client.GetNode(ctx, old)
		if err != nil {
			return false
		}
		last = n
		return n.Status.Drain != nil && n.Status.Drain.Drained
	})
	if err != nil {
		t.Fatalf("%v; node spec %+v status %+v\n%s", err, last.Spec.Drain, last.Status.Drain, c.Diagnostics())
	}
	t.Logf("%s drained of its replica in %s", old, time.Since(start).Round(100*time.Millisecond))
	if got := last.Spec.Drain.MovedReplicas; !slices.Equal(got, []string{"rp-1"}) || len(last.Spec.Drain.Took) != 0 {
		t.Errorf("drain moved replicas %v and instances %v, want the replica of rp-1 only", got, last.Spec.Drain.Took)
	}
	in, err = c.WaitProtected(ctx, "rp-1", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if in.Status.Node != primary || in.Status.ReplicaNode != third {
		t.Fatalf("rp-1 runs on %s with its replica on %s, want %s and %s", in.Status.Node, in.Status.ReplicaNode, primary, third)
	}
	after, err := c.Get(ctx, in.Spec.IP)
	must(t, err)
	if after.Boots != before.Boots || after.Counter < before.Counter {
		t.Errorf("boots %d -> %d, counter %d -> %d: the guest must run on while its replica moves", before.Boots, after.Boots, before.Counter, after.Counter)
	}
	evs, err := c.Client.ListEvents(ctx, 0)
	must(t, err)
	moved := false
	for _, ev := range evs.Items {
		moved = moved || (ev.Type == "ReplicaMoved" && ev.Name == "rp-1" && ev.Node == third)
	}
	if !moved {
		t.Error("no ReplicaMoved event for rp-1")
	}

	res, err := c.RunFailover(ctx, "rp-1", e2e.FaultKillHost)
	t.Logf("%s", res)
	if err != nil {
		t.Fatal(err)
	}
	if res.To != third {
		t.Errorf("failed over to %q, want the new replica's host %s", res.To, third)
	}
	if res.LostWrites != 0 || res.CounterAfter < res.CounterBefore {
		t.Errorf("after the failover: lost writes %d, counter %d -> %d", res.LostWrites, res.CounterBefore, res.CounterAfter)
	}
}
