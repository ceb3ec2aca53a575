package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/image"
	"github.com/ferrycluster/ferry/internal/netid"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// realVMs reports whether the driver boots real disks and NICs (QEMU), as
// opposed to the fake driver, which needs neither.
func (a *Agent) realVMs() bool {
	c, ok := a.driver.(vmm.Capabler)
	return ok && c.Capabilities().RealDisks
}

// diskPath is where an instance's disk lives on this host: in the agent's
// state directory, or in the shared directory every host mounts.
func (a *Agent) diskPath(inst *api.Instance) string {
	if dir := inst.Spec.SharedPath(); dir != "" {
		return filepath.Join(dir, inst.Name+".img")
	}
	return a.localDiskPath(inst.Name)
}

// localDiskPath is where an instance's disk lives on this host's own disk.
func (a *Agent) localDiskPath(name string) string {
	return filepath.Join(a.stateDir, "disks", name+".img")
}

// prepare makes everything a VM needs on this host before it boots: the
// image (downloaded once and verified), the instance's disk (a sparse copy
// of the image, created once: it then lives for the instance's life), the
// kernel and initrd extracted from that disk, and the tap device on the
// host bridge. It returns the driver spec.
func (w *worker) prepare(ctx context.Context, inst *api.Instance, nw *api.Network, im *api.Image, peer *api.Peer) (vmm.Spec, error) {
	a := w.a
	spec := vmm.Spec{
		ID:       w.name,
		CPUs:     inst.Spec.CPUs,
		MemoryMB: int(inst.Spec.Memory >> 20),
		StateDir: a.vmDir(w.name),
	}
	if err := os.MkdirAll(spec.StateDir, stateDirMod); err != nil {
		return spec, fmt.Errorf("prepare %s: %w", w.name, err)
	}
	if !a.realVMs() {
		return spec, nil
	}
	disk := a.diskPath(inst)
	if _, err := os.Stat(disk); errors.Is(err, os.ErrNotExist) {
		if im == nil || !im.Ready {
			return spec, fmt.Errorf("image %q has no data: build and import it (`ferry image build-demo --out demo.img && ferry image import %s demo.img`)", inst.Spec.Image, inst.Spec.Image)
		}
		src, err := a.ensureImage(ctx, im)
		if err != nil {
			return spec, err
		}
		if api.Bytes(im.Size) > inst.Spec.Disk {
			return spec, fmt.Errorf("disk of %s (%s) is smaller than its image %s (%s)", w.name, inst.Spec.Disk, im.Name, im.Size.Human())
		}
		if err := os.MkdirAll(filepath.Dir(disk), stateDirMod); err != nil {
			return spec, fmt.Errorf("create disk dir: %w", err)
		}
		tmp := disk + ".creating"
		if _, err := image.SparseCopy(ctx, src, tmp); err != nil {
			os.Remove(tmp)
			return spec, fmt.Errorf("create disk of %s: %w", w.name, err)
		}
		if err := image.Grow(tmp, inst.Spec.Disk); err != nil {
			os.Remove(tmp)
			return spec, fmt.Errorf("create disk of %s: %w", w.name, err)
		}
		if err := os.Rename(tmp, disk); err != nil {
			return spec, fmt.Errorf("create disk of %s: %w", w.name, err)
		}
		w.log.Info("disk created", "path", disk, "image", im.Name)
	} else if err != nil {
		return spec, fmt.Errorf("disk of %s: %w", w.name, err)
	}
	if replicated(inst) {
		// The VM reaches its disk through the replicating primary.
		sock, err := w.ensurePrimary(inst, peer)
		if err != nil {
			return spec, err
		}
		spec.DiskNBD = sock
	} else {
		spec.DiskPath = disk
	}
	return spec, w.bootAndNIC(ctx, inst, nw, disk, &spec)
}

// bootAndNIC completes spec with the kernel and initrd extracted from the
// instance's disk at disk, and its NIC: a tap on the host bridge with the
// instance's MAC, and the boot arguments that give the guest its address.
func (w *worker) bootAndNIC(ctx context.Context, inst *api.Instance, nw *api.Network, disk string, spec *vmm.Spec) error {
	a := w.a
	bootDir := filepath.Join(spec.StateDir, "boot")
	if err := os.MkdirAll(bootDir, stateDirMod); err != nil {
		return err
	}
	kernel, initrd, err := image.ExtractBoot(ctx, disk, bootDir)
	if err != nil {
		return fmt.Errorf("boot files of %s: %w", w.name, err)
	}
	spec.Kernel, spec.Initrd = kernel, initrd
	var ipCIDR, gw string
	if nw != nil && inst.Spec.IP != "" {
		pfx, err := netip.ParsePrefix(nw.CIDR)
		if err != nil {
			return fmt.Errorf("network %s: %w", nw.Name, err)
		}
		ipCIDR, gw = fmt.Sprintf("%s/%d", inst.Spec.IP, pfx.Bits()), nw.Gateway
		tap := netid.TapName(inst.Name)
		if err := netid.EnsureTap(tap, a.bridge, 0); err != nil {
			return fmt.Errorf("network of %s: %w", w.name, err)
		}
		spec.TapName, spec.MAC = tap, inst.Spec.MAC
	}
	spec.Cmdline = image.BootArgs(inst.Name, ipCIDR, gw)
	return nil
}

// unprepare removes what prepare made for a VM on this host. The disk goes
// only when the instance itself is deleted: a VM released because it moved
// away keeps its disk (it may be the copy that matters).
func (w *worker) unprepare(inst *api.Instance, deleting bool) error {
	a := w.a
	if !a.realVMs() {
		return nil
	}
	if err := netid.DeleteTap(netid.TapName(w.name)); err != nil {
		return fmt.Errorf("remove tap of %s: %w", w.name, err)
	}
	if deleting && inst != nil {
		if err := os.Remove(a.diskPath(inst)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove disk of %s: %w", w.name, err)
		}
	}
	return nil
}

// ensureImage returns the path of the image in the local cache, downloading
// it from the server (once, under a per-image lock) and checking its
// SHA-256 against the image record.
func (a *Agent) ensureImage(ctx context.Context, im *api.Image) (string, error) {
	if len(im.SHA256) < 12 {
		return "", fmt.Errorf("image %q has no checksum", im.Name)
	}
	dir := filepath.Join(a.stateDir, "images")
	path := filepath.Join(dir, im.Name+"-"+im.SHA256[:12]+".img")
	lock := a.imageLock(path)
	lock.Lock()
	defer lock.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, stateDirMod); err != nil {
		return "", fmt.Errorf("image cache: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.serverURL+"/v1/agent/images/"+url.PathEscape(im.Name), nil)
	if err != nil {
		return "", err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("download image %s: %w", im.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download image %s: %w", im.Name, readServerError(resp))
	}
	tmp, err := os.CreateTemp(dir, im.Name+".download-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), resp.Body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("download image %s: %w", im.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != im.SHA256 {
		return "", fmt.Errorf("download image %s: checksum %s, want %s", im.Name, got, im.SHA256)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	a.log.Info("image downloaded", "image", im.Name, "path", path)
	return path, nil
}
