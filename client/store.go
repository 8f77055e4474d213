package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Position is where a client is in a channel: the last offset it saw and
// the epoch that offset belongs to. It resumes at Offset+1.
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// OffsetStore keeps each channel's Position. The client calls Save, from
// its reading goroutine, after every message delivered (and when a
// "subscribed" moves the position), and Load when Subscribe is called
// without From. Implementations must be safe for concurrent use; they
// decide how often they actually write.
type OffsetStore interface {
	// Load returns the position saved for channel, and false if there is
	// none.
	Load(channel string) (Position, bool, error)
	// Save records p as channel's position.
	Save(channel string, p Position) error
}

var (
	_ OffsetStore = (*MemoryStore)(nil)
	_ OffsetStore = (*FileStore)(nil)
)

// MemoryStore is an OffsetStore in memory: positions survive reconnects
// and resubscribes, not the process.
type MemoryStore struct {
	mu  sync.Mutex
	pos map[string]Position
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{pos: map[string]Position{}} }

// Load returns channel's position.
func (m *MemoryStore) Load(channel string) (Position, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pos[channel]
	return p, ok, nil
}

// Save records channel's position.
func (m *MemoryStore) Save(channel string, p Position) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pos[channel] = p
	return nil
}

// FileStoreInterval is the shortest time between two writes of a FileStore:
// saves in between are written together.
const FileStoreInterval = 200 * time.Millisecond

// fileState is the JSON document of a FileStore.
type fileState struct {
	Channels map[string]Position `json:"channels"`
}

// FileStore is an OffsetStore in a JSON file, so that a client resumes
// where it was after a restart. The file is written atomically (a
// temporary file, fsync, rename, fsync of the directory): a crash leaves
// either the previous version or the new one. Saves are coalesced into at
// most one write every FileStoreInterval; Flush and Close write at once.
// After a crash, the positions of the last FileStoreInterval may be lost,
// so those messages are delivered again.
type FileStore struct {
	path string

	mu        sync.Mutex
	pos       map[string]Position
	dirty     bool
	closed    bool
	err       error       // of the last background write, returned by the next call
	timer     *time.Timer // armed for the next background write; nil while none is due
	timers    sync.WaitGroup
	lastWrite time.Time

	wmu    sync.Mutex // serialises writes of the file
	writes int        // files written, for tests
	// beforeRename, when set by tests (under mu), runs between writing the
	// temporary file and renaming it; an error stops the write there, as a
	// crash.
	beforeRename func() error
}

// NewFileStore opens the store at path, loading the positions it holds. A
// missing file is an empty store; it is created at the first write.
// Temporary files left by a crash are removed.
func NewFileStore(path string) (*FileStore, error) {
	s := &FileStore{path: path, pos: map[string]Position{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("state file %s: %w", path, err)
	case len(bytes.TrimSpace(b)) > 0:
		var st fileState
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("state file %s is not a comet state file: %w", path, err)
		}
		if st.Channels != nil {
			s.pos = st.Channels
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), base+".tmp-") {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return s, nil
}

// Path returns the file's path.
func (s *FileStore) Path() string { return s.path }

// Load returns channel's position.
func (s *FileStore) Load(channel string) (Position, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pos[channel]
	return p, ok, nil
}

// Save records channel's position; it is written within
// FileStoreInterval. It returns the error of a failed background write, if
// any, and ErrClosed after Close.
func (s *FileStore) Save(channel string, p Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.pos[channel] = p
	s.dirty = true
	s.schedule()
	err := s.err
	s.err = nil
	return err
}

// schedule arms the timer of the next background write, if none is armed,
// FileStoreInterval after the last write; s.mu is held.
func (s *FileStore) schedule() {
	if s.timer != nil || s.closed {
		return
	}
	s.timers.Add(1)
	s.timer = time.AfterFunc(max(0, FileStoreInterval-time.Since(s.lastWrite)), func() {
		defer s.timers.Done()
		err := s.flush() // a failure is kept in s.err for the next Save
		s.mu.Lock()
		defer s.mu.Unlock()
		s.timer = nil
		if err != nil {
			return // the next Save tries again
		}
		if s.dirty {
			s.schedule() // saved during the write
		}
	})
}

// Flush writes the positions now if any changed since the last write (or
// a background write failed): it returns nil once every saved position is
// in the file.
func (s *FileStore) Flush() error {
	return s.flush()
}

// flush writes what changed. Its outcome is recorded in s.err while the
// write lock is still held, so that a failure of an earlier write is never
// reported after a later write succeeded.
func (s *FileStore) flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	st := fileState{Channels: maps.Clone(s.pos)}
	s.dirty = false
	s.mu.Unlock()
	err := s.write(st)
	s.mu.Lock()
	s.lastWrite = time.Now()
	s.err = err
	if err != nil {
		s.dirty = true
	}
	s.mu.Unlock()
	return err
}

// write replaces the file atomically with st.
func (s *FileStore) write(st fileState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".tmp-*")
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	hook := s.beforeRename
	s.mu.Unlock()
	if hook != nil {
		if err := hook(); err != nil {
			return fmt.Errorf("state file %s: %w", s.path, err) // the temporary file stays, as after a crash
		}
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	s.writes++
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable; not supported everywhere
		d.Close()
	}
	return nil
}

// Close writes what is pending and stops the store: Save then returns
// ErrClosed; Load still works. It is idempotent.
func (s *FileStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true // no timer is armed from now on
	if s.timer != nil && s.timer.Stop() {
		s.timer = nil
		s.timers.Done() // its function will not run
	}
	s.mu.Unlock()
	s.timers.Wait() // a background write under way ends
	return s.Flush()
}
