package log

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestIDIndexModel drives the in-memory index with random puts, channel
// deletions and expiry, times mostly rising and sometimes going back, and
// checks every answer and count against a plain map of maps. Narrowed
// hashes make keys collide; long ids make records cross arena blocks.
func TestIDIndexModel(t *testing.T) {
	for _, narrow := range []uint64{0, ^uint64(3), ^uint64(0)} {
		t.Run(fmt.Sprintf("narrow=%x", narrow), func(t *testing.T) {
			for seed := uint64(1); seed <= 4; seed++ {
				idIndexModel(t, narrow, seed)
			}
		})
	}
}

func idIndexModel(t *testing.T, narrow, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, narrow))
	x := newIDIndex()
	x.narrow = narrow
	model := map[string]map[string]idRec{}
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
	for step := 0; step < 3000; step++ {
		switch op := rng.IntN(100); {
		case op < 2: // delete a channel
			ch := chans[rng.IntN(len(chans))]
			x.drop(ch)
			delete(model, ch)
		default: // append a new record for a key (a new id, or one reused)
			now += rng.Int64N(window / 50)
			at := now
			if rng.IntN(10) == 0 {
				at -= rng.Int64N(window / 2) // an entry not stamped through Tick
			}
			ch, id := chans[rng.IntN(len(chans))], ids[rng.IntN(len(ids))]
			r := idRec{off: uint64(step + 1), t: at}
			h := x.hash(ch, id)
			_, _, free := x.get(ch, id, h)
			if free && len(x.more) == 0 && x.slots[h] != (idSlot{}) {
				t.Fatalf("seed %d step %d: get says hash %x is free, a slot has it", seed, step, h)
			}
			x.put(ch, id, h, r, free && rng.IntN(2) == 0)
			if model[ch] == nil {
				model[ch] = map[string]idRec{}
			}
			model[ch][id] = r
		}
		if step%7 == 0 {
			clock = max(clock, now)
			x.expire(clock)
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
		}
		// Every key answers as the model does.
		n := 0
		for _, ch := range chans {
			for _, id := range ids {
				want, wok := model[ch][id]
				got, gok, _ := x.get(ch, id, x.hash(ch, id))
				if wok != gok || got != want {
					t.Fatalf("seed %d step %d: get(%s, %.10s) = %v %v, want %v %v", seed, step, ch, id, got, gok, want, wok)
				}
				if wok {
					n++
				}
			}
			if got, want := x.heldIn(ch), len(model[ch]); got != want {
				t.Fatalf("seed %d step %d: heldIn(%.10s) = %d, want %d", seed, step, ch, got, want)
			}
		}
		if x.held() != n {
			t.Fatalf("seed %d step %d: held %d, want %d", seed, step, x.held(), n)
		}
		var listed []string
		x.each(func(ch, id string, r idRec) { listed = append(listed, ch+"/"+id) })
		if len(listed) != n {
			t.Fatalf("seed %d step %d: each listed %d, want %d", seed, step, len(listed), n)
		}
	}
	// Everything expires: the arena is down to one block, and the channel
	// names are forgotten.
	x.expire(now + window + 1)
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

// TestStagedIDsCollisions: within one Update, keys that share a hash are
// told apart, and a deleted channel's staged ids are gone.
func TestStagedIDsCollisions(t *testing.T) {
	var s stagedIDs
	keys := []idKey{{"a", "k1"}, {"a", "k2"}, {"b", "k1"}, {"b", "k3"}}
	for i, k := range keys {
		s.put(k.ch, k.id, 7, idRec{off: uint64(i + 1)}, false)
	}
	s.put("a", "k1", 7, idRec{off: 9}, false) // the same key again: the latest wins
	for i, k := range keys {
		want := uint64(i + 1)
		if i == 0 {
			want = 9
		}
		if r, ok, _ := s.get(k.ch, k.id, 7); !ok || r.off != want {
			t.Errorf("get %v = %v %v, want %d", k, r, ok, want)
		}
	}
	if _, ok, taken := s.get("c", "k1", 7); ok || !taken {
		t.Error("a key never staged was found, or its hash not seen as taken")
	}
	s.drop("a")
	if _, ok, _ := s.get("a", "k2", 7); ok {
		t.Error("a deleted channel's id is still staged")
	}
	if r, ok, _ := s.get("b", "k3", 7); !ok || r.off != 4 {
		t.Errorf("b/k3 after a's deletion = %v %v", r, ok)
	}
	var order []string
	for _, e := range s.order {
		order = append(order, e.ch+"/"+e.id)
	}
	if want := []string{"b/k1", "b/k3"}; !slices.Equal(order, want) {
		t.Errorf("staged %v, want %v", order, want)
	}
	s.reset()
	if _, ok, taken := s.get("b", "k1", 7); ok || taken || len(s.order) != 0 {
		t.Error("reset kept ids")
	}
}
