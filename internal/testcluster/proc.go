package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command returns a command that runs name with args inside the namespace
// ns (one of [Cluster.Namespaces]) through `ip netns exec`, which execs the
// program, so cmd.Process is the program itself. ctx kills it as in
// [exec.CommandContext]. Set Stdout, Env and so on as usual, then start it
// with [Cluster.StartProcess] (or [Host.Start]) so that Close and KillHost
// kill it even in the instant before it has entered the namespace. A
// namespace that is not the cluster's makes Start fail.
func (c *Cluster) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if !c.hasNamespace(ns) {
		cmd.Err = fmt.Errorf("testcluster: %q is not a namespace of cluster %s", ns, c.prefix)
	}
	return cmd
}

// StartProcess starts cmd (from [Cluster.Command]) and tracks it, so that
// Close kills it. The caller still owns cmd: it should Wait for it.
func (c *Cluster) StartProcess(cmd *exec.Cmd) error {
	ns := ""
	if len(cmd.Args) > 3 && cmd.Args[1] == "netns" && cmd.Args[2] == "exec" {
		ns = cmd.Args[3]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("testcluster: cluster %s is closed", c.prefix)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	c.procs = append(c.procs, trackedProc{ns: ns, cmd: cmd})
	return nil
}

// Command returns a command that runs name with args on the host; see
// [Cluster.Command].
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return h.c.Command(ctx, h.Namespace, name, args...)
}

// Start starts cmd (from [Host.Command]) and tracks it; see
// [Cluster.StartProcess].
func (h *Host) Start(cmd *exec.Cmd) error { return h.c.StartProcess(cmd) }

// Pids returns the processes running in the host's namespace, in order.
func (h *Host) Pids() ([]int, error) {
	m, err := pidsIn([]string{h.Namespace})
	if err != nil {
		return nil, err
	}
	return sortedPids(m), nil
}

// Exec runs args inside the namespace ns (one of [Cluster.Namespaces]) and
// returns its combined output. A failure's error carries the output.
func (c *Cluster) Exec(ctx context.Context, ns string, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, errors.New("testcluster: exec: no command")
	}
	cmd := c.Command(ctx, ns, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// KillHost kills -9 every process in h's namespace, as a power cut would,
// and returns once none is left (or ctx ends). The namespace, its links
// and any taps stay; guests attached to the host are not processes and are
// left alone. Processes may be started on the host again afterwards.
func (c *Cluster) KillHost(ctx context.Context, h *Host) error {
	c.mu.Lock()
	for _, p := range c.procs {
		if p.ns == h.Namespace {
			_ = p.cmd.Process.Kill()
		}
	}
	c.mu.Unlock()
	if err := killAll(ctx, []string{h.Namespace}); err != nil {
		return fmt.Errorf("testcluster: kill host %s: %w", h.Name, err)
	}
	c.log.Info("killed host", "host", h.Name)
	return nil
}

// nsID identifies a network namespace.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// pidsIn returns every process (but this one) whose network namespace is
// one of the named ones, mapped to that name. Threads that entered a
// namespace on their own are not seen, as with `ip netns pids`.
func pidsIn(names []string) (map[int]string, error) {
	want := map[nsID]string{}
	for _, n := range names {
		id, err := statNS(filepath.Join(netnsDir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stat netns %s: %w", n, err)
		}
		want[id] = n
	}
	out := map[int]string{}
	if len(want) == 0 {
		return out, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := statNS(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil {
			continue // gone, or a zombie: it holds no namespace
		}
		if n, ok := want[id]; ok {
			out[pid] = n
		}
	}
	return out, nil
}

func sortedPids(m map[int]string) []int {
	out := make([]int, 0, len(m))
	for pid := range m {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// killAll sends SIGKILL to every process in the named namespaces until none
// is left, or fails when ctx (at most opTimeout) ends first.
func killAll(ctx context.Context, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for {
		pids, err := pidsIn(names)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL) // gone already is fine
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v still running in %v: %w", sortedPids(pids), names, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
