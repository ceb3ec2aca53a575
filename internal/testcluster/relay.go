package testcluster

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Relay is a TCP relay that delays everything it forwards, in both
// directions, by a latency with jitter: how tests put a slow, jittery path
// between a host and the server (this kernel has no netem qdisc). Order is
// kept: a chunk is never delivered before the one read before it.
type Relay struct {
	ln     net.Listener
	target string
	delay  time.Duration
	jitter time.Duration
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartRelay listens on listen (host:port, port 0 for any) and forwards
// each connection to target, delaying each chunk by delay ± jitter.
func StartRelay(listen, target string, delay, jitter time.Duration) (*Relay, error) {
	if jitter > delay {
		return nil, fmt.Errorf("testcluster: relay jitter %s exceeds its delay %s", jitter, delay)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("testcluster: relay: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{ln: ln, target: target, delay: delay, jitter: jitter, ctx: ctx, cancel: cancel}
	r.wg.Go(r.accept)
	return r, nil
}

// Addr is where the relay listens.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Close stops the relay and cuts its connections.
func (r *Relay) Close() error {
	r.cancel()
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Go(func() { r.serve(c) })
	}
}

func (r *Relay) serve(client net.Conn) {
	defer client.Close()
	d := net.Dialer{Timeout: 5 * time.Second}
	server, err := d.DialContext(r.ctx, "tcp", r.target)
	if err != nil {
		return
	}
	defer server.Close()
	stop := context.AfterFunc(r.ctx, func() { client.Close(); server.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { r.pipe(server, client); server.Close() })
	wg.Go(func() { r.pipe(client, server); client.Close() })
	wg.Wait()
}

// chunk is data to deliver at a time.
type chunk struct {
	data []byte
	at   time.Time
}

// pipe copies src to dst, each chunk delayed.
func (r *Relay) pipe(dst io.Writer, src io.Reader) {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		var last time.Time
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				at := time.Now().Add(r.delay + r.jitterNow())
				if at.Before(last) {
					at = last // keep the order
				}
				last = at
				select {
				case ch <- chunk{buf[:n], at}:
				case <-r.ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if wait := time.Until(c.at); wait > 0 {
			select {
			case <-time.After(wait):
			case <-r.ctx.Done():
				return
			}
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

func (r *Relay) jitterNow() time.Duration {
	if r.jitter == 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(2*r.jitter))) - r.jitter
}
