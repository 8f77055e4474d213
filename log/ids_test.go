package log

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// pub is one publish for the idempotency tests.
type pub struct {
	ch, id string
	at     time.Duration // after t0
}

// publish applies pubs as entry index and returns the results.
func publish(t testing.TB, l *Log, index uint64, pubs ...pub) []Result {
	t.Helper()
	var out []Result
	mustUpdate(t, l, index, func(tx *Tx) error {
		for _, p := range pubs {
			out = append(out, mustAppend(t, tx, p.ch, p.id, p.ch+"/"+p.id, t0.Add(p.at)))
		}
		return nil
	})
	return out
}

// answers returns, for each pub, the offset it would be a duplicate of or
// 0, by publishing them all in one Update on a copy of l, rolled back.
func answers(t testing.TB, l *Log, pubs ...pub) []uint64 {
	t.Helper()
	var out []uint64
	_, err := l.Update(l.Applied()+1, func(tx *Tx) error {
		for _, p := range pubs {
			res := mustAppend(t, tx, p.ch, p.id, "probe", t0.Add(p.at))
			if res.Duplicate {
				out = append(out, res.Offset)
			} else {
				out = append(out, 0)
			}
		}
		return errors.New("probe: roll back")
	})
	if err == nil {
		t.Fatal("probe Update committed")
	}
	return out
}

func TestIdempotencyDuplicatesInOneUpdate(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	got := publish(t, l, 2,
		pub{"a", "k1", 0}, pub{"b", "k1", 0}, pub{"a", "k2", 0},
		pub{"a", "k1", time.Second}, pub{"b", "k1", time.Second}, pub{"a", "", 0},
		pub{"a", "k2", 2 * time.Second}, pub{"a", "k3", 3 * time.Second})
	type r struct {
		off uint64
		dup bool
	}
	var rs []r
	for _, g := range got {
		rs = append(rs, r{g.Offset, g.Duplicate})
	}
	want := []r{{1, false}, {1, false}, {2, false}, {1, true}, {1, true}, {3, false}, {2, true}, {4, false}}
	if !slices.Equal(rs, want) {
		t.Errorf("results %v, want %v", rs, want)
	}
	if got := l.HeldIDs(); got != 4 {
		t.Errorf("HeldIDs = %d, want 4 (a/k1 a/k2 a/k3 b/k1)", got)
	}
	if got := storedIDs(t, l, "a"); !slices.Equal(got, []string{"1/k1", "2/k2", "3/", "4/k3"}) {
		t.Errorf("stored %q", got)
	}
}

// TestIdempotencyReopen checks that a restart rebuilds the index: ids are
// still duplicates, including ids whose messages retention has trimmed, and
// still expire with the window.
func TestIdempotencyReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids.db")
	l, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustInit(t, l)
	mustUpdate(t, l, 2, func(tx *Tx) error { return tx.SetRetention([]Rule{{Pattern: "one", MaxMessages: 1}}) })
	publish(t, l, 3, pub{"one", "k1", 0}, pub{"one", "k2", time.Minute}, pub{"keep", "k1", time.Minute})
	publish(t, l, 4, pub{"one", "k3", 5 * time.Minute}, pub{"keep", "k2", 6 * time.Minute})
	if info := mustInfo(t, l, "one"); info.First != 3 {
		t.Fatalf("one: %+v, want k1 and k2 trimmed", info)
	}
	probe := []pub{
		{"one", "k1", 7 * time.Minute}, {"one", "k2", 7 * time.Minute}, {"one", "k3", 7 * time.Minute},
		{"keep", "k1", 7 * time.Minute}, {"keep", "k2", 7 * time.Minute}, {"keep", "k9", 7 * time.Minute},
		// later: k1 (published at 0) has left the window, k3 not.
		{"one", "k1", IdempotencyWindow}, {"one", "k3", IdempotencyWindow},
	}
	wantAnswers := []uint64{1, 2, 3, 1, 2, 0, 0, 3}
	if got := answers(t, l, probe...); !slices.Equal(got, wantAnswers) {
		t.Fatalf("answers before the restart %v, want %v", got, wantAnswers)
	}
	before := dump(t, l)
	if before.Held != 5 {
		t.Fatalf("HeldIDs = %d, want 5", before.Held)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = mustOpenPath(t, path, true)
	sameDump(t, "reopened", dump(t, l), before)
	if got := answers(t, l, probe...); !slices.Equal(got, wantAnswers) {
		t.Errorf("answers after the restart %v, want %v", got, wantAnswers)
	}
	// The window moves with entry times only: an entry at 11m30s forgets
	// the ids published at 0 and 1m, and the restart agrees.
	publish(t, l, 5, pub{"other", "", IdempotencyWindow + 90*time.Second})
	if got := l.HeldIDs(); got != 2 {
		t.Errorf("HeldIDs after the window moved = %d, want 2 (one/k3, keep/k2)", got)
	}
	mid := dump(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpenPath(t, path, true)
	sameDump(t, "reopened after expiry", dump(t, l2), mid)
	got := publish(t, l2, 6, pub{"one", "k1", IdempotencyWindow + time.Minute}, pub{"one", "k3", IdempotencyWindow + time.Minute})
	if got[0].Duplicate || got[0].Offset != 4 || !got[1].Duplicate || got[1].Offset != 3 {
		t.Errorf("after the restart: %+v, want k1 stored again at 4 and k3 a duplicate of 3", got)
	}
}

// TestIdempotencyRestore restores a snapshot into a fresh log, which never
// saw the ids, and expects the same answers.
func TestIdempotencyRestore(t *testing.T) {
	src := mustOpen(t)
	mustInit(t, src)
	publish(t, src, 2, pub{"a", "k1", 0}, pub{"a", "k2", time.Minute}, pub{"b", "k1", 2 * time.Minute})
	mustUpdate(t, src, 3, func(tx *Tx) error { return tx.DeleteChannel("b", "E1") })
	publish(t, src, 4, pub{"b", "k2", 3 * time.Minute}, pub{"a", "k1", 4 * time.Minute})
	probe := []pub{{"a", "k1", 5 * time.Minute}, {"a", "k2", 5 * time.Minute}, {"b", "k1", 5 * time.Minute}, {"b", "k2", 5 * time.Minute}}
	want := answers(t, src, probe...)
	if !slices.Equal(want, []uint64{1, 2, 0, 1}) {
		t.Fatalf("source answers %v", want)
	}
	snap := takeSnapshot(t, src)

	fresh := mustOpen(t)
	if fresh.HeldIDs() != 0 {
		t.Fatal("a new log holds ids")
	}
	if err := fresh.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "restored", dump(t, fresh), dump(t, src))
	if got := answers(t, fresh, probe...); !slices.Equal(got, want) {
		t.Errorf("restored answers %v, want %v", got, want)
	}
	if fresh.HeldIDs() != 3 {
		t.Errorf("HeldIDs = %d, want 3", fresh.HeldIDs())
	}

	// Restore replaces the index of a log that held other ids.
	other := mustOpen(t)
	mustInit(t, other)
	publish(t, other, 2, pub{"a", "x1", 0}, pub{"a", "k2", 0}, pub{"z", "k", 0})
	if err := other.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "restored over another log", dump(t, other), dump(t, src))
}

// TestIdempotencyDeleteChannel checks that a deleted channel forgets its
// ids, in the index and across a restart, while ids of its new history are
// kept.
func TestIdempotencyDeleteChannel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "del.db")
	l, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustInit(t, l)
	publish(t, l, 2, pub{"a", "k1", 0}, pub{"a", "k2", 0}, pub{"a", "k3", 0}, pub{"b", "k1", 0})
	var rs []Result
	mustUpdate(t, l, 3, func(tx *Tx) error {
		rs = append(rs, mustAppend(t, tx, "a", "k4", "x", t0)) // gone with the delete
		if err := tx.DeleteChannel("a", "E1"); err != nil {
			return err
		}
		rs = append(rs, mustAppend(t, tx, "a", "k1", "x", t0))
		rs = append(rs, mustAppend(t, tx, "a", "k4", "x", t0))
		rs = append(rs, mustAppend(t, tx, "a", "k1", "x", t0))
		return nil
	})
	if rs[0].Offset != 4 || rs[1].Offset != 1 || rs[1].Duplicate || rs[2].Offset != 2 || rs[2].Duplicate ||
		rs[3].Offset != 1 || !rs[3].Duplicate || rs[3].Epoch != "E1" {
		t.Fatalf("append, delete, append: %+v", rs)
	}
	probe := []pub{{"a", "k1", time.Second}, {"a", "k2", time.Second}, {"a", "k3", time.Second}, {"a", "k4", time.Second}, {"b", "k1", time.Second}}
	want := []uint64{1, 0, 0, 2, 1}
	if got := answers(t, l, probe...); !slices.Equal(got, want) {
		t.Fatalf("answers %v, want %v", got, want)
	}
	// A delete on its own, in the same Update as a later write to another
	// channel.
	mustUpdate(t, l, 4, func(tx *Tx) error {
		if err := tx.DeleteChannel("b", "E2"); err != nil {
			return err
		}
		mustAppend(t, tx, "c", "k1", "x", t0)
		return nil
	})
	want = []uint64{1, 0, 0, 2, 0}
	if got := answers(t, l, probe...); !slices.Equal(got, want) {
		t.Fatalf("answers after deleting b %v, want %v", got, want)
	}
	before := dump(t, l)
	if before.Held != 3 {
		t.Errorf("HeldIDs = %d, want 3 (a/k1 a/k4 c/k1)", before.Held)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The records of the deleted histories are still in "d" (they leave
	// with the window); the restart must not take them back.
	l = mustOpenPath(t, path, true)
	sameDump(t, "reopened", dump(t, l), before)
	if got := answers(t, l, probe...); !slices.Equal(got, want) {
		t.Errorf("answers after the restart %v, want %v", got, want)
	}
}

// TestIdempotencyFailedUpdate checks that an Update that fails leaves the
// index as it was: ids it appended are not duplicates afterwards, ids it
// deleted with a channel are.
func TestIdempotencyFailedUpdate(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	publish(t, l, 2, pub{"a", "k1", 0}, pub{"b", "k1", 0})
	before := dump(t, l)

	errBoom := errors.New("boom")
	_, err := l.Update(3, func(tx *Tx) error {
		mustAppend(t, tx, "a", "new", "x", t0.Add(time.Minute))
		mustAppend(t, tx, "c", "new", "x", t0.Add(time.Minute))
		if err := tx.DeleteChannel("b", "E1"); err != nil {
			return err
		}
		// An entry far later would expire everything held.
		mustAppend(t, tx, "d", "late", "x", t0.Add(3*IdempotencyWindow))
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update: %v", err)
	}
	sameDump(t, "after a failed Update", dump(t, l), before)

	// A panic in fn leaves no trace either.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		_, _ = l.Update(3, func(tx *Tx) error {
			mustAppend(t, tx, "a", "new", "x", t0.Add(time.Minute))
			panic("boom")
		})
	}()
	sameDump(t, "after a panic", dump(t, l), before)

	got := answers(t, l, pub{"a", "k1", time.Minute}, pub{"b", "k1", time.Minute}, pub{"a", "new", time.Minute}, pub{"c", "new", time.Minute})
	if want := []uint64{1, 1, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("answers %v, want %v", got, want)
	}
}

// TestIdempotencyExpiry checks that ids leave the index by entry times as
// the window moves, also when entry times go backwards (entries not
// stamped through Tick), and that a restart at any point agrees.
func TestIdempotencyExpiry(t *testing.T) {
	steps := [][]pub{
		{{"a", "k1", 0}, {"a", "k2", time.Minute}},
		{{"b", "k1", 2 * time.Minute}},
		{{"a", "k3", 10*time.Minute + 30*time.Second}}, // a/k1 expires
		// Earlier times: a/k1 is gone, so stored again (and held: 5 minutes
		// old by the clock); a/k2 is still held, so a duplicate.
		{{"a", "k1", 5 * time.Minute}, {"a", "k2", 5 * time.Minute}},
		{{"c", "k1", 0}}, // expired by the clock as it is stored
		// c/k1 is new again; a/k2 expired for a publish at 12m: stored
		// again. The clock moves to 12m: b/k1 (2m) and c/k1 (1m) expire.
		{{"c", "k1", time.Minute}, {"a", "k2", 12 * time.Minute}},
		{{"a", "k3", 30 * time.Minute}}, // all but a/k3 expire
		{{"a", "k3", 35 * time.Minute}, {"b", "k1", 35 * time.Minute}},
	}
	path := filepath.Join(t.TempDir(), "restarted.db")
	straight := mustOpen(t)
	restarted, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { restarted.Close() }()
	mustInit(t, straight)
	mustInit(t, restarted)
	var held []int
	for i, s := range steps {
		a := publish(t, straight, uint64(i)+2, s...)
		b := publish(t, restarted, uint64(i)+2, s...)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("step %d: %+v, restarted %+v", i, a, b)
		}
		sameDump(t, fmt.Sprint("step ", i), dump(t, restarted), dump(t, straight))
		held = append(held, straight.HeldIDs())
		if err := restarted.Close(); err != nil {
			t.Fatal(err)
		}
		if restarted, err = Open(Config{Path: path, NoSync: true}); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int{2, 3, 3, 4, 4, 3, 1, 2}; !slices.Equal(held, want) {
		t.Errorf("HeldIDs after each step %v, want %v", held, want)
	}
}

// TestHeldIDsDuringUpdates: HeldIDs may be read while Updates run (the hub
// reads it for its metrics) and reports committed ids only.
func TestHeldIDsDuringUpdates(t *testing.T) {
	l := mustOpen(t)
	mustInit(t, l)
	stop := make(chan struct{})
	done := make(chan struct{})
	var bad atomic.Int64
	go func() {
		defer close(done)
		last := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := l.HeldIDs()
			if n < last || n%10 != 0 { // whole Updates of 10 ids, never undone
				bad.Store(int64(n))
			}
			last = n
		}
	}()
	for i := range 200 {
		index := uint64(i) + 2
		pubs := make([]pub, 10)
		for j := range pubs {
			pubs[j] = pub{"a", fmt.Sprintf("k%d-%d", i, j), 0}
		}
		publish(t, l, index, pubs...)
		if i%10 == 0 { // and one that fails, to be undone
			_, _ = l.Update(index+1000, func(tx *Tx) error {
				mustAppend(t, tx, "a", "undone", "x", t0)
				return errors.New("no")
			})
		}
	}
	close(stop)
	<-done
	if n := bad.Load(); n != 0 {
		t.Fatalf("HeldIDs read %d during the Updates: not a count of committed ids", n)
	}
	if n := l.HeldIDs(); n != 2000 {
		t.Fatalf("HeldIDs = %d, want 2000", n)
	}
}
