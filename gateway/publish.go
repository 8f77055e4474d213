package gateway

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/comethq/comet/wire"
)

// Publisher stores clients' publishes asynchronously.
type Publisher interface {
	// Publish hands req over, waiting only for room while ctx lasts, and
	// calls done once with the outcome: the ack (Duplicate set when req.ID
	// was stored before), or an error (a *wire.Error carries its code).
	// done is called from another goroutine and must not block. Publishes
	// of one caller to one channel are stored in the order of the calls.
	// req.ID is never empty. A publish not answered by deadline is answered
	// timeout (it may be stored) or unavailable.
	Publish(ctx context.Context, req wire.PublishRequest, deadline time.Time, done func(wire.PublishResponse, error)) error
}

// publish hands a publish frame to the Publisher (the hub leader, through
// the bus session) and answers with an ack or an error frame. A connection
// has at most Config.MaxPublishesInFlight publishes in flight; past that
// the gateway stops reading from it. Its publishes are handed over in the
// order they came, so that they are stored in that order. A publish
// without an id is given one of the gateway's own, so that the gateway may
// send it again after a change of leader without storing it twice.
func (c *conn) publish(f wire.ClientFrame) {
	if limit := c.maxMessageBytes(f.Channel); len(f.Data) > limit {
		c.sendError(f.ID, wire.CodeTooLarge, fmt.Sprintf("data is %d bytes, more than %d", len(f.Data), limit))
		return
	}
	select {
	case c.pubs <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	start := time.Now()
	req := wire.PublishRequest{Channel: f.Channel, Data: f.Data, ID: f.ID}
	if req.ID == "" {
		req.ID = c.s.pubPrefix + strconv.FormatUint(c.s.pubSeq.Add(1), 36)
	}
	done := func(res wire.PublishResponse, err error) {
		<-c.pubs
		if c.ctx.Err() != nil {
			return // the client is gone
		}
		if err != nil {
			c.s.m.publishesErr.Inc()
			c.s.published.Add(1)
			c.sendError(f.ID, errorCode(err), publishError(err))
			return
		}
		c.s.m.publishesOK.Inc()
		c.s.published.Add(1)
		c.s.m.publishTime.Observe(time.Since(start).Seconds())
		c.noteAck(res)
		c.enqueue(wire.AppendAck(make([]byte, 0, 64+len(f.ID)+len(res.Channel)+len(res.Epoch)),
			wire.Ack{Op: wire.OpAck, ID: f.ID, Channel: res.Channel, Offset: res.Offset, Epoch: res.Epoch, Duplicate: res.Duplicate}))
	}
	if c.s.cfg.Publisher == nil {
		go c.publishVia(req, done)
		return
	}
	if err := c.s.cfg.Publisher.Publish(c.ctx, req, start.Add(c.s.cfg.PublishTimeout), done); err != nil {
		done(wire.PublishResponse{}, err)
	}
}

// publishVia publishes through Hub.Publish, waiting for the answer.
func (c *conn) publishVia(req wire.PublishRequest, done func(wire.PublishResponse, error)) {
	ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.PublishTimeout)
	defer cancel()
	done(c.s.hub.Publish(ctx, req))
}
