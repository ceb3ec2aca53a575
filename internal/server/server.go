package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config configures a server. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the embedded etcd and the files the server writes for
	// its operator (ca.crt). Required.
	DataDir string
	// Listen is the HTTPS address; default ":7443".
	Listen string
	// EtcdEndpoints selects an external etcd cluster; empty embeds one in
	// DataDir/etcd.
	EtcdEndpoints []string
	// EtcdPrefix roots every key; default store.Prefix. Tests set their own.
	EtcdPrefix string
	// Hosts are extra names and IPs for the server certificate.
	Hosts []string
	// NodeTTL is the node lease time-to-live; default 3 s.
	NodeTTL time.Duration
	// AdminTokenFile, if set, receives the admin token on first start
	// (mode 0600) in addition to the log.
	AdminTokenFile string
	// ID names this server in leader election; default hostname + listen.
	ID      string
	Version string
	Logger  *slog.Logger
	// Now is the clock; default time.Now. Tests inject theirs.
	Now func() time.Time
	// CPURatio is the CPU overcommit the scheduler allows: virtual CPUs
	// per physical CPU (--cpu-overcommit); default 4.
	CPURatio float64
	// MemRatio is the memory overcommit; default 1 (none).
	MemRatio float64
	// SpreadLabel names the node label whose values are failure domains
	// (--spread-label, such as "rack"): an instance's primary and replica
	// are kept in different ones. Empty: only on different nodes.
	SpreadLabel string
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("server: --data-dir is required")
	}
	if c.Listen == "" {
		c.Listen = ":7443"
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = 3 * time.Second
	}
	if c.NodeTTL < 2*time.Second || c.NodeTTL%time.Second != 0 {
		return fmt.Errorf("server: --node-ttl must be a whole number of seconds, at least 2s (etcd's minimum lease), got %s", c.NodeTTL)
	}
	if c.CPURatio == 0 {
		c.CPURatio = controller.DefaultCPURatio
	}
	if c.MemRatio == 0 {
		c.MemRatio = controller.DefaultMemRatio
	}
	if c.CPURatio < 0 || c.CPURatio > 1000 {
		return fmt.Errorf("server: --cpu-overcommit must be a ratio between 0 and 1000 (virtual CPUs per physical CPU, such as 4), got %g", c.CPURatio)
	}
	if c.MemRatio < 0 || c.MemRatio > 1000 {
		return fmt.Errorf("server: the memory overcommit must be a ratio between 0 and 1000 (1: none), got %g", c.MemRatio)
	}
	if c.SpreadLabel != "" {
		if err := api.ValidateLabelKey("--spread-label", c.SpreadLabel); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.ID == "" {
		h, _ := os.Hostname()
		c.ID = h + c.Listen
	}
	return nil
}

// Server is a running control plane member.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	leases  *store.NodeLeases
	ca      *pki.CA
	cert    tls.Certificate
	metrics *metrics
	reg     *prometheus.Registry
	handler http.Handler

	embedded *store.Embedded
	etcd     *clientv3.Client

	// adminToken is set only on the start that created it.
	adminToken string

	mu       sync.Mutex
	listener net.Listener
	isLeader bool
	revoked  map[string]bool
}

// New connects to (or starts) etcd, bootstraps the cluster on first start,
// and prepares the HTTP API. Call Run to serve.
func New(ctx context.Context, cfg Config) (s *Server, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: create data dir: %w", err)
	}
	s = &Server{cfg: cfg, log: cfg.Logger, revoked: map[string]bool{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	endpoints := cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		s.embedded, err = store.StartEmbedded(ctx, store.EmbeddedConfig{Dir: filepath.Join(cfg.DataDir, "etcd")})
		if err != nil {
			return nil, err
		}
		endpoints = s.embedded.Endpoints()
	}
	s.etcd, err = store.Connect(ctx, endpoints)
	if err != nil {
		return nil, err
	}
	s.store = store.New(s.etcd, cfg.EtcdPrefix)
	s.leases = s.store.NewNodeLeases(cfg.NodeTTL)
	if err := s.bootstrap(ctx); err != nil {
		return nil, err
	}
	s.reg = prometheus.NewRegistry()
	s.metrics = newMetrics(s.reg, s)
	s.handler = s.routes()
	return s, nil
}

// AdminToken returns the admin token if this start created it, else "".
func (s *Server) AdminToken() string { return s.adminToken }

// CAPEM returns the cluster CA certificate, which clients trust.
func (s *Server) CAPEM() []byte { return s.ca.CertPEM() }

// Store returns the server's store (for tests and tools in this module).
func (s *Server) Store() *store.Store { return s.store }

// Addr returns the address the server listens on once Run has started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// URL returns the https URL of the server once Run has started listening.
func (s *Server) URL() string {
	a := s.Addr()
	if a == "" {
		return ""
	}
	host, port, _ := net.SplitHostPort(a)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}

// Listen binds the HTTPS address. Run calls it if the caller did not.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Listen, err)
	}
	s.listener = l
	return nil
}

// Run serves the API and campaigns for leadership until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         pki.ServerTLSConfig(s.cert, s.ca.Pool()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 3)
	go func() {
		err := srv.ServeTLS(s.listener, "", "")
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("server: serve: %w", err)
		}
	}()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.watchRevocations(runCtx)
	}()
	go func() {
		defer wg.Done()
		_ = s.store.RunForLeader(runCtx, s.cfg.ID, 5*time.Second, s.log, func(lctx context.Context, guarded *store.Store) {
			s.setLeader(true)
			defer s.setLeader(false)
			c := controller.New(controller.Config{Store: guarded, Logger: s.log.With("component", "controller"), Now: s.cfg.Now, Errors: s.metrics.controllerErrors, NodeTTL: s.cfg.NodeTTL,
				CPURatio: s.cfg.CPURatio, MemRatio: s.cfg.MemRatio, SpreadLabel: s.cfg.SpreadLabel})
			c.Run(lctx)
		})
	}()
	if s.embedded != nil {
		go func() {
			select {
			case err := <-s.embedded.Err():
				errc <- fmt.Errorf("server: embedded etcd: %w", err)
			case <-runCtx.Done():
			}
		}()
	}
	s.log.Info("ferry server ready", "url", s.URL(), "data_dir", s.cfg.DataDir, "id", s.cfg.ID)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	shutCtx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(shutCtx)
	wg.Wait()
	return err
}

func (s *Server) setLeader(v bool) {
	s.mu.Lock()
	s.isLeader = v
	s.mu.Unlock()
}

// IsLeader reports whether this server runs the controllers now.
func (s *Server) IsLeader() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isLeader
}

// Close releases etcd; call after Run returns.
func (s *Server) Close() {
	if s.etcd != nil {
		s.etcd.Close()
	}
	if s.embedded != nil {
		s.embedded.Close()
	}
	s.mu.Lock()
	if s.listener != nil {
		s.listener.Close()
	}
	s.mu.Unlock()
}

func (s *Server) certHosts() []string {
	hosts := append([]string{}, s.cfg.Hosts...)
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, strings.ToLower(h))
	}
	if host, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		hosts = append(hosts, host)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				hosts = append(hosts, ipn.IP.String())
			}
		}
	}
	return hosts
}
