package log

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAppend measures Updates of 100 messages of 128 bytes on one
// channel, with and without fsync on commit. One op is one Update.
func BenchmarkAppend(b *testing.B) {
	const batch, size = 100, 128
	for _, noSync := range []bool{false, true} {
		name := "sync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			l := mustOpenPath(b, filepath.Join(b.TempDir(), "bench.db"), noSync)
			mustInit(b, l)
			data := bytes.Repeat([]byte("x"), size)
			b.SetBytes(batch * size)
			index := uint64(1)
			for b.Loop() {
				index++
				now := t0.Add(time.Duration(index) * time.Millisecond)
				mustUpdate(b, l, index, func(tx *Tx) error {
					for range batch {
						if _, err := tx.Append("bench", "", data, now); err != nil {
							return err
						}
					}
					return nil
				})
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRead measures reads of 100 messages from a channel of 10,000.
func BenchmarkRead(b *testing.B) {
	const total, limit = 10_000, 100
	l := mustOpen(b)
	mustInit(b, l)
	data := bytes.Repeat([]byte("x"), 128)
	mustUpdate(b, l, 2, func(tx *Tx) error {
		for range total {
			if _, err := tx.Append("bench", "", data, t0); err != nil {
				return err
			}
		}
		return nil
	})
	from := uint64(1)
	for b.Loop() {
		_, msgs, err := l.Read("bench", from, limit)
		if err != nil || len(msgs) != limit {
			b.Fatalf("Read(%d): %d messages, %v", from, len(msgs), err)
		}
		from = (from+limit)%(total-limit) + 1
	}
	b.ReportMetric(float64(b.N*limit)/b.Elapsed().Seconds(), "msgs/s")
}
