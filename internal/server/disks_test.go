package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// TestReplicaRolesOutdateAndDiskReports walks the control plane's half of
// a replicated disk: both hosts get the instance (primary and secondary,
// each naming the other), a new replica starts outdated, the primary's
// UpToDate report clears that, losing the replica raises the epoch in the
// same change that outdates it, and stale or foreign reports are refused.
func TestReplicaRolesOutdateAndDiskReports(t *testing.T) {
	ts := startServer(t, nil)
	a1, a2 := ts.mustJoin("n1"), ts.mustJoin("n2")
	defer a1.keepBeating()()
	defer a2.keepBeating()()
	waitFor(t, 5*time.Second, "2 Ready nodes", func() bool {
		var nodes api.List[api.Node]
		ts.do("GET", "/v1/nodes", nil, &nodes)
		ready := 0
		for _, n := range nodes.Items {
			if n.Status.State == api.NodeReady {
				ready++
			}
		}
		return ready == 2
	})
	ts.createInstance("web", smallSpec())
	var in api.Instance
	waitFor(t, 5*time.Second, "placement", func() bool {
		in, _ = ts.getInstance("web")
		return in.Status.Node != "" && in.Status.ReplicaNode != ""
	})
	if in.Status.Epoch != 1 || !in.Status.ReplicaOutdated {
		t.Fatalf("after placement epoch=%d replicaOutdated=%v, want 1 and true", in.Status.Epoch, in.Status.ReplicaOutdated)
	}
	prim, sec := a1, a2
	if in.Status.Node == "n2" {
		prim, sec = a2, a1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range []struct {
		a          *fakeAgent
		role, peer string
	}{{prim, api.RolePrimary, sec.name}, {sec, api.RoleSecondary, prim.name}} {
		ev := next(t, c.a.stream(ctx), c.role+" snapshot")
		if ev.Type != api.AssignPut || ev.Role != c.role || ev.Peer == nil || ev.Peer.Node != c.peer {
			t.Fatalf("%s got %+v (peer %+v), want put role %s peer %s", c.a.name, ev, ev.Peer, c.role, c.peer)
		}
	}

	disk := func(a *fakeAgent, d api.DiskStatus) int {
		return doJSON(t, a.client, "PUT", ts.url+"/v1/agent/instances/web/disk", "", d, nil)
	}
	outdate := func(a *fakeAgent, epoch uint64) (int, uint64) {
		var resp api.OutdateResponse
		code := doJSON(t, a.client, "POST", ts.url+"/v1/agent/instances/web/outdate-replica", "", api.OutdateRequest{Epoch: epoch}, &resp)
		return code, resp.Epoch
	}
	if code := disk(sec, api.DiskStatus{State: api.DiskUpToDate, Epoch: 1}); code != http.StatusConflict {
		t.Fatalf("disk report from the secondary = %d, want 409", code)
	}
	if code := disk(prim, api.DiskStatus{State: "Fine", Epoch: 1}); code != http.StatusBadRequest {
		t.Fatalf("disk report with a bad state = %d, want 400", code)
	}
	if code := disk(prim, api.DiskStatus{State: api.DiskUpToDate, Epoch: 1}); code != 200 {
		t.Fatalf("UpToDate report = %d", code)
	}
	in, _ = ts.getInstance("web")
	if in.Status.ReplicaOutdated || in.Status.Disk == nil || in.Status.Disk.State != api.DiskUpToDate {
		t.Fatalf("after UpToDate: replicaOutdated=%v disk=%+v", in.Status.ReplicaOutdated, in.Status.Disk)
	}

	if code, _ := outdate(sec, 1); code != http.StatusConflict {
		t.Fatalf("outdate by the secondary = %d, want 409", code)
	}
	if code, _ := outdate(prim, 5); code != http.StatusConflict {
		t.Fatalf("outdate with a future epoch = %d, want 409", code)
	}
	code, epoch := outdate(prim, 1)
	if code != 200 || epoch != 2 {
		t.Fatalf("outdate = %d epoch %d, want 200 epoch 2", code, epoch)
	}
	if code, epoch := outdate(prim, 1); code != 200 || epoch != 2 {
		t.Fatalf("retried outdate = %d epoch %d, want the same answer (200, 2)", code, epoch)
	}
	in, _ = ts.getInstance("web")
	if !in.Status.ReplicaOutdated || in.Status.Epoch != 2 {
		t.Fatalf("after outdate: replicaOutdated=%v epoch=%d", in.Status.ReplicaOutdated, in.Status.Epoch)
	}
	// A report from before the outdate must not clear it.
	if code := disk(prim, api.DiskStatus{State: api.DiskUpToDate, Epoch: 1}); code != http.StatusConflict {
		t.Fatalf("stale UpToDate report = %d, want 409", code)
	}
	if code := disk(prim, api.DiskStatus{State: api.DiskSyncing, Epoch: 2, Sync: &api.DiskSync{TotalBytes: 100, DoneBytes: 40}}); code != 200 {
		t.Fatalf("Syncing report = %d", code)
	}
	in, _ = ts.getInstance("web")
	if !in.Status.ReplicaOutdated {
		t.Fatal("Syncing cleared replicaOutdated")
	}
	if code := disk(prim, api.DiskStatus{State: api.DiskDiverged, Epoch: 2, Reason: "test"}); code != 200 {
		t.Fatalf("Diverged report = %d", code)
	}
	in, _ = ts.getInstance("web")
	if in.Status.ReplicaResets != 1 {
		t.Fatalf("replicaResets = %d after a divergence, want 1", in.Status.ReplicaResets)
	}
	if code := disk(prim, api.DiskStatus{State: api.DiskUpToDate, Epoch: 2}); code != 200 {
		t.Fatalf("UpToDate report = %d", code)
	}
	in, _ = ts.getInstance("web")
	if in.Status.ReplicaOutdated {
		t.Fatal("UpToDate under the current epoch did not clear replicaOutdated")
	}
	var evs api.List[api.Event]
	ts.do("GET", "/v1/events", nil, &evs)
	want := map[string]bool{"ReplicaOutdated": false, "DiskUpToDate": false, "DiskSyncing": false, "ReplicaReset": false}
	for _, e := range evs.Items {
		if _, ok := want[e.Type]; ok && e.Name == "web" {
			want[e.Type] = true
		}
	}
	for typ, seen := range want {
		if !seen {
			t.Errorf("no %s event", typ)
		}
	}
}
