//go:build !unix

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// directWrites: here every frame goes through the connection's writer.
const directWrites = false

// rawConnOf returns nil: frames are written by each connection's writer.
func rawConnOf(*net.TCPConn) syscall.RawConn { return nil }

func tryWriteRaw(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("direct writes are not supported here")
}
