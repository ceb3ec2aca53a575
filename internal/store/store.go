package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/sla"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Sentinel errors; check them with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	// ErrConflict means the object changed since it was read: read it again
	// and retry, or give up (the API answers 409).
	ErrConflict = errors.New("store: conflict: the object was changed by someone else")
	// ErrNotLeader means a guarded store's guard failed: the server lost
	// the leadership it was writing under.
	ErrNotLeader = errors.New("store: not leader: the leadership passed to another server")
)

// Prefix is the root of every ferry key in etcd, versioned so a future
// layout can live beside this one during an upgrade.
const Prefix = "/ferry/v1/"

// Key prefixes under Prefix.
const (
	instancesDir  = "instances/"
	nodesDir      = "nodes/"
	imagesDir     = "images/"
	networksDir   = "networks/"
	operationsDir = "operations/"
	eventsDir     = "events/"
	aliveDir      = "alive/"
	electionDir   = "leader"
)

// Object is any stored kind: it exposes its metadata so the store can keep
// the resource version in step with etcd's mod revision.
type Object interface {
	ObjectMeta() *api.Meta
}

// Store is ferry's handle on etcd. It is safe for concurrent use.
type Store struct {
	cli    *clientv3.Client
	prefix string
	// guard is added to the comparisons of every transaction this Store
	// makes (see Guarded).
	guard []clientv3.Cmp

	Instances *Collection[api.Instance]
	Nodes     *Collection[api.Node]
	Images    *Collection[api.Image]
	Networks  *Collection[api.Network]
	// Operations holds failovers and migrations with their steps.
	Operations *Collection[api.Operation]
	// SLAPolicies, SLAInstances and SLACustomers hold the SLA policies
	// and their assignments to instances and customers; Maintenance the
	// announced maintenance windows.
	SLAPolicies  *Docs[sla.Policy]
	SLAInstances *Docs[sla.Assignment]
	SLACustomers *Docs[sla.Assignment]
	Maintenance  *Docs[api.Maintenance]
}

// New wraps a connected etcd client. prefix is normally Prefix; tests pass
// their own so they can share one etcd.
func New(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = Prefix
	}
	return newStore(cli, prefix, nil)
}

func newStore(cli *clientv3.Client, prefix string, guard []clientv3.Cmp) *Store {
	s := &Store{cli: cli, prefix: prefix, guard: guard}
	s.Instances = &Collection[api.Instance]{s: s, dir: prefix + instancesDir}
	s.Nodes = &Collection[api.Node]{s: s, dir: prefix + nodesDir}
	s.Images = &Collection[api.Image]{s: s, dir: prefix + imagesDir}
	s.Networks = &Collection[api.Network]{s: s, dir: prefix + networksDir}
	s.Operations = &Collection[api.Operation]{s: s, dir: prefix + operationsDir}
	s.SLAPolicies = &Docs[sla.Policy]{s: s, dir: prefix + "sla/policies/", kind: "policy"}
	s.SLAInstances = &Docs[sla.Assignment]{s: s, dir: prefix + "sla/assign/instances/", kind: "assignment"}
	s.SLACustomers = &Docs[sla.Assignment]{s: s, dir: prefix + "sla/assign/customers/", kind: "assignment"}
	s.Maintenance = &Docs[api.Maintenance]{s: s, dir: prefix + "maintenance/", kind: "maintenance"}
	return s
}

// Guarded returns a Store whose every transaction also requires cmps. The
// leader's controllers write through a store guarded by their leadership
// (see RunForLeader): a server that lost the election but has not noticed
// yet cannot commit anything, because etcd itself checks the guard.
func (s *Store) Guarded(cmps ...clientv3.Cmp) *Store {
	return newStore(s.cli, s.prefix, append(append([]clientv3.Cmp(nil), s.guard...), cmps...))
}

// Connect dials etcd at endpoints and checks it answers.
func Connect(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// Keepalives let a client notice a dead etcd member and move on.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect to etcd %v: %w", endpoints, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(sctx, "/ferry/ping"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("store: etcd at %v does not answer: %w", endpoints, err)
	}
	return cli, nil
}

// Client returns the underlying etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Key returns the full etcd key for a path below the store's prefix.
func (s *Store) Key(path string) string { return s.prefix + path }

// Txn runs an etcd transaction: if every comparison holds, ops are applied
// atomically. It returns whether they were.
func (s *Store) Txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, int64, error) {
	resp, err := s.cli.Txn(ctx).If(s.cmps(cmps...)...).Then(ops...).Commit()
	if err != nil {
		return false, 0, fmt.Errorf("store: txn: %w", err)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// cmps returns the guard followed by cmps.
func (s *Store) cmps(cmps ...clientv3.Cmp) []clientv3.Cmp {
	if len(s.guard) == 0 {
		return cmps
	}
	return append(append([]clientv3.Cmp(nil), s.guard...), cmps...)
}

// refused explains a failed transaction: ErrNotLeader if the guard no
// longer holds, otherwise the caller's own reason.
func (s *Store) refused(ctx context.Context, name string, reason error) error {
	if len(s.guard) > 0 {
		resp, err := s.cli.Txn(ctx).If(s.guard...).Commit()
		if err == nil && !resp.Succeeded {
			return fmt.Errorf("%s: %w", name, ErrNotLeader)
		}
	}
	return fmt.Errorf("%s: %w", name, reason)
}

// Collection stores one kind of object, one key per name.
type Collection[T any] struct {
	s   *Store
	dir string
}

func (c *Collection[T]) key(name string) string { return c.dir + name }

func meta[T any](v *T) *api.Meta {
	o, ok := any(v).(Object)
	if !ok {
		panic(fmt.Sprintf("store: %T does not embed api.Meta", v))
	}
	return o.ObjectMeta()
}

func decode[T any](data []byte, rev int64) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("store: decode %T: %w", v, err)
	}
	meta(v).ResourceVersion = strconv.FormatInt(rev, 10)
	return v, nil
}

func encode[T any](v *T) (string, error) {
	m := meta(v)
	rv := m.ResourceVersion
	m.ResourceVersion = "" // etcd holds it; storing it would be stale at once
	data, err := json.Marshal(v)
	m.ResourceVersion = rv
	if err != nil {
		return "", fmt.Errorf("store: encode %T: %w", v, err)
	}
	return string(data), nil
}

// ParseRevision reads a resourceVersion string.
func ParseRevision(rv string) (int64, error) {
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("resourceVersion %q is not a positive integer", rv)
	}
	return n, nil
}

// Get reads one object, or returns ErrNotFound.
func (c *Collection[T]) Get(ctx context.Context, name string) (*T, error) {
	resp, err := c.s.cli.Get(ctx, c.key(name))
	if err != nil {
		return nil, fmt.Errorf("store: get %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return decode[T](resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// List reads every object of the kind, sorted by name, and the revision the
// list was read at.
func (c *Collection[T]) List(ctx context.Context) ([]*T, int64, error) {
	resp, err := c.s.cli.Get(ctx, c.dir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("store: list %s: %w", c.dir, err)
	}
	out := make([]*T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := decode[T](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v)
	}
	return out, resp.Header.Revision, nil
}

// Create stores v under its name if no object has that name, together with
// extra ops in the same transaction. It sets v's resource version.
func (c *Collection[T]) Create(ctx context.Context, v *T, extra ...clientv3.Op) error {
	m := meta(v)
	if m.Name == "" {
		return errors.New("store: create: empty name")
	}
	val, err := encode(v)
	if err != nil {
		return err
	}
	k := c.key(m.Name)
	ok, rev, err := c.s.Txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		append([]clientv3.Op{clientv3.OpPut(k, val)}, extra...)...)
	if err != nil {
		return err
	}
	if !ok {
		return c.s.refused(ctx, m.Name, ErrExists)
	}
	m.ResourceVersion = strconv.FormatInt(rev, 10)
	return nil
}

// Update writes v if the stored object still has v's resource version,
// together with extra ops. It returns ErrConflict if it changed and
// ErrNotFound if it is gone; on success v's resource version is the new one.
func (c *Collection[T]) Update(ctx context.Context, v *T, extra ...clientv3.Op) error {
	m := meta(v)
	rv, err := ParseRevision(m.ResourceVersion)
	if err != nil {
		return fmt.Errorf("store: update %s: %w", m.Name, err)
	}
	val, err := encode(v)
	if err != nil {
		return err
	}
	k := c.key(m.Name)
	resp, err := c.s.cli.Txn(ctx).
		If(c.s.cmps(clientv3.Compare(clientv3.ModRevision(k), "=", rv))...).
		Then(append([]clientv3.Op{clientv3.OpPut(k, val)}, extra...)...).
		Else(clientv3.OpGet(k, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("store: update %s: %w", m.Name, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count == 0 {
			return c.s.refused(ctx, m.Name, ErrNotFound)
		}
		return c.s.refused(ctx, m.Name, ErrConflict)
	}
	m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return nil
}

// Delete removes the object if it still has resource version rv (0: any).
func (c *Collection[T]) Delete(ctx context.Context, name string, rv int64, extra ...clientv3.Op) error {
	k := c.key(name)
	cmp := clientv3.Compare(clientv3.CreateRevision(k), ">", 0)
	if rv > 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(k), "=", rv)
	}
	resp, err := c.s.cli.Txn(ctx).If(c.s.cmps(cmp)...).
		Then(append([]clientv3.Op{clientv3.OpDelete(k)}, extra...)...).
		Else(clientv3.OpGet(k, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", name, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count == 0 {
			return c.s.refused(ctx, name, ErrNotFound)
		}
		return c.s.refused(ctx, name, ErrConflict)
	}
	return nil
}

// Modify reads the object, applies fn and writes it back, retrying on
// conflicts. fn may be called several times and must not have side effects;
// it returns the extra ops (e.g. an event) to commit with the change, or
// ErrUnchanged to write nothing.
func (c *Collection[T]) Modify(ctx context.Context, name string, fn func(*T) ([]clientv3.Op, error)) (*T, error) {
	for attempt := 0; ; attempt++ {
		v, err := c.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		extra, err := fn(v)
		if errors.Is(err, ErrUnchanged) {
			return v, nil
		}
		if err != nil {
			return nil, err
		}
		err = c.Update(ctx, v, extra...)
		if errors.Is(err, ErrConflict) && attempt < 100 {
			if err := conflictBackoff(ctx, attempt); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return v, nil
	}
}

// conflictBackoff waits a random time below 1, 2, 4, ... 64 ms as attempt
// grows, so writers racing for one object take turns instead of retrying in
// lockstep (without it, 30 writers on one object made a Modify need up to
// 95 of its 100 attempts). It returns ctx's error if ctx ends first.
func conflictBackoff(ctx context.Context, attempt int) error {
	t := time.NewTimer(mathrand.N(time.Millisecond << min(attempt, 6)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrUnchanged is returned by a Modify function that has nothing to write.
var ErrUnchanged = errors.New("store: unchanged")

// WatchEvent is one change to a collection.
type WatchEvent[T any] struct {
	// Name of the object; Object is nil when it was deleted.
	Name     string
	Object   *T
	Deleted  bool
	Revision int64
}

// Watch streams changes after revision rev (0: from now). The channel is
// closed when ctx ends or the watch fails (e.g. the revision was compacted);
// the caller then lists again and resumes from the list's revision. Err
// returns why it closed.
func (c *Collection[T]) Watch(ctx context.Context, rev int64) *Watcher[T] {
	w := &Watcher[T]{C: make(chan WatchEvent[T], 64)}
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := c.s.cli.Watch(wctx, c.dir, opts...)
	go func() {
		defer close(w.C)
		defer cancel()
		for resp := range wch {
			if err := resp.Err(); err != nil {
				w.err = fmt.Errorf("store: watch %s: %w", c.dir, err)
				return
			}
			for _, ev := range resp.Events {
				we := WatchEvent[T]{Name: strings.TrimPrefix(string(ev.Kv.Key), c.dir), Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypeDelete {
					we.Deleted = true
				} else {
					obj, err := decode[T](ev.Kv.Value, ev.Kv.ModRevision)
					if err != nil {
						w.err = err
						return
					}
					we.Object = obj
				}
				select {
				case w.C <- we:
				case <-ctx.Done():
					return
				}
			}
		}
		if w.err == nil && ctx.Err() == nil {
			w.err = errors.New("store: watch closed by etcd")
		}
	}()
	return w
}

// Watcher delivers a collection's changes on C.
type Watcher[T any] struct {
	C   chan WatchEvent[T]
	err error
}

// Err says why C was closed; read it only after C is closed.
func (w *Watcher[T]) Err() error { return w.err }

// NewID returns a random identifier for UIDs and event IDs.
func NewID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic("store: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// UpdateOps returns the comparison and the op that update v if it still has
// its resource version, for callers that need the update inside a larger
// transaction of their own (e.g. with a lease grant).
func (c *Collection[T]) UpdateOps(v *T) (clientv3.Cmp, clientv3.Op, error) {
	m := meta(v)
	rv, err := ParseRevision(m.ResourceVersion)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("store: update %s: %w", m.Name, err)
	}
	val, err := encode(v)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, err
	}
	k := c.key(m.Name)
	return clientv3.Compare(clientv3.ModRevision(k), "=", rv), clientv3.OpPut(k, val), nil
}

// AbsentCmp returns a comparison that holds while no object is called name,
// for a transaction that relies on it being gone.
func (c *Collection[T]) AbsentCmp(name string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(c.key(name)), "=", 0)
}

// DeleteOp returns an op that deletes name, for use in a larger transaction.
func (c *Collection[T]) DeleteOp(name string) clientv3.Op { return clientv3.OpDelete(c.key(name)) }

// CreateOps returns the comparison and op that create v if its name is free.
func (c *Collection[T]) CreateOps(v *T) (clientv3.Cmp, clientv3.Op, error) {
	m := meta(v)
	val, err := encode(v)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, err
	}
	k := c.key(m.Name)
	return clientv3.Compare(clientv3.CreateRevision(k), "=", 0), clientv3.OpPut(k, val), nil
}
