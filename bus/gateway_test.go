package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// fakeRouter plays the router's side of a Gateway's sessions, over Pipes.
type fakeRouter struct {
	t     *testing.T
	links chan Link // the router's ends of the sessions dialed
	fail  chan struct{}
}

func newFakeRouter(t *testing.T) *fakeRouter {
	return &fakeRouter{t: t, links: make(chan Link, 16)}
}

func (f *fakeRouter) dial(ctx context.Context) (Link, error) {
	a, b := Pipe()
	f.links <- a
	return b, nil
}

// accept takes the next session, checks its hello and welcomes it.
func (f *fakeRouter) accept() Link {
	f.t.Helper()
	var l Link
	select {
	case l = <-f.links:
	case <-time.After(5 * time.Second):
		f.t.Fatal("the gateway did not dial")
	}
	m := f.recv(l)
	if m.Type != TypeHello || m.Kind != KindGateway || m.Name != "g1" {
		f.t.Fatalf("hello: %+v", m)
	}
	if err := l.Send(context.Background(), (&Msg{Type: TypeWelcome, Name: "h1"}).Encode()); err != nil {
		f.t.Fatal(err)
	}
	return l
}

func (f *fakeRouter) recv(l Link) Msg {
	f.t.Helper()
	b, err := recvWithin(f.t, l, 5*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := Decode(b)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

type delivered struct {
	conn string
	data string
}

// startGateway runs a Gateway against f until the test ends.
func startGateway(t *testing.T, f *fakeRouter) (*Gateway, chan delivered) {
	t.Helper()
	got := make(chan delivered, 16)
	g, err := NewGateway(GatewayConfig{ID: "g1", Dial: f.dial, Deliver: func(conn string, data json.RawMessage) error {
		if conn != "g1-aa" {
			return ErrNoConnection
		}
		got <- delivered{conn, string(data)}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, got
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wireCode(err error) string {
	var e *wire.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestGatewayRequest(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	if _, err := NewGateway(GatewayConfig{ID: "x"}); err == nil {
		t.Fatal("NewGateway accepted a config without Dial and Deliver")
	}
	l := f.accept()
	waitUntil(t, "the session", g.Connected)

	type result struct {
		data json.RawMessage
		err  error
	}
	ask := func(timeout time.Duration, route string) chan result {
		ch := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			d, err := g.Request(ctx, Request{Route: route, Data: json.RawMessage(`{"q":1}`), Conn: "g1-aa", User: "u1"})
			ch <- result{d, err}
		}()
		return ch
	}

	// An answer; the deadline travels.
	res := ask(5*time.Second, "r")
	m := f.recv(l)
	if m.Type != TypeRequest || m.Route != "r" || string(m.Data) != `{"q":1}` || m.Conn != "g1-aa" || m.User != "u1" {
		t.Fatalf("request: %+v", m)
	}
	if m.Timeout <= 4000 || m.Timeout > 5000 {
		t.Fatalf("timeout_ms %d; want about 5000", m.Timeout)
	}
	_ = l.Send(context.Background(), (&Msg{Type: TypeResponse, ID: m.ID, Data: json.RawMessage(`"ok"`)}).Encode())
	if r := <-res; r.err != nil || string(r.data) != `"ok"` {
		t.Fatalf("answer: %s, %v", r.data, r.err)
	}

	// An error answer comes back as it is.
	res = ask(5*time.Second, "r")
	m = f.recv(l)
	_ = l.Send(context.Background(), (&Msg{Type: TypeResponse, ID: m.ID, Error: &wire.Error{Code: wire.CodeForbidden, Message: "no"}}).Encode())
	if r := <-res; wireCode(r.err) != wire.CodeForbidden {
		t.Fatalf("error answer: %v", r.err)
	}

	// No answer in time: timeout.
	res = ask(50*time.Millisecond, "r")
	f.recv(l)
	if r := <-res; wireCode(r.err) != wire.CodeTimeout {
		t.Fatalf("unanswered: %v", r.err)
	}

	// The session breaks during a request: unavailable; the gateway dials
	// again.
	res = ask(5*time.Second, "r")
	f.recv(l)
	l.Close()
	if r := <-res; wireCode(r.err) != wire.CodeUnavailable {
		t.Fatalf("session broke: %v", r.err)
	}
	l = f.accept()
	waitUntil(t, "the new session", g.Connected)
	res = ask(5*time.Second, "r")
	m = f.recv(l)
	_ = l.Send(context.Background(), (&Msg{Type: TypeResponse, ID: m.ID}).Encode())
	if r := <-res; r.err != nil || string(r.data) != "null" {
		t.Fatalf("answer without data: %s, %v", r.data, r.err)
	}
	if _, err := g.Request(context.Background(), Request{}); wireCode(err) != wire.CodeBadRequest {
		t.Fatalf("request without a route: %v", err)
	}
}

func TestGatewayNoSession(t *testing.T) {
	dialed := make(chan struct{}, 1)
	g, err := NewGateway(GatewayConfig{ID: "g1",
		Dial: func(ctx context.Context) (Link, error) {
			select {
			case dialed <- struct{}{}:
			default:
			}
			return nil, errors.New("down")
		},
		Deliver: func(string, json.RawMessage) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	runGateway(t, g)
	<-dialed // Run runs
	if _, err := g.Request(context.Background(), Request{Route: "r"}); wireCode(err) != wire.CodeUnavailable {
		t.Fatalf("request without a session: %v", err)
	}
	for range 10 {
		g.Event(Event{Type: EventConnected, Conn: "g1-aa"}) // never blocks
	}
	if g.Dropped() != 10 {
		t.Fatalf("dropped %d events, want 10", g.Dropped())
	}
	if err := g.Run(context.Background()); err == nil {
		t.Fatal("a second Run was accepted")
	}
}

func TestGatewayDeliverAndEvents(t *testing.T) {
	f := newFakeRouter(t)
	g, got := startGateway(t, f)
	l := f.accept()
	waitUntil(t, "the session", g.Connected)

	_ = l.Send(context.Background(), (&Msg{Type: TypeSend, ID: 4, Conn: "g1-aa", Data: json.RawMessage(`{"x":1}`)}).Encode())
	if m := f.recv(l); m.Type != TypeSent || m.ID != 4 || m.Error != nil {
		t.Fatalf("sent: %+v", m)
	}
	select {
	case d := <-got:
		if d.conn != "g1-aa" || d.data != `{"x":1}` {
			t.Fatalf("delivered %+v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
	}
	_ = l.Send(context.Background(), (&Msg{Type: TypeSend, ID: 5, Conn: "g1-bb", Data: json.RawMessage(`1`)}).Encode())
	if m := f.recv(l); m.Type != TypeSent || m.ID != 5 || m.Error == nil || m.Error.Code != wire.CodeNotFound {
		t.Fatalf("sent to an unknown connection: %+v", m)
	}

	g.Event(Event{Type: EventSubscribed, Conn: "g1-aa", User: "u", Channel: "c"})
	if m := f.recv(l); m.Type != TypeEvent || m.Event != EventSubscribed || m.Conn != "g1-aa" || m.User != "u" || m.Channel != "c" {
		t.Fatalf("event: %+v", m)
	}

	// A router that does not read: events are dropped, never waited for.
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 10000 {
			g.Event(Event{Type: EventConnected, Conn: "g1-aa"})
		}
	})
	wg.Wait()
	if g.Dropped() == 0 {
		t.Fatal("no event dropped while the router did not read")
	}
}

// TestGatewayRefused: a router that refuses the hello; the gateway keeps
// trying.
func TestGatewayRefused(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	for range 2 {
		l := <-f.links
		f.recv(l)
		_ = l.Send(context.Background(), (&Msg{Type: TypeError, Error: &wire.Error{Code: wire.CodeBadRequest, Message: "no"}}).Encode())
	}
	if g.Connected() {
		t.Fatal("connected after a refusal")
	}
	f.accept()
	waitUntil(t, "the session", g.Connected)
}

// lockedWriter is an io.Writer safe for a logger and a test at once.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestGatewayQuietStart: a router not reachable yet just after the start
// (hubs starting, electing a leader) is INFO; still out of reach after
// QuietStart, it is a warning, said once.
func TestGatewayQuietStart(t *testing.T) {
	var logs lockedWriter
	dials := atomic.Int64{}
	g, err := NewGateway(GatewayConfig{ID: "g1", QuietStart: 300 * time.Millisecond,
		Dial: func(ctx context.Context) (Link, error) {
			dials.Add(1)
			return nil, errors.New("not the leader")
		},
		Deliver: func(string, json.RawMessage) error { return nil },
		Logger:  slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runGateway(t, g)

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; logs:\n%s", what, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("2 dials", func() bool { return dials.Load() >= 2 })
	start := logs.String()
	if !strings.Contains(start, "level=INFO") || !strings.Contains(start, "not reachable yet") || strings.Contains(start, "level=WARN") {
		t.Errorf("just after the start: %s; want one INFO line", start)
	}
	waitFor("the warning", func() bool { return strings.Contains(logs.String(), "level=WARN") })
	n := dials.Load()
	waitFor("2 more dials", func() bool { return dials.Load() >= n+2 })
	got := logs.String()
	if strings.Count(got, "level=WARN") != 1 || !strings.Contains(got, "cannot reach the router") || strings.Count(got, "level=INFO") != 1 {
		t.Errorf("after QuietStart: %s; want one INFO then one WARN", got)
	}
}

// runGateway runs g until the test ends.
func runGateway(t *testing.T, g *Gateway) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestGatewayStats: a gateway with GatewayConfig.Stats reports them at the
// start of each session and then every StatsInterval; nil stats are not
// sent.
func TestGatewayStats(t *testing.T) {
	f := newFakeRouter(t)
	var n atomic.Int64
	g, err := NewGateway(GatewayConfig{ID: "g1", Dial: f.dial, Deliver: func(string, json.RawMessage) error { return ErrNoConnection },
		StatsInterval: 20 * time.Millisecond,
		Stats: func() json.RawMessage {
			if n.Add(1) == 2 {
				return nil // skipped
			}
			return json.RawMessage(`{"id":"g1","connections":3}`)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	l := f.accept()
	for range 2 {
		m := f.recv(l)
		if m.Type != TypeStats || string(m.Data) != `{"id":"g1","connections":3}` {
			t.Fatalf("got %+v, want stats", m)
		}
	}
	if got := n.Load(); got < 3 {
		t.Fatalf("Stats called %d times for 2 reports; want the nil one skipped", got)
	}
}
