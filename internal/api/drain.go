package api

import (
	"fmt"
	"strings"
	"time"
)

// Migration operations: type, steps and limits.
const (
	// OpMigrate is the type of a migration's operation, named
	// migrate-<instance>-<epoch>-<n>.
	OpMigrate = "migrate"

	// StepRequested: the migration was recorded (by a user, a drain or a
	// restore).
	StepRequested = "requested"
	// StepCopied: a move to a host that held no replica; the target's
	// new copy of the disk caught up with the primary (a third copy, kept
	// in sync since).
	StepCopied = "copied"
	// StepPrepared: live; the target's QEMU waits for the memory.
	StepPrepared = "prepared"
	// StepFallback: a live transfer did not converge and the migration
	// went on cold.
	StepFallback = "fallback"
	// StepStopped: cold; the guest is shut down on the source, its disk
	// closed.
	StepStopped = "stopped"
	// StepTransferred: live; the target holds the memory and the source
	// is paused, its disk closed.
	StepTransferred = "transferred"
	// StepSwitched: the disk's primary is the target (one etcd
	// transaction, under a raised epoch).
	StepSwitched = "switched"
	// StepResumed: live; the guest runs on the target.
	StepResumed = "resumed"

	// MigFallbackCold and MigFallbackFail are the values of
	// MigrateRequest.Fallback.
	MigFallbackCold = "cold"
	MigFallbackFail = "fail"

	// MinMigrationBandwidth and MaxMigrationBandwidth bound a live
	// migration's bandwidth cap (bytes per second; 0 is no cap).
	MinMigrationBandwidth = 1 << 20
	MaxMigrationBandwidth = 1 << 40

	DefaultDowntimeLimitMS = 300
	MaxDowntimeLimitMS     = 60000
	DefaultConvergeSeconds = 60
	MaxConvergeSeconds     = 3600

	// DefaultDrainConcurrency is how many migrations a drain runs at once
	// unless told otherwise; MaxDrainConcurrency bounds what it may be told.
	DefaultDrainConcurrency = 2
	MaxDrainConcurrency     = 64

	// NotConvergedError is what a source's "failed" report says (in
	// Error) when a live transfer did not converge in ConvergeSeconds:
	// with Fallback "cold" the migration goes on cold instead of failing.
	NotConvergedError = "did not converge"
)

// MigrationProgress is a live transfer's progress, as the source reported
// it last.
type MigrationProgress struct {
	RAMTotal       int64 `json:"ramTotal"`
	RAMTransferred int64 `json:"ramTransferred"`
	RAMRemaining   int64 `json:"ramRemaining"`
	// CopyTotal, CopyDone and CopySent are the disk copy's progress on a
	// move to a host that held no replica: the bytes the copy covers, the
	// bytes covered so far, and the bytes actually sent (holes are not).
	CopyTotal int64     `json:"copyTotal,omitempty"`
	CopyDone  int64     `json:"copyDone,omitempty"`
	CopySent  int64     `json:"copySent,omitempty"`
	At        time.Time `json:"at"`
}

// DrainSpec is a node drain: the controller migrates every instance whose
// primary is the node elsewhere, a few at a time.
type DrainSpec struct {
	// Mode is the migrations' mode, "live" (default) or "cold".
	Mode string `json:"mode"`
	// MaxConcurrent bounds the migrations in flight from or to the node.
	MaxConcurrent int       `json:"maxConcurrent"`
	StartedAt     time.Time `json:"startedAt"`
	// Took lists the instances the drain moved off the node (an undrain
	// with restore moves them back).
	Took []string `json:"took,omitempty"`
	// Blocked holds the instances that cannot move now, with the reason;
	// the drain keeps trying them.
	Blocked map[string]string `json:"blocked,omitempty"`
	// DrainedAt is when the controller first saw no instance with the
	// node as primary (zero until then, and again if one comes back);
	// with Replicas, also none with its replica there or still syncing
	// one the drain moved.
	DrainedAt time.Time `json:"drainedAt,omitempty"`
	// Replicas moves the replicas the node holds to other hosts too, for
	// a host that leaves for long or for good. Each new replica takes a
	// full sync (sparse); until it is done the instance has no replica
	// it can fail over to, as when a replica host is down. Without it
	// the replicas stay: a short maintenance costs them only a resync of
	// what changed meanwhile.
	Replicas bool `json:"replicas,omitempty"`
	// MovedReplicas lists the instances whose replica the drain moved
	// off the node (it counts those still syncing against MaxConcurrent).
	MovedReplicas []string `json:"movedReplicas,omitempty"`
}

// RestoreSpec is the work of an undrain with restore: migrate the
// instances a drain took off the node back to it.
type RestoreSpec struct {
	// Instances are still to be moved back, in order.
	Instances     []string  `json:"instances"`
	Mode          string    `json:"mode"`
	MaxConcurrent int       `json:"maxConcurrent"`
	StartedAt     time.Time `json:"startedAt"`
	// Blocked holds the instances that cannot move back now, with the
	// reason; they are tried again.
	Blocked map[string]string `json:"blocked,omitempty"`
}

// DrainStatus is how a drain (or a restore) of a node is going, computed
// on read.
type DrainStatus struct {
	// Remaining counts the instances whose primary is still the node.
	Remaining int `json:"remaining"`
	// Migrating counts the migrations in flight from or to the node.
	Migrating int `json:"migrating"`
	// Drained says the node is being drained and no instance has it as
	// primary any more.
	Drained bool `json:"drained,omitempty"`
	// Restoring counts the instances a restore has still to move back
	// (not counting those migrating).
	Restoring int `json:"restoring,omitempty"`
	// Replicas counts the instances whose replica is on the node (and
	// whose primary is elsewhere).
	Replicas int `json:"replicas,omitempty"`
	// Resyncing counts the replicas a drain moved off the node that are
	// not yet in sync on their new host.
	Resyncing int `json:"resyncing,omitempty"`
}

// DrainRequest is the body of POST /v1/nodes/{name}/drain.
type DrainRequest struct {
	// Mode is "live" (default) or "cold".
	Mode string `json:"mode,omitempty"`
	// MaxConcurrent defaults to 2.
	MaxConcurrent int `json:"maxConcurrent,omitempty"`
	// Replicas moves the node's replicas elsewhere too (see DrainSpec).
	Replicas bool `json:"replicas,omitempty"`
}

// UndrainRequest is the body of POST /v1/nodes/{name}/undrain.
type UndrainRequest struct {
	// Restore migrates the instances the drain took off the node back to
	// it.
	Restore bool `json:"restore,omitempty"`
}

// Validate checks a migrate request as submitted; zero values stand for
// the defaults (see WithDefaults).
func (r *MigrateRequest) Validate() error {
	if r.To != "" {
		if err := ValidateName("to", r.To); err != nil {
			return err
		}
	}
	switch r.Mode {
	case "", MigrateLive, MigrateCold:
	default:
		return fieldErr("mode", "must be %s or %s, got %q", MigrateLive, MigrateCold, r.Mode)
	}
	if r.DowntimeLimitMS < 0 || r.DowntimeLimitMS > MaxDowntimeLimitMS {
		return fieldErr("downtimeLimitMs", "must be between 1 and %d milliseconds (0: the default, %d), got %d", MaxDowntimeLimitMS, DefaultDowntimeLimitMS, r.DowntimeLimitMS)
	}
	if r.ConvergeSeconds < 0 || r.ConvergeSeconds > MaxConvergeSeconds {
		return fieldErr("convergeSeconds", "must be between 1 and %d seconds (0: the default, %d), got %d", MaxConvergeSeconds, DefaultConvergeSeconds, r.ConvergeSeconds)
	}
	switch r.Fallback {
	case "", MigFallbackCold, MigFallbackFail:
	default:
		return fieldErr("fallback", "must be %s (go on as a cold migration) or %s, got %q", MigFallbackCold, MigFallbackFail, r.Fallback)
	}
	if r.MaxBandwidth != 0 && (r.MaxBandwidth < MinMigrationBandwidth || r.MaxBandwidth > MaxMigrationBandwidth) {
		return fieldErr("maxBandwidth", "must be 0 (no cap) or between %s and %s per second, got %d bytes", Bytes(MinMigrationBandwidth), Bytes(MaxMigrationBandwidth), r.MaxBandwidth)
	}
	return nil
}

// WithDefaults returns the request with its defaults filled in: mode live,
// a 300 ms downtime limit, 60 s to converge, fallback cold.
func (r MigrateRequest) WithDefaults() MigrateRequest {
	if r.Mode == "" {
		r.Mode = MigrateLive
	}
	if r.DowntimeLimitMS == 0 {
		r.DowntimeLimitMS = DefaultDowntimeLimitMS
	}
	if r.ConvergeSeconds == 0 {
		r.ConvergeSeconds = DefaultConvergeSeconds
	}
	if r.Fallback == "" {
		r.Fallback = MigFallbackCold
	}
	return r
}

// MigrationReportPhases lists the phases an agent may report.
var MigrationReportPhases = []string{MigReportCopying, MigReportCopied, MigReportReady, MigReportTransferring, MigReportStopped, MigReportTransferred, MigReportResumed, MigReportFailed}

// Validate checks an agent's migration report.
func (r *MigrationReport) Validate() error {
	if r.Operation == "" {
		return fieldErr("operation", "is required: the migration's operation (status.migration.operation)")
	}
	if len(r.Operation) > 256 {
		return fieldErr("operation", "is limited to 256 bytes")
	}
	ok := false
	for _, p := range MigrationReportPhases {
		ok = ok || r.Phase == p
	}
	if !ok {
		return fieldErr("phase", "must be one of %s, got %q", strings.Join(MigrationReportPhases, ", "), r.Phase)
	}
	if r.Phase == MigReportReady && r.URI == "" {
		return fieldErr("uri", "is required with phase ready: where the target's QEMU listens, e.g. tcp:10.0.0.2:49152")
	}
	if len(r.URI) > 1024 {
		return fieldErr("uri", "is limited to 1024 bytes")
	}
	if r.CopyTotal < 0 || r.CopyDone < 0 || r.CopySent < 0 {
		return fieldErr("copyTotal", "byte counts must not be negative")
	}
	if r.RAMTotal < 0 || r.RAMTransferred < 0 || r.RAMRemaining < 0 || r.DowntimeMS < 0 {
		return fieldErr("ramTotal", "byte counts and the downtime must not be negative")
	}
	if len(r.Message) > 4096 || len(r.Error) > 4096 {
		return fieldErr("message", "message and error are limited to 4096 bytes")
	}
	return nil
}

// Validate checks a drain request as submitted; zero values stand for the
// defaults (see WithDefaults).
func (r *DrainRequest) Validate() error {
	switch r.Mode {
	case "", MigrateLive, MigrateCold:
	default:
		return fieldErr("mode", "must be %s or %s, got %q", MigrateLive, MigrateCold, r.Mode)
	}
	if r.MaxConcurrent < 0 || r.MaxConcurrent > MaxDrainConcurrency {
		return fieldErr("maxConcurrent", "must be between 1 and %d (0: the default, %d), got %d", MaxDrainConcurrency, DefaultDrainConcurrency, r.MaxConcurrent)
	}
	return nil
}

// WithDefaults returns the request with mode live and 2 migrations at once
// where not given.
func (r DrainRequest) WithDefaults() DrainRequest {
	if r.Mode == "" {
		r.Mode = MigrateLive
	}
	if r.MaxConcurrent == 0 {
		r.MaxConcurrent = DefaultDrainConcurrency
	}
	return r
}

// MigrationOperationName names the n-th migration of an instance under one
// epoch.
func MigrationOperationName(instance string, epoch uint64, n int) string {
	return fmt.Sprintf("%s-%s-%d-%d", OpMigrate, instance, epoch, n)
}
