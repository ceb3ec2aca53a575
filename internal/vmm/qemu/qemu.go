package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/ferrycluster/ferry/internal/vmm"
)

// DriverName is the name the driver reports and puts in its handles.
const DriverName = "qemu"

// Accelerators for Config.Accel; Driver.Accel reports AccelKVM or AccelTCG.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// Handle.Data keys the driver fills. Recover needs all of them but
// DataIncoming.
const (
	// DataStateDir is the VM's StateDir.
	DataStateDir = "stateDir"
	// DataStartTime is the QEMU process's start time, in clock ticks after
	// boot (field 22 of /proc/PID/stat): with the PID it names the process.
	DataStartTime = "procStartTime"
	// DataCreatedDir is "true" if Start created the StateDir, so Destroy
	// removes it.
	DataCreatedDir = "createdStateDir"
	// DataLogOffset is where this run's output starts in qemu.log.
	DataLogOffset = "logOffset"
	// DataAccel is the accelerator the VM runs on.
	DataAccel = "accel"
	// DataIncoming is "true" for a VM from StartIncoming.
	DataIncoming = "incoming"
)

// Errors of the driver. Exit errors (vmm.ExitResult.Err, and the text of
// vmm.Status.ExitError) wrap ErrKilled or ErrCrashed.
var (
	// ErrClosed is returned by Start and Recover after Close.
	ErrClosed = errors.New("qemu: driver closed")
	// ErrKilled means the driver killed the VM: Destroy did, or Stop did
	// after the guest did not power off in time.
	ErrKilled = errors.New("killed by the driver")
	// ErrCrashed means QEMU ended without the guest powering off and
	// without the driver killing it: it failed, crashed, or someone else
	// killed it.
	ErrCrashed = errors.New("qemu ended unexpectedly")
)

// Defaults of Config.
const (
	DefaultBinary       = "qemu-system-x86_64"
	DefaultProbeTimeout = 10 * time.Second
	DefaultStopTimeout  = 10 * time.Second
	DefaultMachine      = "pc"
	// DefaultNBDReconnectDelay is the default of Config.NBDReconnectDelay.
	DefaultNBDReconnectDelay = 30 * time.Second
)

const (
	// powerdownRetry is how often Stop presses the power button again: a
	// guest that is still booting ignores a press.
	powerdownRetry = time.Second
	// exitEventWait bounds how long, after QEMU ends, the driver waits
	// for the rest of its QMP events (the SHUTDOWN that says who asked).
	exitEventWait = time.Second
	// recoverQMPTimeout bounds Recover's attempt to reconnect QMP.
	recoverQMPTimeout = 5 * time.Second
	// tailLines is how many lines of QEMU's output and of the console an
	// error quotes.
	tailLines = 20
	// stateDirMode is the mode of a StateDir the driver creates.
	stateDirMode = 0o750
)

// Config configures a Driver. The zero value is valid: every field has a
// default.
type Config struct {
	// Binary is the QEMU executable, a path or a name looked up in PATH.
	// Default DefaultBinary.
	Binary string
	// Accel is the accelerator: AccelAuto (the default) probes KVM and
	// falls back to TCG; AccelKVM and AccelTCG skip the probe.
	Accel string
	// ProbeTimeout bounds the KVM probe of AccelAuto. Default
	// DefaultProbeTimeout. A host where KVM hangs guests costs this much
	// at every New.
	ProbeTimeout time.Duration
	// ProbeKernel is the Linux kernel image the KVM probe boots. Default:
	// the running kernel's /boot/vmlinuz-RELEASE, else /boot/vmlinuz or
	// /vmlinuz, else the newest /boot/vmlinuz-*. Without one the probe
	// fails and the driver uses TCG.
	ProbeKernel string
	// StopTimeout is how long Stop waits for the guest to power off when
	// its caller passes no timeout. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// Machine is QEMU's machine type. Default DefaultMachine.
	Machine string
	// CPUModel is QEMU's -cpu model. Default "host" under KVM (the probe
	// uses it too) and QEMU's own default under TCG.
	CPUModel string
	// NBDReconnectDelay is how long a VM whose disk is on NBD
	// (vmm.Spec.DiskNBD) holds its disk requests while the NBD server is
	// away, such as during an agent restart, before failing them to the
	// guest. Whole seconds; default DefaultNBDReconnectDelay; negative
	// for none.
	NBDReconnectDelay time.Duration
	// Logger receives the driver's logs. Default: discard them.
	Logger *slog.Logger
}

// Driver is the QEMU vmm.Driver. Create it with New. Its methods are safe for
// concurrent use; calls for different VMs do not block one another.
type Driver struct {
	cfg         Config
	binary      string
	mc          machineConfig
	accelReason string
	log         *slog.Logger

	mu sync.Mutex
	// vms holds the latest run of every VM started or recovered and not
	// destroyed.
	vms map[string]*vm
	// starting holds IDs with a Start or Recover in progress.
	starting map[string]bool
	closed   bool
}

var (
	_ vmm.Driver    = (*Driver)(nil)
	_ vmm.Announcer = (*Driver)(nil)
	_ vmm.Capabler  = (*Driver)(nil)
	_ vmm.Migrator  = (*Driver)(nil)
	_ vmm.Sweeper   = (*Driver)(nil)
)

// New returns a Driver. With Config.Accel AccelAuto it first probes KVM
// (see the package documentation), which takes up to Config.ProbeTimeout;
// cancelling ctx abandons the probe and New returns ctx's error. New fails
// if the QEMU binary cannot be found.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.Accel == "" {
		cfg.Accel = AccelAuto
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Machine == "" {
		cfg.Machine = DefaultMachine
	}
	if cfg.NBDReconnectDelay == 0 {
		cfg.NBDReconnectDelay = DefaultNBDReconnectDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProbeTimeout < 0 || cfg.StopTimeout < 0 {
		return nil, fmt.Errorf("qemu: negative ProbeTimeout %v or StopTimeout %v", cfg.ProbeTimeout, cfg.StopTimeout)
	}
	binary, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	d := &Driver{
		cfg:      cfg,
		binary:   binary,
		log:      cfg.Logger,
		vms:      make(map[string]*vm),
		starting: make(map[string]bool),
	}
	var accel string
	switch cfg.Accel {
	case AccelKVM, AccelTCG:
		accel = cfg.Accel
		d.accelReason = "configured"
	case AccelAuto:
		kernel := cfg.ProbeKernel
		if kernel == "" {
			kernel = findProbeKernel()
		}
		t0 := time.Now()
		err := probeKVM(ctx, binary, kernel, machineConfig{accel: AccelKVM, machine: cfg.Machine, cpu: cpuModel(cfg, AccelKVM)}, cfg.ProbeTimeout)
		took := time.Since(t0).Round(time.Millisecond)
		switch {
		case err == nil:
			accel = AccelKVM
			d.accelReason = fmt.Sprintf("KVM probe booted %s in %v", kernel, took)
			d.log.Info("kvm works", "probeKernel", kernel, "took", took)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("qemu: kvm probe: %w", ctx.Err())
		default:
			accel = AccelTCG
			d.accelReason = fmt.Sprintf("KVM probe failed after %v: %v", took, err)
			d.log.Warn("kvm is not usable; using tcg (emulation, much slower)", "reason", err.Error(), "probeKernel", kernel, "took", took)
		}
	default:
		return nil, fmt.Errorf("qemu: accel %q is not %s, %s or %s", cfg.Accel, AccelAuto, AccelKVM, AccelTCG)
	}
	d.mc = machineConfig{
		accel:        accel,
		machine:      cfg.Machine,
		cpu:          cpuModel(cfg, accel),
		nbdReconnect: int(max(cfg.NBDReconnectDelay, 0).Round(time.Second) / time.Second),
	}
	return d, nil
}

// cpuModel is the -cpu model for accel.
func cpuModel(cfg Config, accel string) string {
	switch {
	case cfg.CPUModel != "":
		return cfg.CPUModel
	case accel == AccelKVM:
		return "host"
	default:
		return ""
	}
}

// Name returns DriverName.
func (d *Driver) Name() string { return DriverName }

// Accel returns the accelerator VMs run on: AccelKVM or AccelTCG.
func (d *Driver) Accel() string { return d.mc.accel }

// AccelReason says why the driver chose its accelerator, for operators.
func (d *Driver) AccelReason() string { return d.accelReason }

// Capabilities reports that the driver boots real disks and NICs.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{RealDisks: true}
}

// Close disconnects the driver from its VMs and leaves them running, as an
// agent that exits does: another Driver (in this process or the next) can
// Recover them. After Close, Start and Recover return ErrClosed; the other
// methods still work on the VMs the driver knows, without QMP.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	vms := slices.Collect(maps.Values(d.vms))
	d.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		m := v.mon
		v.mon = nil
		v.mu.Unlock()
		if m != nil {
			m.close()
		}
	}
	return nil
}

// vm is one run of one VM: one QEMU process. A new Start makes a new vm.
type vm struct {
	id         string
	handle     vmm.Handle
	files      files
	createdDir bool
	startedAt  time.Time
	// logOffset and consoleOffset are where this run's output starts in
	// qemu.log and console.log.
	logOffset, consoleOffset int64
	proc                     process
	// exited is closed when the process has ended and result is set.
	exited chan struct{}
	// migEvent receives a value (if it has room) on each QMP MIGRATION
	// event, so a waiter looks at the migration at once.
	migEvent chan struct{}

	mu sync.Mutex
	// mon is the QMP connection, nil if there is none.
	mon *monitor
	// gone is set when the process has ended: no new QMP connections.
	gone bool
	// stopping is set once Stop has asked the guest to power off.
	stopping bool
	// killWhy is set when the driver kills the process.
	killWhy string
	status  exitStatus
	result  vmm.ExitResult
	state   vmm.State
	// incoming is set for a VM from StartIncoming until it is resumed:
	// it waits for, or holds, a migrated guest and has never run.
	incoming bool
	// migrated is set on a source whose outgoing migration completed
	// (QEMU's runstate postmigrate), until it is resumed.
	migrated bool
	// migrating is set while a Migrate of the VM runs.
	migrating bool

	// evMu guards shutdown only; it is never held while waiting, because
	// the QMP event reader takes it.
	evMu     sync.Mutex
	shutdown shutdownEvent
}

// shutdownEvent is the last QMP SHUTDOWN event of a VM.
type shutdownEvent struct {
	seen   bool
	guest  bool
	reason string
}

func (v *vm) running() bool {
	select {
	case <-v.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL, recording why for the exit result. It returns nil if
// the process has already ended.
func (v *vm) kill(why string) error {
	v.mu.Lock()
	if v.killWhy == "" && !v.gone {
		v.killWhy = why
	}
	v.mu.Unlock()
	if err := v.proc.kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill qemu (pid %d): %w", v.handle.PID, err)
	}
	return nil
}

// outputTail returns the last lines this run wrote to qemu.log and, if
// withConsole, to console.log, ready to append to an error message.
func (v *vm) outputTail(withConsole bool) string {
	var b strings.Builder
	if s := fileTail(v.files.log, v.logOffset); s != "" {
		fmt.Fprintf(&b, "\nlast lines of %s:\n%s", v.files.log, s)
	}
	if withConsole {
		if s := fileTail(v.files.consoleLog, v.consoleOffset); s != "" {
			fmt.Fprintf(&b, "\nlast lines of %s:\n%s", v.files.consoleLog, s)
		}
	}
	return b.String()
}

// fileTail returns the last tailLines lines of path after offset.
func fileTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxRead = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > maxRead {
		offset = fi.Size() - maxRead
	}
	data, err := io.ReadAll(io.NewSectionReader(f, offset, maxRead))
	if err != nil {
		return ""
	}
	return lastLines(data, tailLines)
}

// lookup returns the latest run of id, or nil.
func (d *Driver) lookup(id string) *vm {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vms[id]
}

// reserve marks id as starting, unless it runs or is starting.
func (d *Driver) reserve(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.starting[id] {
		return vmm.ErrAlreadyRunning
	}
	if v := d.vms[id]; v != nil && v.running() {
		return vmm.ErrAlreadyRunning
	}
	d.starting[id] = true
	return nil
}

// release ends a reservation, registering v if it is not nil.
func (d *Driver) release(id string, v *vm) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.starting, id)
	if v != nil {
		d.vms[id] = v
	}
}

// paused reports whether v's CPUs are stopped for a migration.
func (v *vm) paused() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.incoming || v.migrated
}

// Start boots a VM and returns once QEMU answers on QMP and reports the VM
// running. The guest is then booting; Start does not wait for it. If QEMU
// exits during the start, the error quotes the end of its output (and of
// the console), which usually says why. Cancelling ctx kills the new QEMU
// and returns ctx's error.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Handle, error) {
	if err := ctx.Err(); err != nil {
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	spec, err := checkSpec(spec)
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	args, err := buildArgs(spec, d.mc)
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	if err := d.reserve(spec.ID); err != nil {
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	t0 := time.Now()
	v, err := d.launch(ctx, spec, args, false, d.run)
	if err != nil {
		d.release(spec.ID, nil)
		return vmm.Handle{}, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	d.release(spec.ID, v)
	d.log.Info("vm started", "vm", spec.ID, "pid", v.handle.PID, "accel", d.mc.accel, "took", time.Since(t0).Round(time.Millisecond))
	return v.handle, nil
}

// launch runs QEMU for spec, connects QMP and calls ready, which lets the
// VM run (or, for an incoming one, listen). incoming marks a VM from
// StartIncoming.
func (d *Driver) launch(ctx context.Context, spec vmm.Spec, args []string, incoming bool, ready func(context.Context, *vm, *monitor) error) (*vm, error) {
	f := newFiles(spec.StateDir)
	createdDir := false
	if _, err := os.Stat(f.dir); errors.Is(err, fs.ErrNotExist) {
		createdDir = true
	}
	if err := os.MkdirAll(f.dir, stateDirMode); err != nil {
		return nil, err
	}
	for _, p := range []string{f.qmp, f.consoleSock, f.pid} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var consoleOffset int64
	if fi, err := os.Stat(f.consoleLog); err == nil {
		consoleOffset = fi.Size()
	}
	logf, err := os.OpenFile(f.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "%s ferry: starting vm %s: %s %s\n", time.Now().UTC().Format(time.RFC3339), spec.ID, d.binary, strings.Join(args, " "))
	fi, err := logf.Stat()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(d.binary, args...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: signals to the agent's process group, and the
	// agent's exit, do not reach QEMU.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, err
	}
	startedAt := time.Now()
	pid := cmd.Process.Pid
	st, err := readProcStat(pid)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("read start time of qemu: %w", err)
	}
	v := &vm{
		id:            spec.ID,
		files:         f,
		createdDir:    createdDir,
		startedAt:     startedAt,
		logOffset:     fi.Size(),
		consoleOffset: consoleOffset,
		proc:          childProc{cmd},
		exited:        make(chan struct{}),
		migEvent:      make(chan struct{}, 1),
		incoming:      incoming,
	}
	v.handle = vmm.Handle{
		ID:        spec.ID,
		Driver:    DriverName,
		PID:       pid,
		StartedAt: startedAt,
		Data: map[string]string{
			DataStateDir:   f.dir,
			DataStartTime:  strconv.FormatUint(st.startTime, 10),
			DataCreatedDir: strconv.FormatBool(createdDir),
			DataLogOffset:  strconv.FormatInt(v.logOffset, 10),
			DataAccel:      d.mc.accel,
		},
	}
	if incoming {
		v.handle.Data[DataIncoming] = "true"
	}
	go d.reap(v)
	if err := d.connect(ctx, v, ready); err != nil {
		_ = v.kill("its start failed")
		<-v.exited
		return nil, fmt.Errorf("%w%s", err, v.outputTail(true))
	}
	return v, nil
}

// connect waits for QEMU's QMP socket, connects, and calls ready.
func (d *Driver) connect(ctx context.Context, v *vm, ready func(context.Context, *vm, *monitor) error) error {
	backoff := 5 * time.Millisecond
	var m *monitor
	for {
		select {
		case <-v.exited:
			return fmt.Errorf("qemu exited during start (%s)", v.statusString())
		default:
		}
		var err error
		m, err = dialMonitor(ctx, v.files.qmp, d.eventHandler(v))
		if err == nil {
			break
		}
		select {
		case <-v.exited:
		case <-ctx.Done():
			return fmt.Errorf("waiting for qmp: %w", ctx.Err())
		case <-time.After(backoff):
			backoff = min(2*backoff, 100*time.Millisecond)
		}
	}
	v.mu.Lock()
	v.mon = m
	v.mu.Unlock()
	if err := ready(ctx, v, m); err != nil {
		return d.exitedOr(v, err)
	}
	return nil
}

// run lets the CPUs of a new VM run and checks that it runs.
func (d *Driver) run(ctx context.Context, _ *vm, m *monitor) error {
	if err := m.execute(ctx, "cont", nil, nil); err != nil {
		return err
	}
	status, err := queryStatus(ctx, m)
	if err != nil {
		return err
	}
	if status != runstateRunning {
		return fmt.Errorf("vm is %q after qmp cont, want running", status)
	}
	return nil
}

// queryStatus returns QEMU's runstate ("running", "paused", "inmigrate",
// "postmigrate", ...).
func queryStatus(ctx context.Context, m *monitor) (string, error) {
	var status struct {
		Status string `json:"status"`
	}
	if err := m.execute(ctx, "query-status", nil, &status); err != nil {
		return "", err
	}
	return status.Status, nil
}

// exitedOr returns err, or says that QEMU exited if it did, which explains
// err better.
func (d *Driver) exitedOr(v *vm, err error) error {
	select {
	case <-v.exited:
		return fmt.Errorf("qemu exited during start (%s)", v.statusString())
	case <-time.After(100 * time.Millisecond):
		return err
	}
}

// statusString describes how a process that has exited ended.
func (v *vm) statusString() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.status.state == nil {
		return "status unknown"
	}
	return v.status.state.String()
}

// eventHandler returns the QMP event callback of v.
func (d *Driver) eventHandler(v *vm) func(qmp.Event) {
	return func(e qmp.Event) {
		switch e.Event {
		case "SHUTDOWN":
			guest, _ := e.Data["guest"].(bool)
			reason, _ := e.Data["reason"].(string)
			v.evMu.Lock()
			v.shutdown = shutdownEvent{seen: true, guest: guest, reason: reason}
			v.evMu.Unlock()
			d.log.Info("vm shutting down", "vm", v.id, "reason", reason)
		case "RESET":
			d.log.Info("vm reset", "vm", v.id, "data", e.Data)
		case "GUEST_PANICKED", "BLOCK_IO_ERROR":
			d.log.Warn("vm event", "vm", v.id, "event", e.Event, "data", e.Data)
		case "MIGRATION":
			d.log.Debug("vm migration", "vm", v.id, "status", e.Data["status"])
			select {
			case v.migEvent <- struct{}{}:
			default:
			}
		default:
			d.log.Debug("vm event", "vm", v.id, "event", e.Event, "data", e.Data)
		}
	}
}

// reap waits for v's process to end and records its exit.
func (d *Driver) reap(v *vm) {
	st := v.proc.wait()
	at := time.Now()
	v.mu.Lock()
	v.gone = true
	m := v.mon
	v.mon = nil
	v.mu.Unlock()
	if m != nil {
		// QEMU wrote its last events before exiting; read them.
		select {
		case <-m.done:
		case <-time.After(exitEventWait):
		}
		m.close()
	}
	v.evMu.Lock()
	sd := v.shutdown
	v.evMu.Unlock()
	v.mu.Lock()
	state, err := exitOutcome(v.id, st, sd, v.stopping, v.killWhy, func() string { return v.outputTail(false) })
	if v.incoming && errors.Is(err, ErrCrashed) {
		// QEMU exits when its incoming migration fails (or the source
		// cancels it): the VM never ran.
		err = fmt.Errorf("%w: %w", vmm.ErrIncomingFailed, err)
	}
	v.status = st
	v.state = state
	v.result = vmm.ExitResult{ID: v.id, Err: err, At: at}
	v.mu.Unlock()
	close(v.exited)
	if err != nil {
		d.log.Warn("vm exited", "vm", v.id, "pid", v.handle.PID, "state", state, "err", err)
	} else {
		d.log.Info("vm exited", "vm", v.id, "pid", v.handle.PID, "state", state)
	}
}

// exitOutcome decides the state and exit error of a VM whose QEMU ended
// with st, after the SHUTDOWN event sd (if seen), with the driver's own
// stop request and kill reason. tail returns the end of QEMU's output.
func exitOutcome(id string, st exitStatus, sd shutdownEvent, stopping bool, killWhy string, tail func() string) (vmm.State, error) {
	guestOff := sd.seen && sd.reason == "guest-shutdown"
	ps := st.state
	switch {
	case ps != nil && ps.Success() && (guestOff || (!sd.seen && killWhy == "")):
		// Status 0 without an event: QEMU exits 0 only on a shutdown
		// request, and the event that would say whose was missed.
		return vmm.StateStopped, nil
	case ps == nil && guestOff:
		return vmm.StateStopped, nil
	case ps == nil && stopping && !sd.seen && killWhy == "":
		// Not our child and no event (QMP was not connected), but Stop
		// asked the guest to power off and it went.
		return vmm.StateStopped, nil
	}
	state := vmm.StateCrashed
	if stopping {
		state = vmm.StateStopped
	}
	if killWhy != "" {
		return state, fmt.Errorf("vm %s: %w: %s", id, ErrKilled, killWhy)
	}
	var what string
	switch {
	case sd.seen && (ps == nil || ps.Success()):
		what = fmt.Sprintf("qemu shut down (reason %s, guest %t)", sd.reason, sd.guest)
	case ps == nil:
		what = "the qemu process is gone without a shutdown: killed or crashed"
	default:
		what = "qemu " + ps.String()
	}
	return state, fmt.Errorf("vm %s: %w: %s%s", id, ErrCrashed, what, tail())
}

// Recover adopts the VM of a handle that Start returned, in this process
// or an earlier one. It checks that the handle's PID is still that VM's
// QEMU (its start time and command line) and returns vmm.ErrNotFound if
// not. It reconnects QMP, waiting up to 5 s; if that fails (QEMU serves one
// QMP client at a time, so an older Driver that was not closed holds it) the
// VM is adopted anyway and QMP is retried when needed. Recovering a VM the
// driver already runs from the same handle returns nil.
func (d *Driver) Recover(ctx context.Context, h vmm.Handle) error {
	id := h.ID
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recover vm %s: %w", id, err)
	}
	if h.Driver != DriverName {
		return fmt.Errorf("recover vm %s: the handle is from driver %q: %w", id, h.Driver, vmm.ErrNotFound)
	}
	if err := checkID(id); err != nil {
		return fmt.Errorf("recover vm %s: %w", id, err)
	}
	startTime, err := strconv.ParseUint(h.Data[DataStartTime], 10, 64)
	if err != nil || h.PID <= 0 || h.Data[DataStateDir] == "" {
		return fmt.Errorf("recover vm %s: the handle lacks the pid, start time or state dir: %w", id, vmm.ErrNotFound)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("recover vm %s: %w", id, ErrClosed)
	}
	if d.starting[id] {
		d.mu.Unlock()
		return fmt.Errorf("recover vm %s: %w", id, vmm.ErrAlreadyRunning)
	}
	if v := d.vms[id]; v != nil && v.running() {
		d.mu.Unlock()
		if v.handle.PID == h.PID && v.handle.Data[DataStartTime] == h.Data[DataStartTime] {
			return nil
		}
		return fmt.Errorf("recover vm %s: another run of it has pid %d: %w", id, v.handle.PID, vmm.ErrAlreadyRunning)
	}
	d.starting[id] = true
	d.mu.Unlock()
	v, err := d.adopt(ctx, h, startTime)
	d.release(id, v)
	if err != nil {
		return fmt.Errorf("recover vm %s: %w", id, err)
	}
	d.log.Info("vm recovered", "vm", id, "pid", h.PID, "startedAt", h.StartedAt)
	return nil
}

// adopt finds the process of h and watches it.
func (d *Driver) adopt(ctx context.Context, h vmm.Handle, startTime uint64) (*vm, error) {
	f := newFiles(h.Data[DataStateDir])
	args, err := readCmdline(h.PID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("process %d is gone: %w", h.PID, vmm.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if !isQEMUOf(args, h.ID, f) {
		return nil, fmt.Errorf("process %d is not the qemu of this vm: %w", h.PID, vmm.ErrNotFound)
	}
	// openProcess checks the start time after pinning the process, so a
	// PID reused since the command line check is caught.
	proc, err := openProcess(h.PID, startTime)
	if errors.Is(err, errNoProcess) {
		return nil, fmt.Errorf("process %d is gone: %w", h.PID, vmm.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	logOffset, _ := strconv.ParseInt(h.Data[DataLogOffset], 10, 64)
	v := &vm{
		id:         h.ID,
		handle:     h,
		files:      f,
		createdDir: h.Data[DataCreatedDir] == "true",
		startedAt:  h.StartedAt,
		logOffset:  logOffset,
		proc:       proc,
		exited:     make(chan struct{}),
		migEvent:   make(chan struct{}, 1),
	}
	v.handle.Data = maps.Clone(h.Data)
	go d.reap(v)
	qctx, cancel := context.WithTimeout(ctx, recoverQMPTimeout)
	defer cancel()
	m, err := d.monitorFor(qctx, v)
	if err != nil {
		d.log.Warn("recovered vm without qmp; will retry when needed", "vm", h.ID, "err", err)
		return v, nil
	}
	status, err := queryStatus(qctx, m)
	if err != nil {
		d.log.Warn("recovered vm: qmp query-status failed", "vm", h.ID, "err", err)
		return v, nil
	}
	status, err = d.recoverMigration(qctx, v, m, status)
	if err != nil {
		d.log.Warn("recovered vm: its migration is in an unknown state", "vm", h.ID, "err", err)
	}
	switch {
	case status == runstateRunning:
	case status == runstateInmigrate || (status == runstatePaused && h.Data[DataIncoming] == "true"):
		v.mu.Lock()
		v.incoming = true
		v.mu.Unlock()
		d.log.Info("recovered vm is an incoming migration target, not resumed", "vm", h.ID, "status", status)
	case status == runstatePostmigrate:
		v.mu.Lock()
		v.migrated = true
		v.mu.Unlock()
		d.log.Info("recovered vm was migrated away and is paused", "vm", h.ID)
	default:
		d.log.Warn("recovered vm is not running", "vm", h.ID, "status", status)
	}
	return v, nil
}

// isQEMUOf reports whether args, a process's command line, is the QEMU this
// driver started for VM id with files f.
func isQEMUOf(args []string, id string, f files) bool {
	name, qmpPath := false, false
	for i, a := range args {
		if a == "-name" && i+1 < len(args) && args[i+1] == nameArg(id) {
			name = true
		}
		if strings.Contains(a, "path="+optEscape(f.qmp)+",") {
			qmpPath = true
		}
	}
	return name && qmpPath
}

// monitorFor returns v's QMP connection, connecting if there is none.
func (d *Driver) monitorFor(ctx context.Context, v *vm) (*monitor, error) {
	v.mu.Lock()
	if v.gone {
		v.mu.Unlock()
		return nil, errors.New("qemu has exited")
	}
	if m := v.mon; m != nil && !m.closed() {
		v.mu.Unlock()
		return m, nil
	}
	v.mu.Unlock()
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	m, err := dialMonitor(ctx, v.files.qmp, d.eventHandler(v))
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if v.gone || (v.mon != nil && !v.mon.closed()) {
		other, gone := v.mon, v.gone
		v.mu.Unlock()
		m.close()
		if gone {
			return nil, errors.New("qemu has exited")
		}
		return other, nil
	}
	v.mon = m
	v.mu.Unlock()
	return m, nil
}

// Wait returns a channel that receives the VM's ExitResult when its QEMU
// ends, and is then closed. For a VM that has already stopped it delivers
// that run's result at once. Cancelling ctx closes the channel without a
// value. It returns vmm.ErrNotFound for an unknown ID.
func (d *Driver) Wait(ctx context.Context, id string) (<-chan vmm.ExitResult, error) {
	v := d.lookup(id)
	if v == nil {
		return nil, fmt.Errorf("wait for vm %s: %w", id, vmm.ErrNotFound)
	}
	ch := make(chan vmm.ExitResult, 1)
	go func() {
		defer close(ch)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-v.exited:
			v.mu.Lock()
			res := v.result
			v.mu.Unlock()
			ch <- res
		case <-ctx.Done():
		}
	}()
	return ch, nil
}

// Stop presses the VM's ACPI power button (again every second) and waits
// up to timeout (Config.StopTimeout if 0) for QEMU to exit, then kills it.
// It returns nil once QEMU is gone, and at once for a VM that does not run
// (including one whose Start is still in progress). If ctx ends first, Stop
// returns ctx's error and the VM may still be shutting down. A VM paused
// for a live migration (vmm.Status.Paused) cannot power off: Stop kills it
// at once.
func (d *Driver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	v := d.lookup(id)
	if v == nil || !v.running() {
		return nil
	}
	if timeout <= 0 {
		timeout = d.cfg.StopTimeout
	}
	v.mu.Lock()
	v.stopping = true
	paused := v.incoming || v.migrated
	v.mu.Unlock()
	if paused {
		// A guest paused for a migration cannot act on the power button.
		if err := v.kill("stopped while paused for a live migration"); err != nil {
			return fmt.Errorf("stop vm %s: %w", id, err)
		}
		select {
		case <-v.exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stop vm %s: %w", id, ctx.Err())
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var pressing atomic.Bool
	press := func() {
		if !pressing.CompareAndSwap(false, true) {
			return
		}
		go func() {
			defer pressing.Store(false)
			pctx, cancel := context.WithTimeout(sctx, 2*powerdownRetry)
			defer cancel()
			m, err := d.monitorFor(pctx, v)
			if err == nil {
				err = m.execute(pctx, "system_powerdown", nil, nil)
			}
			if err != nil && v.running() {
				d.log.Debug("power button press failed", "vm", id, "err", err)
			}
		}()
	}
	press()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	tick := time.NewTicker(powerdownRetry)
	defer tick.Stop()
	for {
		select {
		case <-v.exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stop vm %s: %w", id, ctx.Err())
		case <-tick.C:
			press()
		case <-timer.C:
			d.log.Warn("guest did not power off; killing it", "vm", id, "timeout", timeout)
			if err := v.kill(fmt.Sprintf("the guest did not power off within %v", timeout)); err != nil {
				return fmt.Errorf("stop vm %s: %w", id, err)
			}
			select {
			case <-v.exited:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("stop vm %s: %w", id, ctx.Err())
			}
		}
	}
}

// Destroy kills the VM's QEMU if it runs, waits for it to end, and removes
// the files the driver created in its StateDir (and the directory, if Start
// created it and it is then empty). Destroying an unknown ID returns nil.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	v := d.lookup(id)
	if v == nil {
		return nil
	}
	if v.running() {
		if err := v.kill("destroyed"); err != nil {
			return fmt.Errorf("destroy vm %s: %w", id, err)
		}
		select {
		case <-v.exited:
		case <-ctx.Done():
			return fmt.Errorf("destroy vm %s: %w", id, ctx.Err())
		}
	}
	var errs []error
	for _, p := range v.files.created() {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if v.createdDir {
		if err := os.Remove(v.files.dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	if d.vms[id] == v {
		delete(d.vms, id)
	}
	d.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy vm %s: %w", id, err)
	}
	d.log.Info("vm destroyed", "vm", id)
	return nil
}

// Inspect reports the state of the VM's latest run, or vmm.ErrNotFound. A
// VM whose QEMU runs is vmm.StateRunning, with Paused set if it waits for
// or holds an incoming migration (before Resume) or has been migrated away
// (QEMU's runstates inmigrate, paused and postmigrate).
func (d *Driver) Inspect(_ context.Context, id string) (vmm.Status, error) {
	v := d.lookup(id)
	if v == nil {
		return vmm.Status{}, fmt.Errorf("inspect vm %s: %w", id, vmm.ErrNotFound)
	}
	st := vmm.Status{ID: id, State: vmm.StateRunning, StartedAt: v.startedAt}
	if !v.running() {
		v.mu.Lock()
		st.State = v.state
		if v.result.Err != nil {
			st.ExitError = v.result.Err.Error()
		}
		v.mu.Unlock()
	} else {
		st.Paused = v.paused()
	}
	return st, nil
}

// List returns the IDs of the VMs the driver knows, running or stopped, in
// order.
func (d *Driver) List(_ context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.vms)), nil
}

// Announce makes the LAN learn the VM's location at once, after it starts
// on a new host: QEMU's announce-self sends gratuitous RARP packets from
// each NIC's MAC, five times over about a second (QEMU's defaults). It
// returns vmm.ErrNotFound for a VM that does not run.
func (d *Driver) Announce(ctx context.Context, id string) error {
	v := d.lookup(id)
	if v == nil || !v.running() {
		return fmt.Errorf("announce vm %s: %w", id, vmm.ErrNotFound)
	}
	m, err := d.monitorFor(ctx, v)
	if err != nil {
		return fmt.Errorf("announce vm %s: %w", id, err)
	}
	args := map[string]int{"initial": 50, "max": 550, "rounds": 5, "step": 100}
	if err := m.execute(ctx, "announce-self", args, nil); err != nil {
		return fmt.Errorf("announce vm %s: %w", id, err)
	}
	return nil
}
