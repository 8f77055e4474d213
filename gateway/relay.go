package gateway

import (
	"runtime"
	"sync"
)

// relay wakes the writers of a fan-out a few at a time. Waking all of
// them at once (10,000 for one message to 10,000 subscribers) puts
// thousands of goroutines in the Go scheduler's run queues, and every
// goroutine readied meanwhile by the network poller or a returning system
// call (the next publish arriving, the hub's fsync returning, the commit
// stream) joins the global queue behind them: the next message waited for
// the whole fan-out before it could even be committed. Instead the fan-out
// appends the connections to wake to a FIFO list, and at most max tokens
// circulate: a writer holding one, once woken, passes it to the next
// connection in the list before it writes (pass), so that max writers are
// runnable at a time, in fan-out order, and the run queues stay short.
//
// A connection's order is untouched (its writer still takes its whole
// queue under qmu). Every connection in the list is woken: a token is
// passed on by each writer woken with it, or, when its writer has ended,
// by gone; a token given to a writer that is awake already is seen after
// its next wake-up (wake has room for one, and it is sent after the
// token is set). Other wake-ups (replies, replays, pings, close) are
// direct.
type relay struct {
	mu     sync.Mutex
	list   []*conn // list[head:] waits for a token, in fan-out order
	head   int
	active int // tokens out
	max    int
}

func newRelay() *relay { return &relay{max: 2 * runtime.GOMAXPROCS(0)} }

// wake queues connections whose writers need a wake-up and starts as many
// as there are free tokens.
func (r *relay) wake(cs []*conn) {
	if len(cs) == 0 {
		return
	}
	var start []*conn
	r.mu.Lock()
	r.list = append(r.list, cs...)
	for r.active < r.max {
		c := r.popLocked()
		if c == nil {
			break
		}
		c.relayToken.Store(true)
		r.active++
		start = append(start, c)
	}
	r.mu.Unlock()
	for _, c := range start {
		c.wakeWriter()
	}
}

// pass is called by c's writer after each wake-up: if it holds a token,
// the token goes to the next connection waiting, or back.
func (r *relay) pass(c *conn) {
	if !c.relayToken.Swap(false) {
		return
	}
	r.mu.Lock()
	next := r.popLocked()
	if next != nil {
		next.relayToken.Store(true)
	} else {
		r.active--
	}
	r.mu.Unlock()
	if next != nil {
		next.wakeWriter()
	}
}

// gone is called when c's writer ends: c is skipped from now on, and a
// token it holds is passed on.
func (r *relay) gone(c *conn) {
	r.mu.Lock()
	c.relayGone = true
	r.mu.Unlock()
	r.pass(c)
}

// popLocked returns the next connection waiting whose writer runs and
// holds no token (one that holds one will take its queue anyway), or nil.
func (r *relay) popLocked() *conn {
	for r.head < len(r.list) {
		c := r.list[r.head]
		r.list[r.head] = nil
		r.head++
		if !c.relayGone && !c.relayToken.Load() {
			return c
		}
	}
	r.list, r.head = r.list[:0], 0
	return nil
}
