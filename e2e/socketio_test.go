package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needSocketIOClient returns client/js, where socket.io-client is
// installed (npm ci), or skips the test; with COMET_BROWSER_TESTS=1 (as in
// CI) it fails instead.
func needSocketIOClient(t *testing.T) string {
	t.Helper()
	needNode(t)
	jsDir, err := filepath.Abs(filepath.Join("..", "client", "js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "socket.io-client")); err != nil {
		missingTool(t, "socket.io-client is not installed (npm ci in client/js): %v", err)
	}
	return jsDir
}

// nodeSIO is client/js/test/socketio/client.mjs running: a Comet client on
// socket.io-client.
type nodeSIO struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan map[string]any
	held  []map[string]any // read, not yet asked for
	log   *lockedBuffer
}

func startNodeSIO(t *testing.T, jsDir, url, channel string, from uint64, transports string) *nodeSIO {
	t.Helper()
	cmd := exec.Command("node", "test/socketio/client.mjs", url, channel, fmt.Sprint(from), transports)
	cmd.Dir = jsDir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &nodeSIO{t: t, cmd: cmd, stdin: stdin, lines: make(chan map[string]any, 1000), log: &lockedBuffer{}}
	cmd.Stderr = n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(n.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			_, _ = n.log.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				n.lines <- m
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
	})
	return n
}

func (n *nodeSIO) send(cmd string) {
	n.t.Helper()
	if _, err := io.WriteString(n.stdin, cmd+"\n"); err != nil {
		n.t.Fatal(err)
	}
}

// next returns the next line whose ev is one of evs, failing on "bad";
// lines of other kinds are held for later calls, in order.
func (n *nodeSIO) next(evs ...string) map[string]any {
	n.t.Helper()
	match := func(m map[string]any) bool {
		for _, ev := range evs {
			if m["ev"] == ev {
				return true
			}
		}
		return false
	}
	for i, m := range n.held {
		if match(m) {
			n.held = append(n.held[:i], n.held[i+1:]...)
			return m
		}
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-n.lines:
			if !ok {
				n.t.Fatalf("the node client ended:\n%s", n.log.String())
			}
			if m["ev"] == "bad" {
				n.t.Fatalf("the node client saw %v", m)
			}
			if match(m) {
				return m
			}
			n.held = append(n.held, m)
		case <-timeout:
			n.t.Fatalf("no %v from the node client in 60s:\n%s", evs, n.log.String())
		}
	}
}

// messages reads messages from..to (the client itself fails on a gap or
// a duplicate: "bad").
func (n *nodeSIO) messages(from, to uint64) {
	n.t.Helper()
	for want := from; want <= to; want++ {
		m := n.next("msg")
		if got := uint64(m["offset"].(float64)); got != want {
			n.t.Fatalf("message offset %d, want %d", got, want)
		}
	}
}

// TestSocketIONodeClient: socket.io-client (npm) against a real gateway
// process: subscribe from a position, publish with ack, a request answered
// by a worker process, and after the gateway is killed (SIGKILL) and
// started again, a resume that gets what was published meanwhile, nothing
// lost or repeated. Over polling upgraded to WebSocket, and over polling
// alone.
func TestSocketIONodeClient(t *testing.T) {
	jsDir := needSocketIOClient(t)
	c := startCluster(t, 1)
	g := c.startGateway("g1")
	w := &hub{id: "worker", bin: workerBin, logPath: filepath.Join(c.dir, "worker.log"),
		args: []string{"--hubs", c.hubs[0].api, "--name", "w1", "--routes", "whoami"}}
	c.gateways = append(c.gateways, w)
	c.start(w)
	waitFor(t, 30*time.Second, "the worker ready", func() bool { return w.logContains("\nready\n") })

	for _, transports := range []string{"polling,websocket", "polling"} {
		t.Run(transports, func(t *testing.T) {
			ch := "sio-" + strings.ReplaceAll(transports, ",", "-")
			for i := 1; i <= 5; i++ {
				c.mustPublish(ch, "", json.RawMessage(fmt.Sprint(i)))
			}
			n := startNodeSIO(t, jsDir, "http://"+g.api, ch, 3, transports)
			n.next("connected")
			if m := n.next("subscribed"); m["next"].(float64) != 6 {
				t.Fatalf("subscribed %v, want next 6", m)
			}
			n.messages(3, 5)
			n.send(`pub p6 {"n":6}`)
			if m := n.next("ack"); m["id"] != "p6" || m["offset"].(float64) != 6 {
				t.Fatalf("ack %v", m)
			}
			n.messages(6, 6)
			n.send(`req r1 whoami`)
			m := n.next("resp", "error")
			if data, _ := m["data"].(map[string]any); m["ev"] != "resp" || m["id"] != "r1" || data["worker"] != "w1" {
				t.Fatalf("request: %v", m)
			}

			// The gateway killed: published meanwhile, then started again.
			c.kill(g)
			n.next("disconnect")
			for i := 7; i <= 9; i++ {
				c.mustPublish(ch, "", json.RawMessage(fmt.Sprint(i)))
			}
			c.start(g)
			if !c.waitGatewayReady(g, 30*time.Second) {
				t.Fatalf("gateway not ready after restart:\n%s", g.logTail(20))
			}
			n.next("connected")
			if m := n.next("subscribed"); m["next"].(float64) != 10 {
				t.Fatalf("resubscribed %v, want next 10", m)
			}
			n.messages(7, 9)
			n.send(`pub p10 {"n":10}`)
			n.next("ack")
			n.messages(10, 10)
			n.send("quit")
		})
	}
}

// TestBrowserSocketIO: comet.js in Chromium with transports ['socketio']
// and socket.io-client's browser build loaded by the page (the global io):
// subscribe from a position, publish with ack, a request answered by a
// worker process, and a resume after the gateway is killed (SIGKILL) and
// started again, with what was published meanwhile, nothing lost or
// repeated.
func TestBrowserSocketIO(t *testing.T) {
	b := startBrowser(t)
	jsDir := needSocketIOClient(t)
	ioSrc, err := os.ReadFile(filepath.Join(jsDir, "node_modules", "socket.io-client", "dist", "socket.io.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, 1)
	g := c.startGateway("g1")
	w := &hub{id: "worker", bin: workerBin, logPath: filepath.Join(c.dir, "worker.log"),
		args: []string{"--hubs", c.hubs[0].api, "--name", "w1", "--routes", "whoami"}}
	c.gateways = append(c.gateways, w)
	c.start(w)
	waitFor(t, 30*time.Second, "the worker ready", func() bool { return w.logContains("\nready\n") })
	const ch = "t:sio"
	publish := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			c.mustPublish(ch, fmt.Sprintf("m%d", i), json.RawMessage(fmt.Sprint(i)))
		}
	}
	publish(1, 10)

	b.open("sio", "http://"+g.api+"/comet.js", false)
	b.eval("sio", "(0, eval)("+strconv.Quote(string(ioSrc))+"), typeof io", nil)
	var who struct{ Worker, Conn string }
	b.eval("sio", `(async () => {
		const { Comet } = await import('/comet.js');
		const c = new Comet({ transports: ['socketio'], storage: null });
		window.t = { c, got: [] };
		c.subscribe('`+ch+`', (m) => window.t.got.push(m.offset), { from: 5 });
		const ack = await c.publish('`+ch+`', { from: 'the page' }, { id: 'page-1' });
		window.t.ack = ack.offset;
		return await c.request('whoami', null);
	})()`, &who)
	if who.Worker != "w1" || who.Conn == "" {
		t.Fatalf("whoami from the page: %+v", who)
	}
	var transport string
	b.eval("sio", "window.t.c.transport", &transport)
	if transport != "socketio" {
		t.Fatalf("transport %q, want socketio", transport)
	}
	b.wait("sio", 30*time.Second, "offsets 5..11", `window.t.got.length >= 7`)
	var ack uint64
	b.eval("sio", "window.t.ack", &ack)
	if ack != 11 {
		t.Fatalf("the page's publish acknowledged at %d, want 11", ack)
	}

	c.kill(g)
	b.wait("sio", 20*time.Second, "the drop", `window.t.c.state !== 'open'`)
	publish(12, 30)
	c.start(g)
	if !c.waitGatewayReady(g, 30*time.Second) {
		t.Fatalf("gateway not ready after its restart:\n%s", g.logTail(20))
	}
	publish(31, 40)
	b.wait("sio", 60*time.Second, "offsets up to 40", `window.t.got.at(-1) >= 40`)
	var got []uint64
	b.eval("sio", "window.t.got", &got)
	checkOffsets(t, "the page", got, 5, 40)
	b.eval("sio", "window.t.c.transport", &transport)
	if transport != "socketio" {
		t.Fatalf("transport %q after the restart, want socketio", transport)
	}
}
