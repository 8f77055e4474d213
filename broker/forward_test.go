package broker_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/comethq/comet/wire"
)

// TestForwardOneHop: a publish that a hub forwarded is never forwarded
// again. A follower that gets one (the sender thought it led) answers
// unavailable, and stores nothing, so that the hub that forwarded it
// answers its client instead of requests bouncing between hubs.
func TestForwardOneHop(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]

	const ch = "forward/one-hop"
	req, err := http.NewRequest("POST", "http://"+f.api+"/v1/publish", bytes.NewReader([]byte(`{"channel":"`+ch+`","data":1,"id":"k1"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Comet-Forwarded", l.id)
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e wire.Error
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(raw, &e) != nil ||
		e.Code != wire.CodeUnavailable || !strings.Contains(e.Message, "not the leader") {
		t.Fatalf("forwarded publish to a follower: %d %s; want 503 unavailable, not the leader", resp.StatusCode, raw)
	}

	// Nothing was stored: the same id publishes afresh at offset 1.
	status, body := c.do("POST", l.api, "/v1/publish", []byte(`{"channel":"`+ch+`","data":2,"id":"k1"}`))
	var res wire.PublishResponse
	if status != 200 || json.Unmarshal(body, &res) != nil || res.Offset != 1 {
		t.Fatalf("publish to the leader: %d %s; want offset 1", status, body)
	}
	all, err := c.readAll(l.api, ch)
	if err != nil || len(all.Messages) != 1 || string(all.Messages[0].Data) != "2" {
		t.Fatalf("channel holds %+v (%v); want only the leader's publish", all.Messages, err)
	}
}
