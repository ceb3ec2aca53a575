package e2e

import (
	"context"
	"sort"
	"sync"
	"time"
)

// poll is one request of the client's poller: when it was sent, and when
// its answer came (or it failed).
type poll struct {
	sent time.Time
	at   time.Time // when the answer (or the failure) came
	ok   bool
	ans  DemoAnswer
}

// poller is a client asking a demo guest's HTTP service at a fixed period,
// recording every answer and every miss: what a customer saw during a
// failover or a migration.
//
// A request goes out every period while fewer than pollInFlight are
// unanswered: a client that waited for each one would ask only once per
// timeout during an outage and measure it in steps of that timeout, and
// one that never waited would load a guest that is slow (booting, short
// of CPU) with ever more requests (each a fork and a shell in the demo
// guest) until none is answered in time. A request gives up after the
// poller's timeout if no connection is made (the guest is not reachable),
// and waits up to pollAnswerTimeout for the answer of a guest that
// accepted it: a late answer still counts, when it comes.
type poller struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
	mu   sync.Mutex
	log  []poll // in the order the answers came
}

// pollInFlight bounds the poller's unanswered requests; pollAnswerTimeout
// is how long a request that got a connection waits for its answer.
const (
	pollInFlight      = 2
	pollAnswerTimeout = 2 * time.Second
)

// startPoller polls ip every period, each request given timeout to
// connect, until end; it returns once the first answer came (or fails
// after 5 s).
func (c *Cluster) startPoller(ctx context.Context, ip string, period, timeout time.Duration) (*poller, error) {
	pctx, stop := context.WithCancel(ctx)
	p := &poller{stop: stop}
	slots := make(chan struct{}, pollInFlight)
	p.wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for pctx.Err() == nil {
			select {
			case slots <- struct{}{}:
				sent := time.Now()
				p.wg.Go(func() {
					defer func() { <-slots }()
					ans, err := c.getDial(pctx, ip, max(timeout, pollAnswerTimeout), timeout)
					if pctx.Err() != nil {
						return // cut short by end: neither an answer nor a miss
					}
					p.mu.Lock()
					p.log = append(p.log, poll{sent: sent, at: time.Now(), ok: err == nil, ans: ans})
					p.mu.Unlock()
				})
			default: // as many unanswered as allowed: skip this tick
			}
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

// first returns the first answer to a request sent at or after since that
// match accepts.
func (p *poller) first(since time.Time, accept func(poll) bool) (poll, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.log {
		if q.ok && !q.sent.Before(since) && accept(q) {
			return q, true
		}
	}
	return poll{}, false
}

// gaps is longestGap over the poller's log.
func (p *poller) gaps(since time.Time) gapStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return longestGap(p.log, since)
}

// gapStats is what a client saw from some moment on.
type gapStats struct {
	Longest time.Duration // the longest time without an answer
	From    time.Time     // when that gap began
	Answers int
	Last    DemoAnswer // the latest answer
}

// longestGap returns, over the answers that came from since on, the
// longest time between two answers (the first counted from since): the
// time the customer went without one.
func longestGap(log []poll, since time.Time) gapStats {
	var ok []poll
	for _, q := range log {
		if q.ok && !q.at.Before(since) {
			ok = append(ok, q)
		}
	}
	sort.SliceStable(ok, func(i, j int) bool { return ok[i].at.Before(ok[j].at) })
	s := gapStats{From: since, Answers: len(ok)}
	prev := since
	for _, q := range ok {
		if gap := q.at.Sub(prev); gap > s.Longest {
			s.Longest, s.From = gap, prev
		}
		prev, s.Last = q.at, q.ans
	}
	return s
}
