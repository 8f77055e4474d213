package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBrowserChannels: comet.js in headless Chromium, over WebSocket and
// SockJS, against a standalone whose config file makes `inbox` a personal
// namespace: alice reads inbox:alice (subscribe, history), bob is refused
// it; history pages newest first; subscribe with last rewinds then goes
// live.
func TestBrowserChannels(t *testing.T) {
	b := startBrowser(t)
	c := newCluster(t)
	const hmac = "e2e-browser-channels-secret-of-32-bytes"
	cfg := filepath.Join(c.dir, "standalone.yaml")
	if err := os.WriteFile(cfg, []byte("namespaces:\n  - {name: inbox, personal: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := c.startStandalone(filepath.Join(c.dir, "data"), true, "--token-hmac-secret", hmac, "--config", cfg)
	tokens := map[string]string{}
	for _, user := range []string{"alice", "bob"} {
		code, out, errOut := runComet(t, []string{"COMET_TOKEN_HMAC_SECRET=" + hmac}, "token", "--sub", user)
		if code != 0 {
			t.Fatalf("comet token: %d %s", code, errOut)
		}
		tokens[user] = strings.TrimSpace(out)
	}
	if code, _, errOut := runComet(t, []string{"COMET_SECRET="}, "pub", "--url", "ws://"+s.api+"/ws", "--string", "inbox:alice", "for alice"); code == 0 {
		t.Fatalf("an anonymous client published to alice's personal channel: %s", errOut)
	}
	for _, page := range []string{"ws", "sockjs"} {
		t.Run(page, func(t *testing.T) {
			b.t = t
			defer func() { b.t = c.t }()
			ticker := "ticker." + page
			for i := 1; i <= 30; i++ {
				if _, err := c.publishOnce(s.api, ticker, "", json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
					t.Fatal(err)
				}
			}
			b.open(page, "http://"+s.api+"/comet.js", page == "sockjs")
			var got struct {
				Alice   []int    `json:"alice"`
				History []int    `json:"history"`
				Refused []string `json:"refused"`
				Rewind  []int    `json:"rewind"`
			}
			b.eval(page, fmt.Sprintf(`(async () => {
				const { Comet } = await import('/comet.js');
				const alice = new Comet({ token: %q });
				const bob = new Comet({ token: %q });
				const out = { alice: [], history: [], refused: [], rewind: [] };
				window.t = { alice, bob, out };
				await alice.subscribe('inbox:alice', (m) => out.alice.push(m.offset), { from: 1 }).ready;
				const page = await alice.history(%q, { limit: 5, reverse: true });
				out.history = page.messages.map((m) => m.data.n);
				for (const what of ['subscribe', 'history']) {
					try {
						if (what === 'subscribe') await bob.subscribe('inbox:alice', () => {}).ready;
						else await bob.history('inbox:alice');
						out.refused.push(what + ': allowed');
					} catch (e) { out.refused.push(what + ': ' + e.code); }
				}
				await alice.subscribe(%q, (m) => out.rewind.push(m.data.n), { last: 3 }).ready;
				return out;
			})()`, tokens["alice"], tokens["bob"], ticker, ticker), &got)
			if fmt.Sprint(got.History) != "[30 29 28 27 26]" {
				t.Fatalf("history newest first: %v", got.History)
			}
			if fmt.Sprint(got.Refused) != "[subscribe: forbidden history: forbidden]" {
				t.Fatalf("bob on alice's personal channel: %v", got.Refused)
			}
			// A backend publishes to alice's inbox; the rewind goes live.
			code, out, errOut := runComet(t, nil, "pub", "--url", "ws://"+s.api+"/ws", ticker, `{"n":31}`)
			if code != 0 {
				t.Fatalf("comet pub: %s %s", out, errOut)
			}
			if _, err := c.publishOnce(s.api, "inbox:alice", "", json.RawMessage(`{"n":1}`)); err != nil {
				t.Fatalf("hub API publish to inbox:alice: %v", err)
			}
			raw := b.wait(page, 30*time.Second, "the live messages", "window.t.out.rewind.length >= 4 && window.t.out.alice.length >= 1 && window.t.out")
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.Rewind[:3]) != "[28 29 30]" || got.Rewind[len(got.Rewind)-1] < 31 || len(got.Alice) == 0 {
				t.Fatalf("rewind then live: %v; alice's inbox: %v", got.Rewind, got.Alice)
			}
			b.eval(page, "window.t.alice.close(), window.t.bob.close(), true", nil)
		})
	}
}
