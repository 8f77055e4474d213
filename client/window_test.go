package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// producer calls PublishAsync n times in order from one goroutine, as an
// application keeping a window of publishes does, and keeps the futures.
type producer struct {
	mu      sync.Mutex
	futures []*PublishFuture
	err     error
	done    chan struct{}
}

func pubID(i int) string { return fmt.Sprintf("id-%04d", i) }

func startProducer(t *testing.T, c *Client, channel string, n int) *producer {
	t.Helper()
	pr := &producer{done: make(chan struct{})}
	ctx := ctxT(t)
	go func() {
		defer close(pr.done)
		for i := 0; i < n; i++ {
			f, err := c.PublishAsync(ctx, channel, data(i), WithID(pubID(i)))
			pr.mu.Lock()
			if err != nil {
				pr.err = err
				pr.mu.Unlock()
				return
			}
			pr.futures = append(pr.futures, f)
			pr.mu.Unlock()
		}
	}()
	t.Cleanup(func() { <-pr.done }) // ends at the client's Close at the latest
	return pr
}

func (pr *producer) all() []*PublishFuture {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return slices.Clone(pr.futures)
}

// publishIDs returns the ids of the publish frames of fs, in order.
func publishIDs(fs []wire.ClientFrame) []string {
	var ids []string
	for _, f := range fs {
		if f.Op == wire.OpPublish {
			ids = append(ids, f.ID)
		}
	}
	return ids
}

func idRange(from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, pubID(i))
	}
	return ids
}

// waitAll waits for every future and checks that each was acknowledged,
// at offset first+i for the i-th.
func waitAll(t *testing.T, fs []*PublishFuture, first uint64) {
	t.Helper()
	for i, f := range fs {
		ack, err := f.Wait(ctxT(t))
		if err != nil {
			t.Fatalf("publish %s: %v", f.ID(), err)
		}
		if ack.Offset != first+uint64(i) || ack.Channel != "chat" {
			t.Fatalf("publish %s acked %+v, want offset %d", f.ID(), ack, first+uint64(i))
		}
		if f.Ack() != ack || f.Err() != nil {
			t.Fatalf("publish %s: Ack %+v, Err %v after Wait", f.ID(), f.Ack(), f.Err())
		}
	}
}

// 1,000 publishes from one goroutine with a window of 64: never more than
// 64 on the wire without an answer, sent in call order, stored in call
// order, each future completed with its own offset.
func TestPublishAsyncWindow(t *testing.T) {
	const n, window = 1000, 64
	g := newGateway(t)
	g.HoldAcks(true)
	c := newClient(t, Config{URLs: []string{g.URL()}, MaxPublishesInFlight: window})
	pr := startProducer(t, c, "chat", n)

	waitFor(t, 5*time.Second, "a full window", func() bool { return g.Held() == window })
	if p := c.PublishAsyncPending(); p != window {
		t.Fatalf("%d pending, want %d", p, window)
	}
	// Release the acks a few at a time until everything is acknowledged.
	for i := 0; i < n; i++ {
		waitFor(t, 5*time.Second, "acks to hold or the end", func() bool {
			return g.Held() > 0 || g.Stores() == n
		})
		if g.ReleaseAcks(1+i%7) == 0 {
			break
		}
	}
	<-pr.done
	if pr.err != nil {
		t.Fatal(pr.err)
	}
	fs := pr.all()
	waitAll(t, fs, 1)
	if m := g.MaxUnacked(); m != window {
		t.Fatalf("at most %d publishes without an answer on the wire, want %d", m, window)
	}
	if ids := publishIDs(g.Frames()); !slices.Equal(ids, idRange(0, n)) {
		t.Fatalf("publish frames not in call order, or sent twice: %d frames", len(ids))
	}
	_, _, msgs := g.Messages("chat")
	for i, m := range msgs {
		if string(m) != string(data(i)) {
			t.Fatalf("message %d stored is %s, want %s", i+1, m, data(i))
		}
	}
	select {
	case <-c.PublishAsyncComplete():
	default:
		t.Fatal("PublishAsyncComplete not done with nothing in flight")
	}
}

// A connection that drops in the middle of a window: the new connection
// gets exactly the unacknowledged publishes again, in call order, with
// their ids, before any new one; each future completes once, and the
// retries of publishes the gateway had stored say duplicate.
func TestPublishAsyncResendAfterDrop(t *testing.T) {
	const n, window, acked = 200, 64, 20
	g := newGateway(t)
	g.HoldAcks(true)
	c := newClient(t, Config{URLs: []string{g.URL()}, MaxPublishesInFlight: window})
	pr := startProducer(t, c, "chat", n)

	waitFor(t, 5*time.Second, "a full window", func() bool { return g.Held() == window })
	if got := g.ReleaseAcks(acked); got != acked {
		t.Fatalf("released %d acks", got)
	}
	waitFor(t, 5*time.Second, "the window full again", func() bool {
		return g.Held() == window && len(publishIDs(g.Frames())) == window+acked
	})
	// Publishes acked+window... wait for room; acked...acked+window-1 are
	// stored but not acknowledged when the connection drops.
	g.HoldAcks(false)
	g.Drop()
	<-pr.done
	if pr.err != nil {
		t.Fatal(pr.err)
	}
	fs := pr.all()
	waitAll(t, fs, 1)

	first := g.FramesOf("fake-1")
	if ids := publishIDs(first); !slices.Equal(ids, idRange(0, window+acked)) {
		t.Fatalf("first connection got publishes %v", ids)
	}
	second := publishIDs(g.FramesOf("fake-2"))
	if !slices.Equal(second, idRange(acked, n)) {
		t.Fatalf("second connection got %d publishes %v..., want %s... in order", len(second), second[:min(len(second), 5)], pubID(acked))
	}
	if g.Stores() != n || g.Accepted() != 2 {
		t.Fatalf("%d stored on %d connections, want %d on 2", g.Stores(), g.Accepted(), n)
	}
	for i, f := range fs {
		if dup := i >= acked && i < acked+window; f.Ack().Duplicate != dup {
			t.Fatalf("publish %d: duplicate %v, want %v", i, f.Ack().Duplicate, dup)
		}
	}
	_, _, msgs := g.Messages("chat")
	for i, m := range msgs {
		if string(m) != string(data(i)) {
			t.Fatalf("message %d stored is %s, want %s", i+1, m, data(i))
		}
	}
}

// A full window: PublishAsync waits for room until ctx ends, or fails at
// once with NoWait; PublishAsyncComplete waits for what was in flight at
// the call only; Close fails the futures left with ErrClosed.
func TestPublishAsyncFullWindow(t *testing.T) {
	g := newGateway(t)
	g.HoldAcks(true)
	c := newClient(t, Config{URLs: []string{g.URL()}, MaxPublishesInFlight: 2})
	f1, err := c.PublishAsync(ctxT(t), "chat", 1)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := c.PublishAsync(ctxT(t), "chat", 2, WithID("k2"))
	if err != nil || f2.ID() != "k2" || f2.Channel() != "chat" {
		t.Fatalf("future %v %v, %v", f2.ID(), f2.Channel(), err)
	}
	if f1.Err() != nil || f1.Ack() != (Ack{}) {
		t.Fatal("a pending future has a result")
	}
	if _, err := c.PublishAsync(ctxT(t), "chat", 3, NoWait()); !errors.Is(err, ErrWindowFull) {
		t.Fatalf("NoWait on a full window: %v", err)
	}
	if _, err := c.PublishAsync(ctxT(t), "chat", 3, WithID("k2")); !errors.Is(err, ErrInFlight) {
		t.Fatalf("an id in flight on a full window: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.PublishAsync(ctx, "chat", 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full window until ctx's end: %v", err)
	}
	if _, err := c.PublishWithID(ctx, "chat", "k4", json.RawMessage(`4`)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PublishWithID on a full window until ctx's end: %v", err)
	}
	complete := c.PublishAsyncComplete()
	waitFor(t, 5*time.Second, "both publishes held", func() bool { return g.Held() == 2 })
	g.ReleaseAcks(1)
	if _, err := f1.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Room for one: the third goes out, and PublishAsyncComplete does not
	// wait for it.
	f3, err := c.PublishAsync(ctxT(t), "chat", 3, NoWait())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-complete:
		t.Fatal("complete with f2 in flight")
	default:
	}
	waitFor(t, 5*time.Second, "the third publish held", func() bool { return g.Held() == 2 })
	g.ReleaseAcks(1)
	select {
	case <-complete:
	case <-ctxT(t).Done():
		t.Fatal("PublishAsyncComplete never done")
	}
	if f2.Err() != nil || f2.Ack().Offset != 2 {
		t.Fatalf("f2: %+v, %v", f2.Ack(), f2.Err())
	}
	c.Close()
	<-f3.Done()
	if !errors.Is(f3.Err(), ErrClosed) {
		t.Fatalf("after Close: %v", f3.Err())
	}
	if _, err := c.PublishAsync(ctxT(t), "chat", 5); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// An error frame fails the future with an *Error; bad input fails the
// call.
func TestPublishAsyncErrors(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	g.FailPublishes(CodeForbidden)
	f, err := c.PublishAsync(ctxT(t), "chat", 1)
	if err != nil {
		t.Fatal(err)
	}
	var e *Error
	if _, err := f.Wait(ctxT(t)); !errors.As(err, &e) || e.Code != CodeForbidden || !errors.As(f.Err(), &e) {
		t.Fatalf("got %v", err)
	}
	for _, bad := range []func() error{
		func() error { _, err := c.PublishAsync(ctxT(t), "bad channel", 1); return err },
		func() error { _, err := c.PublishAsync(ctxT(t), "chat", nil); return err },
		func() error { _, err := c.PublishAsync(ctxT(t), "chat", make(chan int)); return err },
	} {
		if bad() == nil {
			t.Error("bad publish accepted")
		}
	}
	if _, err := New(Config{URLs: []string{g.URL()}, MaxPublishesInFlight: -1}); err == nil {
		t.Fatal("negative MaxPublishesInFlight accepted")
	}
	if c.PublishAsyncPending() != 0 {
		t.Fatalf("%d pending", c.PublishAsyncPending())
	}
}
