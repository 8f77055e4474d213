package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// hubClient calls the hubs' HTTP API: publishes and the commit stream,
// with failover between hubs, and the secret on every request. (It is the
// small part of gateway.HTTPHubs a worker needs, which a backend can link
// without the gateway.)
type hubClient struct {
	addrs   []string
	secret  string
	api     *http.Client // calls, each bounded by the worker's Timeout
	streams *http.Client // the commit stream: no overall timeout
	current atomic.Int64 // index in addrs of the preferred hub
	idle    time.Duration
}

func newHubClient(addrs []string, secret string, timeout time.Duration) *hubClient {
	h := &hubClient{
		addrs:  append([]string(nil), addrs...),
		secret: secret,
		api: &http.Client{Timeout: timeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute,
		}},
		streams: &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: timeout}},
		idle:    5 * time.Second,
	}
	if len(addrs) > 0 {
		h.current.Store(int64(rand.IntN(len(addrs))))
	}
	return h
}

func (h *hubClient) close() {
	h.api.CloseIdleConnections()
	h.streams.CloseIdleConnections()
}

func (h *hubClient) order() []string {
	start := int(h.current.Load())
	out := make([]string, 0, len(h.addrs))
	for i := range h.addrs {
		out = append(out, h.addrs[(start+i)%len(h.addrs)])
	}
	return out
}

// failed moves the preference away from addr.
func (h *hubClient) failed(addr string) {
	cur := int(h.current.Load())
	if len(h.addrs) > 0 && h.addrs[cur] == addr {
		h.current.CompareAndSwap(int64(cur), int64((cur+1)%len(h.addrs)))
	}
}

func (h *hubClient) newRequest(ctx context.Context, method, addr, path string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.secret != "" {
		req.Header.Set("Authorization", "Bearer "+h.secret)
	}
	return req, nil
}

// call does one request and decodes a 2xx answer into out; an error answer
// is a *wire.Error.
func (h *hubClient) call(ctx context.Context, method, addr, path string, body []byte, out any) error {
	req, err := h.newRequest(ctx, method, addr, path, body)
	if err != nil {
		return err
	}
	resp, err := h.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", addr, err)
	}
	if resp.StatusCode/100 != 2 {
		return answerError(resp, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", addr, err)
	}
	return nil
}

func answerError(resp *http.Response, data []byte) *wire.Error {
	var e wire.Error
	if json.Unmarshal(data, &e) != nil || e.Code == "" {
		e = wire.Error{Code: wire.CodeUnavailable, Message: resp.Status + " " + string(bytes.TrimSpace(data))}
	}
	return &e
}

// publish tries the preferred hub, then the others when the request
// certainly did not reach a hub, or when it carries an id.
func (h *hubClient) publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return wire.PublishResponse{}, err
	}
	var out wire.PublishResponse
	for _, addr := range h.order() {
		err = h.call(ctx, http.MethodPost, addr, "/v1/publish", body, &out)
		if err == nil || !retryable(err, req.ID != "") || ctx.Err() != nil {
			return out, err
		}
		h.failed(addr)
	}
	return out, err
}

// retryable reports whether a failed call may go to another hub: when the
// hub could not be reached, or, for a call that is safe to repeat, when it
// answered unavailable or the answer was lost.
func retryable(err error, idempotent bool) bool {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code == wire.CodeUnavailable && idempotent
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

// applied returns the commit-stream position of the first hub that
// answers: its applied Raft index.
func (h *hubClient) applied(ctx context.Context) (uint64, error) {
	var err error
	for _, addr := range h.order() {
		var st wire.ClusterStatus
		if err = h.call(ctx, http.MethodGet, addr, "/v1/cluster?local=1", nil, &st); err == nil {
			return st.AppliedIndex, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, err
}

// stream opens the commit stream from position from (0: from now) on the
// preferred hub or the next one that answers.
func (h *hubClient) stream(ctx context.Context, from uint64) (*hubStream, error) {
	if len(h.addrs) == 0 {
		return nil, errors.New("no hub addresses")
	}
	var err error
	start := int(h.current.Load())
	for i := range h.addrs {
		n := (start + i) % len(h.addrs)
		var st *hubStream
		if st, err = h.open(ctx, h.addrs[n], from); err == nil {
			h.current.Store(int64(n))
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
	}
	h.current.Store(int64((start + 1) % len(h.addrs)))
	return nil, err
}

func (h *hubClient) open(ctx context.Context, addr string, from uint64) (*hubStream, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := h.newRequest(sctx, http.MethodGet, addr, "/v1/stream?from="+strconv.FormatUint(from, 10), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := h.streams.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		return nil, answerError(resp, data)
	}
	st := &hubStream{hub: addr, body: resp.Body, in: bufio.NewReaderSize(resp.Body, 64<<10), cancel: cancel, idle: h.idle}
	return st, nil
}

// hubStream reads one commit stream. A hub that stays silent for idle
// while it is read from (it sends a heartbeat every second) is taken for
// dead; the time the worker spends delivering does not count.
type hubStream struct {
	hub    string
	body   io.ReadCloser
	in     *bufio.Reader
	cancel context.CancelFunc
	idle   time.Duration
}

var (
	errReset      = errors.New("commit stream reset")
	errStreamIdle = errors.New("commit stream silent for too long")
)

func (s *hubStream) next() (wire.StreamLine, error) {
	var expired atomic.Bool
	t := time.AfterFunc(s.idle, func() { expired.Store(true); s.cancel() })
	line, err := s.in.ReadBytes('\n')
	t.Stop()
	if err != nil {
		if expired.Load() {
			return wire.StreamLine{}, errStreamIdle
		}
		if err == io.EOF {
			return wire.StreamLine{}, io.ErrUnexpectedEOF
		}
		return wire.StreamLine{}, err
	}
	var l wire.StreamLine
	if err := json.Unmarshal(line, &l); err != nil {
		return l, fmt.Errorf("commit stream from %s: %w", s.hub, err)
	}
	return l, nil
}

func (s *hubStream) close() {
	s.cancel()
	s.body.Close()
}
