package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

func TestBadFramesGetErrorsAndTheConnectionKeepsServing(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{MaxFrameBytes: 1024, MaxMessageBytes: 512})
	c := dial(t, g.url)
	other := dial(t, g.url)
	other.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "calm"})
	other.expect(wire.OpSubscribed)

	cases := []struct {
		name, frame, code, id, contains string
	}{
		{"not JSON", `{"op":`, wire.CodeBadRequest, "", "not JSON"},
		{"not an object", `[1,2]`, wire.CodeBadRequest, "", "one JSON object"},
		{"no op", `{"channel":"a"}`, wire.CodeBadRequest, "", "no op"},
		{"unknown op", `{"op":"dance","id":"d1"}`, wire.CodeBadRequest, "d1", `unknown op "dance"`},
		{"wrong type of from", `{"op":"subscribe","channel":"a","from":"x","id":"s1"}`, wire.CodeBadRequest, "s1", `"from"`},
		{"negative from", `{"op":"subscribe","channel":"a","from":-1}`, wire.CodeBadRequest, "", `"from"`},
		{"wrong type of channel", `{"op":"subscribe","channel":5}`, wire.CodeBadRequest, "", `"channel"`},
		{"bad channel", `{"op":"subscribe","channel":"no spaces"}`, wire.CodeBadRequest, "", "outside"},
		{"empty channel", `{"op":"publish","channel":"","data":1}`, wire.CodeBadRequest, "", "empty"},
		{"publish without data", `{"op":"publish","channel":"a","id":"p0"}`, wire.CodeBadRequest, "p0", "needs data"},
		{"request without route", `{"op":"request","id":"r0"}`, wire.CodeBadRequest, "r0", "route"},
		{"data over the limit", `{"op":"publish","channel":"a","id":"big","data":"` + strings.Repeat("x", 600) + `"}`, wire.CodeTooLarge, "big", "more than 512"},
		{"frame over the limit", `{"op":"publish","channel":"a","data":"` + strings.Repeat("x", 2000) + `"}`, wire.CodeTooLarge, "", "frame over 1024"},
		{"request", `{"op":"request","route":"todo.add","data":{},"id":"r1"}`, wire.CodeNotFound, "r1", "todo.add"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.send(tc.frame)
			f := c.expect(wire.OpError)
			if f.Code != tc.code || f.ID != tc.id || !strings.Contains(f.Message, tc.contains) {
				t.Fatalf("got %+v, want code %s id %q message containing %q", f, tc.code, tc.id, tc.contains)
			}
			// The connection still serves.
			c.send(`{"op":"ping","id":"after"}`)
			if f := c.expect(wire.OpPong); f.ID != "after" {
				t.Fatalf("pong %+v", f)
			}
		})
	}
	c.t = t
	// The other client was not disturbed.
	off := hub.publish(t, "calm", `"still here"`)
	if f := other.expect(wire.OpMessage); f.Offset != off || string(f.Data) != `"still here"` {
		t.Fatalf("other client got %+v", f)
	}
}

func TestFrameFarOverTheLimitClosesTheConnection(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{MaxFrameBytes: 1024})
	c := dial(t, g.url)
	c.send(`{"op":"publish","channel":"a","data":"` + strings.Repeat("x", 5000) + `"}`)
	_, err := c.tryNext(10 * time.Second)
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("got %v, want close 1009", err)
	}
}

func TestPublishAckAndIdempotency(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	c := dial(t, g.url)
	c.send(`{"op":"publish","channel":"news","data":{"n":1},"id":"k1"}`)
	a := c.expect(wire.OpAck)
	if a.ID != "k1" || a.Channel != "news" || a.Offset != 1 || a.Epoch == "" {
		t.Fatalf("ack %+v", a)
	}
	c.send(`{"op":"publish","channel":"news","data":{"n":1},"id":"k1"}`)
	if a2 := c.expect(wire.OpAck); a2.Offset != 1 || a2.ID != "k1" {
		t.Fatalf("retried publish acked %+v, want offset 1", a2)
	}
	c.send(`{"op":"publish","channel":"news","data":{"n":2}}`)
	if a3 := c.expect(wire.OpAck); a3.Offset != 2 || a3.ID != "" {
		t.Fatalf("publish without id acked %+v", a3)
	}
	res, err := hub.Service.Read("news", 1, 10)
	if err != nil || len(res.Messages) != 2 {
		t.Fatalf("stored %+v, %v; want 2 messages", res, err)
	}
}

func TestSubscribeLiveOnly(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	hub.publish(t, "live", `"before"`)
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "live", ID: "s1"})
	s := c.expect(wire.OpSubscribed)
	if s.ID != "s1" || s.Next != 2 || !s.Recovered || s.Epoch != hub.epoch(t, "live") {
		t.Fatalf("subscribed %+v", s)
	}
	for i := 0; i < 5; i++ {
		hub.publish(t, "live", fmt.Sprint(i))
	}
	msgs := c.messages("live", 2, 5)
	if string(msgs[4].Data) != "4" {
		t.Fatalf("last message %+v", msgs[4])
	}
}

func TestSubscribeFromReplaysThenGoesLive(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	for i := 1; i <= 30; i++ {
		hub.publish(t, "feed", fmt.Sprint(i))
	}
	epoch := hub.epoch(t, "feed")
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "feed", From: u64p(11), Epoch: epoch})
	s := c.expect(wire.OpSubscribed)
	if !s.Recovered || s.First != 1 || s.Next != 31 || s.Epoch != epoch {
		t.Fatalf("subscribed %+v", s)
	}
	c.messages("feed", 11, 20)
	hub.publish(t, "feed", "31")
	if m := c.messages("feed", 31, 1); string(m[0].Data) != "31" {
		t.Fatalf("live message %+v", m[0])
	}

	// A second client resumes from the gateway's cache.
	c2 := dial(t, g.url)
	c2.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "feed", From: u64p(25), Epoch: epoch})
	if s := c2.expect(wire.OpSubscribed); !s.Recovered || s.Next != 32 {
		t.Fatalf("subscribed %+v", s)
	}
	c2.messages("feed", 25, 7)

	// A client ahead of the channel gets only what comes after its from.
	c3 := dial(t, g.url)
	c3.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "feed", From: u64p(34), Epoch: epoch})
	c3.expect(wire.OpSubscribed)
	hub.publish(t, "feed", "32")
	hub.publish(t, "feed", "33")
	hub.publish(t, "feed", "34")
	if m := c3.messages("feed", 34, 1); string(m[0].Data) != "34" {
		t.Fatalf("got %+v", m)
	}
}

func TestSubscribeWithAnotherEpochIsNotRecovered(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	for i := 1; i <= 3; i++ {
		hub.publish(t, "e", fmt.Sprint(i))
	}
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "e", From: u64p(3), Epoch: "not-the-epoch"})
	s := c.expect(wire.OpSubscribed)
	if s.Recovered || s.First != 1 || s.Epoch == "not-the-epoch" {
		t.Fatalf("subscribed %+v, want recovered false, first 1", s)
	}
	c.messages("e", 1, 3)
}

func TestSubscribeBelowRetentionIsNotRecovered(t *testing.T) {
	hub := startHub(t, log.Rule{Pattern: "*", MaxMessages: 5})
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	for i := 1; i <= 12; i++ {
		hub.publish(t, "short", fmt.Sprint(i))
	}
	epoch := hub.epoch(t, "short")
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "short", From: u64p(2), Epoch: epoch})
	s := c.expect(wire.OpSubscribed)
	if s.Recovered || s.First != 8 || s.Next != 13 {
		t.Fatalf("subscribed %+v, want recovered false, first 8, next 13", s)
	}
	c.messages("short", 8, 5)

	// Resuming from a trimmed position that was already seen is no gap.
	c2 := dial(t, g.url)
	c2.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "short", From: u64p(13), Epoch: epoch})
	if s := c2.expect(wire.OpSubscribed); !s.Recovered {
		t.Fatalf("subscribed %+v, want recovered", s)
	}
	// A channel that never existed: recovered, empty.
	c2.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "never", From: u64p(1), Epoch: hub.epoch(t, "never")})
	if s := c2.expect(wire.OpSubscribed); !s.Recovered || s.Next != 1 {
		t.Fatalf("subscribed %+v, want recovered, next 1", s)
	}
}

func TestUnsubscribeAndLimits(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{MaxSubscriptions: 2})
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "a"})
	c.expect(wire.OpSubscribed)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "a", ID: "again"})
	if f := c.expect(wire.OpError); f.Code != wire.CodeBadRequest || f.ID != "again" {
		t.Fatalf("got %+v", f)
	}
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "b"})
	c.expect(wire.OpSubscribed)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "c", ID: "third"})
	if f := c.expect(wire.OpError); f.Code != wire.CodeBadRequest || !strings.Contains(f.Message, "too many") {
		t.Fatalf("got %+v", f)
	}
	hub.publish(t, "a", `"a1"`)
	c.messages("a", 1, 1)
	c.send(wire.ClientFrame{Op: wire.OpUnsubscribe, Channel: "a", ID: "u1"})
	if f := c.expect(wire.OpUnsubscribed); f.ID != "u1" || f.Channel != "a" {
		t.Fatalf("got %+v", f)
	}
	hub.publish(t, "a", `"a2"`)
	hub.publish(t, "b", `"b1"`)
	// The next thing is b's message: nothing of a after unsubscribed.
	if f := c.expect(wire.OpMessage); f.Channel != "b" {
		t.Fatalf("got %+v after unsubscribing from a", f)
	}
	// Now there is room for another subscription.
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "c"})
	c.expect(wire.OpSubscribed)
}

func TestOrigins(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org"}})
	url := "ws" + strings.TrimPrefix(g.url, "http") + "/ws"
	for origin, ok := range map[string]bool{
		"":                         true,
		g.url:                      true,
		"https://app.example.com":  true,
		"https://x.example.org":    true,
		"https://example.org":      false,
		"http://app.example.com":   false,
		"https://evil.example.com": false,
	} {
		h := map[string][]string{}
		if origin != "" {
			h["Origin"] = []string{origin}
		}
		c, resp, err := websocket.DefaultDialer.Dial(url, h)
		if (err == nil) != ok {
			t.Errorf("origin %q: err %v, want accepted=%v (resp %v)", origin, err, ok, resp)
		}
		if c != nil {
			c.Close()
		}
	}
}
