package log

import (
	"cmp"
	"fmt"
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
// Open and Restore rebuild the index from "d" alone. An Update stages its
// changes in its Tx and they reach the index only once bbolt has committed.
type idIndex struct {
	chans map[string]*chanIDs
	// queue holds the records in the order they were added, for expiry. It
	// is in time order unless times went backwards (entries not stamped
	// through Tick), in which case expire sorts it first.
	queue    []queued
	head     int
	unsorted bool
	n        atomic.Int64 // ids held, for HeldIDs
}

type chanIDs struct {
	name string
	ids  map[string]idRec
}

type idRec struct {
	off uint64
	t   int64 // unix nanos
}

type queued struct {
	c  *chanIDs
	id string
	t  int64
}

// expired reports whether a record of time t has left the window at now.
func expired(t, now int64) bool {
	return now > t && uint64(now-t) >= uint64(IdempotencyWindow)
}

func (x *idIndex) get(ch, id string) (idRec, bool) {
	c := x.chans[ch]
	if c == nil {
		return idRec{}, false
	}
	r, ok := c.ids[id]
	return r, ok
}

func (x *idIndex) put(ch, id string, r idRec) {
	c := x.chans[ch]
	if c == nil {
		if x.chans == nil {
			x.chans = make(map[string]*chanIDs)
		}
		c = &chanIDs{name: strings.Clone(ch), ids: make(map[string]idRec)}
		x.chans[ch] = c
	}
	if _, ok := c.ids[id]; !ok {
		x.n.Add(1)
	}
	c.ids[id] = r
	if q := len(x.queue); q > x.head && x.queue[q-1].t > r.t {
		x.unsorted = true
	}
	x.queue = append(x.queue, queued{c: c, id: id, t: r.t})
}

func (x *idIndex) drop(ch string) {
	if c := x.chans[ch]; c != nil {
		x.n.Add(-int64(len(c.ids)))
		delete(x.chans, ch)
	}
}

// expire forgets the records that expired as of clock.
func (x *idIndex) expire(clock int64) {
	if x.unsorted {
		live := x.queue[:0]
		for _, q := range x.queue[x.head:] {
			if r, ok := q.c.ids[q.id]; ok && r.t == q.t && x.chans[q.c.name] == q.c {
				live = append(live, q)
			}
		}
		clear(x.queue[len(live):])
		slices.SortStableFunc(live, func(a, b queued) int { return cmp.Compare(a.t, b.t) })
		x.queue, x.head, x.unsorted = live, 0, false
	}
	for x.head < len(x.queue) && expired(x.queue[x.head].t, clock) {
		q := x.queue[x.head]
		x.queue[x.head] = queued{}
		x.head++
		// The record may have been replaced since, or its channel deleted:
		// the test on the time covers both (a replacement is later).
		if r, ok := q.c.ids[q.id]; ok && expired(r.t, clock) {
			delete(q.c.ids, q.id)
			if x.chans[q.c.name] == q.c {
				x.n.Add(-1)
				if len(q.c.ids) == 0 {
					delete(x.chans, q.c.name)
				}
			}
		}
	}
	if x.head > 1024 && x.head > len(x.queue)/2 {
		x.queue = append(x.queue[:0], x.queue[x.head:]...)
		clear(x.queue[len(x.queue):cap(x.queue)])
		x.head = 0
	}
}

// load replaces the index with the held records of a committed state.
func (x *idIndex) load(tx *bolt.Tx) error {
	x.chans, x.queue, x.head, x.unsorted = nil, nil, 0, false
	x.n.Store(0)
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
			if r, ok := x.get(ch, p.id); ok && r.off > p.off {
				return // an earlier record of an id reused after it expired
			}
			x.put(ch, p.id, idRec{off: p.off, t: p.t})
		})
		if derr != nil {
			return derr
		}
		if err != nil {
			return err
		}
	}
	// put queued an entry for every record it was given, replaced ones
	// included, in the order of "d": keep the live ones, in time order.
	x.unsorted = true
	x.expire(clock)
	return nil
}

// held returns the number of ids held.
func (x *idIndex) held() int { return int(x.n.Load()) }

// stagedIDs is what a Tx changes in the index, applied after its commit.
// The Log keeps one and clears it for each Update.
type stagedIDs struct {
	dropped map[string]bool // channels deleted in this Tx
	ids     map[idKey]idRec
	order   []stagedID // ids in the order they were appended
}

type idKey struct{ ch, id string }

type stagedID struct {
	idKey
	r idRec
}

func (s *stagedIDs) reset() {
	clear(s.dropped)
	clear(s.ids)
	clear(s.order)
	s.order = s.order[:0]
}

func (s *stagedIDs) get(ch, id string) (idRec, bool) {
	r, ok := s.ids[idKey{ch, id}]
	return r, ok
}

func (s *stagedIDs) put(ch, id string, r idRec) {
	if s.ids == nil {
		s.ids = make(map[idKey]idRec)
	}
	s.ids[idKey{ch, id}] = r
	s.order = append(s.order, stagedID{idKey{ch, id}, r})
}

func (s *stagedIDs) drop(ch string) {
	if s.dropped == nil {
		s.dropped = make(map[string]bool)
	}
	s.dropped[ch] = true
	s.order = slices.DeleteFunc(s.order, func(e stagedID) bool {
		if e.ch == ch {
			delete(s.ids, e.idKey)
			return true
		}
		return false
	})
}

// apply makes a committed Tx's changes to the index, as of the clock the
// Tx committed.
func (x *idIndex) apply(s *stagedIDs, clock int64) {
	// Deleted channels first: ids staged before a delete are gone already.
	for ch := range s.dropped {
		x.drop(ch)
	}
	for _, e := range s.order {
		x.put(e.ch, e.id, e.r)
	}
	x.expire(clock)
}
