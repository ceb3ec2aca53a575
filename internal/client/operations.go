package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/ferrycluster/ferry/internal/api"
)

// ListOperations returns the recorded operations (failovers, ...), newest
// first. A non-empty instance keeps those of that instance, a non-empty
// state those in that state (api.OpRunning, api.OpSucceeded or
// api.OpFailed); the server refuses (400, Field "instance" or "state") a
// value it cannot accept.
func (c *Client) ListOperations(ctx context.Context, instance, state string) (*api.List[api.Operation], error) {
	q := url.Values{}
	if instance != "" {
		q.Set("instance", instance)
	}
	if state != "" {
		q.Set("state", state)
	}
	return list[api.Operation](ctx, c, "/v1/operations", q)
}

// GetOperation returns the named operation; [IsNotFound] tells a missing one.
func (c *Client) GetOperation(ctx context.Context, name string) (*api.Operation, error) {
	return get[api.Operation](ctx, c, "operation", "/v1/operations", name)
}

// MigrateInstance starts a migration of the named instance (live by
// default) and returns its operation, which moves through its steps as
// the hosts do their parts; follow it with [Client.GetOperation]. The
// server refuses a bad request (400, Field naming "to", "mode",
// "downtimeLimitMs", "convergeSeconds" or "fallback") and a migration that
// cannot start now (409: not running, an operation in flight, the target
// not Ready, cordoned or full, the replica not up to date), saying why.
func (c *Client) MigrateInstance(ctx context.Context, name string, req api.MigrateRequest) (*api.Operation, error) {
	p, err := objectPath("instance", "/v1/instances", name)
	if err != nil {
		return nil, err
	}
	var op api.Operation
	if _, err := c.do(ctx, http.MethodPost, p+"/migrate", nil, req, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// CancelOperation cancels a migration before its switch and returns the
// operation, ended Cancelled. A migration past its switch completes
// ([IsConflict]); an operation that is no migration is refused (400).
func (c *Client) CancelOperation(ctx context.Context, name string) (*api.Operation, error) {
	p, err := objectPath("operation", "/v1/operations", name)
	if err != nil {
		return nil, err
	}
	var op api.Operation
	if _, err := c.do(ctx, http.MethodPost, p+"/cancel", nil, nil, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// DrainNode cordons the named node and has the control plane migrate its
// instances elsewhere, req.MaxConcurrent at a time; it returns the node,
// whose status.drain tells how the drain goes.
func (c *Client) DrainNode(ctx context.Context, name string, req api.DrainRequest) (*api.Node, error) {
	return c.nodeAction(ctx, name, "drain", req)
}

// UndrainNode makes the named node schedulable again and ends its drain;
// with req.Restore the instances the drain took go back to it.
func (c *Client) UndrainNode(ctx context.Context, name string, req api.UndrainRequest) (*api.Node, error) {
	return c.nodeAction(ctx, name, "undrain", req)
}

func (c *Client) nodeAction(ctx context.Context, name, action string, body any) (*api.Node, error) {
	p, err := objectPath("node", "/v1/nodes", name)
	if err != nil {
		return nil, err
	}
	var n api.Node
	if _, err := c.do(ctx, http.MethodPost, p+"/"+action, nil, body, &n); err != nil {
		return nil, err
	}
	return &n, nil
}
