// Package qemu is the vmm.Driver that runs each VM as its own
// qemu-system-x86_64 process and controls it over QMP.
//
// # Processes
//
// QEMU is started in a session of its own (setsid), with its output going to
// files rather than pipes, so it survives the agent: a signal to the agent,
// or the agent's exit, does not reach it. A new agent finds it again with
// Recover, from the vmm.Handle the old one persisted. The handle carries the
// PID and the process's start time from /proc/PID/stat, so a recycled PID is
// never mistaken for the VM, and Recover also checks QEMU's command line for
// the VM's ID. Exits of processes that are not the driver's children are
// seen through a pidfd (Linux 5.3 or later).
//
// # Files
//
// Each VM's vmm.Spec.StateDir receives: qmp.sock (QMP), console.sock (the
// serial console, one client at a time) and console.log (everything the
// serial console printed, appended across runs), qemu.pid, and qemu.log
// (QEMU's own stdout and stderr, with a header line per start). Destroy
// removes exactly these files, and the directory if Start created it.
//
// # Accelerator
//
// With Config.Accel "auto", New probes KVM: opening /dev/kvm is not enough
// (on some nested hosts KVM accepts a guest that then never runs), so it
// boots a kernel (Config.ProbeKernel, by default the host's /boot/vmlinuz)
// under KVM with the CPU model VMs would get, and KVM counts as working only
// if the kernel's "Linux version" banner appears on the serial port within
// Config.ProbeTimeout. Otherwise the driver uses TCG and says why
// (Driver.AccelReason). Nothing is cached between Drivers.
//
// # Disks and NICs
//
// The disk is virtio-blk over a raw file (vmm.Spec.DiskPath) or an NBD
// export on a unix socket (vmm.Spec.DiskNBD). QEMU's NBD client holds the
// guest's requests for up to Config.NBDReconnectDelay while the server is
// away, so a VM outlives a restart of the agent that serves its disk. The
// NIC is virtio-net on an existing tap device (vmm.Spec.TapName), or, for
// tests, on user-mode networking with ports forwarded from 127.0.0.1.
//
// # Shutdown
//
// Stop presses the ACPI power button (QMP system_powerdown), again every
// second, since a guest still booting ignores a press, and kills QEMU when
// the timeout passes. An exit counts as clean (ExitResult.Err nil) when the
// guest powered itself off: QMP reported a SHUTDOWN caused by the guest, or,
// without that report, QEMU exited with status 0.
//
// # Live migration
//
// The driver implements vmm.Migrator with QEMU's precopy migration over
// TCP; the disk is not copied (each host serves its own replica over NBD).
// StartIncoming runs QEMU with -incoming defer (and the usual -S), turns
// on the migration capabilities events, return-path and
// late-block-activate, and runs migrate-incoming on "tcp:HOST:PORT"; the
// port QEMU bound (port 0 picks one) is read back from query-migrate's
// socket-address. Migrate sets the capabilities events and return-path and
// the parameters downtime-limit and max-bandwidth (always: QEMU's default
// caps a migration at 32 MiB/s), runs migrate, and follows query-migrate;
// migrate_cancel ends it early. return-path matters: without it QEMU calls
// a migration completed (and leaves the source paused for good) once it
// has written the last byte, even if the target then fails to load it.
// With it, the source waits for the target's word.
//
// At completion the source stops in runstate postmigrate, having flushed
// and released (inactivated) its disk; the target is paused (-S) in
// runstate paused with its disk opened but inactive (late-block-activate)
// until Resume's cont. Until then, cont on the source takes the migration
// back. A target whose incoming migration fails, or is cancelled by the
// source, exits with status 1, reported as a crash wrapping
// vmm.ErrIncomingFailed. QEMU sends the target's gratuitous ARP/RARP when
// the migration completes, while it is still paused: call Announce after
// Resume.
//
// A Driver is safe for concurrent use; calls for different VMs do not block
// one another.
package qemu
