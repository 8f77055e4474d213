package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
)

// TestWritesResumeAfterLeaderPause stops the hub leader with SIGSTOP for
// longer than an election while publishers go on through a gateway (the
// Go client, over WebSocket) and through a follower's HTTP API, each
// waiting for its ack before the next publish; then SIGCONT. Every publish
// must be acknowledged, and stored exactly once, at its offset, identically
// on every hub. How long writes stopped is logged, not asserted.
func TestWritesResumeAfterLeaderPause(t *testing.T) {
	c := startCluster(t, 3)
	g := c.startGateway("g1")
	old := c.waitLeader(nil, 30*time.Second)
	var follower *hub
	for _, h := range c.hubs {
		if h != old {
			follower = h
			break
		}
	}
	const channel = "pause/resume"
	led := newLedger()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		mu    sync.Mutex
		times = map[string][]time.Time{} // route -> ack times
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		fails []string
	)
	record := func(route string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v", route, err))
			return
		}
		times[route] = append(times[route], time.Now())
	}
	for p := range 4 {
		route := "gateway"
		if p%2 == 1 {
			route = "follower"
		}
		var cl *client.Client
		if route == "gateway" {
			var err error
			// No resend of its own within the test: what is measured is
			// the gateway's failover.
			cl, err = client.New(client.Config{URLs: []string{"ws://" + g.api + "/ws"},
				MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, RequestTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%s-%d-%d", route, p, n)
				data := payload(id, n)
				led.addSent(id, channel, data)
				var off uint64
				var err error
				if cl != nil {
					var a client.Ack
					a, err = cl.PublishWithID(ctx, channel, id, data)
					off = a.Offset
				} else {
					var res wire.PublishResponse
					res, _, err = publishRetry(ctx, c, []string{follower.api}, channel, id, data)
					off = res.Offset
				}
				record(route, err)
				if err != nil {
					return
				}
				led.addAck(ack{channel: channel, id: id, offset: off, data: data})
			}
		}()
	}
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopLoad()

	waitFor(t, 30*time.Second, "publishing under way", func() bool { return led.ackCount() >= 40 })
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	defer func() { _ = old.cmd.Process.Signal(syscall.SIGCONT) }()
	var elected time.Time
	waitFor(t, 30*time.Second, "a new leader", func() bool {
		for _, h := range c.hubs {
			if h == old {
				continue
			}
			if st, err := c.localStatus(h); err == nil && st.State == "leader" {
				elected = time.Now()
				return true
			}
		}
		return false
	})
	countAfter := func(route string, at time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ts := range times[route] {
			if ts.After(at) {
				n++
			}
		}
		return n
	}
	waitFor(t, 60*time.Second, "publishing resumed on both routes", func() bool {
		return countAfter("gateway", elected) >= 20 && countAfter("follower", elected) >= 20
	})
	stopLoad()
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	for _, f := range fails {
		t.Errorf("publish failed: %s", f)
	}
	var all []time.Time
	for route, ts := range times {
		for _, at := range ts {
			if at.After(elected) {
				t.Logf("via the %s: first ack %v after the election", route, at.Sub(elected).Round(time.Millisecond))
				break
			}
		}
		all = append(all, ts...)
	}
	mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Before(all[j]) })
	var gap time.Duration
	for i := 1; i < len(all); i++ {
		gap = max(gap, all[i].Sub(all[i-1]))
	}
	t.Logf("leader %s paused; new leader %v later; longest gap between acks %v", old.id, elected.Sub(paused).Round(time.Millisecond), gap.Round(time.Millisecond))

	// The old leader is back: every hub holds every ack once, the same.
	c.waitHealthy(c.hubs, 30*time.Second)
	c.verify(led, c.hubs, []string{channel})
}
