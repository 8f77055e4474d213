package broker_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/wire"
)

func getNamespaces(t *testing.T, c *cluster, api string) wire.Namespaces {
	t.Helper()
	status, body := c.do(http.MethodGet, api, "/v1/namespaces", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/namespaces on %s: %d %s", api, status, body)
	}
	var ns wire.Namespaces
	if err := json.Unmarshal(body, &ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestNamespaces sets namespaces through a follower, reads them back from
// every hub, and checks that their retention and message size apply on
// every hub; bad configurations are refused.
func TestNamespaces(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]
	if ns := getNamespaces(t, c, f.api); ns.Version != 0 || ns.Namespaces == nil || len(ns.Namespaces) != 0 {
		t.Fatalf("before any: %+v", ns)
	}
	put := `{"namespaces":[{"name":"chat","max_messages":5,"max_message_bytes":20,"publish":"subscribers"},
		{"name":"inbox","personal":true,"history":false}]}`
	status, body := c.do(http.MethodPut, f.api, "/v1/namespaces", []byte(put))
	if status != http.StatusOK {
		t.Fatalf("PUT through a follower: %d %s", status, body)
	}
	var got wire.Namespaces
	if err := json.Unmarshal(body, &got); err != nil || got.Version != 1 || len(got.Namespaces) != 2 {
		t.Fatalf("PUT answered %s (%v)", body, err)
	}
	for _, h := range c.hubs {
		waitFor(t, 10*time.Second, "the namespaces on "+h.id, func() bool {
			ns := getNamespaces(t, c, h.api)
			return ns.Version == 1 && len(ns.Namespaces) == 2 && ns.Namespaces[1].Personal && !ns.Namespaces[1].HistoryOn()
		})
	}
	// Retention: the newest 5 of chat:room; other channels keep theirs.
	for i := 1; i <= 8; i++ {
		if _, ok := c.publish(l.api, "chat:room", fmt.Sprintf("%d", i), fmt.Sprintf("room-%d", i)); !ok {
			t.FailNow()
		}
		if _, ok := c.publish(l.api, "other", fmt.Sprintf("%d", i), fmt.Sprintf("other-%d", i)); !ok {
			t.FailNow()
		}
	}
	for _, h := range c.hubs {
		waitFor(t, 10*time.Second, "retention on "+h.id, func() bool {
			res, _, _ := c.messages(h.api, "chat:room", 1, 100)
			other, _, _ := c.messages(h.api, "other", 1, 100)
			return res.First == 4 && res.Next == 9 && other.First == 1 && other.Next == 9
		})
	}
	// Message size: over the namespace's 20 bytes is too large, on every hub.
	for _, h := range c.hubs {
		r := c.tryPublish(h.api, "chat:room", `"`+strings.Repeat("x", 30)+`"`, "")
		if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.raw), "namespace chat") {
			t.Fatalf("%s: over the namespace's size: %d %s", h.id, r.status, string(r.raw))
		}
	}
	if r := c.tryPublish(l.api, "other", `"`+strings.Repeat("x", 30)+`"`, ""); r.status != http.StatusOK {
		t.Fatalf("outside the namespace: %d %s", r.status, string(r.raw))
	}
	// A change takes a new version; an empty list clears them.
	status, body = c.do(http.MethodPost, l.api, "/v1/namespaces", []byte(`{"namespaces":[]}`))
	if status != http.StatusOK || !strings.Contains(string(body), `"version":2`) {
		t.Fatalf("clearing: %d %s", status, body)
	}
	for _, bad := range []string{
		`{"namespaces":[{"name":"a:b"}]}`,
		`{"namespaces":[{"name":""}]}`,
		`{"namespaces":[{"name":"x"},{"name":"x"}]}`,
		`{"namespaces":[{"name":"x","publish":"everyone"}]}`,
		`{"namespaces":[{"name":"x","max_age":"soon"}]}`,
		`{"namespaces":[{"name":"x","max_message_bytes":-1}]}`,
	} {
		if status, body := c.do(http.MethodPut, f.api, "/v1/namespaces", []byte(bad)); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", bad, status, body)
		}
	}
	if ns := getNamespaces(t, c, l.api); ns.Version != 2 {
		t.Fatalf("refused changes moved the version: %+v", ns)
	}
}

// TestNamespacesFromConfig: a leader given namespaces in its config makes
// them the cluster's, and refuses changes through the API.
func TestNamespacesFromConfig(t *testing.T) {
	want := []wire.Namespace{{Name: "ticker", MaxAge: wire.Duration(time.Hour)}}
	c, h := startOne(t, func(cfg *broker.Config) { cfg.Namespaces = want })
	waitFor(t, 10*time.Second, "the configured namespaces", func() bool {
		ns := getNamespaces(t, c, h.api)
		return ns.Version == 1 && len(ns.Namespaces) == 1 && ns.Namespaces[0].Name == "ticker"
	})
	status, body := c.do(http.MethodPut, h.api, "/v1/namespaces", []byte(`{"namespaces":[]}`))
	if status != http.StatusBadRequest || !strings.Contains(string(body), "config files") {
		t.Fatalf("PUT over a configured leader: %d %s", status, body)
	}
}
