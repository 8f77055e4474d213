package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "comet.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parseGateway parses gateway flags as `comet gateway` does.
func parseGateway(t *testing.T, args ...string) (*gatewayFlags, error) {
	t.Helper()
	var f gatewayFlags
	fs := newFlagSet("gateway", "test", io.Discard)
	f.register(fs, false)
	return &f, parseFlags(fs, args)
}

// TestConfigFile: a file's settings fill the flags; the environment and
// the command line win over it; channel rules come from it.
func TestConfigFile(t *testing.T) {
	p := writeConfig(t, `
listen: 127.0.0.1:9999
allowed-origins: [https://a.example.com, "https://*.example.org"]
idle-timeout: 90s
allow-anonymous: true
max-subscriptions: 7
channels:
  - {match: "public:*", subscribe: anyone, publish: users}
  - match: "user:{sub}:*"
    subscribe: users
`)
	t.Setenv("COMET_MAX_SUBSCRIPTIONS", "8")
	f, err := parseGateway(t, "--config", p, "--idle-timeout", "2m")
	if err != nil {
		t.Fatal(err)
	}
	if f.listen != "127.0.0.1:9999" || f.origins != "https://a.example.com,https://*.example.org" || !f.allowAnonymous {
		t.Fatalf("from the file: listen %q origins %q anonymous %v", f.listen, f.origins, f.allowAnonymous)
	}
	if f.idle != 2*time.Minute || f.maxSubscriptions != 8 {
		t.Fatalf("the command line and the environment must win: idle %v, max subscriptions %d", f.idle, f.maxSubscriptions)
	}
	want := []auth.Rule{{Match: "public:*", Subscribe: "anyone", Publish: "users"}, {Match: "user:{sub}:*", Subscribe: "users"}}
	if !reflect.DeepEqual(f.cfgFile.channels, want) {
		t.Fatalf("channels %+v, want %+v", f.cfgFile.channels, want)
	}

	// From the environment too.
	t.Setenv("COMET_CONFIG", p)
	t.Setenv("COMET_MAX_SUBSCRIPTIONS", "")
	os.Unsetenv("COMET_MAX_SUBSCRIPTIONS")
	if f, err := parseGateway(t); err != nil || f.listen != "127.0.0.1:9999" || f.maxSubscriptions != 7 {
		t.Fatalf("COMET_CONFIG: %+v, %v", f, err)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"unknown key", "listn: x\n", "line 1: listn: unknown setting"},
		{"bad value", "idle-timeout: soon\n", "idle-timeout"},
		{"not YAML", "listen: [\n", "not YAML"},
		{"map value", "listen: {a: 1}\n", "plain value"},
		{"bad rule who", "channels:\n  - {match: 'a:*', subscribe: everyone}\n", "everyone"},
		{"unknown rule field", "channels:\n  - {match: 'a:*', read: anyone}\n", "read"},
		{"bad pattern", "channels:\n  - {match: 'a b', subscribe: anyone}\n", "a b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseGateway(t, "--config", writeConfig(t, tc.text))
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error containing %q", err, tc.want)
			}
		})
	}
	if _, err := parseGateway(t, "--config", filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, errUsage) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestChannelRulesFlag(t *testing.T) {
	rules, err := parseRules("public:*=anyone/users, user:{sub}:*=users/none")
	want := []auth.Rule{{Match: "public:*", Subscribe: "anyone", Publish: "users"}, {Match: "user:{sub}:*", Subscribe: "users", Publish: "none"}}
	if err != nil || !reflect.DeepEqual(rules, want) {
		t.Fatalf("got %+v, %v", rules, err)
	}
	for _, bad := range []string{"public:*", "public:*=anyone", "=anyone/none", "a=anyone/all"} {
		if _, err := parseRules(bad); !errors.Is(err, errUsage) {
			t.Fatalf("%q: %v, want a usage error", bad, err)
		}
	}
}

// TestGatewayAuthFlags: a gateway that could let no client in refuses to
// start; keys and rules are checked at start.
func TestGatewayAuthFlags(t *testing.T) {
	cfg := func(args ...string) error {
		t.Helper()
		f, err := parseGateway(t, args...)
		if err != nil {
			return err
		}
		_, err = f.config(nil, discardLogger())
		return err
	}
	if err := cfg(); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--allow-anonymous") {
		t.Fatalf("no token key, no anonymous: %v", err)
	}
	if err := cfg("--allow-anonymous"); err != nil {
		t.Fatal(err)
	}
	if err := cfg("--token-hmac-secret", "short"); !errors.Is(err, errUsage) {
		t.Fatalf("short secret: %v", err)
	}
	if err := cfg("--token-hmac-secret", strings.Repeat("k", 32), "--channel-rules", "public:*=anyone/users"); err != nil {
		t.Fatal(err)
	}
	if err := cfg("--token-rsa-public-key", filepath.Join(t.TempDir(), "none.pem")); !errors.Is(err, errUsage) {
		t.Fatalf("missing key file: %v", err)
	}
	if err := cfg("--allow-anonymous", "--rpc-url", "ftp://x"); !errors.Is(err, errUsage) {
		t.Fatalf("bad rpc url: %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestTokenCommand(t *testing.T) {
	secret := strings.Repeat("s", 32)
	var out, errOut strings.Builder
	if err := runToken([]string{"--sub", "alice", "--token-hmac-secret", secret, "--ttl", "1h", "--publish", "user:{sub}:*"}, &out, &errOut); err != nil {
		t.Fatal(err, errOut.String())
	}
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(strings.TrimSpace(out.String()), time.Now())
	if err != nil || id.User != "alice" || !reflect.DeepEqual(id.Publish, []string{"user:{sub}:*"}) ||
		id.Expires.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("token verifies as %+v, %v", id, err)
	}
	for _, args := range [][]string{
		{"--token-hmac-secret", secret},
		{"--sub", "alice"},
		{"--sub", "alice", "--token-hmac-secret", "short"},
		{"--sub", "alice", "--token-hmac-secret", secret, "--subscribe", "bad pattern"},
	} {
		if err := runToken(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Fatalf("comet token %v: %v, want a usage error", args, err)
		}
	}
}

// TestLocalOnly: without a secret, the standalone's hub API answers local
// tools only: not other machines, not browsers; probes stay open.
func TestLocalOnly(t *testing.T) {
	h := localOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, tc := range []struct {
		remote, origin, path string
		want                 int
	}{
		{"127.0.0.1:5000", "", "/v1/publish", http.StatusTeapot},
		{"[::1]:5000", "", "/v1/bus", http.StatusTeapot},
		{"127.0.0.1:5000", "https://evil.example", "/v1/publish", http.StatusForbidden},
		{"192.0.2.7:5000", "", "/v1/publish", http.StatusForbidden},
		{"192.0.2.7:5000", "", "/v1/connections/s-1/send", http.StatusForbidden},
		{"192.0.2.7:5000", "", "/hub/readyz", http.StatusTeapot},
	} {
		r := httptest.NewRequest(http.MethodPost, tc.path, nil)
		r.RemoteAddr = tc.remote
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s from %s (origin %q): %d, want %d", tc.path, tc.remote, tc.origin, w.Code, tc.want)
		}
	}
}

func TestGatewayIDChecked(t *testing.T) {
	err := runGateway([]string{"--id", "edge 1", "--allow-anonymous", "--listen", "127.0.0.1:0"}, io.Discard)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--id") {
		t.Fatalf("a gateway id with a space: %v, want a usage error about --id", err)
	}
}

// TestConfigNamespaces: the standalone's (and a hub's) config takes
// namespaces, checked; a gateway's refuses the key.
func TestConfigNamespaces(t *testing.T) {
	p := writeConfig(t, `
namespaces:
  - {name: chat, max_messages: 1000, max_age: 1h, publish: subscribers}
  - name: inbox
    personal: true
    history: false
`)
	var f gatewayFlags
	fs := newFlagSet("standalone", "test", io.Discard)
	f.register(fs, true)
	if err := parseFlags(fs, []string{"--config", p}); err != nil {
		t.Fatal(err)
	}
	want := []wire.Namespace{{Name: "chat", MaxMessages: 1000, MaxAge: wire.Duration(time.Hour), Publish: wire.PublishSubscribers},
		{Name: "inbox", Personal: true, History: new(bool)}}
	if got := f.cfgFile.namespaces; !reflect.DeepEqual(got, want) {
		t.Fatalf("namespaces %+v, want %+v", got, want)
	}
	if _, err := parseGateway(t, "--config", p); err == nil || !strings.Contains(err.Error(), "unknown setting") {
		t.Fatalf("a gateway's config with namespaces: %v", err)
	}
	for _, bad := range []string{
		"namespaces:\n  - {name: a, publish: everyone}\n",
		"namespaces:\n  - {name: a, max_age: soon}\n",
		"namespaces:\n  - {name: a, colour: red}\n",
		"namespaces:\n  - {name: 'a:b'}\n",
	} {
		var f gatewayFlags
		fs := newFlagSet("standalone", "test", io.Discard)
		f.register(fs, true)
		if err := parseFlags(fs, []string{"--config", writeConfig(t, bad)}); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
	var empty gatewayFlags
	fs = newFlagSet("standalone", "test", io.Discard)
	empty.register(fs, true)
	if err := parseFlags(fs, []string{"--config", writeConfig(t, "namespaces: []\n")}); err != nil || empty.cfgFile.namespaces == nil {
		t.Fatalf("an empty list: %v, %v (it must say: none)", empty.cfgFile.namespaces, err)
	}
}
