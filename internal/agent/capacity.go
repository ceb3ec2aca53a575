package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
)

// hostCapacity returns over with its zero fields read from the host; dir is
// the state directory, whose filesystem's free space is the disk capacity.
func hostCapacity(dir string, over api.Resources) (api.Resources, error) {
	if err := checkCapacity(over); err != nil {
		return api.Resources{}, err
	}
	c := over
	if c.CPUs == 0 {
		c.CPUs = runtime.NumCPU()
	}
	if c.Memory == 0 {
		m, err := memTotal()
		if err != nil {
			return api.Resources{}, fmt.Errorf("agent: Capacity.Memory is not set and cannot be read from the host: %w", err)
		}
		c.Memory = m
	}
	if c.Disk == 0 {
		d, err := freeDisk(dir)
		if err != nil {
			return api.Resources{}, fmt.Errorf("agent: Capacity.Disk is not set and cannot be read from the host: %w", err)
		}
		c.Disk = d
	}
	return c, nil
}

// parseMemTotal reads MemTotal from the contents of /proc/meminfo.
func parseMemTotal(meminfo []byte) (api.Bytes, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected MemTotal line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb <= 0 || kb > 1<<53 {
			return 0, fmt.Errorf("unexpected MemTotal line %q", sc.Text())
		}
		return api.Bytes(kb << 10), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no MemTotal line")
}
