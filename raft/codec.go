package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	hraft "github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// Errors of the Raft log store.
var (
	// ErrCorruptLog means that a file of the Raft log (a raft-wal segment or
	// wal-meta.db) is damaged: an entry's checksum does not match, a file
	// is cut short, or its bytes do not decode. The error wrapping it names
	// the file. A damaged hub is rebuilt from its peers (see
	// docs/operations.md).
	ErrCorruptLog = errors.New("raft log damaged")
)

// crcCodecID identifies crcCodec in raft-wal's segment headers and
// metadata.
const crcCodecID = wal.FirstExternalCodecID

// crcCodec is raft-wal's binary codec with a CRC-32C (Castagnoli) of each
// encoded entry after it. raft-wal checks a checksum only over the last
// batch of the tail segment, when it opens it; entries of sealed segments
// are read back unchecked, so a flipped bit on disk would reach Raft (and
// the channel log) as a different entry. Decode checks the sum and fails
// with ErrCorruptLog.
type crcCodec struct {
	bin wal.BinaryCodec
}

var _ wal.Codec = (*crcCodec)(nil)

func (c *crcCodec) ID() uint64 { return crcCodecID }

// Encode writes the entry in raft-wal's binary encoding, then its CRC-32C
// (4 bytes, little-endian).
func (c *crcCodec) Encode(l *hraft.Log, w io.Writer) error {
	buf, ok := w.(*bytes.Buffer) // what raft-wal passes
	if !ok {
		buf = new(bytes.Buffer)
	}
	start := buf.Len()
	if err := c.bin.Encode(l, buf); err != nil {
		return err
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc32.Checksum(buf.Bytes()[start:], crcTable))
	buf.Write(sum[:])
	if !ok {
		_, err := w.Write(buf.Bytes())
		return err
	}
	return nil
}

// Decode checks the entry's CRC-32C and decodes it.
func (c *crcCodec) Decode(bs []byte, l *hraft.Log) error {
	if len(bs) < 4 {
		return fmt.Errorf("%w: an entry of %d bytes (no checksum)", ErrCorruptLog, len(bs))
	}
	body := bs[:len(bs)-4]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(bs[len(bs)-4:]); got != want {
		return fmt.Errorf("%w: checksum mismatch (%08x, stored %08x)", ErrCorruptLog, got, want)
	}
	if err := c.bin.Decode(body, l); err != nil {
		// The checksum matched: these bytes were written so.
		return fmt.Errorf("%w: entry does not decode: %w", ErrCorruptLog, err)
	}
	return nil
}

// raft-wal v0.4.2 records every new segment with its own codec's ID
// (wal.CodecBinaryV1, "TODO make these configurable" in WAL.newSegment;
// hashicorp/raft-wal pull request 20 is still open), and then refuses to
// reopen a log whose segments name a codec other than the one it is given.
// codecMeta and codecFiler put crcCodecID in place of it, in the metadata
// and in the segment headers alike, so that what is on disk names the
// codec that wrote it.

// withCodecID returns info with crcCodecID in place of raft-wal's own.
func withCodecID(info types.SegmentInfo) types.SegmentInfo {
	if info.Codec == wal.CodecBinaryV1 {
		info.Codec = crcCodecID
	}
	return info
}

// codecMeta is raft-wal's metadata store recording crcCodecID.
type codecMeta struct {
	*metadb.BoltMetaDB
}

func (m codecMeta) CommitState(st types.PersistentState) error {
	segs := make([]types.SegmentInfo, len(st.Segments))
	for i, s := range st.Segments {
		segs[i] = withCodecID(s)
	}
	st.Segments = segs
	return m.BoltMetaDB.CommitState(st)
}

// codecFiler is raft-wal's segment filer writing crcCodecID into the
// headers of new segments (and expecting it in existing ones).
type codecFiler struct {
	*segment.Filer
}

func (f codecFiler) Create(info types.SegmentInfo) (types.SegmentWriter, error) {
	return f.Filer.Create(withCodecID(info))
}

func (f codecFiler) RecoverTail(info types.SegmentInfo) (types.SegmentWriter, error) {
	return f.Filer.RecoverTail(withCodecID(info))
}

func (f codecFiler) Open(info types.SegmentInfo) (types.SegmentReader, error) {
	return f.Filer.Open(withCodecID(info))
}
