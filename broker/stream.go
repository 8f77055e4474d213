package broker

import (
	"sync"

	"github.com/comethq/comet/raft"
)

// Stream keeps the most recently applied messages of this hub in memory, in
// commit order, so that gateways can follow the commit stream from a
// position (a Raft index) and move to another hub without a gap: every hub
// applies the same entries at the same indexes.
//
// It implements raft.Observer; give it to raft.Config.Observer.
//
// Positions are Raft indexes: "from N" means the messages of entries with
// index >= N. A position older than what the stream still holds (after a
// restart, a snapshot restore, or when the ring wrapped) cannot be served;
// Since then reports it and the gateway resyncs the channels it needs with
// range reads, which dense per-channel offsets make exact.
type Stream struct {
	mu      sync.Mutex
	ring    []raft.Event // circular, capacity cap(ring)
	head    int          // index in ring of the oldest event
	n       int          // events held
	bytes   int          // data bytes held
	maxB    int
	floor   uint64 // lowest index servable: entries >= floor are all held
	applied uint64 // last applied index
	wake    chan struct{}
	act     *activity // counts for the admin view (activity.go)
}

var _ raft.Observer = (*Stream)(nil)

// NewStream returns a stream holding at most maxEvents messages and
// maxBytes of data (defaults 100,000 and 64 MiB).
func NewStream(maxEvents, maxBytes int) *Stream {
	if maxEvents <= 0 {
		maxEvents = 100_000
	}
	if maxBytes <= 0 {
		maxBytes = 64 << 20
	}
	return &Stream{ring: make([]raft.Event, maxEvents), maxB: maxBytes, wake: make(chan struct{}), act: newActivity()}
}

// Applied implements raft.Observer.
func (s *Stream) Applied(first, index uint64, events []raft.Event) {
	s.act.add(events)
	s.mu.Lock()
	if s.floor == 0 {
		// First batch this process applies: earlier entries are not held.
		s.floor = first
	}
	for _, e := range events {
		s.push(e)
	}
	s.applied = index
	wake := s.wake
	s.wake = make(chan struct{})
	s.mu.Unlock()
	close(wake)
}

// Restored implements raft.Observer: the log was replaced, so nothing before
// it can be streamed.
func (s *Stream) Restored(index uint64) {
	s.mu.Lock()
	s.head, s.n, s.bytes = 0, 0, 0
	clear(s.ring)
	s.floor, s.applied = index+1, index
	wake := s.wake
	s.wake = make(chan struct{})
	s.mu.Unlock()
	close(wake)
}

func (s *Stream) push(e raft.Event) {
	for s.n > 0 && (s.n == len(s.ring) || s.bytes+len(e.Data) > s.maxB) {
		old := s.ring[s.head]
		s.ring[s.head] = raft.Event{}
		s.head = (s.head + 1) % len(s.ring)
		s.n--
		s.bytes -= len(old.Data)
		// Entries up to old.Index may now be partly gone.
		s.floor = old.Index + 1
	}
	s.ring[(s.head+s.n)%len(s.ring)] = e
	s.n++
	s.bytes += len(e.Data)
}

// Since returns about limit events with index >= from (whole entries: the
// last entry is never cut), the last applied
// index, and a channel closed at the next apply (to wait on when no events
// were returned). ok is false when from is older than the stream holds
// (from < the floor): the caller must resync.
func (s *Stream) Since(from uint64, limit int) (events []raft.Event, applied uint64, wake <-chan struct{}, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.floor == 0 {
		return nil, s.applied, s.wake, true // nothing applied yet: wait
	}
	if from < s.floor {
		return nil, s.applied, s.wake, false
	}
	// Binary search for the first event with Index >= from.
	lo, hi := 0, s.n
	for lo < hi {
		mid := (lo + hi) / 2
		if s.ring[(s.head+mid)%len(s.ring)].Index < from {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i := lo; i < s.n; i++ {
		e := s.ring[(s.head+i)%len(s.ring)]
		// Never cut an entry in two: positions are whole entries.
		if len(events) >= limit && e.Index != events[len(events)-1].Index {
			break
		}
		events = append(events, e)
	}
	return events, s.applied, s.wake, true
}

// wakeAfter returns a channel closed at the next apply, or nil once index
// is applied.
func (s *Stream) wakeAfter(index uint64) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applied >= index {
		return nil
	}
	return s.wake
}

// Floor returns the lowest position the stream can serve, 0 before the
// first apply.
func (s *Stream) Floor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.floor
}
