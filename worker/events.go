package worker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/hubapi"
)

// errReset ends the reading of a stream to open it again elsewhere: its
// position is gone, or the worker closes.
var errReset = errors.New("commit stream reset")

// Event types (Event.Type).
const (
	// EventMessage is a message committed to a channel.
	EventMessage = "message"
	// EventLost says that committed messages were missed: the hubs no
	// longer held the worker's position in the commit stream (a hub
	// restart, or the worker fell too far behind). Index is where it
	// continues; read the channels that matter with range reads to fill
	// the gap.
	EventLost = "lost"
	// Connection events, reported by the gateways.
	EventConnected    = bus.EventConnected
	EventDisconnected = bus.EventDisconnected
	EventSubscribed   = bus.EventSubscribed
	EventUnsubscribed = bus.EventUnsubscribed
	// EventDropped says that Count connection events were dropped here,
	// because the worker did not take them fast enough.
	EventDropped = "dropped"
)

// Event is what Events delivers.
type Event struct {
	Type string
	// Channel, Offset, Epoch, Data and Time describe a message; Channel
	// is also the channel of a subscribed or unsubscribed event.
	Channel string
	Offset  uint64
	Epoch   string
	Data    json.RawMessage
	Time    time.Time
	// Index is a message's position in the commit stream (its Raft
	// entry), and for EventLost the position the stream continues from.
	Index uint64
	// Connection and User name the connection of a connection event (User
	// "" when anonymous).
	Connection string
	User       string
	// Count is the number of events an EventDropped stands for.
	Count uint64
}

// Events returns the channel of events; the first call turns them on. From
// then on it carries every message committed to any channel (following
// the hubs' commit stream) and every connection event the gateways report.
// Messages are never dropped: when the channel is full the stream waits,
// and the hubs keep the recent past (see EventLost for when they cannot).
// Connection events are never waited for: past Config.EventBuffer of them
// waiting, they are dropped and an EventDropped says how many. Messages and
// connection events are not ordered with respect to each other. The
// channel is closed by Close.
func (w *Worker) Events() <-chan Event {
	w.eventsOnce.Do(func() {
		// "From now": the position of a hub now. Messages committed before
		// this call have lower positions; a hub's applied index is at most
		// the commit index, so nothing committed from now on is missed.
		// Without an answer, the stream starts wherever it first opens.
		var from uint64
		if w.hubs != nil {
			ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
			from, _ = w.hubs.Applied(ctx)
			cancel()
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.closed {
			return
		}
		w.eventsOn, w.eventsFrom = true, from
		if w.sess != nil {
			w.sess.signalUpdate()
		}
		if w.started {
			w.startEventsLocked()
		}
	})
	return w.events
}

func (w *Worker) startEventsLocked() {
	from := w.eventsFrom
	if from > 0 {
		from++
	}
	if w.hubs != nil {
		w.wg.Go(func() { w.follow(from) })
	} else {
		w.log.Warn("no Config.Hubs: Events gets connection events only, no channel messages")
	}
	w.wg.Go(w.pump)
}

// emit delivers an event, waiting for room; false when the worker closes.
func (w *Worker) emit(ev Event) bool {
	select {
	case w.events <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// follow follows the commit stream from position from (0: from now) until
// Close, moving to another hub when one fails and resuming where it was.
func (w *Worker) follow(from uint64) {
	pos := streamPos{next: from}
	b := bus.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for w.ctx.Err() == nil {
		st, err := w.hubs.Stream(w.ctx, pos.next)
		if err != nil {
			if w.ctx.Err() == nil {
				w.log.Warn("cannot open the commit stream", "err", err)
				b.Wait(w.ctx)
			}
			continue
		}
		err = w.read(st, &pos)
		st.Close()
		if w.ctx.Err() != nil {
			return
		}
		if err == errReset {
			b.Reset()
			continue
		}
		w.log.Warn("commit stream ended; moving on", "hub", st.Hub(), "err", err)
		w.hubs.Failed(st.Hub())
		b.Wait(w.ctx)
	}
}

// streamPos is a position in the commit stream: next is the entry to ask
// for, seen the messages of entry next already delivered (an entry may be
// cut in the middle when a hub fails; it is asked for again, and the
// messages delivered are skipped: every hub streams an entry's messages in
// the same order).
type streamPos struct {
	next uint64
	seen int
}

// read delivers the lines of one stream until it fails.
func (w *Worker) read(st *hubapi.Stream, pos *streamPos) error {
	skip := pos.seen // messages of entry pos.next to skip on this stream
	for {
		line, err := st.Next()
		if err != nil {
			return err
		}
		switch {
		case line.Reset:
			w.log.Warn("commit stream position lost", "from", pos.next, "floor", line.Floor)
			pos.next, pos.seen = line.Floor, 0
			w.emit(Event{Type: EventLost, Index: line.Floor})
			return errReset
		case line.Index == 0: // heartbeat: every entry up to Applied was streamed
			if line.Applied >= pos.next {
				pos.next, pos.seen, skip = line.Applied+1, 0, 0
			}
		case line.Index < pos.next:
			// Before the position: already delivered.
		default:
			if line.Index > pos.next {
				pos.next, pos.seen, skip = line.Index, 0, 0
			}
			if skip > 0 {
				skip--
				continue
			}
			ev := Event{Type: EventMessage, Channel: line.Channel, Offset: line.Offset, Epoch: line.Epoch,
				Data: line.Data, Index: line.Index}
			if line.Time != nil {
				ev.Time = *line.Time
			}
			if !w.emit(ev) {
				return errReset
			}
			pos.seen++
		}
	}
}

// connEvents holds the connection events on their way to Events: the
// session reader pushes without waiting, and pump delivers.
type connEvents struct {
	max  int
	wake chan struct{}

	mu    sync.Mutex
	queue []queuedEvent
	drops uint64 // dropped after the last queued event
}

type queuedEvent struct {
	ev    Event
	drops uint64 // dropped just before ev
}

func newConnEvents(max int) *connEvents {
	return &connEvents{max: max, wake: make(chan struct{}, 1)}
}

func (c *connEvents) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// push queues ev, or drops and counts it when max are waiting.
func (c *connEvents) push(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) >= c.max {
		c.drops++
		return
	}
	c.queue = append(c.queue, queuedEvent{ev: ev, drops: c.drops})
	c.drops = 0
	c.signal()
}

// drop counts n events dropped before they got here (by the router).
func (c *connEvents) drop(n uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drops += n
	c.signal()
}

func (c *connEvents) take() ([]queuedEvent, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, d := c.queue, c.drops
	c.queue, c.drops = nil, 0
	return q, d
}

// pump delivers connection events, and EventDropped where some were
// dropped, until Close.
func (w *Worker) pump() {
	for {
		select {
		case <-w.conns.wake:
		case <-w.ctx.Done():
			return
		}
		q, drops := w.conns.take()
		for _, e := range q {
			if e.drops > 0 && !w.emit(Event{Type: EventDropped, Count: e.drops}) {
				return
			}
			if !w.emit(e.ev) {
				return
			}
		}
		if drops > 0 && !w.emit(Event{Type: EventDropped, Count: drops}) {
			return
		}
	}
}
