package log

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A channel served as a Durable Stream keeps the stream's state (package
// dstream decides what it holds) at key "ds" of its bucket, beside meta:
// it is written in the same Update as the messages it covers, goes with
// the channel when the channel is deleted, and travels in snapshots.
var keyStream = []byte("ds")

// StreamState returns the stream state stored with ch (nil: none, or no
// such channel), and whether the channel exists.
func (tx *Tx) StreamState(ch string) ([]byte, bool, error) {
	st, err := tx.channel(ch, false)
	if err != nil || st == nil {
		return nil, false, err
	}
	if !st.dsOK {
		st.ds, st.dsOK = bytes.Clone(st.b.Get(keyStream)), true
	}
	return st.ds, true, nil
}

// SetStreamState stores the stream state of ch, creating the channel in
// the cluster epoch if needed; nil removes it.
func (tx *Tx) SetStreamState(ch string, state []byte) error {
	st, err := tx.channel(ch, true)
	if err != nil {
		return err
	}
	st.ds, st.dsOK = bytes.Clone(state), true
	if state == nil {
		return st.b.Delete(keyStream)
	}
	return st.b.Put(keyStream, state)
}

// ChannelInfo returns ch's Info as of this Update (messages appended in it
// counted), and whether the channel exists.
func (tx *Tx) ChannelInfo(ch string) (Info, bool, error) {
	st, err := tx.channel(ch, false)
	if err != nil || st == nil {
		return Info{}, false, err
	}
	return st.meta.Info, true, nil
}

// CreateChannelAt replaces ch (if it exists) by an empty channel in epoch
// whose first message will get offset first: a fork of a stream, whose
// earlier offsets are read from its source.
func (tx *Tx) CreateChannelAt(ch, epoch string, first uint64) error {
	if err := tx.DeleteChannel(ch, epoch); err != nil {
		return err
	}
	st, err := tx.channel(ch, false)
	if err != nil || st == nil {
		return fmt.Errorf("create %s: %w", ch, ErrBadChannel)
	}
	st.meta.First, st.meta.Next, st.stored = first, first, first
	st.dirty = true
	return nil
}

// MessageAt returns the data of ch's message at off (appended in this
// Update or stored before), or nil when ch holds no such message.
func (tx *Tx) MessageAt(ch string, off uint64) ([]byte, error) {
	st, err := tx.channel(ch, false)
	if err != nil || st == nil || off < st.meta.First || off >= st.meta.Next {
		return nil, err
	}
	if off >= st.stored {
		for _, s := range st.pend {
			if s == nil || off < s.first || off >= s.first+uint64(s.n) {
				continue
			}
			r := chunkReader{v: s.buf[chunkHeader:], left: s.n, t: int64(binary.BigEndian.Uint64(s.buf[5:])), off: s.first}
			for r.more() {
				m, err := r.next()
				if err != nil {
					return nil, err
				}
				if m.off == off {
					return bytes.Clone(m.data), nil
				}
			}
		}
		return nil, fmt.Errorf("%w: offset %d of %s not in this update's messages", ErrCorrupt, off, ch)
	}
	st.fok = false
	if err := st.front(off); err != nil {
		return nil, err
	}
	if err := st.fr.seek(off); err != nil {
		return nil, err
	}
	m, err := st.fr.next()
	if err != nil {
		return nil, err
	}
	st.fok = false // the reader moved past what retention expects
	return bytes.Clone(m.data), nil
}

// View is a consistent read of the log (Log.View).
type View struct{ tx *bolt.Tx }

// View calls fn with a read of the log as of one moment.
func (l *Log) View(fn func(v *View) error) error {
	return l.readView(func(tx *bolt.Tx) error { return fn(&View{tx: tx}) })
}

// Applied returns the Raft index the view reflects.
func (v *View) Applied() uint64 { return u64(v.tx.Bucket(bucketSys).Get(keyApplied)) }

// Info returns ch's Info (the cluster epoch and 1, 1 for a channel never
// written) and whether the channel exists.
func (v *View) Info(ch string) (Info, bool, error) {
	info, b, err := channelInfo(v.tx, ch)
	return info, b != nil, err
}

// StreamState returns the stream state stored with ch (nil: none).
func (v *View) StreamState(ch string) []byte {
	b := v.tx.Bucket(bucketChannels).Bucket([]byte(ch))
	if b == nil {
		return nil
	}
	return bytes.Clone(b.Get(keyStream))
}

// Read returns up to limit messages of ch from offset from to offset to
// (excluded; 0: no bound), stopping after the message that reaches
// maxBytes of data.
func (v *View) Read(ch string, from, to uint64, limit, maxBytes int) ([]Message, error) {
	info, b, err := channelInfo(v.tx, ch)
	if err != nil || b == nil || limit <= 0 {
		return nil, err
	}
	if to == 0 || to > info.Next {
		to = info.Next
	}
	return readRange(b, ch, max(from, info.First), to, limit, maxBytes)
}

// StreamStates calls fn with every channel that has a stream state, in
// name order, until fn returns false. state is valid during the call only.
func (v *View) StreamStates(fn func(name string, state []byte) bool) error {
	chans := v.tx.Bucket(bucketChannels)
	err := chans.ForEachBucket(func(k []byte) error {
		if st := chans.Bucket(k).Get(keyStream); st != nil && !fn(string(k), st) {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}
