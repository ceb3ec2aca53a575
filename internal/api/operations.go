package api

import "strings"

// OperationStates lists the states of an operation, for validation and docs.
var OperationStates = []string{OpRunning, OpSucceeded, OpFailed, OpCancelled}

// OperationFilter selects operations, as the query of GET /v1/operations
// does: an empty field matches every operation.
type OperationFilter struct {
	// Instance keeps the operations acting on the named instance.
	Instance string
	// State keeps the operations in that state: Running, Succeeded,
	// Failed or Cancelled.
	State string
}

// Validate checks the filter; errors name the query parameter at fault
// ("instance" or "state").
func (f OperationFilter) Validate() error {
	if f.Instance != "" {
		if err := ValidateName("instance", f.Instance); err != nil {
			return err
		}
	}
	if f.State != "" && !validOperationState(f.State) {
		return fieldErr("state", "must be %s or %s, got %q",
			strings.Join(OperationStates[:len(OperationStates)-1], ", "), OperationStates[len(OperationStates)-1], f.State)
	}
	return nil
}

// Match reports whether op passes the filter.
func (f OperationFilter) Match(op *Operation) bool {
	return (f.Instance == "" || op.Instance == f.Instance) && (f.State == "" || op.State == f.State)
}

func validOperationState(s string) bool {
	for _, st := range OperationStates {
		if s == st {
			return true
		}
	}
	return false
}
