package hubapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
