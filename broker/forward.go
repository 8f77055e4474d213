package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/comethq/comet/raft"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/wire"
)

// HeaderApplied, on an answer to a range read, is the Raft index the hub
// had applied when it read: the answer reflects at least every entry up to
// it. A gateway following the commit stream uses it to tell a read that is
// behind what it already streamed.
const HeaderApplied = "X-Comet-Applied"

type forwardedKey struct{}

// withForwarded marks ctx as serving a request another hub forwarded.
func withForwarded(ctx context.Context) context.Context {
	return context.WithValue(ctx, forwardedKey{}, true)
}

// awaitOtherLeader waits, for up to 3 seconds, until a hub other than this
// one is known to lead.
func (s *Service) awaitOtherLeader(ctx context.Context) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if id, _ := s.node.Leader(); id != "" && id != s.node.ID() {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Service) forwardPublish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	var out wire.PublishResponse
	if ctx.Value(forwardedKey{}) != nil {
		// One hop only: the hub that forwarded it answers the client.
		return out, fmt.Errorf("%w: this hub is not the leader either", raft.ErrNotLeader)
	}
	if id, _ := s.node.Leader(); id == s.node.ID() {
		// Still this hub, handing leadership over: nothing was stored.
		return out, fmt.Errorf("%w: leadership is being handed over; retry", raft.ErrNotLeader)
	}
	api, err := s.leaderAPI()
	if err != nil {
		return out, err
	}
	err = s.post(ctx, api, "/v1/publish", req, &out)
	return out, err
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
