package raft

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	bolt "go.etcd.io/bbolt"
)

// checkWalFiles checks the files of the raft-wal log in dir before
// raft-wal opens them, so that a damaged one is named in an error rather
// than crashing the process or being mistaken for a new log:
//
//   - wal-meta.db cut short: bbolt maps the file and would read past its
//     end (SIGBUS); cut to nothing, bbolt would make a new, empty one and
//     raft-wal would then delete every segment as unused.
//   - wal-meta.db missing while segment files are there: the same.
//   - wal-meta.db that bbolt cannot read (zeroed or overwritten pages).
//   - a segment file shorter than its size: walFS writes every segment
//     whole when it makes it, so a shorter one was cut short.
//
// Entries are checked by their checksums when read (crcCodec), and all of
// them once at start (walStore.verify).
func checkWalFiles(dir string, segSize int) error {
	metaPath := filepath.Join(dir, metadb.FileName)
	segs, err := segmentFiles(dir)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	fi, err := os.Stat(metaPath)
	if errors.Is(err, os.ErrNotExist) {
		if len(segs) > 0 {
			return fmt.Errorf("raft: %s is missing but %s holds %d raft log segments: %w", metaPath, dir, len(segs), ErrCorruptLog)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("raft: %s is empty (cut short?): %w", metaPath, ErrCorruptLog)
	}
	state, err := readWalMeta(metaPath, fi.Size())
	if err != nil {
		return fmt.Errorf("raft: %s: %w: %w", metaPath, ErrCorruptLog, err)
	}
	for i, si := range state.Segments {
		path := filepath.Join(dir, segment.FileName(si))
		fi, err := os.Stat(path)
		if errors.Is(err, os.ErrNotExist) && i == len(state.Segments)-1 && si.SealTime.IsZero() {
			continue // a tail not made yet: raft-wal makes it
		}
		if err != nil {
			return fmt.Errorf("raft: raft log segment %s: %w: %w", path, ErrCorruptLog, err)
		}
		if fi.Size() < int64(si.SizeLimit) {
			return fmt.Errorf("raft: raft log segment %s is cut short (%d bytes, made %d): %w", path, fi.Size(), si.SizeLimit, ErrCorruptLog)
		}
		if !si.SealTime.IsZero() {
			// raft-wal checks a sealed segment's header when it opens it,
			// but its error does not say which file.
			if err := checkSegmentHeader(path, si); err != nil {
				return fmt.Errorf("raft: raft log segment %s: %w: %w", path, ErrCorruptLog, err)
			}
		}
	}
	return nil
}

// segmentMagic is raft-wal's segment file magic number (segment/format.go,
// with the reserved bytes and version, all zero, after it).
const segmentMagic = 0x58eb6b0d

// checkSegmentHeader checks the header of the segment file at path
// against its metadata, as raft-wal's segment.Filer.Open does.
func checkSegmentHeader(path string, si types.SegmentInfo) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr [32]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return err
	}
	si = withCodecID(si)
	switch {
	case binary.LittleEndian.Uint64(hdr[0:]) != segmentMagic:
		return errors.New("bad header (not a raft-wal segment, or zeroed)")
	case binary.LittleEndian.Uint64(hdr[8:]) != si.BaseIndex,
		binary.LittleEndian.Uint64(hdr[16:]) != si.ID,
		binary.LittleEndian.Uint64(hdr[24:]) != si.Codec:
		return fmt.Errorf("header (base %d, id %d, codec %d) does not match the metadata (base %d, id %d, codec %d)",
			binary.LittleEndian.Uint64(hdr[8:]), binary.LittleEndian.Uint64(hdr[16:]), binary.LittleEndian.Uint64(hdr[24:]),
			si.BaseIndex, si.ID, si.Codec)
	}
	return nil
}

// segmentFiles lists the raft-wal segment files in dir.
func segmentFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".wal") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// readWalMeta reads raft-wal's metadata from wal-meta.db (path, of size
// bytes), read-only, reading every page of the bbolt file on the way. bbolt reads
// through a memory map, so a page it expects past the end of a file cut
// short would raise SIGBUS, which kills the process: the file's size is
// checked against bbolt's own high-water mark first, and the reads run on
// a goroutine with debug.SetPanicOnFault, so that a fault anywhere else
// becomes an error too (as does a panic of bbolt on a damaged page).
func readWalMeta(path string, size int64) (state types.PersistentState, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("unreadable: %v", r)
			}
		}()
		state, err = readWalMetaUnguarded(path, size)
	}()
	<-done
	return state, err
}

func readWalMetaUnguarded(path string, size int64) (types.PersistentState, error) {
	var state types.PersistentState
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return state, err
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if hw := tx.Size(); hw > size {
			return fmt.Errorf("cut short: %d bytes, its pages reach %d", size, hw)
		}
		// Read every key and value: every page the file holds. (Not
		// tx.Check: it reads on a goroutine of its own, where a fault
		// would not be recovered.)
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				_ = bytes.Clone(v) // touch its pages
				return nil
			})
		}); err != nil {
			return err
		}
		b := tx.Bucket([]byte(metadb.MetaBucket))
		if b == nil {
			return errors.New("no raft-wal metadata in it")
		}
		if raw := b.Get([]byte(metadb.MetaKey)); raw != nil {
			if err := json.Unmarshal(raw, &state); err != nil {
				return fmt.Errorf("raft-wal metadata: %w", err)
			}
		}
		return nil
	})
	return state, err
}
