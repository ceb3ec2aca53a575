package server

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
)

// TestOperations writes operations straight into the store, as the
// leader's failover controller does, and reads them through the API:
// newest first, filtered by instance and state, one by name, and the
// refusals.
func TestOperations(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	step := func(name string, after time.Duration, msg string) api.OperationStep {
		return api.OperationStep{Name: name, At: base.Add(after), Message: msg}
	}

	// The running failover's instance must be where the operation says,
	// or the controller ends the operation as superseded.
	in := &api.Instance{
		Meta: api.Meta{Name: "web-1", UID: store.NewID(), CreatedAt: base.Add(-3 * time.Hour)},
		Spec: smallSpec(),
		Status: api.InstanceStatus{Phase: api.PhaseScheduled, Since: base, Node: "host-2", ReplicaNode: "host-3",
			Epoch: 3, Operation: "failover-web-1-3"},
	}
	in.Spec.State = api.DesiredRunning
	if err := ts.store.Instances.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	ops := []*api.Operation{
		{
			Meta: api.Meta{Name: "failover-web-1-2", CreatedAt: base.Add(-2 * time.Hour)},
			Type: api.OpFailover, Instance: "web-1", Cause: "host host-1's lease expired", From: "host-1", To: "host-2", Epoch: 2,
			State: api.OpSucceeded, Message: "serving on host-2 4.2s after the failure was detected", BootsBefore: 1,
			StartedAt: base.Add(-2 * time.Hour), EndedAt: base.Add(-2*time.Hour + 4200*time.Millisecond),
			Steps: []api.OperationStep{
				step(api.StepDetected, -2*time.Hour, "lease expired; last heartbeat 3.1s ago"),
				step(api.StepFenced, -2*time.Hour, "host-1's agent kills its VMs"),
				step(api.StepPromoted, -2*time.Hour, "host-2 promoted under epoch 2; new replica host-3"),
				step(api.StepBooted, -2*time.Hour+2*time.Second, "booted on host-2"),
				step(api.StepServing, -2*time.Hour+4200*time.Millisecond, "its health probe answers on host-2"),
			},
		},
		{
			Meta: api.Meta{Name: "failover-db-4", CreatedAt: base.Add(-time.Hour)},
			Type: api.OpFailover, Instance: "db", Cause: "host host-3's lease expired", From: "host-3", To: "host-1", Epoch: 4,
			State: api.OpFailed, Message: "the instance was deleted",
			StartedAt: base.Add(-time.Hour), EndedAt: base.Add(-time.Hour + time.Minute),
			Steps: []api.OperationStep{step(api.StepDetected, -time.Hour, "lease expired")},
		},
		{
			Meta: api.Meta{Name: "failover-web-1-3", CreatedAt: base},
			Type: api.OpFailover, Instance: "web-1", Cause: "host host-2's lease expired", From: "host-2", To: "host-2", Epoch: 3,
			State: api.OpRunning, BootsBefore: 5, StartedAt: base,
			Steps: []api.OperationStep{step(api.StepDetected, 0, "lease expired")},
		},
	}
	for _, op := range ops {
		if err := ts.store.Operations.Create(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	byName := map[string]*api.Operation{}
	for _, op := range ops {
		byName[op.Name] = op
	}

	for _, tc := range []struct {
		name      string
		query     string
		wantCode  int
		wantNames []string // in order
		wantField string
	}{
		{name: "all, newest first", wantCode: 200, wantNames: []string{"failover-web-1-3", "failover-db-4", "failover-web-1-2"}},
		{name: "one instance", query: "?instance=web-1", wantCode: 200, wantNames: []string{"failover-web-1-3", "failover-web-1-2"}},
		{name: "one state", query: "?state=Failed", wantCode: 200, wantNames: []string{"failover-db-4"}},
		{name: "running", query: "?state=Running", wantCode: 200, wantNames: []string{"failover-web-1-3"}},
		{name: "instance and state", query: "?instance=web-1&state=Succeeded", wantCode: 200, wantNames: []string{"failover-web-1-2"}},
		{name: "no match is an empty list", query: "?instance=nobody", wantCode: 200, wantNames: []string{}},
		{name: "empty values filter nothing", query: "?instance=&state=", wantCode: 200, wantNames: []string{"failover-web-1-3", "failover-db-4", "failover-web-1-2"}},
		{name: "bad instance", query: "?instance=Web_1", wantCode: 400, wantField: "instance"},
		{name: "bad state", query: "?state=running", wantCode: 400, wantField: "state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var raw json.RawMessage
			code := ts.do("GET", "/v1/operations"+tc.query, nil, &raw)
			if code != tc.wantCode {
				t.Fatalf("GET /v1/operations%s = %d %s, want %d", tc.query, code, raw, tc.wantCode)
			}
			if code != 200 {
				var eb api.ErrorBody
				if err := json.Unmarshal(raw, &eb); err != nil {
					t.Fatal(err)
				}
				if eb.Error.Code != "invalid" || eb.Error.Field != tc.wantField || eb.Error.Message == "" {
					t.Fatalf("error = %+v, want invalid with field %q", eb.Error, tc.wantField)
				}
				return
			}
			var shape map[string]json.RawMessage
			if err := json.Unmarshal(raw, &shape); err != nil {
				t.Fatal(err)
			}
			if string(shape["items"]) == "null" {
				t.Fatalf("items is null, want an array: %s", raw)
			}
			var list api.List[api.Operation]
			if err := json.Unmarshal(raw, &list); err != nil {
				t.Fatal(err)
			}
			if _, err := store.ParseRevision(list.ResourceVersion); err != nil {
				t.Errorf("list resourceVersion: %v", err)
			}
			names := []string{}
			for _, op := range list.Items {
				names = append(names, op.Name)
				want := byName[op.Name]
				if op.ResourceVersion == "" || op.State != want.State || len(op.Steps) != len(want.Steps) || !op.StartedAt.Equal(want.StartedAt) {
					t.Errorf("listed %s = %+v, want %+v", op.Name, op, *want)
				}
			}
			if !reflect.DeepEqual(names, tc.wantNames) {
				t.Fatalf("names = %q, want %q", names, tc.wantNames)
			}
		})
	}

	t.Run("get", func(t *testing.T) {
		var got api.Operation
		if code := ts.do("GET", "/v1/operations/failover-web-1-2", nil, &got); code != 200 {
			t.Fatalf("GET = %d", code)
		}
		want := *byName["failover-web-1-2"]
		if got.ResourceVersion != want.ResourceVersion {
			t.Errorf("resourceVersion = %q, want %q", got.ResourceVersion, want.ResourceVersion)
		}
		gotJSON, _ := json.Marshal(got)
		wantJSON, _ := json.Marshal(want)
		if string(gotJSON) != string(wantJSON) {
			t.Errorf("GET =\n%s\nwant\n%s", gotJSON, wantJSON)
		}
	})
	t.Run("get missing", func(t *testing.T) {
		var eb api.ErrorBody
		if code := ts.do("GET", "/v1/operations/failover-nope-1", nil, &eb); code != http.StatusNotFound {
			t.Fatalf("GET missing = %d, want 404", code)
		}
		if eb.Error.Code != "not_found" || eb.Error.Message != `operation "failover-nope-1" not found` {
			t.Fatalf("error = %+v", eb.Error)
		}
	})
	t.Run("needs a token", func(t *testing.T) {
		for _, p := range []string{"/v1/operations", "/v1/operations/failover-web-1-2"} {
			var eb api.ErrorBody
			if code := doJSON(t, ts.client, "GET", ts.url+p, "", nil, &eb); code != http.StatusUnauthorized || eb.Error.Code != "unauthorized" {
				t.Errorf("GET %s without a token = %d %+v, want 401 unauthorized", p, code, eb)
			}
		}
	})
	// The controller left the running operation alone: it is still as
	// written (nothing in this test boots or serves the instance).
	var got api.Operation
	if code := ts.do("GET", "/v1/operations/failover-web-1-3", nil, &got); code != 200 || got.State != api.OpRunning {
		t.Fatalf("running operation = %d %+v", code, got)
	}
}
