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

// finish completes p; c.mu is held and p is out of c.pubs.
func (p *pendingPub) finish(a Ack, err error) {
	p.ack, p.err = a, err
	close(p.done)
}

type pendingReq struct {
	frame []byte
	seq   uint64
	sent  bool
	done  chan struct{}
	data  json.RawMessage
	err   error
}

// finish completes r; c.mu is held and r is out of c.reqs.
func (r *pendingReq) finish(data json.RawMessage, err error) {
	r.data, r.err = data, err
	close(r.done)
}

// NewID returns a random publish id: 128 bits, in 26 characters of base32.
func NewID() string { return rand.Text() }

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
// key. It sends the publish again, with the same id, after every reconnect,
// when the gateway answers unavailable or timeout (after a backoff), and
// when no answer comes within RequestTimeout, until an ack (the hubs store
// it once, see CONTRACT.md guarantee 4), another error frame (an *Error),
// ctx's end or Close. After ctx's end the message may or may not be stored:
// publish again with the same id, within 10 minutes, to know.
func (c *Client) PublishWithID(ctx context.Context, channel, id string, data json.RawMessage) (Ack, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return Ack{}, fmt.Errorf("publish: %w", err)
	}
	if id == "" {
		return Ack{}, fmt.Errorf("publish to %s: empty id", channel)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return Ack{}, fmt.Errorf("publish to %s: data is not JSON: %w", channel, err)
	}
	if buf.Len() == 0 || buf.String() == "null" {
		return Ack{}, fmt.Errorf("publish to %s: no data (null)", channel)
	}
	p := &pendingPub{id: id, channel: channel, done: make(chan struct{}),
		frame: encode(wire.ClientFrame{Op: wire.OpPublish, ID: id, Channel: channel, Data: buf.Bytes()})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Ack{}, ErrClosed
	}
	if _, ok := c.pubs[id]; ok {
		c.mu.Unlock()
		return Ack{}, fmt.Errorf("publish to %s, id %s: %w", channel, id, ErrInFlight)
	}
	c.seq++
	p.seq = c.seq
	c.pubs[id] = p
	if cn := c.live(); cn != nil {
		c.sendPublish(cn, p, time.Now())
	}
	c.mu.Unlock()

	select {
	case <-p.done:
	case <-ctx.Done():
		c.mu.Lock()
		if c.pubs[id] == p {
			delete(c.pubs, id)
			c.mu.Unlock()
			return Ack{}, fmt.Errorf("publish to %s, id %s: %w", channel, id, c.waitErr(ctx))
		}
		c.mu.Unlock()
		<-p.done // finished meanwhile
	case <-c.closeCh:
		return Ack{}, ErrClosed
	}
	if p.err != nil {
		if errors.Is(p.err, ErrClosed) {
			return Ack{}, ErrClosed
		}
		return Ack{}, fmt.Errorf("publish to %s, id %s: %w", channel, id, p.err)
	}
	return p.ack, nil
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
	delete(c.pubs, f.ID)
	p.finish(Ack{Channel: f.Channel, Offset: f.Offset, Epoch: f.Epoch}, nil)
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
	r := &pendingReq{done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	f.ID = c.nextID("r")
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
		if r.err != nil {
			if errors.Is(r.err, ErrClosed) {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("request %s: %w", route, r.err)
		}
		return r.data, nil
	case <-timer.C:
		err = &Error{Code: CodeTimeout, Message: fmt.Sprintf("no response within %v", c.cfg.RequestTimeout)}
	case <-ctx.Done():
		err = c.waitErr(ctx)
	case <-c.closeCh:
		return nil, ErrClosed
	}
	c.mu.Lock()
	if c.reqs[f.ID] == r {
		delete(c.reqs, f.ID)
		c.mu.Unlock()
		return nil, fmt.Errorf("request %s: %w", route, err)
	}
	c.mu.Unlock()
	<-r.done // answered meanwhile
	if r.err != nil {
		return nil, fmt.Errorf("request %s: %w", route, r.err)
	}
	return r.data, nil
}
