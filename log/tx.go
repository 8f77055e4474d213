package log

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/comethq/comet/wire"
	bolt "go.etcd.io/bbolt"
)

// Tx is one Update's view of the log. Its methods are deterministic in their
// arguments and the stored state. A Tx is not safe for concurrent use and is
// valid only inside the Update that created it.
//
// Messages appended to a channel are kept in the Tx and written when the
// Update ends, as one chunk record per channel (chunk.go); their offsets are
// decided at Append. Ids appended go to the log's idempotency index at once,
// journaled: they leave it again if the Update does not commit.
type Tx struct {
	btx   *bolt.Tx
	sys   *bolt.Bucket
	chans *bolt.Bucket
	dids  *bolt.Bucket

	touched map[string]*chanState
	order   []string // touched channels in first-touch order, for determinism
	rules   []Rule
	loaded  bool
	now     time.Time // latest time seen, for retention in finish
	applied uint64    // Applied before this Update
	index   uint64    // this Update's index

	bufs    *segBufs // the Log's, for segments
	ids     *idIndex // the Log's, journaling this Update
	clock   int64    // the log's clock once this Update commits (finish)
	maxIDs  int      // sys/maxids, once read (maxOK)
	maxOK   bool
	refused int  // publishes refused with ErrTooManyIDs
	putKV   bool // Put was called
}

type chanState struct {
	b     *bolt.Bucket
	msgs  *bolt.Bucket
	meta  meta
	dirty bool // meta changed
	done  bool // written by finish

	stored uint64     // offsets below are in chunks, the others in pend
	pend   []*segment // messages appended in this Tx, from First on
	bufs   *segBufs   // for new segments
	ids    []pendID   // ids appended in this Tx

	// The stored chunk [fk, fend) that holds First, and a reader on it, for
	// retention. fr.t is the time of message fr.off-1.
	fok      bool
	fk, fend uint64
	fr       chunkReader

	ds   []byte // the stream state (stream.go), once dsOK
	dsOK bool
}

// Result is the outcome of one Append.
type Result struct {
	Channel string
	Offset  uint64
	Epoch   string
	// Duplicate is true when id was appended before within
	// IdempotencyWindow; Offset is then that first offset.
	Duplicate bool
	// Err is set when the message was refused (ErrBadChannel, ErrBadKey,
	// ErrTooManyIDs).
	Err error
}

// Applied returns the index applied before this Update began. Callers that
// apply several Raft entries in one Update skip those at or below it.
func (tx *Tx) Applied() uint64 { return tx.applied }

// Tick returns t, or the latest time an earlier Tick returned if that is
// later, and remembers the result. Stamping entries through Tick keeps
// stored times monotonic when leaders' clocks disagree, so retention and
// idempotency give the same result however entries are grouped into
// Updates.
func (tx *Tx) Tick(t time.Time) time.Time {
	last := int64(u64(tx.sys.Get(keyClock)))
	if !tx.now.IsZero() {
		last = max(last, tx.now.UnixNano()) // a time seen earlier in this Update
	}
	if t.UnixNano() < last {
		t = time.Unix(0, last).UTC()
	}
	if t.After(tx.now) {
		tx.now = t
	}
	return t
}

// InitEpoch sets the cluster epoch to epoch if none is set yet. Channels
// created later start in the cluster epoch.
func (tx *Tx) InitEpoch(epoch string) error {
	if epoch == "" || tx.sys.Get(keyEpoch) != nil {
		return nil
	}
	return tx.sys.Put(keyEpoch, []byte(epoch))
}

// Append stores data as the next message of ch at time now. With a non-empty
// id, a second Append of the same id on ch within IdempotencyWindow stores
// nothing and returns the first offset; an id not held while the index
// holds MaxIDs ids of the window (as of the log's clock, now included) is
// refused with ErrTooManyIDs. A refused message is reported in Result.Err,
// not as an error; the error is for storage failures.
func (tx *Tx) Append(ch, id string, data []byte, now time.Time) (Result, error) {
	res := Result{Channel: ch}
	if !wire.ValidChannel(ch) {
		res.Err = fmt.Errorf("%w: %q", ErrBadChannel, ch)
		return res, nil
	}
	st, err := tx.channel(ch, true)
	if err != nil {
		return res, err
	}
	res.Epoch = st.meta.Epoch
	if now.After(tx.now) {
		tx.now = now
	}
	if len(id) > MaxKeyLen {
		res.Err = fmt.Errorf("%w: id of %d bytes", ErrBadKey, len(id))
		return res, nil
	}
	t := now.UnixNano()
	var (
		h    uint64
		free bool
	)
	if id != "" {
		h = tx.ids.hash(ch, id)
		var (
			r  idRec
			ok bool
		)
		if r, ok, free = tx.ids.get(ch, id, h); ok && !expired(r.t, t) {
			res.Offset, res.Duplicate = r.off, true
			return res, nil
		}
		// room forgets expired ids, if full, which leaves free true.
		if max := tx.maxHeld(); !tx.ids.room(max, tx.clockNow()) {
			res.Err = fmt.Errorf("%w: %d ids of the last %v are held, the most allowed; not stored, try again later",
				ErrTooManyIDs, max, IdempotencyWindow)
			tx.refused++
			return res, nil
		}
	}
	off := st.meta.Next
	st.add(t, id, data)
	if id != "" {
		tx.ids.put(ch, id, h, idRec{off: off, t: t}, free)
		st.ids = append(st.ids, pendID{off: off, t: t, id: id})
	}
	res.Offset = off
	return res, tx.retain(ch, st, now)
}

// maxHeld returns the most ids the index may hold (0: no limit).
func (tx *Tx) maxHeld() int {
	if !tx.maxOK {
		tx.maxIDs, tx.maxOK = int(min(maxIDs(tx.sys), math.MaxInt)), true
	}
	return tx.maxIDs
}

// clockNow returns the log's clock as it would be if this Update committed
// now.
func (tx *Tx) clockNow() int64 {
	clock := int64(u64(tx.sys.Get(keyClock)))
	if !tx.now.IsZero() {
		clock = max(clock, tx.now.UnixNano())
	}
	return clock
}

// SetMaxIDs sets the most publish ids the idempotency index holds (0: no
// limit). Lowered below the ids held, it refuses new ids until enough
// leave the window; no id held is forgotten early.
func (tx *Tx) SetMaxIDs(n uint64) error {
	tx.maxIDs, tx.maxOK = int(min(n, math.MaxInt)), true
	return tx.sys.Put(keyMaxIDs, be(n))
}

// DeleteChannel removes every message of ch and starts a new history in
// epoch: the next message gets offset 1 again, and clients that resume with
// the old epoch are told they missed messages.
func (tx *Tx) DeleteChannel(ch, epoch string) error {
	if !wire.ValidChannel(ch) {
		return nil
	}
	if tx.chans.Bucket([]byte(ch)) != nil {
		if err := tx.chans.DeleteBucket([]byte(ch)); err != nil {
			return err
		}
	}
	delete(tx.touched, ch)
	tx.ids.drop(ch)
	_, err := tx.create(ch, epoch)
	return err
}

// SetRetention replaces the retention rules. The first rule whose pattern
// matches a channel applies; unmatched channels keep DefaultMaxMessages and
// DefaultMaxAge.
func (tx *Tx) SetRetention(rules []Rule) error {
	raw, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	tx.rules, tx.loaded = rules, true
	return tx.sys.Put(keyRetention, raw)
}

// Sweep applies age retention to every channel, as of now. Like any other
// later time, now also moves the log's clock, by which idempotency ids
// expire.
func (tx *Tx) Sweep(now time.Time) error {
	if now.After(tx.now) {
		tx.now = now
	}
	var names []string
	err := tx.chans.ForEachBucket(func(k []byte) error {
		names = append(names, string(k))
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range names {
		st, err := tx.channel(name, false)
		if err != nil {
			return err
		}
		if err := tx.retain(name, st, now); err != nil {
			return err
		}
	}
	return nil
}

// Put stores a small replicated key/value pair (cluster metadata); Log.Get
// and Log.Scan read it back. A nil value deletes the key.
// A key that is empty or over MaxKeyLen is refused with ErrBadKey and
// nothing is stored.
func (tx *Tx) Put(key string, value []byte) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes", ErrBadKey, len(key))
	}
	k := []byte(prefixKV + key)
	tx.putKV = true
	if value == nil {
		return tx.sys.Delete(k)
	}
	return tx.sys.Put(k, value)
}

// channel returns the state of ch, marking it touched; with create it makes
// a missing channel in the cluster epoch, otherwise it returns nil for one.
func (tx *Tx) channel(ch string, create bool) (*chanState, error) {
	if st, ok := tx.touched[ch]; ok {
		return st, nil
	}
	b := tx.chans.Bucket([]byte(ch))
	if b == nil {
		if !create {
			return nil, nil
		}
		epoch := tx.sys.Get(keyEpoch)
		if epoch == nil {
			return nil, ErrNoEpoch
		}
		return tx.create(ch, string(epoch))
	}
	m, err := decodeMeta(b.Get(keyMeta))
	if err != nil {
		return nil, fmt.Errorf("channel %s: %w", ch, err)
	}
	msgs := b.Bucket(bucketMsgs)
	if msgs == nil {
		return nil, fmt.Errorf("channel %s: %w: no message bucket", ch, ErrCorrupt)
	}
	return tx.track(ch, &chanState{b: b, msgs: msgs, meta: m, stored: m.Next}), nil
}

func (tx *Tx) create(ch, epoch string) (*chanState, error) {
	b, err := tx.chans.CreateBucket([]byte(ch))
	if err != nil {
		return nil, err
	}
	msgs, err := b.CreateBucket(bucketMsgs)
	if err != nil {
		return nil, err
	}
	m := meta{Info: Info{Epoch: epoch, First: 1, Next: 1}, created: tx.index}
	return tx.track(ch, &chanState{b: b, msgs: msgs, meta: m, stored: 1, dirty: true}), nil
}

func (tx *Tx) track(ch string, st *chanState) *chanState {
	st.bufs = tx.bufs
	if tx.touched == nil {
		tx.touched = make(map[string]*chanState)
	}
	tx.touched[ch] = st
	tx.order = append(tx.order, ch)
	return st
}

// finish writes what the Tx kept: the messages of every touched channel as
// chunks, their ids, their meta; it moves the clock and forgets the
// idempotency records that the clock put out of the window.
func (tx *Tx) finish() error {
	clock := int64(u64(tx.sys.Get(keyClock)))
	if !tx.now.IsZero() && tx.now.UnixNano() > clock {
		clock = tx.now.UnixNano()
		if err := tx.sys.Put(keyClock, be(uint64(clock))); err != nil {
			return err
		}
	}
	tx.clock = clock
	for _, ch := range tx.order {
		st, ok := tx.touched[ch]
		if !ok || st.done {
			continue // deleted in this Tx, or listed twice (deleted, then created)
		}
		st.done = true
		for _, seg := range st.pend {
			if seg.n == 0 {
				continue
			}
			if err := putChunk(st.msgs, be(seg.first), seg.bytes()); err != nil {
				return err
			}
		}
		live := st.ids[:0]
		for _, p := range st.ids {
			if !expired(p.t, clock) {
				live = append(live, p)
			}
		}
		if len(live) > 0 {
			if err := tx.dids.Put(encodeIDs(ch, st.meta.created, live)); err != nil {
				return err
			}
		}
		if st.dirty {
			if err := st.b.Put(keyMeta, encodeMeta(st.meta)); err != nil {
				return err
			}
		}
	}
	c := tx.dids.Cursor()
	var prev []byte
	for k, _ := c.First(); k != nil && expired(unsortable(k), clock); k, _ = c.First() {
		if prev != nil && bytes.Equal(k, prev) {
			// Deleted, yet first again: a damaged file (a restored
			// snapshot whose pages point at each other), not a loop to
			// spin in forever.
			return fmt.Errorf("%w: the ids bucket holds key %x again after deleting it", ErrCorrupt, k)
		}
		prev = append(prev[:0], k...)
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// add appends a message at offset Next.
func (st *chanState) add(t int64, id string, data []byte) {
	if st.meta.First == st.meta.Next {
		st.meta.firstTime = t
	}
	n := len(st.pend)
	if n == 0 || st.pend[n-1].full() {
		hint := min(16*(len(id)+len(data)+8), maxChunkBytes)
		st.pend = append(st.pend, newSegment(st.meta.Next, t, hint, st.bufs))
		n++
	}
	st.pend[n-1].add(t, id, data)
	st.meta.Next++
	st.dirty = true
}

// retain applies retention to ch as of now, with the rules in force. It runs
// at each Append and Sweep rather than once per Update, so that the result
// does not depend on how entries are grouped into Updates.
func (tx *Tx) retain(ch string, st *chanState, now time.Time) error {
	rule, err := tx.rule(ch)
	if err != nil {
		return fmt.Errorf("retention of %s: %w", ch, err)
	}
	if rule.MaxMessages > 0 && st.meta.Next-st.meta.First > rule.MaxMessages {
		if err := st.advance(st.meta.Next - rule.MaxMessages); err != nil {
			return fmt.Errorf("retention of %s: %w", ch, err)
		}
	}
	if rule.MaxAge > 0 && !now.IsZero() && now.UnixNano() > int64(rule.MaxAge) {
		// Messages are in time order as the leader stamped them; stop at the
		// first one young enough.
		cutoff := now.UnixNano() - int64(rule.MaxAge)
		for st.meta.First < st.meta.Next && st.meta.firstTime < cutoff {
			if err := st.advance(st.meta.First + 1); err != nil {
				return fmt.Errorf("retention of %s: %w", ch, err)
			}
		}
	}
	return nil
}

// advance raises First to first (at most Next): it deletes the chunks left
// wholly below it, drops the messages of this Tx below it, and records the
// time of the message at the new First. A chunk partly below First stays;
// reads skip what it holds below First.
func (st *chanState) advance(first uint64) error {
	old := st.meta.First
	if first <= old {
		return nil
	}
	st.meta.First, st.dirty = first, true
	for off := old; off < st.stored; off = st.fend {
		if err := st.front(off); err != nil {
			return err
		}
		if first < st.fend {
			break
		}
		if err := deleteChunk(st.msgs, be(st.fk)); err != nil {
			return err
		}
		st.fok = false
	}
	for len(st.pend) > 0 && first >= st.pend[0].first+uint64(st.pend[0].n) {
		st.pend[0] = nil
		st.pend = st.pend[1:]
	}
	switch {
	case first >= st.meta.Next:
		st.meta.firstTime = 0
	case first < st.stored:
		t, err := st.timeAt(first)
		if err != nil {
			return err
		}
		st.meta.firstTime = t
	default: // in the first pending segment
		st.meta.firstTime = st.pend[0].trimTo(first)
	}
	return nil
}

// front makes [fk, fend) the stored chunk that holds offset off.
func (st *chanState) front(off uint64) error {
	if st.fok && off >= st.fk && off < st.fend {
		return nil
	}
	st.fok = false
	k, v := seekChunk(st.msgs.Cursor(), off)
	if k == nil {
		return fmt.Errorf("%w: no chunk holds offset %d", ErrCorrupt, off)
	}
	r, err := openChunk(k, chunkValue(st.msgs, k, v))
	if err != nil {
		return err
	}
	end := r.off + uint64(r.left)
	if off < r.off || off >= end {
		return fmt.Errorf("%w: no chunk holds offset %d", ErrCorrupt, off)
	}
	st.fr, st.fk, st.fend, st.fok = r, r.off, end, true
	return nil
}

// timeAt returns the time of the stored message at off.
func (st *chanState) timeAt(off uint64) (int64, error) {
	if err := st.front(off); err != nil {
		return 0, err
	}
	switch {
	case st.fr.off == off+1:
		return st.fr.t, nil
	case st.fr.off > off+1: // the reader went past it: start over
		st.fok = false
		if err := st.front(off); err != nil {
			return 0, err
		}
	}
	if err := st.fr.seek(off); err != nil {
		return 0, err
	}
	m, err := st.fr.next()
	return m.t, err
}

func (tx *Tx) rule(ch string) (Rule, error) {
	if !tx.loaded {
		rules, err := loadRules(tx.sys)
		if err != nil {
			return Rule{}, err
		}
		tx.rules, tx.loaded = rules, true
	}
	return MatchRule(tx.rules, ch), nil
}

// MatchRule returns the first rule whose pattern matches ch, or the built-in
// default.
func MatchRule(rules []Rule, ch string) Rule {
	for _, r := range rules {
		if Glob(r.Pattern, ch) {
			return r
		}
	}
	return Rule{Pattern: "*", MaxMessages: DefaultMaxMessages, MaxAge: DefaultMaxAge}
}

// Glob reports whether name matches pattern, in which '*' matches any run of
// characters (including none) and every other byte matches itself.
func Glob(pattern, name string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == name
	}
	if !strings.HasPrefix(name, pattern[:star]) {
		return false
	}
	rest := pattern[star+1:]
	name = name[star:]
	for i := 0; i <= len(name); i++ {
		if Glob(rest, name[i:]) {
			return true
		}
	}
	return false
}
