package client

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/client/clienttest"
	"github.com/comethq/comet/wire"
)

func TestPublish(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	ack, err := c.Publish(ctxT(t), "chat", map[string]string{"text": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if ack != (Ack{Channel: "chat", Offset: 1, Epoch: clienttest.DefaultEpoch}) {
		t.Fatalf("ack %+v", ack)
	}
	ack, err = c.PublishWithID(ctxT(t), "chat", "k1", json.RawMessage(" [1, 2]\n"))
	if err != nil || ack.Offset != 2 || ack.Duplicate {
		t.Fatalf("ack %+v, %v", ack, err)
	}
	// The same id again is stored once and acknowledged with the first
	// offset.
	ack, err = c.PublishWithID(ctxT(t), "chat", "k1", json.RawMessage(`[1,2]`))
	if err != nil || ack.Offset != 2 || !ack.Duplicate {
		t.Fatalf("ack %+v, %v", ack, err)
	}
	_, _, msgs := g.Messages("chat")
	if len(msgs) != 2 || string(msgs[0]) != `{"text":"hi"}` || string(msgs[1]) != `[1,2]` {
		t.Fatalf("stored %s", msgs)
	}
	var ids []string
	for _, f := range g.Frames() {
		if f.Op == wire.OpPublish {
			ids = append(ids, f.ID)
		}
	}
	if len(ids) != 3 || len(ids[0]) < 16 || ids[1] != "k1" || ids[2] != "k1" {
		t.Fatalf("publish ids %q", ids)
	}

	for _, tc := range []struct {
		channel, id, data string
	}{
		{"bad channel", "k", `1`},
		{"chat", "", `1`},
		{"chat", "k", `{`},
		{"chat", "k", ``},
		{"chat", "k", `null`},
	} {
		if _, err := c.PublishWithID(ctxT(t), tc.channel, tc.id, json.RawMessage(tc.data)); err == nil {
			t.Errorf("PublishWithID(%q, %q, %q) accepted", tc.channel, tc.id, tc.data)
		}
	}
}

// A publish whose connection drops after the gateway stored it, before the
// ack, is sent again with the same id after the reconnect and stored once.
func TestPublishRetriedAcrossDisconnect(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	for i := 0; i < 20; i++ {
		g.DropBeforeAck(1)
		ack, err := c.PublishWithID(ctxT(t), "chat", "id-"+string(rune('a'+i)), data(i))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Offset != uint64(i+1) {
			t.Fatalf("publish %d acked at offset %d", i, ack.Offset)
		}
	}
	if g.Stores() != 20 {
		t.Fatalf("gateway stored %d messages, want 20", g.Stores())
	}
	if n := g.Accepted(); n < 21 {
		t.Fatalf("%d connections, want at least 21", n)
	}
}

// unavailable and timeout mean "retry with the same id"; the retry comes on
// the same connection after a backoff.
func TestPublishRetriedOnUnavailable(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	g.FailPublishes(CodeUnavailable, CodeTimeout, CodeUnavailable)
	ack, err := c.PublishWithID(ctxT(t), "chat", "k1", data(1))
	if err != nil || ack.Offset != 1 {
		t.Fatalf("ack %+v, %v", ack, err)
	}
	n := 0
	for _, f := range g.Frames() {
		if f.Op == wire.OpPublish {
			n++
			if f.ID != "k1" {
				t.Fatalf("retry with id %q", f.ID)
			}
		}
	}
	if n != 4 || g.Stores() != 1 || g.Accepted() != 1 {
		t.Fatalf("%d publishes, %d stored, %d connections", n, g.Stores(), g.Accepted())
	}
}

func TestPublishErrors(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	for _, code := range []string{CodeBadRequest, CodeForbidden, CodeNotFound} {
		g.FailPublishes(code)
		_, err := c.Publish(ctxT(t), "chat", 1)
		var e *Error
		if !errors.As(err, &e) || e.Code != code || e.Message != "fake failure" {
			t.Fatalf("got %v, want an *Error with code %s", err, code)
		}
	}
	_, err := c.Publish(ctxT(t), "chat", strings.Repeat("x", clienttest.MaxDataBytes))
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeTooLarge {
		t.Fatalf("got %v", err)
	}
	if g.Stores() != 0 {
		t.Fatalf("%d stored", g.Stores())
	}
}

// A publish made while no gateway is reachable is sent once one is, and a
// publish whose ctx ends says why the client is not connected.
func TestPublishWhileDown(t *testing.T) {
	g := newGateway(t)
	g.SetDown(true)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Publish(ctx, "chat", 1)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("got %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Publish(ctxT(t), "chat", 2)
		errc <- err
	}()
	waitFor(t, 5*time.Second, "a few refused dials", func() bool { return g.Attempts() >= 3 })
	g.SetDown(false)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if g.Stores() != 1 {
		t.Fatalf("%d stored", g.Stores())
	}
}

func TestRequest(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}, RequestTimeout: 200 * time.Millisecond})

	resp, err := c.Request(ctxT(t), clienttest.RouteEcho, map[string]int{"a": 1})
	if err != nil || string(resp) != `{"a":1}` {
		t.Fatalf("echo: %s, %v", resp, err)
	}
	var e *Error
	if _, err := c.Request(ctxT(t), "nope", nil); !errors.As(err, &e) || e.Code != CodeNotFound {
		t.Fatalf("unknown route: %v", err)
	}
	if _, err := c.Request(ctxT(t), clienttest.RouteNever, nil); !errors.As(err, &e) || e.Code != CodeTimeout {
		t.Fatalf("no answer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Request(ctx, clienttest.RouteNever, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// A request whose connection drops fails with unavailable and is not sent
// again.
func TestRequestNotRetried(t *testing.T) {
	g := newGateway(t)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	g.SetHook(func(f wire.ClientFrame) {
		if f.Op == wire.OpRequest {
			g.Drop()
		}
	})
	_, err := c.Request(ctxT(t), clienttest.RouteNever, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeUnavailable {
		t.Fatalf("got %v", err)
	}
	g.SetHook(nil)
	waitFor(t, 5*time.Second, "reconnect", func() bool { return c.State() == Connected && g.Accepted() == 2 })
	if _, err := c.Request(ctxT(t), clienttest.RouteEcho, 1); err != nil { // a barrier
		t.Fatal(err)
	}
	n := 0
	for _, f := range g.Frames() {
		if f.Op == wire.OpRequest && f.Route == clienttest.RouteNever {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("request sent %d times", n)
	}
}
