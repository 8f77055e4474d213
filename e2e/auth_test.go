package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuthEndToEnd: a standalone configured by a file to require tokens,
// with channel rules; tokens from `comet token`; `comet pub` and `comet sub`
// with and without them; the hub API behind the secret.
func TestAuthEndToEnd(t *testing.T) {
	c := newCluster(t)
	const hmac = "e2e-token-secret-of-at-least-32-bytes"
	cfg := filepath.Join(c.dir, "comet.yaml")
	if err := os.WriteFile(cfg, []byte(`
allow-anonymous: false
token-hmac-secret: `+hmac+`
channels:
  - {match: "public:*", subscribe: anyone, publish: users}
  - {match: "user:{sub}:*", subscribe: users, publish: none}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The config file says anonymous: false; COMET_ALLOW_ANONYMOUS=true
	// (the harness's) wins over it, so the command line says it again.
	s := c.startStandalone(filepath.Join(c.dir, "data"), true, "--config", cfg, "--allow-anonymous=false")
	url := "ws://" + s.api + "/ws"
	env := []string{"COMET_TOKEN_HMAC_SECRET=" + hmac}

	code, out, errOut := runComet(t, env, "token", "--sub", "alice", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("comet token: exit %d: %s", code, errOut)
	}
	alice := strings.TrimSpace(out)
	_, out, _ = runComet(t, []string{"COMET_TOKEN_HMAC_SECRET=" + strings.Repeat("x", 40)}, "token", "--sub", "alice")
	forged := strings.TrimSpace(out)

	for _, tc := range []struct {
		name    string
		args    []string
		ok      bool
		contain string
	}{
		{"with a token", []string{"--token", alice, "public:news", "hello"}, true, `{"channel":"public:news","offset":1}`},
		{"without a token", []string{"public:news", "hello"}, false, "token required"},
		{"a forged token", []string{"--token", forged, "public:news", "hello"}, false, "invalid token"},
		{"a channel the rules close", []string{"--token", alice, "user:alice:inbox", "x"}, false, "forbidden"},
	} {
		// Without a token, the client waits for connected and the gateway
		// for a connect frame: the gateway gives up after 5s.
		args := append([]string{"pub", "--url", url, "--timeout", "25s"}, tc.args...)
		code, out, errOut := runComet(t, nil, args...)
		if (code == 0) != tc.ok || !strings.Contains(out+errOut, tc.contain) {
			t.Errorf("comet pub %s: exit %d, stdout %q, stderr %q; want success %v and %q", tc.name, code, out, errOut, tc.ok, tc.contain)
		}
	}

	code, out, errOut = runComet(t, nil, "sub", "--url", url, "--token", alice, "--from", "1", "--count", "1", "public:news")
	if code != 0 || !strings.Contains(out, `"data":"hello"`) {
		t.Fatalf("comet sub with a token: exit %d, %q, %q", code, out, errOut)
	}

	// The hub API under /v1/ needs the secret (the harness gives
	// COMET_SECRET to the process; c.do sends it).
	req, err := http.NewRequest("GET", "http://"+s.api+"/v1/cluster", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/cluster without the secret: %d, want 401", resp.StatusCode)
	}
	if code, _, err := c.get(s.api, "/v1/cluster"); err != nil || code != 200 {
		t.Fatalf("GET /v1/cluster with the secret: %d, %v", code, err)
	}
}
