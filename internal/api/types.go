package api

import "time"

// Meta is what every stored object carries besides its spec and status.
type Meta struct {
	// Name is unique per kind and is the object's key.
	Name string `json:"name"`
	// ResourceVersion is the etcd mod revision the object was read at. A write
	// that carries it succeeds only if nobody wrote in between (409 otherwise).
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// UID tells apart two objects that had the same name at different times.
	UID       string    `json:"uid,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// DesiredState is what the user asked an instance to be doing.
type DesiredState string

// Desired states of an instance.
const (
	DesiredRunning DesiredState = "running"
	DesiredStopped DesiredState = "stopped"
)

// Phase is where an instance is in its life, as observed.
type Phase string

// Instance phases.
const (
	PhasePending   Phase = "Pending"   // accepted, waiting for a host
	PhaseScheduled Phase = "Scheduled" // a host was chosen, its agent has not acted yet
	PhaseStarting  Phase = "Starting"
	PhaseRunning   Phase = "Running"
	PhaseStopping  Phase = "Stopping"
	PhaseStopped   Phase = "Stopped"
	PhaseFailed    Phase = "Failed"
	PhaseDeleting  Phase = "Deleting"
)

// Phases lists every phase, in life order, for metrics and docs.
var Phases = []Phase{PhasePending, PhaseScheduled, PhaseStarting, PhaseRunning, PhaseStopping, PhaseStopped, PhaseFailed, PhaseDeleting}

// Instance is a customer machine: a disk image plus a small spec.
type Instance struct {
	Meta
	Spec   InstanceSpec   `json:"spec"`
	Status InstanceStatus `json:"status"`
}

// InstanceSpec is what the user declares.
type InstanceSpec struct {
	CPUs   int   `json:"cpus"`
	Memory Bytes `json:"memory"`
	Disk   Bytes `json:"disk"`
	// Image names a registered image the disk is cloned from.
	Image string `json:"image"`
	// State is the desired run state; "running" unless created stopped.
	State DesiredState `json:"state"`
	// Owner is the customer the instance belongs to (for SLA reports).
	Owner string `json:"owner,omitempty"`
	// Network names the network of the instance's NIC. Empty means the
	// network called "default" if the cluster has one, else no NIC.
	Network string `json:"network,omitempty"`
	// MAC and IP are the instance's network identity for its whole life,
	// wherever it runs. Left empty, ferry assigns them at create.
	MAC string `json:"mac,omitempty"`
	IP  string `json:"ip,omitempty"`
	// Storage is where the disk lives: "local" (default: on the host's own
	// disk) or "shared:/path" (a directory every host mounts, e.g. NFS or
	// CephFS; the instance can then start on any host without copying).
	Storage string `json:"storage,omitempty"`
	// Probe is how ferry decides the guest is serving its customers.
	// Default: a TCP connect to port 22 or 80 succeeds.
	Probe *Probe `json:"probe,omitempty"`
	// RestartPolicy says what the agent does when the VM stops by itself:
	// "always" (default), "on-failure" (not after a clean guest poweroff)
	// or "never".
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	// HA says whether ferry fails the instance over to its replica host
	// when its host dies. Default (nil) is on.
	HA *bool `json:"ha,omitempty"`
	// Group is an anti-affinity group (a name, optional): the scheduler
	// keeps instances of one group on different hosts, so that one host
	// failing takes down at most one of them.
	Group string `json:"group,omitempty"`
}

// HAEnabled reports whether the instance is failed over when its host dies.
func (s InstanceSpec) HAEnabled() bool { return s.HA == nil || *s.HA }

// RestartPolicy is what happens when a VM stops without being asked to.
type RestartPolicy string

// Restart policies.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// Probe is a health check run by the agent every second from the host.
type Probe struct {
	// Type is "tcp" (a connect succeeds) or "http" (GET answers 2xx/3xx).
	Type string `json:"type"`
	// Ports are tried in order; the guest serves if any one answers.
	Ports []int `json:"ports"`
	// Path is the HTTP path for type "http"; default "/".
	Path string `json:"path,omitempty"`
}

// DefaultProbe is used when an instance has none: TCP 22 or 80.
func DefaultProbe() Probe { return Probe{Type: "tcp", Ports: []int{22, 80}} }

// StorageShared is the prefix of a shared storage spec ("shared:/mnt/x").
const StorageShared = "shared:"

// SharedPath returns the directory of a shared storage spec, or "".
func (s InstanceSpec) SharedPath() string {
	if len(s.Storage) > len(StorageShared) && s.Storage[:len(StorageShared)] == StorageShared {
		return s.Storage[len(StorageShared):]
	}
	return ""
}

// InstanceStatus is what ferry observed and decided.
type InstanceStatus struct {
	Phase Phase `json:"phase"`
	// Node is the host the instance runs on (its disk primary).
	Node string `json:"node,omitempty"`
	// ReplicaNode holds the disk's synchronous replica.
	ReplicaNode string `json:"replicaNode,omitempty"`
	// Since is when Phase last changed.
	Since     time.Time `json:"since"`
	Message   string    `json:"message,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	// Deleting is set by `rm`: the agent destroys the VM, then the record goes.
	Deleting bool `json:"deleting,omitempty"`
	// Serving is the customer's view: the health probe answers. It is
	// reported by the agent; ServingSince is when it last changed, as the
	// agent observed it.
	Serving      bool      `json:"serving"`
	ServingSince time.Time `json:"servingSince,omitempty"`
	// Boots counts the times the VM was started by ferry.
	Boots int `json:"boots,omitempty"`
	// Epoch numbers the disk's primaries: the control plane raises it at
	// every placement, promotion and outdate, and a replica refuses writes
	// from a primary with a lower one (a zombie cannot write into it).
	Epoch uint64 `json:"epoch,omitempty"`
	// ReplicaOutdated says the replica may lack acknowledged writes: it is
	// set when the replica is placed (it has no data yet) and when the
	// primary lost it and went on without it; it is cleared when the
	// primary reports the replica up to date under the current epoch. An
	// outdated replica is never promoted.
	ReplicaOutdated bool `json:"replicaOutdated,omitempty"`
	// ReplicaResets counts the times the control plane told the replica
	// host to set its copy aside and take a full sync (after divergence).
	ReplicaResets uint64 `json:"replicaResets,omitempty"`
	// Disk is the replication state of the disk, as its primary reports it.
	Disk *DiskStatus `json:"disk,omitempty"`
	// Operation names the operation (failover, migration) acting on the
	// instance, while it runs.
	Operation string `json:"operation,omitempty"`
	// Migration is the migration in flight, if any: both hosts' agents
	// act on it (see MigrationStatus).
	Migration *MigrationStatus `json:"migration,omitempty"`
}

// Operation is a long action ferry takes on an instance, such as a
// failover: its cause, its steps with their times, and its outcome. It is
// written in the same transaction as the instance change that starts it, so
// a restarted leader resumes it and two cannot run at once.
type Operation struct {
	Meta
	// Type is "failover" or "migrate".
	Type string `json:"type"`
	// Mode is a migration's mode, "live" or "cold" (it turns cold when a
	// live transfer falls back).
	Mode     string `json:"mode,omitempty"`
	Instance string `json:"instance"`
	// Cause says why ferry acted, e.g. "host-1's lease expired".
	Cause string `json:"cause"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
	// Epoch is the epoch the instance's disk has on To.
	Epoch uint64 `json:"epoch,omitempty"`
	// State is Running, Succeeded, Failed or Cancelled.
	State   string          `json:"state"`
	Message string          `json:"message,omitempty"`
	Steps   []OperationStep `json:"steps"`
	// Progress is a live migration's memory transfer, as the source
	// reported it last (at most once a second).
	Progress *MigrationProgress `json:"progress,omitempty"`
	// DowntimeMS is how long the guest was paused (live: QEMU's own
	// measure) or down (cold: from the shutdown to serving, or to the boot
	// when it has no health probe), once known.
	DowntimeMS int64 `json:"downtimeMs,omitempty"`
	// BootsBefore is the instance's boot count when the operation began;
	// a higher one means the VM booted on To.
	BootsBefore int       `json:"bootsBefore"`
	StartedAt   time.Time `json:"startedAt"`
	EndedAt     time.Time `json:"endedAt,omitempty"`
}

// Operation types, states and step names.
const (
	OpFailover = "failover"

	OpRunning   = "Running"
	OpSucceeded = "Succeeded"
	OpFailed    = "Failed"
	// OpCancelled ends an operation a user cancelled (a migration before
	// its switch).
	OpCancelled = "Cancelled"

	StepDetected = "detected"
	StepFenced   = "fenced"
	StepPromoted = "promoted"
	StepBooted   = "booted"
	StepServing  = "serving"
)

// OperationStep is one step of an operation, done at At.
type OperationStep struct {
	Name    string    `json:"name"`
	At      time.Time `json:"at"`
	Message string    `json:"message,omitempty"`
}

// Step returns the step called name, or nil.
func (o *Operation) Step(name string) *OperationStep {
	for i := range o.Steps {
		if o.Steps[i].Name == name {
			return &o.Steps[i]
		}
	}
	return nil
}

// Disk replication states, after DRBD's (see internal/disk/repl).
const (
	DiskUpToDate     = "UpToDate"
	DiskSyncing      = "Syncing"
	DiskOutdated     = "Outdated"
	DiskDegraded     = "Degraded"
	DiskFrozen       = "Frozen"
	DiskDiverged     = "Diverged"
	DiskUnreplicated = "Unreplicated"
	DiskStaleEpoch   = "StaleEpoch"
)

// DiskStates lists the disk states, for validation and docs.
var DiskStates = []string{DiskUpToDate, DiskSyncing, DiskOutdated, DiskDegraded, DiskFrozen, DiskDiverged, DiskUnreplicated, DiskStaleEpoch}

// DiskStatus is the replication state of an instance's disk.
type DiskStatus struct {
	// State is one of DiskStates.
	State string `json:"state"`
	// Reason explains the state in words.
	Reason string `json:"reason,omitempty"`
	// Epoch is the epoch the primary writes under.
	Epoch uint64 `json:"epoch"`
	// Sync describes the current resync (State Syncing) or the last one.
	Sync *DiskSync `json:"sync,omitempty"`
	// DirtyBytes is how much of the disk the replica is known to lack.
	DirtyBytes int64 `json:"dirtyBytes,omitempty"`
	// At is when the agent observed this state.
	At time.Time `json:"at"`
}

// DiskSync is the progress of a resync: what it covers, what is left, how
// fast it goes, and the data it actually sent (holes are skipped).
type DiskSync struct {
	TotalBytes     int64   `json:"totalBytes"`
	DoneBytes      int64   `json:"doneBytes"`
	SentBytes      int64   `json:"sentBytes"`
	BytesPerSecond float64 `json:"bytesPerSecond,omitempty"`
	ETASeconds     float64 `json:"etaSeconds,omitempty"`
	Done           bool    `json:"done,omitempty"`
}

// Equal reports whether two resync descriptions (either may be nil) are
// the same.
func (s *DiskSync) Equal(o *DiskSync) bool {
	if s == nil || o == nil {
		return s == o
	}
	return *s == *o
}

// Percent returns how much of the resync is done, 0-100.
func (s *DiskSync) Percent() float64 {
	if s == nil || s.TotalBytes <= 0 {
		return 100
	}
	return 100 * float64(s.DoneBytes) / float64(s.TotalBytes)
}

// OutdateRequest is the body of an agent's request to mark its instance's
// replica outdated: Epoch is the epoch the primary was writing under when
// it lost the replica.
type OutdateRequest struct {
	Epoch uint64 `json:"epoch"`
}

// OutdateResponse carries the epoch the primary may go on writing under,
// degraded.
type OutdateResponse struct {
	Epoch uint64 `json:"epoch"`
}

// Resources is an amount of CPU, memory and disk.
type Resources struct {
	CPUs   int   `json:"cpus"`
	Memory Bytes `json:"memory"`
	Disk   Bytes `json:"disk"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{CPUs: r.CPUs + o.CPUs, Memory: r.Memory + o.Memory, Disk: r.Disk + o.Disk}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{CPUs: r.CPUs - o.CPUs, Memory: r.Memory - o.Memory, Disk: r.Disk - o.Disk}
}

// Fits reports whether o fits into r.
func (r Resources) Fits(o Resources) bool {
	return o.CPUs <= r.CPUs && o.Memory <= r.Memory && o.Disk <= r.Disk
}

// Resources is what an instance asks of its host.
func (s InstanceSpec) Resources() Resources {
	return Resources{CPUs: s.CPUs, Memory: s.Memory, Disk: s.Disk}
}

// HostResources is what an instance takes from the host it runs on: a disk
// on shared storage takes no room on the host.
func (s InstanceSpec) HostResources() Resources {
	r := s.Resources()
	if s.SharedPath() != "" {
		r.Disk = 0
	}
	return r
}

// NodeState is whether a node is alive as far as the control plane knows.
type NodeState string

// Node states. Ready means its lease is held by heartbeats.
const (
	NodeReady    NodeState = "Ready"
	NodeNotReady NodeState = "NotReady"
)

// Node is a host running a ferry agent.
type Node struct {
	Meta
	Spec   NodeSpec   `json:"spec"`
	Status NodeStatus `json:"status"`
}

// NodeSpec is what the operator declares about a node.
type NodeSpec struct {
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Labels place the node in failure domains, such as rack=r1; the
	// server's --spread-label names the one whose values keep an
	// instance's primary and replica apart.
	Labels map[string]string `json:"labels,omitempty"`
	// Drain, while set, moves every instance off the node (see
	// DrainSpec); the node is unschedulable meanwhile.
	Drain *DrainSpec `json:"drain,omitempty"`
	// Restore, while set, moves the instances a drain took off the node
	// back to it (undrain --restore); the controller clears it when done.
	Restore *RestoreSpec `json:"restore,omitempty"`
}

// NodePatch is the body of PATCH /v1/nodes/{name}: a JSON merge patch of
// the node's spec. Absent fields are left as they are.
type NodePatch struct {
	// Labels sets each key given a string and removes each key given null.
	Labels map[string]*string `json:"labels,omitempty"`
	// Unschedulable, when given, cordons (true) or uncordons (false) the
	// node.
	Unschedulable *bool `json:"unschedulable,omitempty"`
	// ResourceVersion, when given, makes the patch apply only to the node
	// as it was read at that version (409 otherwise).
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// NodeStatus is what the agent reported and the control plane derived.
type NodeStatus struct {
	State NodeState `json:"state"`
	// Since is when State last changed.
	Since    time.Time `json:"since"`
	Capacity Resources `json:"capacity"`
	// Allocated is the sum of the instances placed on the node; computed on read.
	Allocated     Resources `json:"allocated"`
	Address       string    `json:"address,omitempty"`
	AgentVersion  string    `json:"agentVersion,omitempty"`
	Accel         string    `json:"accel,omitempty"`
	CertSerial    string    `json:"certSerial,omitempty"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// Drain is the progress of a drain or restore of the node, or of
	// migrations from or to it; computed on read.
	Drain *DrainStatus `json:"drain,omitempty"`
}

// Image is a registered disk image instances are cloned from.
type Image struct {
	Meta
	// Source says where the image comes from ("builtin:demo", "upload").
	Source string `json:"source"`
	// Size is the image file's size; its disk is at least this large.
	Size Bytes `json:"size,omitempty"`
	// SHA256 is the hex digest of the image file, checked by agents after
	// download.
	SHA256 string `json:"sha256,omitempty"`
	// Label is the ext4 label of the image's filesystem.
	Label string `json:"label,omitempty"`
	// Ready is true once the image's data is stored and verified.
	Ready bool `json:"ready"`
}

// Network is a layer-2 network instances attach to. Each host bridges it
// (see the agent's --bridge); IPAM hands out addresses from CIDR.
type Network struct {
	Meta
	// CIDR is the IPv4 subnet, e.g. 10.77.0.0/24.
	CIDR string `json:"cidr"`
	// Gateway is the router address guests use (inside CIDR).
	Gateway string `json:"gateway,omitempty"`
	// Reserved addresses are never handed out (hosts, routers).
	Reserved []string `json:"reserved,omitempty"`
}

// Event is one state change in the cluster, in the order etcd committed it.
type Event struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Kind is the object kind: "Instance" or "Node".
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Type names the change: Created, Scheduled, Running, Stopped, Failed,
	// Deleted, NodeJoined, NodeReady, NodeNotReady, ...
	Type    string `json:"type"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message,omitempty"`
	// Cause, on NotServing, says why (an api.Cause* value): the SLA
	// ledger records it with the change.
	Cause string `json:"cause,omitempty"`
}

// Event kinds.
const (
	KindInstance = "Instance"
	KindNode     = "Node"
)

// ErrorBody is the JSON shape of every API error: {"error":{...}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong, and which field, if one did.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// CreateInstanceRequest is the body of POST /v1/instances.
type CreateInstanceRequest struct {
	Name string       `json:"name"`
	Spec InstanceSpec `json:"spec"`
}

// JoinRequest is what an agent sends once, with its join token, to get a
// node certificate.
type JoinRequest struct {
	Token string `json:"token"`
	Node  string `json:"node"`
	// CSR is a PEM certificate signing request for the node's key, CN = Node.
	CSR string `json:"csr"`
}

// JoinResponse carries the signed node certificate and the cluster CA.
type JoinResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// Heartbeat is what the agent sends every second on its own connection.
type Heartbeat struct {
	Capacity     Resources `json:"capacity"`
	Address      string    `json:"address,omitempty"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	Accel        string    `json:"accel,omitempty"`
}

// HeartbeatAck answers a heartbeat. The agent's fencing clock counts from
// the last ack.
type HeartbeatAck struct {
	Node   string    `json:"node"`
	Time   time.Time `json:"time"`
	TTLSec int       `json:"ttlSeconds"`
}

// Assignment is one instance as its host's agent must make it true.
type Assignment struct {
	Instance Instance `json:"instance"`
}

// InstanceReport is what an agent observed about one of its instances.
type InstanceReport struct {
	// Serving, if set, is the probe's verdict since ServingAt.
	Serving   *bool     `json:"serving,omitempty"`
	ServingAt time.Time `json:"servingAt,omitempty"`
	// Booted is set on the report that follows a successful VM start.
	Booted bool `json:"booted,omitempty"`
	// GuestStopped says the VM stopped by itself and its restart policy
	// keeps it down: the desired state becomes stopped.
	GuestStopped bool   `json:"guestStopped,omitempty"`
	Phase        Phase  `json:"phase"`
	Message      string `json:"message,omitempty"`
	Error        string `json:"error,omitempty"`
	// Destroyed tells the server the VM and its disk are gone, so a record
	// marked Deleting can be removed.
	Destroyed bool `json:"destroyed,omitempty"`
}

// JoinToken is returned by POST /v1/join-tokens.
type JoinToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// JoinTokenRequest is the body of POST /v1/join-tokens.
type JoinTokenRequest struct {
	// TTLSeconds is how long the token is valid; 0 means the default (1 hour).
	TTLSeconds int `json:"ttlSeconds,omitempty"`
}

// Version describes a build.
type Version struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
}

// List is the body of every list response.
type List[T any] struct {
	Items []T `json:"items"`
	// ResourceVersion is the etcd revision the list was read at; a watch
	// started from it misses nothing.
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Assignment stream event types.
const (
	// AssignSync starts a stream: the full set of instances for the node
	// follows as AssignPut events, ended by AssignSynced.
	AssignPut    = "put"
	AssignDelete = "delete"
	AssignSynced = "synced"
	// AssignPing keeps an idle stream alive; agents ignore it.
	AssignPing = "ping"
)

// AssignmentEvent is one line of the agent's assignment stream
// (GET /v1/agent/assignments, newline-delimited JSON). A "put" carries the
// instance as the agent must make it true; "delete" means it is no longer
// this node's (moved away or removed); "synced" marks the end of the initial
// snapshot: anything running that was not in it is not this node's.
type AssignmentEvent struct {
	Type     string    `json:"type"`
	Name     string    `json:"name,omitempty"`
	Instance *Instance `json:"instance,omitempty"`
	// Network is the instance's network, when it has a NIC.
	Network *Network `json:"network,omitempty"`
	// Image is the instance's image record (for download and checks).
	Image *Image `json:"image,omitempty"`
	// Role is this node's part for the instance: "primary" (it runs the
	// VM and serves the disk) or "secondary" (it holds the replica).
	Role string `json:"role,omitempty"`
	// Peer is the other side of the disk's replication, if any.
	Peer *Peer `json:"peer,omitempty"`
	// Gone, on a delete, says the instance itself was deleted (rather than
	// moved away from this node): its disk can go too.
	Gone bool `json:"gone,omitempty"`
}

// Roles in an assignment.
const (
	RolePrimary   = "primary"
	RoleSecondary = "secondary"
)

// Peer names the other host of a replicated disk and where its agent is.
type Peer struct {
	Node    string `json:"node"`
	Address string `json:"address,omitempty"`
}

// ObjectMeta returns the object's metadata; the store uses it to fill in
// resource versions generically.
func (m *Meta) ObjectMeta() *Meta { return m }
