//go:build unix

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// directWrites: the fan-out writes to WebSocket sockets itself here.
const directWrites = true

// rawConnOf returns tc's raw socket, for direct writes.
func rawConnOf(tc *net.TCPConn) syscall.RawConn {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// tryWriteRaw writes what of b the socket rc takes at once: one write
// system call on the non-blocking socket, no waiting for room.
func tryWriteRaw(rc syscall.RawConn, b []byte) (int, error) {
	var (
		n   int
		err error
	)
	if cerr := rc.Write(func(fd uintptr) bool {
		n, err = syscall.Write(int(fd), b)
		return true // done, whatever it wrote
	}); cerr != nil {
		return 0, cerr
	}
	if n < 0 {
		n = 0
	}
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		err = nil // no room now: the writer waits for it
	}
	return n, err
}
