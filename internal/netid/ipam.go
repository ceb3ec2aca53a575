package netid

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Prefix lengths a Network may have. Below /8 the range is absurd for one
// LAN; above /30 there is no address left for an instance once the network,
// broadcast and gateway addresses are set aside.
const (
	minPrefixBits = 8
	maxPrefixBits = 30
)

// ErrFull is matched (with errors.Is) by the error [NextFree] returns when
// every host address of the network is taken.
var ErrFull = errors.New("network is full")

// ErrInUse is matched (with errors.Is) by the error [CheckRequested] returns
// when the requested address already belongs to an instance.
var ErrInUse = errors.New("address in use")

// Network is one IPv4 network from which instances get their addresses.
// The zero value is not valid; see [Network.Validate].
type Network struct {
	// Name identifies the network in errors and in the API, e.g. "lan".
	Name string
	// CIDR is the network in canonical prefix form, e.g. "10.77.0.0/24":
	// IPv4, /8 to /30, host bits zero.
	CIDR string
	// Gateway is the router address handed to instances. It is never
	// allocated. Optional: empty means the first host address (the ".1"
	// convention), which is then kept free for a router.
	Gateway string
	// Reserved lists addresses that are never allocated and never accepted
	// as a request, e.g. those of the hosts themselves. Each entry is an
	// address ("10.77.0.5"), a prefix ("10.77.0.0/28") or an inclusive
	// range ("10.77.0.2-10.77.0.99"), and must lie inside CIDR.
	Reserved []string
}

// addrRange is an inclusive range of addresses, with the entry it came from.
type addrRange struct {
	lo, hi netip.Addr
	entry  string
}

func (r addrRange) contains(a netip.Addr) bool {
	return r.lo.Compare(a) <= 0 && a.Compare(r.hi) <= 0
}

// parsedNetwork is a validated Network.
type parsedNetwork struct {
	name      string
	prefix    netip.Prefix
	network   netip.Addr
	broadcast netip.Addr
	gateway   netip.Addr
	reserved  []addrRange
}

// Validate reports whether n is usable for allocation. Errors name the
// offending field.
func (n Network) Validate() error {
	_, err := n.parse()
	return err
}

// GatewayAddr returns the gateway of a valid network: Gateway, or the first
// host address when Gateway is empty.
func (n Network) GatewayAddr() (netip.Addr, error) {
	p, err := n.parse()
	if err != nil {
		return netip.Addr{}, err
	}
	return p.gateway, nil
}

func (n Network) parse() (*parsedNetwork, error) {
	if n.Name == "" {
		return nil, errors.New("network: name is empty")
	}
	fail := func(format string, args ...any) (*parsedNetwork, error) {
		return nil, fmt.Errorf("network %s: "+format, append([]any{n.Name}, args...)...)
	}
	if n.CIDR == "" {
		return fail("cidr is empty")
	}
	prefix, err := netip.ParsePrefix(n.CIDR)
	if err != nil {
		return fail("cidr %q: not a prefix such as 10.77.0.0/24", n.CIDR)
	}
	if !prefix.Addr().Is4() {
		return fail("cidr %q: only IPv4 networks are supported", n.CIDR)
	}
	if b := prefix.Bits(); b < minPrefixBits || b > maxPrefixBits {
		return fail("cidr %q: prefix length /%d not supported (want /%d to /%d)", n.CIDR, b, minPrefixBits, maxPrefixBits)
	}
	if m := prefix.Masked(); m != prefix {
		return fail("cidr %q: host bits are set (did you mean %s?)", n.CIDR, m)
	}
	p := &parsedNetwork{
		name:      n.Name,
		prefix:    prefix,
		network:   prefix.Addr(),
		broadcast: lastAddr(prefix),
	}
	if n.Gateway == "" {
		p.gateway = p.network.Next()
	} else {
		gw, err := netip.ParseAddr(n.Gateway)
		if err != nil || !gw.Is4() {
			return fail("gateway %q: not an IPv4 address", n.Gateway)
		}
		if !prefix.Contains(gw) {
			return fail("gateway %s is outside %s", gw, prefix)
		}
		if gw == p.network || gw == p.broadcast {
			return fail("gateway %s is the %s of %s", gw, p.special(gw), prefix)
		}
		p.gateway = gw
	}
	for i, entry := range n.Reserved {
		r, err := parseRange(entry)
		if err != nil {
			return fail("reserved[%d]: %v", i, err)
		}
		if !prefix.Contains(r.lo) || !prefix.Contains(r.hi) {
			return fail("reserved[%d] %q is not inside %s", i, entry, prefix)
		}
		p.reserved = append(p.reserved, r)
	}
	return p, nil
}

// parseRange parses one Reserved entry.
func parseRange(entry string) (addrRange, error) {
	switch {
	case strings.Contains(entry, "/"):
		pr, err := netip.ParsePrefix(entry)
		if err != nil || !pr.Addr().Is4() {
			return addrRange{}, fmt.Errorf("%q is not an IPv4 prefix", entry)
		}
		pr = pr.Masked()
		return addrRange{lo: pr.Addr(), hi: lastAddr(pr), entry: entry}, nil
	case strings.Contains(entry, "-"):
		los, his, _ := strings.Cut(entry, "-")
		lo, err1 := netip.ParseAddr(strings.TrimSpace(los))
		hi, err2 := netip.ParseAddr(strings.TrimSpace(his))
		if err1 != nil || err2 != nil || !lo.Is4() || !hi.Is4() {
			return addrRange{}, fmt.Errorf("%q is not a range of IPv4 addresses such as 10.77.0.2-10.77.0.9", entry)
		}
		if hi.Less(lo) {
			return addrRange{}, fmt.Errorf("range %q ends before it starts", entry)
		}
		return addrRange{lo: lo, hi: hi, entry: entry}, nil
	default:
		a, err := netip.ParseAddr(entry)
		if err != nil || !a.Is4() {
			return addrRange{}, fmt.Errorf("%q is not an IPv4 address", entry)
		}
		return addrRange{lo: a, hi: a, entry: entry}, nil
	}
}

// lastAddr returns the highest address of a masked IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	bits := p.Bits()
	for i := range b {
		hostBits := min(max(32-bits-8*(3-i), 0), 8)
		b[i] |= byte(1<<hostBits - 1)
	}
	return netip.AddrFrom4(b)
}

// special names an address that can never be an instance's, or returns "".
func (p *parsedNetwork) special(a netip.Addr) string {
	switch a {
	case p.network:
		return "network address"
	case p.broadcast:
		return "broadcast address"
	case p.gateway:
		return "gateway"
	}
	return ""
}

// parseUsed turns the keys of an ip->owner map into addresses.
func parseUsed(used map[string]string) (map[netip.Addr]string, error) {
	out := make(map[netip.Addr]string, len(used))
	for k, v := range used {
		a, err := netip.ParseAddr(k)
		if err != nil {
			return nil, fmt.Errorf("used: %q is not an IP address", k)
		}
		out[a.Unmap()] = v
	}
	return out, nil
}

// NextFree returns the lowest host address of n that is not the network or
// broadcast address, the gateway (see [Network.Gateway]), inside a Reserved
// entry, or in use (used[ip] is true; keys are IP addresses). The result
// depends only on its arguments. When nothing is free it returns an error
// "network NAME is full" that matches [ErrFull].
func NextFree(n Network, used map[string]bool) (netip.Addr, error) {
	p, err := n.parse()
	if err != nil {
		return netip.Addr{}, err
	}
	taken := make(map[netip.Addr]string, len(used))
	for k, inUse := range used {
		a, err := netip.ParseAddr(k)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("network %s: used: %q is not an IP address", n.Name, k)
		}
		if inUse {
			taken[a.Unmap()] = ""
		}
	}
	for a := p.network.Next(); a.IsValid() && a.Less(p.broadcast); a = a.Next() {
		if a == p.gateway {
			continue
		}
		if r := p.reservedAt(a); r != nil {
			a = r.hi // skip the whole entry; the loop's Next steps past it
			continue
		}
		if _, ok := taken[a]; ok {
			continue
		}
		return a, nil
	}
	return netip.Addr{}, fullError{network: n.Name}
}

// reservedAt returns the first Reserved entry that holds a, or nil.
func (p *parsedNetwork) reservedAt(a netip.Addr) *addrRange {
	for i := range p.reserved {
		if p.reserved[i].contains(a) {
			return &p.reserved[i]
		}
	}
	return nil
}

// CheckRequested reports whether ip may be given to an instance that asked
// for it: an IPv4 address inside n, not its network or broadcast address,
// not its gateway, not reserved, and not a key of used (an ip -> instance
// map). When ip is in use the error names the instance holding it and
// matches [ErrInUse].
func CheckRequested(n Network, ip string, used map[string]string) error {
	p, err := n.parse()
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return fmt.Errorf("ip %q: not an IPv4 address", ip)
	}
	if !p.prefix.Contains(a) {
		return fmt.Errorf("ip %s is outside network %s (%s)", a, n.Name, p.prefix)
	}
	if what := p.special(a); what != "" {
		return fmt.Errorf("ip %s is the %s of network %s", a, what, n.Name)
	}
	if r := p.reservedAt(a); r != nil {
		return fmt.Errorf("ip %s is reserved in network %s (%q)", a, n.Name, r.entry)
	}
	taken, err := parseUsed(used)
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	if by, ok := taken[a]; ok {
		return inUseError{ip: a, by: by}
	}
	return nil
}

// fullError is the error of NextFree on a full network.
type fullError struct{ network string }

func (e fullError) Error() string        { return fmt.Sprintf("network %s is full", e.network) }
func (e fullError) Is(target error) bool { return target == ErrFull }

// inUseError is the error of CheckRequested for an address in use.
type inUseError struct {
	ip netip.Addr
	by string
}

func (e inUseError) Error() string {
	if e.by == "" {
		return fmt.Sprintf("ip %s is already in use", e.ip)
	}
	return fmt.Sprintf("ip %s is already used by %s", e.ip, e.by)
}

func (e inUseError) Is(target error) bool { return target == ErrInUse }
