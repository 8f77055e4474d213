package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// Server-Sent Events (docs/sse.md): GET /sse?channel=a&channel=b streams
// the channels' messages to a browser's EventSource, with no client
// library. The stream is a connection like any other (conn): its client
// frames are made up from the URL and Last-Event-ID (a subscribe per
// channel) and the server's frames are written as events. Each event that
// moves a position carries an id holding the positions of all the
// stream's channels (sseid.go), which the browser sends back as
// Last-Event-ID when it reconnects: the stream resumes every channel right
// after what it got.

// sseRetry is the reconnection delay a stream suggests to the browser,
// plus up to as much again at random, so that the clients of a gateway
// that went away do not all come back at once.
const sseRetry = time.Second

// serveSSE serves GET /sse.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if origin := r.Header.Get("Origin"); origin != "" {
		if !s.checkOrigin(r) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET")
		h.Set("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		h.Set("Allow", "GET, OPTIONS")
		http.Error(w, "method not allowed: GET /sse?channel=...", http.StatusMethodNotAllowed)
		return
	}
	req, err := parseSSERequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Refused before the stream starts: an EventSource does not reconnect
	// after an error status, where it would after a stream that ends.
	if req.token != "" {
		if _, err := s.verify(req.token); err != nil {
			s.m.authFailures.WithLabelValues(authFailure(err)).Inc()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
	} else if !s.cfg.AllowAnonymous {
		s.m.authFailures.WithLabelValues("missing").Inc()
		http.Error(w, "token required: give ?token=", http.StatusUnauthorized)
		return
	}
	if !s.enter() {
		http.Error(w, "gateway shutting down: reconnect elsewhere", http.StatusServiceUnavailable)
		return
	}
	defer s.active.Done()
	rc := http.NewResponseController(w)
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	retry := sseRetry + rand.N(sseRetry)
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", retry.Milliseconds()); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return // cannot stream (a ResponseWriter without Flush)
	}
	t := newSSETransport(r.Context(), w, rc, req)
	s.newConn(t).serve(req.token)
	t.finish()
}

// sseRequest is what GET /sse asks for.
type sseRequest struct {
	names []string // sorted, distinct
	pos   []ssePos // from Last-Event-ID, by name
	from  *uint64  // ?from=, for channels without a position
	epoch string   // ?epoch=, with from
	token string
}

func parseSSERequest(r *http.Request) (sseRequest, error) {
	q := r.URL.Query()
	var req sseRequest
	req.names = slices.Clone(q["channel"])
	slices.Sort(req.names)
	req.names = slices.Compact(req.names)
	switch {
	case len(req.names) == 0:
		return req, errors.New("no channel: GET /sse?channel=name[&channel=other...]")
	case len(req.names) > MaxSSEChannels:
		return req, fmt.Errorf("%d channels: at most %d on one stream; open more streams", len(req.names), MaxSSEChannels)
	}
	for _, n := range req.names {
		if err := wire.CheckChannel(n); err != nil {
			return req, fmt.Errorf("channel %q: %w", n, err)
		}
	}
	if v := q.Get("from"); v != "" {
		from, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return req, fmt.Errorf("from=%q: want an offset (a non-negative integer)", v)
		}
		req.from = &from
	}
	req.epoch = q.Get("epoch")
	req.token = q.Get("token")
	// Browsers send Last-Event-ID as a header; EventSource polyfills that
	// cannot set headers send ?lastEventId=.
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = q.Get("lastEventId")
	}
	var err error
	if req.pos, err = parseEventID(id, req.names); err != nil {
		return req, err
	}
	return req, nil
}

// sseTransport is a stream's transport. read hands out the subscribe
// frames, then waits for the end; write, ping and closeWith write events
// from the connection's writer goroutine, the only one that writes.
type sseTransport struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	req context.Context // the request's: ends when the client goes

	frames [][]byte // subscribe frames read has yet to hand out

	done      chan struct{} // closed by close
	closeOnce sync.Once
	writing   atomic.Bool // a write is under way
	// mu guards finished: once the handler returned, close touches
	// nothing of the response.
	mu       sync.Mutex
	finished bool

	// The writer's.
	names []string
	index map[string]int
	from  []*uint64 // what each subscribe asked
	ids   *sseIDs
}

func newSSETransport(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, req sseRequest) *sseTransport {
	t := &sseTransport{w: w, rc: rc, req: ctx, done: make(chan struct{}),
		names: req.names, index: make(map[string]int, len(req.names)), from: make([]*uint64, len(req.names)),
		ids: newSSEIDs(req.names, req.pos)}
	for i, n := range req.names {
		t.index[n] = i
		f := wire.ClientFrame{Op: wire.OpSubscribe, ID: n, Channel: n}
		if p := req.pos[i]; p.known {
			from := p.last + 1
			f.From, f.Epoch = &from, p.epoch
		} else if req.from != nil {
			from := *req.from
			f.From, f.Epoch = &from, req.epoch
		}
		t.from[i] = f.From
		b, _ := json.Marshal(f) // a ClientFrame always encodes
		t.frames = append(t.frames, b)
	}
	return t
}

func (t *sseTransport) name() string { return "sse" }

func (t *sseTransport) read() ([]byte, error) {
	if len(t.frames) > 0 {
		f := t.frames[0]
		t.frames = t.frames[1:]
		return f, nil
	}
	select {
	case <-t.req.Done():
		return nil, t.req.Err()
	case <-t.done:
		return nil, net.ErrClosed
	}
}

// sseBufs are the buffers events are assembled in, taken for a write.
var sseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// msgHead starts every message object (wire.AppendMessage); an event's
// data is the object without its op.
const msgHead = `{"op":"message","channel":"`

// write writes the objects of a server frame as events.
func (t *sseTransport) write(frame []byte) error {
	bp := sseBufs.Get().(*[]byte)
	b := (*bp)[:0]
	for len(frame) > 0 {
		obj := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			obj, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		b = t.appendEvent(b, obj)
	}
	err := t.send(b)
	if cap(b) <= 1<<20 {
		*bp = b[:0]
		sseBufs.Put(bp)
	}
	return err
}

// appendEvent appends the event of one server object to b.
func (t *sseTransport) appendEvent(b, obj []byte) []byte {
	if bytes.HasPrefix(obj, []byte(msgHead)) {
		rest := obj[len(msgHead):]
		if n := bytes.IndexByte(rest, '"'); n > 0 {
			if i, ok := t.index[string(rest[:n])]; ok {
				if off, ok := wire.MessageOffset(obj, t.names[i]); ok {
					t.ids.pos[i].last = off
				}
			}
		}
		b = append(b, "id: "...)
		b = t.ids.appendID(b)
		b = append(b, "\ndata: {"...)
		b = append(b, obj[len(`{"op":"message",`):]...)
		return append(b, "\n\n"...)
	}
	var f wire.ServerFrame
	if err := json.Unmarshal(obj, &f); err != nil {
		return b // not from this gateway
	}
	var data []byte
	switch f.Op {
	case wire.OpSubscribed:
		i, ok := t.index[f.Channel]
		if !ok {
			return b
		}
		t.ids.setEpoch(i, f.Epoch)
		switch from := t.from[i]; {
		case from == nil:
			t.ids.pos[i].last = f.Next - 1 // live from next
		case f.Recovered:
			t.ids.pos[i].last = max(*from, 1) - 1
		default:
			t.ids.pos[i].last = f.First - 1 // the replay starts at first
		}
		data, _ = json.Marshal(sseSubscribed{f.Channel, f.Epoch, f.Recovered, f.First, f.Next})
		b = append(b, "id: "...)
		b = t.ids.appendID(b)
		b = append(b, '\n')
	case wire.OpError:
		e := sseError{Code: f.Code, Message: f.Message}
		if _, ok := t.index[f.ID]; ok {
			e.Channel = f.ID // a subscribe's: its id is the channel
		}
		data, _ = json.Marshal(e)
	default:
		data = obj
	}
	b = append(b, "event: "...)
	b = append(b, f.Op...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// sseSubscribed and sseError are the data of subscribed and error events.
type sseSubscribed struct {
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
	First     uint64 `json:"first"`
	Next      uint64 `json:"next"`
}

type sseError struct {
	Channel string `json:"channel,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// send writes b and flushes it, unless the transport is closed. A write
// under way when close is called is cut by a write deadline in the past.
func (t *sseTransport) send(b []byte) error {
	t.writing.Store(true)
	defer t.writing.Store(false)
	select {
	case <-t.done:
		return net.ErrClosed
	default:
	}
	if _, err := t.w.Write(b); err != nil {
		return err
	}
	return t.rc.Flush()
}

// ping writes a comment, which keeps proxies from closing a quiet stream
// and finds a client that went.
func (t *sseTransport) ping() error { return t.send([]byte(":\n")) }

// closeWith writes a close event, then ends the stream: the browser
// reconnects after its retry delay.
func (t *sseTransport) closeWith(code int, reason string) {
	data, _ := json.Marshal(struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{code, reason})
	_ = t.send(slices.Concat([]byte("event: close\ndata: "), data, []byte("\n\n")))
	t.close()
}

// close ends the stream; it may be called from any goroutine.
func (t *sseTransport) close() {
	t.closeOnce.Do(func() { close(t.done) })
	if !t.writing.Load() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.finished {
		_ = t.rc.SetWriteDeadline(time.Now()) // the write under way fails
	}
}

// finish is the handler's, when the connection has ended.
func (t *sseTransport) finish() {
	t.mu.Lock()
	t.finished = true
	t.mu.Unlock()
}
