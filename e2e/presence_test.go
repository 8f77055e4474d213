package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
)

// TestPresenceAcrossGateways: 3 hubs and 2 gateways; connections on both
// subscribe to a channel; every hub's presence lists all of them, and so
// does a client asking through either gateway; a connection that closes
// leaves it; a gateway killed with SIGKILL takes its connections out of
// the next answer.
func TestPresenceAcrossGateways(t *testing.T) {
	c := startCluster(t, 3)
	g1, g2 := c.startGateway("g1"), c.startGateway("g2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var clients []*client.Client
	for i, g := range []*hub{g1, g1, g1, g2, g2} {
		cl := faultClient(t, []string{"ws://" + g.api + "/ws"}, nil, 0)
		if _, err := cl.Subscribe(ctx, "lobby", func(client.Message) {}); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		clients = append(clients, cl)
	}
	// presence reads the channel's presence from hub h's API.
	presence := func(h *hub) (wire.Presence, error) {
		var p wire.Presence
		code, body, err := c.do(http.MethodGet, h.api, "/v1/channels/lobby/presence", nil)
		if err == nil && code != http.StatusOK {
			err = &wire.Error{Code: "http", Message: string(body)}
		}
		if err == nil {
			err = json.Unmarshal(body, &p)
		}
		return p, err
	}
	count := func(p wire.Presence, prefix string) int {
		n := 0
		for _, e := range p.Presence {
			if strings.HasPrefix(e.Conn, prefix) {
				n++
			}
		}
		return n
	}
	for _, h := range c.hubs {
		waitFor(t, 20*time.Second, "presence on "+h.id, func() bool {
			p, err := presence(h)
			return err == nil && count(p, "g1-") == 3 && count(p, "g2-") == 2 && len(p.Missing) == 0
		})
	}
	// A client that describes itself: its info is in the presence.
	described, err := client.New(client.Config{URLs: []string{"ws://" + g2.api + "/ws"}, Info: json.RawMessage(`{"device":"kiosk-7"}`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { described.Close() })
	if _, err := described.Subscribe(ctx, "lobby", func(client.Message) {}); err != nil {
		t.Fatal(err)
	}
	asker := faultClient(t, []string{"ws://" + g2.api + "/ws"}, nil, 0)
	entries, err := asker.Presence(ctx, "lobby")
	if err != nil || len(entries) != 6 {
		t.Fatalf("presence through g2: %v, %v", entries, err)
	}
	withInfo := 0
	for _, e := range entries {
		if string(e.Info) == `{"device":"kiosk-7"}` {
			withInfo++
		}
	}
	if withInfo != 1 {
		t.Fatalf("presence through g2: %d entries with the kiosk's info: %+v", withInfo, entries)
	}
	if conns, users, err := asker.PresenceStats(ctx, "lobby"); err != nil || conns != 6 || users != 0 {
		t.Fatalf("presence_stats through g2: %d %d %v", conns, users, err)
	}
	described.Close()
	// A connection that closes leaves.
	clients[0].Close()
	waitFor(t, 20*time.Second, "the closed connection gone", func() bool {
		p, err := presence(c.hubs[0])
		return err == nil && count(p, "g1-") == 2 && count(p, "g2-") == 2
	})
	// A gateway killed: its connections are gone from the next answers.
	killed := time.Now()
	c.kill(g2)
	waitFor(t, 20*time.Second, "g2's connections gone", func() bool {
		p, err := presence(c.hubs[1])
		return err == nil && count(p, "g1-") == 2 && count(p, "g2-") == 0
	})
	t.Logf("g2's connections left the presence %v after its SIGKILL", time.Since(killed).Round(time.Millisecond))
	entries, err = faultClient(t, []string{"ws://" + g1.api + "/ws"}, nil, 0).Presence(ctx, "lobby")
	if err != nil || len(entries) != 2 {
		t.Fatalf("presence through g1 after g2's death: %v, %v", entries, err)
	}
}

// TestJoinLeaveAcrossGateways: in a namespace with join_leave, a
// subscriber on g1 sees a connection on g2 join before that connection's
// first message, and leave when it closes; connections of a gateway killed
// with SIGKILL leave too.
func TestJoinLeaveAcrossGateways(t *testing.T) {
	c := startCluster(t, 3)
	l := c.waitLeader(nil, 10*time.Second)
	if code, body, err := c.do(http.MethodPut, l.api, "/v1/namespaces", []byte(`{"namespaces":[{"name":"room","join_leave":true}]}`)); err != nil || code != http.StatusOK {
		t.Fatalf("PUT /v1/namespaces: %d %s %v", code, body, err)
	}
	g1, g2 := c.startGateway("g1"), c.startGateway("g2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen []string // "join CONN", "leave CONN", "message N"
	watcher := faultClient(t, []string{"ws://" + g1.api + "/ws"}, nil, 0)
	if _, err := watcher.Subscribe(ctx, "room:1", func(m client.Message) {
		mu.Lock()
		seen = append(seen, "message "+string(m.Data))
		mu.Unlock()
	}, client.OnJoinLeave(func(e client.JoinLeave) {
		mu.Lock()
		seen = append(seen, map[bool]string{true: "join ", false: "leave "}[e.Join]+e.Conn)
		mu.Unlock()
	})); err != nil {
		t.Fatal(err)
	}
	has := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, s)
	}
	index := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Index(seen, s)
	}
	// A connection on g2 joins, then publishes: the join comes first.
	var connID atomic.Value
	joiner := faultClient(t, []string{"ws://" + g2.api + "/ws"}, nil, 0)
	if _, err := joiner.Subscribe(ctx, "room:1", func(client.Message) {}, client.OnJoinLeave(func(e client.JoinLeave) {
		if e.Join && strings.HasPrefix(e.Conn, "g2-") {
			connID.Store(e.Conn) // its own join
		}
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := joiner.Publish(ctx, "room:1", 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the joiner's own join", func() bool { return connID.Load() != nil })
	id := connID.Load().(string)
	waitFor(t, 20*time.Second, "the join and the message on g1", func() bool { return has("join "+id) && has("message 1") })
	if j, m := index("join "+id), index("message 1"); j > m {
		t.Fatalf("the message came before the join: %v", seen)
	}
	joiner.Close()
	waitFor(t, 20*time.Second, "the leave of a closed connection", func() bool { return has("leave " + id) })
	// A connection on g2, then g2 killed: it leaves.
	var victimID atomic.Value
	victim := faultClient(t, []string{"ws://" + g2.api + "/ws"}, nil, 0)
	if _, err := victim.Subscribe(ctx, "room:1", func(client.Message) {}, client.OnJoinLeave(func(e client.JoinLeave) {
		if e.Join && strings.HasPrefix(e.Conn, "g2-") && e.Conn != id {
			victimID.Store(e.Conn)
		}
	})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the victim's join", func() bool { v := victimID.Load(); return v != nil && has("join "+v.(string)) })
	c.kill(g2)
	waitFor(t, 20*time.Second, "the killed gateway's connection leaves", func() bool { return has("leave " + victimID.Load().(string)) })
}
