package broker

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/comethq/comet/wire"
)

// openPaths are served without the secret: probes and Prometheus reach them,
// and they change nothing and tell nothing of the channels.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// requireSecret wraps the API so that, when secret is set, every call but
// openPaths needs "Authorization: Bearer <secret>". Clients never hold the
// secret: only hubs, gateways, workers and operators' tools do.
func requireSecret(secret string, h http.Handler) http.Handler {
	if secret == "" {
		return h
	}
	want := []byte(secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] || CheckBearer(r, want) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="comet hub"`)
		writeJSON(w, http.StatusUnauthorized, wire.Error{Code: wire.CodeForbidden,
			Message: "this hub requires the cluster secret: send Authorization: Bearer <secret> (--secret, COMET_SECRET)"})
	})
}

// CheckBearer reports whether r carries "Authorization: Bearer <secret>",
// comparing in constant time.
func CheckBearer(r *http.Request, secret []byte) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(token), secret) == 1
}
