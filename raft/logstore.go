package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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

// walStore is raft-wal over walFS.
type walStore struct {
	*wal.WAL
	fs   *walFS
	lock *os.File // the directory's lock (openLogStore's), or nil
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
	wfs := newWalFS(dir, uint64(segSize), noSync)
	if err := repairSealedTail(dir, segSize, wfs, logger); err != nil {
		wfs.Close()
		return nil, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	w, err := wal.Open(dir,
		wal.WithLogger(logger),
		wal.WithSegmentSize(segSize),
		wal.WithSegmentFiler(segment.NewFiler(dir, wfs)))
	if err != nil {
		wfs.Close()
		return nil, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	return &walStore{WAL: w, fs: wfs}, nil
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
	sw, err := segment.NewFiler(dir, vfs).RecoverTail(tail)
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
		Codec:      wal.CodecBinaryV1,
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("raft: %s is locked by another process (is another hub running on this data directory?)", dir)
		}
		return nil, fmt.Errorf("raft: lock %s: %w", path, err)
	}
	return f, nil
}

// Close closes the log, then its file system, then drops the lock.
func (s *walStore) Close() error {
	err := s.WAL.Close()
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

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
