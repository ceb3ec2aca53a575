package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
	"github.com/ferrycluster/ferry/internal/image"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// demoImage builds the demo image once per test binary.
var demoImage = struct {
	once sync.Once
	path string
	err  error
}{}

func buildDemo(t *testing.T) string {
	t.Helper()
	demoImage.once.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-e2e-demo-")
		if err != nil {
			demoImage.err = err
			return
		}
		demoImage.path = filepath.Join(dir, "demo.img")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, demoImage.err = image.BuildDemo(ctx, image.DemoOptions{Out: demoImage.path})
	})
	if demoImage.err != nil {
		t.Fatalf("build demo image: %v", demoImage.err)
	}
	return demoImage.path
}

// startVMs starts a cluster with real VMs, or skips (fails under CI=true)
// where that cannot run.
func startVMs(t *testing.T, hosts int) *e2e.Cluster {
	t.Helper()
	return startVMsWith(t, e2e.Options{Hosts: hosts})
}

// startVMsWith is startVMs with more options (Binary, Dir and WithClient
// are set here).
func startVMsWith(t *testing.T, opts e2e.Options) *e2e.Cluster {
	t.Helper()
	if err := testcluster.Preflight(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-system-x86_64 missing; scripts/setup installs it")
		}
		t.Skip("qemu-system-x86_64 missing: run scripts/setup")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts.Binary, opts.Dir, opts.WithClient = ferryBin, t.TempDir(), true
	c, err := e2e.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster output:\n%s", c.Diagnostics())
		}
		c.Close()
	})
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestVMMoveWithSharedStorage boots a real guest, reaches it from the
// client namespace, moves it to the other host (shared storage: stop,
// start --on), and reaches the same IP again: same disk (the counter went
// on), one more boot.
func TestVMMoveWithSharedStorage(t *testing.T) {
	c := startVMs(t, 2)
	ctx := context.Background()
	must(t, c.UploadImage(ctx, "demo", buildDemo(t)))
	spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 512 << 20, Image: "demo",
		Storage: api.StorageShared + c.Shared, Probe: &api.Probe{Type: "http", Ports: []int{80}}}
	in, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: "web-1", Spec: spec})
	must(t, err)
	ip := in.Spec.IP
	get := func() *api.Instance {
		in, err := c.Client.GetInstance(ctx, "web-1")
		if err != nil {
			return &api.Instance{}
		}
		return in
	}
	must(t, c.Wait(ctx, 3*time.Minute, "web-1 serving", func() bool { return get().Status.Serving }))
	var first, last e2e.DemoAnswer
	must(t, c.Wait(ctx, 30*time.Second, "web-1 answers the client", func() bool {
		first, err = c.Get(ctx, ip)
		return err == nil && first.Counter >= 2
	}))
	if first.Name != "web-1" || first.Boots != 1 {
		t.Fatalf("first answer = %+v, want web-1 boot 1", first)
	}
	from := get().Status.Node
	to := e2e.NodeName(0)
	if from == to {
		to = e2e.NodeName(1)
	}
	_, err = c.Client.StopInstance(ctx, "web-1", "")
	must(t, err)
	must(t, c.Wait(ctx, time.Minute, "web-1 Stopped", func() bool { return get().Status.Phase == api.PhaseStopped }))
	_, err = c.Client.StartInstanceOn(ctx, "web-1", to)
	must(t, err)
	must(t, c.Wait(ctx, 3*time.Minute, "web-1 serving on "+to, func() bool {
		got := get()
		return got.Status.Node == to && got.Status.Serving
	}))
	must(t, c.Wait(ctx, 30*time.Second, "web-1 answers at the same IP", func() bool {
		last, err = c.Get(ctx, ip)
		return err == nil
	}))
	if last.Name != "web-1" || last.Boots != first.Boots+1 {
		t.Fatalf("after the move: %+v, want web-1 with boots %d", last, first.Boots+1)
	}
	if last.Counter <= first.Counter {
		t.Fatalf("counter went from %d to %d across the move: data lost", first.Counter, last.Counter)
	}
	if got := get(); got.Status.Boots != 2 || got.Spec.IP != ip {
		t.Fatalf("status after move: boots %d ip %s", got.Status.Boots, got.Spec.IP)
	}
	t.Logf("moved web-1 from %s to %s; counter %d -> %d, boots %d -> %d", from, to, first.Counter, last.Counter, first.Boots, last.Boots)

	// The agent is killed and restarted: the VM keeps running (no reboot)
	// and the restarted agent adopts it.
	host := c.Hosts.Hosts()[0]
	if to == e2e.NodeName(1) {
		host = c.Hosts.Hosts()[1]
	}
	c.Agent(to).Kill()
	must(t, c.StartAgent(ctx, host, to, ""))
	must(t, c.WaitReady(ctx, 2, time.Minute))
	before := last
	must(t, c.Wait(ctx, 30*time.Second, "counter moving after the agent restart", func() bool {
		last, err = c.Get(ctx, ip)
		return err == nil && last.Counter > before.Counter+1
	}))
	if last.Boots != before.Boots {
		t.Fatalf("the guest rebooted when its agent restarted: boots %d -> %d", before.Boots, last.Boots)
	}
	must(t, c.Wait(ctx, 30*time.Second, "web-1 still Running", func() bool {
		got := get()
		return got.Status.Phase == api.PhaseRunning && got.Status.Boots == 2 && got.Status.Serving
	}))

	// QEMU is killed under the guest: the agent sees the crash, reports
	// it, and starts the VM again (restart policy "always").
	killQEMU(t, host)
	must(t, c.Wait(ctx, 2*time.Minute, "web-1 restarted after the crash", func() bool {
		got := get()
		return got.Status.Boots == 3 && got.Status.Phase == api.PhaseRunning && got.Status.Serving
	}))
	evs, err := c.Client.ListEvents(ctx, 200)
	must(t, err)
	crashed := false
	for _, e := range evs.Items {
		if e.Name == "web-1" && e.Type == string(api.PhaseFailed) {
			crashed = true
		}
	}
	if !crashed {
		t.Fatal("no Failed event recorded for the crash")
	}

	// Removing the instance leaves no QEMU behind on its host.
	_, _, err = c.Client.DeleteInstance(ctx, "web-1", "", false)
	must(t, err)
	must(t, c.Wait(ctx, time.Minute, "web-1 gone", func() bool {
		_, err := c.Client.GetInstance(ctx, "web-1")
		return err != nil
	}))
	if n := qemuProcesses(t, host); n != 0 {
		t.Fatalf("%d QEMU processes left on %s after rm", n, to)
	}
	if _, err := os.Stat(filepath.Join(c.Shared, "web-1.img")); !os.IsNotExist(err) {
		t.Fatalf("disk of the removed instance is still there: %v", err)
	}
}

// killQEMU kills -9 every QEMU process in a host's namespace.
func killQEMU(t *testing.T, h *testcluster.Host) {
	t.Helper()
	pids, err := e2e.QEMUPids(h)
	must(t, err)
	for _, pid := range pids {
		must(t, syscall.Kill(pid, syscall.SIGKILL))
	}
}

// qemuProcesses counts QEMU processes in a host's namespace.
func qemuProcesses(t *testing.T, h *testcluster.Host) int {
	t.Helper()
	pids, err := e2e.QEMUPids(h)
	must(t, err)
	return len(pids)
}

// TestVMImageThatDoesNotBoot gives an instance an image whose kernel is
// garbage: it must go Failed with the reason, not hang.
func TestVMImageThatDoesNotBoot(t *testing.T) {
	c := startVMs(t, 1)
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	must(t, os.MkdirAll(filepath.Join(root, "boot"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "boot", "vmlinuz"), bytes.Repeat([]byte("not a kernel "), 1000), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "boot", "initrd.img"), bytes.Repeat([]byte("x"), 1000), 0o644))
	img := filepath.Join(dir, "broken.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	must(t, c.UploadImage(ctx, "broken", img))
	spec := api.InstanceSpec{CPUs: 1, Memory: 128 << 20, Disk: 64 << 20, Image: "broken"}
	_, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: "bad", Spec: spec})
	must(t, err)
	var in *api.Instance
	must(t, c.Wait(ctx, 90*time.Second, "bad Failed with a reason", func() bool {
		in, err = c.Client.GetInstance(ctx, "bad")
		return err == nil && in.Status.Phase == api.PhaseFailed && in.Status.LastError != ""
	}))
	t.Logf("failed as expected: %s", in.Status.LastError)
}
