package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/comethq/comet/wire"
)

// History limits of the client protocol's history op.
const (
	// DefaultHistoryLimit is a history page's size when the client gives
	// no limit.
	DefaultHistoryLimit = 100
	// MaxHistoryLimit is the largest limit a client may ask for.
	MaxHistoryLimit = 1000
	// maxAckedChannels bounds the channels a connection remembers its
	// latest acknowledged offset of (see historyFloor).
	maxAckedChannels = 1000
	// historyWait bounds how long a history read waits for a hub that has
	// caught up with what the connection already saw.
	historyWait = 5 * time.Second
)

// ackedOffset is the latest offset a connection's publish to a channel was
// acknowledged with, in its epoch.
type ackedOffset struct {
	epoch  string
	offset uint64
}

// noteAck remembers a publish's ack, for historyFloor.
func (c *conn) noteAck(res wire.PublishResponse) {
	c.amu.Lock()
	defer c.amu.Unlock()
	a, ok := c.acked[res.Channel]
	if ok && a.epoch == res.Epoch && a.offset >= res.Offset {
		return
	}
	if !ok && len(c.acked) >= maxAckedChannels {
		for ch := range c.acked { // forget one, any
			delete(c.acked, ch)
			break
		}
	}
	if c.acked == nil {
		c.acked = make(map[string]ackedOffset)
	}
	c.acked[res.Channel] = ackedOffset{res.Epoch, res.Offset}
}

// historyFloor is the epoch and the least next offset a history answer for
// channel must show so that it holds everything the connection has seen
// of it: the messages this gateway has taken from the commit stream (so
// every message already delivered), and the connection's own acknowledged
// publishes. A zero floor asks for nothing.
func (c *conn) historyFloor(channel string) (epoch string, next uint64) {
	c.amu.Lock()
	if a, ok := c.acked[channel]; ok {
		epoch, next = a.epoch, a.offset+1
	}
	c.amu.Unlock()
	c.s.mu.Lock()
	ch := c.s.channels[channel]
	c.s.mu.Unlock()
	if ch != nil {
		ch.mu.Lock()
		if ch.known && (epoch == "" || epoch == ch.epoch) && ch.next > next {
			epoch, next = ch.epoch, ch.next
		}
		ch.mu.Unlock()
	}
	return epoch, next
}

// history answers a history frame from a hub's log. The answer holds at
// least every message the connection has been sent or had acknowledged on
// the channel (historyFloor): a hub behind that is asked again.
func (c *conn) history(f wire.ClientFrame) {
	q := wire.HistoryQuery{From: 1, Limit: DefaultHistoryLimit, Reverse: f.Reverse}
	if f.Limit != nil {
		if *f.Limit > MaxHistoryLimit {
			c.sendError(f.ID, wire.CodeBadRequest, fmt.Sprintf("limit %d is over %d", *f.Limit, MaxHistoryLimit))
			return
		}
		q.Limit = int(*f.Limit)
	}
	if f.Since != nil {
		q.From = *f.Since + 1
	}
	if f.Before != nil {
		q.Before = *f.Before
	}
	if f.SinceTime != "" {
		q.SinceTime, _ = time.Parse(time.RFC3339Nano, f.SinceTime) // checked by wire
	}
	select {
	case c.reqs <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	epoch, floor := c.historyFloor(f.Channel)
	go func() {
		defer func() { <-c.reqs }()
		res, err := c.readHistory(f.Channel, q, epoch, floor)
		if c.ctx.Err() != nil {
			return // the client is gone
		}
		if err != nil {
			c.sendError(f.ID, errorCode(err), err.Error())
			return
		}
		c.enqueue(appendHistory(nil, f.ID, f.Channel, res))
	}()
}

// readHistory reads q from the hubs until an answer of epoch reaches
// floor (or is of another epoch: the channel was reset), for historyWait.
func (c *conn) readHistory(channel string, q wire.HistoryQuery, epoch string, floor uint64) (HistoryPage, error) {
	ctx, cancel := context.WithTimeout(c.ctx, historyWait)
	defer cancel()
	backoff := newBackoff(5*time.Millisecond, 200*time.Millisecond)
	for {
		res, err := c.s.hub.History(ctx, channel, q)
		switch {
		case err == nil && (res.Epoch != epoch || res.Next >= floor):
			return res, nil
		case err != nil && ctx.Err() == nil && errorCode(err) != wire.CodeUnavailable:
			return res, err // bad_request, forbidden, ...: not worth a retry
		case ctx.Err() != nil:
			if err == nil {
				err = fmt.Errorf("no hub has caught up with offset %d of %s yet: retry", floor-1, channel)
			}
			return res, &wire.Error{Code: wire.CodeUnavailable, Message: "history: " + err.Error()}
		}
		backoff.wait(ctx)
	}
}

// appendHistory appends the history answer of page to b: a wire.History
// object whose messages are page.Messages as the hub wrote them.
func appendHistory(b []byte, id, channel string, page HistoryPage) []byte {
	b = append(b, `{"op":"history"`...)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `,"channel":"`...)
	b = append(b, channel...) // a valid name needs no escaping
	b = append(b, `","epoch":`...)
	b = appendJSONString(b, page.Epoch)
	b = append(b, `,"first":`...)
	b = strconv.AppendUint(b, page.First, 10)
	b = append(b, `,"next":`...)
	b = strconv.AppendUint(b, page.Next, 10)
	b = append(b, `,"messages":`...)
	b = append(b, page.Messages...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}
