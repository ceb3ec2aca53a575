// Package vmm defines the one interface through which an agent runs virtual
// machines. Drivers live in sub-packages: fake (no processes, deterministic,
// for tests and simulation) and qemu.
package vmm
