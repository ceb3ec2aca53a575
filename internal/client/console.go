package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// ConsoleProtocol is the Upgrade token of the console route.
const ConsoleProtocol = "ferry-console"

// InstanceLogs returns the serial console log of the named instance as
// text, read from the agent of its node: the last tail lines, or all of it
// (up to 1 MiB) if tail <= 0. The caller closes the returned reader;
// cancelling ctx ends the read.
func (c *Client) InstanceLogs(ctx context.Context, name string, tail int) (io.ReadCloser, error) {
	p, err := objectPath("instance", "/v1/instances", name)
	if err != nil {
		return nil, err
	}
	var q url.Values
	if tail > 0 {
		q = url.Values{"tail": {strconv.Itoa(tail)}}
	}
	req, err := c.newRequest(ctx, http.MethodGet, p+"/logs", q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain, application/json")
	resp, err := roundTrip(c.hc, req)
	if err != nil {
		return nil, err
	}
	if resp, err = check(resp); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Console attaches to the serial console of the named instance and
// returns the stream: what is written goes to the guest's serial port, and
// what the guest prints is read, byte for byte. The server refuses (an
// error for which [IsConflict] is true) an instance that is not running.
//
// The request is an HTTP/1.1 Upgrade to [ConsoleProtocol], made on a
// connection of its own; the server has 30 seconds to answer it. Bytes the
// server sent right after its 101 answer are not lost: the first reads
// return them.
//
// The returned stream also has a CloseWrite() error method that tells the
// server no more input is coming, while output can still be read. Close
// ends the session; cancelling ctx, during the call or afterwards, ends it
// too. Read and Write may be called concurrently with each other.
func (c *Client) Console(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	p, err := objectPath("instance", "/v1/instances", name)
	if err != nil {
		return nil, err
	}
	req, err := c.newRequest(ctx, http.MethodGet, p+"/console", nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConsoleProtocol)
	resp, err := roundTrip(c.upgrade, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		if _, err := check(resp); err != nil {
			return nil, err
		}
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: server answered %s instead of switching to the console", req.URL, resp.Status)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: the connection cannot be written to after the switch", req.URL)
	}
	if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, ConsoleProtocol) {
		rwc.Close()
		return nil, fmt.Errorf("GET %s: server switched to %q, not %q", req.URL, got, ConsoleProtocol)
	}
	s := &consoleStream{rwc: rwc}
	s.stopCtx = context.AfterFunc(ctx, s.closeConn)
	return s, nil
}

// consoleStream is the connection of a console session, after the switch.
type consoleStream struct {
	rwc     io.ReadWriteCloser // reads first what the transport had buffered
	stopCtx func() bool        // set before the stream is returned

	closeOnce sync.Once
	closeErr  error
}

func (s *consoleStream) Read(p []byte) (int, error)  { return s.rwc.Read(p) }
func (s *consoleStream) Write(p []byte) (int, error) { return s.rwc.Write(p) }

// CloseWrite shuts down the sending side: the server reads EOF.
func (s *consoleStream) CloseWrite() error {
	if cw, ok := s.rwc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Close ends the session; it is safe to call more than once.
func (s *consoleStream) Close() error {
	s.stopCtx()
	s.closeConn()
	return s.closeErr
}

// closeConn closes the connection once; it runs when ctx ends, too.
func (s *consoleStream) closeConn() {
	s.closeOnce.Do(func() { s.closeErr = s.rwc.Close() })
}
