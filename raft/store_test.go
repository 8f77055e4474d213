package raft

import (
	"path/filepath"
	"testing"
	"time"
)

// TestGuardedStoreClose: a Raft call after Close neither fails (Raft would
// panic) nor returns (it must not answer as if it had stored anything).
func TestGuardedStoreClose(t *testing.T) {
	bolt, err := openBoltLog(filepath.Join(t.TempDir(), "raft.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	g := newGuardedStore(bolt, nil)
	if err := g.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if v, err := g.GetUint64([]byte("CurrentTerm")); err != nil || v != 3 {
		t.Fatalf("read back %d, %v", v, err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	returned := make(chan error, 1)
	go func() { returned <- g.SetUint64([]byte("CurrentTerm"), 4) }() // parks for good
	select {
	case err := <-returned:
		t.Fatalf("a write after Close returned (%v); it must park", err)
	case <-time.After(100 * time.Millisecond):
	}
}
