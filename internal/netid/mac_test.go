package netid

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseMAC(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string // canonical form; "" means an error
		wantErr string
	}{
		{"0e:f0:00:12:34:56", "0e:f0:00:12:34:56", ""},
		{"0E-F0-00-12-34-AB", "0e:f0:00:12:34:ab", ""},
		{"0ef0.0012.3456", "0e:f0:00:12:34:56", ""},
		{"52:54:00:aa:bb:cc", "52:54:00:aa:bb:cc", ""},
		{"00:16:3e:00:00:01", "00:16:3e:00:00:01", ""}, // universally administered is allowed
		{"", "", "not a MAC address"},
		{"0e:f0:00:12:34", "", "not a MAC address"},
		{"0e:f0:00:12:34:56:78:9a", "", "8 bytes, want 6"},
		{"00:00:00:00:00:00", "", "the zero address"},
		{"ff:ff:ff:ff:ff:ff", "", "the broadcast address"},
		{"01:00:5e:00:00:01", "", "a multicast address"},
		{"33:33:00:00:00:01", "", "a multicast address"},
		{"0f:f0:00:12:34:56", "", "a multicast address"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMAC(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseMAC(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				if verr := ValidateMAC(tc.in); verr == nil || verr.Error() != err.Error() {
					t.Fatalf("ValidateMAC(%q) = %v, want %v", tc.in, verr, err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("ParseMAC(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestNewMAC(t *testing.T) {
	t.Parallel()
	// Deterministic randomness: 01 02 03, then 01 02 03 again, then 04 05 06.
	rnd := bytes.NewReader([]byte{1, 2, 3, 1, 2, 3, 4, 5, 6})
	got, err := NewMAC(FerryMACPrefix, nil, rnd)
	if err != nil || got != "0e:f0:00:01:02:03" {
		t.Fatalf("NewMAC = %q, %v; want 0e:f0:00:01:02:03", got, err)
	}
	// The repeat is in use (written in another form), so the next draw wins.
	got, err = NewMAC(FerryMACPrefix, map[string]string{"0E-F0-00-01-02-03": "web-1"}, rnd)
	if err != nil || got != "0e:f0:00:04:05:06" {
		t.Fatalf("NewMAC with a collision = %q, %v; want 0e:f0:00:04:05:06", got, err)
	}
	if err := ValidateMAC(got); err != nil {
		t.Fatalf("ValidateMAC(NewMAC()) = %v", err)
	}
	// crypto/rand by default, and always valid.
	for range 100 {
		m, err := NewMAC(FerryMACPrefix, nil, nil)
		if err != nil || ValidateMAC(m) != nil || !strings.HasPrefix(m, "0e:f0:00:") {
			t.Fatalf("NewMAC(nil rand) = %q, %v", m, err)
		}
	}
}

func TestNewMACErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prefix  [3]byte
		used    map[string]string
		rand    []byte
		wantErr string
	}{
		{"multicast prefix", [3]byte{0x01, 0, 0x5e}, nil, []byte{1, 2, 3}, "multicast bit set"},
		{"universal prefix", [3]byte{0x00, 0x16, 0x3e}, nil, []byte{1, 2, 3}, "not locally administered"},
		{"bad used key", FerryMACPrefix, map[string]string{"nope": "x"}, []byte{1, 2, 3}, `used: "nope" is not a MAC address`},
		{"short rand", FerryMACPrefix, nil, []byte{1}, "read random bytes"},
		{"exhausted", FerryMACPrefix, map[string]string{"0e:f0:00:00:00:00": "a"}, make([]byte, 3*macTries), "no free address with prefix 0e:f0:00 after 128 tries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := NewMAC(tc.prefix, tc.used, bytes.NewReader(tc.rand))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewMAC = %q, %v; want an error containing %q", got, err, tc.wantErr)
			}
		})
	}
	boom := errors.New("boom")
	if _, err := NewMAC(FerryMACPrefix, nil, iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("NewMAC(failing rand) = %v, want it to wrap %v", err, boom)
	}
}

func TestTapName(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, inst := range []string{"", "a", "b", "web-1", "web-2", strings.Repeat("x", 300), "ünïcode"} {
		got := TapName(inst)
		if len(got) > maxIfName || !strings.HasPrefix(got, "fy") || strings.Contains(got, "-") || checkIfName(got) != nil {
			t.Errorf("TapName(%q) = %q: not a valid tap name", inst, got)
		}
		if TapName(inst) != got {
			t.Errorf("TapName(%q) is not deterministic", inst)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("TapName(%q) = TapName(%q) = %q", inst, other, got)
		}
		seen[got] = inst
	}
}

func FuzzValidateMAC(f *testing.F) {
	for _, s := range []string{"0e:f0:00:12:34:56", "ff:ff:ff:ff:ff:ff", "0ef0.0012.3456", "", "00-00-00-00-00-00", "01:02:03:04:05:06:07:08"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hw, err := ParseMAC(s)
		if (err == nil) != (ValidateMAC(s) == nil) {
			t.Fatalf("ParseMAC and ValidateMAC disagree on %q", s)
		}
		if err != nil {
			return
		}
		if len(hw) != 6 || hw[0]&0x01 != 0 || isZero(hw) {
			t.Fatalf("ParseMAC(%q) accepted %s", s, hw)
		}
		// The canonical form parses to the same address.
		again, err := ParseMAC(hw.String())
		if err != nil || again.String() != hw.String() {
			t.Fatalf("ParseMAC(%q) = %v, %v; want %s", hw.String(), again, err, hw)
		}
	})
}
