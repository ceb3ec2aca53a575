package controller

import (
	"maps"
	"sort"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

// Policy defaults: Ganeti's vcpu-ratio, and no memory overcommit.
const (
	DefaultCPURatio = 4
	DefaultMemRatio = 1
)

// Policy returns the scheduler policy for the given overcommit ratios and
// spread label; a ratio <= 0 takes its default.
func Policy(cpuRatio, memRatio float64, spreadLabel string) scheduler.Policy {
	if cpuRatio <= 0 {
		cpuRatio = DefaultCPURatio
	}
	if memRatio <= 0 {
		memRatio = DefaultMemRatio
	}
	return scheduler.Policy{CPURatio: cpuRatio, MemRatio: memRatio, SpreadLabel: spreadLabel}
}

// SchedulerSize converts an instance size to the scheduler's units: MiB,
// rounded up, so an instance never counts for less than it asks.
func SchedulerSize(r api.Resources) scheduler.Resources {
	return scheduler.Resources{CPUs: int64(r.CPUs), MemMiB: r.Memory.MiBCeil(), DiskMiB: r.Disk.MiBCeil()}
}

// SchedulerInstance is an instance as the scheduler sees it: its spec's
// size in MiB (rounded up), where it runs and where its replica is, its
// anti-affinity group, and whether its disk is on shared storage.
func SchedulerInstance(in *api.Instance) scheduler.Instance {
	return scheduler.Instance{
		Name:       in.Name,
		Size:       SchedulerSize(in.Spec.Resources()),
		Primary:    in.Status.Node,
		Secondary:  in.Status.ReplicaNode,
		Group:      in.Spec.Group,
		SharedDisk: in.Spec.SharedPath() != "",
	}
}

// Snapshot is the store's view of the cluster as the scheduler sees it:
// every node (its capacity in MiB, rounded down; its labels; unschedulable
// when cordoned; offline when its lease is gone) and every instance,
// placed or not. A node an instance still names but that was removed
// (`ferry node rm --force`) appears offline with no capacity, so that the
// instance shows as needing a new home rather than making the snapshot
// inconsistent. Nodes and instances are sorted by name.
func Snapshot(nodes []*api.Node, alive map[string]bool, insts []*api.Instance, policy scheduler.Policy) scheduler.Snapshot {
	snap := scheduler.Snapshot{Nodes: []scheduler.Node{}, Instances: []scheduler.Instance{}, Policy: policy}
	known := map[string]bool{}
	for _, n := range nodes {
		known[n.Name] = true
		var labels map[string]string
		if len(n.Spec.Labels) > 0 {
			labels = maps.Clone(n.Spec.Labels)
		}
		snap.Nodes = append(snap.Nodes, scheduler.Node{
			Name: n.Name,
			Capacity: scheduler.Resources{
				CPUs:    int64(n.Status.Capacity.CPUs),
				MemMiB:  n.Status.Capacity.Memory.MiBFloor(),
				DiskMiB: n.Status.Capacity.Disk.MiBFloor(),
			},
			Labels:        labels,
			Unschedulable: n.Spec.Unschedulable,
			Offline:       !alive[n.Name],
		})
	}
	for _, in := range insts {
		si := SchedulerInstance(in)
		if si.Primary == "" || si.SharedDisk || si.Secondary == si.Primary {
			// A replica without a primary, of a shared disk or on the
			// primary itself is not a placement the scheduler knows.
			si.Secondary = ""
		}
		for _, name := range []string{si.Primary, si.Secondary} {
			if name != "" && !known[name] {
				known[name] = true
				snap.Nodes = append(snap.Nodes, scheduler.Node{Name: name, Offline: true})
			}
		}
		snap.Instances = append(snap.Instances, si)
	}
	sort.Slice(snap.Nodes, func(i, j int) bool { return snap.Nodes[i].Name < snap.Nodes[j].Name })
	sort.Slice(snap.Instances, func(i, j int) bool { return snap.Instances[i].Name < snap.Instances[j].Name })
	return snap
}

// migrationPrefix names the stand-ins withMigrations adds; instance names
// cannot hold a colon, so they never collide with one.
const migrationPrefix = "migration:"

// withMigrations adds to snap what the migrations in flight before their
// switch hold on their targets, so that placement and failover do not give
// that room away: an instance of the guest's CPU and memory on the target
// (the waiting VM, or the cold boot to come), with the disk when the move
// copies it to a host that held no replica. A migration whose source is
// down is being abandoned (failover takes over) and holds nothing. The
// stand-ins have no replica (nothing to fail over) and only count in the
// decisions made through this view; the API's cluster snapshot shows
// instances only.
func withMigrations(snap scheduler.Snapshot, insts []*api.Instance, alive map[string]bool) scheduler.Snapshot {
	for _, in := range insts {
		m := in.Status.Migration
		if m == nil || m.Phase == api.MigSwitched || m.Target == "" || m.Target == in.Status.Node || !alive[m.Target] || !alive[in.Status.Node] {
			continue
		}
		size := SchedulerSize(in.Spec.HostResources())
		if !m.Copy {
			size.DiskMiB = 0 // the replica there is counted already
		}
		snap.Instances = append(snap.Instances, scheduler.Instance{Name: migrationPrefix + in.Name, Size: size, Primary: m.Target})
	}
	sort.Slice(snap.Instances, func(i, j int) bool { return snap.Instances[i].Name < snap.Instances[j].Name })
	return snap
}
