package hubapi

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// Hubs is a set of hubs, one of them preferred: calls go to it first and
// fail over to the others; a commit stream that opens elsewhere moves the
// preference there. It is safe for concurrent use.
type Hubs struct {
	addrs   []string
	client  *Client
	stream  *http.Client // commit streams: no overall timeout
	current atomic.Int64 // index in addrs of the preferred hub
	// idle is how long a stream may stay silent (hubs send a heartbeat
	// every second) while it is read before it is taken for dead.
	idle time.Duration
}

// NewHubs returns the hubs at the API addresses (host:port) addrs, starting
// with a random one. Each call is bounded by timeout; at most maxConns
// connections are open to one hub.
func NewHubs(addrs []string, timeout time.Duration, maxConns int) (*Hubs, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no hub addresses")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("hub address %q: want host:port: %v", a, err)
		}
	}
	h := &Hubs{
		addrs:  append([]string(nil), addrs...),
		client: NewClient(timeout, maxConns),
		stream: &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: timeout}},
		idle:   5 * time.Second,
	}
	h.current.Store(int64(rand.IntN(len(addrs))))
	return h, nil
}

// SetSecret makes every request carry the hubs' secret (--secret). Call it
// before the first request.
func (h *Hubs) SetSecret(secret string) { h.client.Secret = secret }

// Client is the client the calls go through.
func (h *Hubs) Client() *Client { return h.client }

// CloseIdleConnections closes the connections not in use.
func (h *Hubs) CloseIdleConnections() {
	h.client.HTTP.CloseIdleConnections()
	h.stream.CloseIdleConnections()
}

// Order returns the addresses, the preferred one first.
func (h *Hubs) Order() []string {
	start := int(h.current.Load())
	out := make([]string, 0, len(h.addrs))
	for i := range h.addrs {
		out = append(out, h.addrs[(start+i)%len(h.addrs)])
	}
	return out
}

// Failed tells h that addr failed: if it is the preferred hub, the next
// calls start with another one.
func (h *Hubs) Failed(addr string) {
	cur := int(h.current.Load())
	if h.addrs[cur] == addr {
		h.current.CompareAndSwap(int64(cur), int64((cur+1)%len(h.addrs)))
	}
}

// Publish tries the preferred hub, then the others when the request
// certainly did not reach a hub, or when it carries an idempotency id
// (a retry is then harmless). It leaves the preference alone: only the
// commit stream moves it (a gateway reads from the hub it streams from).
func (h *Hubs) Publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	var out wire.PublishResponse
	var err error
	for _, addr := range h.Order() {
		err = h.client.Post(ctx, addr, "/v1/publish", req, &out)
		if err == nil || !Retryable(err, req.ID != "") || ctx.Err() != nil {
			return out, err
		}
	}
	return out, err
}

// Applied returns the applied Raft index of the first hub that answers:
// a position of the commit stream that is "now".
func (h *Hubs) Applied(ctx context.Context) (uint64, error) {
	var err error
	for _, addr := range h.Order() {
		var st wire.ClusterStatus
		if err = h.client.Get(ctx, addr, "/v1/cluster?local=1", &st); err == nil {
			return st.AppliedIndex, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, err
}

// Stream opens the commit stream from Raft index from (0: from now, which
// its first line states) on the preferred hub, or the next one that
// answers, and makes that hub the preferred one.
func (h *Hubs) Stream(ctx context.Context, from uint64) (*Stream, error) {
	var err error
	start := int(h.current.Load())
	for i := range h.addrs {
		n := (start + i) % len(h.addrs)
		var s *Stream
		if s, err = h.openStream(ctx, h.addrs[n], from); err == nil {
			h.current.Store(int64(n))
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
	}
	// None answered: start with the next one next time.
	h.current.Store(int64((start + 1) % len(h.addrs)))
	return nil, err
}

// Retryable reports whether a failed call may be tried on another hub:
// when the hub answered "unavailable" (no leader, shutting down) or could
// not be reached, and, for a call that is not idempotent, only when the
// request cannot have been received.
func Retryable(err error, idempotent bool) bool {
	var api *APIError
	if errors.As(err, &api) {
		return api.Body.Code == wire.CodeUnavailable && idempotent
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return idempotent
}
