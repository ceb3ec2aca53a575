package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// DefaultHeartbeatInterval is the heartbeat period used when
// Config.HeartbeatInterval is zero.
const DefaultHeartbeatInterval = time.Second

// Limits the server puts on what a heartbeat carries (api.Heartbeat.Validate).
const (
	maxAddressLen = 255
	maxVersionLen = 64
)

// Config is what an Agent needs. ServerURL (the first time), StateDir and
// Driver are required; everything else has a default.
type Config struct {
	// ServerURL is the base URL of a ferry server, https://host:port. It may
	// be empty once the node has joined: the server it joined is saved in
	// StateDir.
	ServerURL string
	// JoinToken is the token from `ferry node join-token`. It is needed
	// only for the first start, when StateDir holds no node certificate; it
	// is ignored afterwards.
	JoinToken string
	// StateDir holds the node identity (node.key, node.crt, ca.crt,
	// node.json) and the per-VM handles (vms/<name>.json). It must survive
	// restarts; it is created (mode 0700) if missing.
	StateDir string
	// NodeName is the node's name in the cluster, a DNS label. The default
	// is the saved name once joined, else os.Hostname() lowercased. Once
	// joined, a NodeName that differs from the saved one is an error.
	NodeName string
	// Capacity is what the node offers to instances. Zero fields are read
	// from the host: CPUs from runtime.NumCPU, memory from /proc/meminfo
	// (MemTotal), disk as the free space of the filesystem holding StateDir.
	// It is read once, by New.
	Capacity api.Resources
	// Address is the address reported to the server (optional), at most
	// 255 bytes.
	Address string
	// Driver runs the VMs. Required.
	Driver vmm.Driver
	// HeartbeatInterval is the period of heartbeats, and also the timeout
	// of each one. Zero means DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// ListenAddr is where the agent serves /metrics and /healthz, for
	// example "127.0.0.1:9443" or "127.0.0.1:0"; empty disables it.
	ListenAddr string
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
	// Version is the agent's version, reported in heartbeats (at most 64
	// bytes).
	Version string
	// APIAddr is where the agent serves servers (console, logs) with its
	// node certificate, e.g. ":7445"; "" disables it. The address reported
	// to the cluster is Address if set, else the host's address towards the
	// server with this port.
	APIAddr string
	// Uplink, if set, is enslaved to Bridge when the agent starts (the
	// host's NIC on the instances' LAN).
	Uplink string
	// Bridge is the host bridge instance taps are attached to; it must
	// exist (it joins the host to the instances' LAN). Default "ferrybr0".
	Bridge string
	// FenceAfter is how long the agent goes on without an acknowledged
	// heartbeat before it kills its VMs and freezes their disks
	// (self-fencing). It must be shorter than the servers' node TTL by
	// more than a kill takes (the default suits TTL 3 s: 2 s, leaving 1 s);
	// and long enough that a loaded host with a slow link is not fenced
	// (heartbeats are sent every HeartbeatInterval on their own
	// connection). Zero means DefaultFenceAfter; negative disables it,
	// which makes failover unsafe.
	FenceAfter time.Duration
	// Guard, if set, is the command that starts the VM guard (`ferry
	// vm-guard ...`, see RunGuard): it kills this host's VMs when the agent
	// has been gone longer than FenceAfter. Nil runs no guard (tests, the
	// fake driver).
	Guard []string
}

// DefaultFenceAfter is Config.FenceAfter's default: the node TTL's default
// (3 s) less a second.
const DefaultFenceAfter = 2 * time.Second

// File names in the state directory.
const (
	keyFile     = "node.key"
	certFile    = "node.crt"
	caFile      = "ca.crt"
	nodeFile    = "node.json"
	vmsDirName  = "vms"
	handleExt   = ".json"
	stateDirMod = 0o700
)

// savedNode is the content of node.json: who this node is and which server
// it joined.
type savedNode struct {
	Name   string `json:"name"`
	Server string `json:"server"`
}

// checkConfig validates cfg and fills in its defaults; it reads the saved
// identity, if any, and the host's capacity. Errors name the Config field.
func checkConfig(cfg *Config) (saved *savedNode, err error) {
	if cfg.Driver == nil {
		return nil, errors.New("agent: Driver is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("agent: StateDir is required: a directory kept across restarts for the node identity and VM handles")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("agent: StateDir %q: %w", cfg.StateDir, err)
	}
	cfg.StateDir = dir
	if err := os.MkdirAll(filepath.Join(dir, vmsDirName), stateDirMod); err != nil {
		return nil, fmt.Errorf("agent: StateDir: %w", err)
	}
	switch {
	case cfg.HeartbeatInterval < 0:
		return nil, fmt.Errorf("agent: HeartbeatInterval must not be negative, got %s", cfg.HeartbeatInterval)
	case cfg.HeartbeatInterval == 0:
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.FenceAfter == 0 {
		cfg.FenceAfter = DefaultFenceAfter
	}
	if cfg.FenceAfter > 0 && cfg.FenceAfter <= cfg.HeartbeatInterval {
		return nil, fmt.Errorf("agent: FenceAfter (%s) must be longer than HeartbeatInterval (%s), or every late heartbeat fences the host", cfg.FenceAfter, cfg.HeartbeatInterval)
	}
	if len(cfg.Address) > maxAddressLen {
		return nil, fmt.Errorf("agent: Address is %d bytes long; at most %d are allowed", len(cfg.Address), maxAddressLen)
	}
	if len(cfg.Version) > maxVersionLen {
		return nil, fmt.Errorf("agent: Version is %d bytes long; at most %d are allowed", len(cfg.Version), maxVersionLen)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	saved, err = loadSavedNode(dir)
	if err != nil {
		return nil, fmt.Errorf("agent: StateDir: %w", err)
	}
	if cfg.NodeName != "" {
		if err := api.ValidateName("NodeName", cfg.NodeName); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	switch {
	case saved != nil && cfg.NodeName != "" && cfg.NodeName != saved.Name:
		return nil, fmt.Errorf("agent: NodeName is %q but %s holds the identity of node %q: use that name, or another StateDir to join as a new node",
			cfg.NodeName, dir, saved.Name)
	case saved != nil:
		cfg.NodeName = saved.Name
	case cfg.NodeName == "":
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: NodeName is empty and the hostname is unknown: %w", err)
		}
		name := strings.ToLower(host)
		if err := api.ValidateName("NodeName", name); err != nil {
			return nil, fmt.Errorf("agent: NodeName defaults to the hostname, which is not a valid node name; set NodeName: %w", err)
		}
		cfg.NodeName = name
	}

	if cfg.ServerURL == "" && saved != nil {
		cfg.ServerURL = saved.Server
	}
	if cfg.ServerURL, err = checkServerURL(cfg.ServerURL); err != nil {
		return nil, err
	}
	if saved == nil {
		if cfg.JoinToken == "" {
			return nil, fmt.Errorf("agent: JoinToken is required: %s holds no node certificate, so this node must join (get a token with `ferry node join-token`)", dir)
		}
		if _, _, _, err := pki.ParseJoinToken(cfg.JoinToken); err != nil {
			return nil, fmt.Errorf("agent: JoinToken: %w", err)
		}
	}

	cfg.Capacity, err = hostCapacity(dir, cfg.Capacity)
	if err != nil {
		return nil, err
	}
	return saved, nil
}

// checkServerURL accepts https://host[:port] with an optional trailing slash
// and returns it without the slash.
func checkServerURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("agent: ServerURL is required: the https://host:port of a ferry server")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("agent: ServerURL %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("agent: ServerURL %q: must start with https://", s)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("agent: ServerURL %q: has no host", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("agent: ServerURL %q: must be only https://host:port", s)
	}
	return "https://" + u.Host, nil
}

// checkCapacity rejects negative overrides.
func checkCapacity(r api.Resources) error {
	switch {
	case r.CPUs < 0:
		return fmt.Errorf("agent: Capacity.CPUs must not be negative, got %d", r.CPUs)
	case r.Memory < 0:
		return fmt.Errorf("agent: Capacity.Memory must not be negative, got %d", r.Memory)
	case r.Disk < 0:
		return fmt.Errorf("agent: Capacity.Disk must not be negative, got %d", r.Disk)
	}
	return nil
}
