package raft

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
)

// proofSize is the length of the proof a hub sends first on every Raft
// connection when the cluster has a secret.
const proofSize = sha256.Size

// proofTimeout bounds the wait for a new connection's proof.
const proofTimeout = 5 * time.Second

// raftProof is what a hub that knows secret sends first on every Raft
// connection: HMAC-SHA256(secret, "comet raft v1"). It keeps processes
// without the secret out of the Raft port; it does not encrypt, so on an
// untrusted network the Raft traffic still needs a private network or VPN.
func raftProof(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("comet raft v1"))
	return m.Sum(nil)
}

// secretStream is a Raft stream layer over TCP whose connections start
// with the cluster's proof: Dial sends it, Accept hands on only the
// connections that sent it.
type secretStream struct {
	ln        net.Listener
	advertise net.Addr
	proof     []byte
	logger    *slog.Logger

	conns     chan net.Conn
	closing   chan struct{}
	closeOnce sync.Once
}

// listenSecret listens on addr; advertise (nil: the listener's address)
// is the address other hubs reach it at.
func listenSecret(addr string, advertise net.Addr, secret string, logger *slog.Logger) (*secretStream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &secretStream{ln: ln, advertise: advertise, proof: raftProof(secret), logger: logger,
		conns: make(chan net.Conn), closing: make(chan struct{})}
	// As hashicorp/raft's TCP transport: other hubs must be able to dial
	// the address this hub gives them.
	if a, ok := s.Addr().(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("%s is not an address other hubs can reach: give a specific IP, not 0.0.0.0 or ::", s.Addr())
	}
	go s.acceptLoop()
	return s, nil
}

func (s *secretStream) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logger.Warn("raft accept", "err", err)
			select {
			case <-s.closing:
				return
			case <-time.After(50 * time.Millisecond): // e.g. out of file descriptors
			}
			continue
		}
		go s.check(c)
	}
}

// check reads a new connection's proof and hands the connection on if it
// is right; a wrong or missing proof closes it.
func (s *secretStream) check(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(proofTimeout))
	got := make([]byte, proofSize)
	n, err := io.ReadFull(c, got)
	if err != nil || !hmac.Equal(got, s.proof) {
		if n == 0 {
			// Connected and sent nothing: a port probe, most likely.
			s.logger.Debug("raft connection closed before any proof", "remote", c.RemoteAddr().String())
		} else {
			s.logger.Warn("raft connection refused: it did not prove the cluster secret (--secret differs?)", "remote", c.RemoteAddr().String())
		}
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	select {
	case s.conns <- c:
	case <-s.closing:
		c.Close()
	}
}

// Accept returns the next connection that proved the secret.
func (s *secretStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closing:
		return nil, net.ErrClosed
	}
}

func (s *secretStream) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	return s.ln.Close()
}

func (s *secretStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// Dial connects to another hub and sends the proof.
func (s *secretStream) Dial(address hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(s.proof); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}
