package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

func TestNetworkIdentity(t *testing.T) {
	ts := startServer(t, nil)
	var eb api.ErrorBody
	if code := ts.do("POST", "/v1/networks", api.Network{Meta: api.Meta{Name: "default"}, CIDR: "10.77.0.5/24"}, &eb); code != 400 || eb.Error.Field != "cidr" {
		t.Fatalf("network with host bits = %d %+v, want 400 cidr", code, eb)
	}
	if code := ts.do("POST", "/v1/networks", api.Network{Meta: api.Meta{Name: "default"}, CIDR: "10.77.0.0/29", Gateway: "10.77.0.1", Reserved: []string{"10.77.0.2"}}, nil); code != 201 {
		t.Fatalf("create network = %d", code)
	}
	a := ts.createInstance("a", smallSpec())
	b := ts.createInstance("b", smallSpec())
	if a.Spec.Network != "default" || a.Spec.IP != "10.77.0.3" || b.Spec.IP != "10.77.0.4" {
		t.Fatalf("assigned a=%s/%s b=%s, want default 10.77.0.3 and 10.77.0.4", a.Spec.Network, a.Spec.IP, b.Spec.IP)
	}
	if a.Spec.MAC == "" || a.Spec.MAC == b.Spec.MAC {
		t.Fatalf("MACs a=%q b=%q, want distinct", a.Spec.MAC, b.Spec.MAC)
	}
	tests := []struct {
		name      string
		spec      func(*api.InstanceSpec)
		wantCode  int
		wantField string
	}{
		{"duplicate IP", func(s *api.InstanceSpec) { s.IP = "10.77.0.3" }, 409, "spec.ip"},
		{"gateway IP", func(s *api.InstanceSpec) { s.IP = "10.77.0.1" }, 400, "spec.ip"},
		{"IP outside", func(s *api.InstanceSpec) { s.IP = "10.78.0.3" }, 400, "spec.ip"},
		{"duplicate MAC", func(s *api.InstanceSpec) { s.MAC = a.Spec.MAC }, 409, "spec.mac"},
		{"multicast MAC", func(s *api.InstanceSpec) { s.MAC = "01:00:5e:00:00:01" }, 400, "spec.mac"},
		{"unknown network", func(s *api.InstanceSpec) { s.Network = "nope" }, 400, "spec.network"},
		{"bad storage", func(s *api.InstanceSpec) { s.Storage = "nfs:/x" }, 400, "spec.storage"},
		{"bad probe", func(s *api.InstanceSpec) { s.Probe = &api.Probe{Type: "udp", Ports: []int{1}} }, 400, "spec.probe.type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := smallSpec()
			tc.spec(&spec)
			var eb api.ErrorBody
			code := ts.do("POST", "/v1/instances", api.CreateInstanceRequest{Name: "x", Spec: spec}, &eb)
			if code != tc.wantCode || eb.Error.Field != tc.wantField {
				t.Fatalf("create with %s = %d %+v, want %d %s", tc.name, code, eb, tc.wantCode, tc.wantField)
			}
		})
	}
	// Requested identity; then the network is full (.3-.6 usable, .2 reserved).
	spec := smallSpec()
	spec.IP, spec.MAC = "10.77.0.6", "0e:f0:00:aa:bb:cc"
	c := ts.createInstance("c", spec)
	if c.Spec.IP != "10.77.0.6" || c.Spec.MAC != "0e:f0:00:aa:bb:cc" {
		t.Fatalf("requested identity not kept: %+v", c.Spec)
	}
	ts.createInstance("d", smallSpec()) // .5
	if code := ts.do("POST", "/v1/instances", api.CreateInstanceRequest{Name: "e", Spec: smallSpec()}, &eb); code != 409 || eb.Error.Field != "spec.network" {
		t.Fatalf("create on a full network = %d %+v, want 409 spec.network", code, eb)
	}
	if code := ts.do("DELETE", "/v1/networks/default", nil, &eb); code != 409 {
		t.Fatalf("delete a used network = %d, want 409", code)
	}
	// Deleting an instance (never placed: no nodes) frees its address at once.
	if code := ts.do("DELETE", "/v1/instances/a", nil, nil); code != 200 {
		t.Fatalf("delete a = %d", code)
	}
	e := ts.createInstance("e", smallSpec())
	if e.Spec.IP != "10.77.0.3" {
		t.Fatalf("freed address not reused: e got %s", e.Spec.IP)
	}
}

func TestStartOnAnotherNode(t *testing.T) {
	ts := startServer(t, nil)
	n1, n2 := ts.mustJoin("n1"), ts.mustJoin("n2")
	stop1, stop2 := n1.keepBeating(), n2.keepBeating()
	defer stop1()
	defer stop2()
	shared := smallSpec()
	shared.Storage = "shared:/mnt/ferry"
	ts.createInstance("s", shared)
	ts.createInstance("l", smallSpec())
	var in, local api.Instance
	waitFor(t, 10*time.Second, "both placed", func() bool {
		in, _ = ts.getInstance("s")
		local, _ = ts.getInstance("l")
		return in.Status.Node != "" && local.Status.Node != ""
	})
	if in.Status.ReplicaNode != "" {
		t.Fatalf("shared-storage instance got a replica node %q", in.Status.ReplicaNode)
	}
	host := map[string]*fakeAgent{"n1": n1, "n2": n2}[in.Status.Node]
	other := "n2"
	if in.Status.Node == "n2" {
		other = "n1"
	}
	host.report("s", api.InstanceReport{Phase: api.PhaseRunning})
	var eb api.ErrorBody
	if code := ts.do("POST", "/v1/instances/s/start?on="+other, nil, &eb); code != 400 {
		t.Fatalf("start elsewhere while Running = %d %+v, want 400", code, eb)
	}
	// "Elsewhere" for l is relative to l's own host: first fit may have
	// put it on either node if one became Ready before the other.
	localOther := "n2"
	if local.Status.Node == "n2" {
		localOther = "n1"
	}
	if code := ts.do("POST", "/v1/instances/l/start?on="+localOther, nil, &eb); code != 400 || eb.Error.Field != "on" {
		t.Fatalf("start a local-disk instance elsewhere = %d %+v, want 400 on", code, eb)
	}
	host.report("s", api.InstanceReport{Phase: api.PhaseStopped})
	var moved api.Instance
	if code := ts.do("POST", "/v1/instances/s/start?on="+other, nil, &moved); code != 200 {
		t.Fatalf("start on %s after stop = %d", other, code)
	}
	if moved.Status.Node != other || moved.Status.Phase != api.PhaseScheduled || moved.Spec.State != api.DesiredRunning {
		t.Fatalf("moved = %+v %+v", moved.Status, moved.Spec.State)
	}
	// The old host may no longer report on it.
	if code := host.report("s", api.InstanceReport{Phase: api.PhaseRunning}); code != http.StatusConflict {
		t.Fatalf("old host's report after the move = %d, want 409", code)
	}
}

// testImage builds a tiny ext4 image with a fake kernel and initrd in /boot.
func testImage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 missing: run scripts/setup")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(root, "boot", f), bytes.Repeat([]byte(f), 100), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "test.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "test", "-d", root, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

func TestImageUploadAndDownload(t *testing.T) {
	ts := startServer(t, nil)
	img := testImage(t)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	var eb api.ErrorBody
	if code := ts.do("PUT", "/v1/images/bad", data[:len(data)/2], &eb); code != 400 {
		t.Fatalf("upload of a truncated image = %d %+v, want 400", code, eb)
	}
	if code := ts.do("PUT", "/v1/images/junk", bytes.Repeat([]byte{7}, 4096), &eb); code != 400 {
		t.Fatalf("upload of junk = %d %+v, want 400", code, eb)
	}
	// An ext4 disk without a kernel cannot boot by itself.
	empty := filepath.Join(t.TempDir(), "nokernel.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", empty, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	nok, _ := os.ReadFile(empty)
	if code := ts.do("PUT", "/v1/images/nokernel", nok, &eb); code != 400 || !strings.Contains(eb.Error.Message, "no /boot/vmlinuz") {
		t.Fatalf("upload of an image without a kernel = %d %+v, want 400 naming /boot/vmlinuz", code, eb)
	}
	var im api.Image
	if code := ts.do("PUT", "/v1/images/tiny", data, &im); code != 200 {
		t.Fatalf("upload = %d", code)
	}
	sum := sha256.Sum256(data)
	if !im.Ready || im.SHA256 != hex.EncodeToString(sum[:]) || int(im.Size) != len(data) || im.Label != "test" {
		t.Fatalf("image record = %+v", im)
	}
	var list api.List[api.Image]
	ts.do("GET", "/v1/images", nil, &list)
	if len(list.Items) != 2 { // demo (builtin) and tiny; failed uploads left nothing
		t.Fatalf("images after uploads: %+v", list.Items)
	}
	a := ts.mustJoin("n1")
	resp, err := a.client.Get(ts.url + "/v1/agent/images/tiny")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, data) || resp.Header.Get("X-Ferry-Sha256") != im.SHA256 {
		t.Fatalf("agent download: %d, %d bytes, sha header %q", resp.StatusCode, len(got), resp.Header.Get("X-Ferry-Sha256"))
	}
	// Users cannot use the agent route.
	if code := ts.do("GET", "/v1/agent/images/tiny", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("user on agent route = %d, want 401", code)
	}
	spec := smallSpec()
	spec.Image = "tiny"
	ts.createInstance("uses-tiny", spec)
	if code := ts.do("DELETE", "/v1/images/tiny", nil, &eb); code != 409 {
		t.Fatalf("delete an image in use = %d, want 409", code)
	}
}
