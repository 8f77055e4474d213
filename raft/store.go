package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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

	// Writes of the term and vote that wait for disk space (see
	// SetUint64): logger says so, stop ends the wait, stableErr is the
	// error while one waits.
	logger    *slog.Logger
	stopOnce  sync.Once
	stopCh    chan struct{}
	stableErr atomic.Pointer[error]
	// failStable makes the next failStable term or vote writes fail with
	// failErr, before they reach the store (for tests).
	fmu        sync.Mutex
	failStable int
	failErr    error
}

func newGuardedStore(s logStableStore, logger *slog.Logger) *guardedStore {
	return &guardedStore{s: s, logger: logger, stopCh: make(chan struct{})}
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

// lastAppendErr returns the error of the last append, if it failed, or
// of a write of the term or vote that waits for disk space.
func (g *guardedStore) lastAppendErr() error {
	if p := g.appendErr.Load(); p != nil {
		return *p
	}
	if p := g.stableErr.Load(); p != nil {
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
	return g.writeStable(string(key), func() error { return g.s.Set(key, val) })
}

func (g *guardedStore) Get(key []byte) ([]byte, error) {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.Get(key)
}

// SetUint64 stores the current term (hashicorp/raft panics when that
// fails) or the term of the last vote.
func (g *guardedStore) SetUint64(key []byte, val uint64) error {
	return g.writeStable(string(key), func() error { return g.s.SetUint64(key, val) })
}

func (g *guardedStore) GetUint64(key []byte) (uint64, error) {
	g.enter()
	defer g.mu.RUnlock()
	return g.s.GetUint64(key)
}

// Backoff of a term or vote write that waits for disk space.
var (
	stableRetryMin = 10 * time.Millisecond
	stableRetryMax = 2 * time.Second
)

// writeStable runs write, a write of the term or vote, and when it fails
// for want of disk space tries it again with a backoff until it succeeds.
// hashicorp/raft panics when it cannot store a new term, which on a full
// disk would crash the hub at the next election or at the first heartbeat
// of a new leader. Meanwhile the write's caller waits: a follower neither
// answers nor votes, a candidate asks for no votes, and LogFault says why
// (the hub is not ready). The term is never taken as stored before it is.
// Only stop (Node.Close) ends the wait: the write then fails, which
// hashicorp/raft turns into a panic, so a hub stopped while its disk is
// full and its term is changing exits with a trace naming the error.
// Other failures are returned at once.
func (g *guardedStore) writeStable(key string, write func() error) error {
	wait := stableRetryMin
	var since time.Time
	for tries := 0; ; tries++ {
		err := g.injectedStable()
		if err == nil {
			g.enter()
			err = write()
			g.mu.RUnlock()
		}
		if err == nil || !isNoSpace(err) {
			if tries > 0 && err == nil {
				g.stableErr.Store(nil)
				g.logf(slog.LevelInfo, "stored the raft term after disk space returned", "key", key,
					"waited", time.Since(since).Round(time.Millisecond), "tries", tries+1)
			}
			return err
		}
		if tries == 0 {
			since = time.Now()
			werr := fmt.Errorf("raft: cannot store the raft %s: %w", key, err)
			g.stableErr.Store(&werr)
			g.logf(slog.LevelError, "cannot store the raft term or vote: no space left on device; waiting for space, not ready", "key", key, "err", err)
		}
		select {
		case <-g.stopCh:
			return fmt.Errorf("raft: the node closed while storing its %s waited for disk space: %w", key, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, stableRetryMax)
	}
}

// stop ends the waits of writeStable (Node.Close).
func (g *guardedStore) stop() { g.stopOnce.Do(func() { close(g.stopCh) }) }

func (g *guardedStore) logf(level slog.Level, msg string, args ...any) {
	if g.logger != nil {
		g.logger.Log(context.Background(), level, msg, args...)
	}
}

// failStableWrites makes the next n term or vote writes fail with err (for
// tests).
func (g *guardedStore) failStableWrites(n int, err error) {
	g.fmu.Lock()
	defer g.fmu.Unlock()
	g.failStable, g.failErr = n, err
}

func (g *guardedStore) injectedStable() error {
	g.fmu.Lock()
	defer g.fmu.Unlock()
	if g.failStable <= 0 {
		return nil
	}
	g.failStable--
	return g.failErr
}

// isNoSpace reports whether err is for want of disk space (ENOSPC, or a
// quota: EDQUOT).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}
