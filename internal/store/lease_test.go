package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseTTL is etcd's minimum lease TTL with default timings.
const leaseTTL = 2 * time.Second

// aliveKV returns node's alive key, or nil if it does not exist.
func aliveKV(t *testing.T, s *store.Store, node string) *struct{ Lease, CreateRevision int64 } {
	t.Helper()
	resp, err := s.Client().Get(testCtx(t), s.Key("alive/"+node))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return &struct{ Lease, CreateRevision int64 }{resp.Kvs[0].Lease, resp.Kvs[0].CreateRevision}
}

// onAlive returns an onAlive callback that counts its calls and records a
// NodeReady event with the alive key.
func onAlive(s *store.Store, node string, calls *atomic.Int32) func() ([]clientv3.Op, []clientv3.Cmp, error) {
	return func() ([]clientv3.Op, []clientv3.Cmp, error) {
		calls.Add(1)
		return []clientv3.Op{s.EventOp(api.Event{Kind: "Node", Name: node, Type: "NodeReady"})}, nil, nil
	}
}

// TestNodeLease follows one node's lease through its life: created once,
// kept alive by refreshes from two servers, expired when they stop.
func TestNodeLease(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)
	s1 := storetest.NewStore(t, endpoints)
	s2 := storetest.NewStoreWithPrefix(t, endpoints, s1.Key("")) // a second server
	ctx := testCtx(t)
	l1, l2 := s1.NewNodeLeases(leaseTTL), s2.NewNodeLeases(leaseTTL)
	if l1.TTL() != leaseTTL {
		t.Errorf("TTL() = %v, want %v", l1.TTL(), leaseTTL)
	}

	_, rev, err := s1.AliveNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alive := s1.WatchAlive(ctx, rev)

	var calls atomic.Int32
	created, err := l1.Refresh(ctx, "n1", onAlive(s1, "n1", &calls))
	if err != nil || !created {
		t.Fatalf("first Refresh = %v, %v; want created", created, err)
	}
	first := aliveKV(t, s1, "n1")
	if first == nil || first.Lease == 0 {
		t.Fatalf("alive key after first Refresh = %+v, want one with a lease", first)
	}
	if events, _, _ := s1.ListEvents(ctx, 0); len(events) != 1 || events[0].Type != "NodeReady" {
		t.Errorf("events after first Refresh = %+v, want the onAlive NodeReady", events)
	}
	if ev := recv(t, alive); ev.Node != "n1" || !ev.Alive {
		t.Errorf("WatchAlive = %+v, want n1 alive", ev)
	}

	// Heartbeats for three TTLs, alternating between the two servers: the
	// second finds the lease through the alive key and creates nothing.
	tick := time.NewTicker(leaseTTL / 4)
	defer tick.Stop()
	end := time.Now().Add(3 * leaseTTL)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		l := l1
		if i%2 == 1 {
			l = l2
		}
		created, err := l.Refresh(ctx, "n1", onAlive(s1, "n1", &calls))
		if err != nil || created {
			t.Fatalf("Refresh %d = %v, %v; want not created", i, created, err)
		}
		if kv := aliveKV(t, s1, "n1"); kv == nil || *kv != *first {
			t.Fatalf("alive key after Refresh %d = %+v, want %+v", i, kv, first)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("onAlive called %d times, want once", n)
	}
	if nodes, _, err := s2.AliveNodes(ctx); err != nil || !nodes["n1"] || len(nodes) != 1 {
		t.Errorf("AliveNodes = %v, %v; want n1", nodes, err)
	}
	select {
	case ev := <-alive:
		t.Errorf("WatchAlive reported %+v while the lease was refreshed", ev)
	default:
	}

	// The heartbeats stop: the key goes within TTL+1s, not before the TTL.
	if _, err := l2.Refresh(ctx, "n1", onAlive(s1, "n1", &calls)); err != nil {
		t.Fatal(err)
	}
	lastRefresh := time.Now()
	ev := recv(t, alive)
	gone := time.Since(lastRefresh)
	if ev.Node != "n1" || ev.Alive {
		t.Errorf("WatchAlive = %+v, want n1 not alive", ev)
	}
	if gone > leaseTTL+time.Second || gone < leaseTTL-200*time.Millisecond {
		t.Errorf("alive key gone %v after the last refresh, want within [TTL-0.2s, TTL+1s] (TTL %v)", gone, leaseTTL)
	}
	t.Logf("alive key gone %v after the last refresh (TTL %v)", gone, leaseTTL)
	if kv := aliveKV(t, s1, "n1"); kv != nil {
		t.Errorf("alive key after expiry = %+v, want none", kv)
	}

	// A heartbeat after expiry is a new life: a new lease and onAlive again,
	// whichever server gets it.
	created, err = l1.Refresh(ctx, "n1", onAlive(s1, "n1", &calls))
	if err != nil || !created {
		t.Fatalf("Refresh after expiry = %v, %v; want created", created, err)
	}
	if kv := aliveKV(t, s1, "n1"); kv == nil || kv.Lease == first.Lease {
		t.Errorf("alive key after rejoin = %+v, want a new lease (old %x)", kv, first.Lease)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("onAlive called %d times, want 2", n)
	}
	if ev := recv(t, alive); ev.Node != "n1" || !ev.Alive {
		t.Errorf("WatchAlive = %+v, want n1 alive again", ev)
	}
}

func TestNodeLeaseExpire(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)
	s1 := storetest.NewStore(t, endpoints)
	s2 := storetest.NewStoreWithPrefix(t, endpoints, s1.Key(""))
	ctx := testCtx(t)
	l1, l2 := s1.NewNodeLeases(leaseTTL), s2.NewNodeLeases(leaseTTL)
	var calls atomic.Int32
	for _, node := range []string{"n1", "n2"} {
		if _, err := l1.Refresh(ctx, node, onAlive(s1, node, &calls)); err != nil {
			t.Fatal(err)
		}
	}
	lease := aliveKV(t, s1, "n1").Lease
	// Expired by the other server: it finds the lease through the key.
	if err := l2.Expire(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	nodes, _, err := s1.AliveNodes(ctx)
	if err != nil || nodes["n1"] || !nodes["n2"] {
		t.Errorf("AliveNodes right after Expire(n1) = %v, %v; want only n2", nodes, err)
	}
	if ttl, err := s1.Client().TimeToLive(ctx, clientv3.LeaseID(lease)); err != nil || ttl.TTL != -1 {
		t.Errorf("lease of n1 after Expire: ttl %d, %v; want revoked (-1)", ttl.TTL, err)
	}
	if err := l2.Expire(ctx, "n1"); err != nil {
		t.Errorf("second Expire(n1) = %v, want nil", err)
	}
	if err := l2.Expire(ctx, "never-seen"); err != nil {
		t.Errorf("Expire(unknown) = %v, want nil", err)
	}
	// The server that had the lease cached notices it is gone.
	created, err := l1.Refresh(ctx, "n1", onAlive(s1, "n1", &calls))
	if err != nil || !created {
		t.Errorf("Refresh after Expire = %v, %v; want created", created, err)
	}
}

func TestNodeLeaseOnAlive(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)
	boom := errors.New("boom")
	tests := []struct {
		name    string
		onAlive func(s *store.Store) func() ([]clientv3.Op, []clientv3.Cmp, error)
		wantErr error
	}{
		{
			name: "callback error",
			onAlive: func(*store.Store) func() ([]clientv3.Op, []clientv3.Cmp, error) {
				return func() ([]clientv3.Op, []clientv3.Cmp, error) { return nil, nil, boom }
			},
			wantErr: boom,
		},
		{
			name: "failed precondition",
			onAlive: func(s *store.Store) func() ([]clientv3.Op, []clientv3.Cmp, error) {
				return func() ([]clientv3.Op, []clientv3.Cmp, error) {
					// The node record must exist, and it does not.
					return []clientv3.Op{s.EventOp(api.Event{Type: "NodeReady"})},
						[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Key("nodes/n1")), ">", 0)}, nil
				}
			},
			wantErr: store.ErrConflict,
		},
	}
	// Not parallel: the lease count is per etcd, not per prefix.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := storetest.NewStore(t, endpoints)
			ctx := testCtx(t)
			before, err := s.Client().Leases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			created, err := s.NewNodeLeases(leaseTTL).Refresh(ctx, "n1", tc.onAlive(s))
			if created || !errors.Is(err, tc.wantErr) {
				t.Errorf("Refresh = %v, %v; want not created, %v", created, err, tc.wantErr)
			}
			if kv := aliveKV(t, s, "n1"); kv != nil {
				t.Errorf("alive key = %+v, want none", kv)
			}
			if events, _, _ := s.ListEvents(ctx, 0); len(events) != 0 {
				t.Errorf("%d events written, want none", len(events))
			}
			// The lease granted for the attempt is revoked, not left to expire.
			after, err := s.Client().Leases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(after.Leases) > len(before.Leases) {
				t.Errorf("%d leases before Refresh, %d after: the failed attempt's lease leaked", len(before.Leases), len(after.Leases))
			}
		})
	}
}

// TestNodeLeaseRace has two servers receive the first heartbeat of a node
// at the same time: one lease and one alive key result.
func TestNodeLeaseRace(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)
	s1 := storetest.NewStore(t, endpoints)
	s2 := storetest.NewStoreWithPrefix(t, endpoints, s1.Key(""))
	ctx := testCtx(t)
	ls := []*store.NodeLeases{s1.NewNodeLeases(leaseTTL), s2.NewNodeLeases(leaseTTL)}
	var (
		calls   atomic.Int32
		wg      sync.WaitGroup
		created [2]bool
		errs    [2]error
	)
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created[i], errs[i] = l.Refresh(ctx, "n1", onAlive(s1, "n1", &calls))
		}()
	}
	wg.Wait()
	n := 0
	for i := range ls {
		switch {
		case created[i]:
			n++
		case errs[i] != nil && !errors.Is(errs[i], store.ErrConflict):
			t.Errorf("Refresh by server %d: %v, want nil or ErrConflict", i+1, errs[i])
		}
	}
	if n != 1 {
		t.Errorf("%d servers created the alive key, want 1 (errors %v)", n, errs)
	}
	kv := aliveKV(t, s1, "n1")
	if kv == nil {
		t.Fatal("no alive key")
	}
	// The next heartbeat on either server joins the one lease.
	for i, l := range ls {
		if created, err := l.Refresh(ctx, "n1", onAlive(s1, "n1", &calls)); err != nil || created {
			t.Errorf("next Refresh by server %d = %v, %v; want not created", i+1, created, err)
		}
	}
	if got := aliveKV(t, s1, "n1"); got == nil || *got != *kv {
		t.Errorf("alive key = %+v, want %+v", got, kv)
	}
	if events, _, _ := s1.ListEvents(ctx, 0); len(events) != 1 {
		t.Errorf("%d NodeReady events, want 1", len(events))
	}
}

// TestWatchAliveCancel checks that WatchAlive's channel closes with ctx.
func TestWatchAliveCancel(t *testing.T) {
	t.Parallel()
	s := storetest.NewStore(t, storetest.Embedded(t))
	ctx, cancel := context.WithCancel(testCtx(t))
	ch := s.WatchAlive(ctx, 0)
	cancel()
	waitClosed(t, ch)
}
