//go:build !linux

package netid

import (
	"errors"
	"net"
	"net/netip"
)

// errNotLinux is returned by the host functions on other systems.
var errNotLinux = errors.New("netid: host networking needs Linux")

// EnsureBridge needs Linux; elsewhere it fails.
func EnsureBridge(name, uplink string) error { return errNotLinux }

// EnsureTap needs Linux; elsewhere it fails.
func EnsureTap(name, bridge string, mtu int) error { return errNotLinux }

// DeleteTap needs Linux; elsewhere it fails.
func DeleteTap(name string) error { return errNotLinux }

// SetTapUp needs Linux.
func SetTapUp(name string, up bool) error { return errNotLinux }

// SendGratuitousARP needs Linux; elsewhere it fails.
func SendGratuitousARP(iface string, ip netip.Addr, mac net.HardwareAddr) error {
	return errNotLinux
}
