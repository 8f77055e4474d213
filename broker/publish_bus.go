package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// Gateways send their clients' publishes over their bus session to the
// leader (package bus: "publish" messages, answered by "ack"s). The
// session's reader hands them, in order, to a feeder of the session's own,
// which queues each for the leader's next Raft entry (the batcher, as
// PublishAsync) before it takes the next: so the publishes of a session are
// stored in the order they arrived. The reader never waits on the queue,
// and so still answers pings while the leader is busy; a gateway has at
// most bus.GatewayConfig.MaxPublishes in flight, and one that sends more
// than maxSessionPubs unanswered loses its session.

// maxSessionPubs bounds the publishes of one session waiting for room in
// the batcher's queue.
const maxSessionPubs = 1 << 16

// sessionPubs is a session's publishes on their way to the batcher.
type sessionPubs struct {
	q    []bus.Msg // under session.pubMu
	wake chan struct{}
}

// queuePublish takes a publish message off the session's reader: false
// when the session has too many waiting (it is then closed).
func (s *session) queuePublish(m bus.Msg) bool {
	s.pubMu.Lock()
	if len(s.pubs.q) >= maxSessionPubs {
		s.pubMu.Unlock()
		s.log.Warn("gateway sent more publishes than it may have in flight; closing the session", "max", maxSessionPubs)
		s.close()
		return false
	}
	s.pubs.q = append(s.pubs.q, m)
	s.pubMu.Unlock()
	select {
	case s.pubs.wake <- struct{}{}:
	default:
	}
	return true
}

// feed queues the session's publishes for the leader, in order, until the
// session ends. Those still waiting then are dropped unanswered: the
// gateway sends them again on its next session.
func (s *session) feed() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-s.pubs.wake:
		case <-s.done:
			return
		}
		s.pubMu.Lock()
		q := s.pubs.q
		s.pubs.q = nil
		s.pubMu.Unlock()
		for _, m := range q {
			if ctx.Err() != nil {
				return
			}
			id := m.ID
			s.r.s.publishLeader(ctx, m.Channel, m.Data, m.Key, func(res wire.PublishResponse, err error) {
				ack := bus.Msg{Type: bus.TypeAck, ID: id}
				if err != nil {
					ack.Error = &wire.Error{Code: ErrorCode(err), Message: err.Error()}
					// Too many ids held: sending it again at once would
					// only be refused again; the client retries later.
					ack.Final = errors.Is(err, log.ErrTooManyIDs)
				} else {
					ack.Channel, ack.Offset, ack.Epoch, ack.Duplicate = res.Channel, res.Offset, res.Epoch, res.Duplicate
				}
				s.push(ack.Encode())
			})
		}
	}
}

// publishLeader stores a publish on this hub, the leader, as PublishAsync
// does, but never forwards it: on a hub that does not lead, or that loses
// the lead before the publish is stored, done gets an unavailable error
// (raft.ErrNotLeader, raft.ErrUnknownOutcome), and the gateway sends it
// again to the new leader. It returns once the publish is queued (waiting
// for room while ctx lasts) or refused.
func (s *Service) publishLeader(ctx context.Context, channel string, data json.RawMessage, id string, done func(wire.PublishResponse, error)) {
	start := time.Now()
	finish := func(res wire.PublishResponse, err error) {
		s.metrics.observePublish(start, err)
		done(res, err)
	}
	data, err := s.checkPublish(channel, data, id)
	if err != nil {
		finish(wire.PublishResponse{}, err)
		return
	}
	if !s.node.IsLeader() {
		finish(wire.PublishResponse{}, fmt.Errorf("%w: this hub no longer leads", raft.ErrNotLeader))
		return
	}
	if err := s.queueLocal(ctx, channel, data, id, finish); err != nil {
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w: the session ended", ErrClosed)
		}
		finish(wire.PublishResponse{}, err)
	}
}
