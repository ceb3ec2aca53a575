package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/scheduler"
)

// ClusterCheck returns the scheduler's verdict on the cluster: N+1
// failures and over-allocation per node, anti-affinity conflicts,
// unprotected instances and the score.
func (c *Client) ClusterCheck(ctx context.Context) (*scheduler.CheckReport, error) {
	var rep scheduler.CheckReport
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/check", nil, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// ClusterCapacity returns how many more instances of size fit while every
// node can still fail (N+1), and what runs out first. The server refuses a
// size it cannot use with an [*APIError] whose Field is "size".
func (c *Client) ClusterCapacity(ctx context.Context, size api.Resources) (*scheduler.CapacityReport, error) {
	var rep scheduler.CapacityReport
	q := url.Values{"size": {api.FormatSize(size)}}
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/capacity", q, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// ClusterRebalance returns a dry-run plan of moves that lower the cluster
// score, at most maxMoves of them (0: no limit). Nothing is moved.
func (c *Client) ClusterRebalance(ctx context.Context, maxMoves int) (*scheduler.Plan, error) {
	if maxMoves < 0 {
		return nil, fmt.Errorf("client: maxMoves %d is negative", maxMoves)
	}
	var q url.Values
	if maxMoves > 0 {
		q = url.Values{"maxMoves": {strconv.Itoa(maxMoves)}}
	}
	var plan scheduler.Plan
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/rebalance", q, nil, &plan); err != nil {
		return nil, err
	}
	if plan.Moves == nil {
		plan.Moves = []scheduler.Move{}
	}
	return &plan, nil
}

// ClusterSnapshot returns the cluster as the scheduler sees it, as ferry's
// snapshot JSON document (what clusterfile.ReadSnapshot reads), unchanged.
func (c *Client) ClusterSnapshot(ctx context.Context) ([]byte, error) {
	const path = "/v1/cluster/snapshot"
	resp, err := c.send(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading response: %w", path, err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("GET %s: response larger than %d bytes", path, maxResponseBytes)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("GET %s: the response is not JSON", path)
	}
	return data, nil
}

// PatchNode changes a node's spec as p says (labels set or removed,
// cordon) and returns the node. A label the server refuses gives an
// [*APIError] whose Field names it ("labels.KEY").
func (c *Client) PatchNode(ctx context.Context, name string, p api.NodePatch) (*api.Node, error) {
	path, err := objectPath("node", "/v1/nodes", name)
	if err != nil {
		return nil, err
	}
	var n api.Node
	if _, err := c.do(ctx, http.MethodPatch, path, nil, p, &n); err != nil {
		return nil, err
	}
	return &n, nil
}
