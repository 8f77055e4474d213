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

// TestOffsetAtTime: the first offset at or after a time, over messages
// spread across many chunks, with equal times in runs, and at the edges
// (before all, after all, an empty or unknown channel, a trimmed start).
func TestOffsetAtTime(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	base := time.Unix(1000, 0).UTC()
	// 3,000 messages over 30 updates; messages of one update share a time,
	// updates are 10 s apart: offset o has time base + ((o-1)/100)*10s.
	for u := range 30 {
		mustUpdate(t, l, uint64(2+u), func(tx *Tx) error {
			for range 100 {
				if _, err := tx.Append("c", "", []byte(`{"n":1}`), base.Add(time.Duration(u)*10*time.Second)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	cases := []struct {
		at   time.Time
		want uint64
	}{
		{base.Add(-time.Hour), 1},
		{base, 1},
		{base.Add(time.Nanosecond), 101},
		{base.Add(10 * time.Second), 101},
		{base.Add(15 * time.Second), 201},
		{base.Add(290 * time.Second), 2901},
		{base.Add(291 * time.Second), 3001}, // after every message: Next
	}
	for _, c := range cases {
		got, info, err := l.OffsetAtTime("c", c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want || info.Next != 3001 {
			t.Errorf("OffsetAtTime(%v) = %d (next %d), want %d", c.at.Sub(base), got, info.Next, c.want)
		}
	}
	if got, info, err := l.OffsetAtTime("empty", base); err != nil || got != 1 || info.Next != 1 {
		t.Fatalf("unknown channel: %d, %+v, %v", got, info, err)
	}
	if _, _, err := l.OffsetAtTime("bad name!", base); err == nil {
		t.Fatal("a bad channel name was searched")
	}
	// Trim to the newest 500 (offsets 2501-3000): older times find First.
	mustUpdate(t, l, 40, func(tx *Tx) error {
		if err := tx.SetRetention([]Rule{{Pattern: "c", MaxMessages: 500}}); err != nil {
			return err
		}
		_, err := tx.Append("c", "", []byte(`{"n":2}`), base.Add(300*time.Second))
		return err
	})
	for _, c := range []struct {
		at   time.Time
		want uint64
	}{{base, 2502}, {base.Add(290 * time.Second), 2901}, {base.Add(300 * time.Second), 3001}} {
		if got, info, err := l.OffsetAtTime("c", c.at); err != nil || got != c.want || info.First != 2502 {
			t.Errorf("after trimming: OffsetAtTime(%v) = %d (first %d), %v; want %d", c.at.Sub(base), got, info.First, err, c.want)
		}
	}
}

// KVGeneration moves with an Update that puts or deletes a key, and only
// then.
func TestKVGeneration(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	g0 := l.KVGeneration()
	mustUpdate(t, l, 2, func(tx *Tx) error {
		_, err := tx.Append("c", "", []byte(`1`), time.Unix(100, 0))
		return err
	})
	if g := l.KVGeneration(); g != g0 {
		t.Fatalf("an append moved it: %d -> %d", g0, g)
	}
	mustUpdate(t, l, 3, func(tx *Tx) error { return tx.Put("k", []byte("v")) })
	g1 := l.KVGeneration()
	if g1 == g0 || string(l.Get("k")) != "v" {
		t.Fatalf("a put: %d -> %d, %q", g0, g1, l.Get("k"))
	}
	mustUpdate(t, l, 4, func(tx *Tx) error { return tx.Put("k", nil) })
	if g := l.KVGeneration(); g == g1 || l.Get("k") != nil {
		t.Fatalf("a delete: %d -> %d", g1, g)
	}
}
