package client

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/client/clienttest"
	"github.com/comethq/comet/wire"
)

func TestSplitLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{``, nil},
		{`{"op":"pong"}`, []string{`{"op":"pong"}`}},
		{"{\"a\":1}\n{\"b\":2}\n{\"c\":3}", []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}},
		{"{\"a\":1}\n", []string{`{"a":1}`}},
		{"\n\n{\"a\":1}\r\n\n{\"b\":2}\n\n", []string{`{"a":1}`, `{"b":2}`}},
	} {
		var got []string
		for line := range splitLines([]byte(tc.in)) {
			got = append(got, string(line))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitLines(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A burst of several objects in one frame (the replay, then a live burst)
// is delivered message by message, in order, with Replayed set right.
func TestBurstFrames(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 3)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	var r recorder
	var infos []SubscribedInfo
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle, From(1),
		OnSubscribed(func(i SubscribedInfo) { infos = append(infos, i) })); err != nil {
		t.Fatal(err)
	}
	g.Append("chat", data(3), data(4), data(5)) // one frame of three objects
	waitFor(t, 5*time.Second, "6 messages", func() bool { return r.len() == 6 })
	if got := r.offsets(); !slices.Equal(got, seq(1, 6)) {
		t.Fatalf("offsets %v", got)
	}
	for _, m := range r.all() {
		if m.Replayed != (m.Offset <= 3) || m.Epoch != clienttest.DefaultEpoch || m.Channel != "chat" {
			t.Errorf("message %+v", m)
		}
		if want := string(data(int(m.Offset) - 1)); string(m.Data) != want {
			t.Errorf("offset %d: data %s, want %s", m.Offset, m.Data, want)
		}
	}
	want := SubscribedInfo{Channel: "chat", Epoch: clienttest.DefaultEpoch, Recovered: true, First: 1, Next: 4, From: 1}
	if len(infos) != 1 || infos[0] != want {
		t.Fatalf("OnSubscribed got %+v, want [%+v]", infos, want)
	}
}

// A live-only subscription resumes after a reconnect from where the channel
// was, so nothing published while the client was away is missed.
func TestLiveOnlyResumes(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 2) // before the subscription: not delivered
	store := NewMemoryStore()
	c := newClient(t, Config{URLs: []string{g.URL()}, Store: store})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle); err != nil {
		t.Fatal(err)
	}
	appendN(g, "chat", 2)
	waitFor(t, 5*time.Second, "2 live messages", func() bool { return r.len() == 2 })
	g.SetDown(true)
	g.Drop()
	waitFor(t, 5*time.Second, "disconnect", func() bool { return c.State() != Connected })
	appendN(g, "chat", 3) // while the client is away
	g.SetDown(false)
	waitFor(t, 5*time.Second, "5 messages", func() bool { return r.len() == 5 })
	if got := r.offsets(); !slices.Equal(got, seq(3, 7)) {
		t.Fatalf("offsets %v, want 3..7", got)
	}
	if p, ok, _ := store.Load("chat"); !ok || p != (Position{Offset: 7, Epoch: clienttest.DefaultEpoch}) {
		t.Fatalf("stored position %+v %v", p, ok)
	}
}

// Many forced disconnects while messages flow: every resubscribe asks for
// last delivered + 1 with the epoch, and the handler sees every offset once,
// in order.
func TestResumeAcrossManyDisconnects(t *testing.T) {
	for _, overlap := range []uint64{0, 3} {
		name := "exact gateway"
		if overlap > 0 {
			name = "gateway replays duplicates"
		}
		t.Run(name, func(t *testing.T) {
			const total, cycles = 400, 40
			g := newGateway(t)
			g.SetReplayOverlap(overlap)
			c := newClient(t, Config{URLs: []string{g.URL()}})
			var r recorder
			var bad []string
			var badMu sync.Mutex
			var subscribes int
			g.SetHook(func(f wire.ClientFrame) {
				if f.Op != wire.OpSubscribe {
					return
				}
				// The client's reading goroutine is between connections:
				// no handler runs, so r holds exactly what was delivered.
				badMu.Lock()
				defer badMu.Unlock()
				subscribes++
				want, epoch := uint64(r.len())+1, clienttest.DefaultEpoch
				if subscribes == 1 {
					epoch = "" // From(1) alone
				}
				if f.From == nil || *f.From != want || f.Epoch != epoch {
					bad = append(bad, f.Channel)
				}
			})
			if _, err := c.Subscribe(ctxT(t), "chat", r.handle, From(1)); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				// Publish in small batches, staying a little ahead of the
				// client, so that disconnects fall in the middle of the flow.
				defer close(done)
				deadline := time.Now().Add(10 * time.Second)
				for i := 0; i < total; i++ {
					for r.len() < i-40 && time.Now().Before(deadline) {
						time.Sleep(time.Millisecond)
					}
					g.Append("chat", data(i))
				}
			}()
			for k := 1; k <= cycles; k++ {
				waitFor(t, 10*time.Second, "progress", func() bool { return r.len() >= k*total/(cycles+1) })
				n := g.Accepted()
				if k%2 == 0 {
					g.Drop()
				} else {
					g.CloseConns(wire.CloseSlowConsumer)
				}
				waitFor(t, 10*time.Second, "resubscribed", func() bool { return g.Accepted() > n && g.Subscribers("chat") == 1 })
			}
			<-done
			waitFor(t, 10*time.Second, "all messages", func() bool { return r.len() >= total })
			if got := r.offsets(); !slices.Equal(got, seq(1, total)) {
				t.Fatalf("got %d messages, not 1..%d in order: %v", len(got), total, got)
			}
			badMu.Lock()
			defer badMu.Unlock()
			if len(bad) > 0 {
				t.Fatalf("%d of %d subscribes did not ask for last+1 with the epoch", len(bad), subscribes)
			}
			if subscribes != cycles+1 {
				t.Fatalf("only %d subscribes for %d disconnects", subscribes, cycles)
			}
		})
	}
}

// A changed epoch resets the position: OnSubscribed hears recovered:false,
// and the new history's offsets are delivered even though they are below
// the last offset of the old one.
func TestEpochChange(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 5)
	store := NewMemoryStore()
	c := newClient(t, Config{URLs: []string{g.URL()}, Store: store})
	var r recorder
	infos := make(chan SubscribedInfo, 10)
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle, From(1), OnSubscribed(func(i SubscribedInfo) { infos <- i })); err != nil {
		t.Fatal(err)
	}
	<-infos
	waitFor(t, 5*time.Second, "5 messages", func() bool { return r.len() == 5 })

	g.Reset("chat", "e2")
	appendN(g, "chat", 2)
	g.Drop()
	info := <-infos
	want := SubscribedInfo{Channel: "chat", Epoch: "e2", Recovered: false, First: 1, Next: 3, From: 6, FromEpoch: clienttest.DefaultEpoch}
	if info != want {
		t.Fatalf("OnSubscribed got %+v, want %+v", info, want)
	}
	waitFor(t, 5*time.Second, "2 messages of the new epoch", func() bool { return r.len() == 7 })
	g.Append("chat", data(9))
	waitFor(t, 5*time.Second, "a live message", func() bool { return r.len() == 8 })
	msgs := r.all()
	for i, m := range msgs[5:] {
		if m.Offset != uint64(i+1) || m.Epoch != "e2" {
			t.Fatalf("after the reset got %+v", m)
		}
	}
	if p, _, _ := store.Load("chat"); p != (Position{Offset: 3, Epoch: "e2"}) {
		t.Fatalf("stored %+v", p)
	}
	// A reconnect now resumes in the new epoch, recovered.
	g.Drop()
	if info := <-infos; !info.Recovered || info.From != 4 || info.FromEpoch != "e2" {
		t.Fatalf("after the reset, resubscribe got %+v", info)
	}
}

// From below the first offset held: recovered:false with first, delivery
// from first, and no second alarm after a reconnect.
func TestTrimmedHistory(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 10)
	g.Trim("chat", 6)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	var r recorder
	infos := make(chan SubscribedInfo, 10)
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle, From(2), OnSubscribed(func(i SubscribedInfo) { infos <- i })); err != nil {
		t.Fatal(err)
	}
	if i := <-infos; i.Recovered || i.First != 6 || i.From != 2 {
		t.Fatalf("got %+v", i)
	}
	waitFor(t, 5*time.Second, "5 messages", func() bool { return r.len() == 5 })
	if got := r.offsets(); !slices.Equal(got, seq(6, 10)) {
		t.Fatalf("offsets %v", got)
	}
	g.Drop()
	if i := <-infos; !i.Recovered || i.From != 11 {
		t.Fatalf("resubscribe got %+v", i)
	}
}

func TestResumeFromStore(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 5)
	store := NewMemoryStore()
	store.Save("chat", Position{Offset: 3, Epoch: clienttest.DefaultEpoch})
	c := newClient(t, Config{URLs: []string{g.URL()}, Store: store})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 messages", func() bool { return r.len() == 2 })
	if got := r.offsets(); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("offsets %v", got)
	}

	sub, err := c.Subscribe(ctxT(t), "chat", r.handle)
	if !errors.Is(err, ErrSubscribed) || sub != nil {
		t.Fatalf("second subscribe: %v", err)
	}
}

func TestFromWithEpoch(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 3)
	store := NewMemoryStore()
	store.Save("chat", Position{Offset: 3, Epoch: clienttest.DefaultEpoch})
	c := newClient(t, Config{URLs: []string{g.URL()}, Store: store})
	var r recorder
	var info SubscribedInfo
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle, From(2), Epoch("old"),
		OnSubscribed(func(i SubscribedInfo) { info = i })); err != nil {
		t.Fatal(err)
	}
	if info.Recovered || info.FromEpoch != "old" || info.From != 2 {
		t.Fatalf("got %+v", info)
	}
	waitFor(t, 5*time.Second, "3 messages", func() bool { return r.len() == 3 })
	if got := r.offsets(); !slices.Equal(got, seq(1, 3)) {
		t.Fatalf("offsets %v", got)
	}
}

// After Unsubscribe returns, the handler is never called for the channel.
func TestUnsubscribe(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	var a, b recorder
	sub, err := c.Subscribe(ctxT(t), "a", a.handle)
	if err != nil {
		t.Fatal(err)
	}
	appendN(g, "a", 2)
	waitFor(t, 5*time.Second, "2 messages", func() bool { return a.len() == 2 })
	if err := sub.Unsubscribe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
	default:
		t.Fatal("Done not closed")
	}
	if sub.Err() != nil {
		t.Fatal(sub.Err())
	}
	if _, err := c.Subscribe(ctxT(t), "b", b.handle); err != nil {
		t.Fatal(err)
	}
	g.Append("a", data(1))
	g.Append("b", data(1)) // after a's message on the same connection: a barrier
	waitFor(t, 5*time.Second, "b's message", func() bool { return b.len() == 1 })
	if a.len() != 2 || g.Subscribers("a") != 0 {
		t.Fatalf("a got %d messages, has %d subscribers", a.len(), g.Subscribers("a"))
	}
	// A reconnect does not bring it back; subscribing again resumes.
	g.Drop()
	waitFor(t, 5*time.Second, "resubscribe of b", func() bool { return g.Subscribers("b") == 1 })
	if g.Subscribers("a") != 0 {
		t.Fatal("a resubscribed after a reconnect")
	}
	if _, err := c.Subscribe(ctxT(t), "a", a.handle); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a's missed message", func() bool { return a.len() == 3 })
	if got := a.offsets(); !slices.Equal(got, seq(1, 3)) {
		t.Fatalf("offsets %v", got)
	}
}

func TestSubscribeRefused(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	var r recorder

	// unavailable and timeout are retried until subscribed.
	g.FailSubscribes(CodeUnavailable, CodeTimeout)
	if _, err := c.Subscribe(ctxT(t), "a", r.handle); err != nil {
		t.Fatal(err)
	}
	// Anything else is returned.
	g.FailSubscribes(CodeForbidden)
	_, err := c.Subscribe(ctxT(t), "b", r.handle)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeForbidden || e.Message != "fake failure" {
		t.Fatalf("got %v", err)
	}
	// A refusal after a reconnect ends the subscription.
	sub, err := c.Subscribe(ctxT(t), "c", r.handle)
	if err != nil {
		t.Fatal(err)
	}
	g.FailSubscribes(CodeForbidden, CodeForbidden)
	g.Drop()
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("subscription not ended")
	}
	if !errors.As(sub.Err(), &e) || e.Code != CodeForbidden {
		t.Fatalf("Err %v", sub.Err())
	}
	// Bad input is refused locally.
	if _, err := c.Subscribe(ctxT(t), "bad channel!", r.handle); err == nil {
		t.Fatal("bad channel accepted")
	}
}

// Subscribe while no gateway is up waits for one, and gives up with ctx.
func TestSubscribeWaitsForConnection(t *testing.T) {
	g := newGateway(t)
	g.SetDown(true)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	var r recorder
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Subscribe(ctx, "a", r.handle); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctxT(t), "a", r.handle) // "a" was dropped by the failed call
		errc <- err
	}()
	waitFor(t, 5*time.Second, "a few refused dials", func() bool { return g.Attempts() >= 3 })
	g.SetDown(false)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
