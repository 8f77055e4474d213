package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// startStandalone starts `comet [standalone] --listen ADDR --data DIR` and
// waits until it is ready.
func (c *cluster) startStandalone(data string, subcommand bool, extra ...string) *hub {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddrs(c.t, 1, c.used)[0]
		g := &hub{id: "standalone", api: addr, data: data,
			logPath: filepath.Join(c.dir, fmt.Sprintf("standalone-try%d.log", attempt))}
		g.args = []string{"--listen", addr, "--data", data}
		if subcommand {
			g.args = append([]string{"standalone"}, g.args...)
		}
		g.args = append(g.args, extra...)
		c.gateways = append(c.gateways, g)
		c.start(g)
		if c.waitGatewayReady(g, 20*time.Second) {
			return g
		}
		if attempt < 4 && !g.running() && strings.Contains(g.logTail(3), "address already in use") {
			continue
		}
		c.t.Fatalf("standalone not ready:\n%s", g.logTail(20))
	}
}

func TestStandalonePubSubAndRestart(t *testing.T) {
	c := newCluster(t)
	data := filepath.Join(c.dir, "data")
	s := c.startStandalone(data, false) // `comet --listen ... --data ...`
	url := "ws://" + s.api + "/ws"

	pub := func(ch, data string, want uint64) {
		t.Helper()
		code, out, errOut := runComet(t, nil, "pub", "--url", url, ch, data)
		if code != 0 || out != fmt.Sprintf(`{"channel":%q,"offset":%d}`+"\n", ch, want) {
			t.Fatalf("comet pub: exit %d, stdout %q, stderr %q; want offset %d", code, out, errOut, want)
		}
	}
	pub("chat", `{"text":"hello"}`, 1)
	pub("chat", `plain words`, 2)
	code, out, errOut := runComet(t, nil, "sub", "--url", url, "--from", "1", "--count", "2", "chat")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], `{"channel":"chat","offset":1,"epoch":"`) || !strings.HasSuffix(lines[0], `","data":{"text":"hello"}}`) ||
		!strings.HasSuffix(lines[1], `","data":"plain words"}`) {
		t.Fatalf("comet sub: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// SIGTERM: exit 0; restart on the same data.
	c.stop(s, 15*time.Second)
	s = c.startStandalone(data, true)
	url = "ws://" + s.api + "/ws"
	pub("chat", `3`, 3)

	// kill -9, restart: nothing acknowledged is lost.
	c.kill(s)
	s = c.startStandalone(data, true)
	url = "ws://" + s.api + "/ws"
	pub("chat", `4`, 4)
	code, out, errOut = runComet(t, nil, "sub", "--url", url, "--from", "1", "--count", "4", "chat")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.Contains(lines[2], `"offset":3,`) || !strings.HasSuffix(lines[3], `"data":4}`) {
		t.Fatalf("comet sub after restarts: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// --state: a second run resumes after what the first one printed.
	state := filepath.Join(c.dir, "sub.state")
	code, out, _ = runComet(t, nil, "sub", "--url", url, "--from", "1", "--count", "4", "--state", state, "chat")
	if code != 0 || strings.Count(out, "\n") != 4 {
		t.Fatalf("first run with --state: exit %d, %q", code, out)
	}
	pub("chat", `5`, 5)
	code, out, errOut = runComet(t, nil, "sub", "--url", url, "--count", "1", "--state", state, "chat")
	if code != 0 || !strings.Contains(out, `"offset":5,`) || strings.Count(out, "\n") != 1 {
		t.Fatalf("second run with --state: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestGatewayGracefulStop: SIGTERM closes clients with 4001 and exits 0.
func TestGatewayGracefulStop(t *testing.T) {
	c := startCluster(t, 3)
	g := c.startGateway("g1")
	ws := dialWS(t, "ws://"+g.api+"/ws")
	c.stop(g, 15*time.Second)
	if code := ws.closeCode(10 * time.Second); code != 4001 {
		t.Fatalf("close code %d, want 4001", code)
	}
}

type wsConn struct{ c *websocket.Conn }

func dialWS(t *testing.T, url string) *wsConn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &wsConn{c: c}
}

// closeCode reads until the connection ends and returns the close code the
// server sent, or -1 if it sent none.
func (w *wsConn) closeCode(d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		_ = w.c.SetReadDeadline(deadline)
		if _, _, err := w.c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return -1
		}
	}
}

// TestStandaloneOpensPreviousRelease starts on the data directory of a
// `comet standalone` of the release before raft-wal (testdata, written by
// commit c33375e: 40 publishes to "fixture" with ids fx-1..fx-40, then
// SIGKILL, so that its last Raft entries were only in its journal). The
// Raft log is moved into raft-wal; every message is there, and the node
// goes on storing, across a SIGKILL. (The ids are older than the 10 minutes
// an id is kept.)
func TestStandaloneOpensPreviousRelease(t *testing.T) {
	c := newCluster(t)
	data := filepath.Join(c.dir, "data")
	if err := os.CopyFS(data, os.DirFS(filepath.Join("testdata", "standalone-journal-v1"))); err != nil {
		t.Fatal(err)
	}
	check := func(s *hub, n int) {
		t.Helper()
		got, err := c.readAll(s, "fixture")
		if err != nil {
			t.Fatal(err)
		}
		if got.Epoch != "491e53dd8640bd45" || got.First != 1 || got.Next != uint64(n+1) || len(got.Messages) != n {
			t.Fatalf("fixture: epoch %s, offsets %d..%d, %d messages; want epoch 491e53dd8640bd45, 1..%d", got.Epoch, got.First, got.Next-1, len(got.Messages), n)
		}
		for i, m := range got.Messages {
			want := fmt.Sprintf(`{"n":%d,"text":"message %d of the previous release"}`, i+1, i+1)
			if m.Offset != uint64(i+1) || !sameJSON(m.Data, json.RawMessage(want)) {
				t.Fatalf("message %d: offset %d, data %s; want %s", i+1, m.Offset, m.Data, want)
			}
		}
	}
	s := c.startStandalone(data, true)
	check(s, 40)
	if _, err := os.Stat(filepath.Join(data, "raft", "raft.db")); !os.IsNotExist(err) {
		t.Fatalf("raft.db is still there after the first start (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(data, "raft", "wal", "wal-meta.db")); err != nil {
		t.Fatalf("no raft-wal log after the first start: %v", err)
	}
	res, err := c.publishOnce(s.api, "fixture", "fx-41", json.RawMessage(`{"n":41,"text":"message 41 of the previous release"}`))
	if err != nil || res.Offset != 41 {
		t.Fatalf("fx-41: %+v, %v; want offset 41", res, err)
	}
	c.kill(s)
	s = c.startStandalone(data, true)
	check(s, 41)
}

// TestStandaloneDamagedRaftLog: a stopped standalone whose Raft metadata
// (DATA/raft/wal/wal-meta.db) was cut short, or zero-filled, refuses to
// start: exit 1 with the file named on stderr, no SIGBUS, no panic.
func TestStandaloneDamagedRaftLog(t *testing.T) {
	c := newCluster(t)
	data := filepath.Join(c.dir, "data")
	s := c.startStandalone(data, true)
	for i := 1; i <= 3; i++ {
		code, _, errOut := runComet(t, nil, "pub", "--url", "ws://"+s.api+"/ws", "chat", fmt.Sprint(i))
		if code != 0 {
			t.Fatalf("comet pub: exit %d: %s", code, errOut)
		}
	}
	c.stop(s, 15*time.Second)
	meta := filepath.Join(data, "raft", "wal", "wal-meta.db")
	orig, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"cut short", orig[:len(orig)/2]},
		{"zero-filled", make([]byte, len(orig))},
	} {
		if err := os.WriteFile(meta, tc.bytes, 0o600); err != nil {
			t.Fatal(err)
		}
		addr := freeAddrs(t, 1, c.used)[0]
		code, _, errOut := runComet(t, nil, "standalone", "--listen", addr, "--data", data)
		if code != 1 || !strings.Contains(errOut, meta) || strings.Contains(errOut, "panic") ||
			strings.Contains(errOut, "SIGBUS") {
			t.Fatalf("%s: exit %d, stderr %q; want exit 1 naming %s", tc.name, code, errOut, meta)
		}
		t.Logf("%s: exit %d: %s", tc.name, code, strings.TrimSpace(errOut))
	}
	// The file put back, the standalone starts with its messages.
	if err := os.WriteFile(meta, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	s = c.startStandalone(data, true)
	code, out, errOut := runComet(t, nil, "sub", "--url", "ws://"+s.api+"/ws", "--from", "1", "--count", "3", "chat")
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("comet sub after the file was put back: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
