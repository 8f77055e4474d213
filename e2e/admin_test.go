package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
)

// adminScreenshots is where TestBrowserAdmin writes its screenshots:
// $COMET_SCREENSHOTS, or comet-admin-screenshots in the temporary
// directory.
func adminScreenshots(t *testing.T) string {
	dir := os.Getenv("COMET_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "comet-admin-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// adminView is what the admin page shows, read from its DOM and from the
// last overview it got (window.cometAdmin).
type adminView struct {
	Leader      string   `json:"leader"`
	ShownLeader string   `json:"shownLeader"`
	Rows        []string `json:"rows"` // the hubs table, a line per hub
	Reachable   int      `json:"reachable"`
	Gateways    []string `json:"gateways"`
	GwCount     string   `json:"gwCount"`
	Connections int      `json:"connections"`
	Channels    []struct {
		Channel     string  `json:"channel"`
		Rate        float64 `json:"rate"`
		Messages    uint64  `json:"messages"`
		Last        uint64  `json:"last"`
		Subscribers int     `json:"subscribers"`
	} `json:"channels"`
	ChannelRows []string `json:"channelRows"`
	Changes     []struct {
		Leader string `json:"leader"`
		Term   uint64 `json:"term"`
	} `json:"changes"`
	ChangeRows int     `json:"changeRows"`
	PubPoints  int     `json:"pubPoints"`
	PubRate    float64 `json:"pubRate"`
	DelRate    float64 `json:"delRate"`
	Self       string  `json:"self"`
	HubsError  string  `json:"hubsError"`
}

const adminViewJS = `(() => {
	const o = cometAdmin.overview;
	if (!o) return null;
	const rows = (sel) => [...document.querySelectorAll(sel + ' tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent).join(' | '));
	return {
		leader: o.leader,
		shownLeader: document.getElementById('leader').textContent,
		rows: rows('#nodes'),
		reachable: o.nodes.filter((n) => n.reachable).length,
		gateways: o.gateways.filter((g) => g.reported).map((g) => g.id),
		gwCount: document.getElementById('gw-count').textContent,
		connections: o.connections,
		channels: o.channels,
		channelRows: rows('#channels'),
		changes: o.leader_changes,
		changeRows: document.querySelectorAll('#changes li').length,
		pubPoints: cometAdmin.pub.length,
		pubRate: cometAdmin.pub.length ? cometAdmin.pub[cometAdmin.pub.length - 1].v : 0,
		delRate: cometAdmin.del.length ? cometAdmin.del[cometAdmin.del.length - 1].v : 0,
		self: o.gateway ? o.gateway.id : '',
		hubsError: o.hubs_error || '',
	};
})()`

func (b *browser) adminView(page string) adminView {
	b.t.Helper()
	var v adminView
	b.eval(page, adminViewJS, &v)
	return v
}

// adminWait waits until a JavaScript expression is truthy in page. The
// page's Content-Security-Policy forbids eval, which the driver's wait
// needs; eval (through the DevTools protocol) is not subject to it, so
// this polls with eval, every 200ms for at most d.
func adminWait(b *browser, page string, d time.Duration, what, expr string) {
	b.t.Helper()
	start := time.Now()
	for {
		var ok bool
		b.eval(page, "!!("+expr+")", &ok)
		if ok {
			if el := time.Since(start); el > d/2 {
				b.t.Logf("page %s: waited %v for %s", page, el.Round(time.Millisecond), what)
			}
			return
		}
		if time.Since(start) > d {
			b.t.Fatalf("page %s: %s did not come within %v", page, what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// adminLogin enters token in page's form and waits until the view shows.
func adminLogin(b *browser, page, token string) {
	b.t.Helper()
	adminWait(b, page, 20*time.Second, "the token form", `!document.getElementById('login').hidden`)
	b.do(10*time.Second, map[string]any{"op": "fill", "page": page, "selector": "#token", "text": token})
	b.do(10*time.Second, map[string]any{"op": "click", "page": page, "selector": "#token-form button"})
}

// adminNoErrors fails the test if page logged a console error other than
// the 401 answers the test asked for, or threw.
func adminNoErrors(b *browser, page string) {
	b.t.Helper()
	var errs []string
	if err := json.Unmarshal(b.do(10*time.Second, map[string]any{"op": "errors", "page": page}), &errs); err != nil {
		b.t.Fatal(err)
	}
	for _, e := range errs {
		if !strings.Contains(e, "status of 401") {
			b.t.Errorf("page %s: console error: %s", page, e)
		}
	}
}

// TestBrowserAdmin: the admin page of a gateway of a real three-hub
// cluster (with a secret and an admin token), under a steady load of
// publishes and with subscribers: it asks for a token, refuses a wrong
// one, and with the admin token shows the three hubs and the leader, the
// gateway and its connections, the busiest channels with their
// subscribers, publish and delivery rates, and a leader change when the
// leader stops. A hub's own page takes the secret. Screenshots at desktop
// and phone sizes go to $COMET_SCREENSHOTS (default
// $TMPDIR/comet-admin-screenshots).
func TestBrowserAdmin(t *testing.T) {
	b := startBrowser(t)
	const adminToken = "e2e-admin-token"
	c := newCluster(t)
	c.extraEnv = []string{"COMET_ADMIN_TOKEN=" + adminToken}
	c.startHubs(3, func(attempt int, id string) string {
		return filepath.Join(c.dir, fmt.Sprintf("try%d", attempt), id)
	})
	c.waitLeader(nil, 30*time.Second)
	c.waitReady(c.runningHubs(), 30*time.Second)
	g := c.startGateway("gw1")
	ws := "ws://" + g.api + "/ws"

	ctx, cancel := context.WithCancel(context.Background())
	var load sync.WaitGroup
	t.Cleanup(func() { cancel(); load.Wait() })
	newClient := func() *client.Client {
		cl, err := client.New(client.Config{URLs: []string{ws}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	// Three subscribers of adm:busy, one of them of adm:quiet too.
	for i := range 3 {
		cl := newClient()
		chans := []string{"adm:busy"}
		if i == 0 {
			chans = append(chans, "adm:quiet")
		}
		for _, ch := range chans {
			if _, err := cl.Subscribe(ctx, ch, func(client.Message) {}); err != nil {
				t.Fatalf("subscribe %s: %v", ch, err)
			}
		}
	}
	// A publisher: adm:busy 20 times a second, adm:quiet twice, until the
	// test ends; failures during the leader change are retried by the
	// client or skipped.
	pub := newClient()
	load.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = pub.Publish(pctx, "adm:busy", map[string]int{"n": n})
			if n%10 == 0 {
				_, _ = pub.Publish(pctx, "adm:quiet", map[string]int{"n": n})
			}
			pcancel()
		}
	})

	// The gateway's page asks for a token and refuses a wrong one.
	url := "http://" + g.api + "/admin"
	b.do(60*time.Second, map[string]any{"op": "open", "page": "desk", "url": url, "width": 1280, "height": 800})
	adminLogin(b, "desk", "not-the-token")
	adminWait(b, "desk", 20*time.Second, "the refusal", `document.getElementById('login-msg').textContent.includes('refused') && !document.getElementById('login').hidden`)
	adminLogin(b, "desk", adminToken)

	settled := `(() => {
		const o = cometAdmin.overview;
		if (!o || document.getElementById('view').hidden) return false;
		const busy = o.channels.find((c) => c.channel === 'adm:busy');
		const quiet = o.channels.find((c) => c.channel === 'adm:quiet');
		return o.nodes.length === 3 && o.nodes.every((n) => n.reachable) && o.leader !== '' &&
			o.gateways.length === 1 && o.gateways[0].reported && o.gateways[0].connections === 4 &&
			busy && busy.subscribers === 3 && busy.messages > 0 && quiet && quiet.subscribers === 1 &&
			o.leader_changes.length > 0 && o.leader_changes[0].leader === o.leader &&
			cometAdmin.pub.length >= 5 && cometAdmin.pub[cometAdmin.pub.length - 1].v > 0 &&
			cometAdmin.del[cometAdmin.del.length - 1].v > 0;
	})()`
	adminWait(b, "desk", 60*time.Second, "the cluster's real values", settled)
	leader := c.waitLeader(nil, 30*time.Second)
	v := b.adminView("desk")
	checkAdminView(t, "gateway page", v, leader.id, "gw1")

	// A phone-sized page of the same gateway.
	b.do(60*time.Second, map[string]any{"op": "open", "page": "phone", "url": url, "width": 390, "height": 844})
	adminLogin(b, "phone", adminToken)
	adminWait(b, "phone", 60*time.Second, "the cluster's real values", settled)

	// The leader stops (it hands leadership over) and comes back: the page
	// shows the new leader, and the change.
	c.stop(leader, 30*time.Second)
	next := c.waitLeader(leader, 30*time.Second)
	c.restart(leader)
	c.waitReady(c.runningHubs(), 30*time.Second)
	adminWait(b, "desk", 60*time.Second, "the new leader", fmt.Sprintf(`(() => {
		const o = cometAdmin.overview;
		return o.leader === %q && o.nodes.every((n) => n.reachable) && o.leader_changes.some((c) => c.leader === %q) &&
			document.getElementById('leader').textContent === %q;
	})()`, next.id, next.id, next.id))
	adminWait(b, "desk", 60*time.Second, "the cluster's real values after the change", settled)
	v = b.adminView("desk")
	checkAdminView(t, "gateway page after the leader change", v, next.id, "gw1")

	adminWait(b, "phone", 60*time.Second, "the cluster's real values after the change", settled)

	// A hub's page, opened with the cluster secret.
	b.do(60*time.Second, map[string]any{"op": "open", "page": "hub", "url": "http://" + next.api + "/admin", "width": 1280, "height": 800})
	adminLogin(b, "hub", c.secret)
	adminWait(b, "hub", 60*time.Second, "the hub's view", fmt.Sprintf(`(() => {
		const o = cometAdmin.overview;
		return o && o.hub === %q && o.nodes.length === 3 && o.gateways.length === 1 && !o.gateway &&
			document.getElementById('self').hidden;
	})()`, next.id))

	// Let the charts fill a little, then take the screenshots.
	adminWait(b, "desk", 60*time.Second, "ten seconds of chart", `cometAdmin.pub.length >= 10`)
	dir := adminScreenshots(t)
	for _, s := range []struct {
		page, name string
		w, h       int
	}{{"desk", "admin-desktop.png", 1280, 800}, {"phone", "admin-phone.png", 390, 844}, {"hub", "admin-hub-desktop.png", 1280, 800}} {
		path := filepath.Join(dir, s.name)
		b.do(60*time.Second, map[string]any{"op": "screenshot", "page": s.page, "path": path, "width": s.w, "height": s.h})
		t.Logf("screenshot of the admin page (%s, %dx%d): %s", s.page, s.w, s.h, path)
		fmt.Printf("admin screenshot: %s\n", path)
	}
	for _, p := range []string{"desk", "phone", "hub"} {
		adminNoErrors(b, p)
	}
}

// checkAdminView checks what the page of gateway gw shows, with leader
// leading.
func checkAdminView(t *testing.T, what string, v adminView, leader, gw string) {
	t.Helper()
	if v.Leader != leader || v.ShownLeader != leader {
		t.Errorf("%s: leader %q, shown %q; the cluster's is %s", what, v.Leader, v.ShownLeader, leader)
	}
	if len(v.Rows) != 3 || v.Reachable != 3 {
		t.Errorf("%s: hubs table %q, %d reachable; want 3", what, v.Rows, v.Reachable)
	}
	for _, r := range v.Rows {
		if strings.HasPrefix(r, leader+" ★") != strings.Contains(r, "| leader |") {
			t.Errorf("%s: hub row %q: the leader is %s", what, r, leader)
		}
	}
	if len(v.Gateways) != 1 || v.Gateways[0] != gw || v.GwCount != "1" || v.Connections != 4 || v.Self != gw {
		t.Errorf("%s: gateways %q (shown %q), %d connections, self %q; want %s with 4", what, v.Gateways, v.GwCount, v.Connections, v.Self, gw)
	}
	if len(v.Channels) < 2 || v.Channels[0].Channel != "adm:busy" || v.Channels[0].Subscribers != 3 ||
		v.Channels[0].Messages == 0 || v.Channels[0].Last < v.Channels[0].Messages || v.Channels[0].Rate <= 0 {
		t.Errorf("%s: busiest channels %+v; want adm:busy first, with 3 subscribers", what, v.Channels)
	}
	if len(v.ChannelRows) != len(v.Channels) || len(v.ChannelRows) == 0 || !strings.HasPrefix(v.ChannelRows[0], "adm:busy | ") {
		t.Errorf("%s: channels table %q", what, v.ChannelRows)
	}
	if len(v.Changes) == 0 || v.Changes[0].Leader != leader || v.ChangeRows != len(v.Changes) {
		t.Errorf("%s: leader changes %+v (%d shown); want %s newest", what, v.Changes, v.ChangeRows, leader)
	}
	if v.PubRate <= 0 || v.DelRate <= 0 || v.HubsError != "" {
		t.Errorf("%s: publishes %.1f/s, deliveries %.1f/s, hubs error %q", what, v.PubRate, v.DelRate, v.HubsError)
	}
	t.Logf("%s: leader %s, %d publishes/s, %d deliveries/s, channels %q", what, leader, int(v.PubRate), int(v.DelRate), v.ChannelRows)
}

// TestStandaloneAdmin: `comet standalone` serves the admin view on its one
// port: without a secret or an admin token open to this machine, with
// --admin-token only to those who send it; the overview holds the hub and
// the standalone's own gateway.
func TestStandaloneAdmin(t *testing.T) {
	c := newCluster(t)
	c.secret = ""
	get := func(addr, path, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	check := func(addr, token string) {
		t.Helper()
		if status, raw := get(addr, "/admin", ""); status != http.StatusOK || !strings.Contains(string(raw), "Comet · admin") {
			t.Fatalf("GET /admin: %d %.100s", status, raw)
		}
		waitFor(t, 20*time.Second, "the standalone's overview", func() bool {
			status, raw := get(addr, "/v1/admin/overview", token)
			var ov wire.AdminOverview
			return status == http.StatusOK && json.Unmarshal(raw, &ov) == nil && ov.Hub == "standalone" &&
				ov.Leader == "standalone" && len(ov.Nodes) == 1 && ov.Gateway != nil && ov.Gateway.ID == "s" &&
				len(ov.Gateways) == 1 && ov.Gateways[0].ID == "s" && ov.Gateways[0].Reported
		})
	}
	s := c.startStandalone(filepath.Join(c.dir, "open"), true)
	check(s.api, "")
	c.kill(s)

	// With a secret and an admin token: either opens the admin view, and
	// the admin token nothing else of the hub API.
	c.secret = "standalone-secret"
	c.extraEnv = []string{"COMET_ADMIN_TOKEN=standalone-admin"}
	s = c.startStandalone(filepath.Join(c.dir, "token"), true)
	for _, token := range []string{"", "wrong", "standalone-admin2"} {
		if status, raw := get(s.api, "/v1/admin/overview", token); status != http.StatusUnauthorized || strings.Contains(string(raw), "nodes") {
			t.Fatalf("overview with token %q: %d %s; want 401", token, status, raw)
		}
	}
	check(s.api, "standalone-admin")
	check(s.api, "standalone-secret")
	for _, path := range []string{"/v1/cluster", "/v1/channels/x/messages"} {
		if status, raw := get(s.api, path, "standalone-admin"); status != http.StatusUnauthorized {
			t.Fatalf("GET %s with the admin token: %d %s; want 401", path, status, raw)
		}
	}
}
