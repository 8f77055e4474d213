package gateway

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/comethq/comet/internal/socketio"
	"github.com/comethq/comet/wire"
)

// The Socket.IO events that carry Comet's protocol (docs/socketio.md).
const (
	// sioFrame carries one client frame (a JSON object, or a string holding
	// one) to the gateway, and one server object to the client: a server
	// frame of several objects is sent as one event per object.
	sioFrame = "comet"
	// sioClose comes last before the gateway closes a connection:
	// {"code":4001,"reason":"..."}, the close code and reason a WebSocket
	// client would get.
	sioClose = "comet:close"
)

// newSocketIO returns the Socket.IO endpoint (internal/socketio), served at
// /socket.io/: Engine.IO's pings at PingInterval, a client dropped after
// IdleTimeout of silence, a frame of up to 4 times MaxFrameBytes read (as
// /ws), origins checked as for /ws.
func (s *Server) newSocketIO() *socketio.Server {
	cfg := s.cfg
	pingTimeout := cfg.IdleTimeout - cfg.PingInterval
	if pingTimeout < cfg.PingInterval/2 {
		pingTimeout = cfg.PingInterval / 2
	}
	up := s.upgrader // a copy: same buffers and origin check
	srv, err := socketio.New(socketio.Config{
		Accept:       s.serveSocketIO,
		PingInterval: cfg.PingInterval,
		PingTimeout:  pingTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		WriteTimeout: cfg.WriteTimeout,
		// A frame is at most 4*MaxFrameBytes, escaped once more when sent
		// as a string, plus the packet's few bytes.
		MaxPayload:  8*cfg.MaxFrameBytes + 1024,
		CheckOrigin: s.checkOrigin,
		Upgrader:    &up,
		Logger:      s.log.With("transport", "socketio"),
	})
	if err != nil {
		panic(err) // Accept is set
	}
	return srv
}

// serveSocketIO serves one Socket.IO client: its token is the auth
// payload's "token" (socket.io-client's auth option), else ?token= of the
// handshake URL.
func (s *Server) serveSocketIO(c *socketio.Conn) {
	t := &sioTransport{c: c, max: s.cfg.MaxFrameBytes}
	if !s.enter() {
		t.closeWith(wire.CloseShutdown, "gateway shutting down: reconnect elsewhere")
		return
	}
	defer s.active.Done()
	var auth struct {
		Token string `json:"token"`
	}
	if a := c.Auth(); a != nil {
		_ = json.Unmarshal(a, &auth) // not a string: no token
	}
	if auth.Token == "" {
		auth.Token = c.Query().Get("token")
	}
	s.newConn(t).serve(auth.Token)
}

// sioTransport carries frames as Socket.IO events.
type sioTransport struct {
	c   *socketio.Conn
	max int
}

func (t *sioTransport) name() string { return "socketio" }

// read returns the next "comet" event's frame: its one argument, a JSON
// object or a string holding the frame's text. Events of other names are
// ignored, as a Socket.IO server ignores events it has no handler for; an
// acknowledgement asked for is sent at once, empty (the answer to a frame is
// a "comet" event, as on /ws).
func (t *sioTransport) read() ([]byte, error) {
	for {
		ev, err := t.c.Read()
		if errors.Is(err, socketio.ErrIdle) {
			return nil, errIdle
		}
		if err != nil {
			return nil, err
		}
		if ev.HasAck {
			if err := t.c.Ack(ev.AckID); err != nil {
				return nil, err
			}
		}
		if ev.Name != sioFrame {
			continue
		}
		if len(ev.Args) == 0 {
			return []byte{}, nil // a bad_request error frame
		}
		b := []byte(ev.Args[0])
		if len(b) > 0 && b[0] == '"' {
			var s string
			if err := json.Unmarshal(b, &s); err == nil {
				b = []byte(s)
			}
		}
		if len(b) > t.max {
			return nil, errTooLarge
		}
		return b, nil
	}
}

// write sends each object of the frame as a "comet" event. Objects hold no
// newline (they are compact JSON), so a newline ends each.
func (t *sioTransport) write(frame []byte) error {
	n := bytes.Count(frame, []byte{'\n'}) + 1
	args := make([]json.RawMessage, 0, n)
	for len(frame) > 0 {
		obj, rest, _ := bytes.Cut(frame, []byte{'\n'})
		if len(obj) > 0 {
			args = append(args, obj)
		}
		frame = rest
	}
	return t.c.Emit(sioFrame, args...)
}

func (t *sioTransport) ping() error { return t.c.Ping() }

// closeWith sends the close code and reason as a "comet:close" event, then
// closes. After 4006 (a token refused or expired) it sends Socket.IO's
// disconnect too, so that socket.io-client does not reconnect by itself
// with the same token; after any other code it reconnects.
func (t *sioTransport) closeWith(code int, reason string) {
	arg, _ := json.Marshal(struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{code, reason})
	t.c.CloseWith(sioClose, arg, code == wire.CloseAuth)
}

func (t *sioTransport) close() { t.c.Close() }
