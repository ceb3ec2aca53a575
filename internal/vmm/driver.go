package vmm

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors every driver returns, so callers can use errors.Is.
var (
	// ErrNotFound means the driver knows no VM with that ID.
	ErrNotFound = errors.New("vmm: vm not found")
	// ErrAlreadyRunning means Start was called for an ID that is running.
	ErrAlreadyRunning = errors.New("vmm: vm already running")
	// ErrNotConverged means Migrator.Migrate gave up when
	// MigrateOptions.ConvergeTimeout passed: the guest dirtied memory
	// faster than it could be sent. The source VM runs on.
	ErrNotConverged = errors.New("vmm: live migration did not converge")
	// ErrIncomingFailed is wrapped by the exit error (ExitResult.Err,
	// whose text Status.ExitError repeats) of a VM from
	// Migrator.StartIncoming whose process ended because its incoming
	// migration failed or was cancelled before completing: it never ran,
	// and must not be restarted in its place.
	ErrIncomingFailed = errors.New("vmm: incoming live migration failed")
)

// Spec is everything a driver needs to start one VM.
type Spec struct {
	// ID is the instance name; drivers key every VM by it.
	ID       string
	CPUs     int
	MemoryMB int
	// DiskPath is the raw image file the VM boots from. It is ignored when
	// DiskNBD is set.
	DiskPath string
	// DiskNBD, if set, is the unix socket of an NBD server that exports the
	// VM's disk; DiskNBDExport names the export ("" for the server's
	// default export).
	DiskNBD       string
	DiskNBDExport string
	// Kernel, Initrd and Cmdline boot the guest directly: ferry extracts
	// the kernel and initrd from the instance's own disk (/boot).
	Kernel  string
	Initrd  string
	Cmdline string
	// MAC and IP are the instance's network identity (may be empty).
	MAC string
	IP  string
	// TapName is an existing tap device on the host bridge for the NIC;
	// empty means no NIC, unless UserNetHostFwd is set.
	TapName string
	// UserNetHostFwd, used only when TapName is empty, gives the VM a NIC
	// on user-mode networking (no bridge, no root) with ports forwarded
	// from the host's 127.0.0.1: a comma-separated list of
	// [tcp:|udp:]HOSTPORT-GUESTPORT, such as "tcp:2222-22,8080-80". It is
	// for tests and single-machine trials, not for production. (A string,
	// so that Spec stays comparable.)
	UserNetHostFwd string
	// StateDir is where the driver keeps per-VM files (sockets, logs, pid).
	StateDir string
}

// Handle is what a driver needs to find a running VM again after the agent
// restarts. Drivers fill it; the agent persists it as opaque JSON.
type Handle struct {
	ID     string `json:"id"`
	Driver string `json:"driver"`
	// PID is the VM process, 0 for drivers without processes.
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	// Data is driver-specific.
	Data map[string]string `json:"data,omitempty"`
}

// State is the run state of a VM as its driver sees it.
type State string

// VM states.
const (
	StateRunning State = "running"
	StateStopped State = "stopped"
	StateCrashed State = "crashed"
)

// Status is the result of Inspect.
type Status struct {
	ID        string
	State     State
	StartedAt time.Time
	// ExitError says why a VM is no longer running, if it did not stop cleanly.
	ExitError string
	// Paused is set for a VM whose process runs (State is StateRunning)
	// but whose CPUs are stopped for a live migration: a VM from
	// Migrator.StartIncoming before its Resume, or a source whose
	// migration completed (until it is destroyed, or resumed to roll the
	// migration back).
	Paused bool
}

// ExitResult is delivered once when a VM stops, for whatever reason.
type ExitResult struct {
	ID string
	// Err is nil for a clean shutdown, non-nil for a crash or kill.
	Err error
	At  time.Time
}

// Driver runs VMs on one host. Implementations must be safe for concurrent
// use; calls for different IDs must not block each other.
type Driver interface {
	// Name identifies the driver ("fake", "qemu").
	Name() string
	// Start boots a VM and returns its handle once the VM is running.
	// It returns ErrAlreadyRunning if a VM with spec.ID runs.
	Start(ctx context.Context, spec Spec) (Handle, error)
	// Recover re-attaches to a VM started by an earlier agent process from
	// its persisted handle. It returns ErrNotFound if the VM is gone.
	Recover(ctx context.Context, h Handle) error
	// Wait returns a channel that receives one ExitResult when the VM stops
	// and is then closed. Cancelling ctx closes the channel without a value.
	Wait(ctx context.Context, id string) (<-chan ExitResult, error)
	// Stop asks the guest to shut down and kills it after timeout. Stopping a
	// VM that is not running returns nil.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Destroy kills the VM if it runs and removes every resource the driver
	// holds for it. Destroying an unknown ID returns nil.
	Destroy(ctx context.Context, id string) error
	// Inspect reports the VM's state, or ErrNotFound.
	Inspect(ctx context.Context, id string) (Status, error)
	// List returns the IDs of every VM the driver knows.
	List(ctx context.Context) ([]string, error)
}

// Capabilities says what a driver needs from the agent.
type Capabilities struct {
	// RealDisks: the driver boots the instance's disk image, so the agent
	// must create the disk, extract its kernel, and create its tap device.
	RealDisks bool
}

// Capabler is implemented by drivers that have capabilities beyond the
// fake driver's (which needs nothing prepared).
type Capabler interface {
	Capabilities() Capabilities
}

// Announcer is implemented by drivers that can make the LAN learn a VM's
// location at once after it starts on a new host (QEMU's announce-self
// sends gratuitous RARP/ARP from the guest's MAC).
type Announcer interface {
	Announce(ctx context.Context, id string) error
}

// Sweeper is implemented by drivers whose VMs can outlive a lost handle
// (an agent killed between launching a VM and saving its handle). Sweep
// kills such a VM of id found through stateDir and reports whether there
// was one; the agent calls it for VM directories that have no handle.
type Sweeper interface {
	Sweep(ctx context.Context, id, stateDir string) (bool, error)
}

// Migrator is implemented by drivers that can move a running VM's memory
// and device state to another host (live migration). The disk is not
// copied: both hosts must serve the same data (each its own replica).
type Migrator interface {
	// StartIncoming starts a VM from spec that waits for a live migration
	// instead of booting: it listens on opts.Listen ("host:port"; port 0
	// picks a free one), with opts.TLS if set, and the VM stays paused after the migration completes
	// until Resume. It returns once the VM listens, with its handle and
	// the URI the source must send to ("tcp:10.0.0.2:49153"). spec must
	// be the source's (same CPUs, memory, disk, NIC and MAC); Kernel,
	// Initrd and Cmdline may be given or left empty (the memory carries
	// the running kernel; they only matter if the guest reboots). The
	// VM's disk is opened at start but not read or written until Resume.
	// If the migration fails or is cancelled, the VM's process ends by
	// itself, with an exit error that wraps ErrIncomingFailed.
	StartIncoming(ctx context.Context, spec Spec, opts IncomingOptions) (Handle, string, error)
	// Migrate sends running VM id to uri (from StartIncoming). It returns
	// when the migration completed (the source VM is then paused for good:
	// Destroy it, or Resume it to roll back before the target runs) or
	// failed or was cancelled (the source VM runs on, as before). progress,
	// if not nil, is called from Migrate's goroutine about every 250 ms.
	// If ctx ends first, Migrate cancels the migration, waits until it is
	// cancelled, and returns an error wrapping ctx.Err(): the source VM
	// runs on. MigrateOptions.ConvergeTimeout, if > 0, cancels the same
	// way and returns ErrNotConverged when the migration has not
	// completed by then.
	Migrate(ctx context.Context, id, uri string, opts MigrateOptions, progress func(MigrationProgress)) (MigrationResult, error)
	// Resume runs a paused VM: the target of a migration, once it has
	// completed (Resume waits for that, until ctx ends), or a source whose
	// completed migration is being abandoned (it takes its disk back; the
	// target must never have run). Resuming a running VM returns nil.
	Resume(ctx context.Context, id string) error
}

// IncomingOptions say where and how a VM from Migrator.StartIncoming
// takes its migration.
type IncomingOptions struct {
	// Listen is "host:port"; port 0 picks a free one.
	Listen string
	// TLS, if set, makes the target accept only a source that proves
	// itself with a certificate of TLS.Dir's CA, over TLS. The source
	// must migrate with TLS too.
	TLS *MigrationTLS
}

// MigrationTLS secures a migration stream with mutual TLS: the guest's
// memory holds its secrets, and the cluster network may be shared. Each
// end shows its host's certificate and checks the other's against the
// cluster CA.
type MigrationTLS struct {
	// Dir holds the files in QEMU's layout: ca-cert.pem, and this host's
	// certificate and key as server-cert.pem and server-key.pem (used by
	// a target) and client-cert.pem and client-key.pem (a source).
	Dir string
	// Hostname is the name the target's certificate must carry; the
	// source checks it (a target ignores it).
	Hostname string
}

// MigrateOptions tune Migrator.Migrate. The zero value is valid.
type MigrateOptions struct {
	// TLS, if set, sends the migration over TLS (the target must have
	// been started with TLS).
	TLS *MigrationTLS
	// DowntimeLimit is the longest pause of the guest the migration may
	// plan for its last step: it goes on copying the memory the guest
	// dirties until what is left can be sent within it. Default 300 ms.
	DowntimeLimit time.Duration
	// MaxBandwidth caps the migration stream, in bytes per second; 0
	// means no cap.
	MaxBandwidth int64
	// ConvergeTimeout, if > 0, bounds the whole migration: Migrate
	// cancels it and returns ErrNotConverged once it passes.
	ConvergeTimeout time.Duration
}

// MigrationProgress is a snapshot of a migration under way.
type MigrationProgress struct {
	// Status is the driver's word for the phase ("setup", "active",
	// "completed", ...).
	Status  string
	Elapsed time.Duration
	// Total, Transferred and Remaining count the guest memory's bytes:
	// all of it, sent so far (including re-sent pages), and still dirty.
	Total, Transferred, Remaining int64
	// DirtyRate is how fast the guest dirties memory, in bytes per second
	// (0 until measured).
	DirtyRate int64
	// Iterations counts the passes over the guest's memory so far.
	Iterations int64
	// ExpectedDowntime is the pause the last step would take now.
	ExpectedDowntime time.Duration
}

// MigrationResult describes a completed migration.
type MigrationResult struct {
	// TotalTime runs from the start of the migration to its completion;
	// SetupTime is its part before memory started to flow; Downtime is
	// how long the guest was paused.
	TotalTime, Downtime, SetupTime time.Duration
	// Transferred is the number of bytes sent.
	Transferred int64
}
