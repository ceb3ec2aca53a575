package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sweep kills the QEMU process of VM id whose files are in stateDir, if
// one still runs there although nobody holds its handle: an agent killed
// inside Start, after QEMU was launched but before the handle was saved,
// leaves such a process (paused, since QEMU starts with -S). It checks the
// process named by the pidfile really is that VM's QEMU (its command line
// carries -name for id) before killing it, so a reused PID is never hit.
// It reports whether it killed one.
func (d *Driver) Sweep(ctx context.Context, id, stateDir string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, PIDFileName))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sweep vm %s: %w", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return false, nil // not a pidfile QEMU wrote
	}
	args, err := readCmdline(pid)
	if err != nil || len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "qemu") || !slices.Contains(args, nameArg(id)) {
		return false, nil // gone, or another process now has that PID
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("sweep vm %s: kill %d: %w", id, pid, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := readCmdline(pid); err != nil {
			return true, nil
		}
		if time.Now().After(deadline) {
			return true, fmt.Errorf("sweep vm %s: process %d still there after SIGKILL", id, pid)
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
