package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func recvWithin(t *testing.T, l Link, d time.Duration) ([]byte, error) {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := l.Recv()
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(d):
		l.Close() // ends the Recv above
		<-ch
		t.Fatalf("nothing received within %v", d)
		return nil, nil
	}
}

func TestPipe(t *testing.T) {
	a, b := Pipe()
	ctx := context.Background()
	for i := range 10 {
		if err := a.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		m, err := b.Recv()
		if err != nil || string(m) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q, %v", i, m, err)
		}
	}
	// The other way, and the message is a copy.
	buf := []byte("x")
	if err := b.Send(ctx, buf); err != nil {
		t.Fatal(err)
	}
	buf[0] = 'y'
	if m, err := a.Recv(); err != nil || string(m) != "x" {
		t.Fatalf("got %q, %v", m, err)
	}

	// A full direction makes Send wait, until ctx ends.
	for range pipeBuffer {
		if err := a.Send(ctx, []byte("f")); err != nil {
			t.Fatal(err)
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := a.Send(tctx, []byte("f")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send to a full pipe: %v", err)
	}

	// Close on one end: both ends fail, a waiting Recv included.
	got := make(chan error, 1)
	c, d := Pipe()
	go func() { _, err := c.Recv(); got <- err }()
	d.Close()
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after the peer closed: %v", err)
	}
	if err := c.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after close: %v", err)
	}
	d.Close() // idempotent
	a.Close()
}

// wsPair returns the two ends of a WebSocket link over loopback.
func wsPair(t *testing.T) (client, server Link) {
	t.Helper()
	srvCh := make(chan Link, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l, err := Upgrade(w, r)
		if err != nil {
			return
		}
		srvCh <- l
	}))
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := Dial(ctx, "ws://"+strings.TrimPrefix(ts.URL, "http://")+BusPath, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := <-srvCh
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestWSLink(t *testing.T) {
	c, s := wsPair(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 100 {
			if err := c.Send(ctx, []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	})
	for i := range 100 {
		m, err := recvWithin(t, s, 5*time.Second)
		if err != nil || string(m) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("message %d: %q, %v", i, m, err)
		}
	}
	wg.Wait()
	if err := s.Send(ctx, []byte("back")); err != nil {
		t.Fatal(err)
	}
	if m, err := recvWithin(t, c, 5*time.Second); err != nil || string(m) != "back" {
		t.Fatalf("got %q, %v", m, err)
	}
	// Closing one end ends the other's Recv.
	s.Close()
	if _, err := recvWithin(t, c, 5*time.Second); err == nil {
		t.Fatal("Recv after the peer closed succeeded")
	}
	if err := s.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

// TestWSLinkDeadPeer: a peer that stops answering pings (here: it never
// reads, so it never answers) is taken for dead after readTimeout.
func TestWSLinkDeadPeer(t *testing.T) {
	oldPing, oldRead := pingInterval, readTimeout
	pingInterval, readTimeout = 20*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { pingInterval, readTimeout = oldPing, oldRead })
	c, s := wsPair(t)
	_ = s // never read: pongs are sent by the reader
	start := time.Now()
	if _, err := recvWithin(t, c, 5*time.Second); err == nil {
		t.Fatal("Recv from a silent peer succeeded")
	}
	if d := time.Since(start); d < readTimeout/2 {
		t.Fatalf("gave up on the peer after %v, before the read timeout %v", d, readTimeout)
	}
}

// TestWSLinkKeepsAlive: peers that read (and so answer pings) keep the
// link up past the read timeout while nothing is sent.
func TestWSLinkKeepsAlive(t *testing.T) {
	oldPing, oldRead := pingInterval, readTimeout
	// Pings 10 times per read timeout: a scheduling stall of a second on
	// 2 busy cores does not break the link.
	pingInterval, readTimeout = 100*time.Millisecond, time.Second
	t.Cleanup(func() { pingInterval, readTimeout = oldPing, oldRead })
	c, s := wsPair(t)
	got := make(chan error, 1)
	go func() { _, err := s.Recv(); got <- err }()
	cDone := make(chan struct{})
	go func() { defer close(cDone); _, _ = c.Recv() }() // ends at Close
	t.Cleanup(func() { c.Close(); <-cDone })
	time.Sleep(3 * readTimeout) // the point is that time passes
	if err := c.Send(context.Background(), []byte("late")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("link broke while idle: %v", err)
	}
}

func TestHubDialer(t *testing.T) {
	var (
		mu   sync.Mutex
		auth []string
	)
	leaderLinks := make(chan Link, 4)
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path != BusPath {
			http.NotFound(w, r)
			return
		}
		l, err := Upgrade(w, r)
		if err == nil {
			leaderLinks <- l
		}
	}))
	defer leader.Close()
	leaderAddr := strings.TrimPrefix(leader.URL, "http://")
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMisdirectedRequest)
		_ = json.NewEncoder(w).Encode(wire.Error{Code: wire.CodeUnavailable, Message: "not the leader", Leader: leaderAddr})
	}))
	defer follower.Close()
	// A hub that is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()

	dial := HubDialer([]string{down, strings.TrimPrefix(follower.URL, "http://")}, "s3cret", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 2 { // the second time it starts with the leader
		l, err := dial(ctx)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		(<-leaderLinks).Close()
		l.Close()
	}
	mu.Lock()
	if len(auth) != 2 || auth[0] != "Bearer s3cret" {
		t.Errorf("the leader saw Authorization %q; want two of Bearer s3cret", auth)
	}
	mu.Unlock()

	// No leader anywhere: a bounded number of attempts, then an error that
	// says why.
	noLeader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(wire.Error{Code: wire.CodeUnavailable, Message: "no leader is known"})
	}))
	defer noLeader.Close()
	dial = HubDialer([]string{down, strings.TrimPrefix(noLeader.URL, "http://")}, "", nil, nil)
	if _, err := dial(ctx); err == nil || !strings.Contains(err.Error(), "no leader is known") {
		t.Fatalf("dial without a leader: %v", err)
	}
	var we *wire.Error
	if _, err := dial(ctx); !errors.As(err, &we) || we.Code != wire.CodeUnavailable {
		t.Fatalf("dial without a leader: %v, want a *wire.Error in it", err)
	}
	if _, err := HubDialer(nil, "", nil, nil)(ctx); !errors.Is(err, ErrNoHubs) {
		t.Fatalf("dial with no hubs: %v", err)
	}
}

func TestConnIDs(t *testing.T) {
	for _, tc := range []struct {
		conn, gw string
		ok       bool
	}{
		{"g1-ab12", "g1", true},
		{"my-gw-ab12", "my-gw", true},
		{"s-00ff", "s", true},
		{"nodash", "", false},
		{"-ab", "", false},
		{"g1-", "", false},
		{"g 1-ab", "", false},
		{"g/1-ab", "", false},
		{strings.Repeat("a", 254) + "-b", "", false},
	} {
		err := CheckConn(tc.conn)
		if (err == nil) != tc.ok {
			t.Errorf("CheckConn(%q) = %v", tc.conn, err)
		}
		if gw, ok := SplitConn(tc.conn); tc.ok && (!ok || gw != tc.gw) {
			t.Errorf("SplitConn(%q) = %q, %v", tc.conn, gw, ok)
		}
	}
}

func TestMsgRoundTrip(t *testing.T) {
	in := Msg{Type: TypeResponse, ID: 7, Data: json.RawMessage("null")}
	out, err := Decode(in.Encode())
	if err != nil || string(out.Data) != "null" || out.ID != 7 {
		t.Fatalf("null data: %+v, %v", out, err)
	}
	if _, err := Decode([]byte(`{"id":1}`)); err == nil {
		t.Fatal("a message without a type was accepted")
	}
	if c, err := Compact(json.RawMessage("{\n \"a\": [1,\n2]}")); err != nil || string(c) != `{"a":[1,2]}` {
		t.Fatalf("Compact: %s, %v", c, err)
	}
	for _, bad := range []string{"", "{", "1 2"} {
		if _, err := Compact(json.RawMessage(bad)); err == nil {
			t.Errorf("Compact(%q) accepted", bad)
		}
	}
}

// TestWSLinkSendBatch: a batch arrives as the messages it holds, in order,
// whether they share a frame or not (over maxBatchBytes they do not).
func TestWSLinkSendBatch(t *testing.T) {
	c, s := wsPair(t)
	big := bytes.Repeat([]byte("x"), maxBatchBytes/2)
	batch := [][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`), big, big, []byte(`{"c":3}`)}
	if err := c.SendBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(context.Background(), []byte(`{"d":4}`)); err != nil {
		t.Fatal(err)
	}
	for i, want := range append(batch, []byte(`{"d":4}`)) {
		got, err := recvWithin(t, s, 5*time.Second)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %d: %.40q, %v; want %.40q", i, got, err, want)
		}
	}
}
