package client

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// consoleRequest is what the console test server saw.
type consoleRequest struct {
	method, path, proto, upgrade, connection, auth string
}

// echoConsole answers a console request with 101 and, in the same write,
// a banner; then echoes what it reads until EOF, and ends with "bye".
func echoConsole(t *testing.T, seen chan<- consoleRequest) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		seen <- consoleRequest{
			method: r.Method, path: r.URL.EscapedPath(), proto: r.Proto,
			upgrade: r.Header.Get("Upgrade"), connection: r.Header.Get("Connection"), auth: r.Header.Get("Authorization"),
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ferry-console\r\n\r\nwelcome\r\n")
		_, _ = io.Copy(conn, brw) // until the client's CloseWrite
		_, _ = io.WriteString(conn, "bye")
	}
}

func TestConsole(t *testing.T) {
	t.Parallel()
	for _, h2 := range []bool{false, true} {
		name := "HTTP/1.1 server"
		if h2 {
			name = "HTTP/2 server"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			seen := make(chan consoleRequest, 1)
			srv := httptest.NewUnstartedServer(echoConsole(t, seen))
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			defer srv.Close()
			c, err := New(Config{Server: srv.URL, Token: testToken, CAPEM: certPEM(srv)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			s, err := c.Console(ctx, "web-1")
			if err != nil {
				t.Fatalf("Console: %v", err)
			}
			defer s.Close()
			want := consoleRequest{method: "GET", path: "/v1/instances/web-1/console", proto: "HTTP/1.1", upgrade: "ferry-console", connection: "Upgrade", auth: "Bearer " + testToken}
			if got := <-seen; got != want {
				t.Errorf("server saw %+v, want %+v", got, want)
			}
			r := bufio.NewReader(s)
			if line, err := r.ReadString('\n'); err != nil || line != "welcome\r\n" {
				t.Fatalf("first line = %q, %v, want the banner sent with the 101", line, err)
			}
			for _, msg := range []string{"hello\n", "\x03\x1b[A"} {
				if _, err := io.WriteString(s, msg); err != nil {
					t.Fatalf("Write: %v", err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(r, got); err != nil || string(got) != msg {
					t.Fatalf("echo = %q, %v, want %q", got, err, msg)
				}
			}
			cw, ok := s.(interface{ CloseWrite() error })
			if !ok {
				t.Fatalf("%T has no CloseWrite", s)
			}
			if err := cw.CloseWrite(); err != nil {
				t.Fatalf("CloseWrite: %v", err)
			}
			rest, err := io.ReadAll(r)
			if err != nil || string(rest) != "bye" {
				t.Errorf("after CloseWrite read %q, %v, want \"bye\" then EOF", rest, err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestConsoleCancel(t *testing.T) {
	t.Parallel()
	seen := make(chan consoleRequest, 1)
	_, c := newTLSServer(t, echoConsole(t, seen))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Console(ctx, "web-1")
	if err != nil {
		t.Fatalf("Console: %v", err)
	}
	defer s.Close()
	<-seen
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(s)
		done <- err
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("cancelling the context did not end the console stream")
	}
}

func TestConsoleErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		handler      http.HandlerFunc
		wantErr      string
		wantConflict bool
	}{
		{
			name: "instance not running",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusConflict, map[string]any{"error": map[string]string{"code": "conflict", "message": `instance "web-1" is not running`}})
			},
			wantErr:      `instance "web-1" is not running (conflict)`,
			wantConflict: true,
		},
		{
			name: "no switch",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "hello")
			},
			wantErr: "server answered 200 OK instead of switching to the console",
		},
		{
			name: "other protocol",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			},
			wantErr: `server switched to "websocket", not "ferry-console"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, c := newTLSServer(t, tc.handler)
			s, err := c.Console(context.Background(), "web-1")
			if err == nil {
				s.Close()
				t.Fatalf("Console error = nil, want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Console error = %v, want containing %q", err, tc.wantErr)
			}
			if got := IsConflict(err); got != tc.wantConflict {
				t.Errorf("IsConflict(%v) = %v, want %v", err, got, tc.wantConflict)
			}
		})
	}
}

func TestInstanceLogs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		tail      int
		wantQuery string
		status    int
		body      string
		wantErr   string
		notFound  bool
	}{
		{name: "all", body: "line 1\nline 2\n"},
		{name: "tail", tail: 50, wantQuery: "tail=50", body: "line 2\n"},
		{name: "negative tail means all", tail: -1, body: "x"},
		{name: "missing", status: 404, body: `{"error":{"code":"not_found","message":"instance \"web-1\" not found"}}`, wantErr: "not found", notFound: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan request, 1)
			_, c := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Auth: r.Header.Get("Authorization")}
				if tc.status != 0 {
					w.WriteHeader(tc.status)
				}
				_, _ = io.WriteString(w, tc.body)
			}))
			rc, err := c.InstanceLogs(context.Background(), "web-1", tc.tail)
			if req, want := <-got, (request{Method: "GET", Path: "/v1/instances/web-1/logs", Query: tc.wantQuery, Auth: "Bearer " + testToken}); req != want {
				t.Errorf("request = %+v, want %+v", req, want)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || IsNotFound(err) != tc.notFound {
					t.Fatalf("InstanceLogs error = %v, want containing %q (not found: %v)", err, tc.wantErr, tc.notFound)
				}
				return
			}
			if err != nil {
				t.Fatalf("InstanceLogs: %v", err)
			}
			defer rc.Close()
			data, err := io.ReadAll(rc)
			if err != nil || string(data) != tc.body {
				t.Errorf("log = %q, %v, want %q", data, err, tc.body)
			}
		})
	}
}
