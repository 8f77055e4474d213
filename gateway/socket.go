package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// wsSocket is a WebSocket's TCP connection as gorilla sees it, so that the
// fan-out may write frames to it directly (conn.flush). Every write gorilla
// makes, from whichever goroutine (the writer's frames, pings and pongs,
// and the close frames its reader sends on a protocol error), goes through
// Write, under mu, and first finishes a frame the fan-out began and the
// socket took only part of (pending): the bytes of two frames never mix.
// The fan-out takes mu only when it is free (tryLock), so a write waiting
// on a full socket never holds it up.
//
// A close frame ends the fan-out's writes: gorilla writes every control
// frame in one Write, so a Write starting with a close frame's first byte
// is one (or the payload of a data frame written apart from its header,
// which starts with '{' for Comet's frames; were it one, the fan-out would
// only leave that connection to its writer).
//
// The rest of a frame is written with no deadline, whoever writes it: the
// deadline gorilla sets before a write (its reader's, for the close frame
// of a protocol error, is a second) is for that write's own bytes, and
// cutting the rest short would leave the client half a frame. A client
// that reads nothing holds it until the write timeout closes the
// connection (the writer, woken for the rest, waits for it under
// Server.watchWrites). The deadline moves under mu, never during that.
// Should a write fail anyway (a reset, the connection closed), part of a
// frame may be on the wire: the socket is broken, and nothing more is
// written to it.
//
// It embeds net.Conn, not *net.TCPConn, so that gorilla's large frames
// (net.Buffers, which would find TCPConn's writev) go through Write too.
type wsSocket struct {
	net.Conn
	rc       syscall.RawConn
	mu       sync.Mutex
	pending  []byte    // under mu
	closed   bool      // under mu: a close frame was written
	broken   error     // under mu: a write failed; nothing more is written
	deadline time.Time // under mu: the write deadline gorilla set
}

// closeFrame is the first byte of a close frame: FIN and opcode 8.
const closeFrame = 0x88

func newWSSocket(tc *net.TCPConn, rc syscall.RawConn) *wsSocket {
	return &wsSocket{Conn: tc, rc: rc}
}

func (s *wsSocket) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.drainLocked(); err != nil {
		return 0, err
	}
	if len(b) > 0 && b[0] == closeFrame {
		s.closed = true
	}
	n, err := s.Conn.Write(b)
	if err != nil {
		s.broken = err
	}
	return n, err
}

func (s *wsSocket) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline = t
	return s.Conn.SetWriteDeadline(t)
}

// drainLocked writes what is pending, with no deadline (then the one set
// again).
func (s *wsSocket) drainLocked() error {
	if s.broken != nil {
		return s.broken
	}
	if len(s.pending) == 0 {
		return nil
	}
	if !s.deadline.IsZero() {
		_ = s.Conn.SetWriteDeadline(time.Time{})
	}
	_, err := s.Conn.Write(s.pending)
	s.pending = nil
	if !s.deadline.IsZero() {
		_ = s.Conn.SetWriteDeadline(s.deadline)
	}
	if err != nil {
		s.broken = err
	}
	return err
}

// drain writes what is pending, waiting for room.
func (s *wsSocket) drain() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drainLocked()
}

// tryLock takes the socket for writeLocked if no write is under way,
// nothing is pending, no close frame was written and no write failed.
func (s *wsSocket) tryLock() bool {
	if !s.mu.TryLock() {
		return false
	}
	if len(s.pending) > 0 || s.closed || s.broken != nil {
		s.mu.Unlock()
		return false
	}
	return true
}

func (s *wsSocket) unlock() { s.mu.Unlock() }

// writeLocked writes what of b the socket takes at once, without waiting;
// the rest is pending, written before anything else. It reports whether
// some is pending. s is locked (tryLock).
func (s *wsSocket) writeLocked(b []byte) (pending bool, err error) {
	n, err := tryWriteRaw(s.rc, b)
	if err != nil {
		s.broken = err
		return false, err
	}
	if n < len(b) {
		s.pending = append(s.pending[:0], b[n:]...)
		return true, nil
	}
	return false, nil
}

// hijackSockets is a ResponseWriter whose Hijack hands gorilla a plain TCP
// connection as a wsSocket; sock is that socket, nil for others (TLS).
type hijackSockets struct {
	http.ResponseWriter
	sock *wsSocket
}

func (h *hijackSockets) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nc, brw, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		if rc := rawConnOf(tc); rc != nil {
			h.sock = newWSSocket(tc, rc)
			return h.sock, brw, nil
		}
	}
	return nc, brw, nil
}
