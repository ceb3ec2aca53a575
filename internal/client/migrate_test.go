package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/ferrycluster/ferry/internal/api"
)

// TestMigrationMethods checks the routes and bodies of the migration and
// drain calls, and that a refusal comes back as an *APIError.
func TestMigrationMethods(t *testing.T) {
	t.Parallel()
	var got []string
	bodies := map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/instances/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "busy" {
			writeJSON(w, 409, api.ErrorBody{Error: api.ErrorDetail{Code: "conflict", Message: "in flight"}})
			return
		}
		writeJSON(w, 202, api.Operation{Meta: api.Meta{Name: "migrate-web-1-3-1"}, Type: api.OpMigrate, Mode: api.MigrateLive})
	})
	mux.HandleFunc("POST /v1/operations/{name}/cancel", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Operation{Meta: api.Meta{Name: r.PathValue("name")}, State: api.OpCancelled})
	})
	mux.HandleFunc("POST /v1/nodes/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Node{Meta: api.Meta{Name: r.PathValue("name")}})
	})
	_, c := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path)
		bodies[r.URL.Path] = string(data)
		mux.ServeHTTP(w, r)
	}))
	ctx := context.Background()
	op, err := c.MigrateInstance(ctx, "web-1", api.MigrateRequest{To: "n2", Mode: api.MigrateCold})
	if err != nil || op.Name != "migrate-web-1-3-1" {
		t.Fatalf("MigrateInstance = %+v, %v", op, err)
	}
	var req api.MigrateRequest
	if err := json.Unmarshal([]byte(bodies["/v1/instances/web-1/migrate"]), &req); err != nil || req.To != "n2" || req.Mode != "cold" {
		t.Fatalf("migrate body %q", bodies["/v1/instances/web-1/migrate"])
	}
	if _, err := c.MigrateInstance(ctx, "busy", api.MigrateRequest{}); !IsConflict(err) {
		t.Fatalf("MigrateInstance(busy) = %v, want a conflict", err)
	}
	if op, err := c.CancelOperation(ctx, "migrate-web-1-3-1"); err != nil || op.State != api.OpCancelled {
		t.Fatalf("CancelOperation = %+v, %v", op, err)
	}
	if n, err := c.DrainNode(ctx, "n1", api.DrainRequest{MaxConcurrent: 3}); err != nil || n.Name != "n1" {
		t.Fatalf("DrainNode = %+v, %v", n, err)
	}
	if bodies["/v1/nodes/n1/drain"] != `{"maxConcurrent":3}` {
		t.Fatalf("drain body %q", bodies["/v1/nodes/n1/drain"])
	}
	if _, err := c.UndrainNode(ctx, "n1", api.UndrainRequest{Restore: true}); err != nil || bodies["/v1/nodes/n1/undrain"] != `{"restore":true}` {
		t.Fatalf("UndrainNode: %v, body %q", err, bodies["/v1/nodes/n1/undrain"])
	}
	want := []string{"POST /v1/instances/web-1/migrate", "POST /v1/instances/busy/migrate", "POST /v1/operations/migrate-web-1-3-1/cancel", "POST /v1/nodes/n1/drain", "POST /v1/nodes/n1/undrain"}
	if len(got) != len(want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("requests %q, want %q", got, want)
		}
	}
	for _, call := range []func() error{
		func() error { _, err := c.MigrateInstance(ctx, "", api.MigrateRequest{}); return err },
		func() error { _, err := c.CancelOperation(ctx, ""); return err },
		func() error { _, err := c.DrainNode(ctx, "", api.DrainRequest{}); return err },
	} {
		if call() == nil {
			t.Error("an empty name was not refused")
		}
	}
}
