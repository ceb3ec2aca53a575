package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/netid"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// ErrAlreadyStarted is returned by a second call of Agent.Run.
var ErrAlreadyStarted = errors.New("agent: already started")

// tuning holds the agent's internal timings. Tests shorten them.
type tuning struct {
	// startBackoffMin and startBackoffMax bound the wait before starting a
	// VM again after a failed start or an unexpected exit.
	startBackoffMin, startBackoffMax time.Duration
	// stableAfter is how long a VM must have run for its next exit to be
	// restarted after startBackoffMin again rather than a longer wait.
	stableAfter time.Duration
	// retryMin and retryMax bound the waits between retries of the join,
	// the assignment stream and status reports.
	retryMin, retryMax time.Duration
	// streamIdle is how long the assignment stream may stay silent (the
	// server pings every 10 s) before the agent reconnects.
	streamIdle time.Duration
	// stopTimeout is what Driver.Stop gets before it kills the guest.
	stopTimeout time.Duration
	// reportTimeout bounds one status report request.
	reportTimeout time.Duration
}

var defaultTuning = tuning{
	startBackoffMin: time.Second,
	startBackoffMax: 30 * time.Second,
	stableAfter:     time.Minute,
	retryMin:        250 * time.Millisecond,
	retryMax:        10 * time.Second,
	streamIdle:      35 * time.Second,
	stopTimeout:     10 * time.Second,
	reportTimeout:   10 * time.Second,
}

// Agent is the ferry agent of one host. Create it with New and run it with
// Run. Its methods are safe for concurrent use.
type Agent struct {
	log        *slog.Logger
	driver     vmm.Driver
	name       string
	serverURL  string
	serverHost string
	joinToken  string
	stateDir   string
	vmsDir     string
	listenAddr string
	heartbeat  api.Heartbeat
	interval   time.Duration
	tune       tuning
	metrics    *metrics

	// joined is whether StateDir holds an identity; Run sets it after a
	// join.
	joined bool

	started atomic.Bool
	// session numbers the assignment stream's connections.
	session atomic.Uint64
	// guardCmd starts the VM guard (see guard.go); nil: no guard.
	guardCmd []string
	// fenceAfter is how long without an acknowledged heartbeat before the
	// agent kills its VMs (see fence.go); 0 disables self-fencing.
	fenceAfter time.Duration
	// fenced is set while the host is fenced; unfencedSession is the
	// stream session current when the last fence ended: assignments from
	// it or older are not acted on.
	fenced          atomic.Bool
	unfencedSession atomic.Uint64
	// streamCancel ends the current assignment stream (to get a fresh
	// snapshot after a fence).
	streamCancel atomic.Pointer[context.CancelCauseFunc]
	metricsAddr  atomic.Pointer[string]
	lastAck      atomic.Pointer[time.Time]

	// client carries the assignment stream and the reports (mTLS); set by
	// Run before any worker starts.
	client *http.Client

	// bridge is the host bridge for instance taps.
	bridge string
	// apiAddr is where the agent API listens ("" disables it).
	apiAddr string
	// uplink is the host NIC enslaved to the bridge ("" leaves it alone).
	uplink string
	// imageLocks serialises downloads of one image by several workers.
	imageLocksMu sync.Mutex
	imageLocks   map[string]*sync.Mutex

	// tlsCfg is the node's TLS configuration (its certificate, the CA);
	// set by Run before any worker starts. Replication links use it.
	tlsCfg *tls.Config
	// diskTune tunes the replicated disk path.
	diskTune diskTuning

	mu sync.Mutex
	// workers holds one worker per instance the agent acts on.
	workers map[string]*worker
	// disks holds the replicated disks open on this host, by instance.
	disks map[string]*replDisk
	// runCtx is the context workers run in; set by Run.
	runCtx context.Context
	// wg counts the worker goroutines.
	wg sync.WaitGroup
}

// New checks cfg and returns an Agent. Errors name the Config field at
// fault. New creates StateDir if needed, reads the saved identity, if any,
// and the host's capacity, but does not contact the server.
func New(cfg Config) (*Agent, error) {
	saved, err := checkConfig(&cfg)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("agent: ServerURL: %w", err)
	}
	if saved != nil && saved.Server != cfg.ServerURL {
		cfg.Logger.Info("using a different server than the one joined", "joined", saved.Server, "server", cfg.ServerURL)
	}
	a := &Agent{
		log:        cfg.Logger.With("node", cfg.NodeName),
		driver:     cfg.Driver,
		name:       cfg.NodeName,
		serverURL:  cfg.ServerURL,
		serverHost: u.Hostname(),
		joinToken:  cfg.JoinToken,
		stateDir:   cfg.StateDir,
		vmsDir:     filepath.Join(cfg.StateDir, vmsDirName),
		listenAddr: cfg.ListenAddr,
		heartbeat: api.Heartbeat{
			Capacity:     cfg.Capacity,
			Address:      cfg.Address,
			AgentVersion: cfg.Version,
		},
		interval:   cfg.HeartbeatInterval,
		tune:       defaultTuning,
		metrics:    newMetrics(),
		joined:     saved != nil,
		workers:    make(map[string]*worker),
		disks:      make(map[string]*replDisk),
		diskTune:   defaultDiskTuning,
		fenceAfter: cfg.FenceAfter,
		guardCmd:   cfg.Guard,
		bridge:     cfg.Bridge,
		apiAddr:    cfg.APIAddr,
		uplink:     cfg.Uplink,
		imageLocks: map[string]*sync.Mutex{},
	}
	if a.bridge == "" {
		a.bridge = "ferrybr0"
	}
	if ac, ok := cfg.Driver.(interface{ Accel() string }); ok {
		a.heartbeat.Accel = ac.Accel()
	}
	return a, nil
}

// NodeName returns the node's name in the cluster.
func (a *Agent) NodeName() string { return a.name }

// Capacity returns the capacity the agent reports in its heartbeats.
func (a *Agent) Capacity() api.Resources { return a.heartbeat.Capacity }

// MetricsAddr returns the address /metrics and /healthz are served on once
// Run listens, and "" before that or if Config.ListenAddr is empty.
func (a *Agent) MetricsAddr() string {
	if p := a.metricsAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// LastAck returns when the last heartbeat the server acknowledged was sent
// (so the server renewed the node's lease no earlier than that), or the zero
// time if none was yet. The value carries a monotonic clock reading, so
// time.Since(LastAck()) is immune to wall clock jumps.
func (a *Agent) LastAck() time.Time {
	if p := a.lastAck.Load(); p != nil {
		return *p
	}
	return time.Time{}
}

// Run joins the cluster if this node has no identity yet, re-attaches to the
// VMs it left running, then sends heartbeats and reconciles its assigned
// instances until ctx ends. It returns an error if it cannot start (join
// refused, unreadable identity, metrics address in use) and nil once ctx
// ends after a successful start. VMs keep running when Run returns. Run may
// be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return ErrAlreadyStarted
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup // the metrics server
	defer wg.Wait()
	defer cancel()

	if a.listenAddr != "" {
		ln, err := net.Listen("tcp", a.listenAddr)
		if err != nil {
			return fmt.Errorf("agent: metrics listener: %w", err)
		}
		addr := ln.Addr().String()
		a.metricsAddr.Store(&addr)
		srv := a.metricsServer()
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics listener failed", "addr", addr, "err", err)
			}
		})
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	tlsCfg, err := a.identity(ctx)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if a.realVMs() {
		// Create the host bridge (idempotent) so instance taps have a LAN.
		if err := netid.EnsureBridge(a.bridge, a.uplink); err != nil {
			return fmt.Errorf("agent: bridge %s: %w", a.bridge, err)
		}
	}
	if a.apiAddr != "" {
		addr, err := a.serveAPI(ctx, a.apiAddr, tlsCfg, &wg)
		if err != nil {
			return err
		}
		if a.heartbeat.Address == "" {
			a.heartbeat.Address = advertised(a.serverHost, addr)
		}
	}

	// The heartbeat gets a transport of its own, so its connection is never
	// queued behind the stream or a report.
	hbTransport := newTransport(tlsCfg, max(a.interval, a.fenceAfter))
	hbTransport.MaxIdleConnsPerHost = 1
	hbTransport.ResponseHeaderTimeout = 0 // each request has its own deadline
	defer hbTransport.CloseIdleConnections()
	apiTransport := newTransport(tlsCfg, 10*time.Second)
	defer apiTransport.CloseIdleConnections()

	a.mu.Lock()
	a.client = &http.Client{Transport: apiTransport}
	a.runCtx = ctx
	a.tlsCfg = tlsCfg
	a.mu.Unlock()

	var loops sync.WaitGroup
	startedAt := time.Now()
	if len(a.guardCmd) > 0 {
		a.touchAlive()
		if err := a.startGuard(); err != nil {
			return err
		}
	}
	loops.Go(func() { a.heartbeatLoop(ctx, &http.Client{Transport: hbTransport}) })
	loops.Go(func() { a.fenceLoop(ctx, startedAt) })
	a.recoverVMs(ctx)
	loops.Go(func() { a.streamLoop(ctx) })
	a.log.Info("agent running", "server", a.serverURL, "capacity", a.heartbeat.Capacity, "driver", a.driver.Name())

	<-ctx.Done()
	a.log.Info("agent stopping")
	// The stream creates workers: wait for it before waiting for them.
	loops.Wait()
	a.wg.Wait()
	// Replicated disks close last: VMs keep running, and a VM's QEMU waits
	// (NBD reconnect) for the next agent to serve its disk again.
	a.mu.Lock()
	names := make([]string, 0, len(a.disks))
	for name := range a.disks {
		names = append(names, name)
	}
	a.mu.Unlock()
	for _, name := range names {
		if err := a.closeDisk(name, "", false); err != nil {
			a.log.Warn("closing disk", "vm", name, "err", err)
		}
	}
	return nil
}

// heartbeatLoop sends a heartbeat every interval until ctx ends. It does
// nothing else, so that nothing else can delay it. A heartbeat does not
// wait for the one before it: on a slow path (high latency, a loaded host)
// several are in flight, each with time until the self-fence deadline to be
// acknowledged, so latency up to that deadline costs nothing. When the last
// acknowledgement gets old, beats go out four times as often, so the first
// one after a short outage comes soon.
func (a *Agent) heartbeatLoop(ctx context.Context, client *http.Client) {
	const maxInFlight = 4
	inflight := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	var failing atomic.Bool
	timeout := max(a.interval, a.fenceAfter)
	for {
		select {
		case inflight <- struct{}{}:
			wg.Go(func() {
				defer func() { <-inflight }()
				err := a.sendHeartbeat(ctx, client, timeout)
				switch was := failing.Swap(err != nil); {
				case ctx.Err() != nil:
				case err != nil && !was:
					a.log.Warn("heartbeat failed", "err", err)
				case err != nil:
					a.log.Debug("heartbeat failed", "err", err)
				case was:
					a.log.Info("heartbeats acknowledged again")
				}
			})
		default:
			// maxInFlight beats unanswered: the next tick tries again.
		}
		next := a.interval
		if ack := a.LastAck(); !ack.IsZero() && time.Since(ack) > a.interval*3/2 {
			next = a.interval / 4
		}
		if !sleepCtx(ctx, next) {
			return
		}
	}
}

// sendHeartbeat sends one heartbeat and records its acknowledgement: the
// latest send time acknowledged (an older beat answered late does not move
// it back).
func (a *Agent) sendHeartbeat(ctx context.Context, client *http.Client, timeout time.Duration) error {
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ack api.HeartbeatAck
	if err := doJSON(rctx, client, http.MethodPost, a.serverURL+"/v1/agent/heartbeat", a.heartbeat, &ack); err != nil {
		if ctx.Err() == nil {
			a.metrics.heartbeatError.Inc()
		}
		return fmt.Errorf("heartbeat: %w", err)
	}
	for {
		old := a.lastAck.Load()
		if old != nil && !sent.After(*old) {
			break
		}
		if a.lastAck.CompareAndSwap(old, &sent) {
			a.metrics.lastAck.Set(float64(sent.UnixNano()) / 1e9)
			break
		}
	}
	a.metrics.heartbeatOK.Inc()
	return nil
}

// imageLock returns the lock of one cached image file.
func (a *Agent) imageLock(path string) *sync.Mutex {
	a.imageLocksMu.Lock()
	defer a.imageLocksMu.Unlock()
	l, ok := a.imageLocks[path]
	if !ok {
		l = &sync.Mutex{}
		a.imageLocks[path] = l
	}
	return l
}

// advertised returns host:port where servers reach the agent API: the
// local address this host uses towards the server (found by a UDP
// "connect", which sends nothing) and the API's port.
func advertised(serverHost, listenAddr string) string {
	_, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return listenAddr
	}
	c, err := net.Dial("udp", net.JoinHostPort(serverHost, "9"))
	if err != nil {
		return listenAddr
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return net.JoinHostPort(host, port)
}
