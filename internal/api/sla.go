package api

import (
	"fmt"
	"time"
)

// Maintenance is a maintenance window of one host, announced ahead: stops
// it causes on that host count as maintenance in the SLA ledger, and are
// excluded from availability when announced at least the policy's notice
// ahead of Start.
type Maintenance struct {
	ID   string `json:"id"`
	Node string `json:"node"`
	// Start and End bound the window: [Start, End).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// AnnouncedAt is when it was scheduled (the server's clock).
	AnnouncedAt time.Time `json:"announcedAt"`
	Reason      string    `json:"reason,omitempty"`
	// By is the user who scheduled it.
	By string `json:"by,omitempty"`
}

// MaintenanceRequest is the body of POST /v1/maintenance.
type MaintenanceRequest struct {
	Node   string    `json:"node"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason,omitempty"`
}

// MaxMaintenance bounds one maintenance window.
const MaxMaintenance = 7 * 24 * time.Hour

// Validate checks a maintenance request.
func (r *MaintenanceRequest) Validate() error {
	if err := ValidateName("node", r.Node); err != nil {
		return err
	}
	if r.Start.IsZero() {
		return fieldErr("start", "is required: when the maintenance begins (RFC 3339, e.g. 2026-12-01T02:00:00Z)")
	}
	if r.End.IsZero() {
		return fieldErr("end", "is required: when the maintenance ends (RFC 3339)")
	}
	if !r.End.After(r.Start) {
		return fieldErr("end", "must be after start (%s)", r.Start.Format(time.RFC3339))
	}
	if r.End.Sub(r.Start) > MaxMaintenance {
		return fieldErr("end", "a window lasts at most %s; schedule several", MaxMaintenance)
	}
	if len(r.Reason) > 1024 {
		return fieldErr("reason", "is limited to 1024 bytes")
	}
	return nil
}

// String says what the window is, for messages.
func (m Maintenance) String() string {
	return fmt.Sprintf("%s on %s from %s to %s", m.ID, m.Node, m.Start.Format(time.RFC3339), m.End.Format(time.RFC3339))
}
