//go:build !unix

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// rawConnOf returns nil: frames are written by each connection's writer.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func tryWriteRaw(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("direct writes are not supported here")
}
