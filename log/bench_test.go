package log

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
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

// BenchmarkIDMemory measures what the idempotency index costs per id: Go
// heap (HeapAlloc after a GC, before and after) and channels.db growth,
// against the same messages published without ids. It publishes n ids of
// 16 bytes over 16 channels of 12 bytes, 1,000 to an Update, 10,000 a
// second of entry time, so that none expires. Run it once:
//
//	go test -run '^$' -bench IDMemory -benchtime 1x ./log
func BenchmarkIDMemory(b *testing.B) {
	for _, n := range []int{1_000_000, 4_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				withIDs, heap := fillIDs(b, n, true)
				without, _ := fillIDs(b, n, false)
				b.ReportMetric(heap/float64(n), "heapB/id")
				b.ReportMetric(float64(withIDs-without)/float64(n), "diskB/id")
			}
		})
	}
}

// fillIDs publishes n messages (with ids or without) to a new log and
// returns the file's size and the heap the log holds after a GC beyond
// what it held empty.
func fillIDs(b *testing.B, n int, ids bool) (size int64, heap float64) {
	b.Helper()
	const perUpdate, chans = 1000, 16
	names := make([]string, chans)
	for i := range names {
		names[i] = fmt.Sprintf("chat.room-%02d", i)
	}
	l := mustOpenPath(b, filepath.Join(b.TempDir(), "channels.db"), true)
	mustInit(b, l)
	mustUpdate(b, l, 2, func(tx *Tx) error { return tx.SetMaxIDs(0) })
	before := liveHeap()
	data := []byte(`"x"`)
	id := make([]byte, 0, 16)
	index := uint64(2)
	for i := 0; i < n; i += perUpdate {
		index++
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond) // 10,000/s
		mustUpdate(b, l, index, func(tx *Tx) error {
			for j := i; j < min(i+perUpdate, n); j++ {
				var key string
				if ids {
					id = fmt.Appendf(id[:0], "gw1.%012d", j)
					key = string(id)
				}
				if _, err := tx.Append(names[j%chans], key, data, now); err != nil {
					return err
				}
			}
			return nil
		})
	}
	heap = float64(liveHeap() - before)
	if ids && l.HeldIDs() != n {
		b.Fatalf("HeldIDs = %d, want %d", l.HeldIDs(), n)
	}
	return l.Size(), heap
}

// liveHeap returns the heap in use after a GC.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIDFlood models a hub's index at the rate: 100,000
// publishes a second of entry time, each with a new id of 16 bytes, over 16
// channels, 1,000 to an Update, for 12 minutes of entry time (past the
// window), under DefaultMaxIDs. It reports the most ids held, the live
// heap at the end (after a GC) beyond the empty log's, the file's size,
// and how many publishes were stored and refused. Run it once:
//
//	go test -run '^$' -bench IDFlood -benchtime 1x ./log
func BenchmarkIDFlood(b *testing.B) {
	const (
		rate      = 100_000 // ids a second of entry time
		perUpdate = 1000
		chans     = 16
		span      = 12 * time.Minute
	)
	names := make([]string, chans)
	for i := range names {
		names[i] = fmt.Sprintf("chat.room-%02d", i)
	}
	for b.Loop() {
		l := mustOpenPath(b, filepath.Join(b.TempDir(), "channels.db"), true)
		mustInit(b, l)
		before := liveHeap()
		data := []byte(`"x"`)
		id := make([]byte, 0, 16)
		index, seq := uint64(1), 0
		var stored, refused, most int
		step := time.Duration(perUpdate) * time.Second / rate
		for now := t0; now.Before(t0.Add(span)); now = now.Add(step) {
			index++
			mustUpdate(b, l, index, func(tx *Tx) error {
				for j := range perUpdate {
					seq++
					id = fmt.Appendf(id[:0], "gw1.%012d", seq)
					res, err := tx.Append(names[j%chans], string(id), data, now)
					if err != nil {
						return err
					}
					if res.Err != nil {
						refused++
					} else {
						stored++
					}
				}
				return nil
			})
			most = max(most, l.HeldIDs())
		}
		heap := liveHeap() - before
		b.ReportMetric(float64(most), "most-held")
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(l.Size())/(1<<20), "file-MiB")
		b.ReportMetric(float64(stored), "stored")
		b.ReportMetric(float64(refused), "refused")
	}
}
