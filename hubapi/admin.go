package hubapi

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/comethq/comet/wire"
)

// Paths of the admin view (docs/hub-api.md): hubs and gateways serve both.
const (
	PathAdminOverview = "/v1/admin/overview"
	PathAdminGateways = "/v1/admin/gateways"
)

// AdminUnauthorized is the message of the 401 answer to a request for the
// admin view without a valid token.
const AdminUnauthorized = "the admin view needs a token: send Authorization: Bearer <token>, the cluster secret (--secret) or the admin token (--admin-token)"

// AdminAuthorized reports whether r may read the admin view: none of
// tokens is set (an open server), or r carries one of them as
// "Authorization: Bearer <token>", compared in constant time. Empty tokens
// are ignored.
func AdminAuthorized(r *http.Request, tokens ...string) bool {
	open := true
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	for _, tok := range tokens {
		if tok == "" {
			continue
		}
		open = false
		if ok && subtle.ConstantTimeCompare([]byte(got), []byte(tok)) == 1 {
			return true
		}
	}
	return open
}

// Overview gets GET /v1/admin/overview of the hub at api.
func (c *Client) Overview(ctx context.Context, api string) (wire.AdminOverview, error) {
	var ov wire.AdminOverview
	err := c.Get(ctx, api, PathAdminOverview, &ov)
	return ov, err
}
