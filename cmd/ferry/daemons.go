package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/cli"
	"github.com/ferrycluster/ferry/internal/server"
	"github.com/ferrycluster/ferry/internal/vmm"
	"github.com/ferrycluster/ferry/internal/vmm/fake"
	"github.com/ferrycluster/ferry/internal/vmm/qemu"
	"github.com/spf13/cobra"
)

func newServerCmd(g *cli.Globals) *cobra.Command {
	var (
		cfg       server.Config
		endpoints string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control plane server (embedded etcd unless --etcd-endpoints)",
		Long: `Run a ferry control plane server. Its state lives in an embedded etcd in
--data-dir, or in an external etcd cluster given by --etcd-endpoints. On its first
start it creates the cluster CA and an admin API token, printed once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.Logger(cmd.ErrOrStderr())
			if endpoints != "" {
				for _, e := range strings.Split(endpoints, ",") {
					if e = strings.TrimSpace(e); e != "" {
						cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, e)
					}
				}
			}
			cfg.Logger, cfg.Version = log, version
			ctx := cmd.Context()
			s, err := server.New(ctx, cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Listen(); err != nil {
				return err
			}
			if tok := s.AdminToken(); tok != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "Admin API token (shown once): %s\nCA certificate: %s/ca.crt\n", tok, cfg.DataDir)
			}
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/ferry/server", "directory for the embedded etcd and ca.crt")
	f.StringVar(&cfg.Listen, "listen", ":7443", "HTTPS address of the API")
	f.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated client URLs of an external etcd cluster (default: embedded etcd)")
	f.DurationVar(&cfg.NodeTTL, "node-ttl", 3*time.Second, "node lease TTL: a node without heartbeats for this long is NotReady")
	f.StringSliceVar(&cfg.Hosts, "host", nil, "extra DNS names or IPs for the server certificate (repeatable)")
	f.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "also write the admin token to this file (mode 0600) on first start")
	f.StringVar(&cfg.ID, "id", "", "this server's name in leader election (default hostname+listen)")
	f.Float64Var(&cfg.CPURatio, "cpu-overcommit", 4, "virtual CPUs the scheduler places per physical CPU of a node")
	f.StringVar(&cfg.SpreadLabel, "spread-label", "", "node label whose values are failure domains (e.g. rack): an instance's replica goes to a node with another value (default: any other node)")
	return cmd
}

// newDriver returns the VMM driver named by --driver.
func newDriver(ctx context.Context, name, accel string, log *slog.Logger) (vmm.Driver, error) {
	switch name {
	case "fake":
		return fake.New(), nil
	case "qemu":
		return qemu.New(ctx, qemu.Config{Accel: accel, Logger: log})
	}
	return nil, fmt.Errorf("--driver: %q is not a known driver (available: qemu, fake)", name)
}

// newGuardCmd is the VM guard the agent starts (hidden: not for users).
func newGuardCmd(g *cli.Globals) *cobra.Command {
	var stateDir string
	var stale time.Duration
	cmd := &cobra.Command{
		Use:    "vm-guard",
		Short:  "Kill this host's VMs when its agent has been gone too long (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.Logger(cmd.ErrOrStderr()).With("component", "vm-guard")
			d, err := qemu.New(cmd.Context(), qemu.Config{Accel: qemu.AccelTCG, Logger: log})
			if err != nil {
				return err
			}
			return agent.RunGuard(cmd.Context(), stateDir, stale, d.Sweep, log)
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "the agent's state directory")
	cmd.Flags().DurationVar(&stale, "stale-after", agent.DefaultFenceAfter, "kill the VMs once the agent has not been seen for this long")
	return cmd
}

func newAgentCmd(g *cli.Globals) *cobra.Command {
	var (
		cfg          agent.Config
		driver       string
		accel        string
		memory, disk string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: join the cluster (once) and run the instances placed here",
		Long: `Run a ferry agent on this host. The first start needs --server and --token (from
` + "`ferry node join-token`" + `); the node certificate it receives is kept in --state-dir and
used from then on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.Logger(cmd.ErrOrStderr())
			if memory != "" {
				v, err := api.ParseBytes(memory)
				if err != nil {
					return fmt.Errorf("--memory: %w", err)
				}
				cfg.Capacity.Memory = v
			}
			if disk != "" {
				v, err := api.ParseBytes(disk)
				if err != nil {
					return fmt.Errorf("--disk: %w", err)
				}
				cfg.Capacity.Disk = v
			}
			d, err := newDriver(cmd.Context(), driver, accel, log)
			if err != nil {
				return err
			}
			cfg.Driver, cfg.Logger, cfg.Version = d, log, version
			if _, ok := d.(*qemu.Driver); ok && cfg.FenceAfter >= 0 {
				// VMs outlive the agent; the guard kills them if it stays away.
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("vm guard: %w", err)
				}
				stateDir, err := filepath.Abs(cfg.StateDir)
				if err != nil {
					return fmt.Errorf("--state-dir: %w", err)
				}
				fence := cfg.FenceAfter
				if fence == 0 {
					fence = agent.DefaultFenceAfter
				}
				cfg.Guard = []string{self, "vm-guard", "--state-dir", stateDir, "--stale-after", fence.String(), "--log-format", string(g.LogFormat)}
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ServerURL, "server", "", "URL of a ferry server, https://host:7443 (needed to join)")
	f.StringVar(&cfg.JoinToken, "token", "", "join token from `ferry node join-token` (first start only)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/ferry/agent", "node identity and VM state; must survive restarts")
	f.StringVar(&cfg.NodeName, "name", "", "node name (default: hostname)")
	f.IntVar(&cfg.Capacity.CPUs, "cpus", 0, "CPUs offered to instances (default: all)")
	f.StringVar(&memory, "memory", "", "memory offered to instances, e.g. 16G (default: all)")
	f.StringVar(&disk, "disk", "", "disk offered to instances, e.g. 500G (default: free space of --state-dir)")
	f.StringVar(&cfg.Address, "address", "", "address of this host reported to the cluster")
	f.StringVar(&driver, "driver", "qemu", "VMM driver: qemu, or fake (no processes; for tests and trying the control plane)")
	f.StringVar(&accel, "accel", "auto", "QEMU accelerator: auto (probe KVM, fall back to TCG), kvm or tcg")
	f.StringVar(&cfg.Bridge, "bridge", "ferrybr0", "host bridge that instance taps join; created if missing")
	f.StringVar(&cfg.Uplink, "uplink", "", "host NIC to attach to the bridge (the instances' LAN), e.g. eth1")
	f.StringVar(&cfg.APIAddr, "api-listen", ":7445", "address where servers reach this agent (console, logs); empty disables")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", time.Second, "time between heartbeats")
	f.DurationVar(&cfg.FenceAfter, "fence-after", agent.DefaultFenceAfter, "kill this host's VMs and freeze their disks after this long without an acknowledged heartbeat (self-fencing; keep it below the servers' --node-ttl by a second; negative disables it, which makes failover unsafe)")
	f.StringVar(&cfg.ListenAddr, "listen", "127.0.0.1:7444", "address for /metrics and /healthz (empty disables)")
	return cmd
}
