package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/wire"
)

// conn is one client connection, whatever its transport. Its reader
// goroutine runs the protocol; its writer goroutine drains a bounded queue
// of encoded server objects, several per frame.
type conn struct {
	s   *Server
	id  string
	t   transport
	ctx context.Context
	// cancel ends ctx: subscriptions' replays and publishes stop.
	cancel context.CancelFunc

	// Under qmu: what the writer has to do. The writer waits on wake
	// alone (cap 1), which every change below sends to: a queue that was
	// empty, a ping due, the connection closing.
	qmu     sync.Mutex
	queue   [][]byte
	qbytes  int
	dead    bool    // no more enqueues; the writer sends what is queued and ends
	pingDue bool    // set by pingTimer
	pong    *string // a WebSocket ping's data, to answer (pongSoon)
	wake    chan struct{}
	// space is nil, or made by a replay waiting for room (enqueueWait):
	// the writer closes it, and forgets it, when it takes the queue.
	space     chan struct{}
	closeCode int
	closeWhy  string
	closing   chan struct{} // closed by close()
	closed    chan struct{} // closed when the writer has ended
	pingTimer *time.Timer   // the writer's: it sets pingDue every PingInterval
	// writing is when the frame being written started (Server.now), 0
	// between writes: Server.watchWrites drops a connection whose write
	// has waited longer than WriteTimeout.
	writing atomic.Int64
	// wmu is held by the writer for a whole turn (taking the queue and
	// writing it) and by flush, so that what one took goes out before
	// anything queued after it. direct is the transport when flush may
	// write to its socket (nil: flush wakes the writer).
	wmu    sync.Mutex
	direct directWriter

	mu   sync.Mutex
	subs map[string]*sub
	// admitted: the connected frame was sent, as ident (auth.go).
	admitted    bool
	ident       auth.Identity
	info        json.RawMessage // from the connect frame, for presence
	expiry      uint64          // admissions so far: an expiry timer is for one of them
	expireTimer *time.Timer

	pubs chan struct{} // semaphore of publishes in flight
	reqs chan struct{} // semaphore of requests (and history reads) in flight

	amu   sync.Mutex
	acked map[string]ackedOffset // by channel: see noteAck
}

func (s *Server) newConn(t transport) *conn {
	s.watchOnce.Do(func() { s.spawn(s.watchWrites) })
	c := &conn{
		s: s, id: s.newConnID(), t: t,
		reqs:    make(chan struct{}, s.cfg.MaxRequestsInFlight),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}), closed: make(chan struct{}),
		subs: make(map[string]*sub),
		pubs: make(chan struct{}, s.cfg.MaxPublishesInFlight),
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	return c
}

// serve runs the connection until it ends. token is the one given in the
// URL, if any.
func (c *conn) serve(token string) {
	s := c.s
	if !s.addConn(c) {
		c.t.closeWith(wire.CloseShutdown, "gateway shutting down: reconnect elsewhere")
		return
	}
	s.m.connections.WithLabelValues(c.t.name()).Inc()
	defer s.m.connections.WithLabelValues(c.t.name()).Dec()
	go c.writeLoop()
	switch {
	case token != "":
		c.connect(wire.ClientFrame{Op: wire.OpConnect, Token: token})
	case s.cfg.AllowAnonymous:
		c.admit(auth.Identity{}, "")
	default:
		// Wait for a connect frame (readLoop), for a while.
		t := time.AfterFunc(s.cfg.AuthTimeout, func() {
			c.mu.Lock()
			admitted := c.admitted
			c.mu.Unlock()
			if !admitted {
				c.s.m.authFailures.WithLabelValues("missing").Inc()
				c.refuse("", msgTokenRequired)
			}
		})
		defer t.Stop()
	}
	c.readLoop()
	c.close(0, "")
	c.cancel()
	c.mu.Lock()
	subs := make([]*sub, 0, len(c.subs))
	for _, sb := range c.subs {
		subs = append(subs, sb)
	}
	c.subs = map[string]*sub{}
	admitted, user := c.admitted, c.ident.User
	if c.expireTimer != nil {
		c.expireTimer.Stop()
	}
	c.expiry++ // a timer already firing finds itself outdated
	c.mu.Unlock()
	for _, sb := range subs {
		sb.stop() // waits for its run: a subscribed event comes before disconnected
		if admitted {
			// Its subscriptions end with it (join/leave, workers).
			s.event(Event{Type: EventUnsubscribed, Conn: c.id, User: user, Channel: sb.name})
		}
	}
	if admitted {
		s.event(Event{Type: EventDisconnected, Conn: c.id, User: user})
	}
	<-c.closed
	s.removeConn(c)
}

func (c *conn) readLoop() {
	for {
		b, err := c.t.read()
		switch {
		case errors.Is(err, errTooLarge):
			c.sendError("", wire.CodeTooLarge, fmt.Sprintf("frame over %d bytes", c.s.cfg.MaxFrameBytes))
			continue
		case errors.Is(err, errIdle):
			c.close(wire.CloseIdle, fmt.Sprintf("idle: nothing heard for %v", c.s.cfg.IdleTimeout))
			return
		case err != nil:
			return
		}
		f, err := wire.DecodeClientFrame(b)
		if err != nil {
			c.s.m.frames.WithLabelValues("invalid").Inc()
			c.sendError(f.ID, wire.CodeBadRequest, err.Error())
			continue
		}
		c.s.m.frames.WithLabelValues(f.Op).Inc()
		select {
		case <-c.closing:
			return // refused or expired meanwhile: serve nothing more
		default:
		}
		if f.Op == wire.OpConnect {
			c.connect(f)
			continue
		}
		c.mu.Lock()
		admitted := c.admitted
		c.mu.Unlock()
		if !admitted {
			c.s.m.authFailures.WithLabelValues("missing").Inc()
			c.refuse(f.ID, msgTokenRequired)
			return
		}
		switch f.Op {
		case wire.OpSubscribe:
			if r := c.may(opSubscribe, f.Channel); r.code != "" {
				c.sendError(f.ID, r.code, r.msg)
				continue
			}
			c.subscribe(f)
		case wire.OpUnsubscribe:
			c.unsubscribe(f)
		case wire.OpPublish:
			if r := c.may(opPublish, f.Channel); r.code != "" {
				c.sendError(f.ID, r.code, r.msg)
				continue
			}
			c.publish(f)
		case wire.OpRequest:
			c.request(f)
		case wire.OpHistory:
			if r := c.may(opHistory, f.Channel); r.code != "" {
				c.sendError(f.ID, r.code, r.msg)
				continue
			}
			c.history(f)
		case wire.OpPresence, wire.OpPresenceStats:
			if r := c.may(opPresence, f.Channel); r.code != "" {
				c.sendError(f.ID, r.code, r.msg)
				continue
			}
			c.presence(f)
		case wire.OpPing:
			c.send(struct {
				Op string `json:"op"`
				ID string `json:"id,omitempty"`
			}{wire.OpPong, f.ID})
		}
		select {
		case <-c.closing:
			return
		default:
		}
	}
}

// errorCode is the code of a failed publish's error frame: a *wire.Error's
// or a hub's answer's own; running out of time is timeout, anything else
// (a hub out of reach) unavailable.
func errorCode(err error) string {
	var we *wire.Error
	if errors.As(err, &we) && we.Code != "" {
		return we.Code
	}
	var api *hubapi.APIError
	if errors.As(err, &api) && api.Body.Code != "" {
		return api.Body.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return wire.CodeTimeout
	}
	return wire.CodeUnavailable
}

// publishError is the message of a failed publish's error frame.
func publishError(err error) string {
	var we *wire.Error
	if errors.As(err, &we) && we.Code != "" {
		return we.Message
	}
	var api *hubapi.APIError
	if errors.As(err, &api) {
		return api.Body.Message
	}
	switch errorCode(err) {
	case wire.CodeTimeout:
		return "no answer from the hubs in time; the message may be stored: retry with the same id"
	case wire.CodeUnavailable:
		return "hubs unreachable: " + err.Error() + "; the message may be stored: retry with the same id"
	}
	return err.Error()
}

// send encodes v and queues it.
func (c *conn) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.s.log.Error("encode server frame", "err", err)
		return
	}
	c.enqueue(b)
}

func (c *conn) sendError(id, code, msg string) {
	c.send(wire.ErrorFrame{Op: wire.OpError, ID: id, Code: code, Message: msg})
}

// enqueue queues encoded objects without waiting. A full queue means a
// client too slow to keep up: it is disconnected. It reports whether the
// objects were queued.
func (c *conn) enqueue(objs ...[]byte) bool {
	ok, first := c.put(objs)
	if first {
		c.wakeWriter()
	}
	return ok
}

// put queues objects as enqueue does, but wakes nobody: first reports
// that the queue was empty, so that the caller must (flush, or
// wakeWriter).
func (c *conn) put(objs [][]byte) (ok, first bool) {
	c.qmu.Lock()
	if c.dead {
		c.qmu.Unlock()
		return false, false
	}
	size := 0
	for _, b := range objs {
		size += len(b)
	}
	if len(c.queue)+len(objs) > c.s.cfg.QueueMessages || c.qbytes+size > c.s.cfg.QueueBytes {
		c.qmu.Unlock()
		c.s.m.slowConsumers.Inc()
		c.close(wire.CloseSlowConsumer, "slow consumer: queue overflowed; reconnect and resume")
		return false, false
	}
	first = len(c.queue) == 0
	c.queue = append(c.queue, objs...)
	c.qbytes += size
	c.qmu.Unlock()
	return true, first
}

// flush sends what is queued from the caller's goroutine (the fan-out's)
// when it can without waiting: the transport writes directly, the writer
// is not writing, and the socket takes it all at once, which it does for
// a client keeping up. Otherwise, and for the part the socket did not
// take, it wakes the writer. With 10,000 subscribers, each message fanned
// out woke 10,000 writers, which the scheduler ran in turn, the gateway's
// other goroutines (the next message's publish among them) waiting behind
// them (docs/benchmarks.md). buf is scratch space, returned for the next
// call.
func (c *conn) flush(buf []byte) []byte {
	if c.direct == nil || !c.wmu.TryLock() {
		c.wakeWriter()
		return buf
	}
	defer c.wmu.Unlock()
	if !c.direct.tryLock() { // a write under way, or the rest of one
		c.wakeWriter()
		return buf
	}
	c.qmu.Lock()
	if c.dead || len(c.queue) == 0 {
		c.qmu.Unlock()
		c.direct.unlock()
		c.wakeWriter()
		return buf
	}
	buf = buf[:0]
	frames, objs := 0, len(c.queue)
	for i := 0; i < len(c.queue); frames++ { // as writeBatch: objects joined by newlines
		n, j := len(c.queue[i]), i+1
		for j < len(c.queue) && n+1+len(c.queue[j]) <= c.s.cfg.WriteBatchBytes {
			n += 1 + len(c.queue[j])
			j++
		}
		buf = c.direct.appendHeader(buf, n)
		for k := i; k < j; k++ {
			if k > i {
				buf = append(buf, '\n')
			}
			buf = append(buf, c.queue[k]...)
		}
		i = j
	}
	clear(c.queue)
	c.queue, c.qbytes = c.queue[:0], 0
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	c.qmu.Unlock()
	pending, err := c.direct.writeLocked(buf)
	c.direct.unlock()
	switch {
	case err != nil:
		c.close(0, "") // the socket is broken: the writer ends
	case pending:
		// The writer writes the rest, waiting for room.
		c.s.partialFlushes.Add(1)
		c.wakeWriter()
		fallthrough
	default:
		c.s.m.framesSent.Add(float64(frames))
		c.s.m.delivered.Add(float64(objs))
	}
	if cap(buf) > 1<<20 {
		buf = nil
	}
	return buf
}

// wakeWriter tells the writer it has work, without waiting: a wake-up
// already pending covers this one, as the writer looks at everything
// under qmu after taking it.
func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// enqueueWait queues objects, waiting while the queue is more than half
// full: replays use it so that a long replay is paced by the client rather
// than overflowing the queue.
func (c *conn) enqueueWait(ctx context.Context, frames [][]byte) bool {
	for len(frames) > 0 {
		c.qmu.Lock()
		if c.dead {
			c.qmu.Unlock()
			return false
		}
		n := 0
		for n < len(frames) && (len(c.queue) == 0 ||
			len(c.queue) < c.s.cfg.QueueMessages/2 && c.qbytes+len(frames[n]) <= c.s.cfg.QueueBytes/2) {
			c.queue = append(c.queue, frames[n])
			c.qbytes += len(frames[n])
			n++
		}
		if n > 0 {
			c.qmu.Unlock()
			frames = frames[n:]
			c.wakeWriter()
			continue
		}
		// The queue is not empty (an empty one takes a frame): the writer
		// has a wake-up pending or is writing, and will take it.
		if c.space == nil {
			c.space = make(chan struct{})
		}
		space := c.space
		c.qmu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return false
		case <-c.closing:
			return false
		}
	}
	return true
}

// frameBufs are the buffers frames are assembled in: taken for a write and
// given back, so that idle connections hold none.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeBatch writes queued objects as frames of up to WriteBatchBytes, the
// objects of a frame separated by newlines.
func (c *conn) writeBatch(batch [][]byte) error {
	if len(batch) == 1 {
		c.s.m.framesSent.Inc()
		return c.write(batch[0])
	}
	bp := frameBufs.Get().(*[]byte)
	buf := *bp
	var err error
	for i := 0; i < len(batch) && err == nil; {
		buf = buf[:0]
		for ; i < len(batch); i++ {
			if len(buf) > 0 && len(buf)+len(batch[i]) > c.s.cfg.WriteBatchBytes {
				break
			}
			if len(buf) > 0 {
				buf = append(buf, '\n')
			}
			buf = append(buf, batch[i]...)
		}
		err = c.write(buf)
		c.s.m.framesSent.Inc()
	}
	if cap(buf) <= 1<<20 {
		*bp = buf[:0]
		frameBufs.Put(bp)
	}
	return err
}

// write writes one frame, under the watch of Server.watchWrites.
func (c *conn) write(frame []byte) error {
	c.writing.Store(c.s.now())
	err := c.t.write(frame)
	c.writing.Store(0)
	return err
}

// close starts closing the connection with code and reason (0: no close
// frame, the transport is simply closed): the writer sends what is queued,
// then the close frame.
func (c *conn) close(code int, reason string) {
	c.qmu.Lock()
	if c.dead {
		c.qmu.Unlock()
		return
	}
	c.dead = true
	c.closeCode, c.closeWhy = code, reason
	c.qmu.Unlock()
	close(c.closing)
	c.wakeWriter()
}

// pingSoon is pingTimer's: the writer sends a ping at its next turn.
func (c *conn) pingSoon() {
	c.qmu.Lock()
	c.pingDue = true
	c.qmu.Unlock()
	c.wakeWriter()
}

// pongSoon has the writer answer a WebSocket ping at its next turn (only
// the latest ping is answered, as RFC 6455 allows).
func (c *conn) pongSoon(data string) {
	c.qmu.Lock()
	c.pong = &data
	c.qmu.Unlock()
	c.wakeWriter()
}

// writeLoop is the connection's writer: woken through wake alone, it takes
// everything queued at once and writes it (writeBatch), sends a ping when
// one is due, and at close sends what is left and the close frame. One
// channel and no select: with 10,000 connections, every message fanned out
// wakes 10,000 writers.
func (c *conn) writeLoop() {
	defer close(c.closed)
	c.pingTimer = time.AfterFunc(c.s.cfg.PingInterval, c.pingSoon)
	defer c.pingTimer.Stop()
	var batch [][]byte
	for {
		<-c.wake
		if c.writeTurn(&batch) {
			return
		}
	}
}

// lockWrites takes wmu and writes the rest of a frame flush began, if
// any: the writer's turn starts with it.
func (c *conn) lockWrites() error {
	c.wmu.Lock()
	if c.direct == nil {
		return nil
	}
	c.writing.Store(c.s.now())
	err := c.direct.drain()
	c.writing.Store(0)
	return err
}

// writeTurn is one turn of writeLoop, under wmu: what flush left, then
// everything queued, a ping if due, the close. It reports that the writer
// is done.
func (c *conn) writeTurn(batchp *[][]byte) (done bool) {
	err := c.lockWrites()
	defer c.wmu.Unlock()
	c.qmu.Lock()
	batch := c.queue
	c.queue = (*batchp)[:0]
	*batchp = batch
	c.qbytes = 0
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	ping, pong := c.pingDue, c.pong
	c.pingDue, c.pong = false, nil
	closing, code, why := c.dead, c.closeCode, c.closeWhy
	c.qmu.Unlock()
	if err == nil && len(batch) > 0 {
		err = c.writeBatch(batch)
		c.s.m.delivered.Add(float64(len(batch)))
	}
	clear(batch)
	if p, ok := c.t.(interface{ pong(string) error }); ok && err == nil && pong != nil && !closing {
		err = p.pong(*pong)
	}
	if err == nil && ping && !closing {
		err = c.t.ping()
		c.pingTimer.Reset(c.s.cfg.PingInterval)
	}
	if err != nil {
		c.close(0, "")
		c.t.close()
		return true
	}
	if closing {
		if code != 0 {
			c.t.closeWith(code, why)
		} else {
			c.t.close()
		}
		return true
	}
	return false
}
