package raft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/comethq/comet/internal/durable"
	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/migrate"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// The Raft log and stable store is hashicorp/raft-wal, HashiCorp's log for
// hashicorp/raft (Consul's), in DIR/wal: segment files of appended entries
// (one write and one fdatasync per append; see walFS) and a small bbolt
// file for the stable store and the segments' metadata (wal-meta.db).
//
// Data directories of earlier releases hold raft.db and its journal
// instead (legacy.go); openLogStore moves them into raft-wal once, at the
// first start of this release.

// walSegmentSize is the size of each raft-wal segment file: raft-wal's
// default (wal.DefaultSegmentSize). Compaction after a snapshot deletes
// whole segments.
const walSegmentSize = 64 << 20

// walStore is raft-wal over walFS, with checksummed entries (crcCodec),
// that reopens raft-wal when a segment rotation failed.
//
// raft-wal makes the next segment on a goroutine of its own once an
// append fills the tail. If that fails (a full disk: walFS cannot write
// the spare, or bbolt cannot commit the metadata), raft-wal logs "rotate
// error" and refuses every later append with ErrSealed, until it is opened
// again (repairSealedTail and raft-wal's own recovery then finish the
// rotation). So StoreLogs, on ErrSealed, makes sure a spare segment is on
// disk, closes and reopens raft-wal, and tries the append once more: a
// hub whose disk was full takes appends again as soon as there is room,
// without a restart.
type walStore struct {
	dir     string
	segSize int
	noSync  bool
	logger  hclog.Logger
	fs      *walFS
	lock    *os.File // the directory's lock (openLogStore's), or nil

	// mu is held for reading by every call that uses w, and for writing
	// while reopen replaces w and by Close. w is nil after a reopen that
	// failed; the next call tries again.
	mu     sync.RWMutex
	w      *wal.WAL
	closed bool
}

var _ hraft.MonotonicLogStore = (*walStore)(nil)

// openWal opens (or makes) the raft-wal log in dir.
func openWal(dir string, segSize int, noSync bool, logger hclog.Logger) (*walStore, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := checkWalFiles(dir, segSize); err != nil {
		return nil, err
	}
	s := &walStore{dir: dir, segSize: segSize, noSync: noSync, logger: logger,
		fs: newWalFS(dir, uint64(segSize), noSync)}
	if err := repairSealedTail(dir, segSize, s.fs, logger); err != nil {
		s.fs.Close()
		return nil, fmt.Errorf("raft: open raft log %s: %w", dir, err)
	}
	w, err := s.openWAL()
	if errors.Is(err, wal.ErrCorrupt) {
		// checkWalFiles checked the sealed segments' headers: the tail's
		// is damaged (raft-wal's error does not name the file).
		err = fmt.Errorf("raft log segment %s: %w: %w", s.segmentFile(math.MaxUint64), ErrCorruptLog, err)
	}
	if err != nil {
		s.fs.Close()
		return nil, fmt.Errorf("raft: open raft log %s: %w", dir, err)
	}
	s.w = w
	return s, nil
}

// openWAL opens raft-wal over s.fs with crcCodec.
func (s *walStore) openWAL() (*wal.WAL, error) {
	return openRaftWal(s.dir, s.segSize, s.fs, s.logger)
}

func openRaftWal(dir string, segSize int, vfs types.VFS, logger hclog.Logger) (*wal.WAL, error) {
	return wal.Open(dir,
		wal.WithLogger(logger),
		wal.WithSegmentSize(segSize),
		wal.WithCodec(&crcCodec{}),
		wal.WithMetaStore(codecMeta{&metadb.BoltMetaDB{}}),
		wal.WithSegmentFiler(codecFiler{segment.NewFiler(dir, vfs)}))
}

// acquire returns the open raft-wal, held until release is called,
// reopening it first if an earlier reopen failed.
func (s *walStore) acquire() (w *wal.WAL, release func(), err error) {
	for range 2 {
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			return nil, nil, wal.ErrClosed
		}
		if s.w != nil {
			return s.w, s.mu.RUnlock, nil
		}
		s.mu.RUnlock()
		if err := s.reopen(nil); err != nil {
			return nil, nil, err
		}
	}
	return nil, nil, fmt.Errorf("raft: the raft log in %s: %w", s.dir, wal.ErrClosed)
}

// reopen closes raft-wal (old, unless another call replaced it already)
// and opens it again, which finishes a segment rotation that failed. It
// first makes sure a spare segment is on disk (the reopened log may need
// a new segment at once): while it cannot be made (the disk is still
// full), the old log stays open for reads and reopen fails.
func (s *walStore) reopen(old *wal.WAL) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return wal.ErrClosed
	}
	if s.w != old {
		return nil // reopened by another call meanwhile
	}
	if err := s.fs.ensureSpare(); err != nil {
		return err
	}
	if s.w != nil {
		if err := s.w.Close(); err != nil {
			s.logger.Warn("close the raft log to reopen it", "dir", s.dir, "err", err)
		}
		s.w = nil
	}
	rerr := repairSealedTail(s.dir, s.segSize, s.fs, s.logger)
	w, err := s.openWAL()
	if err != nil {
		return fmt.Errorf("raft: reopen the raft log in %s: %w", s.dir, errors.Join(rerr, err))
	}
	s.w = w
	if rerr != nil {
		// Open for reads; the next append finds the tail sealed and tries
		// again.
		return fmt.Errorf("raft: reopen the raft log in %s: %w", s.dir, rerr)
	}
	s.logger.Info("reopened the raft log after a failed segment rotation", "dir", s.dir)
	return nil
}

// StoreLogs appends logs; on ErrSealed (a segment rotation failed), it
// reopens raft-wal and tries once more.
func (s *walStore) StoreLogs(logs []*hraft.Log) error {
	w, release, err := s.acquire()
	if err != nil {
		return err
	}
	err = w.StoreLogs(logs)
	release()
	if !errors.Is(err, wal.ErrSealed) {
		return err
	}
	s.logger.Warn("raft log: the next segment could not be made; reopening the log", "dir", s.dir)
	if err := s.reopen(w); err != nil {
		return fmt.Errorf("raft: append to the raft log in %s: %w", s.dir, err)
	}
	w, release, err = s.acquire()
	if err != nil {
		return err
	}
	defer release()
	return w.StoreLogs(logs)
}

func (s *walStore) StoreLog(l *hraft.Log) error { return s.StoreLogs([]*hraft.Log{l}) }

// GetLog reads entry index; a damaged entry gives an error wrapping
// ErrCorruptLog and naming the segment file.
func (s *walStore) GetLog(index uint64, l *hraft.Log) error {
	w, release, err := s.acquire()
	if err != nil {
		return err
	}
	err = w.GetLog(index, l)
	release()
	if err == nil || errors.Is(err, wal.ErrNotFound) || errors.Is(err, wal.ErrClosed) {
		return err // hashicorp/raft compares ErrLogNotFound with ==
	}
	if !errors.Is(err, ErrCorruptLog) && (errors.Is(err, wal.ErrCorrupt) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		err = fmt.Errorf("%w: %w", ErrCorruptLog, err)
	}
	return fmt.Errorf("raft: entry %d of the raft log (%s): %w", index, s.segmentFile(index), err)
}

// segmentFile names the segment file that holds entry index (by the
// files' names: raft-wal names them by their first index), or the log's
// directory if none does.
func (s *walStore) segmentFile(index uint64) string {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return s.dir
	}
	best, bestBase := s.dir, uint64(0)
	for _, e := range ents {
		var base, id uint64
		if n, _ := fmt.Sscanf(e.Name(), "%020d-%016x.wal", &base, &id); n != 2 {
			continue
		}
		if base <= index && base >= bestBase {
			best, bestBase = filepath.Join(s.dir, e.Name()), base
		}
	}
	return best
}

func (s *walStore) FirstIndex() (uint64, error) {
	w, release, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer release()
	return w.FirstIndex()
}

func (s *walStore) LastIndex() (uint64, error) {
	w, release, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer release()
	return w.LastIndex()
}

func (s *walStore) DeleteRange(min, max uint64) error {
	w, release, err := s.acquire()
	if err != nil {
		return err
	}
	defer release()
	return w.DeleteRange(min, max)
}

func (s *walStore) Set(key, val []byte) error {
	w, release, err := s.acquire()
	if err != nil {
		return err
	}
	defer release()
	return w.Set(key, val)
}

func (s *walStore) Get(key []byte) ([]byte, error) {
	w, release, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	return w.Get(key)
}

func (s *walStore) SetUint64(key []byte, val uint64) error {
	w, release, err := s.acquire()
	if err != nil {
		return err
	}
	defer release()
	return w.SetUint64(key, val)
}

func (s *walStore) GetUint64(key []byte) (uint64, error) {
	w, release, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer release()
	return w.GetUint64(key)
}

// IsMonotonic: raft-wal takes only entries that follow its last one.
func (s *walStore) IsMonotonic() bool { return true }

// verify reads every entry of the log, so that a damaged one is found at
// start, named, rather than by Raft later (which panics on it: see
// docs/operations.md). It costs one read of the log; the log holds at most
// about TrailingLogs + SnapshotThreshold entries.
func (s *walStore) verify() error {
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	var l hraft.Log
	for i := first; i <= last && last != 0; i++ {
		if err := s.GetLog(i, &l); err != nil {
			if errors.Is(err, wal.ErrNotFound) {
				err = fmt.Errorf("raft: entry %d of the raft log (%s) is missing: %w", i, s.segmentFile(i), ErrCorruptLog)
			}
			return err
		}
		if l.Index != i {
			return fmt.Errorf("raft: entry %d of the raft log (%s) holds entry %d: %w", i, s.segmentFile(i), l.Index, ErrCorruptLog)
		}
	}
	return nil
}

// repairSealedTail finishes a segment rotation that raft-wal left half
// done.
//
// raft-wal (v0.4.2, and its main branch as of December 2026) seals a full
// segment within the append that fills it, writing its index into the
// file, and records the seal in its metadata afterwards, on a goroutine of
// its own. A process that stops between the two (kill -9, a power cut, or
// a Close that wins the race for the write lock) leaves a tail segment
// that is sealed on disk but not in the metadata. wal.Open then takes it
// as the tail to append to, and every append fails with ErrSealed, for
// good: the hub could never store an entry again. (Found by
// TestLogStoreModel; TestLogStoreSealedTail shows it.)
//
// So before wal.Open, if the metadata's tail segment is sealed on disk,
// repairSealedTail records the seal and a new, empty tail after it, just
// as raft-wal's rotation would have; wal.Open makes the new tail's file.
func repairSealedTail(dir string, segSize int, vfs types.VFS, logger hclog.Logger) error {
	meta := &metadb.BoltMetaDB{}
	state, err := meta.Load(dir)
	if err != nil {
		return err
	}
	defer meta.Close()
	if len(state.Segments) == 0 {
		return nil
	}
	tail := state.Segments[len(state.Segments)-1]
	if !tail.SealTime.IsZero() {
		return nil
	}
	sw, err := codecFiler{segment.NewFiler(dir, vfs)}.RecoverTail(tail)
	if errors.Is(err, os.ErrNotExist) {
		return nil // wal.Open makes it
	}
	if err != nil {
		return err
	}
	sealed, indexStart, err := sw.Sealed()
	last := sw.LastIndex()
	sw.Close()
	if err != nil || !sealed {
		return err
	}
	now := time.Now()
	tail.SealTime, tail.MaxIndex, tail.IndexStart = now, last, indexStart
	state.Segments[len(state.Segments)-1] = tail
	state.Segments = append(state.Segments, types.SegmentInfo{
		ID:         state.NextSegmentID,
		BaseIndex:  last + 1,
		MinIndex:   last + 1,
		SizeLimit:  uint32(segSize),
		Codec:      crcCodecID,
		CreateTime: now,
	})
	state.NextSegmentID++
	if err := meta.CommitState(state); err != nil {
		return err
	}
	logger.Warn("finished a segment rotation a stop interrupted", "segment", tail.ID, "last", last)
	return nil
}

// lockDir takes an exclusive lock on dir/LOCK, held until the file is
// closed (or the process ends). raft-wal opens its bbolt file without a
// time-out, so a second process on the same directory would otherwise
// wait for good instead of saying why it cannot start.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raft: lock %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("raft: %s is locked by another process (is another hub running on this data directory?)", dir)
		}
		return nil, fmt.Errorf("raft: lock %s: %w", path, err)
	}
	return f, nil
}

// Close closes the log, then its file system, then drops the lock.
func (s *walStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.w != nil {
		err = s.w.Close()
	}
	s.fs.Close()
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}

// openLogStore opens the Raft log and stable store of a hub whose Raft
// directory is dir, first moving an earlier release's into raft-wal.
func openLogStore(dir string, segSize int, noSync bool, logger hclog.Logger) (*walStore, error) {
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft: data directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := migrateLegacy(dir, segSize, noSync, logger); err != nil {
		lock.Close()
		return nil, err
	}
	s, err := openWal(filepath.Join(dir, "wal"), segSize, noSync, logger)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	if err := s.verify(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// migrateLegacy moves the log and stable store of an earlier release
// (raft.db and its journal files) into raft-wal in dir/wal, if dir has
// them, and then removes them. It copies into dir/wal.tmp and renames that
// to dir/wal when the copy is whole and checked, so a crash at any point
// leaves either the old files (and the move starts again) or a whole
// dir/wal (and only the removal of the old files is left).
func migrateLegacy(dir string, segSize int, noSync bool, logger hclog.Logger) error {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	oldPath := filepath.Join(dir, "raft.db")
	if _, err := os.Stat(oldPath); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	walDir, tmpDir := filepath.Join(dir, "wal"), filepath.Join(dir, "wal.tmp")
	if _, err := os.Stat(walDir); err == nil {
		return removeLegacy(dir) // the move was done; its clean-up was not
	}
	if err := os.RemoveAll(tmpDir); err != nil {
		return fmt.Errorf("raft: remove an unfinished move of the log: %w", err)
	}
	old, err := openBoltLog(oldPath, noSync)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	defer old.Close()
	if err := replayJournal(old, dir); err != nil {
		return fmt.Errorf("raft: the log of %s: %w", dir, err)
	}
	w, err := openWal(tmpDir, segSize, noSync, logger)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	first, last, err := copyLog(w, old)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("raft: move the log of %s into raft-wal: %w", dir, err)
	}
	if err := os.Rename(tmpDir, walDir); err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	logger.Info("moved the raft log into raft-wal", "dir", walDir, "first", first, "last", last)
	old.Close()
	return removeLegacy(dir)
}

// copyLog copies every entry and Raft's term and vote from old into w,
// and checks the copy.
func copyLog(w *walStore, old *boltLog) (first, last uint64, err error) {
	ctx := context.Background()
	if first, err = old.FirstIndex(); err != nil {
		return 0, 0, err
	}
	if last, err = old.LastIndex(); err != nil {
		return 0, 0, err
	}
	if last != 0 {
		if err := migrate.CopyLogs(ctx, w, old, 4<<20, nil); err != nil {
			return 0, 0, err
		}
	}
	// Raft's keys: its term and vote. (migrate.CopyStable fails on a key
	// that is not there, as on a hub that never voted.)
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		v, err := old.GetUint64([]byte(k))
		if errors.Is(err, errKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		if err := w.SetUint64([]byte(k), v); err != nil {
			return 0, 0, err
		}
	}
	if v, err := old.Get([]byte("LastVoteCand")); err == nil && len(v) > 0 {
		if err := w.Set([]byte("LastVoteCand"), v); err != nil {
			return 0, 0, err
		}
	} else if err != nil && !errors.Is(err, errKeyNotFound) {
		return 0, 0, err
	}
	wf, err := w.FirstIndex()
	if err != nil {
		return 0, 0, err
	}
	wl, err := w.LastIndex()
	if err != nil {
		return 0, 0, err
	}
	if wf != first || wl != last {
		return 0, 0, fmt.Errorf("copied entries %d-%d, want %d-%d", wf, wl, first, last)
	}
	return first, last, nil
}

// removeLegacy removes the old log store's files from dir.
func removeLegacy(dir string) error {
	for _, name := range legacyFiles {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("raft: remove the old log: %w", err)
		}
	}
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	return nil
}
