package log

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// chunkSeeds returns encoded chunks: one message, a chunk with skip
// entries (200 messages, ids on some), a trimmed one, and their layout 3
// form (no checksum).
func chunkSeeds() [][2][]byte {
	var out [][2][]byte
	for _, n := range []int{1, 200} {
		s := newSegment(7, t0.UnixNano(), 64, nil)
		for i := range n {
			id := ""
			if i%3 == 0 {
				id = fmt.Sprintf("id-%d", i)
			}
			s.add(t0.UnixNano()+int64(i)*int64(time.Second), id, []byte(fmt.Sprintf(`"m%d"`, i)))
		}
		if n > 1 {
			s.trimTo(70)
		}
		v := bytes.Clone(s.bytes())
		out = append(out, [2][]byte{be(s.first), v})
		v1 := bytes.Clone(v[:len(v)-chunkCRC])
		v1[0] = chunkV1
		out = append(out, [2][]byte{be(s.first), v1})
	}
	return out
}

// FuzzDecodeChunk decodes a stored chunk (key, value) as reads and
// retention do: open it (checking its checksum), seek, and walk its
// messages. Damaged input must give ErrCorrupt, never a panic.
func FuzzDecodeChunk(f *testing.F) {
	for _, s := range chunkSeeds() {
		f.Add(s[0], s[1], uint64(0))
		f.Add(s[0], s[1], uint64(130))
	}
	f.Add(be(1), []byte{chunkV2, 0, 0, 0, 1}, uint64(1))
	f.Fuzz(func(t *testing.T, k, v []byte, seek uint64) {
		r, err := openChunk(k, v)
		if err != nil {
			return
		}
		if err := r.seek(seek); err != nil {
			return
		}
		for i := 0; r.more() && i <= maxChunkMsgs; i++ {
			m, err := r.next()
			if err != nil {
				return
			}
			if len(m.id)+len(m.data) > len(v) {
				t.Fatalf("message of %d+%d bytes from a chunk of %d", len(m.id), len(m.data), len(v))
			}
		}
		if r.more() {
			t.Fatal("more than maxChunkMsgs messages")
		}
	})
}

// FuzzDecodeIDs decodes an idempotency record (key, value), as Open and
// Restore do to rebuild the index.
func FuzzDecodeIDs(f *testing.F) {
	k, v := encodeIDs("chan", 3, []pendID{{off: 5, t: t0.UnixNano(), id: "a"}, {off: 9, t: t0.UnixNano() + 1, id: "bb"}})
	f.Add(k, v)
	f.Add(k, v[:len(v)-1])
	f.Fuzz(func(t *testing.T, k, v []byte) {
		_ = decodeIDs(k, v, func(ch string, created uint64, p pendID) {
			if len(p.id) > len(v) {
				t.Fatalf("id of %d bytes from a record of %d", len(p.id), len(v))
			}
		})
	})
}

// FuzzDecodeMeta decodes a channel's meta record.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(meta{Info: Info{Epoch: "e", First: 3, Next: 9}, created: 2, firstTime: t0.UnixNano()}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err == nil && (m.First > m.Next || m.created == 0) {
			t.Fatalf("decodeMeta accepted %+v", m)
		}
	})
}

// snapshotSeed returns a small log as Snapshot.WriteTo writes it: a few
// channels, ids, retention rules.
func snapshotSeed(f *testing.F) []byte {
	l, err := Open(Config{Path: filepath.Join(f.TempDir(), "seed.db"), NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	_, err = l.Update(1, func(tx *Tx) error {
		if err := tx.InitEpoch(epoch0); err != nil {
			return err
		}
		if err := tx.SetRetention([]Rule{{Pattern: "r*", MaxMessages: 5}}); err != nil {
			return err
		}
		for i := range 40 {
			if _, err := tx.Append(fmt.Sprintf("c%d", i%4), fmt.Sprintf("id%d", i), []byte(fmt.Sprintf(`"%d"`, i)), t0); err != nil {
				return err
			}
		}
		return tx.Put("members/h1", []byte("api"))
	})
	if err != nil {
		f.Fatal(err)
	}
	s, err := l.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	defer s.Release()
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzRestoreSnapshot restores a damaged snapshot (a log file, as a leader
// sends it and as Open reads it from disk) and reads everything it holds.
// It must be refused or read without a panic; bbolt panics on some damage
// in a goroutine of its own, which would crash the process, so this also
// tries checkPages, which must find that damage first.
func FuzzRestoreSnapshot(f *testing.F) {
	seed := snapshotSeed(f)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	for _, p := range []int{2, 3, 4, 5} {
		if (p+1)*4096 <= len(seed) {
			d := bytes.Clone(seed)
			clear(d[p*4096 : (p+1)*4096])
			f.Add(d)
		}
	}
	f.Fuzz(func(t *testing.T, snap []byte) {
		l, err := Open(Config{Path: filepath.Join(t.TempDir(), "channels.db"), NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := l.Restore(bytes.NewReader(snap)); err != nil {
			return
		}
		l.Applied()
		l.Epoch()
		_, _ = l.Retention()
		_ = l.Scan("", func(string, []byte) {})
		var names []string
		_ = l.Channels(func(name string, _ Info) bool {
			names = append(names, name)
			return len(names) < 100
		})
		for _, ch := range names {
			_, _, _ = l.Read(ch, 0, 1000)
		}
		// An Update on it must not panic either (it may fail).
		_, _ = l.Update(l.Applied()+1, func(tx *Tx) error {
			for _, ch := range names {
				if _, err := tx.Append(ch, "", []byte("1"), t0.Add(time.Hour)); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
