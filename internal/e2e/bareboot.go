package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ferrycluster/ferry/internal/image"
)

// bareMachineArgs is the plain QEMU command line of the benchmarks' bare
// references (boot and live migration) without its NIC and console: the
// same machine, accelerator, memory, CPUs, boot files and disk for both.
func bareMachineArgs(kernel, initrd, cmdline, disk string) []string {
	return []string{"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-machine", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-drive", "file=" + disk + ",format=raw,if=virtio"}
}

// BareBoot boots a copy of the demo image img with a plain QEMU command
// line (TCG, user-mode networking forwarding a loopback port to the
// guest's port 80) and returns the time until its HTTP service answers:
// the reference benchmarks compare ferry's boots and failovers with.
// kernel and initrd are the image's, from image.ExtractBoot; dir holds the
// copy.
func BareBoot(ctx context.Context, img, kernel, initrd, dir string) (time.Duration, error) {
	disk := filepath.Join(dir, "bare.img")
	os.Remove(disk)
	if _, err := image.SparseCopy(ctx, img, disk); err != nil {
		return 0, err
	}
	defer os.Remove(disk)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := append(bareMachineArgs(kernel, initrd, image.BootArgs("bench", "10.0.2.15/24", "10.0.2.2"), disk),
		"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:"+strconv.Itoa(port)+"-:80",
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		"-serial", "null")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	hc := &http.Client{Timeout: 250 * time.Millisecond}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("bare boot: no HTTP answer within 2 minutes")
}
