package hubapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

func TestRetryable(t *testing.T) {
	unavailable := &APIError{Status: 503, Body: wire.Error{Code: wire.CodeUnavailable}}
	bad := &APIError{Status: 400, Body: wire.Error{Code: wire.CodeBadRequest}}
	dial := &net.OpError{Op: "dial", Err: errors.New("refused")}
	read := &net.OpError{Op: "read", Err: errors.New("reset")}
	for _, tc := range []struct {
		err        error
		idempotent bool
		want       bool
	}{
		{unavailable, true, true}, {unavailable, false, false},
		{bad, true, false},
		{dial, false, true}, {fmt.Errorf("post: %w", dial), false, true},
		{read, false, false}, {read, true, true},
		{context.DeadlineExceeded, true, false}, {context.Canceled, true, false},
		{fmt.Errorf("x: %w", ErrStalled), true, true}, {ErrStalled, false, false},
	} {
		if got := Retryable(tc.err, tc.idempotent); got != tc.want {
			t.Errorf("Retryable(%v, %v) = %v, want %v", tc.err, tc.idempotent, got, tc.want)
		}
	}
	var we *wire.Error
	if !errors.As(fmt.Errorf("x: %w", unavailable), &we) || we.Code != wire.CodeUnavailable {
		t.Fatalf("an APIError unwraps to its body: %v", we)
	}
}

// TestStream: the secret goes along; lines come in order; a hub that goes
// silent is given up after the idle time, but a reader that is slow between
// lines is not taken for a silent hub.
func TestStream(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3" {
			http.Error(w, `{"code":"forbidden","message":"no secret"}`, http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "{\"index\":7,\"channel\":\"c\",\"offset\":1,\"data\":1}\n{\"applied\":7}\n")
		w.(http.Flusher).Flush()
		select { // then silence
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	addr := strings.TrimPrefix(srv.URL, "http://")
	h, err := NewHubs([]string{addr}, 5*time.Second, 4)
	if err != nil {
		t.Fatal(err)
	}
	h.idle = 300 * time.Millisecond
	var api *APIError
	if _, err := h.Stream(context.Background(), 1); !errors.As(err, &api) || api.Status != 401 {
		t.Fatalf("without the secret: %v", err)
	}
	h.SetSecret("s3")
	s, err := h.Stream(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if l, err := s.Next(); err != nil || l.Index != 7 || l.Channel != "c" {
		t.Fatalf("first line %+v, %v", l, err)
	}
	time.Sleep(2 * h.idle) // a slow reader: the hub is not blamed for it
	if l, err := s.Next(); err != nil || l.Applied != 7 {
		t.Fatalf("second line %+v, %v", l, err)
	}
	start := time.Now()
	if _, err := s.Next(); !errors.Is(err, ErrStreamIdle) {
		t.Fatalf("silent hub: %v, want ErrStreamIdle", err)
	}
	if waited := time.Since(start); waited < h.idle {
		t.Fatalf("gave up after %v, before the idle time %v", waited, h.idle)
	}
}

func TestNewHubsValidates(t *testing.T) {
	for _, addrs := range [][]string{nil, {"no-port"}} {
		if _, err := NewHubs(addrs, time.Second, 1); err == nil {
			t.Errorf("NewHubs(%q): no error", addrs)
		}
	}
}

// fakeHub is a hub API whose publishes and status checks hang (a paused
// hub) or answer.
type fakeHub struct {
	srv       *httptest.Server
	publishes atomic.Int64
}

// newFakeHub: publishHangs makes /v1/publish wait for the request's end;
// status is the answer to /v1/cluster?local=1, "" to hang there too.
func newFakeHub(t *testing.T, publishHangs bool, status string) *fakeHub {
	f := &fakeHub{}
	release := make(chan struct{})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hang := func() {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
		switch r.URL.Path {
		case "/v1/publish":
			f.publishes.Add(1)
			if publishHangs {
				hang()
				return
			}
			fmt.Fprint(w, `{"channel":"c","offset":1,"epoch":"e"}`)
		case "/v1/cluster":
			if status == "" {
				hang()
				return
			}
			fmt.Fprint(w, status)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(release) }) // first: the handlers return
	return f
}

func (f *fakeHub) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// TestPublishLeavesStalledHub: a publish with an id that waits on a hub
// that stops answering status checks (paused), or that knows no leader (cut
// off), moves on to the next hub; later publishes try that hub last. One
// without an id is not sent again: it fails with ErrStalled, or waits.
func TestPublishLeavesStalledHub(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status string
	}{
		{"paused", ""},
		{"no leader", `{"id":"h1","state":"follower","leader":""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stuck := newFakeHub(t, true, tc.status)
			good := newFakeHub(t, false, `{"id":"h2","state":"leader","leader":"h2"}`)
			h, err := NewHubs([]string{stuck.addr(), good.addr()}, 20*time.Second, 4)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.CloseIdleConnections)
			h.current.Store(0)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			res, err := h.Publish(ctx, wire.PublishRequest{Channel: "c", Data: []byte("1"), ID: "k1"})
			if err != nil || res.Offset != 1 {
				t.Fatalf("publish with an id: %+v, %v", res, err)
			}
			if stuck.publishes.Load() != 1 || good.publishes.Load() != 1 {
				t.Fatalf("publishes: %d to the stuck hub, %d to the good one; want 1 and 1", stuck.publishes.Load(), good.publishes.Load())
			}
			// The stuck hub is tried last for a while.
			if _, err := h.Publish(ctx, wire.PublishRequest{Channel: "c", Data: []byte("2"), ID: "k2"}); err != nil {
				t.Fatal(err)
			}
			if stuck.publishes.Load() != 1 || good.publishes.Load() != 2 {
				t.Fatalf("second publish: %d to the stuck hub, %d to the good one; want 1 and 2", stuck.publishes.Load(), good.publishes.Load())
			}

			// Without an id: never sent to a second hub.
			h.suspect[0].Store(0)
			short, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel2()
			_, err = h.Publish(short, wire.PublishRequest{Channel: "c", Data: []byte("3")})
			if tc.status == "" && !errors.Is(err, ErrStalled) {
				t.Fatalf("publish without an id on a paused hub: %v, want ErrStalled", err)
			}
			if tc.status != "" && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("publish without an id on a hub without a leader: %v, want its deadline", err)
			}
			if good.publishes.Load() != 2 {
				t.Fatalf("a publish without an id went to a second hub")
			}
		})
	}
}
