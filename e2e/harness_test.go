package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// cometBin is the comet binary TestMain built, workerBin the test worker
// (e2e/testworker); empty under -short.
var cometBin, workerBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	dir, err := os.MkdirTemp("", "comet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	goTool := findGo()
	build := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator),
		"github.com/comethq/comet/cmd/comet", "github.com/comethq/comet/e2e/testworker")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %s build: %v\n%s", goTool, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	cometBin, workerBin = filepath.Join(dir, "comet"), filepath.Join(dir, "testworker")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// findGo returns the go tool of the toolchain running the tests.
func findGo() string {
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", "go")
		if runtime.GOOS == "windows" {
			p += ".exe"
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// needBinary skips the test under -short.
func needBinary(t *testing.T) {
	t.Helper()
	if testing.Short() || cometBin == "" {
		t.Skip("e2e tests run real comet processes; skipped with -short")
	}
}

// cleanEnv is the environment for comet processes: the test's, without any
// COMET_ variable that could change how a hub behaves.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COMET_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// ---------------------------------------------------------------------------
// Polling

// poll calls cond every 50ms until it returns true or d passes.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor fails the test when cond does not hold within d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	if !poll(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	if el := time.Since(start); el > d/2 {
		t.Logf("waited %v for %s", el.Round(time.Millisecond), what)
	}
}

// freeAddr returns a 127.0.0.1 address with a port nobody listened on a
// moment ago. Another process may take it before us: startCluster retries.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// freeAddrs returns n distinct free addresses, none of them in used, and
// adds them to used. The listeners are held until all n are found, since
// the kernel may hand out a port just closed again.
func freeAddrs(t *testing.T, n int, used map[string]bool) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for len(addrs) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		if a := ln.Addr().String(); !used[a] {
			used[a] = true
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// ---------------------------------------------------------------------------
// Hubs

// hub is one `comet hub` process, restartable on the same data directory
// and ports.
type hub struct {
	id, data, raft, api string
	args                []string
	logPath             string
	bin                 string // the program (default: comet)
	// wrap, when set, is run instead, with the program and its arguments
	// after its own (e.g. ip netns exec NAME).
	wrap []string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

func (h *hub) running() bool {
	if h.done == nil {
		return false
	}
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

func (h *hub) exitCode() int {
	if h.cmd == nil || h.cmd.ProcessState == nil {
		return -1
	}
	return h.cmd.ProcessState.ExitCode()
}

// logTail returns the last n lines of the hub's log.
func (h *hub) logTail(n int) string {
	raw, err := os.ReadFile(h.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (h *hub) logContains(s string) bool {
	raw, _ := os.ReadFile(h.logPath)
	return bytes.Contains(raw, []byte(s))
}

// cluster is a set of hubs of one test, with an HTTP client to reach them.
type cluster struct {
	t      *testing.T
	dir    string
	hubs   []*hub
	client *http.Client
	used   map[string]bool // addresses given to hubs
	// discarded are hubs of failed starts (a port was taken): only their
	// logs matter.
	discarded []*hub
	// gateways are `comet gateway` processes (api is their listen address).
	gateways []*hub
	// secret is the cluster's --secret, given to every process through
	// COMET_SECRET (gateways also get COMET_ALLOW_ANONYMOUS=true), and sent
	// by the test's own API calls.
	secret string
	// scheme is how the test reaches hubs and gateways: "http" (when
	// empty) or "https" (client then trusts their CA).
	scheme string
	// hubArgs, when set, gives each hub more arguments (its TLS files).
	hubArgs func(id string) []string
	// extraEnv is added to the environment of the cluster's processes.
	extraEnv []string
}

// env is the environment of the cluster's processes and of tools run
// against it.
func (c *cluster) env() []string {
	return append([]string{"COMET_SECRET=" + c.secret, "COMET_ALLOW_ANONYMOUS=true"}, c.extraEnv...)
}

func newClient() *http.Client {
	return &http.Client{
		Timeout: 8 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// newCluster returns an empty cluster whose processes are all killed when
// the test ends, and whose logs are printed if it failed.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	needBinary(t)
	c := &cluster{t: t, dir: t.TempDir(), client: newClient(), used: map[string]bool{},
		secret: fmt.Sprintf("e2e-%d-%d", os.Getpid(), time.Now().UnixNano())}
	// Cleanups run last-registered first: kill, then print the logs, then
	// (registered by t.TempDir above) remove the directory.
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.discarded {
				t.Logf("--- log of %s (%s, a failed start), last 10 lines ---\n%s", h.id, h.api, h.logTail(10))
			}
			for _, h := range append(c.hubs, c.gateways...) {
				t.Logf("--- log of %s (%s), last 60 lines ---\n%s", h.id, h.api, h.logTail(60))
			}
		}
	})
	t.Cleanup(func() {
		for _, h := range append(c.hubs, c.gateways...) {
			if h.running() {
				_ = h.cmd.Process.Kill()
				<-h.done
			}
		}
		c.client.CloseIdleConnections()
	})
	return c
}

// startCluster starts n hubs h1..hn bootstrapped with --peers, and waits
// until they have a leader and are all ready. When a port turns out to be
// taken, it starts over on other ports.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := newCluster(t)
	c.startHubs(n, func(attempt int, id string) string {
		return filepath.Join(c.dir, fmt.Sprintf("try%d", attempt), id)
	})
	return c
}

// startHubs starts n hubs h1..hn of c bootstrapped with --peers, each with
// its data directory where dataDir says, and waits until they have a
// leader and are all ready. When a port turns out to be taken, it starts
// over on other ports (calling dataDir again with the next attempt).
func (c *cluster) startHubs(n int, dataDir func(attempt int, id string) string) {
	t := c.t
	t.Helper()
	for attempt := 1; ; attempt++ {
		hubs := make([]*hub, n)
		addrs := freeAddrs(t, 2*n, c.used)
		var peers []string
		for i := range hubs {
			id := fmt.Sprintf("h%d", i+1)
			hubs[i] = &hub{
				id:      id,
				data:    dataDir(attempt, id),
				raft:    addrs[2*i],
				api:     addrs[2*i+1],
				logPath: filepath.Join(c.dir, fmt.Sprintf("try%d-%s.log", attempt, id)),
			}
			peers = append(peers, id+"="+hubs[i].raft)
		}
		for _, h := range hubs {
			h.args = []string{"hub", "--id", h.id, "--data", h.data, "--raft", h.raft, "--api", h.api,
				"--peers", strings.Join(peers, ",")}
			if c.hubArgs != nil {
				h.args = append(h.args, c.hubArgs(h.id)...)
			}
		}
		c.hubs = append(c.hubs, hubs...)
		for _, h := range hubs {
			c.start(h)
		}
		if err := c.waitHealthy(hubs, 20*time.Second); err != nil {
			if attempt < 4 && c.portConflict(hubs) {
				t.Logf("attempt %d: a port was taken; starting over: %v", attempt, err)
				c.discard(hubs...)
				continue
			}
			t.Fatalf("starting the cluster: %v", err)
		}
		break
	}
	c.waitLeader(nil, 30*time.Second)
	c.waitReady(c.runningHubs(), 30*time.Second)
}

// addHub starts one more hub with the given extra arguments (such as
// --join) on fresh ports and a fresh data directory.
func (c *cluster) addHub(id string, extra ...string) *hub {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		addrs := freeAddrs(c.t, 2, c.used)
		h := &hub{
			id:      id,
			data:    filepath.Join(c.dir, fmt.Sprintf("%s-try%d", id, attempt)),
			raft:    addrs[0],
			api:     addrs[1],
			logPath: filepath.Join(c.dir, fmt.Sprintf("%s-try%d.log", id, attempt)),
		}
		h.args = append([]string{"hub", "--id", h.id, "--data", h.data, "--raft", h.raft, "--api", h.api}, extra...)
		c.hubs = append(c.hubs, h)
		c.start(h)
		if err := c.waitHealthy([]*hub{h}, 20*time.Second); err != nil {
			if attempt < 4 && c.portConflict([]*hub{h}) {
				c.t.Logf("attempt %d: a port was taken; starting over: %v", attempt, err)
				c.discard(h)
				continue
			}
			c.t.Fatalf("starting %s: %v", id, err)
		}
		return h
	}
}

// discard kills hubs and takes them out of the cluster.
func (c *cluster) discard(hubs ...*hub) {
	for _, h := range hubs {
		c.kill(h)
		c.hubs = slices.DeleteFunc(c.hubs, func(x *hub) bool { return x == h })
		c.discarded = append(c.discarded, h)
	}
}

func (c *cluster) portConflict(hubs []*hub) bool {
	for _, h := range hubs {
		if h.logContains("address already in use") {
			return true
		}
	}
	return false
}

// start starts h's process, appending its output to its log file.
func (c *cluster) start(h *hub) {
	c.t.Helper()
	if h.running() {
		c.t.Fatalf("start %s: already running", h.id)
	}
	f, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close() // the child has its own copy
	bin := h.bin
	if bin == "" {
		bin = cometBin
	}
	fmt.Fprintf(f, "=== e2e: %s start %s: %s %s\n", time.Now().Format(time.RFC3339Nano), h.id, filepath.Base(bin), strings.Join(h.args, " "))
	cmd := exec.Command(bin, h.args...)
	if len(h.wrap) > 0 {
		cmd = exec.Command(h.wrap[0], append(append(h.wrap[1:len(h.wrap):len(h.wrap)], bin), h.args...)...)
	}
	cmd.Env = cleanEnv(c.env()...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", h.id, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.cmd, h.done = cmd, done
}

// restart starts hubs again on their data directories and ports, and
// waits until they answer. A port may have been taken meanwhile (by an
// outgoing connection of any process): a hub that fails for that is
// started again for a while.
func (c *cluster) restart(hubs ...*hub) {
	c.t.Helper()
	for _, h := range hubs {
		c.start(h)
	}
	for _, h := range hubs {
		for attempt := 1; ; attempt++ {
			err := c.waitHealthy([]*hub{h}, 20*time.Second)
			if err == nil {
				break
			}
			if attempt == 10 || h.running() || !strings.Contains(h.logTail(3), "address already in use") {
				c.t.Fatalf("restart %s: %v", h.id, err)
			}
			c.t.Logf("restart %s: a port is taken; trying again: %v", h.id, err)
			time.Sleep(500 * time.Millisecond)
			c.start(h)
		}
	}
}

// kill sends SIGKILL to h and waits for it to exit.
func (c *cluster) kill(h *hub) {
	c.t.Helper()
	if !h.running() {
		return
	}
	_ = h.cmd.Process.Kill()
	<-h.done
}

// stop sends SIGTERM to h and waits up to d for it to exit; it fails the
// test unless h exits with status 0 in time. It returns how long h took.
func (c *cluster) stop(h *hub, d time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM %s: %v", h.id, err)
	}
	select {
	case <-h.done:
	case <-time.After(d):
		_ = h.cmd.Process.Kill()
		<-h.done
		c.t.Fatalf("%s did not exit within %v of SIGTERM", h.id, d)
	}
	took := time.Since(start)
	if code := h.exitCode(); code != 0 {
		c.t.Fatalf("%s exited with status %d after SIGTERM, want 0", h.id, code)
	}
	return took
}

func (c *cluster) runningHubs() []*hub {
	var out []*hub
	for _, h := range c.hubs {
		if h.running() {
			out = append(out, h)
		}
	}
	return out
}

// waitHealthy waits until every hub answers GET /healthz, and fails fast
// when one exits.
func (c *cluster) waitHealthy(hubs []*hub, d time.Duration) error {
	var exited *hub
	ok := poll(d, func() bool {
		all := true
		for _, h := range hubs {
			if !h.running() {
				exited = h
				return true
			}
			if code, _, err := c.get(h.api, "/healthz"); err != nil || code != http.StatusOK {
				all = false
			}
		}
		return all
	})
	switch {
	case exited != nil:
		return fmt.Errorf("%s exited with status %d: %s", exited.id, exited.exitCode(), exited.logTail(5))
	case !ok:
		return fmt.Errorf("hubs not healthy within %v", d)
	}
	return nil
}

// waitReady waits until every hub answers GET /readyz with 200.
func (c *cluster) waitReady(hubs []*hub, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, "hubs ready", func() bool {
		for _, h := range hubs {
			if code, _, err := c.get(h.api, "/readyz"); err != nil || code != http.StatusOK {
				return false
			}
		}
		return true
	})
}

// localStatus is GET /v1/cluster?local=1 of one hub.
func (c *cluster) localStatus(h *hub) (wire.ClusterStatus, error) {
	var st wire.ClusterStatus
	code, body, err := c.get(h.api, "/v1/cluster?local=1")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("%s: GET /v1/cluster?local=1: %d %s", h.id, code, body)
	}
	return st, json.Unmarshal(body, &st)
}

// clusterStatus is GET /v1/cluster of one hub.
func (c *cluster) clusterStatus(h *hub) (wire.ClusterStatus, error) {
	var st wire.ClusterStatus
	code, body, err := c.get(h.api, "/v1/cluster")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("%s: GET /v1/cluster: %d %s", h.id, code, body)
	}
	return st, json.Unmarshal(body, &st)
}

// currentLeader returns the hub that says it leads, when every running hub
// agrees on it and knows its API address; nil otherwise.
func (c *cluster) currentLeader() *hub {
	var leader *hub
	running := c.runningHubs()
	for _, h := range running {
		st, err := c.localStatus(h)
		if err != nil || st.Leader == "" || st.LeaderAPI == "" {
			return nil
		}
		if st.State == "leader" {
			leader = h
		}
		if leader != nil && st.Leader != leader.id {
			return nil
		}
	}
	if leader == nil {
		return nil
	}
	for _, h := range running {
		if st, err := c.localStatus(h); err != nil || st.Leader != leader.id {
			return nil
		}
	}
	return leader
}

// waitLeader waits for a leader that every running hub agrees on, other
// than not (when given).
func (c *cluster) waitLeader(not *hub, d time.Duration) *hub {
	c.t.Helper()
	var leader *hub
	waitFor(c.t, d, "a leader", func() bool {
		leader = c.currentLeader()
		return leader != nil && leader != not
	})
	return leader
}

// ---------------------------------------------------------------------------
// HTTP

func (c *cluster) get(api, path string) (int, []byte, error) {
	return c.do(http.MethodGet, api, path, nil)
}

func (c *cluster) do(method, api, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	scheme := c.scheme
	if scheme == "" {
		scheme = "http"
	}
	req, err := http.NewRequest(method, scheme+"://"+api+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, data, err
}

// errPermanent marks a publish answer that retrying cannot change.
var errPermanent = errors.New("permanent error")

// publishOnce sends one publish to api.
func (c *cluster) publishOnce(api, channel, id string, data json.RawMessage) (wire.PublishResponse, error) {
	var res wire.PublishResponse
	body, _ := json.Marshal(wire.PublishRequest{Channel: channel, Data: data, ID: id})
	code, raw, err := c.do(http.MethodPost, api, "/v1/publish", body)
	if err != nil {
		return res, err
	}
	if code != http.StatusOK {
		err := fmt.Errorf("%s: %d %s", api, code, bytes.TrimSpace(raw))
		if code/100 == 4 && code != 499 && code != http.StatusTooManyRequests {
			err = fmt.Errorf("%w: %v", errPermanent, err)
		}
		return res, err
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("%s: bad answer %q: %v", api, raw, err)
	}
	if res.Channel != channel || res.Offset == 0 || res.Epoch == "" {
		return res, fmt.Errorf("%w: %s: odd answer %s", errPermanent, api, raw)
	}
	return res, nil
}

// publish sends a publish to a random hub (running or not), retrying with
// the same id on random hubs until one answers 200, ctx ends or attempts
// run out. It returns the answer and the number of attempts.
func (c *cluster) publish(ctx context.Context, channel, id string, data json.RawMessage) (wire.PublishResponse, int, error) {
	apis := make([]string, len(c.hubs))
	for i, h := range c.hubs {
		apis[i] = h.api
	}
	return publishRetry(ctx, c, apis, channel, id, data)
}

func publishRetry(ctx context.Context, c *cluster, apis []string, channel, id string, data json.RawMessage) (wire.PublishResponse, int, error) {
	const maxAttempts = 200
	var last error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		res, err := c.publishOnce(apis[rand.IntN(len(apis))], channel, id, data)
		if err == nil {
			return res, attempt, nil
		}
		if errors.Is(err, errPermanent) {
			return res, attempt, err
		}
		last = err
		select {
		case <-ctx.Done():
			return res, attempt, fmt.Errorf("%w; last error: %v", ctx.Err(), last)
		case <-time.After(50*time.Millisecond + rand.N(150*time.Millisecond)):
		}
	}
	return wire.PublishResponse{}, maxAttempts, fmt.Errorf("no answer in %d attempts; last error: %v", maxAttempts, last)
}

// mustPublish publishes with retries for up to 30s and fails the test
// when it is not acknowledged.
// publishRecorded publishes payload(id, n) to ch until acknowledged,
// recording it in led as sent and then as acknowledged.
func (c *cluster) publishRecorded(led *ledger, ch, id string, n int) wire.PublishResponse {
	c.t.Helper()
	data := payload(id, n)
	led.addSent(id, ch, data)
	res := c.mustPublish(ch, id, data)
	led.addAck(ack{channel: ch, id: id, offset: res.Offset, data: data})
	return res
}

func (c *cluster) mustPublish(channel, id string, data json.RawMessage) wire.PublishResponse {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, _, err := c.publish(ctx, channel, id, data)
	if err != nil {
		c.t.Fatalf("publish %s/%s: %v", channel, id, err)
	}
	return res
}

// readAll reads every message of channel from one hub, paging.
func (c *cluster) readAll(h *hub, channel string) (wire.MessagesResponse, error) {
	var all wire.MessagesResponse
	from := uint64(1)
	for page := 0; ; page++ {
		code, raw, err := c.get(h.api, fmt.Sprintf("/v1/channels/%s/messages?from=%d&limit=10000", channel, from))
		if err != nil {
			return all, err
		}
		if code != http.StatusOK {
			return all, fmt.Errorf("%s: read %s: %d %s", h.id, channel, code, raw)
		}
		var res wire.MessagesResponse
		if err := json.Unmarshal(raw, &res); err != nil {
			return all, fmt.Errorf("%s: read %s: %v", h.id, channel, err)
		}
		if page == 0 {
			all.Epoch, all.First = res.Epoch, res.First
		} else if res.Epoch != all.Epoch {
			return all, fmt.Errorf("%s: read %s: epoch changed from %s to %s while paging", h.id, channel, all.Epoch, res.Epoch)
		}
		all.Next = res.Next
		all.Messages = append(all.Messages, res.Messages...)
		if len(res.Messages) == 0 || res.Messages[len(res.Messages)-1].Offset+1 >= res.Next {
			return all, nil
		}
		from = res.Messages[len(res.Messages)-1].Offset + 1
	}
}

// waitNext waits until h's channel has every offset below next.
func (c *cluster) waitNext(h *hub, channel string, next uint64, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, d, fmt.Sprintf("%s to hold %s up to offset %d", h.id, channel, next-1), func() bool {
		code, raw, err := c.get(h.api, "/v1/channels/"+channel+"/messages?limit=0")
		if err != nil || code != http.StatusOK {
			return false
		}
		var res wire.MessagesResponse
		return json.Unmarshal(raw, &res) == nil && res.Next >= next
	})
}

// runComet runs the comet binary to completion (at most 30s) and returns
// its exit status, stdout and stderr.
func runComet(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cometBin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("comet %s: still running after 30s\nstderr: %s", strings.Join(args, " "), stderr.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("comet %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// ---------------------------------------------------------------------------
// Load and verification

// sent is a message a test published (or tried to).
type sent struct {
	channel string
	data    json.RawMessage
}

// ack is an acknowledged publish.
type ack struct {
	channel, id string
	offset      uint64
	data        json.RawMessage
	at          time.Time // when it was acknowledged (zero if not recorded)
	triedAt     time.Time // when the attempt that was acknowledged was sent (zero if not recorded)
	via         string    // the address that acknowledged it (empty if not recorded)
}

// ledger records what a test published and what was acknowledged.
type ledger struct {
	mu   sync.Mutex
	sent map[string]sent // by id
	acks []ack
}

func newLedger() *ledger { return &ledger{sent: map[string]sent{}} }

func (l *ledger) addSent(id, channel string, data json.RawMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[id] = sent{channel: channel, data: data}
}

func (l *ledger) addAck(a ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks = append(l.acks, a)
}

func (l *ledger) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

func (l *ledger) snapshot() (map[string]sent, []ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := make(map[string]sent, len(l.sent))
	for k, v := range l.sent {
		s[k] = v
	}
	return s, append([]ack(nil), l.acks...)
}

// payload is the data of every message the tests publish: the id inside
// lets a stored message be traced back to its publish.
func payload(id string, n int) json.RawMessage {
	raw, _ := json.Marshal(map[string]any{"id": id, "n": n, "pad": strings.Repeat("x", n%37)})
	return raw
}

// idOf is the id in a message's data: read up to it, not the whole data
// (the full-disk test's messages are 60 KB, and the race detector makes
// decoding them all slow).
func idOf(data json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return ""
		}
		if k == "id" {
			var id string
			_ = dec.Decode(&id)
			return id
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// load publishes from concurrent workers through random hubs, with
// retries, recording everything in a ledger.
type load struct {
	c       *cluster
	led     *ledger
	ctx     context.Context
	cancel  context.CancelFunc
	stopped chan struct{} // closed by stop: take no new publishes
	wg      sync.WaitGroup

	mu       sync.Mutex
	failures []string
	attempts int
}

type loadConfig struct {
	prefix   string   // ids are prefix-n
	channels []string // message n goes to channels[n%len]
	total    int      // publishes in all; 0: until stop
	workers  int
	pace     time.Duration // mean pause between two publishes of a worker
	deadline time.Duration // for the whole load
}

func startLoad(c *cluster, led *ledger, cfg loadConfig) *load {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.deadline)
	l := &load{c: c, led: led, ctx: ctx, cancel: cancel, stopped: make(chan struct{})}
	// Should the test end early, stop the workers before the hubs go.
	c.t.Cleanup(func() { cancel(); l.wg.Wait() })
	apis := make([]string, len(c.hubs))
	for i, h := range c.hubs {
		apis[i] = h.api
	}
	var next struct {
		sync.Mutex
		n int
	}
	for w := 0; w < cfg.workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stopped:
					return
				case <-ctx.Done():
					return
				default:
				}
				next.Lock()
				n := next.n
				next.n++
				next.Unlock()
				if cfg.total > 0 && n >= cfg.total {
					return
				}
				id := fmt.Sprintf("%s-%d", cfg.prefix, n)
				ch := cfg.channels[n%len(cfg.channels)]
				data := payload(id, n)
				led.addSent(id, ch, data)
				res, attempts, err := publishRetry(ctx, c, apis, ch, id, data)
				l.mu.Lock()
				l.attempts += attempts
				if err != nil {
					l.failures = append(l.failures, fmt.Sprintf("%s/%s: %v", ch, id, err))
				}
				l.mu.Unlock()
				if err == nil {
					led.addAck(ack{channel: ch, id: id, offset: res.Offset, data: data})
				}
				if cfg.pace > 0 {
					time.Sleep(cfg.pace/2 + rand.N(cfg.pace))
				}
			}
		}()
	}
	return l
}

// stop makes the workers finish their current publish and return.
func (l *load) stop() {
	close(l.stopped)
	l.wait()
}

// wait waits for the workers and reports publishes that were never
// acknowledged.
func (l *load) wait() {
	l.wg.Wait()
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	reportUnacked(l.c.t, l.failures)
}

// reportUnacked fails t for each publish that was never acknowledged (the
// first ten, then a count).
func reportUnacked(t *testing.T, failures []string) {
	t.Helper()
	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more unacknowledged publishes", len(failures)-10)
			return
		}
		t.Errorf("publish never acknowledged: %s", f)
	}
}

// verify checks guarantees 1 and 4 on every given hub for the given
// channels: every acknowledged message is stored at its offset with its
// data, offsets are dense from 1, every stored message is one the test
// sent and is stored once, and all hubs hold the same messages. It first
// publishes a sentinel to each channel and waits until every hub has it,
// so that every hub has applied everything published before. It returns
// the channels as the first hub holds them.
func (c *cluster) verify(led *ledger, hubs []*hub, channels []string) map[string]wire.MessagesResponse {
	c.t.Helper()
	t := c.t
	sentinels := map[string]uint64{}
	for _, ch := range channels {
		res := c.publishRecorded(led, ch, "sentinel-"+ch+"-"+fmt.Sprint(time.Now().UnixNano()), 0)
		sentinels[ch] = res.Offset
	}
	for _, h := range hubs {
		for _, ch := range channels {
			c.waitNext(h, ch, sentinels[ch]+1, 30*time.Second)
		}
	}
	sentMsgs, acks := led.snapshot()
	ref := map[string]wire.MessagesResponse{}
	for hi, h := range hubs {
		for _, ch := range channels {
			got, err := c.readAll(h, ch)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if hi == 0 {
				ref[ch] = got
			}
			unacked := c.checkChannel(h, ch, got, sentMsgs, acks)
			if hi == 0 {
				t.Logf("%s: %s holds %d messages (%d of them stored but never acknowledged)", h.id, ch, len(got.Messages), unacked)
			}
			if hi > 0 {
				r := ref[ch]
				if got.Epoch != r.Epoch {
					t.Errorf("%s: %s has epoch %s, %s has %s", h.id, ch, got.Epoch, hubs[0].id, r.Epoch)
				}
				if len(got.Messages) != len(r.Messages) || got.Next != r.Next {
					t.Errorf("%s: %s has %d messages (next %d), %s has %d (next %d)", h.id, ch, len(got.Messages), got.Next, hubs[0].id, len(r.Messages), r.Next)
					continue
				}
				for i := range got.Messages {
					if got.Messages[i].Offset != r.Messages[i].Offset || !sameJSON(got.Messages[i].Data, r.Messages[i].Data) {
						t.Errorf("%s: %s offset %d holds %s, %s holds %s", h.id, ch, got.Messages[i].Offset, got.Messages[i].Data, hubs[0].id, r.Messages[i].Data)
						break
					}
				}
			}
		}
	}
	return ref
}

// checkChannel checks one hub's copy of one channel and returns how many
// stored messages were never acknowledged.
func (c *cluster) checkChannel(h *hub, ch string, got wire.MessagesResponse, sentMsgs map[string]sent, acks []ack) int {
	t := c.t
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		errs++
		if errs <= 10 {
			t.Errorf("%s: %s: "+format, append([]any{h.id, ch}, args...)...)
		}
	}
	if got.Epoch == "" {
		fail("empty epoch")
	}
	if got.First != 1 {
		fail("first offset is %d, want 1 (nothing should be trimmed)", got.First)
	}
	if uint64(len(got.Messages)) != got.Next-1 {
		fail("holds %d messages but next is %d: offsets are not dense", len(got.Messages), got.Next)
	}
	seen := map[string]uint64{}
	for i, m := range got.Messages {
		if m.Offset != uint64(i)+1 {
			fail("message %d has offset %d, want %d (gap or disorder)", i, m.Offset, i+1)
			break
		}
		id := idOf(m.Data)
		s, ok := sentMsgs[id]
		switch {
		case !ok:
			fail("offset %d holds %s, which was never published", m.Offset, m.Data)
		case s.channel != ch:
			fail("offset %d holds %s, which was published to %s", m.Offset, m.Data, s.channel)
		case !sameJSON(s.data, m.Data):
			fail("offset %d holds %s, but %s was published with %s", m.Offset, m.Data, id, s.data)
		}
		if prev, dup := seen[id]; dup {
			fail("%s is stored twice, at offsets %d and %d (a retried publish was stored again)", id, prev, m.Offset)
		}
		seen[id] = m.Offset
	}
	acked := 0
	for _, a := range acks {
		if a.channel != ch {
			continue
		}
		acked++
		if a.offset == 0 || a.offset > uint64(len(got.Messages)) {
			fail("acknowledged %s at offset %d is missing (channel holds %d messages)", a.id, a.offset, len(got.Messages))
			continue
		}
		m := got.Messages[a.offset-1]
		if !sameJSON(m.Data, a.data) {
			fail("acknowledged %s at offset %d, but that offset holds %s", a.id, a.offset, m.Data)
		}
	}
	if errs > 10 {
		t.Errorf("%s: %s: ... %d errors in all", h.id, ch, errs)
	}
	return len(got.Messages) - acked
}
