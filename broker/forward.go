package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// HeaderApplied, on an answer to a range read, is the Raft index the hub
// had applied when it read: the answer reflects at least every entry up to
// it. A gateway following the commit stream uses it to tell a read that is
// behind what it already streamed.
const HeaderApplied = wire.HeaderApplied

type forwardedKey struct{}

// withForwarded marks ctx as serving a request another hub forwarded.
func withForwarded(ctx context.Context) context.Context {
	return context.WithValue(ctx, forwardedKey{}, true)
}

const (
	// leaderWait is how long a publish waits for a leader to be known
	// before it is answered unavailable: an election takes 1-3 s with the
	// default timeouts, and a hub cut off from the others never learns
	// one, so its client had better try another hub.
	leaderWait = 2 * time.Second
	// retryMin and retryMax bound the pause between two attempts of a
	// publish on the same leader; a change of leader ends the pause.
	retryMin = 20 * time.Millisecond
	retryMax = 250 * time.Millisecond
	// leaderPoll is how often a forward checks the leader, in case Raft
	// dropped the observation of a change.
	leaderPoll = 250 * time.Millisecond
)

// publishRouted stores req on this hub while it leads, and otherwise
// forwards it to the leader, following leadership until it is answered:
//
//   - A forward is abandoned as soon as another hub is known to lead (the
//     old leader may be paused or cut off and never answer), and a publish
//     that leadership left before it was stored (ErrNotLeader) is sent to
//     the new leader.
//   - A publish with an id is also sent again after an ambiguous failure
//     (leadership lost while it was in flight, a forward abandoned or cut):
//     the same id is stored once (guarantee 4). One without an id is then
//     answered ErrUnknownOutcome: only its client can decide.
//   - While no leader is known, it waits up to leaderWait for one.
//
// Attempts go one after another, never two at once. A publish another hub
// forwarded here is not forwarded again: that hub retries.
func (s *Service) publishRouted(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	dl, ok := ctx.Deadline()
	if ok && time.Until(dl) <= s.cfg.ApplyTimeout {
		return s.follow(ctx, req)
	}
	// Bound the attempts of callers without a deadline (PublishAsync). Out
	// of that time, the answer is "unavailable", not "timeout": the caller
	// set no time.
	bounded, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	res, err := s.follow(bounded, req)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: not stored in %v of attempts (%v)", raft.ErrUnknownOutcome, s.cfg.ApplyTimeout, err)
	}
	return res, err
}

// follow is publishRouted within ctx.
func (s *Service) follow(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	var zero wire.PublishResponse
	forwarded := ctx.Value(forwardedKey{}) != nil
	idempotent := req.ID != ""
	var (
		last      error
		ambiguous bool      // an attempt may have stored it
		noLeader  time.Time // since when no leader to send to is known
		pause     = retryMin
		// refused: this hub, leading, refused it (handing leadership
		// over): do not propose it again, and again, while the hand-over
		// runs; wait for the next leader.
		refused bool
	)
	for {
		select {
		case <-s.closeCh:
			// Closing: no more attempts (Close does not wait for them).
			if last != nil {
				return zero, s.gaveUp(ErrClosed, last, ambiguous)
			}
			return zero, ErrClosed
		default:
		}
		changed := s.node.LeaderChanged()
		leader, _ := s.node.Leader()
		var a attempt
		switch {
		case s.node.IsLeader() && refused:
			a.err, a.retry = last, true
		case s.node.IsLeader():
			a.res, a.err = s.publishLocal(ctx, req)
			refused = errors.Is(a.err, raft.ErrNotLeader)
			// ErrNotLeader: not stored. ErrUnknownOutcome: leadership was
			// lost while it was in flight.
			a.ambiguous = errors.Is(a.err, raft.ErrUnknownOutcome)
			a.retry = errors.Is(a.err, raft.ErrNotLeader) || (idempotent && a.ambiguous)
			if forwarded && a.retry {
				return zero, a.err // the hub that forwarded it retries
			}
		case forwarded:
			// One hop only: the hub that forwarded it answers the client.
			return zero, fmt.Errorf("%w: this hub is not the leader either", raft.ErrNotLeader)
		case leader == "" || leader == s.node.ID():
			// An election, or this hub handing leadership over.
			a.err, a.retry = ErrNoLeader, true
		default:
			a = s.forwardOnce(ctx, req, leader, changed)
		}
		if a.err == nil || !a.retry {
			return a.res, a.err
		}
		last, ambiguous = a.err, ambiguous || a.ambiguous
		if cur, _ := s.node.Leader(); cur == "" || (cur == s.node.ID() && (refused || !s.node.IsLeader())) {
			if noLeader.IsZero() {
				noLeader = time.Now()
			}
			if time.Since(noLeader) >= leaderWait {
				return zero, s.gaveUp(fmt.Errorf("%w for %v", ErrNoLeader, leaderWait), last, ambiguous)
			}
		} else {
			noLeader = time.Time{}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return zero, s.gaveUp(ctx.Err(), last, ambiguous)
		case <-s.closeCh:
			t.Stop() // answered at the top of the loop
		case <-changed:
			t.Stop()
			pause, refused = retryMin, false
		case <-t.C:
			// A hand-over that failed leaves this hub leading: try it
			// here again once in a while.
			refused = refused && pause < retryMax
			pause = min(2*pause, retryMax)
		}
	}
}

// gaveUp is the error of a publish given up for why after the attempt that
// failed with last.
func (s *Service) gaveUp(why, last error, ambiguous bool) error {
	if ambiguous && !errors.Is(why, context.DeadlineExceeded) && !errors.Is(why, context.Canceled) {
		return fmt.Errorf("%w: %v; last attempt: %v", raft.ErrUnknownOutcome, why, last)
	}
	if ambiguous {
		return fmt.Errorf("%w: the publish may or may not have been stored; last attempt: %v", why, last)
	}
	return fmt.Errorf("%w; last attempt: %v", why, last)
}

// attempt is the outcome of one try of a publish: retry says whether
// another try may follow, ambiguous whether this one may have stored it.
type attempt struct {
	res       wire.PublishResponse
	err       error
	retry     bool
	ambiguous bool
}

// forwardOnce forwards req to leader, and abandons it when another hub is
// known to lead.
func (s *Service) forwardOnce(ctx context.Context, req wire.PublishRequest, leader string, changed <-chan struct{}) attempt {
	idempotent := req.ID != ""
	api, err := s.apiOf(leader)
	if err != nil {
		return attempt{err: err, retry: true} // not registered here yet
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		moved   string // the leader that made us abandon it
		stop    = make(chan struct{})
		stopped = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		poll := time.NewTicker(leaderPoll)
		defer poll.Stop()
		for {
			select {
			case <-stop:
				return
			case <-s.closeCh:
				cancel() // Close does not wait for forwards: end it
				return
			case <-changed:
				changed = s.node.LeaderChanged()
			case <-poll.C:
			}
			// A hub that lost the leader (an election under way) keeps
			// waiting: the leader may still answer.
			if cur, _ := s.node.Leader(); cur != "" && cur != leader {
				mu.Lock()
				moved = cur
				mu.Unlock()
				cancel()
				return
			}
		}
	}()
	var out wire.PublishResponse
	err = s.client.Post(actx, api, "/v1/publish", req, &out)
	close(stop)
	<-stopped
	if err == nil {
		return attempt{res: out}
	}
	if _, ok := asAPIError(err); ok {
		// unavailable: not the leader (any more), or leadership lost
		// while committing it.
		return attempt{err: err, retry: idempotent && hubapi.Retryable(err, true), ambiguous: true}
	}
	if ctx.Err() != nil {
		return attempt{err: fmt.Errorf("%w: waiting for the leader at %s; the request may or may not have been carried out", context.DeadlineExceeded, api)}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return attempt{err: fmt.Errorf("%w: leader at %s: %v", ErrNoLeader, api, err), retry: true}
	}
	mu.Lock()
	why := fmt.Sprintf("forwarding to the leader at %s failed: %v", api, err)
	if moved != "" {
		why = fmt.Sprintf("%s stopped leading while the publish was forwarded to it at %s (%s leads now)", leader, api, moved)
	}
	mu.Unlock()
	return attempt{err: fmt.Errorf("%w: %s", raft.ErrUnknownOutcome, why), retry: idempotent, ambiguous: true}
}

// post sends body to another hub's API (the leader, mostly). Its error
// answers come back as *hubapi.APIError; running out of time is
// context.DeadlineExceeded; any other failure is raft.ErrUnknownOutcome,
// since the request may have been carried out before the answer was lost.
func (s *Service) post(ctx context.Context, api, path string, body, out any) error {
	err := s.client.Post(ctx, api, path, body, out)
	if _, ok := asAPIError(err); err == nil || ok {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: waiting for the leader at %s; the request may or may not have been carried out", context.DeadlineExceeded, api)
	}
	return fmt.Errorf("%w: forwarding to the leader at %s failed: %v", raft.ErrUnknownOutcome, api, err)
}

// asAPIError returns err as an *hubapi.APIError when it is one.
func asAPIError(err error) (*hubapi.APIError, bool) {
	var e *hubapi.APIError
	ok := errors.As(err, &e)
	return e, ok
}
