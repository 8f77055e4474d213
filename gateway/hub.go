package gateway

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
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/wire"
)

// Hub is what a gateway needs of the hub cluster: publish, range reads, and
// the commit stream. HTTPHubs implements it over the hub API with failover
// between hubs; LocalHub implements it in process for `comet standalone`.
type Hub interface {
	// Publish stores a message and returns once it is committed.
	Publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error)
	// Read returns up to limit messages of channel from offset from, and the
	// Raft index the answering hub had applied (the answer reflects at
	// least every entry up to it).
	Read(ctx context.Context, channel string, from uint64, limit int) (Page, uint64, error)
	// Stream follows the commit stream from Raft index from (0: from now).
	Stream(ctx context.Context, from uint64) (StreamReader, error)
}

// StreamReader yields the lines of one commit stream until it fails.
type StreamReader interface {
	Next() (wire.StreamLine, error)
	Close() error
	// Hub names where the stream comes from, for logs.
	Hub() string
}

// Page is a range read of one channel: its epoch, first and next offsets,
// and messages with consecutive offsets, each already encoded as the
// message frame clients get (wire.AppendMessage).
type Page struct {
	Epoch       string
	First, Next uint64
	Offsets     []uint64
	Frames      [][]byte
}

// PageOf encodes a range read of channel ch as a Page.
func PageOf(ch string, res wire.MessagesResponse) Page {
	p := Page{Epoch: res.Epoch, First: res.First, Next: res.Next,
		Offsets: make([]uint64, len(res.Messages)), Frames: make([][]byte, len(res.Messages))}
	for i, m := range res.Messages {
		p.Offsets[i] = m.Offset
		p.Frames[i] = wire.AppendMessage(make([]byte, 0, len(m.Data)+len(ch)+48), ch, m.Offset, m.Data)
	}
	return p
}

// frames returns the frames of offsets pos, pos+1, ... below to that the
// page holds.
func (p *Page) frames(pos, to uint64) [][]byte {
	if len(p.Offsets) == 0 || pos < p.Offsets[0] {
		return nil
	}
	i := int(pos - p.Offsets[0])
	j := i
	for j < len(p.Offsets) && p.Offsets[j] == pos+uint64(j-i) && p.Offsets[j] < to {
		j++
	}
	if i >= j {
		return nil
	}
	return p.Frames[i:j]
}

// HTTPHubs reaches a hub cluster over its HTTP API. Publishes and reads go
// to the hub the commit stream currently comes from (it has applied at
// least what the gateway streamed) and fail over to the others.
type HTTPHubs struct {
	addrs   []string
	client  *broker.Client
	stream  *http.Client
	current atomic.Int64 // index in addrs of the preferred hub
	// idle is how long a stream may stay silent (hubs send a heartbeat
	// every second) before it is taken for dead.
	idle time.Duration
}

// NewHTTPHubs returns a Hub over the API addresses (host:port) of hubs.
func NewHTTPHubs(addrs []string, timeout time.Duration) (*HTTPHubs, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no hub addresses")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("hub address %q: want host:port: %v", a, err)
		}
	}
	h := &HTTPHubs{
		addrs:  append([]string(nil), addrs...),
		client: broker.NewClient(timeout, 512),
		stream: &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: timeout}},
		idle:   5 * time.Second,
	}
	h.current.Store(int64(rand.IntN(len(addrs))))
	return h, nil
}

// SetSecret makes every request carry the hubs' secret (--secret). Call it
// before the first request.
func (h *HTTPHubs) SetSecret(secret string) { h.client.Secret = secret }

func (h *HTTPHubs) order() []string {
	start := int(h.current.Load())
	out := make([]string, 0, len(h.addrs))
	for i := range h.addrs {
		out = append(out, h.addrs[(start+i)%len(h.addrs)])
	}
	return out
}

// Publish tries the preferred hub, then the others when the request
// certainly did not reach a hub, or when it carries an idempotency id
// (a retry is then harmless).
func (h *HTTPHubs) Publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	var out wire.PublishResponse
	var err error
	for _, addr := range h.order() {
		err = h.client.Post(ctx, addr, "/v1/publish", req, &out)
		if err == nil || !retryable(err, req.ID != "") || ctx.Err() != nil {
			return out, err
		}
	}
	return out, err
}

// Read tries the preferred hub, then the others.
func (h *HTTPHubs) Read(ctx context.Context, channel string, from uint64, limit int) (Page, uint64, error) {
	var err error
	for _, addr := range h.order() {
		var out Page
		var applied uint64
		applied, err = h.read(ctx, addr, channel, from, limit, &out)
		if err == nil {
			return out, applied, nil
		}
		if !retryable(err, true) || ctx.Err() != nil {
			return out, 0, err
		}
	}
	return Page{}, 0, err
}

// read reads a page in frames (format=frames: see broker.FramesType).
func (h *HTTPHubs) read(ctx context.Context, addr, channel string, from uint64, limit int, out *Page) (uint64, error) {
	u := "http://" + addr + "/v1/channels/" + url.PathEscape(channel) + "/messages?format=frames&from=" +
		strconv.FormatUint(from, 10) + "&limit=" + strconv.Itoa(limit)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	h.client.Authorize(req)
	resp, err := h.client.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, apiError(resp)
	}
	if err := decodeFrames(resp, channel, out); err != nil {
		return 0, fmt.Errorf("read %s from %s: %w", channel, addr, err)
	}
	applied, _ := strconv.ParseUint(resp.Header.Get(broker.HeaderApplied), 10, 64)
	return applied, nil
}

// decodeFrames takes a range read in frames, or in JSON from a hub of an
// older version (hubs and gateways are upgraded one at a time).
func decodeFrames(resp *http.Response, channel string, out *Page) error {
	if ct := resp.Header.Get("Content-Type"); ct != broker.FramesType {
		var res wire.MessagesResponse
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return fmt.Errorf("answer of type %q: %w", ct, err)
		}
		*out = PageOf(channel, res)
		return nil
	}
	var err1, err2 error
	out.Epoch = resp.Header.Get(broker.HeaderEpoch)
	out.First, err1 = strconv.ParseUint(resp.Header.Get(broker.HeaderFirst), 10, 64)
	out.Next, err2 = strconv.ParseUint(resp.Header.Get(broker.HeaderNext), 10, 64)
	if err := errors.Join(err1, err2); err != nil || out.Epoch == "" {
		return fmt.Errorf("bad page headers: epoch %q: %v", out.Epoch, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for len(body) > 0 {
		line, rest, ok := bytes.Cut(body, []byte("\n"))
		if !ok {
			return errors.New("page cut short")
		}
		body = rest
		off, ok := wire.MessageOffset(line, channel)
		if !ok {
			return fmt.Errorf("not a message frame of %s: %.80q", channel, line)
		}
		out.Offsets = append(out.Offsets, off)
		// A copy of its own: the cache keeps some frames far longer than
		// others, and must not keep a whole page alive for one.
		out.Frames = append(out.Frames, bytes.Clone(line))
	}
	return nil
}

// Stream opens the commit stream on the preferred hub, or the next one that
// answers, and makes that hub the preferred one.
func (h *HTTPHubs) Stream(ctx context.Context, from uint64) (StreamReader, error) {
	var err error
	start := int(h.current.Load())
	for i := range h.addrs {
		n := (start + i) % len(h.addrs)
		var r StreamReader
		r, err = h.open(ctx, h.addrs[n], from)
		if err == nil {
			h.current.Store(int64(n))
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
	}
	// None answered: start with the next one next time.
	h.current.Store(int64((start + 1) % len(h.addrs)))
	return nil, err
}

// Failed tells h that its preferred hub failed, so that the next calls
// start with another one.
func (h *HTTPHubs) Failed(addr string) {
	cur := int(h.current.Load())
	if h.addrs[cur] == addr {
		h.current.CompareAndSwap(int64(cur), int64((cur+1)%len(h.addrs)))
	}
}

func (h *HTTPHubs) open(ctx context.Context, addr string, from uint64) (StreamReader, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, "http://"+addr+"/v1/stream?from="+strconv.FormatUint(from, 10), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	h.client.Authorize(req)
	resp, err := h.stream.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		err := apiError(resp)
		resp.Body.Close()
		cancel()
		return nil, err
	}
	r := &httpStream{hub: addr, body: resp.Body, cancel: cancel, in: bufio.NewReaderSize(resp.Body, 64<<10), idle: h.idle}
	r.watch = time.AfterFunc(h.idle, r.expire)
	return r, nil
}

type httpStream struct {
	hub    string
	body   io.ReadCloser
	in     *bufio.Reader
	cancel context.CancelFunc
	idle   time.Duration
	watch  *time.Timer

	mu      sync.Mutex
	expired bool
}

var errStreamIdle = errors.New("commit stream silent for too long")

func (s *httpStream) expire() {
	s.mu.Lock()
	s.expired = true
	s.mu.Unlock()
	s.cancel()
}

func (s *httpStream) Hub() string { return s.hub }

func (s *httpStream) Next() (wire.StreamLine, error) {
	line, err := s.in.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A line longer than the buffer: a large message.
		buf := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = s.in.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err != nil {
		s.mu.Lock()
		expired := s.expired
		s.mu.Unlock()
		if expired {
			return wire.StreamLine{}, errStreamIdle
		}
		if err == io.EOF {
			return wire.StreamLine{}, io.ErrUnexpectedEOF
		}
		return wire.StreamLine{}, err
	}
	s.watch.Reset(s.idle)
	var l wire.StreamLine
	if err := json.Unmarshal(line, &l); err != nil {
		return wire.StreamLine{}, fmt.Errorf("commit stream from %s: %w", s.hub, err)
	}
	return l, nil
}

// Buffered reports whether a whole line is already received (1) or Next
// would wait for the network (0).
func (s *httpStream) Buffered() int {
	b, _ := s.in.Peek(s.in.Buffered())
	if bytes.IndexByte(b, '\n') >= 0 {
		return 1
	}
	return 0
}

func (s *httpStream) Close() error {
	s.watch.Stop()
	s.cancel()
	return s.body.Close()
}

func apiError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return broker.AnswerError(resp, data)
}

// retryable reports whether a failed call may be tried on another hub:
// when the hub answered "unavailable" (no leader, shutting down) or could
// not be reached, and, for a call that is not idempotent, only when the
// request cannot have been received.
func retryable(err error, idempotent bool) bool {
	var api *broker.APIError
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
