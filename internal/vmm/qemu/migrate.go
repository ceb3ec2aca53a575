package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/vmm"
)

// QEMU runstates (query-status) the driver tells apart.
const (
	runstateRunning     = "running"
	runstatePaused      = "paused"
	runstateInmigrate   = "inmigrate"
	runstatePostmigrate = "postmigrate"
	// runstateFinishMigrate is the source's runstate during the last step
	// of a migration, while the guest is stopped.
	runstateFinishMigrate = "finish-migrate"
)

// QEMU migration statuses (query-migrate) that end a migration.
const (
	migCompleted = "completed"
	migFailed    = "failed"
	migCancelled = "cancelled"
)

const (
	// migrationPoll is how often Migrate asks QEMU how its migration goes
	// and reports progress; QMP MIGRATION events make it ask at once.
	migrationPoll = 250 * time.Millisecond
	// cancelPoll is how often a cancelled migration is checked for its end.
	cancelPoll = 50 * time.Millisecond
	// resumePoll is how often Resume checks whether an incoming migration
	// has completed.
	resumePoll = 100 * time.Millisecond
	// DefaultDowntimeLimit is the default of vmm.MigrateOptions.DowntimeLimit.
	DefaultDowntimeLimit = 300 * time.Millisecond
	// unlimitedBandwidth is QEMU's max-bandwidth for a MaxBandwidth of 0:
	// 1 TiB/s. (QEMU's own default is a cap of 32 MiB/s.)
	unlimitedBandwidth = 1 << 40
	// migrateCancelTimeout bounds the wait for a cancelled migration to
	// end; QEMU takes milliseconds.
	migrateCancelTimeout = 30 * time.Second
	// settleTimeout bounds the wait, after a migration ended, for the
	// source's runstate to leave finish-migrate.
	settleTimeout = 10 * time.Second
	// settlePoll is how often that runstate is checked.
	settlePoll = 10 * time.Millisecond
	// migrationCommandTimeout bounds each QMP command of Migrate and
	// Resume. They do not use the caller's ctx, since a command cut short
	// closes the QMP connection.
	migrationCommandTimeout = 10 * time.Second
)

// migrationInfo is the part of QMP query-migrate's answer the driver uses.
type migrationInfo struct {
	Status string `json:"status"`
	// Times in milliseconds.
	TotalTime        int64  `json:"total-time"`
	SetupTime        int64  `json:"setup-time"`
	Downtime         int64  `json:"downtime"`
	ExpectedDowntime int64  `json:"expected-downtime"`
	ErrorDesc        string `json:"error-desc"`
	RAM              *struct {
		Transferred    int64 `json:"transferred"`
		Remaining      int64 `json:"remaining"`
		Total          int64 `json:"total"`
		DirtyPagesRate int64 `json:"dirty-pages-rate"`
		PageSize       int64 `json:"page-size"`
		DirtySyncCount int64 `json:"dirty-sync-count"`
	} `json:"ram"`
	// SocketAddress is where an incoming migration listens.
	SocketAddress []struct {
		Type string `json:"type"`
		Host string `json:"host"`
		// Port is a string in QEMU's schema; RawMessage takes a number too.
		Port json.RawMessage `json:"port"`
	} `json:"socket-address"`
}

// active reports whether a migration is under way (not yet completed,
// failed or cancelled).
func (mi migrationInfo) active() bool {
	switch mi.Status {
	case "", "none", migCompleted, migFailed, migCancelled:
		return false
	}
	return true
}

func (mi migrationInfo) progress() vmm.MigrationProgress {
	p := vmm.MigrationProgress{
		Status:           mi.Status,
		Elapsed:          time.Duration(mi.TotalTime) * time.Millisecond,
		ExpectedDowntime: time.Duration(mi.ExpectedDowntime) * time.Millisecond,
	}
	if r := mi.RAM; r != nil {
		p.Total, p.Transferred, p.Remaining = r.Total, r.Transferred, r.Remaining
		p.DirtyRate = r.DirtyPagesRate * r.PageSize
		p.Iterations = r.DirtySyncCount
	}
	return p
}

func (mi migrationInfo) result() vmm.MigrationResult {
	res := vmm.MigrationResult{
		TotalTime: time.Duration(mi.TotalTime) * time.Millisecond,
		Downtime:  time.Duration(mi.Downtime) * time.Millisecond,
		SetupTime: time.Duration(mi.SetupTime) * time.Millisecond,
	}
	if mi.RAM != nil {
		res.Transferred = mi.RAM.Transferred
	}
	return res
}

// describe summarises a migration's progress for an error message.
func (mi migrationInfo) describe() string {
	p := mi.progress()
	return fmt.Sprintf("status %s after %v: %d MiB sent of %d MiB, %d MiB left, dirty rate %d MiB/s, %d passes",
		p.Status, p.Elapsed, p.Transferred>>20, p.Total>>20, p.Remaining>>20, p.DirtyRate>>20, p.Iterations)
}

// capabilities is the argument of migrate-set-capabilities that turns on
// each named capability.
func capabilities(names ...string) map[string]any {
	var caps []map[string]any
	for _, n := range names {
		caps = append(caps, map[string]any{"capability": n, "state": true})
	}
	return map[string]any{"capabilities": caps}
}

// Capabilities of both ends: "events" sends MIGRATION events, which wake
// the driver's waits; "return-path" makes the source wait for the target
// to confirm it has loaded everything before it calls the migration
// completed (without it, a source reports completed, and stays paused,
// although the target failed to load the device state).
var migrationCaps = []string{"events", "return-path"}

// The target also gets "late-block-activate": it takes its disk on cont,
// not when the migration completes, so the source can still take its own
// back (roll back) until the target is resumed.
var incomingCaps = append([]string{"late-block-activate"}, migrationCaps...)

// Ids of the TLS credential objects a VM gets for its migrations: one for
// taking the VM in (server), one for sending it out (client). A VM that
// came in over TLS keeps the first, and may be sent on with or without
// the second.
const (
	tlsInID  = "ferry-migration-tls-in"
	tlsOutID = "ferry-migration-tls-out"
)

// tlsCreds is the object-add argument of QEMU's x509 credentials from
// t.Dir for endpoint ("server" or "client"). Both ends check the peer's
// certificate against the CA.
func tlsCreds(id, endpoint string, t *vmm.MigrationTLS) map[string]any {
	return map[string]any{"qom-type": "tls-creds-x509", "id": id, "dir": t.Dir, "endpoint": endpoint, "verify-peer": true}
}

// checkTLS checks a MigrationTLS from a caller.
func checkTLS(t *vmm.MigrationTLS) error {
	if t == nil {
		return nil
	}
	if t.Dir == "" {
		return errors.New("migration tls: no credentials directory")
	}
	if strings.ContainsAny(t.Hostname, " \t\n,/") {
		return fmt.Errorf("migration tls: hostname %q is not a host name", t.Hostname)
	}
	return nil
}

// splitListen checks StartIncoming's listen argument.
func splitListen(listen string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	if host == "" || strings.ContainsAny(host, ", \t\n") {
		return "", "", fmt.Errorf("listen address %q: want host:port with a host", listen)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
		return "", "", fmt.Errorf("listen address %q: port %q is not 0-65535", listen, port)
	}
	return host, port, nil
}

// checkMigrationURI accepts only the URIs StartIncoming hands out (tcp:)
// and unix sockets: QEMU's exec: would run a command.
func checkMigrationURI(uri string) error {
	switch {
	case strings.HasPrefix(uri, "tcp:"):
		if _, _, err := splitListen(strings.TrimPrefix(uri, "tcp:")); err != nil {
			return fmt.Errorf("migration uri %q: %w", uri, err)
		}
		if strings.HasSuffix(uri, ":0") {
			return fmt.Errorf("migration uri %q has port 0", uri)
		}
		return nil
	case strings.HasPrefix(uri, "unix:") && len(uri) > len("unix:") && !strings.Contains(uri, ","):
		return nil
	}
	return fmt.Errorf("migration uri %q: want tcp:HOST:PORT (or unix:PATH)", uri)
}

// StartIncoming starts a VM that waits for a live migration (see
// vmm.Migrator): QEMU runs with -incoming defer and -S, and once QMP is up
// the driver sets the migration capabilities (events, return-path,
// late-block-activate), with opts.TLS its x509 credentials (the source
// must show a certificate of the same CA), and has it listen on
// opts.Listen with migrate-incoming.
// QEMU reports the port it bound (query-migrate's socket-address), so a
// port of 0 is safe. The URI names listen's host as given: for an
// unspecified address (0.0.0.0) the caller must put in one the source can
// reach. The VM's disk is opened (its NBD server must serve it) but stays
// inactive, and the guest does not run, until Resume. Cancelling ctx kills
// the new QEMU and returns ctx's error.
//
// The VM is then like any other: Wait reports its exit, Stop kills it
// (a paused guest cannot power off), Inspect reports it running and
// Paused, Recover finds it again. If the migration fails or the source
// cancels it, QEMU exits by itself with an error wrapping
// vmm.ErrIncomingFailed.
func (d *Driver) StartIncoming(ctx context.Context, spec vmm.Spec, opts vmm.IncomingOptions) (vmm.Handle, string, error) {
	fail := func(err error) (vmm.Handle, string, error) {
		return vmm.Handle{}, "", fmt.Errorf("start incoming vm %s: %w", spec.ID, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	host, port, err := splitListen(opts.Listen)
	if err != nil {
		return fail(err)
	}
	if err := checkTLS(opts.TLS); err != nil {
		return fail(err)
	}
	spec, err = checkSpec(spec)
	if err != nil {
		return fail(err)
	}
	args, err := buildArgs(spec, d.mc)
	if err != nil {
		return fail(err)
	}
	args = append(args, "-incoming", "defer")
	if err := d.reserve(spec.ID); err != nil {
		return fail(err)
	}
	t0 := time.Now()
	var uri string
	listenReady := func(ctx context.Context, v *vm, m *monitor) error {
		var err error
		uri, err = listenIncoming(ctx, m, host, port, opts.TLS)
		return err
	}
	v, err := d.launch(ctx, spec, args, true, listenReady)
	if err != nil {
		d.release(spec.ID, nil)
		return fail(err)
	}
	d.release(spec.ID, v)
	d.log.Info("vm started for an incoming migration", "vm", spec.ID, "pid", v.handle.PID, "uri", uri, "took", time.Since(t0).Round(time.Millisecond))
	return v.handle, uri, nil
}

// listenIncoming makes a QEMU started with -incoming defer listen on
// host:port, over TLS if tls is set, and returns the URI a source sends
// to.
func listenIncoming(ctx context.Context, m *monitor, host, port string, tls *vmm.MigrationTLS) (string, error) {
	status, err := queryStatus(ctx, m)
	if err != nil {
		return "", err
	}
	if status != runstateInmigrate {
		return "", fmt.Errorf("vm is %q, want %s", status, runstateInmigrate)
	}
	if err := m.execute(ctx, "migrate-set-capabilities", capabilities(incomingCaps...), nil); err != nil {
		return "", err
	}
	if tls != nil {
		if err := m.execute(ctx, "object-add", tlsCreds(tlsInID, "server", tls), nil); err != nil {
			return "", fmt.Errorf("migration tls credentials in %s: %w", tls.Dir, err)
		}
		if err := m.execute(ctx, "migrate-set-parameters", map[string]any{"tls-creds": tlsInID}, nil); err != nil {
			return "", err
		}
	}
	addr := net.JoinHostPort(host, port)
	if err := m.execute(ctx, "migrate-incoming", map[string]string{"uri": "tcp:" + addr}, nil); err != nil {
		return "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	var info migrationInfo
	if err := m.execute(ctx, "query-migrate", nil, &info); err != nil {
		return "", err
	}
	for _, sa := range info.SocketAddress {
		p := strings.Trim(string(sa.Port), `"`)
		if sa.Type == "inet" && p != "" && p != "0" {
			return "tcp:" + net.JoinHostPort(host, p), nil
		}
	}
	if port != "0" {
		return "tcp:" + addr, nil
	}
	return "", fmt.Errorf("qemu did not report the port it listens on (query-migrate: %+v)", info.SocketAddress)
}

// command runs a QMP command of v with its own timeout, so that a caller's
// ctx ending does not cut it short (which would close the connection).
func (d *Driver) command(v *vm, cmd string, args, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), migrationCommandTimeout)
	defer cancel()
	m, err := d.monitorFor(ctx, v)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return m.execute(ctx, cmd, args, out)
}

func (d *Driver) queryMigrate(v *vm) (migrationInfo, error) {
	var info migrationInfo
	err := d.command(v, "query-migrate", nil, &info)
	return info, err
}

// drain empties v.migEvent of events from before a wait.
func (v *vm) drainMigEvents() {
	select {
	case <-v.migEvent:
	default:
	}
}

// Migrate live-migrates VM id to uri, where a VM from StartIncoming
// listens (see vmm.Migrator). It sets the capabilities events and
// return-path and the parameters downtime-limit and max-bandwidth, runs
// QMP migrate, and follows query-migrate every 250 ms (and at each
// MIGRATION event). The disk is not copied.
//
// When it returns nil, the source is paused in QEMU's runstate postmigrate
// and has released its disk (flushed, and inactive), and the target has
// confirmed it loaded the whole state (return-path); Inspect reports the
// source Paused. If the migration fails, QEMU resumes the source. If ctx
// ends, or opts.ConvergeTimeout passes, Migrate runs migrate_cancel and
// waits until QEMU reports the migration cancelled; should it have
// completed meanwhile, a cancelled ctx still leaves the source running (it
// is resumed, and the target must be destroyed), while for
// ConvergeTimeout the completed migration is returned. If the driver is
// closed, or QEMU stops answering, during a migration, Migrate tries to
// cancel it and returns an error; a migration left running (the agent
// died) is cancelled by the next Recover of the VM.
func (d *Driver) Migrate(ctx context.Context, id, uri string, opts vmm.MigrateOptions, progress func(vmm.MigrationProgress)) (vmm.MigrationResult, error) {
	fail := func(err error) (vmm.MigrationResult, error) {
		return vmm.MigrationResult{}, fmt.Errorf("migrate vm %s: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := checkMigrationURI(uri); err != nil {
		return fail(err)
	}
	if opts.DowntimeLimit < 0 || opts.MaxBandwidth < 0 || opts.ConvergeTimeout < 0 {
		return fail(fmt.Errorf("negative option in %+v", opts))
	}
	if err := checkTLS(opts.TLS); err != nil {
		return fail(err)
	}
	downtime := opts.DowntimeLimit
	if downtime == 0 {
		downtime = DefaultDowntimeLimit
	}
	bandwidth := opts.MaxBandwidth
	if bandwidth == 0 {
		bandwidth = unlimitedBandwidth
	}
	v := d.lookup(id)
	if v == nil || !v.running() {
		return fail(vmm.ErrNotFound)
	}
	v.mu.Lock()
	var busy error
	switch {
	case v.migrating:
		busy = errors.New("another migration of it is under way")
	case v.incoming:
		busy = errors.New("it is an incoming migration target that has not been resumed")
	case v.migrated:
		busy = errors.New("it has been migrated already (Resume it to roll back, or Destroy it)")
	default:
		v.migrating = true
	}
	v.mu.Unlock()
	if busy != nil {
		return fail(busy)
	}
	defer func() {
		v.mu.Lock()
		v.migrating = false
		v.mu.Unlock()
	}()

	info, err := d.queryMigrate(v)
	if err != nil {
		return fail(err)
	}
	if info.active() {
		return fail(fmt.Errorf("qemu has a migration under way already (%s)", info.describe()))
	}
	if err := d.command(v, "migrate-set-capabilities", capabilities(migrationCaps...), nil); err != nil {
		return fail(err)
	}
	params := map[string]any{
		"downtime-limit": max(downtime.Milliseconds(), 1),
		"max-bandwidth":  bandwidth,
		// A VM that came in over TLS still names its server credentials:
		// plain unless TLS is asked for.
		"tls-creds":    "",
		"tls-hostname": "",
	}
	if t := opts.TLS; t != nil {
		// Credentials of an earlier migration may be stale (renewed
		// certificates): load them again.
		_ = d.command(v, "object-del", map[string]string{"id": tlsOutID}, nil)
		if err := d.command(v, "object-add", tlsCreds(tlsOutID, "client", t), nil); err != nil {
			return fail(fmt.Errorf("migration tls credentials in %s: %w", t.Dir, err))
		}
		params["tls-creds"], params["tls-hostname"] = tlsOutID, t.Hostname
	}
	if err := d.command(v, "migrate-set-parameters", params, nil); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	v.drainMigEvents()
	t0 := time.Now()
	if err := d.command(v, "migrate", map[string]string{"uri": uri}, nil); err != nil {
		return fail(err)
	}
	d.log.Info("vm migration started", "vm", id, "uri", uri, "downtimeLimit", downtime, "maxBandwidth", bandwidth)

	var converge <-chan time.Time
	if opts.ConvergeTimeout > 0 {
		timer := time.NewTimer(opts.ConvergeTimeout)
		defer timer.Stop()
		converge = timer.C
	}
	tick := time.NewTicker(migrationPoll)
	defer tick.Stop()
	for {
		report := false
		select {
		case <-v.exited:
			return fail(fmt.Errorf("qemu exited during the migration (%s)", v.statusString()))
		case <-ctx.Done():
			return d.cancelMigration(v, id, info, ctx.Err(), true)
		case <-converge:
			err := fmt.Errorf("%w within %v", vmm.ErrNotConverged, opts.ConvergeTimeout)
			return d.cancelMigration(v, id, info, err, false)
		case <-tick.C:
			report = progress != nil
		case <-v.migEvent:
		}
		latest, err := d.queryMigrate(v)
		if err != nil {
			if !v.running() {
				continue // the exit is reported above
			}
			return d.cancelMigration(v, id, info, fmt.Errorf("follow the migration: %w", err), true)
		}
		info = latest
		if report && info.Status != "" {
			progress(info.progress())
		}
		if !info.active() && info.Status != "" {
			// QEMU reports the end before it has finished with it.
			info = d.settle(v, info)
		}
		switch info.Status {
		case migCompleted:
			return d.migrated(v, id, info, time.Since(t0)), nil
		case migFailed:
			why := info.ErrorDesc
			if why == "" {
				why = "qemu gives no reason; the target's log may"
			}
			return fail(fmt.Errorf("migration failed after %v: %s", time.Since(t0).Round(time.Millisecond), why))
		case migCancelled:
			return fail(errors.New("the migration was cancelled by someone else"))
		}
	}
}

// settle waits until a migration that has ended (info) is done with: QEMU
// announces the end (MIGRATION event, query-migrate) from its migration
// thread, then computes the times and sets the source's runstate (to
// postmigrate, or running again) under its big lock. Until then cont
// fails and the times read 0. It returns the migration's info after that.
func (d *Driver) settle(v *vm, info migrationInfo) migrationInfo {
	deadline := time.Now().Add(settleTimeout)
	for {
		var status struct {
			Status string `json:"status"`
		}
		err := d.command(v, "query-status", nil, &status)
		if err != nil || status.Status != runstateFinishMigrate {
			break
		}
		if time.Now().After(deadline) {
			d.log.Warn("vm still in runstate finish-migrate after its migration ended", "vm", v.id, "status", info.Status, "waited", settleTimeout)
			return info
		}
		select {
		case <-v.exited:
			return info
		case <-time.After(settlePoll):
		}
	}
	if latest, err := d.queryMigrate(v); err == nil && latest.Status == info.Status {
		return latest
	}
	return info
}

// migrated records the completed migration of v and returns its result.
func (d *Driver) migrated(v *vm, id string, info migrationInfo, took time.Duration) vmm.MigrationResult {
	v.mu.Lock()
	v.migrated = true
	v.mu.Unlock()
	res := info.result()
	d.log.Info("vm migrated", "vm", id, "totalTime", res.TotalTime, "downtime", res.Downtime, "setupTime", res.SetupTime,
		"transferredMiB", res.Transferred>>20, "took", took.Round(time.Millisecond))
	return res
}

// cancelMigration cancels v's migration because of cause, waits until it
// has ended and returns cause. If the migration completed nevertheless,
// then with rollback the source is resumed (and cause returned), else the
// completed migration is returned.
func (d *Driver) cancelMigration(v *vm, id string, last migrationInfo, cause error, rollback bool) (vmm.MigrationResult, error) {
	fail := func(err error) (vmm.MigrationResult, error) {
		return vmm.MigrationResult{}, fmt.Errorf("migrate vm %s: %w", id, err)
	}
	d.log.Info("cancelling vm migration", "vm", id, "cause", cause, "progress", last.describe())
	ctx, cancel := context.WithTimeout(context.Background(), migrateCancelTimeout)
	defer cancel()
	if err := d.command(v, "migrate_cancel", nil, nil); err != nil {
		return fail(errors.Join(cause, err))
	}
	tick := time.NewTicker(cancelPoll)
	defer tick.Stop()
	for {
		info, err := d.queryMigrate(v)
		switch {
		case err != nil && v.running():
			return fail(errors.Join(cause, fmt.Errorf("after migrate_cancel: %w", err)))
		case err != nil:
		case info.Status == migCancelled || info.Status == migFailed:
			d.settle(v, info)
			if errors.Is(cause, vmm.ErrNotConverged) {
				cause = fmt.Errorf("%w (%s)", cause, last.describe())
			}
			return fail(cause)
		case info.Status == migCompleted && !rollback:
			info = d.settle(v, info)
			return d.migrated(v, id, info, time.Duration(info.TotalTime)*time.Millisecond), nil
		case info.Status == migCompleted:
			d.settle(v, info)
			// Too late: the target has everything (but, paused and with
			// its disk inactive, has not run). Take the VM back.
			d.log.Warn("vm migration completed before it could be cancelled; resuming the source", "vm", id)
			if err := d.command(v, "cont", nil, nil); err != nil {
				v.mu.Lock()
				v.migrated = true
				v.mu.Unlock()
				return fail(errors.Join(cause, fmt.Errorf("the migration completed before it could be cancelled, and resuming the source failed: %w", err)))
			}
			return fail(fmt.Errorf("%w (the migration had completed; the source was resumed)", cause))
		}
		select {
		case <-v.exited:
			return fail(errors.Join(cause, fmt.Errorf("qemu exited during the migration (%s)", v.statusString())))
		case <-ctx.Done():
			return fail(errors.Join(cause, fmt.Errorf("the migration did not end within %v of migrate_cancel", migrateCancelTimeout)))
		case <-tick.C:
		case <-v.migEvent:
		}
	}
}

// Resume lets a VM paused for a migration run (see vmm.Migrator) with QMP
// cont. A target whose incoming migration has not completed yet (runstate
// inmigrate) is waited for until ctx ends; QEMU activates its disk on
// cont. A source in runstate postmigrate (migrated) takes its disk back
// on cont: this rolls the migration back, and is safe only while the
// target has not been resumed. Resuming a running VM returns nil.
func (d *Driver) Resume(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("resume vm %s: %w", id, err)
	}
	v := d.lookup(id)
	if v == nil || !v.running() {
		return fmt.Errorf("resume vm %s: %w", id, vmm.ErrNotFound)
	}
	v.mu.Lock()
	migrating := v.migrating
	v.mu.Unlock()
	if migrating {
		return fmt.Errorf("resume vm %s: a migration of it is under way", id)
	}
	v.drainMigEvents()
	tick := time.NewTicker(resumePoll)
	defer tick.Stop()
	for {
		var status struct {
			Status string `json:"status"`
		}
		err := d.command(v, "query-status", nil, &status)
		switch {
		case err != nil && !v.running():
		case err != nil:
			return fmt.Errorf("resume vm %s: %w", id, err)
		case status.Status == runstateRunning:
			d.resumed(v)
			return nil
		case status.Status != runstateInmigrate:
			if err := d.command(v, "cont", nil, nil); err != nil {
				return fmt.Errorf("resume vm %s (%s): %w", id, status.Status, err)
			}
			if err := d.command(v, "query-status", nil, &status); err != nil {
				return fmt.Errorf("resume vm %s: %w", id, err)
			}
			if status.Status != runstateRunning {
				return fmt.Errorf("resume vm %s: vm is %q after qmp cont, want running", id, status.Status)
			}
			d.resumed(v)
			d.log.Info("vm resumed", "vm", id)
			return nil
		}
		select {
		case <-v.exited:
			v.mu.Lock()
			res := v.result
			v.mu.Unlock()
			return fmt.Errorf("resume vm %s: qemu exited before its incoming migration completed: %w", id, res.Err)
		case <-ctx.Done():
			return fmt.Errorf("resume vm %s: waiting for the incoming migration to complete: %w", id, ctx.Err())
		case <-tick.C:
		case <-v.migEvent:
		}
	}
}

func (d *Driver) resumed(v *vm) {
	v.mu.Lock()
	v.incoming = false
	v.migrated = false
	v.mu.Unlock()
}

// recoverMigration cancels an outgoing migration that an earlier driver
// started and nobody follows any more, and returns the VM's runstate
// after it: running again, or postmigrate if the migration completed
// first.
func (d *Driver) recoverMigration(ctx context.Context, v *vm, m *monitor, status string) (string, error) {
	if status != runstateRunning && status != runstateFinishMigrate {
		return status, nil
	}
	var info migrationInfo
	if err := m.execute(ctx, "query-migrate", nil, &info); err != nil {
		return status, err
	}
	if !info.active() {
		return status, nil
	}
	d.log.Warn("recovered vm has a migration under way that nobody follows; cancelling it", "vm", v.id, "progress", info.describe())
	if err := m.execute(ctx, "migrate_cancel", nil, nil); err != nil {
		return status, err
	}
	for info.active() {
		select {
		case <-ctx.Done():
			return status, ctx.Err()
		case <-time.After(cancelPoll):
		}
		if err := m.execute(ctx, "query-migrate", nil, &info); err != nil {
			return status, err
		}
	}
	return queryStatus(ctx, m)
}
