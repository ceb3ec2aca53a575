package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// maxResponseBytes caps the responses the agent reads (not the stream).
const maxResponseBytes = 4 << 20

// serverError is an error answer of the server: its HTTP status and the
// api.ErrorDetail of the body.
type serverError struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *serverError) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Code != "" {
		return fmt.Sprintf("server answered %d (%s): %s", e.Status, e.Code, msg)
	}
	return fmt.Sprintf("server answered %d: %s", e.Status, msg)
}

// permanent reports whether retrying the same request cannot help: a 4xx
// other than 408 and 429.
func (e *serverError) permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// isPermanent reports whether err is a server answer that a retry cannot
// change.
func isPermanent(err error) bool {
	var se *serverError
	return errors.As(err, &se) && se.permanent()
}

// statusOf returns the HTTP status of a server error, or 0.
func statusOf(err error) int {
	var se *serverError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// readServerError builds a serverError from a non-2xx response.
func readServerError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	se := &serverError{Status: resp.StatusCode}
	var body api.ErrorBody
	if err := json.Unmarshal(data, &body); err == nil && body.Error.Message != "" {
		se.Code, se.Message, se.Field = body.Error.Code, body.Error.Message, body.Error.Field
	} else {
		se.Message = strings.TrimSpace(string(data))
		if se.Message == "" {
			se.Message = http.StatusText(resp.StatusCode)
		}
	}
	return se
}

// doJSON sends in (if not nil) as JSON and decodes a 2xx answer into out (if
// not nil). A non-2xx answer is returned as a *serverError.
func doJSON(ctx context.Context, c *http.Client, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, url, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readServerError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, url, err)
	}
	return nil
}

// newTransport returns a transport of its own (its own connections) for
// tlsCfg. Proxies from the environment are not used: agents talk to servers
// directly.
func newTransport(tlsCfg *tls.Config, dialTimeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg.Clone(),
		TLSHandshakeTimeout:   dialTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// nextBackoff doubles d, capped at limit.
func nextBackoff(d, limit time.Duration) time.Duration {
	d *= 2
	if d > limit {
		d = limit
	}
	return d
}
