package log

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/comethq/comet/internal/durable"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// ErrNoSpace is returned by Update when its commit failed for want of disk
// space (ENOSPC, or EDQUOT). Nothing of the Update was stored; the same
// Update can be tried again once space is freed. It wraps the error of the
// file system too.
var ErrNoSpace = errors.New("no space left on device")

// noSpace reports whether err is the file system's "no space" (or quota)
// error. bbolt reports a failed growth of its file with the cause formatted
// into the message (%s, not %w), so that one is recognised by its text: the
// one place this package matches a message.
func noSpace(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}

// Fault returns what keeps this log from serving or storing, or nil:
//
//   - damage found in the file (errors.Is(err, ErrCorrupt)), by a read or an
//     Update; it names the file, the channel and the offsets, and stays until
//     Restore replaces the file or the process restarts;
//   - the last Update failed for want of disk space (errors.Is(err,
//     ErrNoSpace)); it clears when an Update commits.
//
// Damage is reported first. A hub is not ready while its log has a fault.
func (l *Log) Fault() error {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	if l.corrupt != nil {
		return l.corrupt
	}
	return l.nospace
}

// noteCorrupt returns err naming the log's file when it is ErrCorrupt, and
// then records it as the log's fault, logging the first one.
func (l *Log) noteCorrupt(err error) error {
	if !errors.Is(err, ErrCorrupt) {
		return err
	}
	err = fmt.Errorf("channel log %s: %w", l.cfg.Path, err)
	l.fmu.Lock()
	first := l.corrupt == nil
	if first {
		l.corrupt = err
	}
	l.fmu.Unlock()
	if first {
		l.logger.Error("channel log is damaged: this hub no longer serves reads of it; see docs/operations.md to rebuild it",
			"path", l.cfg.Path, "err", err)
		if l.rebuildable {
			// The next Open moves the file aside and starts empty.
			if merr := writeMarker(l.cfg.Path, markDamaged); merr != nil {
				l.logger.Error("cannot mark the channel log damaged", "path", markerPath(l.cfg.Path), "err", merr)
			} else {
				l.logger.Error("channel log marked damaged: restart this hub to rebuild it from Raft", "path", l.cfg.Path)
			}
		}
	}
	return err
}

// markDamaged is the content of the marker file (marker.go) of a log in
// which damage was found.
const markDamaged = "damaged"

// damaged reports whether damage was found in the log's file.
func (l *Log) damaged() bool {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	return l.corrupt != nil
}

// restored forgets the damage found in the file that Restore replaced.
func (l *Log) restored() {
	l.fmu.Lock()
	was := l.corrupt != nil
	l.corrupt = nil
	l.fmu.Unlock()
	if !was || !l.rebuildable {
		return
	}
	var err error
	if l.cfg.DeferSync {
		err = writeMarker(l.cfg.Path, "open "+l.boot)
	} else {
		err = os.Remove(markerPath(l.cfg.Path))
	}
	if err != nil {
		l.logger.Error("cannot clear the channel log's damaged mark", "path", markerPath(l.cfg.Path), "err", err)
	}
}

// checkDamaged moves the file at path aside (path.damaged) when it was
// marked damaged by a read, or when its pages are found damaged now
// (checkPages), and reports whether it did. Only for a log whose caller
// rebuilds it (DeferSync).
func (l *Log) checkDamaged(path string) (bool, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	why := ""
	if m, err := os.ReadFile(markerPath(path)); err == nil && string(bytes.TrimSpace(m)) == markDamaged {
		why = "a read found it damaged"
	} else if err := checkPages(path); errors.Is(err, ErrCorrupt) {
		why = err.Error()
	} else if err != nil {
		return false, fmt.Errorf("log: check %s: %w", path, err)
	}
	if why == "" {
		return false, nil
	}
	if err := os.Rename(path, path+".damaged"); err != nil {
		return false, fmt.Errorf("log: move aside %s: %w", path, err)
	}
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		return false, fmt.Errorf("log: move aside %s: %w", path, err)
	}
	if err := os.Remove(markerPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("log: %w", err)
	}
	l.logger.Error("channel log is damaged; moved it aside to rebuild it from Raft",
		"path", path, "moved_to", path+".damaged", "why", why)
	return true, nil
}

// noteUpdate records the outcome of an Update's commit, and returns err
// wrapped in ErrNoSpace when it was for want of space.
func (l *Log) noteUpdate(err error) error {
	ns := noSpace(err)
	if ns {
		err = fmt.Errorf("%w: channel log %s: %w", ErrNoSpace, l.cfg.Path, err)
	}
	l.fmu.Lock()
	defer l.fmu.Unlock()
	switch {
	case ns:
		l.nospace = err
	case err == nil:
		l.nospace = nil
	}
	return err
}

// Path returns the log's file.
func (l *Log) Path() string { return l.cfg.Path }

// FailUpdates makes the next n Updates fail with err after their function
// ran, as a failed commit does: nothing of them is stored. It is for fault
// tests (err is typically syscall.ENOSPC) in this package and those above.
func (l *Log) FailUpdates(n int, err error) {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	l.failN, l.failErr = n, err
}

// injected returns the error FailUpdates set for this Update, if any.
func (l *Log) injected() error {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	if l.failN <= 0 {
		return nil
	}
	l.failN--
	return l.failErr
}

// readView runs fn in a read transaction like view, and turns damage into
// ErrCorrupt naming the file: errors that are ErrCorrupt, and the panics of
// bbolt on damaged pages (bbolt's View rolls its transaction back on a
// panic, so the log stays usable).
func (l *Log) readView(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt: %v", ErrCorrupt, r)
		}
		err = l.noteCorrupt(err)
	}()
	return l.view(fn)
}
