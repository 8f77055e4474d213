package log

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// populate gives l a bit of everything: channels, trimmed channels, ids,
// a deleted channel, rules and keys. It applies entries 1 to 5.
func populate(t testing.TB, l *Log) {
	t.Helper()
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error {
		return tx.SetRetention([]Rule{{Pattern: "chat.*", MaxMessages: 5}})
	})
	appendN(t, l, 3, "chat.a", 8, t0)
	mustUpdate(t, l, 4, func(tx *Tx) error {
		mustAppend(t, tx, "news", "id1", "n1", t0)
		mustAppend(t, tx, "news", "id2", "n2", t0.Add(time.Second))
		mustAppend(t, tx, "gone", "", "g", t0)
		return tx.Put("nodes/h1", []byte("127.0.0.1:7001"))
	})
	mustUpdate(t, l, 5, func(tx *Tx) error { return tx.DeleteChannel("gone", "E1") })
}

// takeSnapshot writes a snapshot of l to a buffer.
func takeSnapshot(t testing.TB, l *Log) []byte {
	t.Helper()
	s, err := l.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer s.Release()
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	return buf.Bytes()
}

// later is what happens after the snapshot in TestSnapshotRoundTrip,
// entries 6 to 26: it grows the file well past bbolt's first memory map
// (32 KiB) and changes every kind of record. It may run off the test's
// goroutine, so it returns errors rather than failing the test.
func later(l *Log) error {
	big := bytes.Repeat([]byte("x"), 1024)
	update := func(index uint64, fn func(tx *Tx) error) error {
		applied, err := l.Update(index, fn)
		if err == nil && !applied {
			err = fmt.Errorf("entry %d skipped", index)
		}
		return err
	}
	for i := range uint64(20) {
		err := update(6+i, func(tx *Tx) error {
			for j := range 50 {
				if _, err := tx.Append("bulk", "", big, t0.Add(time.Duration(j)*time.Millisecond)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return update(26, func(tx *Tx) error {
		for _, m := range [][2]string{{"chat.a", ""}, {"news", "id1"}} {
			if _, err := tx.Append(m[0], m[1], []byte("later"), t0); err != nil {
				return err
			}
		}
		if err := tx.DeleteChannel("news", "E2"); err != nil {
			return err
		}
		if err := tx.SetRetention(nil); err != nil {
			return err
		}
		return tx.Put("nodes/h1", nil)
	})
}

func mustLater(t testing.TB, l *Log) {
	t.Helper()
	if err := later(l); err != nil {
		t.Fatalf("later updates: %v", err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	l := mustOpen(t)
	populate(t, l)
	before := dump(t, l)

	s, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()

	// Updates go on while the snapshot is held. bbolt cannot remap its file
	// while a read transaction is open, so a write that outgrows the map
	// would wait for Release; run them aside so that a regression fails
	// here instead of hanging.
	done := make(chan error, 1)
	go func() { done <- later(l) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("later updates: %v", err)
		}
	case <-time.After(time.Minute):
		s.Release()
		<-done
		t.Fatal("Updates blocked while a snapshot was held")
	}
	after := dump(t, l)
	if after.Applied != 26 {
		t.Fatalf("Applied = %d after the later updates, want 26", after.Applied)
	}

	// The snapshot is the state at its start.
	if got := s.Applied(); got != 5 {
		t.Errorf("Snapshot.Applied = %d, want 5", got)
	}
	var buf bytes.Buffer
	n, err := s.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	s.Release()
	s.Release() // idempotent

	// Restore replaces whatever the second log held, even a later index.
	l2 := mustOpen(t)
	mustInit(t, l2)
	appendN(t, l2, 100, "stale", 3, t0)
	if err := l2.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	sameDump(t, "restored", dump(t, l2), before)

	// The restored log goes on from there like the original.
	mustLater(t, l2)
	sameDump(t, "restored, then the same updates", dump(t, l2), after)
}

func TestRestoreBad(t *testing.T) {
	src := mustOpen(t)
	populate(t, src)
	mustLater(t, src)
	good := takeSnapshot(t, src)

	noBuckets := filepath.Join(t.TempDir(), "plain.db")
	db, err := bolt.Open(noBuckets, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("other"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	plain, err := os.ReadFile(noBuckets)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 64<<10)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	pageSize := os.Getpagesize()

	tests := []struct {
		name    string
		data    []byte
		corrupt bool // the error wraps ErrCorrupt
	}{
		{"empty", nil, false},
		{"text", []byte("not a bbolt file"), false},
		{"random", random, false},
		{"bbolt file without the log's buckets", plain, true},
		{"meta pages only", good[:2*pageSize], true},
		{"truncated in half", good[:len(good)/2], true},
		{"last page missing", good[:len(good)-pageSize], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustOpen(t)
			populate(t, l)
			before := dump(t, l)

			err := l.Restore(bytes.NewReader(tt.data))
			if err == nil {
				t.Fatal("Restore succeeded")
			}
			if tt.corrupt && !errors.Is(err, ErrCorrupt) {
				t.Errorf("Restore: %v, want ErrCorrupt", err)
			}
			sameDump(t, "after a failed restore", dump(t, l), before)
			if _, err := os.Stat(l.cfg.Path + ".restore"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temporary file left behind: %v", err)
			}
			// Still usable, and a good snapshot still restores.
			appendN(t, l, 6, "news", 1, t0)
			if err := l.Restore(bytes.NewReader(good)); err != nil {
				t.Fatalf("Restore of a good snapshot after a bad one: %v", err)
			}
			sameDump(t, "good restore", dump(t, l), dump(t, src))
		})
	}
}
