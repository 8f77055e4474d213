package log

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	bolt "go.etcd.io/bbolt"
)

// A chunk holds consecutive messages of one channel, written in one Update.
// Its key in the channel's message bucket is the big-endian offset of its
// first message. In layout 3 the key names a bucket of its own, holding the
// chunk under the key "c"; in layout 2 it was a record (still read). The
// bucket is there for bbolt: a leaf node of up to four keys is never split,
// so with chunks as records each new chunk shared a leaf with up to three
// earlier ones of tens of KB, and every Update wrote them all again (4.6
// bytes written per byte stored). A chunk in its own bucket is written once,
// and the channel's bucket only gets a 16-byte bucket header. The chunk is
//
//	version  1 byte (chunkV2; chunkV1 in files of layouts 2 and 3)
//	count    4 bytes, big-endian: the number of messages, 1 to maxChunkMsgs
//	base     8 bytes, big-endian: a time in Unix nanoseconds
//	count times:
//	  time delta  varint (zigzag): from the previous message's time, or
//	              from base for the first message
//	  id length   uvarint (0: no publish id)
//	  data length uvarint
//	  id, data
//	(count-1)/skipEvery skip entries, for j = 1, 2, ...:
//	  position    4 bytes, big-endian: where message j*skipEvery starts in
//	              the value
//	  time        8 bytes, big-endian: of message j*skipEvery-1
//	checksum 4 bytes, big-endian: CRC-32C (Castagnoli) of all the bytes
//	         before it (chunkV2 only)
//
// Every read of a chunkV2 checks its checksum first (about 0.1 ms for a
// chunk of 1 MiB): damaged bytes are ErrCorrupt, never messages. A chunkV1
// chunk, written by layouts 2 and 3, has no checksum and is read unchecked
// until retention deletes it; new chunks of such a file are chunkV2.
//
// A read jumps to the skip entry below the offset it wants and walks from
// there, skipping ids and data by their lengths: at most skipEvery-1
// messages.
const (
	chunkV1     = 1
	chunkV2     = 2
	chunkHeader = 13
	chunkCRC    = 4
	skipEvery   = 64
	skipEntry   = 12

	// A chunk is closed when it holds maxChunkMsgs messages or reaches
	// maxChunkBytes (it may pass it by its last message), so that no read
	// walks through an unbounded record.
	maxChunkMsgs  = 4096
	maxChunkBytes = 1 << 20
)

// castagnoli is the CRC-32C table, computed in hardware where the CPU has it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkKey is the key of the chunk in its bucket.
var chunkKey = []byte("c")

// chunkValue returns the chunk at key k of msgs, whose cursor gave v: the
// value of its bucket, or v itself in a layout 2 record.
func chunkValue(msgs *bolt.Bucket, k, v []byte) []byte {
	if v != nil {
		return v
	}
	if b := msgs.Bucket(k); b != nil {
		return b.Get(chunkKey)
	}
	return nil // openChunk reports it
}

// putChunk stores chunk v at key k of msgs, replacing one there.
func putChunk(msgs *bolt.Bucket, k, v []byte) error {
	b, err := msgs.CreateBucket(k)
	if errors.Is(err, bolt.ErrBucketExists) || errors.Is(err, bolt.ErrIncompatibleValue) {
		if err := deleteChunk(msgs, k); err != nil {
			return err
		}
		b, err = msgs.CreateBucket(k)
	}
	if err != nil {
		return err
	}
	return b.Put(chunkKey, v)
}

// deleteChunk deletes the chunk at key k of msgs, a bucket or a record.
func deleteChunk(msgs *bolt.Bucket, k []byte) error {
	err := msgs.DeleteBucket(k)
	if errors.Is(err, bolt.ErrIncompatibleValue) {
		return msgs.Delete(k)
	}
	return err
}

// segment is a chunk being built in a Tx: its encoding, with the header
// filled in by bytes().
type segment struct {
	buf   []byte
	first uint64 // offset of its first message
	n     int    // messages
	last  int64  // time of its last message
	skips []byte // skip entries, unless trimmed (recomputed then)
	stale bool   // skips must be recomputed
	done  bool   // bytes was called
}

func newSegment(first uint64, t int64, hint int, bufs *segBufs) *segment {
	buf := bufs.get(chunkHeader + hint)[:chunkHeader]
	clear(buf)
	buf[0] = chunkV2
	binary.BigEndian.PutUint64(buf[5:], uint64(t))
	return &segment{buf: buf, first: first, last: t}
}

// segBufs keeps the buffers of the segments of past Updates for the next
// ones: a segment grows to the size of a channel's share of an Update, and
// allocating and growing that again for every Update is a good part of the
// cost of an append. bbolt is done with a value once its transaction has
// ended. Used under the Log's wmu.
type segBufs struct {
	free  [][]byte
	bytes int
}

// segBufsMax bounds the bytes segBufs keeps.
const segBufsMax = 16 << 20

func (p *segBufs) get(size int) []byte {
	if p != nil {
		if n := len(p.free); n > 0 {
			b := p.free[n-1]
			p.free[n-1] = nil
			p.free = p.free[:n-1]
			p.bytes -= cap(b)
			if cap(b) >= size {
				return b
			}
		}
	}
	return make([]byte, 0, size)
}

// put gives back the buffers of segs, whose Update has ended.
func (p *segBufs) put(segs []*segment) {
	for _, s := range segs {
		if s == nil || cap(s.buf) > 2*maxChunkBytes || p.bytes+cap(s.buf) > segBufsMax {
			continue
		}
		p.free = append(p.free, s.buf[:0])
		p.bytes += cap(s.buf)
		s.buf = nil
	}
}

// full reports whether the segment must be closed before another message.
func (s *segment) full() bool { return s.n >= maxChunkMsgs || len(s.buf) >= maxChunkBytes }

func (s *segment) add(t int64, id string, data []byte) {
	if s.n > 0 && s.n%skipEvery == 0 && !s.stale {
		s.skips = binary.BigEndian.AppendUint32(s.skips, uint32(len(s.buf)))
		s.skips = binary.BigEndian.AppendUint64(s.skips, uint64(s.last))
	}
	s.buf = binary.AppendVarint(s.buf, t-s.last)
	s.buf = binary.AppendUvarint(s.buf, uint64(len(id)))
	s.buf = binary.AppendUvarint(s.buf, uint64(len(data)))
	s.buf = append(s.buf, id...)
	s.buf = append(s.buf, data...)
	s.last = t
	s.n++
}

// bytes returns the finished chunk. The segment must not change after.
func (s *segment) bytes() []byte {
	if s.done {
		return s.buf
	}
	s.done = true
	binary.BigEndian.PutUint32(s.buf[1:], uint32(s.n))
	if s.stale {
		s.skips = s.skips[:0]
		r := chunkReader{v: s.buf[chunkHeader:], left: s.n, t: int64(binary.BigEndian.Uint64(s.buf[5:])), off: s.first}
		for i := 0; i < s.n; i++ {
			if i > 0 && i%skipEvery == 0 {
				s.skips = binary.BigEndian.AppendUint32(s.skips, uint32(len(s.buf)-len(r.v)))
				s.skips = binary.BigEndian.AppendUint64(s.skips, uint64(r.t))
			}
			if _, err := r.next(); err != nil {
				panic("log: segment encoding: " + err.Error()) // we wrote it
			}
		}
	}
	s.buf = append(s.buf, s.skips...)
	s.buf = binary.BigEndian.AppendUint32(s.buf, crc32.Checksum(s.buf, castagnoli))
	return s.buf
}

// trimTo drops the messages below offset off (off <= the segment's end)
// and returns the time of the first one kept (meaningless when none is). A
// new header goes over the bytes of the dropped messages, just before the
// first one kept, so nothing is copied: the 13 bytes of the old header
// always lie below it.
func (s *segment) trimTo(off uint64) int64 {
	r := chunkReader{v: s.buf[chunkHeader:], left: s.n, t: int64(binary.BigEndian.Uint64(s.buf[5:])), off: s.first}
	pos := chunkHeader
	for r.off < off {
		before := len(r.v)
		if _, err := r.next(); err != nil {
			panic("log: segment encoding: " + err.Error()) // we wrote it
		}
		pos += before - len(r.v)
	}
	base := r.t // time of the last dropped message: the next delta is from it
	s.buf = s.buf[pos-chunkHeader:]
	s.skips, s.stale = s.skips[:0], true
	s.buf[0] = chunkV2
	binary.BigEndian.PutUint64(s.buf[5:], uint64(base))
	s.n -= int(off - s.first)
	s.first = off
	if s.n == 0 {
		s.last = base
		return base
	}
	next := r
	m, _ := next.next()
	return m.t
}

// chunkMsg is one decoded message. id and data alias the chunk.
type chunkMsg struct {
	off  uint64
	t    int64
	id   []byte
	data []byte
}

// chunkReader decodes a chunk's messages in order.
type chunkReader struct {
	v    []byte // what is left to decode
	left int    // messages left
	t    int64  // time of the last message decoded (base before the first)
	off  uint64 // offset of the next message

	all   []byte // the value, without its skip entries
	key   uint64
	skips []byte
}

// openChunk returns a reader on the chunk v stored at key k, after checking
// its checksum (chunkV2). Its errors are ErrCorrupt and say which offsets
// the chunk was to hold; callers add the channel and the file.
func openChunk(k, v []byte) (chunkReader, error) {
	if len(k) != 8 {
		return chunkReader{}, fmt.Errorf("%w: chunk key of %d bytes", ErrCorrupt, len(k))
	}
	key := binary.BigEndian.Uint64(k)
	if len(v) < chunkHeader || (v[0] != chunkV1 && v[0] != chunkV2) {
		return chunkReader{}, fmt.Errorf("%w: chunk at offset %d: bad header (%d bytes)", ErrCorrupt, key, len(v))
	}
	n := binary.BigEndian.Uint32(v[1:])
	if v[0] == chunkV2 {
		if len(v) < chunkHeader+chunkCRC {
			return chunkReader{}, fmt.Errorf("%w: chunk at offset %d: %d bytes", ErrCorrupt, key, len(v))
		}
		body := v[:len(v)-chunkCRC]
		if want, got := binary.BigEndian.Uint32(v[len(body):]), crc32.Checksum(body, castagnoli); want != got {
			return chunkReader{}, fmt.Errorf("%w: chunk at offset %d (%d messages, %d bytes): checksum %08x, want %08x",
				ErrCorrupt, key, n, len(v), got, want)
		}
		v = body
	}
	if n == 0 || n > maxChunkMsgs {
		return chunkReader{}, fmt.Errorf("%w: chunk at offset %d of %d messages", ErrCorrupt, key, n)
	}
	skips := int(n-1) / skipEvery * skipEntry
	if len(v) < chunkHeader+skips {
		return chunkReader{}, fmt.Errorf("%w: chunk at offset %d: %d bytes for %d messages", ErrCorrupt, key, len(v), n)
	}
	all := v[:len(v)-skips]
	return chunkReader{
		v:     all[chunkHeader:],
		left:  int(n),
		t:     int64(binary.BigEndian.Uint64(v[5:])),
		off:   key,
		all:   all,
		key:   key,
		skips: v[len(v)-skips:],
	}, nil
}

// seek moves the reader forward so that the next message it decodes is the
// one at off, jumping by the skip entries. Offsets past the chunk leave it
// at its end.
func (r *chunkReader) seek(off uint64) error {
	if off <= r.off {
		return nil
	}
	if j := min(off-r.key, uint64(len(r.skips)/skipEntry*skipEvery)) / skipEvery; j > 0 && r.key+j*skipEvery > r.off {
		e := r.skips[(j-1)*skipEntry:]
		pos := int(binary.BigEndian.Uint32(e))
		if pos < chunkHeader || pos > len(r.all) {
			return fmt.Errorf("%w: chunk skip entry %d at %d of %d bytes", ErrCorrupt, j, pos, len(r.all))
		}
		r.left -= int(r.key + j*skipEvery - r.off)
		r.v = r.all[pos:]
		r.t = int64(binary.BigEndian.Uint64(e[4:]))
		r.off = r.key + j*skipEvery
	}
	for r.off < off && r.left > 0 {
		if _, err := r.next(); err != nil {
			return err
		}
	}
	return nil
}

// chunkEnd returns the offset after the last message of the chunk k, v.
func chunkEnd(k, v []byte) (uint64, error) {
	r, err := openChunk(k, v)
	return r.off + uint64(r.left), err
}

func (r *chunkReader) more() bool { return r.left > 0 }

func (r *chunkReader) next() (chunkMsg, error) {
	if r.left <= 0 {
		return chunkMsg{}, fmt.Errorf("%w: read past the end of the chunk at offset %d", ErrCorrupt, r.key)
	}
	dt, n1 := binary.Varint(r.v)
	if n1 <= 0 {
		return chunkMsg{}, fmt.Errorf("%w: chunk message time at offset %d", ErrCorrupt, r.off)
	}
	idLen, n2 := binary.Uvarint(r.v[n1:])
	if n2 <= 0 {
		return chunkMsg{}, fmt.Errorf("%w: chunk id length at offset %d", ErrCorrupt, r.off)
	}
	dataLen, n3 := binary.Uvarint(r.v[n1+n2:])
	if n3 <= 0 {
		return chunkMsg{}, fmt.Errorf("%w: chunk data length at offset %d", ErrCorrupt, r.off)
	}
	rest := r.v[n1+n2+n3:]
	if idLen > uint64(len(rest)) || dataLen > uint64(len(rest))-idLen {
		return chunkMsg{}, fmt.Errorf("%w: chunk message at offset %d of %d+%d bytes in %d", ErrCorrupt, r.off, idLen, dataLen, len(rest))
	}
	r.t += dt
	m := chunkMsg{
		off:  r.off,
		t:    r.t,
		id:   rest[:idLen:idLen],
		data: rest[idLen : idLen+dataLen : idLen+dataLen],
	}
	r.v = rest[idLen+dataLen:]
	r.off++
	r.left--
	if r.left == 0 && len(r.v) != 0 {
		return chunkMsg{}, fmt.Errorf("%w: %d bytes after the last message of the chunk at offset %d", ErrCorrupt, len(r.v), r.key)
	}
	return m, nil
}

// The idempotency record of the ids that one Update appended to one
// channel, in the top-level bucket "d":
//
//	key    sortable(maxSeen) 8 bytes | base offset 8 bytes | channel name
//	value  version 1 byte (idsV1) | created 8 bytes, big-endian | then per id:
//	         uvarint(offset - base), uvarint(maxSeen - time), uvarint(len), id
//
// maxSeen is the latest time among its ids, so the bucket is in the order in
// which records leave the idempotency window; base is the offset of its first
// id; created is the index of the Update that created the channel, which
// tells records of a deleted channel from those of its successor.
const idsV1 = 1

// sortable encodes a time so that byte order is time order, negative times
// included.
func sortable(t int64) []byte { return be(uint64(t) ^ 1<<63) }

func unsortable(b []byte) int64 { return int64(u64(b) ^ 1<<63) }

// pendID is an id appended in this Tx.
type pendID struct {
	off uint64
	t   int64
	id  string
}

// encodeIDs returns the key and value of the "d" record of ids, which are in
// offset order and not empty.
func encodeIDs(ch string, created uint64, ids []pendID) (k, v []byte) {
	maxSeen := int64(math.MinInt64)
	size := 9
	for _, p := range ids {
		maxSeen = max(maxSeen, p.t)
		size += len(p.id) + 3*binary.MaxVarintLen64
	}
	base := ids[0].off
	k = make([]byte, 16+len(ch))
	copy(k, sortable(maxSeen))
	binary.BigEndian.PutUint64(k[8:], base)
	copy(k[16:], ch)
	v = make([]byte, 9, size)
	v[0] = idsV1
	binary.BigEndian.PutUint64(v[1:], created)
	for _, p := range ids {
		v = binary.AppendUvarint(v, p.off-base)
		v = binary.AppendUvarint(v, uint64(maxSeen-p.t))
		v = binary.AppendUvarint(v, uint64(len(p.id)))
		v = append(v, p.id...)
	}
	return k, v
}

// decodeIDs calls fn for every id of a "d" record.
func decodeIDs(k, v []byte, fn func(ch string, created uint64, p pendID)) error {
	if len(k) < 17 || len(v) < 9 || v[0] != idsV1 {
		return fmt.Errorf("%w: idempotency record", ErrCorrupt)
	}
	maxSeen, base, ch := unsortable(k), u64(k[8:]), string(k[16:])
	created := u64(v[1:])
	for rest := v[9:]; len(rest) > 0; {
		d, n1 := binary.Uvarint(rest)
		if n1 <= 0 {
			return fmt.Errorf("%w: idempotency record offset", ErrCorrupt)
		}
		age, n2 := binary.Uvarint(rest[n1:])
		if n2 <= 0 {
			return fmt.Errorf("%w: idempotency record time", ErrCorrupt)
		}
		l, n3 := binary.Uvarint(rest[n1+n2:])
		if n3 <= 0 || l > uint64(len(rest)-n1-n2-n3) {
			return fmt.Errorf("%w: idempotency record id", ErrCorrupt)
		}
		rest = rest[n1+n2+n3:]
		fn(ch, created, pendID{off: base + d, t: maxSeen - int64(age), id: string(rest[:l])})
		rest = rest[l:]
	}
	return nil
}
