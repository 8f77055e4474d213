package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/wire"
)

// TestPublishConcurrentDense publishes from many goroutines through the
// leader and both followers to one channel: the offsets handed out are
// exactly 1..N, and every hub serves all N messages with the right data.
func TestPublishConcurrentDense(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	hubs := append([]*hub{l}, c.followers(l)...)

	const (
		channel    = "room/a:b@c"
		publishers = 200
		each       = 5
		n          = publishers * each
	)
	var (
		mu       sync.Mutex
		byOffset = map[uint64]string{}
		wg       sync.WaitGroup
	)
	for g := range publishers {
		wg.Go(func() {
			// Each publisher starts at its own hub; on a retry it moves on.
			targets := apis(hubs[g%3:]...)
			targets = append(targets, apis(hubs[:g%3]...)...)
			for i := range each {
				data := fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)
				res, ok := c.publishRetry(targets, channel, data, fmt.Sprintf("g%d-%d", g, i))
				if !ok {
					return
				}
				if res.Channel != channel || res.Epoch == "" {
					t.Errorf("publish %s: answer %+v", data, res)
				}
				mu.Lock()
				if prev, dup := byOffset[res.Offset]; dup {
					t.Errorf("offset %d handed out twice: %s and %s", res.Offset, prev, data)
				}
				byOffset[res.Offset] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	offsets := make([]uint64, 0, len(byOffset))
	for off := range byOffset {
		offsets = append(offsets, off)
	}
	slices.Sort(offsets)
	if len(offsets) != n || offsets[0] != 1 || offsets[n-1] != n {
		t.Fatalf("offsets are not 1..%d: %d of them, from %d to %d", n, len(offsets), offsets[0], offsets[len(offsets)-1])
	}

	var epoch string
	for _, h := range c.hubs {
		var got wire.MessagesResponse
		eventually(t, 10*time.Second, func() error {
			var err error
			got, err = c.readAll(h.api, channel)
			if err == nil && len(got.Messages) != n {
				err = fmt.Errorf("%s has %d of %d messages", h.id, len(got.Messages), n)
			}
			return err
		})
		checkDense(t, h.id, got.Messages, 1, n)
		if got.First != 1 || got.Next != n+1 {
			t.Errorf("%s: first=%d next=%d, want 1 and %d", h.id, got.First, got.Next, n+1)
		}
		for _, m := range got.Messages {
			if string(m.Data) != byOffset[m.Offset] {
				t.Fatalf("%s: offset %d holds %s, the publish of %s got it", h.id, m.Offset, m.Data, byOffset[m.Offset])
			}
			if m.Time.IsZero() {
				t.Fatalf("%s: offset %d has no time", h.id, m.Offset)
			}
		}
		if epoch == "" {
			epoch = got.Epoch
		}
		if got.Epoch == "" || got.Epoch != epoch {
			t.Errorf("%s: epoch %q, another hub says %q", h.id, got.Epoch, epoch)
		}
	}
}

// TestPublishChannelNames checks that names with '/', ':', '@' and the
// other allowed characters work in the URL path, escaped or not, and that
// the channels stay apart.
func TestPublishChannelNames(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]
	names := []string{
		"a/b/c", "x:y", "user@host", "mix/a:b@c-d_e.f", "a", "A-Z_0.9",
		"deep/er/and/deeper/still",
		// Names that a path cleaner would mangle. Clients may escape '/'
		// as %2F (and '.' as %2E), which the API undoes.
		"a//b", "dot/./x", "up/../x", "trailing/", "/leading", ".", "..",
	}
	for i, name := range names {
		for j := range 3 {
			via := []string{l.api, f.api}[j%2]
			data := fmt.Sprintf(`{"name":%q,"j":%d}`, name, j)
			res, ok := c.publishRetry([]string{via}, name, data, fmt.Sprintf("%d-%d", i, j))
			if !ok {
				t.FailNow()
			}
			if res.Offset != uint64(j+1) || res.Channel != name {
				t.Fatalf("publish %d to %q: %+v, want offset %d", j, name, res, j+1)
			}
		}
	}
	for _, h := range c.hubs {
		for _, name := range names {
			eventually(t, 10*time.Second, func() error {
				m, status, raw := c.messages(h.api, escapeChannel(name), 1, 10)
				if status != 200 {
					return fmt.Errorf("%s: read %q: %d %s", h.id, name, status, raw)
				}
				if len(m.Messages) != 3 {
					return fmt.Errorf("%s: %q has %d messages, want 3", h.id, name, len(m.Messages))
				}
				for j, msg := range m.Messages {
					var d struct {
						Name string
						J    int
					}
					if err := json.Unmarshal(msg.Data, &d); err != nil || d.Name != name || d.J != j || msg.Offset != uint64(j+1) {
						t.Fatalf("%s: %q offset %d holds %s", h.id, name, msg.Offset, msg.Data)
					}
				}
				return nil
			})
		}
		// Unescaped too: the path is not cleaned, so "up/../x" is that
		// channel and not "x".
		for _, name := range names {
			m, status, raw := c.messages(h.api, name, 1, 10)
			if status != 200 || len(m.Messages) != 3 || !strings.Contains(string(m.Messages[0].Data), fmt.Sprintf("%q", name)) {
				t.Errorf("%s: unescaped read of %q: %d %s", h.id, name, status, raw)
			}
		}
	}
}

// escapeChannel escapes a channel name for a URL path: '/' as %2F, and '.'
// as %2E so that "." and ".." are not taken for path segments to clean.
func escapeChannel(name string) string {
	return strings.ReplaceAll(url.PathEscape(name), ".", "%2E")
}

// TestPublishIdempotent checks guarantee 4 across hubs: the same id on the
// same channel is stored once and answered with the first offset, whether
// the retry goes to a follower or the leader; the same id on another
// channel is independent.
func TestPublishIdempotent(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]

	first, ok := c.publishRetry([]string{f.api}, "orders", `{"n":1}`, "key-1")
	if !ok {
		t.FailNow()
	}
	if first.Offset != 1 {
		t.Fatalf("first publish: offset %d, want 1", first.Offset)
	}
	for _, via := range []*hub{l, f, c.followers(l)[1]} {
		r, ok := c.publishRetry([]string{via.api}, "orders", `{"n":"retry"}`, "key-1")
		if ok && (r.Offset != first.Offset || !r.Duplicate || r.Epoch != first.Epoch) {
			t.Errorf("retry via %s: %+v, want offset %d duplicate", via.id, r, first.Offset)
		}
	}
	// Other ids are new messages; the same id on another channel is
	// independent. (Duplicate may be true here if publishRetry had to
	// retry one whose first try was stored: the offsets tell.)
	if r, _ := c.publishRetry([]string{l.api}, "orders", `{"n":2}`, "key-2"); r.Offset != 2 {
		t.Errorf("key-2: %+v, want offset 2", r)
	}
	if r, _ := c.publishRetry([]string{f.api}, "orders", `{"n":3}`, "key-3"); r.Offset != 3 {
		t.Errorf("key-3: %+v, want offset 3", r)
	}
	if r, _ := c.publishRetry([]string{f.api}, "invoices", `{"n":1}`, "key-1"); r.Offset != 1 {
		t.Errorf("key-1 on another channel: %+v, want offset 1", r)
	}

	// Many concurrent publishes of one id, through every hub: one offset,
	// one message.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		offsets = map[uint64]int{}
		fresh   int
	)
	for g := range 60 {
		wg.Go(func() {
			r, ok := c.publishRetry([]string{c.hubs[g%3].api}, "orders", fmt.Sprintf(`{"g":%d}`, g), "key-burst")
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			offsets[r.Offset]++
			if !r.Duplicate {
				fresh++
			}
		})
	}
	wg.Wait()
	// One answer says "not a duplicate", unless that one was lost to an
	// election and retried.
	if len(offsets) != 1 || offsets[4] != 60 || fresh > 1 {
		t.Errorf("burst of one id: offsets %v, %d not duplicates; want all at 4 and one not a duplicate", offsets, fresh)
	}

	want := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}
	for _, h := range c.hubs {
		eventually(t, 10*time.Second, func() error {
			got, err := c.readAll(h.api, "orders")
			if err != nil {
				return err
			}
			if len(got.Messages) != 4 || got.Next != 5 {
				return fmt.Errorf("%s: orders has %d messages, next %d; want 4 and 5", h.id, len(got.Messages), got.Next)
			}
			checkDense(t, h.id, got.Messages, 1, 4)
			for i, w := range want {
				if string(got.Messages[i].Data) != w {
					t.Fatalf("%s: offset %d holds %s, want %s", h.id, i+1, got.Messages[i].Data, w)
				}
			}
			return nil
		})
	}
}

// TestGroupCommitBatches checks that concurrent publishes share Raft
// entries: the leader's comet_batch_messages histogram averages more than
// one message per entry. It asserts no timings.
func TestGroupCommitBatches(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	changes := l.node.LeaderChanges()
	before := c.metrics(l.api)

	const publishers, each = 256, 4
	var wg sync.WaitGroup
	for g := range publishers {
		wg.Go(func() {
			for i := range each {
				c.publishRetry([]string{l.api}, fmt.Sprintf("batch-%d", g%8), `"x"`, fmt.Sprintf("%d-%d", g, i))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	after := c.metrics(l.api)
	if !l.node.IsLeader() || l.node.LeaderChanges() != changes {
		t.Skip("leadership moved during the test (a loaded machine); the histogram is split between hubs")
	}
	count := after["comet_batch_messages_count"] - before["comet_batch_messages_count"]
	sum := after["comet_batch_messages_sum"] - before["comet_batch_messages_sum"]
	if sum < publishers*each { // retries after an election may add some
		t.Errorf("comet_batch_messages_sum grew by %v, want at least %d", sum, publishers*each)
	}
	if count <= 0 || sum/count <= 1 {
		t.Errorf("%v messages in %v entries: no batching", sum, count)
	}
	multi := after["comet_batch_messages_count"] - after[`comet_batch_messages_bucket{le="1"}`]
	if multi <= 0 {
		t.Errorf("no entry held more than one message: %v", after)
	}
	t.Logf("%v messages in %v entries (%.1f per entry)", sum, count, sum/count)
	if ok := after[`comet_publish_total{result="ok"}`] - before[`comet_publish_total{result="ok"}`]; ok < publishers*each {
		t.Errorf("comet_publish_total{result=\"ok\"} grew by %v, want at least %d", ok, publishers*each)
	}
}

// TestPublishAsyncOrder: publishes queued one after another by one caller,
// without waiting for their acks, get offsets in the order of the calls,
// and every callback is called once; a bad one is refused at once. The
// order holds while the leader stays (PublishAsync forwards what meets a
// change of leader, which may then land after later ones): on a machine
// so loaded that an election happens during a round, the round is run
// again, up to 5 times.
func TestPublishAsyncOrder(t *testing.T) {
	c := newCluster3(t)
	for round := 1; ; round++ {
		l := c.leader()
		changes := l.node.LeaderChanges()
		ch := fmt.Sprintf("ordered-%d", round)
		offsets := publishAsyncInOrder(t, l, ch, 2000)
		if l.node.LeaderChanges() != changes || c.leader() != l {
			if round == 5 {
				t.Fatalf("the leader changed during each of %d rounds", round)
			}
			t.Logf("round %d: the leader changed meanwhile; again", round)
			continue
		}
		for i, off := range offsets {
			if off != uint64(i+1) {
				t.Fatalf("publish %d got offset %d, want %d (call order)", i, off, i+1)
			}
		}
		msgs, err := c.readAll(l.api, ch)
		if err != nil {
			t.Fatal(err)
		}
		checkDense(t, ch, msgs.Messages, 1, uint64(len(offsets)))
		for _, m := range msgs.Messages {
			if want := fmt.Sprintf(`{"i":%d}`, m.Offset-1); string(m.Data) != want {
				t.Fatalf("offset %d holds %s, want %s", m.Offset, m.Data, want)
			}
		}
		return
	}
}

// publishAsyncInOrder queues n publishes to ch on l one after another, and
// a bad one, and returns the offset each got.
func publishAsyncInOrder(t *testing.T, l *hub, ch string, n int) []uint64 {
	t.Helper()
	type answer struct {
		i   int
		res wire.PublishResponse
		err error
	}
	answers := make(chan answer, n+1)
	ctx := context.Background()
	for i := range n {
		l.svc.PublishAsync(ctx, ch, json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("%s-k%d", ch, i),
			func(res wire.PublishResponse, err error) { answers <- answer{i, res, err} })
	}
	l.svc.PublishAsync(ctx, "bad channel!", json.RawMessage(`1`), "", func(res wire.PublishResponse, err error) {
		answers <- answer{-1, res, err}
	})
	offsets := make([]uint64, n)
	for range n + 1 {
		select {
		case a := <-answers:
			switch {
			case a.i < 0:
				if !errors.Is(a.err, broker.ErrBadRequest) {
					t.Errorf("bad channel: %v, want ErrBadRequest", a.err)
				}
			case a.err != nil:
				t.Fatalf("publish %d: %v", a.i, a.err)
			case offsets[a.i] != 0:
				t.Fatalf("publish %d answered twice", a.i)
			default:
				offsets[a.i] = a.res.Offset
			}
		case <-time.After(20 * time.Second):
			t.Fatal("not every publish was answered within 20s")
		}
	}
	return offsets
}

// TestPublishAsyncFollower: on a follower, PublishAsync forwards to the
// leader and answers with the stored offset.
func TestPublishAsyncFollower(t *testing.T) {
	c := newCluster3(t)
	f := c.followers(c.leader())[0]
	done := make(chan error, 1)
	var got wire.PublishResponse
	f.svc.PublishAsync(context.Background(), "via-follower", json.RawMessage(`"x"`), "k1", func(res wire.PublishResponse, err error) {
		got = res
		done <- err
	})
	select {
	case err := <-done:
		if err != nil || got.Offset != 1 || got.Channel != "via-follower" {
			t.Fatalf("answer %+v, %v", got, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer within 20s")
	}
}

// TestPublishAsyncClose: publishes racing with Close are each answered
// once, stored or refused as unavailable; none is left waiting.
func TestPublishAsyncClose(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	var (
		calls, answered atomic.Int64
		odd             atomic.Value
		wg              sync.WaitGroup
		stop            = make(chan struct{})
	)
	for range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				l.svc.PublishAsync(context.Background(), "closing", json.RawMessage(`1`), "", func(_ wire.PublishResponse, err error) {
					// Stored, or refused as a closing hub refuses (it may
					// also have handed leadership over, and not know the
					// next leader yet): an error that says retry.
					if err != nil && broker.ErrorCode(err) != wire.CodeUnavailable {
						odd.CompareAndSwap(nil, err.Error())
					}
					answered.Add(1)
				})
			}
		})
	}
	waitFor(t, 10*time.Second, "some publishes", func() bool { return answered.Load() > 500 })
	l.svc.Close()
	close(stop)
	wg.Wait()
	waitFor(t, 10*time.Second, "every publish answered", func() bool { return answered.Load() == calls.Load() })
	if e := odd.Load(); e != nil {
		t.Errorf("a publish failed with %v", e)
	}
}

// TestPublishAsyncChains: answers that publish again, with a queue smaller
// than the publishers, neither stall the service nor its Close: chains of
// publishes, each started from the previous one's answer, all complete, and
// Close returns while chains are still going.
func TestPublishAsyncChains(t *testing.T) {
	c := newCluster3(t, func(cfg *broker.Config) { cfg.QueueSize, cfg.MaxInflight = 4, 1 })
	l := c.leader()
	const chains, each = 32, 20
	var (
		done     atomic.Int64
		failed   atomic.Value
		answered atomic.Int64
	)
	// A leader change on a loaded machine (the tests' Raft timeouts are
	// short) answers publishes unavailable: a chain sends that one again
	// with its id, as a client would, a bounded number of times.
	var retries atomic.Int64
	var step func(chain, i int, limit int)
	step = func(chain, i, limit int) {
		l.svc.PublishAsync(context.Background(), fmt.Sprintf("chain.%d", chain), json.RawMessage(`1`), fmt.Sprintf("c%d-%d", chain, i),
			func(_ wire.PublishResponse, err error) {
				answered.Add(1)
				if err != nil {
					if limit > 0 && broker.ErrorCode(err) == wire.CodeUnavailable && retries.Add(1) <= 1000 {
						time.AfterFunc(20*time.Millisecond, func() { step(chain, i, limit) })
						return
					}
					if limit > 0 {
						failed.CompareAndSwap(nil, err.Error())
					}
					return
				}
				if limit > 0 && i+1 == limit {
					done.Add(1)
					return
				}
				step(chain, i+1, limit) // limit 0: until the service closes
			})
	}
	for ch := range chains {
		step(ch, 0, each)
	}
	waitFor(t, 30*time.Second, "every chain to complete", func() bool { return done.Load() == chains || failed.Load() != nil })
	if e := failed.Load(); e != nil {
		t.Fatalf("a publish failed: %v", e)
	}
	// Endless chains, then Close.
	before := answered.Load()
	for ch := range chains {
		step(chains+ch, 0, 0)
	}
	waitFor(t, 10*time.Second, "the endless chains to run", func() bool { return answered.Load() > before+200 })
	closed := make(chan struct{})
	go func() { l.svc.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return within 20s while answers published again")
	}
}

// TestPublishAsyncLeaderMoves: async publishes under way while leadership
// moves are each answered once, stored or "unavailable"; those answered
// with an offset are stored there, once, and are on the leader after.
func TestPublishAsyncLeaderMoves(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	type answer struct {
		i   int
		res wire.PublishResponse
		err error
	}
	const n = 3000
	answers := make(chan answer, n)
	moved := make(chan error, 1)
	for i := range n {
		if i == n/3 {
			// The first third stored, then the move while the rest go.
			waitFor(t, 20*time.Second, "the first third answered", func() bool { return len(answers) == n/3 })
			// On a loaded machine a transfer can time out (the target did
			// not win in time): try again, unless the lead has left l
			// anyway, which is what this test needs.
			go func() {
				deadline := time.Now().Add(30 * time.Second)
				for {
					err := l.node.TransferLeadership()
					if err != nil && !l.node.IsLeader() {
						err = nil // the lead left l all the same
					}
					if err == nil || time.Now().After(deadline) {
						moved <- err
						return
					}
				}
			}()
		}
		l.svc.PublishAsync(context.Background(), "moving", json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("k%d", i),
			func(res wire.PublishResponse, err error) { answers <- answer{i, res, err} })
	}
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	byOffset := map[uint64]int{}
	stored := 0
	for range n {
		select {
		case a := <-answers:
			if a.err != nil {
				if broker.ErrorCode(a.err) != wire.CodeUnavailable {
					t.Errorf("publish %d: %v", a.i, a.err)
				}
				continue
			}
			if prev, dup := byOffset[a.res.Offset]; dup {
				t.Fatalf("offset %d answered to publishes %d and %d", a.res.Offset, prev, a.i)
			}
			byOffset[a.res.Offset] = a.i
			stored++
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d publishes unanswered after 30s", n-len(byOffset), n)
		}
	}
	// Publishes refused while no leader is known say "unavailable" (retry).
	// On a quiet machine those before the move are all stored; on a loaded
	// one leadership may flap (tens of elections with the tests' 200 ms
	// timeouts) and refuse some of them too, so ask only that some were.
	if stored == 0 {
		t.Fatalf("none of %d publishes stored", n)
	}
	t.Logf("%d of %d publishes stored, %d leader changes seen by the old leader", stored, n, l.node.LeaderChanges())
	// On the leader now (after some flapping under load it may be the old
	// one again), once it has applied what it committed.
	eventually(t, 10*time.Second, func() error {
		msgs, err := c.readAll(c.leader().api, "moving")
		if err != nil {
			return err
		}
		found := 0
		for _, m := range msgs.Messages {
			if i, ok := byOffset[m.Offset]; ok {
				if want := fmt.Sprintf(`{"i":%d}`, i); string(m.Data) != want {
					t.Fatalf("offset %d holds %s, answered to %s", m.Offset, m.Data, want)
				}
				found++
			}
		}
		if found != len(byOffset) {
			return fmt.Errorf("%d of %d acknowledged publishes on the leader", found, len(byOffset))
		}
		return nil
	})
}
