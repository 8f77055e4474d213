package broker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/wire"
)

// adminCall sends one request with the given Authorization header (none
// when empty) and returns the status and body.
func adminCall(t *testing.T, c *cluster, method, api, path, auth, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+api+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// overview gets a hub's admin overview with auth, failing on anything but
// 200.
func overview(t *testing.T, c *cluster, api, auth string) wire.AdminOverview {
	t.Helper()
	status, raw := adminCall(t, c, "GET", api, "/v1/admin/overview", auth, "")
	var ov wire.AdminOverview
	if status != http.StatusOK || json.Unmarshal(raw, &ov) != nil {
		t.Fatalf("GET /v1/admin/overview on %s: %d %s", api, status, raw)
	}
	return ov
}

// TestAdminAuth: the admin page is open (it holds no data); the overview
// needs the secret or the admin token when either is set, and answers a
// missing or wrong one 401 with no data; the admin token opens nothing
// else, and the admin endpoints are read-only.
func TestAdminAuth(t *testing.T) {
	const secret, token = "s3cret-for-admin", "admin-t0ken"
	c := newCluster(t, func(cfg *broker.Config) { cfg.Secret, cfg.AdminToken = secret, token })
	h := c.start("h1", true)
	waitFor(t, 10*time.Second, "h1 to be ready", func() bool { return c.ready(h) })

	status, raw := adminCall(t, c, "GET", h.api, "/admin", "", "")
	if status != http.StatusOK || !strings.Contains(string(raw), "<title>Comet · admin</title>") {
		t.Fatalf("GET /admin without a token: %d %.200s; want the page", status, raw)
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Bearer " + secret[:5], "Basic " + token, token} {
		for _, path := range []string{"/v1/admin/overview", "/v1/admin/gateways", "/v1/admin/nope"} {
			status, raw := adminCall(t, c, "GET", h.api, path, auth, "")
			var e wire.Error
			if status != http.StatusUnauthorized || json.Unmarshal(raw, &e) != nil || e.Code != wire.CodeForbidden ||
				strings.Contains(string(raw), `"nodes"`) || strings.Contains(string(raw), token) {
				t.Fatalf("GET %s with Authorization %q: %d %s; want 401 and no data", path, auth, status, raw)
			}
		}
	}
	for _, auth := range []string{"Bearer " + secret, "Bearer " + token} {
		ov := overview(t, c, h.api, auth)
		if ov.Hub != "h1" || len(ov.Nodes) != 1 || ov.Leader != "h1" {
			t.Fatalf("overview with %q: %+v", auth, ov)
		}
		if status, raw := adminCall(t, c, "POST", h.api, "/v1/admin/overview", auth, "{}"); status != http.StatusMethodNotAllowed {
			t.Fatalf("POST /v1/admin/overview with %q: %d %s; want 405", auth, status, raw)
		}
	}
	// The admin token opens the admin view only.
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/publish", `{"channel":"adm/c","data":1}`},
		{"GET", "/v1/channels/adm/c/messages", ""},
		{"GET", "/v1/cluster", ""},
		{"GET", "/v1/stream", ""},
		{"GET", "/v1/bus", ""},
		{"POST", "/v1/cluster/remove", `{"id":"h1"}`},
		{"POST", "/v1/connections/g1-0a/send", `{"data":1}`},
	} {
		status, raw := adminCall(t, c, tc.method, h.api, tc.path, "Bearer "+token, tc.body)
		if status != http.StatusUnauthorized {
			t.Fatalf("%s %s with the admin token: %d %s; want 401", tc.method, tc.path, status, raw)
		}
	}
	if st, err := c.status(h.api); err != nil || st.Leader != "h1" {
		t.Fatalf("the cluster after the refusals: %+v %v", st, err)
	}
}

// TestAdminOpen: without a secret and an admin token the overview is
// open; with an admin token alone it needs it (and the rest of the API
// stays open, as without a secret).
func TestAdminOpen(t *testing.T) {
	c := newCluster(t)
	h := c.start("h1", true)
	waitFor(t, 10*time.Second, "h1 to be ready", func() bool { return c.ready(h) })
	overview(t, c, h.api, "")

	c2 := newCluster(t, func(cfg *broker.Config) { cfg.AdminToken = "only-admin" })
	h2 := c2.start("h1", true)
	waitFor(t, 10*time.Second, "h1 to be ready", func() bool { return c2.ready(h2) })
	if status, raw := adminCall(t, c2, "GET", h2.api, "/v1/admin/overview", "", ""); status != http.StatusUnauthorized {
		t.Fatalf("overview without the admin token: %d %s; want 401", status, raw)
	}
	overview(t, c2, h2.api, "Bearer only-admin")
	if status, raw := adminCall(t, c2, "GET", h2.api, "/v1/cluster", "", ""); status != http.StatusOK {
		t.Fatalf("GET /v1/cluster with no secret: %d %s; want 200", status, raw)
	}
}

// TestAdminOverview: on a three-hub cluster, every hub's overview lists
// the three hubs with consistent state, terms and indexes, the busiest
// channels with their offsets and the subscribers a gateway reports, the
// gateway attached to the leader (asked of the leader by followers), and
// the leader changes, which a leadership transfer adds to.
func TestAdminOverview(t *testing.T) {
	const secret, token = "s3cret-for-admin", "admin-t0ken"
	c := newCluster3(t, func(cfg *broker.Config) { cfg.Secret, cfg.AdminToken = secret, token })
	auth := "Bearer " + token

	// A gateway that reports 7 connections and 3 subscribers of adm/a.
	var deliveries atomic.Uint64
	stats := func() json.RawMessage {
		b, _ := json.Marshal(wire.GatewayStats{ID: "ignored", Time: time.Now().UTC(), Connections: 7,
			Transports: map[string]int{"websocket": 5, "sockjs": 2}, Subscriptions: 4, Channels: 2,
			Deliveries: deliveries.Add(100), Top: []wire.ChannelSubscribers{{Channel: "adm/a", Subscribers: 3}, {Channel: "adm/b", Subscribers: 1}}})
		return b
	}
	startBusGateway(t, c, bus.GatewayConfig{ID: "gw1", Dial: bus.HubDialer(apis(c.hubs...), secret, nil, nil),
		Stats: stats, StatsInterval: 50 * time.Millisecond})

	l := c.leader()
	for i := range 5 {
		if _, ok := c.publish(l.api, "adm/a", fmt.Sprint(i), fmt.Sprint("a-", i)); !ok {
			t.Fatal("publish to adm/a failed")
		}
	}
	for i := range 2 {
		if _, ok := c.publish(c.followers(l)[0].api, "adm/b", fmt.Sprint(i), fmt.Sprint("b-", i)); !ok {
			t.Fatal("publish to adm/b failed")
		}
	}

	check := func(h *hub, leader string, channels bool) error {
		ov := overview(t, c, h.api, auth)
		if ov.Hub != h.id || ov.Leader != leader || len(ov.Nodes) != 3 {
			return fmt.Errorf("%s: hub %q leader %q (want %s), %d nodes", h.id, ov.Hub, ov.Leader, leader, len(ov.Nodes))
		}
		var leaderCommit uint64
		for _, n := range ov.Nodes {
			if !n.Reachable || n.API == "" || n.Raft == "" || !n.Voter || n.Error != "" {
				return fmt.Errorf("%s: node %+v", h.id, n)
			}
			if n.Leader != (n.ID == leader) || (n.State == "leader") != n.Leader {
				return fmt.Errorf("%s: node %s: leader %v, state %s; the leader is %s", h.id, n.ID, n.Leader, n.State, leader)
			}
			if n.Term != ov.Term {
				return fmt.Errorf("%s: node %s in term %d, the answering hub in %d", h.id, n.ID, n.Term, ov.Term)
			}
			if n.AppliedIndex > n.CommitIndex || n.CommitIndex > n.LastIndex || n.AppliedIndex == 0 {
				return fmt.Errorf("%s: node %s indexes applied %d commit %d last %d", h.id, n.ID, n.AppliedIndex, n.CommitIndex, n.LastIndex)
			}
			if n.Leader {
				leaderCommit = n.CommitIndex
			}
		}
		for _, n := range ov.Nodes {
			want := uint64(0)
			if leaderCommit > n.AppliedIndex {
				want = leaderCommit - n.AppliedIndex
			}
			if n.Lag != want {
				return fmt.Errorf("%s: node %s lag %d, want leader's commit %d - applied %d", h.id, n.ID, n.Lag, leaderCommit, n.AppliedIndex)
			}
		}
		if len(ov.LeaderChanges) == 0 || ov.LeaderChanges[0].Leader != leader || ov.LeaderChanges[0].Term != ov.Term {
			return fmt.Errorf("%s: leader changes %+v; want the newest to be %s in term %d", h.id, ov.LeaderChanges, leader, ov.Term)
		}
		for i := 1; i < len(ov.LeaderChanges); i++ {
			if ov.LeaderChanges[i].Time.After(ov.LeaderChanges[i-1].Time) {
				return fmt.Errorf("%s: leader changes not newest first: %+v", h.id, ov.LeaderChanges)
			}
		}
		if len(ov.Gateways) != 1 || ov.GatewaysError != "" {
			return fmt.Errorf("%s: gateways %+v (%s)", h.id, ov.Gateways, ov.GatewaysError)
		}
		gw := ov.Gateways[0]
		if gw.ID != "gw1" || !gw.Reported || gw.Connections != 7 || gw.Transports["sockjs"] != 2 || gw.DeliveriesPerSecond <= 0 {
			return fmt.Errorf("%s: gateway %+v", h.id, gw)
		}
		if ov.Connections != 7 || ov.Deliveries < 200 || ov.DeliveriesPerSecond != gw.DeliveriesPerSecond {
			return fmt.Errorf("%s: connections %d, deliveries %d at %f/s", h.id, ov.Connections, ov.Deliveries, ov.DeliveriesPerSecond)
		}
		if ov.Publishes < 7 {
			return fmt.Errorf("%s: publishes %d, want at least 7", h.id, ov.Publishes)
		}
		if !channels {
			return nil
		}
		if len(ov.Channels) < 2 {
			return fmt.Errorf("%s: channels %+v", h.id, ov.Channels)
		}
		a, b := ov.Channels[0], ov.Channels[1]
		if a.Channel != "adm/a" || a.Recent != 5 || a.First != 1 || a.Last != 5 || a.Messages != 5 || a.Subscribers != 3 || a.Rate <= 0 {
			return fmt.Errorf("%s: busiest channel %+v; want adm/a, 5 recent, offsets 1-5, 3 subscribers", h.id, a)
		}
		if b.Channel != "adm/b" || b.Recent != 2 || b.Last != 2 || b.Messages != 2 || b.Subscribers != 1 {
			return fmt.Errorf("%s: second channel %+v; want adm/b", h.id, b)
		}
		if ov.ChannelWindow <= 0 {
			return fmt.Errorf("%s: channel window %v", h.id, ov.ChannelWindow)
		}
		return nil
	}
	for _, h := range c.hubs {
		eventually(t, 10*time.Second, func() error { return check(h, l.id, true) })
	}

	// A leadership transfer: every hub sees the new leader in its changes.
	before := overview(t, c, l.api, auth).Term
	if err := l.node.TransferLeadership(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	var nl *hub
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		for _, h := range c.alive() {
			if h.node.IsLeader() && h != l {
				nl = h
				return true
			}
		}
		return false
	})
	for _, h := range c.hubs {
		eventually(t, 15*time.Second, func() error {
			if err := check(h, nl.id, false); err != nil {
				return err
			}
			if ov := overview(t, c, h.api, auth); ov.Term <= before {
				return fmt.Errorf("%s: term %d after the transfer, %d before", h.id, ov.Term, before)
			}
			return nil
		})
	}
}
