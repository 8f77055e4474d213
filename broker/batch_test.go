package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/wire"
)

// publishBatch posts reqs as one batch publish to api and returns the
// status and, on 200, the results.
func (c *cluster) publishBatch(api string, reqs []wire.PublishRequest) (int, []wire.PublishResult, []byte) {
	c.t.Helper()
	status, raw := c.do(http.MethodPost, api, "/v1/publish", mustJSON(c.t, reqs))
	var out []wire.PublishResult
	if status == http.StatusOK {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("batch answer is not an array of results: %v: %q", err, raw)
		}
	}
	return status, out, raw
}

// leaderChanges is the sum of the leader changes the running hubs saw: while
// it stays the same, no publish met a change of leader.
func (c *cluster) leaderChanges() uint64 {
	var n uint64
	for _, h := range c.alive() {
		n += uint64(h.node.LeaderChanges())
	}
	return n
}

// TestPublishBatch: a batch sent to the leader or to a follower is stored
// in the order given and answered with one result per publish, in order; a
// bad channel and an over-size message in the middle are answered with
// their errors while the others are stored; the same batch again is
// answered with the same offsets, flagged duplicate. (Should leadership
// move under a loaded machine, publishes answered unavailable are sent
// again with their ids, and the order is not checked.)
func TestPublishBatch(t *testing.T) {
	c := newCluster(t)
	c.production = true // 1s Raft timeouts: fewer elections under load
	c.start3()
	l := c.leader()
	for _, target := range []*hub{l, c.followers(l)[0]} {
		name := "leader"
		if target != l {
			name = "follower"
		}
		t.Run(name, func(t *testing.T) {
			const n = 200
			ch := "batch." + name
			reqs := make([]wire.PublishRequest, n)
			for i := range reqs {
				reqs[i] = wire.PublishRequest{Channel: ch, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), ID: fmt.Sprintf("%s-%d", name, i)}
			}
			reqs[100].Channel = "bad channel!"
			reqs[150].Data = json.RawMessage(`"` + strings.Repeat("x", testMaxMessageBytes) + `"`)
			wantCode := map[int]string{100: wire.CodeBadRequest, 150: wire.CodeTooLarge}
			changes := c.leaderChanges()

			// send sends the batch until no publish is answered
			// unavailable (a change of leader), and checks the results.
			send := func(round string) []wire.PublishResult {
				t.Helper()
				var res []wire.PublishResult
				eventually(t, 20*time.Second, func() error {
					status, out, raw := c.publishBatch(target.api, reqs)
					if status != http.StatusOK || len(out) != n {
						t.Fatalf("%s: %d, %d results: %.300s", round, status, len(out), raw)
					}
					res = out
					for i, r := range res {
						if r.Code == wire.CodeUnavailable && wantCode[i] == "" && c.leaderChanges() != changes {
							return fmt.Errorf("%s: publish %d: %s (leadership moved)", round, i, r.Message)
						}
					}
					return nil
				})
				for i, r := range res {
					if code, bad := wantCode[i]; bad {
						if r.Code != code || r.Message == "" || r.Channel != reqs[i].Channel || r.Offset != 0 {
							t.Fatalf("%s: result %d = %+v, want code %s with a message", round, i, r, code)
						}
					} else if r.Code != "" || r.Channel != ch || r.Offset == 0 || r.Epoch == "" {
						t.Fatalf("%s: result %d = %+v, want an offset on %s", round, i, r, ch)
					}
				}
				return res
			}
			first := send("first")
			again := send("again")
			stable := c.leaderChanges() == changes
			next := uint64(1)
			for i := range reqs {
				if _, bad := wantCode[i]; bad {
					continue
				}
				if again[i].Offset != first[i].Offset || !again[i].Duplicate {
					t.Fatalf("publish %d sent again: %+v, first %+v; want the same offset, duplicate", i, again[i], first[i])
				}
				if stable && (first[i].Offset != next || first[i].Duplicate) {
					t.Fatalf("publish %d: %+v, want offset %d, not a duplicate", i, first[i], next)
				}
				next++
			}
			msgs, err := c.readAll(l.api, ch)
			if err != nil {
				t.Fatal(err)
			}
			checkDense(t, ch, msgs.Messages, 1, n-2)
			for i := range reqs {
				if _, bad := wantCode[i]; bad {
					continue
				}
				if got := string(msgs.Messages[first[i].Offset-1].Data); got != string(reqs[i].Data) {
					t.Fatalf("offset %d holds %s, want %s (publish %d)", first[i].Offset, got, reqs[i].Data, i)
				}
			}
			if !stable {
				t.Logf("leadership moved: order not checked")
			}
		})
	}
}

// TestPublishBatchLimits: a batch over MaxBatchPublishes is refused 400,
// one over MaxBatchBytes 413, each with a message that says the limit; an
// empty batch is answered with no results; a single publish keeps its
// answer, a bare object.
func TestPublishBatchLimits(t *testing.T) {
	c := newCluster(t)
	c.production = true
	c.start3()
	l := c.leader()
	reqs := make([]wire.PublishRequest, broker.MaxBatchPublishes+1)
	for i := range reqs {
		reqs[i] = wire.PublishRequest{Channel: "limits", Data: json.RawMessage(`1`)}
	}
	status, _, raw := c.publishBatch(l.api, reqs)
	if e := errorBody(t, "too many", raw); status != http.StatusBadRequest || e.Code != wire.CodeBadRequest ||
		!strings.Contains(e.Message, fmt.Sprint(broker.MaxBatchPublishes)) {
		t.Fatalf("a batch of %d: %d %s", len(reqs), status, raw)
	}

	big := make([]wire.PublishRequest, 0, broker.MaxBatchBytes/testMaxMessageBytes+2)
	data := json.RawMessage(`"` + strings.Repeat("x", testMaxMessageBytes-2) + `"`)
	for size := 0; size <= broker.MaxBatchBytes; size += len(data) + 40 {
		big = append(big, wire.PublishRequest{Channel: "limits", Data: data})
	}
	status, _, raw = c.publishBatch(l.api, big[:min(len(big), broker.MaxBatchPublishes)])
	_ = status
	// Over the byte limit with fewer publishes than the count limit.
	body := []byte(`[` + strings.Repeat(`{"channel":"limits","data":"`+strings.Repeat("y", 10000)+`"},`, broker.MaxBatchBytes/10000+1))
	body[len(body)-1] = ']'
	status, raw = c.do(http.MethodPost, l.api, "/v1/publish", body)
	if e := errorBody(t, "too big", raw); status != http.StatusRequestEntityTooLarge || e.Code != wire.CodeTooLarge {
		t.Fatalf("a batch body of %d bytes: %d %s", len(body), status, raw)
	}

	for _, body := range []string{"[]", " \n [ ] "} {
		status, raw = c.do(http.MethodPost, l.api, "/v1/publish", []byte(body))
		if status != http.StatusOK || strings.TrimSpace(string(raw)) != "[]" {
			t.Fatalf("empty batch %q: %d %s", body, status, raw)
		}
	}
	status, raw = c.do(http.MethodPost, l.api, "/v1/publish", []byte(`[{"channel":"limits","data":1,"extra":2}]`))
	if status != http.StatusBadRequest {
		t.Fatalf("a batch with an unknown field: %d %s", status, raw)
	}
	var r publishResult
	eventually(t, 20*time.Second, func() error {
		if r = c.tryPublish(l.api, "limits", `"one"`, "one"); retryable(r.status) {
			return fmt.Errorf("single publish: %d %s", r.status, r.raw)
		}
		return nil
	})
	var obj map[string]any
	if r.status != http.StatusOK || json.Unmarshal(r.raw, &obj) != nil || obj["offset"] == nil || obj["channel"] != "limits" || len(obj) != 3 {
		t.Fatalf("single publish: %d %s, want channel, offset, epoch", r.status, r.raw)
	}
}

// TestForwardBurstBounded: a burst of 10,000 PublishAsync calls on a
// follower, none waited for, is forwarded to the leader with a bounded
// number of goroutines (no goroutine per publish); every publish is
// answered once and stored once, and the publishes of each channel are
// stored in the order of the calls.
func TestForwardBurstBounded(t *testing.T) {
	c := newCluster(t)
	c.production = true
	c.start3()
	l := c.leader()
	f := c.followers(l)[0]
	// Warm the connections to the leader up, so they are not counted.
	if _, ok := c.publishRetry(apis(f), "burst.warm", `1`, "warm"); !ok {
		t.FailNow()
	}
	const n, channels = 10000, 8
	changes := c.leaderChanges()
	base := runtime.NumGoroutine()
	var (
		peak     atomic.Int64
		stop     = make(chan struct{})
		sampled  = make(chan struct{})
		answered atomic.Int64
		mu       sync.Mutex
		offsets  = make([]uint64, n)
		failed   []string
		// unavailable: answered so (possible only if leadership moved)
		unavailable int
	)
	go func() {
		defer close(sampled)
		for {
			if g := int64(runtime.NumGoroutine()); g > peak.Load() {
				peak.Store(g)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for i := range n {
		f.svc.PublishAsync(context.Background(), fmt.Sprintf("burst.%d", i%channels), json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("b%d", i),
			func(res wire.PublishResponse, err error) {
				mu.Lock()
				switch {
				case err != nil && broker.ErrorCode(err) == wire.CodeUnavailable:
					unavailable++ // leadership moved: the caller retries
				case err != nil:
					failed = append(failed, fmt.Sprintf("publish %d: %v", i, err))
				case offsets[i] != 0:
					failed = append(failed, fmt.Sprintf("publish %d answered twice", i))
				default:
					offsets[i] = res.Offset
				}
				mu.Unlock()
				answered.Add(1)
			})
	}
	waitFor(t, 60*time.Second, "every publish answered", func() bool { return answered.Load() == n })
	close(stop)
	<-sampled
	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("%d failures, first: %s", len(failed), failed[0])
	}
	// One per lane and its leader watch, plus the HTTP connections of the
	// lanes' requests on both sides: far fewer than one per publish.
	if extra := peak.Load() - int64(base); extra > 200 {
		t.Fatalf("%d goroutines over the %d before, for %d publishes", extra, base, n)
	} else {
		t.Logf("peak %d goroutines, %d before the burst", peak.Load(), base)
	}
	moved := c.leaderChanges() != changes
	if unavailable > 0 && !moved {
		t.Fatalf("%d publishes answered unavailable with no change of leader", unavailable)
	}
	if moved {
		t.Logf("leadership moved: %d publishes answered unavailable, order not checked", unavailable)
	}
	for ch := range channels {
		name := fmt.Sprintf("burst.%d", ch)
		msgs, err := c.readAll(l.api, name)
		if err != nil {
			t.Fatal(err)
		}
		stored := 0
		for i := ch; i < n; i += channels {
			if offsets[i] != 0 {
				stored++
			}
		}
		// One answered unavailable may have been stored all the same.
		if len(msgs.Messages) < stored || (!moved && len(msgs.Messages) != stored) {
			t.Fatalf("%s holds %d messages, %d acknowledged", name, len(msgs.Messages), stored)
		}
		checkDense(t, name, msgs.Messages, 1, uint64(len(msgs.Messages)))
		seen := map[string]bool{}
		for _, m := range msgs.Messages {
			if seen[string(m.Data)] {
				t.Fatalf("%s stored twice in %s", m.Data, name)
			}
			seen[string(m.Data)] = true
		}
		last := uint64(0)
		for i := ch; i < n; i += channels {
			if offsets[i] == 0 {
				continue
			}
			if !bytes.Equal(msgs.Messages[offsets[i]-1].Data, []byte(fmt.Sprintf(`{"i":%d}`, i))) {
				t.Fatalf("offset %d of %s holds %s, answered to publish %d", offsets[i], name, msgs.Messages[offsets[i]-1].Data, i)
			}
			if offsets[i] <= last && !moved {
				t.Fatalf("publish %d stored at %d of %s, before an earlier call (%d)", i, offsets[i], name, last)
			}
			last = offsets[i]
		}
	}
}

// TestForwardLeaderMoves: publishes with ids forwarded by a follower while
// leadership moves are each answered once, stored or "unavailable"; none
// is stored twice, and those answered with an offset are stored there.
func TestForwardLeaderMoves(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]
	type answer struct {
		i   int
		res wire.PublishResponse
		err error
	}
	const n = 3000
	answers := make(chan answer, n)
	moved := make(chan error, 1)
	for i := range n {
		if i == n/3 {
			waitFor(t, 20*time.Second, "the first third answered", func() bool { return len(answers) >= n/3 })
			go func() {
				deadline := time.Now().Add(30 * time.Second)
				for {
					err := l.node.TransferLeadership()
					if err != nil && !l.node.IsLeader() {
						err = nil // the lead left l all the same
					}
					if err == nil || time.Now().After(deadline) {
						moved <- err
						return
					}
				}
			}()
		}
		f.svc.PublishAsync(context.Background(), "fwd-moving", json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("m%d", i),
			func(res wire.PublishResponse, err error) { answers <- answer{i, res, err} })
	}
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	byOffset := map[uint64]int{}
	seen := make([]bool, n)
	for range n {
		select {
		case a := <-answers:
			if seen[a.i] {
				t.Fatalf("publish %d answered twice", a.i)
			}
			seen[a.i] = true
			if a.err != nil {
				if broker.ErrorCode(a.err) != wire.CodeUnavailable {
					t.Errorf("publish %d: %v", a.i, a.err)
				}
				continue
			}
			if prev, dup := byOffset[a.res.Offset]; dup {
				t.Fatalf("offset %d answered to publishes %d and %d", a.res.Offset, prev, a.i)
			}
			byOffset[a.res.Offset] = a.i
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d publishes unanswered after 30s", n-len(byOffset), n)
		}
	}
	if len(byOffset) == 0 {
		t.Fatalf("none of %d publishes stored", n)
	}
	t.Logf("%d of %d publishes stored, %d leader changes seen by the old leader", len(byOffset), n, l.node.LeaderChanges())
	eventually(t, 10*time.Second, func() error {
		msgs, err := c.readAll(c.leader().api, "fwd-moving")
		if err != nil {
			return err
		}
		stored := map[string]uint64{}
		found := 0
		for _, m := range msgs.Messages {
			if prev, twice := stored[string(m.Data)]; twice {
				t.Fatalf("%s stored twice, at %d and %d", m.Data, prev, m.Offset)
			}
			stored[string(m.Data)] = m.Offset
			if i, ok := byOffset[m.Offset]; ok {
				if want := fmt.Sprintf(`{"i":%d}`, i); string(m.Data) != want {
					t.Fatalf("offset %d holds %s, answered to %s", m.Offset, m.Data, want)
				}
				found++
			}
		}
		if found != len(byOffset) {
			return fmt.Errorf("%d of %d acknowledged publishes on the leader", found, len(byOffset))
		}
		return nil
	})
}
