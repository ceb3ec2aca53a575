package qemu

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ferrycluster/ferry/internal/vmm"
)

func TestBuildArgs(t *testing.T) {
	t.Parallel()
	base := vmm.Spec{ID: "web-1", CPUs: 2, MemoryMB: 512, StateDir: "/var/lib/ferry/vms/web-1"}
	tcg := machineConfig{accel: "tcg", machine: "pc"}
	tests := []struct {
		name   string
		change func(s *vmm.Spec)
		mc     machineConfig
		want   [][2]string // flag, exact value
		absent []string    // flags that must not appear
	}{
		{
			name: "minimal",
			mc:   tcg,
			want: [][2]string{
				{"-name", "guest=web-1,debug-threads=on"},
				{"-machine", "pc"},
				{"-accel", "tcg"},
				{"-m", "512"},
				{"-smp", "2"},
				{"-pidfile", "/var/lib/ferry/vms/web-1/qemu.pid"},
				{"-chardev", "socket,id=qmp,path=/var/lib/ferry/vms/web-1/qmp.sock,server=on,wait=off"},
				{"-chardev", "socket,id=ser0,path=/var/lib/ferry/vms/web-1/console.sock,server=on,wait=off,logfile=/var/lib/ferry/vms/web-1/console.log,logappend=on"},
				{"-serial", "chardev:ser0"},
				{"-display", "none"},
				{"-vga", "none"},
			},
			absent: []string{"-cpu", "-kernel", "-blockdev", "-netdev", "-device"},
		},
		{
			name: "kvm with everything",
			mc:   machineConfig{accel: "kvm", machine: "q35", cpu: "host"},
			change: func(s *vmm.Spec) {
				s.Kernel, s.Initrd, s.Cmdline = "/k", "/i", "console=ttyS0 root=/dev/vda"
				s.DiskPath = "/disks/web-1.img"
				s.TapName, s.MAC = "fe-web-1", "52:54:00:12:34:56"
			},
			want: [][2]string{
				{"-accel", "kvm"},
				{"-cpu", "host"},
				{"-machine", "q35"},
				{"-kernel", "/k"},
				{"-initrd", "/i"},
				{"-append", "console=ttyS0 root=/dev/vda"},
				{"-blockdev", `{"discard":"unmap","driver":"raw","file":{"discard":"unmap","driver":"file","filename":"/disks/web-1.img"},"node-name":"disk0"}`},
				{"-device", "virtio-blk-pci,drive=disk0,bootindex=1"},
				{"-netdev", "tap,id=net0,ifname=fe-web-1,script=no,downscript=no,vhost=off"},
				{"-device", "virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:12:34:56"},
			},
		},
		{
			name: "nbd disk wins over the file",
			mc:   machineConfig{accel: "tcg", machine: "pc", nbdReconnect: 30},
			change: func(s *vmm.Spec) {
				s.DiskPath, s.DiskNBD, s.DiskNBDExport = "/ignored.img", "/run/nbd,1.sock", "web-1"
			},
			want: [][2]string{
				{"-blockdev", `{"discard":"unmap","driver":"raw","file":{"discard":"unmap","driver":"nbd","export":"web-1","reconnect-delay":30,"server":{"path":"/run/nbd,1.sock","type":"unix"}},"node-name":"disk0"}`},
			},
		},
		{
			name:   "user net with forwards",
			mc:     tcg,
			change: func(s *vmm.Spec) { s.UserNetHostFwd = "tcp:2222-22, udp:5353-53,8080-80" },
			want: [][2]string{
				{"-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5353-:53,hostfwd=tcp:127.0.0.1:8080-:80"},
				{"-device", "virtio-net-pci,netdev=net0,romfile="},
			},
		},
		{
			name:   "tap wins over user net",
			mc:     tcg,
			change: func(s *vmm.Spec) { s.TapName, s.UserNetHostFwd = "fe0", "8080-80" },
			want:   [][2]string{{"-netdev", "tap,id=net0,ifname=fe0,script=no,downscript=no,vhost=off"}},
		},
		{
			name:   "commas in paths are escaped",
			mc:     tcg,
			change: func(s *vmm.Spec) { s.StateDir = "/tmp/a,b" },
			want: [][2]string{
				{"-chardev", "socket,id=qmp,path=/tmp/a,,b/qmp.sock,server=on,wait=off"},
				{"-pidfile", "/tmp/a,b/qemu.pid"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base
			if tc.change != nil {
				tc.change(&spec)
			}
			spec, err := checkSpec(spec)
			if err != nil {
				t.Fatalf("checkSpec = %v", err)
			}
			args, err := buildArgs(spec, tc.mc)
			if err != nil {
				t.Fatalf("buildArgs = %v", err)
			}
			for _, w := range tc.want {
				found := false
				for i := 0; i+1 < len(args); i++ {
					if args[i] == w[0] && args[i+1] == w[1] {
						found = true
					}
				}
				if !found {
					t.Errorf("buildArgs() lacks %s %s; got %q", w[0], w[1], args)
				}
			}
			for _, flag := range tc.absent {
				if slices.Contains(args, flag) {
					t.Errorf("buildArgs() has %s, want none; got %q", flag, args)
				}
			}
			if !slices.Contains(args, "-S") || !slices.Contains(args, "-nodefaults") || !slices.Contains(args, "-no-user-config") {
				t.Errorf("buildArgs() lacks -S, -nodefaults or -no-user-config: %q", args)
			}
			if !isQEMUOf(args, spec.ID, newFiles(spec.StateDir)) {
				t.Errorf("isQEMUOf(buildArgs(%q)) = false, want true", spec.ID)
			}
			if isQEMUOf(args, spec.ID+"x", newFiles(spec.StateDir)) || isQEMUOf(args, spec.ID, newFiles("/elsewhere")) {
				t.Errorf("isQEMUOf accepts another VM's command line")
			}
		})
	}
}

func TestCheckSpec(t *testing.T) {
	t.Parallel()
	ok := vmm.Spec{ID: "vm", StateDir: "/s"}
	tests := []struct {
		name    string
		change  func(s *vmm.Spec)
		wantErr bool
	}{
		{"defaults", func(s *vmm.Spec) {}, false},
		{"empty id", func(s *vmm.Spec) { s.ID = "" }, true},
		{"slash in id", func(s *vmm.Spec) { s.ID = "a/b" }, true},
		{"space in id", func(s *vmm.Spec) { s.ID = "a b" }, true},
		{"no state dir", func(s *vmm.Spec) { s.StateDir = "" }, true},
		{"negative cpus", func(s *vmm.Spec) { s.CPUs = -1 }, true},
		{"initrd without kernel", func(s *vmm.Spec) { s.Initrd = "/i" }, true},
		{"short mac", func(s *vmm.Spec) { s.MAC = "52:54:00:12:34" }, true},
		{"long mac", func(s *vmm.Spec) { s.MAC = "02:00:5e:10:00:00:00:01" }, true},
		{"tap with comma", func(s *vmm.Spec) { s.TapName = "a,b" }, true},
		{"long tap", func(s *vmm.Spec) { s.TapName = "abcdefghijklmnop" }, true},
		{"udp forward", func(s *vmm.Spec) { s.UserNetHostFwd = "udp:1-2" }, false},
		{"sctp forward", func(s *vmm.Spec) { s.UserNetHostFwd = "sctp:1-2" }, true},
		{"port zero", func(s *vmm.Spec) { s.UserNetHostFwd = "0-22" }, true},
		{"port too big", func(s *vmm.Spec) { s.UserNetHostFwd = "65536-22" }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := ok
			tc.change(&spec)
			got, err := checkSpec(spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("checkSpec(%+v) = %v, want error %t", spec, err, tc.wantErr)
			}
			if err == nil && (got.CPUs < 1 || got.MemoryMB < 1) {
				t.Errorf("checkSpec(%+v) = %+v, want defaults filled", spec, got)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		wantState byte
		wantStart uint64
		wantErr   bool
	}{
		{
			name:      "qemu",
			in:        "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 12 0 0 0 5 3 0 0 20 0 3 0 987654 1000 100 18446744073709551615\n",
			wantState: 'S', wantStart: 987654,
		},
		{
			name:      "name with spaces and parentheses",
			in:        "7 (a) b) (c) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0",
			wantState: 'Z', wantStart: 55,
		},
		{name: "truncated", in: "7 (a) S 1 2 3", wantErr: true},
		{name: "no name", in: "7 a S", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseProcStat(%q) = %v, want error %t", tc.in, err, tc.wantErr)
			}
			if err == nil && (got.state != tc.wantState || got.startTime != tc.wantStart) {
				t.Errorf("parseProcStat(%q) = %c %d, want %c %d", tc.in, got.state, got.startTime, tc.wantState, tc.wantStart)
			}
		})
	}
	st, err := readProcStat(os.Getpid())
	if err != nil || st.startTime == 0 {
		t.Errorf("readProcStat(self) = %+v, %v", st, err)
	}
}

// exitedWith runs a shell command and returns its wait status.
func exitedWith(t *testing.T, script string) exitStatus {
	cmd := exec.Command("sh", "-c", script)
	_ = cmd.Run()
	return exitStatus{state: cmd.ProcessState}
}

func TestExitOutcome(t *testing.T) {
	t.Parallel()
	ok := exitedWith(t, "exit 0")
	failed := exitedWith(t, "exit 1")
	killed := exitedWith(t, "kill -9 $$")
	unknown := exitStatus{}
	guestOff := shutdownEvent{seen: true, guest: true, reason: "guest-shutdown"}
	signalled := shutdownEvent{seen: true, reason: "host-signal"}
	panicked := shutdownEvent{seen: true, guest: true, reason: "guest-panic"}
	tests := []struct {
		name      string
		st        exitStatus
		sd        shutdownEvent
		stopping  bool
		killWhy   string
		wantState vmm.State
		wantErr   error
	}{
		{"guest powered off", ok, guestOff, false, "", vmm.StateStopped, nil},
		{"guest powered off on stop", ok, guestOff, true, "", vmm.StateStopped, nil},
		{"status 0, event missed", ok, shutdownEvent{}, false, "", vmm.StateStopped, nil},
		{"recovered, guest powered off", unknown, guestOff, false, "", vmm.StateStopped, nil},
		{"recovered, stopped, event missed", unknown, shutdownEvent{}, true, "", vmm.StateStopped, nil},
		{"recovered, vanished", unknown, shutdownEvent{}, false, "", vmm.StateCrashed, ErrCrashed},
		{"sigterm from someone", ok, signalled, false, "", vmm.StateCrashed, ErrCrashed},
		{"guest panic", ok, panicked, false, "", vmm.StateCrashed, ErrCrashed},
		{"kill -9 from someone", killed, shutdownEvent{}, false, "", vmm.StateCrashed, ErrCrashed},
		{"qemu failed", failed, shutdownEvent{}, false, "", vmm.StateCrashed, ErrCrashed},
		{"stop timed out", killed, shutdownEvent{}, true, "timeout", vmm.StateStopped, ErrKilled},
		{"destroyed", killed, shutdownEvent{}, false, "destroyed", vmm.StateCrashed, ErrKilled},
		{"destroyed, recovered", unknown, shutdownEvent{}, false, "destroyed", vmm.StateCrashed, ErrKilled},
		{"powered off as the kill came", ok, guestOff, true, "timeout", vmm.StateStopped, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state, err := exitOutcome("vm", tc.st, tc.sd, tc.stopping, tc.killWhy, func() string { return "" })
			if state != tc.wantState || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("exitOutcome() = %s, %v; want %s, %v", state, err, tc.wantState, tc.wantErr)
			}
		})
	}
	if _, err := exitOutcome("vm", killed, shutdownEvent{}, false, "", func() string { return "\nlast words" }); err == nil || !strings.Contains(err.Error(), "signal: killed") || !strings.Contains(err.Error(), "last words") {
		t.Errorf("exitOutcome(killed) = %v, want the signal and the output's tail", err)
	}
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	in := []string{"vmlinuz-6.10.0-1-amd64", "vmlinuz-6.1.0-56-amd64", "vmlinuz-6.9.2", "vmlinuz-6.1.0-9-amd64"}
	slices.SortFunc(in, compareVersions)
	want := []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-56-amd64", "vmlinuz-6.9.2", "vmlinuz-6.10.0-1-amd64"}
	if !slices.Equal(in, want) {
		t.Errorf("sorted = %q, want %q", in, want)
	}
}

func TestScanFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"early\r\n[    0.000000] Linux version 6.1.0\r\n", true},
		{"Linux versio", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := scanFor(iotest.OneByteReader(strings.NewReader(tc.in)), []byte(probeBanner)); got != tc.want {
			t.Errorf("scanFor(%q) = %t, want %t", tc.in, got, tc.want)
		}
	}
}

func TestLastLines(t *testing.T) {
	t.Parallel()
	in := "a\r\n\nb\nc  \n" + strings.Repeat("x", 400) + "\n"
	got := lastLines([]byte(in), 3)
	want := "b\nc\n" + strings.Repeat("x", 300) + "..."
	if got != want {
		t.Errorf("lastLines(%q, 3) = %q, want %q", in, got, want)
	}
}
