package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// Limits on what the client reads from the server.
const (
	maxResponseBytes = 64 << 20 // a list of many objects
	maxErrorBytes    = 64 << 10
	maxEventLine     = api.MaxBodyBytes
)

// Config says which server to talk to and how.
type Config struct {
	// Server is the server's base URL, e.g. "https://10.0.0.1:7443". Only
	// https is accepted; "host:port" without a scheme means https.
	Server string
	// Token is the bearer token sent with every request. Optional for the
	// client, but every user route needs one.
	Token string
	// CAPEM holds the PEM certificates trusted to sign the server's
	// certificate (the cluster CA). Empty means the system roots.
	CAPEM []byte
}

// Client calls the user routes of a ferry server. It is safe for
// concurrent use; create one per server and reuse it.
type Client struct {
	base  string // scheme://host[:port][/prefix], no trailing slash
	token string
	hc    *http.Client
	// upgrade makes protocol-switching requests ([Client.Console]): HTTP/1.1
	// only, as HTTP/2 has no Upgrade, and no connection reuse.
	upgrade *http.Client
}

// New returns a client for cfg. It does no I/O: a server that is down is
// found out by the first call.
func New(cfg Config) (*Client, error) {
	base, err := parseServer(cfg.Server)
	if err != nil {
		return nil, err
	}
	if strings.ContainsFunc(cfg.Token, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return nil, errors.New("client: token contains spaces or control characters")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if len(bytes.TrimSpace(cfg.CAPEM)) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("client: no PEM certificate found in the CA data")
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          10,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	// A redirect would send the token elsewhere; the API never redirects.
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	hc := &http.Client{Transport: tr, CheckRedirect: noRedirect}
	upTr := &http.Transport{
		Proxy:               tr.Proxy,
		DialContext:         tr.DialContext,
		TLSClientConfig:     tlsCfg.Clone(),
		TLSHandshakeTimeout: tr.TLSHandshakeTimeout,
		// The server answers once it reaches the agent; the stream after
		// the 101 has no deadline.
		ResponseHeaderTimeout: 30 * time.Second,
		// A non-nil empty map turns HTTP/2 off: TLS offers only http/1.1.
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives: true,
	}
	upgrade := &http.Client{Transport: upTr, CheckRedirect: noRedirect}
	return &Client{base: base, token: cfg.Token, hc: hc, upgrade: upgrade}, nil
}

// parseServer checks a server address and returns it as a base URL.
func parseServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("client: no server address")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("client: server address %q: %w", s, err)
	}
	switch {
	case u.Scheme != "https":
		return "", fmt.Errorf("client: server address %q: only https:// is supported", s)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("client: server address %q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("client: server address %q must be scheme://host[:port][/path] only", s)
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// Server returns the base URL the client talks to, e.g. "https://10.0.0.1:7443".
func (c *Client) Server() string { return c.base }

// CloseIdleConnections closes connections kept open for reuse.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// newRequest builds a request for path with the headers every call sends.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ferry-client")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// roundTrip sends req with hc. A transport error names the request's URL.
func roundTrip(hc *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	return resp, nil
}

// check returns resp when its status is 2xx; otherwise it reads and closes
// the body and returns it as an [*APIError].
func check(resp *http.Response) (*http.Response, error) {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		return nil, newAPIError(resp.StatusCode, data)
	}
	return resp, nil
}

// send makes one request and returns the response when its status is 2xx;
// otherwise it reads the body into an [*APIError]. The caller closes the
// body of a returned response.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encoding request: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := c.newRequest(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := roundTrip(c.hc, req)
	if err != nil {
		return nil, err
	}
	return check(resp)
}

// do makes one request and decodes a 2xx body into out (unless out is nil
// or the body is empty). It returns the status code.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	resp, err := c.exchange(ctx, method, path, query, in, out)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// exchange is do for callers that need the answer's headers too: it
// returns the response with its body read into out and closed.
func (c *Client) exchange(ctx context.Context, method, path string, query url.Values, in, out any) (*http.Response, error) {
	resp, err := c.send(ctx, method, path, query, in)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := decode(resp, method, path, out); err != nil {
		return nil, err
	}
	return resp, nil
}

// decode reads a response body of at most maxResponseBytes and decodes it
// into out, unless out is nil or the body is empty.
func decode(resp *http.Response, method, path string, out any) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading response: %w", method, path, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		// Not strict: a newer server may add fields.
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
		}
	}
	return nil
}

// objectPath returns collection/name with name escaped, refusing an empty
// name (which would address the collection instead).
func objectPath(kind, collection, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("client: %s name is empty", kind)
	}
	return collection + "/" + url.PathEscape(name), nil
}

// Version returns the server's build version.
func (c *Client) Version(ctx context.Context) (*api.Version, error) {
	var v api.Version
	if _, err := c.do(ctx, http.MethodGet, "/v1/version", nil, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// CreateInstance creates an instance. The server validates the request; a
// name in use gives an error for which [IsConflict] is true.
func (c *Client) CreateInstance(ctx context.Context, req api.CreateInstanceRequest) (*api.Instance, error) {
	var inst api.Instance
	if _, err := c.do(ctx, http.MethodPost, "/v1/instances", nil, req, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// ListInstances returns every instance.
func (c *Client) ListInstances(ctx context.Context) (*api.List[api.Instance], error) {
	return list[api.Instance](ctx, c, "/v1/instances", nil)
}

// GetInstance returns the named instance; [IsNotFound] tells a missing one.
func (c *Client) GetInstance(ctx context.Context, name string) (*api.Instance, error) {
	return get[api.Instance](ctx, c, "instance", "/v1/instances", name)
}

// UpdateInstance writes inst (its spec.cpus, memory, owner, state and group
// are mutable) and returns the stored result. inst.ResourceVersion is required;
// if someone wrote in between, the error satisfies [IsConflict].
func (c *Client) UpdateInstance(ctx context.Context, inst *api.Instance) (*api.Instance, error) {
	if inst == nil {
		return nil, errors.New("client: UpdateInstance: nil instance")
	}
	p, err := objectPath("instance", "/v1/instances", inst.Name)
	if err != nil {
		return nil, err
	}
	var out api.Instance
	if _, err := c.do(ctx, http.MethodPut, p, nil, inst, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StartInstance sets the instance's desired state to running. A non-empty
// resourceVersion makes the call conditional ([IsConflict] if stale).
func (c *Client) StartInstance(ctx context.Context, name, resourceVersion string) (*api.Instance, error) {
	return c.instanceAction(ctx, name, "start", resourceVersion)
}

// StartInstanceOn starts the instance on the named node, moving it there.
// The server allows this only for an instance on shared storage that is not
// running anywhere (phase Stopped, Failed or Pending); otherwise the error
// is an [*APIError] whose Field is "on" and whose Message says why.
func (c *Client) StartInstanceOn(ctx context.Context, name, node string) (*api.Instance, error) {
	p, err := objectPath("instance", "/v1/instances", name)
	if err != nil {
		return nil, err
	}
	if node == "" {
		return nil, errors.New("client: node name is empty")
	}
	var inst api.Instance
	if _, err := c.do(ctx, http.MethodPost, p+"/start", url.Values{"on": {node}}, nil, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// StopInstance sets the instance's desired state to stopped. A non-empty
// resourceVersion makes the call conditional ([IsConflict] if stale).
func (c *Client) StopInstance(ctx context.Context, name, resourceVersion string) (*api.Instance, error) {
	return c.instanceAction(ctx, name, "stop", resourceVersion)
}

func (c *Client) instanceAction(ctx context.Context, name, action, resourceVersion string) (*api.Instance, error) {
	p, err := objectPath("instance", "/v1/instances", name)
	if err != nil {
		return nil, err
	}
	var q url.Values
	if resourceVersion != "" {
		q = url.Values{"resourceVersion": {resourceVersion}}
	}
	var inst api.Instance
	if _, err := c.do(ctx, http.MethodPost, p+"/"+action, q, nil, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// DeleteInstance asks for the instance to be removed. A non-empty
// resourceVersion makes the call conditional; force removes the record
// without waiting for its agent. removed is true when the record is gone at
// once (200); otherwise (202) the returned instance is marked Deleting and
// goes when its agent has destroyed the VM. inst may be nil if the server
// sent no body.
func (c *Client) DeleteInstance(ctx context.Context, name, resourceVersion string, force bool) (inst *api.Instance, removed bool, err error) {
	p, err := objectPath("instance", "/v1/instances", name)
	if err != nil {
		return nil, false, err
	}
	q := url.Values{}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	if force {
		q.Set("force", "true")
	}
	var out api.Instance
	status, err := c.do(ctx, http.MethodDelete, p, q, nil, &out)
	if err != nil {
		return nil, false, err
	}
	if out.Name != "" {
		inst = &out
	}
	return inst, status != http.StatusAccepted, nil
}

// ListNodes returns every node, with its state and allocation.
func (c *Client) ListNodes(ctx context.Context) (*api.List[api.Node], error) {
	return list[api.Node](ctx, c, "/v1/nodes", nil)
}

// GetNode returns the named node; [IsNotFound] tells a missing one.
func (c *Client) GetNode(ctx context.Context, name string) (*api.Node, error) {
	return get[api.Node](ctx, c, "node", "/v1/nodes", name)
}

// DeleteNode removes a node and revokes its certificate; force removes it
// even if instances are still placed on it.
func (c *Client) DeleteNode(ctx context.Context, name string, force bool) error {
	p, err := objectPath("node", "/v1/nodes", name)
	if err != nil {
		return err
	}
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	_, err = c.do(ctx, http.MethodDelete, p, q, nil, nil)
	return err
}

// CreateJoinToken returns a new token with which one host can join the
// cluster. ttl is rounded up to whole seconds; 0 means the server's default
// (1 hour).
func (c *Client) CreateJoinToken(ctx context.Context, ttl time.Duration) (*api.JoinToken, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("client: join token TTL %v is negative", ttl)
	}
	req := api.JoinTokenRequest{TTLSeconds: int((ttl + time.Second - 1) / time.Second)}
	var tok api.JoinToken
	if _, err := c.do(ctx, http.MethodPost, "/v1/join-tokens", nil, req, &tok); err != nil {
		return nil, err
	}
	return &tok, nil
}

// ListImages returns every registered image.
func (c *Client) ListImages(ctx context.Context) (*api.List[api.Image], error) {
	return list[api.Image](ctx, c, "/v1/images", nil)
}

// GetImage returns the named image; [IsNotFound] tells a missing one.
func (c *Client) GetImage(ctx context.Context, name string) (*api.Image, error) {
	return get[api.Image](ctx, c, "image", "/v1/images", name)
}

// ListEvents returns the most recent events, oldest first; limit <= 0 means
// the server's default (100).
func (c *Client) ListEvents(ctx context.Context, limit int) (*api.List[api.Event], error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	return list[api.Event](ctx, c, "/v1/events", q)
}

// WatchEvents streams events: first the last limit ones (limit <= 0 means
// the server's default, 20), then live ones as they happen, calling fn for
// each, in order, from the calling goroutine. It returns when ctx ends
// (with ctx's error), when fn returns an error (with that error), or when
// the stream fails; a stream the server ends gives [ErrStreamClosed]. Blank
// lines and keep-alive lines ({"type":"ping"}) are skipped.
func (c *Client) WatchEvents(ctx context.Context, limit int, fn func(api.Event) error) error {
	q := url.Values{"watch": {"true"}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	resp, err := c.send(ctx, http.MethodGet, "/v1/events", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(r, maxEventLine)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if errors.Is(err, io.EOF) {
				return ErrStreamClosed
			}
			return fmt.Errorf("reading event stream: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("decoding event stream: %w", err)
		}
		if ev.Kind == "" && ev.Type == api.AssignPing {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// readLine reads up to and including the next '\n'. A line longer than max
// is an error; a last line without '\n' (the stream was cut) is returned
// with io.EOF.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, fmt.Errorf("event line longer than %d bytes", max)
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, io.EOF
		default:
			return line, err
		}
	}
}

func list[T any](ctx context.Context, c *Client, path string, q url.Values) (*api.List[T], error) {
	var l api.List[T]
	if _, err := c.do(ctx, http.MethodGet, path, q, nil, &l); err != nil {
		return nil, err
	}
	if l.Items == nil {
		l.Items = []T{}
	}
	return &l, nil
}

func get[T any](ctx context.Context, c *Client, kind, collection, name string) (*T, error) {
	p, err := objectPath(kind, collection, name)
	if err != nil {
		return nil, err
	}
	var v T
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}
