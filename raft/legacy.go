package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	hraft "github.com/hashicorp/raft"
)

// The Raft log of releases before raft-wal: bbolt (raft.db, boltLog) with a
// write-ahead journal in front of it, two files used in turn (journal-0,
// journal-1). This file reads it, so that migrateLegacy can move it into
// raft-wal; nothing writes it any more.
//
// A journal file holds records of whole batches of entries. Each record
// carries its file's generation, which rose with each use of a file, and a
// CRC-32C of the generation and its contents. raft.db keeps the generation
// up to which every record is in bbolt (absorbed); the records newer than
// that are the entries a crash left only in the journal, and are replayed
// into raft.db, in generation order, before the move.

const (
	journalHeader = 16 // payload length (4), CRC-32C (4), generation (8)
	absorbedKey   = "comet_journal_absorbed"
	// maxJournalFile bounds what is read of a journal file: the release
	// that wrote them made them 2 MiB.
	maxJournalFile = 2 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// legacyFiles are the files of the old log store in a Raft directory.
var legacyFiles = []string{"raft.db", "journal-0", "journal-1"}

// replayJournal writes into db the entries that the journal files in dir
// hold and db does not (absorbed is older), and records them absorbed.
func replayJournal(db *boltLog, dir string) error {
	absorbed, err := db.GetUint64([]byte(absorbedKey))
	if err != nil && !errors.Is(err, errKeyNotFound) {
		return fmt.Errorf("read journal state: %w", err)
	}
	type use struct {
		gen  uint64
		logs []*hraft.Log
	}
	var uses []use
	for i := range 2 {
		path := filepath.Join(dir, fmt.Sprintf("journal-%d", i))
		buf, err := readJournalFile(path)
		if err != nil {
			return err
		}
		gen, batches, err := readJournal(buf, absorbed)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if gen > absorbed && len(batches) > 0 {
			u := use{gen: gen}
			for _, b := range batches {
				u.logs = append(u.logs, b...)
			}
			uses = append(uses, u)
		}
	}
	// At most both files hold records newer than the checkpoint: the one
	// being checkpointed when the process stopped, then the current one.
	if len(uses) == 2 && uses[1].gen < uses[0].gen {
		uses[0], uses[1] = uses[1], uses[0]
	}
	top := absorbed
	var logs []*hraft.Log
	for _, u := range uses {
		logs = append(logs, u.logs...)
		top = max(top, u.gen)
	}
	if len(logs) > 0 {
		if err := checkFollows(db, logs); err != nil {
			return err
		}
		if err := db.StoreLogs(logs); err != nil {
			return fmt.Errorf("replay the journal into the log: %w", err)
		}
	}
	if top != absorbed {
		if err := db.SetUint64([]byte(absorbedKey), top); err != nil {
			return fmt.Errorf("write journal state: %w", err)
		}
	}
	return nil
}

// readJournalFile reads a journal file whole; a missing one is empty.
func readJournalFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxJournalFile))
	if err != nil {
		return nil, fmt.Errorf("read journal %s: %w", path, err)
	}
	return buf, nil
}

// checkFollows checks that replayed entries are contiguous and continue
// (or overlap the end of) the log in bbolt.
func checkFollows(db *boltLog, logs []*hraft.Log) error {
	for i := 1; i < len(logs); i++ {
		if logs[i].Index != logs[i-1].Index+1 {
			return fmt.Errorf("raft: journal holds entry %d after %d: not contiguous", logs[i].Index, logs[i-1].Index)
		}
	}
	last, err := db.LastIndex()
	if err != nil {
		return err
	}
	if last != 0 && logs[0].Index > last+1 {
		return fmt.Errorf("raft: journal starts at entry %d but the log ends at %d", logs[0].Index, last)
	}
	return nil
}

// readJournal reads the records of one use of a journal file, buf: from the
// start, while they are whole and of the first record's generation. The
// first record that is not ends it: the append a crash interrupted, or the
// records of an earlier use. Appends wait for each other's fdatasync, so
// only the last record can be torn: a whole record after a bad one, of the
// same generation or of one whose records are not all in bbolt yet (newer
// than absorbed), means the file is damaged, and readJournal fails rather
// than drop entries that were acknowledged. That holds for a bad first
// record too: the file's other records are then of earlier uses, all
// absorbed.
//
// Records not yet absorbed are of generation absorbed+1 or absorbed+2: a
// checkpoint records its generation before the next file fills (appends
// wait for it), and Open absorbs everything it replays.
func readJournal(buf []byte, absorbed uint64) (uint64, [][]*hraft.Log, error) {
	var (
		gen     uint64
		batches [][]*hraft.Log
		off     int
	)
	for {
		g, body, ok := journalRecordAt(buf, off, gen)
		if !ok {
			break
		}
		logs, err := decodeJournalBatch(body)
		if err != nil {
			// The CRC matched: these are bytes this code wrote.
			return 0, nil, fmt.Errorf("record at %d: %w", off, err)
		}
		gen = g
		batches = append(batches, logs)
		off += journalHeader + len(body)
	}
	for at := off + 1; at+journalHeader <= len(buf); at++ {
		g := binary.LittleEndian.Uint64(buf[at+8:])
		if g == 0 || (g != gen && (g <= absorbed || g > absorbed+2)) {
			continue // cheap: no CRC of records that could not matter
		}
		if _, _, ok := journalRecordAt(buf, at, g); ok {
			return 0, nil, fmt.Errorf("damaged: the record at %d is unreadable but a later one at %d (generation %d) is whole", off, at, g)
		}
	}
	return gen, batches, nil
}

// journalRecordAt returns the generation and payload of the whole record
// at off in buf, of generation gen unless gen is 0.
func journalRecordAt(buf []byte, off int, gen uint64) (uint64, []byte, bool) {
	if off+journalHeader > len(buf) {
		return 0, nil, false
	}
	hdr := buf[off : off+journalHeader]
	n := int(binary.LittleEndian.Uint32(hdr[0:]))
	g := binary.LittleEndian.Uint64(hdr[8:])
	if n == 0 || g == 0 || (gen != 0 && g != gen) || n > len(buf)-off-journalHeader {
		return 0, nil, false
	}
	body := buf[off+journalHeader : off+journalHeader+n]
	if journalSum(hdr[8:16], body) != binary.LittleEndian.Uint32(hdr[4:]) {
		return 0, nil, false
	}
	return g, body, true
}

// journalSum is the CRC-32C of a record's generation and payload.
func journalSum(gen, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(gen, crcTable), crcTable, payload)
}

func decodeJournalBatch(b []byte) ([]*hraft.Log, error) {
	if len(b) < 4 {
		return nil, errShortEntry
	}
	n := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if n == 0 || n > len(b)/33 {
		return nil, fmt.Errorf("bad entry count %d", n)
	}
	logs := make([]*hraft.Log, n)
	for i := range logs {
		l, rest, err := decodeLogEntry(b)
		if err != nil {
			return nil, err
		}
		logs[i], b = &l, rest
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the entries", len(b))
	}
	return logs, nil
}
