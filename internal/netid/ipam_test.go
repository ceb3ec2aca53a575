package netid

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		n       Network
		wantErr string // substring; "" means valid
	}{
		{"minimal", Network{Name: "lan", CIDR: "10.77.0.0/24"}, ""},
		{"gateway and reserved", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.77.0.254",
			Reserved: []string{"10.77.0.2", "10.77.0.16/28", "10.77.0.40-10.77.0.49"}}, ""},
		{"slash 30", Network{Name: "p2p", CIDR: "192.168.9.4/30"}, ""},
		{"no name", Network{CIDR: "10.77.0.0/24"}, "name is empty"},
		{"no cidr", Network{Name: "lan"}, "network lan: cidr is empty"},
		{"bad cidr", Network{Name: "lan", CIDR: "10.77.0.0"}, `cidr "10.77.0.0": not a prefix`},
		{"ipv6", Network{Name: "lan", CIDR: "fd00::/64"}, "only IPv4"},
		{"too small", Network{Name: "lan", CIDR: "10.77.0.0/31"}, "prefix length /31 not supported"},
		{"too big", Network{Name: "lan", CIDR: "10.0.0.0/7"}, "prefix length /7 not supported"},
		{"host bits", Network{Name: "lan", CIDR: "10.77.0.5/24"}, "did you mean 10.77.0.0/24?"},
		{"gateway garbage", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "router"}, `gateway "router": not an IPv4 address`},
		{"gateway outside", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.78.0.1"}, "gateway 10.78.0.1 is outside 10.77.0.0/24"},
		{"gateway network", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.77.0.0"}, "gateway 10.77.0.0 is the network address"},
		{"gateway broadcast", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.77.0.255"}, "gateway 10.77.0.255 is the broadcast address"},
		{"reserved garbage", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.0.3", "x"}}, `reserved[1]: "x" is not an IPv4 address`},
		{"reserved outside", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.1.3"}}, `reserved[0] "10.77.1.3" is not inside`},
		{"reserved prefix outside", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.0.0/23"}}, "is not inside"},
		{"reserved backwards", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.0.9-10.77.0.2"}}, "ends before it starts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.n.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate(%+v) = %v, want nil", tc.n, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate(%+v) = %v, want an error containing %q", tc.n, err, tc.wantErr)
			}
		})
	}
}

func TestNextFree(t *testing.T) {
	t.Parallel()
	lan := Network{Name: "lan", CIDR: "10.77.0.0/24"}
	tests := []struct {
		name string
		n    Network
		used []string
		want string // an address, or "full"
	}{
		{"skips network and implicit gateway", lan, nil, "10.77.0.2"},
		{"explicit gateway frees .1", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.77.0.254"}, nil, "10.77.0.1"},
		{"explicit gateway skipped", Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.77.0.1"}, nil, "10.77.0.2"},
		{"lowest free", lan, []string{"10.77.0.2", "10.77.0.3", "10.77.0.5"}, "10.77.0.4"},
		{"reserved range", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.0.2-10.77.0.99"}}, nil, "10.77.0.100"},
		{"reserved prefix and address", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.0.0/28", "10.77.0.16"}}, []string{"10.77.0.17"}, "10.77.0.18"},
		{"last address before broadcast", Network{Name: "tiny", CIDR: "10.9.0.0/29"}, []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"}, "10.9.0.6"},
		{"full", Network{Name: "tiny", CIDR: "10.9.0.0/29"}, []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}, "full"},
		{"slash 30 has one", Network{Name: "p2p", CIDR: "10.9.0.4/30"}, nil, "10.9.0.6"},
		{"used outside is ignored", lan, []string{"192.168.1.2"}, "10.77.0.2"},
		{"reserved to the end", Network{Name: "lan", CIDR: "10.77.0.0/24", Reserved: []string{"10.77.0.2-10.77.0.255"}}, nil, "full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			used := map[string]bool{}
			for _, u := range tc.used {
				used[u] = true
			}
			got, err := NextFree(tc.n, used)
			if tc.want == "full" {
				if !errors.Is(err, ErrFull) || err.Error() != "network "+tc.n.Name+" is full" {
					t.Fatalf("NextFree(%s, %v) = %v, %v; want error %q matching ErrFull", tc.n.CIDR, tc.used, got, err, "network "+tc.n.Name+" is full")
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("NextFree(%s, %v) = %v, %v; want %s", tc.n.CIDR, tc.used, got, err, tc.want)
			}
		})
	}
}

func TestNextFreeErrors(t *testing.T) {
	t.Parallel()
	if _, err := NextFree(Network{Name: "lan", CIDR: "bad"}, nil); err == nil || !strings.Contains(err.Error(), "cidr") {
		t.Errorf("NextFree(bad cidr) error = %v, want a cidr error", err)
	}
	_, err := NextFree(Network{Name: "lan", CIDR: "10.77.0.0/24"}, map[string]bool{"web-1": true})
	if err == nil || !strings.Contains(err.Error(), `"web-1" is not an IP address`) {
		t.Errorf("NextFree(bad used key) error = %v, want it to name the key", err)
	}
	// A false value means "not in use".
	got, err := NextFree(Network{Name: "lan", CIDR: "10.77.0.0/24"}, map[string]bool{"10.77.0.2": false})
	if err != nil || got.String() != "10.77.0.2" {
		t.Errorf("NextFree(used[.2]=false) = %v, %v; want 10.77.0.2", got, err)
	}
}

func TestCheckRequested(t *testing.T) {
	t.Parallel()
	n := Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: "10.77.0.1", Reserved: []string{"10.77.0.2-10.77.0.9"}}
	used := map[string]string{"10.77.0.20": "web-1", "10.77.0.21": ""}
	tests := []struct {
		name    string
		ip      string
		wantErr string
		inUse   bool
	}{
		{"free", "10.77.0.30", "", false},
		{"last host", "10.77.0.254", "", false},
		{"garbage", "ten", `ip "ten": not an IPv4 address`, false},
		{"ipv6", "fd00::1", `ip "fd00::1": not an IPv4 address`, false},
		{"empty", "", `ip "": not an IPv4 address`, false},
		{"with prefix", "10.77.0.30/24", "not an IPv4 address", false},
		{"outside", "10.78.0.30", "ip 10.78.0.30 is outside network lan (10.77.0.0/24)", false},
		{"network", "10.77.0.0", "ip 10.77.0.0 is the network address of network lan", false},
		{"broadcast", "10.77.0.255", "ip 10.77.0.255 is the broadcast address of network lan", false},
		{"gateway", "10.77.0.1", "ip 10.77.0.1 is the gateway of network lan", false},
		{"reserved", "10.77.0.5", `ip 10.77.0.5 is reserved in network lan ("10.77.0.2-10.77.0.9")`, false},
		{"used by", "10.77.0.20", "ip 10.77.0.20 is already used by web-1", true},
		{"used by nobody named", "10.77.0.21", "ip 10.77.0.21 is already in use", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := CheckRequested(n, tc.ip, used)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckRequested(%q) = %v, want nil", tc.ip, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckRequested(%q) = %v, want an error containing %q", tc.ip, err, tc.wantErr)
			}
			if got := errors.Is(err, ErrInUse); got != tc.inUse {
				t.Fatalf("errors.Is(CheckRequested(%q), ErrInUse) = %v, want %v", tc.ip, got, tc.inUse)
			}
		})
	}
	if err := CheckRequested(Network{Name: "lan"}, "10.77.0.30", nil); err == nil || !strings.Contains(err.Error(), "cidr is empty") {
		t.Errorf("CheckRequested(invalid network) = %v, want the network's error", err)
	}
}

func TestGatewayAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ gw, want string }{{"", "10.77.0.1"}, {"10.77.0.254", "10.77.0.254"}} {
		got, err := Network{Name: "lan", CIDR: "10.77.0.0/24", Gateway: tc.gw}.GatewayAddr()
		if err != nil || got.String() != tc.want {
			t.Errorf("GatewayAddr(gateway %q) = %v, %v; want %s", tc.gw, got, err, tc.want)
		}
	}
}

func TestLastAddr(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"10.0.0.0/8":     "10.255.255.255",
		"10.77.0.0/24":   "10.77.0.255",
		"10.77.0.0/23":   "10.77.1.255",
		"10.77.0.64/26":  "10.77.0.127",
		"10.77.0.4/30":   "10.77.0.7",
		"192.168.7.9/32": "192.168.7.9",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestNextFreeProperty fills random small networks with NextFree and checks
// that it never hands out a forbidden or used address, always picks the
// lowest free one, and reports "full" exactly when the range is exhausted.
func TestNextFreeProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		bits := rapid.IntRange(24, 30).Draw(t, "bits")
		base := netip.AddrFrom4([4]byte{10, byte(rapid.IntRange(0, 255).Draw(t, "b1")), byte(rapid.IntRange(0, 255).Draw(t, "b2")), 0})
		prefix := netip.PrefixFrom(base, bits).Masked()
		var hosts []netip.Addr
		for a := prefix.Addr().Next(); a.Less(lastAddr(prefix)); a = a.Next() {
			hosts = append(hosts, a)
		}
		n := Network{Name: "prop", CIDR: prefix.String()}
		if rapid.Bool().Draw(t, "explicitGateway") {
			n.Gateway = rapid.SampledFrom(hosts).Draw(t, "gateway").String()
		}
		nReserved := rapid.IntRange(0, 3).Draw(t, "nReserved")
		for i := range nReserved {
			lo := rapid.IntRange(0, len(hosts)-1).Draw(t, fmt.Sprintf("lo%d", i))
			hi := rapid.IntRange(lo, min(lo+8, len(hosts)-1)).Draw(t, fmt.Sprintf("hi%d", i))
			if lo == hi {
				n.Reserved = append(n.Reserved, hosts[lo].String())
			} else {
				n.Reserved = append(n.Reserved, hosts[lo].String()+"-"+hosts[hi].String())
			}
		}
		used := map[string]bool{}
		for _, h := range hosts {
			if rapid.IntRange(0, 9).Draw(t, "use "+h.String()) == 0 {
				used[h.String()] = true
			}
		}
		p, err := n.parse()
		if err != nil {
			t.Fatalf("generated an invalid network %+v: %v", n, err)
		}
		forbidden := func(a netip.Addr) bool {
			return p.special(a) != "" || p.reservedAt(a) != nil || used[a.String()]
		}
		var free []netip.Addr // every allocatable address, in order
		for _, h := range hosts {
			if !forbidden(h) {
				free = append(free, h)
			}
		}
		for i := 0; ; i++ {
			got, err := NextFree(n, used)
			if err != nil {
				if i != len(free) {
					t.Fatalf("NextFree failed after %d allocations, want %d: %v", i, len(free), err)
				}
				if !errors.Is(err, ErrFull) || err.Error() != "network prop is full" {
					t.Fatalf("NextFree on a full network = %v, want %q", err, "network prop is full")
				}
				return
			}
			if i >= len(free) {
				t.Fatalf("allocation %d = %s, but only %d addresses are free", i, got, len(free))
			}
			if !prefix.Contains(got) || forbidden(got) {
				t.Fatalf("NextFree = %s: forbidden or outside %s (network %+v)", got, prefix, n)
			}
			if got != free[i] {
				t.Fatalf("allocation %d = %s, want the lowest free %s", i, got, free[i])
			}
			used[got.String()] = true
		}
	})
}

func FuzzCheckRequested(f *testing.F) {
	f.Add("10.77.0.0/24", "", "10.77.0.2-10.77.0.9", "10.77.0.30")
	f.Add("10.77.0.0/24", "10.77.0.254", "10.77.0.0/28", "10.77.0.1")
	f.Add("192.168.0.0/30", "", "", "192.168.0.2")
	f.Add("10.0.0.0/8", "10.0.0.1", "", "::ffff:10.0.0.9")
	f.Add("10.77.0.0/24", "", "", "10.77.0.20")
	f.Fuzz(func(t *testing.T, cidr, gateway, reserved, ip string) {
		n := Network{Name: "fuzz", CIDR: cidr, Gateway: gateway}
		if reserved != "" {
			n.Reserved = []string{reserved}
		}
		used := map[string]string{"10.77.0.20": "web-1"}
		err := CheckRequested(n, ip, used)
		if err != nil {
			return
		}
		// Accepted: it must be a valid, allocatable, unused address.
		p, perr := n.parse()
		if perr != nil {
			t.Fatalf("CheckRequested accepted %q in an invalid network: %v", ip, perr)
		}
		a, aerr := netip.ParseAddr(ip)
		if aerr != nil || !a.Is4() {
			t.Fatalf("CheckRequested accepted %q, which is not an IPv4 address", ip)
		}
		if !p.prefix.Contains(a) || p.special(a) != "" || p.reservedAt(a) != nil || used[a.String()] != "" {
			t.Fatalf("CheckRequested accepted %s in %+v", a, n)
		}
	})
}
