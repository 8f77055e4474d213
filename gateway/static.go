package gateway

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/comethq/comet/client/js"
)

// static serves one file of the browser client (client/js: the demo page,
// comet.js, the SockJS build) with a strong ETag (a hash of the content),
// a Cache-Control by kind of file, and gzip when the browser takes it. The
// file is read and compressed once, at its first request.
//
//   - the demo page: no-cache (always revalidated: a 304 when unchanged);
//   - comet.js: 5 minutes, then revalidated, so that a gateway upgrade
//     reaches pages soon;
//   - vendor/ (the pinned SockJS build, which changes only with the
//     pinned version): a day.
//
// Scripts may be loaded from any origin (Access-Control-Allow-Origin: *):
// they are public, and a page elsewhere may import comet.js.
func static(name string) http.Handler {
	load := sync.OnceValue(func() *staticFile { return loadStatic(js.Files, name) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { load().serve(w, r) })
}

// staticFile is one file ready to serve.
type staticFile struct {
	name         string
	body, gz     []byte // gz is nil when compressing does not pay
	etag         string
	contentType  string
	cacheControl string
}

func loadStatic(files fs.FS, name string) *staticFile {
	body, err := fs.ReadFile(files, name)
	if err != nil {
		panic(fmt.Sprintf("gateway: browser file %s is not embedded: %v", name, err)) // a build mistake, caught by tests
	}
	sum := sha256.Sum256(body)
	f := &staticFile{name: name, body: body, etag: hex.EncodeToString(sum[:12])}
	switch path.Ext(name) {
	case ".html":
		f.contentType, f.cacheControl = "text/html; charset=utf-8", "no-cache"
	case ".js":
		f.contentType, f.cacheControl = "text/javascript; charset=utf-8", "public, max-age=300"
	default:
		f.contentType, f.cacheControl = "application/octet-stream", "public, max-age=300"
	}
	if strings.HasPrefix(name, "vendor/") {
		f.cacheControl = "public, max-age=86400"
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	_, _ = zw.Write(body)
	_ = zw.Close()
	if b.Len() < len(body)*9/10 {
		f.gz = b.Bytes()
	}
	return f
}

func (f *staticFile) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", f.cacheControl)
	h.Set("X-Content-Type-Options", "nosniff")
	if f.contentType != "text/html; charset=utf-8" {
		// Pages of other origins may import comet.js (module scripts are
		// fetched with CORS).
		h.Set("Access-Control-Allow-Origin", "*")
	}
	body, etag := f.body, f.etag
	if f.gz != nil {
		h.Set("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body, etag = f.gz, f.etag+"-gz"
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("ETag", `"`+etag+`"`)
	// ServeContent answers If-None-Match with 304, HEAD and ranges.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether an Accept-Encoding header takes gzip (and does
// not refuse it with q=0).
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		if v, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			w, err := strconv.ParseFloat(v, 64)
			return err == nil && w > 0
		}
		return true
	}
	return false
}
