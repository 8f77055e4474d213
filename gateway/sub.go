package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/comethq/comet/wire"
)

// sub is one connection's subscription to one channel. It starts by
// replaying what the client missed (from the channel's cache or the hubs)
// while live messages are held in pending, then goes live: the switch
// happens under the channel's lock, so there is no gap and no duplicate.
type sub struct {
	c      *conn
	ch     *channel
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	// Under ch.mu.
	live    bool
	pending []cached
	pbytes  int    // bytes in pending
	lost    bool   // pending overflowed: read further before switching
	last    uint64 // the last offset queued to the client
	min     uint64 // offsets below are never sent (a client ahead of the channel)
}

// replayWait bounds how long a subscription waits for the hubs before the
// connection is closed (the client then retries).
const replayWait = 30 * time.Second

func (c *conn) subscribe(f wire.ClientFrame) {
	c.mu.Lock()
	if _, ok := c.subs[f.Channel]; ok {
		c.mu.Unlock()
		c.sendError(f.ID, wire.CodeBadRequest, fmt.Sprintf("already subscribed to %q: unsubscribe first", f.Channel))
		return
	}
	if len(c.subs) >= c.s.cfg.MaxSubscriptions {
		c.mu.Unlock()
		c.sendError(f.ID, wire.CodeBadRequest, fmt.Sprintf("too many subscriptions: at most %d per connection", c.s.cfg.MaxSubscriptions))
		return
	}
	ch, err := c.s.acquire(f.Channel)
	if err != nil {
		c.mu.Unlock()
		c.sendError(f.ID, wire.CodeUnavailable, err.Error())
		return
	}
	sb := &sub{c: c, ch: ch, name: f.Channel, done: make(chan struct{})}
	c.subs[f.Channel] = sb
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(c.ctx)
	sb.cancel = cancel
	c.s.m.subscriptions.Inc()
	go sb.run(ctx, f)
}

func (c *conn) unsubscribe(f wire.ClientFrame) {
	c.mu.Lock()
	sb := c.subs[f.Channel]
	delete(c.subs, f.Channel)
	c.mu.Unlock()
	if sb != nil {
		sb.stop()
		c.channelEvent(EventUnsubscribed, f.Channel)
	}
	c.send(wire.Unsubscribed{Op: wire.OpUnsubscribed, ID: f.ID, Channel: f.Channel})
}

// stop ends the subscription: after it returns, nothing more of the
// channel is queued for the client.
func (sb *sub) stop() {
	sb.cancel()
	<-sb.done
	sb.ch.mu.Lock()
	delete(sb.ch.subs, sb)
	sb.ch.mu.Unlock()
	sb.c.s.release(sb.ch)
	sb.c.s.m.subscriptions.Dec()
}

// deliver takes live messages of the channel, offsets increasing; ch.mu
// is held. With flush, a connection whose queue was empty is added to it
// rather than its writer woken: the caller flushes it (conn.flush).
func (sb *sub) deliver(offs []uint64, frames [][]byte, flush *[]*conn) {
	if !sb.live {
		for i, off := range offs {
			frame := frames[i]
			switch {
			case sb.lost:
				return
			case len(sb.pending) >= sb.c.s.cfg.PendingMessages || sb.pbytes+len(frame) > sb.c.s.cfg.QueueBytes/4:
				sb.pending, sb.pbytes, sb.lost = nil, 0, true
			default:
				sb.pending = append(sb.pending, cached{off: off, frame: frame})
				sb.pbytes += len(frame)
			}
		}
		return
	}
	i := 0
	for i < len(offs) && (offs[i] <= sb.last || offs[i] < sb.min) {
		i++
	}
	if i == len(offs) {
		return
	}
	sb.last = offs[len(offs)-1]
	ok, first := sb.c.put(frames[i:])
	if ok {
		sb.c.s.delivered.Add(uint64(len(frames) - i))
	}
	switch {
	case !first:
	case flush != nil:
		*flush = append(*flush, sb.c)
	default:
		sb.c.wakeWriter()
	}
}

func (sb *sub) run(ctx context.Context, f wire.ClientFrame) {
	defer close(sb.done)
	c, ch := sb.c, sb.ch
	wait := time.NewTimer(replayWait)
	select {
	case <-ch.ready:
		wait.Stop()
	case <-ctx.Done():
		wait.Stop()
		return
	case <-wait.C:
		c.close(wire.CloseUnavailable, "hubs unreachable: cannot subscribe to "+sb.name)
		return
	}

	ch.mu.Lock()
	n0, epoch := ch.next, ch.epoch
	answer := wire.Subscribed{Op: wire.OpSubscribed, ID: f.ID, Channel: sb.name, Epoch: epoch,
		Recovered: true, First: ch.first, Next: n0}
	ch.subs[sb] = struct{}{}
	rewind := f.From == nil && f.Last != nil && *f.Last > 0
	if f.From == nil && !rewind {
		// Live only: switch now, in the same critical section.
		sb.live, sb.last, sb.min = true, n0-1, n0
		c.send(answer)
		ch.mu.Unlock()
		c.channelEvent(EventSubscribed, sb.name)
		return
	}
	inCache := ch.cache.first()
	ch.mu.Unlock()

	var from uint64
	switch {
	case rewind:
		// The newest Last messages: a position the client did not hold, so
		// nothing it is told of was lost (recovered stays true).
		from = n0 - min(*f.Last, n0-1)
	case f.Epoch != "" && f.Epoch != epoch:
		answer.Recovered = false
		from = 1
	default:
		from = max(*f.From, 1)
	}
	var page *Page
	if from < n0 && (inCache == 0 || from < inCache) {
		// Not all in memory: the hubs' first page says what they still hold.
		p, ok := sb.read(ctx, from, n0, epoch)
		if !ok {
			return
		}
		if p.First > from {
			answer.Recovered = rewind // a rewind asked for at most Last
			from = p.First
		}
		answer.First = p.First
		page = &p
	}
	if from > n0 {
		sb.min = from // ahead of the channel: nothing before from is sent
	}
	if answer.First > from {
		// Served from the cache, which still holds what the hubs trimmed.
		answer.First = from
	}
	c.send(answer)
	c.channelEvent(EventSubscribed, sb.name)

	pos := from
	for {
		for pos < n0 {
			frames, ok := sb.replayPage(ctx, &page, pos, n0, epoch)
			if !ok || !c.enqueueWait(ctx, frames) {
				return
			}
			c.s.delivered.Add(uint64(len(frames)))
			pos += uint64(len(frames))
		}
		ch.mu.Lock()
		if sb.lost {
			// Live messages came faster than the replay: read on to where
			// the channel is now, and try again.
			sb.pending, sb.pbytes, sb.lost = nil, 0, false
			n0 = ch.next
			ch.mu.Unlock()
			continue
		}
		for _, p := range sb.pending {
			if p.off >= pos && p.off >= sb.min {
				if c.enqueue(p.frame) {
					c.s.delivered.Add(1)
				}
				pos = p.off + 1
			}
		}
		sb.pending, sb.pbytes, sb.live, sb.last = nil, 0, true, pos-1
		ch.mu.Unlock()
		return
	}
}

// replayPage returns the next frames of the replay, from offset pos (< to):
// from the hubs' page already read, the channel's cache, or a new read.
func (sb *sub) replayPage(ctx context.Context, page **Page, pos, to uint64, epoch string) ([][]byte, bool) {
	m := sb.c.s.m
	if p := *page; p != nil {
		*page = nil
		if frames := p.frames(pos, to); len(frames) > 0 {
			sb.warm(pos, frames, epoch)
			m.replayed.WithLabelValues("hub").Add(float64(len(frames)))
			return frames, true
		}
	}
	sb.ch.mu.Lock()
	frames, ok := sb.ch.cache.get(pos, to, 1024)
	sb.ch.mu.Unlock()
	if ok && len(frames) > 0 {
		m.replayed.WithLabelValues("cache").Add(float64(len(frames)))
		return frames, true
	}
	p, ok := sb.read(ctx, pos, to, epoch)
	if !ok {
		return nil, false
	}
	frames = p.frames(pos, to)
	sb.warm(pos, frames, epoch)
	if len(frames) == 0 {
		// Retention removed them between reads.
		sb.c.close(wire.CloseResync, "channel "+sb.name+" lost messages during the replay: resubscribe")
		return nil, false
	}
	m.replayed.WithLabelValues("hub").Add(float64(len(frames)))
	return frames, true
}

// warm offers frames read from the hubs to the channel's cache.
func (sb *sub) warm(pos uint64, frames [][]byte, epoch string) {
	sb.ch.mu.Lock()
	if sb.ch.epoch == epoch {
		sb.ch.cache.prepend(pos, frames, sb.ch.next)
	}
	sb.ch.mu.Unlock()
}

// read reads the channel from offset from on a hub that holds messages up
// to to-1, retrying for a while; on failure it closes the connection (the
// client reconnects and tries again) and reports false.
func (sb *sub) read(ctx context.Context, from, to uint64, epoch string) (Page, bool) {
	s := sb.c.s
	deadline := time.Now().Add(replayWait)
	backoff := newBackoff(20*time.Millisecond, time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, _, err := s.hub.Read(rctx, sb.name, from, s.cfg.ReadLimit)
		cancel()
		switch {
		case ctx.Err() != nil:
			return res, false
		case err == nil && res.Epoch != epoch:
			sb.c.close(wire.CloseResync, "channel "+sb.name+" was reset: resubscribe")
			return res, false
		case err == nil && res.Next >= to:
			return res, true
		}
		// An error, or a hub behind the commit stream: retry.
		if time.Now().After(deadline) {
			s.log.Warn("replay: hubs unavailable", "channel", sb.name, "err", err)
			sb.c.close(wire.CloseUnavailable, "hubs unreachable: cannot replay "+sb.name)
			return res, false
		}
		backoff.wait(ctx)
	}
}
