package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/comethq/comet/hubapi"
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
	// History answers a history read (wire.HistoryQuery).
	History(ctx context.Context, channel string, q wire.HistoryQuery) (HistoryPage, error)
	// Namespaces returns the cluster's namespaces (GET /v1/namespaces).
	Namespaces(ctx context.Context) (wire.Namespaces, error)
	// Presence returns a page of the connections subscribed to channel on
	// every gateway (GET /v1/channels/{channel}/presence), after the
	// connection id after; PresenceStats counts them.
	Presence(ctx context.Context, channel, after string, limit int) (wire.Presence, error)
	PresenceStats(ctx context.Context, channel string) (wire.PresenceStats, error)
	// Stream follows the commit stream from Raft index from (0: from now).
	// Its first line should say at once where it starts (a heartbeat whose
	// Applied is the index it starts after): until a stream opened from now
	// has given a line, the gateway cannot tell which entries its channels'
	// reads must reflect.
	Stream(ctx context.Context, from uint64) (StreamReader, error)
}

// StreamReader yields the lines of one commit stream until it fails.
type StreamReader interface {
	Next() (wire.StreamLine, error)
	Close() error
	// Hub names where the stream comes from, for logs.
	Hub() string
}

// RawStreamReader is a StreamReader that also hands out a line undecoded
// (hubapi.Stream does): the gateway then decodes only the lines of the
// channels it follows. The line is valid until the next call.
type RawStreamReader interface {
	NextRaw() ([]byte, error)
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
	*hubapi.Hubs
}

// NewHTTPHubs returns a Hub over the API addresses (host:port) of hubs.
func NewHTTPHubs(addrs []string, timeout time.Duration) (*HTTPHubs, error) {
	h, err := hubapi.NewHubs(addrs, timeout, 512)
	if err != nil {
		return nil, err
	}
	return &HTTPHubs{h}, nil
}

// Read tries the preferred hub, then the others.
func (h *HTTPHubs) Read(ctx context.Context, channel string, from uint64, limit int) (Page, uint64, error) {
	var err error
	for _, addr := range h.Order() {
		var out Page
		var applied uint64
		applied, err = h.read(ctx, addr, channel, from, limit, &out)
		if err == nil {
			return out, applied, nil
		}
		if !hubapi.Retryable(err, true) || ctx.Err() != nil {
			return out, 0, err
		}
	}
	return Page{}, 0, err
}

// HistoryPage is a page of a channel's history: its epoch, first and next
// offsets, and the messages as the JSON array the hub API answers with
// (wire.Message objects), which the gateway passes on to the client as it
// is.
type HistoryPage struct {
	Epoch       string
	First, Next uint64
	Messages    json.RawMessage
}

// Namespaces reads the cluster's namespaces from the first hub that
// answers.
func (h *HTTPHubs) Namespaces(ctx context.Context) (wire.Namespaces, error) {
	var ns wire.Namespaces
	err := h.get(ctx, "/v1/namespaces", &ns)
	var api *hubapi.APIError
	if errors.As(err, &api) && api.Status == http.StatusNotFound {
		// A hub of an earlier version, during a rolling upgrade: it has
		// no namespaces.
		return wire.Namespaces{Namespaces: []wire.Namespace{}}, nil
	}
	return ns, err
}

// Presence asks the first hub that answers (a follower asks the leader).
func (h *HTTPHubs) Presence(ctx context.Context, channel, after string, limit int) (wire.Presence, error) {
	v := url.Values{"limit": {strconv.Itoa(limit)}}
	if after != "" {
		v.Set("after", after)
	}
	var res wire.Presence
	err := h.get(ctx, "/v1/channels/"+url.PathEscape(channel)+"/presence?"+v.Encode(), &res)
	return res, err
}

// PresenceStats asks the first hub that answers.
func (h *HTTPHubs) PresenceStats(ctx context.Context, channel string) (wire.PresenceStats, error) {
	var res wire.PresenceStats
	err := h.get(ctx, "/v1/channels/"+url.PathEscape(channel)+"/presence_stats", &res)
	return res, err
}

// get GETs path from the first hub that answers, into out.
func (h *HTTPHubs) get(ctx context.Context, path string, out any) error {
	var err error
	for _, addr := range h.Order() {
		if err = h.Client().Get(ctx, addr, path, out); err == nil {
			return nil
		}
		if !hubapi.Retryable(err, true) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// History reads a page of history from the first hub that answers.
func (h *HTTPHubs) History(ctx context.Context, channel string, q wire.HistoryQuery) (HistoryPage, error) {
	v := url.Values{"from": {strconv.FormatUint(q.From, 10)}, "limit": {strconv.Itoa(q.Limit)}}
	if q.Before != 0 {
		v.Set("before", strconv.FormatUint(q.Before, 10))
	}
	if q.Reverse {
		v.Set("reverse", "true")
	}
	if !q.SinceTime.IsZero() {
		v.Set("since_time", q.SinceTime.Format(time.RFC3339Nano))
	}
	var res HistoryPage
	if err := h.get(ctx, "/v1/channels/"+url.PathEscape(channel)+"/messages?"+v.Encode(), &res); err != nil {
		return HistoryPage{}, err
	}
	if len(res.Messages) == 0 || res.Messages[0] != '[' {
		return HistoryPage{}, fmt.Errorf("history of %s: no messages array in the hub's answer", channel)
	}
	return res, nil
}

// read reads a page in frames (format=frames: see wire.FramesType).
func (h *HTTPHubs) read(ctx context.Context, addr, channel string, from uint64, limit int, out *Page) (uint64, error) {
	u := h.Client().URL(addr, "/v1/channels/"+url.PathEscape(channel)+"/messages?format=frames&from="+
		strconv.FormatUint(from, 10)+"&limit="+strconv.Itoa(limit))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	h.Client().Authorize(req)
	resp, err := h.Client().HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, hubapi.AnswerError(resp, data)
	}
	if err := decodeFrames(resp, channel, out); err != nil {
		return 0, fmt.Errorf("read %s from %s: %w", channel, addr, err)
	}
	applied, _ := strconv.ParseUint(resp.Header.Get(wire.HeaderApplied), 10, 64)
	return applied, nil
}

// decodeFrames takes a range read in frames, or in JSON from a hub of an
// older version (hubs and gateways are upgraded one at a time).
func decodeFrames(resp *http.Response, channel string, out *Page) error {
	if ct := resp.Header.Get("Content-Type"); ct != wire.FramesType {
		var res wire.MessagesResponse
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return fmt.Errorf("answer of type %q: %w", ct, err)
		}
		*out = PageOf(channel, res)
		return nil
	}
	var err1, err2 error
	out.Epoch = resp.Header.Get(wire.HeaderEpoch)
	out.First, err1 = strconv.ParseUint(resp.Header.Get(wire.HeaderFirst), 10, 64)
	out.Next, err2 = strconv.ParseUint(resp.Header.Get(wire.HeaderNext), 10, 64)
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
	s, err := h.Hubs.Stream(ctx, from)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// StreamOp has a hub decide a Durable Streams write (a follower forwards
// it to the leader). It tries another hub only when the first surely did
// not take it.
func (h *HTTPHubs) StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error) {
	var err error
	for _, addr := range h.Order() {
		var res wire.StreamResult
		if err = h.Client().Post(ctx, addr, "/v1/ds/op", op, &res); err == nil {
			return res, nil
		}
		if !hubapi.Retryable(err, false) || ctx.Err() != nil {
			return res, err
		}
	}
	return wire.StreamResult{}, err
}

// StreamRead reads a Durable Stream from the first hub that answers, in
// the fast form (wire.StreamLinesType).
func (h *HTTPHubs) StreamRead(ctx context.Context, name string, from uint64, limit, maxBytes int, minApplied uint64) (wire.StreamReadResult, error) {
	v := url.Values{"name": {name}, "from": {strconv.FormatUint(from, 10)}, "limit": {strconv.Itoa(limit)},
		"bytes": {strconv.Itoa(maxBytes)}, "min_applied": {strconv.FormatUint(minApplied, 10)}, "format": {"lines"}}
	var err error
	for _, addr := range h.Order() {
		var res wire.StreamReadResult
		if res, err = h.streamRead(ctx, addr, "/v1/ds/read?"+v.Encode()); err == nil {
			return res, nil
		}
		if !hubapi.Retryable(err, true) || ctx.Err() != nil {
			return res, err
		}
	}
	return wire.StreamReadResult{}, err
}

func (h *HTTPHubs) streamRead(ctx context.Context, addr, path string) (wire.StreamReadResult, error) {
	var res wire.StreamReadResult
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.Client().URL(addr, path), nil)
	if err != nil {
		return res, err
	}
	h.Client().Authorize(req)
	resp, err := h.Client().HTTP.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	var body []byte
	if n := resp.ContentLength; n > 0 && n <= 64<<20 {
		body = make([]byte, n)
		_, err = io.ReadFull(resp.Body, body)
	} else {
		body, err = io.ReadAll(resp.Body)
	}
	if err != nil {
		return res, err
	}
	if resp.StatusCode != http.StatusOK {
		return res, hubapi.AnswerError(resp, body)
	}
	if resp.Header.Get("Content-Type") != wire.StreamLinesType {
		err := json.Unmarshal(body, &res)
		return res, err
	}
	if err := json.Unmarshal([]byte(resp.Header.Get(wire.HeaderStreamRead)), &res); err != nil {
		return res, fmt.Errorf("stream read from %s: %w", addr, err)
	}
	res.Messages = make([]wire.StreamMessage, 0, bytes.Count(body, []byte("\n")))
	for len(body) > 0 {
		line, rest, ok := bytes.Cut(body, []byte("\n"))
		num, data, ok2 := bytes.Cut(line, []byte(" "))
		off, err := strconv.ParseUint(string(num), 10, 64)
		if !ok || !ok2 || err != nil {
			return res, fmt.Errorf("stream read from %s: a bad line %.80q", addr, line)
		}
		res.Messages = append(res.Messages, wire.StreamMessage{Offset: off, Data: data})
		body = rest
	}
	return res, nil
}
