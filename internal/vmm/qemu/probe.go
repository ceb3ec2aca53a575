package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// kvmDevice is the KVM device node.
const kvmDevice = "/dev/kvm"

// probeBanner is what a Linux kernel prints first; seeing it proves that the
// guest ran its decompressor and entered the kernel proper, in long mode.
const probeBanner = "Linux version"

// probeMemoryMB is the probe guest's memory: a distribution kernel needs
// more than 64 MB just to decompress itself.
const probeMemoryMB = 256

// probeKVM returns nil if KVM runs guest code on this host, or says why
// not. It boots kernel under KVM, with the machine and CPU model of mc, and
// waits up to timeout for the kernel's banner on the serial port. A tiny
// hand-made ROM would answer faster but proves less: on some nested hosts
// KVM runs real-mode code and then hangs in the kernel.
func probeKVM(ctx context.Context, binary, kernel string, mc machineConfig, timeout time.Duration) error {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	f.Close()
	if kernel == "" {
		return errors.New("no kernel found to boot for the probe (set ProbeKernel, or Accel to kvm)")
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-machine", mc.machine, "-accel", "kvm",
	}
	if mc.cpu != "" {
		args = append(args, "-cpu", mc.cpu)
	}
	args = append(args,
		"-m", fmt.Sprint(probeMemoryMB), "-smp", "1",
		"-kernel", kernel,
		"-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
		"-no-reboot",
		"-serial", "stdio",
	)
	cmd := exec.CommandContext(pctx, binary, args...)
	cmd.Dir = "/"
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &tailWriter{max: 4096}
	cmd.Stderr = stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	found := scanFor(stdout, []byte(probeBanner))
	// The output ends when QEMU exits or when pctx ends and kills it.
	timedOut := pctx.Err() != nil
	cancel()
	_ = cmd.Wait()
	switch {
	case found:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case timedOut:
		msg := fmt.Sprintf("the guest printed nothing within %v: KVM accepts guests but does not run them", timeout)
		if s := lastLines(stderr.buf, 3); s != "" {
			msg += "; qemu said: " + strings.ReplaceAll(s, "\n", "; ")
		}
		return errors.New(msg)
	default:
		msg := "qemu exited before the guest printed anything"
		if cmd.ProcessState != nil {
			msg = fmt.Sprintf("qemu exited (%v) before the guest printed anything", cmd.ProcessState)
		}
		if s := lastLines(stderr.buf, 3); s != "" {
			msg += ": " + strings.ReplaceAll(s, "\n", "; ")
		}
		return errors.New(msg)
	}
}

// scanFor reads r until it has seen needle (true) or r ends (false).
func scanFor(r io.Reader, needle []byte) bool {
	var window []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		window = append(window, buf[:n]...)
		if bytes.Contains(window, needle) {
			return true
		}
		if keep := len(needle) - 1; len(window) > keep {
			window = append(window[:0], window[len(window)-keep:]...)
		}
		if err != nil {
			return false
		}
	}
}

// findProbeKernel returns the kernel the KVM probe boots by default: the
// running kernel's image if /boot has it, else the newest /boot/vmlinuz-*,
// else "".
func findProbeKernel() string {
	var candidates []string
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		candidates = append(candidates, "/boot/vmlinuz-"+strings.TrimSpace(string(rel)))
	}
	candidates = append(candidates, "/boot/vmlinuz", "/vmlinuz")
	found, _ := filepath.Glob("/boot/vmlinuz-*")
	slices.SortFunc(found, compareVersions)
	slices.Reverse(found)
	candidates = append(candidates, found...)
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			if f, err := os.Open(c); err == nil {
				f.Close()
				return c
			}
		}
	}
	return ""
}

// compareVersions orders strings with embedded numbers by value, so
// vmlinuz-6.10 sorts after vmlinuz-6.9.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := splitDigits(a)
			nb, rb := splitDigits(b)
			na, nb = strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func splitDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
	}
	return len(p), nil
}

// lastLines returns the last n non-empty lines of data, each cut to a
// readable length.
func lastLines(data []byte, n int) string {
	const maxLine = 300
	var lines []string
	for line := range strings.SplitSeq(strings.ReplaceAll(string(data), "\r", ""), "\n") {
		line = strings.TrimRight(line, " \t")
		if line == "" {
			continue
		}
		if len(line) > maxLine {
			line = line[:maxLine] + "..."
		}
		lines = append(lines, line)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
