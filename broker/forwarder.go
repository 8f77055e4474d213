package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

const (
	// forwardLanes is how many batches of publishes a hub forwards to the
	// leader at once: publishes go to a lane by their channel, and each
	// lane has one request in flight.
	forwardLanes = 4
	// forwardMaxBytes bounds the publishes (data, channel, id) of one
	// forwarded batch, well under MaxBatchBytes once encoded.
	forwardMaxBytes = 4 << 20
	// forwardQueueFactor times Config.QueueSize is how many publishes may
	// wait to be forwarded; past it, PublishAsync refuses with ErrBusy.
	forwardQueueFactor = 4
)

// ErrBusy is returned for a publish refused because too many publishes are
// already waiting to be forwarded to the leader. Clients get
// `unavailable`: retry.
var ErrBusy = errors.New("too many publishes waiting for the leader")

// forwarder takes the publishes of PublishAsync that this hub cannot store
// itself (a follower, or a leader that lost leadership while storing them)
// and sends them to the leader in batches, as the batch form of POST
// /v1/publish, with no goroutine per publish:
//
//   - A publish goes to one of forwardLanes lanes by its channel. A lane
//     sends whatever it holds (up to MaxBatchPublishes publishes,
//     forwardMaxBytes) as one request, waits for its answer, then sends the
//     next: publishes of one channel keep the order they were given in.
//   - Leadership is followed as in publishRouted (forward.go): a request
//     is abandoned when another hub is known to lead; publishes with an
//     id are then sent again, first, to the new leader (the same id is
//     stored once); those without are answered raft.ErrUnknownOutcome. A
//     publish answered unavailable by the leader is retried the same way
//     when it has an id. While no leader is known a lane waits up to
//     leaderWait, and when this hub becomes the leader a lane queues what
//     it holds on this hub.
//   - A publish's attempts end at its context's deadline, or ApplyTimeout
//     after it was given when that comes first.
//
// The lanes run under Service.Run; when they stop (Close), what they hold
// is answered ErrClosed.
type forwarder struct {
	s     *Service
	limit int // publishes waiting, at most

	mu     sync.Mutex
	closed bool
	queued int // in every lane's q
	lanes  [forwardLanes]lane
}

// lane is one queue of publishes to forward.
type lane struct {
	q    []*fwdItem    // under forwarder.mu
	kick chan struct{} // capacity 1: q may have grown
}

// fwdItem is one publish on its way through the forwarder.
type fwdItem struct {
	ctx  context.Context
	req  wire.PublishRequest
	size int
	done func(wire.PublishResponse, error)
	// deadline ends the attempts; bounded: it is ours (the caller's
	// context had none, or a later one), and running out of it is
	// "unavailable" rather than "timeout".
	deadline time.Time
	bounded  bool
	last     error // the error of the last attempt
	// ambiguous: an attempt may have stored it; refused: this hub, leading,
	// refused it (handing leadership over), so wait before queuing it here
	// again.
	ambiguous, refused bool
}

func newForwarder(s *Service) *forwarder {
	f := &forwarder{s: s, limit: forwardQueueFactor * s.cfg.QueueSize}
	for i := range f.lanes {
		f.lanes[i].kick = make(chan struct{}, 1)
	}
	return f
}

// newItem makes the forwarder item of a checked publish.
func (s *Service) newItem(ctx context.Context, req wire.PublishRequest, done func(wire.PublishResponse, error)) *fwdItem {
	it := &fwdItem{ctx: ctx, req: req, done: done, size: len(req.Channel) + 6*len(req.ID) + len(req.Data) + 64}
	it.deadline, it.bounded = time.Now().Add(s.cfg.ApplyTimeout), true
	if dl, ok := ctx.Deadline(); ok && dl.Before(it.deadline) {
		it.deadline, it.bounded = dl, false
	}
	return it
}

// add queues it on its lane, or answers it at once when the forwarder is
// closed or full. It never blocks: answers may publish again.
func (f *forwarder) add(it *fwdItem) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(it.req.Channel))
	l := &f.lanes[h.Sum32()%forwardLanes]
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		f.finish(it, ErrClosed)
		return
	case f.queued >= f.limit:
		f.mu.Unlock()
		it.done(wire.PublishResponse{}, fmt.Errorf("%w: %d are", ErrBusy, f.limit))
		return
	}
	l.q = append(l.q, it)
	f.queued++
	f.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// finish answers it, given up for why.
func (f *forwarder) finish(it *fwdItem, why error) {
	if it.last != nil {
		why = f.s.gaveUp(why, it.last, it.ambiguous)
	}
	it.done(wire.PublishResponse{}, why)
}

// run runs the lanes until ctx ends, then answers what they hold with
// ErrClosed.
func (f *forwarder) run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range f.lanes {
		wg.Add(1)
		go func() { defer wg.Done(); f.runLane(ctx, &f.lanes[i]) }()
	}
	wg.Wait()
	f.close()
}

// close stops taking publishes and answers those queued with ErrClosed. It
// is idempotent, and does nothing on a nil forwarder.
func (f *forwarder) close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.closed = true
	var left []*fwdItem
	for i := range f.lanes {
		left = append(left, f.lanes[i].q...)
		f.lanes[i].q = nil
	}
	f.queued = 0
	f.mu.Unlock()
	for _, it := range left {
		f.finish(it, ErrClosed)
	}
}

// take removes from l's queue the publishes of the next batch, after those
// of carry (sent again), within the batch limits.
func (f *forwarder) take(l *lane, carry []*fwdItem) []*fwdItem {
	batch := carry
	size := 0
	for _, it := range batch {
		size += it.size
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, it := range l.q {
		if len(batch) >= MaxBatchPublishes || (len(batch) > 0 && size+it.size > forwardMaxBytes) {
			break
		}
		batch = append(batch, it)
		size += it.size
		n++
	}
	clear(l.q[:n])
	l.q = l.q[n:]
	f.queued -= n
	if len(l.q) > 0 {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return batch
}

// runLane forwards l's publishes, one batch at a time, until ctx ends.
func (f *forwarder) runLane(ctx context.Context, l *lane) {
	s := f.s
	var (
		carry    []*fwdItem // to send again, before the queue
		pause    = retryMin
		noLeader time.Time // since when no leader to send to is known
	)
	for {
		if len(carry) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-l.kick:
			}
		}
		if ctx.Err() != nil {
			for _, it := range carry {
				f.finish(it, ErrClosed)
			}
			return
		}
		batch := f.expire(f.take(l, carry))
		carry = nil
		if len(batch) == 0 {
			continue
		}
		changed := s.node.LeaderChanged()
		leader, _ := s.node.Leader()
		var retry []*fwdItem
		switch {
		case s.node.IsLeader():
			for _, it := range batch {
				if it.refused {
					it.refused = false
					retry = append(retry, it)
					continue
				}
				s.queueItem(it)
			}
		case leader == "" || leader == s.node.ID():
			// An election, or this hub handing leadership over.
			for _, it := range batch {
				it.last = ErrNoLeader
			}
			retry = batch
		default:
			retry = f.send(ctx, batch, leader, changed)
		}
		if len(retry) == 0 {
			pause, noLeader = retryMin, time.Time{}
			continue
		}
		if cur, _ := s.node.Leader(); cur == "" || (cur == s.node.ID() && !s.node.IsLeader()) {
			if noLeader.IsZero() {
				noLeader = time.Now()
			}
			if time.Since(noLeader) >= leaderWait {
				for _, it := range retry {
					f.finish(it, fmt.Errorf("%w for %v", ErrNoLeader, leaderWait))
				}
				noLeader = time.Time{}
				continue
			}
		} else {
			noLeader = time.Time{}
		}
		carry = retry
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop() // answered at the top of the loop
		case <-changed:
			t.Stop()
			pause = retryMin
		case <-t.C:
			pause = min(2*pause, retryMax)
		}
	}
}

// expire answers the publishes of batch whose caller left or whose time
// is up, and returns the others.
func (f *forwarder) expire(batch []*fwdItem) []*fwdItem {
	now := time.Now()
	keep := batch[:0]
	for _, it := range batch {
		switch {
		case it.ctx.Err() != nil:
			f.finish(it, it.ctx.Err())
		case now.After(it.deadline) && it.bounded:
			why := fmt.Errorf("%w: not stored in %v of attempts", ErrNoLeader, f.s.cfg.ApplyTimeout)
			if it.ambiguous {
				why = fmt.Errorf("%w: not stored in %v of attempts", raft.ErrUnknownOutcome, f.s.cfg.ApplyTimeout)
			}
			f.finish(it, why)
		case now.After(it.deadline):
			f.finish(it, context.DeadlineExceeded)
		default:
			keep = append(keep, it)
		}
	}
	return keep
}

// queueItem queues it on this hub, the leader, as PublishAsync does; a
// publish that leadership leaves before it is stored (or, with an id,
// while it is in flight) comes back to the forwarder.
func (s *Service) queueItem(it *fwdItem) {
	err := s.queueLocal(it.ctx, it.req.Channel, it.req.Data, it.req.ID, func(res wire.PublishResponse, err error) {
		notLeader := errors.Is(err, raft.ErrNotLeader)
		lost := it.req.ID != "" && errors.Is(err, raft.ErrUnknownOutcome)
		if (notLeader || lost) && it.ctx.Value(forwardedKey{}) == nil {
			// The hub that forwarded it retries a forwarded one.
			it.last, it.refused = err, notLeader
			it.ambiguous = it.ambiguous || lost
			s.fwd.add(it)
			return
		}
		it.done(res, err)
	})
	if err != nil {
		it.done(wire.PublishResponse{}, err)
	}
}

// send forwards batch to leader as one batch publish, answers the
// publishes that are done, and returns those to send again. The request is
// abandoned when another hub is known to lead, or when ctx ends (Close).
func (f *forwarder) send(ctx context.Context, batch []*fwdItem, leader string, changed <-chan struct{}) (retry []*fwdItem) {
	s := f.s
	api, err := s.apiOf(leader)
	if err != nil {
		for _, it := range batch {
			it.last = err // not registered here yet
		}
		return batch
	}
	reqs := make([]wire.PublishRequest, len(batch))
	deadline := batch[0].deadline
	for i, it := range batch {
		reqs[i] = it.req
		if it.deadline.After(deadline) {
			deadline = it.deadline
		}
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	moved := watchLeader(s, actx, cancel, leader, changed)
	var out []wire.PublishResult
	err = s.client.Post(actx, api, "/v1/publish", reqs, &out)
	cancel()
	newLeader := <-moved
	if err == nil && len(out) != len(batch) {
		err = fmt.Errorf("%w: the leader at %s answered %d results to %d publishes", raft.ErrUnknownOutcome, api, len(out), len(batch))
	}
	if err == nil {
		for i, it := range batch {
			r := out[i]
			e := r.Err()
			switch {
			case e == nil:
				it.done(r.Response(), nil)
			case e.Code == wire.CodeUnavailable && it.req.ID != "":
				it.last = &hubapi.APIError{Status: statusOf(e.Code), Body: *e}
				it.ambiguous = true
				retry = append(retry, it)
			default:
				it.done(wire.PublishResponse{}, &hubapi.APIError{Status: statusOf(e.Code), Body: *e})
			}
		}
		return retry
	}
	// The whole request failed: say why, and whether it may have been
	// carried out.
	var (
		op        *net.OpError
		apiErr, _ = asAPIError(err)
		ambiguous = true
		why       error
	)
	switch {
	case apiErr != nil:
		why = err
		if !hubapi.Retryable(err, true) {
			// Refused whole: nothing stored, nothing to retry.
			for _, it := range batch {
				it.done(wire.PublishResponse{}, err)
			}
			return nil
		}
	case ctx.Err() != nil:
		for _, it := range batch {
			f.finish(it, ErrClosed)
		}
		return nil
	case errors.As(err, &op) && op.Op == "dial":
		why, ambiguous = fmt.Errorf("%w: leader at %s: %v", ErrNoLeader, api, err), false
	case newLeader != "":
		why = fmt.Errorf("%w: %s stopped leading while publishes were forwarded to it at %s (%s leads now)", raft.ErrUnknownOutcome, leader, api, newLeader)
	case actx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
		why = fmt.Errorf("%w: waiting for the leader at %s; the publish may or may not have been stored", context.DeadlineExceeded, api)
	default:
		why = fmt.Errorf("%w: forwarding to the leader at %s failed: %v", raft.ErrUnknownOutcome, api, err)
	}
	for _, it := range batch {
		it.last = why
		it.ambiguous = it.ambiguous || ambiguous
		if ambiguous && it.req.ID == "" {
			// Only its client can decide.
			it.done(wire.PublishResponse{}, why)
			continue
		}
		retry = append(retry, it)
	}
	return retry
}

// watchLeader cancels a request to leader when another hub is known to
// lead, and then says which on the channel it returns (closed, with "" or
// the new leader, once ctx ends).
func watchLeader(s *Service, ctx context.Context, cancel context.CancelFunc, leader string, changed <-chan struct{}) <-chan string {
	moved := make(chan string, 1)
	go func() {
		defer close(moved)
		poll := time.NewTicker(leaderPoll)
		defer poll.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				changed = s.node.LeaderChanged()
			case <-poll.C:
			}
			// A hub that lost the leader (an election under way) keeps
			// waiting: the leader may still answer.
			if cur, _ := s.node.Leader(); cur != "" && cur != leader {
				moved <- cur
				cancel()
				return
			}
		}
	}()
	return moved
}

// statusOf is the HTTP status that answers an error code.
func statusOf(code string) int {
	switch code {
	case wire.CodeBadRequest:
		return http.StatusBadRequest
	case wire.CodeNotFound:
		return http.StatusNotFound
	case wire.CodeForbidden:
		return http.StatusForbidden
	case wire.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case wire.CodeTimeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusServiceUnavailable
	}
}
