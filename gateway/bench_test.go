package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// memHub is a Hub held in memory, fed by the test: it isolates the
// gateway's own costs (fan-out, replay) from the hubs'. Like a hub, its
// streams start with a line saying where they start.
type memHub struct {
	mu    sync.Mutex
	msgs  map[string][]wire.Message // offsets 1..len
	index uint64
	lines chan wire.StreamLine
	fail  chan error // the stream reading it fails with the error

	// blockFirst, when set, makes the first Stream wait until it is
	// closed; breakFirst, when set, makes the first stream fail before its
	// first line once it is closed.
	blockFirst, breakFirst chan struct{}
	froms                  []uint64 // the position of each Stream call
}

func newMemHub() *memHub {
	return &memHub{msgs: map[string][]wire.Message{}, lines: make(chan wire.StreamLine, 1<<16), fail: make(chan error, 1)}
}

// append stores a message and puts it on the stream.
func (h *memHub) append(ch string, data []byte) uint64 {
	h.mu.Lock()
	h.index++
	off := uint64(len(h.msgs[ch])) + 1
	h.msgs[ch] = append(h.msgs[ch], wire.Message{Offset: off, Data: data})
	line := wire.StreamLine{Index: h.index, Channel: ch, Offset: off, Epoch: "e", Data: data}
	h.mu.Unlock()
	h.lines <- line
	return off
}

// appendSilently stores a message that the stream never carries (as when
// a hub's ring no longer holds a position, or the entry was committed
// before the stream started).
func (h *memHub) appendSilently(ch string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.index++
	off := uint64(len(h.msgs[ch])) + 1
	h.msgs[ch] = append(h.msgs[ch], wire.Message{Offset: off, Data: data})
}

// streamFroms returns the position asked by each Stream call so far.
func (h *memHub) streamFroms() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.froms)
}

func (h *memHub) Publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	return wire.PublishResponse{Channel: req.Channel, Offset: h.append(req.Channel, req.Data), Epoch: "e"}, nil
}

func (h *memHub) Read(ctx context.Context, ch string, from uint64, limit int) (Page, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	all := h.msgs[ch]
	res := wire.MessagesResponse{Epoch: "e", First: 1, Next: uint64(len(all)) + 1}
	if from >= 1 && from <= uint64(len(all)) {
		res.Messages = all[from-1 : min(uint64(len(all)), from-1+uint64(limit))]
	}
	return PageOf(ch, res), h.index, nil
}

// History answers forward reads from q.From only (the benchmarks ask no
// more of it).
func (h *memHub) History(ctx context.Context, ch string, q wire.HistoryQuery) (HistoryPage, error) {
	if q.Reverse || q.Before != 0 || !q.SinceTime.IsZero() {
		return HistoryPage{}, &wire.Error{Code: wire.CodeBadRequest, Message: "memHub: forward reads only"}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	all := h.msgs[ch]
	page := HistoryPage{Epoch: "e", First: 1, Next: uint64(len(all)) + 1}
	msgs := []wire.Message{}
	if q.From >= 1 && q.From <= uint64(len(all)) {
		msgs = all[q.From-1 : min(uint64(len(all)), q.From-1+uint64(q.Limit))]
	}
	var err error
	page.Messages, err = json.Marshal(msgs)
	return page, err
}

func (h *memHub) Presence(ctx context.Context, channel, after string, limit int) (wire.Presence, error) {
	return wire.Presence{Channel: channel, Presence: []wire.PresenceEntry{}}, nil
}

func (h *memHub) PresenceStats(ctx context.Context, channel string) (wire.PresenceStats, error) {
	return wire.PresenceStats{Channel: channel}, nil
}

func (h *memHub) Namespaces(ctx context.Context) (wire.Namespaces, error) {
	return wire.Namespaces{Namespaces: []wire.Namespace{}}, nil
}

func (h *memHub) Stream(ctx context.Context, from uint64) (StreamReader, error) {
	h.mu.Lock()
	first := len(h.froms) == 0
	h.froms = append(h.froms, from)
	h.mu.Unlock()
	if first && h.blockFirst != nil {
		select {
		case <-h.blockFirst:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if first && h.breakFirst != nil {
		return &memStream{h: h, ctx: ctx, broken: h.breakFirst}, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	start := h.index // from now
	if from > 0 {
		start = from - 1
	}
	return &memStream{h: h, ctx: ctx, start: start}, nil
}

type memStream struct {
	h       *memHub
	ctx     context.Context
	start   uint64 // the stream starts after this index
	started bool
	broken  chan struct{} // closed: Next fails
}

// Buffered lets the gateway batch the lines already fed (see Server.read).
func (s *memStream) Buffered() int { return len(s.h.lines) }

func (s *memStream) Hub() string  { return "memory" }
func (s *memStream) Close() error { return nil }
func (s *memStream) Next() (wire.StreamLine, error) {
	if s.broken != nil {
		select {
		case <-s.broken:
			return wire.StreamLine{}, errors.New("memory stream broken")
		case <-s.ctx.Done():
			return wire.StreamLine{}, s.ctx.Err()
		}
	}
	if !s.started {
		s.started = true
		return wire.StreamLine{Applied: s.start}, nil
	}
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case l := <-s.h.lines:
		return l, nil
	case err := <-s.h.fail:
		return wire.StreamLine{}, err
	case <-t.C:
		s.h.mu.Lock()
		defer s.h.mu.Unlock()
		return wire.StreamLine{Applied: s.h.index}, nil
	case <-s.ctx.Done():
		return wire.StreamLine{}, s.ctx.Err()
	}
}

var (
	benchRate = flag.Int("bench.rate", 0, "BenchmarkFanout: messages/s published (0: as fast as the gateway takes them)")
	benchSubs = flag.String("bench.subs", "1000,10000", "BenchmarkFanout: numbers of subscribers, comma-separated")
)

// BenchmarkFanout: one channel, N WebSocket subscribers on one gateway,
// 128-byte messages fed to the gateway's commit stream as fast as it takes
// them (or at -bench.rate). Reports deliveries/s and the latency from
// feeding a message to a subscriber decoding it (measured on 20
// subscribers; the others count messages). -bench.subs sets the numbers
// of subscribers: 9000 is the most that fits this machine's limit of
// 20,000 open files (two sockets each), as with peers' wsbench.
func BenchmarkFanout(b *testing.B) {
	for _, f := range strings.Split(*benchSubs, ",") {
		subs, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("-bench.subs: %v", err)
		}
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) { benchFanout(b, subs) })
	}
}

func benchFanout(b *testing.B, nsubs int) {
	// Two sockets per subscriber in this process.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(3*nsubs) {
		lim.Cur = min(lim.Max, uint64(3*nsubs)+1024)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < uint64(2*nsubs+100) {
			b.Skipf("need %d open files, the limit is %d", 2*nsubs+100, lim.Cur)
		}
	}
	hub := newMemHub()
	url := benchGateway(b, hub)

	total := b.N
	var wg sync.WaitGroup
	lat := make([][]time.Duration, 20)
	conns := dialSubscribers(b, url, nsubs, 64<<10)
	ready := make(chan struct{}, nsubs)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, subscribed := 0, false
			for got < total {
				_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
				_, frame, err := c.ReadMessage()
				if err != nil {
					b.Errorf("subscriber %d after %d: %v", i, got, err)
					return
				}
				if !subscribed {
					for _, line := range bytes.Split(frame, []byte("\n")) {
						if bytes.Contains(line, []byte(`"op":"subscribed"`)) {
							subscribed = true
							ready <- struct{}{}
						}
					}
					continue
				}
				if i < len(lat) {
					now := time.Now()
					for _, line := range bytes.Split(frame, []byte("\n")) {
						var m struct {
							Data string `json:"data"`
						}
						if json.Unmarshal(line, &m) == nil && len(m.Data) > 20 {
							ns, _ := strconv.ParseInt(strings.TrimRight(m.Data[:20], " "), 10, 64)
							lat[i] = append(lat[i], now.Sub(time.Unix(0, ns)))
						}
						got++
					}
				} else {
					got += bytes.Count(frame, []byte("\n")) + 1
				}
			}
		}()
	}
	for range conns {
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			b.Fatal("subscribers not subscribed in 60s")
		}
	}
	b.ResetTimer()
	start := time.Now()
	var interval time.Duration
	if *benchRate > 0 {
		interval = time.Second / time.Duration(*benchRate)
	}
	for i := 0; i < total; i++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		data := fmt.Sprintf("%-20d%s", time.Now().UnixNano(), strings.Repeat("x", 106))
		hub.append("fan", []byte(strconv.Quote(data)))
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for _, c := range conns {
		c.Close()
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) == 0 {
		b.Fatal(errors.New("no latency samples"))
	}
	b.ReportMetric(float64(total*nsubs)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCatchUp: a client that missed 10,000 or 100,000 messages of 128
// bytes resumes; the time is from its subscribe to its having the last
// one. The messages are in a single-node hub reached over HTTP; with
// source=cache another subscriber keeps the channel followed, so the
// gateway serves what its cache holds (the last 10,000 by default) from
// memory.
func BenchmarkCatchUp(b *testing.B) {
	hub := startHub(b)
	const total = 100_000
	var wg sync.WaitGroup
	data := json.RawMessage(strconv.Quote(strings.Repeat("x", 126)))
	for p := 0; p < 64; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < total; i += 64 {
				if _, err := hub.Service.Publish(context.Background(), "missed", data, ""); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	epoch := hub.epoch(b, "missed")
	for _, source := range []string{"hub", "cache"} {
		for _, missed := range []uint64{10_000, 100_000} {
			if source == "cache" && missed > 10_000 {
				continue // more than the cache holds: the same as source=hub
			}
			b.Run(fmt.Sprintf("missed=%d/source=%s", missed, source), func(b *testing.B) {
				g := startGateway(b, httpHubs(b, hub.api), Config{})
				if source == "cache" {
					keep := dial(b, g.url)
					keep.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "missed", From: u64p(total - 10_000 + 1), Epoch: epoch})
					keep.expect(wire.OpSubscribed)
					keep.messages("missed", total-10_000+1, 10_000)
				}
				from := total - missed + 1
				var spent time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if source == "hub" && i > 0 {
						// A fresh gateway: nothing cached by the previous client.
						b.StopTimer()
						g.Close()
						g = startGateway(b, httpHubs(b, hub.api), Config{})
						b.StartTimer()
					}
					c := dial(b, g.url)
					start := time.Now()
					c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "missed", From: u64p(from), Epoch: epoch})
					got := uint64(0)
					for got < missed {
						_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
						_, frame, err := c.c.ReadMessage()
						if err != nil {
							b.Fatal(err)
						}
						got += uint64(bytes.Count(frame, []byte(`"op":"message"`)))
					}
					spent += time.Since(start)
					c.c.Close()
				}
				b.ReportMetric(float64(spent.Microseconds())/1000/float64(b.N), "ms/catch-up")
				b.ReportMetric(float64(missed)*float64(b.N)/spent.Seconds(), "msgs/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkFanoutRound: one message at a time to N WebSocket subscribers
// of one channel, the next fed once every subscriber has read the last
// (so every frame holds one message: no batching to hide the cost of a
// delivery). ns/op is the time for one message to reach all N, the tail
// of a fan-out; cpu-us/delivery is the process's CPU (the server and the
// subscribers' reads, which share the cores) per delivery. server=raw is
// the floor: plain gorilla/websocket, a goroutine and a channel per
// connection, the message written as it comes (as peers' wsbench).
// -bench.subs sets N.
func BenchmarkFanoutRound(b *testing.B) {
	for _, f := range strings.Split(*benchSubs, ",") {
		subs, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("-bench.subs: %v", err)
		}
		for _, server := range []string{"gateway", "raw"} {
			b.Run(fmt.Sprintf("subscribers=%d/server=%s", subs, server), func(b *testing.B) {
				benchFanoutRound(b, subs, server == "raw")
			})
		}
	}
}

// rawBroadcast is BenchmarkFanoutRound's floor: a gorilla/websocket
// broadcast with nothing else.
type rawBroadcast struct {
	up   websocket.Upgrader
	mu   sync.Mutex
	subs []chan []byte
}

func (r *rawBroadcast) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	c, err := r.up.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer c.Close()
	ch := make(chan []byte, 1024)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	go func() { // reads, to see the close
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				c.Close()
				return
			}
		}
	}()
	if c.WriteMessage(websocket.TextMessage, []byte(`{"op":"subscribed"}`)) != nil {
		return
	}
	for m := range ch {
		if c.WriteMessage(websocket.TextMessage, m) != nil {
			return
		}
	}
}

func (r *rawBroadcast) send(m []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs {
		ch <- m
	}
}

func (r *rawBroadcast) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs {
		close(ch)
	}
	r.subs = nil
}

func benchFanoutRound(b *testing.B, nsubs int, raw bool) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(3*nsubs) {
		lim.Cur = min(lim.Max, uint64(3*nsubs)+1024)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < uint64(2*nsubs+100) {
			b.Skipf("need %d open files, the limit is %d", 2*nsubs+100, lim.Cur)
		}
	}
	data := []byte(strconv.Quote(strings.Repeat("x", 126)))
	var url string
	var publish func()
	if raw {
		r := &rawBroadcast{up: websocket.Upgrader{WriteBufferSize: 4096}}
		srv := httptest.NewServer(r)
		defer func() { r.close(); srv.Close() }()
		url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
		frame := wire.AppendMessage(nil, "fan", 1, data) // what the gateway sends
		publish = func() { r.send(frame) }
	} else {
		hub := newMemHub()
		url = benchGateway(b, hub)
		publish = func() { hub.append("fan", data) }
	}
	conns := dialSubscribers(b, url, nsubs, 4096)
	var got, want atomic.Int64
	all := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, frame, err := c.ReadMessage()
				if err != nil {
					return // closed at the end
				}
				n := int64(bytes.Count(frame, []byte(`"op":"`)))
				if bytes.Contains(frame, []byte(`"op":"connected"`)) {
					n--
				}
				if n > 0 && got.Add(n) == want.Load() {
					all <- struct{}{}
				}
			}
		}()
	}
	// Everyone subscribed (one subscribed object each).
	want.Store(int64(nsubs))
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		b.Fatalf("subscribed: %d of %d in 60s", got.Load(), nsubs)
	}
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want.Add(int64(nsubs))
		publish()
		select {
		case <-all:
		case <-time.After(60 * time.Second):
			b.Fatalf("message %d: %d of %d deliveries in 60s", i, got.Load(), want.Load())
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*nsubs), "cpu-us/delivery")
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
}

// benchGateway starts a gateway on hub for a benchmark, closed at its end,
// and returns its WebSocket URL.
func benchGateway(b *testing.B, hub *memHub) string {
	s, err := New(Config{Hub: hub, AllowAnonymous: true})
	if err != nil {
		b.Fatal(err)
	}
	s.Run()
	srv := httptest.NewServer(s.Handler())
	b.Cleanup(func() { s.Close(); srv.Close() })
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// dialSubscribers opens n WebSocket connections to url, each reading
// through a buffer of readBuf bytes, and subscribes each to "fan".
func dialSubscribers(b *testing.B, url string, n, readBuf int) []*websocket.Conn {
	conns := make([]*websocket.Conn, n)
	dialer := websocket.Dialer{ReadBufferSize: readBuf}
	for i := range conns {
		c, _, err := dialer.Dial(url, nil)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		conns[i] = c
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"subscribe","channel":"fan"}`)); err != nil {
			b.Fatal(err)
		}
	}
	return conns
}
