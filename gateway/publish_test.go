package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// busPublisher is the Publisher cmd/comet wires, over a bus.Gateway.
type busPublisher struct{ g *bus.Gateway }

func (p busPublisher) Publish(ctx context.Context, req wire.PublishRequest, deadline time.Time, done func(wire.PublishResponse, error)) error {
	return p.g.Publish(ctx, bus.Publish{Channel: req.Channel, Key: req.ID, Data: req.Data, Deadline: deadline}, done)
}

// startBusPublisher runs a bus.Gateway attached in process to hub's
// router, as `comet standalone` does.
func startBusPublisher(t testing.TB, hub *testHub) busPublisher {
	t.Helper()
	g, err := bus.NewGateway(bus.GatewayConfig{ID: "g1",
		Dial: func(context.Context) (bus.Link, error) {
			mine, theirs := bus.Pipe()
			if err := hub.Service.AttachBus(theirs); err != nil {
				mine.Close()
				return nil, err
			}
			return mine, nil
		},
		Deliver: func(string, json.RawMessage) error { return bus.ErrNoConnection }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the bus session", g.Connected)
	return busPublisher{g}
}

// TestPublishDuplicateFlag: a publish sent again with an id already stored
// is acknowledged at its first offset with "duplicate":true, over
// WebSocket and each SockJS transport; the first ack has no flag.
func TestPublishDuplicateFlag(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{Publisher: startBusPublisher(t, hub)})

	type conn struct {
		send func(string)
		next func() wire.ServerFrame
	}
	transports := map[string]func(t *testing.T) conn{
		"websocket": func(t *testing.T) conn {
			w := dial(t, g.url)
			return conn{func(s string) { w.send(s) }, w.next}
		},
	}
	for name, mk := range map[string]func(session string) sockjsClient{
		"sockjs-websocket": func(session string) sockjsClient {
			c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(g.url, "http")+"/sockjs/000/"+session+"/websocket", nil)
			if err != nil {
				t.Fatal(err)
			}
			return &sockjsWS{c: c}
		},
		"sockjs-xhr-streaming": func(session string) sockjsClient {
			return &sockjsXHR{base: g.url + "/sockjs/000/" + session, streaming: true}
		},
		"sockjs-xhr-polling": func(session string) sockjsClient {
			return &sockjsXHR{base: g.url + "/sockjs/000/" + session}
		},
	} {
		transports[name] = func(t *testing.T) conn {
			c := mk(randomID(8))
			t.Cleanup(c.close)
			if f := sockjsObjects(t, c, 1)[0]; f.Op != wire.OpConnected {
				t.Fatalf("first object %+v", f)
			}
			return conn{func(s string) {
				if err := c.send(s); err != nil {
					t.Fatal(err)
				}
			}, func() wire.ServerFrame { return sockjsObjects(t, c, 1)[0] }}
		}
	}
	for name, mk := range transports {
		t.Run(name, func(t *testing.T) {
			c := mk(t)
			frame := `{"op":"publish","channel":"dup","data":{"via":"` + name + `"},"id":"dup-` + name + `"}`
			c.send(frame)
			first := c.next()
			c.send(frame)
			again := c.next()
			if first.Op != wire.OpAck || first.Duplicate || first.ID != "dup-"+name {
				t.Fatalf("first publish: %+v, want an ack without the flag", first)
			}
			if again.Op != wire.OpAck || !again.Duplicate || again.Offset != first.Offset {
				t.Fatalf("the same id again: %+v, want an ack at %d with duplicate", again, first.Offset)
			}
		})
	}
}

// recordingPublisher records what reaches it and answers at once, in
// order, with offsets per channel.
type recordingPublisher struct {
	mu   sync.Mutex
	got  []wire.PublishRequest
	next map[string]uint64
}

func (p *recordingPublisher) Publish(ctx context.Context, req wire.PublishRequest, deadline time.Time, done func(wire.PublishResponse, error)) error {
	if req.ID == "" {
		return errors.New("a publish reached the Publisher without an id")
	}
	p.mu.Lock()
	p.got = append(p.got, req)
	if p.next == nil {
		p.next = map[string]uint64{}
	}
	p.next[req.Channel]++
	off := p.next[req.Channel]
	p.mu.Unlock()
	go done(wire.PublishResponse{Channel: req.Channel, Offset: off, Epoch: "e"}, nil)
	return nil
}

// TestPublishOrderAndIDs: a connection's publishes reach the Publisher in
// the order they came, many in flight; a publish without an id is given
// one (its ack carries none); a Publisher's refusal is the error frame.
func TestPublishOrderAndIDs(t *testing.T) {
	hub := startHub(t)
	rec := &recordingPublisher{}
	g := startGateway(t, httpHubs(t, hub.api), Config{Publisher: rec})
	w := dial(t, g.url)
	const n = 500
	for i := range n {
		id := fmt.Sprintf("p%d", i)
		if i%5 == 0 {
			id = ""
		}
		w.send(fmt.Sprintf(`{"op":"publish","channel":"o","data":%d,"id":%q}`, i, id))
	}
	acks := 0
	for acks < n {
		f := w.next()
		if f.Op != wire.OpAck {
			t.Fatalf("got %+v, want acks", f)
		}
		acks++
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != n {
		t.Fatalf("%d publishes reached the Publisher, want %d", len(rec.got), n)
	}
	ids := map[string]bool{}
	for i, req := range rec.got {
		if string(req.Data) != fmt.Sprint(i) {
			t.Fatalf("publish %d reached the Publisher as %s: out of order", i, req.Data)
		}
		if i%5 != 0 && req.ID != fmt.Sprintf("p%d", i) {
			t.Fatalf("publish %d has id %q", i, req.ID)
		}
		if ids[req.ID] {
			t.Fatalf("id %q given twice", req.ID)
		}
		ids[req.ID] = true
	}
}
