package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var eventBase = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// putEvents records events e0..e(n-1), e(i) at eventBase+i seconds, in the
// shuffled order given by perm, each in its own transaction.
func putEvents(t *testing.T, s *store.Store, perm []int) {
	t.Helper()
	ctx := testCtx(t)
	for _, i := range perm {
		ev := api.Event{ID: fmt.Sprintf("e%d", i), Time: eventBase.Add(time.Duration(i) * time.Second), Kind: "Node", Name: "n", Type: "Test"}
		if _, _, err := s.Txn(ctx, nil, s.EventOp(ev)); err != nil {
			t.Fatal(err)
		}
	}
}

func eventIDs(events []api.Event) string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.ID
	}
	return strings.Join(ids, ",")
}

func TestEvents(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)

	t.Run("ListEvents", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		// Written out of time order: events sort by their time.
		putEvents(t, s, []int{3, 0, 4, 1, 2})
		tests := []struct {
			limit int64
			want  string
		}{
			{limit: 0, want: "e0,e1,e2,e3,e4"},
			{limit: 1, want: "e4"},
			{limit: 3, want: "e2,e3,e4"},
			{limit: 5, want: "e0,e1,e2,e3,e4"},
			{limit: 10, want: "e0,e1,e2,e3,e4"},
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("limit %d", tc.limit), func(t *testing.T) {
				events, rev, err := s.ListEvents(testCtx(t), tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				if got := eventIDs(events); got != tc.want || rev <= 0 {
					t.Errorf("ListEvents(%d) = %s at rev %d, want %s", tc.limit, got, rev, tc.want)
				}
			})
		}
	})

	t.Run("EventOp fills ID and time", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		before := time.Now()
		if _, _, err := s.Txn(ctx, nil, s.EventOp(api.Event{Type: "A"}), s.EventOp(api.Event{Type: "B"})); err != nil {
			t.Fatal(err)
		}
		events, _, err := s.ListEvents(ctx, 0)
		if err != nil || len(events) != 2 {
			t.Fatalf("ListEvents = %d events, %v; want 2", len(events), err)
		}
		for _, ev := range events {
			if ev.ID == "" || ev.Time.Before(before.Add(-time.Second)) || ev.Time.After(time.Now()) {
				t.Errorf("event %+v: want an ID and the current time", ev)
			}
		}
		if events[0].ID == events[1].ID {
			t.Errorf("two events got the same ID %s", events[0].ID)
		}
	})

	t.Run("WatchEvents", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx, cancel := context.WithCancel(testCtx(t))
		putEvents(t, s, []int{0, 1})
		_, rev, err := s.ListEvents(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		ch, errf := s.WatchEvents(ctx, rev)
		// Commit order, not time order: e3 is committed before e2.
		putEvents(t, s, []int{3, 2})
		// Pruning deletes events; deletions are not events.
		if _, err := s.PruneEvents(ctx, 1); err != nil {
			t.Fatal(err)
		}
		putEvents(t, s, []int{4})
		for _, want := range []string{"e3", "e2", "e4"} {
			if ev := recv(t, ch); ev.ID != want {
				t.Errorf("WatchEvents delivered %s, want %s", ev.ID, want)
			}
		}
		cancel()
		waitClosed(t, ch)
		if err := errf(); err != nil {
			t.Errorf("WatchEvents error after cancel = %v, want nil", err)
		}
	})

	t.Run("PruneEvents", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			total, keep int
			wantDeleted int64
			wantLeft    string
		}{
			{total: 5, keep: 3, wantDeleted: 2, wantLeft: "e2,e3,e4"},
			{total: 5, keep: 1, wantDeleted: 4, wantLeft: "e4"},
			{total: 5, keep: 5, wantDeleted: 0, wantLeft: "e0,e1,e2,e3,e4"},
			{total: 5, keep: 10, wantDeleted: 0, wantLeft: "e0,e1,e2,e3,e4"},
			{total: 5, keep: 0, wantDeleted: 5, wantLeft: ""},
			{total: 0, keep: 3, wantDeleted: 0, wantLeft: ""},
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("keep %d of %d", tc.keep, tc.total), func(t *testing.T) {
				t.Parallel()
				s := storetest.NewStore(t, endpoints)
				ctx := testCtx(t)
				perm := make([]int, tc.total)
				for i := range perm {
					perm[i] = tc.total - 1 - i
				}
				putEvents(t, s, perm)
				// A key just past the events directory must survive.
				if _, err := s.Client().Put(ctx, s.Key("events0"), "x"); err != nil {
					t.Fatal(err)
				}
				deleted, err := s.PruneEvents(ctx, int64(tc.keep))
				if err != nil || deleted != tc.wantDeleted {
					t.Errorf("PruneEvents(%d) = %d, %v; want %d", tc.keep, deleted, err, tc.wantDeleted)
				}
				events, _, err := s.ListEvents(ctx, 0)
				if err != nil {
					t.Fatal(err)
				}
				if got := eventIDs(events); got != tc.wantLeft {
					t.Errorf("events left = %q, want %q", got, tc.wantLeft)
				}
				resp, err := s.Client().Get(ctx, s.Key(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil || resp.Count != int64(len(events))+1 {
					t.Errorf("%d keys under the prefix (%v), want the %d events left and events0", resp.Count, err, len(events))
				}
			})
		}
	})
}
