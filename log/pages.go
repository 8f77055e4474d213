package log

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// checkPages walks the page tree of the bbolt file at path, as bbolt would
// find it, and returns ErrCorrupt naming the first damaged page (the
// caller names the file): a meta page
// that no valid copy replaces, or a branch or leaf page of some bucket that
// is out of the file, of the wrong type (a zeroed page), or whose elements
// point outside it. It reads only the pages of the trees (about one in a
// few hundred of a log of big chunks), not the values: the checksums of the
// chunks (chunk.go) cover those, on read.
//
// It runs before bbolt opens a log because bbolt, with no freelist stored
// (NoFreelistSync), walks the same pages at open and panics on a damaged
// one in a goroutine of its own: the process would crash without naming the
// file. It knows bbolt's on-disk format (version 2, in the byte order of
// the machines Comet runs on, little-endian), which bbolt keeps stable.
func checkPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w := &pageWalker{r: f, size: fi.Size(), seen: make(map[uint64]bool)}
	if err := w.walk(); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

// bbolt's format.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	boltPageHeader  = 16
	boltElem        = 16 // branch and leaf elements
	boltBranch      = 0x01
	boltLeaf        = 0x02
	boltBucketEntry = 0x01
	boltBucketHdr   = 16 // root page id, sequence
	boltMaxDepth    = 64 // far more than any tree of a file under 2^64 bytes
)

type pageWalker struct {
	r     io.ReaderAt
	size  int64
	ps    int64 // page size
	hwm   uint64
	seen  map[uint64]bool
	pages int // tree pages read
}

// meta reads and checks the meta page at off; ok is false for a damaged one.
func (w *pageWalker) meta(off int64) (m [boltPageHeader + 64]byte, ok bool) {
	n, _ := w.r.ReadAt(m[:], off)
	if n < len(m) {
		return m, false
	}
	b := m[boltPageHeader:]
	h := fnv.New64a()
	h.Write(b[:56])
	return m, binary.LittleEndian.Uint32(b) == boltMagic && binary.LittleEndian.Uint32(b[4:]) == boltVersion &&
		binary.LittleEndian.Uint64(b[56:]) == h.Sum64()
}

func (w *pageWalker) walk() error {
	if w.size == 0 {
		return nil // bbolt makes a new file
	}
	m0, ok0 := w.meta(0)
	var ps int64
	if ok0 {
		ps = int64(binary.LittleEndian.Uint32(m0[boltPageHeader+8:]))
	} else {
		ps = int64(os.Getpagesize())
	}
	if ps < 1024 || ps > 1<<24 {
		return fmt.Errorf("meta page 0: page size %d", ps)
	}
	w.ps = ps
	m1, ok1 := w.meta(ps)
	if ok1 && int64(binary.LittleEndian.Uint32(m1[boltPageHeader+8:])) != ps {
		ok1 = false
	}
	var m []byte
	switch {
	case ok0 && ok1:
		if binary.LittleEndian.Uint64(m1[boltPageHeader+48:]) > binary.LittleEndian.Uint64(m0[boltPageHeader+48:]) {
			m = m1[boltPageHeader:]
		} else {
			m = m0[boltPageHeader:]
		}
	case ok0:
		m = m0[boltPageHeader:]
	case ok1:
		m = m1[boltPageHeader:]
	default:
		return errors.New("both meta pages are damaged")
	}
	w.hwm = binary.LittleEndian.Uint64(m[40:])
	if int64(w.hwm) < 0 || int64(w.hwm) > w.size/ps {
		return fmt.Errorf("meta page: %d pages in a file of %d bytes (pages of %d)", w.hwm, w.size, ps)
	}
	_, err := w.tree(binary.LittleEndian.Uint64(m[16:]), 0, nil, nil)
	return err
}

// tree checks the page id and, below it, every page of its tree and of the
// trees of the buckets it holds. Its keys must be in order, and at or above
// lo and below hi (when not nil), as bbolt checks; it returns its greatest.
func (w *pageWalker) tree(id uint64, depth int, lo, hi []byte) ([]byte, error) {
	if depth > boltMaxDepth {
		return nil, fmt.Errorf("page %d: trees nest deeper than %d", id, boltMaxDepth)
	}
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d: out of the file's %d pages", id, w.hwm)
	}
	if w.seen[id] {
		return nil, fmt.Errorf("page %d: referenced twice", id)
	}
	w.seen[id] = true
	var hdr [boltPageHeader]byte
	if _, err := w.r.ReadAt(hdr[:], int64(id)*w.ps); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if binary.LittleEndian.Uint64(hdr[:]) != id {
		return nil, fmt.Errorf("page %d: header says page %d (a zeroed or misplaced page)", id, binary.LittleEndian.Uint64(hdr[:]))
	}
	if overflow >= w.hwm-id {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the file's %d pages", id, overflow, w.hwm)
	}
	// Read the first page, or as much of the page and its overflow as the
	// element headers take; keys and values are only checked to lie in it,
	// and the bucket headers among the values read on demand.
	flags := binary.LittleEndian.Uint16(hdr[8:])
	count := int(binary.LittleEndian.Uint16(hdr[10:]))
	total := int64(overflow+1) * w.ps
	p := &pageBuf{r: w.r, at: int64(id) * w.ps, size: total}
	if err := p.load(min(total, max(w.ps, int64(boltPageHeader+count*boltElem)))); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	w.pages++
	switch flags {
	case boltBranch:
		if count == 0 {
			return nil, fmt.Errorf("page %d: empty branch page", id)
		}
		return w.elements(id, p, count, depth, true, lo, hi)
	case boltLeaf:
		return w.elements(id, p, count, depth, false, lo, hi)
	default:
		return nil, fmt.Errorf("page %d: type %#x, want a branch or leaf page (a zeroed page?)", id, flags)
	}
}

// pageBuf is a page and its overflow, of which the start is read.
type pageBuf struct {
	r    io.ReaderAt
	at   int64 // where the page starts in the file
	size int64 // of the page and its overflow
	buf  []byte
}

func (p *pageBuf) load(n int64) error {
	p.buf = make([]byte, n)
	_, err := p.r.ReadAt(p.buf, p.at)
	return err
}

// bytes returns n bytes at off in the page, which the caller checked lie
// in it.
func (p *pageBuf) bytes(off, n uint64) ([]byte, error) {
	if off+n <= uint64(len(p.buf)) {
		return p.buf[off : off+n], nil
	}
	b := make([]byte, n)
	_, err := p.r.ReadAt(b, p.at+int64(off))
	return b, err
}

// elements checks the elements of the branch or leaf page p (id) and walks
// the pages they point to; it returns the greatest key below it.
func (w *pageWalker) elements(id uint64, p *pageBuf, count, depth int, branch bool, lo, hi []byte) ([]byte, error) {
	if int64(boltPageHeader+count*boltElem) > p.size {
		return nil, fmt.Errorf("page %d: %d elements do not fit in %d bytes", id, count, p.size)
	}
	prev := lo
	for i := 0; i < count; i++ {
		off := uint64(boltPageHeader + i*boltElem)
		e := p.buf[off : off+boltElem]
		var pos, ksize, vsize uint64
		if branch {
			pos, ksize = uint64(binary.LittleEndian.Uint32(e)), uint64(binary.LittleEndian.Uint32(e[4:]))
		} else {
			pos, ksize, vsize = uint64(binary.LittleEndian.Uint32(e[4:])), uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
		}
		if off+pos+ksize+vsize > uint64(p.size) {
			return nil, fmt.Errorf("page %d: element %d points outside the page", id, i)
		}
		key, err := p.bytes(off+pos, ksize)
		if err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		if c := bytes.Compare(prev, key); prev != nil && (c > 0 || (c == 0 && i > 0)) {
			return nil, fmt.Errorf("page %d: key %d out of order", id, i)
		}
		if hi != nil && bytes.Compare(key, hi) >= 0 {
			return nil, fmt.Errorf("page %d: key %d above its parent's range", id, i)
		}
		if branch {
			next := hi
			if i+1 < count {
				ne := p.buf[off+boltElem : off+2*boltElem]
				npos, nksize := uint64(binary.LittleEndian.Uint32(ne)), uint64(binary.LittleEndian.Uint32(ne[4:]))
				if off+boltElem+npos+nksize > uint64(p.size) {
					return nil, fmt.Errorf("page %d: element %d points outside the page", id, i+1)
				}
				if next, err = p.bytes(off+boltElem+npos, nksize); err != nil {
					return nil, fmt.Errorf("page %d: %w", id, err)
				}
			}
			if prev, err = w.tree(binary.LittleEndian.Uint64(e[8:]), depth+1, key, next); err != nil {
				return nil, err
			}
			continue
		}
		prev = key
		if binary.LittleEndian.Uint32(e)&boltBucketEntry == 0 {
			continue
		}
		if vsize < boltBucketHdr {
			return nil, fmt.Errorf("page %d: element %d: bucket header of %d bytes", id, i, vsize)
		}
		v, err := p.bytes(off+pos+ksize, vsize)
		if err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
		if root := binary.LittleEndian.Uint64(v); root != 0 {
			if _, err := w.tree(root, depth+1, nil, nil); err != nil {
				return nil, err
			}
			continue
		}
		if err := inlineBucket(v[boltBucketHdr:]); err != nil {
			return nil, fmt.Errorf("page %d: element %d: %w", id, i, err)
		}
	}
	return prev, nil
}

// inlineBucket checks an inline bucket's leaf page, which follows its
// bucket header. It holds no buckets of its own.
func inlineBucket(in []byte) error {
	if len(in) < boltPageHeader || binary.LittleEndian.Uint16(in[8:]) != boltLeaf {
		return errors.New("damaged inline bucket")
	}
	n := int(binary.LittleEndian.Uint16(in[10:]))
	if boltPageHeader+n*boltElem > len(in) {
		return fmt.Errorf("inline bucket of %d elements in %d bytes", n, len(in))
	}
	for j := 0; j < n; j++ {
		off := boltPageHeader + j*boltElem
		ie := in[off:]
		if uint64(off)+uint64(binary.LittleEndian.Uint32(ie[4:]))+
			uint64(binary.LittleEndian.Uint32(ie[8:]))+uint64(binary.LittleEndian.Uint32(ie[12:])) > uint64(len(in)) {
			return fmt.Errorf("inline bucket element %d points outside it", j)
		}
	}
	return nil
}
