package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/internal/buildinfo"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// Read limits of GET /v1/channels/{channel}/messages.
const (
	DefaultReadLimit = 100
	MaxReadLimit     = 10000
)

// Handler returns the hub HTTP API.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/publish", s.handlePublish)
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	mux.HandleFunc("GET /v1/namespaces", s.handleNamespaces)
	mux.HandleFunc("PUT /v1/namespaces", s.handleSetNamespaces)
	mux.HandleFunc("POST /v1/namespaces", s.handleSetNamespaces)
	mux.HandleFunc("GET /v1/stream", s.handleStream)
	mux.HandleFunc("POST /v1/ds/op", s.handleStreamOp)    // dstream.go
	mux.HandleFunc("GET /v1/ds/read", s.handleStreamRead) // dstream.go
	mux.HandleFunc("POST /v1/cluster/join", s.handleJoin)
	mux.HandleFunc("POST /v1/cluster/remove", s.handleRemove)
	mux.HandleFunc("GET /v1/bus", s.handleBus)                     // router.go
	mux.HandleFunc("POST /v1/connections/{id}/send", s.handleSend) // router.go
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// This pattern matches every method, so the mux never answers 405
		// itself: tell a wrong method on a known path from an unknown path.
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, pattern := mux.Handler(r2); pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, wire.Error{Code: wire.CodeBadRequest,
				Message: "method " + r.Method + " is not allowed on " + r.URL.Path + "; use " + strings.Join(allow, " or ")})
			return
		}
		writeJSON(w, http.StatusNotFound, wire.Error{Code: wire.CodeNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	api := requireSecret(s.cfg.Secret, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Channel names may hold '/' and "..": route them before ServeMux,
		// which cleans paths ("a/../b" is a valid channel name, not "b").
		if rest, ok := strings.CutPrefix(r.URL.Path, channelsPrefix); ok {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", http.MethodGet)
				writeJSON(w, http.StatusMethodNotAllowed, wire.Error{Code: wire.CodeBadRequest,
					Message: "method " + r.Method + " is not allowed on " + r.URL.Path + "; use GET"})
				return
			}
			if ch, ok := strings.CutSuffix(rest, "/presence"); ok {
				s.handlePresence(w, r, ch, false)
				return
			}
			if ch, ok := strings.CutSuffix(rest, "/presence_stats"); ok {
				s.handlePresence(w, r, ch, true)
				return
			}
			s.handleMessages(w, r, rest)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.adminPaths(w, r) { // admin.go: the admin view has its own tokens
			api.ServeHTTP(w, r)
		}
	})
}

const channelsPrefix = "/v1/channels/"

// Limits of the batch form of POST /v1/publish (a JSON array of publish
// requests): past MaxBatchPublishes publishes the request is refused 400,
// past MaxBatchBytes of body 413.
const (
	MaxBatchPublishes = 1000
	MaxBatchBytes     = 8 << 20
)

// handlePublish serves POST /v1/publish: one publish (a JSON object), or a
// batch (a JSON array of them) answered with one wire.PublishResult each,
// in order. Either way the publishes go through PublishAsync, queued in the
// order given; the handler waits for their answers, not a goroutine per
// publish.
func (s *Service) handlePublish(w http.ResponseWriter, r *http.Request) {
	body := bufio.NewReader(r.Body)
	first, err := firstByte(body)
	r.Body = struct {
		io.Reader
		io.Closer
	}{body, r.Body}
	if err == nil && first == '[' {
		s.handlePublishBatch(w, r)
		return
	}
	var req wire.PublishRequest
	if !s.decode(w, r, int64(s.cfg.MaxMessageBytes)*2+64<<10, &req) {
		return
	}
	ctx, cancel := s.publishContext(r)
	defer cancel()
	var (
		answer = make(chan outcome, 1)
		o      outcome
	)
	s.publishAsync(ctx, req.Channel, req.Data, req.ID, true, func(res wire.PublishResponse, err error) {
		answer <- outcome{res, err}
	})
	select {
	case o = <-answer:
	case <-ctx.Done():
		o.err = ctx.Err()
	}
	if o.err != nil {
		s.writeError(w, o.err)
		return
	}
	writeJSON(w, http.StatusOK, o.res)
}

// publishContext is the context of the publishes of request r: bounded by
// ApplyTimeout, and marked when another hub forwarded them.
func (s *Service) publishContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx := r.Context()
	if r.Header.Get(hubapi.HeaderForwarded) != "" {
		ctx = withForwarded(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.ApplyTimeout)
}

// firstByte returns the first byte of r that is not JSON white space, and
// leaves it unread.
func firstByte(r *bufio.Reader) (byte, error) {
	for range 4096 {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c, r.UnreadByte()
	}
	return 0, errors.New("only white space")
}

// readBody reads r's body, of at most limit bytes (an *http.MaxBytesError
// beyond), into a buffer of its Content-Length when it has one, rather
// than one grown as it is read. The messages decoded from a batch keep
// the buffer: one still queued or forwarded after the answer (a timeout)
// holds its whole batch's body, no more than their copies held before.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength <= 0 || r.ContentLength > limit {
		return io.ReadAll(body)
	}
	// At most 1 MiB up front: a body trickled in holds no more than it sent.
	buf := bytes.NewBuffer(make([]byte, 0, min(r.ContentLength, 1<<20)+bytes.MinRead))
	_, err := buf.ReadFrom(body) // grows only if the body is longer than said
	return buf.Bytes(), err
}

// handlePublishBatch serves the batch form of POST /v1/publish: every
// publish is queued in the order given, one that is refused (a bad channel,
// too large) does not stop the others, and the answer is 200 with one
// result per publish, in order.
func (s *Service) handlePublishBatch(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, MaxBatchBytes)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			s.writeError(w, fmt.Errorf("%w: request body is over %d bytes", ErrTooLarge, MaxBatchBytes))
		} else {
			s.writeError(w, fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err))
		}
		return
	}
	reqs, ok := wire.DecodePublishBatch(body)
	if !ok { // not plain, or not right: encoding/json says what is wrong
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !s.decode(w, r, MaxBatchBytes, &reqs) {
			return
		}
	}
	if len(reqs) > MaxBatchPublishes {
		s.writeError(w, fmt.Errorf("%w: a batch of %d publishes is over the limit of %d; send it in several requests",
			ErrBadRequest, len(reqs), MaxBatchPublishes))
		return
	}
	ctx, cancel := s.publishContext(r)
	defer cancel()
	var (
		mu      sync.Mutex
		results = make([]wire.PublishResult, len(reqs))
		filled  = make([]bool, len(reqs))
		left    = len(reqs)
		over    bool // answered: later answers are dropped
		all     = make(chan struct{})
	)
	if left == 0 {
		close(all)
	}
	for i, req := range reqs {
		s.publishAsync(ctx, req.Channel, req.Data, req.ID, true, func(res wire.PublishResponse, err error) {
			mu.Lock()
			defer mu.Unlock()
			if over {
				return
			}
			results[i], filled[i] = s.result(req.Channel, res, err), true
			if left--; left == 0 {
				close(all)
			}
		})
	}
	select {
	case <-all:
	case <-ctx.Done():
	}
	mu.Lock()
	over = true
	if left > 0 {
		for i := range results {
			if !filled[i] {
				results[i] = s.result(reqs[i].Channel, wire.PublishResponse{}, ctx.Err())
			}
		}
	}
	mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(wire.AppendPublishResults(make([]byte, 0, 64*len(results)+2), results), '\n'))
}

// result is the wire.PublishResult of a publish to channel.
func (s *Service) result(channel string, res wire.PublishResponse, err error) wire.PublishResult {
	if err == nil {
		return wire.PublishResult{Channel: res.Channel, Offset: res.Offset, Epoch: res.Epoch, Duplicate: res.Duplicate}
	}
	if e, ok := asAPIError(err); ok {
		return wire.PublishResult{Channel: channel, Code: e.Body.Code, Message: e.Body.Message}
	}
	_, code, known := classify(err)
	if !known {
		s.logger.Error("publish failed", "channel", channel, "err", err)
	}
	return wire.PublishResult{Channel: channel, Code: code, Message: err.Error()}
}

func (s *Service) handleMessages(w http.ResponseWriter, r *http.Request, rest string) {
	ch, ok := strings.CutSuffix(rest, "/messages")
	if !ok {
		writeJSON(w, http.StatusNotFound, wire.Error{Code: wire.CodeNotFound, Message: "no such endpoint: use /v1/channels/{channel}/messages"})
		return
	}
	q := r.URL.Query()
	from, err := queryUint(q.Get("from"), 1)
	if err != nil {
		s.writeError(w, fmt.Errorf("%w: from: %v", ErrBadRequest, err))
		return
	}
	limit, err := queryUint(q.Get("limit"), DefaultReadLimit)
	if err != nil || limit > MaxReadLimit {
		s.writeError(w, fmt.Errorf("%w: limit must be an integer from 0 to %d", ErrBadRequest, MaxReadLimit))
		return
	}
	hq, history, err := historyQuery(q, from, int(limit))
	if err != nil {
		s.writeError(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	var (
		res     wire.MessagesResponse
		applied uint64
	)
	if history {
		applied = s.log.Applied()
		res, err = s.History(ch, hq)
	} else {
		res, applied, err = s.ReadApplied(ch, from, int(limit))
	}
	if err != nil {
		s.writeError(w, err)
		return
	}
	w.Header().Set(HeaderApplied, strconv.FormatUint(applied, 10))
	if q.Get("format") == "frames" {
		writeFrames(w, ch, res)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Headers of a range read in frames (see writeFrames and wire).
const (
	HeaderEpoch = wire.HeaderEpoch
	HeaderFirst = wire.HeaderFirst
	HeaderNext  = wire.HeaderNext
	// FramesType is the content type of a range read in frames.
	FramesType = wire.FramesType
)

// writeFrames answers a range read asked with format=frames, the form
// gateways read in: epoch, first and next in headers, and each message as
// the message frame clients get (wire.AppendMessage), one per line. The
// gateway passes the lines on as they are, with no JSON to decode and
// encode again.
func writeFrames(w http.ResponseWriter, ch string, res wire.MessagesResponse) {
	h := w.Header()
	h.Set("Content-Type", FramesType)
	h.Set(HeaderEpoch, res.Epoch)
	h.Set(HeaderFirst, strconv.FormatUint(res.First, 10))
	h.Set(HeaderNext, strconv.FormatUint(res.Next, 10))
	size := 0
	for _, m := range res.Messages {
		size += len(m.Data) + len(ch) + 48
	}
	buf := make([]byte, 0, size)
	for _, m := range res.Messages {
		buf = wire.AppendMessage(buf, ch, m.Offset, m.Data)
		buf = append(buf, '\n')
	}
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// historyQuery reads a range read's history parameters (before, reverse,
// since_time); history is false when it has none, and the read is a plain
// one from from.
func historyQuery(q url.Values, from uint64, limit int) (hq wire.HistoryQuery, history bool, err error) {
	hq = wire.HistoryQuery{From: from, Limit: limit}
	if v := q.Get("before"); v != "" {
		if hq.Before, err = queryUint(v, 0); err != nil || hq.Before == 0 {
			return hq, false, fmt.Errorf("before: %q is not a positive integer", v)
		}
		history = true
	}
	switch v := q.Get("reverse"); v {
	case "", "false", "0":
	case "true", "1":
		hq.Reverse, history = true, true
	default:
		return hq, false, fmt.Errorf("reverse: %q is not true or false", v)
	}
	if v := q.Get("since_time"); v != "" {
		if hq.SinceTime, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return hq, false, fmt.Errorf("since_time: %q is not an RFC 3339 time", v)
		}
		history = true
	}
	return hq, history, nil
}

func queryUint(v string, def uint64) (uint64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a non-negative integer", v)
	}
	return n, nil
}

func (s *Service) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req wire.JoinRequest
	if !s.decode(w, r, 64<<10, &req) {
		return
	}
	if err := s.Join(r.Context(), req); err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Service) handleRemove(w http.ResponseWriter, r *http.Request) {
	var req wire.RemoveRequest
	if !s.decode(w, r, 64<<10, &req) {
		return
	}
	if err := s.Remove(r.Context(), req.ID); err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Service) handleReady(w http.ResponseWriter, r *http.Request) {
	if err := s.Ready(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, wire.Error{Code: wire.CodeUnavailable, Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// readyWait is how long Ready waits for this hub to apply what was committed
// when it was asked. Under load the applied index always trails the commit
// index by the entries being applied, on the leader too; that is not lag.
const readyWait = time.Second

// Ready reports whether this hub's channel log is sound (no damage found,
// not waiting for disk space: log.Log.Fault), knows a leader, and has
// applied everything it knew to be committed when asked, within readyWait
// (or until ctx ends, when that is sooner).
func (s *Service) Ready(ctx context.Context) error {
	if f := s.log.Fault(); f != nil {
		return f
	}
	if err := s.node.LogFault(); err != nil {
		return fmt.Errorf("cannot append to the raft log: %w", err)
	}
	if id, _ := s.node.Leader(); id == "" {
		return errors.New("no leader")
	}
	ix := s.node.Indexes()
	if ix.Applied < ix.Commit {
		ctx, cancel := context.WithTimeout(ctx, readyWait)
		defer cancel()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for cur := ix; cur.Applied < ix.Commit; cur = s.node.Indexes() {
			select {
			case <-ctx.Done():
				return fmt.Errorf("catching up: applied %d of %d", cur.Applied, ix.Commit)
			case <-tick.C:
			}
		}
	}
	if s.log.Epoch() == "" {
		return errors.New("no entry applied yet")
	}
	if s.cfg.Namespaces != nil && s.node.IsLeader() && !namespacesEqual(s.Namespaces().Namespaces, s.cfg.Namespaces) {
		return errors.New("the configured namespaces are not the cluster's yet")
	}
	return nil
}

func (s *Service) handleCluster(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("local") != "" {
		writeJSON(w, http.StatusOK, s.localStatus())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Service) localStatus() wire.ClusterStatus {
	ix := s.node.Indexes()
	lid, _ := s.node.Leader()
	st := wire.ClusterStatus{
		ID: s.node.ID(), State: s.node.State(), Leader: lid,
		Term: ix.Term, CommitIndex: ix.Commit, AppliedIndex: ix.Applied, LastIndex: ix.Last,
		Version: buildinfo.Get().Version, Commit: buildinfo.Get().Commit,
	}
	st.LeaderAPI, _ = s.leaderAPI()
	return st
}

// Status returns this hub's view of the cluster: every member of the Raft
// configuration with its addresses, and the state and indexes each reports
// (asked over its API; "unreachable" when it does not answer).
func (s *Service) Status(ctx context.Context) (wire.ClusterStatus, error) {
	st := s.localStatus()
	servers, err := s.node.Servers()
	if err != nil {
		return st, err
	}
	st.Nodes = make([]wire.Node, len(servers))
	var wg sync.WaitGroup
	for i, sv := range servers {
		n := wire.Node{ID: sv.ID, Raft: sv.Addr, Voter: sv.Voter, Leader: sv.ID == st.Leader}
		if m, ok := s.meta(sv.ID); ok {
			n.API = m.API
		}
		if sv.ID == s.node.ID() {
			n.API, n.State, n.Applied, n.Commit, n.Version = s.cfg.API, st.State, st.AppliedIndex, st.CommitIndex, st.Version
			st.Nodes[i] = n
			continue
		}
		st.Nodes[i] = n
		if n.API == "" {
			st.Nodes[i].State, st.Nodes[i].Error = "unknown", "API address not registered yet"
			continue
		}
		wg.Add(1)
		go func(n *wire.Node) {
			defer wg.Done()
			var remote wire.ClusterStatus
			if err := s.client.Get(ctx, n.API, "/v1/cluster?local=1", &remote); err != nil {
				n.State, n.Error = "unreachable", err.Error()
				return
			}
			n.State, n.Applied, n.Commit, n.Version = remote.State, remote.AppliedIndex, remote.CommitIndex, remote.Version
		}(&st.Nodes[i])
	}
	wg.Wait()
	return st, nil
}

// decode reads a JSON body of at most limit bytes into v, refusing unknown
// fields and trailing data. On failure it writes the error answer and
// returns false.
func (s *Service) decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err == nil {
		return true
	}
	var (
		maxErr  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		synErr  *json.SyntaxError
	)
	switch {
	case errors.As(err, &maxErr):
		s.writeError(w, fmt.Errorf("%w: request body is over %d bytes", ErrTooLarge, limit))
	case errors.As(err, &typeErr):
		s.writeError(w, fmt.Errorf("%w: field %q must be %s, not %s", ErrBadRequest, typeErr.Field, typeErr.Type, typeErr.Value))
	case errors.As(err, &synErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		s.writeError(w, fmt.Errorf("%w: body is not valid JSON: %v", ErrBadRequest, err))
	default:
		s.writeError(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
	}
	return false
}

func (s *Service) writeError(w http.ResponseWriter, err error) {
	if e, ok := asAPIError(err); ok {
		writeJSON(w, e.Status, e.Body)
		return
	}
	status, code, known := classify(err)
	if !known {
		s.logger.Error("request failed", "err", err)
	}
	body := wire.Error{Code: code, Message: err.Error()}
	if status == http.StatusServiceUnavailable {
		body.Leader, _ = s.leaderAPI()
	}
	writeJSON(w, status, body)
}

// ErrorCode returns the error code of CONTRACT.md (wire.Code*) for an error
// of the Service or of a hub's answer (*hubapi.APIError).
func ErrorCode(err error) string {
	if e, ok := asAPIError(err); ok {
		return e.Body.Code
	}
	_, code, _ := classify(err)
	return code
}

// classify maps an error to an HTTP status and an error code; known is
// false for errors that are not expected (a 500 worth logging).
func classify(err error) (status int, code string, known bool) {
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, log.ErrBadChannel), errors.Is(err, raft.ErrAddrInUse):
		return http.StatusBadRequest, wire.CodeBadRequest, true
	case errors.Is(err, raft.ErrIDInUse):
		return http.StatusConflict, wire.CodeBadRequest, true
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, wire.CodeTooLarge, true
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, wire.CodeNotFound, true
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, wire.CodeTimeout, true
	// raft.ErrTimeout: Raft never took the entry, so it was not stored;
	// "timeout" would say it may have been.
	case errors.Is(err, raft.ErrTimeout),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, ErrNoLeader), errors.Is(err, raft.ErrUnknownOutcome),
		errors.Is(err, raft.ErrClosed), errors.Is(err, ErrClosed), errors.Is(err, log.ErrNoEpoch),
		errors.Is(err, log.ErrClosed), errors.Is(err, log.ErrTooManyIDs), errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable, wire.CodeUnavailable, true
	case errors.Is(err, ErrStorage):
		// The log's own fault, logged there once.
		return http.StatusServiceUnavailable, wire.CodeUnavailable, true
	case errors.Is(err, log.ErrCorrupt):
		// Named and logged once by the log (Fault); not a client's doing.
		return http.StatusInternalServerError, wire.CodeUnavailable, true
	case errors.Is(err, context.Canceled):
		return 499, wire.CodeUnavailable, true
	default:
		return http.StatusInternalServerError, wire.CodeUnavailable, false
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
