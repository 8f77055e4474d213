package log

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// editChunks rewrites every stored chunk of the closed log file at path
// with fn (given the channel and the chunk's key and value).
func editChunks(t *testing.T, path string, fn func(ch string, k, v []byte) []byte) {
	t.Helper()
	writeBolt(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChannels).ForEachBucket(func(ch []byte) error {
			mb := tx.Bucket(bucketChannels).Bucket(ch).Bucket(bucketMsgs)
			var keys [][]byte
			if err := mb.ForEachBucket(func(k []byte) error {
				keys = append(keys, bytes.Clone(k))
				return nil
			}); err != nil {
				return err
			}
			for _, k := range keys {
				b := mb.Bucket(k)
				v := fn(string(ch), k, bytes.Clone(b.Get(chunkKey)))
				if err := b.Put(chunkKey, v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// TestChunkChecksum: a byte flipped inside a stored chunk is found on read,
// named (file, channel, offsets), never served; the log reports the fault;
// other channels still read.
func TestChunkChecksum(t *testing.T) {
	path := filepath.Join(t.TempDir(), "channels.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	next := appendN(t, l, 2, "a", 10, t0)
	next = appendN(t, l, next, "a", 10, t0)
	appendN(t, l, next, "b", 10, t0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	editChunks(t, path, func(ch string, k, v []byte) []byte {
		if v[0] != chunkV2 {
			t.Fatalf("chunk %s/%d is version %d, want %d", ch, u64(k), v[0], chunkV2)
		}
		if ch == "a" && u64(k) == 11 {
			v[chunkHeader+3] ^= 0x20 // inside the data of message 11
		}
		return v
	})

	l, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Fault(); err != nil {
		t.Fatalf("Fault before any read: %v", err)
	}
	// The first chunk still reads.
	if _, msgs, err := l.Read("a", 1, 10); err != nil || len(msgs) != 10 {
		t.Fatalf("Read(a, 1, 10) = %d messages, %v", len(msgs), err)
	}
	for _, from := range []uint64{11, 15, 1} {
		_, msgs, err := l.Read("a", from, 100)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Read(a, %d) = %d messages, %v; want ErrCorrupt", from, len(msgs), err)
		}
		for _, want := range []string{path, "read a from", "chunk at offset 11", "checksum"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	if f := l.Fault(); !errors.Is(f, ErrCorrupt) || !strings.Contains(f.Error(), path) {
		t.Errorf("Fault = %v, want ErrCorrupt naming %s", f, path)
	}
	if _, msgs := readAll(t, l, "b"); len(msgs) != 10 {
		t.Errorf("channel b reads %d messages", len(msgs))
	}
}

// toLayout3 rewrites a log file as layout 3 wrote it: chunks without
// checksums (chunkV1), sys/layout 3.
func toLayout3(t *testing.T, path string) {
	t.Helper()
	editChunks(t, path, func(_ string, _, v []byte) []byte {
		v[0] = chunkV1
		return v[:len(v)-chunkCRC]
	})
	writeBolt(t, path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSys).Put(keyLayout, be(layoutNoChecksums))
	})
}

// TestLayout3Read: a file of layout 3 (no checksums) opens, is marked
// layout 4, reads as before, and its new chunks carry checksums beside the
// old ones.
func TestLayout3Read(t *testing.T) {
	path := filepath.Join(t.TempDir(), "three.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	next := appendN(t, l, 2, "a", 10, t0)
	next = appendN(t, l, next, "a", 10, t0)
	before := dump(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	toLayout3(t, path)

	l, err := Open(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatalf("Open of a layout 3 file: %v", err)
	}
	defer func() { l.Close() }()
	sameDump(t, "layout 3, opened", logical(dump(t, l)), logical(before))
	appendN(t, l, next, "a", 10, t0)
	if _, msgs := readAll(t, l, "a"); !slices.Equal(offsets(msgs), span(1, 30)) {
		t.Fatalf("channel a reads %v", offsets(msgs))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var versions []byte
	editChunks(t, path, func(_ string, _, v []byte) []byte {
		versions = append(versions, v[0])
		return v
	})
	if !slices.Equal(versions, []byte{chunkV1, chunkV1, chunkV2}) {
		t.Errorf("chunk versions %v, want the two old ones and a new one", versions)
	}
	writeBolt(t, path, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSys).Get(keyLayout); u64(v) != layoutVersion {
			t.Errorf("sys/layout after opening a layout 3 file = %x, want %d", v, layoutVersion)
		}
		return nil
	})
}

// TestZeroedPage zeroes each 4 KiB page of a real log file in turn and
// reopens it: Open refuses it naming the file and ErrCorrupt, or every read
// gives the stored messages or ErrCorrupt naming the file. Never a message
// with other data, a gap, or fewer messages than the read should give
// without an error.
func TestZeroedPage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "channels.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	want := map[string][]string{} // channel -> data of offset i+1
	next := uint64(2)
	chans := []string{"a", "b", "c", "d"}
	for round := range 6 {
		mustUpdate(t, l, next, func(tx *Tx) error {
			for _, ch := range chans {
				for i := range 8 {
					data := fmt.Sprintf("%q", strings.Repeat(fmt.Sprintf("%s%d.%d ", ch, round, i), 100+len(want[ch])%7))
					want[ch] = append(want[ch], data)
					mustAppend(t, tx, ch, fmt.Sprintf("id-%s-%d-%d", ch, round, i), data, t0.Add(time.Duration(round)*time.Second))
				}
			}
			return nil
		})
		next++
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	refused, found := 0, 0
	for p := 0; p*page < len(raw); p++ {
		damaged := bytes.Clone(raw)
		clear(damaged[p*page : (p+1)*page])
		if bytes.Equal(damaged, raw) {
			continue
		}
		dpath := filepath.Join(dir, fmt.Sprintf("zeroed-%d.db", p))
		if err := os.WriteFile(dpath, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		dl, err := Open(Config{Path: dpath, NoSync: true})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), dpath) {
				t.Errorf("page %d zeroed: Open: %v; want ErrCorrupt naming the file", p, err)
			}
			refused++
			continue
		}
		bad := false
		for _, ch := range chans {
			info, msgs, err := dl.Read(ch, 1, 1<<20)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), dpath) {
					t.Errorf("page %d zeroed: Read(%s): %v; want ErrCorrupt naming the file", p, ch, err)
				}
				bad = true
				continue
			}
			// An older meta page may hold an earlier state: fewer messages,
			// but the ones it has are right and dense.
			if info.Next > uint64(len(want[ch]))+1 || uint64(len(msgs)) != info.Next-info.First {
				t.Errorf("page %d zeroed: channel %s: %d messages for [%d, %d)", p, ch, len(msgs), info.First, info.Next)
			}
			for i, m := range msgs {
				if m.Offset != info.First+uint64(i) || m.Offset > uint64(len(want[ch])) || string(m.Data) != want[ch][m.Offset-1] {
					t.Errorf("page %d zeroed: channel %s: message %d is offset %d, %.20q", p, ch, i, m.Offset, m.Data)
					break
				}
			}
		}
		if bad {
			found++
			if dl.Fault() == nil {
				t.Errorf("page %d zeroed: reads failed but Fault is nil", p)
			}
		}
		if err := dl.Close(); err != nil {
			t.Errorf("page %d zeroed: Close: %v", p, err)
		}
		os.Remove(dpath)
	}
	t.Logf("%d pages: %d refused at Open, %d found on read", len(raw)/page, refused, found)
	if refused == 0 || found == 0 {
		t.Errorf("expected some zeroed pages to be refused at Open and some found on read")
	}
}

// TestDamagedMovedAside: a log whose caller rebuilds it (DeferSync) moves a
// damaged file aside at Open and starts empty, whether the damage is found
// by Open's page check or was found by a read before a restart.
func TestDamagedMovedAside(t *testing.T) {
	build := func(t *testing.T) (string, []byte) {
		path := filepath.Join(t.TempDir(), "channels.db")
		l, err := Open(Config{Path: path, DeferSync: true})
		if err != nil {
			t.Fatal(err)
		}
		mustInit(t, l)
		next := appendN(t, l, 2, "a", 10, t0)
		appendN(t, l, next, "b", 10, t0)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return path, raw
	}
	reopen := func(t *testing.T, path string, raw []byte) {
		t.Helper()
		l, err := Open(Config{Path: path, DeferSync: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer l.Close()
		if !l.Rebuilt() || l.Applied() != 0 {
			t.Errorf("Rebuilt = %v, Applied = %d; want a new empty log", l.Rebuilt(), l.Applied())
		}
		if aside, err := os.ReadFile(path + ".damaged"); err != nil || (raw != nil && !bytes.Equal(aside, raw)) {
			t.Errorf("%s.damaged: %v; want the damaged file as it was", path, err)
		}
	}

	t.Run("pages", func(t *testing.T) {
		path, raw := build(t)
		// Find a page whose zeroing Open's check finds.
		for p := 2; p*4096 < len(raw); p++ {
			damaged := bytes.Clone(raw)
			clear(damaged[p*4096 : (p+1)*4096])
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			if checkPages(path) != nil {
				reopen(t, path, damaged)
				return
			}
		}
		t.Fatal("no zeroed page was found by checkPages")
	})
	t.Run("read", func(t *testing.T) {
		path, _ := build(t)
		editChunks(t, path, func(ch string, _, v []byte) []byte {
			if ch == "a" {
				v[chunkHeader+2] ^= 1
			}
			return v
		})
		l, err := Open(Config{Path: path, DeferSync: true})
		if err != nil {
			t.Fatal(err)
		}
		if l.Rebuilt() {
			t.Fatal("Open moved aside a file whose pages are sound")
		}
		if _, _, err := l.Read("a", 1, 10); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Read: %v, want ErrCorrupt", err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		reopen(t, path, nil) // Open wrote to it since
	})
}

// TestCutShortFile: a log file cut short after a clean close (a copy that
// stopped early, a file system that lost its tail) is found at Open, for
// every cut: refused naming the file, or, by a log whose caller rebuilds
// it (DeferSync, as hubs open it), moved aside so that the hub rebuilds it.
// Never opened with some of its messages missing.
func TestCutShortFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "channels.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	next := uint64(2)
	for _, ch := range []string{"a", "b", "c", "d"} {
		for range 3 {
			next = appendN(t, l, next, ch, 40, t0)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	var cuts []int
	for n := len(raw) - page; n > 0; n -= page {
		cuts = append(cuts, n)
	}
	cuts = append(cuts, len(raw)-1, len(raw)/2+123, page+17, 100)
	for _, n := range cuts {
		cpath := filepath.Join(dir, fmt.Sprintf("cut-%d.db", n))
		if err := os.WriteFile(cpath, raw[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if cl, err := Open(Config{Path: cpath, NoSync: true}); err == nil {
			cl.Close()
			t.Errorf("cut to %d of %d bytes: Open succeeded", n, len(raw))
		} else if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), cpath) {
			t.Errorf("cut to %d of %d bytes: Open: %v; want ErrCorrupt naming the file", n, len(raw), err)
		}
		rl, err := Open(Config{Path: cpath, DeferSync: true})
		if err != nil {
			t.Errorf("cut to %d of %d bytes: Open with DeferSync: %v", n, len(raw), err)
			continue
		}
		if !rl.Rebuilt() || rl.Applied() != 0 {
			t.Errorf("cut to %d of %d bytes: Rebuilt %v, Applied %d; want a new empty log", n, len(raw), rl.Rebuilt(), rl.Applied())
		}
		if err := rl.Close(); err != nil {
			t.Fatal(err)
		}
		if aside, err := os.ReadFile(cpath + ".damaged"); err != nil || !bytes.Equal(aside, raw[:n]) {
			t.Errorf("cut to %d of %d bytes: %s.damaged: %v; want the cut file as it was", n, len(raw), cpath, err)
		}
	}
	t.Logf("%d bytes, %d cuts", len(raw), len(cuts))
}
