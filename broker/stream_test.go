package broker

import (
	"context"
	"errors"
	"testing"

	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

func ev(index, offset uint64, data string) raft.Event {
	return raft.Event{Index: index, Channel: "c", Offset: offset, Data: []byte(data)}
}

func TestStreamSinceAndWrap(t *testing.T) {
	s := NewStream(4, 1<<20)
	if _, _, _, ok := s.Since(1, 10); !ok {
		t.Fatal("before any apply, Since should ask the caller to wait, not reset")
	}
	s.Applied(3, 5, []raft.Event{ev(3, 1, "a"), ev(3, 2, "b"), ev(5, 3, "c")})
	if got := s.Floor(); got != 3 {
		t.Fatalf("floor = %d, want 3 (first index applied)", got)
	}
	evs, applied, _, ok := s.Since(4, 10)
	if !ok || applied != 5 || len(evs) != 1 || evs[0].Offset != 3 {
		t.Fatalf("Since(4) = %v %d %v", evs, applied, ok)
	}
	// Limit never cuts an entry in two.
	evs, _, _, _ = s.Since(3, 1)
	if len(evs) != 2 {
		t.Fatalf("Since(3, limit 1) returned %d events, want the whole entry (2)", len(evs))
	}
	if _, _, _, ok := s.Since(2, 10); ok {
		t.Fatal("Since below the floor should report a reset")
	}
	// Two more events overflow the ring of 4: index 3's first event goes,
	// so index 3 can no longer be served whole.
	s.Applied(6, 7, []raft.Event{ev(6, 4, "d"), ev(7, 5, "e")})
	if got := s.Floor(); got != 4 {
		t.Fatalf("floor after wrap = %d, want 4", got)
	}
	evs, applied, _, ok = s.Since(4, 10)
	if !ok || applied != 7 || len(evs) != 3 || evs[0].Index != 5 || evs[2].Offset != 5 {
		t.Fatalf("Since(4) after wrap = %+v %d %v", evs, applied, ok)
	}
}

func TestStreamByteBoundAndRestore(t *testing.T) {
	s := NewStream(100, 10)
	s.Applied(1, 1, []raft.Event{ev(1, 1, "12345678")})
	s.Applied(2, 2, []raft.Event{ev(2, 2, "12345678")})
	if got := s.Floor(); got != 2 {
		t.Fatalf("floor = %d, want 2 (byte bound evicts index 1)", got)
	}
	wakeEvs, _, wake, _ := s.Since(3, 10)
	if len(wakeEvs) != 0 {
		t.Fatalf("nothing at 3 yet, got %v", wakeEvs)
	}
	s.Restored(50)
	select {
	case <-wake:
	default:
		t.Fatal("Restored should wake waiting readers")
	}
	if _, _, _, ok := s.Since(3, 10); ok {
		t.Fatal("positions before a restore should reset")
	}
	if _, applied, _, ok := s.Since(51, 10); !ok || applied != 50 {
		t.Fatalf("Since(51) after restore: applied %d ok %v", applied, ok)
	}
}

// A Follower's first line says at once where it starts; a position that is
// gone is a reset instead.
func TestFollowerStartsWithItsPosition(t *testing.T) {
	s := NewStream(100, 1<<20)
	ctx := context.Background()
	f := s.Follow(ctx, 0) // nothing applied yet
	if l, err := f.Next(); err != nil || l.Applied != 0 || l.Index != 0 || l.Reset {
		t.Fatalf("first line before any apply: %+v, %v; want a heartbeat at 0", l, err)
	}
	f.Close()
	s.Applied(3, 5, []raft.Event{ev(3, 1, "a"), ev(5, 2, "b")})

	f = s.Follow(ctx, 0) // from now: after 5
	defer f.Close()
	if l, err := f.Next(); err != nil || l.Applied != 5 || l.Index != 0 || l.Reset {
		t.Fatalf("first line from now: %+v, %v; want a heartbeat at 5", l, err)
	}
	s.Applied(6, 6, []raft.Event{ev(6, 3, "c")})
	if l, err := f.Next(); err != nil || l.Index != 6 {
		t.Fatalf("second line: %+v, %v; want index 6", l, err)
	}

	g := s.Follow(ctx, 4) // after 3: then entry 5 and 6
	defer g.Close()
	var got []wire.StreamLine
	for range 3 {
		l, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
	}
	if got[0].Applied != 3 || got[0].Index != 0 || got[1].Index != 5 || got[2].Index != 6 {
		t.Fatalf("from 4: %+v", got)
	}

	r := s.Follow(ctx, 2) // below the floor (3)
	defer r.Close()
	if l, err := r.Next(); err != nil || !l.Reset || l.Floor != 3 {
		t.Fatalf("first line below the floor: %+v, %v; want a reset", l, err)
	}
	if _, err := r.Next(); !errors.Is(err, ErrStreamReset) {
		t.Fatalf("after the reset: %v", err)
	}
}
