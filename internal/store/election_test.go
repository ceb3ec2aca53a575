package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const electionTTL = 2 * time.Second

// leaders records who runs lead, and how many at once.
type leaders struct {
	mu      sync.Mutex
	leading map[string]bool
	max     int
	history []string
	// lost receives the id of a leader whose lead context was cancelled.
	lost chan string
}

func newLeaders() *leaders {
	return &leaders{leading: map[string]bool{}, lost: make(chan string, 16)}
}

// lead returns a lead function for id that holds leadership until its
// context ends, or returns at once if early is set.
func (l *leaders) lead(id string, early bool) func(ctx context.Context, guarded *store.Store) {
	return func(ctx context.Context, _ *store.Store) {
		l.mu.Lock()
		l.leading[id] = true
		l.max = max(l.max, len(l.leading))
		l.history = append(l.history, id)
		l.mu.Unlock()
		if !early {
			<-ctx.Done()
		}
		l.mu.Lock()
		delete(l.leading, id)
		l.mu.Unlock()
		if !early {
			l.lost <- id
		}
	}
}

// current returns the one id leading now, or "" (and how many lead).
func (l *leaders) current() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.leading {
		return id, len(l.leading)
	}
	return "", 0
}

func (l *leaders) stats() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max, slices.Clone(l.history)
}

// contender runs RunForLeader as id on a store of its own (a server).
type contender struct {
	id     string
	s      *store.Store
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startContender(t *testing.T, endpoints []string, prefix, id string, lead func(context.Context, *store.Store)) *contender {
	t.Helper()
	s := storetest.NewStoreWithPrefix(t, endpoints, prefix)
	ctx, cancel := context.WithCancel(context.Background())
	c := &contender{id: id, s: s, cancel: cancel, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { c.done <- s.RunForLeader(ctx, id, electionTTL, log, lead) }()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop cancels the contender and waits for RunForLeader to return.
func (c *contender) stop(t *testing.T) {
	t.Helper()
	c.once.Do(func() {
		c.cancel()
		select {
		case err := <-c.done:
			if err != nil {
				t.Errorf("RunForLeader(%s) = %v, want nil", c.id, err)
			}
		case <-time.After(testTimeout):
			t.Errorf("RunForLeader(%s) did not return after cancel", c.id)
		}
	})
}

func leaderIs(t *testing.T, s *store.Store, want string) {
	t.Helper()
	if got, err := s.Leader(testCtx(t)); err != nil || got != want {
		t.Errorf("Leader() = %q, %v; want %q", got, err, want)
	}
}

func TestRunForLeader(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)

	t.Run("handover on cancel", func(t *testing.T) {
		t.Parallel()
		prefix := "/ferry-test/" + store.NewID() + "/"
		obs := storetest.NewStoreWithPrefix(t, endpoints, prefix)
		leaderIs(t, obs, "")
		ls := newLeaders()
		cs := map[string]*contender{}
		for _, id := range []string{"a", "b"} {
			cs[id] = startContender(t, endpoints, prefix, id, ls.lead(id, false))
		}
		var first string
		waitFor(t, testTimeout, "a leader", func() bool { first, _ = ls.current(); return first != "" })
		leaderIs(t, obs, first)
		second := "a"
		if first == "a" {
			second = "b"
		}
		cs[first].stop(t)
		if id := <-ls.lost; id != first {
			t.Errorf("lead of %s ended, want %s", id, first)
		}
		took := waitFor(t, testTimeout, second+" leads", func() bool { id, _ := ls.current(); return id == second })
		t.Logf("%s took over %v after %s stopped", second, took, first)
		leaderIs(t, obs, second)
		cs[second].stop(t)
		leaderIs(t, obs, "")
		if n, history := ls.stats(); n != 1 || !slices.Equal(history, []string{first, second}) {
			t.Errorf("at most %d leaders at once, leaders in turn %v; want 1, [%s %s]", n, history, first, second)
		}
	})

	t.Run("session lost cancels lead", func(t *testing.T) {
		t.Parallel()
		prefix := "/ferry-test/" + store.NewID() + "/"
		obs := storetest.NewStoreWithPrefix(t, endpoints, prefix)
		ls := newLeaders()
		startContender(t, endpoints, prefix, "a", ls.lead("a", false))
		waitFor(t, testTimeout, "a leads", func() bool { id, _ := ls.current(); return id == "a" })
		startContender(t, endpoints, prefix, "b", ls.lead("b", false))
		// b waits behind a's key; wait until it is there.
		waitFor(t, testTimeout, "b campaigns", func() bool {
			resp, err := obs.Client().Get(testCtx(t), obs.Key("leader/"), clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && resp.Count == 2
		})
		// a's etcd session ends as if a had been cut off for a TTL.
		resp, err := obs.Client().Get(testCtx(t), obs.Key("leader/"), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "a" {
			t.Fatalf("leader key: %v, %v", resp, err)
		}
		revoked := time.Now()
		if _, err := obs.Client().Revoke(testCtx(t), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-ls.lost:
			if id != "a" {
				t.Fatalf("lead of %s ended, want a", id)
			}
		case <-time.After(electionTTL + time.Second):
			t.Fatalf("a still leads %v after its session was lost", electionTTL+time.Second)
		}
		t.Logf("a's lead cancelled %v after its session was revoked", time.Since(revoked))
		waitFor(t, testTimeout, "b leads", func() bool { id, n := ls.current(); return id == "b" && n == 1 })
		leaderIs(t, obs, "b")
		// etcd learns of the loss at once, a only at its next keepalive:
		// b may lead before a's lead context is cancelled.
		n, _ := ls.stats()
		t.Logf("at most %d leaders at once", n)
	})

	t.Run("lead returning hands over", func(t *testing.T) {
		t.Parallel()
		prefix := "/ferry-test/" + store.NewID() + "/"
		obs := storetest.NewStoreWithPrefix(t, endpoints, prefix)
		ls := newLeaders()
		startContender(t, endpoints, prefix, "a", ls.lead("a", true))
		waitFor(t, testTimeout, "a leads", func() bool { _, history := ls.stats(); return len(history) > 0 })
		startContender(t, endpoints, prefix, "b", ls.lead("b", false))
		waitFor(t, testTimeout, "b leads", func() bool { id, _ := ls.current(); return id == "b" })
		leaderIs(t, obs, "b")
	})
}

// TestGuardedStoreRefusesDeposedLeader shows that writes through the store
// handed to lead fail once the leadership has passed to another server,
// even if the deposed leader keeps writing.
func TestGuardedStoreRefusesDeposedLeader(t *testing.T) {
	endpoints := storetest.Embedded(t)
	prefix := "/ferry-test/guard-" + store.NewID() + "/"
	got := make(chan *store.Store, 1)
	a := startContender(t, endpoints, prefix, "a", func(ctx context.Context, g *store.Store) {
		got <- g
		<-ctx.Done()
	})
	var guarded *store.Store
	select {
	case guarded = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("a never led")
	}
	ctx := context.Background()
	if err := guarded.Images.Create(ctx, &api.Image{Meta: api.Meta{Name: "while-leader"}}); err != nil {
		t.Fatalf("guarded write while leader: %v", err)
	}
	bLeads := make(chan struct{})
	startContender(t, endpoints, prefix, "b", func(ctx context.Context, _ *store.Store) {
		close(bLeads)
		<-ctx.Done()
	})
	a.stop(t)
	select {
	case <-bLeads:
	case <-time.After(20 * time.Second):
		t.Fatal("b never led")
	}
	err := guarded.Images.Create(ctx, &api.Image{Meta: api.Meta{Name: "after-deposed"}})
	if !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("guarded create after losing leadership = %v, want ErrNotLeader", err)
	}
	if _, err := a.s.Images.Get(ctx, "after-deposed"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deposed leader's write landed: %v", err)
	}
}
