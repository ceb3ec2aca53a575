package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/image"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// devHosts builds the simulated hosts of a real-VM dev cluster: one network
// namespace per host, joined by a LAN bridge, with a leg into this
// namespace so the server (here) and the user's shell reach every host and
// every VM.
func devHosts(ctx context.Context, n int, log io.Writer) (*testcluster.Cluster, error) {
	if err := testcluster.Preflight(); err != nil {
		return nil, fmt.Errorf("real VMs need simulated hosts: %w (or run `ferry dev --driver fake`)", err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 not found: run scripts/setup (or `ferry dev --driver fake`)")
	}
	if _, err := testcluster.CleanupStale(ctx); err != nil {
		fmt.Fprintf(log, "cleaning up an earlier dev cluster: %v\n", err)
	}
	return testcluster.Start(ctx, testcluster.Config{Hosts: n, RootLeg: true})
}

// startDevAgent runs `ferry agent` inside host h's namespace.
func startDevAgent(ctx context.Context, h *testcluster.Host, name, serverURL, token, stateDir, accel string, logTo io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"agent", "--server", serverURL, "--state-dir", stateDir, "--name", name,
		"--driver", "qemu", "--accel", accel, "--bridge", h.Bridge, "--api-listen", ":7445", "--listen", "",
		"--address", net.JoinHostPort(h.IP.String(), "7445")}
	if token != "" {
		args = append(args, "--token", token)
	}
	cmd := h.Command(ctx, self, args...)
	cmd.Stdout, cmd.Stderr = logTo, logTo
	return h.Start(cmd)
}

// devImage builds the demo image once per data directory and imports it.
func devImage(ctx context.Context, c *client.Client, dir string, out io.Writer) error {
	if im, err := c.GetImage(ctx, "demo"); err == nil && im.Ready {
		return nil
	}
	path := filepath.Join(dir, "demo.img")
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintln(out, "building the demo image (busybox + the Debian kernel)...")
		if _, err := image.BuildDemo(ctx, image.DemoOptions{Out: path}); err != nil {
			return err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	_, err = c.UploadImage(ctx, "demo", f, st.Size(), nil)
	return err
}

// devInstance is a demo instance and where its disk lives.
type devInstance struct {
	name    string
	storage string // "" for local, replicated to a second host
}

// devInstances creates the demo instances (one on shared storage, so it
// can move between the simulated hosts at will; one on a local disk that
// ferry replicates to a second host) and waits until they serve.
func devInstances(ctx context.Context, c *client.Client, insts []devInstance) ([]*api.Instance, error) {
	var out []*api.Instance
	names := make([]string, 0, len(insts))
	for _, di := range insts {
		name := di.name
		names = append(names, name)
		if _, err := c.GetInstance(ctx, name); err == nil {
			continue
		}
		spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 512 << 20, Image: "demo",
			Storage: di.storage, Probe: &api.Probe{Type: "http", Ports: []int{80}}}
		if _, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Spec: spec}); err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for _, name := range names {
		for {
			in, err := c.GetInstance(ctx, name)
			if err == nil && in.Status.Serving {
				out = append(out, in)
				break
			}
			if time.Now().After(deadline) {
				msg := "no answer"
				if in != nil {
					msg = fmt.Sprintf("%s %s %s", in.Status.Phase, in.Status.Message, in.Status.LastError)
				}
				return nil, fmt.Errorf("instance %s did not start serving within 3 minutes: %s (see `ferry logs %s`)", name, msg, name)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return out, nil
}

// devNetwork registers the simulated LAN as the "default" network.
func devNetwork(ctx context.Context, c *client.Client, hc *testcluster.Cluster) error {
	if _, err := c.GetNetwork(ctx, "default"); err == nil {
		return nil
	}
	n := hc.Network()
	_, err := c.CreateNetwork(ctx, api.Network{Meta: api.Meta{Name: "default"}, CIDR: n.CIDR, Gateway: n.Gateway, Reserved: n.Reserved})
	return err
}

// devNodeName is the node name of the agent on simulated host h: dev-1 on
// the first host, and so on.
func devNodeName(h *testcluster.Host) string {
	n := strings.TrimLeft(h.Name, "h")
	return "dev-" + n
}
