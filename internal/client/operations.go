package client

import (
	"context"
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
