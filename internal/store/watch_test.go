package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func TestWatch(t *testing.T) {
	t.Parallel()
	testWatch(t, storetest.Embedded(t))
}

// testWatch checks Collection.Watch against the etcd at endpoints.
func testWatch(t *testing.T, endpoints []string) {
	t.Run("puts and deletes in order from a revision", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		_, rev, err := s.Instances.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Made before the watch starts: the watch replays them from rev.
		a := newInstance("a")
		if err := s.Instances.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := s.Instances.Create(ctx, newInstance("b")); err != nil {
			t.Fatal(err)
		}
		// Another kind in the same store is not part of the watch.
		if err := s.Nodes.Create(ctx, &api.Node{Meta: api.Meta{Name: "n1"}}); err != nil {
			t.Fatal(err)
		}
		a.Spec.CPUs = 7
		if err := s.Instances.Update(ctx, a); err != nil {
			t.Fatal(err)
		}
		w := s.Instances.Watch(ctx, rev)
		if err := s.Instances.Delete(ctx, "b", 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Instances.Create(ctx, newInstance("c")); err != nil {
			t.Fatal(err)
		}
		want := []struct {
			name    string
			deleted bool
			cpus    int
		}{
			{name: "a", cpus: 1},
			{name: "b", cpus: 1},
			{name: "a", cpus: 7},
			{name: "b", deleted: true},
			{name: "c", cpus: 1},
		}
		last := rev
		for i, we := range want {
			ev := recv(t, w.C)
			if ev.Name != we.name || ev.Deleted != we.deleted {
				t.Fatalf("event %d = %s deleted=%v, want %s deleted=%v", i, ev.Name, ev.Deleted, we.name, we.deleted)
			}
			if ev.Revision <= last {
				t.Errorf("event %d revision %d, want > %d", i, ev.Revision, last)
			}
			last = ev.Revision
			switch {
			case we.deleted && ev.Object != nil:
				t.Errorf("event %d: delete carries an object", i)
			case !we.deleted && ev.Object == nil:
				t.Errorf("event %d: put without an object", i)
			case !we.deleted:
				if ev.Object.Spec.CPUs != we.cpus || ev.Object.ResourceVersion != fmt.Sprint(ev.Revision) {
					t.Errorf("event %d object cpus %d rv %s, want cpus %d rv %d", i, ev.Object.Spec.CPUs, ev.Object.ResourceVersion, we.cpus, ev.Revision)
				}
			}
		}
		if a.ResourceVersion != fmt.Sprint(modRev(t, s, "a")) {
			t.Errorf("a's resourceVersion %s is not its mod revision", a.ResourceVersion)
		}
	})

	t.Run("resumes from a list revision without missing a change", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		const total = 60
		// The writer runs while the list and the watch start, so changes
		// land before, between and after them.
		listed := make(chan struct{})
		writeErr := make(chan error, 1)
		go func() {
			for i := range total {
				if i == total/3 {
					close(listed)
				}
				if err := s.Instances.Create(ctx, newInstance(fmt.Sprintf("i%03d", i))); err != nil {
					writeErr <- err
					return
				}
			}
			writeErr <- nil
		}()
		<-listed
		list, rev, err := s.Instances.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w := s.Instances.Watch(ctx, rev)
		seen := map[string]int{}
		for _, in := range list {
			seen[in.Name]++
		}
		for len(seen) < total {
			ev := recv(t, w.C)
			if ev.Revision <= rev {
				t.Errorf("event %s at revision %d, already in the list at %d", ev.Name, ev.Revision, rev)
			}
			seen[ev.Name]++
		}
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		for name, n := range seen {
			if n != 1 {
				t.Errorf("%s seen %d times, want once", name, n)
			}
		}
		t.Logf("%d objects listed at revision %d, %d watched", len(list), rev, total-len(list))
	})

	t.Run("from now", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		if err := s.Instances.Create(ctx, newInstance("before")); err != nil {
			t.Fatal(err)
		}
		w := s.Instances.Watch(ctx, 0)
		// The watch may be registered after the first writes; keep writing
		// until one arrives and check that "before" never does.
		deadline := time.Now().Add(testTimeout)
		for i := 0; ; i++ {
			if err := s.Instances.Create(ctx, newInstance(fmt.Sprintf("after%d", i))); err != nil {
				t.Fatal(err)
			}
			select {
			case ev := <-w.C:
				if ev.Name == "before" {
					t.Fatalf("Watch(0) replayed %s", ev.Name)
				}
				return
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("no event from Watch(0)")
			}
		}
	})

	t.Run("cancel closes with no error", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx, cancel := context.WithCancel(testCtx(t))
		w := s.Instances.Watch(ctx, 0)
		cancel()
		waitClosed(t, w.C)
		if err := w.Err(); err != nil {
			t.Errorf("Err after cancel = %v, want nil", err)
		}
	})
}

// modRev returns the mod revision of instance name.
func modRev(t *testing.T, s *store.Store, name string) int64 {
	t.Helper()
	in, err := s.Instances.Get(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return mustRev(t, in.ResourceVersion)
}

// TestWatchCompacted has an etcd of its own: compaction affects every
// watcher of the server.
func TestWatchCompacted(t *testing.T) {
	t.Parallel()
	s := storetest.NewStore(t, storetest.Embedded(t))
	ctx := testCtx(t)
	in := newInstance("a")
	if err := s.Instances.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	old := mustRev(t, in.ResourceVersion)
	for range 3 {
		if err := s.Instances.Update(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Client().Compact(ctx, mustRev(t, in.ResourceVersion)); err != nil {
		t.Fatal(err)
	}
	w := s.Instances.Watch(ctx, old)
	waitClosed(t, w.C)
	if err := w.Err(); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("Err after watching a compacted revision = %v, want ErrCompacted", err)
	}
	// The documented recovery: list again and watch from the list.
	_, rev, err := s.Instances.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w = s.Instances.Watch(ctx, rev)
	if err := s.Instances.Delete(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, w.C); ev.Name != "a" || !ev.Deleted {
		t.Errorf("event after resume = %+v, want delete of a", ev)
	}
}
