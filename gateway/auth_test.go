package gateway

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-gateway-tests")

// token signs an HS256 token with claims over sub (and exp, when ttl is
// not 0: negative ttl is already expired).
func token(t testing.TB, key any, sub string, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	claims := map[string]any{"sub": sub}
	if ttl != 0 {
		claims["exp"] = time.Now().Add(ttl).Unix()
	}
	for k, v := range extra {
		claims[k] = v
	}
	method := "HS256"
	if _, ok := key.(*rsa.PrivateKey); ok {
		method = "RS256"
	}
	tok, err := auth.Sign(method, key, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// authGateway is a gateway with HS256 tokens and the rules of the docs'
// example: public:* readable by anyone and writable by users, user:{sub}:*
// readable by its user only, and written by workers only.
func authGateway(t testing.TB, anonymous bool) *testGateway {
	t.Helper()
	hub := startHub(t)
	v, err := auth.NewVerifier(auth.Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.NewPolicy([]auth.Rule{
		{Match: "public:*", Subscribe: "anyone", Publish: "users"},
		{Match: "user:{sub}:*", Subscribe: "users", Publish: "none"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return startGateway(t, httpHubs(t, hub.api), Config{Tokens: v, Policy: p, AllowAnonymous: anonymous, AuthTimeout: 2 * time.Second})
}

// dialRaw opens a WebSocket with the URL query q and reads nothing.
func dialRaw(t testing.TB, gatewayURL string, q url.Values) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(gatewayURL, "http") + "/ws"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	c, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &wsClient{t: t, c: c}
}

// expectRefused reads an error frame forbidden with message msg, then the
// close 4006.
func (w *wsClient) expectRefused(msg string) {
	w.t.Helper()
	f := w.next()
	if f.Op != wire.OpError || f.Code != wire.CodeForbidden || f.Message != msg {
		w.t.Fatalf("got %+v, want error forbidden %q", f, msg)
	}
	w.expectClose(wire.CloseAuth)
}

func (w *wsClient) expectClose(code int) {
	w.t.Helper()
	f, err := w.tryNext(10 * time.Second)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		w.t.Fatalf("got %+v, %v; want close %d", f, err, code)
	}
}

// TestAuthMatrix: every kind of token, given in the URL or a connect
// frame, on gateways with and without anonymous access.
func TestAuthMatrix(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []struct {
		name, token, refusal string // refusal "": accepted as alice
	}{
		{"good", token(t, testSecret, "alice", time.Hour, nil), ""},
		{"no exp", token(t, testSecret, "alice", 0, nil), ""},
		{"expired", token(t, testSecret, "alice", -time.Minute, nil), "token expired"},
		{"wrong key", token(t, []byte("another-secret-another-secret-another"), "alice", time.Hour, nil), "invalid token"},
		{"RS256, no RSA key configured", token(t, rsaKey, "alice", time.Hour, nil), "invalid token"},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.", "invalid token"},
		{"not yet valid", token(t, testSecret, "alice", time.Hour, map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}), "invalid token"},
		{"no sub", token(t, testSecret, "", time.Hour, nil), "invalid token"},
		{"garbage", "not.a.token", "invalid token"},
	}
	for _, anonymous := range []bool{false, true} {
		g := authGateway(t, anonymous)
		for _, tc := range tokens {
			for _, how := range []string{"url", "frame"} {
				name := tc.name + "/" + how
				if anonymous {
					name += "/anonymous allowed"
				}
				t.Run(name, func(t *testing.T) {
					var c *wsClient
					if how == "url" {
						c = dialRaw(t, g.url, url.Values{"token": {tc.token}})
					} else {
						c = dialRaw(t, g.url, nil)
						if anonymous {
							if f := c.expect(wire.OpConnected); f.User != "" {
								t.Fatalf("anonymous connected %+v", f)
							}
						}
						c.send(wire.ClientFrame{Op: wire.OpConnect, Token: tc.token, ID: "c1"})
					}
					if tc.refusal != "" {
						c.expectRefused(tc.refusal)
						return
					}
					f := c.expect(wire.OpConnected)
					if f.User != "alice" || f.Connection == "" {
						t.Fatalf("connected %+v, want user alice", f)
					}
					if how == "frame" && f.ID != "c1" {
						t.Fatalf("connected %+v, want id c1 echoed", f)
					}
					c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "user:alice:inbox", ID: "s1"})
					if f := c.expect(wire.OpSubscribed); f.ID != "s1" {
						t.Fatalf("subscribe: %+v", f)
					}
				})
			}
		}
	}
}

// TestAuthRules: what anonymous and authenticated connections may do under
// the rules, and what token claims add.
func TestAuthRules(t *testing.T) {
	g := authGateway(t, true)
	anon := dialRaw(t, g.url, nil)
	anon.expect(wire.OpConnected)
	alice := dialRaw(t, g.url, url.Values{"token": {token(t, testSecret, "alice", time.Hour, nil)}})
	alice.expect(wire.OpConnected)
	// A token that grants publishing to its own channels.
	writer := dialRaw(t, g.url, url.Values{"token": {token(t, testSecret, "alice", time.Hour,
		map[string]any{"publish": []string{"user:{sub}:*"}})}})
	writer.expect(wire.OpConnected)

	ok := func(c *wsClient, f wire.ClientFrame, op string) {
		t.Helper()
		c.send(f)
		if got := c.expect(op); got.ID != f.ID {
			t.Fatalf("%+v: got %+v", f, got)
		}
	}
	refused := func(c *wsClient, f wire.ClientFrame) {
		t.Helper()
		c.send(f)
		got := c.expect(wire.OpError)
		if got.Code != wire.CodeForbidden || got.ID != f.ID || !strings.Contains(got.Message, f.Channel) {
			t.Fatalf("%+v: got %+v, want forbidden", f, got)
		}
	}
	sub := func(ch string) wire.ClientFrame {
		return wire.ClientFrame{Op: wire.OpSubscribe, Channel: ch, ID: "s-" + ch}
	}
	pub := func(ch string) wire.ClientFrame {
		return wire.ClientFrame{Op: wire.OpPublish, Channel: ch, Data: []byte(`1`), ID: "p-" + ch}
	}

	ok(anon, sub("public:news"), wire.OpSubscribed)
	refused(anon, pub("public:news"))
	refused(anon, sub("user:alice:inbox"))
	refused(anon, sub("other"))

	ok(alice, sub("public:news"), wire.OpSubscribed)
	ok(alice, pub("public:chat"), wire.OpAck)
	ok(alice, sub("user:alice:inbox"), wire.OpSubscribed)
	refused(alice, sub("user:bob:inbox"))
	refused(alice, pub("user:alice:inbox"))
	refused(alice, sub("other"))

	ok(writer, pub("user:alice:inbox"), wire.OpAck)
	refused(writer, pub("user:bob:inbox"))

	// Refusals cost nothing else: the connections still serve.
	for _, c := range []*wsClient{anon, alice, writer} {
		c.send(wire.ClientFrame{Op: wire.OpPing, ID: "ping"})
		f := c.next()
		for f.Op == wire.OpMessage { // alice gets what writer published
			f = c.next()
		}
		if f.Op != wire.OpPong {
			t.Fatalf("ping: got %+v", f)
		}
	}
}

// TestTokenRequired: without anonymous access, a connection must
// authenticate first, and in time.
func TestTokenRequired(t *testing.T) {
	g := authGateway(t, false)
	c := dialRaw(t, g.url, nil)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "public:news", ID: "s1"})
	f := c.next()
	if f.Op != wire.OpError || f.Code != wire.CodeForbidden || f.ID != "s1" || f.Message != msgTokenRequired {
		t.Fatalf("got %+v, want forbidden token required", f)
	}
	c.expectClose(wire.CloseAuth)

	// Silence: cut off after AuthTimeout (2s here).
	silent := dialRaw(t, g.url, nil)
	silent.expectRefused(msgTokenRequired)
}

// TestTokenExpiry: a connection whose token expires is cut off with
// "token expired", unless the client sent a fresh token in time; a fresh
// token cannot change the user.
func TestTokenExpiry(t *testing.T) {
	g := authGateway(t, false)
	short := func(sub string) (string, time.Time) {
		// exp counts whole seconds: this token lives 3 to 4 s.
		exp := time.Now().Add(4 * time.Second).Truncate(time.Second)
		tok, err := auth.Sign("HS256", testSecret, map[string]any{"sub": sub, "exp": exp.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok, exp
	}
	tok, _ := short("alice")
	c := dialRaw(t, g.url, url.Values{"token": {tok}})
	c.expect(wire.OpConnected)
	c.expectRefused("token expired")

	tok, exp := short("alice")
	r := dialRaw(t, g.url, url.Values{"token": {tok}})
	r.expect(wire.OpConnected)
	r.send(wire.ClientFrame{Op: wire.OpConnect, ID: "bob", Token: token(t, testSecret, "bob", time.Hour, nil)})
	if f := r.expect(wire.OpError); f.ID != "bob" || f.Code != wire.CodeForbidden || f.Message != msgOtherUser {
		t.Fatalf("changing user: %+v", f)
	}
	r.send(wire.ClientFrame{Op: wire.OpConnect, ID: "fresh", Token: token(t, testSecret, "alice", time.Hour, nil)})
	if f := r.expect(wire.OpConnected); f.ID != "fresh" || f.User != "alice" {
		t.Fatalf("refresh: %+v", f)
	}
	// Past the first token's expiry, the connection still serves.
	for time.Now().Before(exp.Add(500 * time.Millisecond)) {
		r.send(wire.ClientFrame{Op: wire.OpPing, ID: "p"})
		r.expect(wire.OpPong)
		time.Sleep(100 * time.Millisecond)
	}
}
