package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// NodeLeases keeps one etcd lease per node, refreshed by the node's
// heartbeats. While the lease lives, the node's alive key exists; when the
// heartbeats stop, etcd expires the lease, deletes the key, and every
// watcher learns the node is gone. Any server can refresh any node's lease:
// the lease ID is found from the alive key, so agents can move between
// servers. NodeLeases is safe for concurrent use.
type NodeLeases struct {
	s   *Store
	ttl time.Duration

	mu     sync.Mutex
	leases map[string]clientv3.LeaseID
}

// NewNodeLeases returns a lease keeper with the given TTL (at least 2 s,
// etcd's minimum with default timings).
func (s *Store) NewNodeLeases(ttl time.Duration) *NodeLeases {
	return &NodeLeases{s: s, ttl: ttl, leases: map[string]clientv3.LeaseID{}}
}

// TTL returns the lease time-to-live.
func (l *NodeLeases) TTL() time.Duration { return l.ttl }

func (l *NodeLeases) aliveKey(node string) string { return l.s.prefix + aliveDir + node }

// Refresh keeps node's lease alive. If the node has no live lease it grants
// one and creates the alive key, with onAlive's ops in the same transaction
// (the node's Ready transition and its event), and reports created = true.
func (l *NodeLeases) Refresh(ctx context.Context, node string, onAlive func() ([]clientv3.Op, []clientv3.Cmp, error)) (created bool, err error) {
	l.mu.Lock()
	id, cached := l.leases[node]
	l.mu.Unlock()
	if cached {
		if ok, err := l.keepAlive(ctx, node, id); err != nil || ok {
			return false, err
		}
	}
	// No cached lease, or it expired: look for one held through another server.
	resp, err := l.s.cli.Get(ctx, l.aliveKey(node))
	if err != nil {
		return false, fmt.Errorf("store: read alive key of %s: %w", node, err)
	}
	if len(resp.Kvs) > 0 && resp.Kvs[0].Lease != 0 {
		id := clientv3.LeaseID(resp.Kvs[0].Lease)
		if ok, err := l.keepAlive(ctx, node, id); err != nil || ok {
			return false, err
		}
	}
	grant, err := l.s.cli.Grant(ctx, int64(l.ttl.Round(time.Second)/time.Second))
	if err != nil {
		return false, fmt.Errorf("store: grant lease for %s: %w", node, err)
	}
	ops, cmps, err := onAlive()
	if err != nil {
		l.revoke(grant.ID)
		return false, err
	}
	k := l.aliveKey(node)
	cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
	ops = append([]clientv3.Op{clientv3.OpPut(k, time.Now().UTC().Format(time.RFC3339Nano), clientv3.WithLease(grant.ID))}, ops...)
	ok, _, err := l.s.Txn(ctx, cmps, ops...)
	if err != nil {
		l.revoke(grant.ID)
		return false, err
	}
	if !ok {
		// Another server created the key at the same moment, or the
		// caller's preconditions changed; the next heartbeat sorts it out.
		l.revoke(grant.ID)
		return false, fmt.Errorf("store: alive key of %s: %w", node, ErrConflict)
	}
	l.mu.Lock()
	l.leases[node] = grant.ID
	l.mu.Unlock()
	return true, nil
}

func (l *NodeLeases) keepAlive(ctx context.Context, node string, id clientv3.LeaseID) (bool, error) {
	_, err := l.s.cli.KeepAliveOnce(ctx, id)
	if err == nil {
		l.mu.Lock()
		l.leases[node] = id
		l.mu.Unlock()
		return true, nil
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		l.mu.Lock()
		if l.leases[node] == id {
			delete(l.leases, node)
		}
		l.mu.Unlock()
		return false, nil
	}
	return false, fmt.Errorf("store: keep lease of %s alive: %w", node, err)
}

func (l *NodeLeases) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.s.cli.Revoke(ctx, id)
}

// Expire revokes node's lease at once (used when a node is removed).
func (l *NodeLeases) Expire(ctx context.Context, node string) error {
	resp, err := l.s.cli.Get(ctx, l.aliveKey(node))
	if err != nil {
		return fmt.Errorf("store: read alive key of %s: %w", node, err)
	}
	l.mu.Lock()
	delete(l.leases, node)
	l.mu.Unlock()
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
		return nil
	}
	if _, err := l.s.cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("store: revoke lease of %s: %w", node, err)
	}
	return nil
}

// AliveNodes returns the names of nodes whose lease is live, and the
// revision they were read at.
func (s *Store) AliveNodes(ctx context.Context) (map[string]bool, int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+aliveDir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("store: list alive nodes: %w", err)
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(s.prefix+aliveDir):])] = true
	}
	return out, resp.Header.Revision, nil
}

// AliveEvent says a node's lease appeared (Alive) or expired.
type AliveEvent struct {
	Node     string
	Alive    bool
	Revision int64
}

// WatchAlive streams lease appearances and expiries after revision rev.
// The channel closes when ctx ends or the watch fails.
func (s *Store) WatchAlive(ctx context.Context, rev int64) <-chan AliveEvent {
	out := make(chan AliveEvent, 64)
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, s.prefix+aliveDir, opts...)
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, e := range resp.Events {
				ev := AliveEvent{Node: string(e.Kv.Key[len(s.prefix+aliveDir):]), Revision: e.Kv.ModRevision}
				switch {
				case e.Type == clientv3.EventTypeDelete:
				case e.IsCreate():
					ev.Alive = true
				default:
					continue // a refresh of the value, not a transition
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
