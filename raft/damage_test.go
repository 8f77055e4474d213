package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	hraft "github.com/hashicorp/raft"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
)

// markedLogs returns entries from..to whose data starts with a marker
// naming the entry, so that a test can find an entry's bytes on disk.
func markedLogs(from, to uint64) []*hraft.Log {
	var logs []*hraft.Log
	for i := from; i <= to; i++ {
		data := bytes.Repeat([]byte{byte(i)}, 300)
		copy(data, fmt.Sprintf("ENTRY-%06d-", i))
		logs = append(logs, &hraft.Log{Index: i, Term: 1, Type: hraft.LogCommand, Data: data})
	}
	return logs
}

// fillStore writes entries 1..n into a store in dir, one append each,
// closes it and returns the path of the segment file that holds entry
// marked (sealed, as n fills several segments).
func fillStore(t *testing.T, dir string, n, marked uint64) string {
	t.Helper()
	s := openTestStore(t, dir)
	for _, l := range markedLogs(1, n) {
		if err := s.StoreLogs([]*hraft.Log{l}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path, _ := findMarker(t, filepath.Join(dir, "wal"), marked)
	return path
}

// findMarker returns the segment file and offset of entry i's marker.
func findMarker(t *testing.T, walDir string, i uint64) (string, int) {
	t.Helper()
	names, err := segmentFiles(walDir)
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte(fmt.Sprintf("ENTRY-%06d-", i))
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(walDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if at := bytes.Index(b, marker); at >= 0 {
			return filepath.Join(walDir, name), at
		}
	}
	t.Fatalf("entry %d not found in %s", i, walDir)
	return "", 0
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
}

// TestLogChecksumsOnDisk: entries are written with crcCodec, and the
// segments' headers and raft-wal's metadata name it (raft-wal v0.4.2 names
// its own codec unless told otherwise), so the log reopens.
func TestLogChecksumsOnDisk(t *testing.T) {
	dir := t.TempDir()
	path := fillStore(t, dir, 200, 3)
	hdr := make([]byte, 32)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if c := binary.LittleEndian.Uint64(hdr[24:]); c != crcCodecID {
		t.Fatalf("segment header codec %d, want %d", c, crcCodecID)
	}
	meta := &metadb.BoltMetaDB{}
	st, err := meta.Load(filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	meta.Close()
	if len(st.Segments) < 2 {
		t.Fatalf("%d segments: the test no longer seals one", len(st.Segments))
	}
	for _, si := range st.Segments {
		if si.Codec != crcCodecID {
			t.Fatalf("segment %d recorded with codec %d, want %d", si.ID, si.Codec, crcCodecID)
		}
	}
	s := openTestStore(t, dir) // reopens, and verify reads every entry
	defer s.Close()
	m := newLogModel()
	m.store(markedLogs(1, 200))
	checkLog(t, s, m, "reopened")
}

// TestLogFlippedByteInSealedSegment: one byte flipped inside an entry of a
// sealed segment is caught by its checksum: GetLog of that entry fails
// with ErrCorruptLog naming the segment file, the other entries read; and
// openLogStore, which reads every entry at start, refuses the log naming
// the file.
func TestLogFlippedByteInSealedSegment(t *testing.T) {
	dir := t.TempDir()
	const n, bad = 200, 5
	path := fillStore(t, dir, n, bad)
	_, at := findMarker(t, filepath.Join(dir, "wal"), bad)
	flipByte(t, path, int64(at+20)) // inside the entry's data

	_, err := openLogStore(dir, testSegmentSize, true, nil)
	if !errors.Is(err, ErrCorruptLog) || !strings.Contains(err.Error(), path) {
		t.Fatalf("open: %v; want ErrCorruptLog naming %s", err, path)
	}

	// raft-wal alone (no check at open): only that entry fails.
	s, err := openWal(filepath.Join(dir, "wal"), testSegmentSize, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var l hraft.Log
	err = s.GetLog(bad, &l)
	if !errors.Is(err, ErrCorruptLog) || !strings.Contains(err.Error(), path) {
		t.Fatalf("GetLog(%d): %v; want ErrCorruptLog naming %s", bad, err, path)
	}
	t.Logf("GetLog(%d): %v", bad, err)
	want := markedLogs(1, n)
	for i := uint64(1); i <= n; i++ {
		if i == bad {
			continue
		}
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if !bytes.Equal(l.Data, want[i-1].Data) {
			t.Fatalf("entry %d: wrong data", i)
		}
	}
}

// segmentOf returns the path of the metadata's segment number i (from 0),
// and whether it is sealed.
func segmentOf(t *testing.T, walDir string, i int) (string, bool) {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	st, err := meta.Load(walDir)
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	if i < 0 {
		i += len(st.Segments)
	}
	si := st.Segments[i]
	return filepath.Join(walDir, segment.FileName(si)), !si.SealTime.IsZero()
}

// TestNewRefusesDamagedLog damages a stopped hub's Raft log in each way a
// disk or an operator can, and starts a node on it: New must fail with an
// error wrapping ErrCorruptLog and naming the damaged file (no SIGBUS, no
// panic, no log mistaken for a new one).
func TestNewRefusesDamagedLog(t *testing.T) {
	// With 225 entries the tail segment holds about 12 KiB of them.
	const n, marked = 225, 5
	type damage func(t *testing.T, walDir string) string // returns the damaged file
	zeroPage := func(t *testing.T, path string, at int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(make([]byte, 4096), at&^4095); err != nil {
			t.Fatal(err)
		}
	}
	truncate := func(t *testing.T, path string, to func(size int64) int64) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, to(fi.Size())); err != nil {
			t.Fatal(err)
		}
	}
	metaPath := func(walDir string) string { return filepath.Join(walDir, metadb.FileName) }
	cases := []struct {
		name   string
		damage damage
	}{
		{"wal-meta.db cut in half", func(t *testing.T, walDir string) string {
			truncate(t, metaPath(walDir), func(s int64) int64 { return s / 2 })
			return metaPath(walDir)
		}},
		{"wal-meta.db cut to 3 pages", func(t *testing.T, walDir string) string {
			truncate(t, metaPath(walDir), func(int64) int64 { return 3 * 4096 })
			return metaPath(walDir)
		}},
		{"wal-meta.db cut to nothing", func(t *testing.T, walDir string) string {
			truncate(t, metaPath(walDir), func(int64) int64 { return 0 })
			return metaPath(walDir)
		}},
		{"wal-meta.db zero-filled", func(t *testing.T, walDir string) string {
			fi, err := os.Stat(metaPath(walDir))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(metaPath(walDir), make([]byte, fi.Size()), 0o600); err != nil {
				t.Fatal(err)
			}
			return metaPath(walDir)
		}},
		{"wal-meta.db missing", func(t *testing.T, walDir string) string {
			if err := os.Remove(metaPath(walDir)); err != nil {
				t.Fatal(err)
			}
			return metaPath(walDir)
		}},
		{"sealed segment cut short", func(t *testing.T, walDir string) string {
			path, sealed := segmentOf(t, walDir, 0)
			if !sealed {
				t.Fatal("the first segment is not sealed")
			}
			truncate(t, path, func(s int64) int64 { return s / 2 })
			return path
		}},
		{"tail segment cut short", func(t *testing.T, walDir string) string {
			path, sealed := segmentOf(t, walDir, -1)
			if sealed {
				t.Fatal("the last segment is sealed")
			}
			truncate(t, path, func(s int64) int64 { return 4096 })
			return path
		}},
		{"sealed segment with its first page zeroed", func(t *testing.T, walDir string) string {
			path, at := findMarker(t, walDir, marked)
			zeroPage(t, path, int64(at))
			return path
		}},
		{"sealed segment with a zeroed page", func(t *testing.T, walDir string) string {
			path, at := findMarker(t, walDir, 20)
			if at < 4096 {
				t.Fatalf("entry 20 at %d: want it past the first page", at)
			}
			zeroPage(t, path, int64(at))
			return path
		}},
		{"sealed segment with its index zeroed", func(t *testing.T, walDir string) string {
			path, _ := segmentOf(t, walDir, 0)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			zeroPage(t, path, fi.Size()-1) // the index is written at the end
			return path
		}},
		{"tail segment with a zeroed page", func(t *testing.T, walDir string) string {
			path := tailWithEntriesPast(t, walDir, 2*4096+1024)
			zeroPage(t, path, 4096)
			return path
		}},
		{"tail segment with its first page zeroed", func(t *testing.T, walDir string) string {
			path := tailWithEntriesPast(t, walDir, 4096+1024)
			zeroPage(t, path, 0)
			return path
		}},
		{"tail segment with a frame header flipped", func(t *testing.T, walDir string) string {
			path := tailWithEntriesPast(t, walDir, 4096+1024)
			flipByte(t, path, int64(entryFrame(t, walDir, path, n-10))) // its type
			return path
		}},
		{"sealed segment with a flipped byte", func(t *testing.T, walDir string) string {
			path, at := findMarker(t, walDir, marked)
			flipByte(t, path, int64(at+100))
			return path
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fillStore(t, dir, n, marked)
			path := tc.damage(t, filepath.Join(dir, "wal"))
			_, trans := hraft.NewInmemTransport("h1")
			t.Cleanup(func() { trans.Close() })
			cfg := Config{ID: "h1", Dir: dir, Log: mustOpenLog(t), Transport: trans, NoSync: true,
				segmentSize: testSegmentSize}
			fastConfig(&cfg)
			node, err := New(cfg)
			if err == nil {
				node.Close()
				t.Fatal("New started on a damaged log")
			}
			if !errors.Is(err, ErrCorruptLog) || !strings.Contains(err.Error(), path) {
				t.Fatalf("New: %v; want ErrCorruptLog naming %s", err, path)
			}
			t.Logf("New: %v", err)
		})
	}
}

// tailWithEntriesPast returns the path of the tail segment in walDir,
// checking that its entries reach past byte min.
func tailWithEntriesPast(t *testing.T, walDir string, min int) string {
	t.Helper()
	path, sealed := segmentOf(t, walDir, -1)
	if sealed {
		t.Fatal("the last segment is sealed")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if end := recoveredEnd(b); end < min {
		t.Fatalf("the tail's entries end at byte %d: want them past %d", end, min)
	}
	return path
}

// entryFrame returns the offset of entry i's frame header in the segment
// file path: raft-wal's frames are 8-byte aligned, and the entry's
// encoding puts fewer than 8 bytes (its index, term, type and length)
// before its data.
func entryFrame(t *testing.T, walDir, path string, i uint64) int {
	t.Helper()
	f, at := findMarker(t, walDir, i)
	if f != path {
		t.Fatalf("entry %d is in %s, not in %s", i, f, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	start := (at - 8) &^ 7
	if b[start] != frameEntry || b[start+1]|b[start+2]|b[start+3] != 0 {
		t.Fatalf("no entry frame header at byte %d before entry %d", start, i)
	}
	return start
}

// TestTailSegmentZeroedPage: a zeroed page among the tail segment's
// entries, with whole batches after it, is not taken for an append cut
// short: opening the log fails naming the file, rather than dropping the
// entries from the page on.
func TestTailSegmentZeroedPage(t *testing.T) {
	dir := t.TempDir()
	const n = 225
	fillStore(t, dir, n, 5)
	walDir := filepath.Join(dir, "wal")
	path := tailWithEntriesPast(t, walDir, 2*4096+1024)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(make([]byte, 4096), 4096)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = openLogStore(dir, testSegmentSize, true, nil)
	if !errors.Is(err, ErrCorruptLog) || !strings.Contains(err.Error(), path) {
		t.Fatalf("open: %v; want ErrCorruptLog naming %s", err, path)
	}
	t.Logf("open: %v", err)

	// raft-wal alone takes it for a torn append and drops the entries.
	fs := newWalFS(walDir, testSegmentSize, true)
	defer fs.Close() // after w: it waits for the spare segment it makes
	w, err := openRaftWal(walDir, testSegmentSize, fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	last, err := w.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if last >= n {
		t.Fatalf("raft-wal alone recovered up to %d: the damage no longer shows", last)
	}
	t.Logf("raft-wal alone: last index %d of %d", last, n)
}

// TestTailSegmentTornLastBatch: the last batch cut short in ways a crash
// can (its commit frame not written, a sector in its middle not written)
// is an append that was never acknowledged: the log opens with every
// entry before it, takes appends, and opens again.
func TestTailSegmentTornLastBatch(t *testing.T) {
	const n = 220
	cases := []struct {
		name string
		tear func(b []byte, batch, end int) // batch: its first byte; end: past its commit
	}{
		{"commit frame missing", func(b []byte, _, end int) { clear(b[end-8 : end]) }},
		{"last bytes missing", func(b []byte, _, end int) { clear(b[end-300 : end]) }},
		{"a sector in its middle missing", func(b []byte, batch, end int) {
			mid := (batch + (end-batch)/2) &^ 511
			clear(b[mid : mid+512])
		}},
		{"all but its first sector missing", func(b []byte, batch, end int) {
			clear(b[(batch+512)&^511 : end])
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fillStore(t, dir, n, 5)
			walDir := filepath.Join(dir, "wal")
			path, _ := segmentOf(t, walDir, -1)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			before := recoveredEnd(b)
			// The last batch: 4 entries in one append.
			s := openTestStore(t, dir)
			if err := s.StoreLogs(markedLogs(n+1, n+4)); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if b, err = os.ReadFile(path); err != nil {
				t.Fatal(err)
			}
			end := recoveredEnd(b)
			if end-before < 4*300 || before != entryFrame(t, walDir, path, n+1) {
				t.Fatalf("the last batch is at %d-%d: want 4 entries in the tail", before, end)
			}
			tc.tear(b, before, end)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}

			s = openTestStore(t, dir)
			m := newLogModel()
			m.store(markedLogs(1, n))
			checkLog(t, s, m, "torn")
			// Appends go on over what is left of the torn batch (fewer
			// bytes than it), and the log opens again.
			if err := s.StoreLogs(markedLogs(n+1, n+1)); err != nil {
				t.Fatal(err)
			}
			m.store(markedLogs(n+1, n+1))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTestStore(t, dir)
			defer s.Close()
			checkLog(t, s, m, "reopened")
		})
	}
}

// TestWholeBatchAfter: wholeBatchAfter on made-up segment bytes.
func TestWholeBatchAfter(t *testing.T) {
	frame := func(typ byte, payload []byte) []byte {
		b := make([]byte, 8+len(payload)+(8-len(payload)%8)%8)
		b[0] = typ
		binary.LittleEndian.PutUint32(b[4:], uint32(len(payload)))
		copy(b[8:], payload)
		return b
	}
	commit := func(batch []byte) []byte {
		b := make([]byte, 8)
		b[0] = frameCommit
		binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(batch, crcTable))
		return b
	}
	batch := append(frame(frameEntry, []byte("first entry")), frame(frameEntry, []byte("second"))...)
	cases := []struct {
		name  string
		after []byte // bytes after the end
		want  bool
	}{
		{"zeros", nil, false},
		{"a torn batch", batch[:20], false},
		{"a torn batch with its commit", slices.Concat(batch[:16], make([]byte, 8), batch[24:], commit(batch)), false},
		{"empty batches", slices.Concat(commit(nil), commit(nil), commit(nil)), false},
		{"a commit then a whole batch", slices.Concat(commit([]byte("x")), batch, commit(batch)), true},
		{"a whole batch with a bad sum", slices.Concat(commit(nil), batch, commit(batch[1:])), false},
		{"a whole batch cut by the end", slices.Concat(commit(nil), batch), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const end = 64
			data := make([]byte, 4096)
			copy(data[end:], tc.after)
			if _, got := wholeBatchAfter(data[:end+len(tc.after)+64], end); got != tc.want {
				t.Fatalf("wholeBatchAfter = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzTailScan: recoveredEnd and wholeBatchAfter take any bytes without
// panicking, and stay within them.
func FuzzTailScan(f *testing.F) {
	seg := make([]byte, 512)
	binary.LittleEndian.PutUint32(seg, segmentMagic)
	f.Add(seg)
	entry := []byte{frameEntry, 0, 0, 0, 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0}
	f.Add(slices.Concat(seg[:32], entry, []byte{frameCommit, 0, 0, 0, 1, 2, 3, 4}, entry))
	f.Fuzz(func(t *testing.T, data []byte) {
		end := recoveredEnd(data)
		if end < 0 || end > len(data) {
			t.Fatalf("recoveredEnd = %d of %d bytes", end, len(data))
		}
		if at, ok := wholeBatchAfter(data, end); ok && (at < end || at+8 > len(data)) {
			t.Fatalf("wholeBatchAfter = %d, past %d of %d bytes", at, end, len(data))
		}
	})
}
