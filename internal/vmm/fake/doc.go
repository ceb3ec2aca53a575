// Package fake is a vmm.Driver that runs no processes: its VMs are records in
// memory that live as long as the Driver value. It is deterministic, safe for
// concurrent use and meant for tests and simulation; methods beyond the
// vmm.Driver interface (FailStart, FailMigrate, Crash, Spec) let a test
// inject faults and see what the agent asked for. It implements
// vmm.Migrator too: a migration completes at once, between any two Drivers
// of the process (the hosts of a simulation).
package fake
