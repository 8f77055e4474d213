package broker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/comethq/comet/wire"
)

// streamHeartbeat is how often an idle commit stream says where it is.
const streamHeartbeat = time.Second

// handleStream serves GET /v1/stream?from=INDEX: the committed messages of
// entries with index >= from, in commit order, as newline-delimited JSON,
// until the client goes away or the service closes.
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
	if from == 0 {
		// From now on.
		from = s.node.Indexes().Applied + 1
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush() // the reader learns it is connected now, not at the first line
	enc := json.NewEncoder(w)
	heartbeat := time.NewTicker(streamHeartbeat)
	defer heartbeat.Stop()
	for {
		events, applied, wake, ok := s.cfg.Stream.Since(from, 1024)
		if !ok {
			_ = enc.Encode(wire.StreamLine{Reset: true, Floor: s.cfg.Stream.Floor(), Applied: applied})
			flusher.Flush()
			return
		}
		for i := range events {
			e := &events[i]
			t := e.Time
			if err := enc.Encode(wire.StreamLine{Index: e.Index, Channel: e.Channel, Offset: e.Offset,
				Epoch: e.Epoch, Time: &t, Data: e.Data}); err != nil {
				return
			}
		}
		if len(events) > 0 {
			flusher.Flush()
			from = events[len(events)-1].Index + 1
			continue
		}
		if applied >= from {
			from = applied + 1
		}
		select {
		case <-wake:
		case <-heartbeat.C:
			if err := enc.Encode(wire.StreamLine{Applied: from - 1}); err != nil {
				return
			}
			flusher.Flush()
		case <-r.Context().Done():
			return
		case <-s.drainCh:
			return
		}
	}
}
