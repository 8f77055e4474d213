package raft

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

func sameLog(a, b *hraft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

// TestBoltLogReadsRaftBoltDB: a raft.db written by raft-boltdb (the
// directories of earlier builds) opens with its entries and stable store
// as they were, and takes new entries in boltLog's encoding beside them.
//
// testdata/raftboltdb-v2.3.1.db was written by hashicorp/raft-boltdb
// v2.3.1 (NoSync) with StoreLogs(before), SetUint64("CurrentTerm", 3) and
// Set("LastVoteCand", "h2"), before as built below; a fixture, so that the
// module does not need raft-boltdb (and the unmaintained boltdb/bolt it
// brings) only to write it.
func TestBoltLogReadsRaftBoltDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	fixture, err := os.ReadFile(filepath.Join("testdata", "raftboltdb-v2.3.1.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 11))
	before := testLogs(rng, 1, 20, 3, 300)
	before[0].Type = hraft.LogConfiguration
	before[1].AppendedAt = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)

	b, err := openBoltLog(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	after := testLogs(rng, 21, 10, 4, 300)
	if err := b.StoreLogs(after); err != nil {
		t.Fatal(err)
	}
	if first, _ := b.FirstIndex(); first != 1 {
		t.Fatalf("FirstIndex %d", first)
	}
	if last, _ := b.LastIndex(); last != 30 {
		t.Fatalf("LastIndex %d", last)
	}
	for _, want := range append(append([]*hraft.Log{}, before...), after...) {
		var got hraft.Log
		if err := b.GetLog(want.Index, &got); err != nil {
			t.Fatalf("entry %d: %v", want.Index, err)
		}
		if !sameLog(&got, want) {
			t.Fatalf("entry %d is %+v, want %+v", want.Index, got, *want)
		}
	}
	if term, err := b.GetUint64([]byte("CurrentTerm")); err != nil || term != 3 {
		t.Fatalf("CurrentTerm %d, %v", term, err)
	}
	if v, err := b.Get([]byte("LastVoteCand")); err != nil || string(v) != "h2" {
		t.Fatalf("LastVoteCand %q, %v", v, err)
	}
	// hashicorp/raft tells a missing key by this message.
	if _, err := b.GetUint64([]byte("missing")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: %v, want \"not found\"", err)
	}
	var l hraft.Log
	if err := b.GetLog(31, &l); !errors.Is(err, hraft.ErrLogNotFound) {
		t.Fatalf("GetLog(31): %v", err)
	}
}

// TestBoltLogDeleteRange deletes prefixes, suffixes and middles and checks
// exactly which entries remain.
func TestBoltLogDeleteRange(t *testing.T) {
	b, err := openBoltLog(filepath.Join(t.TempDir(), "raft.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rng := rand.New(rand.NewPCG(12, 12))
	if err := b.StoreLogs(testLogs(rng, 1, 500, 1, 50)); err != nil {
		t.Fatal(err)
	}
	present := map[uint64]bool{}
	for i := uint64(1); i <= 500; i++ {
		present[i] = true
	}
	for _, r := range [][2]uint64{{1, 100}, {450, 500}, {200, 210}, {1, 150}, {211, 211}, {600, 700}} {
		if err := b.DeleteRange(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
		for i := r[0]; i <= r[1]; i++ {
			delete(present, i)
		}
		for i := uint64(1); i <= 500; i++ {
			var l hraft.Log
			err := b.GetLog(i, &l)
			if present[i] != (err == nil) {
				t.Fatalf("after deleting %d-%d: entry %d: %v, want present %v", r[0], r[1], i, err, present[i])
			}
		}
	}
	if first, _ := b.FirstIndex(); first != 151 {
		t.Fatalf("FirstIndex %d, want 151", first)
	}
	if last, _ := b.LastIndex(); last != 449 {
		t.Fatalf("LastIndex %d, want 449", last)
	}
}

// BenchmarkBoltLogDeleteRange deletes the first 80,000 of 160,000 entries
// of 100 bytes, as a compaction after a snapshot does:
//
//	go test ./raft -run '^$' -bench BoltLogDeleteRange -benchtime 3x
func BenchmarkBoltLogDeleteRange(b *testing.B) {
	rng := rand.New(rand.NewPCG(13, 13))
	logs := testLogs(rng, 1, 160000, 1, 100)
	for range b.N {
		b.StopTimer()
		bl, err := openBoltLog(filepath.Join(b.TempDir(), "raft.db"), true)
		if err != nil {
			b.Fatal(err)
		}
		if err := bl.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := bl.DeleteRange(1, 80000); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if first, _ := bl.FirstIndex(); first != 80001 {
			b.Fatalf("FirstIndex %d", first)
		}
		bl.Close()
	}
}
