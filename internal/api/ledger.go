package api

import "time"

// Causes of an instance not serving, as the SLA ledger records them.
const (
	CauseHostFailure  = "host-failure"
	CauseFailover     = "failover"
	CauseMigration    = "migration"
	CauseCrash        = "crash"
	CauseNotAnswering = "guest-not-answering"
	CauseCustomerStop = "customer-stop"
	CauseMaintenance  = "maintenance"
)

// LedgerEntry is one change of an instance's serving state: the SLA
// ledger's raw record. The control plane writes it in the same etcd
// transaction as the status change it records, so a retry, a server
// restart or a leader change can neither lose nor repeat it.
type LedgerEntry struct {
	// ID makes the entry's key unique among entries of the same instant.
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	// Customer is the instance's owner at the time.
	Customer string `json:"customer,omitempty"`
	// Node is where the instance ran (or was to run).
	Node    string `json:"node,omitempty"`
	Serving bool   `json:"serving"`
	// Cause says why it stopped serving (one of the Cause constants);
	// empty when Serving.
	Cause string `json:"cause,omitempty"`
	// Deleted records the instance's deletion: it leaves the ledger.
	Deleted bool `json:"deleted,omitempty"`
}
