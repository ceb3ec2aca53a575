package main

// Running Ganeti's htools (3.0.2) on the generated files, and reading what
// they print.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// proc is one run of a tool as a subprocess.
type proc struct {
	Wall     time.Duration
	PeakMiB  float64 // the process's maximum resident set size
	Stdout   []byte
	Stderr   []byte
	TimedOut bool
}

// run runs a command with a time limit (0: none) and measures its wall time
// and peak memory. At the limit it gets SIGTERM, then SIGKILL 5 s later;
// whatever it printed until then is kept (hbal flushes every step line).
// A command that exits non-zero returns its output and an error.
func run(ctx context.Context, limit time.Duration, name string, args ...string) (proc, error) {
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	p := proc{Wall: time.Since(start), Stdout: out.Bytes(), Stderr: errb.Bytes()}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			p.PeakMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
		}
	}
	if limit > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		p.TimedOut = true
		return p, nil
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return p, fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return p, nil
}

// keyValues reads the KEY=value lines of htools' --machine-readable output
// (values may be single-quoted).
func keyValues(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok {
			kv[k] = strings.Trim(v, "'")
		}
	}
	return kv
}

// hcheckResult is hcheck's verdict on a file, without simulating a
// rebalance.
type hcheckResult struct {
	N1Fail int     // nodes not N+1 happy
	GN1    int     // nodes not directly evacuable (global N+1)
	Other  int     // conflicting tags, instances on offline nodes
	Score  float64 // Ganeti's cluster score
	proc
}

// hcheck runs `hcheck -t FILE --no-simulation --machine-readable`, with
// extra options if given.
func hcheck(ctx context.Context, file string, extra ...string) (hcheckResult, error) {
	p, err := run(ctx, 10*time.Minute, "hcheck", append([]string{"-t", file, "--no-simulation", "--machine-readable"}, extra...)...)
	r := hcheckResult{proc: p}
	if err != nil {
		return r, err
	}
	kv := keyValues(p.Stdout)
	if kv["HCHECK_OK"] != "1" {
		return r, fmt.Errorf("hcheck %s: no HCHECK_OK=1 in its output", file)
	}
	get := func(k string) int {
		v, _ := strconv.Atoi(kv[k])
		return v
	}
	r.N1Fail = get("HCHECK_INIT_CLUSTER_N1_FAIL")
	r.GN1 = get("HCHECK_INIT_CLUSTER_GN1_FAIL")
	r.Other = get("HCHECK_INIT_CLUSTER_CONFLICT_TAGS") + get("HCHECK_INIT_CLUSTER_OFFLINE_PRI") + get("HCHECK_INIT_CLUSTER_OFFLINE_SEC")
	r.Score, _ = strconv.ParseFloat(kv["HCHECK_INIT_GROUP_0_SCORE"], 64)
	return r, nil
}

// hspaceResult is how many instances of one size hspace fits.
type hspaceResult struct {
	Fit    int
	Reason string // HTS_ALLOC_FAIL_REASON: FAILMEM, FAILDISK, FAILCPU, FAILN1...
	proc
}

// standardAlloc is hspace's --standard-alloc argument: disk, memory, CPUs.
func standardAlloc(z scheduler.Resources) string {
	return fmt.Sprintf("%d,%d,%d", z.DiskMiB, z.MemMiB, z.CPUs)
}

// hspace runs `hspace -t FILE --disk-template=drbd
// --standard-alloc=DISK,MEM,CPU --machine-readable` and reads
// HTS_ALLOC_INSTANCES (the man page's ALLOC_COUNT is named so in 3.0.2).
// hspace also runs its tiered allocation (from the policy's largest
// instance down); 3.0.2 has no option to skip it, so its time is included.
func hspace(ctx context.Context, limit time.Duration, file string, z scheduler.Resources) (hspaceResult, error) {
	p, err := run(ctx, limit, "hspace", "-t", file, "--disk-template=drbd",
		"--standard-alloc="+standardAlloc(z), "--machine-readable")
	r := hspaceResult{proc: p}
	if err != nil || p.TimedOut {
		return r, err
	}
	kv := keyValues(p.Stdout)
	if kv["HTS_OK"] != "1" {
		return r, fmt.Errorf("hspace %s: no HTS_OK=1 in its output", file)
	}
	if v, ok := kv["HTS_ALLOC_INSTANCES"]; ok {
		r.Fit, err = strconv.Atoi(v)
	} else {
		var ini, fin int
		ini, err = strconv.Atoi(kv["HTS_INI_INST_CNT"])
		if err == nil {
			fin, err = strconv.Atoi(kv["HTS_FIN_INST_CNT"])
		}
		r.Fit = fin - ini
	}
	if err != nil {
		return r, fmt.Errorf("hspace %s: instance count: %w", file, err)
	}
	r.Reason = kv["HTS_ALLOC_FAIL_REASON"]
	return r, nil
}

// hbalStep is one line of hbal's solution:
//
//  1. inst-000004 node-00026:node-00007 => node-00008:node-00026  93.82484339 a=r:node-00008 f
type hbalStep struct {
	Instance                 string
	OldPrimary, OldSecondary string
	NewPrimary, NewSecondary string
	Score                    float64 // hbal's own score after the step
	Actions                  string  // f: failover (migrate), r:NODE: replace secondary
}

var hbalStepRE = regexp.MustCompile(`^\s*(\d+)\.\s+(\S+)\s+(\S+?):(\S*)\s+=>\s+(\S+?):(\S*)\s+([-+0-9.eE]+)\s+a=(.*)$`)

// hbalResult is hbal's plan as far as it got.
type hbalResult struct {
	Steps      []hbalStep
	InitScore  float64
	FinalScore float64 // hbal's score after its last step
	Complete   bool    // it printed "Solution length=", so it was not stopped
	proc
}

// parseHbal reads hbal's default output. hbal prints each step as it finds
// it and flushes stdout after each, so the output of a run stopped at a
// time limit holds every step found so far.
func parseHbal(b []byte) (hbalResult, error) {
	var r hbalResult
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if m := hbalStepRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			if n != len(r.Steps)+1 {
				return r, fmt.Errorf("hbal: step %d after %d steps", n, len(r.Steps))
			}
			sc, err := strconv.ParseFloat(m[7], 64)
			if err != nil {
				return r, fmt.Errorf("hbal: step %d: score %q", n, m[7])
			}
			r.Steps = append(r.Steps, hbalStep{Instance: m[2], OldPrimary: m[3], OldSecondary: m[4],
				NewPrimary: m[5], NewSecondary: m[6], Score: sc, Actions: strings.TrimSpace(m[8])})
			r.FinalScore = sc
			continue
		}
		if v, ok := strings.CutPrefix(line, "Initial score: "); ok {
			r.InitScore, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			if len(r.Steps) == 0 {
				r.FinalScore = r.InitScore
			}
		}
		if v, ok := strings.CutPrefix(line, "Solution length="); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n != len(r.Steps) {
				return r, fmt.Errorf("hbal: solution length %q but %d steps read", v, len(r.Steps))
			}
			r.Complete = true
		}
	}
	return r, nil
}

// hbal runs `hbal -t FILE` (default algorithm options, unless extra
// options are given) with a time limit and reads its plan.
func hbal(ctx context.Context, limit time.Duration, file string, extra ...string) (hbalResult, error) {
	p, err := run(ctx, limit, "hbal", append([]string{"-t", file}, extra...)...)
	if err != nil {
		return hbalResult{proc: p}, err
	}
	r, err := parseHbal(p.Stdout)
	r.proc = p
	if err == nil && !r.Complete && !p.TimedOut {
		err = fmt.Errorf("hbal %s: no \"Solution length=\" line, though it was not stopped", file)
	}
	return r, err
}

// moves turns hbal's steps into moves for scheduler.Evaluate (which reads
// only the instance and its new pair).
func (r hbalResult) moves() []scheduler.Move {
	ms := make([]scheduler.Move, len(r.Steps))
	for i, s := range r.Steps {
		ms[i] = scheduler.Move{Instance: s.Instance, Kind: scheduler.MoveOther,
			OldPrimary: s.OldPrimary, OldSecondary: s.OldSecondary,
			NewPrimary: s.NewPrimary, NewSecondary: s.NewSecondary}
	}
	return ms
}
