package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
)

// CreateSizedInstance creates (unless it exists) a demo instance like
// ProtectedInstance's, on a local replicated disk of the given size, and
// returns without waiting: create several, then WaitProtected each, and
// they boot side by side.
func (c *Cluster) CreateSizedInstance(ctx context.Context, name string, disk api.Bytes) error {
	if _, err := c.Client.GetInstance(ctx, name); err == nil {
		return nil
	} else if !client.IsNotFound(err) {
		return err
	}
	spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: disk, Image: "demo",
		Probe: &api.Probe{Type: "http", Ports: []int{80}}}
	_, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: name, Spec: spec})
	return err
}

// DiskAllocated returns the bytes the local disk file of instance name
// allocates on node's host (its sparse file's blocks, not its size): the
// data a copy of the disk that skips holes has to send.
func (c *Cluster) DiskAllocated(node, name string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(c.AgentDir(node), "disks", name+".img"), &st); err != nil {
		return 0, fmt.Errorf("e2e: disk of %s on %s: %w", name, node, err)
	}
	return st.Blocks * 512, nil
}

// HostWithoutCopy returns a Ready node that is neither the instance's
// primary nor its replica's host (the target of a move that has to copy
// the disk), or "" if there is none. It prefers a host with no disk file
// of the instance left over from an earlier move; stale says the one it
// returns has such a file.
func (c *Cluster) HostWithoutCopy(ctx context.Context, name string) (node string, stale bool, err error) {
	in, err := c.Client.GetInstance(ctx, name)
	if err != nil {
		return "", false, err
	}
	nodes, err := c.Client.ListNodes(ctx)
	if err != nil {
		return "", false, err
	}
	for _, n := range nodes.Items {
		if n.Status.State != api.NodeReady || n.Name == in.Status.Node || n.Name == in.Status.ReplicaNode {
			continue
		}
		if _, err := os.Stat(filepath.Join(c.AgentDir(n.Name), "disks", name+".img")); err != nil {
			return n.Name, false, nil
		}
		if node == "" {
			node, stale = n.Name, true
		}
	}
	return node, stale, nil
}

// FillTo makes the disk of instance name allocate about want bytes on its
// primary's host by having the guest write and fsync the missing MiB
// (minus slack MiB the caller writes itself later, as RunMigration does).
// It returns what the disk allocates afterwards; a disk already at or past
// the target is left as it is.
func (c *Cluster) FillTo(ctx context.Context, name string, want int64, slackMiB int) (int64, error) {
	in, err := c.Client.GetInstance(ctx, name)
	if err != nil {
		return 0, err
	}
	have, err := c.DiskAllocated(in.Status.Node, name)
	if err != nil {
		return 0, err
	}
	mib := int((want-have)>>20) - slackMiB
	if mib < 1 {
		return have, nil
	}
	for mib > 0 { // fill.cgi takes at most 512 MiB at once (and replaces its file)
		n := min(mib, 512)
		if _, err := c.Fill(ctx, in.Spec.IP, n); err != nil {
			return 0, err
		}
		mib -= n
	}
	// fill.cgi fsyncs before answering, so the host has the blocks now;
	// give a lazily allocating file system a moment anyway.
	time.Sleep(200 * time.Millisecond)
	return c.DiskAllocated(in.Status.Node, name)
}
