// Command disk benchmarks ferry's NBD disk path against qemu-nbd, side by
// side in one run on the same file system, with fio's nbd engine: 4 KiB
// random writes at queue depth 16, 1 MiB sequential writes, 4 KiB random
// reads. Modes: (a) qemu-nbd serving the file, the reference; (b) ferry's
// NBD server without a peer; (c) ferry replicating synchronously to a peer
// in another network namespace over veth (when built with the replication
// package; see modeRepl). It prints medians and ratios to qemu-nbd.
//
// It also runs itself as the servers: `disk serve FILE SOCKET` serves a
// file with ferry's NBD server until killed.
//
// For tuning, -profile DIR saves CPU, block and mutex profiles of every
// server process during every fio run (DIR/MODE-WORKLOAD-ROLE-KIND.pprof);
// -modes and -workloads restrict a run to some modes and workloads.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferrycluster/ferry/internal/disk/nbd"
)

const fileSize = 512 << 20

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "serve-primary" {
		if err := servePrimary(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "serve-primary:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "secondary" {
		if err := serveSecondary(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "secondary:", err)
			os.Exit(1)
		}
		return
	}
	reps := flag.Int("reps", 5, "repetitions of each workload")
	kills := flag.Int("kills", 100, "process kill points of the crash test, plus a fifth as many whole-host ones (0 skips it)")
	secs := flag.Int("runtime", 5, "seconds per fio run")
	flag.StringVar(&profileDir, "profile", "", "save server `dir`ectory profiles of every fio run in dir (tuning)")
	onlyModes := flag.String("modes", "", "comma-separated modes to run (default all; tuning)")
	onlyWorkloads := flag.String("workloads", "", "comma-separated workloads to run (default all; tuning)")
	flag.Parse()
	if *onlyModes != "" {
		selModes = strings.Split(*onlyModes, ",")
	}
	if *onlyWorkloads != "" {
		ws := strings.Split(*onlyWorkloads, ",")
		workloads = slices.DeleteFunc(workloads, func(w workload) bool { return !slices.Contains(ws, w.name) })
	}
	if err := run(*reps, *secs, *kills); err != nil {
		fmt.Fprintln(os.Stderr, "bench/disk:", err)
		os.Exit(1)
	}
}

// Tuning switches, set by flags (see the package comment).
var (
	profileDir string
	selModes   []string // nil: all
)

// pprofEnv names the environment variable that tells a server process to
// serve net/http/pprof on a unix socket at its value.
const pprofEnv = "FERRY_BENCH_PPROF"

// withPprof makes cmd serve profiles at sock when profiling is on; sock is
// a path, so it is reachable from the parent across network namespaces.
func withPprof(cmd *exec.Cmd, sock string) *exec.Cmd {
	if profileDir != "" {
		os.Remove(sock)
		cmd.Env = append(os.Environ(), pprofEnv+"="+sock)
	}
	return cmd
}

// startPprof serves net/http/pprof on the socket named by pprofEnv, if
// set, with block and mutex profiling on.
func startPprof() {
	sock := os.Getenv(pprofEnv)
	if sock == "" {
		return
	}
	runtime.SetBlockProfileRate(10000) // one sample per 10 µs blocked
	runtime.SetMutexProfileFraction(10)
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pprof:", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = http.Serve(l, mux) }()
}

// fetchProfiles saves CPU, block and mutex profiles of secs seconds from
// every server of mode (sockets DIR/MODE-ROLE.pprof.sock) into
// DIR/MODE-WORKLOAD-ROLE-KIND.pprof. It returns when they are saved.
func fetchProfiles(mode, wl string, secs int) {
	socks, _ := filepath.Glob(filepath.Join(profileDir, mode+"-*.pprof.sock"))
	var wg sync.WaitGroup
	for _, sock := range socks {
		role := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(sock), mode+"-"), ".pprof.sock")
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
		for _, kind := range []string{"profile", "block", "mutex"} {
			wg.Go(func() {
				resp, err := c.Get(fmt.Sprintf("http://x/debug/pprof/%s?seconds=%d", kind, secs))
				if err != nil {
					fmt.Fprintln(os.Stderr, "profile:", err)
					return
				}
				defer resp.Body.Close()
				if kind == "profile" {
					kind = "cpu"
				}
				f, err := os.Create(filepath.Join(profileDir, fmt.Sprintf("%s-%s-%s-%s.pprof", mode, wl, role, kind)))
				if err != nil {
					fmt.Fprintln(os.Stderr, "profile:", err)
					return
				}
				defer f.Close()
				_, _ = io.Copy(f, resp.Body)
			})
		}
	}
	wg.Wait()
}

// serve runs ferry's NBD server over one file until SIGTERM.
func serve(file, sock string) error {
	startPprof()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	be, err := nbd.NewFileBackend(f)
	if err != nil {
		return err
	}
	return serveBackend(be, sock)
}

func serveBackend(be nbd.Backend, sock string) error {
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := nbd.NewServer(nbd.Config{Exports: map[string]nbd.Export{"": {Backend: be}}, MinBlock: 512})
	return srv.Serve(ctx, l)
}

type workload struct {
	name, rw, bs string
	depth        int
}

var workloads = []workload{
	{"randwrite", "randwrite", "4k", 16},
	{"seqwrite", "write", "1M", 4},
	{"randread", "randread", "4k", 16},
}

// server starts one mode's server for file and returns its socket and a
// stop function.
type server func(file, sock string) (stop func(), err error)

func run(reps, secs, kills int) error {
	dir, err := os.MkdirTemp("/var/tmp", "ferry-bench-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	modes := []struct {
		name  string
		start server
	}{
		{"qemu-nbd", func(file, sock string) (func(), error) {
			return startProc(exec.Command("qemu-nbd", "-f", "raw", "--cache=writeback", "-k", sock, "-t", "-e", "4", file), sock)
		}},
		{"ferry", func(file, sock string) (func(), error) {
			return startProc(withPprof(exec.Command(self, "serve", file, sock),
				filepath.Join(profileDir, "ferry-server.pprof.sock")), sock)
		}},
	}
	if repl := replMode(self, dir); repl != nil {
		defer repl.cleanup()
		modes = append(modes, struct {
			name  string
			start server
		}{"ferry-repl", repl.start})
	}
	if selModes != nil {
		modes = slices.DeleteFunc(modes, func(m struct {
			name  string
			start server
		}) bool {
			return !slices.Contains(selModes, m.name)
		})
	}
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return err
		}
	}
	crash := crashResult{acked: -1, lost: -1, hostAcked: -1, hostLost: -1}
	if kills > 0 {
		if crash, err = crashPoints(self, dir, kills, hostKillPoints(kills)); err != nil {
			return fmt.Errorf("crash test: %w", err)
		}
	}
	results := map[string]map[string][]float64{}
	for rep := 0; rep < reps; rep++ {
		for _, m := range modes {
			file := filepath.Join(dir, m.name+".img")
			os.Remove(file)
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				return err
			}
			if err := os.Truncate(file, fileSize); err != nil {
				return err
			}
			sock := filepath.Join(dir, m.name+".sock")
			stop, err := m.start(file, sock)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			uri := "nbd+unix:///?socket=" + sock
			// Fill the file so reads read data, not holes.
			if _, err := fio(uri, workload{"fill", "write", "1M", 4}, 0, dir); err != nil {
				stop()
				return fmt.Errorf("%s fill: %w", m.name, err)
			}
			for _, w := range workloads {
				var prof sync.WaitGroup
				if profileDir != "" && secs > 1 {
					prof.Go(func() { fetchProfiles(m.name, w.name, secs-1) })
				}
				v, err := fio(uri, w, secs, dir)
				prof.Wait()
				if err != nil {
					stop()
					return fmt.Errorf("%s %s: %w", m.name, w.name, err)
				}
				if results[m.name] == nil {
					results[m.name] = map[string][]float64{}
				}
				results[m.name][w.name] = append(results[m.name][w.name], v)
				fmt.Printf("rep %d %-10s %-9s %10.1f %s\n", rep+1, m.name, w.name, v, unit(w))
			}
			stop()
		}
	}
	fmt.Println()
	line := fmt.Sprintf("RESULT acked_writes=%d lost_acked_writes=%d host_kill_acked_writes=%d host_kill_lost_acked_writes=%d",
		crash.acked, crash.lost, crash.hostAcked, crash.hostLost)
	for _, w := range workloads {
		ref := median(results["qemu-nbd"][w.name])
		for _, m := range modes {
			med := median(results[m.name][w.name])
			fmt.Printf("median %-10s %-9s %10.1f %s  (%.2fx qemu-nbd)\n", m.name, w.name, med, unit(w), med/ref)
		}
		line += fmt.Sprintf(" ratio_local_%s=%.2f", w.name, median(results["ferry"][w.name])/ref)
		if _, ok := results["ferry-repl"]; ok {
			line += fmt.Sprintf(" ratio_repl_%s=%.2f", w.name, median(results["ferry-repl"][w.name])/ref)
		}
		line += fmt.Sprintf(" qemunbd_%s=%.0f", w.name, ref)
	}
	fmt.Println(line + " reps=" + strconv.Itoa(reps))
	return nil
}

func unit(w workload) string {
	if w.bs == "1M" {
		return "MiB/s"
	}
	return "IOPS"
}

// fio runs one workload against uri and returns IOPS (4k) or MiB/s (1M).
// secs 0 means one pass over the file (used to fill it).
func fio(uri string, w workload, secs int, dir string) (float64, error) {
	out := filepath.Join(dir, "fio.json")
	args := []string{"--name=" + w.name, "--ioengine=nbd", "--uri=" + uri, "--rw=" + w.rw, "--bs=" + w.bs,
		"--iodepth=" + strconv.Itoa(w.depth), "--size=" + strconv.Itoa(fileSize), "--output-format=json", "--output=" + out}
	if secs > 0 {
		args = append(args, "--time_based", "--runtime="+strconv.Itoa(secs), "--randrepeat=0")
	}
	if b, err := exec.Command("fio", args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("fio: %w: %s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	var res struct {
		Jobs []struct {
			Read  struct{ IOPS, BW float64 } `json:"read"`
			Write struct{ IOPS, BW float64 } `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(data, &res); err != nil || len(res.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	j := res.Jobs[0]
	io := j.Write
	if w.rw == "randread" {
		io = j.Read
	}
	if w.bs == "1M" {
		return io.BW / 1024, nil // KiB/s -> MiB/s
	}
	return io.IOPS, nil
}

// startProc starts a server process and waits for its socket.
func startProc(cmd *exec.Cmd, sock string) (func(), error) {
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return stop, nil
		}
	}
	stop()
	return nil, fmt.Errorf("%s: socket %s did not appear", cmd.Path, sock)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
