package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// fakeWorkers answers requests with a function of the test's.
type fakeWorkers func(ctx context.Context, req Request) (json.RawMessage, error)

func (f fakeWorkers) Request(ctx context.Context, req Request) (json.RawMessage, error) {
	return f(ctx, req)
}

func TestRequests(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{RequestTimeout: 300 * time.Millisecond,
		Workers: fakeWorkers(func(ctx context.Context, req Request) (json.RawMessage, error) {
			switch req.Route {
			case "echo":
				return json.Marshal(req)
			case "fail":
				return nil, &wire.Error{Code: wire.CodeBadRequest, Message: "no such order"}
			case "nobody":
				return nil, &wire.Error{Code: wire.CodeNotFound, Message: `no worker serves route "nobody"`}
			case "slow":
				<-ctx.Done()
				return nil, ctx.Err()
			case "broken":
				return nil, errors.New("connection reset")
			case "nothing":
				return nil, nil
			}
			return nil, errors.New("unexpected route " + req.Route)
		})})
	c := dial(t, g.url)

	c.send(`{"op":"request","route":"echo","data":{"n":1},"id":"r1"}`)
	f := c.expect(wire.OpResponse)
	var got Request
	if err := json.Unmarshal(f.Data, &got); err != nil || f.ID != "r1" || got.Route != "echo" ||
		string(got.Data) != `{"n":1}` || got.Conn != c.id || got.User != "" {
		t.Fatalf("echo: %+v (%s), %v; want the request with connection %s", f, f.Data, err, c.id)
	}
	c.send(`{"op":"request","route":"nothing","id":"r0"}`)
	if f := c.expect(wire.OpResponse); f.ID != "r0" || string(f.Data) != "null" {
		t.Fatalf("empty answer: %+v", f)
	}
	for _, tc := range []struct{ route, code, msg string }{
		{"fail", wire.CodeBadRequest, "no such order"},
		{"nobody", wire.CodeNotFound, "nobody"},
		{"slow", wire.CodeTimeout, "within 300ms"},
		{"broken", wire.CodeUnavailable, "connection reset"},
	} {
		c.send(wire.ClientFrame{Op: wire.OpRequest, Route: tc.route, ID: tc.route})
		f := c.expect(wire.OpError)
		if f.ID != tc.route || f.Code != tc.code || !strings.Contains(f.Message, tc.msg) {
			t.Fatalf("%s: got %+v, want %s containing %q", tc.route, f, tc.code, tc.msg)
		}
	}
}

func TestSendToConnectionAndEvents(t *testing.T) {
	hub := startHub(t)
	var mu sync.Mutex
	var events []Event
	g := startGateway(t, httpHubs(t, hub.api), Config{Events: func(ev Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	c := dial(t, g.url)
	if err := g.SendToConnection(c.id, json.RawMessage("{\n  \"hello\": 1\n}")); err != nil {
		t.Fatal(err)
	}
	f := c.expect(wire.OpMessage)
	if f.Channel != "" || f.Offset != 0 || string(f.Data) != `{"hello":1}` {
		t.Fatalf("direct message %+v (%s)", f, f.Data)
	}
	if err := g.SendToConnection(c.id+"x", json.RawMessage(`1`)); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("send to an unknown connection: %v", err)
	}
	if err := g.SendToConnection(c.id, json.RawMessage(`{"a":`)); err == nil {
		t.Fatal("send of bad JSON: no error")
	}
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "ev"})
	c.expect(wire.OpSubscribed)
	c.send(wire.ClientFrame{Op: wire.OpUnsubscribe, Channel: "ev"})
	c.expect(wire.OpUnsubscribed)
	c.c.Close()
	want := []Event{
		{Type: EventConnected, Conn: c.id},
		{Type: EventSubscribed, Conn: c.id, Channel: "ev"},
		{Type: EventUnsubscribed, Conn: c.id, Channel: "ev"},
		{Type: EventDisconnected, Conn: c.id},
	}
	waitFor(t, "the disconnected event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	for i := range want {
		if events[i] != want[i] {
			t.Fatalf("events %+v, want %+v", events, want)
		}
	}
	if err := g.SendToConnection(c.id, json.RawMessage(`1`)); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("send to a closed connection: %v", err)
	}
}

func TestRPCProxy(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(raw))
		mu.Unlock()
		var req Request
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(raw, &req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		switch req.Route {
		case "add":
			var in struct{ A, B int }
			_ = json.Unmarshal(req.Data, &in)
			_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"sum": in.A + in.B, "user": req.User}})
		case "refuse":
			_, _ = io.WriteString(w, `{"error":{"code":"forbidden","message":"not yours"}}`)
		case "odd-code":
			_, _ = io.WriteString(w, `{"error":{"code":"teapot","message":"short and stout"}}`)
		case "crash":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "html":
			_, _ = io.WriteString(w, `<html></html>`)
		case "slow":
			<-r.Context().Done()
		}
	}))
	defer backend.Close()
	p, err := NewRPCProxy(backend.URL + "/rpc")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "ftp://x/y", "http://", "::"} {
		if _, err := NewRPCProxy(bad); err == nil {
			t.Fatalf("NewRPCProxy(%q): no error", bad)
		}
	}
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{Workers: p, RequestTimeout: 300 * time.Millisecond})
	c := dial(t, g.url)

	c.send(`{"op":"request","route":"add","data":{"a":2,"b":3},"id":"r1"}`)
	if f := c.expect(wire.OpResponse); f.ID != "r1" || string(f.Data) != `{"sum":5,"user":""}` {
		t.Fatalf("add: %+v (%s)", f, f.Data)
	}
	mu.Lock()
	first := bodies[0]
	mu.Unlock()
	if want := `{"route":"add","data":{"a":2,"b":3},"connection":"` + c.id + `"}`; first != want {
		t.Fatalf("the endpoint got %s, want %s", first, want)
	}
	for _, tc := range []struct{ route, code, msg string }{
		{"refuse", wire.CodeForbidden, "not yours"},
		{"odd-code", wire.CodeBadRequest, "short and stout"},
		{"crash", wire.CodeUnavailable, "500"},
		{"html", wire.CodeUnavailable, "something other than"},
		{"slow", wire.CodeTimeout, "300ms"},
	} {
		c.send(wire.ClientFrame{Op: wire.OpRequest, Route: tc.route, ID: tc.route})
		f := c.expect(wire.OpError)
		if f.ID != tc.route || f.Code != tc.code || !strings.Contains(f.Message, tc.msg) {
			t.Fatalf("%s: got %+v, want %s containing %q", tc.route, f, tc.code, tc.msg)
		}
	}
	backend.Close()
	c.send(`{"op":"request","route":"add","id":"gone"}`)
	if f := c.expect(wire.OpError); f.Code != wire.CodeUnavailable || f.ID != "gone" {
		t.Fatalf("endpoint down: %+v", f)
	}
}
