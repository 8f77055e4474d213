package socketio_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/internal/socketio"
	"github.com/comethq/comet/internal/socketio/siotest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testServer struct {
	*socketio.Server
	base string
}

func start(t *testing.T, cfg socketio.Config) *testServer {
	t.Helper()
	s, err := socketio.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", s)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		s.Close()
		hs.Close()
	})
	return &testServer{Server: s, base: hs.URL + "/socket.io/"}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echo answers every event "e" with an event "e" of the same arguments,
// and acks what asks for it.
func echo(c *socketio.Conn) {
	for {
		ev, err := c.Read()
		if err != nil {
			return
		}
		if ev.HasAck {
			_ = c.Ack(ev.AckID, json.RawMessage(`"ok"`))
		}
		if err := c.Emit(ev.Name, ev.Args...); err != nil {
			return
		}
	}
}

func expectEvent(t *testing.T, c *siotest.Client, name, arg string) {
	t.Helper()
	n, args, err := c.NextEvent(10 * time.Second)
	if err != nil {
		t.Fatalf("waiting for %s %s: %v", name, arg, err)
	}
	if n != name || len(args) != 1 || string(args[0]) != arg {
		t.Fatalf("got event %s %s, want %s %s", n, args, name, arg)
	}
}

// TestEcho: events go both ways in order on each transport, and across an
// upgrade from polling to WebSocket made while events are in flight.
func TestEcho(t *testing.T) {
	s := start(t, socketio.Config{Accept: echo})
	for _, mode := range []string{"polling", "websocket", "upgrade"} {
		t.Run(mode, func(t *testing.T) {
			transport := mode
			if mode == "upgrade" {
				transport = "polling"
			}
			c, err := siotest.Dial(s.base, transport, nil, map[string]string{"token": "x"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			n := 0
			for round := 0; round < 4; round++ {
				batch := make([]string, 50)
				for i := range batch {
					batch[i] = siotest.EventPacket("e", n+i)
				}
				// Sent while the answers are read, as browsers do: a POST
				// waits while the server's reader is behind.
				sent := make(chan error, 1)
				go func() { sent <- c.Send(batch...) }()
				for i := range batch {
					if i == 40 {
						if err := <-sent; err != nil {
							t.Fatal(err)
						}
						if mode == "upgrade" && round == 1 {
							// With answers still queued or being emitted.
							if err := c.Upgrade(); err != nil {
								t.Fatal(err)
							}
						}
					}
					expectEvent(t, c, "e", fmt.Sprint(n))
					n++
				}
			}
			// An ack asked for is answered.
			if err := c.Send(`421["e",{"a":1}]`); err != nil {
				t.Fatal(err)
			}
			p, err := c.NextMessage(10 * time.Second)
			if err != nil || p != `31["ok"]` {
				t.Fatalf("ack: %q %v", p, err)
			}
			expectEvent(t, c, "e", `{"a":1}`)
		})
	}
}

// TestAuthAndQuery: Accept sees the connect packet's auth and the
// handshake's query.
func TestAuthAndQuery(t *testing.T) {
	got := make(chan string, 1)
	s := start(t, socketio.Config{Accept: func(c *socketio.Conn) {
		got <- string(c.Auth()) + " " + c.Query().Get("token") + " " + c.Transport()
		<-c.Done()
	}})
	c, err := siotest.Dial(s.base, "websocket", url.Values{"token": {"q"}}, map[string]string{"token": "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if g := <-got; g != `{"token":"a"} q websocket` {
		t.Fatalf("Accept saw %q", g)
	}
}

// TestNamespaces: a connect to another namespace is refused with a
// connect error; "/" still works on the session.
func TestNamespaces(t *testing.T) {
	s := start(t, socketio.Config{Accept: echo})
	c, err := siotest.Open(s.base, "polling", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send("40/admin,"); err != nil {
		t.Fatal(err)
	}
	p, err := c.NextMessage(10 * time.Second)
	if err != nil || p != `4/admin,{"message":"Invalid namespace"}` {
		t.Fatalf("connect to /admin answered %q %v", p, err)
	}
	if err := c.Send("40", siotest.EventPacket("e", 1)); err != nil {
		t.Fatal(err)
	}
	if p, err := c.NextMessage(10 * time.Second); err != nil || !strings.HasPrefix(p, `0{"sid":`) {
		t.Fatalf("connect answered %q %v", p, err)
	}
	expectEvent(t, c, "e", "1")
}

// TestConnectTimeout: a session that never connects to "/" is closed.
func TestConnectTimeout(t *testing.T) {
	s := start(t, socketio.Config{Accept: echo, ConnectTimeout: 100 * time.Millisecond})
	c, err := siotest.Open(s.base, "polling", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session closed", func() bool { return s.Sessions() == 0 })
	if _, err := c.Next(5 * time.Second); !errors.Is(err, siotest.ErrClosed) {
		t.Fatalf("poll after the timeout: %v, want closed", err)
	}
}

// TestIdle: Read fails with ErrIdle when the client stops answering
// pings, and not while it answers them.
func TestIdle(t *testing.T) {
	errs := make(chan error, 1)
	var mu sync.Mutex
	var conn *socketio.Conn
	s := start(t, socketio.Config{IdleTimeout: time.Second, Accept: func(c *socketio.Conn) {
		mu.Lock()
		conn = c
		mu.Unlock()
		_, err := c.Read()
		errs <- err
	}})
	c, err := siotest.Dial(s.base, "websocket", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "Accept", func() bool { mu.Lock(); defer mu.Unlock(); return conn != nil })
	// Pinged and answering for more than the idle timeout: still open.
	c.Pongs = false
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		mu.Lock()
		_ = conn.Ping()
		mu.Unlock()
		if p, err := c.Next(5 * time.Second); err != nil || p != "2" {
			t.Fatalf("got %q %v, want a ping", p, err)
		}
		if err := c.Send("3"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			t.Fatalf("Read failed while the client answered: %v", err)
		default:
		}
		time.Sleep(50 * time.Millisecond) // the pings' pace
	}
	if err := <-errs; !errors.Is(err, socketio.ErrIdle) {
		t.Fatalf("Read: %v, want ErrIdle", err)
	}
}

// TestCloseWith: the last event arrives, then the session ends; with
// disconnect, Socket.IO's disconnect follows the event.
func TestCloseWith(t *testing.T) {
	for _, transport := range []string{"polling", "websocket"} {
		for _, disconnect := range []bool{false, true} {
			t.Run(fmt.Sprint(transport, disconnect), func(t *testing.T) {
				s := start(t, socketio.Config{Accept: func(c *socketio.Conn) {
					_ = c.Emit("e", json.RawMessage(`1`))
					c.CloseWith("bye", json.RawMessage(`{"code":4001}`), disconnect)
				}})
				c, err := siotest.Dial(s.base, transport, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				expectEvent(t, c, "e", "1")
				expectEvent(t, c, "bye", `{"code":4001}`)
				if disconnect {
					if p, err := c.NextMessage(5 * time.Second); err != nil || p != "1" {
						t.Fatalf("after the event: %q %v, want a disconnect", p, err)
					}
				}
				if p, err := c.Next(5 * time.Second); !errors.Is(err, siotest.ErrClosed) {
					t.Fatalf("after the event: %q %v, want closed", p, err)
				}
				waitFor(t, "no session", func() bool { return s.Sessions() == 0 })
			})
		}
	}
}

// TestEmitWaitsForClient: a polling client that does not poll makes Emit
// wait (the owner sees a slow client) until the session closes.
func TestEmitWaitsForClient(t *testing.T) {
	emitted := make(chan error, 3)
	s := start(t, socketio.Config{Accept: func(c *socketio.Conn) {
		for i := 0; i < 3; i++ {
			emitted <- c.Emit("e", json.RawMessage(fmt.Sprint(i)))
		}
	}})
	c, err := siotest.Dial(s.base, "polling", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The poll that took the connect answer may have taken event 0 too.
	select {
	case err := <-emitted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
	}
	select {
	case err := <-emitted:
		t.Fatalf("an Emit returned (%v) while the client did not poll", err)
	case <-time.After(200 * time.Millisecond):
	}
	pkts, err := c.Poll()
	if err != nil || len(pkts) == 0 {
		t.Fatalf("poll: %v %v", pkts, err)
	}
	if err := <-emitted; err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := <-emitted; !errors.Is(err, socketio.ErrClosed) {
		t.Fatalf("Emit after Close: %v", err)
	}
}

// TestBadRequests: what a broken client sends ends its session (or is
// answered 400), never the server.
func TestBadRequests(t *testing.T) {
	s := start(t, socketio.Config{Accept: echo, MaxPayload: 1000})
	get := func(q string) (int, string) {
		resp, err := http.Get(s.base + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = fmt.Fprint(&b, resp.Header.Get("Content-Type"))
		return resp.StatusCode, b.String()
	}
	for q, want := range map[string]int{
		"EIO=3&transport=polling":          400,
		"EIO=4&transport=flash":            400,
		"EIO=4&transport=polling&sid=nope": 400,
		"EIO=4&transport=websocket":        400, // not an upgrade request
	} {
		if code, _ := get(q); code != want {
			t.Errorf("GET ?%s: %d, want %d", q, code, want)
		}
	}
	for name, body := range map[string]string{
		"binary":        "bAQID",
		"empty packet":  "42[\"e\",1]\x1e\x1e",
		"unknown type":  "9",
		"binary event":  `451-["e",{"_placeholder":true,"num":0}]`,
		"not JSON":      `42["e",`,
		"event no name": `42[1]`,
		"too large":     `42["e","` + strings.Repeat("x", 2000) + `"]`,
		"upgrade":       "5",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := siotest.Dial(s.base, "polling", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			code, _, err := c.Raw(http.MethodPost, body)
			if err != nil {
				t.Fatal(err)
			}
			if code == 200 {
				t.Fatalf("POST %q answered 200", body)
			}
			if _, err := c.Next(5 * time.Second); !errors.Is(err, siotest.ErrClosed) {
				t.Fatalf("session after POST %q: %v, want closed", body, err)
			}
		})
	}
	t.Run("overlapping polls", func(t *testing.T) {
		c, err := siotest.Dial(s.base, "polling", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		first := make(chan error, 1)
		go func() { _, err := c.Poll(); first <- err }()
		waitFor(t, "the second poll refused", func() bool {
			code, _, err := c.Raw(http.MethodGet, "")
			return err == nil && code == 400
		})
		<-first // answered: the close packet, or 400 if it came second
		waitFor(t, "no session", func() bool { return s.Sessions() == 0 })
	})
	t.Run("events before connect", func(t *testing.T) {
		c, err := siotest.Open(s.base, "polling", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Emit("e", 1); err == nil {
			t.Fatal("an event before connect was taken")
		}
	})
}

// TestCORS: an allowed origin is echoed and preflights are answered; a
// refused one gets 403.
func TestCORS(t *testing.T) {
	s := start(t, socketio.Config{Accept: echo, CheckOrigin: func(r *http.Request) bool {
		return r.Header.Get("Origin") == "https://ok.example"
	}})
	do := func(method, origin string) *http.Response {
		req, _ := http.NewRequest(method, s.base+"?EIO=4&transport=polling", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := do(http.MethodOptions, "https://ok.example"); r.StatusCode != 204 ||
		r.Header.Get("Access-Control-Allow-Origin") != "https://ok.example" ||
		r.Header.Get("Access-Control-Allow-Headers") != "content-type" {
		t.Errorf("preflight: %d %v", r.StatusCode, r.Header)
	}
	if r := do(http.MethodGet, "https://ok.example"); r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != "https://ok.example" {
		t.Errorf("handshake: %d %v", r.StatusCode, r.Header)
	}
	if r := do(http.MethodGet, "https://evil.example"); r.StatusCode != 403 {
		t.Errorf("refused origin: %d", r.StatusCode)
	}
}

// TestClose: Server.Close ends every session, connected or not, on every
// transport, and waits for Accept (goleak checks nothing is left).
func TestClose(t *testing.T) {
	s := start(t, socketio.Config{Accept: echo})
	var clients []*siotest.Client
	for _, transport := range []string{"polling", "websocket"} {
		for i := 0; i < 3; i++ {
			c, err := siotest.Dial(s.base, transport, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		c, err := siotest.Open(s.base, transport, nil)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	// A poll waiting when the server closes is answered.
	polled := make(chan error, 1)
	go func() { _, err := clients[0].Next(10 * time.Second); polled <- err }()
	if n := s.Sessions(); n != 8 {
		t.Fatalf("%d sessions, want 8", n)
	}
	s.Close()
	if n := s.Sessions(); n != 0 {
		t.Fatalf("%d sessions after Close", n)
	}
	if err := <-polled; !errors.Is(err, siotest.ErrClosed) {
		t.Fatalf("poll under way at Close: %v", err)
	}
	if _, err := siotest.Dial(s.base, "polling", nil, nil); err == nil {
		t.Fatal("a session opened after Close")
	}
	for _, c := range clients {
		if c.WS != nil {
			c.WS.Close()
		}
	}
}
