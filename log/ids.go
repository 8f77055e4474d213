package log

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// The idempotency index answers "was this id appended to this channel
// within IdempotencyWindow?" from memory. Its content is a function of the
// committed bbolt state, so that a hub that restarted answers like one that
// did not:
//
//   - every id appended (not a duplicate) is a record: offset and time;
//   - a record is held while it is not expired as of the log's clock (the
//     latest entry time a committed Update saw, sys/clock): clock - time <
//     IdempotencyWindow;
//   - the index holds, for each channel and id, the latest held record of
//     the channel's current history (DeleteChannel forgets its ids).
//
// The ids are stored with their messages in chunks and, for the rebuild, in
// the "d" bucket (see encodeIDs), whose records leave with the window.
// Open and Restore rebuild the index from "d" alone. An Update changes the
// index as it appends (a lookup and the insert that follows it touch the
// same memory once), and journals each change: if bbolt does not commit,
// the journal undoes them.
//
// The index holds millions of ids at high publish rates, so it is built to
// cost the garbage collector nothing per id: no pointers per record.
//
//   - The records are appended, key bytes included, to an arena of byte
//     blocks, in the order they were added; that order is also the order in
//     which they expire (time order, unless times went backwards: entries
//     not stamped through Tick; expire then sorts the arena first).
//   - A map from a hash of (channel, id) to a slot (offset, time, the
//     record's position in the arena) finds a record. The hash is seeded at
//     random per index, and a hit is confirmed against the key bytes in the
//     arena. Two keys with one hash (about never) are handled: the second
//     one's slot goes to a small map keyed by the strings.
//   - Deleting a channel is O(1): each channel name has a generation, every
//     slot the generation it was added in, and a slot of an older
//     generation is not held. It leaves the arena with the window.
type idIndex struct {
	seed     maphash.Seed
	narrow   uint64 // hash bits cleared: tests set it to make keys collide
	slots    map[uint64]idSlot
	more     map[idKey]idSlot // keys whose hash another held key's slot has
	chans    map[string]*chanIDs
	arena    idArena
	lastT    int64        // time of the newest record in the arena
	unsorted bool         // the arena is not in time order
	count    int          // ids held, the open Update's included
	n        atomic.Int64 // ids held as of the last commit, for HeldIDs
	j        idJournal    // the open Update's changes
}

// chanIDs is what the index knows of a channel name.
type chanIDs struct {
	gen  uint32 // raised when the channel is deleted
	held int    // ids of the current history held
	recs int    // records of this name in the arena, of any generation
	seq  uint64 // the journal that saved it last
}

// idSlot is where the index finds a record.
type idSlot struct {
	off uint64
	t   int64
	pos uint64 // of the record in the arena
	gen uint32
}

type idRec struct {
	off uint64
	t   int64 // unix nanos
}

type idKey struct{ ch, id string }

func newIDIndex() *idIndex {
	return &idIndex{seed: maphash.MakeSeed(), slots: make(map[uint64]idSlot), chans: make(map[string]*chanIDs)}
}

// hash is the index's hash of (ch, id).
func (x *idIndex) hash(ch, id string) uint64 {
	return maphash.Comparable(x.seed, idKey{ch, id}) &^ x.narrow
}

// expired reports whether a record of time t has left the window at now.
func expired(t, now int64) bool {
	return now > t && uint64(now-t) >= uint64(IdempotencyWindow)
}

// get returns the held record of id on ch; h is x.hash(ch, id). free
// reports that no record of any key has the hash h, so that put may skip
// looking for one.
func (x *idIndex) get(ch, id string, h uint64) (r idRec, ok, free bool) {
	s, ok := x.slots[h]
	free = !ok && len(x.more) == 0
	c := x.chans[ch]
	if c == nil {
		return idRec{}, false, free
	}
	if ok && s.gen == c.gen && x.arena.keyIs(s.pos, ch, id) {
		return idRec{off: s.off, t: s.t}, true, false
	}
	if len(x.more) > 0 {
		if s, ok := x.more[idKey{ch, id}]; ok && s.gen == c.gen {
			return idRec{off: s.off, t: s.t}, true, false
		}
	}
	return idRec{}, false, free
}

// put makes r the record of id on ch; h is x.hash(ch, id). With free, no
// record has the hash h (get said so, and nothing was put since).
func (x *idIndex) put(ch, id string, h uint64, r idRec, free bool) {
	c := x.channel(ch)
	if r.t < x.lastT && x.arena.tail != x.arena.head {
		x.unsorted = true
	}
	x.lastT = r.t
	s := idSlot{off: r.off, t: r.t, pos: x.arena.add(r.t, h, c.gen, ch, id), gen: c.gen}
	c.recs++
	if free {
		x.j.slot(h, idSlot{}, false)
		x.slots[h] = s
	} else if x.place(ch, id, h, s) {
		return
	}
	c.held++
	x.count++
}

// channel returns the index's entry for ch, saved in the journal.
func (x *idIndex) channel(ch string) *chanIDs {
	c := x.chans[ch]
	if c == nil {
		c = &chanIDs{}
		name := strings.Clone(ch)
		x.chans[name] = c
		x.j.newChan(name, c)
	}
	x.j.saveChan(c)
	return c
}

// place stores slot s of (ch, id) and reports whether it replaced a held
// record of that key.
func (x *idIndex) place(ch, id string, h uint64, s idSlot) (replaced bool) {
	old, had := x.slots[h]
	if had {
		if x.arena.keyIs(old.pos, ch, id) {
			x.j.slot(h, old, true)
			x.slots[h] = s
			return old.gen == s.gen
		}
		if x.live(old) { // another key's: a collision
			if x.more == nil {
				x.more = make(map[idKey]idSlot)
			}
			k := idKey{strings.Clone(ch), strings.Clone(id)}
			prev, ok := x.more[k]
			x.j.moreSlot(k, prev, ok)
			x.more[k] = s
			return ok && prev.gen == s.gen
		}
	}
	if len(x.more) > 0 {
		if prev, ok := x.more[idKey{ch, id}]; ok {
			// A rollback puts it back: with strings of the index's own.
			x.j.moreSlot(idKey{strings.Clone(ch), strings.Clone(id)}, prev, true)
			delete(x.more, idKey{ch, id})
			replaced = prev.gen == s.gen
		}
	}
	x.j.slot(h, old, had)
	x.slots[h] = s
	return replaced
}

// live reports whether s is a record of its channel's current history.
func (x *idIndex) live(s idSlot) bool {
	c := x.chans[string(x.arena.chanAt(s.pos))]
	return c != nil && c.gen == s.gen
}

// drop forgets the ids of ch (deleted).
func (x *idIndex) drop(ch string) {
	if c := x.chans[ch]; c != nil {
		x.j.saveChan(c)
		x.count -= c.held
		c.held = 0
		c.gen++
	}
}

// forget removes the arena record rec from the index, journaled.
func (x *idIndex) forget(rec idRecord) {
	name := string(rec.ch)
	c := x.chans[name]
	if c == nil {
		panic("log: idempotency record of an unknown channel")
	}
	x.j.saveChan(c)
	var (
		s  idSlot
		ok bool
	)
	if s, ok = x.slots[rec.h]; ok && s.pos == rec.pos {
		x.j.slot(rec.h, s, true)
		delete(x.slots, rec.h)
	} else if len(x.more) > 0 {
		k := idKey{name, string(rec.id)}
		if s, ok = x.more[k]; ok && s.pos == rec.pos {
			x.j.moreSlot(k, s, true)
			delete(x.more, k)
		} else {
			ok = false
		}
	} else {
		ok = false
	}
	if ok && s.gen == c.gen {
		c.held--
		x.count--
	}
	c.recs--
	if c.recs == 0 {
		x.j.chanGone(name, c)
		delete(x.chans, name)
	}
}

// expire forgets the records that expired as of clock. In an Update (the
// journal on) it keeps the arena's blocks, for a rollback, and does not
// sort: the caller checks unsorted first.
func (x *idIndex) expire(clock int64) {
	if x.unsorted {
		x.sort()
	}
	for x.arena.head != x.arena.tail {
		rec := x.arena.at(x.arena.head)
		if !expired(rec.t, clock) {
			break
		}
		x.forget(rec)
		x.arena.head = rec.next
	}
	if !x.j.on {
		x.arena.release()
	}
}

// room reports whether the index may take a new id, at most max held (0:
// no limit), as of clock: if it is full, it first forgets the ids that
// expired as of clock, which an Update otherwise leaves to its commit.
// So the answer is a function of the ids held as of clock, however entries
// are grouped into Updates, except when times went backwards in this
// Update (unsorted: nothing is forgotten before the commit then).
func (x *idIndex) room(max int, clock int64) bool {
	if max <= 0 || x.count < max {
		return true
	}
	if !x.unsorted {
		x.expire(clock)
	}
	return x.count < max
}

// sort rewrites the arena with the records still held, in time order.
func (x *idIndex) sort() {
	type held struct {
		rec  idRecord
		slot idSlot
		more bool
	}
	var keep []held
	for pos := x.arena.head; pos != x.arena.tail; {
		rec := x.arena.at(pos)
		if s, ok := x.slots[rec.h]; ok && s.pos == rec.pos {
			if x.live(s) {
				keep = append(keep, held{rec: rec, slot: s})
			} else {
				delete(x.slots, rec.h)
			}
		} else if len(x.more) > 0 {
			k := idKey{string(rec.ch), string(rec.id)}
			if s, ok := x.more[k]; ok && s.pos == rec.pos {
				if x.live(s) {
					keep = append(keep, held{rec: rec, slot: s, more: true})
				} else {
					delete(x.more, k)
				}
			}
		}
		pos = rec.next
	}
	slices.SortStableFunc(keep, func(a, b held) int { return cmp.Compare(a.rec.t, b.rec.t) })
	// Positions are not reused: the new arena starts after the old one.
	first := x.arena.first + uint64(len(x.arena.blocks))
	arena := idArena{first: first, head: first * arenaBlock, tail: first * arenaBlock}
	for _, c := range x.chans {
		c.recs = 0
	}
	for _, k := range keep {
		k.slot.pos = arena.add(k.rec.t, k.rec.h, k.rec.gen, string(k.rec.ch), string(k.rec.id))
		x.chans[string(k.rec.ch)].recs++
		if k.more {
			x.more[idKey{string(k.rec.ch), string(k.rec.id)}] = k.slot
		} else {
			x.slots[k.rec.h] = k.slot
		}
	}
	for name, c := range x.chans {
		if c.recs == 0 {
			delete(x.chans, name)
		}
	}
	x.arena, x.unsorted = arena, false
	if len(keep) > 0 {
		x.lastT = keep[len(keep)-1].rec.t
	}
}

// each calls fn with every held record.
func (x *idIndex) each(fn func(ch, id string, r idRec)) {
	for _, s := range x.slots {
		if x.live(s) {
			rec := x.arena.at(s.pos)
			fn(string(rec.ch), string(rec.id), idRec{off: s.off, t: s.t})
		}
	}
	for k, s := range x.more {
		if x.live(s) {
			fn(k.ch, k.id, idRec{off: s.off, t: s.t})
		}
	}
}

// heldIn returns the number of ids of ch held.
func (x *idIndex) heldIn(ch string) int {
	if c := x.chans[ch]; c != nil {
		return c.held
	}
	return 0
}

// load replaces the index with the held records of a committed state.
func (x *idIndex) load(tx *bolt.Tx) error {
	seed := x.seed
	if seed == (maphash.Seed{}) {
		seed = maphash.MakeSeed()
	}
	*x = idIndex{seed: seed, narrow: x.narrow, slots: make(map[uint64]idSlot), chans: make(map[string]*chanIDs)}
	clock := int64(u64(tx.Bucket(bucketSys).Get(keyClock)))
	chans := tx.Bucket(bucketChannels)
	created := make(map[string]uint64) // 0: no such channel
	c := tx.Bucket(bucketIDs).Cursor()
	for k, v := c.Seek(sortable(clock - int64(IdempotencyWindow) + 1)); k != nil; k, v = c.Next() {
		var err error
		derr := decodeIDs(k, v, func(ch string, cr uint64, p pendID) {
			if err != nil || expired(p.t, clock) {
				return
			}
			want, ok := created[ch]
			if !ok {
				if b := chans.Bucket([]byte(ch)); b != nil {
					var m meta
					if m, err = decodeMeta(b.Get(keyMeta)); err != nil {
						err = fmt.Errorf("channel %s: %w", ch, err)
						return
					}
					want = m.created
				}
				created[ch] = want
			}
			if want == 0 || cr != want {
				return // a deleted channel's
			}
			h := x.hash(ch, p.id)
			r, ok, free := x.get(ch, p.id, h)
			if ok && r.off > p.off {
				return // an earlier record of an id reused after it expired
			}
			x.put(ch, p.id, h, idRec{off: p.off, t: p.t}, free)
		})
		if derr != nil {
			return derr
		}
		if err != nil {
			return err
		}
	}
	// put added a record for every one it was given, replaced ones
	// included, in the order of "d": keep the live ones, in time order.
	x.unsorted = true
	x.expire(clock)
	x.n.Store(int64(x.count))
	return nil
}

// held returns the number of ids held as of the last commit (or load); it
// may be read while an Update runs.
func (x *idIndex) held() int { return int(x.n.Load()) }

// begin starts journaling the changes of an Update.
func (x *idIndex) begin() {
	x.j.reset()
	x.j.on = true
	x.j.seq++
	x.j.blocks, x.j.tail = len(x.arena.blocks), x.arena.tail
	if n := len(x.arena.blocks); n > 0 {
		x.j.lastLen = len(x.arena.blocks[n-1])
	}
	x.j.head, x.j.lastT, x.j.unsorted, x.j.count = x.arena.head, x.lastT, x.unsorted, x.count
}

// commit ends the journal of an Update that committed, and forgets the
// records that expired as of its clock.
func (x *idIndex) commit(clock int64) {
	x.j.reset()
	x.expire(clock)
	x.n.Store(int64(x.count))
}

// rollback undoes the changes of an Update that did not commit.
func (x *idIndex) rollback() {
	j := &x.j
	if !j.on {
		return
	}
	for i := len(j.slots) - 1; i >= 0; i-- {
		if u := j.slots[i]; u.had {
			x.slots[u.h] = u.prev
		} else {
			delete(x.slots, u.h)
		}
	}
	for i := len(j.more) - 1; i >= 0; i-- {
		if u := j.more[i]; u.had {
			x.more[u.k] = u.prev
		} else {
			delete(x.more, u.k)
		}
	}
	for _, u := range j.chans {
		*u.c = u.prev
	}
	for i := len(j.names) - 1; i >= 0; i-- {
		if u := j.names[i]; u.prev != nil {
			x.chans[u.name] = u.prev
		} else {
			delete(x.chans, u.name)
		}
	}
	// The arena only grew: cut it back.
	clear(x.arena.blocks[j.blocks:])
	x.arena.blocks = x.arena.blocks[:j.blocks]
	if j.blocks > 0 {
		x.arena.blocks[j.blocks-1] = x.arena.blocks[j.blocks-1][:j.lastLen]
	}
	x.arena.head, x.arena.tail = j.head, j.tail
	x.lastT, x.unsorted, x.count = j.lastT, j.unsorted, j.count
	j.reset()
}

// idJournal records what an Update changed in the index, to undo it.
type idJournal struct {
	on    bool
	seq   uint64 // which Update: a chanIDs saved under it is not saved again
	slots []slotUndo
	more  []moreUndo
	chans []chanUndo
	names []nameUndo // channel names added to or removed from the index

	blocks, lastLen int // the arena's blocks, and the last one's length
	head, tail      uint64
	lastT           int64
	unsorted        bool
	count           int
}

type slotUndo struct {
	h    uint64
	prev idSlot
	had  bool
}

type moreUndo struct {
	k    idKey
	prev idSlot
	had  bool
}

type chanUndo struct {
	c    *chanIDs
	prev chanIDs
}

type nameUndo struct {
	name string
	prev *chanIDs // nil: the name was not in the index
}

func (j *idJournal) reset() {
	j.on = false
	j.slots = j.slots[:0]
	clear(j.more)
	j.more = j.more[:0]
	clear(j.chans)
	j.chans = j.chans[:0]
	clear(j.names)
	j.names = j.names[:0]
	if cap(j.slots) > 1<<16 { // an unusually large Update: let it go
		j.slots = nil
	}
}

func (j *idJournal) slot(h uint64, prev idSlot, had bool) {
	if j.on {
		j.slots = append(j.slots, slotUndo{h, prev, had})
	}
}

func (j *idJournal) moreSlot(k idKey, prev idSlot, had bool) {
	if j.on {
		j.more = append(j.more, moreUndo{k, prev, had})
	}
}

func (j *idJournal) saveChan(c *chanIDs) {
	if j.on && c.seq != j.seq {
		c.seq = j.seq
		j.chans = append(j.chans, chanUndo{c, *c})
	}
}

func (j *idJournal) newChan(name string, c *chanIDs) {
	if j.on {
		c.seq = j.seq // nothing to restore: it goes
		j.names = append(j.names, nameUndo{name: name})
	}
}

// chanGone records that name, whose entry is c, left the index.
func (j *idJournal) chanGone(name string, c *chanIDs) {
	if j.on {
		j.names = append(j.names, nameUndo{name: strings.Clone(name), prev: c})
	}
}

// The arena holds records in blocks of arenaBlock bytes; a record does not
// cross blocks. A position is a block number times arenaBlock plus an offset
// in the block; block numbers only grow.
const arenaBlock = 64 << 10

// A record is a header (time, hash, generation, channel length, id length)
// and the channel and id bytes.
const recHeader = 8 + 8 + 4 + 2 + 2

type idArena struct {
	blocks     [][]byte // block first+i; len is what is used of it
	first      uint64
	head, tail uint64 // oldest record, end of the newest
}

// idRecord is a record read from the arena; ch and id alias the arena.
type idRecord struct {
	pos, next uint64
	t         int64
	h         uint64
	gen       uint32
	ch, id    []byte
}

func (a *idArena) add(t int64, h uint64, gen uint32, ch, id string) uint64 {
	need := recHeader + len(ch) + len(id)
	if n := len(a.blocks); n == 0 || len(a.blocks[n-1])+need > arenaBlock {
		a.blocks = append(a.blocks, make([]byte, 0, arenaBlock))
	}
	n := len(a.blocks)
	b := a.blocks[n-1]
	pos := (a.first+uint64(n)-1)*arenaBlock + uint64(len(b))
	b = binary.LittleEndian.AppendUint64(b, uint64(t))
	b = binary.LittleEndian.AppendUint64(b, h)
	b = binary.LittleEndian.AppendUint32(b, gen)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(ch)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, ch...)
	b = append(b, id...)
	a.blocks[n-1] = b
	if a.head == a.tail {
		a.head = pos // the first record (the head may have been at a block's end)
	}
	a.tail = pos + uint64(need)
	return pos
}

// at reads the record at pos: a record's position, or the end of a block
// or of a record, whose next record it reads.
func (a *idArena) at(pos uint64) idRecord {
	i := pos/arenaBlock - a.first
	if off := pos % arenaBlock; off >= uint64(len(a.blocks[i])) {
		i++
		pos = (a.first + i) * arenaBlock
	}
	b := a.blocks[i][pos%arenaBlock:]
	chLen, idLen := int(binary.LittleEndian.Uint16(b[20:])), int(binary.LittleEndian.Uint16(b[22:]))
	return idRecord{
		pos:  pos,
		next: pos + uint64(recHeader+chLen+idLen),
		t:    int64(binary.LittleEndian.Uint64(b)),
		h:    binary.LittleEndian.Uint64(b[8:]),
		gen:  binary.LittleEndian.Uint32(b[16:]),
		ch:   b[recHeader : recHeader+chLen],
		id:   b[recHeader+chLen : recHeader+chLen+idLen],
	}
}

// keyIs reports whether the record at pos is of (ch, id).
func (a *idArena) keyIs(pos uint64, ch, id string) bool {
	rec := a.at(pos)
	return string(rec.ch) == ch && string(rec.id) == id
}

// chanAt returns the channel of the record at pos.
func (a *idArena) chanAt(pos uint64) []byte { return a.at(pos).ch }

// release lets go of the blocks the head has left; the last one stays for
// the next records.
func (a *idArena) release() {
	for len(a.blocks) > 1 && a.head >= a.first*arenaBlock+uint64(len(a.blocks[0])) {
		a.blocks[0] = nil
		a.blocks = a.blocks[1:]
		a.first++
		a.head = max(a.head, a.first*arenaBlock)
	}
}
