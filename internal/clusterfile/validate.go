package clusterfile

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// MaxSize bounds every CPU count and every size in MiB (1 EiB of memory
// or disk): far beyond any real host, and small enough that sums over any
// cluster cannot overflow an int64.
const MaxSize int64 = 1 << 40

// Validate checks that s is consistent: names non-empty and unique, sizes
// between 0 and MaxSize, instances placed on known nodes (or not placed at
// all), a secondary different from the primary and absent for shared
// disks, policy ratios and weights non-negative and finite, and every
// string valid UTF-8. The error is an *Error naming the JSON path of the
// first problem, such as "instances[3].primary".
func Validate(s scheduler.Snapshot) error {
	if err := validatePolicy(s.Policy); err != nil {
		return err
	}
	nodes := make(map[string]int, len(s.Nodes))
	for i, n := range s.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		if err := validateName(p+".name", n.Name); err != nil {
			return err
		}
		if j, dup := nodes[n.Name]; dup {
			return pathError(p+".name", "%q is used twice (also nodes[%d])", n.Name, j)
		}
		nodes[n.Name] = i
		if err := validateResources(p+".capacity", n.Capacity); err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
			if !utf8.ValidString(k) || !utf8.ValidString(n.Labels[k]) {
				return pathError(p+".labels", "label %q=%q is not valid UTF-8", k, n.Labels[k])
			}
		}
	}
	insts := make(map[string]int, len(s.Instances))
	for i, in := range s.Instances {
		p := fmt.Sprintf("instances[%d]", i)
		if err := validateName(p+".name", in.Name); err != nil {
			return err
		}
		if j, dup := insts[in.Name]; dup {
			return pathError(p+".name", "%q is used twice (also instances[%d])", in.Name, j)
		}
		insts[in.Name] = i
		if err := validateResources(p+".size", in.Size); err != nil {
			return err
		}
		if in.Primary != "" {
			if _, ok := nodes[in.Primary]; !ok {
				return pathError(p+".primary", "unknown node %q", in.Primary)
			}
		}
		if in.Secondary != "" {
			switch _, ok := nodes[in.Secondary]; {
			case !ok:
				return pathError(p+".secondary", "unknown node %q", in.Secondary)
			case in.Primary == "":
				return pathError(p+".secondary", "set to %q but the instance has no primary", in.Secondary)
			case in.Secondary == in.Primary:
				return pathError(p+".secondary", "%q is also the primary", in.Secondary)
			case in.SharedDisk:
				return pathError(p+".secondary", "set to %q but the disk is shared", in.Secondary)
			}
		}
		if !utf8.ValidString(in.Group) {
			return pathError(p+".group", "not valid UTF-8")
		}
		for j, t := range in.Tags {
			if !utf8.ValidString(t) {
				return pathError(fmt.Sprintf("%s.tags[%d]", p, j), "not valid UTF-8")
			}
		}
	}
	return nil
}

func validateName(path, name string) error {
	if name == "" {
		return pathError(path, "empty")
	}
	if !utf8.ValidString(name) {
		return pathError(path, "%q is not valid UTF-8", name)
	}
	return nil
}

func validateResources(path string, r scheduler.Resources) error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"cpus", r.CPUs}, {"memoryMiB", r.MemMiB}, {"diskMiB", r.DiskMiB}} {
		if err := checkSize(f.v); err != nil {
			return &Error{Name: path + "." + f.name, Err: err}
		}
	}
	return nil
}

// checkSize reports a size outside [0, MaxSize].
func checkSize(v int64) error {
	if v < 0 {
		return fmt.Errorf("%d is negative", v)
	}
	if v > MaxSize {
		return fmt.Errorf("%d is too large (at most %d)", v, MaxSize)
	}
	return nil
}

func validatePolicy(p scheduler.Policy) error {
	w := p.Weights
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"cpuRatio", p.CPURatio}, {"memRatio", p.MemRatio},
		{"weights.mem", w.Mem}, {"weights.cpu", w.CPU}, {"weights.disk", w.Disk},
		{"weights.reserve", w.Reserve}, {"weights.n1", w.N1}, {"weights.over", w.Over},
		{"weights.conflict", w.Conflict},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return pathError("policy."+f.name, "%v is not a finite number", f.v)
		}
		if f.v < 0 {
			return pathError("policy."+f.name, "%v is negative", f.v)
		}
	}
	if !utf8.ValidString(p.SpreadLabel) {
		return pathError("policy.spreadLabel", "not valid UTF-8")
	}
	return nil
}
