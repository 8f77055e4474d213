package bus

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Link carries the messages of one session, each a JSON object, in order.
// Send and Recv may be called at the same time from two goroutines; Send is
// safe for concurrent use; Close may be called at any time, more than once,
// and makes waiting Send and Recv calls return.
type Link interface {
	// Send sends one message. It returns when the message is handed to the
	// peer's side (an in-process peer's buffer, or the socket); a Send
	// still writing when ctx ends may break the link.
	Send(ctx context.Context, msg []byte) error
	// SendBatch sends msgs, in order, as Send would one by one, in as few
	// writes as it can: over WebSocket, a frame holds several messages
	// separated by newlines (a message, compact JSON, holds none).
	SendBatch(ctx context.Context, msgs [][]byte) error
	// Recv returns the next message, or an error once the link is broken
	// or closed. One goroutine at a time calls it.
	Recv() ([]byte, error)
	// Close ends the link; the peer's Recv then fails.
	Close() error
}

// pipeBuffer is how many messages one direction of a Pipe holds before Send
// waits for the peer to read.
const pipeBuffer = 64

// Pipe returns the two ends of an in-process Link. Each direction holds
// up to 64 messages; past that, Send waits for the peer to read. Closing
// either end closes both; what was sent before is still received. Messages
// are copied.
func Pipe() (Link, Link) {
	p := &pipe{done: make(chan struct{})}
	ab := make(chan []byte, pipeBuffer)
	ba := make(chan []byte, pipeBuffer)
	return &pipeEnd{p: p, in: ba, out: ab}, &pipeEnd{p: p, in: ab, out: ba}
}

type pipe struct {
	once sync.Once
	done chan struct{}
}

type pipeEnd struct {
	p       *pipe
	in, out chan []byte
}

func (e *pipeEnd) Send(ctx context.Context, msg []byte) error {
	select {
	case <-e.p.done:
		return ErrClosed
	default:
	}
	select {
	case e.out <- append([]byte(nil), msg...):
		return nil
	case <-e.p.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *pipeEnd) SendBatch(ctx context.Context, msgs [][]byte) error {
	for _, m := range msgs {
		if err := e.Send(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// Recv returns the messages sent before the pipe closed, then ErrClosed.
func (e *pipeEnd) Recv() ([]byte, error) {
	select {
	case m := <-e.in:
		return m, nil
	case <-e.p.done:
		select {
		case m := <-e.in:
			return m, nil
		default:
			return nil, ErrClosed
		}
	}
}

func (e *pipeEnd) Close() error {
	e.p.once.Do(func() { close(e.p.done) })
	return nil
}

// Keep-alive of WebSocket links. Each side pings every pingInterval and
// takes the peer for dead when it hears nothing (no message, no pong) for
// readTimeout; a write that takes longer than writeTimeout breaks the link.
var (
	// dialTimeout bounds a dial and its handshake: a hub answers at once,
	// and one that does not (paused, hung) is skipped for the next.
	dialTimeout  = 3 * time.Second
	pingInterval = 10 * time.Second
	readTimeout  = 30 * time.Second
	writeTimeout = 10 * time.Second
)

// BusPath is where hubs serve sessions on their API.
const BusPath = "/v1/bus"

var upgrader = websocket.Upgrader{ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10}

// Upgrade turns an HTTP request into the server side of a WebSocket Link.
// On failure it has answered the request with an HTTP error.
func Upgrade(w http.ResponseWriter, r *http.Request) (Link, error) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	return newWSLink(c), nil
}

// Dial opens the client side of a WebSocket Link to url (ws://host/v1/bus,
// or wss://, verified with tlsConfig: nil uses the system's roots), with
// header added to the handshake. When the server answers without
// upgrading, the error is websocket.ErrBadHandshake and resp holds its
// status and up to 1 KiB of its body.
func Dial(ctx context.Context, url string, header http.Header, tlsConfig *tls.Config) (Link, *http.Response, error) {
	d := websocket.Dialer{
		HandshakeTimeout: dialTimeout,
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  16 << 10,
		NetDialContext:   (&net.Dialer{Timeout: dialTimeout}).DialContext,
		TLSClientConfig:  tlsConfig,
	}
	c, resp, err := d.DialContext(ctx, url, header)
	if err != nil {
		return nil, resp, err
	}
	return newWSLink(c), resp, nil
}

type wsLink struct {
	c       *websocket.Conn
	pending [][]byte   // messages of the last frame not yet returned by Recv
	wmu     sync.Mutex // one writer at a time
	once    sync.Once
	closeCh chan struct{}
	doneCh  chan struct{} // the pinger ended
}

func newWSLink(c *websocket.Conn) *wsLink {
	l := &wsLink{c: c, closeCh: make(chan struct{}), doneCh: make(chan struct{})}
	c.SetReadLimit(MaxMsgBytes)
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	c.SetPongHandler(func(string) error {
		return c.SetReadDeadline(time.Now().Add(readTimeout))
	})
	go l.ping()
	return l
}

// ping pings the peer until the link closes. WriteControl may run beside
// a Send.
func (l *wsLink) ping() {
	defer close(l.doneCh)
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	for {
		select {
		case <-l.closeCh:
			return
		case <-t.C:
			if err := l.c.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				l.c.Close() // Recv fails, and the owner closes the link
				return
			}
		}
	}
}

func (l *wsLink) Send(ctx context.Context, msg []byte) error {
	return l.sendFrame(ctx, [][]byte{msg})
}

// maxBatchMsgs bounds the messages a writer takes from its queue for one
// SendBatch.
const maxBatchMsgs = 256

// DrainInto appends to batch what ch holds now, without waiting, up to max
// messages in all: a session writer sends a burst in one write.
func DrainInto(batch [][]byte, ch <-chan []byte, max int) [][]byte {
	for len(batch) < max {
		select {
		case b := <-ch:
			batch = append(batch, b)
		default:
			return batch
		}
	}
	return batch
}

// maxBatchBytes bounds the frame SendBatch makes of several messages (a
// larger message goes alone, up to MaxMsgBytes).
const maxBatchBytes = 256 << 10

func (l *wsLink) SendBatch(ctx context.Context, msgs [][]byte) error {
	for len(msgs) > 0 {
		n, size := 1, len(msgs[0])
		for n < len(msgs) && size+1+len(msgs[n]) <= maxBatchBytes {
			size += 1 + len(msgs[n])
			n++
		}
		if err := l.sendFrame(ctx, msgs[:n]); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// sendFrame writes msgs as one frame, separated by newlines.
func (l *wsLink) sendFrame(ctx context.Context, msgs [][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-l.closeCh:
		return ErrClosed
	default:
	}
	deadline := time.Now().Add(writeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_ = l.c.SetWriteDeadline(deadline)
	if len(msgs) == 1 {
		return l.c.WriteMessage(websocket.TextMessage, msgs[0])
	}
	w, err := l.c.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		if i > 0 {
			if _, err := w.Write([]byte{'\n'}); err != nil {
				return err
			}
		}
		if _, err := w.Write(m); err != nil {
			return err
		}
	}
	return w.Close()
}

func (l *wsLink) Recv() ([]byte, error) {
	if len(l.pending) > 0 {
		m := l.pending[0]
		l.pending = l.pending[1:]
		return m, nil
	}
	for {
		typ, msg, err := l.c.ReadMessage()
		if err != nil {
			select {
			case <-l.closeCh:
				return nil, ErrClosed
			default:
			}
			return nil, err
		}
		_ = l.c.SetReadDeadline(time.Now().Add(readTimeout))
		if typ != websocket.TextMessage {
			continue
		}
		if bytes.IndexByte(msg, '\n') < 0 {
			return msg, nil
		}
		// Several messages in one frame (SendBatch).
		for line := range bytes.SplitSeq(msg, []byte{'\n'}) {
			if len(line) > 0 {
				l.pending = append(l.pending, line)
			}
		}
		if len(l.pending) > 0 {
			m := l.pending[0]
			l.pending = l.pending[1:]
			return m, nil
		}
	}
}

// Close sends a close frame (briefly: a dead peer is not waited for) and
// closes the connection.
func (l *wsLink) Close() error {
	l.once.Do(func() {
		close(l.closeCh)
		_ = l.c.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = l.c.Close()
		<-l.doneCh
	})
	return nil
}
