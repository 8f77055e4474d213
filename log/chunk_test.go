package log

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// chunkSpan is a stored chunk: its key and number of messages.
type chunkSpan struct{ Key, N uint64 }

// chunks lists the chunk records of ch.
func chunks(t testing.TB, l *Log, ch string) []chunkSpan {
	t.Helper()
	var out []chunkSpan
	err := l.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChannels).Bucket([]byte(ch))
		if b == nil {
			return nil
		}
		mb := b.Bucket(bucketMsgs)
		return mb.ForEach(func(k, v []byte) error {
			end, err := chunkEnd(k, chunkValue(mb, k, v))
			out = append(out, chunkSpan{u64(k), end - u64(k)})
			return err
		})
	})
	if err != nil {
		t.Fatalf("chunks of %s: %v", ch, err)
	}
	return out
}

// modelRead is what Read must return from msgs (offsets first..first+len-1
// of a channel whose messages start at first) given the data sizes: up to
// limit messages from max(from, first), stopping after the message that
// reaches MaxReadBytes.
func modelRead(first, next, from uint64, limit int, size func(off uint64) int) []uint64 {
	out := []uint64{}
	total := 0
	for off := max(from, first); off < next && len(out) < limit && total < MaxReadBytes; off++ {
		out = append(out, off)
		total += size(off)
	}
	return out
}

// TestReadAcrossChunks reads a channel written by Updates of varied sizes
// (chunks of 1 to 130 messages, with and without skip entries) from every
// offset with many limits.
func TestReadAcrossChunks(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	sizes := []int{1, 2, 5, 64, 65, 3, 130, 1}
	index := uint64(2)
	off := uint64(1)
	at := func(off uint64) time.Time { return t0.Add(time.Duration(off) * time.Millisecond) }
	data := func(off uint64) string { return fmt.Sprintf("m%d-%s", off, bytes.Repeat([]byte("x"), int(off%7))) }
	var want []chunkSpan
	for _, n := range sizes {
		want = append(want, chunkSpan{off, uint64(n)})
		mustUpdate(t, l, index, func(tx *Tx) error {
			for range n {
				id := ""
				if off%3 == 0 {
					id = fmt.Sprint("id", off)
				}
				if res := mustAppend(t, tx, "a", id, data(off), at(off)); res.Offset != off {
					t.Fatalf("offset %d, want %d", res.Offset, off)
				}
				off++
			}
			return nil
		})
		index++
	}
	if got := chunks(t, l, "a"); !slices.Equal(got, want) {
		t.Fatalf("chunks %v, want one per Update %v", got, want)
	}
	next := off
	limits := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 63, 64, 65, 66, 127, 128, 129, 130, 131, 200, int(next), 1 << 20}
	for from := uint64(0); from <= next+1; from++ {
		for _, limit := range limits {
			info, msgs, err := l.Read("a", from, limit)
			if err != nil {
				t.Fatalf("Read(%d, %d): %v", from, limit, err)
			}
			if info != (Info{Epoch: epoch0, First: 1, Next: next}) {
				t.Fatalf("Read(%d, %d): info %+v", from, limit, info)
			}
			wantOffs := modelRead(1, next, from, limit, func(uint64) int { return 0 })
			if got := offsets(msgs); !slices.Equal(got, wantOffs) {
				t.Fatalf("Read(%d, %d) = %v, want %v", from, limit, got, wantOffs)
			}
			for _, m := range msgs {
				if string(m.Data) != data(m.Offset) || !m.Time.Equal(at(m.Offset)) || m.Time.Location() != time.UTC {
					t.Fatalf("Read(%d, %d): offset %d is %q at %v", from, limit, m.Offset, m.Data, m.Time)
				}
			}
		}
	}
	// Ids are stored with their messages.
	stored := storedIDs(t, l, "a")
	for i, s := range stored {
		off := uint64(i) + 1
		want := fmt.Sprint(off, "/")
		if off%3 == 0 {
			want += fmt.Sprint("id", off)
		}
		if s != want {
			t.Fatalf("stored message %d is %s, want %s", off, s, want)
		}
	}
}

// TestChunkCaps checks that one Update's messages are split into chunks of
// at most maxChunkMsgs messages, or about maxChunkBytes, and read back
// whole.
func TestChunkCaps(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	const many = 2*maxChunkMsgs + 5
	mustUpdate(t, l, 2, func(tx *Tx) error {
		for i := range many {
			mustAppend(t, tx, "many", fmt.Sprint("id", i), fmt.Sprint(i+1), t0)
		}
		return nil
	})
	want := []chunkSpan{{1, maxChunkMsgs}, {maxChunkMsgs + 1, maxChunkMsgs}, {2*maxChunkMsgs + 1, 5}}
	if got := chunks(t, l, "many"); !slices.Equal(got, want) {
		t.Errorf("chunks %v, want %v", got, want)
	}
	for _, from := range []uint64{1, 63, 64, 65, maxChunkMsgs - 1, maxChunkMsgs, maxChunkMsgs + 1, many - 1} {
		_, msgs, err := l.Read("many", from, 3)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := offsets(msgs), modelRead(1, many+1, from, 3, func(uint64) int { return 0 }); !slices.Equal(got, want) {
			t.Errorf("Read(%d) = %v, want %v", from, got, want)
		}
		for _, m := range msgs {
			if string(m.Data) != fmt.Sprint(m.Offset) {
				t.Errorf("offset %d holds %q", m.Offset, m.Data)
			}
		}
	}

	// 300 KB messages: a chunk closes once it reaches 1 MiB, at its fourth.
	big := bytes.Repeat([]byte("b"), 300_000)
	mustUpdate(t, l, 3, func(tx *Tx) error {
		for range 10 {
			if _, err := tx.Append("big", "", big, t0); err != nil {
				return err
			}
		}
		return nil
	})
	if got, want := chunks(t, l, "big"), []chunkSpan{{1, 4}, {5, 4}, {9, 2}}; !slices.Equal(got, want) {
		t.Errorf("chunks of big messages %v, want %v", got, want)
	}
}

// TestReadMaxBytesInsideChunk cuts reads at MaxReadBytes in the middle of
// chunks, from every offset.
func TestReadMaxBytesInsideChunk(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	size := func(off uint64) int { return 90_000 + int(off%5)*10_000 }
	const n = 60
	for u := range 3 { // chunks of about 12 messages, in three Updates
		mustUpdate(t, l, uint64(u)+2, func(tx *Tx) error {
			for i := range n / 3 {
				off := uint64(u*n/3+i) + 1
				data := bytes.Repeat([]byte{byte('a' + off%26)}, size(off))
				if res := mustAppend(t, tx, "c", "", string(data), t0); res.Offset != off {
					t.Fatalf("offset %d, want %d", res.Offset, off)
				}
			}
			return nil
		})
	}
	if len(chunks(t, l, "c")) < 6 {
		t.Fatalf("chunks %v: the test wants several per Update", chunks(t, l, "c"))
	}
	cutInside := 0
	for from := uint64(1); from <= n; from++ {
		for _, limit := range []int{1, 10, 41, 100} {
			_, msgs, err := l.Read("c", from, limit)
			if err != nil {
				t.Fatal(err)
			}
			want := modelRead(1, n+1, from, limit, size)
			if got := offsets(msgs); !slices.Equal(got, want) {
				t.Fatalf("Read(%d, %d) = %v, want %v", from, limit, got, want)
			}
			for _, m := range msgs {
				if len(m.Data) != size(m.Offset) || m.Data[0] != byte('a'+m.Offset%26) {
					t.Fatalf("offset %d: %d bytes of %q", m.Offset, len(m.Data), m.Data[0])
				}
			}
			if last := want[len(want)-1]; len(want) < limit && last < n {
				for _, c := range chunks(t, l, "c") {
					if last >= c.Key && last+1 < c.Key+c.N {
						cutInside++
					}
				}
			}
		}
	}
	if cutInside == 0 {
		t.Error("no read was cut by MaxReadBytes inside a chunk")
	}
}

// TestRetentionInsideChunks trims by count and by age inside chunks and
// across them: First is exact, chunks wholly below it go, a chunk partly
// below it stays, and reads below First start at First.
func TestRetentionInsideChunks(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	at := func(off uint64) time.Time { return t0.Add(time.Duration(off) * time.Minute) }
	index := uint64(2)
	update := func(fn func(tx *Tx) error) {
		t.Helper()
		mustUpdate(t, l, index, fn)
		index++
	}
	appendRange := func(from, to uint64) { // one Update
		t.Helper()
		update(func(tx *Tx) error {
			for off := from; off <= to; off++ {
				if res := mustAppend(t, tx, "r", "", fmt.Sprint("r-", off), at(off)); res.Offset != off {
					t.Fatalf("offset %d, want %d (renumbered?)", res.Offset, off)
				}
			}
			return nil
		})
	}
	check := func(what string, first, next uint64, spans ...chunkSpan) {
		t.Helper()
		info, msgs := readAll(t, l, "r")
		if want := (Info{Epoch: epoch0, First: first, Next: next}); info != want {
			t.Fatalf("%s: info %+v, want %+v", what, info, want)
		}
		if got := offsets(msgs); !slices.Equal(got, span(first, next-1)) {
			t.Fatalf("%s: offsets %v", what, got)
		}
		for _, m := range msgs {
			if string(m.Data) != fmt.Sprint("r-", m.Offset) || !m.Time.Equal(at(m.Offset)) {
				t.Fatalf("%s: offset %d holds %q at %v", what, m.Offset, m.Data, m.Time)
			}
		}
		for _, from := range []uint64{0, 1, first - 1, first} {
			_, msgs, err := l.Read("r", from, 2)
			if err != nil {
				t.Fatal(err)
			}
			if got := offsets(msgs); !slices.Equal(got, modelRead(first, next, from, 2, func(uint64) int { return 0 })) {
				t.Fatalf("%s: Read(%d, 2) = %v", what, from, got)
			}
		}
		if got := chunks(t, l, "r"); !slices.Equal(got, spans) {
			t.Fatalf("%s: chunks %v, want %v", what, got, spans)
		}
	}
	setRule := func(r Rule, sweepAt time.Time) {
		t.Helper()
		update(func(tx *Tx) error {
			r.Pattern = "r"
			if err := tx.SetRetention([]Rule{r}); err != nil {
				return err
			}
			return tx.Sweep(sweepAt)
		})
	}

	appendRange(1, 10)
	appendRange(11, 20)
	appendRange(21, 30)
	check("three chunks", 1, 31, chunkSpan{1, 10}, chunkSpan{11, 10}, chunkSpan{21, 10})

	setRule(Rule{MaxMessages: 25}, at(30))
	check("count, inside the first chunk", 6, 31, chunkSpan{1, 10}, chunkSpan{11, 10}, chunkSpan{21, 10})

	setRule(Rule{MaxMessages: 20}, at(30))
	check("count, to a chunk's end", 11, 31, chunkSpan{11, 10}, chunkSpan{21, 10})

	setRule(Rule{MaxMessages: 8}, at(30))
	check("count, across a chunk into the next", 23, 31, chunkSpan{21, 10})

	// Age: the sweep's time minus MaxAge; a message exactly MaxAge old stays.
	setRule(Rule{MaxAge: 5 * time.Minute}, at(30))
	check("age, inside a chunk", 25, 31, chunkSpan{21, 10})

	// Appends under a count rule trim as they go, within the Update too:
	// messages trimmed before the Update ends are never written.
	setRule(Rule{MaxMessages: 4}, at(30))
	check("count 4", 27, 31, chunkSpan{21, 10})
	appendRange(31, 33)
	check("appends in one chunk", 30, 34, chunkSpan{21, 10}, chunkSpan{31, 3})
	appendRange(34, 45)
	check("an Update longer than the limit", 42, 46, chunkSpan{42, 4})

	// Age across several chunks at once, then everything.
	setRule(Rule{MaxAge: time.Hour}, at(45))
	appendRange(46, 50)
	appendRange(51, 55)
	check("age rule", 42, 56, chunkSpan{42, 4}, chunkSpan{46, 5}, chunkSpan{51, 5})
	update(func(tx *Tx) error { return tx.Sweep(at(52).Add(time.Hour)) })
	check("age, across chunks", 52, 56, chunkSpan{51, 5})
	update(func(tx *Tx) error { return tx.Sweep(at(200)) })
	check("all expired", 56, 56)
	appendRange(56, 57)
	check("numbering goes on", 56, 58, chunkSpan{56, 2})

	// A channel trimmed inside a chunk reopens the same.
	before := dump(t, l)
	l2 := mustOpenPath(t, filepath.Join(t.TempDir(), "copy.db"), true)
	if err := l2.Restore(bytes.NewReader(takeSnapshot(t, l))); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "restored", dump(t, l2), before)
}

// TestModel applies a seeded random sequence of entries, grouped randomly
// into Updates, with reopens and restores, and compares every answer with
// a plain model of the log: dense offsets, retention by count and age from
// the front, ids remembered for IdempotencyWindow, deletes.
func TestModel(t *testing.T) {
	type mmsg struct {
		t    int64
		data string
	}
	type mchan struct {
		epoch string
		first uint64
		msgs  []mmsg // offset o at o-1
		ids   map[string]idRec
	}
	type model struct {
		chans map[string]*mchan
		rules []Rule
	}
	m := &model{chans: map[string]*mchan{}}
	get := func(ch string) *mchan {
		c := m.chans[ch]
		if c == nil {
			c = &mchan{epoch: epoch0, first: 1, ids: map[string]idRec{}}
			m.chans[ch] = c
		}
		return c
	}
	retain := func(ch string, c *mchan, now int64) {
		rule := MatchRule(m.rules, ch)
		next := uint64(len(c.msgs)) + 1
		if rule.MaxMessages > 0 && next-c.first > rule.MaxMessages {
			c.first = next - rule.MaxMessages
		}
		if rule.MaxAge > 0 && now > int64(rule.MaxAge) {
			for c.first < next && c.msgs[c.first-1].t < now-int64(rule.MaxAge) {
				c.first++
			}
		}
	}
	mAppend := func(ch, id, data string, now int64) Result {
		c := get(ch)
		res := Result{Channel: ch, Epoch: c.epoch}
		if id != "" {
			if r, ok := c.ids[id]; ok && now-r.t < int64(IdempotencyWindow) {
				res.Offset, res.Duplicate = r.off, true
				return res
			}
		}
		c.msgs = append(c.msgs, mmsg{t: now, data: data})
		res.Offset = uint64(len(c.msgs))
		if id != "" {
			c.ids[id] = idRec{off: res.Offset, t: now}
		}
		retain(ch, c, now)
		return res
	}

	type op struct {
		kind       int // 0 append, 1 sweep, 2 rules, 3 delete
		ch, id     string
		data       string
		rules      []Rule
		epoch      string
		sweepNanos int64
	}
	type entry struct {
		at  time.Time
		ops []op
	}
	r := rand.New(rand.NewPCG(42, 4242))
	chans := []string{"a", "b.x", "b.y"}
	ruleSets := [][]Rule{
		nil,
		{{Pattern: "a", MaxMessages: 7}, {Pattern: "b.*", MaxAge: 20 * time.Minute}},
		{{Pattern: "*", MaxMessages: 60, MaxAge: time.Hour}},
		{{Pattern: "b.x", MaxMessages: 1}},
	}
	now := t0
	var es []entry
	for i := range 400 {
		now = now.Add(time.Duration(r.IntN(150)) * time.Second)
		e := entry{at: now}
		switch k := r.IntN(30); {
		case k < 24:
			for range r.IntN(40) {
				o := op{kind: 0, ch: chans[r.IntN(len(chans))], data: fmt.Sprint(i, "-", r.Uint32())}
				if r.IntN(4) > 0 {
					o.id = fmt.Sprint("id", r.IntN(12))
				}
				e.ops = append(e.ops, o)
			}
		case k < 26:
			e.ops = append(e.ops, op{kind: 1})
		case k < 29:
			e.ops = append(e.ops, op{kind: 2, rules: ruleSets[r.IntN(len(ruleSets))]})
		default:
			e.ops = append(e.ops, op{kind: 3, ch: chans[r.IntN(len(chans))], epoch: fmt.Sprint("E", i)})
		}
		es = append(es, e)
	}

	path := filepath.Join(t.TempDir(), "model.db")
	l, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	mustInit(t, l)
	var dups, trims, restarts int
	for i := 0; i < len(es); {
		end := min(i+1+r.IntN(6), len(es))
		var got, want []Result
		mustUpdate(t, l, uint64(end)+1, func(tx *Tx) error {
			for _, e := range es[i:end] {
				at := tx.Tick(e.at)
				for _, o := range e.ops {
					switch o.kind {
					case 0:
						res, err := tx.Append(o.ch, o.id, []byte(o.data), at)
						if err != nil {
							return err
						}
						got = append(got, res)
						want = append(want, mAppend(o.ch, o.id, o.data, at.UnixNano()))
					case 1:
						if err := tx.Sweep(at); err != nil {
							return err
						}
						for ch, c := range m.chans {
							retain(ch, c, at.UnixNano())
						}
					case 2:
						if err := tx.SetRetention(o.rules); err != nil {
							return err
						}
						m.rules = o.rules
					case 3:
						if err := tx.DeleteChannel(o.ch, o.epoch); err != nil {
							return err
						}
						m.chans[o.ch] = &mchan{epoch: o.epoch, first: 1, ids: map[string]idRec{}}
					}
				}
			}
			return nil
		})
		if !slices.Equal(got, want) {
			t.Fatalf("entries %d..%d: results\n got %+v\nwant %+v", i, end-1, got, want)
		}
		for _, res := range got {
			if res.Duplicate {
				dups++
			}
		}
		i = end

		// Compare every channel, with a few reads.
		for _, ch := range chans {
			c := get(ch)
			next := uint64(len(c.msgs)) + 1
			if c.first > 1 {
				trims++
			}
			for range 3 {
				from, limit := uint64(r.IntN(int(next)+2)), r.IntN(30)
				info, msgs, err := l.Read(ch, from, limit)
				if err != nil {
					t.Fatal(err)
				}
				if want := (Info{Epoch: c.epoch, First: c.first, Next: next}); info != want {
					t.Fatalf("after entry %d: %s: info %+v, want %+v", i, ch, info, want)
				}
				wantOffs := modelRead(c.first, next, from, limit, func(uint64) int { return 0 })
				if got := offsets(msgs); !slices.Equal(got, wantOffs) {
					t.Fatalf("after entry %d: %s: Read(%d, %d) = %v, want %v", i, ch, from, limit, got, wantOffs)
				}
				for _, msg := range msgs {
					if w := c.msgs[msg.Offset-1]; string(msg.Data) != w.data || msg.Time.UnixNano() != w.t {
						t.Fatalf("after entry %d: %s: offset %d is %q", i, ch, msg.Offset, msg.Data)
					}
				}
			}
		}
		indexDump(t, l) // the index is what a rebuild gives

		switch r.IntN(25) {
		case 0: // restart
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if l, err = Open(Config{Path: path, NoSync: true}); err != nil {
				t.Fatal(err)
			}
			restarts++
		case 1: // a new log from a snapshot
			snap := takeSnapshot(t, l)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			path = filepath.Join(t.TempDir(), "model.db")
			if l, err = Open(Config{Path: path, NoSync: true}); err != nil {
				t.Fatal(err)
			}
			if err := l.Restore(bytes.NewReader(snap)); err != nil {
				t.Fatal(err)
			}
			restarts++
		}
	}
	t.Logf("%d entries, %d duplicates, %d trimmed channel states, %d restarts or restores", len(es), dups, trims, restarts)
	if dups == 0 || trims == 0 || restarts == 0 {
		t.Error("the sequence does not cover duplicates, trimming and restarts")
	}
}
