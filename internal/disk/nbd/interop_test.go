package nbd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run real NBD clients against the server: nbdinfo and nbdcopy
// (package libnbd-bin), qemu-io, qemu-img and qemu-nbd (qemu-utils). They
// skip when a tool is missing, except with CI=true, where scripts/setup has
// installed them and a missing tool is a failure.

// requireOrSkip skips the test with reason, or fails it when CI=true.
func requireOrSkip(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", reason)
	}
	t.Skip(reason)
}

// needTool returns the path of an installed program, or skips the test.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		requireOrSkip(t, fmt.Sprintf("%s is not installed (Debian package %s)", name, pkg))
	}
	return path
}

// runTool runs a program for at most timeout and returns its combined
// output; it fails the test if the program fails.
func runTool(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runToolErr(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runToolErr(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// interopServer serves a sparse image file of size bytes as export "disk"
// (read-write, described) and "ro" (read-only).
type interopServer struct {
	*testServer
	img string
}

func newInteropServer(t testing.TB, size int64, cfg Config) *interopServer {
	t.Helper()
	img := newImage(t, size)
	b, err := OpenFileBackend(img, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg.Exports = map[string]Export{
		"disk": {Backend: b, Description: "ferry test disk"},
		"ro":   {Backend: b, ReadOnly: true},
	}
	return &interopServer{testServer: startServer(t, cfg), img: img}
}

// uri returns the NBD URI of an export.
func (s *interopServer) uri(export string) string {
	return "nbd+unix:///" + export + "?socket=" + s.sock
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// writeSource writes a file of size bytes: random data in some ranges,
// holes elsewhere, so copies exercise both writes and zeroes.
func writeSource(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += 1 << 20 {
		if rng.IntN(3) == 0 {
			continue // a hole
		}
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInteropNbdinfo(t *testing.T) {
	t.Parallel()
	nbdinfo := needTool(t, "nbdinfo", "libnbd-bin")
	s := newInteropServer(t, 64<<20, Config{MinBlock: 512})

	type exportJSON struct {
		Name         string `json:"export-name"`
		Description  string `json:"description"`
		Size         int64  `json:"export-size"`
		ReadOnly     bool   `json:"is_read_only"`
		CanFlush     bool   `json:"can_flush"`
		CanFUA       bool   `json:"can_fua"`
		CanTrim      bool   `json:"can_trim"`
		CanZero      bool   `json:"can_zero"`
		CanMultiConn bool   `json:"can_multi_conn"`
		CanFastZero  bool   `json:"can_fast_zero"`
		MinBlock     int64  `json:"block_size_minimum"`
		PrefBlock    int64  `json:"block_size_preferred"`
		MaxBlock     int64  `json:"block_size_maximum"`
	}
	type infoJSON struct {
		Protocol   string       `json:"protocol"`
		Structured bool         `json:"structured"`
		Exports    []exportJSON `json:"exports"`
	}
	rw := exportJSON{Name: "disk", Description: "ferry test disk", Size: 64 << 20, CanFlush: true, CanFUA: true,
		CanTrim: true, CanZero: true, CanMultiConn: true, MinBlock: 512, PrefBlock: 4096, MaxBlock: 32 << 20}
	ro := exportJSON{Name: "ro", Size: 64 << 20, ReadOnly: true, CanFlush: true, CanMultiConn: true,
		MinBlock: 512, PrefBlock: 4096, MaxBlock: 32 << 20}
	tests := []struct {
		name string
		args []string
		want []exportJSON
	}{
		{name: "read-write export", args: []string{"--json", s.uri("disk")}, want: []exportJSON{rw}},
		{name: "read-only export", args: []string{"--json", s.uri("ro")}, want: []exportJSON{{
			Name: ro.Name, Size: ro.Size, ReadOnly: true, CanFlush: true, CanMultiConn: true,
			MinBlock: 512, PrefBlock: 4096, MaxBlock: 32 << 20}}},
		{name: "list", args: []string{"--list", "--json", "nbd+unix://?socket=" + s.sock}, want: []exportJSON{rw, ro}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := runTool(t, 30*time.Second, nbdinfo, tc.args...)
			var got infoJSON
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("nbdinfo %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
			if got.Protocol != "newstyle-fixed" || got.Structured {
				t.Errorf("nbdinfo protocol %q structured %v, want newstyle-fixed without structured replies", got.Protocol, got.Structured)
			}
			if fmt.Sprint(got.Exports) != fmt.Sprint(tc.want) {
				t.Errorf("nbdinfo %s exports:\n got %+v\nwant %+v", strings.Join(tc.args, " "), got.Exports, tc.want)
			}
		})
	}
	if _, err := runToolErr(t, 30*time.Second, nbdinfo, "--json", s.uri("nope")); err == nil {
		t.Errorf("nbdinfo on an unknown export succeeded")
	}
}

func TestInteropQemuIo(t *testing.T) {
	t.Parallel()
	qemuIo := needTool(t, "qemu-io", "qemu-utils")
	const mib = 1 << 20
	fill := func(b []byte, off, n int, v byte) {
		for i := off; i < off+n; i++ {
			b[i] = v
		}
	}
	tests := []struct {
		name     string
		minBlock uint32
		cmds     []string
		want     func(img []byte) // builds the expected image from zeroes
	}{
		{
			name: "write read flush",
			cmds: []string{"write -P 0xab 0 1M", "read -P 0xab 0 1M", "flush"},
			want: func(b []byte) { fill(b, 0, mib, 0xab) },
		},
		{
			name: "discard",
			cmds: []string{"write -P 0xcd 0 1M", "discard 0 64k", "read -P 0 0 64k", "read -P 0xcd 64k 960k", "flush"},
			want: func(b []byte) { fill(b, 64<<10, mib-64<<10, 0xcd) },
		},
		{
			name: "write zeroes",
			cmds: []string{"write -P 0xcd 0 3M", "write -z 0 1M", "write -z -u 1M 1M", "read -P 0 0 2M", "read -P 0xcd 2M 1M"},
			want: func(b []byte) { fill(b, 2*mib, mib, 0xcd) },
		},
		{
			name: "FUA writes",
			cmds: []string{"write -f -P 0x11 3M 4k", "write -f -z 3M 512", "read -P 0 3M 512", "read -P 0x11 3146240 3584"},
			want: func(b []byte) { fill(b, 3*mib+512, 4096-512, 0x11) },
		},
		{
			name:     "unaligned with 512-byte blocks",
			minBlock: 512,
			cmds:     []string{"write -P 0x22 1 513", "read -P 0x22 1 513", "read -P 0 0 1", "read -P 0 514 510"},
			want:     func(b []byte) { fill(b, 1, 513, 0x22) },
		},
		{
			name: "pipelined aio",
			cmds: []string{
				"aio_write -P 0x31 0 256k", "aio_write -P 0x32 256k 256k", "aio_write -P 0x33 512k 256k",
				"aio_write -P 0x34 768k 256k", "aio_write -z 1M 256k", "aio_flush",
				"aio_read -P 0x31 0 256k", "aio_read -P 0x34 768k 256k", "aio_flush",
			},
			want: func(b []byte) {
				for i := range 4 {
					fill(b, i*256<<10, 256<<10, byte(0x31+i))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newInteropServer(t, 4*mib, Config{MinBlock: tc.minBlock})
			args := []string{"-f", "raw"}
			for _, c := range tc.cmds {
				args = append(args, "-c", c)
			}
			out := runTool(t, time.Minute, qemuIo, append(args, s.uri("disk"))...)
			if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
				t.Fatalf("qemu-io %s:\n%s", strings.Join(args, " "), out)
			}
			got, err := os.ReadFile(s.img)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 4*mib)
			tc.want(want)
			if i := firstDiff(got, want); i >= 0 {
				t.Errorf("image differs from the expected contents at byte %d: got %#x, want %#x", i, got[i], want[i])
			}
			st := s.Stats()
			if st.Commands.Read.Errors+st.Commands.Write.Errors+st.Commands.WriteZeroes.Errors+st.Commands.Trim.Errors != 0 {
				t.Errorf("server counted errors: %+v", st.Commands)
			}
		})
	}

	t.Run("read-only export", func(t *testing.T) {
		t.Parallel()
		s := newInteropServer(t, 4*mib, Config{})
		out, err := runToolErr(t, time.Minute, qemuIo, "-f", "raw", "-c", "write -P 1 0 512", s.uri("ro"))
		if err == nil {
			t.Errorf("qemu-io wrote to the read-only export:\n%s", out)
		}
		out = runTool(t, time.Minute, qemuIo, "-r", "-f", "raw", "-c", "read -P 0 0 1M", s.uri("ro"))
		if strings.Contains(out, "failed") {
			t.Errorf("qemu-io read of the read-only export:\n%s", out)
		}
	})
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestInteropQemuImgConvert(t *testing.T) {
	t.Parallel()
	qemuImg := needTool(t, "qemu-img", "qemu-utils")
	const size = 32 << 20
	s := newInteropServer(t, size, Config{})
	src := filepath.Join(t.TempDir(), "src.img")
	writeSource(t, src, size, 1)
	// Dirty the export first, so the holes of the source must be written
	// as zeroes.
	if err := os.WriteFile(s.img, bytes.Repeat([]byte{0xee}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, 2*time.Minute, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", src, s.uri("disk"))
	if got, want := fileSum(t, s.img), fileSum(t, src); got != want {
		t.Errorf("sha256 of the export after qemu-img convert = %s, want %s (the source's)", got, want)
	}
	out := runTool(t, 2*time.Minute, qemuImg, "compare", "-f", "raw", "-F", "raw", src, s.uri("disk"))
	if !strings.Contains(out, "Images are identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	if st := s.Stats().Commands; st.Write.Requests == 0 || st.WriteZeroes.Requests == 0 {
		t.Errorf("qemu-img convert sent %d writes and %d write-zeroes, want both", st.Write.Requests, st.WriteZeroes.Requests)
	}
}

func TestInteropNbdcopy(t *testing.T) {
	t.Parallel()
	nbdcopy := needTool(t, "nbdcopy", "libnbd-bin")
	const size = 48 << 20
	s := newInteropServer(t, size, Config{})
	dir := t.TempDir()
	src, back := filepath.Join(dir, "src.img"), filepath.Join(dir, "back.img")
	writeSource(t, src, size, 2)
	if err := os.WriteFile(s.img, bytes.Repeat([]byte{0xee}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, 2*time.Minute, nbdcopy, "--connections=4", "--threads=4", "--requests=16", "--flush", src, s.uri("disk"))
	want := fileSum(t, src)
	if got := fileSum(t, s.img); got != want {
		t.Errorf("sha256 of the export after nbdcopy = %s, want %s", got, want)
	}
	// CAN_MULTI_CONN lets nbdcopy use all four connections (it uses at
	// most one per thread).
	if st := s.Stats(); st.Accepted < 4 {
		t.Errorf("nbdcopy opened %d connections, want at least 4 (multi-conn)", st.Accepted)
	}
	runTool(t, 2*time.Minute, nbdcopy, "--connections=4", "--threads=4", s.uri("disk"), back)
	if got := fileSum(t, back); got != want {
		t.Errorf("sha256 of the copy read back with nbdcopy = %s, want %s", got, want)
	}
}

// TestInteropConcurrentQemuIo runs several qemu-io processes at once, each
// pipelining writes to its own region, then checks every region.
func TestInteropConcurrentQemuIo(t *testing.T) {
	t.Parallel()
	qemuIo := needTool(t, "qemu-io", "qemu-utils")
	const clients, region = 4, 4 << 20
	s := newInteropServer(t, clients*region, Config{MinBlock: 512})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			args := []string{"-f", "raw"}
			base := i * region
			for j := range 16 {
				args = append(args, "-c", fmt.Sprintf("aio_write -P %#x %d 256k", 0x40+i, base+j*256<<10))
			}
			args = append(args, "-c", "aio_flush", "-c", fmt.Sprintf("read -P %#x %d %d", 0x40+i, base, region), s.uri("disk"))
			out, err := runToolErr(t, 2*time.Minute, qemuIo, args...)
			if err != nil || strings.Contains(out, "failed") {
				t.Errorf("qemu-io client %d: %v\n%s", i, err, out)
			}
		})
	}
	wg.Wait()
	img, err := os.ReadFile(s.img)
	if err != nil {
		t.Fatal(err)
	}
	for i := range clients {
		if !bytes.Equal(img[i*region:(i+1)*region], bytes.Repeat([]byte{byte(0x40 + i)}, region)) {
			t.Errorf("region %d of the image is wrong", i)
		}
	}
	if st := s.Stats(); st.Accepted != clients || st.Commands.Write.Requests != clients*16 {
		t.Errorf("Stats() = %+v, want %d connections and %d writes", st, clients, clients*16)
	}
}

var benchRun = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// TestInteropQemuImgBench runs qemu-img bench (4 KiB requests, 16 in
// parallel) against the server, and against qemu-nbd on the same kind of
// file for comparison, and logs both. It checks only that the runs
// succeed: timings depend on the machine.
func TestInteropQemuImgBench(t *testing.T) {
	if testing.Short() {
		t.Skip("a benchmark (about 8 s); skipped with -short")
	}
	qemuImg := needTool(t, "qemu-img", "qemu-utils")
	const count = 20000
	const size = 256 << 20
	bench := func(t *testing.T, uri string, write bool) float64 {
		args := []string{"bench", "-d", "16", "-s", "4096", "-c", fmt.Sprint(count), "-f", "raw"}
		if write {
			args = append(args, "-w")
		}
		out := runTool(t, 5*time.Minute, qemuImg, append(args, uri)...)
		m := benchRun.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("qemu-img bench printed no run time:\n%s", out)
		}
		var secs float64
		fmt.Sscan(m[1], &secs)
		return secs
	}
	s := newInteropServer(t, size, Config{})
	w := bench(t, s.uri("disk"), true)
	r := bench(t, s.uri("disk"), false)
	t.Logf("ferry: %d sequential 4 KiB writes QD16 in %.3f s (%.0f IOPS), reads in %.3f s (%.0f IOPS)",
		count, w, count/w, r, count/r)
	if st := s.Stats().Commands; st.Write.Requests != count || st.Read.Requests < count {
		t.Errorf("server saw %d writes and %d reads, want %d each", st.Write.Requests, st.Read.Requests, count)
	}

	qemuNbd, err := exec.LookPath("qemu-nbd")
	if err != nil {
		t.Logf("qemu-nbd is not installed; no comparison")
		return
	}
	for _, opts := range [][]string{nil, {"--cache=none", "--aio=native"}} {
		sock := startQemuNbd(t, qemuNbd, newImage(t, size), opts...)
		q := bench(t, "nbd+unix:///disk?socket="+sock, true)
		t.Logf("qemu-nbd %s: %d sequential 4 KiB writes QD16 in %.3f s (%.0f IOPS); ferry/qemu-nbd time ratio %.2f",
			strings.Join(opts, " "), count, q, count/q, w/q)
	}
}

// startQemuNbd serves img as export "disk" with qemu-nbd for one client,
// and returns the socket path.
func startQemuNbd(t *testing.T, qemuNbd, img string, opts ...string) string {
	t.Helper()
	dir := t.TempDir()
	sock, pidFile := filepath.Join(dir, "q.sock"), filepath.Join(dir, "q.pid")
	args := append([]string{"--fork", "--pid-file", pidFile, "-f", "raw", "-x", "disk", "-k", sock}, opts...)
	runTool(t, 30*time.Second, qemuNbd, append(args, img)...)
	t.Cleanup(func() {
		// qemu-nbd exits after its one client; stop it if it did not.
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return
		}
		var pid int
		if _, err := fmt.Sscan(string(data), &pid); err != nil || pid <= 1 {
			return
		}
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmdline, []byte(sock)) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	return sock
}
