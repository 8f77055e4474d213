package log

import (
	"fmt"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestRetentionByCount(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	next := appendN(t, l, 2, "small.old", 10, t0)
	next = appendN(t, l, next, "big", 10, t0)
	rules := []Rule{
		{Pattern: "small.*", MaxMessages: 3},
		{Pattern: "one", MaxMessages: 1},
	}
	mustUpdate(t, l, next, func(tx *Tx) error { return tx.SetRetention(rules) })
	next++
	if got, err := l.Retention(); err != nil || !slices.Equal(got, rules) {
		t.Fatalf("Retention = %+v, %v; want %+v", got, err, rules)
	}
	// Rules apply when a channel is written or swept, not before.
	if info := mustInfo(t, l, "small.old"); info.First != 1 {
		t.Errorf("small.old trimmed before any write: %+v", info)
	}

	next = appendN(t, l, next, "small.x", 5, t0)
	check := func(ch string, first, nextOff uint64) {
		t.Helper()
		info, msgs := readAll(t, l, ch)
		if want := (Info{Epoch: epoch0, First: first, Next: nextOff}); info != want {
			t.Errorf("%s: info %+v, want %+v", ch, info, want)
		}
		if got := offsets(msgs); !slices.Equal(got, span(first, nextOff-1)) {
			t.Errorf("%s: offsets %v, want %d..%d", ch, got, first, nextOff-1)
		}
		for _, m := range msgs {
			if want := fmt.Sprintf("%s-%d", ch, m.Offset); string(m.Data) != want && ch != "one" {
				t.Errorf("%s: offset %d holds %q, want %q (renumbered?)", ch, m.Offset, m.Data, want)
			}
		}
	}
	check("small.x", 3, 6)

	// One more trims one more and numbering goes on.
	var res Result
	mustUpdate(t, l, next, func(tx *Tx) error {
		res = mustAppend(t, tx, "small.x", "", "small.x-6", t0)
		return nil
	})
	next++
	if res.Offset != 6 {
		t.Errorf("offset after trimming = %d, want 6", res.Offset)
	}
	check("small.x", 4, 7)

	// A Sweep applies the new rule to a channel written before it.
	mustUpdate(t, l, next, func(tx *Tx) error { return tx.Sweep(t0) })
	next++
	check("small.old", 8, 11)
	check("big", 1, 11)

	// A rule set in the same Update as the append already applies.
	mustUpdate(t, l, next, func(tx *Tx) error {
		if err := tx.SetRetention(append(rules, Rule{Pattern: "big", MaxMessages: 2})); err != nil {
			return err
		}
		mustAppend(t, tx, "big", "", "big-11", t0)
		for i := range 4 {
			mustAppend(t, tx, "one", "", "x", t0.Add(time.Duration(i)))
		}
		return nil
	})
	check("big", 10, 12)
	check("one", 4, 5)
}

func TestRetentionByAge(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error {
		return tx.SetRetention([]Rule{
			{Pattern: "age.*", MaxAge: time.Hour},
			{Pattern: "forever", MaxAge: 0}, // zero: no limit
		})
	})
	index := uint64(3)
	update := func(fn func(tx *Tx) error) {
		t.Helper()
		mustUpdate(t, l, index, fn)
		index++
	}
	appendAt := func(ch string, at ...time.Duration) {
		t.Helper()
		update(func(tx *Tx) error {
			for _, d := range at {
				mustAppend(t, tx, ch, "", d.String(), t0.Add(d))
			}
			return nil
		})
	}
	sweep := func(at time.Duration) {
		t.Helper()
		update(func(tx *Tx) error { return tx.Sweep(t0.Add(at)) })
	}
	check := func(ch string, first, next uint64) {
		t.Helper()
		info, msgs := readAll(t, l, ch)
		if want := (Info{Epoch: epoch0, First: first, Next: next}); info != want {
			t.Errorf("%s: info %+v, want %+v", ch, info, want)
		}
		if got := offsets(msgs); !slices.Equal(got, span(first, next-1)) {
			t.Errorf("%s: offsets %v, want %d..%d", ch, got, first, next-1)
		}
	}

	appendAt("age.a", 0, 30*time.Minute, 59*time.Minute)
	appendAt("forever", 0)
	appendAt("default", 0)
	check("age.a", 1, 4)

	// The append's time drives retention: older than now-1h goes, exactly
	// 1h old stays.
	appendAt("age.a", 90*time.Minute)
	check("age.a", 2, 5)

	// A channel that receives nothing keeps expired messages until a Sweep
	// (doc.go, Caveats), even when other channels are written later.
	appendAt("age.b", 0)
	appendAt("forever", 3*time.Hour)
	check("age.b", 1, 2)

	sweep(90*time.Minute + 1)
	check("age.a", 3, 5)
	check("age.b", 2, 2)

	// Everything expired: First == Next, and numbering goes on.
	sweep(3 * time.Hour)
	check("age.a", 5, 5)
	if _, msgs, err := l.Read("age.a", 1, 10); err != nil || len(msgs) != 0 {
		t.Errorf("Read of an expired channel: %d messages, %v", len(msgs), err)
	}
	appendAt("age.a", 3*time.Hour)
	check("age.a", 5, 6)

	// Unmatched channels keep DefaultMaxAge; zero MaxAge keeps all.
	sweep(DefaultMaxAge)
	check("default", 1, 2)
	sweep(DefaultMaxAge + 1)
	check("default", 2, 2)
	sweep(1000 * DefaultMaxAge)
	check("forever", 1, 3)
}

func TestDefaultMaxMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("appends DefaultMaxMessages messages")
	}
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error {
		return tx.SetRetention([]Rule{{Pattern: "other.*", MaxMessages: 1}})
	})
	const batches, extra = 10, 10
	for b := range batches {
		mustUpdate(t, l, uint64(b)+3, func(tx *Tx) error {
			n := DefaultMaxMessages / batches
			if b == batches-1 {
				n += extra
			}
			for range n {
				if _, err := tx.Append("d", "", nil, t0); err != nil {
					return err
				}
			}
			return nil
		})
	}
	want := Info{Epoch: epoch0, First: extra + 1, Next: DefaultMaxMessages + extra + 1}
	if info := mustInfo(t, l, "d"); info != want {
		t.Errorf("Info = %+v, want %+v", info, want)
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"abc", "abc", true},
		{"abc", "ab", false},
		{"abc", "abcd", false},
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything:at/all", true},
		{"**", "x", true},
		{"chat.*", "chat.room", true},
		{"chat.*", "chat.", true},
		{"chat.*", "chat", false},
		{"chat.*", "xchat.room", false},
		{"*.log", "a.log", true},
		{"*.log", "a.logx", false},
		{"a*c", "ac", true},
		{"a*c", "abc", true},
		{"a*c", "acbc", true},
		{"a*c", "ab", false},
		{"a*c", "abcd", false},
		{"a*c", "", false},
		{"a*", "", false},
		{"user:*/inbox", "user:42/inbox", true},
		{"user:*/inbox", "user:42/outbox", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "abbc", true},
	}
	for _, tt := range tests {
		if got := Glob(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestMatchRule(t *testing.T) {
	def := Rule{Pattern: "*", MaxMessages: DefaultMaxMessages, MaxAge: DefaultMaxAge}
	rules := []Rule{
		{Pattern: "chat.vip", MaxMessages: 1000},
		{Pattern: "chat.*", MaxMessages: 10},
		{Pattern: "chat.vip", MaxMessages: 5}, // shadowed by the first two
		{Pattern: "*:log", MaxAge: time.Hour},
	}
	tests := []struct {
		name  string
		rules []Rule
		ch    string
		want  Rule
	}{
		{"exact first", rules, "chat.vip", rules[0]},
		{"first match wins", rules, "chat.room", rules[1]},
		{"star in front", rules, "app:log", rules[3]},
		{"no match", rules, "news", def},
		{"empty name", rules, "", def},
		{"no rules", nil, "chat.room", def},
		{"empty pattern matches only empty name", []Rule{{Pattern: "", MaxMessages: 1}}, "", Rule{MaxMessages: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MatchRule(tt.rules, tt.ch); got != tt.want {
				t.Errorf("MatchRule(%q) = %+v, want %+v", tt.ch, got, tt.want)
			}
		})
	}
}

// idRecords counts the idempotency ids of ch: those the in-memory index
// holds, and those stored in "d" records of the channel's current history
// (expired ones included, until their record leaves the window).
func idRecords(t *testing.T, l *Log, ch string) (held, stored int) {
	t.Helper()
	l.mu.RLock()
	defer l.mu.RUnlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	held = l.ids.heldIn(ch)
	if int64(held) > l.ids.n.Load() {
		t.Errorf("index holds %d ids of %s, %d in all", held, ch, l.ids.n.Load())
	}
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChannels).Bucket([]byte(ch))
		if b == nil {
			return nil
		}
		m, err := decodeMeta(b.Get(keyMeta))
		if err != nil {
			return err
		}
		return tx.Bucket(bucketIDs).ForEach(func(k, v []byte) error {
			return decodeIDs(k, v, func(c string, created uint64, _ pendID) {
				if c == ch && created == m.created {
					stored++
				}
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return held, stored
}

func TestIdempotency(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	index := uint64(2)
	publish := func(ch, id string, at time.Duration) Result {
		t.Helper()
		var res Result
		mustUpdate(t, l, index, func(tx *Tx) error {
			res = mustAppend(t, tx, ch, id, id+"@"+at.String(), t0.Add(at))
			return nil
		})
		index++
		return res
	}

	steps := []struct {
		name    string
		ch, id  string
		at      time.Duration
		offset  uint64
		dup     bool
		storedA uint64 // Next of channel a afterwards
	}{
		{"first", "a", "k1", 0, 1, false, 2},
		{"retry", "a", "k1", 5 * time.Minute, 1, true, 2},
		{"other id", "a", "k2", 5 * time.Minute, 2, false, 3},
		{"no id is never a duplicate", "a", "", 5 * time.Minute, 3, false, 4},
		{"no id again", "a", "", 5 * time.Minute, 4, false, 5},
		{"same id on another channel", "b", "k1", 6 * time.Minute, 1, false, 5},
		{"retry at the end of the window", "a", "k1", IdempotencyWindow - 1, 1, true, 5},
		{"retry after the window", "a", "k1", IdempotencyWindow + 1, 5, false, 6},
		{"retry of the new publish", "a", "k1", IdempotencyWindow + 2, 5, true, 6},
		{"other channel's id still held", "b", "k1", 15 * time.Minute, 1, true, 6},
	}
	for _, s := range steps {
		res := publish(s.ch, s.id, s.at)
		if res.Offset != s.offset || res.Duplicate != s.dup || res.Epoch != epoch0 || res.Channel != s.ch {
			t.Errorf("%s: %+v, want offset %d duplicate %v", s.name, res, s.offset, s.dup)
		}
		if info := mustInfo(t, l, "a"); info.Next != s.storedA {
			t.Errorf("%s: a.Next = %d, want %d", s.name, info.Next, s.storedA)
		}
	}
	// The duplicate stored nothing: offset 1 still holds the first data.
	_, msgs := readAll(t, l, "a")
	if got := string(msgs[0].Data); got != "k1@0s" {
		t.Errorf("offset 1 holds %q, want the first publish", got)
	}

	// Twice in one Update.
	var r1, r2 Result
	mustUpdate(t, l, index, func(tx *Tx) error {
		r1 = mustAppend(t, tx, "c", "k", "1", t0)
		r2 = mustAppend(t, tx, "c", "k", "2", t0)
		return nil
	})
	if r1.Offset != 1 || r1.Duplicate || r2.Offset != 1 || !r2.Duplicate {
		t.Errorf("same id twice in one Update: %+v, %+v", r1, r2)
	}
}

func TestIdempotencyPruned(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error {
		for _, id := range []string{"k1", "k2", "k3"} {
			mustAppend(t, tx, "a", id, id, t0)
		}
		mustAppend(t, tx, "a", "k4", "k4", t0.Add(5*time.Minute))
		mustAppend(t, tx, "b", "k1", "k1", t0)
		return nil
	})
	if held, stored := idRecords(t, l, "a"); held != 4 || stored != 4 {
		t.Fatalf("a holds %d ids, %d stored; want 4, 4", held, stored)
	}
	if got := l.HeldIDs(); got != 5 {
		t.Fatalf("HeldIDs = %d, want 5", got)
	}

	// A Sweep past the window forgets the expired ids of every channel. The
	// record of a's ids stays while it holds one in the window (k4); the
	// expired ones in it are skipped when the index is rebuilt. b's record
	// is deleted.
	mustUpdate(t, l, 3, func(tx *Tx) error { return tx.Sweep(t0.Add(IdempotencyWindow + 1)) })
	if held, stored := idRecords(t, l, "a"); held != 1 || stored != 4 {
		t.Errorf("after Sweep, a holds %d ids, %d stored; want only k4 held, its record of 4 kept", held, stored)
	}
	if held, stored := idRecords(t, l, "b"); held != 0 || stored != 0 {
		t.Errorf("after Sweep, b holds %d ids, %d stored; want 0", held, stored)
	}
	if got := l.HeldIDs(); got != 1 {
		t.Errorf("HeldIDs after Sweep = %d, want 1", got)
	}

	var rs []Result
	mustUpdate(t, l, 4, func(tx *Tx) error {
		at := t0.Add(IdempotencyWindow + 2)
		rs = append(rs, mustAppend(t, tx, "a", "k1", "k1 again", at))
		rs = append(rs, mustAppend(t, tx, "a", "k4", "k4 again", at))
		return nil
	})
	if rs[0].Offset != 5 || rs[0].Duplicate {
		t.Errorf("pruned id republished: %+v, want new offset 5", rs[0])
	}
	if rs[1].Offset != 4 || !rs[1].Duplicate {
		t.Errorf("live id republished: %+v, want duplicate of 4", rs[1])
	}

	// An expired id reused without a Sweep in between, exactly when the
	// window ends, leaves one record, not a stale expiry entry beside the
	// new one.
	mustUpdate(t, l, 5, func(tx *Tx) error {
		mustAppend(t, tx, "c", "k", "1", t0)
		return nil
	})
	mustUpdate(t, l, 6, func(tx *Tx) error {
		if res := mustAppend(t, tx, "c", "k", "2", t0.Add(IdempotencyWindow)); res.Duplicate {
			t.Errorf("expired id is a duplicate: %+v", res)
		}
		return nil
	})
	if held, stored := idRecords(t, l, "c"); held != 1 || stored != 1 {
		t.Errorf("c holds %d ids, %d stored; want 1, 1", held, stored)
	}
	// Writing to the channel prunes too, as of the write's time.
	mustUpdate(t, l, 7, func(tx *Tx) error {
		mustAppend(t, tx, "c", "", "3", t0.Add(3*IdempotencyWindow))
		return nil
	})
	if held, stored := idRecords(t, l, "c"); held != 0 || stored != 0 {
		t.Errorf("after a later write, c holds %d ids, %d stored; want 0", held, stored)
	}
}

func TestDeleteChannel(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error {
		for i := range 3 {
			mustAppend(t, tx, "a", fmt.Sprint("id", i), "old", t0)
		}
		mustAppend(t, tx, "b", "", "b", t0)
		return nil
	})
	mustUpdate(t, l, 3, func(tx *Tx) error { return tx.DeleteChannel("a", "E1") })

	if info := mustInfo(t, l, "a"); info != (Info{Epoch: "E1", First: 1, Next: 1}) {
		t.Errorf("after delete: %+v, want new epoch and offsets from 1", info)
	}
	if _, msgs := readAll(t, l, "a"); len(msgs) != 0 {
		t.Errorf("after delete: %d messages", len(msgs))
	}
	if info := mustInfo(t, l, "b"); info != (Info{Epoch: epoch0, First: 1, Next: 2}) {
		t.Errorf("other channel: %+v", info)
	}
	var res Result
	mustUpdate(t, l, 4, func(tx *Tx) error {
		res = mustAppend(t, tx, "a", "id0", "new", t0.Add(time.Minute))
		return nil
	})
	if res != (Result{Channel: "a", Offset: 1, Epoch: "E1"}) {
		t.Errorf("append after delete: %+v; want offset 1 in E1, ids forgotten", res)
	}

	// Append, delete, append in one Update; and delete of a channel that
	// never existed, which starts it in the given epoch.
	var rs []Result
	mustUpdate(t, l, 5, func(tx *Tx) error {
		rs = append(rs, mustAppend(t, tx, "a", "", "gone", t0))
		if err := tx.DeleteChannel("a", "E2"); err != nil {
			return err
		}
		rs = append(rs, mustAppend(t, tx, "a", "", "kept", t0))
		return tx.DeleteChannel("fresh", "E3")
	})
	if rs[0].Offset != 2 || rs[1] != (Result{Channel: "a", Offset: 1, Epoch: "E2"}) {
		t.Errorf("append/delete/append: %+v", rs)
	}
	info, msgs := readAll(t, l, "a")
	if info != (Info{Epoch: "E2", First: 1, Next: 2}) || len(msgs) != 1 || string(msgs[0].Data) != "kept" {
		t.Errorf("after append/delete/append: %+v, %d messages", info, len(msgs))
	}
	if info := mustInfo(t, l, "fresh"); info != (Info{Epoch: "E3", First: 1, Next: 1}) {
		t.Errorf("deleted never-written channel: %+v", info)
	}
}
