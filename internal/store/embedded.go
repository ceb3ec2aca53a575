package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EmbeddedConfig configures the etcd server that runs inside `ferry server`.
type EmbeddedConfig struct {
	// Dir holds etcd's data (WAL and snapshots). Required.
	Dir string
	// Name is the etcd member name; default "ferry".
	Name string
	// ClientAddr and PeerAddr are host:port to listen on. Empty picks a free
	// loopback port on first start and keeps it in Dir for later starts.
	ClientAddr string
	PeerAddr   string
	// StartTimeout bounds how long to wait for the member to be ready.
	StartTimeout time.Duration
}

// Embedded is a running single-member etcd.
type Embedded struct {
	etcd     *embed.Etcd
	endpoint string
}

type embeddedPorts struct {
	Client string `json:"client"`
	Peer   string `json:"peer"`
}

// StartEmbedded starts etcd in cfg.Dir and waits until it serves. The data is
// fsynced by etcd's WAL before any write is acknowledged, which is what makes
// a kill -9 of the server lose nothing.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("store: embedded etcd needs a data directory")
	}
	if cfg.Name == "" {
		cfg.Name = "ferry"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create etcd dir: %w", err)
	}
	ports, err := loadOrPickPorts(cfg)
	if err != nil {
		return nil, err
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = filepath.Join(cfg.Dir, "member-data")
	ec.LogLevel = "error"
	// etcd logs through zap; ferry logs through slog. Errors that matter
	// surface through Err() and the client.
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := url.URL{Scheme: "http", Host: ports.Client}
	pu := url.URL{Scheme: "http", Host: ports.Peer}
	ec.ListenClientUrls = []url.URL{cu}
	ec.AdvertiseClientUrls = []url.URL{cu}
	ec.ListenPeerUrls = []url.URL{pu}
	ec.AdvertisePeerUrls = []url.URL{pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	// Keep history bounded: watches resume from recent revisions only.
	ec.AutoCompactionMode = "revision"
	ec.AutoCompactionRetention = "10000"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("store: start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd failed: %w", err)
	case <-time.After(cfg.StartTimeout):
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd not ready after %s", cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Embedded{etcd: e, endpoint: cu.String()}, nil
}

// Endpoints returns the client URLs of the embedded member.
func (e *Embedded) Endpoints() []string { return []string{e.endpoint} }

// Err reports fatal errors of the running member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member gracefully.
func (e *Embedded) Close() { e.etcd.Close() }

func loadOrPickPorts(cfg EmbeddedConfig) (embeddedPorts, error) {
	path := filepath.Join(cfg.Dir, "ports.json")
	var p embeddedPorts
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &p); err != nil {
			return p, fmt.Errorf("store: %s is corrupt (%w); delete it to pick new ports", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return p, fmt.Errorf("store: read %s: %w", path, err)
	}
	if cfg.ClientAddr != "" {
		p.Client = cfg.ClientAddr
	}
	if cfg.PeerAddr != "" {
		p.Peer = cfg.PeerAddr
	}
	var err error
	if p.Client == "" {
		if p.Client, err = freeLoopbackAddr(); err != nil {
			return p, err
		}
	}
	if p.Peer == "" {
		if p.Peer, err = freeLoopbackAddr(); err != nil {
			return p, err
		}
	}
	data, _ := json.Marshal(p)
	if err := writeFileAtomic(path, data); err != nil {
		return p, err
	}
	return p, nil
}

// freeLoopbackAddr asks the kernel for a free port. Another process could
// take it before etcd binds it; etcd then fails to start with a clear error
// and the next start picks again.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("store: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("store: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: rename %s: %w", path, err)
	}
	return nil
}
