package client

import "time"

// backoff is exponential backoff with full jitter: the delay before retry n
// (from 0) is random in [0, min(max, min*2^n)].
type backoff struct {
	min, max time.Duration
	attempt  int
	rand     func(n int64) int64 // in [0, n)
}

// ceiling returns the longest delay of retry n.
func (b *backoff) ceiling(n int) time.Duration {
	d := b.min
	for i := 0; i < n && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// next returns the delay before the next retry and counts it.
func (b *backoff) next() time.Duration {
	c := b.ceiling(b.attempt)
	if b.ceiling(b.attempt+1) > c {
		b.attempt++ // stop counting once at the cap
	}
	return time.Duration(b.rand(int64(c) + 1))
}

// reset starts again from min.
func (b *backoff) reset() { b.attempt = 0 }
