// Package adminpage holds the admin view's page (admin.html), served at
// GET /admin by hubs and gateways. It is static and self-contained (its
// script, styles and charts are inline; nothing is loaded from elsewhere)
// and holds no data: it asks for a token and polls GET /v1/admin/overview
// with it (see docs/operations.md, "Admin view").
package adminpage

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed admin.html
var page []byte

var etag = func() string {
	sum := sha256.Sum256(page)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}()

// csp allows the page's own inline script and style, by their hashes,
// and connections to its own server only.
var csp = "default-src 'none'; script-src " + inlineHash("script") + "; style-src " + inlineHash("style") +
	"; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHash returns the CSP source of the first <tag> element's content.
func inlineHash(tag string) string {
	_, rest, ok := bytes.Cut(page, []byte("<"+tag+">"))
	body, _, ok2 := bytes.Cut(rest, []byte("</"+tag+">"))
	if !ok || !ok2 {
		panic("adminpage: no <" + tag + "> in admin.html")
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// Handler serves the page: revalidated at every load (an ETag), never
// framed by other sites, and with a Content-Security-Policy that lets it
// talk only to the server it came from.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", csp)
		http.ServeContent(w, r, "admin.html", time.Time{}, bytes.NewReader(page))
	})
}
