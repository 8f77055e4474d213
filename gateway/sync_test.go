package gateway

import (
	"errors"
	"testing"

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
