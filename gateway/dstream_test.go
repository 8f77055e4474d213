package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// The Durable Streams protocol itself is checked by its conformance suite
// (e2e/dstream_test.go). These tests check what Comet adds: auth and
// channel rules, the meeting of streams and the client protocol, and live
// reads woken by the commit stream.

// do sends one request to a gateway's stream and returns the answer, its
// body read.
func do(t testing.TB, method, url string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestStreamAuthAndRules(t *testing.T) {
	g := authGateway(t, false)
	alice := "Bearer " + token(t, testSecret, "alice", time.Hour, nil)
	url := g.url + "/v1/stream/public:news"

	if resp, _ := do(t, http.MethodGet, url, nil, ""); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := do(t, http.MethodGet, url, map[string]string{"Authorization": "Bearer not-a-token"}, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}
	if resp, body := do(t, http.MethodPut, url, map[string]string{"Content-Type": "application/json", "Authorization": alice}, `{"n":1}`); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create as a user: %d %s", resp.StatusCode, body)
	}
	// The token in the URL works too.
	if resp, body := do(t, http.MethodGet, url+"?offset=-1&token="+strings.TrimPrefix(alice, "Bearer "), nil, ""); resp.StatusCode != http.StatusOK || body != `[{"n":1}]` {
		t.Fatalf("read with ?token=: %d %s", resp.StatusCode, body)
	}
	// user:{sub}:* is readable by its user only, and written by nobody.
	mine := g.url + "/v1/stream/user:alice:inbox"
	if resp, _ := do(t, http.MethodPut, mine, map[string]string{"Content-Type": "application/json", "Authorization": alice}, ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("create where publishing is for nobody: %d", resp.StatusCode)
	}
	bob := "Bearer " + token(t, testSecret, "bob", time.Hour, nil)
	if resp, _ := do(t, http.MethodGet, mine, map[string]string{"Authorization": bob}, ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another user's channel: %d", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodGet, mine, map[string]string{"Authorization": alice}, ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("own channel, never written: %d, want 404", resp.StatusCode)
	}
	// A fork needs the right to read its source.
	fork := map[string]string{"Authorization": bob, "Stream-Forked-From": "/v1/stream/user:alice:inbox"}
	if resp, _ := do(t, http.MethodPut, g.url+"/v1/stream/public:copy", fork, ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("fork of a channel bob may not read: %d", resp.StatusCode)
	}
	fork["Stream-Forked-From"] = "/v1/stream/public:news"
	if resp, body := do(t, http.MethodPut, g.url+"/v1/stream/public:copy", fork, ""); resp.StatusCode != http.StatusCreated {
		t.Fatalf("fork of a readable channel: %d %s", resp.StatusCode, body)
	}
}

func TestStreamAnonymousReadOnly(t *testing.T) {
	g := authGateway(t, true)
	url := g.url + "/v1/stream/public:feed"
	if resp, _ := do(t, http.MethodPut, url, map[string]string{"Content-Type": "application/json"}, `1`); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous create where users publish: %d", resp.StatusCode)
	}
	alice := "Bearer " + token(t, testSecret, "alice", time.Hour, nil)
	do(t, http.MethodPut, url, map[string]string{"Content-Type": "application/json", "Authorization": alice}, `1`)
	if resp, body := do(t, http.MethodGet, url, nil, ""); resp.StatusCode != http.StatusOK || body != "[1]" {
		t.Fatalf("anonymous read: %d %s", resp.StatusCode, body)
	}
}

// A channel written over WebSocket is a JSON stream; a JSON stream takes
// WebSocket publishes; a closed stream and a byte stream do not.
func TestStreamsMeetTheClientProtocol(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	ws := dial(t, g.url)
	ws.send(map[string]any{"op": "publish", "channel": "chat", "data": map[string]string{"text": "hi"}, "id": "p1"})
	ws.expect(wire.OpAck)

	resp, body := do(t, http.MethodGet, g.url+"/v1/stream/chat?offset=-1", nil, "")
	if resp.StatusCode != http.StatusOK || body != `[{"text":"hi"}]` || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("a plain channel as a stream: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp, _ := do(t, http.MethodPut, g.url+"/v1/stream/chat", map[string]string{"Content-Type": "text/plain"}, ""); resp.StatusCode != http.StatusConflict {
		t.Fatalf("a plain channel made a text stream: %d", resp.StatusCode)
	}
	// Appended over HTTP, received over WebSocket.
	sub := dial(t, g.url)
	sub.send(map[string]any{"op": "subscribe", "channel": "chat", "from": 1})
	sub.expect(wire.OpSubscribed)
	if resp, body := do(t, http.MethodPost, g.url+"/v1/stream/chat", map[string]string{"Content-Type": "application/json"}, `[{"text":"from http"}]`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("append to a plain channel before PUT: %d %s", resp.StatusCode, body)
	}
	msgs := sub.messages("chat", 1, 2)
	if string(msgs[1].Data) != `{"text":"from http"}` {
		t.Fatalf("WebSocket subscriber got %s", msgs[1].Data)
	}
	// Data is stored as given: "<" stays "<" (encoding/json would send
	// "\u003c").
	do(t, http.MethodPost, g.url+"/v1/stream/chat", map[string]string{"Content-Type": "application/json"}, `{"html":"<b>&amp;</b>"}`)
	if _, body := do(t, http.MethodGet, g.url+"/v1/stream/chat?offset=-1", nil, ""); !strings.HasSuffix(body, `{"html":"<b>&amp;</b>"}]`) {
		t.Fatalf("read back %s", body)
	}
	sub.messages("chat", 3, 1)

	// Closed: WebSocket publishes are refused.
	do(t, http.MethodPut, g.url+"/v1/stream/chat", map[string]string{"Content-Type": "application/json"}, "")
	if resp, _ := do(t, http.MethodPost, g.url+"/v1/stream/chat", map[string]string{"Stream-Closed": "true"}, ""); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Stream-Closed") != "true" {
		t.Fatalf("close: %d", resp.StatusCode)
	}
	ws.send(map[string]any{"op": "publish", "channel": "chat", "data": 1, "id": "p2"})
	if f := ws.expect(wire.OpError); f.Code != wire.CodeBadRequest || !strings.Contains(f.Message, "closed") {
		t.Fatalf("publish to a closed stream: %+v", f)
	}
	// A byte stream takes no JSON publishes.
	do(t, http.MethodPut, g.url+"/v1/stream/bytes", map[string]string{"Content-Type": "application/octet-stream"}, "\x00\x01")
	ws.send(map[string]any{"op": "publish", "channel": "bytes", "data": "x", "id": "p3"})
	if f := ws.expect(wire.OpError); !strings.Contains(f.Message, "application/octet-stream") {
		t.Fatalf("publish to a byte stream: %+v", f)
	}
}

// Live reads wake on the commit stream: a long-poll and an SSE reader get
// a message published over WebSocket.
func TestStreamLiveReadsWakeOnPublishes(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{StreamLongPoll: 30 * time.Second})
	url := g.url + "/v1/stream/live"
	resp, _ := do(t, http.MethodPut, url, map[string]string{"Content-Type": "application/json"}, "")
	tail := resp.Header.Get("Stream-Next-Offset")

	type answer struct {
		status int
		body   string
		next   string
	}
	poll := make(chan answer, 1)
	go func() {
		resp, err := http.Get(url + "?live=long-poll&offset=" + tail)
		if err != nil {
			poll <- answer{status: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		poll <- answer{resp.StatusCode, string(b), resp.Header.Get("Stream-Next-Offset")}
	}()
	lines := openStreamSSE(t, url+"?live=sse&offset="+tail)
	// The first control event says up to date: the reader waits from
	// there.
	waitLine(t, lines, `"upToDate":true`)

	// Wait until the long-poll is waiting on the channel too, then publish.
	waitReaders(t, g, "live", 2)
	ws := dial(t, g.url)
	ws.send(map[string]any{"op": "publish", "channel": "live", "data": map[string]int{"n": 1}, "id": "a"})
	ws.expect(wire.OpAck)

	select {
	case a := <-poll:
		if a.status != http.StatusOK || a.body != `[{"n":1}]` || a.next == tail {
			t.Fatalf("long-poll: %+v", a)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll was not woken")
	}
	waitLine(t, lines, `data:[{"n":1}]`)

	// A close wakes the SSE reader, which ends with streamClosed.
	do(t, http.MethodPost, url, map[string]string{"Stream-Closed": "true"}, "")
	waitLine(t, lines, `"streamClosed":true`)
	for lines.Scan() {
	}
	if err := lines.Err(); err != nil {
		t.Fatalf("the SSE response did not end cleanly after closure: %v", err)
	}
}

// openStreamSSE opens an SSE read (for at most 30 s) and returns its lines.
func openStreamSSE(t *testing.T, url string) *bufio.Scanner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return bufio.NewScanner(resp.Body)
}

// waitReaders waits until n live stream readers wait on channel name at g.
func waitReaders(t *testing.T, g *testGateway, name string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d live readers of %s waiting", n, name), func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		ch := g.channels[name]
		if ch == nil {
			return false
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return ch.waiting >= n
	})
}

func waitLine(t *testing.T, lines *bufio.Scanner, want string) {
	t.Helper()
	var seen []string
	for lines.Scan() {
		if strings.Contains(lines.Text(), want) {
			return
		}
		seen = append(seen, lines.Text())
	}
	t.Fatalf("no line with %s in the SSE response (err %v); saw %q", want, lines.Err(), seen)
}

// Offsets carry the epoch: after a delete and a new stream, an old offset
// is 410 Gone, not a read of another history.
func TestStreamOffsetOfAnotherHistory(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	url := g.url + "/v1/stream/h"
	resp, _ := do(t, http.MethodPut, url, map[string]string{"Content-Type": "text/plain"}, "one")
	old := resp.Header.Get("Stream-Next-Offset")
	if resp, _ := do(t, http.MethodDelete, url, nil, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	resp, _ = do(t, http.MethodPut, url, map[string]string{"Content-Type": "text/plain"}, "two, longer")
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Stream-Next-Offset") == old {
		t.Fatalf("made again: %d %s", resp.StatusCode, resp.Header.Get("Stream-Next-Offset"))
	}
	resp, body := do(t, http.MethodGet, url+"?offset="+old, nil, "")
	var e wire.Error
	if resp.StatusCode != http.StatusGone || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Message, "another history") {
		t.Fatalf("old offset: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, http.MethodGet, url+"?offset=-1", nil, ""); body != "two, longer" {
		t.Fatalf("new history: %d %q", resp.StatusCode, body)
	}
}

func TestStreamsPrefix(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{StreamsPrefix: "/streams/"})
	if resp, _ := do(t, http.MethodPut, g.url+"/streams/a/../b", map[string]string{"Content-Type": "text/plain"}, "x"); resp.StatusCode != http.StatusCreated {
		t.Fatalf("a name with .. under a moved prefix: %d", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodGet, g.url+"/v1/stream/a/../b", nil, ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the default prefix still answers: %d", resp.StatusCode)
	}
	off := startGateway(t, httpHubs(t, hub.api), Config{StreamsPrefix: "-"})
	if resp, _ := do(t, http.MethodGet, off.url+"/streams/a/../b", nil, ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("streams turned off: %d", resp.StatusCode)
	}
	if _, err := New(Config{Hub: httpHubs(t, hub.api), StreamsPrefix: "streams"}); err == nil {
		t.Fatal("a prefix without slashes accepted")
	}
}

// A close made through one gateway ends an SSE read on another at once:
// the commit stream carries the change (the periodic look is off here).
func TestStreamCloseReachesOtherGateways(t *testing.T) {
	defer func(d time.Duration) { streamLook = d }(streamLook)
	streamLook = time.Hour
	hub := startHub(t)
	g1 := startGateway(t, httpHubs(t, hub.api), Config{})
	g2 := startGateway(t, httpHubs(t, hub.api), Config{})
	resp, _ := do(t, http.MethodPut, g1.url+"/v1/stream/shared", map[string]string{"Content-Type": "application/json"}, `[1]`)
	tail := resp.Header.Get("Stream-Next-Offset")

	lines := openStreamSSE(t, g2.url+"/v1/stream/shared?live=sse&offset="+tail)
	waitLine(t, lines, `"upToDate":true`)
	waitReaders(t, g2, "shared", 1)
	if resp, _ := do(t, http.MethodPost, g1.url+"/v1/stream/shared", map[string]string{"Content-Type": "application/json", "Stream-Closed": "true"}, `[2]`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("append and close on g1: %d", resp.StatusCode)
	}
	waitLine(t, lines, `data:[2]`)
	waitLine(t, lines, `"streamClosed":true`)
}
