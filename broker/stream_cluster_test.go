package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// streamReader follows GET /v1/stream on one hub.
type streamReader struct {
	cancel context.CancelFunc
	resp   *http.Response
	sc     *bufio.Scanner
}

func (c *cluster) openStream(h *hub, from uint64) *streamReader {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v1/stream?from=%d", h.api, from), nil)
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		cancel()
		c.t.Fatalf("GET /v1/stream on %s: %v", h.id, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		c.t.Fatalf("GET /v1/stream on %s: %s", h.id, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	r := &streamReader{cancel: cancel, resp: resp, sc: sc}
	c.t.Cleanup(r.close)
	return r
}

func (r *streamReader) close() {
	r.cancel()
	r.resp.Body.Close()
}

// messages reads lines until it has n messages, skipping heartbeats.
func (r *streamReader) messages(t *testing.T, n int) []wire.StreamLine {
	t.Helper()
	var out []wire.StreamLine
	for len(out) < n && r.sc.Scan() {
		var l wire.StreamLine
		if err := json.Unmarshal(r.sc.Bytes(), &l); err != nil {
			t.Fatalf("stream line %q: %v", r.sc.Bytes(), err)
		}
		if l.Reset {
			t.Fatalf("stream reset: %+v", l)
		}
		if l.Channel != "" {
			out = append(out, l)
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d of %d messages: %v", len(out), n, r.sc.Err())
	}
	return out
}

// line reads the next line.
func (r *streamReader) line(t *testing.T) wire.StreamLine {
	t.Helper()
	if !r.sc.Scan() {
		t.Fatalf("stream ended: %v", r.sc.Err())
	}
	var l wire.StreamLine
	if err := json.Unmarshal(r.sc.Bytes(), &l); err != nil {
		t.Fatalf("stream line %q: %v", r.sc.Bytes(), err)
	}
	return l
}

// A stream from now says at once where it starts: its first line is a
// heartbeat at the index the hub had applied, before the entries committed
// after it was opened.
func TestStreamSaysWhereItStarts(t *testing.T) {
	c, h := startOne(t)
	c.publish(h.api, "start", `1`, "")
	st, err := c.status(h.api)
	if err != nil {
		t.Fatal(err)
	}
	r := c.openStream(h, 0)
	res, _ := c.publish(h.api, "start", `2`, "")
	first := r.line(t)
	if first.Index != 0 || first.Reset || first.Applied < st.AppliedIndex {
		t.Fatalf("first line %+v; want a heartbeat at %d or later", first, st.AppliedIndex)
	}
	for {
		l := r.line(t)
		if l.Channel == "start" {
			if l.Offset != res.Offset || l.Index <= first.Applied {
				t.Fatalf("message %+v after a start at %d; want offset %d", l, first.Applied, res.Offset)
			}
			return
		}
		if l.Index > 0 && l.Index <= first.Applied {
			t.Fatalf("line %+v at or before the start %d", l, first.Applied)
		}
	}
}

// TestStreamFollowsCommits follows the commit stream of every hub from
// "now" while messages are published: each hub streams every message once,
// per channel in offset order, and all hubs agree on the order and the
// Raft index of each.
func TestStreamFollowsCommits(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	readers := make([]*streamReader, len(c.hubs))
	for i, h := range c.hubs {
		readers[i] = c.openStream(h, 0)
	}
	const n = 60
	want := map[string]string{} // channel/offset -> data
	for i := range n {
		ch := fmt.Sprintf("stream/%d", i%3)
		data := fmt.Sprintf(`{"i":%d}`, i)
		r, ok := c.publishRetry(apis(c.hubs[i%3], l), ch, data, fmt.Sprint(i))
		if !ok {
			t.FailNow()
		}
		want[fmt.Sprintf("%s/%d", ch, r.Offset)] = data
	}
	var first []wire.StreamLine
	for i, r := range readers {
		h := c.hubs[i]
		got := r.messages(t, n)
		next := map[string]uint64{}
		var lastIndex uint64
		for _, m := range got {
			if m.Index < lastIndex {
				t.Fatalf("%s: index %d after %d", h.id, m.Index, lastIndex)
			}
			lastIndex = m.Index
			if next[m.Channel] == 0 {
				next[m.Channel] = 1
			}
			if m.Offset != next[m.Channel] {
				t.Fatalf("%s: %s offset %d, want %d", h.id, m.Channel, m.Offset, next[m.Channel])
			}
			next[m.Channel]++
			if w := want[fmt.Sprintf("%s/%d", m.Channel, m.Offset)]; string(m.Data) != w || m.Epoch == "" || m.Time == nil {
				t.Fatalf("%s: %+v, want data %s", h.id, m, w)
			}
		}
		if first == nil {
			first = got
			continue
		}
		for j := range got {
			a, b := first[j], got[j]
			if a.Index != b.Index || a.Channel != b.Channel || a.Offset != b.Offset || !a.Time.Equal(*b.Time) {
				t.Fatalf("%s streams %+v where %s streams %+v", h.id, b, c.hubs[0].id, a)
			}
		}
	}
}
