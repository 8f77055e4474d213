package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/internal/socketio/siotest"
	"github.com/comethq/comet/wire"
)

// sioClient speaks Comet's protocol over Socket.IO: "comet" events.
type sioClient struct {
	t testing.TB
	*siotest.Client
}

// dialSocketIO connects over transport ("polling", "websocket", or
// "upgrade": polling, then upgraded to WebSocket once connected) with auth.
func dialSocketIO(t testing.TB, gatewayURL, transport string, query url.Values, auth any) *sioClient {
	t.Helper()
	tr := transport
	if tr == "upgrade" {
		tr = "polling"
	}
	c, err := siotest.Dial(gatewayURL+"/socket.io/", tr, query, auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.WS != nil {
			c.WS.Close()
		}
	})
	if transport == "upgrade" {
		if err := c.Upgrade(); err != nil {
			t.Fatal(err)
		}
	}
	return &sioClient{t: t, Client: c}
}

func (c *sioClient) send(v any) {
	c.t.Helper()
	if err := c.Emit("comet", v); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next server object; a "comet:close" event is returned
// as an object of op "close" (Code: the close code, Message: the reason).
func (c *sioClient) next() wire.ServerFrame {
	c.t.Helper()
	for {
		name, args, err := c.NextEvent(10 * time.Second)
		if err != nil {
			c.t.Fatal(err)
		}
		if len(args) != 1 {
			c.t.Fatalf("event %s with %d arguments", name, len(args))
		}
		var f wire.ServerFrame
		switch name {
		case "comet":
			if err := json.Unmarshal(args[0], &f); err != nil {
				c.t.Fatalf("bad server object %s: %v", args[0], err)
			}
		case "comet:close":
			var cl struct {
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(args[0], &cl); err != nil {
				c.t.Fatal(err)
			}
			f = wire.ServerFrame{Op: "close", Code: strconv.Itoa(cl.Code), Message: cl.Reason}
		default:
			c.t.Fatalf("unexpected event %s", name)
		}
		return f
	}
}

func (c *sioClient) expect(op string) wire.ServerFrame {
	c.t.Helper()
	f := c.next()
	if f.Op != op {
		c.t.Fatalf("got %+v, want op %q", f, op)
	}
	return f
}

// TestSocketIOProtocol: Comet's protocol over each Socket.IO transport:
// connected first, subscribe from a position (replay, then live), publish
// with ack, ping, frames as objects or strings, too large frames, events
// of other names ignored.
func TestSocketIOProtocol(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{MaxFrameBytes: 1024})
	for _, transport := range []string{"polling", "websocket", "upgrade"} {
		t.Run(transport, func(t *testing.T) {
			ch := "sio-" + transport
			for i := 1; i <= 3; i++ {
				hub.publish(t, ch, `{"n":`+string(rune('0'+i))+`}`)
			}
			c := dialSocketIO(t, g.url, transport, nil, nil)
			if f := c.expect(wire.OpConnected); f.Connection == "" {
				t.Fatalf("connected without a connection id: %+v", f)
			}
			c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: ch, From: u64p(2), ID: "s1"})
			if f := c.expect(wire.OpSubscribed); f.Channel != ch || !f.Recovered || f.Next != 4 {
				t.Fatalf("subscribed: %+v", f)
			}
			for want := uint64(2); want <= 3; want++ {
				if f := c.expect(wire.OpMessage); f.Offset != want {
					t.Fatalf("replay: offset %d, want %d", f.Offset, want)
				}
			}
			// A frame as a string, as comet.js sends it.
			if err := c.Emit("comet", `{"op":"publish","channel":"`+ch+`","data":{"n":4},"id":"p4"}`); err != nil {
				t.Fatal(err)
			}
			var acked, got4 bool
			for !acked || !got4 {
				switch f := c.next(); f.Op {
				case wire.OpAck:
					if f.ID != "p4" || f.Offset != 4 {
						t.Fatalf("ack: %+v", f)
					}
					acked = true
				case wire.OpMessage:
					if f.Offset != 4 || string(f.Data) != `{"n":4}` {
						t.Fatalf("live: %+v", f)
					}
					got4 = true
				default:
					t.Fatalf("unexpected %+v", f)
				}
			}
			hub.publish(t, ch, `5`)
			if f := c.expect(wire.OpMessage); f.Offset != 5 {
				t.Fatalf("live from the hub: %+v", f)
			}
			// Other events are ignored; an ack asked for is sent at once.
			if err := c.Send(`427["chat","hi"]`); err != nil {
				t.Fatal(err)
			}
			if p, err := c.NextMessage(10 * time.Second); err != nil || p != "37[]" {
				t.Fatalf("ack of an event: %q %v", p, err)
			}
			c.send(map[string]any{"op": "ping", "id": "x"})
			if f := c.expect(wire.OpPong); f.ID != "x" {
				t.Fatalf("pong: %+v", f)
			}
			c.send(map[string]any{"op": "publish", "channel": ch, "data": strings.Repeat("x", 2000), "id": "big"})
			if f := c.expect(wire.OpError); f.Code != wire.CodeTooLarge {
				t.Fatalf("too large: %+v", f)
			}
			c.send("not json")
			if f := c.expect(wire.OpError); f.Code != wire.CodeBadRequest {
				t.Fatalf("bad frame: %+v", f)
			}
			c.send(wire.ClientFrame{Op: wire.OpPing, ID: "still"})
			if f := c.expect(wire.OpPong); f.ID != "still" {
				t.Fatalf("after errors: %+v", f)
			}
		})
	}
}

// TestSocketIOAuth: the token of socket.io-client's auth option, or of
// ?token=; a refused one gets the error, the close code 4006 and
// Socket.IO's disconnect (no automatic reconnect with it).
func TestSocketIOAuth(t *testing.T) {
	g := authGateway(t, false)
	good := token(t, testSecret, "ann", time.Hour, nil)
	for _, transport := range []string{"polling", "websocket"} {
		c := dialSocketIO(t, g.url, transport, nil, map[string]string{"token": good})
		if f := c.expect(wire.OpConnected); f.User != "ann" {
			t.Fatalf("%s, auth token: %+v", transport, f)
		}
		c = dialSocketIO(t, g.url, transport, url.Values{"token": {good}}, nil)
		if f := c.expect(wire.OpConnected); f.User != "ann" {
			t.Fatalf("%s, ?token=: %+v", transport, f)
		}
		c = dialSocketIO(t, g.url, transport, nil, map[string]string{"token": "nonsense"})
		if f := c.expect(wire.OpError); f.Code != wire.CodeForbidden {
			t.Fatalf("%s, bad token: %+v", transport, f)
		}
		if f := c.expect("close"); f.Code != strconv.Itoa(wire.CloseAuth) {
			t.Fatalf("%s, bad token: %+v, want close 4006", transport, f)
		}
		if p, err := c.NextMessage(10 * time.Second); p != "1" || err != nil {
			t.Fatalf("%s, after 4006: %q %v, want Socket.IO's disconnect", transport, p, err)
		}
		// Without a token, anonymous clients not allowed: a connect frame
		// in time, as on /ws.
		c = dialSocketIO(t, g.url, transport, nil, nil)
		c.send(wire.ClientFrame{Op: wire.OpConnect, Token: good, ID: "c1"})
		if f := c.expect(wire.OpConnected); f.User != "ann" || f.ID != "c1" {
			t.Fatalf("%s, connect frame: %+v", transport, f)
		}
	}
}

// TestSocketIORequests: a request is answered by the workers.
func TestSocketIORequests(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{
		Workers: fakeWorkers(func(ctx context.Context, req Request) (json.RawMessage, error) {
			if req.Route != "echo" {
				return nil, &wire.Error{Code: wire.CodeNotFound, Message: "no worker serves route " + req.Route}
			}
			return req.Data, nil
		})})
	for _, transport := range []string{"polling", "websocket"} {
		c := dialSocketIO(t, g.url, transport, nil, nil)
		c.expect(wire.OpConnected)
		c.send(wire.ClientFrame{Op: wire.OpRequest, Route: "echo", Data: json.RawMessage(`{"q":1}`), ID: "r1"})
		if f := c.expect(wire.OpResponse); f.ID != "r1" || string(f.Data) != `{"q":1}` {
			t.Fatalf("%s: response %+v", transport, f)
		}
		c.send(wire.ClientFrame{Op: wire.OpRequest, Route: "none", ID: "r2"})
		if f := c.expect(wire.OpError); f.ID != "r2" || f.Code != wire.CodeNotFound {
			t.Fatalf("%s: error %+v", transport, f)
		}
	}
}

// TestSocketIOShutdown: a gateway shutting down sends 4001 to Socket.IO
// clients, after what was queued for them, and closes their sessions;
// socket.io-client then reconnects by itself (no disconnect packet).
func TestSocketIOShutdown(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	var clients []*sioClient
	for _, transport := range []string{"polling", "websocket", "upgrade"} {
		c := dialSocketIO(t, g.url, transport, nil, nil)
		c.expect(wire.OpConnected)
		c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "down", ID: "s"})
		c.expect(wire.OpSubscribed)
		clients = append(clients, c)
	}
	// One that opened a session but did not connect yet.
	pending, err := siotest.Open(g.url+"/socket.io/", "polling", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(ctx) }()
	for _, c := range clients {
		if f := c.expect("close"); f.Code != strconv.Itoa(wire.CloseShutdown) {
			t.Fatalf("got %+v, want close 4001", f)
		}
		if p, err := c.Next(10 * time.Second); !errors.Is(err, siotest.ErrClosed) {
			t.Fatalf("after 4001: %q %v, want the session closed", p, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := pending.Next(10 * time.Second); !errors.Is(err, siotest.ErrClosed) {
		t.Fatalf("session not connected at shutdown: %v", err)
	}
	if n := g.sio.Sessions(); n != 0 {
		t.Fatalf("%d Socket.IO sessions after shutdown", n)
	}
}
