package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/comethq/comet/wire"
)

// headerForwarded marks a request forwarded by a hub, so that a hub that is
// not the leader either answers instead of forwarding again.
const headerForwarded = "X-Comet-Forwarded"

func (s *Service) forwardPublish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	var out wire.PublishResponse
	api, err := s.leaderAPI()
	if err != nil {
		return out, err
	}
	err = s.post(ctx, api, "/v1/publish", req, &out)
	return out, err
}

// post sends body to another hub's API (the leader, mostly). A failure to
// reach it is ErrNoLeader; its error answers come back as *APIError.
func (s *Service) post(ctx context.Context, api, path string, body, out any) error {
	err := s.client.Post(ctx, api, path, body, out)
	if _, ok := asAPIError(err); err != nil && !ok {
		return fmt.Errorf("%w: forward to leader at %s: %v", ErrNoLeader, api, err)
	}
	return err
}

// asAPIError returns err as an *APIError when it is one.
func asAPIError(err error) (*APIError, bool) {
	var e *APIError
	ok := errors.As(err, &e)
	return e, ok
}
