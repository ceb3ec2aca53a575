package testcluster

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// partitionTable is the nftables table (in families inet and bridge) that
// Partition fills and Heal deletes.
const partitionTable = "ferry_partition"

// CutLinks pulls h's cable: its port on the LAN switch goes down, so the
// host, and every guest or VM on its bridge, is cut off from everything
// else, while traffic inside the host (host to its own VMs) goes on. The
// host's eth0 sees its carrier drop, as with a real cable.
func (c *Cluster) CutLinks(ctx context.Context, h *Host) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lan, err := openNS(c.lanNS)
	if err != nil {
		return fmt.Errorf("testcluster: cut links of %s: %w", h.Name, err)
	}
	defer lan.close()
	if err := lan.down(h.LanLink); err != nil {
		return fmt.Errorf("testcluster: cut links of %s: %w", h.Name, err)
	}
	c.log.Info("cut links", "host", h.Name)
	return nil
}

// HealLinks plugs h's cable back in and waits until both ends of the link
// are operationally up again (or ctx ends).
func (c *Cluster) HealLinks(ctx context.Context, h *Host) error {
	lan, err := openNS(c.lanNS)
	if err != nil {
		return fmt.Errorf("testcluster: heal links of %s: %w", h.Name, err)
	}
	defer lan.close()
	if err := lan.up(h.LanLink); err != nil {
		return fmt.Errorf("testcluster: heal links of %s: %w", h.Name, err)
	}
	if err := waitOperUp(ctx, []waitLink{{c.lanNS, h.LanLink}, {h.Namespace, nsEth}}); err != nil {
		return fmt.Errorf("testcluster: heal links of %s: %w", h.Name, err)
	}
	c.log.Info("healed links", "host", h.Name)
	return nil
}

// Partition drops every IP packet between h (and the guests and VMs on its
// bridge) and the address peer, in both directions, with nftables rules
// inside h's namespace; everything else still flows, and ARP is untouched.
// It is how a test cuts a host off from the control plane only. Calls add
// up: partitioning from two addresses drops both. Established connections
// stall rather than close, as on a real network.
func (c *Cluster) Partition(ctx context.Context, h *Host, peer netip.Addr) error {
	if !peer.IsValid() {
		return fmt.Errorf("testcluster: partition %s: invalid address", h.Name)
	}
	peer = peer.Unmap()
	fam := "ip"
	if peer.Is6() {
		fam = "ip6"
	}
	t := partitionTable
	script := strings.Join([]string{
		// Host traffic: the host's own input and output.
		"add table inet " + t,
		"add chain inet " + t + " input { type filter hook input priority -10; policy accept; }",
		"add chain inet " + t + " output { type filter hook output priority -10; policy accept; }",
		fmt.Sprintf("add rule inet %s input %s saddr %s drop", t, fam, peer),
		fmt.Sprintf("add rule inet %s output %s daddr %s drop", t, fam, peer),
		// Bridged traffic: VMs on the host's bridge.
		"add table bridge " + t,
		"add chain bridge " + t + " forward { type filter hook forward priority -10; policy accept; }",
		fmt.Sprintf("add rule bridge %s forward %s saddr %s drop", t, fam, peer),
		fmt.Sprintf("add rule bridge %s forward %s daddr %s drop", t, fam, peer),
	}, "\n") + "\n"
	if err := c.nft(ctx, h, script); err != nil {
		return fmt.Errorf("testcluster: partition %s from %s: %w", h.Name, peer, err)
	}
	c.log.Info("partitioned", "host", h.Name, "from", peer)
	return nil
}

// Heal removes every partition of h. Healing a host that is not
// partitioned is fine.
func (c *Cluster) Heal(ctx context.Context, h *Host) error {
	t := partitionTable
	// "add" then "delete" in one transaction: deletes whether or not the
	// table existed (nft 1.0.6 has no "destroy").
	script := strings.Join([]string{
		"add table inet " + t, "delete table inet " + t,
		"add table bridge " + t, "delete table bridge " + t,
	}, "\n") + "\n"
	if err := c.nft(ctx, h, script); err != nil {
		return fmt.Errorf("testcluster: heal %s: %w", h.Name, err)
	}
	c.log.Info("healed partitions", "host", h.Name)
	return nil
}

// nft runs an nft script inside h's namespace.
func (c *Cluster) nft(ctx context.Context, h *Host, script string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
