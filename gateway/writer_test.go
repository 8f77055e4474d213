package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Tests of the per-connection writer (conn.writeLoop and what feeds it):
// order, the replay's wait for room, pings, the write timeout, close
// frames.

// connCount returns how many connections the gateway holds.
func (g *testGateway) connCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// TestFanoutKeepsEveryConnectionsOrder: many subscribers of one channel,
// messages fed as fast as the gateway takes them (so that the writers find
// batches of every size), each subscriber sending pings meanwhile: every
// subscriber gets every offset once, in order, and its pongs in order.
func TestFanoutKeepsEveryConnectionsOrder(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{})
	const subs, msgs = 40, 3000
	clients := make([]*wsClient, subs)
	for i := range clients {
		clients[i] = dial(t, g.url)
		clients[i].send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "order"})
		clients[i].expect(wire.OpSubscribed)
	}
	var wg sync.WaitGroup
	errs := make(chan error, subs)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var off uint64
			pings, pongs := 0, 0
			for off < msgs {
				if pings < 50 && off >= uint64(pings*msgs/50) {
					b := []byte(`{"op":"ping","id":"` + strconv.Itoa(pings) + `"}`)
					if err := c.c.WriteMessage(websocket.TextMessage, b); err != nil {
						errs <- err
						return
					}
					pings++
				}
				f, err := c.tryNext(20 * time.Second)
				if err != nil {
					errs <- err
					return
				}
				switch f.Op {
				case wire.OpMessage:
					if f.Offset != off+1 {
						errs <- errors.New("subscriber " + strconv.Itoa(i) + ": offset " + strconv.FormatUint(f.Offset, 10) +
							" after " + strconv.FormatUint(off, 10))
						return
					}
					off = f.Offset
				case wire.OpPong:
					if f.ID != strconv.Itoa(pongs) {
						errs <- errors.New("subscriber " + strconv.Itoa(i) + ": pong " + f.ID + ", want " + strconv.Itoa(pongs))
						return
					}
					pongs++
				}
			}
		}()
	}
	for i := 0; i < msgs; i++ {
		hub.append("order", []byte(strconv.Quote(strings.Repeat("m", i%300))))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := testutil.ToFloat64(g.m.slowConsumers); n != 0 {
		t.Fatalf("%v slow consumers", n)
	}
}

// TestReplayWaitsForRoomThenGoesLive: a queue small enough that a long
// replay waits for room again and again (enqueueWait), while messages keep
// coming live: the subscriber gets every offset once, in order, across
// the switch from replay to live.
func TestReplayWaitsForRoomThenGoesLive(t *testing.T) {
	hub := newMemHub()
	const queueBytes = 64 << 10 // the replay fills half: about 30 messages
	g := startGateway(t, hub, Config{QueueBytes: queueBytes})
	data := []byte(strconv.Quote(strings.Repeat("r", 1000)))

	keep := dial(t, g.url) // keeps the channel followed and cached
	keep.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "room"})
	keep.expect(wire.OpSubscribed)
	const backlog, live, window = 3200, 500, 8
	// The backlog in steps of 16, which fit keep's queue.
	for i := 0; i < backlog; i += 16 {
		for j := 0; j < 16; j++ {
			hub.append("room", data)
		}
		keep.messages("room", uint64(i+1), 16)
	}
	keep.c.Close() // the channel lingers, its cache with it

	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "room", From: u64p(1), Epoch: "e"})
	if s := c.expect(wire.OpSubscribed); !s.Recovered {
		t.Fatalf("subscribed %+v", s)
	}
	// The publisher stays at most window messages ahead of the subscriber,
	// so that live messages alone never overflow the queue.
	var got atomic.Uint64
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := uint64(backlog + 1); k <= backlog+live; k++ {
			for got.Load()+window < k {
				select {
				case <-progress:
				case <-time.After(20 * time.Second):
					t.Errorf("subscriber stuck at %d", got.Load())
					return
				}
			}
			hub.append("room", data)
		}
	}()
	for off := uint64(1); off <= backlog+live; off++ {
		f := c.expect(wire.OpMessage)
		if f.Offset != off {
			t.Fatalf("offset %d, want %d", f.Offset, off)
		}
		got.Store(off)
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	<-done
	if n := testutil.ToFloat64(g.m.slowConsumers); n != 0 {
		t.Fatalf("%v slow consumers", n)
	}
	// Nothing more: the next object is the pong of this ping, not a
	// duplicate message.
	c.send(wire.ClientFrame{Op: wire.OpPing, ID: "end"})
	if f := c.expect(wire.OpPong); f.ID != "end" {
		t.Fatalf("pong %+v", f)
	}
}

// TestPingsAreSent: an idle connection gets pings every PingInterval,
// and so does a busy one.
func TestPingsAreSent(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{PingInterval: 20 * time.Millisecond})
	for _, busy := range []bool{false, true} {
		c := dial(t, g.url)
		pings := make(chan struct{}, 64)
		c.c.SetPingHandler(func(string) error {
			select {
			case pings <- struct{}{}:
			default:
			}
			return nil
		})
		c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "pings"})
		c.expect(wire.OpSubscribed)
		received := make(chan uint64, 1)
		readErr := make(chan error, 1)
		go func() { // pings are seen while reading
			for {
				f, err := c.tryNext(20 * time.Second)
				if err != nil {
					readErr <- err
					return
				}
				if f.Op == wire.OpMessage {
					received <- f.Offset
				}
			}
		}()
		seen := 0
		for i := uint64(1); seen < 5; i++ {
			if !busy {
				select {
				case <-pings:
					seen++
				case <-time.After(20 * time.Second):
					t.Fatalf("idle: %d pings in 20s", seen)
				}
				continue
			}
			if i == 1_000_000 {
				t.Fatalf("busy: %d pings after %d messages", seen, i)
			}
			// One message at a time, each received before the next.
			hub.append("pings", []byte(`"x"`))
			select {
			case off := <-received:
				if off != i {
					t.Fatalf("busy: offset %d, want %d", off, i)
				}
			case err := <-readErr:
				t.Fatal(err)
			}
			select {
			case <-pings:
				seen++
			default:
			}
		}
		c.c.Close()
		<-readErr
	}
}

// TestStuckClientIsDroppedByWriteTimeout: a client that stops reading,
// with a queue large enough never to overflow, is dropped once a write to
// it has waited WriteTimeout; a client reading the same channel is not.
func TestStuckClientIsDroppedByWriteTimeout(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{WriteTimeout: 200 * time.Millisecond,
		QueueBytes: 256 << 20, QueueMessages: 1 << 20, CacheBytes: 1 << 20})
	stuck := dial(t, g.url)
	stuck.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "stuck"})
	stuck.expect(wire.OpSubscribed)
	reader := dial(t, g.url)
	reader.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "stuck"})
	reader.expect(wire.OpSubscribed)
	data := []byte(strconv.Quote(strings.Repeat("s", 64<<10)))
	// Fill the sockets (a few MB on loopback), then wait for the drop.
	n := 0
	for g.connCount() == 2 {
		if n == 2000 { // 128 MB: far more than loopback sockets hold
			t.Fatalf("the stuck client was not dropped after %d messages of 64 KiB", n)
		}
		hub.append("stuck", data)
		n++
		reader.messages("stuck", uint64(n), 1)
	}
	t.Logf("dropped after %d messages of 64 KiB", n)
	if v := testutil.ToFloat64(g.m.slowConsumers); v != 0 {
		t.Fatalf("dropped as a slow consumer, not by the write timeout")
	}
	if v := testutil.ToFloat64(g.m.writeTimeouts); v != 1 {
		t.Fatalf("%v write timeouts counted, want 1", v)
	}
	// The reader is still served.
	hub.append("stuck", []byte(`"after"`))
	reader.messages("stuck", uint64(n+1), 1)
}

// TestShutdownSendsQueuedThenCloseFrame: Shutdown sends each client what
// is queued for it, then a close frame with code 4001.
func TestShutdownSendsQueuedThenCloseFrame(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{})
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "bye"})
	c.expect(wire.OpSubscribed)
	for i := 0; i < 100; i++ {
		hub.append("bye", []byte(`"x"`))
	}
	c.messages("bye", 1, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := c.tryNext(20 * time.Second)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != wire.CloseShutdown {
		t.Fatalf("after shutdown: %v, want close %d", err, wire.CloseShutdown)
	}
}

// A client heard from keeps its connection past the idle timeout, its
// read deadline moved only now and then (touch); one that goes silent is
// closed with CloseIdle, never before the idle timeout has passed since it
// was last heard.
func TestIdleClientIsClosed(t *testing.T) {
	const idle = 2 * time.Second
	g := startGateway(t, newMemHub(), Config{IdleTimeout: idle, PingInterval: time.Hour})
	c := dial(t, g.url)
	// Heard every idle/8 for 1.5 idle timeouts: still connected. (Each
	// ping is answered before the next is sent.)
	var lastSent time.Time
	for i := 0; i < 12; i++ {
		lastSent = time.Now()
		c.send(wire.ClientFrame{Op: wire.OpPing})
		if f := c.next(); f.Op != wire.OpPong {
			t.Fatalf("got %+v, want pong", f)
		}
		time.Sleep(idle / 8) // the client's own pace, not a wait for the gateway
	}
	// Silent now: closed with CloseIdle. The gateway read the last ping
	// after it was sent, so it may not close before lastSent + idle.
	_, err := c.tryNext(20 * time.Second)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != wire.CloseIdle {
		t.Fatalf("silent client: %v, want close %d", err, wire.CloseIdle)
	}
	if since := time.Since(lastSent); since < idle {
		t.Fatalf("closed %v after the client was last heard, before the idle timeout %v", since, idle)
	}
}

// TestFanoutDirectWritesThroughFullSockets: the fan-out writes to
// subscribers' sockets itself (conn.flush). A subscriber that stops
// reading fills its socket: writes are taken in part, and the writer
// writes the rest, waiting for room, while more messages queue behind
// it. Once the subscriber reads again it gets every message once, whole
// and in order, with the pongs of the WebSocket pings it sent meanwhile
// (queued for the writer, after what was queued before them).
func TestFanoutDirectWritesThroughFullSockets(t *testing.T) {
	if !directWrites {
		t.Skip("the fan-out does not write to sockets itself on this platform")
	}
	hub := newMemHub()
	g := startGateway(t, hub, Config{QueueBytes: 256 << 20, QueueMessages: 100000, WriteTimeout: 5 * time.Minute})
	small := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(64 << 10) // fills after a few messages
		}
		return c, err
	}}
	ws, _, err := small.Dial("ws"+strings.TrimPrefix(g.url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	slow := &wsClient{t: t, c: ws}
	slow.expect(wire.OpConnected)
	slow.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "full"})
	slow.expect(wire.OpSubscribed)
	fast := dial(t, g.url) // a subscriber keeping up, beside it
	fast.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "full"})
	fast.expect(wire.OpSubscribed)

	data := func(i int) string { return strconv.Itoa(i) + strings.Repeat("x", 4000+i%1000) }
	// The fast subscriber reads as the messages come; it learns how many
	// there are once the slow one's socket is full.
	var total atomic.Int64
	fastDone := make(chan error, 1)
	go func() {
		for i := 0; total.Load() == 0 || i < int(total.Load()); i++ {
			f, err := fast.tryNext(20 * time.Second)
			if err == nil && (f.Op != wire.OpMessage || f.Offset != uint64(i+1)) {
				err = fmt.Errorf("fast subscriber: got %+v, want message %d", f, i+1)
			}
			if err != nil {
				fastDone <- err
				return
			}
		}
		fastDone <- nil
	}()
	filled := fillSocket(t, g, hub, "full", data)
	// Then more, with WebSocket pings: their pongs queue behind what the
	// writer has to write first.
	const more = 500
	msgs := filled + more
	total.Store(int64(msgs))
	pongs := make(chan string, 100)
	ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
	for i := filled; i < msgs; i++ {
		hub.append("full", []byte(strconv.Quote(data(i))))
		if (i-filled)%100 == 0 {
			if err := ws.WriteControl(websocket.PingMessage, []byte(strconv.Itoa(i-filled)), time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-fastDone; err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		f := slow.next()
		var got string
		if f.Op == wire.OpMessage {
			_ = json.Unmarshal(f.Data, &got)
		}
		if f.Op != wire.OpMessage || f.Offset != uint64(i+1) || got != data(i) {
			t.Fatalf("slow subscriber: got op %q offset %d (%d data bytes), want message %d", f.Op, f.Offset, len(got), i+1)
		}
	}
	// The pongs: the gateway's reader had the pings before each of these
	// protocol pings, and the writer writes a pong at the latest in the
	// turn after it answered the first.
	for _, id := range []string{"a", "b"} {
		slow.send(wire.ClientFrame{Op: wire.OpPing, ID: id})
		if f := slow.expect(wire.OpPong); f.ID != id {
			t.Fatalf("pong %+v, want %s", f, id)
		}
	}
	// In order; the last ping's at least (the gateway answers the latest
	// ping it has, as RFC 6455 allows).
	last := -1
	for last < more-100 {
		select {
		case s := <-pongs:
			n, _ := strconv.Atoi(s)
			if n <= last {
				t.Fatalf("pong %q after pong %d", s, last)
			}
			last = n
		default:
			t.Fatalf("no pong for the last ping (the last pong was %d)", last)
		}
	}
	if n := testutil.ToFloat64(g.m.slowConsumers); n != 0 {
		t.Fatalf("%v slow consumers", n)
	}
}

// fillSocket publishes messages to channel, data(i) the i-th, 50 at a
// time, until the fan-out's write to a subscriber that does not read was
// taken in part: until the kernel's send buffer (it grows up to tcp_wmem's
// maximum, 4 MiB by default) and the subscriber's receive buffer are
// full, however large they are. It returns how many it published.
func fillSocket(t *testing.T, g *testGateway, hub *memHub, channel string, data func(int) string) int {
	t.Helper()
	limit := 40000 // 180 MB: a send buffer of over 170 MB is not one to test against
	n := 0
	for n < limit && g.partialFlushes.Load() == 0 {
		for range 50 {
			hub.append(channel, []byte(strconv.Quote(data(n))))
			n++
		}
		if n%1000 == 0 {
			runtime.Gosched()
		}
	}
	waitFor(t, "a fan-out write taken in part", func() bool { return g.partialFlushes.Load() > 0 })
	return n
}
