package raft

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hraft "github.com/hashicorp/raft"
)

// The log store of earlier releases (raft.db and its journal files) is
// moved into raft-wal at the first start of this one: these tests build
// such directories, as that release wrote them, and check the move.

// encodeJournalRecord returns the record of logs of generation gen, as the
// journal of earlier releases wrote it.
func encodeJournalRecord(logs []*hraft.Log, gen uint64) []byte {
	rec := make([]byte, journalHeader, 256)
	rec = binary.LittleEndian.AppendUint32(rec, uint32(len(logs)))
	for _, l := range logs {
		rec = appendLogEntry(rec, l)
	}
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)-journalHeader))
	binary.LittleEndian.PutUint64(rec[8:], gen)
	binary.LittleEndian.PutUint32(rec[4:], journalSum(rec[8:16], rec[journalHeader:]))
	return rec
}

// legacyDir writes an earlier release's Raft log into dir: inBolt in
// raft.db with the journal's generations up to absorbed recorded as in it,
// and each of files as journal-i, the records given in order (an empty
// file where none).
type legacyDir struct {
	inBolt   []*hraft.Log
	absorbed uint64
	term     uint64
	files    [2][][]byte // records
}

func (d legacyDir) write(t *testing.T, dir string) {
	t.Helper()
	b, err := openBoltLog(filepath.Join(dir, "raft.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.inBolt) > 0 {
		if err := b.StoreLogs(d.inBolt); err != nil {
			t.Fatal(err)
		}
	}
	if d.absorbed > 0 {
		if err := b.SetUint64([]byte(absorbedKey), d.absorbed); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetUint64([]byte("CurrentTerm"), d.term); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, recs := range d.files {
		buf := make([]byte, 64<<10) // the rest zero, as a preallocated file
		off := 0
		for _, r := range recs {
			off += copy(buf[off:], r)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("journal-%d", i)), buf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigratePreviousRelease opens the Raft directory of a `comet
// standalone` of the release before raft-wal (commit c33375e), stopped
// with SIGKILL after 40 publishes, so that its last entries were only in
// the journal: every entry and the term and vote come over, and the old
// files are gone. The figures were read from that directory by that
// release's own code.
func TestMigratePreviousRelease(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"raft.db", "journal-0", "journal-1"} {
		b, err := os.ReadFile(filepath.Join("testdata", "journal-v1", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the second open finds the moved log
		s := openTestStore(t, dir)
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		h := sha256.New()
		for i := first; i <= last; i++ {
			var l hraft.Log
			if err := s.GetLog(i, &l); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			fmt.Fprintf(h, "%d/%d/%d/%x/%x/%d;", l.Index, l.Term, l.Type, l.Data, l.Extensions, l.AppendedAt.UnixNano())
		}
		if got, want := fmt.Sprintf("first=%d last=%d sha=%x", first, last, h.Sum(nil)),
			"first=1 last=44 sha=34057112061524c641616f84e36acd21a0a529d084155b0a30042b6f750ef229"; got != want {
			t.Fatalf("moved log: %s, want %s", got, want)
		}
		term, _ := s.GetUint64([]byte("CurrentTerm"))
		vterm, _ := s.GetUint64([]byte("LastVoteTerm"))
		cand, _ := s.Get([]byte("LastVoteCand"))
		if term != 2 || vterm != 2 || string(cand) != "standalone" {
			t.Fatalf("term %d, vote %q in %d; want 2, standalone in 2", term, cand, vterm)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for _, name := range legacyFiles {
			if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
				t.Fatalf("%s is still there after the move (%v)", name, err)
			}
		}
	}
}

// TestMigrateJournal: the entries a crash left only in the journal are
// moved, whichever file holds them and in generation order; records of
// generations already absorbed into raft.db are not replayed.
func TestMigrateJournal(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	bolt := testLogs(rng, 1, 10, 1, 200)
	a, b, c := testLogs(rng, 11, 3, 1, 200), testLogs(rng, 14, 4, 1, 200), testLogs(rng, 18, 2, 2, 200)
	stale := testLogs(rng, 5, 3, 1, 200) // an absorbed use of a file
	for _, tc := range []struct {
		name string
		d    legacyDir
		want []*hraft.Log
	}{
		{"bbolt only", legacyDir{inBolt: bolt, absorbed: 3, term: 1}, bolt},
		{"current file", legacyDir{inBolt: bolt, absorbed: 3, term: 1,
			files: [2][][]byte{{encodeJournalRecord(a, 4), encodeJournalRecord(b, 4)}}}, concat(bolt, a, b)},
		{"both files, newer first", legacyDir{inBolt: bolt, absorbed: 3, term: 2,
			files: [2][][]byte{{encodeJournalRecord(c, 5)}, {encodeJournalRecord(a, 4), encodeJournalRecord(b, 4)}}}, concat(bolt, a, b, c)},
		{"stale records are not replayed", legacyDir{inBolt: bolt, absorbed: 3, term: 1,
			files: [2][][]byte{{encodeJournalRecord(stale, 3)}, {encodeJournalRecord(a, 4)}}}, concat(bolt, a)},
		{"journal only", legacyDir{absorbed: 0, term: 1,
			files: [2][][]byte{{encodeJournalRecord(bolt, 1)}}}, bolt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.d.write(t, dir)
			s := openTestStore(t, dir)
			defer s.Close()
			m := newLogModel()
			m.store(tc.want)
			checkLog(t, s, m, "after the move")
			if term, _ := s.GetUint64([]byte("CurrentTerm")); term != tc.d.term {
				t.Fatalf("CurrentTerm %d, want %d", term, tc.d.term)
			}
		})
	}
}

func concat(parts ...[]*hraft.Log) []*hraft.Log {
	var all []*hraft.Log
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// TestMigrateTornAndDamaged: a torn last record (an append that never
// returned) is dropped and the rest moved; a bad record followed by whole
// ones is damage, including when it is a file's first record, and the
// move fails, naming the file, leaving the old files as they were.
func TestMigrateTornAndDamaged(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	bolt := testLogs(rng, 1, 5, 1, 100)
	var recs [][]byte
	next := uint64(6)
	for range 5 {
		logs := testLogs(rng, next, 2, 1, 100)
		next += 2
		recs = append(recs, encodeJournalRecord(logs, 2))
	}
	flip := func(r []byte) []byte { r = append([]byte(nil), r...); r[len(r)/2] ^= 0x10; return r }
	replace := func(i int, r []byte) [][]byte {
		out := append([][]byte(nil), recs...)
		out[i] = r
		return out
	}
	for _, tc := range []struct {
		name    string
		records [][]byte
		last    uint64 // the entries moved; 0: the move fails
	}{
		{"torn last record, cut short", replace(4, recs[4][:len(recs[4])-7]), 13},
		{"torn last record, a byte wrong", replace(4, flip(recs[4])), 13},
		{"first record damaged", replace(0, flip(recs[0])), 0},
		{"middle record damaged", replace(2, flip(recs[2])), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			legacyDir{inBolt: bolt, absorbed: 1, term: 1, files: [2][][]byte{tc.records}}.write(t, dir)
			s, err := openLogStore(dir, testSegmentSize, true, nil)
			if tc.last == 0 {
				if err == nil {
					last, _ := s.LastIndex()
					s.Close()
					t.Fatalf("open: no error, entries up to %d; want the damage named (entries up to 15 were acknowledged)", last)
				}
				if !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "journal-0") {
					t.Fatalf("open: %v; want it to say journal-0 is damaged", err)
				}
				if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
					t.Fatalf("the old log is gone after a failed move: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if last, _ := s.LastIndex(); last != tc.last {
				t.Fatalf("LastIndex %d, want %d", last, tc.last)
			}
		})
	}
}

// TestMigrateInterrupted: a move stopped before its rename (wal.tmp left)
// starts again; one stopped after it (raft.db left beside wal) only
// removes the old files, keeping the moved log, which may have grown since.
func TestMigrateInterrupted(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	bolt := testLogs(rng, 1, 8, 1, 100)
	t.Run("before the rename", func(t *testing.T) {
		dir := t.TempDir()
		legacyDir{inBolt: bolt, term: 1}.write(t, dir)
		if err := os.MkdirAll(filepath.Join(dir, "wal.tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "wal.tmp", "wal-meta.db"), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := openTestStore(t, dir)
		defer s.Close()
		m := newLogModel()
		m.store(bolt)
		checkLog(t, s, m, "after the move")
	})
	t.Run("after the rename", func(t *testing.T) {
		dir := t.TempDir()
		legacyDir{inBolt: bolt, term: 1}.write(t, dir)
		s := openTestStore(t, dir)
		more := testLogs(rng, 9, 4, 2, 100)
		if err := s.StoreLogs(more); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		legacyDir{inBolt: bolt[:3], term: 1}.write(t, dir) // old files back, as if not yet removed
		s = openTestStore(t, dir)
		defer s.Close()
		m := newLogModel()
		m.store(bolt)
		m.store(more)
		checkLog(t, s, m, "after the second start")
		if _, err := os.Stat(filepath.Join(dir, "raft.db")); !os.IsNotExist(err) {
			t.Fatalf("raft.db left after the second start: %v", err)
		}
	})
}

// FuzzReadJournal reads random bytes as a journal file of an earlier
// release: it never panics, and what it accepts is whole, contiguous
// records of one generation that encode back to the same bytes.
func FuzzReadJournal(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 1))
	a, b := testLogs(rng, 1, 2, 1, 40), testLogs(rng, 3, 1, 1, 40)
	ra, rb := encodeJournalRecord(a, 2), encodeJournalRecord(b, 2)
	f.Add(append(append([]byte(nil), ra...), rb...), uint64(1))
	f.Add(ra, uint64(2))
	f.Add(append(append([]byte(nil), ra...), encodeJournalRecord(b, 7)...), uint64(1))
	f.Add(ra[:len(ra)-3], uint64(0))
	f.Add(make([]byte, 64), uint64(0))
	f.Fuzz(func(t *testing.T, buf []byte, absorbed uint64) {
		gen, batches, err := readJournal(buf, absorbed)
		if err != nil {
			return
		}
		off := 0
		for _, logs := range batches {
			rec := encodeJournalRecord(logs, gen)
			if off+len(rec) > len(buf) || !bytes.Equal(rec, buf[off:off+len(rec)]) {
				t.Fatalf("record at %d does not encode back to the bytes read", off)
			}
			off += len(rec)
		}
	})
}

// FuzzDecodeLogValue decodes random bytes as a raft.db entry (boltLog's
// encoding or raft-boltdb's msgpack): it never panics, and an entry of
// boltLog's encoding encodes back to the same bytes.
func FuzzDecodeLogValue(f *testing.F) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, l := range testLogs(rng, 7, 3, 2, 60) {
		v := appendLogValue(nil, l)
		f.Add(v)
		f.Add(v[:len(v)-1])
	}
	f.Add([]byte{0x85, 0xa5, 'I', 'n', 'd', 'e', 'x', 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		var l hraft.Log
		if err := decodeLogValue(v, &l); err != nil {
			return
		}
		if len(v) > 0 && v[0] == ownEntry && !bytes.Equal(appendLogValue(nil, &l), v) {
			t.Fatalf("entry %d does not encode back to the bytes read", l.Index)
		}
	})
}
