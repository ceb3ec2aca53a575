package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/disk/repl"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/vmm/fake"
)

// diskServer is the control plane's part of the disk path, as an agent
// sees it: outdate requests and disk reports.
type diskServer struct {
	url string
	ca  *pki.CA

	mu       sync.Mutex
	epoch    uint64
	outdates int
	refuse   bool // answer outdate requests with 409
	reports  []api.DiskStatus
}

func newDiskServer(t *testing.T, ca *pki.CA) *diskServer {
	ds := &diskServer{ca: ca, epoch: 1}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agent/instances/{name}/outdate-replica", func(w http.ResponseWriter, r *http.Request) {
		var req api.OutdateRequest
		if err := api.Decode(r.Body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		ds.mu.Lock()
		defer ds.mu.Unlock()
		if ds.refuse || req.Epoch != ds.epoch {
			writeError(w, http.StatusConflict, "conflict", "not the primary")
			return
		}
		ds.epoch++
		ds.outdates++
		writeJSON(w, http.StatusOK, api.OutdateResponse{Epoch: ds.epoch})
	})
	mux.HandleFunc("PUT /v1/agent/instances/{name}/disk", func(w http.ResponseWriter, r *http.Request) {
		var d api.DiskStatus
		if err := api.Decode(r.Body, &d); err != nil {
			writeError(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		ds.mu.Lock()
		ds.reports = append(ds.reports, d)
		ds.mu.Unlock()
		writeJSON(w, http.StatusOK, api.Instance{})
	})
	cert, err := ca.IssueServerCert(nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = pki.ServerTLSConfig(cert, ca.Pool())
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ds.url = srv.URL
	return ds
}

func (ds *diskServer) lastState() string {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if len(ds.reports) == 0 {
		return ""
	}
	return ds.reports[len(ds.reports)-1].State
}

// diskAgent builds an agent with a node certificate and its API listening
// on loopback, without running it: the test drives its disk code directly.
func diskAgent(t *testing.T, ctx context.Context, ds *diskServer, node string) *Agent {
	t.Helper()
	keyPEM, csrPEM, err := pki.NewNodeKeyAndCSR(node)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ds.ca.SignNodeCSR(csrPEM, node, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.AgentTLSConfig(certPEM, keyPEM, ds.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		log:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", node),
		driver: fake.New(), name: node, serverURL: ds.url, stateDir: t.TempDir(),
		tune: testTuning, metrics: newMetrics(), workers: map[string]*worker{}, disks: map[string]*replDisk{},
		diskTune: diskTuning{degradeAfter: 300 * time.Millisecond, reportEvery: 50 * time.Millisecond, poll: 20 * time.Millisecond},
		runCtx:   ctx, tlsCfg: tlsCfg, client: &http.Client{Transport: newTransport(tlsCfg, time.Second)},
	}
	a.vmsDir = filepath.Join(a.stateDir, vmsDirName)
	var wg sync.WaitGroup
	addr, err := a.serveAPI(ctx, "127.0.0.1:0", tlsCfg, &wg)
	if err != nil {
		t.Fatal(err)
	}
	a.apiAddr = addr
	t.Cleanup(wg.Wait)
	return a
}

// TestReplicatedDiskBetweenAgents runs a disk's primary and secondary in
// two agents over the real link (TLS with node certificates, ALPN on the
// agent API port): writes reach the replica; a link from a node that is not
// the disk's primary is refused; losing the replica freezes the primary
// until the control plane outdated it under a new epoch; the replica's
// return resyncs; a control plane that refuses leaves the primary frozen;
// and a reset keeps the replica's copy aside.
func TestReplicatedDiskBetweenAgents(t *testing.T) {
	ca, err := pki.NewCA("ferry test CA", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ds := newDiskServer(t, ca)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a1, a2 := diskAgent(t, ctx, ds, "n1"), diskAgent(t, ctx, ds, "n2")

	inst := instance("db", api.DesiredRunning)
	inst.Spec.Disk = 8 << 20
	inst.Status.Node, inst.Status.ReplicaNode, inst.Status.Epoch = "n1", "n2", 1
	w1 := &worker{a: a1, name: "db", log: a1.log}
	w2 := &worker{a: a2, name: "db", log: a2.log}
	defer a1.closeDisk("db", "", false)
	defer a2.closeDisk("db", "", false)

	// The secondary expects n3 as the primary: n1's link is refused.
	if err := w2.ensureSecondary(&inst, &api.Peer{Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	if err := createEmptyDisk(a1.diskPath(&inst), int64(inst.Spec.Disk)); err != nil {
		t.Fatal(err)
	}
	if _, err := w1.ensurePrimary(&inst, &api.Peer{Node: "n2", Address: a2.apiAddr}); err != nil {
		t.Fatal(err)
	}
	d1 := a1.disk("db")
	eventually(t, "the link refused with a reason", func() bool {
		d1.mu.Lock()
		defer d1.mu.Unlock()
		return d1.linkErr != nil && strings.Contains(d1.linkErr.Error(), "is not the primary of db")
	})
	// Never linked: after degradeAfter the primary asks to go on alone.
	eventually(t, "a new primary degraded with consent", func() bool {
		return d1.prim.Status().State == repl.StateDegraded
	})

	// With the right primary named, the link comes up and resyncs.
	if err := w2.ensureSecondary(&inst, &api.Peer{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "UpToDate reported", func() bool { return ds.lastState() == api.DiskUpToDate })
	data := bytes.Repeat([]byte("ferry!!!"), 512)
	if _, err := d1.prim.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	f, err := os.Open(a2.diskPath(&inst))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replica does not hold an acknowledged write (err %v)", err)
	}
	f.Close()

	// The replica goes away: the primary freezes, asks, and goes on.
	ds.mu.Lock()
	before := ds.outdates
	ds.mu.Unlock()
	if err := a2.closeDisk("db", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := d1.prim.WriteAt(data, 2<<20); err != nil { // blocks while frozen
		t.Fatal(err)
	}
	ds.mu.Lock()
	after, epoch := ds.outdates, ds.epoch
	ds.mu.Unlock()
	if after != before+1 || d1.prim.Status().State != repl.StateDegraded || d1.prim.Status().Epoch != epoch {
		t.Fatalf("after losing the replica: %d outdates (want %d), state %s epoch %d (want Degraded, %d)",
			after, before+1, d1.prim.Status().State, d1.prim.Status().Epoch, epoch)
	}
	// The replica returns under the new epoch: the dirty region is resynced.
	inst.Status.Epoch = epoch
	if err := w2.ensureSecondary(&inst, &api.Peer{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "UpToDate again", func() bool { return d1.prim.Status().State == repl.StateUpToDate })
	if p := d1.prim.Progress(); !p.Done || p.SentBytes == 0 || p.SentBytes > 2*repl.DefaultRegionSize {
		t.Fatalf("resync progress %+v: want only the dirty region sent", p)
	}

	// An isolated primary (the control plane refuses, or cannot be
	// reached) stays frozen: writes do not complete.
	ds.mu.Lock()
	ds.refuse = true
	ds.mu.Unlock()
	if err := a2.closeDisk("db", "", false); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := d1.prim.WriteAt(data, 3<<20); done <- err }()
	never(t, 500*time.Millisecond, "a write completing on a primary the control plane did not let go on", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	if st := d1.prim.Status().State; st != repl.StateFrozen {
		t.Fatalf("isolated primary is %s, want Frozen", st)
	}
	eventually(t, "Frozen reported", func() bool { return ds.lastState() == api.DiskFrozen })
	if err := a1.closeDisk("db", "", false); err != nil {
		t.Fatal(err)
	}
	<-done // Close fails the frozen write

	// A reset (after a divergence) keeps the replica's copy aside and
	// starts it over empty.
	inst.Status.ReplicaResets = 1
	if err := w2.ensureSecondary(&inst, &api.Peer{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	aside, _ := filepath.Glob(a2.diskPath(&inst) + ".diverged-*")
	if len(aside) == 0 {
		t.Fatal("reset did not keep the replica's copy aside")
	}
	f, err = os.Open(a2.diskPath(&inst))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 1<<20); err != nil || bytes.Equal(got, data) {
		t.Fatalf("after a reset the replica still holds the old data (err %v)", err)
	}
	// The same reset is applied once only.
	if err := a2.closeDisk("db", "", false); err != nil {
		t.Fatal(err)
	}
	if err := w2.ensureSecondary(&inst, &api.Peer{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if again, _ := filepath.Glob(a2.diskPath(&inst) + ".diverged-*"); len(again) != len(aside) {
		t.Fatalf("a reset already applied kept the copy aside again: %v", again)
	}
}
