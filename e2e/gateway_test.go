package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/client"
)

// startGateway starts a `comet gateway` process following the cluster's
// hubs, and waits until it is ready. Its listen address is in .api.
func (c *cluster) startGateway(id string, extra ...string) *hub {
	c.t.Helper()
	var apis []string
	for _, h := range c.hubs {
		apis = append(apis, h.api)
	}
	for attempt := 1; ; attempt++ {
		addr := freeAddrs(c.t, 1, c.used)[0]
		g := &hub{id: id, api: addr, logPath: filepath.Join(c.dir, fmt.Sprintf("%s-try%d.log", id, attempt))}
		g.args = append([]string{"gateway", "--id", id, "--listen", addr, "--hubs", strings.Join(apis, ",")}, extra...)
		c.gateways = append(c.gateways, g)
		c.start(g)
		if c.waitGatewayReady(g, 20*time.Second) {
			return g
		}
		if attempt < 4 && !g.running() && strings.Contains(g.logTail(3), "address already in use") {
			continue
		}
		c.t.Fatalf("gateway %s not ready:\n%s", id, g.logTail(20))
	}
}

func (c *cluster) waitGatewayReady(g *hub, d time.Duration) bool {
	return poll(d, func() bool {
		code, _, err := c.get(g.api, "/readyz")
		return err == nil && code == 200
	})
}

// received is what one subscriber's handler was given, per channel.
type received struct {
	mu   sync.Mutex
	msgs map[string][]client.Message
}

func (r *received) add(m client.Message) {
	r.mu.Lock()
	r.msgs[m.Channel] = append(r.msgs[m.Channel], m)
	r.mu.Unlock()
}

func (r *received) count(ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs[ch])
}

// TestGatewaysResumeThroughFaults: 3 hubs and 2 gateways; subscribers
// reach the gateways through proxies that add latency and reset every
// connection about every second; the gateway of half the subscribers is
// killed with SIGKILL, then the hub leader. Every subscriber must end with
// offsets 1..N of its channels exactly once, in order, with the data that
// was acknowledged at each offset.
func TestGatewaysResumeThroughFaults(t *testing.T) {
	c := startCluster(t, 3)
	g1 := c.startGateway("g1")
	g2 := c.startGateway("g2")
	p1 := startFaultProxy(t, g1.api, 2*time.Millisecond, time.Second)
	p2 := startFaultProxy(t, g2.api, 2*time.Millisecond, time.Second)

	channels := []string{"orders", "chat:room1"}
	const perChannel = 400
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	newClient := func(urls ...string) *client.Client {
		cl, err := client.New(client.Config{URLs: urls, MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
			RequestTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	ws := func(addr string) string { return "ws://" + addr + "/ws" }

	// Four subscribers: two start on each gateway (the first URL is tried
	// first only by chance, so give each only its proxy first and the
	// other as a fallback).
	var subs []*received
	for i := 0; i < 4; i++ {
		urls := []string{ws(p1.addr()), ws(p2.addr())}
		if i%2 == 1 {
			urls[0], urls[1] = urls[1], urls[0]
		}
		cl := newClient(urls...)
		r := &received{msgs: map[string][]client.Message{}}
		subs = append(subs, r)
		for _, ch := range channels {
			if _, err := cl.Subscribe(ctx, ch, r.add, client.From(1)); err != nil {
				t.Fatalf("subscriber %d: subscribe %s: %v", i, ch, err)
			}
		}
	}

	// One publisher per channel, through either gateway directly, with ids.
	acked := map[string]map[uint64]string{}
	var ackMu sync.Mutex
	var pubs sync.WaitGroup
	progress := make(chan int, 2*perChannel)
	for _, ch := range channels {
		acked[ch] = map[uint64]string{}
		pub := newClient(ws(g2.api), ws(g1.api))
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := 1; i <= perChannel; i++ {
				data := fmt.Sprintf(`{"ch":%q,"n":%d}`, ch, i)
				a, err := pub.PublishWithID(ctx, ch, fmt.Sprintf("%s-%d", ch, i), json.RawMessage(data))
				if err != nil {
					t.Errorf("publish %s %d: %v", ch, i, err)
					return
				}
				ackMu.Lock()
				if prev, ok := acked[ch][a.Offset]; ok && prev != data {
					t.Errorf("%s offset %d acked twice: %s and %s", ch, a.Offset, prev, data)
				}
				acked[ch][a.Offset] = data
				ackMu.Unlock()
				progress <- 1
			}
		}()
	}
	done := 0
	waitProgress := func(n int) {
		t.Helper()
		for done < n {
			select {
			case <-progress:
				done++
			case <-ctx.Done():
				t.Fatalf("only %d publishes acknowledged", done)
			}
		}
	}

	waitProgress(len(channels) * perChannel / 3)
	t.Log("killing gateway g1")
	c.kill(g1)
	waitProgress(2 * len(channels) * perChannel / 3)
	leader := c.currentLeader()
	if leader == nil {
		t.Fatal("no leader")
	}
	t.Logf("killing the hub leader %s", leader.id)
	c.kill(leader)
	waitProgress(len(channels)*perChannel - 20)
	c.restart(leader)
	pubs.Wait()
	if t.Failed() {
		return
	}

	// Every subscriber catches up.
	for i, r := range subs {
		for _, ch := range channels {
			if !poll(60*time.Second, func() bool { return r.count(ch) >= perChannel }) {
				t.Fatalf("subscriber %d has %d of %d messages of %s", i, r.count(ch), perChannel, ch)
			}
		}
	}
	for i, r := range subs {
		r.mu.Lock()
		for _, ch := range channels {
			msgs := r.msgs[ch]
			for k, m := range msgs {
				if m.Offset != uint64(k+1) {
					t.Fatalf("subscriber %d, %s: message %d has offset %d", i, ch, k, m.Offset)
				}
				if want := acked[ch][m.Offset]; string(m.Data) != want {
					t.Fatalf("subscriber %d, %s offset %d: got %s, acknowledged %s", i, ch, m.Offset, m.Data, want)
				}
			}
		}
		r.mu.Unlock()
	}
	t.Logf("proxy resets: %d and %d", p1.resetCount(), p2.resetCount())
	if p1.resetCount() == 0 || p2.resetCount() == 0 {
		t.Fatal("the proxies reset nothing: the test did not test resumption")
	}
}
