package client

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/client/clienttest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls cond every few milliseconds until it holds, or fails the
// test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newGateway(t *testing.T) *clienttest.Gateway {
	t.Helper()
	g := clienttest.NewGateway()
	t.Cleanup(g.Close)
	return g
}

// tlog sends the client's logs to t.Log.
type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

// newClient starts a client with short backoffs; it is closed before the
// gateways (cleanups run last first).
func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 20*time.Millisecond
	}
	if cfg.Logger == nil && testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder collects delivered messages.
type recorder struct {
	mu   sync.Mutex
	msgs []Message
}

func (r *recorder) handle(m Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) all() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) offsets() []uint64 {
	var offs []uint64
	for _, m := range r.all() {
		offs = append(offs, m.Offset)
	}
	return offs
}

// seq returns from, from+1, ..., to.
func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func data(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)) }

// appendN appends n messages to channel one by one.
func appendN(g *clienttest.Gateway, channel string, n int) {
	for i := 0; i < n; i++ {
		g.Append(channel, data(i))
	}
}

// lockedRand is a rand for Config.rand that records what it is asked and
// returns pick(n).
type lockedRand struct {
	mu   sync.Mutex
	asks []int64
	pick func(n int64) int64
}

func (r *lockedRand) rand(n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asks = append(r.asks, n)
	if r.pick == nil {
		return 0
	}
	return r.pick(n)
}

func (r *lockedRand) calls() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asks)
}

// states records OnState calls.
type states struct {
	mu  sync.Mutex
	got []State
}

func (s *states) on(st State, _ error) {
	s.mu.Lock()
	s.got = append(s.got, st)
	s.mu.Unlock()
}

func (s *states) all() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *states) count(st State) int {
	n := 0
	for _, x := range s.all() {
		if x == st {
			n++
		}
	}
	return n
}
