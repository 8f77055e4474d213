package broker

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/comethq/comet/raft"
)

// Bounds of the activity the admin view ranks channels by (see activity).
const (
	activityWindow      = 10 * time.Second
	activityMaxChannels = 10_000
)

// activity counts the messages this hub applies, in all and per channel
// over the last one to two activityWindows, for the admin view's publish
// rate and busiest channels. It costs a map update per run of messages of
// one channel in an applied batch, and memory for at most
// activityMaxChannels channels per window: past that, the messages of new
// channels are counted in all but not per channel until the window turns.
type activity struct {
	mu        sync.Mutex
	total     uint64
	cur, prev map[string]uint64
	curStart  time.Time
	prevStart time.Time // zero: no previous window
}

func newActivity() *activity {
	return &activity{cur: map[string]uint64{}, prev: map[string]uint64{}, curStart: time.Now()}
}

// turnLocked starts a new window when the current one is over.
func (a *activity) turnLocked(now time.Time) {
	if now.Sub(a.curStart) < activityWindow {
		return
	}
	if now.Sub(a.curStart) >= 2*activityWindow {
		// Nothing at all for a whole window: both are stale.
		clear(a.cur)
		clear(a.prev)
		a.prevStart, a.curStart = time.Time{}, now
		return
	}
	a.prev, a.cur = a.cur, a.prev
	clear(a.cur)
	a.prevStart, a.curStart = a.curStart, now
}

// add counts the messages of events.
func (a *activity) add(events []raft.Event) {
	if len(events) == 0 {
		return
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.turnLocked(now)
	for i := 0; i < len(events); {
		ch := events[i].Channel
		j, n := i, uint64(0)
		for j < len(events) && events[j].Channel == ch {
			if events[j].Offset != 0 { // 0: a stream's state changed, not a message
				n++
			}
			j++
		}
		a.total += n
		if c, ok := a.cur[ch]; n > 0 && (ok || len(a.cur) < activityMaxChannels) {
			a.cur[ch] = c + n
		}
		i = j
	}
}

// count returns how many messages were applied since start.
func (a *activity) count() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// channelCount is a channel's messages in the windows counted.
type channelCount struct {
	channel string
	n       uint64
}

// busiest returns the n channels with the most messages in the windows
// counted (most first, then by name), the total applied since start, and
// the span the counts cover.
func (a *activity) busiest(n int) ([]channelCount, uint64, time.Duration) {
	now := time.Now()
	a.mu.Lock()
	a.turnLocked(now)
	sum := make(map[string]uint64, len(a.cur)+len(a.prev))
	for ch, c := range a.prev {
		sum[ch] += c
	}
	for ch, c := range a.cur {
		sum[ch] += c
	}
	start := a.curStart
	if !a.prevStart.IsZero() {
		start = a.prevStart
	}
	total := a.total
	a.mu.Unlock()
	out := make([]channelCount, 0, len(sum))
	for ch, c := range sum {
		out = append(out, channelCount{ch, c})
	}
	slices.SortFunc(out, func(x, y channelCount) int {
		if c := cmp.Compare(y.n, x.n); c != 0 {
			return c
		}
		return cmp.Compare(x.channel, y.channel)
	})
	return out[:min(n, len(out))], total, max(now.Sub(start), time.Millisecond)
}
