package client

import (
	"context"
	"net/http"

	"github.com/ferrycluster/ferry/internal/api"
)

// ListNetworks returns every network.
func (c *Client) ListNetworks(ctx context.Context) (*api.List[api.Network], error) {
	return list[api.Network](ctx, c, "/v1/networks", nil)
}

// GetNetwork returns the named network; [IsNotFound] tells a missing one.
func (c *Client) GetNetwork(ctx context.Context, name string) (*api.Network, error) {
	return get[api.Network](ctx, c, "network", "/v1/networks", name)
}

// CreateNetwork creates a network from n's name, CIDR, gateway and
// reserved addresses, and returns it as stored. A name in use gives an
// error for which [IsConflict] is true.
func (c *Client) CreateNetwork(ctx context.Context, n api.Network) (*api.Network, error) {
	req := networkRequest{Name: n.Name, CIDR: n.CIDR, Gateway: n.Gateway, Reserved: n.Reserved}
	var out api.Network
	if _, err := c.do(ctx, http.MethodPost, "/v1/networks", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteNetwork removes a network. One that instances still use is kept,
// with an error for which [IsConflict] is true.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	p, err := objectPath("network", "/v1/networks", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, nil, nil, nil)
	return err
}

// networkRequest is the body of POST /v1/networks: the fields a user sets.
type networkRequest struct {
	Name     string   `json:"name"`
	CIDR     string   `json:"cidr"`
	Gateway  string   `json:"gateway,omitempty"`
	Reserved []string `json:"reserved,omitempty"`
}
