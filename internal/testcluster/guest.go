package testcluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/ferrycluster/ferry/internal/netid"
)

// Guest is a stand-in for a VM: a namespace "<prefix>-g-NAME" whose eth0,
// with a chosen MAC and address, is plugged into a host's bridge, as a VM's
// tap would be. Processes run in it with [Cluster.Command]. It has no
// default route. A guest is not a process of its host: KillHost leaves it
// alone, while CutLinks and Partition of the host do cut it off, as they
// would a VM.
type Guest struct {
	// Name is the guest's name.
	Name string
	// Namespace is its network namespace.
	Namespace string
	// IP is its address in the cluster subnet.
	IP netip.Addr
	// MAC is the MAC of its eth0.
	MAC net.HardwareAddr
	// Host is where it is plugged in.
	Host *Host
	// Port is the name of its veth end on the host's bridge.
	Port string
}

// AddGuest creates a guest called name (1 to 12 lower-case letters, digits
// or '-') on host h with address ip (inside the subnet, and not a host's,
// the client's or the root leg's) and MAC mac (a valid unicast MAC, see
// [netid.ParseMAC]; nil picks a random one with [netid.FerryMACPrefix]).
// Close removes it with the rest of the cluster.
func (c *Cluster) AddGuest(ctx context.Context, h *Host, name string, ip netip.Addr, mac net.HardwareAddr) (*Guest, error) {
	g, err := c.addGuest(ctx, h, name, ip, mac)
	if err != nil {
		return nil, fmt.Errorf("testcluster: add guest %s on %s: %w", name, h.Name, err)
	}
	c.log.Info("added guest", "guest", name, "host", h.Name, "ip", ip, "mac", g.MAC)
	return g, nil
}

func (c *Cluster) addGuest(ctx context.Context, h *Host, name string, ip netip.Addr, mac net.HardwareAddr) (*Guest, error) {
	if !guestNameRE.MatchString(name) {
		return nil, fmt.Errorf("name %q: want 1 to 12 lower-case letters, digits or '-'", name)
	}
	ip = ip.Unmap()
	if !c.subnet.Contains(ip) || ip == c.subnet.Addr() || ip == c.addr(1<<(32-c.subnet.Bits())-1) {
		return nil, fmt.Errorf("ip %s: want a host address inside %s", ip, c.subnet)
	}
	if ip == c.rootIP || ip == c.clientIP {
		return nil, fmt.Errorf("ip %s belongs to the root leg or the client", ip)
	}
	for _, o := range c.hosts {
		if o.IP == ip {
			return nil, fmt.Errorf("ip %s belongs to host %s", ip, o.Name)
		}
	}
	if mac == nil {
		s, err := netid.NewMAC(netid.FerryMACPrefix, nil, nil)
		if err != nil {
			return nil, err
		}
		mac, _ = net.ParseMAC(s)
	} else if err := netid.ValidateMAC(mac.String()); err != nil {
		return nil, err
	}
	g := &Guest{Name: name, Namespace: c.prefix + "-g-" + name, IP: ip, MAC: mac, Host: h, Port: "g-" + name}

	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return nil, fmt.Errorf("cluster %s is closed", c.prefix)
	case c.guests[name] != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("a guest called %s exists", name)
	}
	for _, o := range c.guests {
		if o.IP == ip {
			c.mu.Unlock()
			return nil, fmt.Errorf("ip %s belongs to guest %s", ip, o.Name)
		}
	}
	// Registered before it exists, so a failure half-way still leaves
	// it known to Namespaces (and it is removed by the cleanup below or
	// by Close in any case).
	c.guests[name] = g
	c.mu.Unlock()

	if err := c.buildGuest(ctx, g); err != nil {
		c.mu.Lock()
		delete(c.guests, name)
		c.mu.Unlock()
		_ = killAll(ctx, []string{g.Namespace})
		_ = deleteNamespace(ctx, g.Namespace) // removing the namespace removes the veth pair
		return nil, err
	}
	return g, nil
}

func (c *Cluster) buildGuest(ctx context.Context, g *Guest) error {
	if err := addNamespace(ctx, g.Namespace); err != nil {
		return err
	}
	gn, err := openNS(g.Namespace)
	if err != nil {
		return err
	}
	defer gn.close()
	hn, err := openNS(g.Host.Namespace)
	if err != nil {
		return err
	}
	defer hn.close()
	if err := hn.addPort(g.Port, g.Host.Bridge, gn, nsEth, g.MAC); err != nil {
		return err
	}
	if err := gn.up("lo"); err != nil {
		return err
	}
	if err := gn.addAddr(nsEth, netip.PrefixFrom(g.IP, c.subnet.Bits())); err != nil {
		return err
	}
	if err := gn.up(nsEth); err != nil {
		return err
	}
	return waitOperUp(ctx, []waitLink{{g.Host.Namespace, g.Port}, {g.Namespace, nsEth}})
}
