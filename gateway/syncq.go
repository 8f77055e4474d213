package gateway

import (
	"container/heap"
	"context"
	"math"
	"sync"
	"time"
)

// syncQueue runs channel syncs (channel.syncStep) on at most max workers:
// after a commit-stream reset every channel followed needs one, up to
// Config.MaxChannels, and the hubs get at most max reads at once from this
// gateway. A channel whose read failed, or found a hub behind, or brought
// nothing new waits out its backoff (with jitter) in the queue, holding no
// worker: a channel whose reads keep failing does not stall the others.
// New channels, whose first subscribers wait for them, go first.
type syncQueue struct {
	s   *Server
	max int

	mu      sync.Mutex
	first   fifo // new channels
	ready   fifo // channels to read now
	later   waitHeap
	workers int
	added   chan struct{} // closed and replaced when a channel is added
}

func newSyncQueue(s *Server, max int) *syncQueue {
	return &syncQueue{s: s, max: max, added: make(chan struct{})}
}

// add queues a channel to sync, in front when it is new; it is called with
// ch.mu held. It reports false when the server is closing.
func (q *syncQueue) add(ch *channel, isNew bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ch.syncWait = newBackoff(20*time.Millisecond, time.Second)
	if isNew {
		q.first.push(ch)
	} else {
		q.ready.push(ch)
	}
	return q.notifyLocked()
}

// notifyLocked starts a worker if fewer than max run, and wakes the
// workers waiting for a backoff to end.
func (q *syncQueue) notifyLocked() bool {
	close(q.added)
	q.added = make(chan struct{})
	if q.workers < q.max {
		if !q.s.spawn(q.work) {
			return false
		}
		q.workers++
	}
	return true
}

// work syncs channels, one read at a time, until none is queued.
func (q *syncQueue) work() {
	ctx := q.s.ctx
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for ctx.Err() == nil {
		ch, wait, added := q.take()
		if ch == nil && wait == 0 {
			return
		}
		if ch == nil {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-added:
				t.Stop()
			case <-ctx.Done():
			}
			continue
		}
		over, slow := ch.syncStep()
		q.put(ch, over, slow)
	}
	q.mu.Lock()
	q.workers--
	q.mu.Unlock()
}

// take returns the next channel to read; or none and how long until one
// is due (0: none queued, and the worker is counted out).
func (q *syncQueue) take() (ch *channel, wait time.Duration, added <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for len(q.later) > 0 && !q.later[0].at.After(now) {
		q.ready.push(heap.Pop(&q.later).(waiting).ch)
	}
	if ch := q.first.pop(); ch != nil {
		return ch, 0, nil
	}
	if ch := q.ready.pop(); ch != nil {
		return ch, 0, nil
	}
	if len(q.later) > 0 {
		return nil, max(q.later[0].at.Sub(now), time.Millisecond), q.added
	}
	q.workers--
	return nil, 0, nil
}

// put queues ch again after a read, unless its sync is over: at the back
// when the read moved it on, after its backoff otherwise.
func (q *syncQueue) put(ch *channel, over, slow bool) {
	if over {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !slow {
		ch.syncWait.reset()
		q.ready.push(ch)
		return
	}
	heap.Push(&q.later, waiting{at: time.Now().Add(ch.syncWait.next()), ch: ch})
}

// syncStep does one read of the channel's sync: its state and missing
// messages from the hubs, until it is contiguous with the lines held from
// the stream, then it goes live. It reports whether the sync is over (live,
// dropped or closing) and, if not, whether the read made no progress (an
// error, a hub behind): the next one then waits.
func (ch *channel) syncStep() (over, slow bool) {
	s := ch.s
	ch.mu.Lock()
	if ch.dropped || s.ctx.Err() != nil {
		ch.syncing = false
		ch.mu.Unlock()
		return true, false
	}
	known, from, need := ch.known, ch.next, ch.syncIdx
	ch.mu.Unlock()
	limit := s.cfg.ReadLimit
	if !known {
		from, limit = math.MaxInt64, 0 // epoch, first and next only
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	res, applied, err := s.hub.Read(ctx, ch.name, from, limit)
	cancel()
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("channel sync: read failed", "channel", ch.name, "err", err)
		}
		return false, true
	}
	if applied < need {
		// This hub is behind what the stream already gave us.
		return false, true
	}
	live, progress := ch.apply(res, applied)
	return live, !progress
}

// fifo is a queue of channels.
type fifo struct {
	items []*channel
	head  int
}

func (f *fifo) push(ch *channel) { f.items = append(f.items, ch) }

func (f *fifo) pop() *channel {
	if f.head == len(f.items) {
		return nil
	}
	ch := f.items[f.head]
	f.items[f.head] = nil
	f.head++
	switch {
	case f.head == len(f.items):
		f.items, f.head = f.items[:0], 0
	case f.head > 1024 && f.head > len(f.items)/2:
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	return ch
}

// waiting is a channel whose sync reads again at a time.
type waiting struct {
	at time.Time
	ch *channel
}

// waitHeap orders waiting channels by time (container/heap).
type waitHeap []waiting

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h waitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *waitHeap) Push(x any)        { *h = append(*h, x.(waiting)) }
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = waiting{}
	*h = old[:len(old)-1]
	return w
}
