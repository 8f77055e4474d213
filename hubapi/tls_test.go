package hubapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

func TestSplitScheme(t *testing.T) {
	for _, tc := range []struct {
		addrs      []string
		defaultTLS bool
		want       []string
		wantTLS    bool
		err        bool
	}{
		{[]string{"127.0.0.1:1", "h:2"}, false, []string{"127.0.0.1:1", "h:2"}, false, false},
		{[]string{"127.0.0.1:1", "h:2"}, true, []string{"127.0.0.1:1", "h:2"}, true, false},
		{[]string{"https://127.0.0.1:1", "https://h:2/"}, false, []string{"127.0.0.1:1", "h:2"}, true, false},
		{[]string{"https://127.0.0.1:1", "h:2"}, true, []string{"127.0.0.1:1", "h:2"}, true, false},
		{[]string{"http://127.0.0.1:1"}, true, []string{"127.0.0.1:1"}, false, false},
		{[]string{"https://127.0.0.1:1", "h:2"}, false, nil, false, true},
		{[]string{"https://127.0.0.1"}, false, nil, false, true},
		{[]string{"ftp://h:1"}, false, nil, false, true},
	} {
		got, gotTLS, err := SplitScheme(tc.addrs, tc.defaultTLS)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) || gotTLS != tc.wantTLS {
			t.Errorf("SplitScheme(%q, %v) = %q, %v, %v; want %q, %v, error %v", tc.addrs, tc.defaultTLS, got, gotTLS, err, tc.want, tc.wantTLS, tc.err)
		}
	}
	if _, _, err := SplitScheme([]string{"https://a:1", "http://b:2"}, false); !errors.Is(err, ErrMixedSchemes) {
		t.Errorf("mixed schemes: %v, want ErrMixedSchemes", err)
	}
}

// TestHubsOverTLS: Hubs with SetTLS publish and stream over https,
// verifying the hub's certificate; without the CA the call fails.
func TestHubsOverTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/publish":
			w.Write([]byte(`{"channel":"c","offset":7,"epoch":"e"}`))
		case "/v1/stream":
			w.Write([]byte(`{"type":"heartbeat","applied":3}` + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	h, err := NewHubs([]string{addr}, 5*time.Second, 2)
	if err != nil {
		t.Fatal(err)
	}
	h.SetTLS(&tls.Config{RootCAs: pool})
	defer h.CloseIdleConnections()
	if got := h.Client().URL(addr, "/x"); got != "https://"+addr+"/x" {
		t.Fatalf("URL %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.Publish(ctx, wire.PublishRequest{Channel: "c", Data: []byte(`1`)})
	if err != nil || res.Offset != 7 {
		t.Fatalf("publish over https: %+v, %v", res, err)
	}
	s, err := h.openStream(ctx, addr, 0)
	if err != nil {
		t.Fatalf("stream over https: %v", err)
	}
	s.Close()

	untrusting := NewClient(5*time.Second, 1)
	untrusting.SetTLS(&tls.Config{RootCAs: x509.NewCertPool()})
	var unknown x509.UnknownAuthorityError
	if err := untrusting.Get(ctx, addr, "/v1/cluster", nil); !errors.As(err, &unknown) {
		t.Fatalf("a client without the CA: %v, want x509.UnknownAuthorityError", err)
	}
}
