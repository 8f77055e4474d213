package log

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIDIndexModel drives the in-memory index with random Updates of puts
// and channel deletions, times mostly rising and sometimes going back; a
// fifth of the Updates are rolled back. Every answer and count is checked
// against a plain map of maps. Narrowed hashes make keys collide; long ids
// make records cross arena blocks.
func TestIDIndexModel(t *testing.T) {
	for _, narrow := range []uint64{0, ^uint64(3), ^uint64(0)} {
		t.Run(fmt.Sprintf("narrow=%x", narrow), func(t *testing.T) {
			for seed := uint64(1); seed <= 4; seed++ {
				idIndexModel(t, narrow, seed)
			}
		})
	}
}

type idModel map[string]map[string]idRec

func (m idModel) clone() idModel {
	c := make(idModel, len(m))
	for ch, ids := range m {
		c[ch] = maps.Clone(ids)
	}
	return c
}

func idIndexModel(t *testing.T, narrow, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, narrow))
	x := newIDIndex()
	x.narrow = narrow
	model := idModel{}
	chans := []string{"a", "b", "chat.room", strings.Repeat("c", 255)}
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("id-%d", i)
		if i%8 == 0 {
			ids[i] += strings.Repeat("x", 900) // 13 records or so fill a block
		}
	}
	window := int64(IdempotencyWindow)
	var clock, now int64
	off := uint64(0)
	check := func(update int, what string) {
		t.Helper()
		n := 0
		for _, ch := range chans {
			for _, id := range ids {
				want, wok := model[ch][id]
				got, gok, _ := x.get(ch, id, x.hash(ch, id))
				if wok != gok || got != want {
					t.Fatalf("seed %d update %d (%s): get(%s, %.10s) = %v %v, want %v %v",
						seed, update, what, ch, id, got, gok, want, wok)
				}
				if wok {
					n++
				}
			}
			if got, want := x.heldIn(ch), len(model[ch]); got != want {
				t.Fatalf("seed %d update %d (%s): heldIn(%.10s) = %d, want %d", seed, update, what, ch, got, want)
			}
		}
		if x.count != n || x.held() != n {
			t.Fatalf("seed %d update %d (%s): count %d, held %d, want %d", seed, update, what, x.count, x.held(), n)
		}
		var listed []string
		x.each(func(ch, id string, r idRec) { listed = append(listed, ch+"/"+id) })
		if len(listed) != n {
			t.Fatalf("seed %d update %d (%s): each listed %d, want %d", seed, update, what, len(listed), n)
		}
	}
	for update := 0; update < 600; update++ {
		x.begin()
		tentative := model.clone()
		tail, blocks, lastLen := x.arena.tail, len(x.arena.blocks), 0
		if blocks > 0 {
			lastLen = len(x.arena.blocks[blocks-1])
		}
		for op := rng.IntN(12); op >= 0; op-- {
			if rng.IntN(50) == 0 {
				ch := chans[rng.IntN(len(chans))]
				x.drop(ch)
				delete(tentative, ch)
				continue
			}
			// A new record for a key: a new id, or one reused.
			now += rng.Int64N(window / 100)
			at := now
			if rng.IntN(10) == 0 {
				at -= rng.Int64N(window / 2) // an entry not stamped through Tick
			}
			ch, id := chans[rng.IntN(len(chans))], ids[rng.IntN(len(ids))]
			off++
			r := idRec{off: off, t: at}
			h := x.hash(ch, id)
			_, _, free := x.get(ch, id, h)
			if free && x.slots[h] != (idSlot{}) {
				t.Fatalf("seed %d update %d: get says hash %x is free, a slot has it", seed, update, h)
			}
			x.put(ch, id, h, r, free && rng.IntN(2) == 0)
			if tentative[ch] == nil {
				tentative[ch] = map[string]idRec{}
			}
			tentative[ch][id] = r
		}
		if rng.IntN(5) == 0 {
			x.rollback()
			if x.arena.tail != tail || len(x.arena.blocks) != blocks || (blocks > 0 && len(x.arena.blocks[blocks-1]) != lastLen) {
				t.Fatalf("seed %d update %d: rollback left the arena at %d in %d blocks, was %d in %d",
					seed, update, x.arena.tail, len(x.arena.blocks), tail, blocks)
			}
			check(update, "rolled back")
			continue
		}
		clock = max(clock, now)
		x.commit(clock)
		model = tentative
		for ch, m := range model {
			for id, r := range m {
				if expired(r.t, clock) {
					delete(m, id)
				}
			}
			if len(m) == 0 {
				delete(model, ch)
			}
		}
		check(update, "committed")
	}
	// Everything expires: the arena is down to one block, and the channel
	// names are forgotten.
	x.begin()
	x.commit(now + window + 1)
	if x.held() != 0 || len(x.slots) != 0 || len(x.more) != 0 || len(x.chans) != 0 || len(x.arena.blocks) > 1 {
		t.Fatalf("after all expired: held %d, %d slots, %d more, %d channels, %d blocks",
			x.held(), len(x.slots), len(x.more), len(x.chans), len(x.arena.blocks))
	}
	// And it is usable again.
	x.put("a", "again", x.hash("a", "again"), idRec{off: 1, t: now + window + 2}, true)
	if r, ok, _ := x.get("a", "again", x.hash("a", "again")); !ok || r.off != 1 {
		t.Fatalf("after all expired, a new put: %v %v", r, ok)
	}
}

// TestIDIndexRollbackCollisions: with every key on one hash, an Update that
// puts, replaces and deletes is undone exactly.
func TestIDIndexRollbackCollisions(t *testing.T) {
	x := newIDIndex()
	x.narrow = ^uint64(0)
	put := func(ch, id string, off uint64) {
		h := x.hash(ch, id)
		_, _, free := x.get(ch, id, h)
		x.put(ch, id, h, idRec{off: off, t: int64(off)}, free)
	}
	dump := func() []string {
		var out []string
		x.each(func(ch, id string, r idRec) { out = append(out, fmt.Sprintf("%s/%s=%d", ch, id, r.off)) })
		slices.Sort(out)
		return out
	}
	x.begin()
	put("a", "k1", 1)
	put("a", "k2", 2)
	put("b", "k1", 3)
	x.commit(3)
	before := dump()
	if want := []string{"a/k1=1", "a/k2=2", "b/k1=3"}; !slices.Equal(before, want) {
		t.Fatalf("held %v, want %v", before, want)
	}
	x.begin()
	put("a", "k1", 4) // replaces the one in the slot
	put("b", "k1", 5) // replaces one in more
	put("c", "k9", 6) // a new channel
	x.drop("a")
	put("a", "k2", 7) // after the delete
	if got, want := dump(), []string{"a/k2=7", "b/k1=5", "c/k9=6"}; !slices.Equal(got, want) {
		t.Fatalf("in the Update: held %v, want %v", got, want)
	}
	x.rollback()
	if got := dump(); !slices.Equal(got, before) {
		t.Fatalf("after rollback: held %v, want %v", got, before)
	}
	if x.held() != 3 || x.heldIn("a") != 2 || x.heldIn("c") != 0 || x.chans["c"] != nil {
		t.Fatalf("after rollback: held %d, a %d, c %d", x.held(), x.heldIn("a"), x.heldIn("c"))
	}
}

// TestIDIndexLoadCollisions: a log whose index puts every id on one hash
// holds what a rebuild from its file holds, with and without collisions.
func TestIDIndexLoadCollisions(t *testing.T) {
	l := mustOpen(t)
	l.ids.narrow = ^uint64(0)
	mustInit(t, l)
	index := uint64(2)
	for u := range 6 {
		var pubs []pub
		for i := range 12 {
			pubs = append(pubs, pub{fmt.Sprintf("c%d", i%3), fmt.Sprintf("k%d", (u*7+i)%20), time.Duration(u) * time.Minute})
		}
		publish(t, l, index, pubs...)
		index++
		if u == 3 {
			mustUpdate(t, l, index, func(tx *Tx) error { return tx.DeleteChannel("c1", "E1") })
			index++
		}
	}
	list := func(x *idIndex) []string {
		var out []string
		x.each(func(ch, id string, r idRec) { out = append(out, fmt.Sprintf("%s/%s=%d@%d", ch, id, r.off, r.t)) })
		slices.Sort(out)
		return out
	}
	held := list(l.ids)
	if len(held) == 0 || len(l.ids.more) == 0 {
		t.Fatalf("held %d ids, %d in the collision map: the test needs both", len(held), len(l.ids.more))
	}
	for _, narrow := range []uint64{^uint64(0), 0} {
		rebuilt := newIDIndex()
		rebuilt.narrow = narrow
		if err := l.db.View(rebuilt.load); err != nil {
			t.Fatal(err)
		}
		if got := list(rebuilt); !slices.Equal(got, held) {
			t.Fatalf("narrow %x: rebuilt %v, held %v", narrow, got, held)
		}
		if rebuilt.held() != len(held) {
			t.Fatalf("narrow %x: rebuilt counts %d, holds %d", narrow, rebuilt.held(), len(held))
		}
	}
}

// TestIDIndexRoomModel drives the index as Append does with a bound: a new
// id is put only if room says so, which may forget expired ids in the
// middle of an Update; a fifth of the Updates are rolled back. Times rise
// (entries stamped through Tick). It checks, against a plain map, every
// answer, that the count never exceeds the bound, that room's answer is
// "fewer than max ids of the window are held", and that a rollback undoes
// the forgetting too.
func TestIDIndexRoomModel(t *testing.T) {
	for _, narrow := range []uint64{0, ^uint64(3), ^uint64(0)} {
		for seed := uint64(1); seed <= 4; seed++ {
			idIndexRoomModel(t, narrow, seed)
		}
	}
}

func idIndexRoomModel(t *testing.T, narrow, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, ^narrow))
	x := newIDIndex()
	x.narrow = narrow
	model := idModel{}
	size := func(m idModel) int {
		n := 0
		for _, ids := range m {
			n += len(ids)
		}
		return n
	}
	prune := func(m idModel, clock int64) {
		for ch, ids := range m {
			for id, r := range ids {
				if expired(r.t, clock) {
					delete(ids, id)
				}
			}
			if len(ids) == 0 {
				delete(m, ch)
			}
		}
	}
	chans := []string{"a", "b", "chat.room", strings.Repeat("c", 255)}
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprintf("id-%d", i)
		if i%16 == 0 {
			ids[i] += strings.Repeat("x", 900)
		}
	}
	window := int64(IdempotencyWindow)
	const max = 40
	check := func(update int, what string, m idModel) {
		t.Helper()
		for _, ch := range chans {
			for _, id := range ids {
				want, wok := m[ch][id]
				got, gok, _ := x.get(ch, id, x.hash(ch, id))
				if wok != gok || got != want {
					t.Fatalf("seed %d update %d (%s): get(%s, %.10s) = %v %v, want %v %v",
						seed, update, what, ch, id, got, gok, want, wok)
				}
			}
		}
		if x.count != size(m) || x.count > max {
			t.Fatalf("seed %d update %d (%s): count %d, want %d (at most %d)", seed, update, what, x.count, size(m), max)
		}
	}
	var now int64
	off := uint64(0)
	refused, forgot := 0, 0
	for update := 0; update < 800; update++ {
		x.begin()
		tentative := model.clone()
		for op := rng.IntN(12); op >= 0; op-- {
			if rng.IntN(80) == 0 {
				ch := chans[rng.IntN(len(chans))]
				x.drop(ch)
				delete(tentative, ch)
				continue
			}
			now += rng.Int64N(window / 20)
			ch, id := chans[rng.IntN(len(chans))], ids[rng.IntN(len(ids))]
			h := x.hash(ch, id)
			if r, ok, _ := x.get(ch, id, h); ok && !expired(r.t, now) {
				continue // a duplicate
			}
			before := size(tentative)
			if before >= max {
				prune(tentative, now)
			}
			want := size(tentative) < max
			if got := x.room(max, now); got != want {
				t.Fatalf("seed %d update %d: room = %v with %d ids of the window held, want %v", seed, update, got, size(tentative), want)
			}
			if size(tentative) < before {
				forgot++
			}
			if !want {
				refused++
				continue
			}
			_, _, free := x.get(ch, id, h)
			off++
			r := idRec{off: off, t: now}
			x.put(ch, id, h, r, free)
			if tentative[ch] == nil {
				tentative[ch] = map[string]idRec{}
			}
			tentative[ch][id] = r
			if x.count != size(tentative) || x.count > max {
				t.Fatalf("seed %d update %d: count %d after a put, want %d (at most %d)", seed, update, x.count, size(tentative), max)
			}
		}
		if rng.IntN(5) == 0 {
			x.rollback()
			check(update, "rolled back", model)
			continue
		}
		x.commit(now)
		model = tentative
		prune(model, now)
		check(update, "committed", model)
	}
	if refused == 0 || forgot == 0 {
		t.Fatalf("seed %d: %d refusals, %d times room forgot ids: the test needs both", seed, refused, forgot)
	}
}
