package broker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/wire"
)

// TestSecret: with a secret, every hub API call but the probes and metrics
// needs it; hubs send it to each other (joining, forwarding to the leader)
// and prove it on Raft connections, so a cluster with a secret works as one
// without.
func TestSecret(t *testing.T) {
	const secret = "s3cret-for-tests"
	c := newCluster3(t, func(cfg *broker.Config) { cfg.Secret = secret })
	l := c.leader()
	f := c.followers(l)[0]

	call := func(method, api, path, auth, body string) (int, []byte) {
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
	publish := `{"channel":"secret/c","data":1,"id":"secret-1"}`
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/publish", publish},
		{"GET", "/v1/channels/secret/c/messages", ""},
		{"GET", "/v1/cluster", ""},
		{"GET", "/v1/stream", ""},
		{"POST", "/v1/cluster/join", `{"id":"h9","raft":"127.0.0.1:1","api":"127.0.0.1:2"}`},
		{"POST", "/v1/cluster/remove", `{"id":"h2"}`},
		{"GET", "/v1/bus", ""},
		{"POST", "/v1/connections/g1-0a1b/send", `{"data":1}`},
		{"GET", "/v1/no-such-endpoint", ""},
	} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + secret + "x", "Basic " + secret, secret} {
			status, raw := call(tc.method, l.api, tc.path, auth, tc.body)
			var e wire.Error
			if status != http.StatusUnauthorized || json.Unmarshal(raw, &e) != nil || e.Code != wire.CodeForbidden ||
				strings.Contains(string(raw), secret) {
				t.Fatalf("%s %s with Authorization %q: %d %s; want 401 forbidden, and no secret in the answer", tc.method, tc.path, auth, status, raw)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, raw := call("GET", f.api, path, "", ""); status != http.StatusOK {
			t.Fatalf("GET %s without the secret: %d %s; want 200 (probes stay open)", path, status, raw)
		}
	}
	// With it: a publish through a follower is forwarded to the leader,
	// which needs the secret too.
	// (Retried with its id on 503, as a client would: a loaded machine
	// may have a leader step down meanwhile.)
	status, raw := call("POST", f.api, "/v1/publish", "Bearer "+secret, publish)
	for deadline := time.Now().Add(20 * time.Second); status == http.StatusServiceUnavailable && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		status, raw = call("POST", f.api, "/v1/publish", "Bearer "+secret, publish)
	}
	var res wire.PublishResponse
	if status != http.StatusOK || json.Unmarshal(raw, &res) != nil || res.Offset != 1 {
		t.Fatalf("publish through a follower with the secret: %d %s", status, raw)
	}
	eventually(t, 10*time.Second, func() error {
		all, err := c.readAll(f.api, "secret/c")
		if err == nil && len(all.Messages) != 1 {
			err = fmt.Errorf("follower holds %d messages, want 1", len(all.Messages))
		}
		return err
	})
}
