package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// offsetsOf returns the offsets of a history answer, checking each
// message's data names its offset.
func offsetsOf(t testing.TB, f wire.ServerFrame) []uint64 {
	t.Helper()
	out := make([]uint64, len(f.Messages))
	for i, m := range f.Messages {
		var v struct{ N uint64 }
		if err := json.Unmarshal(m.Data, &v); err != nil || v.N != m.Offset || m.Time.IsZero() {
			t.Fatalf("message %d: data %s time %v", m.Offset, m.Data, m.Time)
		}
		out[i] = m.Offset
	}
	return out
}

func seq(a, b uint64) []uint64 { // a, a±1, ..., b
	out := []uint64{a}
	for a != b {
		if a < b {
			a++
		} else {
			a--
		}
		out = append(out, a)
	}
	return out
}

// TestHistoryPaging pages a channel's history over the client protocol
// forwards (since = the last offset seen) and backwards (reverse, before =
// the oldest seen), and by time.
func TestHistoryPaging(t *testing.T) {
	hub := startHub(t)
	const n = 230
	var mid time.Time
	for i := uint64(1); i <= n; i++ {
		if off := hub.publish(t, "room", fmt.Sprintf(`{"n":%d}`, i)); off != i {
			t.Fatalf("offset %d, want %d", off, i)
		}
		if i == 200 {
			mid = time.Now()
		}
	}
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	c := dial(t, g.url)
	ask := func(q string) wire.ServerFrame {
		t.Helper()
		c.send(`{"op":"history","channel":"room","id":"h",` + q + `}`)
		f := c.expect(wire.OpHistory)
		if f.ID != "h" || f.Channel != "room" || f.Epoch == "" || f.First != 1 || f.Next != n+1 {
			t.Fatalf("%s: answer %+v", q, f)
		}
		return f
	}
	var fwd []uint64
	since := ""
	for range 10 {
		got := offsetsOf(t, ask(`"limit":100`+since))
		if len(got) == 0 {
			break
		}
		fwd = append(fwd, got...)
		since = fmt.Sprintf(`,"since":%d`, got[len(got)-1])
	}
	if fmt.Sprint(fwd) != fmt.Sprint(seq(1, n)) {
		t.Fatalf("forwards: %v", fwd)
	}
	var back []uint64
	before := ""
	for range 10 {
		got := offsetsOf(t, ask(`"limit":100,"reverse":true`+before))
		if len(got) == 0 {
			break
		}
		back = append(back, got...)
		before = fmt.Sprintf(`,"before":%d`, got[len(got)-1])
	}
	if fmt.Sprint(back) != fmt.Sprint(seq(n, 1)) {
		t.Fatalf("backwards: %v", back)
	}
	if got := offsetsOf(t, ask(`"since_time":"`+mid.UTC().Format(time.RFC3339Nano)+`"`)); fmt.Sprint(got) != fmt.Sprint(seq(201, n)) {
		t.Fatalf("since_time: %v", got)
	}
	if got := offsetsOf(t, ask(`"since":10,"before":15`)); fmt.Sprint(got) != fmt.Sprint(seq(11, 14)) {
		t.Fatalf("since 10 before 15: %v", got)
	}
	if got := ask(`"limit":0`); len(got.Messages) != 0 {
		t.Fatalf("limit 0: %d messages", len(got.Messages))
	}
	// An unknown channel has an empty history, not an error.
	c.send(`{"op":"history","channel":"nobody-here","id":"e"}`)
	if f := c.expect(wire.OpHistory); len(f.Messages) != 0 || f.First != 1 || f.Next != 1 {
		t.Fatalf("empty channel: %+v", f)
	}
	for _, bad := range []struct{ frame, contains string }{
		{`{"op":"history","channel":"room","limit":1001,"id":"b"}`, "over 1000"},
		{`{"op":"history","channel":"room","before":0,"id":"b"}`, "before"},
		{`{"op":"history","channel":"room","since_time":"today","id":"b"}`, "since_time"},
		{`{"op":"history","channel":"no spaces","id":"b"}`, "channel"},
		{`{"op":"history","channel":"room","limit":-1,"id":"b"}`, "limit"},
	} {
		c.send(bad.frame)
		if f := c.expect(wire.OpError); f.Code != wire.CodeBadRequest || f.ID != "b" || !strings.Contains(f.Message, bad.contains) {
			t.Fatalf("%s: %+v", bad.frame, f)
		}
	}
}

// TestHistoryHoldsOwnPublishes: history asked right after a publish's ack
// holds that publish, and history asked after a message was delivered
// holds it, on every try.
func TestHistoryHoldsOwnPublishes(t *testing.T) {
	hub := startHub(t)
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	c := dial(t, g.url)
	for i := uint64(1); i <= 50; i++ {
		c.send(fmt.Sprintf(`{"op":"publish","channel":"mine","data":{"n":%d},"id":"p%d"}`, i, i))
		ack := c.expect(wire.OpAck)
		c.send(`{"op":"history","channel":"mine","reverse":true,"limit":1,"id":"h"}`)
		h := c.expect(wire.OpHistory)
		if got := offsetsOf(t, h); len(got) != 1 || got[0] != ack.Offset {
			t.Fatalf("after the ack of %d: history %v", ack.Offset, got)
		}
	}
	sub := dial(t, g.url)
	sub.send(`{"op":"subscribe","channel":"theirs"}`)
	sub.expect(wire.OpSubscribed)
	for i := uint64(1); i <= 20; i++ {
		hub.publish(t, "theirs", fmt.Sprintf(`{"n":%d}`, i))
		m := sub.expect(wire.OpMessage)
		sub.send(`{"op":"history","channel":"theirs","reverse":true,"limit":1,"id":"h"}`)
		if got := offsetsOf(t, sub.expect(wire.OpHistory)); len(got) != 1 || got[0] != m.Offset {
			t.Fatalf("after message %d: history %v", m.Offset, got)
		}
	}
}

// TestSubscribeLast rewinds: the newest N messages, then live ones, with
// no gap and no duplicate; last larger than the channel replays it all,
// and last 0 is live only.
func TestSubscribeLast(t *testing.T) {
	hub := startHub(t)
	for i := uint64(1); i <= 40; i++ {
		hub.publish(t, "ticker", fmt.Sprintf(`{"n":%d}`, i))
	}
	g := startGateway(t, httpHubs(t, hub.api), Config{})
	for _, tc := range []struct {
		last      uint64
		firstSent uint64
	}{{1, 40}, {5, 36}, {40, 1}, {1000, 1}} {
		c := dial(t, g.url)
		c.send(fmt.Sprintf(`{"op":"subscribe","channel":"ticker","last":%d,"id":"s"}`, tc.last))
		f := c.expect(wire.OpSubscribed)
		if !f.Recovered || f.First != 1 || f.Next < 41 {
			t.Fatalf("last %d: %+v", tc.last, f)
		}
		c.messages("ticker", tc.firstSent, int(41-tc.firstSent))
		c.c.Close()
	}
	live := dial(t, g.url)
	live.send(`{"op":"subscribe","channel":"ticker","last":0}`)
	live.expect(wire.OpSubscribed)
	// A rewind while messages are being published: the replay and the
	// live messages join with no gap and no duplicate.
	c := dial(t, g.url)
	done := make(chan error, 1)
	go func() {
		for i := uint64(41); i <= 140; i++ {
			if _, err := hub.Service.Publish(context.Background(), "ticker", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), ""); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c.send(`{"op":"subscribe","channel":"ticker","last":10}`)
	f := c.expect(wire.OpSubscribed)
	from := f.Next - 10
	c.messages("ticker", from, int(141-from))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	live.messages("ticker", 41, 100)
	c.send(`{"op":"subscribe","channel":"other","last":3,"from":1,"id":"x"}`)
	if f := c.expect(wire.OpError); f.Code != wire.CodeBadRequest || !strings.Contains(f.Message, "not both") {
		t.Fatalf("last and from: %+v", f)
	}
}

// BenchmarkHistory1000 asks a gateway over WebSocket for pages of 1,000
// messages of 128 bytes, reverse and forward, from a channel of 100,000
// on a hub served over HTTP in process (the gateway and the hub share the
// machine's cores with the client). One op is one page, asked and read.
//
//	go test ./gateway -run '^$' -bench History1000 -benchtime 200x
func BenchmarkHistory1000(b *testing.B) {
	hub := startHub(b)
	data := json.RawMessage(`{"text":"` + strings.Repeat("x", 117) + `"}`) // 128 bytes
	const total = 100_000
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range total {
		wg.Add(1)
		hub.Service.PublishAsync(context.Background(), "big", data, "", func(_ wire.PublishResponse, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
			wg.Done()
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	g := startGateway(b, httpHubs(b, hub.api), Config{})
	c := dial(b, g.url)
	for _, tc := range []struct{ name, q string }{
		{"reverse", `"limit":1000,"reverse":true`},
		{"forward", `"limit":1000,"since":50000`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c.t = b
			for b.Loop() {
				c.send(`{"op":"history","channel":"big","id":"h",` + tc.q + `}`)
				if f := c.expect(wire.OpHistory); len(f.Messages) != 1000 {
					b.Fatalf("%d messages", len(f.Messages))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
		})
	}
}

// appendHistory writes what encoding/json writes of the same wire.History,
// ids that need escaping included.
func TestAppendHistory(t *testing.T) {
	msgs := []wire.Message{{Offset: 7, Data: json.RawMessage(`{"a":"b\n"}`), Time: time.Date(2026, 12, 7, 1, 2, 3, 4, time.UTC)}}
	raw, err := json.Marshal(msgs)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "h1", `q"uote\and<html>`, "naïve\u2028"} {
		want, err := json.Marshal(wire.History{Op: wire.OpHistory, ID: id, Channel: "room:1", Epoch: "E\"1",
			First: 3, Next: 8, Messages: msgs})
		if err != nil {
			t.Fatal(err)
		}
		got := appendHistory(nil, id, "room:1", HistoryPage{Epoch: "E\"1", First: 3, Next: 8, Messages: raw})
		if string(got) != string(want) {
			t.Errorf("id %q:\n got %s\nwant %s", id, got, want)
		}
	}
}
