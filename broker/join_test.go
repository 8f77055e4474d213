package broker_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

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
