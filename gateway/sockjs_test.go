package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// sockjsClient speaks the SockJS protocol of one transport, as the
// sockjs-client browser library does.
type sockjsClient interface {
	// recv returns the next message the server sent (one server frame of
	// the Comet protocol).
	recv() (string, error)
	send(frame string) error
	close()
}

// decodeSockJS parses one SockJS frame: "o", "h", "a[...]" or "c[...]".
func decodeSockJS(frame string) (msgs []string, closed bool, err error) {
	switch {
	case frame == "o" || frame == "h" || frame == "":
		return nil, false, nil
	case strings.HasPrefix(frame, "a"):
		err := json.Unmarshal([]byte(frame[1:]), &msgs)
		return msgs, false, err
	case strings.HasPrefix(frame, "c"):
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("unexpected SockJS frame %q", frame)
}

func sockjsSend(frame string) []byte {
	b, _ := json.Marshal([]string{frame})
	return b
}

// sockjsWS is SockJS's websocket transport.
type sockjsWS struct {
	c       *websocket.Conn
	pending []string
}

func (s *sockjsWS) recv() (string, error) {
	for len(s.pending) == 0 {
		_ = s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := s.c.ReadMessage()
		if err != nil {
			return "", err
		}
		msgs, closed, err := decodeSockJS(string(b))
		if err != nil || closed {
			return "", fmt.Errorf("closed %q: %v", b, err)
		}
		s.pending = msgs
	}
	m := s.pending[0]
	s.pending = s.pending[1:]
	return m, nil
}

func (s *sockjsWS) send(frame string) error {
	return s.c.WriteMessage(websocket.TextMessage, sockjsSend(frame))
}
func (s *sockjsWS) close() { s.c.Close() }

// sockjsXHR is SockJS's xhr-streaming (streaming true) or xhr-polling
// transport: frames come in HTTP responses, and go in xhr_send POSTs.
type sockjsXHR struct {
	base      string // http://host/sockjs/000/session
	streaming bool
	body      io.ReadCloser
	lines     *bufio.Reader
	pending   []string
}

func (s *sockjsXHR) poll() ([]string, error) {
	if s.streaming {
		if s.lines == nil {
			resp, err := http.Post(s.base+"/xhr_streaming", "text/plain", nil)
			if err != nil {
				return nil, err
			}
			s.body, s.lines = resp.Body, bufio.NewReader(resp.Body)
		}
		line, err := s.lines.ReadString('\n')
		if err != nil {
			s.body.Close()
			s.lines = nil // the server ends a response after ResponseLimit bytes: open another
			return nil, nil
		}
		line = strings.TrimSuffix(line, "\n")
		if strings.Trim(line, "h") == "" { // the 2 KiB prelude, or a heartbeat
			return nil, nil
		}
		msgs, closed, err := decodeSockJS(line)
		if closed {
			return nil, fmt.Errorf("closed: %s", line)
		}
		return msgs, err
	}
	var b []byte
	for attempt := 0; ; attempt++ {
		resp, err := http.Post(s.base+"/xhr", "text/plain", nil)
		if err != nil {
			return nil, err
		}
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		// sockjs-go detaches a finished poll asynchronously: a poll sent
		// at once after the previous one may find it still attached and
		// get c[2010]. Over a real network a round trip hides this; here,
		// wait a little and poll again.
		if !strings.HasPrefix(string(b), `c[2010,`) || attempt == 100 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	msgs, closed, err := decodeSockJS(strings.TrimSuffix(string(b), "\n"))
	if closed {
		return nil, fmt.Errorf("closed: %s", b)
	}
	return msgs, err
}

func (s *sockjsXHR) recv() (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for len(s.pending) == 0 {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("nothing received in 10s")
		}
		msgs, err := s.poll()
		if err != nil {
			return "", err
		}
		s.pending = msgs
	}
	m := s.pending[0]
	s.pending = s.pending[1:]
	return m, nil
}

func (s *sockjsXHR) send(frame string) error {
	resp, err := http.Post(s.base+"/xhr_send", "text/plain", bytes.NewReader(sockjsSend(frame)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("xhr_send: %s", resp.Status)
	}
	return nil
}

func (s *sockjsXHR) close() {
	if s.body != nil {
		s.body.Close()
	}
}

// objects reads server objects from a SockJS client until n are read.
func sockjsObjects(t *testing.T, c sockjsClient, n int) []wire.ServerFrame {
	t.Helper()
	var out []wire.ServerFrame
	for len(out) < n {
		m, err := c.recv()
		if err != nil {
			t.Fatalf("after %d objects: %v", len(out), err)
		}
		for _, line := range strings.Split(m, "\n") {
			var f wire.ServerFrame
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				t.Fatalf("bad object %q: %v", line, err)
			}
			out = append(out, f)
		}
	}
	return out
}

func TestSockJSTransports(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	for i := 1; i <= 5; i++ {
		hub.publish(t, "sj", fmt.Sprint(i))
	}
	epoch := hub.epoch(t, "sj")
	dialers := map[string]func(session string) sockjsClient{
		"websocket": func(session string) sockjsClient {
			u := "ws" + strings.TrimPrefix(g.url, "http") + "/sockjs/000/" + session + "/websocket"
			c, _, err := websocket.DefaultDialer.Dial(u, nil)
			if err != nil {
				t.Fatal(err)
			}
			return &sockjsWS{c: c}
		},
		"xhr-streaming": func(session string) sockjsClient {
			return &sockjsXHR{base: g.url + "/sockjs/000/" + session, streaming: true}
		},
		"xhr-polling": func(session string) sockjsClient {
			return &sockjsXHR{base: g.url + "/sockjs/000/" + session}
		},
	}
	for name, dialer := range dialers {
		t.Run(name, func(t *testing.T) {
			c := dialer(randomID(8))
			defer c.close()
			if f := sockjsObjects(t, c, 1)[0]; f.Op != wire.OpConnected {
				t.Fatalf("first object %+v", f)
			}
			info, err := hub.Service.Read("sj", 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			from := info.Next - 3
			if err := c.send(fmt.Sprintf(`{"op":"subscribe","channel":"sj","from":%d,"epoch":"%s","id":"s"}`, from, epoch)); err != nil {
				t.Fatal(err)
			}
			objs := sockjsObjects(t, c, 4)
			if objs[0].Op != wire.OpSubscribed || !objs[0].Recovered {
				t.Fatalf("got %+v", objs[0])
			}
			for i, f := range objs[1:] {
				if f.Op != wire.OpMessage || f.Offset != from+uint64(i) {
					t.Fatalf("replayed %+v, want offset %d", f, from+uint64(i))
				}
			}
			if err := c.send(`{"op":"publish","channel":"sj","data":{"via":"` + name + `"},"id":"p-` + name + `"}`); err != nil {
				t.Fatal(err)
			}
			// The message (live) and the ack, in either order.
			var ack, msg *wire.ServerFrame
			for _, f := range sockjsObjects(t, c, 2) {
				switch f.Op {
				case wire.OpAck:
					ack = &f
				case wire.OpMessage:
					msg = &f
				}
			}
			if ack == nil || msg == nil || ack.Offset != msg.Offset || ack.ID != "p-"+name {
				t.Fatalf("ack %+v, message %+v", ack, msg)
			}
			if err := c.send(`not json`); err != nil {
				t.Fatal(err)
			}
			if f := sockjsObjects(t, c, 1)[0]; f.Op != wire.OpError || f.Code != wire.CodeBadRequest {
				t.Fatalf("got %+v", f)
			}
		})
	}
	res, err := hub.Service.Read("sj", 1, 100)
	if err != nil || len(res.Messages) != 8 {
		t.Fatalf("stored %d messages, %v; want 8", len(res.Messages), err)
	}
}
