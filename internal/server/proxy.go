package server

import (
	"bufio"
	"context"
	"crypto/tls"
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

// Console and logs live on the host that runs the instance. The server
// checks the user's token, finds the host, and relays to its agent's API
// over mutual TLS with the server's own certificate (agents accept calls
// only from server certificates).

// agentTarget returns the instance and the API address and name of its host.
func (s *Server) agentTarget(w http.ResponseWriter, r *http.Request) (*api.Instance, string, bool) {
	name := r.PathValue("name")
	in, err := s.store.Instances.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "instance", name, err)
		return nil, "", false
	}
	if in.Status.Node == "" {
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("instance %q has no host yet", name))
		return nil, "", false
	}
	n, err := s.store.Nodes.Get(r.Context(), in.Status.Node)
	if err != nil {
		s.storeError(w, "node", in.Status.Node, err)
		return nil, "", false
	}
	if n.Status.Address == "" {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", fmt.Sprintf("node %q has not reported an API address (agent started without --api-listen?)", n.Name))
		return nil, "", false
	}
	return in, n.Status.Address, true
}

func (s *Server) agentTLS(node string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		RootCAs:      s.ca.Pool(),
		ServerName:   node, // a node certificate's SAN is its node name
	}
}

func (s *Server) instanceLogs(w http.ResponseWriter, r *http.Request) {
	in, addr, ok := s.agentTarget(w, r)
	if !ok {
		return
	}
	tail := r.URL.Query().Get("tail")
	if tail != "" {
		if n, err := strconv.Atoi(tail); err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "invalid", "tail", fmt.Sprintf("must be a non-negative integer, got %q", tail))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	u := "https://" + addr + "/v1/vms/" + url.PathEscape(in.Name) + "/log?tail=" + url.QueryEscape(tail)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		s.internalError(w, err)
		return
	}
	tr := &http.Transport{TLSClientConfig: s.agentTLS(in.Status.Node)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", fmt.Sprintf("agent of %s does not answer: %v", in.Status.Node, err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		status, code := http.StatusBadGateway, "unavailable"
		if resp.StatusCode == http.StatusNotFound {
			status, code = http.StatusConflict, "conflict" // the instance exists; its log does not (yet)
		}
		writeError(w, status, code, "", fmt.Sprintf("agent of %s: %s", in.Status.Node, strings.TrimSpace(string(msg))))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.Copy(w, resp.Body)
}

// instanceConsole relays a read-write console session.
func (s *Server) instanceConsole(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "ferry-console" {
		writeError(w, http.StatusBadRequest, "invalid", "", "the console needs `Connection: Upgrade` and `Upgrade: ferry-console` (use `ferry console NAME`)")
		return
	}
	in, addr, ok := s.agentTarget(w, r)
	if !ok {
		return
	}
	if in.Status.Phase != api.PhaseRunning {
		writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("instance %q is %s, not Running", in.Name, in.Status.Phase))
		return
	}
	d := tls.Dialer{Config: s.agentTLS(in.Status.Node), NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	up, err := d.DialContext(r.Context(), "tcp", addr)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", fmt.Sprintf("agent of %s does not answer: %v", in.Status.Node, err))
		return
	}
	defer up.Close()
	fmt.Fprintf(up, "GET /v1/vms/%s/console HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: ferry-console\r\n\r\n", url.PathEscape(in.Name), in.Status.Node)
	upr := bufio.NewReader(up)
	resp, err := http.ReadResponse(upr, nil)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "", "agent console: "+err.Error())
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		writeError(w, http.StatusConflict, "conflict", "", "agent console: "+string(msg))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "", "the console needs HTTP/1.1")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ferry-console\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, brw.Reader); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, upr); done <- struct{}{} }()
	<-done
}
