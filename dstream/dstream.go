// Package dstream keeps the state of channels served as Durable Streams
// (docs/durable-streams.md) and decides every write to them, inside the
// hubs' Raft state machine: an append, the checks it passes (closure,
// content type, idempotent producer, Stream-Seq, expiry) and the state it
// changes are one step of one Update, decided the same way on every hub
// from the entry's bytes and the stored state (the entry's time stands for
// "now"; nothing reads a clock).
//
// A stream is a channel with a state record (log.Tx.StreamState): its
// messages are the channel's messages and its offsets the channel's. A
// fork is a channel whose offsets start where it diverged from its source
// (log.Tx.CreateChannelAt, in the source's epoch): reads below that offset
// are served from the source, which is kept (soft-deleted, answering 410)
// while forks still read it.
package dstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
)

// ErrNotWritable refuses a publish over the client protocol to a channel
// that is a closed stream or a stream of bytes.
var ErrNotWritable = errors.New("channel takes no publishes")

// maxChain bounds how many sources a read or a fork follows.
const maxChain = 64

// state is the record kept with a stream's channel.
type state struct {
	ContentType string `json:"ct"`
	TTL         *int64 `json:"ttl,omitempty"`
	ExpiresAt   string `json:"exp,omitempty"`
	ExpiresNano int64  `json:"expn,omitempty"`
	// Access is the time of the last write or read that reset the TTL.
	Access    int64                `json:"at,omitempty"`
	Closed    bool                 `json:"closed,omitempty"`
	ClosedBy  *wire.StreamProducer `json:"closed_by,omitempty"`
	Producers map[string]producer  `json:"producers,omitempty"`
	Seq       string               `json:"seq,omitempty"`
	// A fork: its source, the first offset of its own, and what its
	// creation asked (to tell an identical re-creation).
	Source  string `json:"src,omitempty"`
	ForkAt  uint64 `json:"fork_at,omitempty"`
	ForkReq string `json:"fork_req,omitempty"`
	// Forks counts the forks reading this stream; Deleted marks it deleted
	// while they do.
	Forks   int  `json:"forks,omitempty"`
	Deleted bool `json:"deleted,omitempty"`
}

type producer struct {
	Epoch int64 `json:"e"`
	Seq   int64 `json:"s"`
}

func (s *state) expired(now int64) bool {
	if s.TTL != nil && now > s.Access+*s.TTL*int64(time.Second) {
		return true
	}
	return s.ExpiresNano != 0 && now >= s.ExpiresNano
}

func decode(raw []byte) (*state, error) {
	if raw == nil {
		return nil, nil
	}
	var s state
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%w: stream state: %v", log.ErrCorrupt, err)
	}
	return &s, nil
}

// Emit hears of each message a write appended, and, with offset 0 and no
// data, of a stream's state change that live readers must see (closed,
// deleted, expired), in the channel's epoch after it.
type Emit func(channel string, offset uint64, epoch string, data []byte)

// applier applies one StreamOp.
type applier struct {
	tx    *log.Tx
	now   int64
	epoch string // the entry's fresh epoch, for channels reset
	emit  Emit
}

// Apply decides op as of the entry's time now and applies it; epoch is the
// entry's fresh epoch string (for histories it resets). A refusal is a
// result (its Status), not an error; the error is for storage failures.
func Apply(tx *log.Tx, op wire.StreamOp, now time.Time, epoch string, emit Emit) (wire.StreamResult, error) {
	a := &applier{tx: tx, now: now.UnixNano(), epoch: epoch, emit: emit}
	if !wire.ValidChannel(op.Name) {
		return refuse(http.StatusBadRequest, "bad stream name %q", op.Name), nil
	}
	switch op.Op {
	case wire.StreamCreate:
		if op.ForkFrom != "" {
			return a.fork(op)
		}
		return a.create(op)
	case wire.StreamAppend:
		return a.append(op)
	case wire.StreamDelete:
		return a.delete(op)
	case wire.StreamTouch:
		return a.touch(op)
	case wire.StreamExpire:
		return a.expire(op)
	}
	return refuse(http.StatusBadRequest, "unknown stream operation %q", op.Op), nil
}

func refuse(status int, format string, args ...any) wire.StreamResult {
	return wire.StreamResult{Status: status, Message: fmt.Sprintf(format, args...)}
}

func (a *applier) load(name string) (*state, log.Info, bool, error) {
	raw, exists, err := a.tx.StreamState(name)
	if err != nil {
		return nil, log.Info{}, false, err
	}
	s, err := decode(raw)
	if err != nil {
		return nil, log.Info{}, false, fmt.Errorf("%s: %w", name, err)
	}
	var info log.Info
	if exists {
		info, _, err = a.tx.ChannelInfo(name)
	}
	return s, info, exists, err
}

func (a *applier) save(name string, s *state) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return a.tx.SetStreamState(name, raw)
}

// result is a success's answer with the stream's position.
func (a *applier) result(status int, name string, s *state) (wire.StreamResult, error) {
	info, _, err := a.tx.ChannelInfo(name)
	return wire.StreamResult{Status: status, Epoch: info.Epoch, Next: info.Next, ContentType: s.ContentType, Closed: s.Closed}, err
}

// changed tells of a state change of stream name (Emit).
func (a *applier) changed(name string) error {
	if a.emit == nil {
		return nil
	}
	info, _, err := a.tx.ChannelInfo(name)
	if err == nil {
		a.emit(name, 0, info.Epoch, nil)
	}
	return err
}

func (a *applier) appendAll(name string, msgs []json.RawMessage) error {
	for _, m := range msgs {
		res, err := a.tx.Append(name, "", m, time.Unix(0, a.now).UTC())
		if err != nil {
			return err
		}
		if res.Err != nil {
			return fmt.Errorf("append to stream %s: %w", name, res.Err)
		}
		if a.emit != nil {
			a.emit(name, res.Offset, res.Epoch, m)
		}
	}
	return nil
}

// clear removes an expired stream before its name is used again.
func (a *applier) clear(name string, s *state) (blocked bool, err error) {
	if s.Forks > 0 {
		return true, nil // forks still read it
	}
	return false, a.remove(name, s)
}

// remove deletes a stream for good: its channel starts a new, empty
// history, and its source loses a reader (and goes too, if it was deleted
// and that was its last one).
func (a *applier) remove(name string, s *state) error {
	for depth := 0; depth < maxChain; depth++ {
		if err := a.tx.DeleteChannel(name, a.epoch); err != nil {
			return err
		}
		if err := a.changed(name); err != nil {
			return err
		}
		if s.Source == "" {
			return nil
		}
		src, _, _, err := a.load(s.Source)
		if err != nil || src == nil {
			return err
		}
		src.Forks--
		if src.Forks > 0 || !(src.Deleted || src.expired(a.now)) {
			return a.save(s.Source, src)
		}
		name, s = s.Source, src
	}
	return nil
}

func sameExpiry(s *state, op wire.StreamOp) bool {
	if (s.TTL == nil) != (op.TTL == nil) || s.TTL != nil && *s.TTL != *op.TTL {
		return false
	}
	return s.ExpiresNano == expiresNano(op.ExpiresAt)
}

func expiresNano(v string) int64 {
	if v == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0
	}
	return t.UnixNano()
}

// target loads the stream a create makes at name: no state when there is
// none (an expired one is removed first), or a refusal when the name is
// held by a stream deleted or expired while forks still read it.
func (a *applier) target(name string) (*state, log.Info, bool, *wire.StreamResult, error) {
	s, info, exists, err := a.load(name)
	if err != nil || s == nil {
		return s, info, exists, nil, err
	}
	if s.Deleted {
		r := refuse(http.StatusConflict, "stream %s was deleted while forks still read it", name)
		return nil, info, exists, &r, nil
	}
	if !s.expired(a.now) {
		return s, info, exists, nil, nil
	}
	blocked, err := a.clear(name, s)
	if err != nil || blocked {
		r := refuse(http.StatusConflict, "stream %s expired while forks still read it", name)
		return nil, info, exists, &r, err
	}
	return nil, log.Info{First: 1, Next: 1}, true, nil, nil
}

func deref(r *wire.StreamResult) wire.StreamResult {
	if r == nil {
		return wire.StreamResult{}
	}
	return *r
}

func (a *applier) create(op wire.StreamOp) (wire.StreamResult, error) {
	ct := op.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	s, info, exists, refusal, err := a.target(op.Name)
	if err != nil || refusal != nil {
		return deref(refusal), err
	}
	if s != nil {
		if wire.MediaType(s.ContentType) == wire.MediaType(ct) && sameExpiry(s, op) && s.Closed == op.Closed && s.Source == "" {
			return a.result(http.StatusOK, op.Name, s)
		}
		return refuse(http.StatusConflict, "stream %s exists with another configuration", op.Name), nil
	}
	if exists && info.Next > info.First && !wire.JSONContentType(ct) {
		return refuse(http.StatusConflict, "channel %s holds messages published over the client protocol: it can only be an application/json stream", op.Name), nil
	}
	s = &state{ContentType: ct, TTL: op.TTL, ExpiresAt: op.ExpiresAt, ExpiresNano: expiresNano(op.ExpiresAt), Access: a.now}
	if err := a.appendAll(op.Name, op.Messages); err != nil {
		return wire.StreamResult{}, err
	}
	s.Closed = op.Closed
	if err := a.save(op.Name, s); err != nil {
		return wire.StreamResult{}, err
	}
	return a.result(http.StatusCreated, op.Name, s)
}

// messageAt returns the data of stream name's message at off, following
// forks to their sources.
func (a *applier) messageAt(name string, s *state, off uint64) ([]byte, error) {
	for depth := 0; s != nil && s.Source != "" && off < s.ForkAt && depth < maxChain; depth++ {
		name = s.Source
		var err error
		if s, _, _, err = a.load(name); err != nil {
			return nil, err
		}
	}
	return a.tx.MessageAt(name, off)
}

func (a *applier) fork(op wire.StreamOp) (wire.StreamResult, error) {
	src, srcInfo, _, err := a.load(op.ForkFrom)
	if err != nil {
		return wire.StreamResult{}, err
	}
	if src == nil || !src.Deleted && src.expired(a.now) {
		return refuse(http.StatusNotFound, "no stream %s to fork", op.ForkFrom), nil
	}
	if src.Deleted {
		return refuse(http.StatusConflict, "stream %s was deleted", op.ForkFrom), nil
	}
	ct := src.ContentType
	if op.ContentType != "" {
		if wire.MediaType(op.ContentType) != wire.MediaType(src.ContentType) {
			return refuse(http.StatusConflict, "a fork has its source's content type, %s", src.ContentType), nil
		}
		ct = op.ContentType
	}
	anchor := op.ForkOffset
	if anchor == 0 {
		anchor = srcInfo.Next
	}
	if op.ForkEpoch != "" && op.ForkEpoch != srcInfo.Epoch {
		return refuse(http.StatusBadRequest, "fork offset is of another history of %s", op.ForkFrom), nil
	}
	if anchor > srcInfo.Next {
		return refuse(http.StatusBadRequest, "fork offset is past the tail of %s", op.ForkFrom), nil
	}
	forkAt, sub := anchor, op.ForkSub
	var partial []byte
	if sub > 0 {
		if anchor >= srcInfo.Next {
			return refuse(http.StatusBadRequest, "sub-offset %d past the end of %s", sub, op.ForkFrom), nil
		}
		if wire.JSONContentType(src.ContentType) {
			if anchor+uint64(sub) > srcInfo.Next {
				return refuse(http.StatusBadRequest, "sub-offset %d past the messages of %s", sub, op.ForkFrom), nil
			}
			forkAt = anchor + uint64(sub)
		} else {
			data, err := a.messageAt(op.ForkFrom, src, anchor)
			if err != nil {
				return wire.StreamResult{}, err
			}
			b := wire.DecodeStreamData(data)
			switch {
			case sub > int64(len(b)):
				return refuse(http.StatusBadRequest, "sub-offset %d past the %d bytes of the next append of %s", sub, len(b), op.ForkFrom), nil
			case sub == int64(len(b)):
				forkAt = anchor + 1
			default:
				partial = b[:sub]
			}
		}
	}
	req := fmt.Sprintf("%d|%d", anchor, sub)
	s, info, exists, refusal, err := a.target(op.Name)
	if err != nil || refusal != nil {
		return deref(refusal), err
	}
	// Clearing an expired target may have removed the source too.
	if src, srcInfo, _, err = a.load(op.ForkFrom); err != nil || src == nil || src.Deleted {
		return refuse(http.StatusNotFound, "no stream %s to fork", op.ForkFrom), err
	}
	ttl, expires := op.TTL, op.ExpiresAt
	if ttl == nil && expires == "" {
		ttl, expires = src.TTL, src.ExpiresAt
	}
	if s != nil {
		same := wire.MediaType(s.ContentType) == wire.MediaType(ct) && s.Source == op.ForkFrom && s.ForkReq == req &&
			!s.Closed && sameExpiry(s, wire.StreamOp{TTL: ttl, ExpiresAt: expires})
		if same {
			return a.result(http.StatusOK, op.Name, s)
		}
		return refuse(http.StatusConflict, "stream %s exists with another configuration", op.Name), nil
	}
	if exists && info.Next > info.First {
		return refuse(http.StatusConflict, "channel %s holds messages", op.Name), nil
	}
	if err := a.tx.CreateChannelAt(op.Name, srcInfo.Epoch, forkAt); err != nil {
		return wire.StreamResult{}, err
	}
	if partial != nil {
		if err := a.appendAll(op.Name, []json.RawMessage{wire.EncodeStreamData(partial)}); err != nil {
			return wire.StreamResult{}, err
		}
	}
	if err := a.appendAll(op.Name, op.Messages); err != nil {
		return wire.StreamResult{}, err
	}
	s = &state{ContentType: ct, TTL: ttl, ExpiresAt: expires, ExpiresNano: expiresNano(expires), Access: a.now,
		Closed: op.Closed, Source: op.ForkFrom, ForkAt: forkAt, ForkReq: req}
	if err := a.save(op.Name, s); err != nil {
		return wire.StreamResult{}, err
	}
	src.Forks++
	if err := a.save(op.ForkFrom, src); err != nil {
		return wire.StreamResult{}, err
	}
	return a.result(http.StatusCreated, op.Name, s)
}

func i64(v int64) *int64 { return &v }

// implicit returns the state of a channel written over the client
// protocol but never made a stream: an open JSON stream (nil: none).
func implicit(s *state, info log.Info, exists bool) *state {
	if s == nil && exists && info.Next > 1 {
		return &state{ContentType: "application/json"}
	}
	return s
}

// existing loads the stream a write to name acts on (a plain channel is an
// implicit JSON stream); refusal says why there is none: 404, or 410 for
// one deleted while forks read it. An expired stream is returned with its
// refusal, for delete to clear it.
func (a *applier) existing(name string) (*state, *wire.StreamResult, error) {
	s, info, exists, err := a.load(name)
	if err != nil {
		return nil, nil, err
	}
	s = implicit(s, info, exists)
	var r wire.StreamResult
	switch {
	case s == nil:
		r = refuse(http.StatusNotFound, "no stream %s", name)
	case s.Deleted:
		r = refuse(http.StatusGone, "stream %s was deleted", name)
	case s.expired(a.now):
		r = refuse(http.StatusNotFound, "stream %s expired", name)
	default:
		return s, nil, nil
	}
	return s, &r, nil
}

func (a *applier) append(op wire.StreamOp) (wire.StreamResult, error) {
	s, refusal, err := a.existing(op.Name)
	if err != nil || refusal != nil {
		return deref(refusal), err
	}
	if s.Closed {
		if op.Producer != nil && s.ClosedBy != nil && *op.Producer == *s.ClosedBy {
			r, err := a.result(http.StatusNoContent, op.Name, s)
			r.ProducerEpoch, r.ProducerSeq = i64(op.Producer.Epoch), i64(op.Producer.Seq)
			return r, err
		}
		if len(op.Messages) == 0 && op.Closed {
			return a.result(http.StatusNoContent, op.Name, s)
		}
		r, err := a.result(http.StatusConflict, op.Name, s)
		r.Message = "stream " + op.Name + " is closed"
		return r, err
	}
	if len(op.Messages) > 0 && wire.MediaType(op.ContentType) != wire.MediaType(s.ContentType) {
		return refuse(http.StatusConflict, "stream %s holds %s, not %s", op.Name, s.ContentType, op.ContentType), nil
	}
	var accepted *producer
	if p := op.Producer; p != nil {
		cur, known := s.Producers[p.ID]
		switch {
		case known && p.Epoch < cur.Epoch:
			r := refuse(http.StatusForbidden, "producer %s: epoch %d is stale, the current one is %d", p.ID, p.Epoch, cur.Epoch)
			r.ProducerEpoch = i64(cur.Epoch)
			return r, nil
		case !known || p.Epoch > cur.Epoch:
			if p.Seq != 0 {
				return refuse(http.StatusBadRequest, "producer %s: a new epoch starts at seq 0", p.ID), nil
			}
		case p.Seq <= cur.Seq:
			r, err := a.result(http.StatusNoContent, op.Name, s)
			r.ProducerEpoch, r.ProducerSeq = i64(cur.Epoch), i64(cur.Seq)
			return r, err
		case p.Seq > cur.Seq+1:
			r := refuse(http.StatusConflict, "producer %s: seq %d after %d: a gap", p.ID, p.Seq, cur.Seq)
			r.ExpectedSeq, r.ReceivedSeq = i64(cur.Seq+1), i64(p.Seq)
			return r, nil
		}
		accepted = &producer{Epoch: p.Epoch, Seq: p.Seq}
	}
	if op.Seq != "" {
		if s.Seq != "" && op.Seq <= s.Seq {
			return refuse(http.StatusConflict, "Stream-Seq %q is not after %q", op.Seq, s.Seq), nil
		}
		s.Seq = op.Seq
	}
	if err := a.appendAll(op.Name, op.Messages); err != nil {
		return wire.StreamResult{}, err
	}
	if accepted != nil {
		if s.Producers == nil {
			s.Producers = make(map[string]producer)
		}
		s.Producers[op.Producer.ID] = *accepted
	}
	if op.Closed {
		s.Closed, s.ClosedBy = true, op.Producer
		if err := a.changed(op.Name); err != nil {
			return wire.StreamResult{}, err
		}
	}
	s.Access = a.now
	if err := a.save(op.Name, s); err != nil {
		return wire.StreamResult{}, err
	}
	status := http.StatusNoContent
	if accepted != nil && len(op.Messages) > 0 {
		status = http.StatusOK // new data from an idempotent producer
	}
	r, err := a.result(status, op.Name, s)
	if accepted != nil {
		r.ProducerEpoch, r.ProducerSeq = i64(accepted.Epoch), i64(accepted.Seq)
	}
	return r, err
}

func (a *applier) delete(op wire.StreamOp) (wire.StreamResult, error) {
	s, refusal, err := a.existing(op.Name)
	switch {
	case err != nil:
		return wire.StreamResult{}, err
	case refusal != nil && s != nil && !s.Deleted: // expired: give its space back
		if _, err := a.clear(op.Name, s); err != nil {
			return wire.StreamResult{}, err
		}
		return *refusal, nil
	case refusal != nil:
		return *refusal, nil
	case s.Forks > 0:
		s.Deleted = true
		if err := a.save(op.Name, s); err != nil {
			return wire.StreamResult{}, err
		}
		return wire.StreamResult{Status: http.StatusNoContent}, a.changed(op.Name)
	}
	if err := a.remove(op.Name, s); err != nil {
		return wire.StreamResult{}, err
	}
	return wire.StreamResult{Status: http.StatusNoContent}, nil
}

func (a *applier) touch(op wire.StreamOp) (wire.StreamResult, error) {
	s, _, _, err := a.load(op.Name)
	if err != nil || s == nil || s.Deleted || s.expired(a.now) {
		return wire.StreamResult{Status: http.StatusNotFound}, err
	}
	if s.TTL != nil {
		s.Access = a.now
		if err := a.save(op.Name, s); err != nil {
			return wire.StreamResult{}, err
		}
	}
	return wire.StreamResult{Status: http.StatusNoContent}, nil
}

func (a *applier) expire(op wire.StreamOp) (wire.StreamResult, error) {
	s, _, _, err := a.load(op.Name)
	if err != nil || s == nil || s.Deleted || !s.expired(a.now) {
		return wire.StreamResult{Status: http.StatusNotFound}, err
	}
	if _, err := a.clear(op.Name, s); err != nil {
		return wire.StreamResult{}, err
	}
	return wire.StreamResult{Status: http.StatusNoContent}, nil
}

// Expired lists, from a view, up to max streams that have expired as of
// now (for the leader's sweep: it proposes StreamExpire for each).
func Expired(v *log.View, now time.Time, max int) ([]string, error) {
	var names []string
	err := v.StreamStates(func(name string, raw []byte) bool {
		s, err := decode(raw)
		if err == nil && s != nil && !s.Deleted && s.expired(now.UnixNano()) {
			names = append(names, name)
		}
		return len(names) < max
	})
	return names, err
}

// Writable says whether a publish over the client protocol may go to a
// channel with this stream state: not to a closed stream, nor to one whose
// messages are not JSON values.
func Writable(raw []byte) error {
	s, err := decode(raw)
	if err != nil || s == nil {
		return err
	}
	if s.Closed || s.Deleted {
		return fmt.Errorf("%w: it is a closed Durable Stream", ErrNotWritable)
	}
	if !wire.JSONContentType(s.ContentType) {
		return fmt.Errorf("%w: it is a Durable Stream of %s: append to it over HTTP", ErrNotWritable, s.ContentType)
	}
	return nil
}

// Read reads stream name from offset from (0: its start): up to limit
// messages, stopping after the one that reaches maxBytes, from its source
// first for a fork. now decides expiry.
func Read(v *log.View, name string, from uint64, limit, maxBytes int, now time.Time) (wire.StreamReadResult, error) {
	res := wire.StreamReadResult{Applied: v.Applied(), Messages: []wire.StreamMessage{}}
	info, exists, err := v.Info(name)
	if err != nil {
		return res, err
	}
	s, err := decode(v.StreamState(name))
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case s == nil && implicit(s, info, exists) == nil:
		res.Status = http.StatusNotFound
		return res, nil
	case s == nil:
		s = implicit(s, info, exists)
		res.Info.Implicit = true
	case s.Deleted:
		res.Status = http.StatusGone
		return res, nil
	case s.expired(now.UnixNano()):
		res.Status = http.StatusNotFound
		return res, nil
	}
	res.Status = http.StatusOK
	res.Info.ContentType, res.Info.Epoch, res.Info.Next = s.ContentType, info.Epoch, info.Next
	res.Info.Closed, res.Info.TTL, res.Info.ExpiresAt = s.Closed, s.TTL, s.ExpiresAt
	res.Info.First = info.First
	// The chain of sources, for offsets below each fork point.
	type link struct {
		name string
		from uint64 // the first offset read from it
	}
	chain := []link{{name, info.First}}
	cur := s
	for depth := 0; cur.Source != "" && depth < maxChain; depth++ {
		chain[len(chain)-1].from = cur.ForkAt
		src, err := decode(v.StreamState(cur.Source))
		if err != nil || src == nil {
			break
		}
		sinfo, _, err := v.Info(cur.Source)
		if err != nil {
			return res, err
		}
		chain = append(chain, link{cur.Source, sinfo.First})
		res.Info.First = sinfo.First
		cur = src
	}
	if from < res.Info.First {
		from = res.Info.First
	}
	// Read from the oldest link that holds from, on to this stream.
	to := uint64(0)
	for i := len(chain) - 1; i >= 0 && len(res.Messages) < limit && maxBytes > 0; i-- {
		l := chain[i]
		end := uint64(0) // no bound for the stream itself
		if i > 0 {
			end = chain[i-1].from
		}
		if end != 0 && from >= end {
			continue
		}
		msgs, err := v.Read(l.name, max(from, l.from), end, limit-len(res.Messages), maxBytes)
		if err != nil {
			return res, err
		}
		for _, m := range msgs {
			res.Messages = append(res.Messages, wire.StreamMessage{Offset: m.Offset, Data: m.Data})
			maxBytes -= len(m.Data)
			to = m.Offset + 1
		}
		if end != 0 && to < end && len(msgs) > 0 {
			break // cut short by limit or bytes
		}
		if end != 0 {
			from = end
		}
	}
	return res, nil
}
