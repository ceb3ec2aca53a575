// Command boot measures how long an instance takes from `ferry instance
// start` to its HTTP service answering, side by side with a bare
// qemu-system-x86_64 command line booting the same image the same way
// (direct kernel boot, same kernel, initrd, memory and CPUs), alternating
// the two so machine noise hits both alike. It prints medians and the
// ratio. Needs root (simulated hosts are network namespaces).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/e2e"
	"github.com/ferrycluster/ferry/internal/image"
)

func main() {
	bin := flag.String("ferry", "bin/ferry", "ferry binary")
	runs := flag.Int("runs", 5, "boots of each kind")
	flag.Parse()
	if err := run(*bin, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/boot:", err)
		os.Exit(1)
	}
}

func run(bin string, runs int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ferry-bench-boot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "demo.img")
	if _, err := image.BuildDemo(ctx, image.DemoOptions{Out: img}); err != nil {
		return err
	}
	c, err := e2e.Start(ctx, e2e.Options{Binary: bin, Hosts: 1, Dir: filepath.Join(dir, "cluster")})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.UploadImage(ctx, "demo", img); err != nil {
		return err
	}
	spec := api.InstanceSpec{CPUs: 1, Memory: 256 << 20, Disk: 256 << 20, Image: "demo", State: api.DesiredStopped,
		Probe: &api.Probe{Type: "http", Ports: []int{80}}}
	in, err := c.Client.CreateInstance(ctx, api.CreateInstanceRequest{Name: "bench", Spec: spec})
	if err != nil {
		return err
	}
	// Wait for the disk's host, then run the bare boots from the same image.
	if err := c.Wait(ctx, time.Minute, "placed", func() bool {
		got, err := c.Client.GetInstance(ctx, "bench")
		return err == nil && got.Status.Phase == api.PhaseStopped
	}); err != nil {
		return err
	}
	bootDir := filepath.Join(dir, "boot")
	if err := os.MkdirAll(bootDir, 0o755); err != nil {
		return err
	}
	kernel, initrd, err := image.ExtractBoot(ctx, img, bootDir)
	if err != nil {
		return err
	}
	var bare, ferry []float64
	for i := 0; i < runs; i++ {
		b, err := e2e.BareBoot(ctx, img, kernel, initrd, dir)
		if err != nil {
			return fmt.Errorf("bare boot %d: %w", i+1, err)
		}
		bare = append(bare, b.Seconds())
		f, err := ferryBoot(ctx, c, in.Spec.IP)
		if err != nil {
			return fmt.Errorf("ferry boot %d: %w\n%s", i+1, err, c.Diagnostics())
		}
		ferry = append(ferry, f)
		fmt.Printf("run %d: bare %.2f s, ferry %.2f s\n", i+1, b.Seconds(), f)
	}
	mb, mf := median(bare), median(ferry)
	fmt.Printf("RESULT bare_boot_s=%.2f ferry_boot_s=%.2f overhead_ratio=%.3f runs=%d\n", mb, mf, mf/mb, runs)
	return nil
}

// ferryBoot starts the instance and times until its HTTP service answers
// from the LAN, then stops it again.
func ferryBoot(ctx context.Context, c *e2e.Cluster, ip string) (float64, error) {
	start := time.Now()
	if _, err := c.Client.StartInstance(ctx, "bench", ""); err != nil {
		return 0, err
	}
	// Poll as the bare boot is polled: short attempts, 20 ms apart.
	var took float64
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := c.GetWithin(ctx, ip, 250*time.Millisecond); err == nil {
			took = time.Since(start).Seconds()
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no HTTP answer within 2 minutes")
		}
	}
	if _, err := c.Client.StopInstance(ctx, "bench", ""); err != nil {
		return 0, err
	}
	return took, c.Wait(ctx, time.Minute, "stopped", func() bool {
		got, err := c.Client.GetInstance(ctx, "bench")
		return err == nil && got.Status.Phase == api.PhaseStopped
	})
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
