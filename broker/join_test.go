package broker_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// A join with a huge id once reached bbolt's key limit inside the FSM and
// crashed every hub; bad joins must be refused up front, and an address a
// member already has must not evict that member.
func TestJoinRefusesBadRequests(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	followers := c.followers(l)
	taken := followers[0].node.Addr()
	cases := map[string]wire.JoinRequest{
		"huge id":          {ID: strings.Repeat("h", 33000), Raft: "127.0.0.1:1", API: "127.0.0.1:2"},
		"id with a space":  {ID: "h 9", Raft: "127.0.0.1:1", API: "127.0.0.1:2"},
		"raft not an addr": {ID: "h9", Raft: "nowhere", API: "127.0.0.1:2"},
		"api missing":      {ID: "h9", Raft: "127.0.0.1:1"},
		"address taken":    {ID: "h9", Raft: taken, API: "127.0.0.1:2"},
	}
	for name, req := range cases {
		for _, h := range []*hub{l, followers[1]} {
			raw, _ := json.Marshal(req)
			status, body := c.do(http.MethodPost, h.api, "/v1/cluster/join", raw)
			if status != http.StatusBadRequest {
				t.Errorf("%s via %s: status %d (%s), want 400", name, h.id, status, body)
			}
		}
	}
	st, err := c.status(l.api)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("after refused joins the cluster has %d members, want 3: %+v", len(st.Nodes), st.Nodes)
	}
	if _, ok := c.publish(l.api, "after", `1`, "after-1"); !ok {
		t.Fatal("publishing failed after the refused joins")
	}
}

// Removing the leader through its own API answers 200 (the removal happens
// even though the leader steps down as it commits), and the other two go on.
func TestRemoveLeaderItself(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	raw, _ := json.Marshal(wire.RemoveRequest{ID: l.id})
	if status, body := c.do(http.MethodPost, l.api, "/v1/cluster/remove", raw); status != http.StatusOK {
		t.Fatalf("remove the leader via itself: %d %s, want 200", status, body)
	}
	rest := c.followers(l)
	waitFor(t, 10*time.Second, "the others to have a leader of two", func() bool {
		st, err := c.status(rest[0].api)
		return err == nil && st.Leader != "" && st.Leader != l.id && len(st.Nodes) == 2
	})
	if _, ok := c.publishRetry(apis(rest...), "after-remove", `1`, "ar-1"); !ok {
		t.Fatal("publishing failed after the leader removed itself")
	}
}

// A join with the id of a running member at another Raft address used to
// re-address that member: it then heard from no one and stayed a candidate
// for good. It is refused with 409 and a message that says how to replace a
// member on purpose; the same id at the same address is a success that
// changes nothing. Removing the member and then joining replaces it.
func TestJoinRefusesMemberAtAnotherAddress(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	followers := c.followers(l)
	victim := followers[0]
	for _, via := range []*hub{l, followers[1]} {
		for _, id := range []string{victim.id, l.id} {
			raw, _ := json.Marshal(wire.JoinRequest{ID: id, Raft: "127.0.0.1:1", API: "127.0.0.1:2"})
			status, body := c.do(http.MethodPost, via.api, "/v1/cluster/join", raw)
			var e wire.Error
			if err := json.Unmarshal(body, &e); err != nil || status != http.StatusConflict || e.Code != wire.CodeBadRequest {
				t.Fatalf("join %s at a new address via %s: %d %s, want 409 bad_request", id, via.id, status, body)
			}
			for _, want := range []string{"already a member", "/v1/cluster/remove", "then join"} {
				if !strings.Contains(e.Message, want) {
					t.Errorf("refusal %q does not say %q", e.Message, want)
				}
			}
		}
		// The same id at the same address: nothing to do, success.
		c.join(via.api, victim)
	}
	checkMembers := func(want map[string]string) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			st, err := c.status(l.api)
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, nd := range st.Nodes {
				got[nd.ID] = nd.Raft
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("members %v, want %v", got, want)
			}
			return nil
		})
	}
	members := map[string]string{}
	for _, h := range c.alive() {
		members[h.id] = h.node.Addr()
	}
	checkMembers(members)
	c.waitRegistered(3)
	if _, ok := c.publish(l.api, "after", `1`, "after-1"); !ok {
		t.Fatal("publishing failed after the refused joins")
	}

	// Replacing on purpose: stop it, remove it, start a new hub with the
	// same id (a new Raft address), join.
	victim.stop()
	raw, _ := json.Marshal(wire.RemoveRequest{ID: victim.id})
	eventually(t, 20*time.Second, func() error {
		if status, body := c.do(http.MethodPost, l.api, "/v1/cluster/remove", raw); status != http.StatusOK {
			return fmt.Errorf("remove %s: %d %s", victim.id, status, body)
		}
		return nil
	})
	repl := c.start(victim.id, false)
	c.join(l.api, repl)
	members[victim.id] = repl.node.Addr()
	checkMembers(members)
	c.waitRegistered(3)
	if _, ok := c.publish(repl.api, "after", `2`, "after-2"); !ok {
		t.Fatal("publishing through the replacement failed")
	}
}

// Hubs listed by host name (--peers h1=localhost:P1,...) advertise the
// resolved address (127.0.0.1:P1), and the cluster's configuration keeps the
// names. A follower registers its API address by joining with the address
// the configuration has for it, so the refusal of an id at another address
// does not hit it; a hub joined by name registers too.
func TestHostNames(t *testing.T) {
	c := newCluster(t)
	// With 1 s Raft timeouts leadership stays put: a follower that failed
	// to register would not be rescued by leading for a while (a leader
	// registers itself).
	c.production = true
	var ports []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		ports = append(ports, port)
	}
	name := func(i int) string { return net.JoinHostPort("localhost", ports[i]) }
	peers := []raft.Peer{{ID: "h1", Addr: name(0)}, {ID: "h2", Addr: name(1)}}
	c.startAt("h1", name(0), peers)
	c.startAt("h2", name(1), peers)
	c.waitRegistered(2)

	h3 := c.startAt("h3", name(2), nil)
	raw, _ := json.Marshal(wire.JoinRequest{ID: h3.id, Raft: name(2), API: h3.api})
	eventually(t, 20*time.Second, func() error {
		if status, body := c.do(http.MethodPost, c.leader().api, "/v1/cluster/join", raw); status != http.StatusOK {
			return fmt.Errorf("join h3 as %s: %d %s", name(2), status, body)
		}
		return nil
	})
	c.waitRegistered(3)
	for _, h := range c.alive() {
		st, err := c.status(h.api)
		if err != nil {
			t.Fatal(err)
		}
		for i, nd := range st.Nodes {
			if want := name(i); nd.ID != fmt.Sprintf("h%d", i+1) || nd.Raft != want {
				t.Errorf("%s lists %+v, want h%d at %s", h.id, nd, i+1, want)
			}
		}
	}
	if _, ok := c.publishRetry(apis(c.alive()...), "names", `1`, "names-1"); !ok {
		t.Fatal("publishing failed")
	}
}

// TestJoinUpdateNeverAdds: the join a hub sends to register its addresses
// (update) records them for a member and never adds a hub that is not
// one: a hub removed while its registration was on its way (it sees its
// addresses cleared before it sees the removal) is not added back.
func TestJoinUpdateNeverAdds(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]
	for _, via := range []*hub{l, f} {
		raw, _ := json.Marshal(wire.JoinRequest{ID: "h9", Raft: "127.0.0.1:1", API: "127.0.0.1:2", Update: true})
		status, body := c.do(http.MethodPost, via.api, "/v1/cluster/join", raw)
		var e wire.Error
		if err := json.Unmarshal(body, &e); err != nil || status != http.StatusNotFound || !strings.Contains(e.Message, "not a member") {
			t.Fatalf("update of a hub that is not a member, via %s: %d %s; want 404 not a member", via.id, status, body)
		}
	}
	st, err := c.status(l.api)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("members after the refused updates: %+v, want the 3", st.Nodes)
	}
	// A member's update records its API address, as a join would.
	raw, _ := json.Marshal(wire.JoinRequest{ID: f.id, Raft: f.node.Addr(), API: f.api, Update: true})
	if status, body := c.do(http.MethodPost, l.api, "/v1/cluster/join", raw); status != http.StatusOK {
		t.Fatalf("update of member %s: %d %s", f.id, status, body)
	}
}
