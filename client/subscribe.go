package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/comethq/comet/wire"
)

// Message is one message of a channel, as delivered to a handler.
type Message struct {
	Channel string
	Offset  uint64
	// Epoch is the channel's epoch, from the last "subscribed".
	Epoch string
	// Data is the message's data, exactly as published (compact JSON).
	Data json.RawMessage
	// Replayed is true for a message that was already in the channel when
	// the subscription was made (or made again after a reconnect): its
	// offset is below that "subscribed"'s next.
	Replayed bool
}

// SubscribedInfo is what the gateway answered to a subscribe, and what the
// client had asked. It is given to OnSubscribed after the first subscribe
// and after every resubscribe.
type SubscribedInfo struct {
	Channel string
	// Epoch is the channel's current epoch.
	Epoch string
	// Recovered is false when messages the client asked for are gone:
	// retention trimmed them (From < First) or the channel's history was
	// reset (Epoch differs from FromEpoch). Delivery then goes on from
	// First, the oldest message still held.
	Recovered bool
	// First is the oldest offset still held; Next the offset the next
	// message will get. Messages with offsets below Next are replayed.
	First, Next uint64
	// From and FromEpoch are the position asked for: From is 0 for a live
	// only subscription.
	From      uint64
	FromEpoch string
}

// SubscribeOption is a per-call choice of Subscribe.
type SubscribeOption func(*subOptions)

type subOptions struct {
	from         *uint64
	epoch        string
	last         uint64
	onSubscribed func(SubscribedInfo)
	onJoinLeave  func(JoinLeave)
}

// JoinLeave says that connection Conn (of User, "" when anonymous)
// subscribed to Channel (Join true) or went (Join false).
type JoinLeave struct {
	Channel string
	Conn    string
	User    string
	Join    bool
}

// OnJoinLeave has f called with the join and leave frames of the channel,
// which gateways send where the channel's namespace has join_leave. It runs
// on the client's reading goroutine; it must not wait for the client.
func OnJoinLeave(f func(JoinLeave)) SubscribeOption {
	return func(o *subOptions) { o.onJoinLeave = f }
}

// From starts the subscription at offset (1: the whole retained history),
// instead of the position in the Store or, without one, live messages only.
// From(0) is From(1).
func From(offset uint64) SubscribeOption {
	return func(o *subOptions) { o.from = &offset }
}

// Epoch sets the epoch that the offset given to From belongs to. If the
// channel's epoch differs, the gateway answers recovered:false and the
// subscription starts at the oldest message held. Without From it has no
// effect.
func Epoch(epoch string) SubscribeOption {
	return func(o *subOptions) { o.epoch = epoch }
}

// Last starts a subscription that has no position (no From, none in the
// Store) with the newest n messages of the channel, then live ones: a
// dashboard's "latest value" is Last(1). Without it such a subscription
// starts with live messages only. Once a position is known (after the
// first subscribed), reconnects resume from it as usual.
func Last(n uint64) SubscribeOption {
	return func(o *subOptions) { o.last = n }
}

// OnSubscribed has f called with the gateway's answer to every subscribe of
// this subscription: the first one and each one after a reconnect. It runs
// on the client's reading goroutine, before the replayed messages; it must
// not wait for the client.
func OnSubscribed(f func(SubscribedInfo)) SubscribeOption {
	return func(o *subOptions) { o.onSubscribed = f }
}

type subState int

const (
	subIdle   subState = iota // to subscribe on the next ready connection
	subSent                   // subscribe sent, waiting for subscribed
	subActive                 // subscribed received: messages are delivered
	subRetry                  // refused as unavailable: subscribe again at retryAt
)

// Subscription is a channel the client is subscribed to. It lives across
// reconnects until Unsubscribe or Close, or until the gateway refuses to
// subscribe it again (see Done).
type Subscription struct {
	c            *Client
	channel      string
	handler      func(Message)
	onSubscribed func(SubscribedInfo)
	onJoinLeave  func(JoinLeave)
	seq          uint64

	// Guarded by c.mu. last and epoch are only changed by the run
	// goroutine once the subscription is in c.subs.
	state      subState
	subID      string // id of the subscribe in flight
	hasPos     bool   // last and epoch hold a position
	rewind     uint64 // Last(n): while !hasPos, subscribe with last n
	last       uint64 // last offset delivered (or to skip)
	epoch      string
	next       uint64 // next, from the last subscribed
	askedFrom  uint64
	askedEpoch string
	retryAt    time.Time
	attempts   int
	firstDone  bool
	first      chan struct{} // closed at the first subscribed, or when the subscription ends before it
	firstErr   error
	ended      bool
	done       chan struct{}
	err        error
}

// Channel returns the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Done is closed when the subscription ends: after Unsubscribe, Close, or
// when the gateway refused to subscribe it again after a reconnect with an
// error other than unavailable or timeout (Err says which).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended: nil while it lives and after
// Unsubscribe, ErrClosed after Close, an *Error after a refusal.
func (s *Subscription) Err() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.err
}

// end marks s ended with err; c.mu is held and s is out of c.subs.
func (s *Subscription) end(err error) {
	if s.ended {
		return
	}
	s.ended, s.err = true, err
	if !s.firstDone {
		s.firstDone, s.firstErr = true, err
		close(s.first)
	}
	close(s.done)
}

// Subscribe subscribes to channel and calls handler with its messages, in
// offset order, each offset once. It starts at From's offset if given, else
// after the position in Config.Store if there is one, else with live
// messages only. It returns once the gateway said "subscribed", with the
// error of an error frame, or with ctx's error (the subscription is then
// dropped). A refusal as unavailable or timeout is retried until ctx ends.
func (c *Client) Subscribe(ctx context.Context, channel string, handler func(Message), opts ...SubscribeOption) (*Subscription, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if handler == nil {
		return nil, fmt.Errorf("subscribe %s: nil handler", channel)
	}
	var o subOptions
	for _, opt := range opts {
		opt(&o)
	}
	s := &Subscription{c: c, channel: channel, handler: handler, onSubscribed: o.onSubscribed, onJoinLeave: o.onJoinLeave,
		rewind: o.last, first: make(chan struct{}), done: make(chan struct{})}
	if o.from != nil {
		s.hasPos, s.last, s.epoch = true, max(*o.from, 1)-1, o.epoch
	} else {
		pos, ok, err := c.store.Load(channel)
		if err != nil {
			return nil, fmt.Errorf("subscribe %s: load position: %w", channel, err)
		}
		if ok {
			s.hasPos, s.last, s.epoch = true, pos.Offset, pos.Epoch
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.subs[channel] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("subscribe %s: %w", channel, ErrSubscribed)
	}
	c.seq++
	s.seq = c.seq
	c.subs[channel] = s
	if cn := c.live(); cn != nil {
		c.sendSubscribe(cn, s)
	}
	c.mu.Unlock()

	select {
	case <-s.first:
	case <-ctx.Done():
		c.mu.Lock()
		if s.firstDone {
			c.mu.Unlock()
			break
		}
		c.dropSub(s, ctx.Err())
		c.mu.Unlock()
		return nil, c.waitErr(ctx)
	case <-c.closeCh:
		return nil, ErrClosed
	}
	c.mu.Lock()
	err := s.firstErr
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	return s, nil
}

// sendSubscribe queues a subscribe for s on cn, from s's position; c.mu is
// held.
func (c *Client) sendSubscribe(cn *conn, s *Subscription) {
	s.subID = c.nextID("s")
	s.state = subSent
	f := wire.ClientFrame{Op: wire.OpSubscribe, ID: s.subID, Channel: s.channel}
	s.askedFrom, s.askedEpoch = 0, ""
	switch {
	case s.hasPos:
		from := s.last + 1
		f.From, f.Epoch = &from, s.epoch
		s.askedFrom, s.askedEpoch = from, s.epoch
	case s.rewind > 0:
		f.Last = &s.rewind
	}
	cn.enqueue(encode(f))
}

// dropSub removes s and ends it with err, telling the gateway if it may
// have subscribed; c.mu is held.
func (c *Client) dropSub(s *Subscription, err error) {
	if c.subs[s.channel] != s {
		return
	}
	delete(c.subs, s.channel)
	if cn := c.live(); cn != nil && (s.state == subSent || s.state == subActive) {
		cn.enqueue(encode(wire.ClientFrame{Op: wire.OpUnsubscribe, ID: c.nextID("u"), Channel: s.channel}))
	}
	s.end(err)
}

// Unsubscribe ends the subscription. When it returns with nil, the handler
// is not running for it and will not be called again. It returns ErrClosed
// after Close.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.subs[s.channel] != s {
		c.mu.Unlock()
		return nil
	}
	delete(c.subs, s.channel)
	var wait chan struct{}
	if cn := c.live(); cn != nil && (s.state == subSent || s.state == subActive) {
		id := c.nextID("u")
		wait = make(chan struct{})
		c.unsubs[id] = wait
		cn.enqueue(encode(wire.ClientFrame{Op: wire.OpUnsubscribe, ID: id, Channel: s.channel}))
	}
	s.end(nil)
	c.mu.Unlock()
	if wait == nil {
		return nil
	}
	// The reading goroutine handles frames in order: once it has seen
	// "unsubscribed" (or the connection is gone), no handler call for s is
	// under way.
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closeCh:
		return nil
	}
}

// onSubscribed handles a "subscribed": it moves the position to what the
// gateway holds, tells OnSubscribed, and lets Subscribe return.
func (c *Client) onSubscribed(cn *conn, f *wire.ServerFrame) {
	c.mu.Lock()
	s := c.subs[f.Channel]
	if s == nil || s.state != subSent || (f.ID != "" && f.ID != s.subID) {
		c.mu.Unlock()
		c.log.Debug("stale subscribed", "channel", f.Channel, "id", f.ID)
		return
	}
	s.state, s.attempts, s.subID = subActive, 0, ""
	info := SubscribedInfo{Channel: f.Channel, Epoch: f.Epoch, Recovered: f.Recovered, First: f.First, Next: f.Next,
		From: s.askedFrom, FromEpoch: s.askedEpoch}
	oldLast, oldEpoch, oldHas := s.last, s.epoch, s.hasPos
	switch {
	case !s.hasPos && s.rewind > 0:
		// A rewind: the gateway replays from the newest rewind messages
		// (or the oldest held, if fewer).
		next := max(f.Next, 1)
		s.last = max(next-min(s.rewind, next-1), f.First, 1) - 1
	case !s.hasPos:
		// Live only: resume after a reconnect from what is next now.
		s.last = max(f.Next, 1) - 1
	case s.epoch != "" && s.epoch != f.Epoch:
		// A new history: the old offsets mean nothing. The replay starts
		// at first.
		s.last = max(f.First, 1) - 1
		c.log.Warn("channel epoch changed", "channel", s.channel, "epoch", f.Epoch, "was", s.epoch, "first", f.First)
	case !f.Recovered && f.First > 0 && s.last < f.First-1:
		// Trimmed: what lies before first is gone for good; asking for it
		// again after a reconnect would be a false alarm.
		s.last = f.First - 1
		c.log.Warn("messages lost to retention", "channel", s.channel, "from", s.askedFrom, "first", f.First)
	case f.Next > 0 && s.last >= f.Next:
		c.log.Warn("gateway is behind the client's position", "channel", s.channel, "last", s.last, "next", f.Next)
	}
	s.hasPos, s.epoch, s.next = true, f.Epoch, f.Next
	changed := !oldHas || oldLast != s.last || oldEpoch != s.epoch
	pos := Position{Offset: s.last, Epoch: s.epoch}
	firstTime := !s.firstDone
	s.firstDone = true
	c.mu.Unlock()

	if changed {
		c.save(s.channel, pos)
	}
	if s.onSubscribed != nil {
		s.onSubscribed(info)
	}
	if firstTime {
		close(s.first)
	}
}

// onMessage delivers a message to its subscription's handler, unless the
// subscription is not active on this connection or the offset was already
// delivered.
func (c *Client) onMessage(f *wire.ServerFrame) {
	c.mu.Lock()
	s := c.subs[f.Channel]
	if s == nil || s.state != subActive {
		c.mu.Unlock()
		return
	}
	if f.Offset <= s.last {
		c.mu.Unlock()
		c.log.Debug("dropped duplicate", "channel", f.Channel, "offset", f.Offset, "last", s.last)
		return
	}
	if f.Offset != s.last+1 {
		c.log.Warn("gap in offsets", "channel", f.Channel, "offset", f.Offset, "last", s.last)
	}
	m := Message{Channel: f.Channel, Offset: f.Offset, Epoch: s.epoch, Data: f.Data, Replayed: f.Offset < s.next}
	c.mu.Unlock()

	s.handler(m)

	c.mu.Lock()
	s.last = f.Offset
	pos := Position{Offset: s.last, Epoch: s.epoch}
	c.mu.Unlock()
	c.save(s.channel, pos)
}

func (c *Client) save(channel string, pos Position) {
	if err := c.store.Save(channel, pos); err != nil {
		c.log.Warn("save position", "channel", channel, "offset", pos.Offset, "err", err)
	}
}

// onJoinLeave hands a join or leave frame to its subscription.
func (c *Client) onJoinLeave(f *wire.ServerFrame) {
	c.mu.Lock()
	s := c.subs[f.Channel]
	c.mu.Unlock()
	if s == nil || s.onJoinLeave == nil {
		return
	}
	s.onJoinLeave(JoinLeave{Channel: f.Channel, Conn: f.Conn, User: f.User, Join: f.Op == wire.OpJoin})
}
