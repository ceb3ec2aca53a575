package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventOp returns the op that records ev. Callers add it to the transaction
// that makes the change the event describes, so there is never a change
// without its event or an event without its change. ID and Time are filled
// if empty.
func (s *Store) EventOp(ev api.Event) clientv3.Op {
	if ev.ID == "" {
		ev.ID = NewID()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	data, _ := json.Marshal(ev) // api.Event always marshals
	// Keys sort by time, so a range read returns events in order.
	return clientv3.OpPut(s.prefix+eventsDir+fmt.Sprintf("%020d-%s", ev.Time.UnixNano(), ev.ID), string(data))
}

// ListEvents returns up to limit most recent events, oldest first, and the
// revision they were read at.
func (s *Store) ListEvents(ctx context.Context, limit int64) ([]api.Event, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(limit))
	}
	resp, err := s.cli.Get(ctx, s.prefix+eventsDir, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("store: list events: %w", err)
	}
	out := make([]api.Event, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &out[len(out)-1-i]); err != nil {
			return nil, 0, fmt.Errorf("store: decode event %s: %w", kv.Key, err)
		}
	}
	return out, resp.Header.Revision, nil
}

// WatchEvents streams events committed after revision rev, in commit order.
// The channel closes when ctx ends or the watch fails; errp then holds why.
func (s *Store) WatchEvents(ctx context.Context, rev int64) (<-chan api.Event, func() error) {
	out := make(chan api.Event, 64)
	var werr error
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterDelete()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, s.prefix+eventsDir, opts...)
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if err := resp.Err(); err != nil {
				werr = fmt.Errorf("store: watch events: %w", err)
				return
			}
			for _, e := range resp.Events {
				var ev api.Event
				if err := json.Unmarshal(e.Kv.Value, &ev); err != nil {
					werr = fmt.Errorf("store: decode event: %w", err)
					return
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, func() error { return werr }
}

// PruneEvents deletes all but the newest keep events.
func (s *Store) PruneEvents(ctx context.Context, keep int64) (int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+eventsDir, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(keep+1))
	if err != nil {
		return 0, fmt.Errorf("store: prune events: %w", err)
	}
	if int64(len(resp.Kvs)) <= keep {
		return 0, nil
	}
	// Delete everything up to and including the oldest key beyond keep.
	end := string(resp.Kvs[keep].Key) + "\x00"
	dresp, err := s.cli.Delete(ctx, s.prefix+eventsDir, clientv3.WithRange(end))
	if err != nil {
		return 0, fmt.Errorf("store: prune events: %w", err)
	}
	return dresp.Deleted, nil
}
