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

// TestMaxIDs: with room for 3 ids, a fourth new id is refused and stores
// nothing; retries of held ids and publishes without ids still go through;
// ids leaving the window make room. A restart and a restored snapshot keep
// the setting and answer the same.
func TestMaxIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "channels.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	if got := l.MaxIDs(); got != DefaultMaxIDs {
		t.Fatalf("MaxIDs of a new log = %d, want %d", got, DefaultMaxIDs)
	}
	mustUpdate(t, l, 2, func(tx *Tx) error { return tx.SetMaxIDs(3) })
	publish(t, l, 3, pub{"a", "k1", 0}, pub{"a", "k2", time.Second}, pub{"b", "k1", 2 * time.Second})

	// At 5 minutes: full.
	probe := []struct {
		ch, id string
		want   string // "ok", "dup" or "refused"
	}{
		{"a", "k3", "refused"},
		{"a", "k1", "dup"},
		{"c", "k9", "refused"},
		{"a", "", "ok"},
		{"b", "k1", "dup"},
	}
	check := func(l *Log, index uint64, at time.Duration) {
		t.Helper()
		before, refused := l.HeldIDs(), l.RefusedIDs()
		infoA, _ := l.Info("a")
		mustUpdate(t, l, index, func(tx *Tx) error {
			for _, p := range probe {
				res, err := tx.Append(p.ch, p.id, []byte("x"), t0.Add(at))
				if err != nil {
					return err
				}
				got := "ok"
				switch {
				case errors.Is(res.Err, ErrTooManyIDs):
					got = "refused"
				case res.Err != nil:
					t.Fatalf("Append(%s, %s): %v", p.ch, p.id, res.Err)
				case res.Duplicate:
					got = "dup"
				}
				if got != p.want {
					t.Errorf("Append(%s, %s) at %v: %s, want %s", p.ch, p.id, at, got, p.want)
				}
			}
			return nil
		})
		if l.HeldIDs() != before {
			t.Errorf("HeldIDs %d, was %d", l.HeldIDs(), before)
		}
		if got := l.RefusedIDs() - refused; got != 2 {
			t.Errorf("RefusedIDs went up by %d, want 2", got)
		}
		if info, _ := l.Info("a"); info.Next != infoA.Next+1 {
			t.Errorf("channel a: next %d, want %d (only the publish without id stored)", info.Next, infoA.Next+1)
		}
	}
	check(l, 4, 5*time.Minute)

	// A restarted log and one restored from a snapshot answer the same.
	snap := takeSnapshot(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpenPath(t, path, true)
	if got := l.MaxIDs(); got != 3 {
		t.Fatalf("MaxIDs after a restart = %d, want 3", got)
	}
	restored := mustOpen(t)
	if err := restored.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Log{l, restored} {
		check(x, 5, 6*time.Minute)
	}

	// a/k1 leaves the window: one new id fits, the next does not.
	for _, x := range []*Log{l, restored} {
		var got []string
		mustUpdate(t, x, 6, func(tx *Tx) error {
			for _, id := range []string{"n1", "n2"} {
				res, err := tx.Append("c", id, []byte("x"), t0.Add(IdempotencyWindow))
				if err != nil {
					return err
				}
				got = append(got, fmt.Sprint(res.Offset, errors.Is(res.Err, ErrTooManyIDs)))
			}
			return nil
		})
		if want := []string{"1 false", "0 true"}; !reflect.DeepEqual(got, want) {
			t.Errorf("after a/k1 expired: %v, want %v", got, want)
		}
		if x.HeldIDs() != 3 {
			t.Errorf("HeldIDs = %d, want 3", x.HeldIDs())
		}
	}
	sameDump(t, "restored", logical(dump(t, restored)), logical(dump(t, l)))

	// Lowered below what is held: nothing held is forgotten, new ids wait.
	mustUpdate(t, l, 7, func(tx *Tx) error { return tx.SetMaxIDs(1) })
	if l.HeldIDs() != 3 {
		t.Errorf("HeldIDs after lowering = %d, want 3", l.HeldIDs())
	}
	res := publishRes(t, l, 8, "d", "z", IdempotencyWindow+time.Second)
	if !errors.Is(res.Err, ErrTooManyIDs) {
		t.Errorf("new id with 3 held, 1 allowed: %+v", res)
	}
	// 0: no limit.
	mustUpdate(t, l, 9, func(tx *Tx) error { return tx.SetMaxIDs(0) })
	if res := publishRes(t, l, 10, "d", "z", IdempotencyWindow+time.Second); res.Err != nil || res.Offset != 1 {
		t.Errorf("new id with no limit: %+v", res)
	}
}

// publishRes appends one message as entry index and returns its result,
// refused or not.
func publishRes(t testing.TB, l *Log, index uint64, ch, id string, at time.Duration) Result {
	t.Helper()
	var res Result
	mustUpdate(t, l, index, func(tx *Tx) error {
		var err error
		res, err = tx.Append(ch, id, []byte("x"), t0.Add(at))
		return err
	})
	return res
}

// flood is a seeded stream of entries, stamped through Tick, carrying many
// new ids (and retries of earlier ones) at several times the rate a bound
// of maxFlood ids over the window allows.
func flood(n int) []entry {
	r := rand.New(rand.NewPCG(17, 19))
	chans := []string{"chat.a", "chat.b", "news", "user:1/inbox"}
	now := t0
	var out []entry
	seq := 0
	for i := range n {
		now = now.Add(time.Duration(r.IntN(4000)) * time.Millisecond)
		e := entry{at: now, sweep: r.IntN(50) == 0}
		for range r.IntN(12) {
			ch := chans[r.IntN(len(chans))]
			id := ""
			switch k := r.IntN(10); {
			case k < 7 || seq == 0:
				seq++
				id = fmt.Sprint("p", seq)
			case k < 9: // a retry of a recent id, maybe refused before
				id = fmt.Sprint("p", max(1, seq-r.IntN(300)))
			}
			e.pubs = append(e.pubs, [3]string{ch, id, fmt.Sprint("m", i)})
		}
		out = append(out, e)
	}
	return out
}

const maxFlood = 500

// TestMaxIDsFlood applies a flood of ids under a bound, one entry per
// Update, in groups of varying sizes (as raft/'s batching FSM does), across
// a restart and from a snapshot taken half way. Every replica returns the
// same results and holds the same; the bound holds after every Update; a
// refused publish stores nothing; and guarantee 4 holds for every id
// accepted: a retry within the window is answered with its first offset.
func TestMaxIDsFlood(t *testing.T) {
	es := flood(3000)
	setup := func(t *testing.T, path string) *Log {
		l := mustOpenPath(t, path, true)
		mustUpdate(t, l, 1, func(tx *Tx) error {
			if err := tx.InitEpoch(epoch0); err != nil {
				return err
			}
			return tx.SetMaxIDs(maxFlood)
		})
		return l
	}
	// run applies es from entry from on, in groups of the given sizes
	// (cycled); at entry stop it returns early, for a restart.
	run := func(t *testing.T, l *Log, sizes []int, from, stop int, results *[]Result) {
		t.Helper()
		rec := func(res Result) { *results = append(*results, res) }
		for i, b := from, 0; i < stop; b++ {
			end := min(i+sizes[b%len(sizes)], stop)
			mustUpdate(t, l, uint64(end)+1, func(tx *Tx) error {
				for j := i; j < end; j++ {
					if err := es[j].apply(tx, rec); err != nil {
						return err
					}
				}
				return nil
			})
			if n := l.HeldIDs(); n > maxFlood {
				t.Fatalf("entry %d: %d ids held, more than %d", end+1, n, maxFlood)
			}
			i = end
		}
	}
	half := len(es) / 2

	// one: an entry per Update, the reference.
	one := setup(t, filepath.Join(t.TempDir(), "one.db"))
	var want []Result
	run(t, one, []int{1}, 0, half, &want)
	snap := takeSnapshot(t, one)
	run(t, one, []int{1}, half, len(es), &want)
	wantDump := logical(dump(t, one))
	checkFlood(t, es, want, wantDump)

	for _, tt := range []struct {
		name  string
		sizes []int
	}{
		{"uneven", []int{3, 1, 7, 2, 16, 5}},
		{"large", []int{200, 64}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "g.db")
			g := setup(t, path)
			var got []Result
			run(t, g, tt.sizes, 0, half, &got)
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			g = mustOpenPath(t, path, true)
			run(t, g, tt.sizes, half, len(es), &got)
			if !reflect.DeepEqual(got, want) {
				t.Fatal("append results differ from one entry per Update")
			}
			sameDump(t, tt.name, logical(dump(t, g)), wantDump)
		})
	}
	t.Run("snapshot", func(t *testing.T) {
		c := mustOpen(t)
		if err := c.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		var got []Result
		run(t, c, []int{5, 1, 9}, half, len(es), &got)
		n := len(want) - len(got)
		if n < 0 || !reflect.DeepEqual(got, want[n:]) {
			t.Fatal("append results after the snapshot differ")
		}
		sameDump(t, "snapshot", logical(dump(t, c)), wantDump)
	})
}

// checkFlood checks the results of the flood against a plain model of
// guarantee 4: every retry within the window of an accepted id is a
// duplicate of its first offset, and the log stores exactly the accepted
// publishes.
func checkFlood(t *testing.T, es []entry, results []Result, d logDump) {
	t.Helper()
	type first struct {
		off uint64
		t   time.Time
	}
	accepted := map[string]first{}
	stored := map[string]uint64{}
	var refused, dups, afterRefusal int
	refusedIDs := map[string]bool{}
	i := 0
	var clock time.Time
	for _, e := range es {
		if e.at.After(clock) {
			clock = e.at // what Tick gives
		}
		for _, p := range e.pubs {
			res := results[i]
			i++
			key := p[0] + "/" + p[1]
			f, ok := accepted[key]
			held := p[1] != "" && ok && clock.Sub(f.t) < IdempotencyWindow
			switch {
			case held:
				if !res.Duplicate || res.Offset != f.off {
					t.Fatalf("retry of %s within the window: %+v, want a duplicate of %d", key, res, f.off)
				}
				dups++
			case res.Duplicate:
				t.Fatalf("%s: a duplicate, but no publish of it was accepted in the window", key)
			case errors.Is(res.Err, ErrTooManyIDs):
				refused++
				refusedIDs[key] = true
			case res.Err != nil:
				t.Fatalf("%s: %v", key, res.Err)
			default:
				stored[p[0]]++
				if p[1] != "" {
					accepted[key] = first{res.Offset, clock}
					if refusedIDs[key] {
						afterRefusal++
					}
				}
			}
		}
	}
	for _, ch := range d.Channels {
		if got := ch.Info.Next - 1; got != stored[ch.Name] {
			t.Errorf("channel %s: %d messages stored, %d accepted", ch.Name, got, stored[ch.Name])
		}
	}
	t.Logf("%d publishes: %d refused, %d duplicates, %d stored on a retry after a refusal; %d ids held at the end (at most %d)",
		len(results), refused, dups, afterRefusal, d.Held, maxFlood)
	if refused == 0 || dups == 0 || afterRefusal == 0 || d.Held < maxFlood/2 {
		t.Error("the flood does not cover refusals, duplicates, and retries stored after a refusal")
	}
}
