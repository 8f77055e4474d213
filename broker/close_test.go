package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// TestCloseWithoutRun: Close of a service that never ran returns, answers
// what was queued, and refuses what comes after; Run then returns at once.
func TestCloseWithoutRun(t *testing.T) {
	s := &Service{closeCh: make(chan struct{}), doneCh: make(chan struct{}), drainCh: make(chan struct{}),
		stopCh: make(chan struct{}), queue: make(chan *pending, 4)}
	queued := &pending{done: make(chan outcome, 1)}
	if err := s.enqueue(context.Background(), queued); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close of a service that never ran did not return")
	}
	select {
	case o := <-queued.done:
		if !errors.Is(o.err, ErrClosed) {
			t.Fatalf("a publish queued before Close: %v, want ErrClosed", o.err)
		}
	default:
		t.Fatal("a publish queued before Close was not answered")
	}
	if err := s.enqueue(context.Background(), &pending{cb: func(wire.PublishResponse, error) {}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("enqueue after Close: %v, want ErrClosed", err)
	}
	s.Run(context.Background()) // returns at once: it was closed first
}
