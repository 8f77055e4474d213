package gateway

import "slices"

// cache keeps a channel's most recent messages as encoded frames, with
// consecutive offsets, bounded by count and bytes.
type cache struct {
	maxMsgs, maxBytes int
	ring              []cached // circular
	head, n, bytes    int
}

type cached struct {
	off   uint64
	frame []byte
}

// push appends message off; it must follow the last one (otherwise the
// cache restarts at off).
func (c *cache) push(off uint64, frame []byte) {
	if c.maxMsgs <= 0 {
		return
	}
	if c.n > 0 && c.at(c.n-1).off+1 != off {
		c.clear()
	}
	if c.ring == nil {
		c.ring = make([]cached, min(c.maxMsgs, 64))
	}
	if c.n == len(c.ring) && c.n < c.maxMsgs {
		grown := make([]cached, min(2*len(c.ring), c.maxMsgs))
		for i := 0; i < c.n; i++ {
			grown[i] = c.at(i)
		}
		c.ring, c.head = grown, 0
	}
	for c.n > 0 && (c.n >= c.maxMsgs || c.bytes+len(frame) > c.maxBytes) {
		c.bytes -= len(c.ring[c.head].frame)
		c.ring[c.head] = cached{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
	c.ring[(c.head+c.n)%len(c.ring)] = cached{off: off, frame: frame}
	c.n++
	c.bytes += len(frame)
}

func (c *cache) at(i int) cached { return c.ring[(c.head+i)%len(c.ring)] }

// first returns the lowest offset held, or 0 when empty.
func (c *cache) first() uint64 {
	if c.n == 0 {
		return 0
	}
	return c.at(0).off
}

// get returns the frames of offsets from..to-1 held, at most max of them,
// starting at from; ok is false when from is not held.
func (c *cache) get(from, to uint64, max int) (frames [][]byte, ok bool) {
	if c.n == 0 || from < c.at(0).off || from > c.at(c.n-1).off {
		return nil, false
	}
	i := int(from - c.at(0).off)
	for ; i < c.n && len(frames) < max; i++ {
		e := c.at(i)
		if e.off >= to {
			break
		}
		frames = append(frames, e.frame)
	}
	return frames, true
}

func (c *cache) clear() {
	clear(c.ring)
	c.head, c.n, c.bytes = 0, 0, 0
}

// prepend puts frames, offsets first.., before what the cache holds, when
// they end right where it starts, or, the cache being empty, where the
// channel is (next); the oldest are dropped to keep within the bounds. A
// replay read from the hubs warms the cache this way for the clients that
// resume after it.
func (c *cache) prepend(first uint64, frames [][]byte, next uint64) {
	if c.maxMsgs <= 0 || len(frames) == 0 {
		return
	}
	end := first + uint64(len(frames))
	if (c.n > 0 && c.at(0).off != end) || (c.n == 0 && end != next) {
		return
	}
	all := make([]cached, 0, min(c.maxMsgs, len(frames)+c.n))
	bytes := 0
	// Keep the newest: walk backwards from the end of the cache.
	for i := c.n - 1; i >= 0 && len(all) < c.maxMsgs; i-- {
		e := c.at(i)
		if bytes+len(e.frame) > c.maxBytes && len(all) > 0 {
			break
		}
		all, bytes = append(all, e), bytes+len(e.frame)
	}
	if len(all) == c.n { // the whole cache fits: add older frames
		for i := len(frames) - 1; i >= 0 && len(all) < c.maxMsgs && bytes+len(frames[i]) <= c.maxBytes; i-- {
			all, bytes = append(all, cached{off: first + uint64(i), frame: frames[i]}), bytes+len(frames[i])
		}
	}
	slices.Reverse(all)
	size := max(len(all), min(c.maxMsgs, 64))
	c.ring = make([]cached, size)
	copy(c.ring, all)
	c.head, c.n, c.bytes = 0, len(all), bytes
}
