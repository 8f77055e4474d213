package log

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
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
