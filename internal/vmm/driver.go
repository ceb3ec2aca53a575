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
