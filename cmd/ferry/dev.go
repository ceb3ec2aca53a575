package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/cli"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/server"
	"github.com/ferrycluster/ferry/internal/testcluster"
	"github.com/spf13/cobra"
)

// devOptions are the flags of `ferry dev`.
type devOptions struct {
	agents      int
	dataDir     string
	listen      string
	keep        bool
	contextName string
	driver      string
	cpus        int
	memory      string
	disk        string
	readyFile   string
	accel       string
	noDemo      bool
}

func newDevCmd(g *cli.Globals) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Start an all-in-one local cluster (a server and N agents) for trying ferry out",
		Long: `Start a server with an embedded etcd and N agents on this machine, with data in a
temporary directory, and configure the CLI to talk to it (context "dev"). Ctrl-C stops
everything and removes the data unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			path := g.ConfigPath
			if path == "" {
				var err error
				if path, err = cli.DefaultConfigPath(os.Getenv); err != nil {
					return err
				}
			}
			return runDev(ctx, cmd, g, o, path)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.agents, "agents", 3, "number of agents (simulated hosts)")
	f.StringVar(&o.dataDir, "data-dir", "", "where to keep the cluster's data (default: a new temporary directory)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:7443", "HTTPS address of the server")
	f.BoolVar(&o.keep, "keep", false, "keep the data directory on exit")
	f.StringVar(&o.contextName, "context", "dev", "CLI config context to create and make current")
	f.StringVar(&o.driver, "driver", "auto", "VMM driver of the agents: qemu (real VMs on simulated hosts; needs root), fake, or auto (qemu when possible)")
	f.StringVar(&o.accel, "accel", "auto", "QEMU accelerator for the qemu driver: auto (probe KVM, fall back to TCG), kvm or tcg")
	f.BoolVar(&o.noDemo, "no-demo", false, "with real VMs, do not create the two demo instances")
	f.IntVar(&o.cpus, "node-cpus", 4, "CPUs each simulated host offers")
	f.StringVar(&o.memory, "node-memory", "8G", "memory each simulated host offers")
	f.StringVar(&o.disk, "node-disk", "100G", "disk each simulated host offers")
	f.StringVar(&o.readyFile, "ready-file", "", "write the seconds it took to have all nodes Ready to this file (for scripts)")
	return cmd
}

func runDev(ctx context.Context, cmd *cobra.Command, g *cli.Globals, o devOptions, cfgPath string) (err error) {
	start := time.Now()
	out := cmd.OutOrStdout()
	if o.agents < 1 || o.agents > 64 {
		return fmt.Errorf("--agents: must be between 1 and 64, got %d", o.agents)
	}
	capacity := api.Resources{CPUs: o.cpus}
	if capacity.Memory, err = api.ParseBytes(o.memory); err != nil {
		return fmt.Errorf("--node-memory: %w", err)
	}
	if capacity.Disk, err = api.ParseBytes(o.disk); err != nil {
		return fmt.Errorf("--node-disk: %w", err)
	}
	dir := o.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ferry-dev-"); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	if !o.keep && o.dataDir == "" {
		defer os.RemoveAll(dir)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "ferry.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logFile.Close()
	log := g.Logger(logFile)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, o.agents+1)
	defer wg.Wait()
	defer stop()

	realVMs, err := chooseDevDriver(&o, out)
	if err != nil {
		return err
	}
	var hc *testcluster.Cluster
	var hosts []string
	if realVMs {
		if hc, err = devHosts(runCtx, o.agents, out); err != nil {
			return err
		}
		defer hc.Close()
		_, port, _ := net.SplitHostPort(o.listen)
		o.listen = net.JoinHostPort(hc.RootIP().String(), port)
		hosts = append(hosts, hc.RootIP().String())
	}

	srv, err := server.New(runCtx, server.Config{
		DataDir: filepath.Join(dir, "server"), Listen: o.listen, Logger: log.With("component", "server"),
		Version: version, AdminTokenFile: filepath.Join(dir, "admin.token"), Hosts: hosts,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.Listen(); err != nil {
		return fmt.Errorf("%w (is another `ferry dev` running? pass --listen 127.0.0.1:0)", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Run(runCtx); err != nil {
			errc <- err
		}
	}()
	token := srv.AdminToken()
	if token == "" {
		data, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			return fmt.Errorf("reusing %s: admin token: %w", dir, err)
		}
		token = string(trimNL(data))
	}
	caFile := filepath.Join(dir, "server", "ca.crt")
	c, err := client.New(client.Config{Server: srv.URL(), Token: token, CAPEM: srv.CAPEM()})
	if err != nil {
		return err
	}

	for i := 1; i <= o.agents; i++ {
		name := fmt.Sprintf("dev-%d", i)
		stateDir := filepath.Join(dir, "agents", name)
		var joinToken string
		if _, err := os.Stat(filepath.Join(stateDir, "node.crt")); err != nil {
			jt, err := c.CreateJoinToken(runCtx, 10*time.Minute)
			if err != nil {
				return fmt.Errorf("join token for %s: %w", name, err)
			}
			joinToken = jt.Token
		}
		if realVMs {
			h := hc.Hosts()[i-1]
			if err := startDevAgent(runCtx, h, name, srv.URL(), joinToken, stateDir, o.accel, logFile); err != nil {
				return fmt.Errorf("agent on %s: %w", h.Name, err)
			}
			continue
		}
		d, err := newDriver(runCtx, o.driver, "", log)
		if err != nil {
			return err
		}
		a, err := agent.New(agent.Config{
			ServerURL: srv.URL(), JoinToken: joinToken, StateDir: stateDir, NodeName: name,
			Capacity: capacity, Driver: d, ListenAddr: "127.0.0.1:0", Version: version,
			Logger: log.With("component", "agent", "node", name),
		})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(runCtx); err != nil && runCtx.Err() == nil {
				errc <- fmt.Errorf("agent %s: %w", name, err)
			}
		}()
	}

	if err := waitReady(runCtx, c, o.agents, errc); err != nil {
		return err
	}
	readyIn := time.Since(start)
	if o.readyFile != "" {
		if err := os.WriteFile(o.readyFile, []byte(fmt.Sprintf("%.3f\n", readyIn.Seconds())), 0o644); err != nil {
			return fmt.Errorf("--ready-file: %w", err)
		}
	}

	restore, err := registerContext(cfgPath, o.contextName, cli.Context{Server: srv.URL(), Token: token, CAFile: caFile})
	if err != nil {
		return err
	}
	defer restore()

	if realVMs {
		if err := devNetwork(runCtx, c, hc); err != nil {
			return err
		}
		if err := devImage(runCtx, c, dir, out); err != nil {
			return fmt.Errorf("demo image: %w", err)
		}
		var insts []*api.Instance
		if !o.noDemo {
			fmt.Fprintln(out, "starting two demo instances (real VMs under QEMU)...")
			shared := filepath.Join(dir, "shared")
			if err := os.MkdirAll(shared, 0o700); err != nil {
				return err
			}
			demo := []devInstance{{name: "web-1", storage: api.StorageShared + shared}, {name: "web-2"}}
			if insts, err = devInstances(runCtx, c, demo); err != nil {
				return err
			}
		}
		printDevVMs(out, o, hc, srv.URL(), dir, logFile.Name(), cfgPath, time.Since(start), insts)
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "\nferry dev: stopping")
			stop()
			return nil
		case err := <-errc:
			return err
		}
	}

	fmt.Fprintf(out, `ferry dev: %d nodes Ready in %.1fs (server %s, data %s)
  logs:        %s
  CLI context: %q in %s

Try:
  ferry node ls
  ferry instance create web-1 --cpus 1 --memory 256M --disk 1G --image demo
  ferry instance ls
  ferry events            # live, in another terminal
  ferry instance stop web-1 && ferry instance rm web-1

Press Ctrl-C to stop the cluster.
`, o.agents, readyIn.Seconds(), srv.URL(), dir, logFile.Name(), o.contextName, cfgPath)

	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nferry dev: stopping")
		stop()
		return nil
	case err := <-errc:
		return err
	}
}

// waitReady polls until n nodes are Ready.
func waitReady(ctx context.Context, c *client.Client, n int, errc <-chan error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		list, err := c.ListNodes(ctx)
		if err == nil {
			ready := 0
			for _, node := range list.Items {
				if node.Status.State == api.NodeReady {
					ready++
				}
			}
			if ready >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes not Ready after 2 minutes (last error: %v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// registerContext adds the dev cluster to the CLI config and makes it
// current; the returned func removes it and restores the previous context.
func registerContext(path, name string, c cli.Context) (func(), error) {
	cfg, err := cli.LoadConfig(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("CLI config %s: %w", path, err)
	}
	if cfg == nil {
		cfg = &cli.ConfigFile{}
	}
	prev := cfg.Current
	cfg.SetContext(name, c, true)
	if err := cli.SaveConfig(path, cfg); err != nil {
		return nil, err
	}
	return func() {
		cfg, err := cli.LoadConfig(path)
		if err != nil || cfg == nil {
			return
		}
		delete(cfg.Contexts, name)
		if cfg.Current == name {
			cfg.Current = prev
			if prev == name {
				cfg.Current = ""
			}
		}
		_ = cli.SaveConfig(path, cfg)
	}, nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// chooseDevDriver resolves --driver auto: real VMs when this process can
// build simulated hosts and run QEMU, else the fake driver, saying why.
func chooseDevDriver(o *devOptions, out io.Writer) (bool, error) {
	switch o.driver {
	case "qemu":
		return true, nil
	case "fake":
		return false, nil
	case "auto":
		if err := testcluster.Preflight(); err != nil {
			fmt.Fprintf(out, "ferry dev: using the fake driver (no real VMs): %v\n", err)
			o.driver = "fake"
			return false, nil
		}
		if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			fmt.Fprintln(out, "ferry dev: using the fake driver (no real VMs): qemu-system-x86_64 not found; run scripts/setup")
			o.driver = "fake"
			return false, nil
		}
		o.driver = "qemu"
		return true, nil
	}
	return false, fmt.Errorf("--driver: %q is not qemu, fake or auto", o.driver)
}

func printDevVMs(out io.Writer, o devOptions, hc *testcluster.Cluster, url, dir, logPath, cfgPath string, took time.Duration, insts []*api.Instance) {
	fmt.Fprintf(out, "\nferry dev: %d simulated hosts with real VMs, ready in %.0fs (server %s, data %s)\n", o.agents, took.Seconds(), url, dir)
	fmt.Fprintf(out, "  logs:        %s\n  CLI context: %q in %s\n\n", logPath, o.contextName, cfgPath)
	if len(insts) > 0 {
		fmt.Fprintln(out, "Your instances answer on the simulated LAN (from this machine):")
		for _, in := range insts {
			where := "on shared storage"
			if in.Status.ReplicaNode != "" {
				where = "its disk replicated synchronously to " + in.Status.ReplicaNode
			}
			fmt.Fprintf(out, "  curl http://%s/        # %s, running on %s, %s\n", in.Spec.IP, in.Name, in.Status.Node, where)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out, "Try:")
	fmt.Fprintln(out, "  ferry instance ls; ferry node ls; ferry events")
	if len(insts) > 0 {
		in := insts[0]
		other := devNodeName(hc.Hosts()[0])
		if other == in.Status.Node && len(hc.Hosts()) > 1 {
			other = devNodeName(hc.Hosts()[1])
		}
		fmt.Fprintf(out, "  ferry instance stop %s --wait && ferry instance start %s --on %s --wait   # move it; same IP, same disk\n", in.Name, in.Name, other)
		fmt.Fprintf(out, "  ferry console %s      # its serial console (Ctrl-] to leave); ferry logs %s\n", in.Name, in.Name)
		for _, r := range insts {
			if r.Status.ReplicaNode != "" {
				fmt.Fprintf(out, "  ferry instance show %s; ferry instance wait-synced %s   # its disk replication (UpToDate, Syncing %%, Degraded)\n", r.Name, r.Name)
			}
		}
		victim := in
		for _, r := range insts {
			if r.Status.ReplicaNode != "" {
				victim = r // the replicated one shows the whole failover
			}
		}
		for _, h := range hc.Hosts() {
			if devNodeName(h) == victim.Status.Node {
				fmt.Fprintf(out, "  ip netns pids %s | xargs kill -9    # kill the host %s runs on: it serves again from its replica in seconds\n", h.Namespace, victim.Name)
				fmt.Fprintf(out, "  ferry operation ls; ferry instance history %s   # the failover, step by step\n", victim.Name)
			}
		}
	}
	fmt.Fprintln(out, "\nPress Ctrl-C to stop the cluster (VMs, hosts and data are removed).")
}
