package hubapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// ErrStalled is returned for a publish abandoned on a hub that did not
// answer a status check while the publish waited on it (a paused or hung
// process), or knew no leader: it may or may not have been stored.
var ErrStalled = errors.New("hub stalled")

const (
	// probeAfter is how long a publish waits on a hub before checking
	// that the hub answers at all, and then again between checks.
	probeAfter = 500 * time.Millisecond
	// probeTimeout bounds that check (GET /v1/cluster?local=1).
	probeTimeout = time.Second
	// suspectFor is how long a hub that failed a publish is tried last.
	suspectFor = 3 * time.Second
	// Bounds of the pause after every hub failed a publish.
	roundPauseMin = 20 * time.Millisecond
	roundPauseMax = 500 * time.Millisecond
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
	// suspect[i] is when hub i stops being tried last by Publish (Unix
	// nanoseconds): it failed or stalled a publish.
	suspect []atomic.Int64
	probes  []probe // status checks of each hub, one at a time
}

// probe is the latest status check of one hub.
type probe struct {
	mu   sync.Mutex
	last *probeCall
}

type probeCall struct {
	done   chan struct{} // closed when the fields below are set
	ok     bool          // it answered
	leader bool          // and knew a leader
	at     time.Time
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
		addrs:   append([]string(nil), addrs...),
		client:  NewClient(timeout, maxConns),
		stream:  &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: timeout}},
		idle:    5 * time.Second,
		suspect: make([]atomic.Int64, len(addrs)),
		probes:  make([]probe, len(addrs)),
	}
	h.current.Store(int64(rand.IntN(len(addrs))))
	return h, nil
}

// SetSecret makes every request carry the hubs' secret (--secret). Call it
// before the first request.
func (h *Hubs) SetSecret(secret string) { h.client.Secret = secret }

// SetTLS makes every request go over https, verifying the hubs'
// certificates with cfg (see Client.SetTLS). Call it before the first
// request.
func (h *Hubs) SetTLS(cfg *tls.Config) {
	h.client.SetTLS(cfg)
	h.stream.Transport.(*http.Transport).TLSClientConfig = cfg
}

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

// Publish tries the preferred hub, then the others, in rounds until ctx
// ends (or the client's timeout, when ctx has no deadline), pausing
// between rounds: hubs tried last are those that failed a publish in the
// last seconds. It moves on when the request certainly did not reach a
// hub, or when it carries an idempotency id (a retry with the same id is
// stored once) and the hub answered unavailable (no leader, leadership
// lost), failed, or stalled: a publish that waits on a hub checks every
// 500ms that the hub answers a status check at all, and is abandoned when
// it does not (ErrStalled; a paused or hung hub), or, with an id, when the
// hub knows no leader (it may be cut off from the others). A publish without an id is
// not sent again once it may have been received. One publish is sent to
// one hub at a time. It leaves the preference alone: only the commit
// stream moves it (a gateway reads from the hub it streams from).
func (h *Hubs) Publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	if _, ok := ctx.Deadline(); !ok && h.client.HTTP.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.client.HTTP.Timeout)
		defer cancel()
	}
	idempotent := req.ID != ""
	pause := roundPauseMin
	for {
		var err error
		for _, i := range h.publishOrder() {
			var out wire.PublishResponse
			out, err = h.publishOn(ctx, i, req)
			if err == nil {
				h.suspect[i].Store(0)
				return out, nil
			}
			if ctx.Err() != nil || !Retryable(err, idempotent) {
				return out, err
			}
			h.suspect[i].Store(time.Now().Add(suspectFor).UnixNano())
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return wire.PublishResponse{}, err
		case <-t.C:
		}
		pause = min(2*pause, roundPauseMax)
	}
}

// publishOrder is Order by index, with the suspect hubs last.
func (h *Hubs) publishOrder() []int {
	start := int(h.current.Load())
	now := time.Now().UnixNano()
	out := make([]int, 0, len(h.addrs))
	var later []int
	for k := range h.addrs {
		i := (start + k) % len(h.addrs)
		if h.suspect[i].Load() > now {
			later = append(later, i)
		} else {
			out = append(out, i)
		}
	}
	return append(out, later...)
}

// publishOn sends req to hub i, and abandons it with ErrStalled if the hub
// stops answering health checks meanwhile.
func (h *Hubs) publishOn(ctx context.Context, i int, req wire.PublishRequest) (wire.PublishResponse, error) {
	var out wire.PublishResponse
	err := h.postOn(ctx, i, req, req.ID != "", &out)
	return out, err
}

// postOn posts body to POST /v1/publish of hub i, and abandons it with
// ErrStalled if the hub stops answering health checks meanwhile (or, for
// an idempotent body, knows no leader).
func (h *Hubs) postOn(ctx context.Context, i int, body any, idempotent bool, out any) error {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.client.Post(actx, h.addrs[i], "/v1/publish", body, out) }()
	t := time.NewTimer(probeAfter)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
		}
		ok, leader := h.check(ctx, i)
		// A hub that knows no leader may be cut off from the others and
		// wait for one in vain: a publish with an id moves on.
		if ok && (leader || !idempotent) {
			t.Reset(probeAfter)
			continue
		}
		cancel()
		if err := <-done; err == nil {
			return nil // it answered after all
		}
		why := fmt.Sprintf("did not answer a status check in %v", probeTimeout)
		if ok {
			why = "knows no leader"
		}
		return fmt.Errorf("%w: %s %s while a publish waited on it; the publish may or may not have been stored", ErrStalled, h.addrs[i], why)
	}
}

// PublishBatch publishes reqs as one batch (the batch form of POST
// /v1/publish, at most 1,000 publishes) and returns one result per
// request, in order: its offset, or its error (Code and Message). It fails
// over as Publish does, sending again only what is safe: a whole batch
// whose request certainly did not reach a hub, and otherwise only the
// publishes with an id (answered unavailable, or in a request that
// failed, stalled or was cut); a publish without an id whose outcome is
// unknown is answered with the error instead. It returns an error, and no
// results, only when no publish of the batch may have been stored: the
// batch was refused whole (a body too large, too many publishes), or ctx
// ended before any hub took it.
func (h *Hubs) PublishBatch(ctx context.Context, reqs []wire.PublishRequest) ([]wire.PublishResult, error) {
	if _, ok := ctx.Deadline(); !ok && h.client.HTTP.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.client.HTTP.Timeout)
		defer cancel()
	}
	results := make([]wire.PublishResult, len(reqs))
	pending := make([]int, len(reqs)) // indexes of reqs still to answer
	for i := range pending {
		pending[i] = i
	}
	reached := false // a request may have reached a hub
	// fail answers the pending publishes with err, or returns it when
	// nothing was reached yet.
	fail := func(err error) ([]wire.PublishResult, error) {
		if !reached {
			return nil, err
		}
		for _, k := range pending {
			if results[k].Code == "" {
				results[k] = errorResult(reqs[k].Channel, err)
			}
		}
		return results, nil
	}
	pause := roundPauseMin
	for {
		var err error
		for _, i := range h.publishOrder() {
			body := make([]wire.PublishRequest, len(pending))
			idempotent := true
			for j, k := range pending {
				body[j] = reqs[k]
				idempotent = idempotent && reqs[k].ID != ""
			}
			var out []wire.PublishResult
			err = h.postOn(ctx, i, body, idempotent, &out)
			if err == nil && len(out) != len(body) {
				err = fmt.Errorf("hub %s answered %d results to %d publishes", h.addrs[i], len(out), len(body))
			}
			if err == nil {
				reached = true
				h.suspect[i].Store(0)
				next := pending[:0]
				for j, k := range pending {
					results[k] = out[j] // the latest answer, should time run out
					if out[j].Code == wire.CodeUnavailable && reqs[k].ID != "" {
						next = append(next, k)
					}
				}
				pending = next
				if len(pending) == 0 {
					return results, nil
				}
				continue
			}
			if ctx.Err() != nil {
				return fail(err)
			}
			if Retryable(err, false) {
				// Certainly not received: all may go again.
				h.suspect[i].Store(time.Now().Add(suspectFor).UnixNano())
				continue
			}
			var api *APIError
			if errors.As(err, &api) && api.Body.Code != wire.CodeUnavailable {
				return fail(err) // refused whole
			}
			if !Retryable(err, true) {
				return fail(err)
			}
			// It may have been received: only the publishes with an id go
			// again.
			reached = true
			h.suspect[i].Store(time.Now().Add(suspectFor).UnixNano())
			next := pending[:0]
			for _, k := range pending {
				if reqs[k].ID != "" {
					next = append(next, k)
				} else {
					results[k] = errorResult(reqs[k].Channel, err)
				}
			}
			pending = next
			if len(pending) == 0 {
				return results, nil
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			if err == nil {
				err = ctx.Err()
			}
			return fail(err)
		case <-t.C:
		}
		pause = min(2*pause, roundPauseMax)
	}
}

// errorResult is the result of a publish to channel that failed with err.
func errorResult(channel string, err error) wire.PublishResult {
	var api *APIError
	if errors.As(err, &api) {
		return wire.PublishResult{Channel: channel, Code: api.Body.Code, Message: api.Body.Message}
	}
	code := wire.CodeUnavailable
	if errors.Is(err, context.DeadlineExceeded) {
		code = wire.CodeTimeout
	}
	return wire.PublishResult{Channel: channel, Code: code, Message: err.Error()}
}

// check reports whether hub i answered its latest status check (GET
// /v1/cluster?local=1), and whether it knew a leader: the check under way,
// or one finished less than probeAfter/2 ago, or else a new one.
func (h *Hubs) check(ctx context.Context, i int) (ok, leader bool) {
	p := &h.probes[i]
	p.mu.Lock()
	c := p.last
	fresh := false
	if c != nil {
		select {
		case <-c.done:
			fresh = time.Since(c.at) < probeAfter/2
		default:
			fresh = true // under way
		}
	}
	if !fresh {
		c = &probeCall{done: make(chan struct{})}
		p.last = c
		// It ends within probeTimeout.
		go func() {
			pctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			var st wire.ClusterStatus
			c.ok = h.client.Get(pctx, h.addrs[i], "/v1/cluster?local=1", &st) == nil
			c.leader = st.Leader != ""
			c.at = time.Now()
			close(c.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-c.done:
		return c.ok, c.leader
	case <-ctx.Done():
		return true, true // the publish ends anyway
	}
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
	if errors.Is(err, ErrStalled) {
		return idempotent
	}
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
