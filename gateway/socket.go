package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"syscall"
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
type wsSocket struct {
	*net.TCPConn
	rc      syscall.RawConn
	mu      sync.Mutex
	pending []byte // under mu
	closed  bool   // under mu: a close frame was written
}

// closeFrame is the first byte of a close frame: FIN and opcode 8.
const closeFrame = 0x88

func (s *wsSocket) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.drainLocked(); err != nil {
		return 0, err
	}
	if len(b) > 0 && b[0] == closeFrame {
		s.closed = true
	}
	return s.TCPConn.Write(b)
}

func (s *wsSocket) drainLocked() error {
	if len(s.pending) == 0 {
		return nil
	}
	_, err := s.TCPConn.Write(s.pending)
	s.pending = nil
	return err
}

// drain writes what is pending, waiting for room.
func (s *wsSocket) drain() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drainLocked()
}

// tryLock takes the socket for writeLocked if no write is under way,
// nothing is pending and no close frame was written.
func (s *wsSocket) tryLock() bool {
	if !s.mu.TryLock() {
		return false
	}
	if len(s.pending) > 0 || s.closed {
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
			h.sock = &wsSocket{TCPConn: tc, rc: rc}
			return h.sock, brw, nil
		}
	}
	return nc, brw, nil
}
