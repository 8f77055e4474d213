package log

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the base of every timestamp in these tests: time comes from the
// caller, never from the clock.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const epoch0 = "E0"

// mustOpen opens a fresh log in a temporary directory and closes it when
// the test ends.
func mustOpen(t testing.TB) *Log {
	t.Helper()
	return mustOpenPath(t, filepath.Join(t.TempDir(), "comet.db"), true)
}

// mustOpenPath opens the log at path and closes it when the test ends.
func mustOpenPath(t testing.TB, path string, noSync bool) *Log {
	t.Helper()
	l, err := Open(Config{Path: path, NoSync: noSync})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// mustUpdate applies fn as entry index and fails unless it was applied.
func mustUpdate(t testing.TB, l *Log, index uint64, fn func(tx *Tx) error) {
	t.Helper()
	applied, err := l.Update(index, fn)
	if err != nil {
		t.Fatalf("Update(%d): %v", index, err)
	}
	if !applied {
		t.Fatalf("Update(%d) was skipped; Applied = %d", index, l.Applied())
	}
}

// mustInit sets the cluster epoch to epoch0 as entry 1.
func mustInit(t testing.TB, l *Log) {
	t.Helper()
	mustUpdate(t, l, 1, func(tx *Tx) error { return tx.InitEpoch(epoch0) })
}

// mustAppend appends inside an Update and fails on a storage error or a
// refused message.
func mustAppend(t testing.TB, tx *Tx, ch, id, data string, now time.Time) Result {
	t.Helper()
	res, err := tx.Append(ch, id, []byte(data), now)
	if err != nil {
		t.Fatalf("Append(%q, %q): %v", ch, id, err)
	}
	if res.Err != nil {
		t.Fatalf("Append(%q, %q) refused: %v", ch, id, res.Err)
	}
	return res
}

// appendN appends n messages "ch-1", "ch-2", ... to ch in one Update, one
// second apart from start, and returns the next index.
func appendN(t testing.TB, l *Log, index uint64, ch string, n int, start time.Time) uint64 {
	t.Helper()
	mustUpdate(t, l, index, func(tx *Tx) error {
		for i := range n {
			mustAppend(t, tx, ch, "", fmt.Sprintf("%s-%d", ch, i+1), start.Add(time.Duration(i)*time.Second))
		}
		return nil
	})
	return index + 1
}

func mustInfo(t testing.TB, l *Log, ch string) Info {
	t.Helper()
	info, err := l.Info(ch)
	if err != nil {
		t.Fatalf("Info(%q): %v", ch, err)
	}
	return info
}

// readAll reads every stored message of ch.
func readAll(t testing.TB, l *Log, ch string) (Info, []Message) {
	t.Helper()
	info, msgs, err := l.Read(ch, 0, 1<<30)
	if err != nil {
		t.Fatalf("Read(%q): %v", ch, err)
	}
	return info, msgs
}

func offsets(msgs []Message) []uint64 {
	out := []uint64{}
	for _, m := range msgs {
		out = append(out, m.Offset)
	}
	return out
}

func span(from, to uint64) []uint64 {
	out := []uint64{}
	for o := from; o <= to; o++ {
		out = append(out, o)
	}
	return out
}

// logDump is everything a log holds, read through its API, plus the ids
// stored with the messages and held by the idempotency index, plus every key
// and value of the bbolt file (Raw). Logs that applied the same entries
// grouped differently into Updates hold the same except Raw (see logical).
type logDump struct {
	Applied  uint64
	Epoch    string
	Rules    []Rule
	KV       []string
	Channels []chanDump
	IDs      []string // channel/id=offset@unix nanos, held by the index
	Held     int      // HeldIDs
	MaxIDs   uint64
	Raw      []string
}

type chanDump struct {
	Name   string
	Info   Info
	Msgs   []string // offset/unix nanos/data
	Stored []string // offset/id of the messages from First on, as stored
}

// logical is d without its raw records: what must not depend on how entries
// were grouped into Updates (chunks follow Updates).
func logical(d logDump) logDump {
	d.Raw = nil
	return d
}

func dump(t testing.TB, l *Log) logDump {
	t.Helper()
	d := logDump{Applied: l.Applied(), Epoch: l.Epoch(), MaxIDs: l.MaxIDs()}
	var err error
	if d.Rules, err = l.Retention(); err != nil {
		t.Fatalf("Retention: %v", err)
	}
	if err := l.Scan("", func(k string, v []byte) { d.KV = append(d.KV, k+"="+string(v)) }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	var names []string
	err = l.Channels(func(name string, info Info) bool {
		names = append(names, name)
		d.Channels = append(d.Channels, chanDump{Name: name, Info: info})
		return true
	})
	if err != nil {
		t.Fatalf("Channels: %v", err)
	}
	for i, name := range names {
		info, msgs := readAll(t, l, name)
		if info != d.Channels[i].Info {
			t.Fatalf("channel %s: Read reports %+v, Channels %+v", name, info, d.Channels[i].Info)
		}
		for _, m := range msgs {
			d.Channels[i].Msgs = append(d.Channels[i].Msgs, fmt.Sprintf("%d/%d/%s", m.Offset, m.Time.UnixNano(), m.Data))
		}
		d.Channels[i].Stored = storedIDs(t, l, name)
	}
	d.IDs, d.Held = indexDump(t, l)
	d.Raw = rawDump(t, l)
	return d
}

// indexDump lists what the idempotency index holds, after checking that it
// is what a rebuild from the committed state gives.
func indexDump(t testing.TB, l *Log) ([]string, int) {
	t.Helper()
	l.mu.RLock()
	defer l.mu.RUnlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	list := func(x *idIndex) []string {
		var out []string
		perChan := make(map[string]int)
		x.each(func(ch, id string, r idRec) {
			out = append(out, fmt.Sprintf("%s/%s=%d@%d", ch, id, r.off, r.t))
			perChan[ch]++
		})
		if int64(len(out)) != x.n.Load() {
			t.Fatalf("index counts %d ids, holds %d", x.n.Load(), len(out))
		}
		for ch, c := range x.chans {
			if c.held != perChan[ch] {
				t.Fatalf("index counts %d ids of %q, holds %d", c.held, ch, perChan[ch])
			}
		}
		slices.Sort(out)
		return out
	}
	got := list(l.ids)
	rebuilt := newIDIndex()
	if err := l.db.View(rebuilt.load); err != nil {
		t.Fatalf("rebuild the index: %v", err)
	}
	if want := list(rebuilt); !slices.Equal(got, want) {
		t.Fatalf("the index disagrees with the committed state:\n held %q\n rebuilt %q", got, want)
	}
	return got, len(got)
}

// storedIDs decodes the chunks of ch and lists offset/id of every message
// from First on.
func storedIDs(t testing.TB, l *Log, ch string) []string {
	t.Helper()
	var out []string
	err := l.view(func(tx *bolt.Tx) error {
		info, b, err := channelInfo(tx, ch)
		if err != nil || b == nil {
			return err
		}
		next := info.First
		mb := b.Bucket(bucketMsgs)
		return mb.ForEach(func(k, v []byte) error {
			r, err := openChunk(k, chunkValue(mb, k, v))
			if err != nil {
				return err
			}
			for r.more() {
				m, err := r.next()
				if err != nil {
					return err
				}
				if m.off < info.First {
					continue
				}
				if m.off != next {
					return fmt.Errorf("chunk %d holds offset %d, want %d", u64(k), m.off, next)
				}
				next++
				out = append(out, fmt.Sprintf("%d/%s", m.off, m.id))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("stored ids of %s: %v", ch, err)
	}
	return out
}

// rawDump lists every bucket, key and value of the bbolt file.
func rawDump(t testing.TB, l *Log) []string {
	t.Helper()
	var out []string
	var walk func(path string, b *bolt.Bucket) error
	walk = func(path string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			p := path + "/" + hex.EncodeToString(k)
			if v == nil {
				out = append(out, p+"/")
				return walk(p, b.Bucket(k))
			}
			out = append(out, p+"="+hex.EncodeToString(v))
			return nil
		})
	}
	err := l.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out = append(out, string(name)+"/")
			return walk(string(name), b)
		})
	})
	if err != nil {
		t.Fatalf("raw dump: %v", err)
	}
	return out
}

// sameDump fails the test when two dumps differ, naming the first
// difference.
func sameDump(t testing.TB, what string, got, want logDump) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	if got.Applied != want.Applied || got.Epoch != want.Epoch {
		t.Fatalf("%s: Applied/Epoch = %d/%q, want %d/%q", what, got.Applied, got.Epoch, want.Applied, want.Epoch)
	}
	if !reflect.DeepEqual(got.Rules, want.Rules) {
		t.Fatalf("%s: rules = %+v, want %+v", what, got.Rules, want.Rules)
	}
	if !slices.Equal(got.KV, want.KV) {
		t.Fatalf("%s: kv = %q, want %q", what, got.KV, want.KV)
	}
	for i := range min(len(got.Channels), len(want.Channels)) {
		g, w := got.Channels[i], want.Channels[i]
		if g.Name != w.Name || g.Info != w.Info {
			t.Fatalf("%s: channel %d is %s %+v, want %s %+v", what, i, g.Name, g.Info, w.Name, w.Info)
		}
		for j := range min(len(g.Msgs), len(w.Msgs)) {
			if g.Msgs[j] != w.Msgs[j] {
				t.Fatalf("%s: %s: message %s, want %s", what, g.Name, g.Msgs[j], w.Msgs[j])
			}
		}
		if len(g.Msgs) != len(w.Msgs) {
			t.Fatalf("%s: %s: %d messages, want %d", what, g.Name, len(g.Msgs), len(w.Msgs))
		}
	}
	if len(got.Channels) != len(want.Channels) {
		t.Fatalf("%s: %d channels, want %d", what, len(got.Channels), len(want.Channels))
	}
	for i := range got.Channels {
		if g, w := got.Channels[i].Stored, want.Channels[i].Stored; !slices.Equal(g, w) {
			t.Fatalf("%s: %s: stored ids %q, want %q", what, got.Channels[i].Name, g, w)
		}
	}
	if !slices.Equal(got.IDs, want.IDs) || got.Held != want.Held {
		t.Fatalf("%s: index holds %d: %q, want %d: %q", what, got.Held, got.IDs, want.Held, want.IDs)
	}
	for i := range min(len(got.Raw), len(want.Raw)) {
		if got.Raw[i] != want.Raw[i] {
			t.Fatalf("%s: raw record %d = %s, want %s", what, i, got.Raw[i], want.Raw[i])
		}
	}
	t.Fatalf("%s: %d raw records, want %d", what, len(got.Raw), len(want.Raw))
}

func TestOpen(t *testing.T) {
	if _, err := Open(Config{}); err == nil {
		t.Fatal("Open without Path succeeded")
	}
	// Open creates missing directories.
	path := filepath.Join(t.TempDir(), "a", "b", "comet.db")
	l := mustOpenPath(t, path, true)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("log file: %v", err)
	}
	if got := l.Applied(); got != 0 {
		t.Errorf("Applied of a new log = %d, want 0", got)
	}
	if got := l.Epoch(); got != "" {
		t.Errorf("Epoch of a new log = %q, want empty", got)
	}
	if l.Size() <= 0 {
		t.Errorf("Size = %d, want > 0", l.Size())
	}
}

func TestAppendDenseOffsets(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)

	// Channels are numbered independently, within one Update and across
	// Updates.
	var got []Result
	mustUpdate(t, l, 2, func(tx *Tx) error {
		for _, ch := range []string{"a", "b", "a", "a", "b"} {
			got = append(got, mustAppend(t, tx, ch, "", "x", t0))
		}
		return nil
	})
	mustUpdate(t, l, 3, func(tx *Tx) error {
		for _, ch := range []string{"b", "c", "a"} {
			got = append(got, mustAppend(t, tx, ch, "", "y", t0.Add(time.Second)))
		}
		return nil
	})
	want := []Result{
		{Channel: "a", Offset: 1, Epoch: epoch0},
		{Channel: "b", Offset: 1, Epoch: epoch0},
		{Channel: "a", Offset: 2, Epoch: epoch0},
		{Channel: "a", Offset: 3, Epoch: epoch0},
		{Channel: "b", Offset: 2, Epoch: epoch0},
		{Channel: "b", Offset: 3, Epoch: epoch0},
		{Channel: "c", Offset: 1, Epoch: epoch0},
		{Channel: "a", Offset: 4, Epoch: epoch0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("results:\n got %+v\nwant %+v", got, want)
	}
	for ch, next := range map[string]uint64{"a": 5, "b": 4, "c": 2} {
		want := Info{Epoch: epoch0, First: 1, Next: next}
		if info := mustInfo(t, l, ch); info != want {
			t.Errorf("Info(%s) = %+v, want %+v", ch, info, want)
		}
		info, msgs := readAll(t, l, ch)
		if info != want {
			t.Errorf("Read(%s) info = %+v, want %+v", ch, info, want)
		}
		if got := offsets(msgs); !slices.Equal(got, span(1, next-1)) {
			t.Errorf("Read(%s) offsets = %v", ch, got)
		}
	}
	if got := l.Applied(); got != 3 {
		t.Errorf("Applied = %d, want 3", got)
	}
}

func TestMessageContents(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	data := []byte(`{"k":"v"}`)
	at := time.Date(2025, 6, 1, 14, 0, 0, 123456789, time.FixedZone("X", 2*3600))
	mustUpdate(t, l, 2, func(tx *Tx) error {
		if _, err := tx.Append("a", "", data, at); err != nil {
			return err
		}
		data[0] = 'X' // Append must have copied it
		_, err := tx.Append("a", "", nil, at)
		return err
	})
	_, msgs := readAll(t, l, "a")
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2", len(msgs))
	}
	if string(msgs[0].Data) != `{"k":"v"}` {
		t.Errorf("data = %q", msgs[0].Data)
	}
	if !msgs[0].Time.Equal(at) || msgs[0].Time.Location() != time.UTC {
		t.Errorf("time = %v, want %v in UTC", msgs[0].Time, at)
	}
	if len(msgs[1].Data) != 0 {
		t.Errorf("empty message has data %q", msgs[1].Data)
	}
	// The returned data belongs to the caller.
	msgs[0].Data[0] = 'Z'
	if _, again := readAll(t, l, "a"); string(again[0].Data) != `{"k":"v"}` {
		t.Errorf("after changing a read message, stored data = %q", again[0].Data)
	}
}

func TestRead(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	appendN(t, l, 2, "a", 10, t0)
	full := Info{Epoch: epoch0, First: 1, Next: 11}

	tests := []struct {
		name  string
		from  uint64
		limit int
		want  []uint64
	}{
		{"from 1", 1, 3, span(1, 3)},
		{"from 0 starts at First", 0, 2, span(1, 2)},
		{"middle", 4, 3, span(4, 6)},
		{"limit past the end", 8, 100, span(8, 10)},
		{"exactly the last", 10, 1, span(10, 10)},
		{"at Next", 11, 10, nil},
		{"beyond Next", 100, 10, nil},
		{"limit 0", 1, 0, nil},
		{"negative limit", 1, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, msgs, err := l.Read("a", tt.from, tt.limit)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if info != full {
				t.Errorf("info = %+v, want %+v", info, full)
			}
			if got := offsets(msgs); !slices.Equal(got, tt.want) {
				t.Errorf("offsets = %v, want %v", got, tt.want)
			}
			for _, m := range msgs {
				if want := fmt.Sprintf("a-%d", m.Offset); string(m.Data) != want {
					t.Errorf("offset %d: data %q, want %q", m.Offset, m.Data, want)
				}
			}
		})
	}

	// Below First (after trimming) the read starts at First.
	mustUpdate(t, l, 3, func(tx *Tx) error {
		if err := tx.SetRetention([]Rule{{Pattern: "a", MaxMessages: 4}}); err != nil {
			return err
		}
		return tx.Sweep(t0)
	})
	info, msgs, err := l.Read("a", 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Epoch: epoch0, First: 7, Next: 11}); info != want {
		t.Errorf("info after trim = %+v, want %+v", info, want)
	}
	if got := offsets(msgs); !slices.Equal(got, span(7, 8)) {
		t.Errorf("read from below First: offsets %v, want [7 8]", got)
	}
}

func TestUpdateSkipsApplied(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 5, func(tx *Tx) error { return tx.Put("k", []byte("5")) })

	for _, index := range []uint64{0, 1, 4, 5} {
		called := false
		applied, err := l.Update(index, func(tx *Tx) error {
			called = true
			return tx.Put("k", []byte("again"))
		})
		if err != nil || applied || called {
			t.Errorf("Update(%d) = %v, %v, fn called %v; want skipped", index, applied, err, called)
		}
	}
	if got := string(l.Get("k")); got != "5" {
		t.Errorf("k = %q after skipped updates, want 5", got)
	}
	if got := l.Applied(); got != 5 {
		t.Errorf("Applied = %d, want 5", got)
	}
	// Gaps in indexes are fine: Raft has entries that do not reach the log.
	mustUpdate(t, l, 9, func(tx *Tx) error { return nil })
	if got := l.Applied(); got != 9 {
		t.Errorf("Applied = %d, want 9", got)
	}
}

func TestUpdateErrorRollsBack(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	appendN(t, l, 2, "a", 2, t0)
	before := dump(t, l)

	errBoom := errors.New("boom")
	applied, err := l.Update(3, func(tx *Tx) error {
		mustAppend(t, tx, "a", "id1", "lost", t0)
		mustAppend(t, tx, "new", "", "lost", t0)
		if err := tx.DeleteChannel("a", "E9"); err != nil {
			return err
		}
		if err := tx.SetRetention([]Rule{{Pattern: "*", MaxMessages: 1}}); err != nil {
			return err
		}
		if err := tx.Put("k", []byte("v")); err != nil {
			return err
		}
		return fmt.Errorf("apply: %w", errBoom)
	})
	if !errors.Is(err, errBoom) || applied {
		t.Fatalf("Update = %v, %v; want false and errBoom", applied, err)
	}
	sameDump(t, "after a failed update", dump(t, l), before)

	// The index was not recorded, so the entry can be applied again.
	var res Result
	mustUpdate(t, l, 3, func(tx *Tx) error {
		res = mustAppend(t, tx, "a", "id1", "kept", t0)
		return nil
	})
	if res.Offset != 3 || res.Duplicate {
		t.Errorf("append after rollback = %+v, want offset 3, not a duplicate", res)
	}
}

func TestNoEpoch(t *testing.T) {
	l := mustOpen(t)
	if _, err := l.Info("a"); !errors.Is(err, ErrNoEpoch) {
		t.Errorf("Info before InitEpoch: %v, want ErrNoEpoch", err)
	}
	if _, _, err := l.Read("a", 1, 10); !errors.Is(err, ErrNoEpoch) {
		t.Errorf("Read before InitEpoch: %v, want ErrNoEpoch", err)
	}
	// Appending before the epoch is a storage error and rolls back.
	applied, err := l.Update(1, func(tx *Tx) error {
		_, err := tx.Append("a", "", []byte("x"), t0)
		return err
	})
	if !errors.Is(err, ErrNoEpoch) || applied {
		t.Errorf("Append before InitEpoch: %v, %v; want ErrNoEpoch", applied, err)
	}
	if l.Applied() != 0 {
		t.Errorf("Applied = %d after a failed update", l.Applied())
	}
	// An empty epoch does not set it.
	mustUpdate(t, l, 1, func(tx *Tx) error { return tx.InitEpoch("") })
	if _, err := l.Info("a"); !errors.Is(err, ErrNoEpoch) {
		t.Errorf("Info after InitEpoch(\"\"): %v, want ErrNoEpoch", err)
	}
	// The first epoch sticks.
	mustUpdate(t, l, 2, func(tx *Tx) error { return tx.InitEpoch(epoch0) })
	mustUpdate(t, l, 3, func(tx *Tx) error { return tx.InitEpoch("other") })
	if got := l.Epoch(); got != epoch0 {
		t.Errorf("Epoch = %q, want %q", got, epoch0)
	}
}

func TestNeverWrittenChannel(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	appendN(t, l, 2, "other", 3, t0)
	want := Info{Epoch: epoch0, First: 1, Next: 1}
	if info := mustInfo(t, l, "never"); info != want {
		t.Errorf("Info = %+v, want %+v", info, want)
	}
	info, msgs, err := l.Read("never", 1, 10)
	if err != nil || info != want || len(msgs) != 0 {
		t.Errorf("Read = %+v, %d messages, %v; want %+v and none", info, len(msgs), err, want)
	}
	// Reading does not create it.
	n := 0
	if err := l.Channels(func(string, Info) bool { n++; return true }); err != nil || n != 1 {
		t.Errorf("Channels listed %d, %v; want only \"other\"", n, err)
	}
}

func TestBadChannel(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	tests := []struct {
		name, ch string
	}{
		{"empty", ""},
		{"256 bytes", strings.Repeat("a", 256)},
		{"space", "a b"},
		{"unicode", "café"},
		{"hash", "a#b"},
		{"tab", "a\tb"},
		{"question mark", "a?b"},
		{"NUL", "a\x00"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res Result
			mustUpdate(t, l, uint64(i)+2, func(tx *Tx) error {
				var err error
				res, err = tx.Append(tt.ch, "id", []byte("x"), t0)
				if err != nil {
					return err
				}
				return tx.DeleteChannel(tt.ch, "E1") // ignored
			})
			if !errors.Is(res.Err, ErrBadChannel) {
				t.Errorf("Result.Err = %v, want ErrBadChannel", res.Err)
			}
			if res.Offset != 0 || res.Duplicate {
				t.Errorf("refused message got %+v", res)
			}
			if _, err := l.Info(tt.ch); !errors.Is(err, ErrBadChannel) {
				t.Errorf("Info: %v, want ErrBadChannel", err)
			}
			if _, _, err := l.Read(tt.ch, 1, 10); !errors.Is(err, ErrBadChannel) {
				t.Errorf("Read: %v, want ErrBadChannel", err)
			}
		})
	}
	if err := l.Channels(func(name string, _ Info) bool {
		t.Errorf("bad message stored channel %q", name)
		return true
	}); err != nil {
		t.Fatal(err)
	}

	// The edges of the contract are accepted.
	for _, ch := range []string{strings.Repeat("z", 255), "x", "AZaz09_.:/@-"} {
		mustUpdate(t, l, l.Applied()+1, func(tx *Tx) error {
			if res := mustAppend(t, tx, ch, "", "ok", t0); res.Offset != 1 {
				t.Errorf("Append(%q) offset %d, want 1", ch, res.Offset)
			}
			return nil
		})
	}
}

func TestChannels(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	next := appendN(t, l, 2, "b", 2, t0)
	next = appendN(t, l, next, "a", 1, t0)
	appendN(t, l, next, "c", 3, t0)

	var names []string
	var infos []Info
	if err := l.Channels(func(name string, info Info) bool {
		names = append(names, name)
		infos = append(infos, info)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(names, want) {
		t.Errorf("names = %v, want %v", names, want)
	}
	if want := []Info{{epoch0, 1, 2}, {epoch0, 1, 3}, {epoch0, 1, 4}}; !slices.Equal(infos, want) {
		t.Errorf("infos = %+v, want %+v", infos, want)
	}

	// Stopping early is not an error.
	names = nil
	err := l.Channels(func(name string, _ Info) bool {
		names = append(names, name)
		return len(names) < 2
	})
	if err != nil {
		t.Errorf("Channels stopped early: %v, want nil", err)
	}
	if want := []string{"a", "b"}; !slices.Equal(names, want) {
		t.Errorf("stopped after %v, want %v", names, want)
	}
}

func TestKeyValue(t *testing.T) {
	l := mustOpen(t)
	mustUpdate(t, l, 1, func(tx *Tx) error {
		for _, kv := range [][2]string{{"nodes/h2", "b"}, {"nodes/h1", "a"}, {"other", "c"}, {"applied", "not the index"}} {
			if err := tx.Put(kv[0], []byte(kv[1])); err != nil {
				return err
			}
		}
		return nil
	})
	if got := string(l.Get("nodes/h1")); got != "a" {
		t.Errorf("Get(nodes/h1) = %q, want a", got)
	}
	if got := l.Get("missing"); got != nil {
		t.Errorf("Get(missing) = %q, want nil", got)
	}
	// Keys live apart from the log's own records.
	if got := l.Applied(); got != 1 {
		t.Errorf("Applied = %d after Put(\"applied\"), want 1", got)
	}
	// The returned value belongs to the caller.
	v := l.Get("other")
	v[0] = 'X'
	if got := string(l.Get("other")); got != "c" {
		t.Errorf("Get after changing a returned value = %q", got)
	}

	scan := func(prefix string) []string {
		t.Helper()
		var out []string
		if err := l.Scan(prefix, func(k string, v []byte) { out = append(out, k+"="+string(v)) }); err != nil {
			t.Fatalf("Scan(%q): %v", prefix, err)
		}
		return out
	}
	if got, want := scan("nodes/"), []string{"nodes/h1=a", "nodes/h2=b"}; !slices.Equal(got, want) {
		t.Errorf("Scan(nodes/) = %q, want %q", got, want)
	}
	if got, want := scan(""), []string{"applied=not the index", "nodes/h1=a", "nodes/h2=b", "other=c"}; !slices.Equal(got, want) {
		t.Errorf("Scan(\"\") = %q, want %q", got, want)
	}
	if got := scan("zzz"); got != nil {
		t.Errorf("Scan(zzz) = %q, want nothing", got)
	}

	// A nil value deletes; an empty one is a value.
	mustUpdate(t, l, 2, func(tx *Tx) error {
		if err := tx.Put("nodes/h1", nil); err != nil {
			return err
		}
		if err := tx.Put("missing", nil); err != nil {
			return err
		}
		return tx.Put("other", []byte{})
	})
	if got := l.Get("nodes/h1"); got != nil {
		t.Errorf("Get after delete = %q, want nil", got)
	}
	if got, want := scan(""), []string{"applied=not the index", "nodes/h2=b", "other="}; !slices.Equal(got, want) {
		t.Errorf("Scan after delete = %q, want %q", got, want)
	}
}

// TestConcurrentReaders reads while Updates append and trim, so that the
// race detector sees both sides, and checks that every read is consistent.
func TestConcurrentReaders(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error {
		return tx.SetRetention([]Rule{{Pattern: "a", MaxMessages: 20}})
	})

	const updates = 100
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			var lastNext uint64 = 1
			for from := uint64(r); ; from += 3 {
				select {
				case <-done:
					return
				default:
				}
				info, msgs, err := l.Read("a", from, 10)
				if err != nil {
					t.Errorf("Read: %v", err)
					return
				}
				if info.Next < lastNext || info.First > info.Next || info.Next-info.First > 20 {
					t.Errorf("inconsistent info %+v after Next %d", info, lastNext)
					return
				}
				lastNext = info.Next
				start := max(from, info.First)
				for i, m := range msgs {
					if m.Offset != start+uint64(i) {
						t.Errorf("read from %d: offsets %v, info %+v", from, offsets(msgs), info)
						return
					}
				}
				if from > info.Next {
					from = 0
				}
			}
		})
	}
	for i := range updates {
		mustUpdate(t, l, uint64(i)+3, func(tx *Tx) error {
			for j := range 3 {
				mustAppend(t, tx, "a", fmt.Sprintf("id%d", i%7), "x", t0.Add(time.Duration(i*3+j)*time.Second))
			}
			return nil
		})
	}
	close(done)
	wg.Wait()
}
