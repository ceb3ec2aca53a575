package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
)

// TestVMReplicatedDisk boots a real guest from a disk ferry replicates to
// a second host, and checks the promises of the replication path end to
// end: the replica gets a full sync and is reported UpToDate; when the
// replica's agent dies (kill -9) the primary goes on only after the
// control plane outdated the replica and raised the epoch; data written
// meanwhile (10 MiB into a 1 GiB disk) is all the resync sends once the
// replica is back; and after a clean stop both copies are identical.
func TestVMReplicatedDisk(t *testing.T) {
	c := startVMs(t, 2)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 1 << 30, Image: "demo",
		Probe: &api.Probe{Type: "http", Ports: []int{80}}}
	in, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: "db-1", Spec: spec})
	must(t, err)
	ip := in.Spec.IP
	get := func() *api.Instance {
		in, err := c.Client.GetInstance(ctx, "db-1")
		if err != nil {
			return &api.Instance{}
		}
		return in
	}
	diskState := func(in *api.Instance) string {
		if in.Status.Disk == nil {
			return ""
		}
		return in.Status.Disk.State
	}
	must(t, c.Wait(ctx, 3*time.Minute, "db-1 serving with its replica up to date", func() bool {
		in := get()
		return in.Status.Serving && diskState(in) == api.DiskUpToDate && !in.Status.ReplicaOutdated
	}))
	in = get()
	primary, replica := in.Status.Node, in.Status.ReplicaNode
	if primary == "" || replica == "" || primary == replica {
		t.Fatalf("placement: primary %q replica %q", primary, replica)
	}
	epoch := in.Status.Epoch
	t.Logf("db-1 on %s, replica on %s, epoch %d; initial sync sent %d bytes", primary, replica, epoch, in.Status.Disk.Sync.SentBytes)
	first, err := c.Get(ctx, ip)
	must(t, err)

	// The replica host's agent dies: the primary loses its link, freezes,
	// and goes on degraded only with the control plane's consent.
	c.Agent(replica).Kill()
	must(t, c.Wait(ctx, time.Minute, "db-1 degraded with its replica outdated", func() bool {
		in := get()
		return diskState(in) == api.DiskDegraded && in.Status.ReplicaOutdated && in.Status.Epoch > epoch
	}))
	fill, err := c.Fill(ctx, ip, 10)
	must(t, err)
	if fill.Bytes != 10<<20 {
		t.Fatalf("fill wrote %d bytes, want 10 MiB", fill.Bytes)
	}
	if got := get().Status.Disk.DirtyBytes; got < 10<<20 {
		t.Fatalf("primary records %d dirty bytes after writing 10 MiB alone", got)
	}

	// The replica's agent comes back: only the dirty regions are resynced.
	must(t, c.StartAgent(ctx, c.Hosts.Hosts()[nodeIndex(t, replica)], replica, ""))
	must(t, c.Wait(ctx, 2*time.Minute, "db-1 replica up to date again", func() bool {
		in := get()
		return diskState(in) == api.DiskUpToDate && !in.Status.ReplicaOutdated && in.Status.Disk.Sync != nil && in.Status.Disk.Sync.Done
	}))
	sent := get().Status.Disk.Sync.SentBytes
	t.Logf("resync after writing 10 MiB into a 1 GiB disk while the replica was away sent %.1f MiB", float64(sent)/(1<<20))
	if sent < 10<<20 || sent > 24<<20 {
		t.Fatalf("resync sent %d bytes; want about 10 MiB (the dirty regions only, not the 1 GiB disk)", sent)
	}
	last, err := c.Get(ctx, ip)
	must(t, err)
	if last.Boots != first.Boots {
		t.Fatalf("the guest rebooted (boots %d -> %d) while its replica went away and came back", first.Boots, last.Boots)
	}

	// The primary's agent is killed: QEMU holds the guest's disk requests
	// (NBD reconnect) until the restarted agent serves the disk again; the
	// guest does not reboot, and the replica is brought up to date again
	// (a full pass, since the primary did not shut down cleanly).
	resyncs := countEvents(t, c, "db-1", "DiskUpToDate")
	c.Agent(primary).Kill()
	must(t, c.StartAgent(ctx, c.Hosts.Hosts()[nodeIndex(t, primary)], primary, ""))
	must(t, c.Wait(ctx, 2*time.Minute, "db-1 up to date after its agent restarted", func() bool {
		in := get()
		return diskState(in) == api.DiskUpToDate && countEvents(t, c, "db-1", "DiskUpToDate") > resyncs
	}))
	must(t, c.Wait(ctx, 30*time.Second, "the guest's counter moving after its agent restarted", func() bool {
		now, err := c.Get(ctx, ip)
		return err == nil && now.Counter > last.Counter+1 && now.Boots == first.Boots
	}))
	if check, err := c.Fill(ctx, ip, 0); err != nil || check.SHA256 != fill.SHA256 {
		t.Fatalf("the guest's data changed across its agent's restart: %+v (err %v), want sha256 %s", check, err, fill.SHA256)
	}

	// After a clean stop, the two copies are byte for byte the same.
	_, err = c.Client.StopInstance(ctx, "db-1", "")
	must(t, err)
	must(t, c.Wait(ctx, 2*time.Minute, "db-1 stopped and in sync", func() bool {
		in := get()
		return in.Status.Phase == api.PhaseStopped && diskState(in) == api.DiskUpToDate
	}))
	a := fileSum(t, filepath.Join(c.AgentDir(primary), "disks", "db-1.img"))
	b := fileSum(t, filepath.Join(c.AgentDir(replica), "disks", "db-1.img"))
	if a != b {
		t.Fatalf("after a clean stop the primary's image (sha256 %s) differs from the replica's (%s)", a, b)
	}

	// Removing the instance removes the disk on both hosts.
	_, _, err = c.Client.DeleteInstance(ctx, "db-1", "", false)
	must(t, err)
	must(t, c.Wait(ctx, time.Minute, "db-1 gone from both hosts", func() bool {
		for _, n := range []string{primary, replica} {
			if _, err := os.Stat(filepath.Join(c.AgentDir(n), "disks", "db-1.img")); !os.IsNotExist(err) {
				return false
			}
		}
		return true
	}))
}

// countEvents counts the events of one type about an instance.
func countEvents(t *testing.T, c *e2e.Cluster, name, typ string) int {
	t.Helper()
	evs, err := c.Client.ListEvents(context.Background(), 1000)
	must(t, err)
	n := 0
	for _, e := range evs.Items {
		if e.Name == name && e.Type == typ {
			n++
		}
	}
	return n
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// nodeIndex returns i for the node called e2e.NodeName(i).
func nodeIndex(t *testing.T, node string) int {
	t.Helper()
	i, err := strconv.Atoi(strings.TrimPrefix(node, "host-"))
	if err != nil || e2e.NodeName(i-1) != node {
		t.Fatalf("node %q is not an e2e host name", node)
	}
	return i - 1
}
