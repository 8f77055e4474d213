package log

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// step is one entry of the determinism script; rec receives each Append's
// result.
type step func(tx *Tx, rec func(Result)) error

var errScripted = errors.New("scripted failure")

// script makes a long, mixed sequence of entries from a fixed seed: appends
// with repeated ids (within an entry, across entries and channels), bad
// channels, retention changes, deletes, sweeps, keys and failing entries,
// which it reports in fails.
func script(n int) (steps []step, fails []bool) {
	r := rand.New(rand.NewPCG(7, 11))
	chans := []string{"chat.a", "chat.b", "news", "user:1/inbox", "tmp.x", "bad channel"}
	ruleSets := [][]Rule{
		{{Pattern: "chat.*", MaxMessages: 5}, {Pattern: "tmp.*", MaxAge: 30 * time.Minute}},
		{{Pattern: "*", MaxMessages: 8, MaxAge: time.Hour}},
		nil,
	}
	now := t0
	steps = []step{
		func(tx *Tx, _ func(Result)) error { return tx.InitEpoch(epoch0) },
		func(tx *Tx, _ func(Result)) error { return tx.SetRetention(ruleSets[0]) },
		func(tx *Tx, _ func(Result)) error { return tx.SetMaxIDs(8) },
	}
	fails = []bool{false, false, false}
	for i := range n {
		now = now.Add(time.Duration(r.IntN(180)) * time.Second)
		at := now
		failing := false
		switch k := r.IntN(20); {
		case k < 14:
			type msg struct{ ch, id, data string }
			var batch []msg
			for range 1 + r.IntN(5) {
				m := msg{ch: chans[r.IntN(len(chans))], data: fmt.Sprint("d", r.Uint64())}
				if r.IntN(3) > 0 {
					m.id = fmt.Sprint("id", r.IntN(10))
				}
				if len(batch) > 0 && r.IntN(4) == 0 {
					// A retry within the entry, on the same channel or
					// (a different message) on another.
					prev := batch[len(batch)-1]
					m.id = prev.id
					if r.IntN(2) == 0 {
						m.ch = prev.ch
					}
				}
				batch = append(batch, m)
			}
			steps = append(steps, func(tx *Tx, rec func(Result)) error {
				for _, m := range batch {
					res, err := tx.Append(m.ch, m.id, []byte(m.data), at)
					if err != nil {
						return err
					}
					rec(res)
				}
				return nil
			})
		case k < 16:
			steps = append(steps, func(tx *Tx, _ func(Result)) error { return tx.Sweep(at) })
		case k < 17:
			ch, epoch := chans[r.IntN(len(chans))], fmt.Sprint("E", i)
			steps = append(steps, func(tx *Tx, _ func(Result)) error { return tx.DeleteChannel(ch, epoch) })
		case k < 18:
			key, value := fmt.Sprint("k", r.IntN(4)), []byte(fmt.Sprint(i))
			if r.IntN(3) == 0 {
				value = nil
			}
			steps = append(steps, func(tx *Tx, _ func(Result)) error { return tx.Put(key, value) })
		case k < 19:
			rules := ruleSets[r.IntN(len(ruleSets))]
			steps = append(steps, func(tx *Tx, _ func(Result)) error { return tx.SetRetention(rules) })
		default:
			ch := chans[r.IntN(len(chans))]
			failing = true
			steps = append(steps, func(tx *Tx, rec func(Result)) error {
				if _, err := tx.Append(ch, "id1", []byte("rolled back"), at); err != nil {
					return err
				}
				return errScripted
			})
		}
		fails = append(fails, failing)
	}
	return steps, fails
}

// replica applies script steps to one log and records what they returned.
type replica struct {
	l       *Log
	results []Result
	failed  int
}

func (r *replica) apply(t testing.TB, steps []step, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		applied, err := r.l.Update(uint64(i)+1, func(tx *Tx) error {
			return steps[i](tx, func(res Result) { r.results = append(r.results, res) })
		})
		switch {
		case errors.Is(err, errScripted):
			r.failed++
		case err != nil:
			t.Fatalf("entry %d: %v", i+1, err)
		case !applied:
			t.Fatalf("entry %d skipped", i+1)
		}
	}
}

func TestDeterminism(t *testing.T) {
	steps, fails := script(400)
	half := len(steps) / 2

	// a applies everything; b is closed and reopened half way and gets the
	// first half again (all skipped); c starts from a's snapshot half way.
	a := &replica{l: mustOpen(t)}
	bPath := filepath.Join(t.TempDir(), "b.db")
	bl, err := Open(Config{Path: bPath, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	b := &replica{l: bl}
	c := &replica{l: mustOpen(t)}

	a.apply(t, steps, 0, half)
	b.apply(t, steps, 0, half)
	if err := c.l.Restore(bytes.NewReader(takeSnapshot(t, a.l))); err != nil {
		t.Fatal(err)
	}
	if err := b.l.Close(); err != nil {
		t.Fatal(err)
	}
	b.l = mustOpenPath(t, bPath, true)
	for i := range b.l.Applied() {
		if applied, err := b.l.Update(i+1, func(*Tx) error { return errors.New("replayed") }); applied || err != nil {
			t.Fatalf("replayed entry %d: %v, %v", i+1, applied, err)
		}
	}
	firstHalf := len(a.results)
	if !reflect.DeepEqual(a.results, b.results) {
		t.Fatal("a and b returned different results in the first half")
	}
	a.apply(t, steps, half, len(steps))
	b.apply(t, steps, half, len(steps))
	c.apply(t, steps, half, len(steps))

	want := dump(t, a.l)
	sameDump(t, "b", dump(t, b.l), want)
	sameDump(t, "c", dump(t, c.l), want)
	if !reflect.DeepEqual(a.results, b.results) || !reflect.DeepEqual(a.results[firstHalf:], c.results) {
		t.Error("replicas returned different append results")
	}
	if a.failed != b.failed {
		t.Errorf("failed entries: a %d, b %d", a.failed, b.failed)
	}

	// g applies the same entries several to an Update, as raft/'s batching
	// FSM does (leaving out the failing ones: the FSM has none), and is
	// restarted half way. Chunks follow Updates, so its file differs; what
	// it holds and answers must not.
	gPath := filepath.Join(t.TempDir(), "g.db")
	gl, err := Open(Config{Path: gPath, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	g := &replica{l: gl}
	rec := func(res Result) { g.results = append(g.results, res) }
	sizes := []int{3, 1, 8, 2, 30, 5, 13}
	for i, n := 0, 0; i < len(steps); n++ {
		end := min(i+sizes[n%len(sizes)], len(steps))
		last := 0 // index of the group's last entry that applies
		for j := i; j < end; j++ {
			if !fails[j] {
				last = j + 1
			}
		}
		if last > 0 {
			mustUpdate(t, g.l, uint64(last), func(tx *Tx) error {
				for j := i; j < end; j++ {
					if fails[j] {
						continue
					}
					if err := steps[j](tx, rec); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if i < half && end >= half {
			if err := g.l.Close(); err != nil {
				t.Fatal(err)
			}
			g.l = mustOpenPath(t, gPath, true)
		}
		i = end
	}
	sameDump(t, "grouped", logical(dump(t, g.l)), logical(want))
	if !reflect.DeepEqual(g.results, a.results) {
		for i := range min(len(g.results), len(a.results)) {
			if g.results[i] != a.results[i] {
				t.Fatalf("grouped: append %d returned %+v, want %+v", i, g.results[i], a.results[i])
			}
		}
		t.Fatalf("grouped: %d append results, want %d", len(g.results), len(a.results))
	}

	// Make sure the script exercised what it is meant to.
	var dups, refused, full int
	for _, res := range a.results {
		if res.Duplicate {
			dups++
		}
		if res.Err != nil {
			refused++
		}
		if errors.Is(res.Err, ErrTooManyIDs) {
			full++
		}
	}
	trimmed, epochs := 0, 0
	for _, ch := range want.Channels {
		if ch.Info.First > 1 {
			trimmed++
		}
		if ch.Info.Epoch != epoch0 {
			epochs++
		}
	}
	t.Logf("%d entries: %d appends, %d duplicates, %d refused (%d for want of room for ids), %d failed entries, %d channels (%d trimmed, %d in a new epoch), %d ids held",
		len(steps), len(a.results), dups, refused, full, a.failed, len(want.Channels), trimmed, epochs, want.Held)
	if dups == 0 || refused == full || full == 0 || a.failed == 0 || trimmed == 0 || epochs == 0 || len(want.KV) == 0 || want.Held == 0 {
		t.Error("the script does not cover duplicates, refusals (both kinds), failures, trimming, deletes, keys and held ids")
	}
}

func TestTxApplied(t *testing.T) {
	l := mustOpen(t)
	var seen []uint64
	for _, index := range []uint64{1, 2, 7, 7, 9} {
		if _, err := l.Update(index, func(tx *Tx) error {
			seen = append(seen, tx.Applied())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := l.Update(12, func(tx *Tx) error {
		seen = append(seen, tx.Applied())
		return errors.New("rolled back")
	})
	if err == nil {
		t.Fatal("failing Update succeeded")
	}
	mustUpdate(t, l, 13, func(tx *Tx) error { seen = append(seen, tx.Applied()); return nil })
	if want := []uint64{0, 1, 2, 7, 9, 9}; !reflect.DeepEqual(seen, want) {
		t.Errorf("Tx.Applied in successive Updates = %v, want %v", seen, want)
	}
}

func TestTick(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	tick := func(index uint64, fn func(tx *Tx) error, ts ...time.Time) []time.Time {
		t.Helper()
		var out []time.Time
		mustUpdate(t, l, index, func(tx *Tx) error {
			for _, x := range ts {
				out = append(out, tx.Tick(x))
			}
			if fn != nil {
				return fn(tx)
			}
			return nil
		})
		return out
	}
	check := func(what string, got []time.Time, want ...time.Time) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
		for i := range got {
			if !got[i].Equal(want[i]) {
				t.Errorf("%s: tick %d = %v, want %v", what, i, got[i], want[i])
			}
		}
	}

	check("first", tick(2, nil, at(10*time.Second)), at(10*time.Second))
	check("later Update, earlier time", tick(3, nil, at(5*time.Second)), at(10*time.Second))
	check("later time", tick(4, nil, at(20*time.Second)), at(20*time.Second))
	// Within one Update too: the result must not depend on how entries are
	// grouped into Updates.
	check("same Update", tick(5, nil, at(30*time.Second), at(25*time.Second), at(31*time.Second)),
		at(30*time.Second), at(30*time.Second), at(31*time.Second))
	// An Update that does not tick, with earlier times, does not move the
	// clock back.
	tick(6, func(tx *Tx) error {
		mustAppend(t, tx, "a", "", "x", at(0))
		return tx.Sweep(at(time.Second))
	})
	check("after an Update with earlier times", tick(7, nil, at(15*time.Second)), at(31*time.Second))
	// A failed Update does not move it forward.
	if _, err := l.Update(8, func(tx *Tx) error {
		tx.Tick(at(time.Hour))
		return errors.New("rolled back")
	}); err == nil {
		t.Fatal("failing Update succeeded")
	}
	check("after a failed Update", tick(8, nil, at(40*time.Second)), at(40*time.Second))
}

// entry is a Raft entry as raft/'s FSM applies it: stamped by the leader
// and passed through Tick.
type entry struct {
	at    time.Time
	pubs  [][3]string // channel, id, data
	sweep bool
}

// entries makes a seeded sequence of entries whose stamps mostly advance but
// sometimes go back, as when leaders' clocks disagree.
func entries(n int) []entry {
	r := rand.New(rand.NewPCG(3, 5))
	chans := []string{"tmp.a", "tmp.b", "chat.a", "news"}
	now := t0
	var out []entry
	for i := range n {
		now = now.Add(time.Duration(r.IntN(90)) * time.Second)
		e := entry{at: now, sweep: r.IntN(10) == 0}
		if r.IntN(6) == 0 {
			e.at = now.Add(-time.Duration(r.IntN(300)) * time.Second) // a skewed leader
		}
		for range r.IntN(4) {
			e.pubs = append(e.pubs, [3]string{chans[r.IntN(len(chans))], fmt.Sprint("id", r.IntN(12)), fmt.Sprint("m", i)})
		}
		out = append(out, e)
	}
	return out
}

func (e entry) apply(tx *Tx, rec func(Result)) error {
	now := tx.Tick(e.at)
	for _, p := range e.pubs {
		res, err := tx.Append(p[0], p[1], []byte(p[2]), now)
		if err != nil {
			return err
		}
		rec(res)
	}
	if e.sweep {
		return tx.Sweep(now)
	}
	return nil
}

// TestGroupingRetention applies entries one per Update and all in one
// Update in cases where retention could see a different time or different
// rules depending on the grouping.
func TestGroupingRetention(t *testing.T) {
	type op func(tx *Tx) error
	appendAt := func(ch string, n int, at time.Duration) op {
		return func(tx *Tx) error {
			now := tx.Tick(t0.Add(at))
			for i := range n {
				if _, err := tx.Append(ch, fmt.Sprint("id", i), []byte("x"), now); err != nil {
					return err
				}
			}
			return nil
		}
	}
	rules := func(rs ...Rule) op {
		return func(tx *Tx) error { return tx.SetRetention(rs) }
	}
	tests := []struct {
		name    string
		entries []op
	}{
		{"rules loosened after an append", []op{
			rules(Rule{Pattern: "x", MaxMessages: 3}),
			appendAt("x", 10, 0),
			rules(Rule{Pattern: "x", MaxMessages: 100}),
		}},
		{"rules tightened after an append", []op{
			appendAt("x", 10, 0),
			rules(Rule{Pattern: "x", MaxMessages: 3}),
		}},
		{"another channel's later time", []op{
			rules(Rule{Pattern: "x", MaxAge: time.Hour}),
			appendAt("x", 2, 0),
			appendAt("y", 1, 2*time.Hour),
		}},
		{"ids of a channel not written again", []op{
			appendAt("x", 3, 0),
			appendAt("y", 1, IdempotencyWindow+time.Minute),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apart, together := mustOpen(t), mustOpen(t)
			mustInit(t, apart)
			mustInit(t, together)
			for i, e := range tt.entries {
				mustUpdate(t, apart, uint64(i)+2, e)
			}
			mustUpdate(t, together, uint64(len(tt.entries))+1, func(tx *Tx) error {
				for _, e := range tt.entries {
					if err := e(tx); err != nil {
						return err
					}
				}
				return nil
			})
			sameDump(t, "one Update", logical(dump(t, together)), logical(dump(t, apart)))
		})
	}
}

// TestGroupingInvariance applies the same entries one per Update and in
// batches of varying sizes, the way raft/'s batching FSM does (skipping
// entries at or below Tx.Applied), and expects the same contents.
func TestGroupingInvariance(t *testing.T) {
	es := entries(400)
	rules := []Rule{{Pattern: "tmp.*", MaxAge: 5 * time.Minute}, {Pattern: "chat.*", MaxMessages: 10}}
	setup := func(t *testing.T) *Log {
		l := mustOpen(t)
		mustUpdate(t, l, 1, func(tx *Tx) error {
			if err := tx.InitEpoch(epoch0); err != nil {
				return err
			}
			return tx.SetRetention(rules)
		})
		return l
	}
	// run applies es in batches of the given sizes (cycled); an overlap
	// re-sends that many already applied entries with each batch.
	run := func(t *testing.T, sizes []int, overlap int) (logDump, []Result) {
		l := setup(t)
		var results []Result
		rec := func(res Result) { results = append(results, res) }
		for i, b := 0, 0; i < len(es); b++ {
			end := min(i+sizes[b%len(sizes)], len(es))
			start := max(i-overlap, 0)
			mustUpdate(t, l, uint64(end)+1, func(tx *Tx) error {
				for j := start; j < end; j++ {
					if uint64(j)+2 <= tx.Applied() { // entry j has index j+2
						continue
					}
					if err := es[j].apply(tx, rec); err != nil {
						return err
					}
				}
				return nil
			})
			i = end
		}
		return dump(t, l), results
	}

	want, wantResults := run(t, []int{1}, 0)
	var dups int
	for _, r := range wantResults {
		if r.Duplicate {
			dups++
		}
	}
	if dups == 0 {
		t.Fatal("the entries make no duplicates")
	}
	for _, tt := range []struct {
		name    string
		sizes   []int
		overlap int
	}{
		{"pairs", []int{2}, 0},
		{"uneven", []int{3, 1, 7, 2, 16, 5}, 0},
		{"replayed overlap", []int{4, 9, 1}, 3},
		{"one Update", []int{len(es)}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, results := run(t, tt.sizes, tt.overlap)
			sameDump(t, tt.name, logical(got), logical(want))
			if !reflect.DeepEqual(results, wantResults) {
				t.Error("append results differ")
			}
		})
	}
}
