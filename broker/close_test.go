package broker

import (
	"context"
	"testing"
	"time"
)

func TestCloseWithoutRun(t *testing.T) {
	s := &Service{closeCh: make(chan struct{}), doneCh: make(chan struct{}), drainCh: make(chan struct{})}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close of a service that never ran did not return")
	}
	s.Run(context.Background()) // returns at once: it was closed first
}
