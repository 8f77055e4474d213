package broker

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// ErrStreamReset is returned by Follower.Next after the reset line: the
// position is gone and the reader must resync.
var ErrStreamReset = errors.New("commit stream reset")

// Follower reads the commit stream of an in-process hub, line by line, as
// GET /v1/stream serves it over HTTP: a gateway in the same process (`comet
// standalone`) follows it without a network hop.
type Follower struct {
	s       *Stream
	from    uint64
	buf     []raft.Event
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	reset   bool
}

// Follow returns a Follower from Raft index from (0: from the next entry).
// It ends when ctx does or Close is called. Its first line says at once
// where it starts (see Next).
func (s *Stream) Follow(ctx context.Context, from uint64) *Follower {
	if from == 0 {
		_, applied, _, _ := s.Since(math.MaxUint64, 0)
		from = applied + 1
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Follower{s: s, from: from, ctx: ctx, cancel: cancel}
}

// Buffered reports how many lines Next returns without waiting.
func (f *Follower) Buffered() int { return len(f.buf) }

// Close ends the Follower: a waiting Next returns.
func (f *Follower) Close() error { f.cancel(); return nil }

// Next returns the next line: a message, a heartbeat (after a second
// without messages), or a reset; after a reset it returns ErrStreamReset.
//
// The first line is a reset (the position is gone), or a heartbeat saying
// where the stream starts, without waiting for an entry: Applied is the
// index it starts after (from-1; from now: the index this hub had applied).
// A reader that follows from now needs it: entries up to there are not on
// the stream, and its reads must reflect them.
func (f *Follower) Next() (wire.StreamLine, error) {
	if !f.started {
		f.started = true
		events, applied, _, ok := f.s.Since(f.from, 1024)
		if !ok {
			f.reset = true
			return wire.StreamLine{Reset: true, Floor: f.s.Floor(), Applied: applied}, nil
		}
		f.buf = events
		return wire.StreamLine{Applied: f.from - 1}, nil
	}
	heartbeat := time.NewTimer(streamHeartbeat)
	defer heartbeat.Stop()
	for {
		if f.reset {
			return wire.StreamLine{}, ErrStreamReset
		}
		if len(f.buf) > 0 {
			e := f.buf[0]
			f.buf = f.buf[1:]
			f.from = e.Index + 1
			t := e.Time
			return wire.StreamLine{Index: e.Index, Channel: e.Channel, Offset: e.Offset, Epoch: e.Epoch, Time: &t, Data: e.Data}, nil
		}
		events, applied, wake, ok := f.s.Since(f.from, 1024)
		if !ok {
			f.reset = true
			return wire.StreamLine{Reset: true, Floor: f.s.Floor(), Applied: applied}, nil
		}
		if len(events) > 0 {
			f.buf = events
			continue
		}
		if applied >= f.from {
			f.from = applied + 1
		}
		select {
		case <-wake:
		case <-heartbeat.C:
			return wire.StreamLine{Applied: f.from - 1}, nil
		case <-f.ctx.Done():
			return wire.StreamLine{}, f.ctx.Err()
		}
	}
}
