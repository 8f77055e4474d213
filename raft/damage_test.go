package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
