package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/comethq/comet/wire"
)

func adminGet(t *testing.T, method, url, auth string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// TestAdminStats: a gateway's stats count its connections by transport,
// subscriptions, channels, the channels with the most subscribers, and
// the publishes and deliveries; its GET /v1/admin/overview adds them to
// the hubs' overview, behind its tokens; the page at /admin is open.
func TestAdminStats(t *testing.T) {
	h := startHub(t)
	g := startGateway(t, httpHubs(t, h.api), Config{
		AdminTokens: []string{"", "tok"},
		Overview: func(ctx context.Context) (wire.AdminOverview, error) {
			return h.Service.Overview(ctx), nil
		},
	})
	a, b := dial(t, g.url), dial(t, g.url)
	for _, sub := range []struct {
		c  *wsClient
		ch string
	}{{a, "adm:x"}, {a, "adm:y"}, {b, "adm:x"}} {
		sub.c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: sub.ch, From: u64p(1)})
		sub.c.expect(wire.OpSubscribed)
	}
	a.send(wire.ClientFrame{Op: wire.OpPublish, ID: "p1", Channel: "adm:x", Data: json.RawMessage(`1`)})
	h.publish(t, "adm:x", `2`)
	h.publish(t, "adm:x", `3`)
	b.messages("adm:x", 1, 3)
	waitFor(t, "3 messages delivered to 2 subscribers", func() bool {
		st := g.Stats()
		return st.Deliveries >= 6 && st.Publishes == 1
	})
	st := g.Stats()
	if st.Connections != 2 || st.Transports["websocket"] != 2 || st.Subscriptions != 3 || st.Channels != 2 {
		t.Fatalf("stats %+v; want 2 websocket connections, 3 subscriptions, 2 channels", st)
	}
	want := []wire.ChannelSubscribers{{Channel: "adm:x", Subscribers: 2}, {Channel: "adm:y", Subscribers: 1}}
	if len(st.Top) != 2 || st.Top[0] != want[0] || st.Top[1] != want[1] {
		t.Fatalf("top channels %+v, want %+v", st.Top, want)
	}

	status, raw := adminGet(t, "GET", g.url+"/admin", "")
	if status != http.StatusOK || !strings.Contains(string(raw), "Comet · admin") {
		t.Fatalf("GET /admin: %d %.100s", status, raw)
	}
	for _, auth := range []string{"", "Bearer ", "Bearer tok2", "tok"} {
		status, raw := adminGet(t, "GET", g.url+"/v1/admin/overview", auth)
		if status != http.StatusUnauthorized || strings.Contains(string(raw), "adm:x") {
			t.Fatalf("overview with %q: %d %s; want 401 and no data", auth, status, raw)
		}
	}
	if status, raw := adminGet(t, "POST", g.url+"/v1/admin/overview", "Bearer tok"); status != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d %s; want 405", status, raw)
	}
	status, raw = adminGet(t, "GET", g.url+"/v1/admin/overview", "Bearer tok")
	var ov wire.AdminOverview
	if status != http.StatusOK || json.Unmarshal(raw, &ov) != nil {
		t.Fatalf("overview: %d %s", status, raw)
	}
	if ov.Hub != "h1" || ov.Leader != "h1" || len(ov.Nodes) != 1 || ov.HubsError != "" || ov.Gateway == nil ||
		ov.Gateway.ID != g.cfg.ID || ov.Gateway.Connections != 2 {
		t.Fatalf("overview %s", raw)
	}
	if len(ov.Channels) == 0 || ov.Channels[0].Channel != "adm:x" || ov.Channels[0].Last != 3 {
		t.Fatalf("busiest channels %+v", ov.Channels)
	}

	// The deliveries counter is a metric too.
	_, raw = adminGet(t, "GET", g.url+"/metrics", "")
	if !strings.Contains(string(raw), "comet_gateway_deliveries_total ") {
		t.Fatal("no comet_gateway_deliveries_total in /metrics")
	}
}

// TestAdminOverviewWithoutHubs: a gateway whose hubs do not answer says so
// and still gives its own stats; without tokens the view is open, and with
// AdminLocalOnly open to loopback clients only.
func TestAdminOverviewWithoutHubs(t *testing.T) {
	h := startHub(t)
	g := startGateway(t, httpHubs(t, h.api), Config{
		Overview: func(context.Context) (wire.AdminOverview, error) {
			return wire.AdminOverview{}, errors.New("no hub answers")
		},
	})
	ov := g.Overview(context.Background())
	if ov.HubsError != "no hub answers" || ov.Gateway == nil || ov.Nodes == nil {
		t.Fatalf("overview %+v", ov)
	}
	if status, raw := adminGet(t, "GET", g.url+"/v1/admin/overview", ""); status != http.StatusOK {
		t.Fatalf("open overview: %d %s", status, raw)
	}

	local := startGateway(t, httpHubs(t, h.api), Config{AdminLocalOnly: true})
	if status, raw := adminGet(t, "GET", local.url+"/v1/admin/overview", ""); status != http.StatusOK {
		t.Fatalf("local-only overview from loopback: %d %s", status, raw)
	}
	req := httptest.NewRequest("GET", "/v1/admin/overview", nil)
	req.RemoteAddr = "192.0.2.7:4321"
	rec := httptest.NewRecorder()
	local.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), `"gateway"`) {
		t.Fatalf("local-only overview from elsewhere: %d %s", rec.Code, rec.Body)
	}
}
