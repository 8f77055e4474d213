package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The browser tests load the demo page from real comet processes into a
// headless Chromium (Debian's chromium, driven by playwright-core from
// client/js/node_modules through client/js/test/browser/driver.mjs), and
// check what the pages received. They skip when node, playwright-core or
// chromium are missing, unless COMET_BROWSER_TESTS=1 (as in CI): then they
// fail.

// needBrowser returns client/js's directory and the chromium to use.
func needBrowser(t *testing.T) (jsDir, chromium string) {
	t.Helper()
	needNode(t)
	missing := func(format string, args ...any) { t.Helper(); missingTool(t, format, args...) }
	jsDir, err := filepath.Abs(filepath.Join("..", "client", "js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "playwright-core")); err != nil {
		missing("playwright-core is not installed (npm ci in client/js): %v", err)
	}
	chromium = os.Getenv("COMET_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing("no chromium: %v", err)
	}
	return jsDir, chromium
}

// needNode needs the comet binary and node, or skips the test (see
// missingTool).
func needNode(t *testing.T) {
	t.Helper()
	needBinary(t)
	if _, err := exec.LookPath("node"); err != nil {
		missingTool(t, "node is not installed: %v", err)
	}
}

// missingTool skips a test whose tools (node, npm packages, chromium) are
// missing, saying so once where it is seen; with COMET_BROWSER_TESTS=1 (as
// in CI) it fails the test instead.
func missingTool(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("COMET_BROWSER_TESTS") == "1" {
		t.Fatalf("COMET_BROWSER_TESTS=1 but "+format, args...)
	}
	noteBrowserSkip(fmt.Sprintf(format, args...))
	t.Skipf(format+" (set up by .ci/run)", args...)
}

// browserSkipNoted makes noteBrowserSkip speak once per run.
var browserSkipNoted sync.Once

// noteBrowserSkip says, once, that the browser tests are skipped and why,
// where it is seen without -v: go test shows the output of a package that
// passes only with -v, so the note goes to the terminal (/dev/tty) when
// there is one, else to stderr (seen with -v, or when the package fails).
func noteBrowserSkip(why string) {
	browserSkipNoted.Do(func() {
		writeSkipNote(why, func() (io.WriteCloser, error) { return os.OpenFile("/dev/tty", os.O_WRONLY, 0) }, os.Stderr)
	})
}

// writeSkipNote writes noteBrowserSkip's note to the terminal openTTY
// opens, or to fallback when there is none.
func writeSkipNote(why string, openTTY func() (io.WriteCloser, error), fallback io.Writer) {
	msg := "e2e: the browser tests are SKIPPED: " + why +
		"; they need node, npm ci in client/js and chromium (COMET_BROWSER_TESTS=1 makes this a failure)\n"
	if tty, err := openTTY(); err == nil {
		_, werr := io.WriteString(tty, msg)
		tty.Close()
		if werr == nil {
			return
		}
	}
	fmt.Fprint(fallback, msg)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// TestBrowserSkipNote: a skip of the browser tests is said where go test
// without -v shows it: the terminal; stderr when there is none.
func TestBrowserSkipNote(t *testing.T) {
	var tty, stderr bytes.Buffer
	writeSkipNote("no chromium", func() (io.WriteCloser, error) { return nopWriteCloser{&tty}, nil }, &stderr)
	if !strings.Contains(tty.String(), "browser tests are SKIPPED: no chromium") || stderr.Len() != 0 {
		t.Errorf("with a terminal: tty %q, stderr %q", tty.String(), stderr.String())
	}
	tty.Reset()
	writeSkipNote("no chromium", func() (io.WriteCloser, error) { return nil, os.ErrNotExist }, &stderr)
	if !strings.Contains(stderr.String(), "browser tests are SKIPPED: no chromium") || !strings.Contains(stderr.String(), "COMET_BROWSER_TESTS=1") {
		t.Errorf("without a terminal: stderr %q", stderr.String())
	}
}

// browser is a running driver.mjs: a headless Chromium with named pages.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan driverReply
	done    chan struct{}
	stderr  lockedBuffer
	seq     int
}

type driverReply struct {
	ID    int             `json:"id"`
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	jsDir, chromium := needBrowser(t)
	b := &browser{t: t, replies: make(chan driverReply, 16), done: make(chan struct{})}
	b.cmd = exec.Command("node", filepath.Join("test", "browser", "driver.mjs"))
	b.cmd.Dir = jsDir
	b.cmd.Env = append(os.Environ(), "COMET_CHROMIUM="+chromium)
	b.cmd.Stderr = &b.stderr
	b.cmd.SysProcAttr = sysProcAttr()
	var err error
	if b.stdin, err = b.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start the browser driver: %v", err)
	}
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var r driverReply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				fmt.Fprintf(&b.stderr, "[driver stdout] %s\n", sc.Bytes())
				continue
			}
			b.replies <- r
		}
		_ = b.cmd.Wait()
	}()
	t.Cleanup(func() {
		// Closing stdin makes the driver close Chromium and exit.
		b.stdin.Close()
		select {
		case <-b.done:
		case <-time.After(15 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.done
		}
		if t.Failed() {
			t.Logf("--- browser driver's log (the pages' consoles), last 80 lines ---\n%s", lastLines(b.stderr.String(), 80))
		}
	})
	if r := b.await(0, 60*time.Second); string(r) != `"ready"` {
		t.Fatalf("browser driver: %s", r)
	}
	return b
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// do sends one command and returns its value; it fails the test on an
// error or no answer within d (the driver's own waits are shorter).
func (b *browser) do(d time.Duration, cmd map[string]any) json.RawMessage {
	b.t.Helper()
	b.seq++
	cmd["id"] = b.seq
	line, _ := json.Marshal(cmd)
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		b.t.Fatalf("browser driver: %v", err)
	}
	return b.await(b.seq, d)
}

func (b *browser) await(id int, d time.Duration) json.RawMessage {
	b.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r := <-b.replies:
			if r.ID != id {
				continue // the answer to a command that timed out
			}
			if !r.OK {
				b.t.Fatalf("browser: command %d: %s", id, r.Error)
			}
			return r.Value
		case <-b.done:
			b.t.Fatalf("browser driver exited: %s", lastLines(b.stderr.String(), 30))
		case <-timer.C:
			b.t.Fatalf("browser: no answer to command %d within %v", id, d)
		}
	}
}

func (b *browser) open(page, url string, noWebSocket bool) {
	b.t.Helper()
	b.do(60*time.Second, map[string]any{"op": "open", "page": page, "url": url, "noWebSocket": noWebSocket})
}

// eval returns the value of a JavaScript expression in page, decoded into v.
func (b *browser) eval(page, expr string, v any) {
	b.t.Helper()
	raw := b.do(30*time.Second, map[string]any{"op": "eval", "page": page, "expr": expr})
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			b.t.Fatalf("eval %s: %v (%s)", expr, err, raw)
		}
	}
}

// wait waits until a JavaScript expression is truthy in page.
func (b *browser) wait(page string, d time.Duration, what, expr string) json.RawMessage {
	b.t.Helper()
	start := time.Now()
	b.seq++
	cmd := map[string]any{"id": b.seq, "op": "wait", "page": page, "expr": expr, "timeout": d.Milliseconds()}
	line, _ := json.Marshal(cmd)
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		b.t.Fatalf("browser driver: %v", err)
	}
	timer := time.NewTimer(d + 30*time.Second)
	defer timer.Stop()
	for {
		select {
		case r := <-b.replies:
			if r.ID != b.seq {
				continue
			}
			if !r.OK {
				b.t.Fatalf("page %s: waiting %v for %s: %s", page, time.Since(start).Round(time.Millisecond), what, r.Error)
			}
			if el := time.Since(start); el > d/2 {
				b.t.Logf("page %s: waited %v for %s", page, el.Round(time.Millisecond), what)
			}
			return r.Value
		case <-b.done:
			b.t.Fatalf("browser driver exited: %s", lastLines(b.stderr.String(), 30))
		case <-timer.C:
			b.t.Fatalf("page %s: no answer waiting for %s", page, what)
		}
	}
}

// screenshot saves page as a PNG in client/js/test-output (gitignored) and
// logs where.
func (b *browser) screenshot(page, name string, width, height int) {
	b.t.Helper()
	jsDir, _ := needBrowser(b.t)
	dir := filepath.Join(jsDir, "test-output")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	b.do(60*time.Second, map[string]any{"op": "screenshot", "page": page, "path": path, "width": width, "height": height})
	b.t.Logf("screenshot of the demo page: %s", path)
}

// received returns the offsets page's demo delivered for channel.
func (b *browser) received(page, channel string) []uint64 {
	b.t.Helper()
	var got []uint64
	b.eval(page, fmt.Sprintf("cometDemo.received[%q] || []", channel), &got)
	return got
}

// checkOffsets fails unless got is exactly from..to, in order.
func checkOffsets(t *testing.T, who string, got []uint64, from, to uint64) {
	t.Helper()
	seen := map[uint64]int{}
	for i, o := range got {
		if seen[o]++; seen[o] == 2 {
			t.Errorf("%s: offset %d delivered twice (at %d)", who, o, i)
		}
		if i > 0 && o <= got[i-1] {
			t.Errorf("%s: offset %d after %d: out of order", who, o, got[i-1])
		}
	}
	var missing []uint64
	for o := from; o <= to; o++ {
		if seen[o] == 0 {
			missing = append(missing, o)
		}
	}
	if len(missing) > 0 || uint64(len(got)) != to-from+1 {
		t.Errorf("%s: got %d offsets, want %d..%d; missing %v", who, len(got), from, to, truncateList(missing))
	}
}

func truncateList(l []uint64) string {
	if len(l) > 20 {
		return fmt.Sprintf("%v ... (%d in all)", l[:20], len(l))
	}
	return fmt.Sprint(l)
}

// waitOpen waits until page's client is connected, and returns its
// transport.
func waitOpen(b *browser, page string) string {
	b.t.Helper()
	var transport string
	raw := b.wait(page, 30*time.Second, "the demo connected", `window.cometDemo && cometDemo.comet.state === 'open' && cometDemo.comet.transport`)
	_ = json.Unmarshal(raw, &transport)
	return transport
}

// TestBrowserDemo: the demo page of `comet standalone` in two pages, one
// on WebSocket and one with WebSocket removed (SockJS): they chat through
// the page's form, a cut connection resumes, and a page publishing while
// comet is killed and restarted gets every publish acknowledged once.
func TestBrowserDemo(t *testing.T) {
	b := startBrowser(t)
	c := newCluster(t)
	data := filepath.Join(c.dir, "data")
	s := c.startStandalone(data, true)
	const ch = "t:demo"
	url := "http://" + s.api + "/?record=1&channel=" + ch

	b.open("ws", url, false)
	b.open("sockjs", url, true)
	if tr := waitOpen(b, "ws"); tr != "websocket" {
		t.Fatalf("page ws uses %q, want websocket", tr)
	}
	if tr := waitOpen(b, "sockjs"); tr != "sockjs" {
		t.Fatalf("page sockjs (no WebSocket) uses %q, want sockjs", tr)
	}
	var shown string
	b.eval("sockjs", `document.querySelector('#transport').textContent`, &shown)
	if !strings.HasPrefix(shown, "sockjs · ") {
		t.Errorf("page sockjs shows transport %q", shown)
	}

	// The two pages chat through the form.
	say := func(page, name, text string) {
		t.Helper()
		b.do(10*time.Second, map[string]any{"op": "fill", "page": page, "selector": "#name", "text": name})
		b.do(10*time.Second, map[string]any{"op": "fill", "page": page, "selector": "#text", "text": text})
		b.do(10*time.Second, map[string]any{"op": "click", "page": page, "selector": "#compose button"})
	}
	shows := func(text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg .text')].some((e) => e.textContent === %q)`, text)
	}
	say("ws", "ana", "hello from a WebSocket")
	b.wait("sockjs", 20*time.Second, "ana's message", shows("hello from a WebSocket"))
	say("sockjs", "bo", "hello from SockJS")
	b.wait("ws", 20*time.Second, "bo's message", shows("hello from SockJS"))
	for _, p := range []string{"ws", "sockjs"} {
		b.wait(p, 20*time.Second, "both messages", `(cometDemo.received['t:demo'] || []).length === 2`)
		checkOffsets(t, "page "+p, b.received(p, ch), 1, 2)
	}

	// The button that cuts the connection: the page reconnects and resumes
	// with what the other page published meanwhile.
	b.do(10*time.Second, map[string]any{"op": "click", "page": "ws", "selector": "#cut"})
	b.eval("sockjs", `Promise.all([3, 4, 5].map((n) => cometDemo.comet.publish('t:demo', { user: 'bo', text: 'while cut ' + n }))).then((acks) => acks.map((a) => a.offset))`, nil)
	b.wait("ws", 30*time.Second, "the messages published while cut", `cometDemo.reconnects >= 1 && cometDemo.received['t:demo'].length >= 5`)
	checkOffsets(t, "page ws after the cut", b.received("ws", ch), 1, 5)
	b.screenshot("ws", "demo-desktop.png", 1280, 800)
	b.screenshot("sockjs", "demo-phone.png", 390, 844)

	// Page ws publishes 60 messages, one every 20ms, and comet is killed
	// (SIGKILL) and restarted on the same data and port in the middle:
	// every publish is acknowledged, each stored once, and page sockjs
	// gets them all.
	const n = 60
	b.eval("ws", fmt.Sprintf(`(() => {
		const c = cometDemo.comet;
		window.burst = { acked: 0, offsets: [], errors: [] };
		(async () => {
			const ps = [];
			for (let i = 0; i < %d; i++) {
				ps.push(c.publish('t:demo', { user: 'ana', text: 'burst ' + i }).then((a) => { burst.acked++; burst.offsets.push(a.offset); }, (e) => burst.errors.push(String(e))));
				await new Promise((r) => setTimeout(r, 20));
			}
			await Promise.all(ps);
			burst.done = true;
		})();
		return true;
	})()`, n), nil)
	b.wait("ws", 20*time.Second, "some of the burst acknowledged", `burst.acked >= 10`)
	c.kill(s)
	var acked int
	b.eval("ws", `burst.acked`, &acked)
	c.restart(s)
	if !c.waitGatewayReady(s, 30*time.Second) {
		t.Fatalf("standalone not ready after its restart:\n%s", s.logTail(20))
	}
	t.Logf("killed comet with %d of %d publishes acknowledged; restarted", acked, n)
	b.wait("ws", 60*time.Second, "the whole burst acknowledged", `burst.done`)
	var burst struct {
		Acked   int      `json:"acked"`
		Offsets []uint64 `json:"offsets"`
		Errors  []string `json:"errors"`
	}
	b.eval("ws", `burst`, &burst)
	if burst.Acked != n || len(burst.Errors) > 0 {
		t.Fatalf("burst: %d of %d acknowledged, errors %v", burst.Acked, n, burst.Errors)
	}
	slices.Sort(burst.Offsets)
	if want := 5 + n; burst.Offsets[0] != 6 || burst.Offsets[n-1] != uint64(want) || len(slices.Compact(burst.Offsets)) != n {
		t.Errorf("burst acknowledged at offsets %v, want 6..%d once each", truncateList(burst.Offsets), want)
	}
	got, err := c.readAll(s, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 5+n {
		t.Errorf("%s holds %d messages after the restart, want %d (each publish stored once)", ch, len(got.Messages), 5+n)
	}
	for _, p := range []string{"sockjs", "ws"} {
		b.wait(p, 60*time.Second, "the burst", fmt.Sprintf(`cometDemo.received['t:demo'].length >= %d && cometDemo.comet.state === 'open'`, 5+n))
		checkOffsets(t, "page "+p+" after the restart", b.received(p, ch), 1, 5+n)
	}
}

// TestBrowserResume: a hub and a gateway; two pages (WebSocket, and SockJS
// with WebSocket removed) follow a channel while the test publishes to the
// hub, kills the gateway with SIGKILL, goes on publishing, and restarts it:
// both pages end with every offset once, in order. Then each page is
// reloaded (or left and opened again while messages are published) and
// resumes from localStorage: it shows the last 50 it had shown, then what
// it missed (marked replayed), and nothing twice.
func TestBrowserResume(t *testing.T) {
	b := startBrowser(t)
	c := startCluster(t, 1)
	g := c.startGateway("g1")
	const ch = "t:resume"
	url := "http://" + g.api + "/?record=1&channel=" + ch
	b.open("ws", url, false)
	b.open("sockjs", url, true)
	if tr := waitOpen(b, "ws"); tr != "websocket" {
		t.Fatalf("page ws uses %q", tr)
	}
	if tr := waitOpen(b, "sockjs"); tr != "sockjs" {
		t.Fatalf("page sockjs uses %q", tr)
	}
	// Both pages have subscribed from offset 1 (the channel is new).
	for _, p := range []string{"ws", "sockjs"} {
		b.wait(p, 20*time.Second, "subscribed", `cometDemo.subscribed['t:resume']`)
	}

	published := 0
	publish := func(k int) {
		t.Helper()
		for i := 0; i < k; i++ {
			published++
			c.mustPublish(ch, fmt.Sprintf("m%d", published), json.RawMessage(fmt.Sprintf(`{"user":"go","text":"message %d"}`, published)))
		}
	}
	// Publish while the pages are live, kill the gateway, publish during
	// the outage, restart it, publish again.
	publish(40)
	for _, p := range []string{"ws", "sockjs"} {
		b.wait(p, 20*time.Second, "the first 40", `cometDemo.received['t:resume']?.length >= 40`)
	}
	c.kill(g)
	for _, p := range []string{"ws", "sockjs"} {
		b.wait(p, 20*time.Second, "the drop", `cometDemo.comet.state !== 'open'`)
	}
	publish(60)
	c.restart(g)
	if !c.waitGatewayReady(g, 30*time.Second) {
		t.Fatalf("gateway not ready after its restart:\n%s", g.logTail(20))
	}
	publish(50)
	for _, p := range []string{"ws", "sockjs"} {
		b.wait(p, 60*time.Second, "all 150", `cometDemo.received['t:resume']?.length >= 150`)
		checkOffsets(t, "page "+p, b.received(p, ch), 1, 150)
		var replayed []uint64
		b.eval(p, `cometDemo.replayed['t:resume'] || []`, &replayed)
		// Offsets 41..100 were published while the gateway was down: the
		// page can only have them replayed.
		for o := uint64(41); o <= 100; o++ {
			if !slices.Contains(replayed, o) {
				t.Errorf("page %s: offset %d, published during the outage, is not marked replayed", p, o)
				break
			}
		}
		var lost int
		b.eval(p, `cometDemo.lost.length`, &lost)
		if lost != 0 {
			t.Errorf("page %s: told of %d lost ranges, want none", p, lost)
		}
	}

	// Page ws leaves; 20 messages are published; it comes back and
	// resumes from localStorage: it shows the 50 it had shown last (101..150,
	// plain) and the 20 it missed, marked replayed.
	b.do(30*time.Second, map[string]any{"op": "goto", "page": "ws", "url": "about:blank"})
	publish(20)
	b.do(30*time.Second, map[string]any{"op": "goto", "page": "ws", "url": url})
	b.wait("ws", 30*time.Second, "the 20 missed", `cometDemo.received['t:resume']?.at(-1) >= 170`)
	checkOffsets(t, "page ws after coming back", b.received("ws", ch), 101, 170)
	var replayed []uint64
	b.eval("ws", `cometDemo.replayed['t:resume'] || []`, &replayed)
	checkOffsets(t, "page ws after coming back, marked replayed", replayed, 151, 170)
	// Page sockjs is reloaded: it shows the last 50 again (121..170); what
	// is published next arrives once.
	b.wait("sockjs", 30*time.Second, "the 20 (live)", `cometDemo.received['t:resume']?.length >= 170`)
	b.do(30*time.Second, map[string]any{"op": "reload", "page": "sockjs"})
	if tr := waitOpen(b, "sockjs"); tr != "sockjs" {
		t.Fatalf("page sockjs uses %q after the reload", tr)
	}
	publish(10)
	for _, p := range []string{"ws", "sockjs"} {
		from := map[string]uint64{"ws": 101, "sockjs": 121}[p]
		b.wait(p, 30*time.Second, "the last 10", `cometDemo.received['t:resume']?.at(-1) >= 180`)
		checkOffsets(t, "page "+p+" at the end", b.received(p, ch), from, 180)
	}
}

// TestBrowserAuthAndWorkers: in Chromium, comet.js signs in with a token
// from a function, asks a worker (a separate process) who it is, and gets a
// direct message the worker sends it; a forged token is refused with an
// auth event. Both over WebSocket and SockJS.
func TestBrowserAuthAndWorkers(t *testing.T) {
	b := startBrowser(t)
	c := newCluster(t)
	const hmac = "e2e-browser-token-secret-of-32-bytes-or-more"
	s := c.startStandalone(filepath.Join(c.dir, "data"), true, "--allow-anonymous=false", "--token-hmac-secret", hmac,
		"--channel-rules", "public:*=anyone/users,user:{sub}:*=users/none")
	w := &hub{id: "worker", bin: workerBin, logPath: filepath.Join(c.dir, "worker.log"),
		args: []string{"--hubs", s.api, "--name", "w1", "--routes", "whoami,send"}}
	c.gateways = append(c.gateways, w)
	c.start(w)
	waitFor(t, 30*time.Second, "the worker ready", func() bool { return w.logContains("\nready\n") })
	code, out, errOut := runComet(t, []string{"COMET_TOKEN_HMAC_SECRET=" + hmac}, "token", "--sub", "alice")
	if code != 0 {
		t.Fatalf("comet token: %d %s", code, errOut)
	}
	token := strings.TrimSpace(out)

	for _, page := range []string{"ws", "sockjs"} {
		t.Run(page, func(t *testing.T) {
			b.t = t
			defer func() { b.t = c.t }()
			b.open(page, "http://"+s.api+"/comet.js", page == "sockjs")
			var who struct{ Worker, Conn, User string }
			b.eval(page, fmt.Sprintf(`(async () => {
				const { Comet } = await import('/comet.js');
				const c = new Comet({ token: async () => %q });
				window.t = { c, direct: [], auth: [] };
				c.on('direct', (d) => window.t.direct.push(d));
				const who = await c.request('whoami', null);
				await c.request('send', { conn: who.conn, text: 'hello ' + who.user });
				const bad = new Comet({ token: 'forged.token.value' });
				bad.on('auth', (e) => { window.t.auth.push(e.code + ': ' + e.message); bad.close(); });
				return who;
			})()`, token), &who)
			if who.Worker != "w1" || who.User != "alice" || who.Conn == "" {
				t.Fatalf("whoami from the browser: %+v", who)
			}
			var direct []struct{ Text string }
			raw := b.do(30*time.Second, map[string]any{"op": "wait", "page": page, "expr": "window.t.direct.length > 0 && window.t.direct"})
			if err := json.Unmarshal(raw, &direct); err != nil || len(direct) != 1 || direct[0].Text != "hello alice" {
				t.Fatalf("direct messages %s: %v", raw, err)
			}
			var user string
			b.eval(page, "window.t.c.user", &user)
			if user != "alice" {
				t.Fatalf("comet.user %q, want alice", user)
			}
			raw = b.do(30*time.Second, map[string]any{"op": "wait", "page": page, "expr": "window.t.auth.length > 0 && window.t.auth"})
			var auth []string
			if err := json.Unmarshal(raw, &auth); err != nil || len(auth) == 0 || !strings.Contains(auth[0], "invalid token") {
				t.Fatalf("auth events of the forged token %s: %v", raw, err)
			}
		})
	}
}

// demoView is what the demo page shows: its channel chips (the pressed
// one), its message rows, the empty-list text, the compose box.
type demoView struct {
	Chips       []string `json:"chips"`
	Pressed     []string `json:"pressed"`
	Rows        []string `json:"rows"`
	Tagged      []string `json:"tagged"`
	Empty       string   `json:"empty"`
	Placeholder string   `json:"placeholder"`
	CanSend     bool     `json:"canSend"`
	Text        string   `json:"text"`
}

const demoViewJS = `(() => {
	const chips = [...document.querySelectorAll('#chips .chip')];
	const rows = [...document.querySelectorAll('#messages .msg')];
	const label = (c) => c.firstChild ? c.firstChild.textContent : '';
	return {
		chips: chips.map(label),
		pressed: chips.filter((c) => c.getAttribute('aria-pressed') === 'true').map(label),
		rows: rows.map((li) => li.querySelector('.text').textContent),
		tagged: rows.filter((li) => li.classList.contains('replayed') || li.querySelector('.tag')).map((li) => li.querySelector('.text').textContent),
		empty: document.querySelector('#messages .empty')?.textContent || '',
		placeholder: document.getElementById('text').placeholder,
		canSend: !document.querySelector('#compose button').disabled && !document.getElementById('text').disabled,
		text: document.body.innerText,
	};
})()`

func (b *browser) demoView(page string) demoView {
	b.t.Helper()
	var v demoView
	b.eval(page, demoViewJS, &v)
	return v
}

// noConsoleErrors fails the test if page logged a console error or threw.
func (b *browser) noConsoleErrors(page, when string) {
	b.t.Helper()
	var errs []string
	if err := json.Unmarshal(b.do(10*time.Second, map[string]any{"op": "errors", "page": page}), &errs); err != nil {
		b.t.Fatal(err)
	}
	if len(errs) > 0 {
		b.t.Errorf("page %s %s: %d console errors: %q", page, when, len(errs), errs)
	}
}

func texts(prefix string, from, to int) []string {
	var l []string
	for i := from; i <= to; i++ {
		l = append(l, fmt.Sprintf("%s %d", prefix, i))
	}
	return l
}

// TestBrowserDemoPage: the demo page shows what the README's quick start
// just did. Eleven `comet pub chat ...` as in the README; the page, opened
// at / with no parameters, is on channel chat and shows the eleven as
// plain messages (history, not "replayed"), again after a reload; what was
// published while the page was away comes back marked "replayed". The Join
// box checks channel names (its pattern attribute is a valid regular
// expression: no console error); leaving every channel leaves no chip and
// no "#undefined". The page logs no console error throughout.
func TestBrowserDemoPage(t *testing.T) {
	b := startBrowser(t)
	c := newCluster(t)
	s := c.startStandalone(filepath.Join(c.dir, "data"), false)
	pub := func(text string, offset int) {
		t.Helper()
		code, out, errOut := runComet(t, nil, "pub", "--url", "ws://"+s.api+"/ws", "chat", fmt.Sprintf(`{"text":%q}`, text))
		if code != 0 || !strings.Contains(out, fmt.Sprintf(`"offset":%d`, offset)) {
			t.Fatalf("comet pub chat: exit %d, %s %s", code, out, errOut)
		}
	}
	for i := 1; i <= 11; i++ {
		pub(fmt.Sprintf("hello %d", i), i)
	}
	url := "http://" + s.api + "/?record=1"
	const rows = `document.querySelectorAll('#messages .msg').length`

	check := func(when string, wantRows, wantTagged []string) {
		t.Helper()
		b.wait("p", 20*time.Second, when+": the rows", fmt.Sprintf(`%s >= %d`, rows, len(wantRows)))
		v := b.demoView("p")
		if !slices.Equal(v.Chips, []string{"#chat"}) || !slices.Equal(v.Pressed, []string{"#chat"}) {
			t.Errorf("%s: chips %q (pressed %q), want #chat alone", when, v.Chips, v.Pressed)
		}
		if !slices.Equal(v.Rows, wantRows) {
			t.Errorf("%s: rows %q, want %q", when, v.Rows, wantRows)
		}
		if !slices.Equal(v.Tagged, wantTagged) {
			t.Errorf("%s: rows marked replayed %q, want %q", when, v.Tagged, wantTagged)
		}
		if v.Empty != "" || strings.Contains(v.Text, "No messages yet") {
			t.Errorf("%s: the page says %q over %d messages", when, v.Empty, len(v.Rows))
		}
		if v.Placeholder != "Message #chat" || !v.CanSend {
			t.Errorf("%s: compose box %q (can send: %v)", when, v.Placeholder, v.CanSend)
		}
	}

	b.open("p", url, false)
	waitOpen(b, "p")
	check("first load", texts("hello", 1, 11), nil)
	// Who is here: the page itself, on chat.
	b.wait("p", 20*time.Second, "who is here", `cometDemo.here && cometDemo.here.channel === 'chat' && cometDemo.here.connections >= 1`)
	if v := b.demoView("p"); !strings.Contains(v.Text, "#chat: 1 connection") {
		t.Errorf("who is here: the page says %q", v.Text)
	}
	b.noConsoleErrors("p", "after the first load")

	b.do(30*time.Second, map[string]any{"op": "reload", "page": "p"})
	waitOpen(b, "p")
	check("after a reload", texts("hello", 1, 11), nil)

	// Away from the page while two more are published: back, it shows the
	// history as before and the two it missed, marked replayed.
	b.do(30*time.Second, map[string]any{"op": "goto", "page": "p", "url": "about:blank"})
	pub("hello 12", 12)
	pub("hello 13", 13)
	b.do(30*time.Second, map[string]any{"op": "goto", "page": "p", "url": url})
	waitOpen(b, "p")
	check("back after two were published", texts("hello", 1, 13), []string{"hello 12", "hello 13"})

	// The Join box: names of the channel rules only.
	fill := func(text string) {
		t.Helper()
		b.do(10*time.Second, map[string]any{"op": "fill", "page": "p", "selector": "#channel", "text": text})
	}
	for name, valid := range map[string]bool{"room/a-1@x:y.z_": true, "chat": true, "a b": false, "a#b": false, "é": false} {
		fill(name)
		var ok bool
		b.eval("p", `document.getElementById('channel').checkValidity()`, &ok)
		if ok != valid {
			t.Errorf("the Join box takes %q: %v, want %v", name, ok, valid)
		}
	}
	fill("a b")
	b.do(10*time.Second, map[string]any{"op": "click", "page": "p", "selector": "#join button"})
	if v := b.demoView("p"); !slices.Equal(v.Chips, []string{"#chat"}) {
		t.Errorf("after joining %q: chips %q, want #chat alone", "a b", v.Chips)
	}
	fill("room/a-1")
	b.do(10*time.Second, map[string]any{"op": "click", "page": "p", "selector": "#join button"})
	b.wait("p", 20*time.Second, "joined room/a-1", `cometDemo.subscribed['room/a-1']`)
	if v := b.demoView("p"); !slices.Equal(v.Chips, []string{"#chat", "#room/a-1"}) || !slices.Equal(v.Pressed, []string{"#room/a-1"}) || v.Placeholder != "Message #room/a-1" {
		t.Errorf("after joining room/a-1: chips %q, pressed %q, compose %q", v.Chips, v.Pressed, v.Placeholder)
	}
	b.noConsoleErrors("p", "after the Join box")

	// Leave every channel.
	for i := 0; i < 2; i++ {
		b.do(10*time.Second, map[string]any{"op": "click", "page": "p", "selector": "#chips .chip .x"})
	}
	b.wait("p", 10*time.Second, "no chip", `document.querySelectorAll('#chips .chip').length === 0`)
	v := b.demoView("p")
	if strings.Contains(v.Text, "undefined") || strings.Contains(v.Placeholder, "undefined") || v.CanSend || len(v.Rows) != 0 || v.Empty == "" {
		t.Errorf("after leaving every channel: chips %q, rows %d, empty %q, compose %q (can send: %v), text %q", v.Chips, len(v.Rows), v.Empty, v.Placeholder, v.CanSend, v.Text)
	}
	// A reload then starts on chat again, with its history.
	b.do(30*time.Second, map[string]any{"op": "reload", "page": "p"})
	waitOpen(b, "p")
	check("reloaded after leaving every channel", texts("hello", 1, 13), nil)
	if v := b.demoView("p"); strings.Contains(v.Text, "undefined") {
		t.Errorf("reloaded after leaving every channel: the page shows %q", v.Text)
	}
	b.noConsoleErrors("p", "at the end")
}
