package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The VM guard covers what self-fencing cannot: an agent that is gone. VMs
// outlive their agent on purpose (an agent restart must not reboot guests),
// but if the agent stays away longer than the fence deadline the control
// plane fails its instances over, and the old QEMUs must not run on. So the
// agent starts a small guard process (`ferry vm-guard`) in a session of its
// own; the agent touches <state>/agent.alive every tick while it runs and is
// not fenced, and the guard kills every VM of the host once that file is
// older than the deadline. A quick agent restart keeps the VMs.

const (
	aliveFileName = "agent.alive"
	guardPidName  = "guard.pid"
)

// touchAlive tells the guard the agent is here and not fenced.
func (a *Agent) touchAlive() {
	p := filepath.Join(a.stateDir, aliveFileName)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			f.Close()
		}
	}
}

// startGuard starts the guard unless one already watches this state
// directory (left by an earlier run of the agent).
func (a *Agent) startGuard() error {
	if len(a.guardCmd) == 0 {
		return nil
	}
	pidPath := filepath.Join(a.stateDir, guardPidName)
	if b, err := os.ReadFile(pidPath); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && guardRunning(pid) {
			return nil
		}
	}
	cmd := exec.Command(a.guardCmd[0], a.guardCmd[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("agent: start vm guard: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped while this agent runs
	return writeFileAtomic(pidPath, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
}

// guardRunning reports whether pid is a live vm-guard process.
func guardRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "vm-guard")
}

// RunGuard is `ferry vm-guard`: it watches stateDir/agent.alive and, once it
// is older than staleAfter, kills every VM whose directory is under
// stateDir/vms with sweep (the driver's check that a PID really is that
// VM's QEMU). It returns when ctx ends or another guard took over.
func RunGuard(ctx context.Context, stateDir string, staleAfter time.Duration, sweep func(ctx context.Context, id, dir string) (bool, error), log *slog.Logger) error {
	if staleAfter <= 0 {
		return errors.New("vm-guard: --stale-after must be positive")
	}
	alive := filepath.Join(stateDir, aliveFileName)
	pidPath := filepath.Join(stateDir, guardPidName)
	vms := filepath.Join(stateDir, vmsDirName)
	me := strconv.Itoa(os.Getpid())
	t := time.NewTicker(staleAfter / 10)
	defer t.Stop()
	var killedFor time.Time // the alive time the last kills answered
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if b, err := os.ReadFile(pidPath); err == nil && strings.TrimSpace(string(b)) != me {
			log.Info("another vm guard took over; exiting")
			return nil
		}
		fi, err := os.Stat(alive)
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(stateDir); serr != nil {
				return nil // the state directory is gone
			}
			continue // the agent has not started yet
		}
		if err != nil || time.Since(fi.ModTime()) <= staleAfter || fi.ModTime().Equal(killedFor) {
			continue
		}
		killedFor = fi.ModTime()
		entries, _ := os.ReadDir(vms)
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			killed, err := sweep(ctx, e.Name(), filepath.Join(vms, e.Name()))
			switch {
			case err != nil:
				log.Error("vm guard: killing vm", "vm", e.Name(), "err", err)
			case killed:
				log.Warn("vm guard: the agent is gone; killed its vm so it cannot run in two places", "vm", e.Name(), "agentLastSeen", fi.ModTime())
			}
		}
	}
}
