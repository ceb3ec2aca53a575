package netid

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureBridge makes sure a Linux bridge called name exists and is up. If
// uplink is not empty, that existing link (the host's NIC or veth toward the
// LAN) is enslaved to the bridge, unless it already is, and set up.
//
// A bridge EnsureBridge creates gets a fixed MAC address: the uplink's if
// given, else its own first random one. Left alone, a Linux bridge takes the
// lowest MAC of its ports, so the host's address would move each time a tap
// with a lower MAC comes or goes and neighbours' ARP caches would go stale.
//
// It fails if name exists and is not a bridge, or if uplink is missing or
// enslaved to another master. Calling it again changes nothing.
func EnsureBridge(name, uplink string) error {
	if err := ensureBridge(name, uplink); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", name, err)
	}
	return nil
}

func ensureBridge(name, uplink string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	br, created, err := bridgeLink(name)
	if err != nil {
		return err
	}
	pin := br.Attrs().HardwareAddr
	if uplink != "" {
		up, err := netlink.LinkByName(uplink)
		if err != nil {
			return fmt.Errorf("uplink %s: %w", uplink, err)
		}
		if err := enslave(up, br); err != nil {
			return fmt.Errorf("uplink %s: %w", uplink, err)
		}
		if err := netlink.LinkSetUp(up); err != nil {
			return fmt.Errorf("set uplink %s up: %w", uplink, err)
		}
		pin = up.Attrs().HardwareAddr
	}
	if created && len(pin) == 6 {
		if err := netlink.LinkSetHardwareAddr(br, pin); err != nil {
			return fmt.Errorf("set mac %s: %w", pin, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// bridgeLink returns the bridge called name, creating it if missing.
func bridgeLink(name string) (br netlink.Link, created bool, err error) {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, false, fmt.Errorf("create: %w", err)
		}
		created = err == nil
		l, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, false, err
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, false, fmt.Errorf("link %s exists and is a %s, not a bridge", name, l.Type())
	}
	return l, created, nil
}

// enslave attaches l to the bridge br unless it already is. It refuses to
// take l from another master.
func enslave(l, br netlink.Link) error {
	master := l.Attrs().MasterIndex
	if master == br.Attrs().Index {
		return nil
	}
	if master != 0 {
		name := fmt.Sprintf("index %d", master)
		if m, err := netlink.LinkByIndex(master); err == nil {
			name = m.Attrs().Name
		}
		return fmt.Errorf("already enslaved to %s", name)
	}
	if err := netlink.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attach to %s: %w", br.Attrs().Name, err)
	}
	return nil
}

// EnsureTap makes sure a persistent, single-queue tap device called name
// exists, owned by root (uid and gid 0), attached to the existing bridge
// bridge and up. A QEMU process running as root opens it with
// "-netdev tap,ifname=NAME,script=no,downscript=no" (no queues= option: the
// device is not multi-queue, and the kernel refuses to attach a multi-queue
// opener to it).
//
// mtu > 0 sets the tap's MTU; 0 gives it the bridge's MTU, so adding a tap
// never lowers the bridge's. The tap's own MAC is fe: followed by five bytes
// of a hash of name: that MAC is never the VM's (QEMU sets the guest MAC) and
// is higher than any MAC ferry or a vendor assigns, so it never becomes the
// bridge's address.
//
// It fails if name exists and is not a single-queue tap. A tap attached to a
// different bridge is moved to this one. Calling it again changes nothing.
func EnsureTap(name, bridge string, mtu int) error {
	if err := ensureTap(name, bridge, mtu); err != nil {
		return fmt.Errorf("ensure tap %s: %w", name, err)
	}
	return nil
}

func ensureTap(name, bridge string, mtu int) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	if mtu < 0 {
		return fmt.Errorf("mtu %d is negative", mtu)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("link %s is a %s, not a bridge", bridge, br.Type())
	}
	tap, err := tapLink(name)
	if err != nil {
		return err
	}
	if mtu == 0 {
		mtu = br.Attrs().MTU
	}
	if tap.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(tap, mtu); err != nil {
			return fmt.Errorf("set mtu %d: %w", mtu, err)
		}
	}
	if mac := tapMAC(name); tap.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(tap, mac); err != nil {
			return fmt.Errorf("set mac %s: %w", mac, err)
		}
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(tap, br); err != nil {
			return fmt.Errorf("attach to %s: %w", bridge, err)
		}
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// tapLink returns the tap called name, creating it if missing.
func tapLink(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		err = netlink.LinkAdd(&netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name},
			Mode:      netlink.TUNTAP_MODE_TAP,
			// TUN_EXCL makes a concurrent creation fail (EBUSY) instead
			// of silently sharing; the lookup below then finds it.
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_TUN_EXCL,
			Owner: 0,
			Group: 0,
		})
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("create: %w", err)
		}
		l, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, err
	}
	if err := checkTap(l); err != nil {
		return nil, err
	}
	return l, nil
}

// checkTap reports whether l is a single-queue tap.
func checkTap(l netlink.Link) error {
	t, ok := l.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("link %s exists and is a %s, not a tap", l.Attrs().Name, l.Type())
	}
	if t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("link %s exists and is a tun device, not a tap", l.Attrs().Name)
	}
	if t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		return fmt.Errorf("link %s exists and is a multi-queue tap", l.Attrs().Name)
	}
	return nil
}

// tapMAC is the MAC EnsureTap gives the tap called name.
func tapMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(name))
	return net.HardwareAddr{0xfe, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// DeleteTap deletes the tap device called name. A missing device is not an
// error; a link of that name that is not a tap is (it is left alone).
func DeleteTap(name string) error {
	l, err := existingTap("delete", name)
	if l == nil || err != nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}

// SetTapUp brings the tap device called name up or down. A missing device
// is not an error. A live migration's source takes its VM's tap down as
// soon as the guest has left: the bridge then forgets the port for the
// guest's MAC and floods its frames, which reach the target's tap at once
// instead of after the target's announcement.
func SetTapUp(name string, up bool) error {
	l, err := existingTap("set", name)
	if l == nil || err != nil {
		return err
	}
	if up {
		err = netlink.LinkSetUp(l)
	} else {
		err = netlink.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set tap %s up=%v: %w", name, up, err)
	}
	return nil
}

// existingTap returns the tap device called name, or nil and no error if
// there is none; a link of that name that is not a tap is an error (it is
// left alone). verb names the caller's action in errors.
func existingTap(verb, name string) (netlink.Link, error) {
	if err := checkIfName(name); err != nil {
		return nil, fmt.Errorf("%s tap: %w", verb, err)
	}
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s tap %s: %w", verb, name, err)
	}
	if _, ok := l.(*netlink.Tuntap); !ok {
		return nil, fmt.Errorf("%s tap %s: link is a %s, not a tap; left alone", verb, name, l.Type())
	}
	return l, nil
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// SendGratuitousARP broadcasts one gratuitous ARP request on iface saying
// that ip is at mac, so switches and neighbours learn a moved address at
// once. For VMs QEMU's announce-self does this from the guest's side; this
// is for addresses the host itself holds or stands in for.
func SendGratuitousARP(iface string, ip netip.Addr, mac net.HardwareAddr) error {
	if !ip.Is4() {
		return fmt.Errorf("gratuitous arp: %s is not an IPv4 address", ip)
	}
	if len(mac) != 6 {
		return fmt.Errorf("gratuitous arp: mac %s is not 6 bytes", mac)
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("gratuitous arp on %s: %w", iface, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("gratuitous arp on %s: packet socket: %w", iface, err)
	}
	defer unix.Close(fd)
	bcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  ifi.Index,
		Halen:    6,
		Addr:     bcast,
	}
	if err := unix.Sendto(fd, arpFrame(ip, mac), 0, to); err != nil {
		return fmt.Errorf("gratuitous arp on %s: send: %w", iface, err)
	}
	return nil
}

// arpFrame builds an Ethernet frame holding a gratuitous ARP request: sender
// and target protocol address both ip, target hardware address zero.
func arpFrame(ip netip.Addr, mac net.HardwareAddr) []byte {
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // destination: broadcast
	f = append(f, mac...)                             // source
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1)      // hardware type: Ethernet
	f = binary.BigEndian.AppendUint16(f, 0x0800) // protocol type: IPv4
	f = append(f, 6, 4)                          // address lengths
	f = binary.BigEndian.AppendUint16(f, 1)      // operation: request
	a := ip.As4()
	f = append(f, mac...)
	f = append(f, a[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, a[:]...)
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
