package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// Options describes a cluster to start.
type Options struct {
	// Binary is the ferry binary to run. Required.
	Binary string
	// Hosts is the number of simulated hosts (default 2).
	Hosts int
	// Accel is passed to the agents' --accel (default "tcg": the KVM probe
	// is tested on its own and would cost each agent its timeout here).
	Accel string
	// Dir holds the server's and agents' data. Required.
	Dir string
	// WithClient adds the client namespace guests are reached from.
	WithClient bool
	// NodeTTL, if set, is the server's --node-ttl, and a second less the
	// agents' --fence-after (the defaults are 3 s and 2 s). A test that
	// restarts the server and must not see hosts fence themselves (a
	// restart under load can outlast 2 s) sets a longer one.
	NodeTTL time.Duration
}

// Cluster is a running ferry cluster on simulated hosts.
type Cluster struct {
	Hosts  *testcluster.Cluster
	Client *client.Client
	URL    string
	Token  string
	// Shared is a directory every host sees (shared storage).
	Shared string

	opts   Options
	server *Proc
	agents map[string]*Proc
	mu     sync.Mutex
}

// Proc is a ferry process with its output kept for diagnostics.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns what the process printed.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// StartProcess starts cmd (in this namespace) with its output kept.
func StartProcess(cmd *exec.Cmd) (*Proc, error) {
	return start(cmd, func(cmd *exec.Cmd) error { return cmd.Start() })
}

func start(cmd *exec.Cmd, starter func(*exec.Cmd) error) (*Proc, error) {
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	if err := starter(cmd); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Start builds the hosts, starts the server and one agent per host, waits
// until every node is Ready and registers the LAN as network "default".
// On error everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Hosts == 0 {
		opts.Hosts = 2
	}
	if opts.Accel == "" {
		opts.Accel = "tcg"
	}
	if opts.Binary == "" || opts.Dir == "" {
		return nil, errors.New("e2e: Binary and Dir are required")
	}
	hc, err := testcluster.Start(ctx, testcluster.Config{Hosts: opts.Hosts, WithClient: opts.WithClient, RootLeg: true})
	if err != nil {
		return nil, err
	}
	c := &Cluster{Hosts: hc, opts: opts, agents: map[string]*Proc{}, Shared: filepath.Join(opts.Dir, "shared")}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := os.MkdirAll(c.Shared, 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(hc.RootIP().String(), "0"))
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	c.URL = "https://" + addr
	if err := c.StartServer(ctx, addr); err != nil {
		return nil, err
	}
	for i, h := range hc.Hosts() {
		jt, err := c.Client.CreateJoinToken(ctx, 10*time.Minute)
		if err != nil {
			return nil, err
		}
		if err := c.StartAgent(ctx, h, NodeName(i), jt.Token); err != nil {
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, opts.Hosts, time.Minute); err != nil {
		return nil, err
	}
	n := hc.Network()
	if _, err := c.Client.CreateNetwork(ctx, api.Network{Meta: api.Meta{Name: "default"}, CIDR: n.CIDR, Gateway: n.Gateway, Reserved: n.Reserved}); err != nil {
		return nil, fmt.Errorf("e2e: create network: %w", err)
	}
	return c, nil
}

// NodeName is the node name of the agent on the i-th host (from 0).
func NodeName(i int) string { return fmt.Sprintf("host-%d", i+1) }

// StartServer starts (or restarts, on the same data) the server process.
func (c *Cluster) StartServer(ctx context.Context, addr string) error {
	dataDir := filepath.Join(c.opts.Dir, "server")
	cmd := exec.Command(c.opts.Binary, "server", "--data-dir", dataDir, "--listen", addr,
		"--admin-token-file", filepath.Join(c.opts.Dir, "admin.token"), "--log-format", "json")
	if c.opts.NodeTTL > 0 {
		cmd.Args = append(cmd.Args, "--node-ttl", c.opts.NodeTTL.String())
	}
	p, err := StartProcess(cmd)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.server = p
	c.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for {
		tok, terr := os.ReadFile(filepath.Join(c.opts.Dir, "admin.token"))
		ca, cerr := os.ReadFile(filepath.Join(dataDir, "ca.crt"))
		if terr == nil && cerr == nil {
			c.Token = strings.TrimSpace(string(tok))
			cl, err := client.New(client.Config{Server: c.URL, Token: c.Token, CAPEM: ca})
			if err != nil {
				return err
			}
			if _, err := cl.ListNodes(ctx); err == nil {
				c.Client = cl
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: server not ready after a minute:\n%s", p.Output())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("e2e: server exited:\n%s", p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Server returns the server process.
func (c *Cluster) Server() *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.server
}

// StartAgent starts the agent of host h (token is needed only the first time).
func (c *Cluster) StartAgent(ctx context.Context, h *testcluster.Host, name, token string) error {
	return c.StartAgentVia(ctx, h, name, token, c.URL)
}

// StartAgentVia starts the agent of host h talking to the server at
// serverURL (a relay in front of the server, for instance).
func (c *Cluster) StartAgentVia(ctx context.Context, h *testcluster.Host, name, token, serverURL string) error {
	args := []string{"agent", "--server", serverURL, "--state-dir", filepath.Join(c.opts.Dir, "agents", name),
		"--name", name, "--driver", "qemu", "--accel", c.opts.Accel, "--bridge", h.Bridge,
		"--api-listen", ":7445", "--listen", "", "--address", net.JoinHostPort(h.IP.String(), "7445"), "--log-format", "json"}
	if token != "" {
		args = append(args, "--token", token)
	}
	if c.opts.NodeTTL > 0 {
		args = append(args, "--fence-after", (c.opts.NodeTTL - time.Second).String())
	}
	p, err := start(h.Command(context.Background(), c.opts.Binary, args...), h.Start)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.agents[name] = p
	c.mu.Unlock()
	return nil
}

// Agent returns the agent process of a node.
func (c *Cluster) Agent(name string) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[name]
}

// WaitReady waits until n nodes are Ready.
func (c *Cluster) WaitReady(ctx context.Context, n int, d time.Duration) error {
	return c.Wait(ctx, d, fmt.Sprintf("%d nodes Ready", n), func() bool {
		list, err := c.Client.ListNodes(ctx)
		if err != nil {
			return false
		}
		ready := 0
		for _, node := range list.Items {
			if node.Status.State == api.NodeReady {
				ready++
			}
		}
		return ready >= n
	})
}

// Wait polls cond every 50 ms until it holds, d passes or ctx ends.
func (c *Cluster) Wait(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("e2e: timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// UploadImage imports an image file.
func (c *Cluster) UploadImage(ctx context.Context, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	_, err = c.Client.UploadImage(ctx, name, f, st.Size(), nil)
	return err
}

// DemoAnswer is what the demo image's HTTP service says.
type DemoAnswer struct {
	Name    string `json:"name"`
	Boots   int    `json:"boots"`
	Counter int    `json:"counter"`
}

// Get asks a demo guest's HTTP service at ip, from the client namespace if
// the cluster has one, else from this one (the root leg).
func (c *Cluster) Get(ctx context.Context, ip string) (DemoAnswer, error) {
	return c.GetWithin(ctx, ip, 2*time.Second)
}

// GetWithin is Get with its own timeout: a short one polls finely while a
// guest boots (a connect to an address nobody answers yet waits for ARP).
func (c *Cluster) GetWithin(ctx context.Context, ip string, d time.Duration) (DemoAnswer, error) {
	return c.getDial(ctx, ip, d, 0)
}

// getDial asks the demo guest at ip within total, giving up after dial if
// no connection is made by then (0: total bounds that too).
func (c *Cluster) getDial(ctx context.Context, ip string, total, dial time.Duration) (DemoAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	var a DemoAnswer
	if err := c.getJSONDial(ctx, "http://"+ip+"/", &a, dial); err != nil {
		return DemoAnswer{}, err
	}
	return a, nil
}

// getJSON GETs url from the client namespace (or the root leg) and decodes
// a 200 answer's JSON into out.
func (c *Cluster) getJSON(ctx context.Context, url string, out any) error {
	return c.getJSONDial(ctx, url, out, 0)
}

func (c *Cluster) getJSONDial(ctx context.Context, url string, out any, dial time.Duration) error {
	code, body, err := c.Hosts.HTTPGetDial(ctx, c.Hosts.ClientNS(), url, dial)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("status %d: %s", code, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("answer %q: %w", body, err)
	}
	return nil
}

// FillAnswer is what the demo image's fill.cgi says about its file.
type FillAnswer struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error"`
}

// Fill makes the demo guest at ip write mib MiB of random data and fsync
// it (mib 0 only asks about the file as it is).
func (c *Cluster) Fill(ctx context.Context, ip string, mib int) (FillAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	u := "http://" + ip + "/cgi-bin/fill.cgi"
	if mib > 0 {
		u += fmt.Sprintf("?mib=%d", mib)
	}
	var a FillAnswer
	if err := c.getJSON(ctx, u, &a); err != nil {
		return a, fmt.Errorf("fill: %w", err)
	}
	if a.Error != "" {
		return a, fmt.Errorf("fill: %s", a.Error)
	}
	return a, nil
}

// AgentDir returns the state directory of a node's agent.
func (c *Cluster) AgentDir(name string) string { return filepath.Join(c.opts.Dir, "agents", name) }

// Diagnostics returns the output of every process, for a failed test.
func (c *Cluster) Diagnostics() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	if c.server != nil {
		fmt.Fprintf(&b, "--- server\n%s\n", tail(c.server.Output(), 60))
	}
	for name, p := range c.agents {
		fmt.Fprintf(&b, "--- agent %s\n%s\n", name, tail(p.Output(), 60))
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close kills every process and removes the hosts (and so every VM: QEMU
// runs inside the host namespaces).
func (c *Cluster) Close() {
	c.mu.Lock()
	procs := []*Proc{c.server}
	for _, p := range c.agents {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		if p != nil {
			p.Kill()
		}
	}
	if c.Hosts != nil {
		_ = c.Hosts.Close()
	}
}
