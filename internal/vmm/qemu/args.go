package qemu

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/ferrycluster/ferry/internal/vmm"
)

// Names of the files the driver creates in a VM's StateDir.
const (
	QMPSocketName     = "qmp.sock"
	ConsoleSocketName = "console.sock"
	ConsoleLogName    = "console.log"
	PIDFileName       = "qemu.pid"
	// LogName is QEMU's own stdout and stderr.
	LogName = "qemu.log"
)

// Defaults for a Spec that leaves these zero.
const (
	defaultCPUs     = 1
	defaultMemoryMB = 256
)

// maxSocketPath is the longest path a unix socket address can hold
// (sun_path is 108 bytes with its terminating NUL).
const maxSocketPath = 107

// files are the paths of one VM's files.
type files struct {
	dir         string
	qmp         string
	consoleSock string
	consoleLog  string
	pid         string
	log         string
}

func newFiles(dir string) files {
	return files{
		dir:         dir,
		qmp:         filepath.Join(dir, QMPSocketName),
		consoleSock: filepath.Join(dir, ConsoleSocketName),
		consoleLog:  filepath.Join(dir, ConsoleLogName),
		pid:         filepath.Join(dir, PIDFileName),
		log:         filepath.Join(dir, LogName),
	}
}

// created lists the files the driver creates, for Destroy to remove.
func (f files) created() []string {
	return []string{f.qmp, f.consoleSock, f.consoleLog, f.pid, f.log}
}

// machineConfig is what the command line takes from the driver rather than
// from the Spec.
type machineConfig struct {
	accel   string
	machine string
	// cpu is the -cpu model; empty for QEMU's default.
	cpu string
	// nbdReconnect is how long, in whole seconds, QEMU holds a disk's
	// requests while it reconnects to a restarted NBD server.
	nbdReconnect int
}

// checkSpec validates spec and fills its defaults.
func checkSpec(spec vmm.Spec) (vmm.Spec, error) {
	if err := checkID(spec.ID); err != nil {
		return spec, err
	}
	if spec.StateDir == "" {
		return spec, fmt.Errorf("spec has no StateDir")
	}
	if !filepath.IsAbs(spec.StateDir) {
		abs, err := filepath.Abs(spec.StateDir)
		if err != nil {
			return spec, fmt.Errorf("state dir: %w", err)
		}
		spec.StateDir = abs
	}
	f := newFiles(spec.StateDir)
	for _, p := range []string{f.qmp, f.consoleSock} {
		if len(p) > maxSocketPath {
			return spec, fmt.Errorf("socket path %q is longer than %d bytes: use a shorter StateDir", p, maxSocketPath)
		}
	}
	if spec.CPUs < 0 || spec.MemoryMB < 0 {
		return spec, fmt.Errorf("spec has %d CPUs and %d MB: want positive values (or 0 for the defaults)", spec.CPUs, spec.MemoryMB)
	}
	if spec.CPUs == 0 {
		spec.CPUs = defaultCPUs
	}
	if spec.MemoryMB == 0 {
		spec.MemoryMB = defaultMemoryMB
	}
	if spec.Kernel == "" && (spec.Initrd != "" || spec.Cmdline != "") {
		return spec, fmt.Errorf("spec has an initrd or kernel command line but no kernel")
	}
	if spec.MAC != "" {
		hw, err := net.ParseMAC(spec.MAC)
		if err != nil || len(hw) != 6 {
			return spec, fmt.Errorf("MAC %q is not a 48-bit MAC address", spec.MAC)
		}
		spec.MAC = hw.String()
	}
	if spec.TapName != "" {
		if len(spec.TapName) > 15 || strings.ContainsAny(spec.TapName, ",=/ \t\n") {
			return spec, fmt.Errorf("tap name %q is not a valid interface name", spec.TapName)
		}
	}
	if spec.TapName == "" && spec.UserNetHostFwd != "" {
		if _, err := hostFwds(spec.UserNetHostFwd); err != nil {
			return spec, err
		}
	}
	return spec, nil
}

// checkID accepts IDs that are safe in file names, log lines and QEMU's
// command line.
func checkID(id string) error {
	if id == "" {
		return fmt.Errorf("vm ID is empty")
	}
	if len(id) > 128 {
		return fmt.Errorf("vm ID %q is longer than 128 bytes", id)
	}
	for _, r := range id {
		if r == '/' || r == ',' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("vm ID %q contains %q", id, r)
		}
	}
	return nil
}

// hostFwds turns a vmm.Spec.UserNetHostFwd list into QEMU hostfwd values
// bound to 127.0.0.1.
func hostFwds(list string) ([]string, error) {
	var out []string
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		proto, ports := "tcp", item
		if p, rest, ok := strings.Cut(item, ":"); ok {
			proto, ports = p, rest
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("host forward %q: protocol %q is not tcp or udp", item, proto)
		}
		hs, gs, ok := strings.Cut(ports, "-")
		if !ok {
			return nil, fmt.Errorf("host forward %q: want [tcp:|udp:]HOSTPORT-GUESTPORT", item)
		}
		host, herr := strconv.ParseUint(hs, 10, 16)
		guest, gerr := strconv.ParseUint(gs, 10, 16)
		if herr != nil || gerr != nil || host == 0 || guest == 0 {
			return nil, fmt.Errorf("host forward %q: ports must be 1-65535", item)
		}
		out = append(out, fmt.Sprintf("%s:127.0.0.1:%d-:%d", proto, host, guest))
	}
	return out, nil
}

// optEscape escapes a value for QEMU's comma-separated option syntax.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// nameArg is the value of -name for a VM; Recover looks for it in the
// command line of a process to tell that it runs this VM.
func nameArg(id string) string { return "guest=" + optEscape(id) + ",debug-threads=on" }

// buildArgs returns QEMU's arguments for spec, which checkSpec has passed.
// QEMU starts with its CPUs stopped (-S): Start continues it once QMP is
// connected, so no event is missed.
func buildArgs(spec vmm.Spec, mc machineConfig) ([]string, error) {
	f := newFiles(spec.StateDir)
	args := []string{
		"-name", nameArg(spec.ID),
		"-nodefaults", "-no-user-config",
		"-display", "none", "-vga", "none",
		"-machine", mc.machine,
		"-accel", mc.accel,
	}
	if mc.cpu != "" {
		args = append(args, "-cpu", mc.cpu)
	}
	args = append(args,
		"-m", strconv.Itoa(spec.MemoryMB),
		"-smp", strconv.Itoa(spec.CPUs),
		"-S",
		"-pidfile", f.pid,
		"-chardev", "socket,id=qmp,path="+optEscape(f.qmp)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=ser0,path="+optEscape(f.consoleSock)+",server=on,wait=off,logfile="+optEscape(f.consoleLog)+",logappend=on",
		"-serial", "chardev:ser0",
	)
	if spec.Kernel != "" {
		args = append(args, "-kernel", spec.Kernel)
		if spec.Initrd != "" {
			args = append(args, "-initrd", spec.Initrd)
		}
		if spec.Cmdline != "" {
			args = append(args, "-append", spec.Cmdline)
		}
	}
	if disk, ok := blockdev(spec, mc.nbdReconnect); ok {
		js, err := json.Marshal(disk)
		if err != nil {
			return nil, fmt.Errorf("disk: %w", err)
		}
		args = append(args, "-blockdev", string(js), "-device", "virtio-blk-pci,drive=disk0,bootindex=1")
	}
	nic := ""
	switch {
	case spec.TapName != "":
		args = append(args, "-netdev", "tap,id=net0,ifname="+spec.TapName+",script=no,downscript=no,vhost=off")
		nic = "net0"
	case spec.UserNetHostFwd != "":
		fwds, err := hostFwds(spec.UserNetHostFwd)
		if err != nil {
			return nil, err
		}
		netdev := "user,id=net0"
		for _, fw := range fwds {
			netdev += ",hostfwd=" + fw
		}
		args = append(args, "-netdev", netdev)
		nic = "net0"
	}
	if nic != "" {
		// romfile= skips the PXE option ROM: ferry boots the kernel or the
		// disk, never the network.
		dev := "virtio-net-pci,netdev=" + nic + ",romfile="
		if spec.MAC != "" {
			dev += ",mac=" + spec.MAC
		}
		args = append(args, "-device", dev)
	}
	return args, nil
}

// blockdev returns the -blockdev value (as JSON, which needs no escaping)
// of the VM's disk: a raw format node over a file or an NBD export. An NBD
// client waits up to nbdReconnect seconds for a restarted server (the agent
// serves the disk, and QEMU outlives an agent restart) before failing the
// guest's requests.
func blockdev(spec vmm.Spec, nbdReconnect int) (map[string]any, bool) {
	var file map[string]any
	switch {
	case spec.DiskNBD != "":
		file = map[string]any{
			"driver": "nbd",
			"server": map[string]any{"type": "unix", "path": spec.DiskNBD},
		}
		if nbdReconnect > 0 {
			file["reconnect-delay"] = nbdReconnect
		}
		if spec.DiskNBDExport != "" {
			file["export"] = spec.DiskNBDExport
		}
	case spec.DiskPath != "":
		file = map[string]any{"driver": "file", "filename": spec.DiskPath}
	default:
		return nil, false
	}
	// Pass the guest's discards down, so sparse images stay sparse.
	file["discard"] = "unmap"
	return map[string]any{
		"driver":    "raw",
		"node-name": "disk0",
		"discard":   "unmap",
		"file":      file,
	}, true
}
