// Package durable makes changes to directories survive a power loss.
//
// Creating, renaming or removing a file changes its directory, and fsync of
// the file does not make that change durable: only an fsync of the
// directory does. A file created at a hub's first start (the Raft log with
// the node's term and vote, channels.db) and fsynced at every commit can
// still vanish in a power cut if its directory was never synced. The
// same holds for a directory and its parent.
//
// # Caveats
//
// Directories are not synced on Windows, where they cannot be opened for
// it. An entry made by an earlier process (a data directory created by a
// run that then crashed before syncing its parent) is not synced again.
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
)

// SyncDir fsyncs the directory dir, making the entries created, renamed or
// removed in it so far durable.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	observe(dir)
	return nil
}

// MkdirAll is os.MkdirAll that also makes the directories it creates
// durable: it fsyncs the parent of each one it created. A directory that
// already exists is left as it is.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	// The directories to create, deepest first.
	var missing []string
	for d := dir; ; {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return &os.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR}
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := SyncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

var (
	observersMu sync.Mutex
	observers   []*func(dir string)
)

// Observe calls f with each directory SyncDir synced (after the fsync) until
// the returned function is called. It is for tests: they check that a
// directory was synced after a file in it was created or renamed.
func Observe(f func(dir string)) (stop func()) {
	observersMu.Lock()
	defer observersMu.Unlock()
	p := &f
	observers = append(observers, p)
	return func() {
		observersMu.Lock()
		defer observersMu.Unlock()
		for i, o := range observers {
			if o == p {
				observers = append(observers[:i], observers[i+1:]...)
				return
			}
		}
	}
}

func observe(dir string) {
	observersMu.Lock()
	defer observersMu.Unlock()
	for _, f := range observers {
		(*f)(dir)
	}
}
