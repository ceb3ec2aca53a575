package e2e

import (
	"context"
	"sync"
	"time"
)

// poll is one answer (or not) of the client's poller.
type poll struct {
	at  time.Time
	ok  bool
	ans DemoAnswer
}

// poller is a client asking a demo guest's HTTP service at a fixed period,
// recording every answer and every miss: what a customer saw during a
// failover or a migration.
type poller struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
	mu   sync.Mutex
	log  []poll
}

// startPoller polls ip every period, each request given timeout, until
// end; it returns once the first answer came (or fails after 5 s).
func (c *Cluster) startPoller(ctx context.Context, ip string, period, timeout time.Duration) (*poller, error) {
	pctx, stop := context.WithCancel(ctx)
	p := &poller{stop: stop}
	p.wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for pctx.Err() == nil {
			at := time.Now()
			ans, err := c.GetWithin(pctx, ip, timeout)
			p.mu.Lock()
			p.log = append(p.log, poll{at: at, ok: err == nil, ans: ans})
			p.mu.Unlock()
			select {
			case <-pctx.Done():
			case <-t.C:
			}
		}
	})
	err := c.Wait(ctx, 5*time.Second, "the poller's first answer", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.log) > 0 && p.log[len(p.log)-1].ok
	})
	if err != nil {
		p.end()
		return nil, err
	}
	return p, nil
}

// end stops polling; it may be called more than once.
func (p *poller) end() {
	p.stop()
	p.wg.Wait()
}

// first returns the first answer at or after since that match accepts.
func (p *poller) first(since time.Time, accept func(poll) bool) (poll, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.log {
		if q.ok && !q.at.Before(since) && accept(q) {
			return q, true
		}
	}
	return poll{}, false
}

// gaps returns, over the answers from since on, the longest time between
// two answers (counted from since), how many answers came, and the last.
func (p *poller) gaps(since time.Time) (longest time.Duration, answers int, last DemoAnswer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := since
	for _, q := range p.log {
		if q.at.Before(since) || !q.ok {
			continue
		}
		answers++
		if gap := q.at.Sub(prev); gap > longest {
			longest = gap
		}
		prev, last = q.at, q.ans
	}
	return longest, answers, last
}
