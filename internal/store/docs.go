package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Docs is a keyed set of plain JSON documents that carry no api.Meta: the
// SLA policies and assignments, the maintenance windows. Each change is
// one etcd transaction.
type Docs[T any] struct {
	s    *Store
	dir  string
	kind string
}

// Doc is one document with its key.
type Doc[T any] struct {
	Name  string
	Value T
}

func (d *Docs[T]) key(name string) string { return d.dir + name }

// Get returns the named document, or ErrNotFound.
func (d *Docs[T]) Get(ctx context.Context, name string) (T, error) {
	var v T
	resp, err := d.s.cli.Get(ctx, d.key(name))
	if err != nil {
		return v, fmt.Errorf("store: get %s %q: %w", d.kind, name, err)
	}
	if len(resp.Kvs) == 0 {
		return v, fmt.Errorf("%s %q: %w", d.kind, name, ErrNotFound)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return v, fmt.Errorf("store: decode %s %q: %w", d.kind, name, err)
	}
	return v, nil
}

// List returns every document, by name.
func (d *Docs[T]) List(ctx context.Context) ([]Doc[T], error) {
	resp, err := d.s.cli.Get(ctx, d.dir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", d.kind, err)
	}
	out := make([]Doc[T], 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("store: decode %s %s: %w", d.kind, kv.Key, err)
		}
		out = append(out, Doc[T]{Name: string(kv.Key[len(d.dir):]), Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Put creates or replaces the named document; cmps, if any, must hold
// too (ErrConflict otherwise).
func (d *Docs[T]) Put(ctx context.Context, name string, v T, cmps ...clientv3.Cmp) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s %q: %w", d.kind, name, err)
	}
	ok, _, err := d.s.Txn(ctx, cmps, clientv3.OpPut(d.key(name), string(data)))
	if err != nil {
		return err
	}
	if !ok {
		return d.s.refused(ctx, name, fmt.Errorf("%s %q: %w", d.kind, name, ErrConflict))
	}
	return nil
}

// Delete deletes the named document, or returns ErrNotFound; cmps, if
// any, must hold too (ErrConflict otherwise).
func (d *Docs[T]) Delete(ctx context.Context, name string, cmps ...clientv3.Cmp) error {
	resp, err := d.s.cli.Txn(ctx).If(d.s.cmps(append([]clientv3.Cmp{d.ExistsCmp(name)}, cmps...)...)...).
		Then(clientv3.OpDelete(d.key(name))).Commit()
	if err != nil {
		return fmt.Errorf("store: delete %s %q: %w", d.kind, name, err)
	}
	if !resp.Succeeded {
		if _, err := d.Get(ctx, name); err != nil {
			return err
		}
		return d.s.refused(ctx, name, fmt.Errorf("%s %q: %w", d.kind, name, ErrConflict))
	}
	return nil
}

// ExistsCmp holds while the named document exists.
func (d *Docs[T]) ExistsCmp(name string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(d.key(name)), ">", 0)
}

// AbsentCmp holds while the named document does not exist.
func (d *Docs[T]) AbsentCmp(name string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(d.key(name)), "=", 0)
}
