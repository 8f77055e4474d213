package broker_test

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

// gate makes a hub's connections behave as those of a process stopped
// with SIGSTOP while it is shut: the kernel still accepts connections and
// data, but nothing is read or written on the hub's side until it opens
// again. Peers see a silent hub; their own deadlines apply as usual.
type gate struct {
	mu     sync.Mutex
	shut   bool
	opened chan struct{} // closed while open; replaced when shut
}

func newGate() *gate {
	g := &gate{opened: make(chan struct{})}
	close(g.opened)
	return g
}

// close shuts the gate: the hub's connections stall.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.shut = true
		g.opened = make(chan struct{})
	}
}

// open lets the stalled connections go on.
func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		g.shut = false
		close(g.opened)
	}
}

// wait returns once the gate is open, or closed is.
func (g *gate) wait(closed <-chan struct{}) error {
	g.mu.Lock()
	ch := g.opened
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-closed:
		return net.ErrClosed
	}
}

// gatedConn is a connection of the hub's side that waits for its gate
// before every read returns and before every write.
type gatedConn struct {
	net.Conn
	g      *gate
	once   sync.Once
	closed chan struct{}
}

func (g *gate) wrap(c net.Conn) net.Conn {
	return &gatedConn{Conn: c, g: g, closed: make(chan struct{})}
}

func (c *gatedConn) Read(p []byte) (int, error) {
	if err := c.g.wait(c.closed); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	// Data that arrived while the gate was shut is held until it opens.
	if werr := c.g.wait(c.closed); werr != nil {
		return 0, werr
	}
	return n, err
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if err := c.g.wait(c.closed); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// gatedListener hands out gated connections.
type gatedListener struct {
	net.Listener
	g *gate
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.g.wrap(c), nil
}

// gatedStream is a Raft stream layer on loopback TCP whose connections,
// accepted and dialed, go through a gate: shutting it cuts the hub off
// from its Raft peers as a pause would.
type gatedStream struct {
	gatedListener
}

func (s *gatedStream) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return s.g.wrap(c), nil
}

// newGatedTransport returns a Raft transport on 127.0.0.1 whose connections
// go through g.
func newGatedTransport(g *gate) (*hraft.NetworkTransport, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// As raft.New sets its own up: no pipelined replication.
	return hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
		Stream: &gatedStream{gatedListener{ln, g}}, MaxPool: 3, Timeout: 10 * time.Second,
		Logger: hclog.NewNullLogger(), MaxRPCsInFlight: 1,
	}), nil
}
