package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseStream is GET /sse read as an EventSource reads it: message events'
// offsets by channel, subscribed events, and the last event id.
type sseStream struct {
	t      *testing.T
	cancel context.CancelFunc
	ended  chan struct{}

	mu     sync.Mutex
	lastID string
	offs   map[string][]uint64
	subs   map[string]sseSubscribed
	closes []string
	err    error // why the stream ended
}

type sseSubscribed struct {
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
	First     uint64 `json:"first"`
	Next      uint64 `json:"next"`
}

func openSSE(t *testing.T, url, lastID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream lasts
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	s := &sseStream{t: t, cancel: cancel, ended: make(chan struct{}), lastID: lastID,
		offs: map[string][]uint64{}, subs: map[string]sseSubscribed{}}
	t.Cleanup(func() { cancel(); <-s.ended })
	go func() {
		defer close(s.ended)
		defer resp.Body.Close()
		s.read(bufio.NewScanner(resp.Body))
	}()
	return s
}

func (s *sseStream) read(sc *bufio.Scanner) {
	id, event, data := s.lastID, "", ""
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			event = value
		case "data":
			data = value
		}
		if line != "" || data == "" {
			continue
		}
		s.mu.Lock()
		s.lastID = id
		switch event {
		case "":
			var m struct {
				Channel string `json:"channel"`
				Offset  uint64 `json:"offset"`
			}
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				s.err = fmt.Errorf("message %s: %v", data, err)
			}
			s.offs[m.Channel] = append(s.offs[m.Channel], m.Offset)
		case "subscribed":
			var sb sseSubscribed
			_ = json.Unmarshal([]byte(data), &sb)
			s.subs[sb.Channel] = sb
		case "close":
			s.closes = append(s.closes, data)
		}
		s.mu.Unlock()
		event, data = "", ""
	}
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("stream ended: %v", sc.Err())
	}
	s.mu.Unlock()
}

// waitOffsets waits until every channel of want has delivered exactly
// offsets 1..want[ch] since the stream started at from[ch], in order.
func (s *sseStream) waitOffsets(what string, from, to map[string]uint64) {
	s.t.Helper()
	ok := poll(30*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for ch, last := range to {
			if uint64(len(s.offs[ch])) < last-from[ch]+1 {
				return false
			}
		}
		return true
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.t.Fatalf("waiting for %s: got %v (stream: %v)", what, s.offs, s.err)
	}
	for ch, last := range to {
		var want []uint64
		for o := from[ch]; o <= last; o++ {
			want = append(want, o)
		}
		if got := s.offs[ch]; fmt.Sprint(got) != fmt.Sprint(want) {
			s.t.Fatalf("%s: channel %s got offsets %v, want %v", what, ch, got, want)
		}
	}
}

func (s *sseStream) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// TestSSEResumesAfterGatewayKill: a stream of two channels from a
// `comet gateway` that is killed (SIGKILL) and started again; messages
// are published meanwhile. The stream opened again with the last event's
// id as Last-Event-ID gets exactly what it missed on both channels, then
// what comes live.
func TestSSEResumesAfterGatewayKill(t *testing.T) {
	c := startCluster(t, 1)
	g := c.startGateway("g1")
	pub := func(ch string, from, to int) {
		t.Helper()
		for n := from; n <= to; n++ {
			if res := c.mustPublish(ch, fmt.Sprintf("%s-%d", ch, n), json.RawMessage(fmt.Sprint(n))); res.Offset != uint64(n) {
				t.Fatalf("published %s %d at offset %d", ch, n, res.Offset)
			}
		}
	}
	pub("sse:a", 1, 3)
	url := "http://" + g.api + "/sse?channel=sse:a&channel=sse:b&from=1"
	s := openSSE(t, url, "")
	s.waitOffsets("the history", map[string]uint64{"sse:a": 1}, map[string]uint64{"sse:a": 3})
	pub("sse:b", 1, 2)
	pub("sse:a", 4, 4)
	s.waitOffsets("live", map[string]uint64{"sse:a": 1, "sse:b": 1}, map[string]uint64{"sse:a": 4, "sse:b": 2})
	last := s.last()

	c.kill(g)
	select {
	case <-s.ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not end when its gateway was killed")
	}
	pub("sse:a", 5, 7)
	pub("sse:b", 3, 4)
	c.start(g) // the same port
	if !c.waitGatewayReady(g, 30*time.Second) {
		t.Fatalf("the gateway did not come back:\n%s", g.logTail(20))
	}
	s2 := openSSE(t, url, last)
	s2.waitOffsets("the replay", map[string]uint64{"sse:a": 5, "sse:b": 3}, map[string]uint64{"sse:a": 7, "sse:b": 4})
	pub("sse:b", 5, 5)
	s2.waitOffsets("live again", map[string]uint64{"sse:a": 5, "sse:b": 3}, map[string]uint64{"sse:a": 7, "sse:b": 5})
	s2.mu.Lock()
	defer s2.mu.Unlock()
	for _, ch := range []string{"sse:a", "sse:b"} {
		if sb := s2.subs[ch]; !sb.Recovered || sb.Epoch == "" {
			t.Errorf("%s resumed: %+v", ch, sb)
		}
	}
}

// TestBrowserEventSource: a plain EventSource in headless Chromium, no
// client library, follows two channels of a `comet gateway` that is
// killed (SIGKILL) and restarted, then stopped (SIGTERM: a close event)
// and started again, with messages published meanwhile: the browser
// reconnects by itself with Last-Event-ID and ends with every offset of
// both channels once, in order.
func TestBrowserEventSource(t *testing.T) {
	b := startBrowser(t)
	c := startCluster(t, 1)
	g := c.startGateway("g1")
	n := map[string]int{}
	publish := func(ch string, k int) {
		t.Helper()
		for range k {
			n[ch]++
			c.mustPublish(ch, fmt.Sprintf("%s-%d", ch, n[ch]), json.RawMessage(fmt.Sprintf(`{"n":%d}`, n[ch])))
		}
	}
	publish("es:a", 5) // before: from=1 asks for them
	// A page of the gateway's origin (any will do).
	b.open("es", "http://"+g.api+"/healthz", false)
	b.eval("es", `(() => {
		window.es = { offs: {}, subs: [], closes: [], opens: 0, errors: 0 };
		const src = new EventSource('/sse?channel=es:a&channel=es:b&from=1');
		src.onopen = () => { es.opens++; };
		src.onerror = () => { es.errors++; };
		src.onmessage = (e) => {
			const m = JSON.parse(e.data);
			(es.offs[m.channel] ||= []).push(m.offset);
			es.lastId = e.lastEventId;
		};
		src.addEventListener('subscribed', (e) => es.subs.push(JSON.parse(e.data)));
		src.addEventListener('close', (e) => es.closes.push(JSON.parse(e.data)));
		window.src = src;
		return true;
	})()`, nil)
	want := func(what string) {
		t.Helper()
		b.wait("es", 60*time.Second, what, fmt.Sprintf(`(es.offs['es:a'] || []).length >= %d && (es.offs['es:b'] || []).length >= %d`, n["es:a"], n["es:b"]))
		var offs map[string][]uint64
		b.eval("es", `es.offs`, &offs)
		checkOffsets(t, what+": es:a", offs["es:a"], 1, uint64(n["es:a"]))
		checkOffsets(t, what+": es:b", offs["es:b"], 1, uint64(n["es:b"]))
	}
	publish("es:b", 3)
	want("live")

	// SIGKILL: the stream is cut; messages come meanwhile.
	c.kill(g)
	b.wait("es", 20*time.Second, "the drop", `es.errors >= 1`)
	publish("es:a", 10)
	publish("es:b", 10)
	c.restart(g)
	if !c.waitGatewayReady(g, 30*time.Second) {
		t.Fatalf("gateway not ready after its restart:\n%s", g.logTail(20))
	}
	want("after the kill")
	publish("es:b", 2)
	want("live after the kill")

	// SIGTERM: the gateway says so (close, 4001), the browser comes back.
	c.stop(g, 15*time.Second)
	b.wait("es", 20*time.Second, "the close event", `es.closes.length === 1 && es.closes[0].code === 4001`)
	publish("es:a", 4)
	c.restart(g)
	if !c.waitGatewayReady(g, 30*time.Second) {
		t.Fatalf("gateway not ready after its restart:\n%s", g.logTail(20))
	}
	want("after the stop")
	var st struct {
		Opens int             `json:"opens"`
		Ready int             `json:"ready"`
		Subs  []sseSubscribed `json:"subs"`
	}
	b.eval("es", `({ opens: es.opens, ready: src.readyState, subs: es.subs })`, &st)
	if st.Opens != 3 || st.Ready != 1 || len(st.Subs) != 6 {
		t.Errorf("EventSource: %d opens, readyState %d, %d subscribed events; want 3, 1 (open), 6", st.Opens, st.Ready, len(st.Subs))
	}
	for _, s := range st.Subs {
		if !s.Recovered {
			t.Errorf("subscribed %+v", s)
		}
	}
}
