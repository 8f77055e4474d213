package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/comethq/comet/wire"
)

// Workers answer clients' requests: the application's workers through the
// hub leader (bus.Gateway), or an HTTP endpoint (RPCProxy).
type Workers interface {
	// Request asks a worker serving req.Route and returns its answer. A
	// refusal or failure is a *wire.Error (not_found: nobody serves the
	// route; unavailable; the worker's own error); running out of ctx's
	// time is answered timeout.
	Request(ctx context.Context, req Request) (json.RawMessage, error)
}

// Request is a client's request as workers get it.
type Request struct {
	Route string          `json:"route"`
	Data  json.RawMessage `json:"data,omitempty"`
	// Conn is the connection's id: a worker may send to it.
	Conn string `json:"connection"`
	// User is the authenticated user; empty for an anonymous connection.
	User string `json:"user,omitempty"`
}

// Event is a connection event, for workers that watch them.
type Event struct {
	Type    string
	Conn    string
	User    string
	Channel string // subscribed, unsubscribed
}

// Connection event types.
const (
	EventConnected    = "connected"
	EventDisconnected = "disconnected"
	EventSubscribed   = "subscribed"
	EventUnsubscribed = "unsubscribed"
)

// ErrNoConnection: the gateway holds no connection of that id.
var ErrNoConnection = errors.New("no such connection")

// event hands a connection event to Config.Events.
func (s *Server) event(ev Event) {
	if s.cfg.Events != nil {
		s.cfg.Events(ev)
	}
}

func (c *conn) channelEvent(typ, channel string) {
	if c.s.cfg.Events == nil {
		return
	}
	c.mu.Lock()
	user := c.ident.User
	c.mu.Unlock()
	c.s.cfg.Events(Event{Type: typ, Conn: c.id, User: user, Channel: channel})
}

// request hands a request frame to the workers and answers with their
// response or an error frame. Requests of one connection run concurrently,
// at most Config.MaxRequestsInFlight at once (then the gateway stops
// reading from it).
func (c *conn) request(f wire.ClientFrame) {
	if c.s.cfg.Workers == nil {
		c.sendError(f.ID, wire.CodeNotFound, fmt.Sprintf("no worker serves route %q", f.Route))
		return
	}
	if len(f.Data) > c.s.cfg.MaxMessageBytes {
		c.sendError(f.ID, wire.CodeTooLarge, fmt.Sprintf("data is %d bytes, more than %d", len(f.Data), c.s.cfg.MaxMessageBytes))
		return
	}
	select {
	case c.reqs <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	c.mu.Lock()
	user := c.ident.User
	c.mu.Unlock()
	go func() {
		defer func() { <-c.reqs }()
		start := time.Now()
		ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.RequestTimeout)
		defer cancel()
		data, err := c.s.cfg.Workers.Request(ctx, Request{Route: f.Route, Data: f.Data, Conn: c.id, User: user})
		if c.ctx.Err() != nil {
			return // the client is gone
		}
		if err != nil {
			code, msg := requestError(err, ctx, c.s.cfg.RequestTimeout)
			c.s.m.requests.WithLabelValues(code).Inc()
			c.sendError(f.ID, code, msg)
			return
		}
		c.s.m.requests.WithLabelValues("ok").Inc()
		c.s.m.requestTime.Observe(time.Since(start).Seconds())
		if len(data) == 0 {
			data = json.RawMessage("null")
		}
		c.send(wire.Response{Op: wire.OpResponse, ID: f.ID, Data: data})
	}()
}

// requestError is the code and message of a failed request's error frame.
func requestError(err error, ctx context.Context, timeout time.Duration) (string, string) {
	var we *wire.Error
	switch {
	case errors.As(err, &we) && we.Code != "":
		return we.Code, we.Message
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return wire.CodeTimeout, fmt.Sprintf("no worker answered within %v", timeout)
	default:
		return wire.CodeUnavailable, "workers unreachable: " + err.Error()
	}
}

// SendToConnection puts a direct message, {"op":"message","data":...}
// (no channel, no offset), on the connection of that id. It returns
// ErrNoConnection when this gateway holds no such connection, or one not
// yet authenticated; a connection too slow to take it is cut off as a slow
// consumer, as for channel messages.
func (s *Server) SendToConnection(id string, data json.RawMessage) error {
	s.mu.Lock()
	c := s.byID[id]
	s.mu.Unlock()
	if c == nil {
		return ErrNoConnection
	}
	c.mu.Lock()
	admitted := c.admitted
	c.mu.Unlock()
	if !admitted {
		return ErrNoConnection
	}
	// Compact: the objects of a frame are separated by newlines.
	b := bytes.NewBuffer(make([]byte, 0, len(data)+32))
	b.WriteString(`{"op":"message","data":`)
	if err := json.Compact(b, data); err != nil {
		return fmt.Errorf("data is not JSON: %w", err)
	}
	b.WriteByte('}')
	if !c.enqueue(b.Bytes()) {
		return ErrNoConnection
	}
	c.s.m.directMessages.Inc()
	return nil
}
