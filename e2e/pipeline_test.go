package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/comethq/comet/wire"
)

// pipeConn is one client connection of TestPipelinedPublishesThroughFaults:
// it keeps up to window publishes in flight, in order, and after its
// connection breaks sends the unanswered ones again, in order, with their
// ids, on a connection to the next gateway, as a client should.
type pipeConn struct {
	k      int
	n      int
	window int
	urls   []string

	mu      sync.Mutex
	unacked []int            // sent and not answered, in order
	acks    map[int][]uint64 // offsets each publish was answered with
	dups    int              // acks flagged duplicate
	errs    []string         // error frames
	next    int              // the next publish to send
	reconn  int
}

func (p *pipeConn) frame(i int) []byte {
	b, _ := json.Marshal(wire.ClientFrame{Op: wire.OpPublish, ID: fmt.Sprintf("c%d-%d", p.k, i), Channel: "pipe",
		Data: json.RawMessage(fmt.Sprintf(`{"c":%d,"n":%d}`, p.k, i))})
	return b
}

// run publishes p.n messages, until ctx ends.
func (p *pipeConn) run(ctx context.Context, acked *atomic.Int64) error {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		url := p.urls[attempt%len(p.urls)]
		done, err := p.session(ctx, url, acked)
		if done {
			return nil
		}
		p.mu.Lock()
		p.reconn++
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("connection %d: %w (last: %v)", p.k, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return ctx.Err()
}

// session runs one connection: it sends the unanswered publishes again,
// then new ones, and reads answers, until all are answered (done) or the
// connection breaks.
func (p *pipeConn) session(ctx context.Context, url string, acked *atomic.Int64) (done bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ws, _, err := websocket.DefaultDialer.DialContext(dctx, url, nil)
	cancel()
	if err != nil {
		return false, err
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	var wmu sync.Mutex
	send := func(i int) error {
		wmu.Lock()
		defer wmu.Unlock()
		return ws.WriteMessage(websocket.TextMessage, p.frame(i))
	}
	room := make(chan struct{}, p.window)
	p.mu.Lock()
	resend := append([]int(nil), p.unacked...)
	p.mu.Unlock()
	for _, i := range resend {
		room <- struct{}{}
		if err := send(i); err != nil {
			return false, err
		}
	}
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			select {
			case room <- struct{}{}:
			case <-quit:
				return
			}
			p.mu.Lock()
			if p.next >= p.n {
				p.mu.Unlock()
				return
			}
			i := p.next
			p.next++
			p.unacked = append(p.unacked, i)
			p.mu.Unlock()
			if send(i) != nil {
				return
			}
		}
	}()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return false, err
		}
		for _, line := range splitLines(msg) {
			var f wire.ServerFrame
			if json.Unmarshal(line, &f) != nil {
				continue
			}
			var i, k int
			if _, err := fmt.Sscanf(f.ID, "c%d-%d", &k, &i); err != nil || k != p.k {
				continue
			}
			p.mu.Lock()
			switch f.Op {
			case wire.OpAck:
				var dup struct {
					Duplicate bool `json:"duplicate"`
				}
				_ = json.Unmarshal(line, &dup)
				if dup.Duplicate {
					p.dups++
				}
				if len(p.acks[i]) == 0 {
					acked.Add(1)
				}
				p.acks[i] = append(p.acks[i], f.Offset)
			case wire.OpError:
				p.errs = append(p.errs, string(line))
			}
			for j, u := range p.unacked {
				if u == i {
					p.unacked = append(p.unacked[:j], p.unacked[j+1:]...)
					break
				}
			}
			all := p.next >= p.n && len(p.unacked) == 0
			p.mu.Unlock()
			select {
			case <-room:
			default:
			}
			if all {
				return true, nil
			}
		}
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, b[start:i])
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// TestPipelinedPublishesThroughFaults: four connections keep 32 publishes
// each in flight through two gateways while the hub leader is killed with
// SIGKILL, then one gateway is killed and started again. Every publish is
// acknowledged (a publish sent again is acknowledged at its first offset,
// flagged duplicate), none is stored twice or lost, and each connection's
// publishes are stored in the order it sent them. No publish gets an error
// frame: the gateways carry their publishes over to the new leader.
func TestPipelinedPublishesThroughFaults(t *testing.T) {
	c := startCluster(t, 3)
	g1 := c.startGateway("g1")
	g2 := c.startGateway("g2")
	ws := func(g *hub) string { return "ws://" + g.api + "/ws" }

	const conns, each = 4, 600
	var acked atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pcs := make([]*pipeConn, conns)
	errs := make(chan error, conns)
	for k := range pcs {
		urls := []string{ws(g1), ws(g2)}
		if k%2 == 1 {
			urls[0], urls[1] = urls[1], urls[0]
		}
		pcs[k] = &pipeConn{k: k, n: each, window: 32, urls: urls, acks: map[int][]uint64{}}
		go func() { errs <- pcs[k].run(ctx, &acked) }()
	}
	waitFor(t, time.Minute, "a third acknowledged", func() bool { return acked.Load() >= conns*each/3 })
	leader := c.currentLeader()
	t.Logf("SIGKILL the leader %s at %d acks", leader.id, acked.Load())
	c.kill(leader)
	waitFor(t, time.Minute, "two thirds acknowledged", func() bool { return acked.Load() >= 2*conns*each/3 })
	t.Logf("SIGKILL gateway g1 at %d acks, then start it again", acked.Load())
	c.kill(g1)
	c.start(g1)
	for range pcs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	c.restart(leader)

	offsets := map[uint64]string{}
	dups, reconns := 0, 0
	for _, p := range pcs {
		if len(p.errs) > 0 {
			t.Errorf("connection %d got error frames: %q", p.k, p.errs)
		}
		dups += p.dups
		reconns += p.reconn
		for i := range each {
			key := fmt.Sprintf("c%d-%d", p.k, i)
			as := p.acks[i]
			if len(as) == 0 {
				t.Fatalf("%s was never acknowledged", key)
			}
			for _, o := range as[1:] {
				if o != as[0] {
					t.Fatalf("%s acknowledged at offsets %v", key, as)
				}
			}
			if prev, ok := offsets[as[0]]; ok {
				t.Fatalf("offset %d acknowledged to %s and %s", as[0], prev, key)
			}
			offsets[as[0]] = key
		}
	}
	t.Logf("%d publishes acknowledged; %d acks flagged duplicate; %d reconnections", len(offsets), dups, reconns)

	for _, h := range c.hubs {
		var got wire.MessagesResponse
		waitFor(t, 30*time.Second, h.id+" to hold every message", func() bool {
			var err error
			got, err = c.readAll(h, "pipe")
			return err == nil && len(got.Messages) >= conns*each
		})
		if len(got.Messages) != conns*each {
			t.Fatalf("%s holds %d messages, want %d (stored twice?)", h.id, len(got.Messages), conns*each)
		}
		next := make([]int, conns)
		for _, m := range got.Messages {
			var d struct{ C, N int }
			if err := json.Unmarshal(m.Data, &d); err != nil {
				t.Fatal(err)
			}
			if d.N != next[d.C] {
				t.Fatalf("%s: offset %d holds connection %d's publish %d; want its publish %d (out of order, twice, or a gap)", h.id, m.Offset, d.C, d.N, next[d.C])
			}
			next[d.C]++
			if key := fmt.Sprintf("c%d-%d", d.C, d.N); offsets[m.Offset] != key {
				t.Fatalf("%s: offset %d holds %s, acknowledged to %s", h.id, m.Offset, key, offsets[m.Offset])
			}
		}
	}
}
