package store_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	"github.com/ferrycluster/ferry/internal/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestCollection(t *testing.T) {
	t.Parallel()
	testCollection(t, storetest.Embedded(t))
}

// testCollection checks the Collection contract against the etcd at
// endpoints; it runs against the embedded server and an external one.
func testCollection(t *testing.T, endpoints []string) {
	t.Run("CreateGetListUpdateDelete", func(t *testing.T) {
		t.Parallel()
		testCRUD(t, storetest.NewStore(t, endpoints))
	})
	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		testErrors(t, storetest.NewStore(t, endpoints))
	})
	t.Run("PrefixIsolation", func(t *testing.T) {
		t.Parallel()
		a, b := storetest.NewStore(t, endpoints), storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		if err := a.Instances.Create(ctx, newInstance("web")); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Instances.Get(ctx, "web"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(web) in another prefix: err = %v, want ErrNotFound", err)
		}
		if err := b.Instances.Create(ctx, newInstance("web")); err != nil {
			t.Errorf("Create(web) in another prefix: %v", err)
		}
	})
}

func testCRUD(t *testing.T, s *store.Store) {
	ctx := testCtx(t)
	c := s.Instances

	list, rev0, err := c.List(ctx)
	if err != nil || len(list) != 0 || rev0 <= 0 {
		t.Fatalf("List(empty) = %d objects, rev %d, %v; want 0 objects, rev > 0", len(list), rev0, err)
	}

	// Created out of order: List sorts by name.
	for _, name := range []string{"b", "c", "a"} {
		in := newInstance(name)
		if err := c.Create(ctx, in); err != nil {
			t.Fatalf("Create(%s): %v", name, err)
		}
		if rv, err := store.ParseRevision(in.ResourceVersion); err != nil || rv <= rev0 {
			t.Fatalf("Create(%s) set resourceVersion %q, want a revision > %d", name, in.ResourceVersion, rev0)
		}
	}
	a, err := c.Get(ctx, "a")
	if err != nil {
		t.Fatalf("Get(a): %v", err)
	}
	want := newInstance("a")
	if a.Name != "a" || a.UID != want.UID || a.Spec != want.Spec || !a.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("Get(a) = %+v, want %+v", a, want)
	}

	// The resource version lives in etcd's mod revision, not in the value.
	resp, err := s.Client().Get(ctx, s.Key("instances/a"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw get: %v, %d kvs", err, len(resp.Kvs))
	}
	if strings.Contains(string(resp.Kvs[0].Value), "resourceVersion") {
		t.Errorf("stored value %s holds a resourceVersion", resp.Kvs[0].Value)
	}
	if got, want := a.ResourceVersion, strconv.FormatInt(resp.Kvs[0].ModRevision, 10); got != want {
		t.Errorf("Get(a).ResourceVersion = %s, want mod revision %s", got, want)
	}

	list, rev, err := c.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got := names(list); got != "a,b,c" {
		t.Errorf("List names = %s, want a,b,c", got)
	}
	if rev < mustRev(t, list[2].ResourceVersion) {
		t.Errorf("List revision %d is older than its newest object (%s)", rev, list[2].ResourceVersion)
	}

	oldRV := a.ResourceVersion
	a.Spec.CPUs = 4
	if err := c.Update(ctx, a); err != nil {
		t.Fatalf("Update(a): %v", err)
	}
	if mustRev(t, a.ResourceVersion) <= mustRev(t, oldRV) {
		t.Errorf("Update(a) resourceVersion %s, want > %s", a.ResourceVersion, oldRV)
	}
	got, err := c.Get(ctx, "a")
	if err != nil || got.Spec.CPUs != 4 || got.ResourceVersion != a.ResourceVersion {
		t.Errorf("Get(a) after Update = cpus %d rv %s (%v), want cpus 4 rv %s", got.Spec.CPUs, got.ResourceVersion, err, a.ResourceVersion)
	}

	if err := c.Delete(ctx, "a", mustRev(t, a.ResourceVersion)); err != nil {
		t.Fatalf("Delete(a, current rv): %v", err)
	}
	if err := c.Delete(ctx, "b", 0); err != nil {
		t.Fatalf("Delete(b, any rv): %v", err)
	}
	if _, err := c.Get(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(a) after Delete: err = %v, want ErrNotFound", err)
	}
	list, _, err = c.List(ctx)
	if err != nil || names(list) != "c" {
		t.Errorf("List after deletes = %s (%v), want c", names(list), err)
	}
	// Collections of other kinds do not see each other's objects.
	nodes, _, err := s.Nodes.List(ctx)
	if err != nil || len(nodes) != 0 {
		t.Errorf("Nodes.List = %d objects (%v), want 0", len(nodes), err)
	}
}

func testErrors(t *testing.T, s *store.Store) {
	c := s.Instances
	tests := []struct {
		name string
		// op runs after an instance called name was created as in.
		op   func(t *testing.T, ctx context.Context, in *api.Instance) error
		want error
	}{
		{
			name: "create existing name",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				return c.Create(ctx, newInstance(in.Name))
			},
			want: store.ErrExists,
		},
		{
			name: "get missing",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				_, err := c.Get(ctx, in.Name+"-missing")
				return err
			},
			want: store.ErrNotFound,
		},
		{
			name: "update stale resourceVersion",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				fresh := *in
				fresh.Spec.CPUs++
				if err := c.Update(ctx, &fresh); err != nil {
					return fmt.Errorf("first update: %w", err)
				}
				in.Spec.CPUs += 2
				return c.Update(ctx, in)
			},
			want: store.ErrConflict,
		},
		{
			name: "update deleted object",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				if err := c.Delete(ctx, in.Name, 0); err != nil {
					return fmt.Errorf("delete: %w", err)
				}
				return c.Update(ctx, in)
			},
			want: store.ErrNotFound,
		},
		{
			name: "update object deleted and created again",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				if err := c.Delete(ctx, in.Name, 0); err != nil {
					return fmt.Errorf("delete: %w", err)
				}
				if err := c.Create(ctx, newInstance(in.Name)); err != nil {
					return fmt.Errorf("create again: %w", err)
				}
				return c.Update(ctx, in)
			},
			want: store.ErrConflict,
		},
		{
			name: "delete stale resourceVersion",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				rv := mustRev(t, in.ResourceVersion)
				in.Spec.CPUs++
				if err := c.Update(ctx, in); err != nil {
					return fmt.Errorf("update: %w", err)
				}
				return c.Delete(ctx, in.Name, rv)
			},
			want: store.ErrConflict,
		},
		{
			name: "delete missing",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				return c.Delete(ctx, in.Name+"-missing", 0)
			},
			want: store.ErrNotFound,
		},
		{
			name: "delete missing with resourceVersion",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				return c.Delete(ctx, in.Name+"-missing", mustRev(t, in.ResourceVersion))
			},
			want: store.ErrNotFound,
		},
		{
			name: "modify missing",
			op: func(t *testing.T, ctx context.Context, in *api.Instance) error {
				_, err := c.Modify(ctx, in.Name+"-missing", func(*api.Instance) ([]clientv3.Op, error) { return nil, nil })
				return err
			},
			want: store.ErrNotFound,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			in := newInstance(fmt.Sprintf("err-%d", i))
			if err := c.Create(ctx, in); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if err := tc.op(t, ctx, in); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("update without resourceVersion", func(t *testing.T) {
		ctx := testCtx(t)
		in := newInstance("no-rv")
		if err := c.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		in.ResourceVersion = ""
		err := c.Update(ctx, in)
		if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Update without resourceVersion: err = %v, want a bad-request error", err)
		}
	})
}

func TestParseRevision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1", want: 1},
		{in: "123456789012", want: 123456789012},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-3", wantErr: true},
		{in: "12a", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := store.ParseRevision(tc.in)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("ParseRevision(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestModify(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)

	t.Run("concurrent writers", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		in := newInstance("counter")
		in.Spec.CPUs = 0
		if err := s.Instances.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		const writers, increments = 10, 20
		var (
			wg          sync.WaitGroup
			mu          sync.Mutex
			calls       int
			maxAttempts int
			errs        []error
		)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range increments {
					attempts := 0
					_, err := s.Instances.Modify(ctx, "counter", func(v *api.Instance) ([]clientv3.Op, error) {
						attempts++
						mu.Lock()
						calls++
						maxAttempts = max(maxAttempts, attempts)
						mu.Unlock()
						v.Spec.CPUs++
						// An event per attempt: only the committed attempt's may land.
						return []clientv3.Op{s.EventOp(api.Event{Kind: "Instance", Name: "counter", Type: "Incremented",
							Message: fmt.Sprintf("writer %d increment %d", w, i)})}, nil
					})
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("Modify failed %d times, first: %v", len(errs), errs[0])
		}
		got, err := s.Instances.Get(ctx, "counter")
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.CPUs != writers*increments {
			t.Errorf("counter = %d, want %d", got.Spec.CPUs, writers*increments)
		}
		events, _, err := s.ListEvents(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != writers*increments {
			t.Errorf("%d events for %d committed increments (%d attempts)", len(events), writers*increments, calls)
		}
		t.Logf("%d attempts for %d increments, at most %d for one", calls, writers*increments, maxAttempts)
	})

	t.Run("unchanged writes nothing", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		in := newInstance("same")
		if err := s.Instances.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		got, err := s.Instances.Modify(ctx, "same", func(v *api.Instance) ([]clientv3.Op, error) {
			return []clientv3.Op{s.EventOp(api.Event{Type: "Nothing"})}, store.ErrUnchanged
		})
		if err != nil || got.ResourceVersion != in.ResourceVersion {
			t.Errorf("Modify(unchanged) = rv %s, %v; want rv %s, nil", got.ResourceVersion, err, in.ResourceVersion)
		}
		if events, _, _ := s.ListEvents(ctx, 0); len(events) != 0 {
			t.Errorf("Modify(unchanged) wrote %d events", len(events))
		}
	})

	t.Run("function error aborts", func(t *testing.T) {
		t.Parallel()
		s := storetest.NewStore(t, endpoints)
		ctx := testCtx(t)
		in := newInstance("abort")
		if err := s.Instances.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		_, err := s.Instances.Modify(ctx, "abort", func(v *api.Instance) ([]clientv3.Op, error) {
			v.Spec.CPUs = 99
			return nil, boom
		})
		if !errors.Is(err, boom) {
			t.Errorf("Modify err = %v, want %v", err, boom)
		}
		got, err := s.Instances.Get(ctx, "abort")
		if err != nil || got.Spec.CPUs != in.Spec.CPUs || got.ResourceVersion != in.ResourceVersion {
			t.Errorf("after aborted Modify: cpus %d rv %s (%v), want unchanged", got.Spec.CPUs, got.ResourceVersion, err)
		}
	})
}

// TestExtraOps checks that ops passed with a change commit in the same
// transaction: all of them when the change succeeds, none when it fails.
func TestExtraOps(t *testing.T) {
	t.Parallel()
	endpoints := storetest.Embedded(t)
	tests := []struct {
		name string
		// op makes a change carrying ev, on a store holding "obj".
		op         func(t *testing.T, ctx context.Context, s *store.Store, obj *api.Instance, ev clientv3.Op) error
		wantErr    error
		wantEvents int
	}{
		{
			name: "create commits",
			op: func(t *testing.T, ctx context.Context, s *store.Store, _ *api.Instance, ev clientv3.Op) error {
				return s.Instances.Create(ctx, newInstance("new"), ev)
			},
			wantEvents: 1,
		},
		{
			name: "create of existing name commits nothing",
			op: func(t *testing.T, ctx context.Context, s *store.Store, obj *api.Instance, ev clientv3.Op) error {
				return s.Instances.Create(ctx, newInstance(obj.Name), ev)
			},
			wantErr: store.ErrExists,
		},
		{
			name: "update commits",
			op: func(t *testing.T, ctx context.Context, s *store.Store, obj *api.Instance, ev clientv3.Op) error {
				obj.Spec.CPUs = 8
				return s.Instances.Update(ctx, obj, ev)
			},
			wantEvents: 1,
		},
		{
			name: "update conflict commits nothing",
			op: func(t *testing.T, ctx context.Context, s *store.Store, obj *api.Instance, ev clientv3.Op) error {
				stale := *obj
				obj.Spec.CPUs = 2
				if err := s.Instances.Update(ctx, obj); err != nil {
					return fmt.Errorf("first update: %w", err)
				}
				stale.Spec.CPUs = 3
				return s.Instances.Update(ctx, &stale, ev)
			},
			wantErr: store.ErrConflict,
		},
		{
			name: "delete commits",
			op: func(t *testing.T, ctx context.Context, s *store.Store, obj *api.Instance, ev clientv3.Op) error {
				return s.Instances.Delete(ctx, obj.Name, mustRev(t, obj.ResourceVersion), ev)
			},
			wantEvents: 1,
		},
		{
			name: "delete conflict commits nothing",
			op: func(t *testing.T, ctx context.Context, s *store.Store, obj *api.Instance, ev clientv3.Op) error {
				rv := mustRev(t, obj.ResourceVersion)
				if err := s.Instances.Update(ctx, obj); err != nil {
					return fmt.Errorf("update: %w", err)
				}
				return s.Instances.Delete(ctx, obj.Name, rv, ev)
			},
			wantErr: store.ErrConflict,
		},
		{
			name: "delete of missing object commits nothing",
			op: func(t *testing.T, ctx context.Context, s *store.Store, _ *api.Instance, ev clientv3.Op) error {
				return s.Instances.Delete(ctx, "missing", 0, ev)
			},
			wantErr: store.ErrNotFound,
		},
		{
			name: "CreateJSON of existing path commits nothing",
			op: func(t *testing.T, ctx context.Context, s *store.Store, _ *api.Instance, ev clientv3.Op) error {
				if err := s.CreateJSON(ctx, "misc/x", map[string]int{"n": 1}); err != nil {
					return fmt.Errorf("first CreateJSON: %w", err)
				}
				return s.CreateJSON(ctx, "misc/x", map[string]int{"n": 2}, ev)
			},
			wantErr: store.ErrExists,
		},
		{
			name: "UpdateJSON at a stale revision commits nothing",
			op: func(t *testing.T, ctx context.Context, s *store.Store, _ *api.Instance, ev clientv3.Op) error {
				if err := s.CreateJSON(ctx, "misc/y", map[string]int{"n": 1}); err != nil {
					return fmt.Errorf("CreateJSON: %w", err)
				}
				var v map[string]int
				rev, err := s.GetJSON(ctx, "misc/y", &v)
				if err != nil {
					return fmt.Errorf("GetJSON: %w", err)
				}
				if err := s.UpdateJSON(ctx, "misc/y", map[string]int{"n": 2}, rev); err != nil {
					return fmt.Errorf("first UpdateJSON: %w", err)
				}
				return s.UpdateJSON(ctx, "misc/y", map[string]int{"n": 3}, rev, ev)
			},
			wantErr: store.ErrConflict,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := storetest.NewStore(t, endpoints)
			ctx := testCtx(t)
			obj := newInstance("obj")
			if err := s.Instances.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			ev := s.EventOp(api.Event{Kind: "Instance", Name: "obj", Type: "Changed"})
			if err := tc.op(t, ctx, s, obj, ev); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			events, _, err := s.ListEvents(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != tc.wantEvents {
				t.Errorf("%d events committed, want %d", len(events), tc.wantEvents)
			}
		})
	}
}

func TestKV(t *testing.T) {
	t.Parallel()
	s := storetest.NewStore(t, storetest.Embedded(t))
	ctx := testCtx(t)
	type doc struct{ N int }
	var got doc
	if _, err := s.GetJSON(ctx, "kv/a", &got); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJSON(missing) err = %v, want ErrNotFound", err)
	}
	if err := s.CreateJSON(ctx, "kv/a", doc{1}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJSON(ctx, "kv/b", doc{2}); err != nil {
		t.Fatal(err)
	}
	rev, err := s.GetJSON(ctx, "kv/a", &got)
	if err != nil || got.N != 1 {
		t.Fatalf("GetJSON(kv/a) = %+v, %v; want {1}", got, err)
	}
	if err := s.UpdateJSON(ctx, "kv/a", doc{3}, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetJSON(ctx, "kv/a", &got); err != nil || got.N != 3 {
		t.Errorf("GetJSON(kv/a) after update = %+v, %v; want {3}", got, err)
	}
	keys, err := s.ListKeys(ctx, "kv/")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || string(keys["a"]) != `{"N":3}` || string(keys["b"]) != `{"N":2}` {
		t.Errorf("ListKeys(kv/) = %q, want a and b", keys)
	}
	if _, err := s.PutJSONOp("kv/bad", make(chan int)); err == nil {
		t.Error("PutJSONOp(chan) succeeded, want an encode error")
	}
}

func names(list []*api.Instance) string {
	var out []string
	for _, in := range list {
		out = append(out, in.Name)
	}
	return strings.Join(out, ",")
}

func mustRev(t testing.TB, rv string) int64 {
	t.Helper()
	n, err := store.ParseRevision(rv)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
