package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
	hraft "github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A Raft call after its node closed parks for good (raft/store.go); a
	// future hashicorp/raft never answers, queued as it shut down
	// (hashicorp/raft#498), leaves the goroutine of raft.Node.wait that
	// waits on it blocked for good (wait itself gives up on it).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/comethq/comet/raft.parkForever"),
		goleak.IgnoreAnyFunction("github.com/comethq/comet/raft.(*Node).wait.func1"))
}

var hubLog = flag.Bool("hublog", false, "log the hubs' slog output (debug level) to stderr")

// testMaxMessageBytes is the harness's Config.MaxMessageBytes, small so that
// over-size input is cheap to build.
const testMaxMessageBytes = 1024

// waitFor polls cond every 20ms until it holds, or fails the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	eventually(t, d, func() error {
		if cond() {
			return nil
		}
		return errors.New(what)
	})
}

// eventually polls cond every 20ms until it returns nil, or fails the test
// after d with the last error cond returned.
func eventually(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hub is one in-process hub: its channel log, Raft node on loopback TCP,
// broker service and HTTP API server.
type hub struct {
	id   string
	api  string // the HTTP API address, host:port
	log  *log.Log
	node *raft.Node
	svc  *broker.Service

	srv       *http.Server
	serveDone chan struct{}
	conns     sync.WaitGroup // the server's connections, until closed
	cancelRun context.CancelFunc
	runDone   chan struct{}

	// With cluster.gated: the gates of the hub's Raft connections and of
	// its API's, and its Raft transport, closed after the node.
	raftGate, apiGate *gate
	trans             *hraft.NetworkTransport

	mu      sync.Mutex
	stopped bool
}

// stop shuts the hub down in reverse order of opening: the HTTP server (and
// its connections), the service, the Raft node, the log. It is idempotent.
func (h *hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	h.stopped = true
	h.srv.Close()
	<-h.serveDone
	// Close does not wait for the connections' goroutines: a handler may
	// still be returning (its context is canceled), or the server lingers
	// after answering an over-size body. Wait for them, boundedly.
	done := make(chan struct{})
	go func() { h.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "hub %s: HTTP connections still open 15s after Close\n", h.id)
	}
	h.svc.Close()
	h.cancelRun()
	<-h.runDone
	h.node.Close()
	if h.trans != nil {
		h.trans.CloseStreams()
		h.trans.Close()
	}
	h.log.Close()
}

func (h *hub) isStopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped
}

// cluster is a set of hubs plus an HTTP client to talk to them.
type cluster struct {
	t      testing.TB
	cfg    broker.Config // template for every hub's service config
	hubs   []*hub
	client *http.Client
	// production runs hubs as `comet hub` does (1s Raft timeouts, the
	// channel log with DeferSync) instead of the fast test settings.
	production bool
	// gated puts each hub's Raft and API connections behind gates
	// (pause_test.go), to cut a hub off or pause it.
	gated bool
}

// clusterOption adjusts the service config template of a cluster.
type clusterOption func(*broker.Config)

func newCluster(t testing.TB, opts ...clusterOption) *cluster {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second}
	c := &cluster{
		t:      t,
		cfg:    broker.Config{MaxMessageBytes: testMaxMessageBytes, BusSettle: time.Millisecond},
		client: &http.Client{Timeout: 30 * time.Second, Transport: tr},
	}
	for _, o := range opts {
		o(&c.cfg)
	}
	// Registered first, so it runs after every hub is stopped.
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// newCluster3 starts h1 as a one-hub cluster, then adds h2 and h3 through
// h1's API exactly as `comet hub --join` does, and waits until all three are
// registered, ready and agree on the leader.
func newCluster3(t testing.TB, opts ...clusterOption) *cluster {
	t.Helper()
	c := newCluster(t, opts...)
	c.start3()
	return c
}

// start3 starts the three hubs of newCluster3.
func (c *cluster) start3() {
	t := c.t
	t.Helper()
	h1 := c.start("h1", true)
	waitFor(t, 10*time.Second, "h1 to be ready", func() bool { return c.ready(h1) })
	for _, id := range []string{"h2", "h3"} {
		h := c.start(id, false)
		c.join(h1.api, h)
	}
	c.waitRegistered(3)
	// Runs before the hubs stop: on failure, say what each hub thinks.
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.alive() {
				lid, _ := h.node.Leader()
				t.Logf("%s: state %s, leader %q, indexes %+v, leader changes %d",
					h.id, h.node.State(), lid, h.node.Indexes(), h.node.LeaderChanges())
			}
		}
	})
}

// start starts a hub. With bootstrap, it bootstraps a cluster of its own;
// otherwise it waits to be added.
func (c *cluster) start(id string, bootstrap bool) *hub {
	c.t.Helper()
	var peers []raft.Peer
	if bootstrap {
		peers = []raft.Peer{{ID: id, Addr: "127.0.0.1:0"}}
	}
	return c.startAt(id, "127.0.0.1:0", peers)
}

// startAt starts a hub with Raft on addr; peers bootstraps a cluster (nil:
// it waits to be added).
func (c *cluster) startAt(id, addr string, peers []raft.Peer) *hub {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	if *hubLog {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "hub", id)
	}
	l, err := log.Open(log.Config{Path: filepath.Join(dir, "channels.db"), Logger: logger, DeferSync: c.production})
	if err != nil {
		t.Fatal(err)
	}
	// The API listener comes before the service, which must know its
	// address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	var (
		raftGate, apiGate *gate
		trans             *hraft.NetworkTransport
	)
	if c.gated {
		raftGate, apiGate = newGate(), newGate()
		ln = &gatedListener{ln, apiGate}
		if trans, err = newGatedTransport(raftGate); err != nil {
			ln.Close()
			l.Close()
			t.Fatal(err)
		}
	}
	timeout := 200 * time.Millisecond
	if c.production {
		timeout = time.Second
	}
	// Wired as `comet hub` wires it: the commit stream observes the FSM.
	stream := broker.NewStream(0, 0)
	rcfg := raft.Config{
		ID: id, Dir: filepath.Join(dir, "raft"), Addr: addr, Peers: peers, Log: l, Observer: stream,
		HeartbeatTimeout: timeout, ElectionTimeout: timeout, LeaderLeaseTimeout: timeout,
		Logger: logger, NoSync: os.Getenv("BENCH_RAFT_NOSYNC") != "", Secret: c.cfg.Secret,
	}
	if trans != nil {
		rcfg.Transport = trans
	}
	node, err := raft.New(rcfg)
	if err != nil {
		if trans != nil {
			trans.Close()
		}
		ln.Close()
		l.Close()
		t.Fatal(err)
	}
	cfg := c.cfg
	cfg.Node, cfg.API, cfg.Logger, cfg.Stream = node, ln.Addr().String(), logger, stream
	svc, err := broker.New(cfg)
	if err != nil {
		node.Close()
		if trans != nil {
			trans.Close()
		}
		ln.Close()
		l.Close()
		t.Fatal(err)
	}
	h := &hub{
		id: id, api: cfg.API, log: l, node: node, svc: svc,
		raftGate: raftGate, apiGate: apiGate, trans: trans,
		srv:       &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second},
		serveDone: make(chan struct{}),
		runDone:   make(chan struct{}),
	}
	h.srv.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew: // on the Serve goroutine, so never after Serve returned
			h.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			h.conns.Done()
		}
	}
	var ctx context.Context
	ctx, h.cancelRun = context.WithCancel(context.Background())
	go func() { defer close(h.runDone); svc.Run(ctx) }()
	go func() { defer close(h.serveDone); _ = h.srv.Serve(ln) }()
	c.hubs = append(c.hubs, h)
	t.Cleanup(h.stop)
	return h
}

// join asks the hub at api to add h, retrying while the cluster is busy
// (no leader yet, a configuration change in progress).
func (c *cluster) join(api string, h *hub) {
	c.t.Helper()
	req := wire.JoinRequest{ID: h.id, Raft: h.node.Addr(), API: h.api}
	eventually(c.t, 20*time.Second, func() error {
		status, body := c.do(http.MethodPost, api, "/v1/cluster/join", mustJSON(c.t, req))
		if status != http.StatusOK {
			return fmt.Errorf("join %s via %s: %d %s", h.id, api, status, body)
		}
		return nil
	})
}

// waitRegistered waits until every running hub reports n nodes with API
// addresses and live states, one leader, and knows the leader's API.
func (c *cluster) waitRegistered(n int) {
	c.t.Helper()
	eventually(c.t, 20*time.Second, func() error {
		for _, h := range c.alive() {
			st, err := c.status(h.api)
			if err != nil {
				return err
			}
			if len(st.Nodes) != n || st.Leader == "" {
				return fmt.Errorf("%s: want %d nodes and a leader: %+v", h.id, n, st)
			}
			leaders := 0
			for _, nd := range st.Nodes {
				if nd.API == "" || nd.Raft == "" || (nd.State != "leader" && nd.State != "follower") {
					return fmt.Errorf("%s: node not registered or not live: %+v", h.id, nd)
				}
				if nd.Leader {
					leaders++
				}
			}
			if leaders != 1 {
				return fmt.Errorf("%s: %d leaders in %+v", h.id, leaders, st.Nodes)
			}
			// Forwarding needs the leader's API address in this hub's
			// copy of the metadata.
			if st.LeaderAPI == "" {
				return fmt.Errorf("%s: leader %s has no API address here yet", h.id, st.Leader)
			}
		}
		return nil
	})
}

func (c *cluster) alive() []*hub {
	var out []*hub
	for _, h := range c.hubs {
		if !h.isStopped() {
			out = append(out, h)
		}
	}
	return out
}

// leader waits for a running hub that is the Raft leader and returns it.
func (c *cluster) leader() *hub {
	c.t.Helper()
	var l *hub
	waitFor(c.t, 10*time.Second, "a leader", func() bool {
		for _, h := range c.alive() {
			if h.node.IsLeader() {
				l = h
				return true
			}
		}
		return false
	})
	return l
}

// followers returns the running hubs other than l.
func (c *cluster) followers(l *hub) []*hub {
	var out []*hub
	for _, h := range c.alive() {
		if h != l {
			out = append(out, h)
		}
	}
	return out
}

func (c *cluster) ready(h *hub) bool {
	status, _ := c.do(http.MethodGet, h.api, "/readyz", nil)
	return status == http.StatusOK
}

// do sends a request and returns the status and body; an error before an
// answer is reported as status 0 with the error as body. Safe to call from
// other goroutines.
func (c *cluster) do(method, api, path string, body []byte) (int, []byte) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+api+path, r)
	if err != nil {
		return 0, []byte(err.Error())
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Secret)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, []byte(err.Error())
	}
	return resp.StatusCode, raw
}

// publishResult is the outcome of one POST /v1/publish.
type publishResult struct {
	status int
	res    wire.PublishResponse
	err    wire.Error
	raw    []byte
}

func (c *cluster) tryPublish(api, channel, data, id string) publishResult {
	body := mustJSON(c.t, wire.PublishRequest{Channel: channel, Data: json.RawMessage(data), ID: id})
	return c.publishRaw(api, body)
}

func (c *cluster) publishRaw(api string, body []byte) publishResult {
	status, raw := c.do(http.MethodPost, api, "/v1/publish", body)
	r := publishResult{status: status, raw: raw}
	if status == http.StatusOK {
		if err := json.Unmarshal(raw, &r.res); err != nil {
			r.status = 0
			r.raw = []byte(fmt.Sprintf("bad answer %q: %v", raw, err))
		}
	} else {
		_ = json.Unmarshal(raw, &r.err)
	}
	return r
}

// publish publishes and fails the test unless it succeeds; with an id it
// retries retryable answers (a leader stepping down on a loaded machine)
// for up to 20s, through the same hub. Safe to call from other goroutines
// (it uses Errorf).
func (c *cluster) publish(api, channel, data, id string) (wire.PublishResponse, bool) {
	if id != "" {
		return c.publishRetry([]string{api}, channel, data, id)
	}
	r := c.tryPublish(api, channel, data, id)
	if r.status != http.StatusOK {
		c.t.Errorf("publish %s to %s via %s: %d %s", data, channel, api, r.status, r.raw)
		return wire.PublishResponse{}, false
	}
	return r.res, true
}

// messages reads a channel through a hub's API.
func (c *cluster) messages(api, channel string, from uint64, limit int) (wire.MessagesResponse, int, []byte) {
	path := fmt.Sprintf("/v1/channels/%s/messages?from=%d&limit=%d", channel, from, limit)
	status, raw := c.do(http.MethodGet, api, path, nil)
	var m wire.MessagesResponse
	if status == http.StatusOK {
		if err := json.Unmarshal(raw, &m); err != nil {
			c.t.Fatalf("GET %s: %v in %q", path, err, raw)
		}
	}
	return m, status, raw
}

// readAll reads every message of a channel through a hub's API, page by
// page.
func (c *cluster) readAll(api, channel string) (wire.MessagesResponse, error) {
	var all wire.MessagesResponse
	from := uint64(1)
	for {
		m, status, raw := c.messages(api, channel, from, 300)
		if status != http.StatusOK {
			return all, fmt.Errorf("read %s from %d: %d %s", channel, from, status, raw)
		}
		all.Epoch, all.First, all.Next = m.Epoch, m.First, m.Next
		all.Messages = append(all.Messages, m.Messages...)
		if len(m.Messages) == 0 || m.Messages[len(m.Messages)-1].Offset+1 >= m.Next {
			return all, nil
		}
		from = m.Messages[len(m.Messages)-1].Offset + 1
	}
}

func (c *cluster) status(api string) (wire.ClusterStatus, error) {
	status, raw := c.do(http.MethodGet, api, "/v1/cluster", nil)
	var st wire.ClusterStatus
	if status != http.StatusOK {
		return st, fmt.Errorf("GET /v1/cluster on %s: %d %s", api, status, raw)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("GET /v1/cluster on %s: %v in %q", api, err, raw)
	}
	return st, nil
}

// metrics fetches GET /metrics and returns the samples of the text format
// by their full name with labels, e.g. `comet_publish_total{result="ok"}`.
func (c *cluster) metrics(api string) map[string]float64 {
	c.t.Helper()
	status, raw := c.do(http.MethodGet, api, "/metrics", nil)
	if status != http.StatusOK {
		c.t.Fatalf("GET /metrics on %s: %d %s", api, status, raw)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			c.t.Fatalf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			c.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkDense checks that msgs hold exactly the offsets from..to, in order.
func checkDense(t testing.TB, what string, msgs []wire.Message, from, to uint64) {
	t.Helper()
	if want := int(to - from + 1); len(msgs) != want {
		t.Fatalf("%s: %d messages, want %d (offsets %d..%d)", what, len(msgs), want, from, to)
	}
	for i, m := range msgs {
		if m.Offset != from+uint64(i) {
			t.Fatalf("%s: message %d has offset %d, want %d", what, i, m.Offset, from+uint64(i))
		}
	}
}

// errorBody parses an error answer and checks its shape.
func errorBody(t testing.TB, what string, raw []byte) wire.Error {
	t.Helper()
	var e wire.Error
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&e); err != nil {
		t.Errorf("%s: error body is not JSON: %v: %q", what, err, raw)
		return e
	}
	if e.Code == "" || strings.TrimSpace(e.Message) == "" {
		t.Errorf("%s: error body lacks code or message: %q", what, raw)
	}
	return e
}

// retryable reports whether a publish answer leaves the outcome unknown or
// the cluster briefly unavailable (an election under load), so that a
// client retries with the same id, as CONTRACT.md tells clients to.
func retryable(status int) bool {
	return status == 0 || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// publishRetry publishes through apis (starting at apis[0], rotating on
// failure) with an id, retrying retryable answers for up to 20s. It reports
// failures with Errorf, so it is safe in other goroutines.
func (c *cluster) publishRetry(apis []string, channel, data, id string) (wire.PublishResponse, bool) {
	if id == "" {
		c.t.Errorf("publishRetry needs an id")
		return wire.PublishResponse{}, false
	}
	deadline := time.Now().Add(20 * time.Second)
	var r publishResult
	for i := 0; ; i++ {
		r = c.tryPublish(apis[i%len(apis)], channel, data, id)
		if r.status == http.StatusOK {
			return r.res, true
		}
		if !retryable(r.status) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Errorf("publish %s (id %s) to %s: %d %s", data, id, channel, r.status, r.raw)
	return wire.PublishResponse{}, false
}

// apis returns the API addresses of hubs.
func apis(hubs ...*hub) []string {
	out := make([]string, len(hubs))
	for i, h := range hubs {
		out[i] = h.api
	}
	return out
}
