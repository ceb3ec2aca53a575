package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/netid"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Every address and MAC in use has a key naming its instance. Creating an
// instance creates its keys in the same transaction, guarded by "the key
// does not exist", so two instances can never get the same address, and
// deleting the instance frees them in its delete transaction.
const (
	ipamDir = "ipam/"
	macsDir = "macs/"
)

// macPrefix is ferry's locally administered OUI for assigned MACs.
var macPrefix = [3]byte{0x0e, 0xf0, 0x00}

// identityConflict is an address or MAC that is taken (409, not 400).
type identityConflict struct{ *api.FieldError }

func ipKey(network, ip string) string { return ipamDir + network + "/" + ip }
func macKey(mac string) string        { return macsDir + strings.ToLower(mac) }

func toNetid(n *api.Network) netid.Network {
	return netid.Network{Name: n.Name, CIDR: n.CIDR, Gateway: n.Gateway, Reserved: n.Reserved}
}

// identity fills in the network, IP and MAC of a new instance and returns
// the comparisons and ops that reserve them in the create transaction.
func (s *Server) identity(ctx context.Context, spec *api.InstanceSpec, name string) ([]clientv3.Cmp, []clientv3.Op, error) {
	netName := spec.Network
	if netName == "" {
		if _, err := s.store.Networks.Get(ctx, "default"); errors.Is(err, store.ErrNotFound) {
			if spec.IP != "" || spec.MAC != "" {
				return nil, nil, &api.FieldError{Field: "spec.network", Message: "an IP or MAC needs a network: create one with `ferry network create`"}
			}
			return nil, nil, nil // no networks: the instance has no NIC
		} else if err != nil {
			return nil, nil, err
		}
		netName = "default"
	}
	nw, err := s.store.Networks.Get(ctx, netName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, &api.FieldError{Field: "spec.network", Message: fmt.Sprintf("network %q does not exist; see `ferry network ls`", netName)}
	}
	if err != nil {
		return nil, nil, err
	}
	spec.Network = netName
	ips, err := s.store.ListKeys(ctx, ipamDir+netName+"/")
	if err != nil {
		return nil, nil, err
	}
	usedIP := make(map[string]string, len(ips))
	usedSet := make(map[string]bool, len(ips))
	for ip, owner := range ips {
		usedIP[ip] = string(owner)
		usedSet[ip] = true
	}
	if spec.IP != "" {
		if err := netid.CheckRequested(toNetid(nw), spec.IP, usedIP); err != nil {
			fe := &api.FieldError{Field: "spec.ip", Message: err.Error()}
			if _, taken := usedIP[spec.IP]; taken {
				return nil, nil, &identityConflict{fe}
			}
			return nil, nil, fe
		}
	} else {
		a, err := netid.NextFree(toNetid(nw), usedSet)
		if err != nil {
			return nil, nil, &identityConflict{&api.FieldError{Field: "spec.network", Message: err.Error()}}
		}
		spec.IP = a.String()
	}
	macs, err := s.store.ListKeys(ctx, macsDir)
	if err != nil {
		return nil, nil, err
	}
	usedMAC := make(map[string]string, len(macs))
	for m, owner := range macs {
		usedMAC[m] = string(owner)
	}
	if spec.MAC != "" {
		hw, err := netid.ParseMAC(spec.MAC)
		if err != nil {
			return nil, nil, &api.FieldError{Field: "spec.mac", Message: err.Error()}
		}
		spec.MAC = hw.String() // one spelling, so uniqueness is by address
		if owner, ok := usedMAC[spec.MAC]; ok {
			return nil, nil, &identityConflict{&api.FieldError{Field: "spec.mac", Message: fmt.Sprintf("MAC %s is already used by instance %q", spec.MAC, owner)}}
		}
	} else {
		if spec.MAC, err = netid.NewMAC(macPrefix, usedMAC, rand.Reader); err != nil {
			return nil, nil, err
		}
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, k := range []string{ipKey(netName, spec.IP), macKey(spec.MAC)} {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.store.Key(k)), "=", 0))
		ops = append(ops, clientv3.OpPut(s.store.Key(k), name))
	}
	return cmps, ops, nil
}

// releaseOps frees an instance's address and MAC.
func (s *Server) releaseOps(in *api.Instance) []clientv3.Op {
	var ops []clientv3.Op
	if in.Spec.Network != "" && in.Spec.IP != "" {
		ops = append(ops, clientv3.OpDelete(s.store.Key(ipKey(in.Spec.Network, in.Spec.IP))))
	}
	if in.Spec.MAC != "" {
		ops = append(ops, clientv3.OpDelete(s.store.Key(macKey(in.Spec.MAC))))
	}
	return ops
}
