package client

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

func historyOffsets(p HistoryPage) []uint64 {
	out := make([]uint64, len(p.Messages))
	for i, m := range p.Messages {
		out[i] = m.Offset
	}
	return out
}

// History pages forwards with Since and backwards with Reverse and Before.
func TestHistoryPages(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 25)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	for _, tc := range []struct {
		opts HistoryOptions
		want []uint64
	}{
		{HistoryOptions{Limit: 10}, seq(1, 10)},
		{HistoryOptions{Limit: 10, Since: 10}, seq(11, 20)},
		{HistoryOptions{Since: 20}, seq(21, 25)},
		{HistoryOptions{Limit: 5, Reverse: true}, []uint64{25, 24, 23, 22, 21}},
		{HistoryOptions{Limit: 3, Reverse: true, Before: 21}, []uint64{20, 19, 18}},
		{HistoryOptions{Since: 25}, []uint64{}},
	} {
		p, err := c.History(ctxT(t), "chat", tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := historyOffsets(p); !slices.Equal(got, tc.want) || p.First != 1 || p.Next != 26 || p.Epoch == "" {
			t.Errorf("%+v: offsets %v (first %d next %d), want %v", tc.opts, got, p.First, p.Next, tc.want)
		}
		for _, m := range p.Messages {
			if string(m.Data) != string(data(int(m.Offset)-1)) {
				t.Errorf("offset %d: data %s", m.Offset, m.Data)
			}
		}
	}
	if _, err := c.History(ctxT(t), "bad channel", HistoryOptions{}); err == nil {
		t.Fatal("a bad channel name was asked")
	}
	frames := g.Frames()
	last := frames[len(frames)-1]
	if last.Op != wire.OpHistory || last.Limit != nil || last.Since == nil || *last.Since != 25 {
		t.Fatalf("last frame sent %+v", last)
	}
}

// A history read whose connection is lost before the answer is asked again
// on the next connection.
func TestHistoryAskedAgainAfterReconnect(t *testing.T) {
	g := newGateway(t)
	appendN(g, "chat", 3)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	waitFor(t, 5*time.Second, "connected", func() bool { return c.State() == Connected })
	var dropped atomic.Bool
	g.SetHook(func(f wire.ClientFrame) {
		if f.Op == wire.OpHistory && dropped.CompareAndSwap(false, true) {
			g.Drop() // the answer to this one is lost
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.History(ctx, "chat", HistoryOptions{Reverse: true, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := historyOffsets(p); !slices.Equal(got, []uint64{3}) || !dropped.Load() || g.Accepted() < 2 {
		t.Fatalf("offsets %v, dropped %v, connections %d", got, dropped.Load(), g.Accepted())
	}
}

// Last(n) starts a subscription with no position at the newest n
// messages; after a reconnect it resumes from its position, not with
// another rewind.
func TestSubscribeLastThenResume(t *testing.T) {
	g := newGateway(t)
	appendN(g, "ticker", 10)
	c := newClient(t, Config{URLs: []string{g.URL()}})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "ticker", r.handle, Last(3)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "3 messages", func() bool { return r.len() == 3 })
	g.SetDown(true)
	g.Drop()
	waitFor(t, 5*time.Second, "disconnect", func() bool { return c.State() != Connected })
	appendN(g, "ticker", 2)
	g.SetDown(false)
	waitFor(t, 5*time.Second, "5 messages", func() bool { return r.len() == 5 })
	if got := r.offsets(); !slices.Equal(got, seq(8, 12)) {
		t.Fatalf("offsets %v, want 8..12", got)
	}
	var subs []wire.ClientFrame
	for _, f := range g.Frames() {
		if f.Op == wire.OpSubscribe {
			subs = append(subs, f)
		}
	}
	if len(subs) != 2 || subs[0].Last == nil || *subs[0].Last != 3 || subs[1].Last != nil || subs[1].From == nil || *subs[1].From != 11 {
		t.Fatalf("subscribes sent: %+v", subs)
	}
}
