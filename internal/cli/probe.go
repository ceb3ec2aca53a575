package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
)

// probeSyntax is how --probe is written, for error messages.
const probeSyntax = "tcp:PORT[,PORT...] or http:PORT[,PORT...][/PATH], e.g. tcp:22,80 or http:80/healthz"

// parseProbe parses the value of --probe: "tcp:22,80" (a connect to any
// port succeeds) or "http:80/healthz" (GET answers 2xx or 3xx; the path
// defaults to "/"). Errors name --probe and say what is allowed.
func parseProbe(s string) (*api.Probe, error) {
	typ, rest, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || typ == "" {
		return nil, fmt.Errorf("--probe: %q is not a probe: use %s", s, probeSyntax)
	}
	p := &api.Probe{Type: typ}
	switch typ {
	case "tcp":
		if strings.Contains(rest, "/") {
			return nil, fmt.Errorf("--probe: a tcp probe has no path, got %q; did you mean http:%s?", s, rest)
		}
	case "http":
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest, p.Path = rest[:i], rest[i:]
		}
	default:
		return nil, fmt.Errorf("--probe: unknown probe type %q: use %s", typ, probeSyntax)
	}
	if rest == "" {
		return nil, fmt.Errorf("--probe: %q gives no port: use %s", s, probeSyntax)
	}
	for _, f := range strings.Split(rest, ",") {
		port, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("--probe: %q is not a TCP port (1-65535)", f)
		}
		p.Ports = append(p.Ports, port)
	}
	if err := p.Validate(); err != nil {
		var fe *api.FieldError
		if errors.As(err, &fe) {
			return nil, &flagError{flag: "--probe", msg: fe.Message, err: err}
		}
		return nil, fmt.Errorf("--probe: %w", err)
	}
	return p, nil
}

// formatProbe writes a probe the way --probe takes it.
func formatProbe(p api.Probe) string {
	ports := make([]string, len(p.Ports))
	for i, port := range p.Ports {
		ports[i] = strconv.Itoa(port)
	}
	return p.Type + ":" + strings.Join(ports, ",") + p.Path
}
