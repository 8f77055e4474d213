package raft

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// openTestJournal opens the journal and its bbolt log in dir, with journal
// files of fileCap bytes, without fsync.
func openTestJournal(t *testing.T, dir string, fileCap int64) *journalStore {
	t.Helper()
	j, err := tryOpenJournal(dir, fileCap, true)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func tryOpenJournal(dir string, fileCap int64, noSync bool) (*journalStore, error) {
	db, err := openBoltLog(filepath.Join(dir, "raft.db"), noSync)
	if err != nil {
		return nil, err
	}
	j, err := openJournal(db, dir, noSync, fileCap)
	if err != nil {
		db.Close()
		return nil, err
	}
	return j, nil
}

// crash closes the files without a checkpoint, between two calls, as a
// kill -9 leaves them; a checkpoint in progress then fails on the closed
// bbolt, or stays undone while it is held.
func (j *journalStore) crash() {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.closeFiles()
	j.db.Close()
}

// journalModel is what a journal must hold: its entries by index.
type journalModel struct {
	first, last uint64
	logs        map[uint64]*hraft.Log
}

func (m *journalModel) store(logs []*hraft.Log) {
	for _, l := range logs {
		m.logs[l.Index] = l
	}
	if m.first == 0 {
		m.first = logs[0].Index
	}
	m.last = logs[len(logs)-1].Index
}

func (m *journalModel) deleteRange(lo, hi uint64) {
	for i := lo; i <= hi; i++ {
		delete(m.logs, i)
	}
	switch {
	case lo <= m.first && hi >= m.last:
		m.first, m.last = 0, 0
	case lo <= m.first:
		m.first = hi + 1
	default:
		m.last = lo - 1
	}
}

func testLogs(rng *rand.Rand, from uint64, n int, term uint64, maxData int) []*hraft.Log {
	logs := make([]*hraft.Log, n)
	for i := range logs {
		data := make([]byte, rng.IntN(maxData+1))
		for k := range data {
			data[k] = byte(rng.Uint32())
		}
		l := &hraft.Log{Index: from + uint64(i), Term: term, Type: hraft.LogCommand, Data: data}
		if rng.IntN(4) == 0 {
			l.Extensions = []byte("ext")
		}
		if rng.IntN(2) == 0 {
			l.AppendedAt = time.Unix(1700000000, int64(rng.IntN(1e9))).UTC()
		}
		logs[i] = l
	}
	return logs
}

// storeBoth appends logs to j and to the model m.
func storeBoth(t *testing.T, j *journalStore, m *journalModel, logs []*hraft.Log) {
	t.Helper()
	if err := j.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	m.store(logs)
}

// checkJournal compares j with m, entry by entry.
func checkJournal(t *testing.T, j *journalStore, m *journalModel, step string) {
	t.Helper()
	first, err := j.FirstIndex()
	if err != nil {
		t.Fatalf("%s: FirstIndex: %v", step, err)
	}
	last, err := j.LastIndex()
	if err != nil {
		t.Fatalf("%s: LastIndex: %v", step, err)
	}
	if first != m.first || last != m.last {
		t.Fatalf("%s: entries %d-%d, want %d-%d", step, first, last, m.first, m.last)
	}
	for i := m.first; i <= m.last && m.last != 0; i++ {
		var got hraft.Log
		if err := j.GetLog(i, &got); err != nil {
			t.Fatalf("%s: GetLog(%d): %v", step, i, err)
		}
		want := m.logs[i]
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
			!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
			!got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("%s: entry %d is %+v, want %+v", step, i, got, *want)
		}
	}
	var l hraft.Log
	if err := j.GetLog(m.last+1, &l); !errors.Is(err, hraft.ErrLogNotFound) {
		t.Fatalf("%s: GetLog past the end: %v, want ErrLogNotFound", step, err)
	}
}

// TestJournalModel runs random appends, deletions of a prefix or a suffix,
// clean reopens and crashes (the files closed as a kill -9 leaves them,
// with the checkpoint in progress done or not) against a model. The files
// are small, so appends move between them and checkpoint often, and some
// batches are larger than a file.
func TestJournalModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			dir := t.TempDir()
			const fileCap = 4 << 10
			noSync := seed != 1 // one run with fsync, for its code paths
			open := func() *journalStore {
				j, err := tryOpenJournal(dir, fileCap, noSync)
				if err != nil {
					t.Fatal(err)
				}
				return j
			}
			j := open()
			defer func() { j.Close() }()
			m := &journalModel{logs: map[uint64]*hraft.Log{}}
			term := uint64(1)
			for op := 0; op < 400; op++ {
				var step string
				switch r := rng.IntN(100); {
				case r < 70:
					n := 1 + rng.IntN(6)
					logs := testLogs(rng, m.last+1, n, term, 900)
					step = fmt.Sprintf("op %d: store %d-%d", op, m.last+1, m.last+uint64(n))
					if err := j.StoreLogs(logs); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					m.store(logs)
				case r < 78 && m.last > m.first:
					hi := m.first + uint64(rng.IntN(int(m.last-m.first)))
					step = fmt.Sprintf("op %d: delete prefix %d-%d", op, m.first, hi)
					if err := j.DeleteRange(m.first, hi); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					m.deleteRange(m.first, hi)
				case r < 86 && m.last > m.first:
					lo := m.first + 1 + uint64(rng.IntN(int(m.last-m.first)))
					step = fmt.Sprintf("op %d: delete suffix %d-%d", op, lo, m.last)
					if err := j.DeleteRange(lo, m.last); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					m.deleteRange(lo, m.last)
					term++ // a new leader's entries replace them
				case r < 93:
					step = fmt.Sprintf("op %d: crash and reopen", op)
					j.crash()
					j = open()
				default:
					step = fmt.Sprintf("op %d: close and reopen", op)
					if err := j.Close(); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					j = open()
				}
				checkJournal(t, j, m, step)
			}
		})
	}
}

// TestJournalCrashDuringCheckpoint stops the process (as kill -9 does)
// while a full file waits for its checkpoint, then after the checkpoint's
// entries reached bbolt but before it recorded so: both ways, reopening
// gives every entry stored.
func TestJournalCrashDuringCheckpoint(t *testing.T) {
	for _, done := range []bool{false, true} {
		t.Run(fmt.Sprint("checkpoint stored=", done), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 3))
			dir := t.TempDir()
			j := openTestJournal(t, dir, 4<<10)
			hold := make(chan struct{})
			j.hold = hold
			m := &journalModel{logs: map[uint64]*hraft.Log{}}
			// Fill the first file and part of the second: one checkpoint
			// starts and waits.
			started := 0
			for i := 0; i < 100 && started < 3; i++ {
				logs := testLogs(rng, m.last+1, 1, 1, 500)
				storeBoth(t, j, m, logs)
				j.mu.Lock()
				if j.ckpt {
					started++ // then two more appends, to the second file
				}
				j.mu.Unlock()
			}
			if started < 3 {
				t.Fatal("no checkpoint started: the test no longer fills a file")
			}
			if done {
				// As if the checkpoint's bbolt transaction committed and
				// the process died before it recorded the generation.
				j.mu.Lock()
				logs := j.tail[:j.files[1-j.cur].ents]
				j.mu.Unlock()
				if err := j.db.StoreLogs(logs); err != nil {
					t.Fatal(err)
				}
			}
			j.crash()
			close(hold) // the checkpoint now finds bbolt closed
			j = openTestJournal(t, dir, 4<<10)
			defer j.Close()
			checkJournal(t, j, m, "after the crash")
			// And it goes on appending.
			logs := testLogs(rng, m.last+1, 3, 1, 500)
			storeBoth(t, j, m, logs)
			checkJournal(t, j, m, "after appending")
		})
	}
}

// TestJournalTornAppend: an append that never returned (the process died
// during its write) leaves a record cut short, or with bytes that were not
// written; reopening keeps every entry before it and drops it.
func TestJournalTornAppend(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(rec []byte) []byte
	}{
		{"cut short", func(rec []byte) []byte { return rec[:len(rec)-7] }},
		{"a byte wrong", func(rec []byte) []byte { rec[len(rec)/2] ^= 0x40; return rec }},
		{"header only", func(rec []byte) []byte { return rec[:journalHeader] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			dir := t.TempDir()
			j := openTestJournal(t, dir, 1<<20)
			m := &journalModel{logs: map[uint64]*hraft.Log{}}
			for range 5 {
				logs := testLogs(rng, m.last+1, 3, 2, 200)
				storeBoth(t, j, m, logs)
			}
			// Write the next record by hand, torn, where the next append goes.
			jf := j.files[j.cur]
			rec := encodeJournalRecord(nil, testLogs(rng, m.last+1, 2, 2, 200))
			sealJournalRecord(rec, jf.gen)
			if _, err := jf.f.WriteAt(tc.tear(rec), jf.off); err != nil {
				t.Fatal(err)
			}
			j.crash()
			j = openTestJournal(t, dir, 1<<20)
			defer j.Close()
			checkJournal(t, j, m, "after the torn append")
		})
	}
}

// TestJournalStaleRecords: the records of an earlier use of a file (older
// generation) are never replayed, even where they lie right after the
// current ones, and deleted entries do not come back.
func TestJournalStaleRecords(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir, 1<<20)
	m := &journalModel{logs: map[uint64]*hraft.Log{}}
	entry := func(i, term uint64) []*hraft.Log {
		return []*hraft.Log{{Index: i, Term: term, Type: hraft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, 50)}}
	}
	// Records of one entry each, all the same size, then delete the tail:
	// the journal starts a new generation over the same file.
	for i := uint64(1); i <= 20; i++ {
		storeBoth(t, j, m, entry(i, 1))
	}
	if err := j.DeleteRange(6, 20); err != nil {
		t.Fatal(err)
	}
	m.deleteRange(6, 20)
	// Entry 6 of a new term, as large as the old records: the old record
	// of entry 2, whole and with a good checksum, follows it in the file.
	storeBoth(t, j, m, entry(6, 2))
	j.crash()
	j = openTestJournal(t, dir, 1<<20)
	defer j.Close()
	checkJournal(t, j, m, "after the crash")
}

// TestJournalReadsDuringAppends reads entries from other goroutines while
// appends fill files and checkpoints move them into bbolt (for the race
// detector; and every entry read is the one stored).
func TestJournalReadsDuringAppends(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir, 8<<10)
	defer j.Close()
	var (
		mu     sync.Mutex
		stored = map[uint64][]byte{}
		last   uint64
		done   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-done:
					return
				default:
				}
				mu.Lock()
				n := last
				mu.Unlock()
				if n == 0 {
					continue
				}
				i := 1 + rng.Uint64N(n)
				var l hraft.Log
				if err := j.GetLog(i, &l); err != nil {
					t.Errorf("GetLog(%d): %v", i, err)
					return
				}
				mu.Lock()
				want := stored[i]
				mu.Unlock()
				if !bytes.Equal(l.Data, want) {
					t.Errorf("entry %d: wrong data", i)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := uint64(1); i <= 2000; i++ {
		logs := testLogs(rng, i, 1, 1, 300)
		if err := j.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		stored[i] = logs[0].Data
		last = i
		mu.Unlock()
	}
	close(done)
	wg.Wait()
	if fi, _ := j.FirstIndex(); fi != 1 {
		t.Fatalf("FirstIndex %d", fi)
	}
}

// TestJournalFilesPreallocated: the journal files are created at their
// full size, written, so that appends change no file metadata.
func TestJournalFilesPreallocated(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir, 64<<10)
	defer j.Close()
	for i := range 2 {
		st, err := os.Stat(filepath.Join(dir, fmt.Sprintf("journal-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != 64<<10 {
			t.Fatalf("journal-%d is %d bytes, want %d", i, st.Size(), 64<<10)
		}
	}
}

// TestJournalCrashBetweenCheckpointWrites stops the process after a
// checkpoint stored its entries in bbolt and before it recorded that its
// file is absorbed: the entries are replayed, not lost.
func TestJournalCrashBetweenCheckpointWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	dir := t.TempDir()
	j := openTestJournal(t, dir, 4<<10)
	reached, release := make(chan struct{}), make(chan struct{})
	j.between = func() {
		close(reached)
		<-release
	}
	m := &journalModel{logs: map[uint64]*hraft.Log{}}
	for i := 0; i < 100; i++ {
		logs := testLogs(rng, m.last+1, 1, 1, 500)
		storeBoth(t, j, m, logs)
		j.mu.Lock()
		started := j.ckpt
		j.mu.Unlock()
		if started {
			break
		}
	}
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no checkpoint reached bbolt")
	}
	j.crash()
	close(release)
	j = openTestJournal(t, dir, 4<<10)
	defer j.Close()
	checkJournal(t, j, m, "after the crash")
}

// TestJournalGap: a follower that installed a snapshot appends entries
// that do not follow its last one (hashicorp/raft keeps the older ones);
// they are stored, and survive a crash, whether the older entries are in
// the journal or in bbolt.
func TestJournalGap(t *testing.T) {
	for _, older := range []string{"journal", "bbolt"} {
		t.Run(older, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(6, 6))
			dir := t.TempDir()
			j := openTestJournal(t, dir, 64<<10)
			before := testLogs(rng, 1, 10, 1, 100)
			if err := j.StoreLogs(before); err != nil {
				t.Fatal(err)
			}
			if older == "bbolt" {
				if err := j.Close(); err != nil {
					t.Fatal(err)
				}
				j = openTestJournal(t, dir, 64<<10)
			}
			after := testLogs(rng, 101, 5, 2, 100)
			if err := j.StoreLogs(after); err != nil {
				t.Fatalf("append after the gap: %v", err)
			}
			more := testLogs(rng, 106, 5, 2, 100)
			if err := j.StoreLogs(more); err != nil {
				t.Fatal(err)
			}
			j.crash()
			j = openTestJournal(t, dir, 64<<10)
			defer j.Close()
			if first, _ := j.FirstIndex(); first != 1 {
				t.Fatalf("FirstIndex %d, want 1", first)
			}
			if last, _ := j.LastIndex(); last != 110 {
				t.Fatalf("LastIndex %d, want 110", last)
			}
			for _, want := range append(append(before, after...), more...) {
				var got hraft.Log
				if err := j.GetLog(want.Index, &got); err != nil || !bytes.Equal(got.Data, want.Data) {
					t.Fatalf("entry %d: %v", want.Index, err)
				}
			}
		})
	}
}

// TestJournalDamaged: a record that was acknowledged and later damaged,
// with whole records after it, fails Open instead of losing them.
func TestJournalDamaged(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	dir := t.TempDir()
	j := openTestJournal(t, dir, 64<<10)
	var offs []int64
	for i := uint64(1); i <= 5; i++ {
		offs = append(offs, j.files[j.cur].off)
		if err := j.StoreLogs(testLogs(rng, i, 1, 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
	f := j.files[j.cur].f
	if _, err := f.WriteAt([]byte{0xff}, offs[2]+journalHeader+3); err != nil {
		t.Fatal(err)
	}
	j.crash()
	if j, err := tryOpenJournal(dir, 64<<10, true); err == nil {
		j.Close()
		t.Fatal("opened a journal damaged in the middle")
	} else if !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("error %q does not say the journal is damaged", err)
	}
}

// TestJournalWriteFailureSticks: after a failed append the journal refuses
// every later one (a failed fdatasync may have dropped the written pages).
func TestJournalWriteFailureSticks(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	dir := t.TempDir()
	j := openTestJournal(t, dir, 64<<10)
	defer j.db.Close()
	if err := j.StoreLogs(testLogs(rng, 1, 1, 1, 10)); err != nil {
		t.Fatal(err)
	}
	j.files[j.cur].f.Close() // the next write fails
	if err := j.StoreLogs(testLogs(rng, 2, 1, 1, 10)); err == nil {
		t.Fatal("append to a closed file succeeded")
	}
	if err := j.StoreLogs(testLogs(rng, 2, 1, 1, 10)); err == nil || !strings.Contains(err.Error(), "journal write") {
		t.Fatalf("the append after a failure gave %v, want the first failure", err)
	}
}

// TestJournalCompactionDuringAppends deletes prefixes, as Raft's snapshot
// goroutine does, while appends fill files and checkpoints run; after a
// crash the log is what was left: contiguous from just after the last
// deletion to the last append.
func TestJournalCompactionDuringAppends(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir, 8<<10)
	data := map[uint64][]byte{}
	var deleted atomic.Uint64
	done := make(chan struct{})
	compacted := make(chan struct{})
	go func() {
		defer close(compacted)
		for {
			select {
			case <-done:
				return
			default:
			}
			first, err1 := j.FirstIndex()
			last, err2 := j.LastIndex()
			if err1 != nil || err2 != nil {
				t.Errorf("indexes: %v %v", err1, err2)
				return
			}
			if first == 0 || last < first+100 {
				runtime.Gosched()
				continue
			}
			if err := j.DeleteRange(first, last-50); err != nil {
				t.Errorf("DeleteRange: %v", err)
				return
			}
			deleted.Store(last - 50)
		}
	}()
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 3000
	for i := uint64(1); i <= n; i++ {
		logs := testLogs(rng, i, 1, 1, 200)
		data[i] = logs[0].Data
		if err := j.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	<-compacted
	if deleted.Load() == 0 {
		t.Fatal("nothing was compacted: the test no longer exercises deletes")
	}
	j.crash()
	j = openTestJournal(t, dir, 8<<10)
	defer j.Close()
	first, _ := j.FirstIndex()
	last, _ := j.LastIndex()
	if first != deleted.Load()+1 || last != n {
		t.Fatalf("entries %d-%d after the crash, want %d-%d", first, last, deleted.Load()+1, n)
	}
	for i := first; i <= last; i++ {
		var l hraft.Log
		if err := j.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, data[i]) {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}

// TestJournalFirstIndexDuringCheckpoint reads FirstIndex while the first
// checkpoints move entries from the journal's tail into an empty bbolt:
// every answer is the first entry stored. (FirstIndex once read bbolt and
// then the tail without holding the lock across both, and could answer the
// tail's first index after a checkpoint moved the entries before it: seen
// as entries missing at the head of the log in TestJournalModel under CPU
// contention. The entries were in bbolt all along.)
func TestJournalFirstIndexDuringCheckpoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for round := range 20 {
		j := openTestJournal(t, t.TempDir(), 4<<10)
		done := make(chan error, 1)
		go func() {
			var last uint64
			for range 120 {
				logs := testLogs(rng, last+1, 1+rng.IntN(4), 1, 300)
				if err := j.StoreLogs(logs); err != nil {
					done <- err
					return
				}
				last = logs[len(logs)-1].Index
			}
			done <- nil
		}()
		for running := true; running; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("round %d: store: %v", round, err)
				}
				running = false
			default:
			}
			first, err := j.FirstIndex()
			if err != nil {
				t.Fatalf("round %d: FirstIndex: %v", round, err)
			}
			if first > 1 {
				t.Fatalf("round %d: FirstIndex %d, want 1 (or 0 before the first append)", round, first)
			}
			runtime.Gosched()
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestJournalDamagedRecord: a record that is not the last one of its file
// cannot be torn by a crash (each append waits for the one before it), so
// a bad one with whole records after it is damage, and Open fails rather
// than drop the acknowledged entries after it: also when it is the file's
// first record, whose generation is then unknown.
func TestJournalDamagedRecord(t *testing.T) {
	for _, rec := range []int{0, 2} {
		t.Run(fmt.Sprint("record=", rec), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, 9))
			dir := t.TempDir()
			j := openTestJournal(t, dir, 1<<20)
			m := &journalModel{logs: map[uint64]*hraft.Log{}}
			var offs []int64
			for range 5 {
				offs = append(offs, j.files[j.cur].off)
				storeBoth(t, j, m, testLogs(rng, m.last+1, 2, 1, 200))
			}
			f := j.files[j.cur].f
			b := make([]byte, 1)
			at := offs[rec] + journalHeader + 5
			if _, err := f.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x10
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
			j.crash()
			j2, err := tryOpenJournal(dir, 1<<20, true)
			if err == nil {
				last, _ := j2.LastIndex()
				j2.Close()
				t.Fatalf("open: no error, entries up to %d; want an error naming the damage (entries up to %d were acknowledged)", last, m.last)
			}
			if !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "journal-0") {
				t.Fatalf("open: %v; want it to say the journal-0 file is damaged", err)
			}
		})
	}
}
