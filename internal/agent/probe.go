package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// probeInterval is how often a running instance is probed. The SLA ledger
// counts downtime from these transitions, so they are timed when observed.
const probeInterval = time.Second

// startProbe starts the health prober of a VM that just started. An
// instance without an address (no NIC, or the fake driver) has no prober:
// it serves as long as its VM runs, which is all the agent can see of it,
// and the Running report says so.
func (w *worker) startProbe(inst *api.Instance) {
	w.stopProbe()
	if inst.Spec.IP == "" {
		return
	}
	ctx, cancel := context.WithCancel(w.a.runCtx)
	w.stopProbing = cancel
	probe := api.DefaultProbe()
	if inst.Spec.Probe != nil {
		probe = *inst.Spec.Probe
	}
	ip := inst.Spec.IP
	go func() {
		tick := time.NewTicker(probeInterval)
		defer tick.Stop()
		var last *bool
		for {
			ok := runProbe(ctx, probe, ip)
			if ctx.Err() != nil {
				return
			}
			if last == nil || *last != ok {
				last = &ok
				w.setServing(ok, time.Now())
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// stopProbe ends the prober; the exit or stop report carries NotServing.
func (w *worker) stopProbe() {
	if w.stopProbing != nil {
		w.stopProbing()
		w.stopProbing = nil
	}
}

// setServing records a verdict for the worker to report, and wakes it.
func (w *worker) setServing(ok bool, at time.Time) {
	w.a.mu.Lock()
	w.serving, w.servingAt = &ok, at.UTC()
	w.a.mu.Unlock()
	w.poke()
}

// runProbe tries each port once with a short timeout.
func runProbe(ctx context.Context, p api.Probe, ip string) bool {
	for _, port := range p.Ports {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		pctx, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
		ok := false
		switch p.Type {
		case "http":
			path := p.Path
			if path == "" {
				path = "/"
			}
			ok = httpProbe(pctx, fmt.Sprintf("http://%s%s", addr, path))
		default:
			var d net.Dialer
			if c, err := d.DialContext(pctx, "tcp", addr); err == nil {
				c.Close()
				ok = true
			}
		}
		cancel()
		if ok {
			return true
		}
	}
	return false
}

func httpProbe(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	// A fresh transport per probe: no pooled connection may hide a guest
	// that stopped answering new ones.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}
