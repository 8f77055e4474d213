package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/comethq/comet/wire"
)

// follow reads the hubs' commit stream until the server closes, moving to
// another hub when one fails and continuing from the last entry it
// received whole. Messages of an entry received twice (the stream resumes
// at an entry boundary) are dropped by per-channel offsets.
//
// Without a position (at start, after a reset, or while no stream has said
// where it starts), a stream is opened from now: its first line says where
// it starts, and read then has every channel cover that position (see
// Server.position).
func (s *Server) follow() {
	backoff := newBackoff(50*time.Millisecond, 2*time.Second)
	for s.ctx.Err() == nil {
		from := uint64(0) // from now
		if s.positioned.Load() {
			from = s.done.Load() + 1
		}
		r, err := s.hub.Stream(s.ctx, from)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("cannot open the commit stream", "err", err)
				s.m.upstreamErrors.Inc()
			}
			backoff.wait(s.ctx)
			continue
		}
		s.log.Info("following the commit stream", "hub", r.Hub(), "from", from)
		s.streaming.Store(true)
		s.lastLine.Store(time.Now().UnixNano())
		err = s.read(r)
		s.streaming.Store(false)
		r.Close()
		if s.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errStreamReset) {
			backoff.reset()
			continue
		}
		s.log.Warn("commit stream ended; moving on", "hub", r.Hub(), "err", err)
		s.m.upstreamErrors.Inc()
		if f, ok := s.hub.(interface{ Failed(string) }); ok {
			f.Failed(r.Hub())
		}
		backoff.wait(s.ctx)
	}
}

var errStreamReset = errors.New("commit stream reset: resyncing channels")

// fanoutBatch bounds how many stream lines are taken before their messages
// go out to subscribers.
const fanoutBatch = 1024

// read dispatches the lines of one stream until it fails. Messages reach
// subscribers in batches: the lines already received are all taken first,
// then each channel touched sends its new messages to each subscriber at
// once. When fan-out is the bottleneck (many subscribers), lines pile up
// while it runs, the next batch is larger, and each connection gets more
// messages per wake-up and per frame: throughput grows with load instead of
// the backlog.
func (s *Server) read(r StreamReader) error {
	buffered, _ := r.(interface{ Buffered() int })
	raw, _ := r.(RawStreamReader)
	var (
		dirty   []*channel
		conns   []*conn
		scratch []byte
	)
	flush := func() {
		for _, ch := range dirty {
			ch.mu.Lock()
			ch.fanoutLocked(&conns)
			ch.mu.Unlock()
		}
		clear(dirty)
		dirty = dirty[:0]
		scratch = flushAll(conns, scratch)
		clear(conns)
		conns = conns[:0]
	}
	defer flush()
	for n := 0; ; n++ {
		if len(dirty) > 0 && (buffered == nil || buffered.Buffered() == 0 || n%fanoutBatch == 0) {
			flush()
		}
		line, err := s.nextLine(r, raw)
		if err != nil {
			return err
		}
		s.lastLine.Store(time.Now().UnixNano())
		if n == 0 && !line.Reset && !s.positioned.Load() {
			s.position(line)
		}
		switch {
		case line.Reset:
			// The hub no longer holds our position: we follow from now, and
			// the next stream's first line has every tracked channel read
			// what it missed from the hubs.
			s.log.Warn("commit stream position lost; resyncing channels", "floor", line.Floor)
			s.positioned.Store(false)
			s.done.Store(0)
			return errStreamReset
		case line.Index == 0:
			if line.Applied > s.done.Load() {
				s.done.Store(line.Applied)
			}
			s.m.upstreamIndex.Set(float64(line.Applied))
		default:
			if line.Index >= s.last.Load() { // nextLine may have moved it
				s.last.Store(line.Index)
				s.m.upstreamIndex.Set(float64(line.Index))
			}
			if line.Index-1 > s.done.Load() {
				s.done.Store(line.Index - 1)
			}
			if line.Channel == "" {
				continue // a line nextLine skipped: not followed here
			}
			s.mu.Lock()
			ch := s.channels[line.Channel]
			s.mu.Unlock()
			if ch != nil && ch.onStream(line) {
				dirty = append(dirty, ch)
			}
		}
	}
}

// flushAll flushes conns (conn.flush), in parallel on up to GOMAXPROCS
// goroutines when there are many: on loopback a write system call also
// runs the receiving side's TCP, about 10 µs, so 10,000 of them in one
// goroutine would take 100 ms. It returns scratch for the next call.
func flushAll(conns []*conn, scratch []byte) []byte {
	const perShard = 256
	shards := min(runtime.GOMAXPROCS(0), (len(conns)+perShard-1)/perShard)
	if shards <= 1 {
		for _, c := range conns {
			scratch = c.flush(scratch)
		}
		return scratch
	}
	var wg sync.WaitGroup
	size := (len(conns) + shards - 1) / shards
	for len(conns) > size {
		part := conns[len(conns)-size:]
		conns = conns[:len(conns)-size]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for _, c := range part {
				buf = c.flush(buf)
			}
		}()
	}
	for _, c := range conns {
		scratch = c.flush(scratch)
	}
	wg.Wait()
	return scratch
}

// nextLine returns r's next line. Read through raw (r itself, when it can
// hand out lines undecoded), a message of a channel this gateway does not
// follow comes back as its Index alone, which is all read needs of it,
// without decoding the rest: every gateway gets every channel's messages,
// and most are of channels it has no subscriber for. As in read, s.last
// takes the index before the channel is looked up: a channel followed
// from just after the lookup starts with a read that covers s.last, so it
// gets this message from the hubs (startSyncLocked).
func (s *Server) nextLine(r StreamReader, raw RawStreamReader) (wire.StreamLine, error) {
	if raw == nil {
		return r.Next()
	}
	b, err := raw.NextRaw()
	if err != nil {
		return wire.StreamLine{}, err
	}
	if index, ch, ok := wire.PeekStreamLine(b); ok {
		if index > s.last.Load() {
			s.last.Store(index)
		}
		s.mu.Lock()
		_, followed := s.channels[string(ch)]
		s.mu.Unlock()
		if !followed {
			return wire.StreamLine{Index: index}, nil
		}
	}
	var l wire.StreamLine
	if err := json.Unmarshal(b, &l); err != nil {
		return wire.StreamLine{}, fmt.Errorf("commit stream from %s: %w", r.Hub(), err)
	}
	return l, nil
}

// position takes the first line of a stream opened from now, which says
// where the stream starts: after Applied (a heartbeat, which hubs send at
// once), or before Index (a message). Entries up to there are not on this
// stream, and a channel's read made before may not hold all of them
// either: every tracked channel must reflect them (cover), and every read
// from now on too (startSyncLocked reads s.done).
func (s *Server) position(l wire.StreamLine) {
	start := l.Applied
	if l.Index > 0 {
		start = l.Index - 1
	}
	s.done.Store(start)
	s.positioned.Store(true)
	s.m.upstreamIndex.Set(float64(start))
	s.mu.Lock()
	chans := make([]*channel, 0, len(s.channels))
	for _, ch := range s.channels {
		chans = append(chans, ch)
	}
	s.mu.Unlock()
	for _, ch := range chans {
		ch.mu.Lock()
		ch.coverLocked(start)
		ch.mu.Unlock()
	}
}

// errTooManyChannels refuses a subscription to a new channel when the
// gateway follows Config.MaxChannels and none of them is lingering.
var errTooManyChannels = errors.New("this gateway follows too many channels")

// acquire returns the state of channel name, creating it (and starting its
// first sync) if needed, and counts one more user.
func (s *Server) acquire(name string) (*channel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[name]
	if ch == nil {
		if len(s.channels) >= s.cfg.MaxChannels && !s.dropLingeringLocked() {
			return nil, errTooManyChannels
		}
		ch = newChannel(s, name)
		s.channels[name] = ch
		s.m.channels.Inc()
		ch.mu.Lock()
		ch.startSyncLocked()
		ch.mu.Unlock()
	}
	if ch.linger != nil {
		ch.linger.Stop()
		ch.linger = nil
	}
	ch.refs++
	return ch, nil
}

// dropLingeringLocked drops one channel without subscribers, if any.
func (s *Server) dropLingeringLocked() bool {
	for _, ch := range s.channels {
		if ch.refs == 0 {
			s.dropLocked(ch)
			return true
		}
	}
	return false
}

func (s *Server) dropLocked(ch *channel) {
	if ch.linger != nil {
		ch.linger.Stop()
		ch.linger = nil
	}
	delete(s.channels, ch.name)
	s.m.channels.Dec()
	ch.mu.Lock()
	ch.dropped = true
	ch.cache.clear()
	ch.held, ch.heldBytes = nil, 0
	ch.mu.Unlock()
}

// release counts one user less; the last one lets the channel linger, then
// go.
func (s *Server) release(ch *channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch.refs--
	if ch.refs > 0 || ch.dropped {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(s.cfg.Linger, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		// Only this timer's own expiry: a newer linger may have replaced it.
		if ch.refs == 0 && ch.linger == t && s.channels[ch.name] == ch {
			s.dropLocked(ch)
		}
	})
	ch.linger = t
}

// channel is what a gateway knows of one channel with subscribers: its
// position in the commit stream, recent messages, and subscribers.
type channel struct {
	s    *Server
	name string

	// Under s.mu.
	refs   int
	linger *time.Timer

	mu        sync.Mutex
	known     bool          // epoch, first and next were read from a hub
	ready     chan struct{} // closed once known
	syncing   bool          // reading from the hubs; stream lines are held
	dropped   bool
	epoch     string
	first     uint64
	next      uint64 // the offset the next message will have
	held      []wire.StreamLine
	heldBytes int
	lost      bool   // held overflowed: read again
	syncIdx   uint64 // a read must reflect at least this Raft index
	asOf      uint64 // the Raft index the channel's state reflects: older lines are in it
	cache     cache
	subs      map[*sub]struct{}
	// Messages taken (next and cache count them) but not yet sent to the
	// subscribers: see fanoutLocked.
	outOffs   []uint64
	outFrames [][]byte

	// Live stream reads waiting for the next message (waitNext): closed
	// at the next wake; waiting counts them.
	wakeC   chan struct{}
	waiting int
	changes uint64 // resets and stream state changes (changedLocked)

	// Under syncQueue.mu: the wait between this channel's sync reads.
	syncWait *backoff
}

func newChannel(s *Server, name string) *channel {
	return &channel{s: s, name: name, ready: make(chan struct{}), subs: make(map[*sub]struct{}),
		cache: cache{maxMsgs: s.cfg.CacheMessages, maxBytes: s.cfg.CacheBytes}}
}

// onStream takes one message of this channel from the commit stream. It
// reports true when the channel has messages to fan out that it had not
// before: the caller then calls fanoutLocked, after more lines maybe.
func (ch *channel) onStream(l wire.StreamLine) (fanout bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	switch {
	case ch.dropped:
	case ch.syncing:
		ch.hold(l)
	case l.Index <= ch.asOf:
		// Already in what the last read returned (an entry streamed again
		// after a failover, possibly of an older epoch).
	case l.Epoch != ch.epoch || l.Offset > ch.next:
		// A reset channel, or a gap (the stream skipped entries): read
		// what is missing from a hub that has applied this line.
		ch.startSyncLocked()
		ch.syncIdx = max(ch.syncIdx, l.Index)
		ch.hold(l)
	case l.Offset == 0:
		// Not a message: the channel's stream state changed (closed,
		// deleted): live stream readers look at the hubs again.
		ch.changedLocked()
	case l.Offset < ch.next:
		// Already had it: an entry streamed again after a failover.
	default:
		fanout = len(ch.outOffs) == 0
		ch.deliverLocked(l.Offset, ch.frame(l))
	}
	return fanout
}

func (ch *channel) hold(l wire.StreamLine) {
	if l.Offset == 0 {
		ch.changedLocked() // a state change, not a message to hold
		return
	}
	if ch.lost {
		return
	}
	if len(ch.held) >= ch.s.cfg.PendingMessages || ch.heldBytes+len(l.Data) > ch.s.cfg.CacheBytes {
		ch.held, ch.heldBytes, ch.lost = nil, 0, true
		return
	}
	ch.held = append(ch.held, l)
	ch.heldBytes += len(l.Data)
}

// deliverLocked appends message off, encoded as its frame, to the
// channel: the cache, and the messages to send to every subscriber at the
// next fanoutLocked.
func (ch *channel) deliverLocked(off uint64, frame []byte) {
	ch.cache.push(off, frame)
	ch.next = off + 1
	ch.outOffs = append(ch.outOffs, off)
	ch.outFrames = append(ch.outFrames, frame)
}

// frame encodes a stream line as the message frame clients get.
func (ch *channel) frame(l wire.StreamLine) []byte {
	return wire.AppendMessage(make([]byte, 0, len(l.Data)+len(ch.name)+48), ch.name, l.Offset, l.Data)
}

// fanoutLocked sends the messages delivered since the last call to every
// subscriber. Until then, next and the cache already count them: a
// subscription made in between replays them from the cache, and is given
// them again here, which it drops as already sent (sub.deliver). With
// flush, the connections to write to are added to it, for the caller to
// flush once ch.mu is released; without, their writers are woken.
func (ch *channel) fanoutLocked(flush *[]*conn) {
	if len(ch.outOffs) == 0 {
		return
	}
	ch.wakeLocked()
	for sb := range ch.subs {
		sb.deliver(ch.outOffs, ch.outFrames, flush)
	}
	clear(ch.outFrames)
	ch.outOffs, ch.outFrames = ch.outOffs[:0], ch.outFrames[:0]
	if cap(ch.outOffs) > fanoutBatch {
		ch.outOffs, ch.outFrames = nil, nil
	}
}

// coverLocked makes sure the channel reflects every entry up to index
// (the entries after it come from the stream): a sync under way must read
// that far, and a live channel whose last read did not is read again.
func (ch *channel) coverLocked(index uint64) {
	ch.syncIdx = max(ch.syncIdx, index)
	if !ch.syncing && ch.asOf < index {
		ch.startSyncLocked()
	}
}

// startSyncLocked starts reading the channel's state and missing messages
// from the hubs, holding stream lines meanwhile. The read must reflect
// every entry the stream gave before the channel held its lines: up to the
// last line seen, and up to where the stream started.
func (ch *channel) startSyncLocked() {
	if ch.syncing || ch.dropped {
		return
	}
	ch.syncing, ch.held, ch.heldBytes, ch.lost = true, nil, 0, false
	ch.syncIdx = max(ch.syncIdx, ch.s.last.Load(), ch.s.done.Load())
	if !ch.s.syncs.add(ch, !ch.known) {
		ch.syncing = false // closing
		return
	}
	ch.s.m.resyncs.Inc()
}

// apply takes one range read (reflecting Raft index applied) into the
// channel, then the held stream lines. It reports whether the channel is
// live again, and whether it moved at all.
func (ch *channel) apply(res Page, applied uint64) (live, progress bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	before := [2]uint64{ch.next, ch.asOf}
	beforeEpoch := ch.epoch
	defer func() {
		ch.fanoutLocked(nil)
		progress = live || before != [2]uint64{ch.next, ch.asOf} || beforeEpoch != ch.epoch
	}()
	switch {
	case !ch.known:
		ch.epoch, ch.first, ch.next, ch.known = res.Epoch, res.First, res.Next, true
		close(ch.ready)
		ch.wakeLocked()
	case res.Epoch != ch.epoch:
		// The channel's history was reset: subscribers' offsets mean
		// nothing now. They reconnect and learn it from subscribed.
		ch.s.log.Warn("channel epoch changed", "channel", ch.name, "old", ch.epoch, "new", res.Epoch)
		ch.resetLocked(res)
		ch.asOf = max(ch.asOf, applied)
		return false, true
	default:
		if res.First > ch.next {
			// Retention removed messages before we could read them:
			// subscribers would see a gap. They reconnect and learn it.
			ch.resetLocked(res)
			ch.asOf = max(ch.asOf, applied)
			return false, true
		}
		for i, off := range res.Offsets {
			if off == ch.next {
				ch.deliverLocked(off, res.Frames[i])
			}
		}
		ch.first = res.First
		if res.Next > ch.next {
			return false, true // more to read
		}
	}
	ch.asOf = max(ch.asOf, applied)
	if applied < ch.syncIdx {
		// The read is older than a position it must reflect, raised while
		// it ran (the stream started after it): read again.
		return false, false
	}
	if ch.lost {
		// Held lines overflowed: read again, up to where the stream is now.
		ch.held, ch.heldBytes, ch.lost = nil, 0, false
		ch.syncIdx = max(ch.syncIdx, ch.s.last.Load())
		return false, true
	}
	for i, l := range ch.held {
		switch {
		case l.Index <= ch.asOf:
			// In the read already.
		case l.Epoch != ch.epoch || l.Offset > ch.next:
			// A newer epoch, or a gap: read again from a hub that has
			// applied this line.
			ch.held = ch.held[i:]
			ch.syncIdx = max(ch.syncIdx, l.Index)
			return false, false
		case l.Offset == ch.next:
			ch.deliverLocked(l.Offset, ch.frame(l))
		}
	}
	ch.held, ch.heldBytes = nil, 0
	ch.syncing = false
	return true, true
}

// resetLocked starts the channel over at res: its subscribers are
// disconnected so that they resubscribe and are told what they missed.
func (ch *channel) resetLocked(res Page) {
	ch.changedLocked()
	ch.epoch, ch.first, ch.next = res.Epoch, res.First, res.First
	ch.cache.clear()
	clear(ch.outFrames)
	ch.outOffs, ch.outFrames = ch.outOffs[:0], ch.outFrames[:0]
	// Held lines of the old history, or already in the read, are dropped
	// by index when applied.
	for sb := range ch.subs {
		sb.c.close(wire.CloseResync, "channel "+ch.name+" lost messages it cannot replay: resubscribe")
	}
}

// changedLocked wakes the live stream readers to look at the hubs: the
// channel was reset, or its stream's state changed.
func (ch *channel) changedLocked() {
	ch.changes++
	ch.wakeLocked()
}

// changeCount returns how many times the channel was reset or its stream's
// state changed (changedLocked).
func (ch *channel) changeCount() uint64 {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.changes
}

// waitNext returns a channel closed once the channel has a message at or
// after next (at once if it has), or was reset, or its stream's state
// changed, and a func that ends the wait. Waiters share one channel,
// replaced at each wake: a wake costs one close whatever the number of
// live readers.
func (ch *channel) waitNext(next uint64) (<-chan struct{}, func()) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.known && ch.next > next {
		return closedChan, func() {}
	}
	if ch.wakeC == nil {
		ch.wakeC = make(chan struct{})
	}
	ch.waiting++
	return ch.wakeC, func() {
		ch.mu.Lock()
		ch.waiting--
		ch.mu.Unlock()
	}
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// cached returns the messages of the channel from offset next on that its
// cache holds (at most max of them, and about maxBytes), as stream
// messages appended to into[:0], with the channel's next offset; ok is false when the cache
// does not hold next, or the channel is in another epoch.
func (ch *channel) cached(into []wire.StreamMessage, next uint64, epoch string, max, maxBytes int) (msgs []wire.StreamMessage, chNext uint64, ok bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.known || ch.syncing || ch.epoch != epoch || ch.next <= next {
		return nil, 0, false
	}
	frames, ok := ch.cache.get(next, ch.next, max)
	if !ok || len(frames) == 0 {
		return nil, 0, false
	}
	msgs = into[:0]
	size := 0
	for i, f := range frames {
		data, ok := wire.MessageData(f)
		if !ok {
			return nil, 0, false
		}
		msgs = append(msgs, wire.StreamMessage{Offset: next + uint64(i), Data: data})
		if size += len(data); size >= maxBytes {
			break
		}
	}
	return msgs, ch.next, true
}

func (ch *channel) wakeLocked() {
	if ch.wakeC != nil {
		close(ch.wakeC)
		ch.wakeC = nil
	}
}

// backoff is an exponential wait between retries, with jitter: each wait
// is drawn between half the current step and the step, so that retries
// that failed together (every channel's sync after a reset, every
// gateway's stream when a hub goes) do not come back together.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) reset() { b.cur = b.min }

// next returns the next wait and doubles the step, up to max.
func (b *backoff) next() time.Duration {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(b.cur*2, b.max)
	return d
}

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
