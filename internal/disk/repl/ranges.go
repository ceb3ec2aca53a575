package repl

import "sync"

// rangeTracker orders requests on overlapping byte ranges. A request
// registers with begin, which returns what it must wait for: every
// registered request whose range overlaps its own. It calls end when it is
// done, which releases the requests waiting for it. So of two overlapping
// requests, the one registered second takes effect second, while requests
// on disjoint ranges run concurrently.
//
// The number of registered requests is bounded by the caller's concurrency
// (a few dozen), so a list scanned under a mutex is enough.
type rangeTracker struct {
	mu  sync.Mutex
	ops []*rangeOp
}

// rangeOp is one registered request.
type rangeOp struct {
	off, end int64
	// done is made when a later request has to wait for this one, and
	// closed by end.
	done chan struct{}
}

// begin registers a request on [off, off+length) and returns the channels
// to receive from before it may take effect.
func (t *rangeTracker) begin(off, length int64) (*rangeOp, []chan struct{}) {
	op := &rangeOp{off: off, end: off + max(length, 1)}
	t.mu.Lock()
	defer t.mu.Unlock()
	var waits []chan struct{}
	for _, o := range t.ops {
		if o.off < op.end && op.off < o.end {
			if o.done == nil {
				o.done = make(chan struct{})
			}
			waits = append(waits, o.done)
		}
	}
	t.ops = append(t.ops, op)
	return op, waits
}

// barrier returns the channels to receive from before every request
// registered so far has ended. It registers nothing: later requests do not
// wait for the barrier.
func (t *rangeTracker) barrier() []chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	waits := make([]chan struct{}, 0, len(t.ops))
	for _, o := range t.ops {
		if o.done == nil {
			o.done = make(chan struct{})
		}
		waits = append(waits, o.done)
	}
	return waits
}

// end unregisters op and releases the requests waiting for it.
func (t *rangeTracker) end(op *rangeOp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, o := range t.ops {
		if o == op {
			last := len(t.ops) - 1
			t.ops[i] = t.ops[last]
			t.ops[last] = nil
			t.ops = t.ops[:last]
			break
		}
	}
	if op.done != nil {
		close(op.done)
	}
}

// waitAll receives from every channel in waits.
func waitAll(waits []chan struct{}) {
	for _, c := range waits {
		<-c
	}
}
