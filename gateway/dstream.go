package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
)

// Durable Streams over plain HTTP (docs/durable-streams.md): every channel
// is a stream at Config.StreamsPrefix + its name. The gateway speaks the
// protocol; the hubs decide every write (package dstream) and serve reads.
//
// Live reads (long-poll, SSE) follow the channel like a subscription does
// (acquire): they wait on the channel's next message, then take it from the
// channel's cache, or read it from the hubs.

// StreamHub is what a gateway needs of the hubs to serve Durable Streams.
// A Config.Hub that implements it enables them.
type StreamHub interface {
	// StreamOp has the hubs decide a write (wire.StreamOp); the result's
	// Status is the answer.
	StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error)
	// StreamRead reads a stream from offset from (0: its start), up to
	// limit messages and about maxBytes, from a hub that applied
	// minApplied.
	StreamRead(ctx context.Context, name string, from uint64, limit, maxBytes int, minApplied uint64) (wire.StreamReadResult, error)
}

// StreamWriter carries Durable Streams writes to the hubs (Config.StreamWriter).
type StreamWriter interface {
	StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error)
}

// Durable Streams headers.
const (
	hdrNextOffset    = "Stream-Next-Offset"
	hdrUpToDate      = "Stream-Up-To-Date"
	hdrClosed        = "Stream-Closed"
	hdrCursor        = "Stream-Cursor"
	hdrTTL           = "Stream-TTL"
	hdrExpiresAt     = "Stream-Expires-At"
	hdrSeq           = "Stream-Seq"
	hdrForkedFrom    = "Stream-Forked-From"
	hdrForkOffset    = "Stream-Fork-Offset"
	hdrForkSubOffset = "Stream-Fork-Sub-Offset"
	hdrProducerID    = "Producer-Id"
	hdrProducerEpoch = "Producer-Epoch"
	hdrProducerSeq   = "Producer-Seq"
	hdrExpectedSeq   = "Producer-Expected-Seq"
	hdrReceivedSeq   = "Producer-Received-Seq"
	hdrSSEEncoding   = "Stream-Sse-Data-Encoding"
)

// Bounds of one read answer.
const (
	streamReadBytes = 1 << 20
	streamReadMsgs  = 10_000
	// sseLifetime: an SSE response ends after about this long, as the
	// protocol advises (clients reconnect from the last control event).
	sseLifetime = 60 * time.Second
)

// StreamsPrefix returns the path under which the gateway serves Durable
// Streams, "" when it does not.
func (s *Server) StreamsPrefix() string {
	if s.ds == nil {
		return ""
	}
	return s.ds.prefix
}

// durable is the gateway's Durable Streams state.
type durable struct {
	hub    StreamHub
	writer StreamWriter // hub, or Config.StreamWriter
	prefix string
	// index is the highest Raft index of a write this gateway made: reads
	// ask for a hub that applied it, so that a client reads its writes.
	index atomic.Uint64

	// touching coalesces the TTL resets reads make: one write per stream
	// in flight.
	mu       sync.Mutex
	touching map[string]bool
}

func newDurable(hub Hub, writer StreamWriter, prefix string) *durable {
	sh, ok := hub.(StreamHub)
	if !ok {
		return nil
	}
	if writer == nil {
		writer = sh
	}
	return &durable{hub: sh, writer: writer, prefix: prefix, touching: make(map[string]bool)}
}

func (d *durable) noteIndex(i uint64) {
	for {
		cur := d.index.Load()
		if i <= cur || d.index.CompareAndSwap(cur, i) {
			return
		}
	}
}

// streamError answers a Durable Streams request with status and a JSON
// error body.
func streamError(w http.ResponseWriter, status int, msg string) {
	code := wire.CodeBadRequest
	switch status {
	case http.StatusNotFound, http.StatusGone:
		code = wire.CodeNotFound
	case http.StatusForbidden, http.StatusUnauthorized:
		code = wire.CodeForbidden
	case http.StatusRequestEntityTooLarge:
		code = wire.CodeTooLarge
	case http.StatusServiceUnavailable, http.StatusInternalServerError:
		code = wire.CodeUnavailable
	case http.StatusGatewayTimeout:
		code = wire.CodeTimeout
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(wire.Error{Code: code, Message: msg})
}

// hubError answers a failure to reach or hear from the hubs.
func hubError(w http.ResponseWriter, err error) {
	var we *wire.Error
	if errors.As(err, &we) {
		switch we.Code {
		case wire.CodeBadRequest:
			streamError(w, http.StatusBadRequest, we.Message)
			return
		case wire.CodeTooLarge:
			streamError(w, http.StatusRequestEntityTooLarge, we.Message)
			return
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		streamError(w, http.StatusGatewayTimeout, "the hubs did not answer in time: "+err.Error())
		return
	}
	streamError(w, http.StatusServiceUnavailable, "the hubs are unavailable: "+err.Error())
}

// serveStream serves one Durable Streams request.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	d := s.ds
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	if origin := r.Header.Get("Origin"); origin != "" && s.checkOrigin(r) {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", strings.Join([]string{hdrNextOffset, hdrUpToDate, hdrClosed, hdrCursor, hdrTTL,
			hdrExpiresAt, hdrProducerEpoch, hdrProducerSeq, hdrExpectedSeq, hdrReceivedSeq, hdrSSEEncoding, "ETag", "Location"}, ", "))
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, PUT, POST, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", strings.Join([]string{"Authorization", "Content-Type", "If-None-Match", hdrTTL, hdrExpiresAt,
			hdrClosed, hdrSeq, hdrForkedFrom, hdrForkOffset, hdrForkSubOffset, hdrProducerID, hdrProducerEpoch, hdrProducerSeq}, ", "))
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, d.prefix)
	if err := wire.CheckChannel(name); err != nil {
		streamError(w, http.StatusBadRequest, err.Error())
		return
	}
	id, ok := s.streamIdentity(w, r)
	if !ok {
		return
	}
	op := opSubscribe
	if r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodDelete {
		op = opPublish
	}
	if ref := s.may(id, false, op, name); ref.code != "" {
		status := http.StatusForbidden
		if ref.code == wire.CodeUnavailable {
			status = http.StatusServiceUnavailable
		}
		streamError(w, status, ref.msg)
		return
	}
	switch r.Method {
	case http.MethodPut:
		s.streamCreate(w, r, name, id)
	case http.MethodPost:
		s.streamAppend(w, r, name)
	case http.MethodDelete:
		s.streamDelete(w, r, name)
	case http.MethodHead:
		s.streamHead(w, r, name)
	case http.MethodGet:
		s.streamGet(w, r, name)
	default:
		h.Set("Allow", "GET, HEAD, PUT, POST, DELETE, OPTIONS")
		streamError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on a stream")
	}
}

// streamIdentity authenticates a request: a token in Authorization: Bearer
// or ?token=, or anonymous where allowed.
func (s *Server) streamIdentity(w http.ResponseWriter, r *http.Request) (auth.Identity, bool) {
	token := r.URL.Query().Get("token")
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		token = strings.TrimSpace(v)
	}
	if token == "" {
		if s.cfg.AllowAnonymous {
			return auth.Identity{}, true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="comet"`)
		streamError(w, http.StatusUnauthorized, "token required: send Authorization: Bearer <token> or ?token=")
		return auth.Identity{}, false
	}
	id, err := s.verify(token)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="comet", error="invalid_token"`)
		streamError(w, http.StatusUnauthorized, err.Error())
		return auth.Identity{}, false
	}
	return id, true
}

// opCtx bounds one call to the hubs.
func (s *Server) opCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.PublishTimeout)
}

func (s *Server) streamWrite(w http.ResponseWriter, r *http.Request, op wire.StreamOp) (wire.StreamResult, bool) {
	ctx, cancel := s.opCtx(r)
	defer cancel()
	res, err := s.ds.writer.StreamOp(ctx, op)
	if err != nil {
		hubError(w, err)
		return res, false
	}
	s.ds.noteIndex(res.Index)
	return res, true
}

func (s *Server) streamRead(ctx context.Context, name string, from uint64, limit, maxBytes int) (wire.StreamReadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	return s.ds.hub.StreamRead(ctx, name, from, limit, maxBytes, s.ds.index.Load())
}

// touch resets a TTL stream's expiry after a read (one write per stream in
// flight; reads meanwhile are covered by it).
func (s *Server) touch(name string, info wire.StreamInfo) {
	if info.TTL == nil {
		return
	}
	d := s.ds
	d.mu.Lock()
	if d.touching[name] {
		d.mu.Unlock()
		return
	}
	d.touching[name] = true
	d.mu.Unlock()
	if !s.spawn(func() {
		defer func() {
			d.mu.Lock()
			delete(d.touching, name)
			d.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.PublishTimeout)
		defer cancel()
		if res, err := d.writer.StreamOp(ctx, wire.StreamOp{Op: wire.StreamTouch, Name: name}); err == nil {
			d.noteIndex(res.Index)
		}
	}) {
		d.mu.Lock()
		delete(d.touching, name)
		d.mu.Unlock()
	}
}

var ttlSyntax = regexp.MustCompile(`^(0|[1-9][0-9]{0,17})$`)

// closedHeader reads Stream-Closed: present only when exactly "true", in
// any case.
func closedHeader(r *http.Request) bool { return strings.EqualFold(r.Header.Get(hdrClosed), "true") }

// streamBody turns a write's body into the stream's messages: the JSON
// values of a JSON body (an array flattened one level), or the bytes in
// messages of at most max bytes encoded.
func streamBody(body []byte, ct string, post bool, maxBytes int) ([]json.RawMessage, int, string) {
	if len(body) == 0 {
		return nil, 0, ""
	}
	if wire.JSONContentType(ct) {
		trimmed := bytes.TrimSpace(body)
		if !wire.Valid(trimmed) {
			return nil, http.StatusBadRequest, "the body is not valid JSON"
		}
		if trimmed[0] != '[' {
			if len(trimmed) > maxBytes {
				return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("a JSON message of %d bytes, over the %d allowed", len(trimmed), maxBytes)
			}
			return []json.RawMessage{trimmed}, 0, ""
		}
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, http.StatusBadRequest, "the body is not valid JSON: " + err.Error()
		}
		if len(items) == 0 && post {
			return nil, http.StatusBadRequest, "an empty JSON array appends nothing"
		}
		for i, it := range items {
			if len(it) > maxBytes {
				return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("a JSON message of %d bytes, over the %d allowed", len(it), maxBytes)
			}
			items[i] = bytes.Clone(it)
		}
		return items, 0, ""
	}
	// Bytes: pieces whose encoding (a JSON string, or base64) fits.
	var msgs []json.RawMessage
	piece := maxBytes * 3 / 4
	for len(body) > 0 {
		n := min(piece, len(body))
		for {
			m := wire.EncodeStreamData(body[:n])
			if len(m) <= maxBytes || n == 1 {
				msgs = append(msgs, m)
				break
			}
			n /= 2
		}
		body = body[n:]
	}
	return msgs, 0, ""
}

// readBody reads a write's body, bounded.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, streamMaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			streamError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a body over %d bytes", streamMaxBody))
		} else {
			streamError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

// streamMaxBody bounds a write's body (the hubs take 8 MiB of messages in
// one write; encoding adds to binary data).
const streamMaxBody = 6 << 20

// streamName takes a stream path (Stream-Forked-From) to its name.
func (s *Server) streamName(path string) (string, bool) {
	if i := strings.Index(path, "://"); i >= 0 { // a whole URL
		rest := path[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			path = rest[j:]
		}
	}
	name, ok := strings.CutPrefix(path, s.ds.prefix)
	if !ok {
		name, ok = strings.CutPrefix(path, strings.TrimSuffix(s.ds.prefix, "/"))
		name = strings.TrimPrefix(name, "/")
	}
	return name, ok && wire.ValidChannel(name)
}

func (s *Server) streamCreate(w http.ResponseWriter, r *http.Request, name string, id auth.Identity) {
	op := wire.StreamOp{Op: wire.StreamCreate, Name: name, ContentType: r.Header.Get("Content-Type"), Closed: closedHeader(r)}
	if v := r.Header.Get(hdrTTL); v != "" {
		if !ttlSyntax.MatchString(v) {
			streamError(w, http.StatusBadRequest, "Stream-TTL must be a non-negative integer of seconds")
			return
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		op.TTL = &n
	}
	if v := r.Header.Get(hdrExpiresAt); v != "" {
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			streamError(w, http.StatusBadRequest, "Stream-Expires-At must be an RFC 3339 time")
			return
		}
		if op.TTL != nil {
			streamError(w, http.StatusBadRequest, "give Stream-TTL or Stream-Expires-At, not both")
			return
		}
		op.ExpiresAt = v
	}
	from := r.Header.Get(hdrForkedFrom)
	subHdr := r.Header.Get(hdrForkSubOffset)
	offHdr := r.Header.Get(hdrForkOffset)
	if from == "" && (subHdr != "" || offHdr != "") {
		streamError(w, http.StatusBadRequest, "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From")
		return
	}
	bodyCT := op.ContentType
	if from != "" {
		src, ok := s.streamName(from)
		if !ok {
			streamError(w, http.StatusBadRequest, "Stream-Forked-From must be the path of a stream on this server")
			return
		}
		op.ForkFrom = src
		// A fork reads its source: the right to read it is needed too.
		if ref := s.may(id, false, opSubscribe, src); ref.code != "" {
			streamError(w, http.StatusForbidden, ref.msg)
			return
		}
		if offHdr != "" && offHdr != "-1" {
			epoch, next, ok := wire.ParseStreamToken(offHdr)
			if !ok {
				streamError(w, http.StatusBadRequest, "malformed Stream-Fork-Offset")
				return
			}
			op.ForkEpoch, op.ForkOffset = epoch, next
			if next == 0 { // before any data, in any history
				op.ForkEpoch, op.ForkOffset = "", 1
			}
		} else if offHdr == "-1" {
			op.ForkOffset = 1
		}
		if subHdr != "" {
			n, err := strconv.ParseInt(subHdr, 10, 64)
			if err != nil || n < 0 || !ttlSyntax.MatchString(subHdr) {
				streamError(w, http.StatusBadRequest, "Stream-Fork-Sub-Offset must be a non-negative integer")
				return
			}
			if n > 0 && offHdr == "" {
				streamError(w, http.StatusBadRequest, "Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
				return
			}
			op.ForkSub = n
		}
		if bodyCT == "" {
			// The fork has its source's type: read it to take the body.
			res, err := s.streamRead(r.Context(), src, 0, 0, 1)
			if err != nil {
				hubError(w, err)
				return
			}
			bodyCT = res.Info.ContentType
		}
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if bodyCT == "" {
		bodyCT = "application/octet-stream"
	}
	msgs, status, msg := streamBody(body, bodyCT, false, s.cfg.MaxMessageBytes)
	if status != 0 {
		streamError(w, status, msg)
		return
	}
	op.Messages = msgs
	res, ok := s.streamWrite(w, r, op)
	if !ok {
		return
	}
	if res.Status >= 300 {
		streamError(w, res.Status, res.Message)
		return
	}
	h := w.Header()
	if res.Status == http.StatusCreated {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		h.Set("Location", scheme+"://"+r.Host+r.URL.EscapedPath())
	}
	h.Set("Content-Type", res.ContentType)
	h.Set(hdrNextOffset, wire.StreamToken(res.Epoch, res.Next))
	if res.Closed {
		h.Set(hdrClosed, "true")
	}
	w.WriteHeader(res.Status)
}

var producerNum = regexp.MustCompile(`^(0|[1-9][0-9]{0,15})$`)

func (s *Server) streamAppend(w http.ResponseWriter, r *http.Request, name string) {
	op := wire.StreamOp{Op: wire.StreamAppend, Name: name, ContentType: r.Header.Get("Content-Type"),
		Closed: closedHeader(r), Seq: r.Header.Get(hdrSeq)}
	pid, pe, ps := r.Header.Get(hdrProducerID), r.Header.Get(hdrProducerEpoch), r.Header.Get(hdrProducerSeq)
	_, hasID := r.Header[hdrProducerID]
	if hasID || pe != "" || ps != "" {
		if pid == "" || pe == "" || ps == "" {
			streamError(w, http.StatusBadRequest, "Producer-Id, Producer-Epoch and Producer-Seq go together, none empty")
			return
		}
		if !producerNum.MatchString(pe) || !producerNum.MatchString(ps) {
			streamError(w, http.StatusBadRequest, "Producer-Epoch and Producer-Seq must be integers from 0 to 2^53-1")
			return
		}
		epoch, _ := strconv.ParseInt(pe, 10, 64)
		seq, _ := strconv.ParseInt(ps, 10, 64)
		if epoch > 1<<53-1 || seq > 1<<53-1 {
			streamError(w, http.StatusBadRequest, "Producer-Epoch and Producer-Seq must be at most 2^53-1")
			return
		}
		op.Producer = &wire.StreamProducer{ID: pid, Epoch: epoch, Seq: seq}
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if len(body) == 0 && !op.Closed {
		streamError(w, http.StatusBadRequest, "an empty body appends nothing (send Stream-Closed: true to close the stream)")
		return
	}
	if len(body) > 0 && op.ContentType == "" {
		streamError(w, http.StatusBadRequest, "Content-Type is required")
		return
	}
	msgs, status, msg := streamBody(body, op.ContentType, true, s.cfg.MaxMessageBytes)
	if status != 0 {
		streamError(w, status, msg)
		return
	}
	op.Messages = msgs
	res, ok := s.streamWrite(w, r, op)
	if !ok {
		return
	}
	h := w.Header()
	if res.ProducerEpoch != nil {
		h.Set(hdrProducerEpoch, strconv.FormatInt(*res.ProducerEpoch, 10))
	}
	if res.ProducerSeq != nil {
		h.Set(hdrProducerSeq, strconv.FormatInt(*res.ProducerSeq, 10))
	}
	if res.ExpectedSeq != nil {
		h.Set(hdrExpectedSeq, strconv.FormatInt(*res.ExpectedSeq, 10))
		h.Set(hdrReceivedSeq, strconv.FormatInt(*res.ReceivedSeq, 10))
	}
	if res.Epoch != "" {
		h.Set(hdrNextOffset, wire.StreamToken(res.Epoch, res.Next))
	}
	if res.Closed {
		h.Set(hdrClosed, "true")
	}
	if res.Status >= 300 {
		streamError(w, res.Status, res.Message)
		return
	}
	w.WriteHeader(res.Status)
}

func (s *Server) streamDelete(w http.ResponseWriter, r *http.Request, name string) {
	res, ok := s.streamWrite(w, r, wire.StreamOp{Op: wire.StreamDelete, Name: name})
	if !ok {
		return
	}
	if res.Status >= 300 {
		streamError(w, res.Status, res.Message)
		return
	}
	w.WriteHeader(res.Status)
}

// readFailed answers a read that found no stream.
func readFailed(w http.ResponseWriter, res wire.StreamReadResult, name string) bool {
	switch res.Status {
	case http.StatusOK:
		return false
	case http.StatusGone:
		streamError(w, http.StatusGone, "stream "+name+" was deleted")
	default:
		streamError(w, http.StatusNotFound, "no stream "+name)
	}
	return true
}

func (s *Server) streamHead(w http.ResponseWriter, r *http.Request, name string) {
	res, err := s.streamRead(r.Context(), name, 0, 0, 1)
	if err != nil {
		hubError(w, err)
		return
	}
	if res.Status != http.StatusOK {
		w.WriteHeader(res.Status)
		return
	}
	h := w.Header()
	info := res.Info
	h.Set("Content-Type", info.ContentType)
	h.Set(hdrNextOffset, wire.StreamToken(info.Epoch, info.Next))
	if info.TTL != nil {
		h.Set(hdrTTL, strconv.FormatInt(*info.TTL, 10))
	}
	if info.ExpiresAt != "" {
		h.Set(hdrExpiresAt, info.ExpiresAt)
	}
	if info.Closed {
		h.Set(hdrClosed, "true")
	}
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// position is where a read starts: its offset query.
type position struct {
	start bool // -1 or none: the stream's first offset
	now   bool // the tail
	epoch string
	next  uint64
}

func parseOffset(v string, given bool) (position, bool) {
	switch {
	case !given || v == "-1":
		return position{start: true}, true
	case v == "now":
		return position{now: true}, true
	}
	epoch, next, ok := wire.ParseStreamToken(v)
	if ok && next == 0 {
		return position{start: true}, true // before any data
	}
	return position{epoch: epoch, next: next}, ok
}

// cursor returns the Stream-Cursor of a live answer: the current 20-second
// interval since 2024-10-09, past the client's own cursor.
func cursor(client string) string {
	cur := time.Since(time.Date(2024, 10, 9, 0, 0, 0, 0, time.UTC)) / (20 * time.Second)
	if c, err := strconv.ParseInt(client, 10, 64); err == nil && c >= int64(cur) {
		cur = time.Duration(c + 1 + rand.Int64N(180))
	}
	return strconv.FormatInt(int64(cur), 10)
}

// n0 is about the bytes of msgs' data.
func n0(msgs []wire.StreamMessage) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Data)
	}
	return n
}

// streamPayload encodes messages of a stream as a read's body.
func streamPayload(ct string, msgs []wire.StreamMessage) []byte {
	return appendPayload(make([]byte, 0, n0(msgs)+len(msgs)+2), ct, msgs)
}

// appendPayload appends the body of msgs to b.
func appendPayload(b []byte, ct string, msgs []wire.StreamMessage) []byte {
	if wire.JSONContentType(ct) {
		b = append(b, '[')
		for i, m := range msgs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, m.Data...)
		}
		return append(b, ']')
	}
	for _, m := range msgs {
		b = append(b, wire.DecodeStreamData(m.Data)...)
	}
	return b
}

func (s *Server) streamGet(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	offVals, given := q["offset"]
	offStr := ""
	if given {
		offStr = offVals[0]
	}
	pos, ok := parseOffset(offStr, given)
	if !ok || given && offStr == "" {
		streamError(w, http.StatusBadRequest, "malformed offset: use -1, now, or a Stream-Next-Offset this server gave")
		return
	}
	live := q.Get("live")
	switch live {
	case "", "long-poll", "sse":
	default:
		streamError(w, http.StatusBadRequest, "live must be long-poll or sse")
		return
	}
	if live != "" && !given {
		streamError(w, http.StatusBadRequest, "live reads need an offset")
		return
	}
	from := pos.next
	if pos.start || pos.now {
		from = 0
	}
	limit := streamReadMsgs
	if pos.now {
		limit = 0
	}
	res, err := s.streamRead(r.Context(), name, from, limit, streamReadBytes)
	if err != nil {
		hubError(w, err)
		return
	}
	if readFailed(w, res, name) {
		return
	}
	info := res.Info
	s.touch(name, info)
	if pos.now {
		pos.next, pos.epoch, res.Messages = info.Next, info.Epoch, res.Messages[:0]
	} else if pos.start {
		pos.next, pos.epoch = info.First, info.Epoch
	}
	switch {
	case pos.epoch != info.Epoch:
		streamError(w, http.StatusGone, "the offset is of another history of "+name+" (it was deleted and made again): read from -1")
		return
	case pos.next > info.Next:
		streamError(w, http.StatusBadRequest, "the offset is past the tail of "+name)
		return
	case pos.next < info.First:
		streamError(w, http.StatusGone, "the offset is before the first message "+name+" still holds")
		return
	}
	if live == "sse" {
		s.streamSSE(w, r, name, info, pos.next, res.Messages)
		return
	}
	if live == "long-poll" && len(res.Messages) == 0 && !info.Closed {
		res, info, ok = s.longPoll(w, r, name, info, pos.next)
		if !ok {
			return
		}
	}
	next := pos.next
	if n := len(res.Messages); n > 0 {
		next = res.Messages[n-1].Offset + 1
	}
	h := w.Header()
	h.Set("Content-Type", info.ContentType)
	h.Set(hdrNextOffset, wire.StreamToken(info.Epoch, next))
	upToDate := next >= info.Next
	if upToDate {
		h.Set(hdrUpToDate, "true")
	}
	closed := info.Closed && upToDate
	if closed {
		h.Set(hdrClosed, "true")
	}
	if live != "" && !closed {
		h.Set(hdrCursor, cursor(q.Get("cursor")))
	}
	if live == "long-poll" && len(res.Messages) == 0 {
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if pos.now && live == "" {
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if wire.JSONContentType(info.ContentType) {
			_, _ = w.Write([]byte("[]"))
		}
		return
	}
	etag := fmt.Sprintf(`"%s:%s:%s`, name, wire.StreamToken(pos.epoch, pos.next), wire.StreamToken(info.Epoch, next))
	if closed {
		etag += ":c"
	}
	etag += `"`
	h.Set("ETag", etag)
	if upToDate {
		h.Set("Cache-Control", "no-store")
	} else {
		h.Set("Cache-Control", "private, max-age=60, stale-while-revalidate=300")
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := streamPayload(info.ContentType, res.Messages)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// longPoll waits at the tail (next) of a stream for data or its closure,
// and reads what came. ok false: it answered already.
func (s *Server) longPoll(w http.ResponseWriter, r *http.Request, name string, info wire.StreamInfo, next uint64) (wire.StreamReadResult, wire.StreamInfo, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StreamLongPoll)
	defer cancel()
	res, err := s.waitStream(ctx, name, info, next)
	if err != nil {
		hubError(w, err)
		return res, info, false
	}
	if readFailed(w, res, name) {
		return res, info, false
	}
	return res, res.Info, true
}

// waitStream waits until stream name has messages at or after next, is
// closed, or ctx ends, and reads from next.
func (s *Server) waitStream(ctx context.Context, name string, info wire.StreamInfo, next uint64) (wire.StreamReadResult, error) {
	f, err := s.followStream(name, info)
	if err != nil {
		return wire.StreamReadResult{}, err
	}
	defer f.close()
	return f.wait(ctx, next)
}

// streamLook is how often a live reader looks at the hubs when nothing
// woke it: a safety net (closes and deletes reach it on the commit stream,
// from hubs of this release).
var streamLook = 30 * time.Second

// streamFollower is a live read of a stream: it follows the stream's
// channel as subscriptions do (acquire): the commit stream brings its
// messages, and its closes and deletes (channel.changedLocked).
type streamFollower struct {
	s    *Server
	name string
	ch   *channel
	info wire.StreamInfo
	// fromHubs: the next look is a read from the hubs, not the cache.
	fromHubs bool
	look     *time.Timer // the look at the hubs every streamLook
	msgs     []wire.StreamMessage
	changes  uint64 // the channel's changeCount when last looked at
}

func (s *Server) followStream(name string, info wire.StreamInfo) (*streamFollower, error) {
	ch, err := s.acquire(name)
	if err != nil {
		return nil, err
	}
	// The first look is a read from the hubs: a write between the caller's
	// read and acquire is seen.
	look := time.NewTimer(time.Hour)
	look.Stop()
	return &streamFollower{s: s, name: name, ch: ch, info: info, fromHubs: true, look: look,
		changes: ch.changeCount()}, nil
}

func (f *streamFollower) close() {
	f.look.Stop()
	f.s.release(f.ch)
}

// wait waits until the stream has messages at or after next, is closed,
// or ctx ends, and returns them (none when ctx ended). Messages are taken
// from the channel's cache when it has them (as WebSocket subscribers get
// them), from the hubs otherwise; after a close or delete (on the commit
// stream), or every streamLook, a read from the hubs tells
// it.
func (f *streamFollower) wait(ctx context.Context, next uint64) (wire.StreamReadResult, error) {
	for tries := 0; ; tries++ {
		if c := f.ch.changeCount(); c != f.changes {
			// Reset, or closed or deleted (by any gateway: the commit
			// stream tells): look at the hubs.
			f.changes, f.fromHubs = c, true
		}
		if !f.fromHubs {
			if msgs, chNext, ok := f.ch.cached(f.msgs, next, f.info.Epoch, streamReadMsgs, streamReadBytes); ok {
				f.msgs = msgs // reused by the next wait: the caller is done with these by then
				f.info.Next = max(f.info.Next, chNext)
				return wire.StreamReadResult{Status: http.StatusOK, Info: f.info, Messages: msgs}, nil
			}
		}
		wake, stopWait := f.ch.waitNext(next)
		if f.fromHubs {
			f.fromHubs = false
			res, err := f.s.streamRead(ctx, f.name, next, streamReadMsgs, streamReadBytes)
			if err != nil || res.Status != http.StatusOK || len(res.Messages) > 0 || res.Info.Closed || res.Info.Epoch != f.info.Epoch {
				stopWait()
				if err != nil && ctx.Err() != nil {
					return wire.StreamReadResult{Status: http.StatusOK, Info: f.info}, nil
				}
				if err == nil && res.Status == http.StatusOK {
					f.info = res.Info
				}
				return res, err
			}
			f.info = res.Info
		}
		f.look.Reset(streamLook)
		select {
		case <-wake:
		case <-f.look.C:
			f.fromHubs = true
		case <-ctx.Done():
			stopWait()
			f.look.Stop()
			return wire.StreamReadResult{Status: http.StatusOK, Info: f.info}, nil
		}
		stopWait()
		f.look.Stop()
		if tries > 100_000 {
			return wire.StreamReadResult{Status: http.StatusOK, Info: f.info}, nil
		}
	}
}

// sseWriter writes SSE events, flushing after each.
type sseWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	buf     []byte
	payload []byte // the data of the event being written
}

// event adds an event to the buffer; flush sends what is buffered.
func (e *sseWriter) event(kind string, data []byte, base64Enc bool) {
	e.buf = append(e.buf, "event: "...)
	e.buf = append(e.buf, kind...)
	e.buf = append(e.buf, '\n')
	if base64Enc {
		enc := base64.StdEncoding.AppendEncode(nil, data)
		for len(enc) > 0 {
			n := min(len(enc), 4096)
			e.buf = append(e.buf, "data:"...)
			e.buf = append(e.buf, enc[:n]...)
			e.buf = append(e.buf, '\n')
			enc = enc[n:]
		}
		if len(data) == 0 {
			e.buf = append(e.buf, "data:\n"...)
		}
	} else {
		// A data: line per line of text (CR LF, CR and LF all end one in
		// SSE): an event cannot be cut short, nor another made up, by the
		// data. JSON is compact: one line.
		for {
			i := bytes.IndexAny(data, "\r\n")
			e.buf = append(e.buf, "data:"...)
			if i < 0 {
				e.buf = append(e.buf, data...)
				e.buf = append(e.buf, '\n')
				break
			}
			e.buf = append(e.buf, data[:i]...)
			e.buf = append(e.buf, '\n')
			if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			data = data[i+1:]
		}
	}
	e.buf = append(e.buf, '\n')
}

// control adds a control event.
func (e *sseWriter) control(c sseControl) {
	e.buf = append(e.buf, "event: control\ndata:{\"streamNextOffset\":\""...)
	e.buf = append(e.buf, c.StreamNextOffset...) // a token: no character to escape
	e.buf = append(e.buf, '"')
	if c.StreamCursor != "" {
		e.buf = append(e.buf, `,"streamCursor":"`...)
		e.buf = append(e.buf, c.StreamCursor...) // digits
		e.buf = append(e.buf, '"')
	}
	if c.UpToDate {
		e.buf = append(e.buf, `,"upToDate":true`...)
	}
	if c.StreamClosed {
		e.buf = append(e.buf, `,"streamClosed":true`...)
	}
	e.buf = append(e.buf, "}\n\n"...)
}

func (e *sseWriter) flush() error {
	_, err := e.w.Write(e.buf)
	e.buf = e.buf[:0]
	if err != nil {
		return err
	}
	return e.rc.Flush()
}

type sseControl struct {
	StreamNextOffset string `json:"streamNextOffset"`
	StreamCursor     string `json:"streamCursor,omitempty"`
	UpToDate         bool   `json:"upToDate,omitempty"`
	StreamClosed     bool   `json:"streamClosed,omitempty"`
}

// streamSSE serves a read in SSE mode from next, msgs being the first
// messages read.
func (s *Server) streamSSE(w http.ResponseWriter, r *http.Request, name string, info wire.StreamInfo, next uint64, msgs []wire.StreamMessage) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	binary := !wire.TextContentType(info.ContentType)
	if binary {
		h.Set(hdrSSEEncoding, "base64")
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	ev := &sseWriter{w: w, rc: rc}
	ctx, cancel := context.WithTimeout(r.Context(), sseLifetime)
	defer cancel()
	clientCursor := r.URL.Query().Get("cursor")
	var f *streamFollower // once up to date
	defer func() {
		if f != nil {
			f.close()
		}
	}()
	for {
		if len(msgs) > 0 {
			ev.payload = appendPayload(ev.payload[:0], info.ContentType, msgs)
			ev.event("data", ev.payload, binary)
			next = msgs[len(msgs)-1].Offset + 1
		}
		upToDate := next >= info.Next
		c := sseControl{StreamNextOffset: wire.StreamToken(info.Epoch, next), UpToDate: upToDate}
		if info.Closed && upToDate {
			c.StreamClosed, c.UpToDate = true, true
		} else {
			c.StreamCursor = cursor(clientCursor)
			clientCursor = c.StreamCursor
		}
		ev.control(c)
		if err := ev.flush(); err != nil || c.StreamClosed {
			return
		}
		var res wire.StreamReadResult
		var err error
		if upToDate {
			if f == nil {
				if f, err = s.followStream(name, info); err != nil {
					return
				}
			}
			res, err = f.wait(ctx, next)
		} else {
			res, err = s.streamRead(ctx, name, next, streamReadMsgs, streamReadBytes)
		}
		if err != nil || ctx.Err() != nil || res.Status != http.StatusOK || res.Info.Epoch != info.Epoch {
			return // the client reconnects from the last control event
		}
		info, msgs = res.Info, res.Messages
	}
}
