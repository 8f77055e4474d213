package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
	"github.com/comethq/comet/worker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A Raft call after its node closed parks for good (raft/store.go).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/comethq/comet/raft.parkForever"))
}

// startHub runs a single-node hub with its API on an httptest server, as
// `comet standalone` runs one, and returns its API address.
func startHub(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := ln.Addr().String()
	hub, err := broker.OpenHub(t.TempDir(),
		raft.Config{ID: "h1", Single: true, HeartbeatTimeout: 100 * time.Millisecond,
			ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond},
		broker.Config{API: api, BusSettle: time.Millisecond}) // not_found at once for a missing worker
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(hub.Service.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); hub.Service.Run(ctx) }()
	t.Cleanup(func() {
		hub.Service.Drain() // commit streams and bus sessions end
		srv.Close()
		cancel()
		<-runDone
		hub.Close()
	})
	waitFor(t, "the hub to be ready", func() bool { return hub.Service.Ready(context.Background()) == nil })
	return api
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startWorker starts a worker on the hub at api and closes it when the
// test ends.
func startWorker(t testing.TB, cfg worker.Config, setup func(w *worker.Worker)) *worker.Worker {
	t.Helper()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(w)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

// conns is a fake gateway's connections: what was delivered to them.
type conns struct {
	mu  sync.Mutex
	got map[string][]string
}

func (c *conns) deliver(conn string, data json.RawMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.got[conn]; !ok {
		return bus.ErrNoConnection
	}
	c.got[conn] = append(c.got[conn], string(data))
	return nil
}

func (c *conns) of(conn string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got[conn]...)
}

// startGateway runs the gateway side of a bus session, with the
// connections named, until the test ends.
func startGateway(t testing.TB, api string, connIDs ...string) (*bus.Gateway, *conns) {
	t.Helper()
	c := &conns{got: map[string][]string{}}
	for _, id := range connIDs {
		c.got[id] = nil
	}
	g, err := bus.NewGateway(bus.GatewayConfig{ID: "gw1", Dial: bus.HubDialer([]string{api}, "", nil, nil), Deliver: c.deliver})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the gateway's session", g.Connected)
	return g, c
}

func ask(g *bus.Gateway, timeout time.Duration, route, data string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return g.Request(ctx, bus.Request{Route: route, Data: json.RawMessage(data), Conn: "gw1-c1", User: "ann"})
}

func codeOf(err error) string {
	var e *wire.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []worker.Config{{}, {Hubs: []string{"nohostport"}}} {
		if _, err := worker.New(cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

// TestRoundTrip: requests from a gateway reach the worker's handlers and
// their answers, errors and panics come back.
func TestRoundTrip(t *testing.T) {
	api := startHub(t)
	g, _ := startGateway(t, api)
	startWorker(t, worker.Config{Hubs: []string{api}, Name: "test"}, func(w *worker.Worker) {
		w.Handle("echo", func(ctx context.Context, req worker.Request) (any, error) {
			dl, ok := ctx.Deadline()
			return map[string]any{"route": req.Route, "data": req.Data, "conn": req.Connection, "user": req.User,
				"deadline": ok && time.Until(dl) > 0 && time.Until(dl) <= 5*time.Second}, nil
		})
		w.Handle("raw", func(ctx context.Context, req worker.Request) (any, error) {
			return json.RawMessage("{\n \"a\": 1}"), nil
		})
		w.Handle("nil", func(ctx context.Context, req worker.Request) (any, error) { return nil, nil })
		w.Handle("forbid", func(ctx context.Context, req worker.Request) (any, error) {
			return nil, &worker.Error{Code: wire.CodeForbidden, Message: "not for " + req.User}
		})
		w.Handle("plain", func(ctx context.Context, req worker.Request) (any, error) {
			return nil, errors.New("bad input")
		})
		w.Handle("panic", func(ctx context.Context, req worker.Request) (any, error) { panic("boom") })
		w.Handle("slow", func(ctx context.Context, req worker.Request) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		w.Handle("unencodable", func(ctx context.Context, req worker.Request) (any, error) { return func() {}, nil })
	})

	data, err := ask(g, 5*time.Second, "echo", `{"q":[1,2]}`)
	if err != nil || string(data) != `{"conn":"gw1-c1","data":{"q":[1,2]},"deadline":true,"route":"echo","user":"ann"}` {
		t.Fatalf("echo: %s, %v", data, err)
	}
	if data, err := ask(g, 5*time.Second, "raw", `1`); err != nil || string(data) != `{"a":1}` {
		t.Fatalf("raw: %s, %v", data, err)
	}
	if data, err := ask(g, 5*time.Second, "nil", `1`); err != nil || string(data) != `null` {
		t.Fatalf("nil: %s, %v", data, err)
	}
	for _, tc := range []struct{ route, code, msg string }{
		{"forbid", wire.CodeForbidden, "not for ann"},
		{"plain", wire.CodeBadRequest, "bad input"},
		{"panic", wire.CodeUnavailable, ""},
		{"unencodable", wire.CodeUnavailable, ""},
		{"nobody", wire.CodeNotFound, ""},
	} {
		_, err := ask(g, 5*time.Second, tc.route, `1`)
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != tc.code || (tc.msg != "" && we.Message != tc.msg) {
			t.Errorf("%s: %v; want %s %q", tc.route, err, tc.code, tc.msg)
		}
	}
	start := time.Now()
	if _, err := ask(g, 200*time.Millisecond, "slow", `1`); codeOf(err) != wire.CodeTimeout {
		t.Errorf("slow: %v; want timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow took %v", d)
	}
	// The worker still serves after a panic and a timeout.
	if _, err := ask(g, 5*time.Second, "echo", `2`); err != nil {
		t.Fatal(err)
	}
}

// TestHandleAfterStart: a route added to a running worker is served.
func TestHandleAfterStart(t *testing.T) {
	api := startHub(t)
	g, _ := startGateway(t, api)
	w := startWorker(t, worker.Config{Hubs: []string{api}}, nil)
	if _, err := ask(g, 5*time.Second, "late", `1`); codeOf(err) != wire.CodeNotFound {
		t.Fatalf("before Handle: %v", err)
	}
	w.Handle("late", func(ctx context.Context, req worker.Request) (any, error) { return "here", nil }, worker.Idempotent())
	waitFor(t, "the new route", func() bool {
		data, err := ask(g, 5*time.Second, "late", `1`)
		return err == nil && string(data) == `"here"`
	})
}

// TestBalanced: two workers share a route.
func TestBalanced(t *testing.T) {
	api := startHub(t)
	g, _ := startGateway(t, api)
	for _, name := range []string{"a", "b"} {
		startWorker(t, worker.Config{Hubs: []string{api}, Name: name}, func(w *worker.Worker) {
			w.Handle("who", func(ctx context.Context, req worker.Request) (any, error) { return name, nil })
		})
	}
	seen := map[string]int{}
	for range 20 {
		data, err := ask(g, 5*time.Second, "who", `1`)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(data)]++
	}
	if seen[`"a"`] == 0 || seen[`"b"`] == 0 {
		t.Fatalf("answers: %v; want both workers", seen)
	}
}

// TestPublishSendEvents: Publish, SendToConnection, and the events of a
// published message and of a connection.
func TestPublishSendEvents(t *testing.T) {
	api := startHub(t)
	g, c := startGateway(t, api, "gw1-c1")
	w := startWorker(t, worker.Config{Hubs: []string{api}}, nil)
	events := w.Events()
	if w.Events() != events {
		t.Fatal("Events returned another channel")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := w.Publish(ctx, "news", map[string]int{"n": 1}, "k1")
	if err != nil || res.Channel != "news" || res.Offset != 1 || res.Epoch == "" {
		t.Fatalf("publish: %+v, %v", res, err)
	}
	if _, err := w.Publish(ctx, "bad channel", 1, ""); codeOf(err) != wire.CodeBadRequest {
		t.Fatalf("publish to a bad channel: %v", err)
	}
	ev := next(t, events, func(e worker.Event) bool { return e.Type == worker.EventMessage })
	if ev.Channel != "news" || ev.Offset != 1 || string(ev.Data) != `{"n":1}` || ev.Epoch != res.Epoch || ev.Time.IsZero() || ev.Index == 0 {
		t.Fatalf("message event: %+v", ev)
	}

	// Events turned on after the session was up: the router learns of it.
	waitFor(t, "a connection event", func() bool {
		g.Event(bus.Event{Type: bus.EventConnected, Conn: "gw1-c1", User: "ann"})
		select {
		case e := <-events:
			return e.Type == worker.EventConnected && e.Connection == "gw1-c1" && e.User == "ann"
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})

	if err := w.SendToConnection(ctx, "gw1-c1", map[string]string{"hello": "ann"}); err != nil {
		t.Fatal(err)
	}
	if got := c.of("gw1-c1"); len(got) != 1 || got[0] != `{"hello":"ann"}` {
		t.Fatalf("delivered %q", got)
	}
	for _, conn := range []string{"gw1-nope", "gw9-c1"} {
		err := w.SendToConnection(ctx, conn, 1)
		if !errors.Is(err, worker.ErrNotFound) || codeOf(err) != wire.CodeNotFound {
			t.Errorf("send to %s: %v; want ErrNotFound", conn, err)
		}
	}
	if err := w.SendToConnection(ctx, "nodash", 1); codeOf(err) != wire.CodeBadRequest {
		t.Errorf("send to a bad id: %v", err)
	}
}

// next returns the next event that match accepts, skipping others.
func next(t *testing.T, events <-chan worker.Event, match func(worker.Event) bool) worker.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("events closed")
			}
			if match(e) {
				return e
			}
		case <-timeout:
			t.Fatal("no such event")
		}
	}
}

// TestSlowEvents: a worker that does not read its events: messages wait
// (none is lost), connection events are dropped past the buffer and the
// drops are reported.
func TestSlowEvents(t *testing.T) {
	api := startHub(t)
	g, _ := startGateway(t, api)
	w := startWorker(t, worker.Config{Hubs: []string{api}, EventBuffer: 4}, nil)
	events := w.Events()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The router knows the worker wants events once one arrives.
	waitFor(t, "events on", func() bool {
		g.Event(bus.Event{Type: bus.EventConnected, Conn: "gw1-x"})
		select {
		case <-events:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	drain := func() {
		for {
			select {
			case <-events:
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drain()

	const msgs, conns = 50, 500
	for i := range msgs {
		if _, err := w.Publish(ctx, "slow", i, ""); err != nil {
			t.Fatal(err)
		}
	}
	gwDropped := g.Dropped()
	for i := range conns {
		g.Event(bus.Event{Type: bus.EventConnected, Conn: fmt.Sprintf("gw1-%x", i)})
	}
	// Publish one more message: it comes after the connection events have
	// had time to reach the worker.
	var offsets []uint64
	var connected, dropped uint64
	deadline := time.After(15 * time.Second)
	for len(offsets) < msgs || connected+dropped < conns-(g.Dropped()-gwDropped) {
		select {
		case e := <-events:
			switch e.Type {
			case worker.EventMessage:
				offsets = append(offsets, e.Offset)
			case worker.EventConnected:
				connected++
			case worker.EventDropped:
				dropped += e.Count
			default:
				t.Fatalf("unexpected event %+v", e)
			}
		case <-deadline:
			t.Fatalf("%d messages, %d connection events, %d dropped; want %d messages, %d events in all",
				len(offsets), connected, dropped, msgs, conns-(g.Dropped()-gwDropped))
		}
	}
	for i, off := range offsets {
		if off != uint64(i+1) {
			t.Fatalf("message offsets %v: want 1..%d, none lost", offsets, msgs)
		}
	}
	if dropped == 0 {
		t.Fatalf("no connection event dropped with a buffer of 4 (%d delivered)", connected)
	}
	t.Logf("%d connection events delivered, %d dropped (at the gateway: %d)", connected, dropped, g.Dropped()-gwDropped)
}

// TestCloseEndsEvents: Close closes the Events channel and stops every
// goroutine (goleak checks), handlers included.
func TestCloseEndsEvents(t *testing.T) {
	api := startHub(t)
	g, _ := startGateway(t, api)
	started := make(chan struct{})
	w := startWorker(t, worker.Config{Hubs: []string{api}}, func(w *worker.Worker) {
		w.Handle("block", func(ctx context.Context, req worker.Request) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	})
	events := w.Events()
	res := make(chan error, 1)
	go func() { _, err := ask(g, 10*time.Second, "block", `1`); res <- err }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	w.Close()
	if err := <-res; codeOf(err) != wire.CodeUnavailable {
		t.Fatalf("request whose worker closed: %v; want unavailable", err)
	}
	for range events {
	}
	if err := w.Start(); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	if err := w.SendToConnection(context.Background(), "gw1-c1", 1); !errors.Is(err, worker.ErrClosed) {
		t.Fatalf("send after Close: %v", err)
	}
	if !strings.Contains(worker.ErrNotFound.Error(), "not_found") {
		t.Fatal(worker.ErrNotFound.Error())
	}
}

func TestHandlePanicsOnBadRoutes(t *testing.T) {
	w, err := worker.New(worker.Config{Hubs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ok := func(context.Context, worker.Request) (any, error) { return nil, nil }
	for _, tc := range []struct {
		route string
		h     worker.Handler
	}{{"", ok}, {strings.Repeat("r", 256), ok}, {"r", nil}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%.20q, %v): no panic", tc.route, tc.h != nil)
				}
			}()
			w.Handle(tc.route, tc.h)
		}()
	}
}

// TestPublishBatch: a batch over MaxBatch goes in several requests, stored
// in the order given; a bad channel in the middle is answered with its
// error and the others are stored; the same ids again are duplicates.
func TestPublishBatch(t *testing.T) {
	api := startHub(t)
	w := startWorker(t, worker.Config{Hubs: []string{api}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = worker.MaxBatch*2 + 500
	msgs := make([]worker.Message, n)
	for i := range msgs {
		msgs[i] = worker.Message{Channel: "batch", Data: map[string]int{"i": i}, ID: fmt.Sprintf("k%d", i)}
	}
	msgs[1200].Channel = "bad channel"
	for round, dup := range []bool{false, true} {
		res, err := w.PublishBatch(ctx, msgs)
		if err != nil || len(res) != n {
			t.Fatalf("round %d: %d results, %v", round, len(res), err)
		}
		next := uint64(1)
		for i, r := range res {
			if i == 1200 {
				if r.Code != wire.CodeBadRequest || r.Channel != "bad channel" {
					t.Fatalf("the bad channel: %+v", r)
				}
				continue
			}
			if r.Code != "" || r.Offset != next || r.Duplicate != dup {
				t.Fatalf("round %d, message %d: %+v, want offset %d, duplicate %v", round, i, r, next, dup)
			}
			next++
		}
	}
	if _, err := w.PublishBatch(ctx, []worker.Message{{Channel: "batch", Data: func() {}}}); codeOf(err) != wire.CodeBadRequest {
		t.Fatalf("data that cannot be encoded: %v", err)
	}
}
