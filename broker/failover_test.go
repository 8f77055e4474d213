package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/wire"
)

// TestLeaderLoss stops the leader (HTTP server, service, node, log) while
// publishers keep going through every hub and retry with their ids: a new
// leader is elected, publishing continues through the survivors, and the
// channel holds every acknowledged message exactly once at dense offsets.
// With only one hub left there is no leader: /readyz says 503.
func TestLeaderLoss(t *testing.T) {
	c := newCluster3(t)
	old := c.leader()
	const channel = "failover/x"

	var (
		mu    sync.Mutex
		acked = map[string]uint64{} // id -> offset
		seq   atomic.Int64
	)
	ack := func(id string, off uint64) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := acked[id]; ok && prev != off {
			t.Errorf("%s acknowledged at offset %d, then at %d", id, prev, off)
		}
		acked[id] = off
	}
	publishAll := func(hubs []*hub, publishers, each int, prefix string) {
		var wg sync.WaitGroup
		for g := range publishers {
			wg.Go(func() {
				targets := apis(hubs[g%len(hubs):]...)
				targets = append(targets, apis(hubs[:g%len(hubs)]...)...)
				for i := range each {
					id := fmt.Sprintf("%s-%d-%d", prefix, g, i)
					res, ok := c.publishRetry(targets, channel, fmt.Sprintf("%q", id), id)
					if !ok {
						return
					}
					ack(id, res.Offset)
					seq.Add(1)
				}
			})
		}
		wg.Wait()
	}

	// Before: every hub takes publishes.
	publishAll(c.hubs, 30, 5, "before")

	// During: stop the leader once publishing is under way.
	seq.Store(0)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for deadline := time.Now().Add(10 * time.Second); seq.Load() < 20 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		old.stop()
	}()
	publishAll(c.hubs, 30, 10, "during")
	<-stopped
	if t.Failed() {
		t.FailNow()
	}

	nl := c.leader()
	if nl == old {
		t.Fatal("the stopped hub is still the leader")
	}
	survivors := c.alive()
	if len(survivors) != 2 {
		t.Fatalf("%d hubs alive, want 2", len(survivors))
	}
	// After: the survivors go on.
	publishAll(survivors, 20, 5, "after")
	if t.Failed() {
		t.FailNow()
	}

	total := uint64(len(acked))
	if want := uint64(30*5 + 30*10 + 20*5); total != want {
		t.Fatalf("%d ids acknowledged, want %d", total, want)
	}
	for _, h := range survivors {
		eventually(t, 10*time.Second, func() error {
			got, err := c.readAll(h.api, channel)
			if err != nil {
				return err
			}
			if uint64(len(got.Messages)) != total || got.Next != total+1 {
				return fmt.Errorf("%s: %d messages, next %d; want %d and %d", h.id, len(got.Messages), got.Next, total, total+1)
			}
			checkDense(t, h.id, got.Messages, 1, total)
			seen := map[string]bool{}
			for _, m := range got.Messages {
				var id string
				if err := json.Unmarshal(m.Data, &id); err != nil {
					t.Fatalf("%s: offset %d holds %s", h.id, m.Offset, m.Data)
				}
				if seen[id] {
					t.Fatalf("%s: %s stored twice", h.id, id)
				}
				seen[id] = true
				if off, ok := acked[id]; !ok || off != m.Offset {
					t.Fatalf("%s: %s stored at offset %d, acknowledged at %d (%v)", h.id, id, m.Offset, off, ok)
				}
			}
			return nil
		})
	}

	for _, h := range survivors {
		eventually(t, 10*time.Second, func() error {
			st, err := c.status(h.api)
			if err != nil {
				return err
			}
			if cur := c.leader(); st.Leader != cur.id || st.Leader == old.id {
				return fmt.Errorf("GET /v1/cluster on %s: leader %q, want %q", h.id, st.Leader, cur.id)
			}
			for _, n := range st.Nodes {
				if n.ID == old.id && (n.State != "unreachable" || n.Error == "") {
					return fmt.Errorf("GET /v1/cluster on %s: the stopped hub is %+v, want unreachable", h.id, n)
				}
			}
			return nil
		})
		// Each survivor saw the first leader and the new one.
		if m := c.metrics(h.api); m["comet_raft_leader_changes_total"] < 2 {
			t.Errorf("comet_raft_leader_changes_total on %s: %v, want at least 2", h.id, m["comet_raft_leader_changes_total"])
		}
	}

	// A lone hub of three has no quorum, so no leader: not ready, and a
	// publish is refused with a 5xx error, not left hanging.
	lone := survivors[0]
	survivors[1].stop()
	eventually(t, 10*time.Second, func() error {
		status, raw := c.do(http.MethodGet, lone.api, "/readyz", nil)
		if status != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz on the lone hub: %d %s", status, raw)
		}
		if e := errorBody(t, "/readyz", raw); e.Code != "unavailable" {
			return fmt.Errorf("/readyz on the lone hub: code %q", e.Code)
		}
		return nil
	})
	if status, raw := c.do(http.MethodGet, lone.api, "/healthz", nil); status != http.StatusOK {
		t.Errorf("/healthz on the lone hub: %d %s", status, raw)
	}
	r := c.tryPublish(lone.api, channel, `"alone"`, "alone")
	if r.status != http.StatusServiceUnavailable && r.status != http.StatusGatewayTimeout {
		t.Errorf("publish on the lone hub: %d %s, want 503 or 504", r.status, r.raw)
	}
	errorBody(t, "publish on the lone hub", r.raw)
}

// TestReadyAfterFailover stops the leader of an idle cluster: once a new
// leader is elected, both survivors are ready again without any publish
// (the new leader's first entries are Raft's own, which the channel log
// never sees).
func TestReadyAfterFailover(t *testing.T) {
	c := newCluster3(t)
	old := c.leader()
	old.stop()
	nl := c.leader()
	if nl == old {
		t.Fatal("the stopped hub is still the leader")
	}
	for _, h := range c.alive() {
		eventually(t, 10*time.Second, func() error {
			if status, body := c.do(http.MethodGet, h.api, "/readyz", nil); status != http.StatusOK {
				return fmt.Errorf("%s after failover: /readyz %d %s", h.id, status, body)
			}
			return nil
		})
	}
}

// TestWritesResumeAfterLeaderLoss cuts the leader off from both followers
// (its Raft connections stall; "pause" stalls its API too, as SIGSTOP
// would) while publishers go on through a follower's API and through
// hubapi.Hubs (which starts with the old leader), each waiting for its ack
// before the next publish and retrying with the same id. Every publish is
// acknowledged, stored exactly once and in each publisher's order, on every
// hub once the old leader is back. How long after the new leader's
// election writes resumed is logged, not asserted.
func TestWritesResumeAfterLeaderLoss(t *testing.T) {
	for _, mode := range []string{"cut", "pause"} {
		t.Run(mode, func(t *testing.T) { testWritesResume(t, mode) })
	}
}

// poll polls cond every 20ms until it holds (true) or d has passed (false).
func poll(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func testWritesResume(t *testing.T, mode string) {
	c := newCluster(t)
	c.production, c.gated = true, true
	c.start3()
	old := c.leader()
	fs := c.followers(old)
	const channel = "failover/resume"
	// Runs before the hubs stop.
	t.Cleanup(func() { old.apiGate.open(); old.raftGate.open() })

	hubs, err := hubapi.NewHubs([]string{old.api, fs[0].api, fs[1].api}, 10*time.Second, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hubs.CloseIdleConnections)
	for range 3 { // start with the old leader: the worst case
		if first := hubs.Order()[0]; first != old.api {
			hubs.Failed(first)
		}
	}
	if hubs.Order()[0] != old.api {
		t.Fatalf("hubs prefer %s, not the leader", hubs.Order()[0])
	}

	type ack struct {
		route  string
		id     string
		offset uint64
		at     time.Time
	}
	var (
		mu    sync.Mutex
		acks  []ack
		stop  atomic.Bool
		total atomic.Int64
	)
	// publish publishes id until it is acknowledged, for up to 30s.
	publish := func(route, id string, try func() (wire.PublishResponse, error)) bool {
		deadline := time.Now().Add(30 * time.Second)
		for {
			res, err := try()
			if err == nil {
				mu.Lock()
				acks = append(acks, ack{route, id, res.Offset, time.Now()})
				mu.Unlock()
				total.Add(1)
				return true
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: publish %s: %v", route, id, err)
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	viaFollower := func(id string) (wire.PublishResponse, error) {
		r := c.tryPublish(fs[0].api, channel, fmt.Sprintf("%q", id), id)
		if r.status != http.StatusOK {
			return r.res, fmt.Errorf("%d %s", r.status, r.raw)
		}
		return r.res, nil
	}
	viaHubs := func(id string) (wire.PublishResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return hubs.Publish(ctx, wire.PublishRequest{Channel: channel, Data: json.RawMessage(fmt.Sprintf("%q", id)), ID: id})
	}
	var wg sync.WaitGroup
	for p := range 6 {
		route, try := "follower", viaFollower
		if p%2 == 1 {
			route, try = "hubs", viaHubs
		}
		wg.Go(func() {
			for i := 0; i < 10000 && !stop.Load(); i++ {
				if !publish(route, fmt.Sprintf("%s-%d-%d", route, p, i), func() (wire.PublishResponse, error) {
					return try(fmt.Sprintf("%s-%d-%d", route, p, i))
				}) {
					return
				}
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()

	waitFor(t, 10*time.Second, "publishing under way", func() bool { return total.Load() >= 30 })
	lost := time.Now()
	old.raftGate.close()
	if mode == "pause" {
		old.apiGate.close()
	}
	var nl *hub
	waitFor(t, 20*time.Second, "a new leader", func() bool {
		for _, f := range fs {
			if f.node.IsLeader() {
				nl = f
				return true
			}
		}
		return false
	})
	elected := time.Now()
	// Until each route has 20 acks after the election.
	resumedBoth := poll(40*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := map[string]int{}
		for _, a := range acks {
			if a.at.After(elected) {
				n[a.route]++
			}
		}
		return n["follower"] >= 20 && n["hubs"] >= 20
	})
	stop.Store(true)
	wg.Wait()
	old.apiGate.open()
	old.raftGate.open()

	// The figures: when each route's first ack after the election came.
	mu.Lock()
	resumed := map[string]time.Duration{}
	var longest time.Duration
	for i, a := range acks {
		if a.at.After(elected) {
			if _, ok := resumed[a.route]; !ok {
				resumed[a.route] = a.at.Sub(elected)
			}
		}
		if i > 0 {
			longest = max(longest, a.at.Sub(acks[i-1].at))
		}
	}
	mu.Unlock()
	t.Logf("%s: leader %s lost; %s elected %v later; writes resumed %v (via a follower) and %v (via hubapi.Hubs) after the election; longest gap between acks %v",
		mode, old.id, nl.id, elected.Sub(lost).Round(time.Millisecond), resumed["follower"].Round(time.Millisecond),
		resumed["hubs"].Round(time.Millisecond), longest.Round(time.Millisecond))
	if !resumedBoth {
		t.Fatalf("publishing did not resume on both routes within 40s of the election (resumed: %v)", resumed)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every ack once, at the offset stored, in each publisher's order, on
	// every hub.
	byID := map[string]uint64{}
	for _, a := range acks {
		if prev, ok := byID[a.id]; ok {
			t.Fatalf("%s acknowledged twice (offsets %d, %d)", a.id, prev, a.offset)
		}
		byID[a.id] = a.offset
	}
	for _, h := range c.hubs {
		eventually(t, 20*time.Second, func() error {
			got, err := c.readAll(h.api, channel)
			if err != nil {
				return err
			}
			if len(got.Messages) != len(byID) {
				return fmt.Errorf("%s: %d messages, want %d", h.id, len(got.Messages), len(byID))
			}
			return nil
		})
		got, _ := c.readAll(h.api, channel)
		checkDense(t, h.id, got.Messages, 1, uint64(len(byID)))
		last := map[string]int{} // publisher -> last sequence number seen
		for _, m := range got.Messages {
			var id string
			if err := json.Unmarshal(m.Data, &id); err != nil {
				t.Fatalf("%s: offset %d holds %s", h.id, m.Offset, m.Data)
			}
			if off, ok := byID[id]; !ok || off != m.Offset {
				t.Fatalf("%s: %s stored at offset %d, acknowledged at %d (%v)", h.id, id, m.Offset, off, ok)
			}
			i := strings.LastIndexByte(id, '-')
			seq, _ := strconv.Atoi(id[i+1:])
			if prev, ok := last[id[:i]]; ok && seq <= prev {
				t.Fatalf("%s: %s stored after %s-%d", h.id, id, id[:i], prev)
			}
			last[id[:i]] = seq
		}
	}
}
