package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// testHub is a single-node hub in process, served over HTTP on loopback.
type testHub struct {
	*broker.Hub
	api string
}

func startHub(t testing.TB, rules ...log.Rule) *testHub {
	t.Helper()
	h, err := broker.OpenHub(t.TempDir(),
		raft.Config{ID: "h1", Single: true, HeartbeatTimeout: 50 * time.Millisecond,
			ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond},
		broker.Config{API: "127.0.0.1:0", Retention: rules})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go h.Service.Run(ctx)
	srv := httptest.NewServer(h.Service.Handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		h.Close()
	})
	th := &testHub{Hub: h, api: strings.TrimPrefix(srv.URL, "http://")}
	waitFor(t, "hub ready", func() bool {
		_, err := h.Service.Publish(context.Background(), "warmup", json.RawMessage(`1`), "")
		return err == nil
	})
	if len(rules) > 0 {
		// The leader replicates its retention rules soon after it is
		// elected; publishes before that are trimmed by the defaults.
		waitFor(t, "retention rules in force", func() bool {
			got, err := h.Log.Retention()
			return err == nil && len(got) == len(rules) && got[0] == rules[0]
		})
	}
	return th
}

// publish publishes data to ch through the hub and returns the offset.
func (h *testHub) publish(t testing.TB, ch, data string) uint64 {
	t.Helper()
	res, err := h.Service.Publish(context.Background(), ch, json.RawMessage(data), "")
	if err != nil {
		t.Fatalf("publish to %s: %v", ch, err)
	}
	return res.Offset
}

func (h *testHub) epoch(t testing.TB, ch string) string {
	t.Helper()
	res, err := h.Service.Read(ch, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return res.Epoch
}

type testGateway struct {
	*Server
	url string // http://127.0.0.1:port
}

func startGateway(t testing.TB, hub Hub, cfg Config) *testGateway {
	t.Helper()
	g := startGatewayUnready(t, hub, cfg)
	waitFor(t, "gateway ready", func() bool { return g.Ready() == nil })
	return g
}

// startGatewayUnready starts a gateway without waiting for it to follow
// the commit stream.
func startGatewayUnready(t testing.TB, hub Hub, cfg Config) *testGateway {
	t.Helper()
	cfg.Hub = hub
	if cfg.Tokens == nil {
		cfg.AllowAnonymous = true // no way to authenticate otherwise
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Run()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	return &testGateway{Server: s, url: srv.URL}
}

func httpHubs(t testing.TB, addrs ...string) *HTTPHubs {
	t.Helper()
	h, err := NewHTTPHubs(addrs, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// waitFor polls cond every 10ms for at most 20s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wsClient is a raw protocol client for tests.
type wsClient struct {
	t       testing.TB
	c       *websocket.Conn
	pending []wire.ServerFrame
	id      string
}

func dial(t testing.TB, gatewayURL string) *wsClient {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(gatewayURL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &wsClient{t: t, c: c}
	f := w.next()
	if f.Op != wire.OpConnected || f.Connection == "" {
		t.Fatalf("first frame %+v, want connected", f)
	}
	w.id = f.Connection
	return w
}

func (w *wsClient) send(v any) {
	w.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := w.c.WriteMessage(websocket.TextMessage, b); err != nil {
		w.t.Fatal(err)
	}
}

// next returns the next server object, splitting frames on newlines.
func (w *wsClient) next() wire.ServerFrame {
	w.t.Helper()
	f, err := w.tryNext(10 * time.Second)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

func (w *wsClient) tryNext(timeout time.Duration) (wire.ServerFrame, error) {
	for len(w.pending) == 0 {
		_ = w.c.SetReadDeadline(time.Now().Add(timeout))
		_, b, err := w.c.ReadMessage()
		if err != nil {
			return wire.ServerFrame{}, err
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			var f wire.ServerFrame
			if err := json.Unmarshal(line, &f); err != nil {
				return f, fmt.Errorf("bad server object %q: %v", line, err)
			}
			w.pending = append(w.pending, f)
		}
	}
	f := w.pending[0]
	w.pending = w.pending[1:]
	return f, nil
}

// expect returns the next object, which must have op.
func (w *wsClient) expect(op string) wire.ServerFrame {
	w.t.Helper()
	f := w.next()
	if f.Op != op {
		w.t.Fatalf("got %+v, want op %q", f, op)
	}
	return f
}

// messages reads n messages of channel ch and checks their offsets are
// from, from+1, ...
func (w *wsClient) messages(ch string, from uint64, n int) []wire.ServerFrame {
	w.t.Helper()
	out := make([]wire.ServerFrame, 0, n)
	for len(out) < n {
		f := w.expect(wire.OpMessage)
		if f.Channel != ch {
			continue
		}
		if want := from + uint64(len(out)); f.Offset != want {
			w.t.Fatalf("channel %s: got offset %d, want %d", ch, f.Offset, want)
		}
		out = append(out, f)
	}
	return out
}

func u64p(v uint64) *uint64 { return &v }
