package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// maxBody bounds what HTTPGet reads.
const maxBody = 16 << 20

// DialContext connects to address ("IP:port"; names are not resolved) from
// inside the namespace fromNS, one of [Cluster.Namespaces], or from the
// caller's own namespace when fromNS is "" (that needs Config.RootLeg).
// network is "tcp", "tcp4", "udp" or "udp4".
//
// It refuses, without sending anything, a destination outside the cluster's
// subnet (loopback is allowed from a cluster namespace), and from the
// caller's namespace a destination whose route does not go through the root
// leg. The socket is made on a locked OS thread that enters fromNS for the
// moment of the dial and then returns; the connection stays in fromNS.
func (c *Cluster) DialContext(ctx context.Context, fromNS, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "udp", "udp4":
	default:
		return nil, fmt.Errorf("testcluster: dial %s: network %q not supported", address, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("testcluster: dial %q: want IP:port (names are not resolved)", address)
	}
	ip := ap.Addr().Unmap()
	if fromNS == "" {
		if err := c.checkRootRoute(ip); err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	if !c.hasNamespace(fromNS) {
		return nil, fmt.Errorf("testcluster: dial from %q: not a namespace of cluster %s", fromNS, c.prefix)
	}
	if !c.subnet.Contains(ip) && !ip.IsLoopback() {
		return nil, fmt.Errorf("testcluster: refusing to dial %s: outside the cluster subnet %s", ip, c.subnet)
	}
	return dialIn(ctx, filepath.Join(netnsDir, fromNS), network, address)
}

// checkRootRoute allows a dial from the caller's namespace only to an
// address of the subnet that the kernel routes through the root leg.
func (c *Cluster) checkRootRoute(ip netip.Addr) error {
	if c.rootLink == "" {
		return fmt.Errorf("testcluster: cluster %s has no root leg (Config.RootLeg): dial from one of its namespaces instead", c.prefix)
	}
	if !c.subnet.Contains(ip) {
		return fmt.Errorf("testcluster: refusing to dial %s: outside the cluster subnet %s", ip, c.subnet)
	}
	root, err := openRoot()
	if err != nil {
		return err
	}
	defer root.close()
	leg, err := root.h.LinkByName(c.rootLink)
	if err != nil {
		return fmt.Errorf("testcluster: root leg %s: %w", c.rootLink, err)
	}
	routes, err := root.h.RouteGet(ip.AsSlice())
	if err != nil {
		return fmt.Errorf("testcluster: route to %s: %w", ip, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex != leg.Attrs().Index {
		return fmt.Errorf("testcluster: refusing to dial %s: its route does not go through the root leg %s", ip, c.rootLink)
	}
	return nil
}

// dialIn dials from the namespace at nsPath on a locked thread.
func dialIn(ctx context.Context, nsPath, network, address string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// This goroutine owns its thread while it is in the other
		// namespace. If the thread cannot be moved back it stays
		// locked, and the runtime discards it when the goroutine ends.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("current netns: %w", err)}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open %s: %w", nsPath, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		conn, dialErr := d.DialContext(ctx, network, address)
		if err := netns.Set(orig); err != nil {
			if conn != nil {
				conn.Close()
			}
			ch <- result{err: fmt.Errorf("leave %s: %w", nsPath, err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{conn, dialErr}
	}()
	r := <-ch
	return r.conn, r.err
}

// HTTPGet fetches url (its host an IP address) from inside the namespace
// fromNS ("" for the caller's; see [Cluster.DialContext] for what is
// allowed) on a fresh connection, and returns the status code and body (at
// most 16 MiB). Proxies from the environment are ignored.
func (c *Cluster) HTTPGet(ctx context.Context, fromNS, url string) (status int, body []byte, err error) {
	return c.HTTPGetDial(ctx, fromNS, url, 0)
}

// HTTPGetDial is HTTPGet with the connection's set-up bounded by dial (0:
// by ctx only): a client can give up quickly on a host that does not
// answer while still waiting for one that answers slowly.
func (c *Cluster) HTTPGetDial(ctx context.Context, fromNS, url string, dial time.Duration) (status int, body []byte, err error) {
	tr := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dial > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, dial)
				defer cancel()
			}
			return c.DialContext(ctx, fromNS, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("testcluster: get %s: %w", url, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("testcluster: get %s from %s: %w", url, nsLabel(fromNS), err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil && !errors.Is(err, io.EOF) {
		return resp.StatusCode, body, fmt.Errorf("testcluster: get %s: read body: %w", url, err)
	}
	return resp.StatusCode, body, nil
}

func nsLabel(ns string) string {
	if ns == "" {
		return "the root namespace"
	}
	return ns
}
