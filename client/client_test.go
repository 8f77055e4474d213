package client

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

func TestConfigChecked(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{URLs: []string{"http://127.0.0.1:8080/ws"}},
		{URLs: []string{"ws:///ws"}},
		{URLs: []string{"ws://127.0.0.1:8080/ws", "::"}},
		{URLs: []string{"ws://127.0.0.1:8080/ws"}, MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		{URLs: []string{"ws://127.0.0.1:8080/ws"}, RequestTimeout: -1},
		{URLs: []string{"ws://127.0.0.1:8080/ws"}, ReadTimeout: time.Second, PingInterval: time.Second},
	} {
		if c, err := New(cfg); err == nil {
			c.Close()
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	var asked []int64
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second, rand: func(n int64) int64 {
		asked = append(asked, n)
		return n - 1 // the longest delay
	}}
	var got []time.Duration
	for range 10 {
		got = append(got, b.next())
	}
	ms := time.Millisecond
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 10000 * ms, 10000 * ms, 10000 * ms}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	for i, n := range asked {
		if time.Duration(n) != want[i]+1 {
			t.Fatalf("rand asked for [0, %d), want [0, %d]", n, want[i])
		}
	}
	b.reset()
	if d := b.next(); d != 100*ms {
		t.Fatalf("after reset: %v", d)
	}
	// Full jitter: the delay is what rand picks, down to zero.
	b.rand = func(int64) int64 { return 0 }
	if d := b.next(); d != 0 {
		t.Fatalf("jitter 0 gave %v", d)
	}
	// Thousands of retries neither overflow nor pass max.
	b.rand = func(n int64) int64 { return n - 1 }
	var d time.Duration
	for range 5000 {
		if d = b.next(); d > 10*time.Second || d <= 0 {
			t.Fatalf("long run gave %v", d)
		}
	}
	if d != 10*time.Second {
		t.Fatalf("long run ended at %v", d)
	}
}

// The client asks its rand for delays that double from MinBackoff up to
// MaxBackoff while a gateway refuses it, and starts again from MinBackoff
// after a connection that stayed up.
func TestReconnectBackoff(t *testing.T) {
	g := newGateway(t)
	g.SetDown(true)
	r := &lockedRand{pick: func(n int64) int64 { return n / 2 }}
	const ms = int64(time.Millisecond)
	cfg := Config{URLs: []string{g.URL()}, MinBackoff: time.Millisecond, MaxBackoff: 8 * time.Millisecond, rand: r.rand, stableAfter: 50 * time.Millisecond}
	c := newClient(t, cfg)
	waitFor(t, 5*time.Second, "7 dials", func() bool { return g.Attempts() >= 7 })
	calls := r.calls()
	want := []int64{1, 1*ms + 1, 2*ms + 1, 4*ms + 1, 8*ms + 1, 8*ms + 1}
	if !slices.Equal(calls[:len(want)], want) {
		t.Fatalf("rand asked %v, want %v first (the URL pick, then the delays)", calls, want)
	}
	// A connection that stays up resets the schedule.
	g.SetDown(false)
	waitFor(t, 5*time.Second, "connected", func() bool { return c.State() == Connected })
	time.Sleep(60 * time.Millisecond) // stay up longer than stableAfter
	n := len(r.calls())
	g.Drop()
	waitFor(t, 5*time.Second, "reconnected", func() bool { return g.Accepted() == 2 })
	if got := r.calls()[n]; got != 1*ms+1 {
		t.Fatalf("after a stable connection, rand asked %d, want %d", got, 1*ms+1)
	}
}

func TestRotation(t *testing.T) {
	down, up := newGateway(t), newGateway(t)
	down.SetDown(true)
	// The first URL is the one rand picks: 0, the one that is down.
	c := newClient(t, Config{URLs: []string{down.URL(), up.URL()}, rand: (&lockedRand{}).rand})
	waitFor(t, 5*time.Second, "connected", func() bool { return c.State() == Connected })
	if down.Attempts() != 1 || up.Accepted() != 1 {
		t.Fatalf("down tried %d times, up accepted %d", down.Attempts(), up.Accepted())
	}
	// A plain drop: the same gateway first.
	up.Drop()
	waitFor(t, 5*time.Second, "reconnected", func() bool { return up.Accepted() == 2 })
	if down.Attempts() != 1 {
		t.Fatalf("down tried %d times", down.Attempts())
	}
	// 4001 (shutting down) and 4005 (hubs unreachable): the next one
	// first (down), then round to up. Other codes: up again.
	for i, code := range []int{wire.CloseShutdown, wire.CloseUnavailable, wire.CloseSlowConsumer, wire.CloseIdle, wire.CloseResync} {
		up.CloseConns(code)
		waitFor(t, 5*time.Second, "reconnected", func() bool { return up.Accepted() == 3+i })
		want := 3
		if i == 0 {
			want = 2
		}
		if down.Attempts() != want {
			t.Fatalf("after close %d, down tried %d times, want %d", code, down.Attempts(), want)
		}
	}
}

func TestRotationBetweenLiveGateways(t *testing.T) {
	a, b := newGateway(t), newGateway(t)
	appendN(a, "chat", 3) // the same history on both, as behind one hub cluster
	appendN(b, "chat", 3)
	c := newClient(t, Config{URLs: []string{a.URL(), b.URL()}, rand: (&lockedRand{}).rand})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle, From(1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "3 messages", func() bool { return r.len() == 3 })
	a.CloseConns(wire.CloseShutdown)
	waitFor(t, 5*time.Second, "moved to b", func() bool { return b.Subscribers("chat") == 1 })
	appendN(a, "chat", 1)
	appendN(b, "chat", 1)
	waitFor(t, 5*time.Second, "4 messages", func() bool { return r.len() == 4 })
	if a.Accepted() != 1 || b.Accepted() != 1 {
		t.Fatalf("a accepted %d, b %d", a.Accepted(), b.Accepted())
	}
	if got := r.offsets(); !slices.Equal(got, seq(1, 4)) {
		t.Fatalf("offsets %v", got)
	}
}

// A connection that goes silent (no frames, no pongs) is dropped after
// ReadTimeout and the client resumes on a new one.
func TestDeadConnectionDetected(t *testing.T) {
	g := newGateway(t)
	var st states
	c := newClient(t, Config{URLs: []string{g.URL()}, ReadTimeout: 300 * time.Millisecond, PingInterval: 50 * time.Millisecond, OnState: st.on})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle); err != nil {
		t.Fatal(err)
	}
	// Pings keep a quiet connection alive well past ReadTimeout.
	time.Sleep(500 * time.Millisecond)
	if g.Accepted() != 1 {
		t.Fatalf("a quiet connection was dropped: %d connections", g.Accepted())
	}
	g.Stall()
	appendN(g, "chat", 2) // not sent to the stalled connection
	waitFor(t, 5*time.Second, "2 messages after the reconnect", func() bool { return r.len() == 2 })
	if g.Accepted() != 2 || st.count(Disconnected) != 1 {
		t.Fatalf("%d connections, %d disconnects", g.Accepted(), st.count(Disconnected))
	}
	if got := r.offsets(); !slices.Equal(got, seq(1, 2)) {
		t.Fatalf("offsets %v", got)
	}
}

func TestClose(t *testing.T) {
	g := newGateway(t)
	var st states
	c := newClient(t, Config{URLs: []string{g.URL()}, OnState: st.on})
	var r recorder
	sub, err := c.Subscribe(ctxT(t), "chat", r.handle)
	if err != nil {
		t.Fatal(err)
	}
	g.SetDown(true)
	g.Drop()
	waitFor(t, 5*time.Second, "disconnected", func() bool { return c.State() != Connected })
	// Calls waiting for a connection end with ErrClosed.
	errs := make(chan error, 2)
	go func() {
		_, err := c.Publish(context.Background(), "chat", 1)
		errs <- err
	}()
	go func() {
		_, err := c.Request(context.Background(), "echo", 1)
		errs <- err
	}()
	waitFor(t, 5*time.Second, "calls pending", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pubs) == 1 && len(c.reqs) == 1
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call: %v", err)
		}
	}
	select {
	case <-sub.Done():
	default:
		t.Fatal("subscription not ended")
	}
	if !errors.Is(sub.Err(), ErrClosed) {
		t.Fatal(sub.Err())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctxT(t), "chat", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish: %v", err)
	}
	if _, err := c.Subscribe(ctxT(t), "x", r.handle); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe: %v", err)
	}
	if _, err := c.Request(ctxT(t), "echo", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Request: %v", err)
	}
	if err := sub.Unsubscribe(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Unsubscribe: %v", err)
	}
	got := st.all()
	if got[0] != Connecting || got[1] != Connected || got[2] != Disconnected || got[len(got)-1] != Closed || st.count(Closed) != 1 {
		t.Fatalf("states %v", got)
	}
	if c.State() != Closed {
		t.Fatal(c.State())
	}
}

// Close on a connected client says goodbye with a normal close frame and
// leaves no goroutine behind (goleak checks in TestMain).
func TestCloseConnected(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	if _, err := c.Publish(ctxT(t), "chat", 1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, 5*time.Second, "the gateway to see the close", func() bool { return g.Conns() == 0 })
}
