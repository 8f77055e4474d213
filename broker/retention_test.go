package broker_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
)

// TestRetentionTrimsWithoutRenumbering configures every hub with a rule
// that keeps 3 messages of "short:*": after 10 publishes the API reports
// first=8 next=11 and offsets 8..10, on every hub, and later publishes go
// on from 11.
func TestRetentionTrimsWithoutRenumbering(t *testing.T) {
	rules := []log.Rule{{Pattern: "short:*", MaxMessages: 3}}
	c := newCluster3(t, func(cfg *broker.Config) { cfg.Retention = rules })
	l := c.leader()
	// The leader replicates its rules once it leads; wait for every hub.
	for _, h := range c.hubs {
		waitFor(t, 10*time.Second, h.id+" to have the retention rules", func() bool {
			got, err := h.log.Retention()
			return err == nil && slices.Equal(got, rules)
		})
	}

	for i := 1; i <= 10; i++ {
		via := c.hubs[i%3].api
		r, ok := c.publishRetry([]string{via, l.api}, "short:x", fmt.Sprintf(`{"n":%d}`, i), fmt.Sprint(i))
		if !ok {
			t.FailNow()
		}
		if r.Offset != uint64(i) {
			t.Fatalf("publish %d: offset %d", i, r.Offset)
		}
		// A channel no rule matches keeps everything (built-in defaults).
		if _, ok := c.publishRetry([]string{via}, "long:x", fmt.Sprintf(`{"n":%d}`, i), fmt.Sprint(i)); !ok {
			t.FailNow()
		}
	}

	check := func(h *hub, from uint64, first, next uint64, offsets ...uint64) error {
		m, status, raw := c.messages(h.api, "short:x", from, 100)
		if status != http.StatusOK {
			return fmt.Errorf("%s: %d %s", h.id, status, raw)
		}
		var got []uint64
		for _, msg := range m.Messages {
			got = append(got, msg.Offset)
			if want := fmt.Sprintf(`{"n":%d}`, msg.Offset); string(msg.Data) != want {
				t.Fatalf("%s: offset %d holds %s, want %s", h.id, msg.Offset, msg.Data, want)
			}
		}
		if m.First != first || m.Next != next || !slices.Equal(got, offsets) {
			return fmt.Errorf("%s: from=%d gave first=%d next=%d offsets %v; want first=%d next=%d offsets %v",
				h.id, from, m.First, m.Next, got, first, next, offsets)
		}
		return nil
	}
	for _, h := range c.hubs {
		eventually(t, 10*time.Second, func() error { return check(h, 1, 8, 11, 8, 9, 10) })
		if err := check(h, 0, 8, 11, 8, 9, 10); err != nil {
			t.Error(err)
		}
		if err := check(h, 9, 8, 11, 9, 10); err != nil {
			t.Error(err)
		}
		if err := check(h, 11, 8, 11); err != nil {
			t.Error(err)
		}
		eventually(t, 10*time.Second, func() error {
			long, err := c.readAll(h.api, "long:x")
			if err == nil && (long.First != 1 || long.Next != 11) {
				err = fmt.Errorf("%s: long:x has first=%d next=%d, want 1 and 11", h.id, long.First, long.Next)
			}
			if err == nil {
				checkDense(t, h.id+" long:x", long.Messages, 1, 10)
			}
			return err
		})
	}

	for i := 11; i <= 12; i++ {
		r, ok := c.publishRetry([]string{l.api}, "short:x", fmt.Sprintf(`{"n":%d}`, i), fmt.Sprint(i))
		if !ok {
			t.FailNow()
		}
		if r.Offset != uint64(i) {
			t.Fatalf("publish %d after trimming: offset %d", i, r.Offset)
		}
	}
	for _, h := range c.hubs {
		eventually(t, 10*time.Second, func() error { return check(h, 1, 10, 13, 10, 11, 12) })
	}
}

// TestMaxIDsRefusesUnavailable: the leader replicates its MaxIDs; past it a
// publish with a new id is answered 503 unavailable on every hub's API and
// stores nothing, while retries of held ids and publishes without ids go
// through.
func TestMaxIDsRefusesUnavailable(t *testing.T) {
	c := newCluster3(t, func(cfg *broker.Config) { cfg.MaxIDs = 2 })
	for _, h := range c.hubs {
		waitFor(t, 10*time.Second, h.id+" to have MaxIDs 2", func() bool { return h.log.MaxIDs() == 2 })
	}
	l := c.leader()
	all := apis(c.hubs...)
	for i, id := range []string{"k1", "k2"} {
		if r, ok := c.publishRetry(all, "ids", fmt.Sprintf(`{"n":%d}`, i+1), id); !ok || r.Offset != uint64(i+1) {
			t.Fatalf("publish %s: %+v", id, r)
		}
	}
	r := c.tryPublish(l.api, "ids", `{"n":3}`, "k3")
	if r.status != http.StatusServiceUnavailable || r.err.Code != wire.CodeUnavailable || !strings.Contains(r.err.Message, "publish ids") {
		t.Fatalf("a third new id: %d %s, want 503 unavailable", r.status, r.raw)
	}
	if r, ok := c.publishRetry(all, "ids", `{"n":1}`, "k1"); !ok || !r.Duplicate || r.Offset != 1 {
		t.Fatalf("retry of k1: %+v, want a duplicate of offset 1", r)
	}
	if r, ok := c.publish(l.api, "ids", `{"n":3}`, ""); !ok || r.Offset != 3 {
		t.Fatalf("publish without id: %+v, want offset 3", r)
	}
	for _, h := range c.hubs {
		eventually(t, 10*time.Second, func() error {
			m, err := c.readAll(h.api, "ids")
			if err == nil && m.Next != 4 {
				err = fmt.Errorf("%s: next %d, want 4 (k3 not stored)", h.id, m.Next)
			}
			return err
		})
		if n := h.log.RefusedIDs(); n != 1 {
			t.Errorf("%s: RefusedIDs %d, want 1", h.id, n)
		}
	}
}
