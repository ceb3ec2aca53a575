package scheduler

// Resources is an amount of CPU, memory and disk. Memory and disk are in
// MiB, as Ganeti counts them, so that clusters read from its files compare
// exactly.
type Resources struct {
	CPUs    int64 `json:"cpus"`
	MemMiB  int64 `json:"memoryMiB"`
	DiskMiB int64 `json:"diskMiB"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{CPUs: r.CPUs + o.CPUs, MemMiB: r.MemMiB + o.MemMiB, DiskMiB: r.DiskMiB + o.DiskMiB}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{CPUs: r.CPUs - o.CPUs, MemMiB: r.MemMiB - o.MemMiB, DiskMiB: r.DiskMiB - o.DiskMiB}
}

// Node is a host as the scheduler sees it.
type Node struct {
	Name string `json:"name"`
	// Capacity is what instances may use: physical CPUs, and the memory
	// and disk left once the host's own needs are taken off.
	Capacity Resources `json:"capacity"`
	// Labels place the node in the failure domains the policy spreads
	// over, such as {"rack": "r1"}.
	Labels map[string]string `json:"labels,omitempty"`
	// Unschedulable nodes take no new primaries or replicas (drained or
	// cordoned); what they hold still counts.
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Offline nodes are down: they take nothing, and their instances need a
	// new home.
	Offline bool `json:"offline,omitempty"`
}

// Instance is an instance as the scheduler sees it.
type Instance struct {
	Name string    `json:"name"`
	Size Resources `json:"size"`
	// Primary runs the instance; Secondary holds its disk's synchronous
	// replica ("" when it has none). Both are empty for an instance not
	// placed yet.
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
	// Group is an anti-affinity group: instances of one group are kept on
	// different primaries.
	Group string   `json:"group,omitempty"`
	Tags  []string `json:"tags,omitempty"`
	// SharedDisk says the disk lives on shared storage: it takes no room
	// on any host and any host can start the instance (no secondary).
	SharedDisk bool `json:"sharedDisk,omitempty"`
}

// Policy holds the placement rules and the weights of the cluster score.
type Policy struct {
	// CPURatio is how many virtual CPUs one physical CPU may carry
	// (overcommit); default 4, as Ganeti's default vcpu-ratio.
	CPURatio float64 `json:"cpuRatio,omitempty"`
	// MemRatio is the memory overcommit ratio; default 1 (none).
	MemRatio float64 `json:"memRatio,omitempty"`
	// SpreadLabel names the node label whose values are failure domains
	// (such as "rack"): an instance's primary and secondary then sit in
	// different ones. Empty: only different nodes.
	SpreadLabel string `json:"spreadLabel,omitempty"`
	// Weights of the cluster score; zero values take the defaults.
	Weights Weights `json:"weights,omitempty"`
}

// Weights weigh the terms of the cluster score: the standard deviations of
// each resource's use across online nodes, and penalties per node failing
// N+1, per over-allocated node and per anti-affinity conflict.
type Weights struct {
	Mem      float64 `json:"mem,omitempty"`
	CPU      float64 `json:"cpu,omitempty"`
	Disk     float64 `json:"disk,omitempty"`
	Reserve  float64 `json:"reserve,omitempty"`
	N1       float64 `json:"n1,omitempty"`
	Over     float64 `json:"over,omitempty"`
	Conflict float64 `json:"conflict,omitempty"`
}

// Snapshot is the cluster the scheduler decides over.
type Snapshot struct {
	Nodes     []Node     `json:"nodes"`
	Instances []Instance `json:"instances"`
	Policy    Policy     `json:"policy"`
}

// MoveKind names how a move changes an instance's pair of hosts, in
// hbal's terms.
type MoveKind string

// Move kinds. Bytes copied: a failover migrates memory; a new secondary
// copies the disk; a new primary that held no copy gets the disk and the
// memory.
const (
	// MoveFailover swaps primary and secondary (a live migration).
	MoveFailover MoveKind = "failover"
	// MoveReplaceSecondary gives the instance a new secondary.
	MoveReplaceSecondary MoveKind = "replace-secondary"
	// MoveReplaceAndFailover makes a new node the primary and the old
	// primary the secondary (hbal's "r:X f").
	MoveReplaceAndFailover MoveKind = "replace-and-failover"
	// MoveFailoverAndReplace makes the old secondary the primary and a new
	// node the secondary (hbal's "f r:X").
	MoveFailoverAndReplace MoveKind = "failover-and-replace"
	// MovePrimary moves the primary to a new node, keeping the secondary.
	MovePrimary MoveKind = "move-primary"
	// MoveOther is any other change of the pair, such as one read from
	// another tool's plan.
	MoveOther MoveKind = "other"
)

// Move changes the hosts of one instance.
type Move struct {
	Instance     string   `json:"instance"`
	Kind         MoveKind `json:"kind"`
	OldPrimary   string   `json:"oldPrimary"`
	OldSecondary string   `json:"oldSecondary,omitempty"`
	NewPrimary   string   `json:"newPrimary"`
	NewSecondary string   `json:"newSecondary,omitempty"`
	// Bytes is what the move copies between hosts.
	Bytes int64 `json:"bytes"`
	// ScoreAfter is the cluster score once this move and those before it
	// are done.
	ScoreAfter float64 `json:"scoreAfter"`
	// N1FailuresAfter counts the nodes failing N+1 after the move.
	N1FailuresAfter int `json:"n1FailuresAfter"`
}
