package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/ferrycluster/ferry/internal/image"
	"github.com/ferrycluster/ferry/internal/testcluster"
)

// BareLiveResult is one bare QEMU live migration: what a client polling
// the guest saw, and QEMU's own figures.
type BareLiveResult struct {
	// Downtime is the longest gap between two answers of the client (as
	// in MigrationResult), GapFrom when it began, from the migrate command.
	Downtime, GapFrom time.Duration
	// QEMUDowntime and Total are QEMU's own (query-migrate).
	QEMUDowntime, Total time.Duration
}

// BareLiveMigration boots the demo image with plain QEMU on the first
// host (its disk a file both hosts see, its NIC a tap on the host's
// bridge, at the LAN's spare address), live-migrates it to the second
// host over plain TCP the way a QEMU user with shared storage would (the
// target starts the guest itself as soon as the state is in, then
// announce-self), and measures it with the same poller as RunMigration:
// the reference ferry's live migrations are compared with. Taps are
// created and removed here.
func (d *DemoCluster) BareLiveMigration(ctx context.Context) (BareLiveResult, error) {
	hosts := d.Hosts.Hosts()
	if len(hosts) < 2 {
		return BareLiveResult{}, errors.New("e2e: a bare live migration needs two hosts")
	}
	src, dst := hosts[0], hosts[1]
	dir, err := os.MkdirTemp(d.dir, "bare-live-")
	if err != nil {
		return BareLiveResult{}, err
	}
	defer os.RemoveAll(dir)
	disk := filepath.Join(dir, "disk.img")
	if _, err := image.SparseCopy(ctx, d.Image, disk); err != nil {
		return BareLiveResult{}, err
	}
	ip := d.Hosts.SpareIP().String()
	prefix := d.Hosts.Subnet().Bits()
	gw := d.Hosts.Network().Gateway
	bare := &bareVM{d: d, disk: disk, ip: ip,
		cmdline: image.BootArgs("bare", ip+"/"+strconv.Itoa(prefix), gw)}

	from, err := bare.start(ctx, src, filepath.Join(dir, "src"), "")
	if err != nil {
		return BareLiveResult{}, err
	}
	defer from.stop()
	if err := from.run("cont", nil, nil); err != nil {
		return BareLiveResult{}, err
	}
	if err := d.Wait(ctx, 2*time.Minute, "the bare guest to answer", func() bool {
		_, err := d.GetWithin(ctx, ip, time.Second)
		return err == nil
	}); err != nil {
		return BareLiveResult{}, fmt.Errorf("%w; its console:\n%s", err, tail(from.console(), 30))
	}

	uri := "tcp:" + net.JoinHostPort(dst.IP.String(), "4444")
	to, err := bare.start(ctx, dst, filepath.Join(dir, "dst"), uri)
	if err != nil {
		return BareLiveResult{}, err
	}
	defer to.stop()

	pl, err := d.startPoller(ctx, ip, pollEvery, 250*time.Millisecond)
	if err != nil {
		return BareLiveResult{}, err
	}
	defer pl.end()
	start := time.Now()
	if err := from.run("migrate-set-parameters", map[string]any{"downtime-limit": 300}, nil); err != nil {
		return BareLiveResult{}, err
	}
	if err := from.run("migrate", map[string]any{"uri": uri}, nil); err != nil {
		return BareLiveResult{}, err
	}
	var info struct {
		Status    string `json:"status"`
		Downtime  int64  `json:"downtime"`
		TotalTime int64  `json:"total-time"`
		ErrorDesc string `json:"error-desc"`
	}
	// The target runs the guest (and announces it) by itself as soon as
	// the state is in; noticing the end here delays nothing the client sees.
	if err := d.Wait(ctx, 2*time.Minute, "the bare migration to end", func() bool {
		return from.run("query-migrate", nil, &info) == nil && (info.Status == "completed" || info.Status == "failed")
	}); err != nil {
		return BareLiveResult{}, err
	}
	if info.Status != "completed" {
		return BareLiveResult{}, fmt.Errorf("e2e: bare migration %s: %s", info.Status, info.ErrorDesc)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := d.Wait(ctx, time.Minute, "the bare target to run", func() bool {
		return to.run("query-status", nil, &st) == nil && st.Status == "running"
	}); err != nil {
		return BareLiveResult{}, fmt.Errorf("%w (status %q)", err, st.Status)
	}
	if err := to.run("announce-self", map[string]any{"initial": 50, "max": 550, "rounds": 5, "step": 100}, nil); err != nil {
		return BareLiveResult{}, err
	}
	from.stop()
	// The guest must answer from its new host, then a little more watching
	// for late gaps, as RunMigration does.
	end := time.Now()
	if err := d.Wait(ctx, time.Minute, "the bare guest to answer after its migration", func() bool {
		_, ok := pl.first(end, func(poll) bool { return true })
		return ok
	}); err != nil {
		return BareLiveResult{}, fmt.Errorf("%w; its console:\n%s", err, tail(to.console(), 30))
	}
	time.Sleep(2 * time.Second)
	pl.end()
	g := pl.gaps(start)
	return BareLiveResult{
		Downtime: g.Longest, GapFrom: g.From.Sub(start),
		QEMUDowntime: time.Duration(info.Downtime) * time.Millisecond,
		Total:        time.Duration(info.TotalTime) * time.Millisecond,
	}, nil
}

// bareVM is what the two ends of a bare migration share.
type bareVM struct {
	d        *DemoCluster
	disk, ip string
	cmdline  string
}

// bareMAC is the bare guest's MAC address (locally administered).
const bareMAC = "52:54:00:fe:00:63"

// bareTap is the bare guest's tap on each host.
const bareTap = "baretap0"

// bareQEMU is one QEMU process of a bare migration.
type bareQEMU struct {
	host *testcluster.Host
	cmd  *exec.Cmd
	mon  *qmp.SocketMonitor
	dir  string
}

// start starts QEMU on h, paused (-S), or waiting for the migration at
// incoming, with the guest's NIC on a new tap on h's bridge.
func (b *bareVM) start(ctx context.Context, h *testcluster.Host, dir, incoming string) (*bareQEMU, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ns := h.Namespace
	// A tap left by an interrupted run would make the add fail.
	_, _ = b.d.Hosts.Exec(ctx, ns, "ip", "link", "del", bareTap)
	for _, args := range [][]string{
		{"ip", "tuntap", "add", "dev", bareTap, "mode", "tap", "vnet_hdr"},
		{"ip", "link", "set", bareTap, "master", h.Bridge},
		{"ip", "link", "set", bareTap, "up"},
	} {
		if out, err := b.d.Hosts.Exec(ctx, ns, args...); err != nil {
			return nil, fmt.Errorf("e2e: bare tap on %s: %w: %s", h.Name, err, out)
		}
	}
	q := &bareQEMU{host: h, dir: dir}
	args := append(bareMachineArgs(b.d.Kernel, b.d.Initrd, b.cmdline, b.disk),
		"-netdev", "tap,id=n0,ifname="+bareTap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+bareMAC,
		"-serial", "file:"+filepath.Join(dir, "console.log"),
		"-qmp", "unix:"+filepath.Join(dir, "qmp.sock")+",server=on,wait=off")
	if incoming == "" {
		args = append(args, "-S")
	} else {
		args = append(args, "-incoming", incoming)
	}
	q.cmd = h.Command(context.Background(), "qemu-system-x86_64", args...)
	out, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		q.delTap()
		return nil, err
	}
	defer out.Close()
	q.cmd.Stdout, q.cmd.Stderr = out, out
	if err := h.Start(q.cmd); err != nil {
		q.delTap()
		return nil, err
	}
	var mon *qmp.SocketMonitor
	err = b.d.Wait(ctx, 30*time.Second, "bare QEMU's QMP socket on "+h.Name, func() bool {
		m, err := qmp.NewSocketMonitor("unix", filepath.Join(dir, "qmp.sock"), 5*time.Second)
		if err != nil {
			return false
		}
		if err := m.Connect(); err != nil {
			return false
		}
		mon = m
		return true
	})
	if err != nil {
		q.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
		return nil, fmt.Errorf("%w: %s", err, log)
	}
	q.mon = mon
	return q, nil
}

// run runs a QMP command and decodes its return value into out (if not
// nil).
func (q *bareQEMU) run(cmd string, args map[string]any, out any) error {
	c := qmp.Command{Execute: cmd}
	if args != nil {
		c.Args = args
	}
	req, err := json.Marshal(c)
	if err != nil {
		return err
	}
	raw, err := q.mon.Run(req)
	if err != nil {
		return fmt.Errorf("e2e: bare QEMU on %s: %s: %w", q.host.Name, cmd, err)
	}
	if out == nil {
		return nil
	}
	var r struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("e2e: bare QEMU on %s: %s: %w", q.host.Name, cmd, err)
	}
	return json.Unmarshal(r.Return, out)
}

// console returns what the guest printed on its serial port.
func (q *bareQEMU) console() string {
	b, _ := os.ReadFile(filepath.Join(q.dir, "console.log"))
	return string(b)
}

// stop kills QEMU and removes its tap; it may be called more than once.
func (q *bareQEMU) stop() {
	if q.mon != nil {
		q.mon.Disconnect()
		q.mon = nil
	}
	if q.cmd != nil && q.cmd.Process != nil {
		_ = q.cmd.Process.Kill()
		_ = q.cmd.Wait()
		q.cmd = nil
	}
	q.delTap()
}

func (q *bareQEMU) delTap() {
	_, _ = q.host.Command(context.Background(), "ip", "link", "del", bareTap).CombinedOutput()
}
