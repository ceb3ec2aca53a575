package api_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

// fieldOf returns the field a validation error names, "" for nil, and a
// marker for an error that is not a *api.FieldError.
func fieldOf(err error) string {
	if err == nil {
		return ""
	}
	var fe *api.FieldError
	if !errors.As(err, &fe) {
		return "<not a FieldError: " + err.Error() + ">"
	}
	if fe.Field == "" {
		return "<no field>"
	}
	return fe.Field
}

func TestFieldErrorError(t *testing.T) {
	tests := []struct {
		name string
		err  *api.FieldError
		want string
	}{
		{"with field", &api.FieldError{Field: "spec.cpus", Message: "must be positive"}, "spec.cpus: must be positive"},
		{"without field", &api.FieldError{Message: "body is empty"}, "body is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr bool
	}{
		{name: "a"},
		{name: "0"},
		{name: "web-1"},
		{name: "a-b-c"},
		{name: "1a"},
		{name: strings.Repeat("a", 63)},

		{name: "", wantErr: true},
		{name: strings.Repeat("a", 64), wantErr: true},
		{name: "-a", wantErr: true},
		{name: "a-", wantErr: true},
		{name: "-", wantErr: true},
		{name: "Web", wantErr: true},
		{name: "web_1", wantErr: true},
		{name: "web.1", wantErr: true},
		{name: "web 1", wantErr: true},
		{name: "web\n", wantErr: true},
		{name: "a\nb", wantErr: true},
		{name: "é", wantErr: true},
		{name: "a/b", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := api.ValidateName("name", tc.name)
			if got := err != nil; got != tc.wantErr {
				t.Fatalf("ValidateName(%q) = %v, want error: %v", tc.name, err, tc.wantErr)
			}
			if err != nil && fieldOf(err) != "name" {
				t.Errorf("ValidateName(%q) field = %s, want name", tc.name, fieldOf(err))
			}
		})
	}
}

func validSpec() api.InstanceSpec {
	return api.InstanceSpec{
		CPUs:   2,
		Memory: 512 << 20,
		Disk:   10 << 30,
		Image:  "debian-12",
		State:  api.DesiredRunning,
		Owner:  "acme",
	}
}

func TestInstanceSpecValidate(t *testing.T) {
	known := func(name string) bool { return name == "debian-12" }
	tests := []struct {
		name      string
		change    func(s *api.InstanceSpec)
		known     func(string) bool
		wantField string // "" means valid
	}{
		{name: "valid", change: func(s *api.InstanceSpec) {}},
		{name: "valid with known image", change: func(s *api.InstanceSpec) {}, known: known},
		{name: "state empty", change: func(s *api.InstanceSpec) { s.State = "" }},
		{name: "state stopped", change: func(s *api.InstanceSpec) { s.State = api.DesiredStopped }},
		{name: "no owner", change: func(s *api.InstanceSpec) { s.Owner = "" }},
		{name: "owner of 128 bytes", change: func(s *api.InstanceSpec) { s.Owner = strings.Repeat("o", 128) }},
		{name: "owner with unicode", change: func(s *api.InstanceSpec) { s.Owner = "Zoë & Co" }},
		{name: "1 cpu", change: func(s *api.InstanceSpec) { s.CPUs = 1 }},
		{name: "max cpus", change: func(s *api.InstanceSpec) { s.CPUs = api.MaxCPUs }},
		{name: "min memory", change: func(s *api.InstanceSpec) { s.Memory = api.MinMemory }},
		{name: "max memory", change: func(s *api.InstanceSpec) { s.Memory = api.MaxMemory }},
		{name: "min disk", change: func(s *api.InstanceSpec) { s.Disk = api.MinDisk }},
		{name: "max disk", change: func(s *api.InstanceSpec) { s.Disk = api.MaxDisk }},

		{name: "zero cpus", change: func(s *api.InstanceSpec) { s.CPUs = 0 }, wantField: "spec.cpus"},
		{name: "negative cpus", change: func(s *api.InstanceSpec) { s.CPUs = -1 }, wantField: "spec.cpus"},
		{name: "too many cpus", change: func(s *api.InstanceSpec) { s.CPUs = api.MaxCPUs + 1 }, wantField: "spec.cpus"},
		{name: "zero memory", change: func(s *api.InstanceSpec) { s.Memory = 0 }, wantField: "spec.memory"},
		{name: "negative memory", change: func(s *api.InstanceSpec) { s.Memory = -1 << 20 }, wantField: "spec.memory"},
		{name: "memory below min", change: func(s *api.InstanceSpec) { s.Memory = api.MinMemory - 1<<20 }, wantField: "spec.memory"},
		{name: "memory above max", change: func(s *api.InstanceSpec) { s.Memory = api.MaxMemory + 1<<20 }, wantField: "spec.memory"},
		{name: "memory not whole MiB", change: func(s *api.InstanceSpec) { s.Memory = 512<<20 + 1 }, wantField: "spec.memory"},
		{name: "zero disk", change: func(s *api.InstanceSpec) { s.Disk = 0 }, wantField: "spec.disk"},
		{name: "disk below min", change: func(s *api.InstanceSpec) { s.Disk = api.MinDisk - 1 }, wantField: "spec.disk"},
		{name: "disk above max", change: func(s *api.InstanceSpec) { s.Disk = api.MaxDisk + 1<<20 }, wantField: "spec.disk"},
		{name: "disk not whole MiB", change: func(s *api.InstanceSpec) { s.Disk = 1<<30 + 512 }, wantField: "spec.disk"},
		{name: "no image", change: func(s *api.InstanceSpec) { s.Image = "" }, wantField: "spec.image"},
		{name: "bad image name", change: func(s *api.InstanceSpec) { s.Image = "Debian 12" }, wantField: "spec.image"},
		{name: "unknown image", change: func(s *api.InstanceSpec) { s.Image = "arch" }, known: known, wantField: "spec.image"},
		{name: "bad state", change: func(s *api.InstanceSpec) { s.State = "paused" }, wantField: "spec.state"},
		{name: "state in wrong case", change: func(s *api.InstanceSpec) { s.State = "Running" }, wantField: "spec.state"},
		{name: "owner too long", change: func(s *api.InstanceSpec) { s.Owner = strings.Repeat("o", 129) }, wantField: "spec.owner"},
		{name: "owner with newline", change: func(s *api.InstanceSpec) { s.Owner = "a\nb" }, wantField: "spec.owner"},
		{name: "owner with DEL", change: func(s *api.InstanceSpec) { s.Owner = "a\x7fb" }, wantField: "spec.owner"},
		{name: "owner with NUL", change: func(s *api.InstanceSpec) { s.Owner = "a\x00" }, wantField: "spec.owner"},
		{name: "group", change: func(s *api.InstanceSpec) { s.Group = "web-tier" }},
		{name: "bad group", change: func(s *api.InstanceSpec) { s.Group = "Web_1" }, wantField: "spec.group"},
		{name: "group too long", change: func(s *api.InstanceSpec) { s.Group = strings.Repeat("g", 64) }, wantField: "spec.group"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.change(&s)
			err := s.Validate(tc.known)
			if got := fieldOf(err); got != tc.wantField {
				t.Errorf("Validate(%+v) = %v (field %q), want field %q", s, err, got, tc.wantField)
			}
		})
	}
}

func TestCreateInstanceRequestValidate(t *testing.T) {
	tests := []struct {
		name      string
		req       api.CreateInstanceRequest
		wantField string
		wantState api.DesiredState
	}{
		{name: "valid", req: api.CreateInstanceRequest{Name: "web-1", Spec: validSpec()}, wantState: api.DesiredRunning},
		{
			name:      "state defaults to running",
			req:       api.CreateInstanceRequest{Name: "web-1", Spec: func() api.InstanceSpec { s := validSpec(); s.State = ""; return s }()},
			wantState: api.DesiredRunning,
		},
		{
			name:      "stopped is kept",
			req:       api.CreateInstanceRequest{Name: "web-1", Spec: func() api.InstanceSpec { s := validSpec(); s.State = api.DesiredStopped; return s }()},
			wantState: api.DesiredStopped,
		},
		{name: "no name", req: api.CreateInstanceRequest{Spec: validSpec()}, wantField: "name"},
		{name: "bad name", req: api.CreateInstanceRequest{Name: "Web_1", Spec: validSpec()}, wantField: "name"},
		{name: "bad spec", req: api.CreateInstanceRequest{Name: "web-1"}, wantField: "spec.cpus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			err := r.Validate(nil)
			if got := fieldOf(err); got != tc.wantField {
				t.Fatalf("Validate(%+v) = %v (field %q), want field %q", tc.req, err, got, tc.wantField)
			}
			if err == nil && r.Spec.State != tc.wantState {
				t.Errorf("Validate(%+v) left state %q, want %q", tc.req, r.Spec.State, tc.wantState)
			}
		})
	}
}

func TestHeartbeatValidate(t *testing.T) {
	valid := func() api.Heartbeat {
		return api.Heartbeat{
			Capacity:     api.Resources{CPUs: 8, Memory: 32 << 30, Disk: 500 << 30},
			Address:      "10.0.0.1:7443",
			AgentVersion: "v0.1.0",
			Accel:        "kvm",
		}
	}
	tests := []struct {
		name      string
		change    func(h *api.Heartbeat)
		wantField string
	}{
		{name: "valid", change: func(h *api.Heartbeat) {}},
		{name: "no disk", change: func(h *api.Heartbeat) { h.Capacity.Disk = 0 }},
		{name: "max cpus", change: func(h *api.Heartbeat) { h.Capacity.CPUs = 1 << 16 }},
		{name: "optional strings empty", change: func(h *api.Heartbeat) { h.Address, h.AgentVersion, h.Accel = "", "", "" }},
		{name: "zero cpus", change: func(h *api.Heartbeat) { h.Capacity.CPUs = 0 }, wantField: "capacity.cpus"},
		{name: "too many cpus", change: func(h *api.Heartbeat) { h.Capacity.CPUs = 1<<16 + 1 }, wantField: "capacity.cpus"},
		{name: "zero memory", change: func(h *api.Heartbeat) { h.Capacity.Memory = 0 }, wantField: "capacity.memory"},
		{name: "negative memory", change: func(h *api.Heartbeat) { h.Capacity.Memory = -1 }, wantField: "capacity.memory"},
		{name: "negative disk", change: func(h *api.Heartbeat) { h.Capacity.Disk = -1 }, wantField: "capacity.disk"},
		{name: "address too long", change: func(h *api.Heartbeat) { h.Address = strings.Repeat("a", 256) }, wantField: "address"},
		{name: "version too long", change: func(h *api.Heartbeat) { h.AgentVersion = strings.Repeat("v", 65) }, wantField: "address"},
		{name: "accel too long", change: func(h *api.Heartbeat) { h.Accel = strings.Repeat("k", 17) }, wantField: "address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := valid()
			tc.change(&h)
			err := h.Validate()
			if got := fieldOf(err); got != tc.wantField {
				t.Errorf("Validate(%+v) = %v (field %q), want field %q", h, err, got, tc.wantField)
			}
		})
	}
}

func TestInstanceReportValidate(t *testing.T) {
	tests := []struct {
		name      string
		r         api.InstanceReport
		wantField string
	}{
		{name: "starting", r: api.InstanceReport{Phase: api.PhaseStarting}},
		{name: "running", r: api.InstanceReport{Phase: api.PhaseRunning, Message: "booted"}},
		{name: "stopping", r: api.InstanceReport{Phase: api.PhaseStopping}},
		{name: "stopped", r: api.InstanceReport{Phase: api.PhaseStopped}},
		{name: "failed", r: api.InstanceReport{Phase: api.PhaseFailed, Error: "qemu exited"}},
		{name: "deleting destroyed", r: api.InstanceReport{Phase: api.PhaseDeleting, Destroyed: true}},
		{name: "message of 4096 bytes", r: api.InstanceReport{Phase: api.PhaseRunning, Message: strings.Repeat("m", 4096)}},
		{name: "pending is not the agent's", r: api.InstanceReport{Phase: api.PhasePending}, wantField: "phase"},
		{name: "scheduled is not the agent's", r: api.InstanceReport{Phase: api.PhaseScheduled}, wantField: "phase"},
		{name: "no phase", r: api.InstanceReport{}, wantField: "phase"},
		{name: "unknown phase", r: api.InstanceReport{Phase: "running"}, wantField: "phase"},
		{name: "message too long", r: api.InstanceReport{Phase: api.PhaseRunning, Message: strings.Repeat("m", 4097)}, wantField: "message"},
		{name: "error too long", r: api.InstanceReport{Phase: api.PhaseFailed, Error: strings.Repeat("e", 4097)}, wantField: "message"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if got := fieldOf(err); got != tc.wantField {
				t.Errorf("Validate(phase %q) = %v (field %q), want field %q", tc.r.Phase, err, got, tc.wantField)
			}
		})
	}
}

func TestJoinRequestValidate(t *testing.T) {
	tests := []struct {
		name      string
		r         api.JoinRequest
		wantField string
	}{
		{name: "valid", r: api.JoinRequest{Token: "t0k3n", Node: "host-1", CSR: "-----BEGIN CERTIFICATE REQUEST-----"}},
		{name: "no token", r: api.JoinRequest{Node: "host-1", CSR: "csr"}, wantField: "token"},
		{name: "no node", r: api.JoinRequest{Token: "t", CSR: "csr"}, wantField: "node"},
		{name: "bad node", r: api.JoinRequest{Token: "t", Node: "Host_1", CSR: "csr"}, wantField: "node"},
		{name: "no csr", r: api.JoinRequest{Token: "t", Node: "host-1"}, wantField: "csr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if got := fieldOf(err); got != tc.wantField {
				t.Errorf("Validate(%+v) = %v (field %q), want field %q", tc.r, err, got, tc.wantField)
			}
		})
	}
}

func TestJoinTokenRequestValidate(t *testing.T) {
	tests := []struct {
		name      string
		ttl       int
		wantField string
	}{
		{name: "default", ttl: 0},
		{name: "one second", ttl: 1},
		{name: "seven days", ttl: 7 * 24 * 3600},
		{name: "negative", ttl: -1, wantField: "ttlSeconds"},
		{name: "over seven days", ttl: 7*24*3600 + 1, wantField: "ttlSeconds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := api.JoinTokenRequest{TTLSeconds: tc.ttl}
			err := r.Validate()
			if got := fieldOf(err); got != tc.wantField {
				t.Errorf("Validate(ttl %d) = %v (field %q), want field %q", tc.ttl, err, got, tc.wantField)
			}
		})
	}
}
