package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// dialTimeout bounds connecting to a QMP socket; connecting to a listening
// unix socket is immediate, so this only matters for a wedged QEMU.
const dialTimeout = 2 * time.Second

// monitor is one QMP connection to one QEMU process.
//
// qmp.SocketMonitor has no deadlines: its handshake and commands block until
// QEMU answers. monitor runs them in goroutines and, when ctx ends first,
// disconnects, which makes a pending command return; a handshake that never
// completes (QEMU serves one QMP client at a time) leaves one goroutine
// waiting until QEMU closes the socket or exits.
type monitor struct {
	sm *qmp.SocketMonitor
	// done is closed when the event stream ends: QEMU closed the
	// connection (it exits), or close was called.
	done      chan struct{}
	closeOnce sync.Once
}

// dialMonitor connects to the QMP socket at path, completes the handshake
// and calls onEvent, from one goroutine, for every event until the
// connection ends. onEvent must not block on anything that may be waiting
// for the monitor to close.
func dialMonitor(ctx context.Context, path string, onEvent func(qmp.Event)) (*monitor, error) {
	timeout := dialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	sm, err := qmp.NewSocketMonitor("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	connected := make(chan error, 1)
	go func() { connected <- sm.Connect() }()
	select {
	case err := <-connected:
		if err != nil {
			_ = sm.Disconnect()
			return nil, fmt.Errorf("qmp handshake: %w", err)
		}
	case <-ctx.Done():
		go func() {
			<-connected
			_ = sm.Disconnect()
		}()
		return nil, fmt.Errorf("qmp handshake: %w", ctx.Err())
	}
	// SocketMonitor.Events never fails; it must be drained until closed,
	// or the connection's reader blocks.
	events, err := sm.Events(context.Background())
	if err != nil {
		_ = sm.Disconnect()
		return nil, fmt.Errorf("qmp events: %w", err)
	}
	m := &monitor{sm: sm, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for e := range events {
			onEvent(e)
		}
	}()
	return m, nil
}

// closed reports whether the connection has ended.
func (m *monitor) closed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// close ends the connection; QEMU keeps running. It is safe to call more
// than once and from several goroutines.
func (m *monitor) close() {
	m.closeOnce.Do(func() { _ = m.sm.Disconnect() })
}

// execute runs the QMP command cmd with args (nil for none) and decodes its
// "return" value into out, unless out is nil. If ctx ends first, it closes
// the monitor, so a later command must dial again.
func (m *monitor) execute(ctx context.Context, cmd string, args, out any) error {
	req, err := json.Marshal(qmp.Command{Execute: cmd, Args: args})
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	type result struct {
		raw []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		raw, err := m.sm.Run(req)
		ch <- result{raw, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		m.close()
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, r.err)
	}
	if out == nil {
		return nil
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.raw, &resp); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
	}
	if err := json.Unmarshal(resp.Return, out); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
	}
	return nil
}
