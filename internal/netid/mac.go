package netid

import (
	crand "crypto/rand"
	"fmt"
	"io"
	"net"
)

// FerryMACPrefix is the prefix of the MAC addresses ferry gives instances:
// 0e:f0:00. Its first octet has the locally administered bit (0x02) set and
// the multicast bit (0x01) clear, so the addresses are unicast and can never
// equal a vendor-assigned (universally administered) one. QEMU's default
// prefix 52:54:00 is locally administered too, but every QEMU and libvirt
// guest uses it; a prefix of ferry's own tells its guests apart. Treat it as
// a constant.
var FerryMACPrefix = [3]byte{0x0e, 0xf0, 0x00}

// macTries bounds how many random candidates NewMAC draws before giving up.
const macTries = 128

// NewMAC returns a random unicast, locally administered MAC address with the
// given prefix, in canonical form (lower-case, colon separated), that is not
// a key of used (a mac -> instance map; keys in any form [ParseMAC] accepts).
// The three bytes after the prefix come from rand; a nil rand means
// crypto/rand. The prefix must have the locally administered bit set and the
// multicast bit clear, like [FerryMACPrefix].
func NewMAC(prefix [3]byte, used map[string]string, rand io.Reader) (string, error) {
	if prefix[0]&0x01 != 0 {
		return "", fmt.Errorf("mac prefix %s: multicast bit set", net.HardwareAddr(prefix[:]))
	}
	if prefix[0]&0x02 == 0 {
		return "", fmt.Errorf("mac prefix %s: not locally administered (set bit 0x02 of the first octet)", net.HardwareAddr(prefix[:]))
	}
	if rand == nil {
		rand = crand.Reader
	}
	taken := make(map[string]bool, len(used))
	for k := range used {
		hw, err := net.ParseMAC(k)
		if err != nil {
			return "", fmt.Errorf("used: %q is not a MAC address", k)
		}
		taken[hw.String()] = true
	}
	mac := make(net.HardwareAddr, 6)
	copy(mac, prefix[:])
	for range macTries {
		if _, err := io.ReadFull(rand, mac[3:]); err != nil {
			return "", fmt.Errorf("new mac: read random bytes: %w", err)
		}
		if s := mac.String(); !taken[s] {
			return s, nil
		}
	}
	return "", fmt.Errorf("new mac: no free address with prefix %s after %d tries (%d in use)",
		net.HardwareAddr(prefix[:]), macTries, len(used))
}

// ParseMAC parses an instance's MAC address in any form [net.ParseMAC]
// accepts ("0e:f0:00:12:34:56", "0E-F0-00-12-34-56", "0ef0.0012.3456") and
// rejects what cannot be a VM's unicast address: anything but 6 bytes
// (EUI-48), the zero address, and multicast addresses (which include
// broadcast). The canonical form of a valid address is its String().
func ParseMAC(s string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("mac %q: not a MAC address such as 0e:f0:00:12:34:56", s)
	}
	if len(hw) != 6 {
		return nil, fmt.Errorf("mac %q: %d bytes, want 6 (EUI-48)", s, len(hw))
	}
	switch {
	case isZero(hw):
		return nil, fmt.Errorf("mac %q: the zero address", s)
	case isBroadcast(hw):
		return nil, fmt.Errorf("mac %q: the broadcast address", s)
	case hw[0]&0x01 != 0:
		return nil, fmt.Errorf("mac %q: a multicast address (bit 0x01 of the first octet is set)", s)
	}
	return hw, nil
}

// ValidateMAC reports whether s is a valid instance MAC; see [ParseMAC].
func ValidateMAC(s string) error {
	_, err := ParseMAC(s)
	return err
}

func isZero(hw net.HardwareAddr) bool {
	for _, b := range hw {
		if b != 0 {
			return false
		}
	}
	return true
}

func isBroadcast(hw net.HardwareAddr) bool {
	for _, b := range hw {
		if b != 0xff {
			return false
		}
	}
	return true
}
