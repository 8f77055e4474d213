package raft

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	hraft "github.com/hashicorp/raft"
)

// guardedStore is the Raft log and stable store (raft-wal) with a close
// that hashicorp/raft cannot trip over. Raft handles heartbeats on the
// transport's goroutines, which Shutdown does not wait for, and it panics
// when a write fails: a heartbeat in progress while the node closes would
// crash the process on the closed database. So Close waits for the calls
// in progress, and a call that comes after it never returns: it answers
// nothing (no leader counts an entry this node did not store), and its
// goroutine ends with the process.
type guardedStore struct {
	s      logStableStore
	mu     sync.RWMutex
	closed bool
	// appendErr is the error of the last StoreLogs, nil if it succeeded.
	appendErr atomic.Pointer[error]
}

// logStableStore is what guardedStore guards: raft-wal (walStore).
type logStableStore interface {
	hraft.LogStore
	hraft.StableStore
	Close() error
}

var (
	_ logStableStore          = (*walStore)(nil)
	_ hraft.LogStore          = (*guardedStore)(nil)
	_ hraft.StableStore       = (*guardedStore)(nil)
	_ hraft.MonotonicLogStore = (*guardedStore)(nil)
)

// IsMonotonic tells hashicorp/raft whether the store takes only entries
// that follow its last one (raft-wal does): after installing a snapshot,
// Raft then empties the log instead of leaving a gap before the entries
// that follow the snapshot. (hraft.LogCache asks the store it wraps.)
func (g *guardedStore) IsMonotonic() bool {
	m, ok := g.s.(hraft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// enter admits a call, or parks it for good once the store is closed.
func (g *guardedStore) enter() {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		parkForever()
	}
}

// parkForever blocks the calling goroutine for good. (Tests that check for
// leaked goroutines ignore it.)
func parkForever() { select {} }

func (g *guardedStore) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return g.s.Close()
}

func (g *guardedStore) FirstIndex() (uint64, error) {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.FirstIndex()
}

func (g *guardedStore) LastIndex() (uint64, error) {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.LastIndex()
}

func (g *guardedStore) GetLog(index uint64, log *hraft.Log) error {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.GetLog(index, log)
}

// errAppend marks a failed append to the Raft log (see
// Node.mapAppendErr).
var errAppend = errors.New("raft log append failed")

// lastAppendErr returns the error of the last append, if it failed.
func (g *guardedStore) lastAppendErr() error {
	if p := g.appendErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (g *guardedStore) StoreLog(log *hraft.Log) error {
	return g.StoreLogs([]*hraft.Log{log})
}

func (g *guardedStore) StoreLogs(logs []*hraft.Log) error {
	g.enter()
	defer g.mu.RUnlock()
	if err := g.s.StoreLogs(logs); err != nil {
		err = fmt.Errorf("%w: %w", errAppend, err)
		g.appendErr.Store(&err)
		return err
	}
	g.appendErr.Store(nil)
	return nil
}

func (g *guardedStore) DeleteRange(min, max uint64) error {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.DeleteRange(min, max)
}

func (g *guardedStore) Set(key, val []byte) error {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.Set(key, val)
}

func (g *guardedStore) Get(key []byte) ([]byte, error) {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.Get(key)
}

func (g *guardedStore) SetUint64(key []byte, val uint64) error {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.SetUint64(key, val)
}

func (g *guardedStore) GetUint64(key []byte) (uint64, error) {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.GetUint64(key)
}
