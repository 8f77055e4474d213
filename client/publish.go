package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/comethq/comet/wire"
)

// Ack is a publish's acknowledgement: the message is committed by a quorum
// of hubs and on disk there.
type Ack struct {
	Channel string
	Offset  uint64
	// Epoch is the channel's epoch, when the gateway tells it.
	Epoch string
	// Duplicate is true when the publish was a retry of an id already
	// stored (the client's own retry after a reconnect, or a second
	// publish with the same id): Offset is then the offset the first one
	// got, and nothing new was stored.
	Duplicate bool
}

type pendingPub struct {
	id, channel string
	frame       []byte
	seq         uint64
	retryAt     time.Time // when to send again if nothing was heard; zero: not sent on this connection
	attempts    int       // refusals as unavailable or timeout in a row
	done        chan struct{}
	ack         Ack
	err         error
}

// finishPub completes p, which is in c.pubs, with a or err: it leaves
// c.pubs, gives its place in the window back and counts for the waiters of
// PublishAsyncComplete; c.mu is held.
func (c *Client) finishPub(p *pendingPub, a Ack, err error) {
	if c.pubs[p.id] != p {
		return
	}
	delete(c.pubs, p.id)
	<-c.window
	if err != nil && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("publish to %s, id %s: %w", p.channel, p.id, err)
	}
	p.ack, p.err = a, err
	close(p.done)
	kept := c.drains[:0]
	for _, d := range c.drains {
		if p.seq <= d.seq {
			d.left--
		}
		if d.left == 0 {
			close(d.ch)
			continue
		}
		kept = append(kept, d)
	}
	clear(c.drains[len(kept):])
	c.drains = kept
}

// drain is a waiter of PublishAsyncComplete: ch is closed once the left
// publishes outstanding at the call, those of seq at most seq, are done.
type drain struct {
	seq  uint64
	left int
	ch   chan struct{}
}

type pendingReq struct {
	frame []byte
	seq   uint64
	sent  bool
	// again: sent again on the next connection when the connection is
	// lost before the answer (a read, which is safe to repeat).
	again bool
	done  chan struct{}
	data  json.RawMessage
	reply *wire.ServerFrame // the whole answer, for a history read
	err   error
}

// finish completes r; c.mu is held and r is out of c.reqs.
func (r *pendingReq) finish(data json.RawMessage, err error) {
	r.data, r.err = data, err
	close(r.done)
}

// NewID returns a random publish id: 128 bits, in 26 characters of base32.
func NewID() string { return rand.Text() }

// PublishOption is an option of PublishAsync.
type PublishOption func(*publishOptions)

type publishOptions struct {
	id     string
	noWait bool
}

// WithID sets the publish's id, its idempotency key (default: NewID()). It
// must be unique per message: a publish with the id of one stored within
// the last 10 minutes is not stored again, and is acknowledged with the
// first one's offset and Duplicate set.
func WithID(id string) PublishOption { return func(o *publishOptions) { o.id = id } }

// NoWait makes PublishAsync fail with ErrWindowFull instead of waiting
// when Config.MaxPublishesInFlight publishes are waiting for their acks.
func NoWait() PublishOption { return func(o *publishOptions) { o.noWait = true } }

// PublishFuture is a publish made by PublishAsync: it completes once, when
// the publish is acknowledged, refused by an error frame other than
// unavailable or timeout, or failed by Close.
type PublishFuture struct{ p *pendingPub }

// ID returns the publish's id.
func (f *PublishFuture) ID() string { return f.p.id }

// Channel returns the channel published to.
func (f *PublishFuture) Channel() string { return f.p.channel }

// Done returns a channel closed once the publish is complete: Ack and Err
// then tell how.
func (f *PublishFuture) Done() <-chan struct{} { return f.p.done }

// Ack returns the publish's ack once Done is closed and Err is nil; the
// zero Ack before, or when it failed.
func (f *PublishFuture) Ack() Ack {
	select {
	case <-f.p.done:
		return f.p.ack
	default:
		return Ack{}
	}
}

// Err returns nil until Done is closed; then nil if the publish was
// acknowledged, else why it failed: an *Error from the gateway (wrapped),
// or ErrClosed.
func (f *PublishFuture) Err() error {
	select {
	case <-f.p.done:
		return f.p.err
	default:
		return nil
	}
}

// Wait waits until the publish is complete and returns its ack or error,
// or ctx's error if ctx ends first (the publish goes on).
func (f *PublishFuture) Wait(ctx context.Context) (Ack, error) {
	select {
	case <-f.p.done:
		return f.p.ack, f.p.err
	case <-ctx.Done():
		return Ack{}, fmt.Errorf("publish to %s, id %s: %w", f.p.channel, f.p.id, ctx.Err())
	}
}

// Publish publishes data, encoded as JSON (a json.RawMessage is sent as
// is), to channel with a new random id; see PublishWithID.
func (c *Client) Publish(ctx context.Context, channel string, data any) (Ack, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Ack{}, fmt.Errorf("publish to %s: encode data: %w", channel, err)
	}
	return c.PublishWithID(ctx, channel, NewID(), raw)
}

// PublishWithID publishes data (JSON) to channel with id as its idempotency
// key, and waits for its ack: it is PublishAsync followed by a wait. It
// sends the publish again, with the same id, after every reconnect, when
// the gateway answers unavailable or timeout (after a backoff), and when no
// answer comes within RequestTimeout, until an ack (the hubs store it once,
// see CONTRACT.md guarantee 4), another error frame (an *Error), ctx's end
// or Close. After ctx's end the message may or may not be stored: publish
// again with the same id, within 10 minutes, to know (the ack then says
// Duplicate if it was).
func (c *Client) PublishWithID(ctx context.Context, channel, id string, data json.RawMessage) (Ack, error) {
	p, err := c.publish(ctx, channel, id, data, false)
	if err != nil {
		return Ack{}, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		err := c.waitErr(ctx)
		c.mu.Lock()
		c.finishPub(p, Ack{}, err) // unless it finished meanwhile
		c.mu.Unlock()
		<-p.done
	case <-c.closeCh:
		return Ack{}, ErrClosed
	}
	return p.ack, p.err
}

// PublishAsync publishes data, encoded as JSON (a json.RawMessage is sent
// as is), to channel, and returns at once with a future of its ack, so that
// one goroutine can keep many publishes in flight. The id is NewID() unless
// WithID gives one.
//
// Up to Config.MaxPublishesInFlight publishes wait for their acks at once;
// past that PublishAsync waits for room until ctx ends, or fails with
// ErrWindowFull with NoWait. ctx bounds only that wait: the publish itself
// goes on until it completes (see PublishFuture).
//
// Publishes are sent in the order of the calls, and the gateway stores
// those of one connection to one channel in that order (CONTRACT.md
// guarantee 6). After a reconnect, every publish not yet acknowledged is
// sent again, with its id, in the order of the calls, before any new one;
// the hubs store each id once, and the ack of a retry of one already
// stored says Duplicate. A publish refused with unavailable or timeout is
// sent again after a backoff, as PublishWithID is: it may then be stored
// after publishes made later.
func (c *Client) PublishAsync(ctx context.Context, channel string, data any, opts ...PublishOption) (*PublishFuture, error) {
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = NewID()
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: encode data: %w", channel, err)
	}
	p, err := c.publish(ctx, channel, o.id, raw, o.noWait)
	if err != nil {
		return nil, err
	}
	return &PublishFuture{p: p}, nil
}

// PublishAsyncPending returns how many publishes are waiting for their
// acks.
func (c *Client) PublishAsyncPending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pubs)
}

// PublishAsyncComplete returns a channel closed once every publish waiting
// for its ack at the call (of any kind: PublishAsync, Publish,
// PublishWithID) is complete, acknowledged or failed. Publishes made after
// the call are not waited for.
func (c *Client) PublishAsyncComplete() <-chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pubs) == 0 {
		close(ch)
		return ch
	}
	c.drains = append(c.drains, &drain{seq: c.seq, left: len(c.pubs), ch: ch})
	return ch
}

// publish checks a publish, waits for room in the window (unless noWait),
// records it and sends it if a connection is ready.
func (c *Client) publish(ctx context.Context, channel, id string, data json.RawMessage, noWait bool) (*pendingPub, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if id == "" {
		return nil, fmt.Errorf("publish to %s: empty id", channel)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, fmt.Errorf("publish to %s: data is not JSON: %w", channel, err)
	}
	if buf.Len() == 0 || buf.String() == "null" {
		return nil, fmt.Errorf("publish to %s: no data (null)", channel)
	}
	p := &pendingPub{id: id, channel: channel, done: make(chan struct{}),
		frame: encode(wire.ClientFrame{Op: wire.OpPublish, ID: id, Channel: channel, Data: buf.Bytes()})}
	// A place in the window first, without c.mu: the token is given back
	// by finishPub.
	select {
	case c.window <- struct{}{}:
	default:
		c.mu.Lock()
		_, dup := c.pubs[id]
		c.mu.Unlock()
		switch {
		case dup: // no need to wait to know
			return nil, fmt.Errorf("publish to %s, id %s: %w", channel, id, ErrInFlight)
		case noWait:
			return nil, fmt.Errorf("publish to %s, id %s: %w (%d)", channel, id, ErrWindowFull, cap(c.window))
		}
		select {
		case c.window <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("publish to %s, id %s: waiting for room among the publishes in flight: %w", channel, id, c.waitErr(ctx))
		case <-c.closeCh:
			return nil, ErrClosed
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		<-c.window
		return nil, ErrClosed
	}
	if _, ok := c.pubs[id]; ok {
		<-c.window
		return nil, fmt.Errorf("publish to %s, id %s: %w", channel, id, ErrInFlight)
	}
	c.seq++
	p.seq = c.seq
	c.pubs[id] = p
	if cn := c.live(); cn != nil {
		c.sendPublish(cn, p, time.Now())
	}
	return p, nil
}

// sendPublish queues p on cn and schedules a resend if no answer comes;
// c.mu is held.
func (c *Client) sendPublish(cn *conn, p *pendingPub, now time.Time) {
	cn.enqueue(p.frame)
	p.retryAt = now.Add(c.cfg.RequestTimeout)
	cn.retryAt(p.retryAt)
}

func (c *Client) onAck(f *wire.ServerFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pubs[f.ID]
	if !ok || f.ID == "" {
		return // a second ack of a publish sent twice
	}
	c.finishPub(p, Ack{Channel: f.Channel, Offset: f.Offset, Epoch: f.Epoch, Duplicate: f.Duplicate}, nil)
}

// Request sends data (encoded as JSON; nil: no data) to the worker serving
// route and returns its response. It is sent once: if the connection drops
// before the response, it fails with an *Error of code unavailable. It
// waits for a connection if there is none, and gives up with an *Error of
// code timeout after Config.RequestTimeout, or with ctx's error.
func (c *Client) Request(ctx context.Context, route string, data any) (json.RawMessage, error) {
	if route == "" {
		return nil, errors.New("request: empty route")
	}
	f := wire.ClientFrame{Op: wire.OpRequest, Route: route}
	if data != nil {
		raw, err := json.Marshal(data)
		if err != nil {
			return nil, fmt.Errorf("request %s: encode data: %w", route, err)
		}
		f.Data = raw
	}
	r, err := c.ask(ctx, f, false)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("request %s: %w", route, err)
	}
	return r.data, nil
}

// ask sends f (a request or a read) with a new id and waits for its answer
// (its pendingReq, finished) or its error frame's *Error. again: f is sent
// again on the next connection if the connection is lost before the
// answer. It waits for a connection if there is none, and gives up with an
// *Error of code timeout after Config.RequestTimeout, with ctx's error, or
// with ErrClosed.
func (c *Client) ask(ctx context.Context, f wire.ClientFrame, again bool) (*pendingReq, error) {
	r := &pendingReq{again: again, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	f.ID = c.nextID(f.Op[:1])
	r.seq = c.seq
	r.frame = encode(f)
	c.reqs[f.ID] = r
	if cn := c.live(); cn != nil {
		r.sent = true
		cn.enqueue(r.frame)
	}
	c.mu.Unlock()

	timer := time.NewTimer(c.cfg.RequestTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-r.done:
		return r, r.err
	case <-timer.C:
		err = &Error{Code: CodeTimeout, Message: fmt.Sprintf("no answer within %v", c.cfg.RequestTimeout)}
	case <-ctx.Done():
		err = c.waitErr(ctx)
	case <-c.closeCh:
		return nil, ErrClosed
	}
	c.mu.Lock()
	if c.reqs[f.ID] == r {
		delete(c.reqs, f.ID)
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	<-r.done // answered meanwhile
	return r, r.err
}
