package e2e

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrycluster/ferry/internal/image"
)

// DemoCluster is a cluster that has the demo image, with that image's boot
// files unpacked for bare boots of it: what every benchmark starts from.
type DemoCluster struct {
	*Cluster
	// Image, Kernel and Initrd are the demo image and its boot files.
	Image, Kernel, Initrd string
	dir                   string
}

// StartDemo builds the demo image in a new temporary directory named after
// prefix, starts a cluster of hosts simulated hosts (with the client
// namespace) with bin, and uploads the image as "demo". Close removes it
// all.
func StartDemo(ctx context.Context, bin, prefix string, hosts int) (_ *DemoCluster, err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	d := &DemoCluster{dir: dir, Image: filepath.Join(dir, "demo.img")}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if _, err := image.BuildDemo(ctx, image.DemoOptions{Out: d.Image}); err != nil {
		return nil, err
	}
	if d.Cluster, err = Start(ctx, Options{Binary: bin, Hosts: hosts, Dir: filepath.Join(dir, "cluster"), WithClient: true}); err != nil {
		return nil, err
	}
	if err := d.UploadImage(ctx, "demo", d.Image); err != nil {
		return nil, err
	}
	bootDir := filepath.Join(dir, "boot")
	if err := os.MkdirAll(bootDir, 0o755); err != nil {
		return nil, err
	}
	if d.Kernel, d.Initrd, err = image.ExtractBoot(ctx, d.Image, bootDir); err != nil {
		return nil, err
	}
	return d, nil
}

// BareBoot boots the demo image with plain QEMU (see BareBoot).
func (d *DemoCluster) BareBoot(ctx context.Context) (time.Duration, error) {
	return BareBoot(ctx, d.Image, d.Kernel, d.Initrd, d.dir)
}

// Close stops the cluster and removes the directory.
func (d *DemoCluster) Close() {
	if d.Cluster != nil {
		d.Cluster.Close()
	}
	os.RemoveAll(d.dir)
}
