package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	hraft "github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// boltLog is the Raft log and stable store of earlier releases in bbolt
// (raft.db), read to move it into raft-wal (see legacy.go). It keeps
// raft-boltdb's layout (a "logs" bucket keyed by big-endian index, a "conf"
// bucket for the stable store), and reads both raft-boltdb's msgpack
// entries and the binary form of its own the journal's checkpoints wrote,
// marked by a first byte that msgpack never uses (0xc1). It still writes
// that form: the replay of a journal's last entries into raft.db before
// the move, and tests that build such directories.
type boltLog struct {
	db *bolt.DB
}

var (
	bucketLogs = []byte("logs")
	bucketConf = []byte("conf")
	// errKeyNotFound is what hashicorp/raft expects of a stable store: it
	// compares the message.
	errKeyNotFound = errors.New("not found")
)

// ownEntry marks an entry in boltLog's own encoding.
const ownEntry = 0xc1

func openBoltLog(path string, noSync bool) (*boltLog, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		NoSync:  noSync,
		// As etcd does: the free list is rebuilt at open instead of being
		// written on every commit (fewer pages written per commit), and
		// kept as a map (constant-time allocation in a large file).
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open log store %s: locked by another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open log store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketLogs); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketConf)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open log store %s: %w", path, err)
	}
	return &boltLog{db: db}, nil
}

func (b *boltLog) Close() error { return b.db.Close() }

func (b *boltLog) FirstIndex() (uint64, error) {
	var first uint64
	err := b.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			first = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return first, err
}

func (b *boltLog) LastIndex() (uint64, error) {
	var last uint64
	err := b.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return last, err
}

func (b *boltLog) GetLog(index uint64, out *hraft.Log) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], index)
	return b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(key[:])
		if v == nil {
			return hraft.ErrLogNotFound
		}
		return decodeLogValue(v, out)
	})
}

func (b *boltLog) StoreLog(l *hraft.Log) error { return b.StoreLogs([]*hraft.Log{l}) }

// StoreLogs stores logs in one transaction.
func (b *boltLog) StoreLogs(logs []*hraft.Log) error {
	n := 0
	for _, l := range logs {
		n += logValueSize(l)
	}
	// One buffer for every key and value: bbolt keeps the slices it is
	// given until the commit.
	buf := make([]byte, 0, n+8*len(logs))
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketLogs)
		for _, l := range logs {
			start := len(buf)
			buf = binary.BigEndian.AppendUint64(buf, l.Index)
			buf = appendLogValue(buf, l)
			if err := bk.Put(buf[start:start+8], buf[start+8:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange deletes the entries min to max, inclusive.
func (b *boltLog) DeleteRange(min, max uint64) error {
	var from [8]byte
	binary.BigEndian.PutUint64(from[:], min)
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketLogs)
		// The keys first, then the deletes: a cursor's position after
		// Delete is not to be relied on for Next (etcd-io/bbolt#146), and
		// seeking again after each delete walks every leaf emptied so far
		// (quadratic: 3.4 s for 80,000 entries).
		var keys [][8]byte
		c := bk.Cursor()
		for k, _ := c.Seek(from[:]); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			keys = append(keys, [8]byte(k))
		}
		for _, k := range keys {
			if err := bk.Delete(k[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (b *boltLog) Set(k, v []byte) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketConf).Put(k, v) })
}

func (b *boltLog) Get(k []byte) ([]byte, error) {
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketConf).Get(k)
		if v == nil {
			return errKeyNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

func (b *boltLog) SetUint64(k []byte, v uint64) error {
	return b.Set(k, binary.BigEndian.AppendUint64(nil, v))
}

func (b *boltLog) GetUint64(k []byte) (uint64, error) {
	v, err := b.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable store: %q holds %d bytes, not a uint64", k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// logValueSize is the size of l in boltLog's encoding.
func logValueSize(l *hraft.Log) int { return 1 + logEntrySize(l) }

func appendLogValue(buf []byte, l *hraft.Log) []byte {
	return appendLogEntry(append(buf, ownEntry), l)
}

// decodeLogValue decodes an entry of boltLog's encoding or raft-boltdb's
// msgpack into out, copying what it keeps (v belongs to bbolt's map).
func decodeLogValue(v []byte, out *hraft.Log) error {
	if len(v) > 0 && v[0] == ownEntry {
		l, rest, err := decodeLogEntry(v[1:])
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return fmt.Errorf("log entry %d: %d bytes after it", l.Index, len(rest))
		}
		l.Data = bytes.Clone(l.Data)
		l.Extensions = bytes.Clone(l.Extensions)
		*out = l
		return nil
	}
	*out = hraft.Log{}
	return codec.NewDecoder(bytes.NewReader(v), &codec.MsgpackHandle{}).Decode(out)
}

// logEntrySize is the size of l in appendLogEntry's encoding, which the
// journal's records and boltLog's values share: index, term, type, time
// appended (Unix nanoseconds, 0 for none), then data and extensions with
// their lengths.
func logEntrySize(l *hraft.Log) int { return 8 + 8 + 1 + 8 + 4 + len(l.Data) + 4 + len(l.Extensions) }

func appendLogEntry(buf []byte, l *hraft.Log) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, l.Index)
	buf = binary.LittleEndian.AppendUint64(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	buf = binary.LittleEndian.AppendUint64(buf, uint64(at))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(l.Extensions)))
	return append(buf, l.Extensions...)
}

var errShortEntry = errors.New("truncated log entry")

// decodeLogEntry decodes one entry of appendLogEntry's encoding from the
// start of b; its Data and Extensions alias b.
func decodeLogEntry(b []byte) (hraft.Log, []byte, error) {
	if len(b) < 29 {
		return hraft.Log{}, nil, errShortEntry
	}
	l := hraft.Log{
		Index: binary.LittleEndian.Uint64(b[0:]),
		Term:  binary.LittleEndian.Uint64(b[8:]),
		Type:  hraft.LogType(b[16]),
	}
	if at := int64(binary.LittleEndian.Uint64(b[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at).UTC()
	}
	dn := int(binary.LittleEndian.Uint32(b[25:]))
	b = b[29:]
	if len(b) < dn+4 {
		return hraft.Log{}, nil, errShortEntry
	}
	if dn > 0 {
		l.Data = b[:dn:dn]
	}
	b = b[dn:]
	en := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if len(b) < en {
		return hraft.Log{}, nil, errShortEntry
	}
	if en > 0 {
		l.Extensions = b[:en:en]
	}
	return l, b[en:], nil
}
