package api

import (
	"fmt"
	"strconv"
	"strings"
)

// SizeForm is the form ParseSize reads, for messages and help.
const SizeForm = "CPUScpu,MEMORY,DISK such as 1cpu,2G,20G"

// ParseSize reads an instance size written as "1cpu,2G,20G": a CPU count
// with the suffix "cpu" (or "cpus"), then memory and disk as sizes with
// binary units, separated by commas. field names the input in errors
// (such as "size" or "--size"); every error shows the expected form.
func ParseSize(field, s string) (Resources, error) {
	bad := func(format string, args ...any) (Resources, error) {
		return Resources{}, fieldErr(field, "%s; expected %s", fmt.Sprintf(format, args...), SizeForm)
	}
	parts := strings.Split(strings.TrimSpace(s), ",")
	if strings.TrimSpace(s) == "" {
		return bad("is empty")
	}
	if len(parts) != 3 {
		return bad("%q has %d parts, not 3", s, len(parts))
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	lc := strings.ToLower(parts[0])
	num, ok := strings.CutSuffix(lc, "cpus")
	if !ok {
		num, ok = strings.CutSuffix(lc, "cpu")
	}
	if !ok {
		return bad("%q: the first part must be a CPU count with the suffix cpu, got %q", s, parts[0])
	}
	cpus, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || cpus < 1 || cpus > MaxCPUs {
		return bad("%q: the CPU count must be a whole number between 1 and %d, got %q", s, MaxCPUs, parts[0])
	}
	mem, err := ParseBytes(parts[1])
	if err != nil {
		return bad("%q: memory: %v", s, err)
	}
	if mem < MinMemory || mem > MaxMemory {
		return bad("%q: memory must be between %s and %s, got %s", s, Bytes(MinMemory), Bytes(MaxMemory), mem.Human())
	}
	disk, err := ParseBytes(parts[2])
	if err != nil {
		return bad("%q: disk: %v", s, err)
	}
	if disk < MinDisk || disk > MaxDisk {
		return bad("%q: disk must be between %s and %s, got %s", s, Bytes(MinDisk), Bytes(MaxDisk), disk.Human())
	}
	return Resources{CPUs: cpus, Memory: mem, Disk: disk}, nil
}

// FormatSize writes r the way ParseSize reads it: "1cpu,2G,20G".
func FormatSize(r Resources) string {
	return fmt.Sprintf("%dcpu,%s,%s", r.CPUs, r.Memory, r.Disk)
}

// MiBCeil returns b in MiB, rounded up (a byte over a MiB counts as two);
// it is how much an instance asks for, as the scheduler counts it.
func (b Bytes) MiBCeil() int64 {
	if b <= 0 {
		return 0
	}
	return int64((b + (1<<20 - 1)) >> 20)
}

// MiBFloor returns b in MiB, rounded down; it is how much a node offers, as
// the scheduler counts it.
func (b Bytes) MiBFloor() int64 {
	if b <= 0 {
		return 0
	}
	return int64(b >> 20)
}
