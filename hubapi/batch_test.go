package hubapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// batchHub serves POST /v1/publish with answer, and records the batches it
// got.
type batchHub struct {
	mu     sync.Mutex
	got    [][]wire.PublishRequest
	answer func(w http.ResponseWriter, reqs []wire.PublishRequest)
}

func (f *batchHub) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqs []wire.PublishRequest
		if err := json.NewDecoder(r.Body).Decode(&reqs); err != nil {
			http.Error(w, `{"code":"bad_request","message":"not a batch"}`, http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.got = append(f.got, reqs)
		f.mu.Unlock()
		f.answer(w, reqs)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func stored(reqs []wire.PublishRequest) []wire.PublishResult {
	out := make([]wire.PublishResult, len(reqs))
	for i, r := range reqs {
		out[i] = wire.PublishResult{Channel: r.Channel, Offset: uint64(i + 1), Epoch: "e"}
	}
	return out
}

// TestPublishBatchFailover: publishes a hub answers unavailable go to the
// next hub only when they have an id; after a request cut short, only
// those with an id go again, and the others are answered with the error;
// a batch refused whole is an error.
func TestPublishBatchFailover(t *testing.T) {
	reqs := []wire.PublishRequest{
		{Channel: "a", Data: json.RawMessage(`1`), ID: "k0"},
		{Channel: "b", Data: json.RawMessage(`2`), ID: "k1"},
		{Channel: "c", Data: json.RawMessage(`3`)},
	}
	good := &batchHub{answer: func(w http.ResponseWriter, reqs []wire.PublishRequest) {
		_ = json.NewEncoder(w).Encode(stored(reqs))
	}}
	for _, tc := range []struct {
		name  string
		first func(w http.ResponseWriter, reqs []wire.PublishRequest)
		// want: per publish, the code ("" stored) and whether the second
		// hub got it.
		codes  []string
		second []string // ids (or channels) the second hub got
	}{
		{"unavailable items", func(w http.ResponseWriter, reqs []wire.PublishRequest) {
			out := stored(reqs)
			for i := 1; i < 3; i++ {
				out[i] = wire.PublishResult{Channel: reqs[i].Channel, Code: wire.CodeUnavailable, Message: "leadership lost"}
			}
			_ = json.NewEncoder(w).Encode(out)
		}, []string{"", "", wire.CodeUnavailable}, []string{"b"}},
		{"cut short", func(w http.ResponseWriter, reqs []wire.PublishRequest) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}, []string{"", "", wire.CodeUnavailable}, []string{"a", "b"}},
		{"no leader", func(w http.ResponseWriter, reqs []wire.PublishRequest) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"code":"unavailable","message":"no leader"}`))
		}, []string{"", "", wire.CodeUnavailable}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := &batchHub{answer: tc.first}
			second := &batchHub{answer: good.answer}
			h, err := NewHubs([]string{first.start(t), second.start(t)}, 5*time.Second, 4)
			if err != nil {
				t.Fatal(err)
			}
			h.current.Store(0)
			res, err := h.PublishBatch(context.Background(), reqs)
			if err != nil || len(res) != len(reqs) {
				t.Fatalf("%d results, %v", len(res), err)
			}
			for i, r := range res {
				if r.Code != tc.codes[i] || r.Channel != reqs[i].Channel || (r.Code == "" && r.Offset == 0) {
					t.Errorf("result %d: %+v, want code %q", i, r, tc.codes[i])
				}
			}
			var got []string
			for _, b := range second.got {
				for _, r := range b {
					got = append(got, r.Channel)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.second, ",") {
				t.Errorf("the second hub got %v, want %v", got, tc.second)
			}
		})
	}
	refuse := &batchHub{answer: func(w http.ResponseWriter, reqs []wire.PublishRequest) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = w.Write([]byte(`{"code":"too_large","message":"body over 8388608 bytes"}`))
	}}
	h, err := NewHubs([]string{refuse.start(t)}, 5*time.Second, 4)
	if err != nil {
		t.Fatal(err)
	}
	var api *APIError
	if res, err := h.PublishBatch(context.Background(), reqs); res != nil || !errors.As(err, &api) || api.Body.Code != wire.CodeTooLarge {
		t.Fatalf("a batch refused whole: %v, %v", res, err)
	}
}
