package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/ferrycluster/ferry/internal/agent"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// SlowHostResult is what a slow-host run saw: any failover or self-fence
// is a false one, since the host never died.
type SlowHostResult struct {
	Node      string
	Failovers int
	Fences    int
	// Reboots counts boots of the instance during the run.
	Reboots int
}

// RunSlowHost makes the host of instance name slow without killing it: its
// agent talks to the server through a relay adding delay ± jitter to every
// packet, and every core of the machine is kept busy by busy loops in its
// namespace, for d. It then counts failovers, self-fences and reboots,
// which must all be 0 (architecture, property 7).
func (c *Cluster) RunSlowHost(ctx context.Context, name string, d, delay, jitter time.Duration) (SlowHostResult, error) {
	var res SlowHostResult
	in, err := c.Client.GetInstance(ctx, name)
	if err != nil {
		return res, err
	}
	node := in.Status.Node
	res.Node = node
	h, err := c.HostOf(node)
	if err != nil {
		return res, err
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return res, err
	}
	relay, err := testcluster.StartRelay(net.JoinHostPort(c.Hosts.RootIP().String(), "0"), u.Host, delay, jitter)
	if err != nil {
		return res, err
	}
	defer relay.Close()
	// The agent restarts through the relay; the VM keeps running.
	if p := c.Agent(node); p != nil {
		p.Kill()
	}
	if err := c.StartAgentVia(ctx, h, node, "", "https://"+relay.Addr()); err != nil {
		return res, err
	}
	if err := c.WaitReady(ctx, len(c.Hosts.Hosts()), time.Minute); err != nil {
		return res, err
	}
	ops, err := c.Client.ListOperations(ctx, name, "")
	if err != nil {
		return res, err
	}
	fences, err := agent.FenceRecords(c.AgentDir(node))
	if err != nil {
		return res, err
	}
	boots := in.Status.Boots
	hog := h.Command(ctx, "sh", "-c", `for i in $(seq $(nproc)); do sh -c 'while :; do :; done' & done; wait`)
	if err := h.Start(hog); err != nil {
		return res, err
	}
	select { // the measurement window itself, not a synchronisation
	case <-ctx.Done():
	case <-time.After(d):
	}
	if _, err := c.Hosts.Exec(ctx, h.Namespace, "pkill", "-f", "while :; do :; done"); err != nil {
		return res, fmt.Errorf("e2e: stopping the busy loops: %w", err)
	}
	_ = hog.Process.Kill()
	after, err := c.Client.ListOperations(ctx, name, "")
	if err != nil {
		return res, err
	}
	fences2, err := agent.FenceRecords(c.AgentDir(node))
	if err != nil {
		return res, err
	}
	in, err = c.Client.GetInstance(ctx, name)
	if err != nil {
		return res, err
	}
	res.Failovers = len(after.Items) - len(ops.Items)
	res.Fences = len(fences2) - len(fences)
	res.Reboots = in.Status.Boots - boots
	// Back to a direct path for whatever runs next.
	if p := c.Agent(node); p != nil {
		p.Kill()
	}
	if err := c.StartAgent(ctx, h, node, ""); err != nil {
		return res, err
	}
	return res, c.WaitReady(ctx, len(c.Hosts.Hosts()), time.Minute)
}
