package log

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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

// BenchmarkUpdateMixed models what a hub applies under load: Updates of 256
// messages of 128 bytes spread over 16 channels, every message with a
// publish id, entries one second apart so that ids expire from the
// 10-minute idempotency window at a steady rate (about 150,000 held). One
// op is one Update.
func BenchmarkUpdateMixed(b *testing.B) {
	const batch, chans, size = 256, 16, 128
	names := make([]string, chans)
	for i := range names {
		names[i] = fmt.Sprintf("chat.room-%02d", i)
	}
	for _, noSync := range []bool{false, true} {
		name := "sync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			l := mustOpenPath(b, filepath.Join(b.TempDir(), "bench.db"), noSync)
			mustInit(b, l)
			data := bytes.Repeat([]byte("x"), size)
			ids := make([]string, batch)
			b.SetBytes(batch * size)
			index, seq := uint64(1), 0
			for b.Loop() {
				index++
				for i := range ids {
					seq++
					ids[i] = fmt.Sprintf("pub-%012d", seq)
				}
				now := t0.Add(time.Duration(index) * time.Second)
				mustUpdate(b, l, index, func(tx *Tx) error {
					for i := range batch {
						if _, err := tx.Append(names[i%chans], ids[i], data, now); err != nil {
							return err
						}
					}
					return nil
				})
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
		})
	}
}

// BenchmarkOpenCheck measures the page check that Open runs (checkPages)
// against bbolt's own open of the same file (which walks the same pages to
// rebuild its freelist), on a log of about 256 MiB in chunks of 64 KiB.
func BenchmarkOpenCheck(b *testing.B) {
	path := filepath.Join(b.TempDir(), "channels.db")
	l := mustOpenPath(b, path, true)
	mustInit(b, l)
	data := strings.Repeat("x", 1000)
	next := uint64(2)
	for i := range 4096 {
		mustUpdate(b, l, next, func(tx *Tx) error {
			for range 64 {
				mustAppend(b, tx, fmt.Sprintf("ch%d", i%64), "", `"`+data+`"`, t0)
			}
			return nil
		})
		next++
	}
	b.Logf("file: %d MiB", l.Size()>>20)
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("checkPages", func(b *testing.B) {
		for b.Loop() {
			if err := checkPages(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("boltOpen", func(b *testing.B) {
		for b.Loop() {
			db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			if err := db.Update(func(*bolt.Tx) error { return nil }); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	})
}
