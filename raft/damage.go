package raft

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
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
//   - a tail segment whose entries stop early, before later whole
//     batches (a zeroed page): see checkTailSegment.
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
		} else if i == len(state.Segments)-1 {
			if err := checkTailSegment(path); err != nil {
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
	err = faultsAsErrors(func() error {
		var err error
		state, err = readWalMetaUnguarded(path, size)
		return err
	})
	return state, err
}

// faultsAsErrors runs fn on a goroutine of its own with
// debug.SetPanicOnFault, so that a fault reading a memory-mapped file
// (SIGBUS) or a panic becomes an error.
func faultsAsErrors(fn func() error) (err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("unreadable: %v", r)
			}
		}()
		err = fn()
	}()
	<-done
	return err
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

// raft-wal's frame types (segment/format.go).
const (
	frameEntry  = 1
	frameIndex  = 2
	frameCommit = 3
)

// checkTailSegment checks the tail segment file at path for damage that
// raft-wal's recovery takes for an append cut short by a crash.
//
// raft-wal (segment/writer.go, recoverTail) reads the tail's frames from
// the start until it meets zeros or a frame header it cannot decode, and
// checks the CRC of the last batch it found only: whatever follows is
// taken for the torn last append and dropped, silently. Yet an append
// waits for the one before it to be synced, so only the last batch can be
// torn: a whole batch after the end raft-wal recovers (a commit frame
// whose CRC matches the frames between it and the commit frame before it)
// means that acknowledged entries before it were damaged (a zeroed page,
// a flipped byte in a frame header). walFS writes segments full of zeros,
// so past the true end there is nothing but zeros (or what is left of a
// torn batch, never a whole one).
//
// It reads the file once, through a memory map (a segment is at most
// walSegmentSize), and its work is bounded by a few times the file's
// size.
func checkTailSegment(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a tail not made yet: raft-wal makes it
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() <= segmentHeaderLen || fi.Size() > math.MaxUint32 {
		return nil // checkWalFiles checks the size against the metadata's
	}
	data, unmap, err := mapFile(f, int(fi.Size()))
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	defer unmap()
	return faultsAsErrors(func() error {
		end := recoveredEnd(data)
		if at, ok := wholeBatchAfter(data, end); ok {
			return fmt.Errorf("its entries stop at byte %d (damaged there), yet a whole batch of entries follows (its commit at byte %d)", end, at)
		}
		return nil
	})
}

// segmentHeaderLen is the length of a raft-wal segment's file header; its
// first frame follows it.
const segmentHeaderLen = 32

// frameAt decodes the frame header at off in data as raft-wal's
// readThroughSegment does: ok is false at zeros, at a header it cannot
// decode, and past the end of data.
func frameAt(data []byte, off int) (typ byte, length uint32, ok bool) {
	if off < 0 || off+8 > len(data) {
		return 0, 0, false
	}
	h := data[off : off+8]
	if h[1]|h[2]|h[3] != 0 {
		return 0, 0, false
	}
	switch h[0] {
	case frameEntry, frameIndex, frameCommit:
		return h[0], binary.LittleEndian.Uint32(h[4:]), true
	}
	return 0, 0, false
}

// frameSize is the size on disk of a frame of typ with length: raft-wal
// pads a payload to 8 bytes; a commit frame is its header alone (its
// length field holds the CRC).
func frameSize(typ byte, length uint32) int {
	if typ == frameCommit {
		return 8
	}
	return 8 + int(length) + int((8-length%8)%8)
}

// batchCRC is the CRC-32C of the bytes data[from:commit], to compare with
// the CRC in the commit frame at commit.
func batchCRC(data []byte, from, commit int) (got, want uint32) {
	return crc32.Checksum(data[from:commit], crcTable), binary.LittleEndian.Uint32(data[commit+4:])
}

// recoveredEnd returns the offset in the tail segment data up to which
// raft-wal's recovery (segment/writer.go, recoverTail) keeps the frames:
// just past the last commit frame of a whole batch, or 0 if none.
func recoveredEnd(data []byte) int {
	prev, final := -1, -1 // the last two commit frames' offsets
	entriesAfter := false // entry frames after the final commit
	for off := segmentHeaderLen; ; {
		typ, length, ok := frameAt(data, off)
		if !ok {
			break
		}
		switch typ {
		case frameEntry:
			entriesAfter = true
		case frameCommit:
			prev, final, entriesAfter = final, off, false
		}
		off += frameSize(typ, length)
	}
	switch {
	case final < 0:
		return 0
	case entriesAfter:
		// A later batch was torn, so this commit was synced: raft-wal
		// keeps it unchecked.
		return final + 8
	}
	from := 0 // the first batch's CRC covers the file header
	if prev >= 0 {
		from = prev + 8
	}
	if got, want := batchCRC(data, from, final); got == want {
		return final + 8
	}
	if prev < 0 {
		return 0
	}
	return prev + 8
}

// wholeBatchAfter looks past end in the tail segment data for a whole
// batch: a frame that decodes as a commit frame, then entry or index
// frames, then a commit frame whose CRC matches them. (The first batch
// after damage cannot be checked: where it starts is lost.) It returns
// the offset of that batch's commit frame.
//
// Every 8-byte aligned offset after end is tried as the first commit
// frame, as damage does not leave a frame boundary to resume from. Its
// work is bounded: a walk from a false start (a payload that happens to
// look like a commit frame) mostly stops at once, and once the frames
// walked and bytes summed reach twice the size of data it gives up (none
// found).
func wholeBatchAfter(data []byte, end int) (int, bool) {
	budget := 2 * len(data)
	start := max(end, segmentHeaderLen)
	start += (8 - start%8) % 8
	for c := start; c+8 <= len(data) && budget > 0; c += 8 {
		if data[c] != frameCommit || data[c+1]|data[c+2]|data[c+3] != 0 {
			continue
		}
		frames := 0
		for off := c + 8; budget > 0; frames++ {
			budget -= 8
			typ, length, ok := frameAt(data, off)
			if !ok || off+frameSize(typ, length) > len(data) {
				break
			}
			if typ == frameCommit {
				if frames == 0 {
					break // raft-wal writes no empty batch
				}
				budget -= off - (c + 8)
				if got, want := batchCRC(data, c+8, off); got == want {
					return off, true
				}
				break
			}
			off += frameSize(typ, length)
		}
	}
	return 0, false
}
