package log

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReadStopsAtMaxReadBytes(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	big := make([]byte, 3<<20) // three of these are over MaxReadBytes
	for i := range big {
		big[i] = 'x'
	}
	mustUpdate(t, l, 2, func(tx *Tx) error {
		for range 3 {
			if _, err := tx.Append("big", "", big, time.Unix(100, 0)); err != nil {
				return err
			}
		}
		return nil
	})
	info, msgs, err := l.Read("big", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || info.Next != 4 {
		t.Fatalf("read %d messages (next %d), want 2: the one that reaches MaxReadBytes ends the page", len(msgs), info.Next)
	}
	if _, msgs, _ = l.Read("big", 3, 10); len(msgs) != 1 || msgs[0].Offset != 3 {
		t.Fatalf("the next page should hold offset 3, got %d messages", len(msgs))
	}
}

func TestSnapshotAppliedOfDamagedFiles(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 7, func(tx *Tx) error {
		_, err := tx.Append("c", "", []byte(`1`), time.Unix(100, 0))
		return err
	})
	snap, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if idx, err := SnapshotApplied(good); err != nil || idx != 7 {
		t.Fatalf("SnapshotApplied(good) = %d, %v; want 7", idx, err)
	}
	raw := buf.Bytes()
	for name, data := range map[string][]byte{
		"truncated": raw[:len(raw)/2],
		"garbage":   bytes.Repeat([]byte{0xab}, len(raw)),
		"empty":     nil,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := SnapshotApplied(p); err == nil {
			t.Errorf("SnapshotApplied(%s) succeeded", name)
		}
	}
}
