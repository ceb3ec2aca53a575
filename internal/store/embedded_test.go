package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
)

func startEmbedded(t *testing.T, cfg store.EmbeddedConfig) *store.Embedded {
	t.Helper()
	e, err := store.StartEmbedded(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	return e
}

func readPorts(t *testing.T, dir string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "ports.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]string
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEmbeddedRestart writes, stops the member, starts it again on the same
// directory and reads: the data and the ports are kept.
func TestEmbeddedRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startEmbedded(t, store.EmbeddedConfig{Dir: dir})
	endpoints := e.Endpoints()
	ports := readPorts(t, dir)
	if len(endpoints) != 1 || endpoints[0] != "http://"+ports["client"] || ports["peer"] == "" {
		t.Fatalf("endpoints %v, ports.json %v: want the client port of ports.json and a peer port", endpoints, ports)
	}
	prefix := "/ferry-test/" + store.NewID() + "/"
	s := storetest.NewStoreWithPrefix(t, endpoints, prefix)
	in := newInstance("kept")
	if err := s.Instances.Create(testCtx(t), in); err != nil {
		t.Fatal(err)
	}
	_ = s.Client().Close()
	e.Close()
	select {
	case err := <-e.Err():
		if err != nil {
			t.Errorf("Err() after Close = %v", err)
		}
	default:
	}

	e = startEmbedded(t, store.EmbeddedConfig{Dir: dir})
	t.Cleanup(e.Close)
	if got := e.Endpoints(); len(got) != 1 || got[0] != endpoints[0] {
		t.Errorf("endpoints after restart = %v, want %v", got, endpoints)
	}
	if got := readPorts(t, dir); got["client"] != ports["client"] || got["peer"] != ports["peer"] {
		t.Errorf("ports.json after restart = %v, want %v", got, ports)
	}
	s = storetest.NewStoreWithPrefix(t, e.Endpoints(), prefix)
	got, err := s.Instances.Get(testCtx(t), "kept")
	if err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	if got.UID != in.UID || got.ResourceVersion != in.ResourceVersion {
		t.Errorf("after restart got uid %s rv %s, want uid %s rv %s", got.UID, got.ResourceVersion, in.UID, in.ResourceVersion)
	}
}

func TestEmbeddedConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup prepares dir and returns the config to start with.
		setup   func(t *testing.T, dir string) store.EmbeddedConfig
		wantErr string
		// cancelled starts with a cancelled context.
		cancelled bool
		check     func(t *testing.T, dir string, e *store.Embedded)
	}{
		{
			name:    "no directory",
			setup:   func(*testing.T, string) store.EmbeddedConfig { return store.EmbeddedConfig{} },
			wantErr: "needs a data directory",
		},
		{
			name: "corrupt ports.json",
			setup: func(t *testing.T, dir string) store.EmbeddedConfig {
				if err := os.WriteFile(filepath.Join(dir, "ports.json"), []byte("{"), 0o600); err != nil {
					t.Fatal(err)
				}
				return store.EmbeddedConfig{Dir: dir}
			},
			wantErr: "delete it to pick new ports",
		},
		{
			name: "explicit addresses are used and kept",
			setup: func(t *testing.T, dir string) store.EmbeddedConfig {
				return store.EmbeddedConfig{Dir: filepath.Join(dir, "sub"), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t)}
			},
			check: func(t *testing.T, dir string, e *store.Embedded) {
				p := readPorts(t, filepath.Join(dir, "sub"))
				if e.Endpoints()[0] != "http://"+p["client"] {
					t.Errorf("endpoint %s, ports.json %v", e.Endpoints()[0], p)
				}
			},
		},
		{
			name: "cancelled context",
			setup: func(t *testing.T, dir string) store.EmbeddedConfig {
				return store.EmbeddedConfig{Dir: dir}
			},
			cancelled: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := tc.setup(t, dir)
			ctx := testCtx(t)
			if tc.cancelled {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			e, err := store.StartEmbedded(ctx, cfg)
			if err == nil {
				t.Cleanup(e.Close)
			}
			switch {
			case tc.cancelled:
				// The member may be ready before the cancellation is seen;
				// either way StartEmbedded returns and cleans up.
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("StartEmbedded(cancelled) = %v, want nil or context.Canceled", err)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("StartEmbedded = %v, want an error containing %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("StartEmbedded: %v", err)
			}
			if tc.check != nil && err == nil {
				tc.check(t, dir, e)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
