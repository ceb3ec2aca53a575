package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

// errNoServer is the message of a CLI that does not know where to go.
const errNoServer = "no server configured: run `ferry dev`, or pass --server and --token"

// connection is where and how to reach the server, and where that came from.
type connection struct {
	cfg client.Config
	// caFile is the CA file read into cfg.CAPEM, if any.
	caFile string
	// context names the config file's context used, if one was.
	context string
}

// resolve works out the connection: each of server, token and CA file comes
// from its flag, else its environment variable, else the config file's
// context (--context, else the current one). The context's token and CA
// are used only when the server is the context's own, so a token is never
// sent to a server it was not issued for.
func (a *app) resolve() (*connection, error) {
	getenv := a.opts.Getenv
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return strings.TrimSpace(getenv(env))
	}
	server := pick(a.g.Server, "FERRY_SERVER")
	token := pick(a.g.Token, "FERRY_TOKEN")
	caFile := pick(a.g.CAFile, "FERRY_CA_FILE")
	conn := &connection{}

	if server == "" || token == "" || a.g.Context != "" {
		ctx, name, err := a.configContext()
		if err != nil {
			return nil, err
		}
		if ctx != nil && (server == "" || sameServer(server, ctx.Server)) {
			conn.context = name
			if server == "" {
				server = ctx.Server
			}
			if token == "" {
				token = ctx.Token
			}
			if caFile == "" && ctx.CAFile != "" {
				caFile = ctx.CAFile
				if !filepath.IsAbs(caFile) {
					caFile = filepath.Join(filepath.Dir(a.g.ConfigPath), caFile)
				}
			}
		}
	}
	if server == "" {
		return nil, errors.New(errNoServer)
	}
	if token == "" {
		return nil, fmt.Errorf("no token for server %s: pass --token or set FERRY_TOKEN", server)
	}
	conn.cfg = client.Config{Server: server, Token: token}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		conn.cfg.CAPEM = pem
		conn.caFile = caFile
	}
	return conn, nil
}

// configContext returns the context chosen by --context or, failing that,
// the config file's current one; nil if there is none.
func (a *app) configContext() (*Context, string, error) {
	if a.g.ConfigPath == "" {
		if a.g.Context != "" {
			return nil, "", fmt.Errorf("--context %q: no config file (set --config or FERRY_CONFIG)", a.g.Context)
		}
		return nil, "", nil
	}
	cfg, err := LoadConfig(a.g.ConfigPath)
	if err != nil {
		return nil, "", err
	}
	name := a.g.Context
	if name == "" {
		name = cfg.Current
	}
	if name == "" {
		return nil, "", nil
	}
	ctx, ok := cfg.Contexts[name]
	if !ok {
		return nil, "", fmt.Errorf("context %q is not in %s (contexts: %s)", name, a.g.ConfigPath, contextNames(cfg))
	}
	return &ctx, name, nil
}

// sameServer reports whether two server addresses name the same server.
func sameServer(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimSuffix(strings.TrimSpace(s), "/")
		if !strings.Contains(s, "://") {
			s = "https://" + s
		}
		return strings.ToLower(s)
	}
	return norm(a) == norm(b)
}

// newClient resolves the connection and returns a client for it.
func (a *app) newClient() (*client.Client, *connection, error) {
	conn, err := a.resolve()
	if err != nil {
		return nil, nil, err
	}
	c, err := client.New(conn.cfg)
	if err != nil {
		return nil, nil, err
	}
	return c, conn, nil
}

// messageError replaces the message of an error it wraps, for errors whose
// own message would read badly on a terminal.
type messageError struct {
	msg string
	err error
}

func (e *messageError) Error() string { return e.msg }
func (e *messageError) Unwrap() error { return e.err }

// hintError adds a line of advice to an error's message.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "\n" + e.hint }
func (e *hintError) Unwrap() error { return e.err }

// withHint returns err with a line of advice added to its message.
func withHint(err error, hint string) error { return &hintError{err: err, hint: hint} }

// usageHint is the advice for a mistake on the command line of cmd.
func usageHint(cmd interface{ CommandPath() string }) string {
	return "See '" + cmd.CommandPath() + " --help'."
}

// explain turns the error of an API call about the object kind/name (name
// may be empty) into a message that says what to do about it.
func explain(err error, conn *connection, kind, name string) error {
	if err == nil {
		return nil
	}
	var (
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		opErr   *net.OpError
	)
	switch {
	case client.IsNotFound(err) && name != "":
		return &messageError{msg: fmt.Sprintf("%s %q not found", kind, name), err: err}
	case client.IsUnauthorized(err):
		hint := "--token or FERRY_TOKEN"
		if conn != nil && conn.context != "" {
			hint = fmt.Sprintf("--token, FERRY_TOKEN or the token of context %q", conn.context)
		}
		return withHint(fmt.Errorf("the server rejected the token: %w", err), "Check "+hint+".")
	case errors.As(err, &certErr), errors.As(err, &unknown):
		return withHint(err, "The server's certificate is not trusted: pass --ca-file with the cluster CA certificate.")
	case errors.As(err, &opErr) && opErr.Op == "dial":
		server := ""
		if conn != nil {
			server = " at " + conn.cfg.Server
		}
		return withHint(err, "Is the ferry server running"+server+"?")
	}
	return err
}

// fetch runs one API call with a client for the configured server and the
// command's request timeout, and explains a failure in terms of the object
// it was about (kind and name, "" for a list). call takes the client first
// so that method expressions such as (*client.Client).ListNodes fit.
func fetch[T any](a *app, cmd *cobra.Command, kind, name string, call func(*client.Client, context.Context) (T, error)) (T, error) {
	var zero T
	c, conn, err := a.newClient()
	if err != nil {
		return zero, err
	}
	ctx, cancel := a.requestContext(cmd)
	defer cancel()
	v, err := call(c, ctx)
	if err != nil {
		return zero, explain(err, conn, kind, name)
	}
	return v, nil
}
