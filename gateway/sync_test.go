package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// A line of an older epoch, streamed again after a failover, must neither
// stall a sync nor start one: the read it is older than already holds it.
func TestOldLinesAreDroppedByIndex(t *testing.T) {
	s, err := New(Config{Hub: newMemHub()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch := newChannel(s, "x")
	ch.syncing = true
	ch.held = []wire.StreamLine{{Index: 5, Channel: "x", Offset: 3, Epoch: "old"}}
	// The read (reflecting index 10) finds the channel reset: epoch new.
	live, _ := ch.apply(Page{Epoch: "new", First: 1, Next: 1}, 10)
	if !live || ch.epoch != "new" || ch.next != 1 || ch.asOf != 10 {
		t.Fatalf("live %v, epoch %s, next %d, asOf %d", live, ch.epoch, ch.next, ch.asOf)
	}
	// The same old line streamed again: ignored, no sync.
	ch.onStream(wire.StreamLine{Index: 5, Channel: "x", Offset: 3, Epoch: "old"})
	if ch.syncing {
		t.Fatal("an old line started a sync")
	}
	// A new line of the new epoch is delivered.
	ch.onStream(wire.StreamLine{Index: 11, Channel: "x", Offset: 1, Epoch: "new", Data: []byte("1")})
	if ch.next != 2 || ch.syncing {
		t.Fatalf("next %d, syncing %v", ch.next, ch.syncing)
	}
	// A gap asks for a read that reflects the line that showed it.
	ch.onStream(wire.StreamLine{Index: 20, Channel: "x", Offset: 5, Epoch: "new", Data: []byte("5")})
	if !ch.syncing || ch.syncIdx < 20 {
		t.Fatalf("syncing %v, syncIdx %d", ch.syncing, ch.syncIdx)
	}
}

// After the stream is reset (the hub no longer holds the gateway's
// position), a quiet channel still gets what was committed meanwhile,
// without waiting for its next message.
func TestStreamResetResyncsQuietChannels(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{})
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "q"})
	c.expect(wire.OpSubscribed)
	hub.append("q", []byte(`"one"`))
	c.messages("q", 1, 1)

	// Two messages the stream never carries, then a reset.
	hub.appendSilently("q", []byte(`"two"`))
	hub.appendSilently("q", []byte(`"three"`))
	hub.lines <- wire.StreamLine{Reset: true, Floor: 100}
	if m := c.messages("q", 2, 2); string(m[1].Data) != `"three"` {
		t.Fatalf("got %+v", m)
	}
	hub.append("q", []byte(`"four"`))
	c.messages("q", 4, 1)
}

// A message committed after a channel's first read but before the commit
// stream starts is in neither: the gateway must read it again once the
// stream says where it starts, not wait for the channel's next message
// (which on a quiet channel may never come).
func TestQuietChannelGetsWhatCameBeforeTheStream(t *testing.T) {
	hub := newMemHub()
	hub.blockFirst = make(chan struct{})
	g := startGatewayUnready(t, hub, Config{})
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "q", From: u64p(1)})
	c.expect(wire.OpSubscribed) // the first read: q is empty
	hub.appendSilently("q", []byte(`"one"`))
	close(hub.blockFirst) // the stream starts after it
	if m := c.messages("q", 1, 1); string(m[0].Data) != `"one"` {
		t.Fatalf("got %+v", m)
	}
	hub.append("q", []byte(`"two"`))
	c.messages("q", 2, 1)
}

// A stream that breaks before its first line told no position: the next
// one starts from now again, and what was committed in between is read.
func TestStreamBrokenBeforeItsFirstLine(t *testing.T) {
	hub := newMemHub()
	hub.breakFirst = make(chan struct{})
	g := startGatewayUnready(t, hub, Config{})
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "q", From: u64p(1)})
	c.expect(wire.OpSubscribed)
	hub.appendSilently("q", []byte(`"one"`))
	close(hub.breakFirst)
	c.messages("q", 1, 1)
	hub.append("q", []byte(`"two"`))
	c.messages("q", 2, 1)
	if froms := hub.streamFroms(); len(froms) != 2 || froms[0] != 0 || froms[1] != 0 {
		t.Fatalf("streams opened from %v, want [0 0]: the first told no position", froms)
	}
}

// A stream that breaks after its first line resumes where it started,
// although it carried no message.
func TestStreamResumesFromItsFirstLine(t *testing.T) {
	hub := newMemHub()
	hub.appendSilently("x", []byte(`1`))
	hub.appendSilently("x", []byte(`2`))
	startGateway(t, hub, Config{})
	hub.fail <- errors.New("cut")
	waitFor(t, "a second stream", func() bool { return len(hub.streamFroms()) == 2 })
	if froms := hub.streamFroms(); froms[0] != 0 || froms[1] != 3 {
		t.Fatalf("streams opened from %v, want [0 3]", froms)
	}
}

// countingHub counts the range reads in flight; while gated, each read
// waits for a token from gate.
type countingHub struct {
	*memHub
	gated atomic.Bool
	gate  chan struct{}

	mu            sync.Mutex
	inflight, max int
}

func (h *countingHub) Read(ctx context.Context, ch string, from uint64, limit int) (Page, uint64, error) {
	h.mu.Lock()
	h.inflight++
	h.max = max(h.max, h.inflight)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.inflight--
		h.mu.Unlock()
	}()
	if h.gated.Load() {
		select {
		case <-h.gate:
		case <-ctx.Done():
			return Page{}, 0, ctx.Err()
		}
	}
	return h.memHub.Read(ctx, ch, from, limit)
}

func (h *countingHub) counts() (inflight, max int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inflight, h.max
}

// After a reset, every channel followed is read again, at most
// MaxSyncReads at once, and each gets what it missed.
func TestResyncReadsAreBounded(t *testing.T) {
	const channels, limit = 300, 4
	hub := &countingHub{memHub: newMemHub(), gate: make(chan struct{})}
	g := startGateway(t, hub, Config{MaxSyncReads: limit})
	c := dial(t, g.url)
	for i := range channels {
		c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: fmt.Sprint("c", i)})
		c.expect(wire.OpSubscribed)
	}
	hub.mu.Lock()
	hub.max = 0
	hub.mu.Unlock()
	hub.gated.Store(true)
	for i := range channels {
		hub.appendSilently(fmt.Sprint("c", i), []byte(`1`))
	}
	hub.lines <- wire.StreamLine{Reset: true, Floor: 1000}
	waitFor(t, "reads to pile up", func() bool { n, _ := hub.counts(); return n >= limit })

	// Let the reads through one at a time, as fast as they come.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case hub.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	got := map[string]bool{}
	for len(got) < channels {
		f := c.expect(wire.OpMessage)
		if f.Offset != 1 || got[f.Channel] {
			t.Fatalf("got %+v again or out of order", f)
		}
		got[f.Channel] = true
	}
	if _, m := hub.counts(); m != limit {
		t.Fatalf("%d reads in flight at most, want %d", m, limit)
	}
}

// Backoff waits are jittered between half the step and the step, and the
// step doubles up to its bound.
func TestBackoffJitter(t *testing.T) {
	b := newBackoff(100*time.Millisecond, 400*time.Millisecond)
	seen := map[time.Duration]bool{}
	var step time.Duration
	for i := range 200 {
		if i%10 == 0 {
			b.reset()
			step = 100 * time.Millisecond
		}
		d := b.next()
		if d < step/2 || d > step {
			t.Fatalf("wait %d: %v, want between %v and %v", i, d, step/2, step)
		}
		seen[d] = true
		step = min(2*step, 400*time.Millisecond)
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct waits in 200: no jitter", len(seen))
	}
}

// failingHub fails every read of one channel.
type failingHub struct {
	*memHub
	bad   string
	fails atomic.Int64
}

func (h *failingHub) Read(ctx context.Context, ch string, from uint64, limit int) (Page, uint64, error) {
	if ch == h.bad {
		h.fails.Add(1)
		return Page{}, 0, errors.New("corrupt record")
	}
	return h.memHub.Read(ctx, ch, from, limit)
}

// A channel whose reads keep failing waits between them without holding
// one of the MaxSyncReads: other channels still sync.
func TestFailingSyncDoesNotStallOthers(t *testing.T) {
	hub := &failingHub{memHub: newMemHub(), bad: "bad"}
	g := startGateway(t, hub, Config{MaxSyncReads: 1})
	b := dial(t, g.url)
	b.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "bad"})
	waitFor(t, "the bad channel to fail twice", func() bool { return hub.fails.Load() >= 2 })
	hub.appendSilently("good", []byte(`1`))
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "good", From: u64p(1)})
	c.expect(wire.OpSubscribed)
	c.messages("good", 1, 1)
	hub.append("good", []byte(`2`))
	c.messages("good", 2, 1)
}
