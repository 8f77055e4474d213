package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/comethq/comet/wire"
)

// postJSON posts body to http://api+path and decodes a 2xx answer into out.
func postJSON(ctx context.Context, c *http.Client, api, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(c, req, out)
}

// getJSON gets http://api+path and decodes a 2xx answer into out.
func getJSON(ctx context.Context, c *http.Client, api, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+path, nil)
	if err != nil {
		return err
	}
	return do(c, req, out)
}

func do(c *http.Client, req *http.Request, out any) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e wire.Error
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			return fmt.Errorf("%w: %s %s: %s", errHTTP, resp.Status, e.Code, e.Message)
		}
		return fmt.Errorf("%w: %s", errHTTP, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}
