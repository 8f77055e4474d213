package log

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// writeBolt makes a bbolt file at path with fn.
func writeBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// layout1 writes what the log wrote before chunks: a message, an id and an
// expiry record per message, and no sys/layout.
func layout1(tx *bolt.Tx) error {
	sys, err := tx.CreateBucket(bucketSys)
	if err != nil {
		return err
	}
	chans, err := tx.CreateBucket(bucketChannels)
	if err != nil {
		return err
	}
	for k, v := range map[string][]byte{"applied": be(3), "epoch": []byte(epoch0), "clock": be(uint64(t0.UnixNano()))} {
		if err := sys.Put([]byte(k), v); err != nil {
			return err
		}
	}
	b, err := chans.CreateBucket([]byte("a"))
	if err != nil {
		return err
	}
	meta := append(append(be(1), be(2)...), epoch0...)
	if err := b.Put(keyMeta, meta); err != nil {
		return err
	}
	recs := map[string][2][]byte{
		"m": {be(1), append(be(uint64(t0.UnixNano())), `"hi"`...)},
		"i": {[]byte("id1"), append(be(1), be(uint64(t0.UnixNano()))...)},
		"x": {append(be(uint64(t0.UnixNano())), "id1"...), nil},
	}
	for name, kv := range recs {
		sub, err := b.CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		if err := sub.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

func TestOldLayoutRefused(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.db")
	raw := writeBolt(t, old, layout1)

	_, err := Open(Config{Path: old, NoSync: true})
	if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "layout 1") {
		t.Fatalf("Open of a layout 1 file: %v, want ErrLayout naming layout 1", err)
	}
	if after, _ := os.ReadFile(old); !bytes.Equal(after, raw) {
		t.Error("Open changed the refused file")
	}

	// A layout from the future too.
	future := filepath.Join(dir, "future.db")
	writeBolt(t, future, func(tx *bolt.Tx) error {
		if err := layout1(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketSys).Put(keyLayout, be(layoutVersion+1))
	})
	if _, err := Open(Config{Path: future, NoSync: true}); !errors.Is(err, ErrLayout) {
		t.Errorf("Open of a layout %d file: %v, want ErrLayout", layoutVersion+1, err)
	}

	// Restore refuses an old snapshot and keeps the log it had.
	l := mustOpen(t)
	populate(t, l)
	before := dump(t, l)
	if err := l.Restore(bytes.NewReader(raw)); !errors.Is(err, ErrLayout) {
		t.Errorf("Restore of a layout 1 snapshot: %v, want ErrLayout", err)
	}
	sameDump(t, "after refusing a snapshot", dump(t, l), before)

	// A new file is written in this layout, and opens again.
	path := filepath.Join(dir, "new.db")
	l2, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	writeBolt(t, path, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSys).Get(keyLayout); u64(v) != layoutVersion {
			t.Errorf("sys/layout of a new log = %x, want %d", v, layoutVersion)
		}
		return nil
	})
	l3 := mustOpenPath(t, path, true)
	if l3.Applied() != 0 {
		t.Errorf("Applied = %d", l3.Applied())
	}
}

// toLayout2 rewrites a log file as layout 2 wrote it: every chunk a record
// of its channel's message bucket, sys/layout 2.
func toLayout2(t *testing.T, path string) {
	t.Helper()
	writeBolt(t, path, func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketChannels).ForEachBucket(func(ch []byte) error {
			mb := tx.Bucket(bucketChannels).Bucket(ch).Bucket(bucketMsgs)
			var keys [][]byte
			if err := mb.ForEachBucket(func(k []byte) error {
				keys = append(keys, bytes.Clone(k))
				return nil
			}); err != nil {
				return err
			}
			for _, k := range keys {
				v := bytes.Clone(mb.Bucket(k).Get(chunkKey))
				if err := mb.DeleteBucket(k); err != nil {
					return err
				}
				if err := mb.Put(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketSys).Put(keyLayout, be(layoutChunkRecords))
	})
}

// chunkKinds counts the chunks of ch stored as records and as buckets.
func chunkKinds(t *testing.T, l *Log, ch string) (records, buckets int) {
	t.Helper()
	err := l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChannels).Bucket([]byte(ch)).Bucket(bucketMsgs).ForEach(func(k, v []byte) error {
			if v != nil {
				records++
			} else {
				buckets++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, buckets
}

// TestLayout2Read: a file of layout 2 (chunks as records) opens, is marked
// layout 3, reads as before, takes new chunks as buckets beside the old
// records, and retention deletes both kinds; a layout 2 snapshot restores.
func TestLayout2Read(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "two.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	next := uint64(2)
	for range 3 {
		next = appendN(t, l, next, "a", 10, t0)
	}
	publish(t, l, next, pub{"b", "k1", 0}, pub{"b", "k2", 0})
	next++
	before := dump(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	toLayout2(t, path)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	l, err = Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatalf("Open of a layout 2 file: %v", err)
	}
	defer func() { l.Close() }()
	if r, b := chunkKinds(t, l, "a"); r != 3 || b != 0 {
		t.Fatalf("channel a: %d records, %d buckets; want the 3 records as they were", r, b)
	}
	sameDump(t, "layout 2, opened", logical(dump(t, l)), logical(before))
	if got := answers(t, l, pub{"b", "k1", 0}, pub{"b", "k3", 0}); !slices.Equal(got, []uint64{1, 0}) {
		t.Errorf("ids after opening layout 2: %v, want [1 0]", got)
	}

	// New chunks are buckets; reads cross both kinds.
	next = appendN(t, l, next, "a", 10, t0)
	if r, b := chunkKinds(t, l, "a"); r != 3 || b != 1 {
		t.Fatalf("after an append: %d records, %d buckets; want 3 and 1", r, b)
	}
	if _, msgs := readAll(t, l, "a"); !slices.Equal(offsets(msgs), span(1, 40)) {
		t.Fatalf("channel a reads %v", offsets(msgs))
	}
	// Retention to the last 15: the first two records go, the third stays.
	mustUpdate(t, l, next, func(tx *Tx) error { return tx.SetRetention([]Rule{{Pattern: "a", MaxMessages: 15}}) })
	next++
	next = appendN(t, l, next, "a", 1, t0)
	if r, b := chunkKinds(t, l, "a"); r != 1 || b != 2 {
		t.Fatalf("after retention: %d records, %d buckets; want 1 and 2", r, b)
	}
	if _, msgs := readAll(t, l, "a"); !slices.Equal(offsets(msgs), span(27, 41)) {
		t.Fatalf("channel a after retention reads %v", offsets(msgs))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	writeBolt(t, path, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSys).Get(keyLayout); u64(v) != layoutVersion {
			t.Errorf("sys/layout after opening a layout 2 file = %x, want %d", v, layoutVersion)
		}
		return nil
	})

	// A layout 2 snapshot restores.
	l2 := mustOpen(t)
	if err := l2.Restore(bytes.NewReader(raw)); err != nil {
		t.Fatalf("Restore of a layout 2 snapshot: %v", err)
	}
	sameDump(t, "layout 2 snapshot, restored", logical(dump(t, l2)), logical(before))
}
