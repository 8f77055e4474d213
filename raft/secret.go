package raft

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
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
// untrusted network the Raft traffic needs TLS (Config.TLS), a private
// network or a VPN.
func raftProof(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("comet raft v1"))
	return m.Sum(nil)
}

// secretStream is a Raft stream layer over TCP, or over TLS when it has a
// tls.Config, whose connections start with the cluster's proof when it
// has one: Dial sends it, Accept hands on only the connections that sent
// it (after a TLS handshake that verified the peer, with TLS).
type secretStream struct {
	ln        net.Listener
	advertise net.Addr
	proof     []byte      // nil: no secret
	tls       *tls.Config // nil: plain TCP
	logger    *slog.Logger

	conns     chan net.Conn
	closing   chan struct{}
	closeOnce sync.Once
}

// listenSecret listens on addr; advertise (nil: the listener's address)
// is the address other hubs reach it at. With secret empty, connections
// carry no proof; with tlsConfig nil, no TLS (see Config.TLS for what
// tlsConfig must hold).
func listenSecret(addr string, advertise net.Addr, secret string, tlsConfig *tls.Config, logger *slog.Logger) (*secretStream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &secretStream{ln: ln, advertise: advertise, tls: tlsConfig, logger: logger,
		conns: make(chan net.Conn), closing: make(chan struct{})}
	if secret != "" {
		s.proof = raftProof(secret)
	}
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

// check runs the TLS handshake of a new connection, when the stream has
// TLS, reads its proof, when it has a secret, and hands the connection on
// if both succeed; a failed handshake, or a wrong or missing proof,
// closes it. Both are bounded by proofTimeout: a peer that sends nothing
// cannot hold a connection (or the accept loop) for long.
func (s *secretStream) check(c net.Conn) {
	if s.tls != nil {
		tc := tls.Server(c, s.tls)
		_ = c.SetDeadline(time.Now().Add(proofTimeout))
		if err := tc.Handshake(); err != nil {
			s.logger.Warn("raft connection refused: TLS handshake failed (a hub without --tls-cert, or a certificate --tls-ca does not vouch for?)",
				"remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		c = tc
	}
	if s.proof != nil && !s.checkProof(c) {
		c.Close()
		return
	}
	select {
	case s.conns <- c:
	case <-s.closing:
		c.Close()
	}
}

// checkProof reads a connection's proof and reports whether it is right.
func (s *secretStream) checkProof(c net.Conn) bool {
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
		return false
	}
	_ = c.SetReadDeadline(time.Time{})
	return true
}

// Accept returns the next connection that passed the checks.
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

// Dial connects to another hub, runs the TLS handshake (verifying the
// hub's certificate for the host of address), when the stream has TLS,
// and sends the proof, when it has a secret; all within timeout.
func (s *secretStream) Dial(address hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if s.tls != nil {
		cfg := s.tls
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(string(address))
			if err != nil {
				c.Close()
				return nil, err
			}
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft: TLS handshake with %s: %w", address, err)
		}
		c = tc
	}
	if s.proof != nil {
		if _, err := c.Write(s.proof); err != nil {
			c.Close()
			return nil, err
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
