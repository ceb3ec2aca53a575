//go:build !linux

package qemu

import (
	"errors"
	"fmt"
)

// openProcess needs /proc and pidfds: recovering VMs works on Linux only.
func openProcess(pid int, _ uint64) (process, error) {
	return nil, fmt.Errorf("find process %d: %w", pid, errors.ErrUnsupported)
}
