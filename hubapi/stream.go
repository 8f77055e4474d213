package hubapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// ErrStreamIdle: the hub sent nothing, not even its heartbeat, for too
// long while the stream was read.
var ErrStreamIdle = errors.New("commit stream silent for too long")

// Stream is one commit stream (GET /v1/stream), read line by line. Only the
// time spent waiting for the hub counts towards the idle limit, not the
// time the reader takes between lines. The hub fixes the stream's position
// before it answers, and its first line, sent at once, says where that is
// (a heartbeat whose Applied is the index the stream starts after, or a
// reset): see wire.StreamLine.
type Stream struct {
	hub     string
	body    io.ReadCloser
	in      *bufio.Reader
	cancel  context.CancelFunc
	idle    time.Duration
	watch   *time.Timer
	expired atomic.Bool
}

func (h *Hubs) openStream(ctx context.Context, addr string, from uint64) (*Stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, h.client.URL(addr, "/v1/stream?from="+strconv.FormatUint(from, 10)), nil)
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
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		return nil, AnswerError(resp, data)
	}
	s := &Stream{hub: addr, body: resp.Body, cancel: cancel, in: bufio.NewReaderSize(resp.Body, 64<<10), idle: h.idle}
	s.watch = time.AfterFunc(time.Hour, s.expire)
	s.watch.Stop()
	return s, nil
}

func (s *Stream) expire() {
	s.expired.Store(true)
	s.cancel()
}

// Hub is the address of the hub the stream comes from.
func (s *Stream) Hub() string { return s.hub }

// Next returns the next line. An error ends the stream: ErrStreamIdle,
// io.ErrUnexpectedEOF (the hub closed it), or the network's.
func (s *Stream) Next() (wire.StreamLine, error) {
	line, err := s.NextRaw()
	if err != nil {
		return wire.StreamLine{}, err
	}
	var l wire.StreamLine
	if err := json.Unmarshal(line, &l); err != nil {
		return wire.StreamLine{}, fmt.Errorf("commit stream from %s: %w", s.hub, err)
	}
	return l, nil
}

// NextRaw returns the next line undecoded (a wire.StreamLine in JSON),
// valid until the next call: for a reader that decodes only the lines it
// needs (see wire.PeekStreamLine). Errors are Next's.
func (s *Stream) NextRaw() ([]byte, error) {
	waits := s.Buffered() == 0
	if waits {
		s.watch.Reset(s.idle)
	}
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
	if waits {
		s.watch.Stop()
	}
	if err != nil {
		if s.expired.Load() {
			return nil, ErrStreamIdle
		}
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return line, nil
}

// Buffered reports whether a whole line is already received (1) or Next
// would wait for the network (0).
func (s *Stream) Buffered() int {
	b, _ := s.in.Peek(s.in.Buffered())
	if bytes.IndexByte(b, '\n') >= 0 {
		return 1
	}
	return 0
}

// Close ends the stream.
func (s *Stream) Close() error {
	s.watch.Stop()
	s.cancel()
	return s.body.Close()
}
