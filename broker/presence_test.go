package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/wire"
)

// startBusGateway runs a bus gateway with cfg (Dial: the cluster's hubs,
// Deliver: no connections, when unset) until the test ends, and waits for
// its session; stop ends it sooner.
func startBusGateway(tb testing.TB, c *cluster, cfg bus.GatewayConfig) (g *bus.Gateway, stop func()) {
	tb.Helper()
	if cfg.Dial == nil {
		cfg.Dial = bus.HubDialer(apis(c.hubs...), "", nil, nil)
	}
	if cfg.Deliver == nil {
		cfg.Deliver = func(string, json.RawMessage) error { return bus.ErrNoConnection }
	}
	g, err := bus.NewGateway(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	tb.Cleanup(stop)
	waitFor(tb, 10*time.Second, cfg.ID+"'s session", g.Connected)
	return g, stop
}

// presenceGateway attaches a bus gateway named id that answers presence
// queries with answer (nil: a gateway of an earlier release, which does
// not say it answers them).
func presenceGateway(t *testing.T, c *cluster, id string, answer func(channel string) json.RawMessage) (stop func()) {
	t.Helper()
	_, stop = startBusGateway(t, c, bus.GatewayConfig{ID: id, Presence: answer})
	return stop
}

func entriesJSON(gw string, n int, users ...string) json.RawMessage {
	var out []wire.PresenceEntry
	for i := range n {
		e := wire.PresenceEntry{Conn: fmt.Sprintf("%s-%04x", gw, i)}
		if len(users) > 0 {
			e.User = users[i%len(users)]
		}
		out = append(out, e)
	}
	b, _ := json.Marshal(out)
	return b
}

func getJSON(t *testing.T, c *cluster, api, path string, out any) {
	t.Helper()
	status, body := c.do(http.MethodGet, api, path, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatal(err)
	}
}

// TestPresence asks every hub who is subscribed to a channel held by two
// gateways: the answer merges both, sorted, paged with after; the stats
// count connections and distinct users; a gateway that does not answer in
// time is named in missing; a gateway whose session ended is gone.
func TestPresence(t *testing.T) {
	c := newCluster3(t)
	c.leader()
	stopA := presenceGateway(t, c, "ga", func(ch string) json.RawMessage {
		if ch != "room" {
			return json.RawMessage("[]")
		}
		return entriesJSON("ga", 3, "alice", "bob")
	})
	presenceGateway(t, c, "gb", func(ch string) json.RawMessage {
		if ch != "room" {
			return json.RawMessage("[]")
		}
		return entriesJSON("gb", 2, "alice", "")
	})
	presenceGateway(t, c, "old", nil) // an earlier release: not asked, not missing
	for _, h := range c.hubs {
		var p wire.Presence
		getJSON(t, c, h.api, "/v1/channels/room/presence", &p)
		want := []string{"ga-0000", "ga-0001", "ga-0002", "gb-0000", "gb-0001"}
		if len(p.Presence) != len(want) || len(p.Missing) != 0 || p.After != "" {
			t.Fatalf("%s: %+v", h.id, p)
		}
		for i, e := range p.Presence {
			if e.Conn != want[i] {
				t.Fatalf("%s: entry %d is %+v, want %s", h.id, i, e, want[i])
			}
		}
		var st wire.PresenceStats
		getJSON(t, c, h.api, "/v1/channels/room/presence_stats", &st)
		if st.Connections != 5 || st.Users != 2 || st.Channel != "room" {
			t.Fatalf("%s: stats %+v", h.id, st)
		}
	}
	// Paging: 2 at a time.
	var got []string
	after := ""
	for range 5 {
		var p wire.Presence
		getJSON(t, c, c.hubs[0].api, "/v1/channels/room/presence?limit=2&after="+after, &p)
		for _, e := range p.Presence {
			got = append(got, e.Conn)
		}
		if after = p.After; after == "" {
			break
		}
	}
	if fmt.Sprint(got) != "[ga-0000 ga-0001 ga-0002 gb-0000 gb-0001]" {
		t.Fatalf("paged: %v", got)
	}
	var empty wire.Presence
	getJSON(t, c, c.hubs[1].api, "/v1/channels/nobody/presence", &empty)
	if empty.Presence == nil || len(empty.Presence) != 0 {
		t.Fatalf("a channel nobody is on: %+v", empty)
	}
	// A gateway too slow to answer is left out, and named.
	release := make(chan struct{})
	presenceGateway(t, c, "slow", func(string) json.RawMessage {
		<-release
		return entriesJSON("slow", 1)
	})
	var p wire.Presence
	getJSON(t, c, c.hubs[2].api, "/v1/channels/room/presence", &p)
	close(release)
	if len(p.Presence) != 5 || fmt.Sprint(p.Missing) != "[slow]" {
		t.Fatalf("with a slow gateway: %+v", p)
	}
	// A gateway whose session ended is gone from the next answer.
	stopA()
	waitFor(t, 10*time.Second, "ga's entries gone", func() bool {
		var p wire.Presence
		getJSON(t, c, c.hubs[0].api, "/v1/channels/room/presence", &p)
		return len(p.Presence) == 3 // gb's 2 and slow's 1
	})
	for _, bad := range []string{"/v1/channels/room/presence?limit=0", "/v1/channels/room/presence?limit=10001", "/v1/channels/bad%20name/presence"} {
		if status, body := c.do(http.MethodGet, c.hubs[0].api, bad, nil); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", bad, status, body)
		}
	}
}

// BenchmarkPresence10k asks for the presence of a channel with 10,000
// subscribers on two gateways (5,000 each, encoded afresh for each query as
// a gateway does), through a follower's hub API (which asks the leader,
// whose router asks both gateways over their bus sessions), and decodes
// the answer. 3 hubs, 2 bus gateways and the client share the machine.
//
//	go test ./broker -run '^$' -bench Presence10k -benchtime 50x
func BenchmarkPresence10k(b *testing.B) {
	c := newCluster3(b)
	l := c.leader()
	for _, id := range []string{"ga", "gb"} {
		startBusGateway(b, c, bus.GatewayConfig{ID: id,
			Presence: func(string) json.RawMessage { return entriesJSON(id, 5000, "alice", "bob", "carol") }})
	}
	f := c.followers(l)[0]
	for b.Loop() {
		status, body := c.do(http.MethodGet, f.api, "/v1/channels/room/presence?limit=10000", nil)
		var p wire.Presence
		if status != http.StatusOK || json.Unmarshal(body, &p) != nil || len(p.Presence) != 10000 {
			b.Fatalf("%d, %d entries, missing %v", status, len(p.Presence), p.Missing)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/query")
}

// joinRecorder is a bus gateway's JoinLeave that records what it gets.
type joinRecorder struct {
	mu  sync.Mutex
	got []string
}

func (j *joinRecorder) add(typ, channel, conn, user string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.got = append(j.got, typ+" "+channel+" "+conn+" "+user)
}

func (j *joinRecorder) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.got)
}

// TestJoinLeave: a gateway's subscribed and unsubscribed events on a
// channel of a join_leave namespace reach every gateway as join and leave;
// other channels' do not; a gateway whose session ends has its members
// leave.
func TestJoinLeave(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	status, body := c.do(http.MethodPut, l.api, "/v1/namespaces", []byte(`{"namespaces":[{"name":"room","join_leave":true}]}`))
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var ra, rb joinRecorder
	start := func(id string, rec *joinRecorder) (*bus.Gateway, func()) {
		return startBusGateway(t, c, bus.GatewayConfig{ID: id, JoinLeave: rec.add})
	}
	ga, stopA := start("ga", &ra)
	gb, _ := start("gb", &rb)
	for _, h := range c.hubs { // the namespaces applied on the leader
		waitFor(t, 10*time.Second, "namespaces on "+h.id, func() bool { return getNamespacesVersion(t, c, h.api) == 1 })
	}
	ga.Event(bus.Event{Type: bus.EventSubscribed, Conn: "ga-1", User: "alice", Channel: "room:1"})
	ga.Event(bus.Event{Type: bus.EventSubscribed, Conn: "ga-2", Channel: "room:1"})
	ga.Event(bus.Event{Type: bus.EventSubscribed, Conn: "ga-1", User: "alice", Channel: "lobby"}) // no join_leave
	// gb's events come on another session: let ga's arrive first.
	waitFor(t, 10*time.Second, "ga's joins", func() bool { return len(rb.list()) >= 2 })
	gb.Event(bus.Event{Type: bus.EventSubscribed, Conn: "gb-1", User: "bob", Channel: "room:1"})
	gb.Event(bus.Event{Type: bus.EventUnsubscribed, Conn: "gb-1", User: "bob", Channel: "room:1"})
	want := []string{"join room:1 ga-1 alice", "join room:1 ga-2 ", "join room:1 gb-1 bob", "leave room:1 gb-1 bob"}
	for _, r := range []*joinRecorder{&ra, &rb} {
		waitFor(t, 10*time.Second, "joins and leaves", func() bool { return len(r.list()) >= len(want) })
		if got := r.list(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	stopA() // ga's members leave
	waitFor(t, 10*time.Second, "ga's members leave", func() bool { return len(rb.list()) == len(want)+2 })
	got := rb.list()[len(want):]
	slices.Sort(got)
	if fmt.Sprint(got) != "[leave room:1 ga-1 alice leave room:1 ga-2 ]" {
		t.Fatalf("after ga's session ended: %q", got)
	}
}

func getNamespacesVersion(t *testing.T, c *cluster, api string) uint64 {
	t.Helper()
	var ns wire.Namespaces
	getJSON(t, c, api, "/v1/namespaces", &ns)
	return ns.Version
}
