package gateway

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/comethq/comet/client/js"
)

// TestStaticFiles: the demo page at / (that path only), /comet.js and
// /sockjs.min.js, with their types, cache headers, ETags and gzip; every
// other path is still 404.
func TestStaticFiles(t *testing.T) {
	s, err := New(Config{Hub: newMemHub()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := s.Handler()
	get := func(method, path string, header ...string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct {
		path, file, ctype, cache, contains string
	}{
		{"/", "demo/index.html", "text/html; charset=utf-8", "no-cache", `from '/comet.js'`},
		{"/comet.js", "comet.js", "text/javascript; charset=utf-8", "public, max-age=300", "export class Comet"},
		{"/sockjs.min.js", "vendor/sockjs.min.js", "text/javascript; charset=utf-8", "public, max-age=86400", "sockjs-client v"},
	} {
		want, err := fs.ReadFile(js.Files, tc.file)
		if err != nil {
			t.Fatal(err)
		}
		w := get("GET", tc.path)
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), want) || !strings.Contains(w.Body.String(), tc.contains) {
			t.Fatalf("GET %s: %d, %d bytes; want 200 and the %d bytes of %s", tc.path, w.Code, w.Body.Len(), len(want), tc.file)
		}
		hd := w.Header()
		if hd.Get("Content-Type") != tc.ctype || hd.Get("Cache-Control") != tc.cache || hd.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: Content-Type %q, Cache-Control %q, nosniff %q; want %q, %q", tc.path,
				hd.Get("Content-Type"), hd.Get("Cache-Control"), hd.Get("X-Content-Type-Options"), tc.ctype, tc.cache)
		}
		if cors := hd.Get("Access-Control-Allow-Origin"); (cors == "*") != strings.HasSuffix(tc.path, ".js") {
			t.Errorf("GET %s: Access-Control-Allow-Origin %q", tc.path, cors)
		}
		etag := hd.Get("ETag")
		if len(etag) < 10 || etag[0] != '"' || hd.Get("Content-Encoding") != "" {
			t.Errorf("GET %s: ETag %q, Content-Encoding %q", tc.path, etag, hd.Get("Content-Encoding"))
		}
		// Revalidation: 304 without a body.
		if w := get("GET", tc.path, "If-None-Match", etag); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
			t.Errorf("GET %s with If-None-Match %s: %d, %d bytes; want 304", tc.path, etag, w.Code, w.Body.Len())
		}
		// gzip, with its own ETag; refused with q=0.
		wz := get("GET", tc.path, "Accept-Encoding", "br, gzip")
		if wz.Header().Get("Content-Encoding") != "gzip" || wz.Header().Get("ETag") == etag || wz.Header().Get("Vary") != "Accept-Encoding" {
			t.Errorf("GET %s with gzip: Content-Encoding %q, ETag %q, Vary %q", tc.path,
				wz.Header().Get("Content-Encoding"), wz.Header().Get("ETag"), wz.Header().Get("Vary"))
		} else if zr, err := gzip.NewReader(wz.Body); err != nil {
			t.Error(err)
		} else if got, err := io.ReadAll(zr); err != nil || !bytes.Equal(got, want) {
			t.Errorf("GET %s with gzip: body does not unzip to the file (%v)", tc.path, err)
		}
		if w := get("GET", tc.path, "Accept-Encoding", "gzip;q=0, identity"); w.Header().Get("Content-Encoding") != "" {
			t.Errorf("GET %s with gzip;q=0: Content-Encoding %q", tc.path, w.Header().Get("Content-Encoding"))
		}
		if w := get("HEAD", tc.path); w.Code != http.StatusOK || w.Header().Get("ETag") != etag {
			t.Errorf("HEAD %s: %d, ETag %q", tc.path, w.Code, w.Header().Get("ETag"))
		}
	}
	for _, p := range []string{"/index.html", "/demo/index.html", "/nope", "/vendor/sockjs.min.js", "/comet.js/x", "/embed.go", "/package.json"} {
		if w := get("GET", p); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
	if w := get("POST", "/"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", w.Code)
	}
	// The gateway's own routes are untouched.
	if w := get("GET", "/healthz"); w.Code != http.StatusOK {
		t.Errorf("GET /healthz: %d", w.Code)
	}
}

func TestStaticAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                         false,
		"gzip":                     true,
		"GZIP":                     true,
		"deflate, gzip;q=0.5":      true,
		"gzip;q=0":                 false,
		"gzip; q=0.0":              false,
		"br":                       false,
		"x-gzip":                   false,
		"gzip;q=1.0, identity;q=0": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}
