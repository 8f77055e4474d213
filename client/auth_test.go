package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// jwt returns an unsigned JWT for sub, expiring at exp (none if zero).
func jwt(sub string, exp time.Time) string {
	claims := fmt.Sprintf(`{"sub":%q}`, sub)
	if !exp.IsZero() {
		claims = fmt.Sprintf(`{"sub":%q,"exp":%.3f}`, sub, float64(exp.UnixMilli())/1000)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte("sig"))
}

// checkJWT is a check for Gateway.SetAuth: it accepts what jwt made, until
// its exp, and refuses anything else as "invalid token".
func checkJWT(token string) (string, time.Time, error) {
	parts := strings.Split(token, ".")
	var claims struct{ Sub string }
	if len(parts) != 3 {
		return "", time.Time{}, errors.New("invalid token")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &claims) != nil || claims.Sub == "" {
		return "", time.Time{}, errors.New("invalid token")
	}
	exp := tokenExpiry(token)
	if !exp.IsZero() && !time.Now().Before(exp) {
		return "", time.Time{}, errors.New("token expired")
	}
	return claims.Sub, exp, nil
}

// tokens is a Config.Token that counts its calls and returns what next
// says.
type tokens struct {
	calls atomic.Int32
	next  func(call int) (string, error)
}

func (tk *tokens) token(ctx context.Context) (string, error) {
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return tk.next(int(tk.calls.Add(1)))
}

// errStates records OnState's errors of Disconnected.
type errStates struct {
	mu   sync.Mutex
	errs []error
	then func(error) // called with each, on the reading goroutine
}

func (s *errStates) on(st State, err error) {
	if st != Disconnected {
		return
	}
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
	if s.then != nil {
		s.then(err)
	}
}

func (s *errStates) all() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

func connectFrames(frames []wire.ClientFrame) []wire.ClientFrame {
	var out []wire.ClientFrame
	for _, f := range frames {
		if f.Op == wire.OpConnect {
			out = append(out, f)
		}
	}
	return out
}

func TestTokenExpiry(t *testing.T) {
	exp := time.Unix(1732540000, 250_000_000)
	for _, tc := range []struct {
		token string
		want  time.Time
	}{
		{jwt("a", exp), exp},
		{jwt("a", time.Time{}), time.Time{}},
		{"", time.Time{}},
		{"opaque-token", time.Time{}},
		{"a.!!!.c", time.Time{}},
		{"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + ".c", time.Time{}},
		{"a." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1732540000}`)) + ".c", time.Unix(1732540000, 0)},
	} {
		if got := tokenExpiry(tc.token); !got.Equal(tc.want) {
			t.Errorf("tokenExpiry(%q) = %v, want %v", tc.token, got, tc.want)
		}
	}
	now := time.Now()
	if got := refreshTime(now, now.Add(10*time.Second), time.Millisecond); !got.Equal(now.Add(8 * time.Second)) {
		t.Errorf("refresh at %v, want 80%% of the lifetime", got.Sub(now))
	}
	for _, exp := range []time.Time{{}, now.Add(-time.Second), now.Add(100 * time.Millisecond)} {
		if got := refreshTime(now, exp, 100*time.Millisecond); !got.IsZero() {
			t.Errorf("refreshTime for exp in %v: %v, want never", exp.Sub(now), got.Sub(now))
		}
	}
}

// A client with a token sends it in a connect frame, first, and sends
// nothing else before "connected"; the user is known; direct messages
// reach OnMessage.
func TestTokenConnect(t *testing.T) {
	g := newGateway(t)
	g.SetAuth(checkJWT, false)
	tk := &tokens{next: func(int) (string, error) { return jwt("alice", time.Now().Add(time.Hour)), nil }}
	direct := make(chan json.RawMessage, 1)
	c := newClient(t, Config{URLs: []string{g.URL()}, Token: tk.token, OnMessage: func(d json.RawMessage) { direct <- d }})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctxT(t), "chat", 1); err != nil {
		t.Fatal(err)
	}
	frames := g.Frames()
	if frames[0].Op != wire.OpConnect || frames[0].Token == "" || len(connectFrames(frames)) != 1 {
		t.Fatalf("frames %+v, want one connect first", frames)
	}
	if u := c.User(); u != "alice" {
		t.Fatalf("User() = %q", u)
	}
	if n := g.Direct(json.RawMessage(`{"to":"alice"}`)); n != 1 {
		t.Fatalf("direct message sent to %d connections", n)
	}
	select {
	case d := <-direct:
		if string(d) != `{"to":"alice"}` {
			t.Fatalf("direct message %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no direct message")
	}
	waitFor(t, 5*time.Second, "the published message", func() bool { return r.len() == 1 })
	if tk.calls.Load() != 1 {
		t.Fatalf("Token called %d times", tk.calls.Load())
	}
	// Without a token the client is anonymous, and a direct message without
	// OnMessage is dropped.
	g2 := newGateway(t)
	c2 := newClient(t, Config{URLs: []string{g2.URL()}})
	if _, err := c2.Publish(ctxT(t), "chat", 1); err != nil {
		t.Fatal(err)
	}
	g2.Direct(json.RawMessage(`1`))
	if _, err := c2.Request(ctxT(t), "echo", 1); err != nil {
		t.Fatal(err)
	}
	if u := c2.User(); u != "" || len(connectFrames(g2.Frames())) != 0 {
		t.Fatalf("anonymous: user %q, frames %+v", u, g2.Frames())
	}
}

// A refused token: the error (ErrAuth, the gateway's message) is told
// through OnState, and the client gets a new token before each reconnect,
// to the same gateway.
func TestTokenRefused(t *testing.T) {
	g, other := newGateway(t), newGateway(t)
	g.SetAuth(checkJWT, false)
	tk := &tokens{next: func(call int) (string, error) {
		if call <= 2 {
			return "bad.token.x", nil
		}
		return jwt("bob", time.Time{}), nil
	}}
	var es errStates
	c := newClient(t, Config{URLs: []string{g.URL(), other.URL()}, Token: tk.token, OnState: es.on, rand: (&lockedRand{}).rand})
	if _, err := c.Publish(ctxT(t), "chat", 1); err != nil {
		t.Fatal(err)
	}
	if tk.calls.Load() != 3 || g.Attempts() != 3 || other.Attempts() != 0 {
		t.Fatalf("Token called %d times, %d and %d dials", tk.calls.Load(), g.Attempts(), other.Attempts())
	}
	errs := es.all()
	if len(errs) != 2 {
		t.Fatalf("errors %v", errs)
	}
	for _, err := range errs {
		var e *Error
		if !errors.Is(err, ErrAuth) || !errors.As(err, &e) || e.Code != CodeForbidden || e.Message != "invalid token" {
			t.Fatalf("error %v, want ErrAuth and forbidden: invalid token", err)
		}
	}
	if c.User() != "bob" {
		t.Fatalf("User() = %q", c.User())
	}
}

// An error from Token is told through OnState and retried after the
// backoff, without dialing.
func TestTokenError(t *testing.T) {
	g := newGateway(t)
	g.SetAuth(checkJWT, false)
	boom := errors.New("auth server down")
	tk := &tokens{next: func(call int) (string, error) {
		if call <= 3 {
			return "", boom
		}
		return jwt("carol", time.Time{}), nil
	}}
	var es errStates
	r := &lockedRand{pick: func(n int64) int64 { return n - 1 }}
	c := newClient(t, Config{URLs: []string{g.URL()}, Token: tk.token, OnState: es.on, rand: r.rand})
	if _, err := c.Publish(ctxT(t), "chat", 1); err != nil {
		t.Fatal(err)
	}
	errs := es.all()
	if len(errs) != 3 || g.Attempts() != 1 {
		t.Fatalf("errors %v, %d dials", errs, g.Attempts())
	}
	for _, err := range errs {
		if !errors.Is(err, boom) {
			t.Fatalf("error %v, want Token's", err)
		}
	}
	// The backoff grew: 1ms, 2ms, 4ms (the longest delays).
	const ms = int64(time.Millisecond)
	if calls := r.calls(); !slices.Equal(calls[1:4], []int64{1*ms + 1, 2*ms + 1, 4*ms + 1}) {
		t.Fatalf("rand asked %v", calls)
	}
}

// A token is refreshed on the live connection before it expires: the
// gateway never closes it.
func TestTokenRefresh(t *testing.T) {
	g := newGateway(t)
	g.SetAuth(checkJWT, false)
	// Refreshed at 80% of its life: the 20% left must cover a refresh on
	// a loaded machine (400ms failed there: the token expired first).
	const life = 2 * time.Second
	var bad atomic.Bool
	tk := &tokens{next: func(int) (string, error) {
		if bad.Load() {
			return "bad.token.x", nil
		}
		return jwt("dave", time.Now().Add(life)), nil
	}}
	es := errStates{then: func(error) { bad.Store(false) }}
	c := newClient(t, Config{URLs: []string{g.URL()}, Token: tk.token, OnState: es.on})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two refreshes", func() bool { return len(connectFrames(g.Frames())) >= 3 })
	appendN(g, "chat", 1)
	waitFor(t, 5*time.Second, "a message", func() bool { return r.len() == 1 })
	if g.Accepted() != 1 || c.State() != Connected || c.User() != "dave" {
		t.Fatalf("%d connections, state %v, user %q", g.Accepted(), c.State(), c.User())
	}
	ids := map[string]bool{}
	for _, f := range connectFrames(g.Frames()) {
		ids[f.ID] = true
	}
	if len(ids) != len(connectFrames(g.Frames())) || ids[""] {
		t.Fatalf("connect frames %+v: each needs its own id", connectFrames(g.Frames()))
	}
	// A refused refresh ends the connection; the error says why.
	bad.Store(true)
	waitFor(t, 20*time.Second, "a reconnect", func() bool { return g.Accepted() == 2 && c.State() == Connected })
	var e *Error
	if errs := es.all(); len(errs) != 1 || !errors.Is(errs[0], ErrAuth) || !errors.As(errs[0], &e) || e.Message != "invalid token" {
		t.Fatalf("errors %v, want ErrAuth, invalid token", errs)
	}
}

// A gateway that lets anonymous clients in says "connected" at once, before
// it reads the connect frame: the client waits for the answer to its
// token before it calls itself connected, and a refused token never looks
// connected.
func TestTokenAnonymousGateway(t *testing.T) {
	g := newGateway(t)
	g.SetAuth(checkJWT, true)
	tk := &tokens{next: func(call int) (string, error) {
		if call == 1 {
			return "bad.token.x", nil
		}
		return jwt("frank", time.Time{}), nil
	}}
	var st states
	var es errStates
	c := newClient(t, Config{URLs: []string{g.URL()}, Token: tk.token, OnState: func(s State, err error) { st.on(s, err); es.on(s, err) }})
	if _, err := c.Publish(ctxT(t), "chat", 1); err != nil {
		t.Fatal(err)
	}
	if got := st.all(); !slices.Equal(got, []State{Connecting, Disconnected, Connecting, Connected}) {
		t.Fatalf("states %v", got)
	}
	if errs := es.all(); !errors.Is(errs[0], ErrAuth) {
		t.Fatalf("error %v", errs[0])
	}
	if c.User() != "frank" || !slices.Equal(g.Users(), []string{"frank"}) {
		t.Fatalf("user %q, gateway's %q", c.User(), g.Users())
	}
	// An anonymous client on the same gateway.
	c2 := newClient(t, Config{URLs: []string{g.URL()}})
	if _, err := c2.Request(ctxT(t), "echo", 1); err != nil {
		t.Fatal(err)
	}
	if c2.User() != "" {
		t.Fatalf("anonymous user %q", c2.User())
	}
}

// A token that expires (the refresh failed) ends the connection with
// 4006; the client gets a new token and resumes.
func TestTokenExpires(t *testing.T) {
	g := newGateway(t)
	g.SetAuth(checkJWT, false)
	var failing atomic.Bool
	boom := errors.New("auth server down")
	tk := &tokens{next: func(call int) (string, error) {
		if call == 1 {
			failing.Store(true)
			// Long enough for several refreshes to be tried before it
			// expires, on a loaded machine too (300ms was not).
			return jwt("erin", time.Now().Add(2*time.Second)), nil
		}
		if failing.Load() {
			return "", boom
		}
		return jwt("erin", time.Time{}), nil
	}}
	es := errStates{then: func(err error) {
		if errors.Is(err, ErrAuth) {
			failing.Store(false)
		}
	}}
	c := newClient(t, Config{URLs: []string{g.URL()}, Token: tk.token, OnState: es.on})
	var r recorder
	if _, err := c.Subscribe(ctxT(t), "chat", r.handle); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a reconnect", func() bool { return g.Accepted() == 2 && g.Subscribers("chat") == 1 })
	appendN(g, "chat", 1)
	waitFor(t, 5*time.Second, "a message", func() bool { return r.len() == 1 })
	errs := es.all()
	var e *Error
	if len(errs) != 1 || !errors.Is(errs[0], ErrAuth) || !errors.As(errs[0], &e) || e.Message != "token expired" {
		t.Fatalf("errors %v, want one ErrAuth, token expired", errs)
	}
	// The refresh was tried more than once, and the reconnect got a new
	// token.
	if n := tk.calls.Load(); n < 4 {
		t.Fatalf("Token called %d times", n)
	}
	if len(connectFrames(g.Frames())) != 2 {
		t.Fatalf("connect frames %+v", connectFrames(g.Frames()))
	}
}
