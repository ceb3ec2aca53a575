package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/disk/repl"
	"github.com/ferrycluster/ferry/internal/pki"
)

// The agent's own API serves what only the host has: a VM's console and
// its log. Only ferry servers may call it (mutual TLS, a certificate of the
// cluster CA with the servers' organisation); users reach it through a
// server, which checks their token.
const (
	consoleLogName  = "console.log"
	consoleSockName = "console.sock"
	maxLogBytes     = 1 << 20
)

// serveAPI listens on addr with the node certificate and serves the agent
// API until ctx ends. It returns the address it listens on.
func (a *Agent) serveAPI(ctx context.Context, addr string, tlsCfg *tls.Config, wg *sync.WaitGroup) (string, error) {
	cfg := tlsCfg.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	// Peer agents' replication links share the port, told apart by ALPN.
	cfg.NextProtos = []string{"http/1.1", replALPN}
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("agent: api listener: %w", err)
	}
	ln := tls.NewListener(linkListener{raw}, cfg)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vms/{name}/log", a.apiLog)
	mux.HandleFunc("GET /v1/vms/{name}/console", a.apiConsole)
	srv := &http.Server{Handler: a.onlyServers(mux), ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){replALPN: a.serveReplLink}}
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("api listener failed", "err", err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	return ln.Addr().String(), nil
}

// linkListener hands out connections wrapped for the replication link's
// batching (repl.LinkConn), beneath TLS; for HTTP they change nothing.
type linkListener struct{ net.Listener }

func (l linkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return repl.LinkConn(c), nil
}

func (a *Agent) onlyServers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || !pki.IsServerCert(r.TLS.VerifiedChains[0][0]) {
			http.Error(w, "only ferry servers may call the agent", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validName checks the instance name in the path (it names a directory).
func validName(w http.ResponseWriter, r *http.Request) bool {
	if err := api.ValidateName("name", r.PathValue("name")); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// apiLog answers the tail of a VM's console log.
func (a *Agent) apiLog(w http.ResponseWriter, r *http.Request) {
	if !validName(w, r) {
		return
	}
	path := filepath.Join(a.vmDir(r.PathValue("name")), consoleLogName)
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, "no console log for this instance on this host", http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	off := max(st.Size()-maxLogBytes, 0)
	data := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(data, off); err != nil && !errors.Is(err, io.EOF) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("tail")); err == nil && n > 0 {
		data = tailLines(data, n)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(data)
}

// tailLines returns the last n lines of data.
func tailLines(data []byte, n int) []byte {
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if data[i] == '\n' {
			n--
			if n == 0 {
				return data[i+1:]
			}
		}
	}
	return data
}

// apiConsole upgrades the connection and splices it to the VM's serial
// console socket, read-write, until either side closes.
func (a *Agent) apiConsole(w http.ResponseWriter, r *http.Request) {
	if !validName(w, r) {
		return
	}
	sock := filepath.Join(a.vmDir(r.PathValue("name")), consoleSockName)
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		http.Error(w, "the instance's console is not available on this host (is it running?)", http.StatusConflict)
		return
	}
	defer c.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "console needs HTTP/1.1", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ferry-console\r\n\r\n")
	if err := rw.Flush(); err != nil {
		return
	}
	splice(conn, rw.Reader, c)
}

// splice copies both ways between a client connection (with bytes already
// buffered in br) and the console until one side ends.
func splice(client net.Conn, br *bufio.Reader, console net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(console, br)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, console)
		done <- struct{}{}
	}()
	<-done
}
