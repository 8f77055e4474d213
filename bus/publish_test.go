package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// acceptPub takes the next session and welcomes it as a router that takes
// publishes (or not).
func (f *fakeRouter) acceptPub(pubs bool) Link {
	f.t.Helper()
	if pubs {
		return f.welcomeCaps(CapPublish)
	}
	return f.welcomeCaps()
}

// recvPub returns the next publish on l, skipping pings (answered) and
// anything else.
func (f *fakeRouter) recvPub(l Link) Msg {
	f.t.Helper()
	for range 1000 {
		m := f.recv(l)
		switch m.Type {
		case TypePublish:
			return m
		case TypePing:
			_ = l.Send(context.Background(), (&Msg{Type: TypePong}).Encode())
		}
	}
	f.t.Fatal("no publish in 1000 messages")
	return Msg{}
}

func ackOf(m Msg, offset uint64) []byte {
	return (&Msg{Type: TypeAck, ID: m.ID, Channel: m.Channel, Offset: offset, Epoch: "E"}).Encode()
}

// outcomes records the answers of publishes by key.
type outcomes struct {
	mu  sync.Mutex
	got map[string][]result
}

type result struct {
	res wire.PublishResponse
	err error
}

func newOutcomes() *outcomes { return &outcomes{got: map[string][]result{}} }

func (o *outcomes) done(key string) func(wire.PublishResponse, error) {
	return func(res wire.PublishResponse, err error) {
		o.mu.Lock()
		o.got[key] = append(o.got[key], result{res, err})
		o.mu.Unlock()
	}
}

func (o *outcomes) of(key string) []result {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]result(nil), o.got[key]...)
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.got)
}

func publishN(t *testing.T, g *Gateway, o *outcomes, from, to int, deadline time.Time) {
	t.Helper()
	for i := from; i <= to; i++ {
		key := fmt.Sprintf("k%d", i)
		if err := g.Publish(context.Background(), Publish{Channel: "c", Key: key, Data: json.RawMessage(fmt.Sprint(i)), Deadline: deadline}, o.done(key)); err != nil {
			t.Fatalf("Publish %s: %v", key, err)
		}
	}
}

// TestPublishResentInOrder: publishes go out in the order of the calls;
// when the session breaks, those not acknowledged are sent again on the
// next session, in the same order, before any later publish, with the same
// keys; each is answered once.
func TestPublishResentInOrder(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	o := newOutcomes()
	l := f.acceptPub(true)
	waitUntil(t, "the session", g.Connected)
	deadline := time.Now().Add(time.Minute)
	publishN(t, g, o, 1, 10, deadline)
	var first []Msg
	for range 10 {
		first = append(first, f.recvPub(l))
	}
	for i, m := range first {
		if m.Key != fmt.Sprintf("k%d", i+1) || string(m.Data) != fmt.Sprint(i+1) || m.Channel != "c" {
			t.Fatalf("publish %d on the wire: %+v", i, m)
		}
	}
	// Acks for 1-4 and 7 (out of order), then the session breaks.
	for _, i := range []int{0, 1, 2, 3, 6} {
		if err := l.Send(context.Background(), ackOf(first[i], uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "five answers", func() bool { return o.count() == 5 })
	l.Close()
	publishN(t, g, o, 11, 12, deadline) // while no session is up, or already on the next

	l = f.acceptPub(true)
	want := []string{"k5", "k6", "k8", "k9", "k10", "k11", "k12"}
	for _, key := range want {
		m := f.recvPub(l)
		if m.Key != key {
			t.Fatalf("on the new session got %s, want %s (the unanswered ones in order, then the new)", m.Key, key)
		}
		if err := l.Send(context.Background(), (&Msg{Type: TypeAck, ID: m.ID, Channel: "c", Offset: 100, Duplicate: key == "k5"}).Encode()); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every answer", func() bool { return o.count() == 12 && g.InFlight() == 0 })
	for i := 1; i <= 12; i++ {
		key := fmt.Sprintf("k%d", i)
		rs := o.of(key)
		if len(rs) != 1 || rs[0].err != nil {
			t.Fatalf("%s answered %+v; want one ack", key, rs)
		}
	}
	if !o.of("k5")[0].res.Duplicate || o.of("k6")[0].res.Duplicate {
		t.Errorf("the duplicate flag did not come through: k5 %+v, k6 %+v", o.of("k5")[0].res, o.of("k6")[0].res)
	}
}

// TestPublishRetriedWhenUnavailable: a publish the router refuses as
// unavailable is sent again after a backoff, with its key, until it is
// acknowledged; any other error, or a final refusal, is its answer.
func TestPublishRetriedWhenUnavailable(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	o := newOutcomes()
	l := f.acceptPub(true)
	waitUntil(t, "the session", g.Connected)
	publishN(t, g, o, 1, 3, time.Now().Add(time.Minute))
	m1, m2, m3 := f.recvPub(l), f.recvPub(l), f.recvPub(l)
	// A final refusal is the answer.
	if err := l.Send(context.Background(), (&Msg{Type: TypeAck, ID: m3.ID, Final: true, Error: &wire.Error{Code: wire.CodeUnavailable, Message: "too many ids"}}).Encode()); err != nil {
		t.Fatal(err)
	}
	refuse := func(m Msg, code string) {
		if err := l.Send(context.Background(), (&Msg{Type: TypeAck, ID: m.ID, Error: &wire.Error{Code: code, Message: "no"}}).Encode()); err != nil {
			t.Fatal(err)
		}
	}
	refuse(m1, wire.CodeUnavailable)
	refuse(m2, wire.CodeBadRequest)
	again := f.recvPub(l)
	if again.Key != "k1" || again.ID != m1.ID {
		t.Fatalf("sent again: %+v, want k1 with id %d", again, m1.ID)
	}
	if err := l.Send(context.Background(), ackOf(again, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the answers", func() bool { return o.count() == 3 })
	if rs := o.of("k3"); len(rs) != 1 || wireCode(rs[0].err) != wire.CodeUnavailable {
		t.Errorf("k3: %+v; want unavailable at once (final)", rs)
	}
	if rs := o.of("k1"); len(rs) != 1 || rs[0].err != nil || rs[0].res.Offset != 1 {
		t.Errorf("k1: %+v; want one ack at 1", rs)
	}
	if rs := o.of("k2"); len(rs) != 1 || wireCode(rs[0].err) != wire.CodeBadRequest {
		t.Errorf("k2: %+v; want bad_request", rs)
	}
}

// TestPublishDeadline: a publish never sent (no session) is answered
// unavailable at its deadline; one sent and not answered, timeout.
func TestPublishDeadline(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	o := newOutcomes()
	publishN(t, g, o, 1, 1, time.Now().Add(100*time.Millisecond))
	waitUntil(t, "k1's answer", func() bool { return len(o.of("k1")) == 1 })
	if err := o.of("k1")[0].err; wireCode(err) != wire.CodeUnavailable {
		t.Errorf("k1, never sent: %v; want unavailable", err)
	}
	l := f.acceptPub(true)
	waitUntil(t, "the session", g.Connected)
	publishN(t, g, o, 2, 2, time.Now().Add(300*time.Millisecond))
	f.recvPub(l)
	waitUntil(t, "k2's answer", func() bool { return len(o.of("k2")) == 1 })
	if err := o.of("k2")[0].err; wireCode(err) != wire.CodeTimeout {
		t.Errorf("k2, sent and not answered: %v; want timeout", err)
	}
	if g.InFlight() != 0 {
		t.Errorf("%d publishes still in flight", g.InFlight())
	}
}

// TestPublishStalledRouter: a router that answers nothing, not even pings,
// while publishes wait on it loses the session, and they go to the next;
// one that answers pings keeps it however long a publish takes.
func TestPublishStalledRouter(t *testing.T) {
	f := newFakeRouter(t)
	g, err := NewGateway(GatewayConfig{ID: "g1", Dial: f.dial, Deliver: func(string, json.RawMessage) error { return nil },
		StallAfter: time.Second}) // its pongs come within half of it, even on a loaded machine
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = g.Run(ctx) }()
	defer func() { cancel(); <-stopped }()

	o := newOutcomes()
	l := f.acceptPub(true)
	waitUntil(t, "the session", g.Connected)
	publishN(t, g, o, 1, 1, time.Now().Add(time.Minute))
	// This router reads (pings too) but never answers.
	if m := f.recv(l); m.Type != TypePublish {
		t.Fatalf("got %+v, want the publish", m)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if _, err := l.Recv(); err != nil {
				return
			}
		}
	}()
	l2 := f.acceptPub(true) // the gateway gave the first up and dialed again
	<-drained
	m := f.recvPub(l2)
	if m.Key != "k1" {
		t.Fatalf("on the next session: %+v, want k1", m)
	}
	// This one answers pings: the session holds for several StallAfters.
	pongs := make(chan struct{})
	go func() {
		defer close(pongs)
		for {
			b, err := l2.Recv()
			if err != nil {
				return
			}
			if m, _ := Decode(b); m.Type == TypePing {
				_ = l2.Send(context.Background(), (&Msg{Type: TypePong}).Encode())
			}
		}
	}()
	select {
	case <-f.links:
		t.Fatal("the gateway dialed again although the router answered its pings")
	case <-time.After(4 * time.Second):
	}
	if err := l2.Send(context.Background(), ackOf(m, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "k1's answer", func() bool { return len(o.of("k1")) == 1 })
	if rs := o.of("k1"); rs[0].err != nil {
		t.Fatalf("k1: %v", rs[0].err)
	}
	l2.Close()
	<-pongs
}

// TestPublishRouterWithoutCap: a router of an earlier release (no
// "publish" in its welcome) gets no publishes: those waiting are answered
// ErrNoPublish, and Publish refuses new ones with it.
func TestPublishRouterWithoutCap(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	o := newOutcomes()
	publishN(t, g, o, 1, 1, time.Now().Add(time.Minute)) // before any session
	l := f.acceptPub(false)
	waitUntil(t, "k1's answer", func() bool { return len(o.of("k1")) == 1 })
	if err := o.of("k1")[0].err; !errors.Is(err, ErrNoPublish) {
		t.Errorf("k1: %v; want ErrNoPublish", err)
	}
	err := g.Publish(context.Background(), Publish{Channel: "c", Key: "k2", Data: json.RawMessage(`2`), Deadline: time.Now().Add(time.Minute)}, o.done("k2"))
	if !errors.Is(err, ErrNoPublish) {
		t.Errorf("Publish on a session without the cap: %v; want ErrNoPublish", err)
	}
	l.Close()
}

// TestPublishWindow: at most MaxPublishes are in flight; Publish waits for
// room while its ctx lasts.
func TestPublishWindow(t *testing.T) {
	f := newFakeRouter(t)
	g, err := NewGateway(GatewayConfig{ID: "g1", Dial: f.dial, Deliver: func(string, json.RawMessage) error { return nil }, MaxPublishes: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = g.Run(ctx) }()
	defer func() { cancel(); <-stopped }()
	o := newOutcomes()
	l := f.acceptPub(true)
	waitUntil(t, "the session", g.Connected)
	publishN(t, g, o, 1, 3, time.Now().Add(time.Minute))
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := g.Publish(short, Publish{Channel: "c", Key: "k4", Data: json.RawMessage(`4`), Deadline: time.Now().Add(time.Minute)}, o.done("k4")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fourth publish with three in flight: %v; want it to wait, then the ctx's error", err)
	}
	m := f.recvPub(l)
	if err := l.Send(context.Background(), ackOf(m, 1)); err != nil {
		t.Fatal(err)
	}
	publishN(t, g, o, 4, 4, time.Now().Add(time.Minute)) // room again
	if g.InFlight() != 3 {
		t.Errorf("InFlight = %d, want 3", g.InFlight())
	}
}
