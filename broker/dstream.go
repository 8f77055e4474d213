package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/dstream"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// MaxStreamOpBytes bounds the messages of one Durable Streams write (one
// Raft entry).
const MaxStreamOpBytes = 8 << 20

// StreamOp decides a Durable Streams write (package dstream): on the
// leader as a Raft entry of its own; a follower forwards it. The result's
// Status is the answer; the error is for the write not being decided
// (unavailable, timeout: it may or may not have been applied).
func (s *Service) StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error) {
	size := 0
	for i, m := range op.Messages {
		if len(m) > s.cfg.MaxMessageBytes {
			return wire.StreamResult{}, fmt.Errorf("%w: a message of %d bytes, over the %d allowed", ErrTooLarge, len(m), s.cfg.MaxMessageBytes)
		}
		// Stored compact, as publishes are: no raw newline in data.
		var buf bytes.Buffer
		if err := json.Compact(&buf, m); err != nil || !wire.Valid(buf.Bytes()) {
			return wire.StreamResult{}, fmt.Errorf("%w: a message that is not JSON", ErrBadRequest)
		}
		op.Messages[i] = buf.Bytes()
		size += buf.Len()
	}
	if size > MaxStreamOpBytes {
		return wire.StreamResult{}, fmt.Errorf("%w: %d bytes in one write, over the %d allowed", ErrTooLarge, size, MaxStreamOpBytes)
	}
	if !s.node.IsLeader() {
		api, err := s.leaderAPI()
		if err != nil {
			return wire.StreamResult{}, err
		}
		var out wire.StreamResult
		err = s.post(ctx, api, "/v1/ds/op", op, &out)
		return out, err
	}
	resp, err := s.node.Apply(&raft.Command{Streams: []wire.StreamOp{op}})
	if err != nil {
		return wire.StreamResult{}, err
	}
	if len(resp.Streams) != 1 {
		return wire.StreamResult{}, fmt.Errorf("%w: the entry answered %d stream results", log.ErrCorrupt, len(resp.Streams))
	}
	return resp.Streams[0], nil
}

// StreamRead reads a stream (dstream.Read) once this hub has applied
// minApplied (a write's Index: the read then sees it), waiting for that
// while ctx lasts.
func (s *Service) StreamRead(ctx context.Context, name string, from uint64, limit, maxBytes int, minApplied uint64) (wire.StreamReadResult, error) {
	if err := wire.CheckChannel(name); err != nil {
		return wire.StreamReadResult{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := s.waitApplied(ctx, minApplied); err != nil {
		return wire.StreamReadResult{}, err
	}
	limit = min(max(limit, 1), 10_000)
	maxBytes = min(max(maxBytes, 1), log.MaxReadBytes)
	// A reader's offset past this hub's tail may come from a hub that is
	// ahead (a gateway reads from any): wait a little for this one to catch
	// up before the gateway calls the offset bad.
	deadline := time.Now().Add(lagWait)
	for {
		var res wire.StreamReadResult
		err := s.log.View(func(v *log.View) error {
			var err error
			res, err = dstream.Read(v, name, from, limit, maxBytes, time.Now())
			return err
		})
		if err != nil || res.Status != http.StatusOK || from <= res.Info.Next || time.Now().After(deadline) {
			return res, err
		}
		ctx, cancel := context.WithDeadline(ctx, deadline)
		err = s.waitApplied(ctx, res.Applied+1)
		cancel()
		if err != nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return res, ctx.Err()
		}
	}
}

// lagWait bounds how long a stream read past this hub's tail waits for the
// hub to apply more.
const lagWait = 2 * time.Second

// waitApplied waits until this hub has applied index.
func (s *Service) waitApplied(ctx context.Context, index uint64) error {
	if index == 0 || s.log.Applied() >= index {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for s.log.Applied() < index {
		var wake <-chan struct{}
		if s.cfg.Stream != nil {
			wake = s.cfg.Stream.wakeAfter(index)
		}
		if wake == nil {
			t := time.NewTimer(2 * time.Millisecond)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: this hub has not applied entry %d yet", ErrNoLeader, index)
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("%w: this hub has not applied entry %d yet", ErrNoLeader, index)
		}
	}
	return nil
}

func (s *Service) handleStreamOp(w http.ResponseWriter, r *http.Request) {
	var op wire.StreamOp
	if !s.decode(w, r, MaxStreamOpBytes*2, &op) {
		return
	}
	res, err := s.StreamOp(r.Context(), op)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Service) handleStreamRead(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	num := func(k string) (uint64, error) {
		if q.Get(k) == "" {
			return 0, nil
		}
		return strconv.ParseUint(q.Get(k), 10, 64)
	}
	from, err1 := num("from")
	limit, err2 := num("limit")
	maxBytes, err3 := num("bytes")
	minApplied, err4 := num("min_applied")
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		s.writeError(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	res, err := s.StreamRead(r.Context(), q.Get("name"), from, int(min(limit, 1<<20)), int(min(maxBytes, 1<<30)), minApplied)
	if err != nil {
		s.writeError(w, err)
		return
	}
	if q.Get("format") != "lines" {
		writeJSON(w, http.StatusOK, res)
		return
	}
	// The fast form gateways read: the result without its messages in a
	// header, then a line per message, "OFFSET DATA\n" (data is compact
	// JSON: no raw newline).
	msgs := res.Messages
	res.Messages = nil
	head, err := json.Marshal(res)
	if err != nil {
		s.writeError(w, err)
		return
	}
	n := 0
	for _, m := range msgs {
		n += len(m.Data) + 22
	}
	body := make([]byte, 0, n)
	for _, m := range msgs {
		body = strconv.AppendUint(body, m.Offset, 10)
		body = append(body, ' ')
		body = append(body, m.Data...)
		body = append(body, '\n')
	}
	w.Header().Set(wire.HeaderStreamRead, string(head))
	w.Header().Set("Content-Type", wire.StreamLinesType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// streamOpsInFlight bounds the stream writes one gateway session has the
// hubs decide at once; past it the session's reader waits.
const streamOpsInFlight = 256

// streamOp decides a gateway's stream write (bus.TypeStreamOp) and answers
// it on the session, without holding up the session's reader.
func (r *router) streamOp(gw *session, m bus.Msg) {
	id := m.ID
	answer := func(res *wire.StreamResult, err error) {
		out := bus.Msg{Type: bus.TypeResponse, ID: id}
		if err != nil {
			out.Error = &wire.Error{Code: ErrorCode(err), Message: err.Error()}
		} else {
			out.Data, _ = json.Marshal(res) // plain fields
		}
		gw.push(out.Encode())
	}
	var op wire.StreamOp
	if err := json.Unmarshal(m.Data, &op); err != nil {
		answer(nil, fmt.Errorf("%w: stream write: %v", ErrBadRequest, err))
		return
	}
	gw.streamSlots <- struct{}{}
	r.wg.Add(1)
	go func() {
		defer func() { <-gw.streamSlots; r.wg.Done() }()
		ctx, cancel := context.WithDeadline(context.Background(), bus.DeadlineOf(m.Timeout, routerDefaultTimeout))
		defer cancel()
		res, err := r.s.StreamOp(ctx, op)
		answer(&res, err)
	}()
}

// sweepStreamsMax bounds the expired streams one sweep removes.
const sweepStreamsMax = 1000

// sweepStreams removes expired Durable Streams (on the leader, with the
// retention sweep): reads and writes already treat them as gone; this
// gives their space back. Each is decided again when applied.
func (s *Service) sweepStreams() {
	var names []string
	err := s.log.View(func(v *log.View) error {
		var err error
		names, err = dstream.Expired(v, time.Now(), sweepStreamsMax)
		return err
	})
	if err != nil {
		s.logger.Warn("stream sweep failed", "err", err)
		return
	}
	if len(names) == 0 {
		return
	}
	cmd := &raft.Command{}
	for _, name := range names {
		cmd.Streams = append(cmd.Streams, wire.StreamOp{Op: wire.StreamExpire, Name: name})
	}
	if _, err := s.node.Apply(cmd); err != nil {
		s.logger.Warn("stream sweep failed", "err", err)
		return
	}
	s.logger.Info("expired streams removed", "streams", len(names))
}
