package api

import "time"

// Migration modes.
const (
	// MigrateCold shuts the guest down (ACPI, then kill after a timeout),
	// switches the disk's primary to the target and boots it there: a
	// quick reboot as the customer sees it.
	MigrateCold = "cold"
	// MigrateLive moves the running guest's memory to a QEMU waiting on
	// the target and switches the disk's roles at the switchover point:
	// a pause of a fraction of a second.
	MigrateLive = "live"
)

// Migration phases, in order. The source host's agent acts in Requested
// and Ready; the target's in Prepare (live) and Switched; the server in
// Switch (one etcd transaction swaps the disk's roles).
const (
	// MigCopy: the target holds no replica; the source's agent copies the
	// disk to it (a third copy, synchronous from then on) and reports
	// "copied"; the migration then goes on as live or cold.
	MigCopy = "copy"
	// MigPrepare: live only; the target's agent starts a QEMU waiting for
	// the incoming memory and reports Ready with its address.
	MigPrepare = "prepare"
	// MigReady: the target waits (live); the source starts sending.
	MigReady = "ready"
	// MigStopping: cold only; the source shuts the guest down.
	MigStopping = "stopping"
	// MigSwitched: the disk's primary is the target now (Node changed in
	// the same transaction); the target resumes or boots the guest.
	MigSwitched = "switched"
)

// MigrationStatus is a migration in flight, on the instance's status, so
// both agents see it in their assignments and a restarted server finds it.
type MigrationStatus struct {
	// Operation is the operation record of this migration.
	Operation string `json:"operation"`
	Mode      string `json:"mode"`
	Source    string `json:"source"`
	Target    string `json:"target"`
	Phase     string `json:"phase"`
	// Copy is set when the target held no copy of the disk: it gets one
	// first (phase copy), becomes the primary at the switch with the
	// replica host unchanged, and the source's copy is dropped.
	Copy bool `json:"copy,omitempty"`
	// TargetAddress is the target agent's address when Copy is set: the
	// source links the new copy there.
	TargetAddress string `json:"targetAddress,omitempty"`
	// URI is where the target's QEMU listens for the memory stream
	// ("tcp:10.0.0.2:49152"), once Ready.
	URI string `json:"uri,omitempty"`
	// DowntimeLimitMS is the longest pause live migration may cause; QEMU
	// keeps copying until the rest fits in it.
	DowntimeLimitMS int `json:"downtimeLimitMs,omitempty"`
	// ConvergeSeconds bounds a live transfer; past it the migration falls
	// back to cold (Fallback "cold") or fails ("fail").
	ConvergeSeconds int    `json:"convergeSeconds,omitempty"`
	Fallback        string `json:"fallback,omitempty"`
	// MaxBandwidth caps the memory stream, bytes per second (0: none).
	MaxBandwidth int64 `json:"maxBandwidth,omitempty"`
	// Epoch is the instance's epoch when the migration began; the switch
	// raises the instance's epoch and records the new one here, so from
	// phase Switched on it is the epoch the target writes under.
	Epoch uint64 `json:"epoch"`
	// StartedAt is when the migration was requested.
	StartedAt time.Time `json:"startedAt"`
	// Drain names the node drain this migration belongs to, if any.
	Drain string `json:"drain,omitempty"`
	// Since is when Phase last changed (the control plane's watchdog
	// fails a migration that makes no progress in a phase for 3 minutes).
	Since time.Time `json:"since,omitempty"`
}

// MigrateRequest is the body of POST /v1/instances/{name}/migrate.
type MigrateRequest struct {
	// To is the target host; empty lets ferry choose (the replica's host
	// when it is up to date, else the scheduler's pick).
	To string `json:"to,omitempty"`
	// Mode is "live" (default) or "cold".
	Mode string `json:"mode,omitempty"`
	// DowntimeLimitMS defaults to 300.
	DowntimeLimitMS int `json:"downtimeLimitMs,omitempty"`
	// ConvergeSeconds defaults to 60.
	ConvergeSeconds int `json:"convergeSeconds,omitempty"`
	// Fallback is "cold" (default) or "fail": what a live migration that
	// does not converge does.
	Fallback string `json:"fallback,omitempty"`
	// MaxBandwidth caps the live memory stream, in bytes per second, so a
	// migration does not starve the hosts' other traffic; 0: no cap.
	MaxBandwidth int64 `json:"maxBandwidth,omitempty"`
}

// MigrationReport is what an agent tells the server about a migration it
// takes part in (PUT /v1/agent/instances/{name}/migration).
type MigrationReport struct {
	// Operation must name the migration in flight.
	Operation string `json:"operation"`
	// Phase is the phase the agent reached: "copying" (source, with the
	// disk copy's progress), "copied" (source: the target's new copy is in
	// sync), "ready" (target, with URI),
	// "transferring" (source, with progress), "stopped" (source, cold: the
	// guest is down and the disk closed), "transferred" (source, live:
	// the target has the memory and the source is paused, disk closed),
	// "resumed" (target: the guest runs there), "failed" (either).
	Phase string `json:"phase"`
	URI   string `json:"uri,omitempty"`
	// Progress of the disk copy ("copying"; "copied" gives the totals).
	CopyTotal int64 `json:"copyTotal,omitempty"`
	CopyDone  int64 `json:"copyDone,omitempty"`
	CopySent  int64 `json:"copySent,omitempty"`
	// Progress of a live transfer.
	RAMTotal       int64 `json:"ramTotal,omitempty"`
	RAMTransferred int64 `json:"ramTransferred,omitempty"`
	RAMRemaining   int64 `json:"ramRemaining,omitempty"`
	// DowntimeMS is QEMU's own measure of the pause, once transferred.
	DowntimeMS int64  `json:"downtimeMs,omitempty"`
	Message    string `json:"message,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Migration report phases (see MigrationReport.Phase).
const (
	MigReportCopying      = "copying"
	MigReportCopied       = "copied"
	MigReportReady        = "ready"
	MigReportTransferring = "transferring"
	MigReportStopped      = "stopped"
	MigReportTransferred  = "transferred"
	MigReportResumed      = "resumed"
	MigReportFailed       = "failed"
)
