package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/comethq/comet/wire"
)

// headerForwarded marks a request forwarded by a hub, so that a hub that is
// not the leader either answers instead of forwarding again.
const headerForwarded = "X-Comet-Forwarded"

// APIError is an error answer from another hub's API.
type APIError struct {
	Status int
	Body   wire.Error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("hub answered %d %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

func (s *Service) forwardPublish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	var out wire.PublishResponse
	api, err := s.leaderAPI()
	if err != nil {
		return out, err
	}
	err = s.post(ctx, api, "/v1/publish", req, &out)
	return out, err
}

// post sends body as JSON to another hub's API and decodes a 2xx answer
// into out (when not nil).
func (s *Service) post(ctx context.Context, api, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(headerForwarded, s.node.ID())
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: forward to leader at %s: %v", ErrNoLeader, api, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: read answer of %s: %v", ErrNoLeader, api, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.Body) != nil {
			e.Body = wire.Error{Code: wire.CodeUnavailable, Message: string(data)}
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", api, err)
	}
	return nil
}

// asAPIError returns err as an *APIError when it is one.
func asAPIError(err error) (*APIError, bool) {
	var e *APIError
	ok := errors.As(err, &e)
	return e, ok
}
