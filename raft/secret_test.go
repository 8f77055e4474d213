package raft

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

func TestSecretStreamRefusesWrongSecret(t *testing.T) {
	discard := slog.New(slog.DiscardHandler)
	s, err := listenSecret("127.0.0.1:0", nil, "right", nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := hraft.ServerAddress(s.Addr().String())

	wrong := &secretStream{proof: raftProof("wrong")}
	bad, err := wrong.Dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	// The hub closes a connection with a wrong proof at once.
	_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bad.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a connection with the wrong secret: %v, want EOF", err)
	}

	// One with no proof at all is not handed on either; one with the right
	// proof is, with the bytes after the proof intact.
	raw, err := net.Dial("tcp", string(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	good, err := s.Dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("accepted connection read %q, %v; want hello", buf, err)
	}
	if c.RemoteAddr().String() != good.LocalAddr().String() {
		t.Fatalf("accepted %s, want the connection with the right secret %s", c.RemoteAddr(), good.LocalAddr())
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}

func TestSingleNodeTCPWithSecret(t *testing.T) {
	l := mustOpenLog(t)
	cfg := Config{ID: "solo", Dir: t.TempDir(), Addr: "127.0.0.1:0", Log: l, NoSync: true, Secret: "s3cret",
		Peers: []Peer{{ID: "solo", Addr: "127.0.0.1:0"}}}
	fastConfig(&cfg)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, 5*time.Second, "leadership", n.IsLeader)
	if r := publish(t, n, "chat", "k1", "x"); r.Offset != 1 {
		t.Fatalf("publish: %+v", r)
	}
}

func TestSecretStreamNeedsAnAdvertisableAddress(t *testing.T) {
	if s, err := listenSecret("0.0.0.0:0", nil, "s", nil, slog.New(slog.DiscardHandler)); err == nil {
		s.Close()
		t.Fatal("listening on 0.0.0.0 with nothing to advertise: no error")
	}
}
