package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// This file holds the parts of the fault tests (TestFault*) that do not
// depend on the fault: a load that publishes through hubs and gateways and
// records when and where each publish was acknowledged, subscribers, the
// checks made after healing, and the write gap.

// faultLoad publishes numbered messages, each with an id of its own,
// through hub APIs (HTTP workers, each publish to a random hub of apis)
// and through Go clients connected to gateways (one worker per client).
// An unacknowledged publish is sent again with the same id until it is
// acknowledged or the load's deadline passes.
type faultLoad struct {
	c       *cluster
	led     *ledger
	ctx     context.Context
	cancel  context.CancelFunc
	stopped chan struct{} // closed by stop: take no new publishes
	wg      sync.WaitGroup
	next    atomic.Int64

	mu       sync.Mutex
	failures []string
	stopOnce sync.Once
}

type faultLoadConfig struct {
	prefix      string   // ids are prefix-n
	channels    []string // message n goes to channels[n%len]
	apis        []string // hub APIs for the HTTP workers
	httpWorkers int
	clients     []*client.Client // one worker each, publishing through its gateway
	pace        time.Duration    // mean pause between two publishes of a worker
	deadline    time.Duration    // for the whole load
	pad         int              // when not 0, bytes of padding in each message (see bigPayload)
}

func startFaultLoad(c *cluster, led *ledger, cfg faultLoadConfig) *faultLoad {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.deadline)
	l := &faultLoad{c: c, led: led, ctx: ctx, cancel: cancel, stopped: make(chan struct{})}
	// Should the test end early, stop the workers before the processes go.
	c.t.Cleanup(func() { cancel(); l.wg.Wait() })
	worker := func(publish func(ch, id string, data []byte) (ack, error)) {
		defer l.wg.Done()
		for {
			select {
			case <-l.stopped:
				return
			case <-ctx.Done():
				return
			default:
			}
			n := int(l.next.Add(1) - 1)
			id := fmt.Sprintf("%s-%d", cfg.prefix, n)
			ch := cfg.channels[n%len(cfg.channels)]
			data := payload(id, n)
			if cfg.pad > 0 {
				data = bigPayload(id, n, cfg.pad)
			}
			led.addSent(id, ch, data)
			a, err := publish(ch, id, data)
			if err != nil {
				l.mu.Lock()
				l.failures = append(l.failures, fmt.Sprintf("%s/%s: %v", ch, id, err))
				l.mu.Unlock()
				return
			}
			a.channel, a.id, a.data, a.at = ch, id, data, time.Now()
			led.addAck(a)
			if cfg.pace > 0 {
				select {
				case <-time.After(cfg.pace/2 + rand.N(cfg.pace)):
				case <-ctx.Done():
					return
				}
			}
		}
	}
	for w := 0; w < cfg.httpWorkers; w++ {
		l.wg.Add(1)
		go worker(func(ch, id string, data []byte) (ack, error) {
			return publishUntilAcked(ctx, c, cfg.apis, ch, id, data)
		})
	}
	for _, cl := range cfg.clients {
		l.wg.Add(1)
		go worker(func(ch, id string, data []byte) (ack, error) {
			// The client sends it again with the same id until acknowledged.
			tried := time.Now()
			res, err := cl.PublishWithID(ctx, ch, id, data)
			return ack{offset: res.Offset, via: "gateway", triedAt: tried}, err
		})
	}
	return l
}

// bigPayload is payload with pad bytes of padding: the data of messages
// that fill a Raft log quickly.
func bigPayload(id string, n, pad int) json.RawMessage {
	raw, _ := json.Marshal(map[string]any{"id": id, "n": n, "pad": strings.Repeat("x", pad)})
	return raw
}

// publishUntilAcked sends one publish to random hubs of apis, with the
// same id every time, until one acknowledges it or ctx ends.
func publishUntilAcked(ctx context.Context, c *cluster, apis []string, ch, id string, data []byte) (ack, error) {
	var last error
	for attempt := 1; ; attempt++ {
		api := apis[rand.IntN(len(apis))]
		tried := time.Now()
		res, err := c.publishOnce(api, ch, id, data)
		if err == nil {
			return ack{offset: res.Offset, via: api, triedAt: tried}, nil
		}
		if errors.Is(err, errPermanent) {
			return ack{}, err
		}
		last = err
		select {
		case <-ctx.Done():
			return ack{}, fmt.Errorf("not acknowledged after %d attempts: %w; last error: %v", attempt, ctx.Err(), last)
		case <-time.After(20*time.Millisecond + rand.N(80*time.Millisecond)):
		}
	}
}

// stop makes the workers finish the publish they are on (until it is
// acknowledged or the deadline passes) and return; it fails the test for
// every publish that was never acknowledged.
func (l *faultLoad) stop() {
	l.stopOnce.Do(func() { close(l.stopped) })
	l.wg.Wait()
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	reportUnacked(l.c.t, l.failures)
}

// acksSince counts the publishes acknowledged after t.
func (l *faultLoad) acksSince(t time.Time) int {
	_, acks := l.led.snapshot()
	n := 0
	for _, a := range acks {
		if a.at.After(t) {
			n++
		}
	}
	return n
}

// waitAcks waits until n more publishes than now have been acknowledged
// after since.
func (l *faultLoad) waitAcks(since time.Time, n int, d time.Duration, what string) {
	l.c.t.Helper()
	waitFor(l.c.t, d, fmt.Sprintf("%d acknowledged publishes %s", n, what), func() bool { return l.acksSince(since) >= n })
}

// writeGap returns the longest time between from and to in which no
// publish was acknowledged, and when the first acknowledgement after from
// came (zero if none came before to).
func writeGap(acks []ack, from, to time.Time) (gap time.Duration, first time.Time) {
	times := []time.Time{from}
	for _, a := range acks {
		if a.at.After(from) && a.at.Before(to) {
			times = append(times, a.at)
		}
	}
	times = append(times, to)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(times); i++ {
		gap = max(gap, times[i].Sub(times[i-1]))
	}
	if len(times) > 2 {
		first = times[1]
	}
	return gap, first
}

// logWriteGap reports the write gap of a fault that began at from and was
// healed at to: the longest time without an acknowledged publish, and when
// the first publish attempt made after the fault was acknowledged, through
// the hub APIs (an HTTP request) and through gateways (a PublishWithID
// call, which sends again after 3 s). Both depend on how long the
// publishers wait: an HTTP request up to 8 s, and a worker retries its
// publish until it is acknowledged before it starts the next one.
func logWriteGap(t *testing.T, fault string, led *ledger, from, to time.Time) {
	t.Helper()
	_, acks := led.snapshot()
	gap, _ := writeGap(acks, from, to)
	firstAfter := func(gateway bool) string {
		var sel []ack
		for _, a := range acks {
			if (a.via == "gateway") == gateway && a.triedAt.After(from) {
				sel = append(sel, a)
			}
		}
		if _, first := writeGap(sel, from, to); !first.IsZero() {
			return first.Sub(from).Round(time.Millisecond).String()
		}
		return "none before the heal"
	}
	t.Logf("write gap after %s: longest time without an acknowledged publish %v; the first attempt made after the fault and acknowledged was acknowledged after %s through the hub APIs, after %s through a gateway; the fault lasted %v",
		fault, gap.Round(time.Millisecond), firstAfter(false), firstAfter(true), to.Sub(from).Round(time.Millisecond))
}

// checkIdentical checks that every hub serves the same copy of each
// channel, byte for byte: same epoch, same offsets, same data. ref is the
// first hub's copy, as verify returns it.
func (c *cluster) checkIdentical(hubs []*hub, channels []string, ref map[string]wire.MessagesResponse) {
	c.t.Helper()
	for _, h := range hubs {
		for _, ch := range channels {
			got, err := c.readAll(h, ch)
			if err != nil {
				c.t.Errorf("read %s from %s: %v", ch, h.id, err)
				continue
			}
			r := ref[ch]
			if got.Epoch != r.Epoch || got.First != r.First || got.Next != r.Next || len(got.Messages) != len(r.Messages) {
				c.t.Errorf("%s: %s is epoch %s, offsets %d to %d (%d messages); the reference is epoch %s, %d to %d (%d messages)",
					h.id, ch, got.Epoch, got.First, got.Next-1, len(got.Messages), r.Epoch, r.First, r.Next-1, len(r.Messages))
				continue
			}
			for i, m := range got.Messages {
				if m.Offset != r.Messages[i].Offset || !bytes.Equal(m.Data, r.Messages[i].Data) {
					c.t.Errorf("%s: %s: message %d is offset %d %s; the reference has offset %d %s",
						h.id, ch, i, m.Offset, m.Data, r.Messages[i].Offset, r.Messages[i].Data)
					break
				}
			}
		}
	}
}

// checkAckedDuring checks that every publish the hub at api acknowledged
// between from and to is in the log (ref) at its offset with its data:
// a hub cut off from the majority must acknowledge nothing that was not
// committed. It returns how many there were.
func (c *cluster) checkAckedDuring(led *ledger, api string, from, to time.Time, ref map[string]wire.MessagesResponse) int {
	c.t.Helper()
	_, acks := led.snapshot()
	n := 0
	for _, a := range acks {
		if a.via != api || a.at.Before(from) || a.at.After(to) {
			continue
		}
		n++
		msgs := ref[a.channel].Messages
		if a.offset == 0 || a.offset > uint64(len(msgs)) || !sameJSON(msgs[a.offset-1].Data, a.data) {
			c.t.Errorf("%s acknowledged %s/%s at offset %d while cut off, but the log does not hold it there", api, a.channel, a.id, a.offset)
		}
	}
	return n
}

// faultClient returns a Go client of the gateways at urls (ws://.../ws),
// closed when the test ends. dial, when not nil, makes its connections;
// readTimeout, when not 0, is how long a silent connection lives.
func faultClient(t *testing.T, urls []string, dial func(ctx context.Context, network, addr string) (net.Conn, error), readTimeout time.Duration) *client.Client {
	t.Helper()
	cfg := client.Config{URLs: urls, MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		RequestTimeout: 3 * time.Second, ReadTimeout: readTimeout}
	if readTimeout > 0 {
		cfg.PingInterval = readTimeout / 4
	}
	if dial != nil {
		cfg.Dialer = &websocket.Dialer{NetDialContext: dial, HandshakeTimeout: 3 * time.Second}
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// subscribe subscribes cl to every channel from offset 1, recording what
// its handlers get.
func subscribe(t *testing.T, cl *client.Client, channels []string) *received {
	t.Helper()
	r := &received{msgs: map[string][]client.Message{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ch := range channels {
		if _, err := cl.Subscribe(ctx, ch, r.add, client.From(1)); err != nil {
			t.Fatalf("subscribe %s: %v", ch, err)
		}
	}
	return r
}

// checkSubscribers waits until every subscriber has as many messages of
// each channel as the log (ref) holds, and checks that it got offsets 1..N
// exactly once, in order, with the data of the log.
func checkSubscribers(t *testing.T, subs map[string]*received, ref map[string]wire.MessagesResponse) {
	t.Helper()
	for name, r := range subs {
		for ch, log := range ref {
			want := len(log.Messages)
			if !poll(30*time.Second, func() bool { return r.count(ch) >= want }) {
				t.Errorf("subscriber %s has %d of the %d messages of %s", name, r.count(ch), want, ch)
			}
			r.mu.Lock()
			got := append([]client.Message(nil), r.msgs[ch]...)
			r.mu.Unlock()
			for k, m := range got {
				if m.Offset != uint64(k+1) {
					t.Errorf("subscriber %s, %s: message %d has offset %d, want %d (a gap, a repeat or disorder)", name, ch, k, m.Offset, k+1)
					break
				}
				if k >= want {
					t.Errorf("subscriber %s, %s: got offset %d, beyond the log's %d", name, ch, m.Offset, want)
					break
				}
				if !sameJSON(m.Data, log.Messages[k].Data) {
					t.Errorf("subscriber %s, %s offset %d: got %s, the log holds %s", name, ch, m.Offset, m.Data, log.Messages[k].Data)
					break
				}
			}
		}
	}
}

// probeResult is what probe did.
type probeResult struct {
	sent, acked int
	unacked     []string // ids sent and not acknowledged
}

// probe publishes to the hub at api alone, one publish after another to
// ch, each with an id of its own (prefix-n), until stop is closed, and
// records them in led. It is how a test makes sure a cut-off hub is asked
// to take writes: what it acknowledges must be committed.
func (c *cluster) probe(led *ledger, api, ch, prefix string, stop <-chan struct{}) probeResult {
	var r probeResult
	for n := 0; n < 10000; n++ {
		select {
		case <-stop:
			return r
		default:
		}
		id := fmt.Sprintf("%s-%d", prefix, n)
		data := payload(id, n)
		led.addSent(id, ch, data)
		r.sent++
		res, err := c.publishOnce(api, ch, id, data)
		if err != nil {
			r.unacked = append(r.unacked, id)
			select {
			case <-stop:
				return r
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		r.acked++
		led.addAck(ack{channel: ch, id: id, offset: res.Offset, data: data, at: time.Now(), via: api})
	}
	return r
}

// publishAgain publishes each of ids (sent before to ch and recorded in
// led) again with its id through any hub until it is acknowledged.
func (c *cluster) publishAgain(led *ledger, ch string, ids []string) {
	c.t.Helper()
	sentMsgs, _ := led.snapshot()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range ids {
		data := sentMsgs[id].data
		a, err := publishUntilAcked(ctx, c, c.apis(), ch, id, data)
		if err != nil {
			c.t.Errorf("publish %s/%s again: %v", ch, id, err)
			continue
		}
		a.channel, a.id, a.data, a.at = ch, id, data, time.Now()
		led.addAck(a)
	}
}

func (c *cluster) apis() []string {
	var apis []string
	for _, h := range c.hubs {
		apis = append(apis, h.api)
	}
	return apis
}
