package broker

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/comethq/comet/wire"
)

// streamHeartbeat is how often an idle commit stream says where it is.
const streamHeartbeat = time.Second

// handleStream serves GET /v1/stream?from=INDEX: the committed messages of
// entries with index >= from, in commit order, as newline-delimited JSON,
// until the client goes away or the service closes. The first line, sent
// at once, says where the stream starts (Follower.Next).
func (s *Service) handleStream(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Stream == nil {
		s.writeError(w, fmt.Errorf("%w: this hub keeps no commit stream", errNotFound))
		return
	}
	from, err := queryUint(r.URL.Query().Get("from"), 0)
	if err != nil {
		s.writeError(w, fmt.Errorf("%w: from: %v", ErrBadRequest, err))
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		s.writeError(w, fmt.Errorf("streaming is not supported by this connection"))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.drainCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	// From 0: from the next entry. The position is taken before the reader
	// learns it is connected: what it commits after that is on the stream.
	f := s.cfg.Stream.Follow(ctx, from)
	defer f.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush() // the reader learns it is connected now, not at the first line
	var buf []byte
	for first := true; ; first = false {
		line, err := f.Next()
		if err != nil {
			return
		}
		buf = wire.AppendStreamLine(buf[:0], line)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if cap(buf) > 1<<20 {
			buf = nil // a large message: do not keep its buffer
		}
		if f.Buffered() == 0 || line.Reset || first {
			flusher.Flush()
		}
		if line.Reset {
			return
		}
	}
}
