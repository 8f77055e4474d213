// Package hubapi calls the hubs' HTTP API (docs/hub-api.md): Client sends
// one request to one hub, with the cluster secret; Hubs is a set of hubs
// with failover, for publishes and the commit stream. Hubs forwarding to
// their leader, gateways, workers and the comet tools use it. It imports
// nothing of Comet but wire, so that a worker binary links no hub.
package hubapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/comethq/comet/wire"
)

// APIError is an error answer (not 2xx) from a hub's API.
type APIError struct {
	Status int
	Body   wire.Error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("hub answered %d %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

// Unwrap gives the answer's body: errors.As(err, &we) with we a
// *wire.Error finds it.
func (e *APIError) Unwrap() error { return &e.Body }

// AnswerError is the *APIError of a hub's error answer resp, whose body
// is data.
func AnswerError(resp *http.Response, data []byte) *APIError {
	e := &APIError{Status: resp.StatusCode}
	if json.Unmarshal(data, &e.Body) != nil || e.Body.Code == "" {
		e.Body = wire.Error{Code: wire.CodeUnavailable, Message: resp.Status + " " + string(bytes.TrimSpace(data))}
	}
	return e
}

// maxAnswerBytes bounds the answers the client reads.
const maxAnswerBytes = 8 << 20

// HeaderForwarded marks a request forwarded by a hub (Client.Forwarder),
// so that a hub that is not the leader either answers instead of
// forwarding again.
const HeaderForwarded = "X-Comet-Forwarded"

// Client calls one hub's HTTP API at a time. It is safe for concurrent
// use.
type Client struct {
	// HTTP does the requests.
	HTTP *http.Client
	// Forwarder, when set, marks requests as forwarded by that hub (see
	// HeaderForwarded).
	Forwarder string
	// Secret, when set, is sent as "Authorization: Bearer <Secret>": hubs
	// started with --secret refuse API calls without it.
	Secret string
	// TLS, when set, makes the client call hubs over https (hubs started
	// with --tls-cert); it is the configuration HTTP's transport verifies
	// their certificates with (see SetTLS).
	TLS *tls.Config
}

// SetTLS makes the client call hubs over https, verifying their
// certificates with cfg (RootCAs nil: the system's roots): it sets TLS
// and, when HTTP's transport is an *http.Transport, its TLSClientConfig.
// Call it before the first request.
func (c *Client) SetTLS(cfg *tls.Config) {
	c.TLS = cfg
	if tr, ok := c.HTTP.Transport.(*http.Transport); ok {
		tr.TLSClientConfig = cfg
	}
}

// Scheme is "https" when the client has TLS, else "http".
func (c *Client) Scheme() string {
	if c.TLS != nil {
		return "https"
	}
	return "http"
}

// URL is the URL of path on the hub at api (host:port).
func (c *Client) URL(api, path string) string {
	return c.Scheme() + "://" + api + path
}

// ErrMixedSchemes is returned by SplitScheme for a list of hub addresses
// some of which are https and some http.
var ErrMixedSchemes = errors.New("hub addresses mix https and http: every hub of a cluster serves its API the same way")

// SplitScheme parses hub API addresses written host:port, http://host:port
// or https://host:port, and returns them as host:port with whether they
// are https. A bare host:port is https when defaultTLS is set (a CA or
// certificate was given for the hubs). All must agree (ErrMixedSchemes).
func SplitScheme(addrs []string, defaultTLS bool) (hostports []string, useTLS bool, err error) {
	seen := map[bool]bool{}
	for _, a := range addrs {
		hp, tls := a, defaultTLS
		switch {
		case strings.HasPrefix(a, "https://"):
			hp, tls = strings.TrimPrefix(a, "https://"), true
		case strings.HasPrefix(a, "http://"):
			hp, tls = strings.TrimPrefix(a, "http://"), false
		}
		hp = strings.TrimSuffix(hp, "/")
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return nil, false, fmt.Errorf("hub address %q: want host:port or https://host:port: %v", a, err)
		}
		seen[tls] = true
		hostports = append(hostports, hp)
		useTLS = tls
	}
	if len(seen) > 1 {
		return nil, false, ErrMixedSchemes
	}
	return hostports, useTLS, nil
}

// Authorize adds the client's secret, if it has one, to a request it does
// not send itself (the commit stream, range reads in frames).
func (c *Client) Authorize(req *http.Request) {
	if c.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.Secret)
	}
}

// NewClient returns a client with keep-alive connections and the given
// per-request timeout.
func NewClient(timeout time.Duration, maxConnsPerHost int) *Client {
	return &Client{HTTP: &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: maxConnsPerHost, MaxConnsPerHost: maxConnsPerHost,
			IdleConnTimeout: time.Minute,
		},
	}}
}

// Post sends body as JSON to http(s)://api+path and decodes a 2xx answer into
// out (when not nil). An error answer is an *APIError.
func (c *Client) Post(ctx context.Context, api, path string, body, out any) error {
	// Without HTML escaping: message data is stored as given ("<", not
	// "\u003c").
	var raw *bytes.Buffer
	if reqs, ok := body.([]wire.PublishRequest); ok { // a batch: without reflection
		if b, ok := wire.AppendPublishRequests(make([]byte, 0, batchSize(reqs)), reqs); ok {
			raw = bytes.NewBuffer(b)
		}
	}
	if raw == nil {
		raw = new(bytes.Buffer)
		e := json.NewEncoder(raw)
		e.SetEscapeHTML(false)
		if err := e.Encode(body); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL(api, path), raw)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, out)
}

// batchSize is about the size of reqs encoded as a batch.
func batchSize(reqs []wire.PublishRequest) int {
	n := 2
	for _, r := range reqs {
		n += len(r.Channel) + len(r.Data) + len(r.ID) + 32
	}
	return n
}

// PublishBatch sends reqs to the hub at api as one batch publish (POST
// /v1/publish with a JSON array) and returns its results, one per request,
// in order. It does not fail over: see Hubs.PublishBatch.
func (c *Client) PublishBatch(ctx context.Context, api string, reqs []wire.PublishRequest) ([]wire.PublishResult, error) {
	var out []wire.PublishResult
	if err := c.Post(ctx, api, "/v1/publish", reqs, &out); err != nil {
		return nil, err
	}
	if len(out) != len(reqs) {
		return nil, fmt.Errorf("hub %s answered %d results to %d publishes", api, len(out), len(reqs))
	}
	return out, nil
}

// Get gets http(s)://api+path and decodes a 2xx answer into out.
func (c *Client) Get(ctx context.Context, api, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(api, path), nil)
	if err != nil {
		return err
	}
	return c.do(req, out)
}

func (c *Client) do(req *http.Request, out any) error {
	if c.Forwarder != "" {
		req.Header.Set(HeaderForwarded, c.Forwarder)
	}
	c.Authorize(req)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", req.URL.Host, err)
	}
	if resp.StatusCode/100 != 2 {
		return AnswerError(resp, data)
	}
	if out == nil {
		return nil
	}
	if rs, ok := out.(*[]wire.PublishResult); ok { // a batch's answer: without reflection
		if *rs, ok = wire.DecodePublishResults(data); ok {
			return nil
		}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", req.URL.Host, err)
	}
	return nil
}
