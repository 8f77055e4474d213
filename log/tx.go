package log

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/comethq/comet/wire"
	bolt "go.etcd.io/bbolt"
)

// Tx is one Update's view of the log. Its methods are deterministic in their
// arguments and the stored state. A Tx is not safe for concurrent use and is
// valid only inside the Update that created it.
type Tx struct {
	btx   *bolt.Tx
	sys   *bolt.Bucket
	chans *bolt.Bucket

	touched map[string]*chanState
	order   []string // touched channels in first-touch order, for determinism
	rules   []Rule
	loaded  bool
	now     time.Time // latest time seen, for retention in finish
	applied uint64    // Applied before this Update
}

type chanState struct {
	b    *bolt.Bucket
	info Info
}

// Result is the outcome of one Append.
type Result struct {
	Channel string
	Offset  uint64
	Epoch   string
	// Duplicate is true when id was appended before within
	// IdempotencyWindow; Offset is then that first offset.
	Duplicate bool
	// Err is set when the message was refused (ErrBadChannel).
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
// nothing and returns the first offset. A refused message is reported in
// Result.Err, not as an error; the error is for storage failures.
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
	res.Epoch = st.info.Epoch
	if now.After(tx.now) {
		tx.now = now
	}
	if len(id) > MaxKeyLen {
		res.Err = fmt.Errorf("%w: id of %d bytes", ErrBadKey, len(id))
		return res, nil
	}
	nowNanos := uint64(now.UnixNano())
	var ids *bolt.Bucket
	if id != "" {
		ids = st.b.Bucket(bucketIDs)
		if v := ids.Get([]byte(id)); len(v) == 16 {
			seen := u64(v[8:])
			if nowNanos < seen+uint64(IdempotencyWindow) {
				res.Offset, res.Duplicate = u64(v), true
				return res, nil
			}
			// Expired: forget the old expiry record before reusing the id.
			if err := st.b.Bucket(bucketExpiry).Delete(expiryKey(seen, id)); err != nil {
				return res, err
			}
		}
	}
	off := st.info.Next
	v := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(v, nowNanos)
	copy(v[8:], data)
	if err := st.b.Bucket(bucketMsgs).Put(be(off), v); err != nil {
		return res, err
	}
	st.info.Next++
	if ids != nil {
		rec := make([]byte, 16)
		binary.BigEndian.PutUint64(rec, off)
		binary.BigEndian.PutUint64(rec[8:], nowNanos)
		if err := ids.Put([]byte(id), rec); err != nil {
			return res, err
		}
		if err := st.b.Bucket(bucketExpiry).Put(expiryKey(nowNanos, id), nil); err != nil {
			return res, err
		}
	}
	res.Offset = off
	return res, tx.retain(ch, st, now)
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
	st, err := tx.create(ch, epoch)
	if err != nil {
		return err
	}
	return st.b.Put(keyMeta, encodeInfo(st.info))
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

// Sweep applies age retention and forgets expired idempotency ids on every
// channel, as of now.
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
	info, err := decodeInfo(b.Get(keyMeta))
	if err != nil {
		return nil, fmt.Errorf("channel %s: %w", ch, err)
	}
	return tx.track(ch, &chanState{b: b, info: info}), nil
}

func (tx *Tx) create(ch, epoch string) (*chanState, error) {
	b, err := tx.chans.CreateBucket([]byte(ch))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketMsgs, bucketIDs, bucketExpiry} {
		if _, err := b.CreateBucket(name); err != nil {
			return nil, err
		}
	}
	return tx.track(ch, &chanState{b: b, info: Info{Epoch: epoch, First: 1, Next: 1}}), nil
}

func (tx *Tx) track(ch string, st *chanState) *chanState {
	if tx.touched == nil {
		tx.touched = make(map[string]*chanState)
	}
	tx.touched[ch] = st
	tx.order = append(tx.order, ch)
	return st
}

// finish writes the meta of every touched channel.
func (tx *Tx) finish() error {
	if !tx.now.IsZero() && tx.now.UnixNano() > int64(u64(tx.sys.Get(keyClock))) {
		if err := tx.sys.Put(keyClock, be(uint64(tx.now.UnixNano()))); err != nil {
			return err
		}
	}
	for _, ch := range tx.order {
		st, ok := tx.touched[ch]
		if !ok {
			continue // deleted in this Tx
		}
		if err := st.b.Put(keyMeta, encodeInfo(st.info)); err != nil {
			return err
		}
	}
	return nil
}

// retain applies retention to ch as of now, with the rules in force. It runs
// at each Append and Sweep rather than once per Update, so that the result
// does not depend on how entries are grouped into Updates.
func (tx *Tx) retain(ch string, st *chanState, now time.Time) error {
	rule, err := tx.rule(ch)
	if err != nil {
		return fmt.Errorf("retention of %s: %w", ch, err)
	}
	msgs := st.b.Bucket(bucketMsgs)
	first := st.info.First
	if rule.MaxMessages > 0 && st.info.Next-first > rule.MaxMessages {
		first = st.info.Next - rule.MaxMessages
	}
	var cutoff uint64
	if rule.MaxAge > 0 && !now.IsZero() && now.UnixNano() > int64(rule.MaxAge) {
		cutoff = uint64(now.UnixNano() - int64(rule.MaxAge))
	}
	if cutoff > 0 {
		// Messages are in time order as the leader stamped them; stop at the
		// first one young enough.
		c := msgs.Cursor()
		for k, v := c.Seek(be(first)); k != nil && len(v) >= 8 && u64(v) < cutoff; k, v = c.Next() {
			first = u64(k) + 1
		}
	}
	for off := st.info.First; off < first; off++ {
		if err := msgs.Delete(be(off)); err != nil {
			return err
		}
	}
	st.info.First = first
	if now.IsZero() {
		return nil
	}
	// Forget idempotency ids older than the window.
	horizon := uint64(0)
	if w := now.UnixNano() - int64(IdempotencyWindow); w > 0 {
		horizon = uint64(w)
	}
	ids := st.b.Bucket(bucketIDs)
	xc := st.b.Bucket(bucketExpiry).Cursor()
	for k, _ := xc.First(); k != nil && u64(k) < horizon; k, _ = xc.First() {
		id := k[8:]
		if v := ids.Get(id); len(v) == 16 && u64(v[8:]) == u64(k) {
			if err := ids.Delete(id); err != nil {
				return err
			}
		}
		if err := xc.Delete(); err != nil {
			return err
		}
	}
	return nil
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

func expiryKey(t uint64, id string) []byte {
	var b bytes.Buffer
	b.Write(be(t))
	b.WriteString(id)
	return b.Bytes()
}
