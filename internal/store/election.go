package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// RunForLeader campaigns for the cluster leadership as id and, each time it
// wins, runs lead with a context that is cancelled as soon as leadership is
// lost (the session's lease expired) or ctx ends, and with a Store guarded
// by the leadership: its transactions commit only while this server's
// election key is the leader's. A deposed leader notices the loss of its
// session up to a keepalive late; the guard makes that window harmless. It returns when ctx ends.
// If lead returns while still leader, RunForLeader resigns, so that another
// contender takes over, and campaigns again a second later.
// Only one server in the cluster runs lead at a time, which is what lets the
// controllers act without coordinating with each other.
func (s *Store) RunForLeader(ctx context.Context, id string, ttl time.Duration, log *slog.Logger, lead func(ctx context.Context, guarded *Store)) error {
	for ctx.Err() == nil {
		if err := s.leadOnce(ctx, id, ttl, log, lead); err != nil && ctx.Err() == nil {
			log.Warn("leader election failed; retrying", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

func (s *Store) leadOnce(ctx context.Context, id string, ttl time.Duration, log *slog.Logger, lead func(ctx context.Context, guarded *Store)) error {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(int(ttl.Round(time.Second)/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("store: election session: %w", err)
	}
	defer sess.Close()
	// A key with this server's id can only be from an earlier life of
	// this server (killed, now restarted): waiting out its lease would leave
	// the cluster without controllers for the election TTL. Revoke it.
	if resp, err := s.cli.Get(ctx, s.prefix+electionDir+"/", clientv3.WithPrefix()); err == nil {
		for _, kv := range resp.Kvs {
			if string(kv.Value) == id && clientv3.LeaseID(kv.Lease) != sess.Lease() {
				if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
					log.Info("revoked the leadership claim of this server's previous run", "id", id)
				}
			}
		}
	}
	el := concurrency.NewElection(sess, s.prefix+electionDir)
	if err := el.Campaign(ctx, id); err != nil {
		return fmt.Errorf("store: campaign: %w", err)
	}
	log.Info("became leader", "id", id)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx, s.Guarded(clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())))
	}()
	var leadErr error
	select {
	case <-sess.Done():
		log.Warn("lost leadership: session expired", "id", id)
	case <-done:
		// Holding the leadership without leading would leave the cluster
		// without controllers: resign so another server can take over.
		if ctx.Err() == nil {
			leadErr = fmt.Errorf("store: lead of %s returned while leader; resigned", id)
		}
	case <-ctx.Done():
	}
	cancel()
	<-done
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	return leadErr
}

// Leader returns the id of the current leader, or "" if there is none.
func (s *Store) Leader(ctx context.Context) (string, error) {
	resp, err := s.cli.Get(ctx, s.prefix+electionDir+"/", withFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("store: read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

func withFirstCreate() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1)}
}
