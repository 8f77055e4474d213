package raft

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/comethq/comet/internal/testca"
	hraft "github.com/hashicorp/raft"
)

// peerTLS is the Raft TLS configuration of a hub holding leaf, with
// mutual TLS against ca.
func peerTLS(ca *testca.CA, leaf *testca.Leaf) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{leaf.TLS},
		RootCAs:      ca.Pool(),
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// refused reports whether c, a dialed connection, is closed by the other
// side without being handed on: a read fails (EOF, a TLS alert, a reset)
// before the deadline.
func refused(t *testing.T, c net.Conn) error {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// Write something first: over TLS 1.3 the server checks a client
	// certificate after the client's handshake ends, and says so on the
	// next read.
	_, _ = c.Write([]byte("x"))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("connection not refused: read %v", err)
	}
	return nil
}

// noAccept checks that s hands on no connection for a moment.
func noAccept(t *testing.T, s *secretStream) {
	t.Helper()
	select {
	case c := <-s.conns:
		c.Close()
		t.Fatalf("a connection from %s was accepted", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
}

func TestTLSStream(t *testing.T) {
	discard := slog.New(slog.DiscardHandler)
	ca := testca.New(t, "cluster")
	server, err := listenSecret("127.0.0.1:0", nil, "s3cret", peerTLS(ca, ca.Issue(t, "h1")), discard)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	addr := hraft.ServerAddress(server.Addr().String())

	t.Run("same CA", func(t *testing.T) {
		client := &secretStream{proof: raftProof("s3cret"), tls: peerTLS(ca, ca.Issue(t, "h2"))}
		c, err := client.Dial(addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, ok := c.(*tls.Conn); !ok {
			t.Fatalf("dialed %T, want a *tls.Conn", c)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		a, err := server.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		tc, ok := a.(*tls.Conn)
		if !ok {
			t.Fatalf("accepted %T, want a *tls.Conn", a)
		}
		if cs := tc.ConnectionState(); len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != "h2" {
			t.Fatalf("the accepted connection's peer is not h2: %+v", cs.PeerCertificates)
		}
		buf := make([]byte, 5)
		_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("read %q, %v; want hello", buf, err)
		}
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		other := testca.New(t, "other")
		// It trusts the cluster's CA, so the server passes its check; its
		// own certificate is not from that CA.
		cfg := peerTLS(ca, other.Issue(t, "intruder"))
		client := &secretStream{proof: raftProof("s3cret"), tls: cfg}
		c, err := client.Dial(addr, 10*time.Second)
		if err == nil {
			defer c.Close()
			if err := refused(t, c); err != nil {
				t.Fatal(err)
			}
		}
		noAccept(t, server)
	})

	t.Run("server from another CA", func(t *testing.T) {
		other := testca.New(t, "other")
		client := &secretStream{proof: raftProof("s3cret"), tls: peerTLS(other, other.Issue(t, "h2"))}
		if c, err := client.Dial(addr, 10*time.Second); err == nil {
			c.Close()
			t.Fatal("dialed a hub whose certificate is from a CA the dialer does not trust")
		}
		noAccept(t, server)
	})

	t.Run("no client certificate", func(t *testing.T) {
		cfg := peerTLS(ca, ca.Issue(t, "h2"))
		cfg.Certificates = nil
		client := &secretStream{proof: raftProof("s3cret"), tls: cfg}
		c, err := client.Dial(addr, 10*time.Second)
		if err == nil {
			defer c.Close()
			if err := refused(t, c); err != nil {
				t.Fatal(err)
			}
		}
		noAccept(t, server)
	})

	t.Run("plain TCP", func(t *testing.T) {
		// A hub without TLS sends its proof in the clear: refused.
		plain := &secretStream{proof: raftProof("s3cret")}
		c, err := plain.Dial(addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := refused(t, c); err != nil {
			t.Fatal(err)
		}
		// A peer that connects and sends nothing holds no one up: a hub
		// connects meanwhile, and the silent one is cut off in time.
		silent, err := net.Dial("tcp", string(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		good := &secretStream{proof: raftProof("s3cret"), tls: peerTLS(ca, ca.Issue(t, "h3"))}
		g, err := good.Dial(addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		a, err := server.Accept()
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		_ = silent.SetDeadline(time.Now().Add(proofTimeout + 20*time.Second))
		if _, err := silent.Read(make([]byte, 1)); err == nil {
			t.Fatal("the silent connection read data")
		} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the silent connection was not closed by the hub: %v", err)
		}
	})

	t.Run("wrong secret inside TLS", func(t *testing.T) {
		client := &secretStream{proof: raftProof("wrong"), tls: peerTLS(ca, ca.Issue(t, "h2"))}
		c, err := client.Dial(addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := refused(t, c); err != nil {
			t.Fatal(err)
		}
		noAccept(t, server)
	})
}

// TestClusterOverTLS runs three nodes on loopback whose Raft traffic is
// mutual TLS (with and without the secret inside it): they elect a leader
// and replicate.
func TestClusterOverTLS(t *testing.T) {
	for _, secret := range []string{"s3cret", ""} {
		t.Run(fmt.Sprintf("secret=%q", secret), func(t *testing.T) { testClusterOverTLS(t, secret) })
	}
}

func testClusterOverTLS(t *testing.T, secret string) {
	ca := testca.New(t, "cluster")
	// Free ports: the peer list is needed before the nodes listen.
	var lns []net.Listener
	var peers []Peer
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		peers = append(peers, Peer{ID: fmt.Sprintf("h%d", i+1), Addr: ln.Addr().String()})
	}
	for _, ln := range lns {
		ln.Close()
	}
	type member struct {
		cfg  Config
		node *Node
	}
	members := make([]*member, 3)
	start := func(m *member) {
		t.Helper()
		var err error
		// The port was free a moment ago; another process may take it.
		for i := 0; i < 50; i++ {
			if m.node, err = New(m.cfg); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal(err)
	}
	for i, p := range peers {
		cfg := Config{ID: p.ID, Dir: t.TempDir(), Addr: p.Addr, Peers: peers, Log: mustOpenLog(t), NoSync: true,
			Secret: secret, TLS: peerTLS(ca, ca.Issue(t, p.ID))}
		fastConfig(&cfg)
		// Handshakes on a loaded machine: leave room.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		members[i] = &member{cfg: cfg}
		start(members[i])
	}
	defer func() {
		for _, m := range members {
			if m.node != nil {
				m.node.Close()
			}
		}
	}()
	leader := func() *Node {
		for _, m := range members {
			if m.node != nil && m.node.IsLeader() {
				return m.node
			}
		}
		return nil
	}
	var want []string
	for i := range 10 {
		data := fmt.Sprintf("m%d", i)
		want = append(want, data)
		// Retry with the same id while leadership moves (a loaded
		// machine): stored once.
		var err error
		ok := poll(30*time.Second, func() bool {
			l := leader()
			if l == nil {
				return false
			}
			var r *Response
			r, err = l.Apply(&Command{Publish: []Publish{{Channel: "chat", ID: data, Data: []byte(data)}}})
			return err == nil && r.Results[0].Err == nil
		})
		if !ok {
			t.Fatalf("publish %s: %v", data, err)
		}
	}
	waitFor(t, 30*time.Second, "the messages on every node", func() bool {
		for _, m := range members {
			d, err := tryDumpLog(m.cfg.Log)
			if err != nil || len(d.Channels["chat"].Msgs) != len(want) {
				return false
			}
		}
		return true
	})
	for _, m := range members {
		d, err := tryDumpLog(m.cfg.Log)
		if err != nil {
			t.Fatal(err)
		}
		checkChannel(t, m.cfg.ID, d, "chat", want)
	}
}

// poll calls cond every 10ms until it holds or d passes.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
