package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GetJSON reads the value at path (below the store prefix) into v and
// returns its mod revision, or ErrNotFound.
func (s *Store) GetJSON(ctx context.Context, path string, v any) (int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+path)
	if err != nil {
		return 0, fmt.Errorf("store: get %s: %w", path, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("store: decode %s: %w", path, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// PutJSONOp returns an op writing v at path.
func (s *Store) PutJSONOp(path string, v any, opts ...clientv3.OpOption) (clientv3.Op, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("store: encode %s: %w", path, err)
	}
	return clientv3.OpPut(s.prefix+path, string(data), opts...), nil
}

// CreateJSON writes v at path only if nothing is there, with extra ops in
// the same transaction. It returns ErrExists otherwise.
func (s *Store) CreateJSON(ctx context.Context, path string, v any, extra ...clientv3.Op) error {
	op, err := s.PutJSONOp(path, v)
	if err != nil {
		return err
	}
	ok, _, err := s.Txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.prefix+path), "=", 0)}, append([]clientv3.Op{op}, extra...)...)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", path, ErrExists)
	}
	return nil
}

// UpdateJSON writes v at path only if its mod revision is still rev.
func (s *Store) UpdateJSON(ctx context.Context, path string, v any, rev int64, extra ...clientv3.Op) error {
	op, err := s.PutJSONOp(path, v)
	if err != nil {
		return err
	}
	ok, _, err := s.Txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.prefix+path), "=", rev)}, append([]clientv3.Op{op}, extra...)...)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", path, ErrConflict)
	}
	return nil
}

// ListKeys returns the names (relative to dir) and raw values below dir.
func (s *Store) ListKeys(ctx context.Context, dir string) (map[string][]byte, error) {
	resp, err := s.cli.Get(ctx, s.prefix+dir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", dir, err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(s.prefix+dir):])] = kv.Value
	}
	return out, nil
}
