package testcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrycluster/ferry/internal/netid"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults and limits of a Config.
const (
	// DefaultSubnet is the cluster's LAN unless Config.Subnet says otherwise.
	DefaultSubnet = "10.77.0.0/24"
	// DefaultBridge is the name of the bridge inside each host namespace.
	DefaultBridge = "ferrybr0"
	// DefaultHosts is the number of hosts when Config.Hosts is 0.
	DefaultHosts = 3
	// MaxHosts is the most hosts the addressing plan has room for (.11-.99).
	MaxHosts = 89
)

// Offsets from the network address, and fixed names; see the package doc.
const (
	rootOffset      = 1
	clientOffset    = 2
	firstHostOffset = 11
	firstVMOffset   = 100

	lanBridge  = "lan0"   // the LAN switch, in P-lan
	rootPeer   = "root"   // the root leg's end in P-lan
	clientLink = "client" // the client's port in P-lan
	nsEth      = "eth0"   // every namespace's own end of its veth

	netnsDir      = "/run/netns"
	rtTableUnspec = 0  // RT_TABLE_UNSPEC: with RT_FILTER_TABLE, every table
	maxPrefix     = 13 // so that the root leg P-r fits in IFNAMSIZ-1
	opTimeout     = 10 * time.Second
	settleTimeout = 5 * time.Second
)

// Config describes a cluster to Start.
type Config struct {
	// Prefix starts every namespace and link name the cluster creates, so
	// parallel runs do not collide: lower-case letters, digits and '-', at
	// most 13 characters. Optional: the default is "fy", this process's
	// PID in base 36, "-" and a sequence number (see the package doc), and
	// leftovers of an earlier run with the same default prefix are removed
	// first. An explicit prefix that already has namespaces is an error.
	Prefix string
	// Hosts is the number of host namespaces, 1 to MaxHosts; 0 means
	// DefaultHosts.
	Hosts int
	// Subnet is the LAN, an IPv4 prefix of /24 or larger in canonical form.
	// Optional: DefaultSubnet, or with RootLeg the first free 10.77.N.0/24.
	Subnet string
	// Bridge is the name of the bridge in each host namespace. Optional:
	// DefaultBridge.
	Bridge string
	// WithClient adds the client namespace P-client at .2.
	WithClient bool
	// RootLeg adds a veth P-r from the caller's namespace into the LAN,
	// holding .1, so the caller can reach every host and guest.
	RootLeg bool
	// Logger receives one line per cluster operation. Optional:
	// slog.Default().
	Logger *slog.Logger

	// stepHook, when set, runs before each step of Start and fails it by
	// returning an error (tests use it to stop Start half-way).
	stepHook func(step string) error
}

// Cluster is a running set of namespaces. Its methods are safe for
// concurrent use.
type Cluster struct {
	log      *slog.Logger
	prefix   string
	subnet   netip.Prefix
	bridge   string
	lanNS    string
	hosts    []*Host
	clientNS string
	clientIP netip.Addr
	rootLink string
	rootIP   netip.Addr
	hook     func(string) error

	mu     sync.Mutex
	procs  []trackedProc // processes started through the cluster
	guests map[string]*Guest
	closed bool
}

// Host is one host namespace.
type Host struct {
	// Name is the host's short name, "h1", "h2", ...
	Name string
	// Namespace is the network namespace, "<prefix>-h1", usable with
	// `ip netns exec`.
	Namespace string
	// IP is the host's address on the LAN, held by Bridge.
	IP netip.Addr
	// Bridge is the host's bridge (Config.Bridge), where instance taps go.
	Bridge string
	// LanLink is the name of the host's port on the LAN switch, inside the
	// lan namespace; CutLinks sets it down.
	LanLink string

	c *Cluster
}

type trackedProc struct {
	ns  string
	cmd *exec.Cmd
}

var (
	prefixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	// defaultPrefixRE matches the prefixes Start makes itself.
	defaultPrefixRE = regexp.MustCompile(`^fy([0-9a-z]{1,13})-([0-9a-z]+)$`)
	guestNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,11}$`)
	hostSuffixRE    = regexp.MustCompile(`^h[1-9][0-9]*$`)
	// staleNSRE and staleLinkRE find the default prefix in a namespace or
	// root leg name; neither part of a default prefix contains '-'.
	staleNSRE   = regexp.MustCompile(`^(fy[0-9a-z]+-[0-9a-z]+)-(?:lan|client|h[1-9][0-9]*|g-[a-z0-9][a-z0-9-]*)$`)
	staleLinkRE = regexp.MustCompile(`^(fy[0-9a-z]+-[0-9a-z]+)-r$`)
)

// prefixSeq numbers the default prefixes of this process.
var prefixSeq atomic.Uint64

// defaultPrefix returns a fresh default prefix for this process.
func defaultPrefix() string {
	return "fy" + strconv.FormatInt(int64(os.Getpid()), 36) + "-" + strconv.FormatUint(prefixSeq.Add(1)-1, 36)
}

func checkPrefix(p string) error {
	if len(p) > maxPrefix || !prefixRE.MatchString(p) {
		return fmt.Errorf("testcluster: prefix %q: want 1 to %d lower-case letters, digits or '-', starting with a letter or digit", p, maxPrefix)
	}
	return nil
}

// ownsNamespace reports whether a namespace called name belongs to the
// cluster with this prefix.
func ownsNamespace(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return false
	}
	if rest == "lan" || rest == "client" || hostSuffixRE.MatchString(rest) {
		return true
	}
	g, ok := strings.CutPrefix(rest, "g-")
	return ok && guestNameRE.MatchString(g)
}

// Preflight reports why this machine cannot build clusters: not root, or
// `ip` (iproute2) missing. It returns nil when Start can work.
func Preflight() error {
	if runtime.GOOS != "linux" {
		return errors.New("testcluster: needs Linux network namespaces")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("testcluster: needs root to create network namespaces (running as uid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("testcluster: `ip` not found in PATH: install iproute2")
	}
	return nil
}

// Start builds the cluster described by cfg; see the package doc for the
// topology and addresses. On error everything it created is removed again.
// ctx bounds Start only, not the cluster's life: call Close to tear it down.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	autoPrefix := cfg.Prefix == ""
	if autoPrefix {
		cfg.Prefix = defaultPrefix()
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Hosts == 0 {
		cfg.Hosts = DefaultHosts
	}
	if cfg.Hosts < 1 || cfg.Hosts > MaxHosts {
		return nil, fmt.Errorf("testcluster: hosts = %d: want 1 to %d", cfg.Hosts, MaxHosts)
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if len(cfg.Bridge) > 15 || !prefixRE.MatchString(cfg.Bridge) {
		return nil, fmt.Errorf("testcluster: bridge name %q: want 1 to 15 lower-case letters, digits or '-'", cfg.Bridge)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cluster{
		log:    cfg.Logger.With("cluster", cfg.Prefix),
		prefix: cfg.Prefix,
		bridge: cfg.Bridge,
		lanNS:  cfg.Prefix + "-lan",
		hook:   cfg.stepHook,
		guests: map[string]*Guest{},
	}

	// One Start at a time on this machine: it makes the check for a free
	// subnet and for leftover names atomic with the creation.
	unlock, err := lockMachine(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()

	if c.subnet, err = pickSubnet(cfg.Subnet, cfg.RootLeg); err != nil {
		return nil, err
	}
	if left := leftovers(c.prefix); len(left) > 0 {
		if !autoPrefix {
			return nil, fmt.Errorf("testcluster: prefix %s is in use (%s); remove a stale run with testcluster.Cleanup", c.prefix, strings.Join(left, ", "))
		}
		// Our PID and a fresh sequence number: a dead earlier process
		// with the same PID left these.
		c.log.Info("removing leftovers of a dead run with the same prefix", "names", left)
		if err := Cleanup(ctx, c.prefix); err != nil {
			return nil, err
		}
	}

	for i := range cfg.Hosts {
		n := fmt.Sprintf("h%d", i+1)
		c.hosts = append(c.hosts, &Host{
			Name:      n,
			Namespace: c.prefix + "-" + n,
			IP:        c.addr(firstHostOffset + i),
			Bridge:    cfg.Bridge,
			LanLink:   n,
			c:         c,
		})
	}
	if cfg.WithClient {
		c.clientNS, c.clientIP = c.prefix+"-client", c.addr(clientOffset)
	}
	if cfg.RootLeg {
		c.rootLink, c.rootIP = c.prefix+"-r", c.addr(rootOffset)
	}

	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleaning up after the failed start: %w", cerr))
			}
		}
	}()
	if err := c.build(ctx); err != nil {
		return nil, fmt.Errorf("testcluster: start %s: %w", c.prefix, err)
	}
	c.log.Info("cluster up", "subnet", c.subnet, "hosts", len(c.hosts), "client", c.clientNS != "", "root_leg", c.rootLink != "")
	return c, nil
}

// addr returns the address at offset from the subnet's network address.
func (c *Cluster) addr(offset int) netip.Addr {
	b := c.subnet.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(offset)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (c *Cluster) step(name string) error {
	if c.hook != nil {
		if err := c.hook(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// build creates the namespaces and links.
func (c *Cluster) build(ctx context.Context) error {
	all := []string{c.lanNS}
	for _, h := range c.hosts {
		all = append(all, h.Namespace)
	}
	if c.clientNS != "" {
		all = append(all, c.clientNS)
	}
	for _, ns := range all {
		if err := c.step("netns " + ns); err != nil {
			return err
		}
		if err := addNamespace(ctx, ns); err != nil {
			return err
		}
	}

	lan, err := openNS(c.lanNS)
	if err != nil {
		return err
	}
	defer lan.close()
	if err := c.step("lan"); err != nil {
		return err
	}
	if err := lan.up("lo"); err != nil {
		return err
	}
	if _, err := lan.addBridge(lanBridge, nil); err != nil {
		return err
	}
	var waits []waitLink

	for _, h := range c.hosts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.step("host " + h.Name); err != nil {
			return err
		}
		if err := c.buildHost(lan, h); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		waits = append(waits, waitLink{c.lanNS, h.LanLink}, waitLink{h.Namespace, nsEth})
	}

	if c.clientNS != "" {
		if err := c.step("client"); err != nil {
			return err
		}
		if err := c.buildClient(lan); err != nil {
			return fmt.Errorf("client: %w", err)
		}
		waits = append(waits, waitLink{c.lanNS, clientLink}, waitLink{c.clientNS, nsEth})
	}

	if c.rootLink != "" {
		if err := c.step("root leg"); err != nil {
			return err
		}
		if err := c.buildRootLeg(lan); err != nil {
			return fmt.Errorf("root leg: %w", err)
		}
		waits = append(waits, waitLink{c.lanNS, rootPeer}, waitLink{"", c.rootLink})
	}

	if err := c.step("settle"); err != nil {
		return err
	}
	return waitOperUp(ctx, waits)
}

// buildHost wires one host: LAN port, eth0, the host bridge and its address.
func (c *Cluster) buildHost(lan *nsLinks, h *Host) error {
	hn, err := openNS(h.Namespace)
	if err != nil {
		return err
	}
	defer hn.close()
	if err := lan.addPort(h.LanLink, lanBridge, hn, nsEth, nil); err != nil {
		return err
	}
	if err := hn.up("lo"); err != nil {
		return err
	}
	eth, err := hn.h.LinkByName(nsEth)
	if err != nil {
		return fmt.Errorf("%s: %w", nsEth, err)
	}
	// The bridge keeps eth0's MAC for good: otherwise it would take the
	// lowest MAC of its ports, and change as instance taps come and go.
	br, err := hn.addBridge(h.Bridge, eth.Attrs().HardwareAddr)
	if err != nil {
		return err
	}
	if err := hn.h.LinkSetMaster(eth, br); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", nsEth, h.Bridge, err)
	}
	if err := hn.addAddr(h.Bridge, netip.PrefixFrom(h.IP, c.subnet.Bits())); err != nil {
		return err
	}
	return hn.up(nsEth)
}

func (c *Cluster) buildClient(lan *nsLinks) error {
	cn, err := openNS(c.clientNS)
	if err != nil {
		return err
	}
	defer cn.close()
	if err := lan.addPort(clientLink, lanBridge, cn, nsEth, nil); err != nil {
		return err
	}
	if err := cn.up("lo"); err != nil {
		return err
	}
	if err := cn.addAddr(nsEth, netip.PrefixFrom(c.clientIP, c.subnet.Bits())); err != nil {
		return err
	}
	return cn.up(nsEth)
}

// buildRootLeg adds the veth from the caller's namespace into the LAN. Its
// root end never forwards: IPv4 forwarding off, IPv6 off, before it is up.
func (c *Cluster) buildRootLeg(lan *nsLinks) error {
	root, err := openRoot()
	if err != nil {
		return err
	}
	defer root.close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = c.rootLink
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: rootPeer, PeerNamespace: netlink.NsFd(int(lan.ns)), PeerTxQLen: -1}
	if err := root.h.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s: %w", c.rootLink, err)
	}
	for _, s := range []struct{ path, value string }{
		{"/proc/sys/net/ipv6/conf/" + c.rootLink + "/disable_ipv6", "1"},
		{"/proc/sys/net/ipv4/conf/" + c.rootLink + "/forwarding", "0"},
	} {
		if err := os.WriteFile(s.path, []byte(s.value), 0); err != nil {
			return fmt.Errorf("sysctl: %w", err)
		}
	}
	if err := root.addAddr(c.rootLink, netip.PrefixFrom(c.rootIP, c.subnet.Bits())); err != nil {
		return err
	}
	if err := lan.enslave(rootPeer, lanBridge); err != nil {
		return err
	}
	if err := lan.up(rootPeer); err != nil {
		return err
	}
	return root.up(c.rootLink)
}

// Close kills every process the cluster started and every process still in
// its namespaces, then deletes its namespaces and links. It works after a
// failed or half-finished Start, and a second call does nothing and returns
// nil. Guests go too.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()

	for _, p := range procs {
		_ = p.cmd.Process.Kill() // already gone is fine
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Cleanup(ctx, c.prefix)
	if err != nil {
		c.log.Warn("close", "err", err)
	} else {
		c.log.Info("cluster removed")
	}
	return err
}

// Prefix returns the prefix of every name the cluster created.
func (c *Cluster) Prefix() string { return c.prefix }

// Hosts returns the hosts, h1 first. The slice is the caller's to keep.
func (c *Cluster) Hosts() []*Host { return append([]*Host(nil), c.hosts...) }

// LanNS returns the name of the namespace holding the LAN switch.
func (c *Cluster) LanNS() string { return c.lanNS }

// ClientNS returns the client namespace, or "" without Config.WithClient.
func (c *Cluster) ClientNS() string { return c.clientNS }

// ClientIP returns the client's address (invalid without a client).
func (c *Cluster) ClientIP() netip.Addr { return c.clientIP }

// Subnet returns the LAN's prefix.
func (c *Cluster) Subnet() netip.Prefix { return c.subnet }

// RootIP returns the root leg's address (invalid without Config.RootLeg).
func (c *Cluster) RootIP() netip.Addr { return c.rootIP }

// RootLink returns the root leg's link name in the caller's namespace, or "".
func (c *Cluster) RootLink() string { return c.rootLink }

// Namespaces returns the names of the cluster's namespaces: lan, hosts,
// client, then guests.
func (c *Cluster) Namespaces() []string {
	out := []string{c.lanNS}
	for _, h := range c.hosts {
		out = append(out, h.Namespace)
	}
	if c.clientNS != "" {
		out = append(out, c.clientNS)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.guests {
		out = append(out, g.Namespace)
	}
	return out
}

// Network returns the IPAM network for instances on this cluster's LAN:
// named "default" (the network the server uses when an instance names
// none), gateway .1 (the root leg, which does not forward; see the
// package doc) and .2-.99 reserved for the client, hosts and future
// infrastructure, so instances get .100 upward.
func (c *Cluster) Network() netid.Network {
	return netid.Network{
		Name:     "default",
		CIDR:     c.subnet.String(),
		Gateway:  c.addr(rootOffset).String(),
		Reserved: []string{c.addr(clientOffset).String() + "-" + c.addr(firstVMOffset-1).String()},
	}
}

// SpareIP returns an address on the LAN that no host, client or instance
// gets (the last one IPAM keeps reserved): for a guest outside ferry, such
// as the benchmarks' bare QEMU baseline.
func (c *Cluster) SpareIP() netip.Addr { return c.addr(firstVMOffset - 1) }

// hasNamespace reports whether ns is one of the cluster's namespaces.
func (c *Cluster) hasNamespace(ns string) bool {
	return ns != "" && contains(c.Namespaces(), ns)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// pickSubnet parses the configured subnet or picks a free one.
func pickSubnet(s string, rootLeg bool) (netip.Prefix, error) {
	if s != "" {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil || !p.Addr().Is4():
			return netip.Prefix{}, fmt.Errorf("testcluster: subnet %q: not an IPv4 prefix", s)
		case p.Masked() != p:
			return netip.Prefix{}, fmt.Errorf("testcluster: subnet %q: host bits set (did you mean %s?)", s, p.Masked())
		case p.Bits() > 24 || p.Bits() < 8:
			return netip.Prefix{}, fmt.Errorf("testcluster: subnet %q: want /8 to /24, so the addressing plan fits", s)
		}
		if rootLeg {
			if link, err := overlappingRoute(p); err != nil {
				return netip.Prefix{}, err
			} else if link != "" {
				return netip.Prefix{}, fmt.Errorf("testcluster: subnet %s overlaps a route via %s in this namespace; a root leg needs a subnet of its own (choose another Subnet)", p, link)
			}
		}
		return p, nil
	}
	def := netip.MustParsePrefix(DefaultSubnet)
	if !rootLeg {
		return def, nil
	}
	for n := range 256 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(n), 0}), 24)
		link, err := overlappingRoute(p)
		if err != nil {
			return netip.Prefix{}, err
		}
		if link == "" {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("testcluster: every 10.77.N.0/24 is routed in this namespace; set Config.Subnet")
}

// overlappingRoute returns the link of a route in the caller's namespace
// that overlaps p, or "".
func overlappingRoute(p netip.Prefix) (string, error) {
	root, err := openRoot()
	if err != nil {
		return "", err
	}
	defer root.close()
	routes, err := root.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: rtTableUnspec}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("testcluster: list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		rp, ok := prefixOf(r.Dst)
		// A default route (/0) overlaps everything but is no clash: the
		// root leg's own route is more specific.
		if !ok || rp.Bits() == 0 || !rp.Overlaps(p) {
			continue
		}
		name := fmt.Sprintf("index %d", r.LinkIndex)
		if l, err := root.h.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		return name, nil
	}
	return "", nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// leftovers lists existing namespaces and links that a cluster with this
// prefix would own.
func leftovers(prefix string) []string {
	out, _ := namespacesOf(prefix)
	if _, err := netlink.LinkByName(prefix + "-r"); err == nil {
		out = append(out, "link "+prefix+"-r")
	}
	return out
}

// namespacesOf lists the named namespaces that belong to prefix.
func namespacesOf(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if ownsNamespace(prefix, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Cleanup removes everything a cluster with this prefix may have left: it
// kills every process in the namespaces "<prefix>-lan", "<prefix>-client",
// "<prefix>-hN" and "<prefix>-g-NAME", deletes the root leg "<prefix>-r"
// and then the namespaces. Names that merely start with prefix are left
// alone. Nothing to remove is not an error.
func Cleanup(ctx context.Context, prefix string) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	names, err := namespacesOf(prefix)
	if err != nil {
		return fmt.Errorf("testcluster: cleanup %s: %w", prefix, err)
	}
	var errs []error
	if err := killAll(ctx, names); err != nil {
		errs = append(errs, err)
	}
	if err := deleteRootLeg(prefix + "-r"); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range names {
		if err := deleteNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testcluster: cleanup %s: %w", prefix, err)
	}
	return nil
}

// CleanupStale removes the leftovers of clusters with default prefixes
// whose creating process is no longer running (see the package doc), and
// returns the prefixes it removed. Clusters of live processes, including
// this one, are left alone. A PID reused by an unrelated live process hides
// its leftovers until that process ends.
func CleanupStale(ctx context.Context) ([]string, error) {
	candidates := map[string]bool{}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("testcluster: cleanup stale: %w", err)
	}
	for _, e := range entries {
		if m := staleNSRE.FindStringSubmatch(e.Name()); m != nil {
			candidates[m[1]] = true
		}
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if m := staleLinkRE.FindStringSubmatch(l.Attrs().Name); m != nil {
				candidates[m[1]] = true
			}
		}
	}
	var removed []string
	var errs []error
	for p := range candidates {
		m := defaultPrefixRE.FindStringSubmatch(p)
		if m == nil {
			continue
		}
		pid, err := strconv.ParseInt(m[1], 36, 64)
		if err != nil || pid <= 0 || int(pid) == os.Getpid() || processAlive(int(pid)) {
			continue
		}
		if err := Cleanup(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// processAlive reports whether a process with this PID exists.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// lockMachine takes an exclusive lock shared by every process using this
// package on the machine, waiting for it at most until ctx ends.
func lockMachine(ctx context.Context) (unlock func(), err error) {
	const path = "/run/lock/ferry-testcluster.lock"
	if err := os.MkdirAll("/run/lock", 0o755); err != nil {
		return nil, fmt.Errorf("testcluster: lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("testcluster: lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("testcluster: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("testcluster: waiting for %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ipCmd runs `ip args...` and returns its error with its output.
func ipCmd(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func addNamespace(ctx context.Context, ns string) error {
	return ipCmd(ctx, "netns", "add", ns)
}

func deleteNamespace(ctx context.Context, ns string) error {
	// A fresh context: cleanup must go on after the caller's ended.
	if ctx.Err() != nil {
		ctx = context.Background()
	}
	return ipCmd(ctx, "netns", "delete", ns)
}

// deleteRootLeg deletes the root leg called name, if present.
func deleteRootLeg(name string) error {
	root, err := openRoot()
	if err != nil {
		return err
	}
	defer root.close()
	l, err := root.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("root leg %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("root leg %s: is a %s, not a veth; left alone", name, l.Type())
	}
	if err := root.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete root leg %s: %w", name, err)
	}
	return nil
}

// nsLinks is a netlink handle bound to one network namespace; it needs no
// locked thread.
type nsLinks struct {
	name string // "" for the caller's namespace
	ns   netns.NsHandle
	h    *netlink.Handle
}

func openNS(name string) (*nsLinks, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return &nsLinks{name: name, ns: ns, h: h}, nil
}

// openRoot opens the namespace of this process (of its main thread), which
// is where the root leg lives, whatever thread the caller runs on.
func openRoot() (*nsLinks, error) {
	ns, err := netns.GetFromPid(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("open own netns: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in own netns: %w", err)
	}
	return &nsLinks{ns: ns, h: h}, nil
}

func (n *nsLinks) close() {
	n.h.Close()
	n.ns.Close()
}

func (n *nsLinks) where() string {
	if n.name == "" {
		return "root namespace"
	}
	return n.name
}

func (n *nsLinks) up(link string) error {
	l, err := n.h.LinkByName(link)
	if err == nil {
		err = n.h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("set %s up in %s: %w", link, n.where(), err)
	}
	return nil
}

func (n *nsLinks) down(link string) error {
	l, err := n.h.LinkByName(link)
	if err == nil {
		err = n.h.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set %s down in %s: %w", link, n.where(), err)
	}
	return nil
}

// addBridge creates a bridge, pins its MAC (mac, or its own first one) and
// sets it up.
func (n *nsLinks) addBridge(name string, mac net.HardwareAddr) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := n.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		return nil, fmt.Errorf("add bridge %s in %s: %w", name, n.where(), err)
	}
	br, err := n.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s in %s: %w", name, n.where(), err)
	}
	if mac == nil {
		mac = br.Attrs().HardwareAddr
	}
	if err := n.h.LinkSetHardwareAddr(br, mac); err != nil {
		return nil, fmt.Errorf("pin mac of %s in %s: %w", name, n.where(), err)
	}
	if err := n.h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("set %s up in %s: %w", name, n.where(), err)
	}
	return br, nil
}

func (n *nsLinks) enslave(link, bridge string) error {
	l, err := n.h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", link, n.where(), err)
	}
	br, err := n.h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", bridge, n.where(), err)
	}
	if err := n.h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("enslave %s to %s in %s: %w", link, bridge, n.where(), err)
	}
	return nil
}

// addPort creates a veth whose end port (in n) joins bridge and is up, and
// whose other end peerName lands in peer, down, with MAC peerMAC if given.
func (n *nsLinks) addPort(port, bridge string, peer *nsLinks, peerName string, peerMAC net.HardwareAddr) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = port
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: peerName, PeerNamespace: netlink.NsFd(int(peer.ns)), PeerTxQLen: -1, PeerHardwareAddr: peerMAC}
	if err := n.h.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s (%s) <-> %s (%s): %w", port, n.where(), peerName, peer.where(), err)
	}
	if err := n.enslave(port, bridge); err != nil {
		return err
	}
	return n.up(port)
}

func (n *nsLinks) addAddr(link string, p netip.Prefix) error {
	l, err := n.h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", link, n.where(), err)
	}
	ipnet := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	if err := n.h.AddrAdd(l, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("add %s to %s in %s: %w", p, link, n.where(), err)
	}
	return nil
}

// waitLink names a link to wait for: ns "" is the caller's namespace.
type waitLink struct{ ns, link string }

// waitOperUp waits until every link is operationally up, so that bridge
// ports forward by the time Start returns.
func waitOperUp(ctx context.Context, links []waitLink) error {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	handles := map[string]*nsLinks{}
	defer func() {
		for _, h := range handles {
			h.close()
		}
	}()
	for _, wl := range links {
		n, ok := handles[wl.ns]
		if !ok {
			var err error
			if wl.ns == "" {
				n, err = openRoot()
			} else {
				n, err = openNS(wl.ns)
			}
			if err != nil {
				return err
			}
			handles[wl.ns] = n
		}
		for {
			l, err := n.h.LinkByName(wl.link)
			if err != nil {
				return fmt.Errorf("%s in %s: %w", wl.link, n.where(), err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s in %s is %s, not up: %w", wl.link, n.where(), l.Attrs().OperState, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}
