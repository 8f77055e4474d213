package bus

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/comethq/comet/wire"
)

// Publish is a client's publish as a gateway hands it to the router.
type Publish struct {
	Channel string
	// Key is its idempotency id. It is required: a publish not yet
	// acknowledged is sent again on the next session, and the key makes it
	// stored once. (A gateway gives a client's publish without an id one
	// of its own.)
	Key string
	// Data is the message, compact JSON.
	Data json.RawMessage
	// Deadline is when to give up: the publish is then answered timeout
	// (it may be stored) or unavailable (it was never sent).
	Deadline time.Time
}

// ErrNoPublish is the error of publishes given to a router of an earlier
// release, which does not take them (its welcome lacks CapPublish): the
// caller publishes another way (the hub API).
var ErrNoPublish = errors.New("bus: the router does not take publishes")

// Errors publishes are answered with, besides the router's own.
var (
	errPubTimeout = &wire.Error{Code: wire.CodeTimeout,
		Message: "no answer from the hub leader in time; the message may be stored: retry with the same id"}
	errPubNotSent = &wire.Error{Code: wire.CodeUnavailable,
		Message: "no session to the hub leader in time; the message was not stored"}
)

// Backoff of a publish the router refused as unavailable (no leader, a
// full disk): it is sent again after this, doubling, until its deadline.
const (
	pubRetryMin = 20 * time.Millisecond
	pubRetryMax = time.Second
)

// pubOp is a publish in flight.
type pubOp struct {
	seq      uint64
	msg      []byte // the encoded publish message
	deadline time.Time
	done     func(wire.PublishResponse, error)
	sent     bool      // sent at least once: it may be stored
	retryAt  time.Time // refused as unavailable: not sent again before then
	attempts int
	finished bool
}

// pubState is the Gateway's publishes in flight, under Gateway.pmu.
type pubState struct {
	ops      []*pubOp // by seq; finished ones leave from the head
	byID     map[uint64]*pubOp
	seq      uint64
	retrying int  // ops with a retryAt
	stopped  bool // Run ended: publishes are refused
}

// errPubStopped answers publishes made once Run has ended.
var errPubStopped = &wire.Error{Code: wire.CodeUnavailable, Message: "the gateway's session to the hub leader has stopped"}

// Publish hands p to the router, and calls done once with the outcome:
// the ack, or a *wire.Error (the router's, or timeout or unavailable at
// p.Deadline), or ErrNoPublish when the router of the current session does
// not take publishes. It waits only for room (at most
// GatewayConfig.MaxPublishes in flight), while ctx lasts; done is called
// from a goroutine of the Gateway and must not block.
//
// Publishes are sent in the order of the calls to Publish, on the session
// up at the time or on the next one; each not answered when its session
// ends is sent again, in the same order, on the next session. The router
// stores the publishes of a session in the order they arrive. So the
// publishes of one caller to one channel are stored in the order of its
// calls, across changes of leader; the exception is a publish the router
// refuses as unavailable while later ones are stored (it is sent again
// after them).
func (g *Gateway) Publish(ctx context.Context, p Publish, done func(wire.PublishResponse, error)) error {
	if p.Key == "" {
		return &wire.Error{Code: wire.CodeBadRequest, Message: "bus: a publish needs a key"}
	}
	if s := g.current(); s != nil && !s.pubs {
		return ErrNoPublish
	}
	select {
	case g.room <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.pmu.Lock()
	if g.ps.stopped {
		g.pmu.Unlock()
		<-g.room
		return errPubStopped
	}
	g.ps.seq++
	op := &pubOp{seq: g.ps.seq, deadline: p.Deadline, done: done}
	op.msg = (&Msg{Type: TypePublish, ID: op.seq, Channel: p.Channel, Key: p.Key, Data: p.Data}).Encode()
	g.ps.ops = append(g.ps.ops, op)
	g.ps.byID[op.seq] = op
	g.pmu.Unlock()
	g.wakePublishes()
	return nil
}

// InFlight returns how many publishes wait for an answer.
func (g *Gateway) InFlight() int {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return len(g.ps.byID)
}

func (g *Gateway) wakePublishes() {
	select {
	case g.pwake <- struct{}{}:
	default:
	}
}

// takePublishes appends to batch the publishes to send on s now: those not
// sent on s yet, in order, and those whose retry time has come.
func (g *Gateway) takePublishes(s *gwSession, batch [][]byte, now time.Time) [][]byte {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	ops := g.ps.ops
	i := sort.Search(len(ops), func(i int) bool { return ops[i].seq > s.sentSeq })
	if g.ps.retrying > 0 {
		for _, op := range ops[:i] {
			if !op.finished && !op.retryAt.IsZero() && !now.Before(op.retryAt) {
				op.retryAt = time.Time{}
				g.ps.retrying--
				batch = append(batch, op.msg)
			}
		}
	}
	for _, op := range ops[i:] {
		if op.finished {
			continue
		}
		if !op.retryAt.IsZero() { // a new session: no need to wait
			op.retryAt = time.Time{}
			g.ps.retrying--
		}
		op.sent = true
		batch = append(batch, op.msg)
	}
	if len(ops) > 0 {
		s.sentSeq = ops[len(ops)-1].seq
	}
	return batch
}

// outstanding reports whether publishes sent on s wait for an answer.
func (g *Gateway) outstanding(s *gwSession) bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	// The head is the oldest unanswered publish (finished ones leave the
	// head at once), and publishes are sent in order.
	return len(g.ps.ops) > 0 && g.ps.ops[0].seq <= s.sentSeq
}

// ack answers the publish of an ack, or schedules it to be sent again when
// the router refused it as unavailable or timed it out (its key makes that
// safe) and its deadline has not passed.
func (g *Gateway) ack(m Msg) {
	now := time.Now()
	g.pmu.Lock()
	op := g.ps.byID[m.ID]
	if op == nil || op.finished {
		g.pmu.Unlock()
		return
	}
	if m.Error != nil && !m.Final && (m.Error.Code == wire.CodeUnavailable || m.Error.Code == wire.CodeTimeout) && now.Before(op.deadline) {
		wait := pubRetryMin << min(op.attempts, 10)
		op.attempts++
		if op.retryAt.IsZero() {
			g.ps.retrying++
		}
		op.retryAt = now.Add(min(wait, pubRetryMax))
		g.pmu.Unlock()
		return
	}
	g.finishLocked(op)
	g.pmu.Unlock()
	<-g.room
	if m.Error != nil {
		op.done(wire.PublishResponse{}, m.Error)
		return
	}
	op.done(wire.PublishResponse{Channel: m.Channel, Offset: m.Offset, Epoch: m.Epoch, Duplicate: m.Duplicate}, nil)
}

// finishLocked takes op out of the publishes in flight; g.pmu is held.
func (g *Gateway) finishLocked(op *pubOp) {
	op.finished = true
	if !op.retryAt.IsZero() {
		op.retryAt = time.Time{}
		g.ps.retrying--
	}
	delete(g.ps.byID, op.seq)
	n := 0
	for n < len(g.ps.ops) && g.ps.ops[n].finished {
		n++
	}
	if n > 0 {
		clear(g.ps.ops[:n])
		g.ps.ops = g.ps.ops[n:]
		if cap(g.ps.ops) > 1024 && len(g.ps.ops) < cap(g.ps.ops)/4 {
			g.ps.ops = slices.Clone(g.ps.ops)
		}
	}
}

// expire answers the publishes whose deadline has passed: timeout when
// they were sent (they may be stored), unavailable when never.
func (g *Gateway) expire(now time.Time) {
	g.finishWhere(func(op *pubOp) bool { return !now.Before(op.deadline) }, func(op *pubOp) error {
		if op.sent {
			return errPubTimeout
		}
		return errPubNotSent
	})
}

// failAll answers every publish in flight with err (a router that does
// not take publishes).
func (g *Gateway) failAll(err error) {
	g.finishWhere(func(*pubOp) bool { return true }, func(*pubOp) error { return err })
}

// finishWhere answers the publishes in flight that match with errOf's
// error.
func (g *Gateway) finishWhere(match func(*pubOp) bool, errOf func(*pubOp) error) {
	g.pmu.Lock()
	var gone []*pubOp
	for _, op := range g.ps.ops {
		if !op.finished && match(op) {
			gone = append(gone, op)
		}
	}
	for _, op := range gone {
		g.finishLocked(op)
	}
	g.pmu.Unlock()
	for _, op := range gone {
		<-g.room
		op.done(wire.PublishResponse{}, errOf(op))
	}
}

// expireLoop runs expire every expireEvery until ctx ends.
func (g *Gateway) expireLoop(ctx context.Context) {
	t := time.NewTicker(expireEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.expire(now)
		}
	}
}

// How often deadlines are checked, and how often a session writer checks
// for retries and stalls.
var (
	expireEvery = 50 * time.Millisecond
	writerTick  = 50 * time.Millisecond
)
