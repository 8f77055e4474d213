package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sseEvent is one event of a stream, as an EventSource dispatches it.
type sseEvent struct {
	id    string // the last event id after it
	event string // "message" when none was given
	data  string
}

// sseMsg is the data of a message event.
type sseMsg struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Data    json.RawMessage `json:"data"`
}

// sseClient reads a stream as an EventSource does.
type sseClient struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	errc   chan error
	lastID string
	retry  string
	seen   *sseSeen
}

// openSSE opens GET /sse?query with Last-Event-ID lastID (if any); it fails
// the test unless the answer is 200 text/event-stream.
func openSSE(t testing.TB, gatewayURL, query, lastID string) *sseClient {
	t.Helper()
	resp, cancel := getSSE(t, gatewayURL, query, lastID, nil)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /sse?%s: %s: %s", query, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	c := &sseClient{t: t, resp: resp, cancel: cancel, events: make(chan sseEvent, 1024), errc: make(chan error, 1), lastID: lastID}
	ready := make(chan string, 1)
	go c.readLoop(ready)
	select {
	case c.retry = <-ready:
	case err := <-c.errc:
		t.Fatalf("stream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no retry field at the start of the stream")
	}
	return c
}

func getSSE(t testing.TB, gatewayURL, query, lastID string, header http.Header) (*http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL+"/sse?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp, cancel
}

// readLoop parses the stream (the HTML spec's event stream interpretation,
// for the fields the gateway writes).
func (c *sseClient) readLoop(ready chan<- string) {
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	id, event, data, hasData := c.lastID, "", "", false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData {
				if event == "" {
					event = "message"
				}
				c.events <- sseEvent{id: id, event: event, data: data}
			}
			event, data, hasData = "", "", false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			event = value
		case "data":
			if hasData {
				data += "\n"
			}
			data, hasData = data+value, true
		case "retry":
			ready <- value
		default:
			c.errc <- fmt.Errorf("unknown field %q", line)
			return
		}
	}
	c.errc <- fmt.Errorf("stream ended: %v", sc.Err())
	close(c.events)
}

// next returns the next event.
func (c *sseClient) next() sseEvent {
	c.t.Helper()
	select {
	case e, ok := <-c.events:
		if !ok {
			c.t.Fatalf("stream ended: %v", <-c.errc)
		}
		c.lastID = e.id
		return e
	case <-time.After(10 * time.Second):
		c.t.Fatal("no event within 10s")
	}
	return sseEvent{}
}

// expect returns the next event, which must be of type event.
func (c *sseClient) expect(event string) sseEvent {
	c.t.Helper()
	e := c.next()
	if e.event != event {
		c.t.Fatalf("got event %q %s, want %q", e.event, e.data, event)
	}
	return e
}

// sseSeen is what a stream delivered, by channel.
type sseSeen struct {
	subs map[string]sseSubscribed
	errs map[string]sseError
	offs map[string][]uint64
}

// until reads events into c.seen until cond holds. It fails on a message
// before its channel's subscribed, on a gap or a duplicate within a
// channel, and on data other than publishN's.
func (c *sseClient) until(what string, cond func(*sseSeen) bool) *sseSeen {
	c.t.Helper()
	if c.seen == nil {
		c.seen = &sseSeen{subs: map[string]sseSubscribed{}, errs: map[string]sseError{}, offs: map[string][]uint64{}}
	}
	s := c.seen
	deadline := time.Now().Add(20 * time.Second)
	for !cond(s) {
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: got %+v", what, *s)
		}
		e := c.next()
		switch e.event {
		case "subscribed":
			var sb sseSubscribed
			if err := json.Unmarshal([]byte(e.data), &sb); err != nil {
				c.t.Fatal(err)
			}
			s.subs[sb.Channel] = sb
		case "error":
			var er sseError
			if err := json.Unmarshal([]byte(e.data), &er); err != nil {
				c.t.Fatal(err)
			}
			s.errs[er.Channel] = er
		case "message":
			var m sseMsg
			if err := json.Unmarshal([]byte(e.data), &m); err != nil {
				c.t.Fatalf("message %s: %v", e.data, err)
			}
			if _, ok := s.subs[m.Channel]; !ok {
				c.t.Fatalf("message %s before its subscribed", e.data)
			}
			if o := s.offs[m.Channel]; len(o) > 0 && m.Offset != o[len(o)-1]+1 {
				c.t.Fatalf("channel %s: offset %d after %d", m.Channel, m.Offset, o[len(o)-1])
			}
			if string(m.Data) != fmt.Sprintf(`{"n":%d}`, m.Offset) {
				c.t.Fatalf("channel %s offset %d: data %s", m.Channel, m.Offset, m.Data)
			}
			s.offs[m.Channel] = append(s.offs[m.Channel], m.Offset)
		default:
			c.t.Fatalf("while waiting for %s: event %q %s", what, e.event, e.data)
		}
	}
	return s
}

// got reports whether channel ch delivered exactly offsets from..to.
func (s *sseSeen) got(ch string, from, to uint64) bool {
	o := s.offs[ch]
	return len(o) > 0 && uint64(len(o)) == to-from+1 && o[0] == from
}

// quiet fails if an event other than a comment comes within d.
func (c *sseClient) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case e, ok := <-c.events:
		if ok {
			c.t.Fatalf("unexpected event %q %s", e.event, e.data)
		}
	case <-time.After(d):
	}
}

func (c *sseClient) close() { c.cancel(); c.resp.Body.Close() }

func publishN(t testing.TB, h *testHub, ch string, from, to uint64) {
	t.Helper()
	for o := from; o <= to; o++ {
		if got := h.publish(t, ch, fmt.Sprintf(`{"n":%d}`, o)); got != o {
			t.Fatalf("published %s at %d, want %d", ch, got, o)
		}
	}
}

// TestSSELive: a stream of two channels gets their live messages, each
// with an id, after connected and a subscribed per channel.
func TestSSELive(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	publishN(t, hub, "a", 1, 3) // before: not sent (live only)
	c := openSSE(t, g.url, "channel=a&channel=b&channel=a", "")
	if ms, err := strconv.Atoi(c.retry); err != nil || ms < 1000 || ms >= 2000 {
		t.Errorf("retry: %q", c.retry)
	}
	var conn wire.Connected
	if err := json.Unmarshal([]byte(c.expect("connected").data), &conn); err != nil || conn.Connection == "" {
		t.Fatalf("connected: %+v %v", conn, err)
	}
	s := c.until("subscribed", func(s *sseSeen) bool { return len(s.subs) == 2 })
	if a, b := s.subs["a"], s.subs["b"]; !a.Recovered || a.Next != 4 || a.Epoch != hub.epoch(t, "a") || !b.Recovered || b.Next != 1 {
		t.Fatalf("subscribed: %+v", s.subs)
	}
	publishN(t, hub, "a", 4, 8)
	publishN(t, hub, "b", 1, 5)
	c.until("messages", func(s *sseSeen) bool { return s.got("a", 4, 8) && s.got("b", 1, 5) })
	if !strings.HasPrefix(c.lastID, "1.") {
		t.Errorf("last id %q", c.lastID)
	}
	// The id holds both channels: a stream opened with it (the channels
	// in another order) gets nothing again, then what comes next.
	c.close()
	c2 := openSSE(t, g.url, "channel=b&channel=a", c.lastID)
	c2.expect("connected")
	s = c2.until("subscribed", func(s *sseSeen) bool { return len(s.subs) == 2 })
	if !s.subs["a"].Recovered || !s.subs["b"].Recovered {
		t.Fatalf("resumed: %+v", s.subs)
	}
	c2.quiet(200 * time.Millisecond)
	publishN(t, hub, "b", 6, 6)
	c2.until("b 6", func(s *sseSeen) bool { return s.got("b", 6, 6) })
}

// TestSSEResumeAcrossRestart: a stream resumes with Last-Event-ID on a new
// gateway after the first one went, with what was published meanwhile on
// each channel: nothing missed, nothing twice.
func TestSSEResumeAcrossRestart(t *testing.T) {
	hub := startHub(t)
	hubs := httpHubs(t, hub.api)
	g1 := startGateway(t, hubs, Config{})
	publishN(t, hub, "x", 1, 2)
	c := openSSE(t, g1.url, "channel=x&channel=y&channel=z&from=1", "")
	c.expect("connected")
	// from=1: the history, then live.
	c.until("x's history", func(s *sseSeen) bool { return len(s.subs) == 3 && s.got("x", 1, 2) })
	publishN(t, hub, "x", 3, 5)
	publishN(t, hub, "y", 1, 3)
	c.until("live", func(s *sseSeen) bool { return s.got("x", 1, 5) && s.got("y", 1, 3) })
	last := c.lastID

	// The gateway stops: the stream is told to reconnect.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var closeEv struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(c.expect("close").data), &closeEv); err != nil || closeEv.Code != wire.CloseShutdown {
		t.Fatalf("close %+v: %v", closeEv, err)
	}
	if c.lastID != last {
		t.Fatalf("the close event changed the id")
	}
	publishN(t, hub, "x", 6, 9)
	publishN(t, hub, "y", 4, 6)
	publishN(t, hub, "z", 1, 2)
	g2 := startGateway(t, hubs, Config{})
	c2 := openSSE(t, g2.url, "channel=z&channel=x&channel=y&from=1", last)
	c2.expect("connected")
	s := c2.until("the replay", func(s *sseSeen) bool {
		return len(s.subs) == 3 && s.got("x", 6, 9) && s.got("y", 4, 6) && s.got("z", 1, 2)
	})
	for ch, sb := range s.subs {
		if !sb.Recovered {
			t.Errorf("%s: %+v", ch, sb)
		}
	}
	// Every channel replayed exactly what it missed; now live.
	publishN(t, hub, "z", 3, 3)
	c2.until("live z", func(s *sseSeen) bool { return s.got("z", 1, 3) })
	c2.quiet(100 * time.Millisecond)
}

// TestSSEEpochChanged: an id of another epoch resumes the channel from
// its oldest message, with recovered false in the subscribed event.
func TestSSEEpochChanged(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	publishN(t, hub, "e", 1, 3)
	epoch := hub.epoch(t, "e")
	names := []string{"e", "f"}
	ids := newSSEIDs(names, []ssePos{{known: true, epoch: "0123456789abcdef", last: 2}, {known: true, epoch: epoch, last: 0}})
	c := openSSE(t, g.url, "channel=e&channel=f", string(ids.appendID(nil)))
	c.expect("connected")
	s := c.until("subscribed", func(s *sseSeen) bool { return len(s.subs) == 2 })
	if e := s.subs["e"]; e.Recovered || e.First != 1 || e.Epoch != epoch {
		t.Fatalf("e: %+v, want recovered false from 1", e)
	}
	if f := s.subs["f"]; !f.Recovered {
		t.Fatalf("f: %+v", f)
	}
	c.until("e's replay", func(s *sseSeen) bool { return s.got("e", 1, 3) })
	pos, err := parseEventID(c.lastID, names)
	if err != nil || pos[0] != (ssePos{true, epoch, 3}) || pos[1] != (ssePos{true, epoch, 0}) {
		t.Fatalf("id after the replay: %+v %v", pos, err)
	}
}

// TestSSESubscribedID: the subscribed event's id already holds the
// channel's new epoch and the position before the replay, so that a
// reconnect before any message gets the replay again, not live only.
func TestSSESubscribedID(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	publishN(t, hub, "s", 1, 2)
	epoch := hub.epoch(t, "s")
	id := string(newSSEIDs([]string{"s"}, []ssePos{{known: true, epoch: "ffff", last: 1}}).appendID(nil))
	c := openSSE(t, g.url, "channel=s", id)
	c.expect("connected")
	c.expect("subscribed")
	if pos, err := parseEventID(c.lastID, []string{"s"}); err != nil || pos[0] != (ssePos{true, epoch, 0}) {
		t.Fatalf("subscribed id: %+v %v", pos, err)
	}
	// Live only (no position): the id is at next - 1.
	c2 := openSSE(t, g.url, "channel=s", "")
	c2.expect("connected")
	c2.expect("subscribed")
	if pos, err := parseEventID(c2.lastID, []string{"s"}); err != nil || pos[0] != (ssePos{true, epoch, 2}) {
		t.Fatalf("live subscribed id: %+v %v", pos, err)
	}
}

// TestSSEAuth: tokens as on /ws: refused before the stream (401, so that
// an EventSource does not retry), and a channel the rules refuse is an
// error event while the others stream.
func TestSSEAuth(t *testing.T) {
	g := authGateway(t, false)
	for _, q := range []string{"channel=public:a", "channel=public:a&token=bad", "channel=public:a&token=" + token(t, testSecret, "ann", -time.Minute, nil)} {
		resp, _ := getSSE(t, g.url, q, "", nil)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %s %s, want 401", q, resp.Status, b)
		}
	}
	tok := token(t, testSecret, "ann", time.Hour, nil)
	c := openSSE(t, g.url, "channel=public:a&channel=user:bob:inbox&channel=user:ann:inbox&token="+url.QueryEscape(tok), "")
	var conn wire.Connected
	_ = json.Unmarshal([]byte(c.expect("connected").data), &conn)
	if conn.User != "ann" {
		t.Fatalf("connected %+v", conn)
	}
	s := c.until("answers", func(s *sseSeen) bool { return len(s.subs)+len(s.errs) == 3 })
	if _, ok := s.subs["public:a"]; !ok {
		t.Errorf("subscribed: %+v", s.subs)
	}
	if _, ok := s.subs["user:ann:inbox"]; !ok {
		t.Errorf("subscribed: %+v", s.subs)
	}
	if e := s.errs["user:bob:inbox"]; e.Code != wire.CodeForbidden {
		t.Errorf("errors: %+v", s.errs)
	}

	// Anonymous where allowed: the rules still apply.
	ga := authGateway(t, true)
	c2 := openSSE(t, ga.url, "channel=user:ann:inbox", "")
	c2.expect("connected")
	if e := c2.expect("error"); !strings.Contains(e.data, `"channel":"user:ann:inbox"`) {
		t.Fatalf("error %s", e.data)
	}
}

// TestSSEBadRequests: what cannot start a stream is answered with a
// status and a reason, before any event.
func TestSSEBadRequests(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	prefix := "1." + channelSet([]string{"a"}) + "."
	good := prefix + "abc.3"
	if id := string(newSSEIDs([]string{"a"}, []ssePos{{known: true, epoch: "abc", last: 3}}).appendID(nil)); id != good {
		t.Fatalf("id %q", id)
	}
	many := url.Values{}
	for i := range MaxSSEChannels + 1 {
		many.Add("channel", fmt.Sprintf("c%d", i))
	}
	for _, tc := range []struct {
		query, lastID, want string
	}{
		{"", "", "no channel"},
		{"channel=bad%20name", "", `channel "bad name"`},
		{many.Encode(), "", "at most 100"},
		{"channel=a&from=x", "", "from="},
		{"channel=a", "garbage", "Last-Event-ID"},
		{"channel=a", "2.x.y.z", "version"},
		{"channel=a", "1.AAAAAA.abc.3", "other channels"},
		{"channel=b", good, "other channels"},
		{"channel=a&channel=b", good, "other channels"},
		{"channel=a", prefix + "abc.3-1", "epoch index"},
		{"channel=a", prefix + "abc.03", "bad offset"},
		{"channel=a", prefix + "abc.-3", "bad offset"},
		{"channel=a", prefix + "abc.3~4", "positions"},
		{"channel=a", prefix + "a-c.3", "epoch"},
		{"channel=a", prefix + "_.3", "epoch"},
		{"channel=a", prefix + ".3", "epoch index"},
		{"channel=a", prefix + "abc.3.4", "4 fields"},
		{"channel=a", good + strings.Repeat("x", maxEventIDBytes), "bytes"},
		{"channel=a&lastEventId=garbage", "", "Last-Event-ID"},
	} {
		resp, _ := getSSE(t, g.url, tc.query, tc.lastID, nil)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("?%.60s Last-Event-ID %.40q: %s %q, want 400 with %q", tc.query, tc.lastID, resp.Status, b, tc.want)
		}
	}
	// The good id on its own stream is taken.
	c := openSSE(t, g.url, "channel=a", good)
	c.expect("connected")
	if s := c.until("subscribed", func(s *sseSeen) bool { return len(s.subs) == 1 }); s.subs["a"].Recovered {
		t.Errorf("epoch abc: %+v", s.subs) // not the channel's epoch
	}
}

// TestSSECORS: allowed origins get the CORS headers, others 403; a
// preflight is answered.
func TestSSECORS(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{AllowedOrigins: []string{"https://app.example.com"}})
	resp, _ := getSSE(t, g.url, "channel=a", "", http.Header{"Origin": {"https://evil.example.com"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("other origin: %s", resp.Status)
	}
	resp, cancel := getSSE(t, g.url, "channel=a", "", http.Header{"Origin": {"https://app.example.com"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Errorf("allowed origin: %s %v", resp.Status, resp.Header)
	}
	cancel()
	req, _ := http.NewRequest(http.MethodOptions, g.url+"/sse?channel=a", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Headers", "last-event-id")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Errorf("preflight: %s %v", resp.Status, resp.Header)
	}
}

// TestSSEHeartbeat: a quiet stream gets comments every ping interval, and
// a client that went is noticed.
func TestSSEHeartbeat(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{PingInterval: 50 * time.Millisecond})
	resp, cancel := getSSE(t, g.url, "channel=a", "", nil)
	r := bufio.NewReader(resp.Body)
	comments := 0
	for comments < 3 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ":\n" {
			comments++
		}
	}
	waitFor(t, "the stream counted", func() bool { return g.connCount() == 1 })
	cancel()
	waitFor(t, "the stream gone", func() bool { return g.connCount() == 0 })
}

func TestSSEIDs(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	pos := []ssePos{{true, "00aa", 0}, {}, {true, "odd epoch/ü", 1 << 40}, {true, "00aa", 35}}
	ids := newSSEIDs(names, slices.Clone(pos))
	id := string(ids.appendID(nil))
	if want := "1." + channelSet(names) + ".00aa~_" + "b2RkIGVwb2NoL8O8" + ".0~~" + strconv.FormatUint(1<<40, 36) + "-1~z"; id != want {
		t.Fatalf("id %q, want %q", id, want)
	}
	got, err := parseEventID(id, names)
	if err != nil || !slices.Equal(got, pos) {
		t.Fatalf("parsed %+v %v", got, err)
	}
	for _, c := range id {
		if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", c) {
			t.Fatalf("id %q has %q: not URL-safe", id, c)
		}
	}
	ids.pos[1] = ssePos{known: true, epoch: "00aa", last: 7}
	ids.setEpoch(2, "00aa")
	if got := string(ids.appendID(nil)); got != "1."+channelSet(names)+".00aa.0~7~"+strconv.FormatUint(1<<40, 36)+"~z" {
		t.Fatalf("after changes %q", got)
	}
	// The largest stream's id, hubs' epochs all different and offsets
	// near the top: under 4 KiB.
	var big []string
	var bigPos []ssePos
	for i := range MaxSSEChannels {
		big = append(big, fmt.Sprintf("channel-%03d", i))
		bigPos = append(bigPos, ssePos{true, fmt.Sprintf("%016x", i+1<<60), 1<<63 + uint64(i)})
	}
	slices.Sort(big)
	bigID := string(newSSEIDs(big, bigPos).appendID(nil))
	if len(bigID) > 4<<10 {
		t.Errorf("id of %d channels: %d bytes", MaxSSEChannels, len(bigID))
	}
	if got, err := parseEventID(bigID, big); err != nil || !slices.Equal(got, bigPos) {
		t.Errorf("big id: %v", err)
	}
	t.Logf("ids: one channel %d bytes, %d channels %d bytes at most", len(newSSEIDs(names[:1], pos[:1]).appendID(nil)), MaxSSEChannels, len(bigID))
}

// TestSSEShutdownClosesStreams: streams are told to reconnect, and the
// gateway waits for them no longer than for others.
func TestSSEShutdownClosesStreams(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	c := openSSE(t, g.url, "channel=a", "")
	c.expect("connected")
	c.expect("subscribed")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if e := c.expect("close"); !strings.Contains(e.data, `"code":4001`) {
		t.Fatalf("close %s", e.data)
	}
	select {
	case _, ok := <-c.events:
		if ok {
			t.Fatal("an event after close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
	}
}

// TestSSEStuckClientIsDropped: a client that stops reading is dropped by
// the write timeout (its write under way cut), and the others are still
// served.
func TestSSEStuckClientIsDropped(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{WriteTimeout: 200 * time.Millisecond,
		QueueBytes: 256 << 20, QueueMessages: 1 << 20, CacheBytes: 1 << 20})
	raw, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := io.WriteString(raw, "GET /sse?channel=stuck HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stuck stream", func() bool { return g.connCount() == 1 })
	reader := openSSE(t, g.url, "channel=stuck", "")
	reader.expect("connected")
	reader.expect("subscribed")
	data := []byte(strconv.Quote(strings.Repeat("s", 64<<10)))
	n := 0
	for g.connCount() == 2 {
		if n == 2000 { // 128 MB: far more than loopback sockets hold
			t.Fatalf("the stuck client was not dropped after %d messages of 64 KiB", n)
		}
		hub.append("stuck", data)
		n++
		if e := reader.expect("message"); !strings.Contains(e.data, `"offset":`+strconv.Itoa(n)+",") {
			t.Fatalf("message %d: %.80s", n, e.data)
		}
	}
	t.Logf("dropped after %d messages of 64 KiB", n)
	if v := testutil.ToFloat64(g.m.writeTimeouts); v != 1 {
		t.Fatalf("%v write timeouts counted, want 1", v)
	}
	hub.append("stuck", []byte(`"after"`))
	if e := reader.expect("message"); !strings.Contains(e.data, `"after"`) {
		t.Fatalf("after: %.80s", e.data)
	}
}

// TestSSETokenExpires: a stream whose token expires gets an error event
// and close 4006; the same URL is then refused with 401.
func TestSSETokenExpires(t *testing.T) {
	g := authGateway(t, false)
	q := "channel=public:a&token=" + token(t, testSecret, "ann", 3*time.Second, nil)
	c := openSSE(t, g.url, q, "")
	c.expect("connected")
	c.expect("subscribed")
	var er sseError
	if err := json.Unmarshal([]byte(c.expect("error").data), &er); err != nil || er.Code != wire.CodeForbidden || !strings.Contains(er.Message, "expired") {
		t.Fatalf("error %+v %v", er, err)
	}
	if e := c.expect("close"); !strings.Contains(e.data, `"code":4006`) {
		t.Fatalf("close %s", e.data)
	}
	resp, _ := getSSE(t, g.url, q, "", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("again: %s", resp.Status)
	}
}

// TestSSELastEventIDParam: ?lastEventId= resumes as the header does, and
// the header, newer when a browser reconnects, wins over it.
func TestSSELastEventIDParam(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	publishN(t, hub, "p", 1, 5)
	epoch := hub.epoch(t, "p")
	id := func(last uint64) string {
		return string(newSSEIDs([]string{"p"}, []ssePos{{known: true, epoch: epoch, last: last}}).appendID(nil))
	}
	c := openSSE(t, g.url, "channel=p&lastEventId="+url.QueryEscape(id(2)), "")
	c.expect("connected")
	c.until("3..5", func(s *sseSeen) bool { return s.got("p", 3, 5) })
	c2 := openSSE(t, g.url, "channel=p&lastEventId="+url.QueryEscape(id(1)), id(4))
	c2.expect("connected")
	c2.until("5", func(s *sseSeen) bool { return s.got("p", 5, 5) })
	c2.quiet(100 * time.Millisecond)
}

// TestSSEWriteAllocs: writing a burst of messages as events allocates
// nothing (pooled buffers; -race's sync.Pool drops some, hence the slack).
func TestSSEWriteAllocs(t *testing.T) {
	names := []string{"a", "b", "c"}
	rec := httptest.NewRecorder()
	tr := newSSETransport(t.Context(), rec, http.NewResponseController(rec), sseRequest{names: names, pos: make([]ssePos, 3)})
	var frame []byte
	for i := range 20 {
		if i > 0 {
			frame = append(frame, '\n')
		}
		frame = wire.AppendMessage(frame, names[i%3], uint64(100+i), []byte(`{"text":"hello"}`))
	}
	allocs := testing.AllocsPerRun(100, func() {
		rec.Body.Reset()
		if err := tr.write(frame); err != nil {
			t.Fatal(err)
		}
	})
	if allocs >= 2 {
		t.Errorf("%v allocations per write of 20 messages", allocs)
	}
}
