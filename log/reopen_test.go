package log

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCloseAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "comet.db")
	l, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustInit(t, l)
	next := appendN(t, l, 2, "a", 5, t0)
	mustUpdate(t, l, next, func(tx *Tx) error {
		mustAppend(t, tx, "a", "id1", "with id", t0)
		return tx.Put("k", []byte("v"))
	})
	before := dump(t, l)
	snap, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var snapshot bytes.Buffer
	if _, err := snap.WriteTo(&snapshot); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	calls := []struct {
		name string
		call func() error
	}{
		{"Info", func() error { _, err := l.Info("a"); return err }},
		{"Read", func() error { _, _, err := l.Read("a", 1, 10); return err }},
		{"Update", func() error {
			_, err := l.Update(next+1, func(*Tx) error { panic("fn called on a closed log") })
			return err
		}},
		{"Snapshot", func() error { _, err := l.Snapshot(); return err }},
		{"Channels", func() error { return l.Channels(func(string, Info) bool { return true }) }},
		{"Scan", func() error { return l.Scan("", func(string, []byte) {}) }},
		{"Retention", func() error { _, err := l.Retention(); return err }},
		{"Restore", func() error { return l.Restore(bytes.NewReader(snapshot.Bytes())) }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", c.name, err)
		}
	}
	if l.Applied() != 0 || l.Epoch() != "" || l.Get("k") != nil || l.Size() != 0 {
		t.Errorf("accessors after Close: %d, %q, %q, %d; want zero values", l.Applied(), l.Epoch(), l.Get("k"), l.Size())
	}
	if _, err := os.Stat(path + ".restore"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Restore on a closed log left its temporary file: %v", err)
	}

	l2 := mustOpenPath(t, path, true)
	sameDump(t, "after reopen", dump(t, l2), before)
	if applied, err := l2.Update(next, func(*Tx) error { return nil }); applied || err != nil {
		t.Errorf("Update(%d) after reopen = %v, %v; want skipped", next, applied, err)
	}
}

func TestReopenAfterCrash(t *testing.T) {
	dir := t.TempDir()
	l := mustOpenPath(t, filepath.Join(dir, "comet.db"), false)
	mustInit(t, l)
	next := appendN(t, l, 2, "a", 50, t0)
	next = appendN(t, l, next, "b", 3, t0)
	mustUpdate(t, l, next, func(tx *Tx) error {
		mustAppend(t, tx, "a", "id1", "with id", t0.Add(time.Minute))
		if err := tx.DeleteChannel("b", "E1"); err != nil {
			return err
		}
		return tx.Put("k", []byte("v"))
	})
	want := dump(t, l)

	// What a kill -9 leaves: the file as the last commit wrote it, copied
	// while the log is still open and holds its lock.
	raw, err := os.ReadFile(filepath.Join(dir, "comet.db"))
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(t.TempDir(), "comet.db")
	if err := os.WriteFile(crashed, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpenPath(t, crashed, false)
	sameDump(t, "after crash", dump(t, l2), want)

	// Replayed entries are skipped; the next one applies.
	if applied, err := l2.Update(next, func(*Tx) error { return errors.New("replayed") }); applied || err != nil {
		t.Errorf("replay of %d = %v, %v; want skipped", next, applied, err)
	}
	var res Result
	mustUpdate(t, l2, next+1, func(tx *Tx) error {
		if res = mustAppend(t, tx, "a", "id1", "retry", t0.Add(2*time.Minute)); !res.Duplicate {
			t.Errorf("retry after crash is not a duplicate: %+v", res)
		}
		res = mustAppend(t, tx, "a", "", "new", t0.Add(2*time.Minute))
		return nil
	})
	if res.Offset != 52 {
		t.Errorf("first append after crash got offset %d, want 52", res.Offset)
	}
}
