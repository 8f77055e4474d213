package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
	"github.com/igm/sockjs-go/v3/sockjs"
)

// transport is one client connection's way of moving frames: WebSocket or
// SockJS. read is called from one goroutine, write, ping and closeWith from
// another; close may be called from anywhere.
type transport interface {
	// read returns the next client frame. errTooLarge: the frame was over
	// the limit and discarded; errIdle: nothing heard for the idle timeout.
	read() ([]byte, error)
	write(frame []byte) error
	ping() error
	// closeWith sends a close frame with code and reason, then closes.
	closeWith(code int, reason string)
	close()
	name() string
}

var (
	errTooLarge = errors.New("frame too large")
	errIdle     = errors.New("idle connection")
)

// serveWS upgrades to a WebSocket and serves the connection.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		http.Error(w, "gateway shutting down: reconnect elsewhere", http.StatusServiceUnavailable)
		return
	}
	defer s.active.Done()
	hw := &hijackSockets{ResponseWriter: w}
	ws, err := s.upgrader.Upgrade(hw, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	t := &wsTransport{c: ws, max: s.cfg.MaxFrameBytes, idle: s.cfg.IdleTimeout, writeTimeout: s.cfg.WriteTimeout}
	// Past 4 times the limit, gorilla fails the connection (close 1009).
	ws.SetReadLimit(int64(4 * s.cfg.MaxFrameBytes))
	t.touch()
	ws.SetPongHandler(func(string) error { t.touch(); return nil })
	c := s.newConn(t)
	if hw.sock != nil {
		// The fan-out writes frames to the socket itself (conn.flush).
		t.sock, c.direct = hw.sock, t
		// The pong goes out from the writer, after what is queued: the
		// reader never waits for a full socket.
		ws.SetPingHandler(func(data string) error {
			c.pongSoon(data)
			return nil
		})
		// No frame may follow a close frame: the answer to one is written
		// under wmu, the connection marked dead first (flush writes no
		// more; the writer, after it, meets gorilla's ErrCloseSent).
		ws.SetCloseHandler(func(code int, _ string) error {
			err := c.lockWrites()
			defer c.wmu.Unlock()
			c.close(0, "")
			if err == nil {
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
			}
			return nil
		})
	}
	c.serve(r.URL.Query().Get("token"))
}

// directWriter is a transport whose socket the fan-out may write encoded
// frames to itself, without waiting, when it has room (WebSocket over
// plain TCP): it writes to most subscribers rather than waking each one's
// writer (conn.flush).
type directWriter interface {
	// appendHeader appends the header of a frame of payload n bytes long,
	// as the transport sends it; the payload follows.
	appendHeader(b []byte, n int) []byte
	// tryLock takes the socket if no write is under way and nothing is
	// pending; writeLocked then writes what it takes at once and keeps
	// the rest pending, written before anything else; unlock releases it.
	tryLock() bool
	writeLocked(b []byte) (pending bool, err error)
	unlock()
	// drain writes what is pending, waiting for room.
	drain() error
}

type wsTransport struct {
	c            *websocket.Conn
	sock         *wsSocket // for direct writes; nil: none (TLS)
	max          int
	idle         time.Duration
	writeTimeout time.Duration
	closeOnce    sync.Once
	deadlineSet  time.Time // when touch last moved the read deadline
}

func (t *wsTransport) name() string { return "websocket" }

// touch moves the read deadline after something was heard. Moving a
// socket's deadline is a runtime timer change, a few per cent of a
// gateway's CPU time when every client frame moved it: it is moved at most
// once per idle/8, to idle + idle/8 from then, so that a client is dropped
// between idle and 9/8 of it after it was last heard. Only the reader
// calls it (pong handlers run in the reader).
func (t *wsTransport) touch() {
	now := time.Now()
	if !t.deadlineSet.IsZero() && now.Sub(t.deadlineSet) < t.idle/8 {
		return
	}
	t.deadlineSet = now
	_ = t.c.SetReadDeadline(now.Add(t.idle + t.idle/8))
}

func (t *wsTransport) read() ([]byte, error) {
	_, r, err := t.c.NextReader()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, errIdle
		}
		return nil, err
	}
	t.touch()
	b, err := io.ReadAll(io.LimitReader(r, int64(t.max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > t.max {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, err
		}
		return nil, errTooLarge
	}
	return b, nil
}

// write sends a frame. It sets no write deadline: moving the socket's
// deadline is a runtime timer change on every write, about 6% of a
// 10,000-subscriber fan-out; Server.watchWrites closes a connection whose
// write waits longer than the write timeout instead. (gorilla applies the
// connection's write deadline, zero here, before each write; a ping's
// deadline is undone by the next write.)
func (t *wsTransport) write(frame []byte) error {
	return t.c.WriteMessage(websocket.TextMessage, frame)
}

// appendHeader appends the header of an unmasked, final WebSocket text
// frame (RFC 6455 5.2) of n payload bytes, as a server sends it.
func (t *wsTransport) appendHeader(b []byte, n int) []byte {
	b = append(b, 0x81) // FIN, text
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

func (t *wsTransport) tryLock() bool                                  { return t.sock.tryLock() }
func (t *wsTransport) writeLocked(b []byte) (pending bool, err error) { return t.sock.writeLocked(b) }
func (t *wsTransport) unlock()                                        { t.sock.unlock() }
func (t *wsTransport) drain() error                                   { return t.sock.drain() }

func (t *wsTransport) ping() error { return t.control(websocket.PingMessage, nil) }

func (t *wsTransport) pong(data string) error { return t.control(websocket.PongMessage, []byte(data)) }

// control writes a ping or pong frame, then clears the socket's write
// deadline that gorilla leaves set after it: the rest of a frame the
// fan-out began is written past gorilla (wsSocket.drain), under whatever
// deadline is set, and the fan-out's own writes (wsSocket.writeLocked)
// fail on one that has passed.
func (t *wsTransport) control(kind int, data []byte) error {
	err := t.c.WriteControl(kind, data, time.Now().Add(t.writeTimeout))
	if err == nil && t.sock != nil {
		err = t.sock.SetWriteDeadline(time.Time{})
	}
	return err
}

func (t *wsTransport) closeWith(code int, reason string) {
	if len(reason) > 123 { // the most a close frame holds
		reason = reason[:123]
	}
	_ = t.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	t.close()
}

func (t *wsTransport) close() { t.closeOnce.Do(func() { _ = t.c.Close() }) }

// serveSockJS serves one SockJS session.
func (s *Server) serveSockJS(sess sockjs.Session) {
	if !s.enter() {
		_ = sess.Close(wire.CloseShutdown, "gateway shutting down: reconnect elsewhere")
		return
	}
	defer s.active.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	token := ""
	if r := sess.Request(); r != nil {
		token = r.URL.Query().Get("token")
	}
	s.newConn(&sockjsTransport{sess: sess, max: s.cfg.MaxFrameBytes, ctx: ctx, cancel: cancel}).serve(token)
}

type sockjsTransport struct {
	sess   sockjs.Session
	max    int
	ctx    context.Context
	cancel context.CancelFunc
}

func (t *sockjsTransport) name() string { return "sockjs" }

func (t *sockjsTransport) read() ([]byte, error) {
	msg, err := t.sess.RecvCtx(t.ctx)
	if err != nil {
		return nil, err
	}
	if len(msg) > t.max {
		return nil, errTooLarge
	}
	return []byte(msg), nil
}

func (t *sockjsTransport) write(frame []byte) error { return t.sess.Send(string(frame)) }

// ping does nothing: SockJS sends its own heartbeats.
func (t *sockjsTransport) ping() error { return nil }

func (t *sockjsTransport) closeWith(code int, reason string) {
	t.cancel() // first: Close may wait for a response being written
	_ = t.sess.Close(uint32(code), reason)
}

func (t *sockjsTransport) close() {
	t.cancel()
	_ = t.sess.Close(1000, "closed")
}
