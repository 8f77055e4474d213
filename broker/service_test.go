package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/raft"
)

// startOne starts a one-hub cluster and waits until it is ready.
func startOne(t *testing.T, opts ...clusterOption) (*cluster, *hub) {
	t.Helper()
	c := newCluster(t, opts...)
	h := c.start("h1", true)
	waitFor(t, 10*time.Second, "h1 to be ready", func() bool { return c.ready(h) })
	return c, h
}

func TestNewValidates(t *testing.T) {
	_, h := startOne(t)
	for name, cfg := range map[string]broker.Config{
		"no node": {API: "127.0.0.1:1"},
		"no api":  {Node: h.node},
	} {
		if _, err := broker.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// TestServiceValidates calls Publish and Read directly with input the HTTP
// layer cannot produce (invalid raw JSON) and with the limits of the
// contract.
func TestServiceValidates(t *testing.T) {
	_, h := startOne(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, channel, data, id string
		want                    error
	}{
		{"invalid JSON", "c", `{"a":`, "", broker.ErrBadRequest},
		{"invalid JSON with newline", "c", "{\n\"a\":", "", broker.ErrBadRequest},
		{"two values", "c", `1 2`, "", broker.ErrBadRequest},
		{"empty data", "c", ``, "", broker.ErrBadRequest},
		{"bad channel", "a b", `1`, "", broker.ErrBadRequest},
		{"empty channel", "", `1`, "", broker.ErrBadRequest},
		{"long id", "c", `1`, strings.Repeat("k", broker.MaxIDLen+1), broker.ErrBadRequest},
		{"too large", "c", `"` + strings.Repeat("x", testMaxMessageBytes) + `"`, "", broker.ErrTooLarge},
	} {
		if _, err := h.svc.Publish(ctx, tc.channel, json.RawMessage(tc.data), tc.id); !errors.Is(err, tc.want) {
			t.Errorf("%s: Publish gave %v, want %v", tc.name, err, tc.want)
		}
	}
	res, err := h.svc.Publish(ctx, "c", json.RawMessage("[1,\n2]"), strings.Repeat("k", broker.MaxIDLen))
	if err != nil || res.Offset != 1 {
		t.Fatalf("valid publish: %+v, %v", res, err)
	}
	if _, err := h.svc.Read("a b", 1, 10); !errors.Is(err, broker.ErrBadRequest) {
		t.Errorf("Read of a bad channel: %v", err)
	}
	m, err := h.svc.Read("c", 1, 10)
	if err != nil || len(m.Messages) != 1 || string(m.Messages[0].Data) != "[1,2]" {
		t.Errorf("Read: %+v, %v", m, err)
	}
	if m, err := h.svc.Read("c", 1, 0); err != nil || len(m.Messages) != 0 || m.Next != 2 {
		t.Errorf("Read with limit 0: %+v, %v", m, err)
	}
}

// TestPublishAfterClose checks that Close answers publishes promptly with
// ErrClosed, including those that reach the queue after the batcher
// stopped, and that the HTTP API then says 503 rather than hanging.
func TestPublishAfterClose(t *testing.T) {
	c, h := startOne(t)
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if !h.node.IsLeader() {
		t.Fatal("the node should still lead: only the service is closed")
	}
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, err := h.svc.Publish(ctx, "c", json.RawMessage(`1`), "")
		cancel()
		if !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("publish %d after Close: %v after %v, want ErrClosed", i, err, time.Since(start).Round(time.Millisecond))
		}
	}
	r := c.tryPublish(h.api, "c", `1`, "")
	if r.status != http.StatusServiceUnavailable || r.err.Code != "unavailable" {
		t.Errorf("HTTP publish after Close: %d %s, want 503 unavailable", r.status, r.raw)
	}
}

// TestCloseWithPublishesInFlight closes the service while publishes are
// queued and in flight: every one is answered (stored, or ErrClosed /
// unknown outcome), none hangs.
func TestCloseWithPublishesInFlight(t *testing.T) {
	// One message per entry, one entry at a time: most publishes are
	// still queued when Close comes.
	_, h := startOne(t, func(cfg *broker.Config) { cfg.BatchMaxMessages, cfg.MaxInflight = 1, 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 500)
	var closeOnce sync.Once
	for range 500 {
		go func() {
			_, err := h.svc.Publish(ctx, "c", json.RawMessage(`1`), "")
			closeOnce.Do(func() { go h.svc.Close() })
			errs <- err
		}()
	}
	var ok, closed int
	for range 500 {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case errors.Is(err, broker.ErrClosed), errors.Is(err, raft.ErrUnknownOutcome):
			closed++
		default:
			t.Errorf("publish during Close: %v", err)
		}
	}
	h.svc.Close()
	t.Logf("%d stored, %d refused", ok, closed)
	m, err := h.svc.Read("c", 1, 1000)
	if err != nil || uint64(ok) > m.Next-1 {
		t.Errorf("%d acknowledged but the channel holds %d (%v)", ok, m.Next-1, err)
	}
}
