package api

import (
	"net"
	"net/netip"
	"path/filepath"
	"strings"
)

const maxProbePorts = 8

// validateIdentity checks the network, storage, probe and restart fields.
// IPs and MACs are only checked for syntax here; whether they are free and
// inside the network is the server's IPAM's job.
func (s *InstanceSpec) validateIdentity() error {
	if s.Network != "" {
		if err := ValidateName("spec.network", s.Network); err != nil {
			return err
		}
	}
	if s.MAC != "" {
		if err := ValidateMAC(s.MAC); err != nil {
			return fieldErr("spec.mac", "%v", err)
		}
	}
	if s.IP != "" {
		a, err := netip.ParseAddr(s.IP)
		if err != nil || !a.Is4() {
			return fieldErr("spec.ip", "%q is not an IPv4 address such as 10.77.0.20", s.IP)
		}
	}
	switch {
	case s.Storage == "", s.Storage == "local":
	case strings.HasPrefix(s.Storage, StorageShared):
		p := s.SharedPath()
		if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fieldErr("spec.storage", "shared storage needs a clean absolute directory, e.g. shared:/mnt/ferry, got %q", s.Storage)
		}
	default:
		return fieldErr("spec.storage", "must be \"local\" or \"shared:/absolute/dir\", got %q", s.Storage)
	}
	if s.Probe != nil {
		if err := s.Probe.Validate(); err != nil {
			return err
		}
	}
	switch s.RestartPolicy {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fieldErr("spec.restartPolicy", "must be always, on-failure or never, got %q", s.RestartPolicy)
	}
	return nil
}

// Validate checks a probe.
func (p *Probe) Validate() error {
	switch p.Type {
	case "tcp", "http":
	default:
		return fieldErr("spec.probe.type", "must be tcp or http, got %q", p.Type)
	}
	if len(p.Ports) == 0 || len(p.Ports) > maxProbePorts {
		return fieldErr("spec.probe.ports", "give 1 to %d ports, got %d", maxProbePorts, len(p.Ports))
	}
	for _, port := range p.Ports {
		if port < 1 || port > 65535 {
			return fieldErr("spec.probe.ports", "%d is not a TCP port (1-65535)", port)
		}
	}
	if p.Path != "" && (p.Type != "http" || !strings.HasPrefix(p.Path, "/") || len(p.Path) > 1024) {
		return fieldErr("spec.probe.path", "is for http probes and must start with '/', got %q", p.Path)
	}
	return nil
}

// ValidateMAC checks that s is a unicast Ethernet address. ferry assigns
// locally administered ones; users may bring their own.
func ValidateMAC(s string) error {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return fieldErr("", "%q is not a MAC address such as 0e:f0:00:12:34:56", s)
	}
	if hw[0]&1 == 1 {
		return fieldErr("", "%q is a multicast address; a NIC needs a unicast one", s)
	}
	if strings.Trim(hw.String(), "0:") == "" {
		return fieldErr("", "%q is the zero address", s)
	}
	return nil
}

// Validate checks a network definition.
func (n *Network) Validate() error {
	if err := ValidateName("name", n.Name); err != nil {
		return err
	}
	pfx, err := netip.ParsePrefix(n.CIDR)
	if err != nil || !pfx.Addr().Is4() {
		return fieldErr("cidr", "%q is not an IPv4 subnet such as 10.77.0.0/24", n.CIDR)
	}
	if pfx.Masked() != pfx {
		return fieldErr("cidr", "%q has host bits set; did you mean %s?", n.CIDR, pfx.Masked())
	}
	if pfx.Bits() > 30 || pfx.Bits() < 8 {
		return fieldErr("cidr", "prefix length must be between /8 and /30, got /%d", pfx.Bits())
	}
	check := func(field, v string) error {
		a, err := netip.ParseAddr(v)
		if err != nil || !pfx.Contains(a) {
			return fieldErr(field, "%q is not an address inside %s", v, n.CIDR)
		}
		if a == pfx.Addr() {
			return fieldErr(field, "%q is the network address of %s", v, n.CIDR)
		}
		return nil
	}
	if n.Gateway != "" {
		if err := check("gateway", n.Gateway); err != nil {
			return err
		}
	}
	for _, r := range n.Reserved {
		if len(r) > 64 {
			return fieldErr("reserved", "entry %q is too long", r)
		}
	}
	return nil
}
