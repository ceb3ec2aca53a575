// Package fake is a vmm.Driver that runs no processes: its VMs are records in
// memory that live as long as the Driver value. It is deterministic, safe for
// concurrent use and meant for tests and simulation; methods beyond the
// vmm.Driver interface (FailStart, Crash, Spec) let a test inject faults and
// see what the agent asked for.
package fake
