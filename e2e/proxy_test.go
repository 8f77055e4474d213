package e2e

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy is a TCP proxy that makes a bad network: it delays every
// chunk it forwards, and resets all its connections at random intervals.
type faultProxy struct {
	ln      net.Listener
	target  string
	latency time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	resets int
	stop   chan struct{}
	wg     sync.WaitGroup
}

// startFaultProxy proxies to target, adding latency to each chunk and
// resetting every connection about every resetEvery (0: never).
func startFaultProxy(t *testing.T, target string, latency, resetEvery time.Duration) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, latency: latency, conns: map[net.Conn]struct{}{}, stop: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	if resetEvery > 0 {
		p.wg.Add(1)
		go p.resetLoop(resetEvery)
	}
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *faultProxy) pipe(from, to net.Conn) {
	defer p.wg.Done()
	defer func() {
		from.Close()
		to.Close()
		p.mu.Lock()
		delete(p.conns, from)
		delete(p.conns, to)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if p.latency > 0 {
				select {
				case <-time.After(p.latency):
				case <-p.stop:
					return
				}
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or an error: the other side is closed too
		}
	}
}

func (p *faultProxy) resetLoop(every time.Duration) {
	defer p.wg.Done()
	for {
		// Between half and one and a half times every.
		d := every/2 + time.Duration(rand.Int64N(int64(every)))
		select {
		case <-time.After(d):
		case <-p.stop:
			return
		}
		p.resetAll()
	}
}

// resetAll drops every connection with a TCP reset.
func (p *faultProxy) resetAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	p.resets++
}

func (p *faultProxy) resetCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resets
}

func (p *faultProxy) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.ln.Close()
	p.resetAll()
	p.wg.Wait()
}
