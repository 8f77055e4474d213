// Package siotest is a small Engine.IO v4 / Socket.IO v5 client for tests:
// long-polling, WebSocket, and the upgrade from one to the other, text
// packets on namespace "/".
package siotest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Client is one session. Not safe for concurrent use.
type Client struct {
	base    string // http://host/socket.io/
	SID     string
	Open    map[string]any // the open packet's fields
	WS      *websocket.Conn
	HTTP    *http.Client
	pending []string
	// Pongs: pings are answered as they are read (default true).
	Pongs bool
}

// ErrClosed: the server closed the session (close packet, 400, or socket
// closed).
var ErrClosed = errors.New("siotest: closed by the server")

// Open starts a session at base (http://host:port/socket.io/) over
// "polling" or "websocket", with query added to the handshake URL, without
// Socket.IO's connect.
func Open(base, transport string, query url.Values) (*Client, error) {
	c := &Client{base: base, HTTP: &http.Client{Timeout: 30 * time.Second}, Pongs: true}
	q := url.Values{"EIO": {"4"}, "transport": {transport}}
	for k, v := range query {
		q[k] = v
	}
	var open string
	if transport == "websocket" {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		c.WS = ws
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, err
		}
		open = string(b)
	} else {
		resp, err := c.HTTP.Get(base + "?" + q.Encode())
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("handshake: %s: %s", resp.Status, b)
		}
		open = string(b)
	}
	if !strings.HasPrefix(open, "0{") {
		return nil, fmt.Errorf("not an open packet: %q", open)
	}
	if err := json.Unmarshal([]byte(open[1:]), &c.Open); err != nil {
		return nil, err
	}
	c.SID, _ = c.Open["sid"].(string)
	return c, nil
}

// Dial opens a session and connects to "/" with auth (nil: none), and
// reads the connect answer.
func Dial(base, transport string, query url.Values, auth any) (*Client, error) {
	c, err := Open(base, transport, query)
	if err != nil {
		return nil, err
	}
	pkt := "40"
	if auth != nil {
		b, err := json.Marshal(auth)
		if err != nil {
			return nil, err
		}
		pkt += string(b)
	}
	if err := c.Send(pkt); err != nil {
		c.Close()
		return nil, err
	}
	p, err := c.NextMessage(10 * time.Second)
	if err != nil {
		c.Close()
		return nil, err
	}
	if !strings.HasPrefix(p, "0{\"sid\":") {
		c.Close()
		return nil, fmt.Errorf("connect answered %q", p)
	}
	return c, nil
}

func (c *Client) url() string {
	return c.base + "?" + url.Values{"EIO": {"4"}, "transport": {"polling"}, "sid": {c.SID}}.Encode()
}

// Send sends Engine.IO packets (one POST, or one message each).
func (c *Client) Send(pkts ...string) error {
	if c.WS != nil {
		for _, p := range pkts {
			if err := c.WS.WriteMessage(websocket.TextMessage, []byte(p)); err != nil {
				return err
			}
		}
		return nil
	}
	resp, err := c.HTTP.Post(c.url(), "text/plain;charset=UTF-8", strings.NewReader(strings.Join(pkts, "\x1e")))
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		return fmt.Errorf("post: %s: %s", resp.Status, b)
	}
	return nil
}

// Emit sends an event on "/".
func (c *Client) Emit(name string, args ...any) error {
	return c.Send(EventPacket(name, args...))
}

// EventPacket encodes an event as an Engine.IO message.
func EventPacket(name string, args ...any) string {
	b, _ := json.Marshal(append([]any{name}, args...))
	return "42" + string(b)
}

// Poll makes one polling GET and returns its packets.
func (c *Client) Poll() ([]string, error) {
	resp, err := c.HTTP.Get(c.url())
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%w: poll: %s: %s", ErrClosed, resp.Status, b)
	}
	return strings.Split(string(b), "\x1e"), nil
}

// Next returns the next Engine.IO packet, answering pings when Pongs.
func (c *Client) Next(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for len(c.pending) == 0 {
		if time.Now().After(deadline) {
			return "", errors.New("siotest: timed out")
		}
		if c.WS != nil {
			_ = c.WS.SetReadDeadline(deadline)
			_, b, err := c.WS.ReadMessage()
			if err != nil {
				if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
					return "", err
				}
				return "", fmt.Errorf("%w: %v", ErrClosed, err)
			}
			c.pending = append(c.pending, string(b))
		} else {
			pkts, err := c.Poll()
			if err != nil {
				return "", err
			}
			c.pending = append(c.pending, pkts...)
		}
		for len(c.pending) > 0 && (c.pending[0] == "6" || c.pending[0] == "2" && c.Pongs) {
			if c.pending[0] == "2" {
				if err := c.Send("3"); err != nil {
					return "", err
				}
			}
			c.pending = c.pending[1:]
		}
	}
	p := c.pending[0]
	c.pending = c.pending[1:]
	if p == "1" {
		return p, ErrClosed
	}
	return p, nil
}

// NextMessage returns the next Engine.IO message's Socket.IO packet.
func (c *Client) NextMessage(timeout time.Duration) (string, error) {
	for {
		p, err := c.Next(timeout)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(p, "4") {
			return p[1:], nil
		}
	}
}

// NextEvent returns the next event on "/": its name and arguments.
func (c *Client) NextEvent(timeout time.Duration) (string, []json.RawMessage, error) {
	for {
		p, err := c.NextMessage(timeout)
		if err != nil {
			return "", nil, err
		}
		if p == "1" {
			return "", nil, fmt.Errorf("%w: socket.io disconnect", ErrClosed)
		}
		if !strings.HasPrefix(p, "2[") {
			continue
		}
		var args []json.RawMessage
		if err := json.Unmarshal([]byte(p[1:]), &args); err != nil || len(args) == 0 {
			return "", nil, fmt.Errorf("bad event %q", p)
		}
		var name string
		_ = json.Unmarshal(args[0], &name)
		return name, args[1:], nil
	}
}

// Upgrade moves a polling session to a WebSocket as socket.io-client does:
// probe, wait for the poll under way to end (here: polls until a noop),
// then the upgrade packet. Packets polled meanwhile are kept for Next.
func (c *Client) Upgrade() error {
	q := url.Values{"EIO": {"4"}, "transport": {"websocket"}, "sid": {c.SID}}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(c.base, "http")+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("2probe")); err != nil {
		ws.Close()
		return err
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil || string(b) != "3probe" {
		ws.Close()
		return fmt.Errorf("probe answered %q: %v", b, err)
	}
	for noop := false; !noop; {
		pkts, err := c.Poll()
		if err != nil {
			ws.Close()
			return err
		}
		for _, p := range pkts {
			if p == "6" {
				noop = true
			} else {
				c.pending = append(c.pending, p)
			}
		}
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("5")); err != nil {
		ws.Close()
		return err
	}
	_ = ws.SetReadDeadline(time.Time{})
	c.WS = ws
	return nil
}

// Close ends the session from the client's side, sending a close packet.
func (c *Client) Close() {
	if c.WS != nil {
		_ = c.WS.WriteMessage(websocket.TextMessage, []byte("1"))
		c.WS.Close()
		return
	}
	_ = c.Send("1")
}

// Raw sends a polling request with method and body, and returns the
// status and body.
func (c *Client) Raw(method, body string) (int, string, error) {
	req, err := http.NewRequest(method, c.url(), bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, "", err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}
