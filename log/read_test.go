package log

import (
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
