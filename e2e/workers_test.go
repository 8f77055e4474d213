package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"

	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
)

// startWorker starts a testworker process serving routes, attached to the
// cluster's hubs, and waits until it says it is ready.
func (c *cluster) startWorker(name, routes string) *hub {
	c.t.Helper()
	var apis []string
	for _, h := range c.hubs {
		apis = append(apis, h.api)
	}
	w := &hub{id: name, bin: workerBin, logPath: filepath.Join(c.dir, name+".log"),
		args: []string{"--hubs", strings.Join(apis, ","), "--name", name, "--routes", routes}}
	c.gateways = append(c.gateways, w)
	c.start(w)
	waitFor(c.t, 30*time.Second, name+" ready", func() bool { return w.logContains("\nready\n") })
	return w
}

// countLines counts the lines of h's log that start with prefix.
func (h *hub) countLines(prefix string) int {
	f, err := os.Open(h.logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			n++
		}
	}
	return n
}

type whoami struct{ Worker, Conn, User string }

// TestWorkers: worker processes answer the requests of clients on two
// gateways, balanced; not_found, timeout, a worker's error, a worker killed
// mid-request (unavailable, or retried for an idempotent route); direct
// messages across gateways, from a worker and from the hub API.
func TestWorkers(t *testing.T) {
	c := startCluster(t, 3)
	g1 := c.startGateway("g1", "--request-timeout", "2s")
	g2 := c.startGateway("g2", "--request-timeout", "2s")
	w1 := c.startWorker("w1", "whoami,slow,send,fail,answer-idem")
	c.startWorker("w2", "whoami,slow,send,fail")

	var directMu sync.Mutex
	var direct []json.RawMessage
	newClient := func(g *hub, onMessage func(json.RawMessage)) *client.Client {
		cl, err := client.New(client.Config{URLs: []string{"ws://" + g.api + "/ws"}, RequestTimeout: 20 * time.Second,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, OnMessage: onMessage})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	a := newClient(g1, nil)
	b := newClient(g2, func(d json.RawMessage) {
		directMu.Lock()
		direct = append(direct, d)
		directMu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	call := func(cl *client.Client, route string, data any) (json.RawMessage, error) {
		t.Helper()
		return cl.Request(ctx, route, data)
	}
	who := func(cl *client.Client) whoami {
		t.Helper()
		raw, err := call(cl, "whoami", nil)
		var w whoami
		if err == nil {
			err = json.Unmarshal(raw, &w)
		}
		if err != nil {
			t.Fatalf("whoami: %v", err)
		}
		return w
	}

	// Balanced across the workers, from both gateways; the worker sees the
	// connection.
	seen := map[string]int{}
	connOf := map[*client.Client]string{}
	for i := 0; i < 20; i++ {
		for _, cl := range []*client.Client{a, b} {
			w := who(cl)
			seen[w.Worker]++
			if prev, ok := connOf[cl]; ok && prev != w.Conn {
				t.Fatalf("connection id changed: %s, then %s", prev, w.Conn)
			}
			connOf[cl] = w.Conn
		}
	}
	if seen["w1"] == 0 || seen["w2"] == 0 || seen["w1"]+seen["w2"] != 40 {
		t.Fatalf("answers by worker %v: want both workers, 40 in all", seen)
	}
	if !strings.HasPrefix(connOf[a], "g1-") || !strings.HasPrefix(connOf[b], "g2-") {
		t.Fatalf("connection ids %q, %q: want g1-..., g2-...", connOf[a], connOf[b])
	}

	wantErr := func(err error, code, contains string) {
		t.Helper()
		var e *client.Error
		if !errors.As(err, &e) || e.Code != code || !strings.Contains(e.Message, contains) {
			t.Fatalf("got %v, want %s containing %q", err, code, contains)
		}
	}
	// For a few seconds after a leader is elected, a route nobody serves
	// is unavailable (its workers may still be attaching), then not_found.
	var err error
	waitFor(t, 15*time.Second, "not_found for a route nobody serves", func() bool {
		_, err = call(a, "nobody-serves-this", nil)
		var e *client.Error
		return !errors.As(err, &e) || e.Code != wire.CodeUnavailable
	})
	wantErr(err, wire.CodeNotFound, "nobody-serves-this")
	_, err = call(b, "slow", nil)
	wantErr(err, wire.CodeTimeout, "")
	_, err = call(a, "fail", nil)
	wantErr(err, wire.CodeBadRequest, "no such order")

	// A direct message from a worker to a connection on the other gateway.
	raw, err := call(a, "send", map[string]string{"conn": connOf[b], "text": "hi b"})
	if err != nil || string(raw) != `"sent"` {
		t.Fatalf("send to b: %s, %v", raw, err)
	}
	waitFor(t, 10*time.Second, "b's direct message", func() bool {
		directMu.Lock()
		defer directMu.Unlock()
		return len(direct) == 1
	})
	var msg struct{ Text, From string }
	if err := json.Unmarshal(direct[0], &msg); err != nil || msg.Text != "hi b" {
		t.Fatalf("direct message %s: %v", direct[0], err)
	}
	_, err = call(a, "send", map[string]string{"conn": "g2-0123456789abcdef", "text": "nobody"})
	wantErr(err, wire.CodeNotFound, "")

	// The same through the hub API, on a follower (forwarded to the leader).
	leader := c.currentLeader()
	var follower *hub
	for _, h := range c.hubs {
		if h != leader {
			follower = h
			break
		}
	}
	code, body, err := c.do("POST", follower.api, "/v1/connections/"+connOf[b]+"/send", []byte(`{"data":{"text":"from the api"}}`))
	if err != nil || code != 200 || !strings.Contains(string(body), connOf[b]) {
		t.Fatalf("POST /v1/connections/%s/send: %d %s %v", connOf[b], code, body, err)
	}
	waitFor(t, 10*time.Second, "b's second direct message", func() bool {
		directMu.Lock()
		defer directMu.Unlock()
		return len(direct) == 2 && strings.Contains(string(direct[1]), "from the api")
	})
	code, body, _ = c.do("POST", leader.api, "/v1/connections/g2-0123456789abcdef/send", []byte(`{"data":1}`))
	if code != 404 {
		t.Fatalf("send to an unknown connection: %d %s, want 404", code, body)
	}

	// A worker killed mid-request: the client hears unavailable, not
	// silence. w3 is the only worker of "hang".
	w3 := c.startWorker("w3", "hang,hang-idem")
	errCh := make(chan error, 1)
	go func() { _, err := a.Request(ctx, "hang", nil); errCh <- err }()
	waitFor(t, 10*time.Second, "w3 to take the request", func() bool { return w3.countLines("got hang ") == 1 })
	c.kill(w3)
	select {
	case err := <-errCh:
		wantErr(err, wire.CodeUnavailable, "")
	case <-time.After(15 * time.Second):
		t.Fatal("no answer 15s after the worker handling the request was killed")
	}

	// An idempotent route is retried on another worker instead: w1 answers
	// hang-idem at once, w4 takes them and hangs until killed.
	w4 := c.startWorker("w4", "hang-idem")
	const n = 6
	answers := make(chan error, n)
	byWorker := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			raw, err := a.Request(ctx, "hang-idem", nil)
			var w whoami
			if err == nil {
				err = json.Unmarshal(raw, &w)
			}
			byWorker <- w.Worker
			answers <- err
		}()
	}
	waitFor(t, 10*time.Second, "w4 to take a request", func() bool { return w4.countLines("got hang-idem ") >= 1 })
	taken := w4.countLines("got hang-idem ")
	c.kill(w4)
	for i := 0; i < n; i++ {
		select {
		case err := <-answers:
			if w := <-byWorker; err != nil || w != "w1" {
				t.Fatalf("hang-idem: %q, %v; want every request answered by w1 (w4 took %d)", w, err, taken)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("hang-idem: %d of %d answered 15s after w4 was killed", i, n)
		}
	}
	if w1.countLines("got hang-idem ") != n {
		t.Fatalf("w1 took %d hang-idem requests, want all %d", w1.countLines("got hang-idem "), n)
	}
}
