package agent

import (
	"fmt"
	"os"
	"syscall"

	"github.com/ferrycluster/ferry/internal/api"
)

func memTotal() (api.Bytes, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	m, err := parseMemTotal(data)
	if err != nil {
		return 0, fmt.Errorf("/proc/meminfo: %w", err)
	}
	return m, nil
}

func freeDisk(dir string) (api.Bytes, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return api.Bytes(st.Bavail * uint64(st.Bsize)), nil
}
