package bus

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// welcomeCaps takes the next session and welcomes it with caps.
func (f *fakeRouter) welcomeCaps(caps ...string) Link {
	f.t.Helper()
	var l Link
	select {
	case l = <-f.links:
	case <-time.After(5 * time.Second):
		f.t.Fatal("the gateway did not dial")
	}
	if m := f.recv(l); m.Type != TypeHello {
		f.t.Fatalf("hello: %+v", m)
	}
	if err := l.Send(context.Background(), (&Msg{Type: TypeWelcome, Name: "h1", Caps: caps}).Encode()); err != nil {
		f.t.Fatal(err)
	}
	return l
}

// recvType returns the next message of type typ on l, answering pings.
func (f *fakeRouter) recvType(l Link, typ string) Msg {
	f.t.Helper()
	for range 1000 {
		m := f.recv(l)
		switch m.Type {
		case typ:
			return m
		case TypePing:
			_ = l.Send(context.Background(), (&Msg{Type: TypePong}).Encode())
		}
	}
	f.t.Fatalf("no %s in 1000 messages", typ)
	return Msg{}
}

func TestStreamOp(t *testing.T) {
	f := newFakeRouter(t)
	g, _ := startGateway(t, f)
	l := f.welcomeCaps(CapPublish, CapStreams)
	waitUntil(t, "the session", g.Connected)

	type answer struct {
		res wire.StreamResult
		err error
	}
	call := func() chan answer {
		ch := make(chan answer, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := g.StreamOp(ctx, wire.StreamOp{Op: wire.StreamAppend, Name: "s", Messages: []json.RawMessage{json.RawMessage(`1`)}})
			ch <- answer{res, err}
		}()
		return ch
	}
	got := call()
	m := f.recvType(l, TypeStreamOp)
	var op wire.StreamOp
	if err := json.Unmarshal(m.Data, &op); err != nil || op.Name != "s" || op.Op != wire.StreamAppend || m.Timeout <= 0 {
		t.Fatalf("on the wire: %+v (%v)", m, err)
	}
	data, _ := json.Marshal(wire.StreamResult{Status: 204, Epoch: "E", Next: 2, Index: 9})
	if err := l.Send(context.Background(), (&Msg{Type: TypeResponse, ID: m.ID, Data: data}).Encode()); err != nil {
		t.Fatal(err)
	}
	if a := <-got; a.err != nil || a.res.Status != 204 || a.res.Next != 2 || a.res.Index != 9 {
		t.Fatalf("answer: %+v", a)
	}

	// A refusal of the hubs comes back as its error.
	got = call()
	m = f.recvType(l, TypeStreamOp)
	_ = l.Send(context.Background(), (&Msg{Type: TypeResponse, ID: m.ID, Error: &wire.Error{Code: wire.CodeTooLarge, Message: "big"}}).Encode())
	var we *wire.Error
	if a := <-got; !errors.As(a.err, &we) || we.Code != wire.CodeTooLarge {
		t.Fatalf("refusal: %+v", a)
	}

	// The session breaks before the answer: unavailable (it may have been
	// applied), not ErrNoStreams (which would send it again).
	got = call()
	f.recvType(l, TypeStreamOp)
	l.Close()
	if a := <-got; !errors.As(a.err, &we) || we.Code != wire.CodeUnavailable || errors.Is(a.err, ErrNoStreams) {
		t.Fatalf("broken session: %+v", a)
	}

	// A router of an earlier release: not sent at all.
	f.welcomeCaps(CapPublish)
	waitUntil(t, "the next session", g.Connected)
	if _, err := g.StreamOp(context.Background(), wire.StreamOp{Op: wire.StreamDelete, Name: "s"}); !errors.Is(err, ErrNoStreams) {
		t.Fatalf("router without streams: %v", err)
	}
}
