package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/disk/nbd"
	"github.com/ferrycluster/ferry/internal/disk/repl"
	"github.com/ferrycluster/ferry/internal/pki"
)

// A replicated disk on this host. The primary host serves the disk to its
// QEMU over NBD on a unix socket through a repl.Primary, which mirrors
// every write to the secondary host before QEMU hears it is done; the
// secondary host runs a repl.Secondary that the primary's agent dials.
// The replication link rides on the agent API's TLS port, told apart by its
// ALPN protocol, so it needs no port of its own and authenticates both
// sides with their node certificates.

// replALPN is the ALPN protocol of the replication link.
const replALPN = "ferry-repl/1"

// diskSockName is the NBD socket of a VM's disk, in its state directory.
const diskSockName = "disk.sock"

// Tuning of the disk path; see defaultTuning.
type diskTuning struct {
	// degradeAfter is how long a new primary waits for its first link
	// before asking the control plane to let it write alone.
	degradeAfter time.Duration
	// reportEvery bounds how often progress is reported while syncing.
	reportEvery time.Duration
	// poll is how often the link and the state are checked.
	poll time.Duration
}

var defaultDiskTuning = diskTuning{degradeAfter: 3 * time.Second, reportEvery: time.Second, poll: 250 * time.Millisecond}

// replicated reports whether ferry replicates the instance's disk.
func replicated(inst *api.Instance) bool {
	return inst.Spec.SharedPath() == "" && inst.Status.ReplicaNode != ""
}

// diskID names a disk on the replication link: the instance's name and its
// creation time, so a new instance reusing a name is a different disk.
func diskID(inst *api.Instance) string {
	return inst.Name + "@" + strconv.FormatInt(inst.CreatedAt.UnixNano(), 36)
}

// replDisk is one instance's replicated disk on this host, in one role.
type replDisk struct {
	a    *Agent
	name string
	path string
	role string
	log  *slog.Logger

	be   *nbd.FileBackend
	sw   *switchBackend // primary: be, or a copy primary over it (copy.go)
	prim *repl.Primary
	sec  *repl.Secondary
	sock string       // primary: the NBD socket QEMU uses
	srv  *gatedServer // primary: serves the disk on sock

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	peer api.Peer
	// outdatedAt is the epoch under which the control plane recorded the
	// replica as outdated (0: not outdated), from the assignment.
	outdatedAt uint64
	linkErr    error // primary: why the last connect failed
	diverged   bool  // primary: the peer holds data that is not ours
	stale      bool  // primary: the peer knows a higher epoch
	cp         *diskCopy
}

func (d *replDisk) setPeer(p api.Peer) {
	d.mu.Lock()
	d.peer = p
	d.mu.Unlock()
}

// setAssignment records what the control plane says of the replica.
func (d *replDisk) setAssignment(inst *api.Instance) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.outdatedAt = 0
	if inst.Status.ReplicaOutdated {
		d.outdatedAt = inst.Status.Epoch
	}
}

func (d *replDisk) replicaOutdatedAt() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.outdatedAt
}

func (d *replDisk) getPeer() api.Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.peer
}

// close stops the disk's goroutines, replication and NBD server, and closes
// the file. QEMU, if it still runs, loses its disk: callers stop it first.
func (d *replDisk) close() error {
	d.cancel()
	if d.srv != nil {
		// Requests held by a frozen primary end only when it closes:
		// stop the server now, wait for it after.
		d.srv.stop()
		defer d.srv.wait()
	}
	var errs []error
	if d.prim != nil {
		errs = append(errs, d.prim.Close())
	}
	if c := d.copyState(); c != nil {
		// After the serving primary: its last requests went through
		// the copy. The copy's state files stay for dropCopy or
		// closeDisk to remove.
		errs = append(errs, c.prim.Close())
	}
	if d.sec != nil {
		errs = append(errs, d.sec.Close())
	}
	d.wg.Wait()
	errs = append(errs, d.be.Close())
	return errors.Join(errs...)
}

// disk returns the instance's replicated disk on this host, if any.
func (a *Agent) disk(name string) *replDisk {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.disks[name]
}

// closeDisk closes the instance's replicated disk, if open; with remove it
// also deletes its image, metadata and bitmap (the instance is gone).
func (a *Agent) closeDisk(name string, path string, remove bool) error {
	a.mu.Lock()
	d := a.disks[name]
	delete(a.disks, name)
	a.mu.Unlock()
	var errs []error
	if d != nil {
		errs = append(errs, d.close())
		path = d.path
	}
	if remove && path != "" {
		for _, p := range []string{path, repl.MetaPath(path), repl.BitmapPath(path), resetsPath(path), copyMetaPath(path), copyBitmapPath(path)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ensurePrimary opens the instance's disk as a replicating primary and
// serves it over NBD, unless it already is. The disk file must exist. It
// returns the NBD socket for QEMU.
func (w *worker) ensurePrimary(inst *api.Instance, peer *api.Peer) (string, error) {
	a := w.a
	a.mu.Lock()
	d := a.disks[w.name]
	a.mu.Unlock()
	if d != nil && d.role == api.RolePrimary {
		if peer != nil {
			was := d.getPeer().Node
			d.setPeer(*peer)
			// The control plane gave the replica to another host (a drain
			// moving replicas): the old one must stop counting before the
			// new one links, which the loss of the link does, through the
			// control plane as for any loss.
			if was != "" && was != peer.Node && d.prim != nil &&
				d.prim.DropLink(fmt.Errorf("the replica moved from %s to %s", was, peer.Node)) {
				d.log.Info("replica moved; dropped the link to the old one", "from", was, "to", peer.Node)
			}
		}
		d.setAssignment(inst)
		return d.sock, nil
	}
	if d != nil {
		// A secondary promoted here: it becomes the primary (the control
		// plane raised the epoch when it decided so).
		if err := a.closeDisk(w.name, "", false); err != nil {
			return "", fmt.Errorf("disk of %s: close secondary: %w", w.name, err)
		}
	}
	path := a.diskPath(inst)
	be, err := nbd.OpenFileBackend(path, false)
	if err != nil {
		return "", fmt.Errorf("disk of %s: %w", w.name, err)
	}
	d = &replDisk{a: a, name: w.name, path: path, role: api.RolePrimary, be: be, sw: &switchBackend{cur: be},
		log: w.log.With("disk", "primary"), sock: filepath.Join(a.vmDir(w.name), diskSockName)}
	if peer != nil {
		d.peer = *peer
	}
	d.setAssignment(inst)
	ctx, cancel := context.WithCancel(a.runCtx)
	d.cancel = cancel
	prim, err := repl.NewPrimary(repl.Config{
		DiskID:     diskID(inst),
		DiskPath:   path,
		Backend:    d.sw,
		Epoch:      inst.Status.Epoch,
		OnPeerLost: d.peerLost,
	})
	if err != nil {
		cancel()
		be.Close()
		return "", fmt.Errorf("disk of %s: %w", w.name, err)
	}
	d.prim = prim
	if w.incoming != nil {
		// A live migration's target: its QEMU is connected to this
		// socket already, its requests held by the gate until now.
		d.srv, w.incoming = w.incoming, nil
		defer w.closeIncomingEarly() // the gate reads through the primary now
	} else {
		if err := os.MkdirAll(filepath.Dir(d.sock), stateDirMod); err != nil {
			d.close()
			return "", err
		}
		srv, err := startGatedServer(a.runCtx, d.sock, newGate(prim.Size()), w.name, d.log)
		if err != nil {
			d.close()
			return "", fmt.Errorf("disk of %s: nbd socket: %w", w.name, err)
		}
		d.srv = srv
	}
	d.srv.gate.open(prim)
	d.wg.Go(func() { d.linkLoop(ctx) })
	d.wg.Go(func() { d.reportLoop(ctx) })
	a.mu.Lock()
	a.disks[w.name] = d
	a.mu.Unlock()
	d.log.Info("serving replicated disk", "epoch", inst.Status.Epoch, "peer", d.peer.Node, "socket", d.sock)
	return d.sock, nil
}

// ensureSecondary makes this host hold the instance's replica: an empty
// sparse image of the disk's size at first (the primary fills it with a
// full sync that skips holes), then a repl.Secondary the primary's agent
// links to. It applies the control plane's epoch (refusing older
// primaries) and its resets (after a divergence, the local copy is kept
// aside and a fresh one takes a full sync).
func (w *worker) ensureSecondary(inst *api.Instance, peer *api.Peer) error {
	a := w.a
	d := a.disk(w.name)
	if d != nil && d.role != api.RoleSecondary {
		if err := a.closeDisk(w.name, "", false); err != nil {
			return fmt.Errorf("disk of %s: close primary: %w", w.name, err)
		}
		d = nil
	}
	path := a.diskPath(inst)
	if resets, _ := readResets(path); inst.Status.ReplicaResets > resets {
		if d != nil {
			if err := a.closeDisk(w.name, "", false); err != nil {
				return fmt.Errorf("disk of %s: close for reset: %w", w.name, err)
			}
			d = nil
		}
		if _, err := os.Stat(path); err == nil {
			aside, err := repl.KeepAside(path)
			if err != nil {
				return fmt.Errorf("disk of %s: keep diverged copy aside: %w", w.name, err)
			}
			w.log.Warn("replica diverged from the primary the control plane chose; kept it aside for recovery", "path", aside)
		}
		if err := writeResets(path, inst.Status.ReplicaResets); err != nil {
			return fmt.Errorf("disk of %s: %w", w.name, err)
		}
	}
	if d != nil {
		if peer != nil {
			d.setPeer(*peer)
		}
		return d.sec.SetEpoch(inst.Status.Epoch)
	}
	if err := createEmptyDisk(path, int64(inst.Spec.Disk)); err != nil {
		return fmt.Errorf("disk of %s: %w", w.name, err)
	}
	be, err := nbd.OpenFileBackend(path, false)
	if err != nil {
		return fmt.Errorf("disk of %s: %w", w.name, err)
	}
	sec, err := repl.NewSecondary(repl.SecondaryConfig{DiskID: diskID(inst), DiskPath: path, Backend: be})
	if err != nil {
		be.Close()
		return fmt.Errorf("disk of %s: %w", w.name, err)
	}
	if err := sec.SetEpoch(inst.Status.Epoch); err != nil {
		sec.Close()
		be.Close()
		return fmt.Errorf("disk of %s: %w", w.name, err)
	}
	_, cancel := context.WithCancel(a.runCtx)
	d = &replDisk{a: a, name: w.name, path: path, role: api.RoleSecondary, be: be, sec: sec,
		cancel: cancel, log: w.log.With("disk", "secondary")}
	if peer != nil {
		d.peer = *peer
	}
	a.mu.Lock()
	a.disks[w.name] = d
	a.mu.Unlock()
	d.log.Info("holding replica", "epoch", inst.Status.Epoch, "primary", d.peer.Node)
	return nil
}

// createEmptyDisk creates a sparse file of size bytes at path, unless a
// file is there.
func createEmptyDisk(path string, size int64) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), stateDirMod); err != nil {
		return err
	}
	tmp := path + ".creating"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// resetsPath is where a replica host records the last reset it applied.
func resetsPath(diskPath string) string { return diskPath + ".resets" }

func readResets(diskPath string) (uint64, error) {
	b, err := os.ReadFile(resetsPath(diskPath))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func writeResets(diskPath string, n uint64) error {
	return writeFileAtomic(resetsPath(diskPath), []byte(strconv.FormatUint(n, 10)+"\n"), 0o600)
}

// linkLoop keeps the primary linked to its secondary: it dials whenever
// the primary is not connected, and, when a new primary never got its first
// link within degradeAfter, asks the control plane to let it write alone.
func (d *replDisk) linkLoop(ctx context.Context) {
	tune := d.a.diskTune
	start := time.Now()
	// The first retries come quickly: after a migration's switch the
	// peer becomes the replica a moment after this host becomes the
	// primary, and the guest's writes wait for the link meanwhile.
	firstRetry := min(tune.poll, 50*time.Millisecond)
	backoff := firstRetry
	asked := false
	var lastErr string
	for ctx.Err() == nil {
		st := d.prim.Status()
		if st.State == repl.StateUpToDate || st.State == repl.StateSyncing {
			backoff = firstRetry
			if !sleepCtx(ctx, tune.poll) {
				return
			}
			continue
		}
		err := d.connect(ctx)
		if err == nil {
			d.log.Info("linked to replica", "peer", d.getPeer().Node, "epoch", d.prim.Status().Epoch)
			d.mu.Lock()
			d.linkErr, d.diverged, d.stale = nil, false, false
			d.mu.Unlock()
			asked, lastErr, backoff = true, "", firstRetry
			continue
		}
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		d.linkErr = err
		d.diverged = errors.Is(err, repl.ErrDiverged) || errors.Is(err, repl.ErrPeerAhead)
		d.stale = errors.Is(err, repl.ErrStaleEpoch)
		d.mu.Unlock()
		if err.Error() != lastErr {
			d.log.Warn("cannot link to replica; retrying", "peer", d.getPeer().Node, "err", err)
			lastErr = err.Error()
		}
		// A primary that never linked may write alone at once if the
		// control plane already recorded the replica as outdated under
		// this primary's epoch (a new instance, or a failover: both raise
		// the epoch past any the disk was linked under, which Degrade
		// checks).
		if !asked && d.prim.Status().State == repl.StateFrozen {
			if e := d.replicaOutdatedAt(); e != 0 && e == d.prim.Status().Epoch {
				if err := d.prim.Degrade(e); err == nil {
					d.log.Info("replica is outdated per the control plane; writing alone until it is synced", "epoch", e)
					asked = true
					continue
				}
			}
		}
		// Otherwise (new, or restarted after a crash) it waits for its
		// replica a little, then asks to go on alone. One that lost its
		// link asks through OnPeerLost instead.
		if !asked && d.prim.Status().State == repl.StateFrozen && time.Since(start) >= tune.degradeAfter {
			asked = true
			d.wg.Go(func() {
				dec := d.peerLost(ctx)
				if dec.PeerOutdated {
					if err := d.prim.Degrade(dec.Epoch); err != nil && ctx.Err() == nil {
						d.log.Error("cannot go on without the replica", "err", err)
					}
				}
			})
		}
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = nextBackoff(backoff, 5*time.Second)
	}
}

// connect dials the peer agent's replication endpoint for this disk and
// links the primary over it.
func (d *replDisk) connect(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := d.dial(dctx, d.getPeer())
	if err != nil {
		return err
	}
	return d.prim.Connect(dctx, conn)
}

// dial opens a replication link for this disk to peer's agent, which must
// hold a replica of it that accepts this host as its primary.
func (d *replDisk) dial(ctx context.Context, peer api.Peer) (net.Conn, error) {
	if peer.Node == "" || peer.Address == "" {
		return nil, fmt.Errorf("replica host %q has no known address yet", peer.Node)
	}
	cfg := d.a.tlsCfg.Clone()
	cfg.ServerName = peer.Node // a node certificate's only name
	cfg.NextProtos = []string{replALPN}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", peer.Address)
	if err != nil {
		return nil, fmt.Errorf("dial replica %s at %s: %w", peer.Node, peer.Address, err)
	}
	// LinkConn beneath TLS batches the link's records into few system
	// calls (see repl.LinkConn).
	tc := tls.Client(repl.LinkConn(raw), cfg)
	if err := tc.HandshakeContext(dctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("replica %s at %s: TLS: %w", peer.Node, peer.Address, err)
	}
	var conn net.Conn = tc
	if p := tc.ConnectionState().NegotiatedProtocol; p != replALPN {
		conn.Close()
		return nil, fmt.Errorf("replica %s at %s does not speak %s (an older agent?)", peer.Node, peer.Address, replALPN)
	}
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\n", d.name); err != nil {
		conn.Close()
		return nil, fmt.Errorf("replica %s: %w", peer.Node, err)
	}
	line, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("replica %s: %w", peer.Node, err)
	}
	if line = strings.TrimSpace(line); line != "ok" {
		conn.Close()
		return nil, fmt.Errorf("replica %s refused the link: %s", peer.Node, strings.TrimPrefix(line, "error "))
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// serveReplLink is the secondary's end: the agent API's TLS server hands it
// connections that negotiated replALPN. The primary's agent names the disk
// in one line; the link is accepted only from the node the control plane
// made that disk's primary.
func (a *Agent) serveReplLink(_ *http.Server, conn *tls.Conn, _ http.Handler) {
	defer conn.Close()
	refuse := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		a.log.Warn("replication link refused", "reason", msg)
		fmt.Fprintf(conn, "error %s\n", msg)
	}
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		refuse("no client certificate")
		return
	}
	from, err := pki.NodeFromCert(state.PeerCertificates[0])
	if err != nil {
		refuse("not a node certificate: %v", err)
		return
	}
	// Read the name byte by byte: nothing after the newline may be
	// consumed, it belongs to the replication protocol.
	var name []byte
	b := make([]byte, 1)
	for len(name) <= 64 {
		if _, err := io.ReadFull(conn, b); err != nil {
			return
		}
		if b[0] == '\n' {
			break
		}
		name = append(name, b[0])
	}
	if err := api.ValidateName("name", string(name)); err != nil {
		refuse("bad disk name: %v", err)
		return
	}
	d := a.disk(string(name))
	switch {
	case d == nil || d.role != api.RoleSecondary:
		refuse("%s holds no replica of %s", a.name, name)
		return
	case d.getPeer().Node != from:
		refuse("%s is not the primary of %s (the control plane says %q)", from, name, d.getPeer().Node)
		return
	}
	if _, err := io.WriteString(conn, "ok\n"); err != nil {
		return
	}
	_ = conn.SetDeadline(time.Time{})
	a.mu.Lock()
	ctx := a.runCtx
	a.mu.Unlock()
	d.log.Info("replication link from primary", "primary", from)
	if err := d.sec.Serve(ctx, conn); err != nil && ctx.Err() == nil {
		d.log.Info("replication link ended", "primary", from, "err", err)
	}
}

// peerLost asks the control plane to mark the replica outdated and raise
// the epoch, so the primary may write alone (property 4). It retries until
// it gets an answer; a refusal (this node is no longer the primary, or its
// epoch is stale) leaves the primary frozen, which is what an isolated or
// superseded primary must be.
func (d *replDisk) peerLost(ctx context.Context) repl.Decision {
	epoch := d.prim.Status().Epoch
	d.log.Warn("replica lost; asking the control plane to let this primary go on alone", "epoch", epoch)
	u := d.a.serverURL + "/v1/agent/instances/" + url.PathEscape(d.name) + "/outdate-replica"
	backoff := d.a.tune.retryMin
	for {
		var resp api.OutdateResponse
		rctx, cancel := context.WithTimeout(ctx, d.a.tune.reportTimeout)
		err := doJSON(rctx, d.a.client, http.MethodPost, u, api.OutdateRequest{Epoch: epoch}, &resp)
		cancel()
		switch {
		case err == nil && resp.Epoch > epoch:
			d.log.Info("control plane outdated the replica; writing alone", "epoch", resp.Epoch)
			return repl.Decision{PeerOutdated: true, Epoch: resp.Epoch}
		case err == nil:
			d.log.Error("control plane answered without raising the epoch; staying frozen", "epoch", resp.Epoch)
			return repl.Decision{}
		case isPermanent(err) || statusOf(err) == http.StatusConflict:
			d.log.Error("control plane refused; staying frozen", "err", err)
			return repl.Decision{}
		}
		if !sleepCtx(ctx, backoff) {
			return repl.Decision{}
		}
		backoff = nextBackoff(backoff, d.a.tune.retryMax)
	}
}

// status is the disk's state in API terms.
func (d *replDisk) status() api.DiskStatus {
	st := d.prim.Status()
	out := api.DiskStatus{State: string(st.State), Reason: st.Reason, Epoch: st.Epoch, DirtyBytes: st.DirtyBytes, At: time.Now().UTC()}
	d.mu.Lock()
	linkErr, diverged, stale := d.linkErr, d.diverged, d.stale
	d.mu.Unlock()
	switch {
	case diverged && st.State != repl.StateUpToDate && st.State != repl.StateSyncing:
		out.State, out.Reason = api.DiskDiverged, linkErr.Error()
	case stale:
		out.State, out.Reason = api.DiskStaleEpoch, linkErr.Error()
	case (st.State == repl.StateFrozen || st.State == repl.StateDegraded) && linkErr != nil:
		out.Reason += "; " + linkErr.Error()
	}
	if p := d.prim.Progress(); p.TotalBytes > 0 || p.Done {
		out.Sync = &api.DiskSync{TotalBytes: p.TotalBytes, DoneBytes: p.DoneBytes, SentBytes: p.SentBytes,
			BytesPerSecond: p.Rate, ETASeconds: p.ETA.Seconds(), Done: p.Done}
		if out.Sync.DoneBytes > out.Sync.TotalBytes {
			out.Sync.DoneBytes = out.Sync.TotalBytes
		}
	}
	return out
}

// reportLoop tells the server the disk's state when it changes, and the
// resync's progress at most every reportEvery.
func (d *replDisk) reportLoop(ctx context.Context) {
	tune := d.a.diskTune
	var last *api.DiskStatus
	var lastAt time.Time
	u := d.a.serverURL + "/v1/agent/instances/" + url.PathEscape(d.name) + "/disk"
	start := time.Now()
	for {
		cur := d.status()
		if last == nil && cur.State == api.DiskFrozen && time.Since(start) < tune.degradeAfter {
			// A new primary is frozen until its first link, which
			// usually comes at once: no need to alarm anyone yet.
			if !sleepCtx(ctx, tune.poll) {
				return
			}
			continue
		}
		changed := last == nil || last.State != cur.State || last.Reason != cur.Reason || last.Epoch != cur.Epoch
		progressed := last != nil && !changed && !last.Sync.Equal(cur.Sync) && time.Since(lastAt) >= tune.reportEvery
		if changed || progressed {
			rctx, cancel := context.WithTimeout(ctx, d.a.tune.reportTimeout)
			err := doJSON(rctx, d.a.client, http.MethodPut, u, cur, nil)
			cancel()
			switch {
			case err == nil:
				last, lastAt = &cur, time.Now()
			case ctx.Err() != nil:
				return
			case statusOf(err) == http.StatusConflict:
				// Stale (an outdate raced it) or not ours: the next
				// state change reports again.
				last, lastAt = &cur, time.Now()
				d.log.Debug("disk report refused", "err", err)
			default:
				d.log.Debug("disk report failed; retrying", "err", err)
			}
		}
		if !sleepCtx(ctx, tune.poll) {
			return
		}
	}
}
