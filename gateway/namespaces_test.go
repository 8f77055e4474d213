package gateway

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
)

// userConn dials g as user (anonymous when user is "") and reads
// "connected".
func userConn(t *testing.T, g *testGateway, user string, grants map[string]any) *wsClient {
	t.Helper()
	q := url.Values{}
	if user != "" {
		q.Set("token", token(t, testSecret, user, time.Hour, grants))
	}
	c := dialRaw(t, g.url, q)
	if f := c.next(); f.Op != wire.OpConnected {
		t.Fatalf("first frame %+v", f)
	}
	return c
}

// setNamespaces makes list the hub's namespaces and waits until every
// gateway has read them.
func setNamespaces(t *testing.T, hub *testHub, list []wire.Namespace, gws ...*testGateway) {
	t.Helper()
	ns, err := hub.Service.SetNamespaces(context.Background(), list)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gws {
		waitFor(t, fmt.Sprintf("namespaces version %d on a gateway", ns.Version), func() bool {
			cur := g.ns.Load()
			return cur != nil && cur.version == ns.Version
		})
	}
}

// expectCode reads the error answering frame id, with code.
func (w *wsClient) expectCode(id, code, contains string) {
	w.t.Helper()
	f := w.expect(wire.OpError)
	if f.ID != id || f.Code != code || !strings.Contains(f.Message, contains) {
		w.t.Fatalf("got %+v, want error %s %q containing %q", f, code, id, contains)
	}
}

// TestNamespacesEnforced changes the namespaces at runtime and checks, on
// two gateways, who may publish, history on and off, and message size.
func TestNamespacesEnforced(t *testing.T) {
	hub := startHub(t)
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Tokens: v, AllowAnonymous: true, NamespacePoll: 20 * time.Millisecond}
	g1 := startGateway(t, httpHubs(t, hub.api), cfg)
	g2 := startGateway(t, httpHubs(t, hub.api), cfg)
	for i, g := range []*testGateway{g1, g2} {
		c := userConn(t, g, "alice", nil)
		// No namespaces: anyone publishes anywhere (no rules).
		c.send(fmt.Sprintf(`{"op":"publish","channel":"news:today","data":1,"id":"p0-%d"}`, i))
		c.expect(wire.OpAck)
	}
	setNamespaces(t, hub, []wire.Namespace{
		{Name: "news", Publish: wire.PublishBackend, History: new(bool)},
		{Name: "chat", Publish: wire.PublishSubscribers, MaxMessageBytes: 10},
		{Name: "orders", Publish: wire.PublishGrant},
	}, g1, g2)
	for i, g := range []*testGateway{g1, g2} {
		c := userConn(t, g, "alice", map[string]any{"publish": []string{"orders:{sub}"}})
		c.send(`{"op":"publish","channel":"news:today","data":1,"id":"p1"}`)
		c.expectCode("p1", wire.CodeForbidden, "only backends")
		c.send(`{"op":"history","channel":"news:today","id":"h1"}`)
		c.expectCode("h1", wire.CodeForbidden, "history is off")
		// Subscribing (and resuming) still works where history is off.
		c.send(`{"op":"subscribe","channel":"news:today","from":1,"id":"s1"}`)
		if f := c.expect(wire.OpSubscribed); f.ID != "s1" {
			t.Fatalf("%+v", f)
		}
		c.messages("news:today", 1, 2)
		c.send(`{"op":"publish","channel":"chat:lobby","data":1,"id":"p2"}`)
		c.expectCode("p2", wire.CodeForbidden, "subscribe to")
		c.send(`{"op":"subscribe","channel":"chat:lobby","id":"s2"}`)
		c.expect(wire.OpSubscribed)
		c.send(`{"op":"publish","channel":"chat:lobby","data":"0123456789","id":"p3"}`)
		c.expectCode("p3", wire.CodeTooLarge, "more than 10")
		c.send(fmt.Sprintf(`{"op":"publish","channel":"chat:lobby","data":1,"id":"p4-%d"}`, i))
		// The ack, and the message itself (the publisher subscribes), in
		// either order.
		for acked, got := false, false; !acked || !got; {
			switch f := c.next(); f.Op {
			case wire.OpAck:
				acked = true
			case wire.OpMessage:
				got = true
			default:
				t.Fatalf("gateway %d: %+v", i+1, f)
			}
		}
		c.send(`{"op":"publish","channel":"orders:bob","data":1,"id":"p5"}`)
		c.expectCode("p5", wire.CodeForbidden, "grants it")
		c.send(`{"op":"publish","channel":"orders:alice","data":1,"id":"p6"}`)
		c.expect(wire.OpAck)
		anon := userConn(t, g, "", nil)
		anon.send(`{"op":"publish","channel":"orders:alice","data":1,"id":"p7"}`)
		anon.expectCode("p7", wire.CodeForbidden, "grants it")
	}
	// Changed again: in force on both gateways, without a restart.
	setNamespaces(t, hub, []wire.Namespace{{Name: "chat"}}, g1, g2)
	for _, g := range []*testGateway{g1, g2} {
		c := userConn(t, g, "bob", nil)
		c.send(`{"op":"publish","channel":"news:today","data":2,"id":"p8"}`)
		c.expect(wire.OpAck)
		c.send(`{"op":"history","channel":"news:today","id":"h2","reverse":true,"limit":1}`)
		c.expect(wire.OpHistory)
	}
}

// TestPersonalChannels: a personal namespace's channel is readable by its
// user's connections alone, over WebSocket and SockJS, whatever the rules
// (which here let nobody subscribe to anything else).
func TestPersonalChannels(t *testing.T) {
	hub := startHub(t)
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.NewPolicy([]auth.Rule{{Match: "*", Subscribe: "none", Publish: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, httpHubs(t, hub.api), Config{Tokens: v, Policy: p, AllowAnonymous: true, NamespacePoll: 20 * time.Millisecond})
	setNamespaces(t, hub, []wire.Namespace{{Name: "inbox", Personal: true}}, g)
	alice := userConn(t, g, "alice", nil)
	alice.send(`{"op":"subscribe","channel":"inbox:alice","id":"s"}`)
	alice.expect(wire.OpSubscribed)
	alice.send(`{"op":"subscribe","channel":"inbox:alice:alerts","id":"s2"}`)
	alice.expect(wire.OpSubscribed)
	// A backend publishes to reach every device of alice.
	hub.publish(t, "inbox:alice", `{"n":1}`)
	if f := alice.expect(wire.OpMessage); f.Channel != "inbox:alice" || f.Offset != 1 {
		t.Fatalf("%+v", f)
	}
	alice.send(`{"op":"history","channel":"inbox:alice","id":"h"}`)
	if f := alice.expect(wire.OpHistory); len(f.Messages) != 1 {
		t.Fatalf("%+v", f)
	}
	// Her own publishes still follow the rules (none here).
	alice.send(`{"op":"publish","channel":"inbox:alice","data":1,"id":"p"}`)
	alice.expectCode("p", wire.CodeForbidden, "not allowed")
	for _, who := range []string{"bob", ""} {
		c := userConn(t, g, who, map[string]any{"subscribe": []string{"*"}})
		for i, frame := range []string{
			`{"op":"subscribe","channel":"inbox:alice","id":"x0"}`,
			`{"op":"subscribe","channel":"inbox:alice:alerts","id":"x1"}`,
			`{"op":"history","channel":"inbox:alice","id":"x2"}`,
			`{"op":"publish","channel":"inbox:alice","data":1,"id":"x3"}`,
		} {
			c.send(frame)
			c.expectCode(fmt.Sprintf("x%d", i), wire.CodeForbidden, "personal channel of another user")
		}
	}
	// The same over SockJS (the token in a connect frame).
	sockjsAs := func(user string) *sockjsXHR {
		c := &sockjsXHR{base: g.url + "/sockjs/000/" + randomID(8)}
		t.Cleanup(c.close)
		if f := sockjsObjects(t, c, 1)[0]; f.Op != wire.OpConnected {
			t.Fatalf("%+v", f)
		}
		if err := c.send(`{"op":"connect","id":"c","token":"` + token(t, testSecret, user, time.Hour, nil) + `"}`); err != nil {
			t.Fatal(err)
		}
		if f := sockjsObjects(t, c, 1)[0]; f.Op != wire.OpConnected || f.User != user {
			t.Fatalf("connect as %s: %+v", user, f)
		}
		return c
	}
	bob := sockjsAs("bob")
	if err := bob.send(`{"op":"subscribe","channel":"inbox:alice","id":"sj"}`); err != nil {
		t.Fatal(err)
	}
	if f := sockjsObjects(t, bob, 1)[0]; f.Op != wire.OpError || f.Code != wire.CodeForbidden || f.ID != "sj" {
		t.Fatalf("bob over SockJS: %+v", f)
	}
	sj := sockjsAs("alice")
	if err := sj.send(`{"op":"subscribe","channel":"inbox:alice","from":1,"id":"sj"}`); err != nil {
		t.Fatal(err)
	}
	if objs := sockjsObjects(t, sj, 2); objs[0].Op != wire.OpSubscribed || objs[1].Offset != 1 {
		t.Fatalf("alice over SockJS: %+v", objs)
	}
}
