package netid

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inFreshNetns runs fn on a locked OS thread moved into a new, empty network
// namespace, so nothing the test does touches the host's links. The thread
// stays locked: if it could not be moved back, the runtime discards it when
// the test's goroutine ends; the namespace dies with its last reference.
func inFreshNetns(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("netid host tests need root (CAP_NET_ADMIN), and CI runs as root")
		}
		t.Skip("netid host tests need root (CAP_NET_ADMIN) to create network namespaces; run as root")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // moves this thread into the new namespace
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v (the thread stays locked and is discarded)", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	return l
}

// addVeth adds a veth pair name <-> name+"p" (this kernel has no dummy
// links) with the given MAC on name, if any.
func addVeth(t *testing.T, name, mac string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if mac != "" {
		v.HardwareAddr, _ = net.ParseMAC(mac)
	}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
}

func wantErr(t *testing.T, what string, err error, substr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		t.Errorf("%s = %v, want an error containing %q", what, err, substr)
	}
}

func TestEnsureBridge(t *testing.T) {
	inFreshNetns(t, func() {
		addVeth(t, "up0", "0a:00:00:00:00:09")
		for i := range 2 { // the second call must change nothing
			if err := EnsureBridge("br0", "up0"); err != nil {
				t.Fatalf("EnsureBridge(br0, up0) call %d: %v", i+1, err)
			}
		}
		br, up := mustLink(t, "br0"), mustLink(t, "up0")
		if _, ok := br.(*netlink.Bridge); !ok {
			t.Fatalf("br0 is a %s, want a bridge", br.Type())
		}
		if br.Attrs().Flags&net.FlagUp == 0 || up.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("br0 flags %v, up0 flags %v: want both up", br.Attrs().Flags, up.Attrs().Flags)
		}
		if up.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("up0 master index = %d, want br0's %d", up.Attrs().MasterIndex, br.Attrs().Index)
		}
		if got := br.Attrs().HardwareAddr.String(); got != "0a:00:00:00:00:09" {
			t.Errorf("br0 mac = %s, want the uplink's 0a:00:00:00:00:09", got)
		}
		// A port with a lower MAC must not change the bridge's (pinned) MAC.
		addVeth(t, "low0", "02:00:00:00:00:01")
		if err := netlink.LinkSetMaster(mustLink(t, "low0"), br); err != nil {
			t.Fatal(err)
		}
		if got := mustLink(t, "br0").Attrs().HardwareAddr.String(); got != "0a:00:00:00:00:09" {
			t.Errorf("br0 mac after adding a lower-MAC port = %s, want it pinned at 0a:00:00:00:00:09", got)
		}
		if err := EnsureBridge("br0", ""); err != nil {
			t.Errorf("EnsureBridge(br0, no uplink) on an existing bridge: %v", err)
		}
		// Without an uplink the bridge pins its own first MAC.
		if err := EnsureBridge("br2", ""); err != nil {
			t.Fatal(err)
		}
		br2MAC := mustLink(t, "br2").Attrs().HardwareAddr.String()
		addVeth(t, "low1", "02:00:00:00:00:02")
		if err := netlink.LinkSetMaster(mustLink(t, "low1"), mustLink(t, "br2")); err != nil {
			t.Fatal(err)
		}
		if got := mustLink(t, "br2").Attrs().HardwareAddr.String(); got != br2MAC {
			t.Errorf("br2 mac after adding a lower-MAC port = %s, want it pinned at %s", got, br2MAC)
		}

		wantErr(t, "EnsureBridge(up0 is a veth)", EnsureBridge("up0", ""), "ensure bridge up0: link up0 exists and is a veth, not a bridge")
		wantErr(t, "EnsureBridge(missing uplink)", EnsureBridge("br1", "nope0"), "uplink nope0: Link not found")
		wantErr(t, "EnsureBridge(uplink of another bridge)", EnsureBridge("br1", "up0"), "uplink up0: already enslaved to br0")
		wantErr(t, "EnsureBridge(long name)", EnsureBridge("a-very-long-bridge-name", ""), "longer than 15 characters")
	})
}

func TestEnsureTap(t *testing.T) {
	inFreshNetns(t, func() {
		if err := EnsureBridge("br0", ""); err != nil {
			t.Fatal(err)
		}
		brMAC := mustLink(t, "br0").Attrs().HardwareAddr.String()
		name := TapName("web-1")
		for i := range 2 {
			if err := EnsureTap(name, "br0", 0); err != nil {
				t.Fatalf("EnsureTap call %d: %v", i+1, err)
			}
		}
		l := mustLink(t, name)
		tap, ok := l.(*netlink.Tuntap)
		if !ok {
			t.Fatalf("%s is a %s, want a tuntap", name, l.Type())
		}
		br := mustLink(t, "br0")
		switch {
		case tap.Mode != netlink.TUNTAP_MODE_TAP:
			t.Errorf("mode = %v, want tap", tap.Mode)
		case tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0:
			t.Errorf("flags = %v, want no multi_queue", tap.Flags)
		case tap.NonPersist:
			t.Errorf("tap is not persistent")
		case tap.Owner != 0 || tap.Group != 0:
			t.Errorf("owner %d group %d, want root", tap.Owner, tap.Group)
		case tap.MasterIndex != br.Attrs().Index:
			t.Errorf("master index = %d, want br0's %d", tap.MasterIndex, br.Attrs().Index)
		case tap.Flags&netlink.TUNTAP_VNET_HDR == 0:
			t.Errorf("flags = %v, want vnet_hdr", tap.Flags)
		case tap.Attrs().Flags&net.FlagUp == 0:
			t.Errorf("tap is not up")
		case tap.Attrs().MTU != br.Attrs().MTU:
			t.Errorf("tap mtu = %d, want the bridge's %d", tap.Attrs().MTU, br.Attrs().MTU)
		case tap.Attrs().HardwareAddr[0] != 0xfe:
			t.Errorf("tap mac = %s, want fe:...", tap.Attrs().HardwareAddr)
		case br.Attrs().HardwareAddr.String() != brMAC:
			t.Errorf("bridge mac changed from %s to %s when the tap joined", brMAC, br.Attrs().HardwareAddr)
		}

		// QEMU attaches with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR; a multi-queue
		// opener is refused because the device is single-queue.
		if err := attachTap(name, unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR); err != nil {
			t.Errorf("attaching like QEMU: %v", err)
		}
		if err := attachTap(name, unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_MULTI_QUEUE); err == nil {
			t.Errorf("a multi-queue attach succeeded, want EINVAL")
		}

		// A new MTU and a new bridge are applied to the existing tap.
		if err := EnsureBridge("br1", ""); err != nil {
			t.Fatal(err)
		}
		if err := EnsureTap(name, "br1", 1400); err != nil {
			t.Fatalf("EnsureTap(br1, 1400): %v", err)
		}
		if l := mustLink(t, name); l.Attrs().MTU != 1400 || l.Attrs().MasterIndex != mustLink(t, "br1").Attrs().Index {
			t.Errorf("after EnsureTap(br1, 1400): mtu %d master %d, want 1400 on br1", l.Attrs().MTU, l.Attrs().MasterIndex)
		}

		addVeth(t, "dum0", "")
		wantErr(t, "EnsureTap(veth)", EnsureTap("dum0", "br0", 0), "ensure tap dum0: link dum0 exists and is a veth, not a tap")
		wantErr(t, "EnsureTap(missing bridge)", EnsureTap("fytest", "nobr", 0), "bridge nobr: Link not found")
		wantErr(t, "EnsureTap(bridge is a veth)", EnsureTap("fytest", "dum0", 0), "link dum0 is a veth, not a bridge")
		wantErr(t, "EnsureTap(negative mtu)", EnsureTap("fytest", "br0", -1), "mtu -1 is negative")

		for i := range 2 { // deleting twice is fine
			if err := DeleteTap(name); err != nil {
				t.Fatalf("DeleteTap call %d: %v", i+1, err)
			}
		}
		if _, err := netlink.LinkByName(name); !isNotFound(err) {
			t.Errorf("after DeleteTap, LinkByName = %v, want not found", err)
		}
		wantErr(t, "DeleteTap(veth)", DeleteTap("dum0"), "delete tap dum0: link is a veth, not a tap; left alone")
		mustLink(t, "dum0")
	})
}

// attachTap opens the tap called name the way QEMU does, then closes it.
func attachTap(name string, flags uint16) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	req.flags = flags
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return errno
	}
	return nil
}

func TestSetTapUp(t *testing.T) {
	inFreshNetns(t, func() {
		if err := EnsureBridge("br0", ""); err != nil {
			t.Fatal(err)
		}
		name := TapName("web-1")
		if err := EnsureTap(name, "br0", 0); err != nil {
			t.Fatal(err)
		}
		for _, up := range []bool{false, true, false} {
			if err := SetTapUp(name, up); err != nil {
				t.Fatalf("SetTapUp(%v): %v", up, err)
			}
			if got := mustLink(t, name).Attrs().Flags&net.FlagUp != 0; got != up {
				t.Fatalf("after SetTapUp(%v) the tap is up=%v", up, got)
			}
		}
		if err := SetTapUp(TapName("nope"), false); err != nil {
			t.Errorf("a missing tap: %v", err)
		}
		if err := SetTapUp("br0", false); err == nil {
			t.Error("SetTapUp took a bridge for a tap")
		}
	})
}

func TestSendGratuitousARP(t *testing.T) {
	inFreshNetns(t, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a0", "b0"} {
			if err := netlink.LinkSetUp(mustLink(t, n)); err != nil {
				t.Fatal(err)
			}
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: mustLink(t, "b0").Attrs().Index}); err != nil {
			t.Fatal(err)
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
			t.Fatal(err)
		}
		ip := netip.MustParseAddr("10.77.0.100")
		mac, _ := net.ParseMAC("0e:f0:00:00:00:64")
		if err := SendGratuitousARP("a0", ip, mac); err != nil {
			t.Fatalf("SendGratuitousARP: %v", err)
		}
		buf := make([]byte, 1500)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("no ARP frame arrived on the peer: %v", err)
		}
		if want := arpFrame(ip, mac); !bytes.Equal(buf[:min(n, len(want))], want) {
			t.Errorf("received frame\n% x\nwant\n% x", buf[:n], want)
		}
		wantErr(t, "SendGratuitousARP(ipv6)", SendGratuitousARP("a0", netip.MustParseAddr("fd00::1"), mac), "not an IPv4 address")
		wantErr(t, "SendGratuitousARP(missing iface)", SendGratuitousARP("nope0", ip, mac), "gratuitous arp on nope0")
	})
}
