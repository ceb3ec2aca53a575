package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/cli"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/server"
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
	f.StringVar(&o.driver, "driver", "fake", "VMM driver of the agents: fake")
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

	srv, err := server.New(runCtx, server.Config{
		DataDir: filepath.Join(dir, "server"), Listen: o.listen, Logger: log.With("component", "server"),
		Version: version, AdminTokenFile: filepath.Join(dir, "admin.token"),
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
		d, err := newDriver(o.driver)
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
