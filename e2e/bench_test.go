package e2e

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBenchFanoutAndCatchup runs `comet bench fanout` and `comet bench
// catchup` against a real `comet standalone`: every subscriber must get
// every message, in order, once (the bench checks offsets and fails on a
// gap or a duplicate), and every resume must end with all it missed.
func TestBenchFanoutAndCatchup(t *testing.T) {
	c := newCluster(t)
	s := c.startStandalone(filepath.Join(c.dir, "data"), true)
	url := "ws://" + s.api + "/ws"

	code, out, errOut := runComet(t, nil, "bench", "fanout", "--url", url,
		"--subscribers", "20", "--messages", "200", "--rate", "0", "--publishers", "2", "--json")
	if code != 0 {
		t.Fatalf("bench fanout: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	var fan struct {
		Subscribers int     `json:"subscribers"`
		Published   int64   `json:"published"`
		Delivered   int64   `json:"delivered"`
		Gaps        int64   `json:"gaps"`
		Duplicates  int64   `json:"duplicates"`
		Rate        float64 `json:"deliveries_per_sec"`
		P50         float64 `json:"p50_ms"`
		P99         float64 `json:"p99_ms"`
	}
	if err := json.Unmarshal([]byte(out), &fan); err != nil {
		t.Fatalf("bench fanout output %q: %v", out, err)
	}
	if fan.Subscribers != 20 || fan.Published != 200 || fan.Delivered != 20*200 || fan.Gaps != 0 || fan.Duplicates != 0 ||
		fan.Rate <= 0 || fan.P50 <= 0 || fan.P99 < fan.P50 {
		t.Fatalf("bench fanout result: %+v", fan)
	}
	if !strings.Contains(errOut, "publishing 200 messages") {
		t.Errorf("bench fanout shows no progress on stderr: %q", errOut)
	}
	// With churn: connections subscribe and close while it publishes.
	code, out, errOut = runComet(t, nil, "bench", "fanout", "--url", url,
		"--subscribers", "10", "--messages", "300", "--rate", "200", "--churn", "50", "--churn-channel", "churn.c", "--json")
	if code != 0 {
		t.Fatalf("bench fanout --churn: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	var churn struct {
		Delivered int64 `json:"delivered"`
		Churned   int64 `json:"churned"`
	}
	if err := json.Unmarshal([]byte(out), &churn); err != nil || churn.Delivered != 10*300 || churn.Churned < 10 {
		t.Fatalf("bench fanout --churn result %q: %+v, %v", out, churn, err)
	}

	code, out, errOut = runComet(t, nil, "bench", "catchup", "--url", url,
		"--messages", "3000", "--missed", "100,3000", "--runs", "2", "--json")
	if code != 0 {
		t.Fatalf("bench catchup: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("bench catchup printed %d results, want 4: %q", len(lines), out)
	}
	for i, line := range lines {
		var r struct {
			Missed  int     `json:"missed"`
			Run     int     `json:"run"`
			Seconds float64 `json:"seconds"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Seconds <= 0 || r.Missed != []int{100, 100, 3000, 3000}[i] || r.Run != i%2+1 {
			t.Fatalf("bench catchup result %d: %q (%v)", i, line, err)
		}
	}
}

// TestBenchRequest runs `comet bench request` against a real `comet
// standalone` with the secret: its echo workers attach to the router, every
// request is answered, and the figures are sane.
func TestBenchRequest(t *testing.T) {
	c := newCluster(t)
	s := c.startStandalone(filepath.Join(c.dir, "data"), true)
	code, out, errOut := runComet(t, c.env(), "bench", "request", "--url", "ws://"+s.api+"/ws", "--hubs", s.api,
		"--workers", "2", "--clients", "3", "--inflight", "2", "--duration", "1s", "--json")
	if code != 0 {
		t.Fatalf("bench request: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	var r struct {
		Workers  int            `json:"workers"`
		Answered int64          `json:"answered"`
		Errors   map[string]int `json:"errors"`
		Rate     float64        `json:"requests_per_sec"`
		P50      float64        `json:"p50_ms"`
		P99      float64        `json:"p99_ms"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench request output %q: %v", out, err)
	}
	if r.Workers != 2 || r.Answered < 10 || len(r.Errors) != 0 || r.Rate <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
		t.Fatalf("bench request result: %+v", r)
	}
}

// TestBenchPublish runs `comet bench publish` against 3 `comet hub`
// processes and a gateway: through the hub API one message per request and
// in batches (--batch), and over the client protocol (--url, --window).
// Every message must be acknowledged, with sane figures.
func TestBenchPublish(t *testing.T) {
	c := startCluster(t, 3)
	g := c.startGateway("g1")
	var apis []string
	for _, h := range c.hubs {
		apis = append(apis, h.api)
	}
	for _, args := range [][]string{
		{"--api", strings.Join(apis, ","), "--publishers", "4", "--messages", "400"},
		{"--api", strings.Join(apis, ","), "--publishers", "3", "--batch", "50", "--messages", "1030"},
		{"--url", "ws://" + g.api + "/ws", "--publishers", "3", "--window", "4", "--messages", "500"},
	} {
		code, out, errOut := runComet(t, c.env(), append(append([]string{"bench", "publish"}, args...), "--json")...)
		if code != 0 {
			t.Fatalf("bench publish %v: exit %d\nstdout %s\nstderr %s", args, code, out, errOut)
		}
		var r struct {
			Batch    int     `json:"batch"`
			Window   int     `json:"window"`
			Messages int64   `json:"messages"`
			Errors   int64   `json:"errors"`
			Rate     float64 `json:"msgs_per_sec"`
			P50      float64 `json:"p50_ms"`
			P99      float64 `json:"p99_ms"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("bench publish %v output %q: %v", args, out, err)
		}
		want, _ := strconv.Atoi(args[len(args)-1])
		if r.Messages != int64(want) || r.Errors != 0 || r.Rate <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Fatalf("bench publish %v result: %+v\nstderr %s", args, r, errOut)
		}
		if !strings.Contains(errOut, "publishing") {
			t.Errorf("bench publish %v shows nothing on stderr: %q", args, errOut)
		}
	}
}

// TestBenchPublishStandalone: comet bench publish against comet standalone
// (its --listen serves the hub API, the default --api), as the README's
// first command starts it.
func TestBenchPublishStandalone(t *testing.T) {
	c := newCluster(t)
	s := c.startStandalone(filepath.Join(c.dir, "data"), false)
	code, out, errOut := runComet(t, c.env(), "bench", "publish", "--api", s.api, "--publishers", "2", "--messages", "200", "--json")
	var r struct {
		Messages int64 `json:"messages"`
		Errors   int64 `json:"errors"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Messages != 200 || r.Errors != 0 {
		t.Fatalf("bench publish --api %s (a standalone): exit %d, stdout %q, stderr %q", s.api, code, out, errOut)
	}
}
