package broker_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
