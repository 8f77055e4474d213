package gateway

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
