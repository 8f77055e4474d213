package gateway

import (
	"fmt"
	"testing"
)

func frame(off uint64) []byte { return []byte(fmt.Sprintf("m%d", off)) }

func checkCache(t *testing.T, c *cache, first, last uint64) {
	t.Helper()
	if got := c.first(); got != first {
		t.Fatalf("first %d, want %d", got, first)
	}
	frames, ok := c.get(first, last+1, 1<<20)
	if !ok || len(frames) != int(last-first+1) {
		t.Fatalf("get %d..%d: %d frames, ok %v", first, last, len(frames), ok)
	}
	for i, f := range frames {
		if string(f) != string(frame(first+uint64(i))) {
			t.Fatalf("frame %d is %s", first+uint64(i), f)
		}
	}
	if _, ok := c.get(last+1, last+2, 1); ok {
		t.Fatalf("get past the end succeeded")
	}
}

func TestCachePushAndBounds(t *testing.T) {
	c := &cache{maxMsgs: 5, maxBytes: 1 << 20}
	for off := uint64(1); off <= 12; off++ {
		c.push(off, frame(off))
	}
	checkCache(t, c, 8, 12)
	c.push(20, frame(20)) // not consecutive: starts over
	checkCache(t, c, 20, 20)

	b := &cache{maxMsgs: 100, maxBytes: 10} // "m1".."m9" are 2 bytes, "m10" 3
	for off := uint64(1); off <= 10; off++ {
		b.push(off, frame(off))
	}
	if b.bytes > 10 {
		t.Fatalf("%d bytes held, bound 10", b.bytes)
	}
	checkCache(t, b, 7, 10)
}

func TestCachePrepend(t *testing.T) {
	c := &cache{maxMsgs: 8, maxBytes: 1 << 20}
	var frames [][]byte
	for off := uint64(3); off <= 6; off++ {
		frames = append(frames, frame(off))
	}
	c.prepend(3, frames, 8) // empty cache, but the channel is at 8: a gap
	if c.n != 0 {
		t.Fatalf("prepended with a gap before next")
	}
	c.prepend(3, frames, 7)
	checkCache(t, c, 3, 6)
	c.push(7, frame(7))
	// Older frames that end where the cache starts; only 8 fit.
	var older [][]byte
	for off := uint64(1); off <= 2; off++ {
		older = append(older, frame(off))
	}
	c.prepend(1, older, 8)
	checkCache(t, c, 1, 7)
	c.prepend(1, older, 8) // does not end where the cache starts
	checkCache(t, c, 1, 7)
	c.push(8, frame(8))
	c.push(9, frame(9))
	checkCache(t, c, 2, 9)
	// A full cache keeps the newest: nothing older is added.
	d := &cache{maxMsgs: 3, maxBytes: 1 << 20}
	d.prepend(5, [][]byte{frame(5), frame(6), frame(7), frame(8)}, 9)
	checkCache(t, d, 6, 8)
}
