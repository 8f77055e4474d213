package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
)

// selfHub answers presence as a router with this one gateway attached
// would: from the gateway's own PresenceJSON.
type selfHub struct {
	*HTTPHubs
	g *Server
}

func (h *selfHub) Presence(ctx context.Context, channel, after string, limit int) (wire.Presence, error) {
	var entries []wire.PresenceEntry
	if err := json.Unmarshal(h.g.PresenceJSON(channel), &entries); err != nil {
		return wire.Presence{}, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Conn < entries[j].Conn })
	out := wire.Presence{Channel: channel, Presence: []wire.PresenceEntry{}}
	for _, e := range entries {
		if e.Conn > after {
			if len(out.Presence) == limit {
				out.After = out.Presence[limit-1].Conn
				break
			}
			out.Presence = append(out.Presence, e)
		}
	}
	return out, nil
}

func (h *selfHub) PresenceStats(ctx context.Context, channel string) (wire.PresenceStats, error) {
	p, err := h.Presence(ctx, channel, "", 1<<30)
	users := map[string]bool{}
	for _, e := range p.Presence {
		if e.User != "" {
			users[e.User] = true
		}
	}
	return wire.PresenceStats{Channel: channel, Connections: len(p.Presence), Users: len(users)}, err
}

// TestPresenceOps: presence and presence_stats over the client protocol,
// paged, counted, with the namespace's switch and personal channels.
func TestPresenceOps(t *testing.T) {
	hub := startHub(t)
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	sh := &selfHub{HTTPHubs: httpHubs(t, hub.api)}
	g := startGateway(t, sh, Config{Tokens: v, AllowAnonymous: true, NamespacePoll: 20 * time.Millisecond})
	sh.g = g.Server
	setNamespaces(t, hub, []wire.Namespace{{Name: "quiet", Presence: new(bool)}, {Name: "inbox", Personal: true}}, g)
	for i, user := range []string{"alice", "alice", "bob", ""} {
		c := userConn(t, g, user, nil)
		c.send(fmt.Sprintf(`{"op":"subscribe","channel":"room","id":"s%d"}`, i))
		c.expect(wire.OpSubscribed)
	}
	// One more, anonymous, that describes itself.
	d := userConn(t, g, "", nil)
	d.send(`{"op":"connect","info":{"device":"phone"},"id":"c"}`)
	if f := d.expect(wire.OpConnected); f.ID != "c" || f.User != "" {
		t.Fatalf("connect with info: %+v", f)
	}
	d.send(`{"op":"connect","info":[1],"id":"c2"}`)
	d.expectCode("c2", wire.CodeBadRequest, "JSON object")
	d.send(`{"op":"subscribe","channel":"room","id":"sd"}`)
	d.expect(wire.OpSubscribed)
	c := userConn(t, g, "carol", nil)
	c.send(`{"op":"presence_stats","channel":"room","id":"st"}`)
	if f := c.expect(wire.OpPresenceStats); f.ID != "st" || f.Connections != 5 || f.Users != 2 {
		t.Fatalf("stats %+v", f)
	}
	var got []wire.PresenceEntry
	after := ""
	for range 5 {
		c.send(fmt.Sprintf(`{"op":"presence","channel":"room","limit":3,"after":%q,"id":"p"}`, after))
		f := c.expect(wire.OpPresence)
		got = append(got, f.Presence...)
		if after = f.After; after == "" {
			break
		}
	}
	if len(got) != 5 {
		t.Fatalf("paged presence: %+v", got)
	}
	users, infos := map[string]int{}, 0
	for _, e := range got {
		users[e.User]++
		if string(e.Info) == `{"device":"phone"}` {
			infos++
		}
	}
	if users["alice"] != 2 || users["bob"] != 1 || users[""] != 2 || infos != 1 {
		t.Fatalf("users %v, %d with info", users, infos)
	}
	c.send(`{"op":"presence","channel":"quiet:x","id":"q"}`)
	c.expectCode("q", wire.CodeForbidden, "presence is off")
	c.send(`{"op":"presence","channel":"inbox:alice","id":"i"}`)
	c.expectCode("i", wire.CodeForbidden, "personal channel of another user")
	c.send(`{"op":"presence","channel":"inbox:carol","id":"own"}`)
	if f := c.expect(wire.OpPresence); len(f.Presence) != 0 {
		t.Fatalf("own inbox: %+v", f)
	}
	c.send(`{"op":"presence","channel":"room","limit":0,"id":"z"}`)
	c.expectCode("z", wire.CodeBadRequest, "limit")
}
