package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReplayToLiveSwitchUnderPublishing subscribes again and again from
// random earlier offsets while publishers keep writing, with a cache and a
// pending buffer small enough that every path is taken (cache, hub reads,
// pending overflow), and checks that each subscriber sees every offset
// once, in order, with the data that was published at it.
func TestReplayToLiveSwitchUnderPublishing(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{CacheMessages: 40, PendingMessages: 8, ReadLimit: 25})

	const ch = "race"
	var published atomic.Uint64 // highest offset acknowledged
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := hub.Service.Publish(context.Background(), ch, json.RawMessage(strconv.Quote(fmt.Sprint(p, "-", i))), "")
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				for {
					cur := published.Load()
					if res.Offset <= cur || published.CompareAndSwap(cur, res.Offset) {
						break
					}
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, "first publishes", func() bool { return published.Load() >= 50 })
	epoch := hub.epoch(t, ch)

	for round := 0; round < 30; round++ {
		c := dial(t, g.url)
		high := published.Load()
		var from *uint64
		if round%5 != 4 { // every fifth round: live only
			from = u64p(1 + rand.Uint64N(high))
		}
		c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: ch, From: from, Epoch: epoch})
		s := c.expect(wire.OpSubscribed)
		if !s.Recovered || s.Epoch != epoch {
			t.Fatalf("round %d: subscribed %+v", round, s)
		}
		start := s.Next
		if from != nil {
			start = *from
		}
		// Read until 60 messages past what was published at the start.
		msgs := c.messages(ch, start, int(high+60-start))
		// The data is what the hub stored at each offset.
		stored, err := hub.Service.Read(ch, msgs[0].Offset, 20)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range stored.Messages {
			if string(msgs[i].Data) != string(m.Data) {
				t.Fatalf("round %d: offset %d: got %s, stored %s", round, m.Offset, msgs[i].Data, m.Data)
			}
		}
		c.c.Close()
	}
	m := g.m
	t.Logf("replayed from cache %v, from hubs %v; channel syncs %v",
		testutil.ToFloat64(m.replayed.WithLabelValues("cache")), testutil.ToFloat64(m.replayed.WithLabelValues("hub")),
		testutil.ToFloat64(m.resyncs))
	if testutil.ToFloat64(m.replayed.WithLabelValues("hub")) == 0 || testutil.ToFloat64(m.replayed.WithLabelValues("cache")) == 0 {
		t.Fatalf("the test should replay from both the cache and the hubs")
	}
}

// TestSlowConsumerIsCutOffAndResumes: a client that stops reading fills
// its socket, then its bounded queue, and is disconnected; the gateway's
// queue never grows past its bound; the client resumes from its last
// offset and gets everything.
func TestSlowConsumerIsCutOffAndResumes(t *testing.T) {
	hub := startHub(t)
	const queueBytes = 256 << 10
	g := startGateway(t, httpHubs(t, hub.api), Config{QueueBytes: queueBytes, WriteTimeout: 2 * time.Second})
	slow := dial(t, g.url)
	slow.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "firehose"})
	epoch := slow.expect(wire.OpSubscribed).Epoch
	fast := dial(t, g.url)
	fast.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "firehose"})
	fast.expect(wire.OpSubscribed)

	data := `"` + strings.Repeat("a", 48<<10) + `"`
	n := 0
	for testutil.ToFloat64(g.m.slowConsumers) == 0 {
		if n == 2000 {
			t.Fatal("2,000 messages of 48 KiB did not overflow a 256 KiB queue")
		}
		hub.publish(t, "firehose", data)
		n++
		// The fast client keeps up.
		fast.messages("firehose", uint64(n), 1)
		g.mu.Lock()
		for c := range g.conns {
			c.qmu.Lock()
			if c.qbytes > queueBytes {
				t.Errorf("queue of %d bytes, bound %d", c.qbytes, queueBytes)
			}
			c.qmu.Unlock()
		}
		g.mu.Unlock()
	}
	// The slow client reads what reached it, then finds the connection closed.
	var last uint64
	for {
		f, err := slow.tryNext(10 * time.Second)
		if err != nil {
			break
		}
		if f.Op == wire.OpMessage {
			if f.Offset != last+1 {
				t.Fatalf("slow client: offset %d after %d", f.Offset, last)
			}
			last = f.Offset
		}
	}
	t.Logf("cut off after %d messages published, %d received", n, last)
	if last >= uint64(n) {
		t.Fatalf("the slow client received everything (%d) and should not have been cut off", last)
	}
	for i := 0; i < 5; i++ {
		hub.publish(t, "firehose", `"after"`)
	}
	again := dial(t, g.url)
	again.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "firehose", From: u64p(last + 1), Epoch: epoch})
	if s := again.expect(wire.OpSubscribed); !s.Recovered {
		t.Fatalf("subscribed %+v", s)
	}
	again.messages("firehose", last+1, n+5-int(last))
}
