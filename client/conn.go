package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// conn is one WebSocket connection. Frames to send go through its queue to
// its writer goroutine, in the order they were queued; the reading
// goroutine is the client's run goroutine.
type conn struct {
	ws    *websocket.Conn
	url   string
	token string // sent in the connect frame; "" for an anonymous connection
	hello string // the id of that connect frame
	id    string // the gateway's connection id
	// ready is set, under Client.mu, once the gateway said "connected" and
	// the subscriptions and pending publishes were queued again. Frames are
	// queued on a connection only when it is ready.
	ready bool

	qmu   sync.Mutex
	queue [][]byte
	hint  time.Time // earliest time something may need sending again
	wake  chan struct{}
	stop  chan struct{}
}

// enqueue queues one encoded frame; it never blocks.
func (cn *conn) enqueue(b []byte) {
	cn.qmu.Lock()
	cn.queue = append(cn.queue, b)
	cn.qmu.Unlock()
	cn.signal()
}

// retryAt asks the writer to look for frames to send again at t.
func (cn *conn) retryAt(t time.Time) {
	if t.IsZero() {
		return
	}
	cn.qmu.Lock()
	if cn.hint.IsZero() || t.Before(cn.hint) {
		cn.hint = t
	}
	cn.qmu.Unlock()
	cn.signal()
}

func (cn *conn) signal() {
	select {
	case cn.wake <- struct{}{}:
	default:
	}
}

// encode encodes a client frame. HTML characters are not escaped, so that
// data reaches the hubs exactly as published (compacted).
func encode(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("client: encode frame: %v", err)) // only ever called on wire types
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// connect dials u, authenticates with token unless it is "", and serves
// the connection until it fails. It returns when the gateway said
// "connected" (zero if it never did) and why the connection ended.
func (c *Client) connect(u, token string) (readyAt time.Time, err error) {
	ws, resp, err := c.cfg.Dialer.DialContext(c.ctx, u, c.cfg.Header.Clone())
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("dial %s: %w (HTTP %s)", u, err, resp.Status)
		} else {
			err = fmt.Errorf("dial %s: %w", u, err)
		}
		c.setLastErr(err)
		return time.Time{}, err
	}
	cn := &conn{ws: ws, url: u, token: token, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		ws.Close()
		return time.Time{}, ErrClosed
	}
	c.conn = cn
	hello := token != "" || len(c.cfg.Info) > 0
	if hello {
		cn.hello = c.nextID("c")
	}
	c.mu.Unlock()
	if hello {
		// The connect frame goes first, before the writer starts: nothing
		// else is sent before the gateway answers it with "connected".
		_ = ws.SetWriteDeadline(time.Now().Add(c.cfg.RequestTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, encode(wire.ClientFrame{Op: wire.OpConnect, ID: cn.hello, Token: token, Info: c.cfg.Info})); err != nil {
			ws.Close()
			c.detach(cn)
			err = fmt.Errorf("%s: send connect: %w", u, err)
			c.setLastErr(err)
			return time.Time{}, err
		}
	}
	readyAt, err = c.serve(cn)
	c.setLastErr(err)
	return readyAt, err
}

func (c *Client) setLastErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// serve reads cn until it fails: first "connected", then everything else.
// While it is ready, a writer goroutine sends its frames and, when it has a
// token, a refresher goroutine keeps the token fresh.
func (c *Client) serve(cn *conn) (readyAt time.Time, err error) {
	ws := cn.ws
	alive := func() { _ = ws.SetReadDeadline(time.Now().Add(c.cfg.ReadTimeout)) }
	ws.SetPingHandler(func(data string) error {
		alive()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.cfg.RequestTimeout))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
			return nil
		}
		return err
	})
	ws.SetPongHandler(func(string) error { alive(); return nil })
	_ = ws.SetReadDeadline(time.Now().Add(c.cfg.RequestTimeout))

	writerDone, refresherDone := make(chan struct{}), make(chan struct{})
	started := false
	rctx, rcancel := context.WithCancel(c.ctx)
	defer func() {
		// Close the socket so that the writer's writes fail at once, stop
		// and wait for the writer and the refresher, then forget the
		// connection.
		ws.Close()
		close(cn.stop)
		rcancel()
		if started {
			<-writerDone
			<-refresherDone
		}
		c.detach(cn)
	}()

	var refused *Error // what the gateway said before a close with 4006
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			err = authError(err, refused)
			if readyAt.IsZero() {
				err = fmt.Errorf("%s: waiting for connected: %w", cn.url, err)
			}
			return readyAt, err
		}
		if !readyAt.IsZero() {
			alive()
		}
		for line := range splitLines(b) {
			var f wire.ServerFrame
			if err := json.Unmarshal(line, &f); err != nil {
				c.log.Warn("undecodable server frame", "err", err, "frame", truncate(line))
				continue
			}
			if f.Op == wire.OpError && f.Code == CodeForbidden && (f.ID == "" || c.isConnectID(f.ID)) {
				refused = &Error{Code: f.Code, Message: f.Message}
			}
			if readyAt.IsZero() {
				switch f.Op {
				case wire.OpConnected:
					if !cn.answered(&f) {
						c.log.Debug("connected as anonymous before the token's answer", "url", cn.url)
						continue
					}
				case wire.OpError:
					// A refused token: the close (4006) follows.
					c.log.Warn("error from gateway before connected", "url", cn.url, "err", &Error{Code: f.Code, Message: f.Message})
					continue
				default:
					return readyAt, fmt.Errorf("%w: %s sent %q first, not connected", ErrProtocol, cn.url, f.Op)
				}
				cn.id = f.Connection
				if !c.attach(cn, f.User) {
					return readyAt, ErrClosed
				}
				readyAt = time.Now()
				alive()
				started = true
				go func() { defer close(writerDone); c.writeLoop(cn) }()
				go func() { defer close(refresherDone); c.refresh(rctx, cn, cn.token) }()
				c.log.Info("connected", "url", cn.url, "connection", cn.id, "user", f.User)
				c.setState(Connected, nil)
				continue
			}
			c.dispatch(cn, &f)
		}
	}
}

// answered reports whether f, a "connected", makes cn ready: the first one
// on an anonymous connection; else the answer to cn's connect frame (its id
// echoed, or a user named by a gateway that does not echo it), not the
// admission as anonymous that a gateway letting anonymous clients in may
// send before.
func (cn *conn) answered(f *wire.ServerFrame) bool {
	return cn.hello == "" || f.ID == cn.hello || (f.ID == "" && f.User != "")
}

// isConnectID reports whether id is one of the client's connect frames.
func (c *Client) isConnectID(id string) bool {
	return strings.HasPrefix(id, c.idPrefix+"c")
}

// splitLines yields the non-empty lines of a server frame: a frame holds one
// or more JSON objects separated by '\n'.
func splitLines(b []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			line = bytes.TrimSpace(line)
			if len(line) > 0 && !yield(line) {
				return
			}
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// writeLoop writes cn's queued frames in order, pings the gateway, and sends
// again what is due (publishes without an ack, subscribes refused as
// unavailable), until cn.stop is closed or a write fails.
func (c *Client) writeLoop(cn *conn) {
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var timerAt time.Time
	for {
		cn.qmu.Lock()
		q, hint := cn.queue, cn.hint
		cn.queue = nil
		cn.qmu.Unlock()
		for _, b := range q {
			_ = cn.ws.SetWriteDeadline(time.Now().Add(c.cfg.RequestTimeout))
			if err := cn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				c.log.Debug("write failed", "url", cn.url, "err", err)
				cn.ws.Close() // the reader fails and the client reconnects
				return
			}
		}
		if !hint.IsZero() && (timerAt.IsZero() || hint.Before(timerAt)) {
			timerAt = hint
			timer.Reset(time.Until(hint))
		}
		select {
		case <-cn.stop:
			return
		case <-cn.wake:
		case <-ping.C:
			if err := cn.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.RequestTimeout)); err != nil {
				cn.ws.Close()
				return
			}
		case <-timer.C:
			timerAt = time.Time{}
			cn.qmu.Lock()
			cn.hint = time.Time{}
			cn.qmu.Unlock()
			cn.retryAt(c.resendDue(cn))
		}
	}
}

// attach makes cn, authenticated as user, the ready connection and queues
// on it, in this order, every subscription, every publish not yet
// acknowledged and every request not yet sent. It reports false if the
// client is closed.
func (c *Client) attach(cn *conn, user string) bool {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	cn.ready = true
	c.user = user
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	slices.SortFunc(subs, func(a, b *Subscription) int { return cmpUint(a.seq, b.seq) })
	for _, s := range subs {
		c.sendSubscribe(cn, s)
	}
	pubs := make([]*pendingPub, 0, len(c.pubs))
	for _, p := range c.pubs {
		pubs = append(pubs, p)
	}
	slices.SortFunc(pubs, func(a, b *pendingPub) int { return cmpUint(a.seq, b.seq) })
	for _, p := range pubs {
		c.sendPublish(cn, p, now)
	}
	reqs := make([]*pendingReq, 0, len(c.reqs))
	for _, r := range c.reqs {
		reqs = append(reqs, r)
	}
	slices.SortFunc(reqs, func(a, b *pendingReq) int { return cmpUint(a.seq, b.seq) })
	for _, r := range reqs {
		r.sent = true
		cn.enqueue(r.frame)
	}
	return true
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// detach forgets cn: subscriptions wait for the next connection, publishes
// will be sent again there, and requests sent on cn fail with code
// "unavailable" (they are not retried).
func (c *Client) detach(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != cn {
		return
	}
	c.conn = nil
	c.user = ""
	for _, s := range c.subs {
		s.state, s.subID, s.retryAt = subIdle, "", time.Time{}
	}
	for _, p := range c.pubs {
		p.retryAt = time.Time{}
	}
	for id, r := range c.reqs {
		if r.sent && r.again {
			r.sent = false // asked again on the next connection
		} else if r.sent {
			delete(c.reqs, id)
			r.finish(nil, &Error{Code: CodeUnavailable, Message: "connection lost before the response"})
		}
	}
	for id, w := range c.unsubs {
		delete(c.unsubs, id)
		close(w)
	}
}

// live returns the ready connection, or nil; c.mu is held.
func (c *Client) live() *conn {
	if c.conn != nil && c.conn.ready {
		return c.conn
	}
	return nil
}

// resendDue queues again, on cn, the publishes and subscribes whose time has
// come, and returns when the next one is due (zero: none).
func (c *Client) resendDue(cn *conn) time.Time {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != cn || !cn.ready {
		return time.Time{}
	}
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	var due []*pendingPub
	for _, p := range c.pubs {
		if !p.retryAt.IsZero() && !now.Before(p.retryAt) {
			due = append(due, p)
		} else {
			earliest(p.retryAt)
		}
	}
	slices.SortFunc(due, func(a, b *pendingPub) int { return cmpUint(a.seq, b.seq) })
	for _, p := range due {
		c.log.Debug("sending publish again", "channel", p.channel, "id", p.id)
		c.sendPublish(cn, p, now)
		earliest(p.retryAt)
	}
	for _, s := range c.subs {
		if s.state != subRetry {
			continue
		}
		if !now.Before(s.retryAt) {
			c.sendSubscribe(cn, s)
		} else {
			earliest(s.retryAt)
		}
	}
	return next
}

// dispatch handles one server frame other than "connected".
func (c *Client) dispatch(cn *conn, f *wire.ServerFrame) {
	switch f.Op {
	case wire.OpMessage:
		if f.Channel == "" {
			c.onDirect(f)
			return
		}
		c.onMessage(f)
	case wire.OpSubscribed:
		c.onSubscribed(cn, f)
	case wire.OpUnsubscribed:
		c.mu.Lock()
		if w, ok := c.unsubs[f.ID]; ok {
			delete(c.unsubs, f.ID)
			close(w)
		}
		c.mu.Unlock()
	case wire.OpAck:
		c.onAck(f)
	case wire.OpResponse:
		c.mu.Lock()
		r, ok := c.reqs[f.ID]
		if ok {
			delete(c.reqs, f.ID)
			r.finish(f.Data, nil)
		}
		c.mu.Unlock()
	case wire.OpHistory, wire.OpPresence, wire.OpPresenceStats:
		c.mu.Lock()
		r, ok := c.reqs[f.ID]
		if ok {
			delete(c.reqs, f.ID)
			r.reply = f
			r.finish(nil, nil)
		}
		c.mu.Unlock()
	case wire.OpJoin, wire.OpLeave:
		c.onJoinLeave(f)
	case wire.OpError:
		c.onError(cn, f)
	case wire.OpConnected:
		// The answer to a connect frame with a fresh token.
		c.mu.Lock()
		if c.conn == cn {
			c.user = f.User
		}
		c.mu.Unlock()
		c.log.Debug("token refreshed", "id", f.ID, "user", f.User)
	case wire.OpPong:
	default:
		c.log.Debug("unknown server op", "op", f.Op)
	}
}

// onDirect hands a direct message (no channel: sent to this connection
// alone) to Config.OnMessage.
func (c *Client) onDirect(f *wire.ServerFrame) {
	if c.cfg.OnMessage == nil {
		c.log.Debug("direct message dropped: no OnMessage")
		return
	}
	c.cfg.OnMessage(f.Data)
}

// onError routes an error frame to the call it answers, by id.
func (c *Client) onError(cn *conn, f *wire.ServerFrame) {
	e := &Error{Code: f.Code, Message: f.Message}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pubs[f.ID]; ok && f.ID != "" {
		if retryable(f.Code) {
			p.attempts++
			p.retryAt = time.Now().Add(c.jitter(p.attempts))
			c.log.Debug("publish not stored yet; will retry", "channel", p.channel, "id", p.id, "err", e)
			cn.retryAt(p.retryAt)
			return
		}
		c.finishPub(p, Ack{}, e)
		return
	}
	if r, ok := c.reqs[f.ID]; ok && f.ID != "" {
		delete(c.reqs, f.ID)
		r.finish(nil, e)
		return
	}
	if w, ok := c.unsubs[f.ID]; ok && f.ID != "" {
		delete(c.unsubs, f.ID)
		close(w)
		return
	}
	for ch, s := range c.subs {
		if s.subID == "" || s.subID != f.ID || s.state != subSent {
			continue
		}
		if retryable(f.Code) {
			s.attempts++
			s.state, s.subID = subRetry, ""
			s.retryAt = time.Now().Add(c.jitter(s.attempts))
			c.log.Warn("subscribe refused; will retry", "channel", ch, "err", e)
			cn.retryAt(s.retryAt)
			return
		}
		c.log.Error("subscribe refused", "channel", ch, "err", e)
		delete(c.subs, ch)
		s.end(e)
		return
	}
	c.log.Warn("error from gateway", "id", f.ID, "err", e)
}

// jitter is the delay before retry number attempt (from 1) of one frame.
func (c *Client) jitter(attempt int) time.Duration {
	b := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff, rand: c.rand, attempt: attempt - 1}
	return b.next()
}
