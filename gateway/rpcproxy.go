package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/comethq/comet/wire"
)

// RPCProxy answers requests with an HTTP endpoint of the application's
// (--rpc-url), for backends in any language. Each request is
//
//	POST <url>  {"route":"r","data":<any>,"connection":"<id>","user":"<sub>"}
//
// (user absent for anonymous connections) and the endpoint answers 2xx
// with {"data":<any>} for a response, or {"error":{"code":"...",
// "message":"..."}} for an error frame (code one of the protocol's; any
// other becomes bad_request). Any other answer is unavailable to the client.
type RPCProxy struct {
	url    string
	client *http.Client
}

// maxRPCAnswer bounds an endpoint's answer.
const maxRPCAnswer = 4 << 20

// NewRPCProxy returns a proxy to the http:// or https:// URL u.
func NewRPCProxy(u string) (*RPCProxy, error) {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return nil, fmt.Errorf("rpc url %q: want http://host[:port]/path or https://...", u)
	}
	return &RPCProxy{url: u, client: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
	}}}, nil
}

// Request posts req to the endpoint; ctx bounds it.
func (p *RPCProxy) Request(ctx context.Context, req Request) (json.RawMessage, error) {
	if len(req.Data) == 0 {
		req.Data = json.RawMessage("null")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, &wire.Error{Code: wire.CodeBadRequest, Message: "request data: " + err.Error()}
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the rpc endpoint is unreachable"}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCAnswer+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the rpc endpoint's answer was cut off"}
	}
	if resp.StatusCode/100 != 2 {
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the rpc endpoint answered " + resp.Status}
	}
	if len(raw) > maxRPCAnswer {
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("the rpc endpoint's answer is over %d bytes", maxRPCAnswer)}
	}
	var ans struct {
		Data  json.RawMessage `json:"data"`
		Error *wire.Error     `json:"error"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: `the rpc endpoint answered something other than {"data":...} or {"error":...}`}
	}
	if ans.Error != nil {
		e := &wire.Error{Code: ans.Error.Code, Message: ans.Error.Message}
		if !wire.KnownCode(e.Code) {
			e.Code = wire.CodeBadRequest
		}
		return nil, e
	}
	return ans.Data, nil
}

var _ Workers = (*RPCProxy)(nil)
