package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	hraft "github.com/hashicorp/raft"
)

// journalStore is the Raft log and stable store: the log in bbolt
// (boltLog), with a write-ahead journal in front of it for appends.
//
// A bbolt commit costs two fsyncs (its pages, then its meta page) and a
// copy-on-write of the B+tree path it touches; an append to the journal
// costs one write into a file whose blocks are already allocated and one
// fdatasync. Raft waits for the leader's append and then for a follower's
// in series before a publish is acknowledged, so this halves the disk
// waits of every acknowledgement.
//
// The journal is two preallocated files used in turn. Appends go to one
// of them, as records of whole batches; the entries are also kept in
// memory (the tail) for GetLog. When the file is full, appends move to the
// other file, and a checkpoint writes the full file's entries into bbolt in
// one synced transaction and then frees the file. bbolt is the store of
// record: the journal only ever holds the entries appended since the last
// checkpoint.
//
// Every record carries its file's generation, which rises with each use of
// a file, and a CRC-32C of the generation and its contents. bbolt keeps the
// generation up to which every record is in bbolt (absorbed). Open replays
// the records newer than that, in generation order, into bbolt; within a
// file it stops at the first record that is torn (bad length or CRC), which
// can only be the last one, whose append never returned, or that belongs to
// an older use of the file.
//
// Deleting entries that the journal may hold (a follower dropping a
// conflicting tail, or a compaction reaching into the tail) checkpoints the
// whole journal first and then starts a new generation, so a record can
// never bring deleted entries back; a compaction of entries that are all
// in bbolt, before the tail, deletes them there at once.
type journalStore struct {
	db      *boltLog
	noSync  bool
	fileCap int64

	wmu sync.Mutex // serializes appends, deletes, checkpoints of all entries and Close
	buf []byte     // the record being appended (wmu)

	mu       sync.Mutex // guards everything below
	cond     *sync.Cond // signalled when a checkpoint ends
	files    [2]*journalFile
	cur      int // the file appends go to
	tail     []*hraft.Log
	tailBase uint64 // index of tail[0]
	last     uint64 // the last entry appended (wmu); 0 when unknown
	ckpt     bool   // a background checkpoint is running
	// err is sticky: after a failed write, sync or checkpoint the files'
	// state is unknown (a failed fdatasync may have dropped dirty pages),
	// so every later append fails until the process restarts and replays.
	err    error
	closed bool

	// Tests only: a checkpoint waits for hold to close, and calls between
	// after storing its entries in bbolt and before recording it.
	hold    chan struct{}
	between func()
}

type journalFile struct {
	f    *os.File
	gen  uint64 // generation of the records being written; 0: free
	off  int64  // where the next record goes
	ents int    // tail entries held by this file
}

const (
	journalHeader = 16 // payload length (4), CRC-32C (4), generation (8)
	// journalFileCap is the size of each journal file. A checkpoint writes
	// up to this much into bbolt; appends wait only if the other file fills
	// before it ends. Larger checkpoints flush more at once and delay the
	// appends' fdatasyncs behind them: with 256 publishers, p99 was 27-29
	// ms with 2 MiB, 28-34 with 4 MiB, 30-41 with 8 MiB (docs/benchmarks.md).
	journalFileCap = 2 << 20
	absorbedKey    = "comet_journal_absorbed"
	maxJournalBuf  = 1 << 20 // largest record buffer kept between appends
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// openJournal opens the journal files journal-0 and journal-1 in dir in
// front of db, replaying into db the entries a crash left only in them.
// fileCap is the size of each file (journalFileCap unless testing).
func openJournal(db *boltLog, dir string, noSync bool, fileCap int64) (*journalStore, error) {
	j := &journalStore{db: db, noSync: noSync, fileCap: fileCap}
	j.cond = sync.NewCond(&j.mu)
	absorbed, err := db.GetUint64([]byte(absorbedKey))
	if err != nil && !errors.Is(err, errKeyNotFound) {
		return nil, fmt.Errorf("read journal state: %w", err)
	}
	var replay [][]*hraft.Log
	var gens [2]uint64
	for i := range j.files {
		path := filepath.Join(dir, fmt.Sprintf("journal-%d", i))
		f, err := openJournalFile(path, fileCap, noSync)
		if err != nil {
			j.closeFiles()
			return nil, err
		}
		j.files[i] = &journalFile{f: f}
		gen, batches, err := readJournal(f, fileCap, absorbed)
		if err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if gen > absorbed && len(batches) > 0 {
			gens[i] = gen
			replay = append(replay, nil)
			for _, b := range batches {
				replay[len(replay)-1] = append(replay[len(replay)-1], b...)
			}
		}
	}
	// At most both files hold records newer than the checkpoint: the one
	// being checkpointed when the process stopped, then the current one.
	if gens[0] != 0 && gens[1] != 0 && gens[1] < gens[0] {
		replay[0], replay[1] = replay[1], replay[0]
	}
	top := max(absorbed, gens[0], gens[1])
	var logs []*hraft.Log
	for _, r := range replay {
		logs = append(logs, r...)
	}
	if len(logs) > 0 {
		if err := j.checkFollows(logs); err != nil {
			j.closeFiles()
			return nil, err
		}
		if err := db.StoreLogs(logs); err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("replay the journal into the log: %w", err)
		}
	}
	if top != absorbed {
		if err := db.SetUint64([]byte(absorbedKey), top); err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("write journal state: %w", err)
		}
	}
	j.files[0].gen = top + 1
	if j.last, err = db.LastIndex(); err != nil {
		j.closeFiles()
		return nil, fmt.Errorf("read the log: %w", err)
	}
	return j, nil
}

// checkFollows checks that replayed entries are contiguous and continue
// (or overlap the end of) the log in bbolt.
func (j *journalStore) checkFollows(logs []*hraft.Log) error {
	for i := 1; i < len(logs); i++ {
		if logs[i].Index != logs[i-1].Index+1 {
			return fmt.Errorf("raft: journal holds entry %d after %d: not contiguous", logs[i].Index, logs[i-1].Index)
		}
	}
	last, err := j.db.LastIndex()
	if err != nil {
		return err
	}
	if last != 0 && logs[0].Index > last+1 {
		return fmt.Errorf("raft: journal starts at entry %d but the log ends at %d", logs[0].Index, last)
	}
	return nil
}

// openJournalFile opens path, creating it as fileCap zero bytes (written,
// not sparse: an append then changes no file system metadata and its
// fdatasync flushes only the data).
func openJournalFile(path string, fileCap int64, noSync bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if st.Size() >= fileCap {
		return f, nil
	}
	zero := make([]byte, 1<<20)
	for off := st.Size(); off < fileCap; {
		n := min(int64(len(zero)), fileCap-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			f.Close()
			return nil, fmt.Errorf("create journal %s: %w", path, err)
		}
		off += n
	}
	if !noSync {
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("create journal %s: %w", path, err)
		}
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readJournal reads the records of one use of a journal file: from the
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
func readJournal(f *os.File, fileCap int64, absorbed uint64) (uint64, [][]*hraft.Log, error) {
	buf := make([]byte, fileCap)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, err
	}
	buf = buf[:n]
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

// encodeJournalRecord appends to buf the record of logs, to be sealed with
// its generation by sealJournalRecord.
func encodeJournalRecord(buf []byte, logs []*hraft.Log) []byte {
	buf = append(buf, make([]byte, journalHeader)...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(logs)))
	for _, l := range logs {
		buf = appendLogEntry(buf, l)
	}
	return buf
}

// sealJournalRecord fills in the header of an encoded record.
func sealJournalRecord(rec []byte, gen uint64) {
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)-journalHeader))
	binary.LittleEndian.PutUint64(rec[8:], gen)
	binary.LittleEndian.PutUint32(rec[4:], journalSum(rec[8:16], rec[journalHeader:]))
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

func (j *journalStore) FirstIndex() (uint64, error) {
	// Under j.mu: a checkpoint stores entries in bbolt and only then, under
	// j.mu, drops them from the tail. Reading bbolt's first index outside
	// j.mu and the tail after it could see neither copy of the entries a
	// checkpoint moved in between, and answer the tail's first index for a
	// log that starts earlier (seen under CPU contention in
	// TestJournalModel). Under j.mu, an entry is in the tail or already in
	// bbolt, and bbolt's entries all come before the tail's.
	j.mu.Lock()
	defer j.mu.Unlock()
	first, err := j.db.FirstIndex()
	if err != nil || first != 0 {
		return first, err
	}
	if len(j.tail) > 0 {
		return j.tailBase, nil
	}
	return 0, nil
}

func (j *journalStore) LastIndex() (uint64, error) {
	j.mu.Lock()
	if len(j.tail) > 0 {
		last := j.tailBase + uint64(len(j.tail)) - 1
		j.mu.Unlock()
		return last, nil
	}
	j.mu.Unlock()
	return j.db.LastIndex()
}

func (j *journalStore) GetLog(index uint64, out *hraft.Log) error {
	j.mu.Lock()
	if index >= j.tailBase && index-j.tailBase < uint64(len(j.tail)) {
		*out = *j.tail[index-j.tailBase]
		j.mu.Unlock()
		return nil
	}
	j.mu.Unlock()
	// Not in the tail: in bbolt, or nowhere. An entry leaves the tail only
	// once its checkpoint has committed.
	return j.db.GetLog(index, out)
}

func (j *journalStore) StoreLog(l *hraft.Log) error { return j.StoreLogs([]*hraft.Log{l}) }

// StoreLogs appends logs and returns once they are on disk.
func (j *journalStore) StoreLogs(logs []*hraft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	j.wmu.Lock()
	defer j.wmu.Unlock()
	rec := encodeJournalRecord(j.buf[:0], logs)
	if cap(rec) <= maxJournalBuf {
		j.buf = rec
	}
	if int64(len(rec)) > j.fileCap || (j.last != 0 && logs[0].Index != j.last+1) {
		// Larger than a journal file, or not right after the last entry
		// (a follower that installed a snapshot goes on after it): straight
		// into bbolt, as raft-boltdb alone would store it, after the tail.
		return j.storeDirect(logs)
	}
	j.mu.Lock()
	if j.err != nil {
		j.mu.Unlock()
		return j.err
	}
	jf := j.files[j.cur]
	if jf.off+int64(len(rec)) > j.fileCap {
		if err := j.switchFileLocked(); err != nil {
			j.mu.Unlock()
			return err
		}
		jf = j.files[j.cur]
	}
	gen, off := jf.gen, jf.off
	j.mu.Unlock()

	sealJournalRecord(rec, gen)
	if _, err := jf.f.WriteAt(rec, off); err != nil {
		return j.fail(fmt.Errorf("raft: journal write: %w", err))
	}
	if !j.noSync {
		if err := fdatasync(jf.f); err != nil {
			return j.fail(fmt.Errorf("raft: journal sync: %w", err))
		}
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	jf.off = off + int64(len(rec))
	jf.ents += len(logs)
	if len(j.tail) == 0 {
		j.tailBase = logs[0].Index
	}
	j.tail = append(j.tail, logs...)
	j.last = logs[len(logs)-1].Index
	return nil
}

// storeDirect writes logs into bbolt after checkpointing the journal.
// j.wmu is held.
func (j *journalStore) storeDirect(logs []*hraft.Log) error {
	if err := j.checkpointAll(); err != nil {
		return err
	}
	if err := j.db.StoreLogs(logs); err != nil {
		return err
	}
	j.last = logs[len(logs)-1].Index
	return nil
}

// fail records err as the store's sticky error and returns it.
func (j *journalStore) fail(err error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = err
	}
	return err
}

// switchFileLocked moves appends to the other file, waiting for its
// checkpoint if it is still running, and starts the checkpoint of the full
// one. j.mu is held.
func (j *journalStore) switchFileLocked() error {
	for j.ckpt {
		j.cond.Wait()
	}
	if j.err != nil {
		return j.err
	}
	full := j.files[j.cur]
	next := j.files[1-j.cur]
	next.gen, next.off, next.ents = full.gen+1, 0, 0
	j.cur = 1 - j.cur
	if full.ents == 0 {
		full.gen, full.off = 0, 0
		return nil
	}
	j.ckpt = true
	logs := j.tail[:full.ents:full.ents]
	go j.checkpoint(full, logs)
	return nil
}

// checkpoint writes the entries of a full journal file into bbolt and then
// frees the file.
func (j *journalStore) checkpoint(jf *journalFile, logs []*hraft.Log) {
	if j.hold != nil {
		<-j.hold
	}
	err := j.db.StoreLogs(logs)
	if err == nil && j.between != nil {
		j.between()
	}
	if err == nil {
		err = j.db.SetUint64([]byte(absorbedKey), jf.gen)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ckpt = false
	j.cond.Broadcast()
	if err != nil {
		j.err = fmt.Errorf("raft: journal checkpoint: %w", err)
		return
	}
	j.dropTailLocked(len(logs))
	jf.gen, jf.off, jf.ents = 0, 0, 0
}

func (j *journalStore) dropTailLocked(n int) {
	clear(j.tail[:n])
	j.tail = j.tail[n:]
	j.tailBase += uint64(n)
	if len(j.tail) == 0 {
		j.tail = nil // let the array go
	}
}

// checkpointAll writes every journaled entry into bbolt and starts a new
// generation, so that no record written so far is replayed again. j.wmu is
// held.
func (j *journalStore) checkpointAll() error {
	j.mu.Lock()
	for j.ckpt {
		j.cond.Wait()
	}
	if j.err != nil {
		j.mu.Unlock()
		return j.err
	}
	logs := j.tail
	cur := j.files[j.cur]
	j.mu.Unlock()
	if len(logs) > 0 {
		if err := j.db.StoreLogs(logs); err != nil {
			return err
		}
	}
	written := cur.off > 0
	if written {
		if err := j.db.SetUint64([]byte(absorbedKey), cur.gen); err != nil {
			return err
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.dropTailLocked(len(logs))
	for _, f := range j.files {
		f.off, f.ents = 0, 0
	}
	j.files[1-j.cur].gen = 0
	if written {
		// The records written so far are absorbed: a new generation, so
		// that none of them is read as one of the next.
		cur.gen++
	}
	return nil
}

// DeleteRange deletes entries min to max, inclusive: a prefix (compaction
// after a snapshot, from Raft's snapshot goroutine while appends go on) or
// a suffix (a follower's conflicting entries, or everything).
func (j *journalStore) DeleteRange(min, max uint64) error {
	j.mu.Lock()
	prefix := len(j.tail) > 0 && max < j.tailBase
	j.mu.Unlock()
	if prefix {
		// A prefix that is all in bbolt, before the journal's entries: the
		// usual compaction. No record can bring these entries back, and
		// appends need not wait. (Meanwhile the tail only moves forward.)
		return j.db.DeleteRange(min, max)
	}
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if err := j.checkpointAll(); err != nil {
		return err
	}
	if err := j.db.DeleteRange(min, max); err != nil {
		return err
	}
	// Everything is in bbolt now: its last entry is the last one.
	last, err := j.db.LastIndex()
	if err != nil {
		return err
	}
	j.last = last
	return nil
}

func (j *journalStore) Set(k, v []byte) error              { return j.db.Set(k, v) }
func (j *journalStore) Get(k []byte) ([]byte, error)       { return j.db.Get(k) }
func (j *journalStore) SetUint64(k []byte, v uint64) error { return j.db.SetUint64(k, v) }
func (j *journalStore) GetUint64(k []byte) (uint64, error) { return j.db.GetUint64(k) }

// Close checkpoints the journal, so that the next Open replays nothing,
// and closes the files and bbolt.
func (j *journalStore) Close() error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.mu.Unlock()
	err := j.checkpointAll()
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	if cerr := j.closeFiles(); err == nil {
		err = cerr
	}
	if cerr := j.db.Close(); err == nil {
		err = cerr
	}
	return err
}

func (j *journalStore) closeFiles() error {
	var err error
	for _, f := range j.files {
		if f != nil && f.f != nil {
			if cerr := f.f.Close(); err == nil {
				err = cerr
			}
		}
	}
	return err
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
