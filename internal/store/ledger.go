package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ledgerDir holds the SLA ledger: one key per serving change, named by its
// time so a range read returns a period in order. Unlike events, ledger
// entries are never pruned: months-old outages still owe credits.
const ledgerDir = "sla/ledger/"

func ledgerKey(prefix string, t time.Time, id string) string {
	return prefix + ledgerDir + fmt.Sprintf("%020d-%s", t.UnixNano(), id)
}

// LedgerOp returns the put of one ledger entry, to join the transaction of
// the status change it records.
func (s *Store) LedgerOp(e api.LedgerEntry) clientv3.Op {
	if e.ID == "" {
		e.ID = NewID()
	}
	e.Time = e.Time.UTC()
	data, _ := json.Marshal(e) // api.LedgerEntry always marshals
	return clientv3.OpPut(ledgerKey(s.prefix, e.Time, e.ID), string(data))
}

// ListLedger returns the ledger entries with from <= Time < to, oldest
// first (a zero to means no end).
func (s *Store) ListLedger(ctx context.Context, from, to time.Time) ([]api.LedgerEntry, error) {
	start := s.prefix + ledgerDir
	if !from.IsZero() {
		start = ledgerKey(s.prefix, from, "")
	}
	end := clientv3.GetPrefixRangeEnd(s.prefix + ledgerDir)
	if !to.IsZero() {
		end = ledgerKey(s.prefix, to, "")
	}
	resp, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("store: list ledger: %w", err)
	}
	out := make([]api.LedgerEntry, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &out[i]); err != nil {
			return nil, fmt.Errorf("store: decode ledger entry %s: %w", kv.Key, err)
		}
	}
	return out, nil
}
