package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/client/clienttest"
	"github.com/comethq/comet/wire"
)

// syncBuffer is a bytes.Buffer safe to read while comet writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) lines() int { return strings.Count(s.String(), "\n") }

// comet runs the command line args and returns its exit status and output.
func comet(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func newFakeGateway(t *testing.T) *clienttest.Gateway {
	t.Helper()
	g := clienttest.NewGateway()
	t.Cleanup(g.Close)
	return g
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitExit returns the exit status of a comet run in the background.
func waitExit(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("comet did not exit")
		return -1
	}
}

// msgLines returns the lines comet sub prints for offsets from..to of
// channel, whose data are in data (data[0] at offset 1).
func msgLines(channel, epoch string, from, to uint64, data []json.RawMessage) string {
	var b strings.Builder
	for off := from; off <= to; off++ {
		b.WriteString(`{"channel":"` + channel + `","offset":` + itoa(off) + `,"epoch":"` + epoch + `","data":` + string(data[off-1]) + "}\n")
	}
	return b.String()
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func raws(ss ...string) []json.RawMessage {
	var r []json.RawMessage
	for _, s := range ss {
		r = append(r, json.RawMessage(s))
	}
	return r
}

func TestPubData(t *testing.T) {
	for in, want := range map[string]string{
		`42`:          `42`,
		`true`:        `true`,
		`{"a": 1}`:    `{"a": 1}`,
		`"quoted"`:    `"quoted"`,
		`hello`:       `"hello"`,
		`hello world`: `"hello world"`,
		``:            `""`,
		`<b>&`:        `"<b>&"`,
		"two\nlines":  `"two\nlines"`,
		`-`:           `"-"`,
		`  [1, 2]   `: `  [1, 2]   `,
		`null`:        `null`,
		`1.2.3`:       `"1.2.3"`,
		`truely`:      `"truely"`,
	} {
		if got, err := pubData(in, false); err != nil || string(got) != want {
			t.Errorf("pubData(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	// What starts like a JSON object, array or string must be one: a typo
	// is refused, not stored as a string.
	for in, want := range map[string]string{
		`{"text": "hi",}`: "at byte 15",
		`{"a":`:           "unexpected end",
		`[1,2] extra`:     "after top-level value",
		`"unterminate`:    "unexpected end",
		` {'a': 1}`:       "at byte 3",
	} {
		got, err := pubData(in, false)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--string") {
			t.Errorf("pubData(%q) = %s, %v; want an error saying %q and naming --string", in, got, err, want)
		}
	}
	// --string sends DATA as a JSON string, whatever it holds.
	for in, want := range map[string]string{
		`{"text": "hi",}`: `"{\"text\": \"hi\",}"`,
		`42`:              `"42"`,
		`<b>&`:            `"<b>&"`,
		``:                `""`,
	} {
		if got, err := pubData(in, true); err != nil || string(got) != want {
			t.Errorf("pubData(%q, --string) = %s, %v; want %s", in, got, err, want)
		}
	}
}

// TestPubMalformedJSON: comet pub refuses DATA that starts like JSON and is
// not JSON, before connecting; --string sends it as it is.
func TestPubMalformedJSON(t *testing.T) {
	g := newFakeGateway(t)
	code, out, errOut := comet(t, "pub", "--url", g.URL(), "chat", `{"text": "hi",}`)
	if code != 2 || out != "" || !strings.Contains(errOut, "DATA is not valid JSON") || !strings.Contains(errOut, "--string") || g.Attempts() != 0 {
		t.Fatalf("malformed JSON: exit %d, stdout %q, stderr %q, %d connections; want exit 2 before connecting", code, out, errOut, g.Attempts())
	}
	code, out, errOut = comet(t, "pub", "--url", g.URL(), "--string", "chat", `{"text": "hi",}`)
	if code != 0 || out != `{"channel":"chat","offset":1}`+"\n" {
		t.Fatalf("--string: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, _, msgs := g.Messages("chat"); len(msgs) != 1 || string(msgs[0]) != `"{\"text\": \"hi\",}"` {
		t.Fatalf("--string stored %s", msgs)
	}
}

func TestPub(t *testing.T) {
	g := newFakeGateway(t)
	for i, tc := range []struct{ arg, stored string }{
		{`hello`, `"hello"`},
		{`42`, `42`},
		{`{"text": "hi", "n": [1, 2]}`, `{"text":"hi","n":[1,2]}`},
		{`"quoted"`, `"quoted"`},
		{`<b>&`, `"<b>&"`},
	} {
		code, out, errOut := comet(t, "pub", "--url", g.URL(), "chat", tc.arg)
		if want := `{"channel":"chat","offset":` + itoa(uint64(i+1)) + "}\n"; code != 0 || out != want || errOut != "" {
			t.Fatalf("pub %q: exit %d, stdout %q (want %q), stderr %q", tc.arg, code, out, want, errOut)
		}
		if _, _, msgs := g.Messages("chat"); string(msgs[i]) != tc.stored {
			t.Fatalf("pub %q stored %s, want %s", tc.arg, msgs[i], tc.stored)
		}
	}
}

func TestPubIdempotent(t *testing.T) {
	g := newFakeGateway(t)
	for _, want := range []string{`{"channel":"chat","offset":1}`, `{"channel":"chat","offset":1,"duplicate":true}`} {
		code, out, errOut := comet(t, "pub", "--url", g.URL(), "--id", "k1", "chat", "x")
		if code != 0 || out != want+"\n" {
			t.Fatalf("exit %d, stdout %q (want %s), stderr %q", code, out, want, errOut)
		}
	}
	if g.Stores() != 1 {
		t.Fatalf("stored %d times", g.Stores())
	}
}

// Flags come from the environment too, and --url takes a list: a gateway
// that is down is skipped.
func TestPubEnvAndURLList(t *testing.T) {
	down, up := newFakeGateway(t), newFakeGateway(t)
	down.SetDown(true)
	t.Setenv("COMET_URL", down.URL()+" , "+up.URL())
	t.Setenv("COMET_TIMEOUT", "20s")
	code, out, errOut := comet(t, "pub", "chat", "1")
	if code != 0 || out != `{"channel":"chat","offset":1}`+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if f := up.Frames(); len(f) != 1 || f[0].Data == nil {
		t.Fatalf("frames %+v", f)
	}
}

// COMET_ID is the --id of hubs and gateways, often exported in a shell
// that runs one: comet pub ignores it, or every publish after the first
// would be dropped as a duplicate of the first. Its key comes from --id,
// or from COMET_PUB_ID, a variable of its own.
func TestPubIgnoresCOMET_ID(t *testing.T) {
	g := newFakeGateway(t)
	t.Setenv("COMET_ID", "h1")
	for i := 1; i <= 2; i++ {
		code, out, errOut := comet(t, "pub", "--url", g.URL(), "chat", "same")
		if want := `{"channel":"chat","offset":` + itoa(uint64(i)) + "}\n"; code != 0 || out != want {
			t.Fatalf("pub %d with COMET_ID=h1: exit %d, stdout %q (want %q), stderr %q", i, code, out, want, errOut)
		}
	}
	f := g.Frames()
	if g.Stores() != 2 || len(f) != 2 || f[0].ID == "h1" || f[1].ID == "h1" || f[0].ID == f[1].ID {
		t.Fatalf("stored %d times, frames %+v; want 2 publishes with random keys", g.Stores(), f)
	}
	// --id still sets it.
	for _, want := range []string{`{"channel":"chat","offset":3}`, `{"channel":"chat","offset":3,"duplicate":true}`} {
		if code, out, errOut := comet(t, "pub", "--url", g.URL(), "--id", "h1", "chat", "same"); code != 0 || out != want+"\n" {
			t.Fatalf("pub --id h1: exit %d, stdout %q (want %s), stderr %q", code, out, want, errOut)
		}
	}
	// Its own variable, COMET_PUB_ID, sets it (every flag reads one).
	t.Setenv("COMET_PUB_ID", "h1")
	want := `{"channel":"chat","offset":3,"duplicate":true}`
	if code, out, errOut := comet(t, "pub", "--url", g.URL(), "chat", "same"); code != 0 || out != want+"\n" {
		t.Fatalf("pub with COMET_PUB_ID=h1: exit %d, stdout %q (want %s), stderr %q", code, out, want, errOut)
	}
	_, _, help := comet(t, "pub", "--help")
	if !strings.Contains(help, "--id  [COMET_PUB_ID]") || strings.Contains(help, "[COMET_ID]") {
		t.Errorf("comet pub --help does not say that --id reads COMET_PUB_ID:\n%s", help)
	}
}

// The publish is retried with the same id until acknowledged.
func TestPubRetries(t *testing.T) {
	g := newFakeGateway(t)
	g.FailPublishes("unavailable", "timeout")
	g.DropBeforeAck(1)
	code, out, errOut := comet(t, "pub", "--url", g.URL(), "chat", "x")
	// Stored before the drop: the retry's ack says duplicate.
	if code != 0 || out != `{"channel":"chat","offset":1,"duplicate":true}`+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if g.Stores() != 1 || g.Accepted() != 2 {
		t.Fatalf("stored %d times over %d connections", g.Stores(), g.Accepted())
	}
}

func TestPubFails(t *testing.T) {
	g := newFakeGateway(t)
	g.FailPublishes("forbidden")
	code, out, errOut := comet(t, "pub", "--url", g.URL(), "chat", "x")
	if code != 1 || out != "" || errOut != "comet: publish to chat refused: forbidden: fake failure\n" {
		t.Fatalf("refused: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// Connected, but no ack: it may have been stored.
	g.DropBeforeAck(1)
	g.SetHook(func(f wire.ClientFrame) {
		if f.Op == wire.OpPublish {
			g.SetDown(true) // no second connection
		}
	})
	code, out, errOut = comet(t, "pub", "--url", g.URL(), "--timeout", "500ms", "--id", "k9", "chat", "x")
	if code != 1 || out != "" || !strings.Contains(errOut, "comet: publish to chat: no ack within 500ms") ||
		!strings.Contains(errOut, "may or may not be stored") || !strings.Contains(errOut, "--id k9") {
		t.Fatalf("timeout: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// comet pub without a gateway says so at once, and at the end that the
// message was not sent (not "may or may not be stored").
func TestPubNoGateway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "ws://" + ln.Addr().String() + "/ws"
	ln.Close() // nothing listens there now
	down := newFakeGateway(t)
	down.SetDown(true) // answers 503
	for _, tc := range []struct{ url, want string }{
		{closed, "connection refused"},
		{down.URL(), "503"},
	} {
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run([]string{"pub", "--url", tc.url, "--timeout", "2s", "--id", "k9", "chat", "x"}, &out, &errOut)
		}()
		// At once: well before --timeout.
		waitUntil(t, time.Second, "the first connection error on stderr", func() bool {
			return strings.Contains(errOut.String(), "comet: warning: cannot connect: ")
		})
		select {
		case code := <-done:
			t.Fatalf("%s: comet pub exited (%d) before it said it cannot connect: %q", tc.url, code, errOut.String())
		default:
		}
		code := waitExit(t, done)
		lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
		if code != 1 || out.String() != "" || len(lines) != 2 ||
			!strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "retrying for up to 2s") ||
			!strings.HasPrefix(lines[1], "comet: publish to chat: not sent: could not connect to a gateway within 2s (") ||
			!strings.Contains(lines[1], tc.want) || strings.Contains(errOut.String(), "may or may not") {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", tc.url, code, out.String(), errOut.String())
		}
	}
}

func TestPubSubUsage(t *testing.T) {
	for _, args := range [][]string{
		{"pub"},
		{"pub", "chat"},
		{"pub", "chat", "a", "b"},
		{"pub", "bad channel", "x"},
		{"pub", "--url", "http://127.0.0.1:1/ws", "chat", "x"},
		{"pub", "--url", " , ", "chat", "x"},
		{"pub", "--timeout", "0s", "chat", "x"},
		{"pub", "--nope", "chat", "x"},
		{"sub"},
		{"sub", "bad channel"},
		{"sub", "a", "a"},
		{"sub", "--epoch", "e1", "a"},
		{"sub", "--count", "-1", "a"},
		{"sub", "--from", "x", "a"},
		{"sub", "--url", "ws://", "a"},
	} {
		if code, out, errOut := comet(t, args...); code != 2 || out != "" || !strings.HasPrefix(errOut, "comet: ") && !strings.Contains(errOut, "Usage") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	for _, cmd := range []string{"pub", "sub"} {
		code, _, errOut := comet(t, cmd, "--help")
		if code != 0 || !strings.Contains(errOut, "Usage: comet "+cmd) || !strings.Contains(errOut, "[COMET_URL]") {
			t.Errorf("%s --help: exit %d, %q", cmd, code, errOut)
		}
	}
	if _, _, errOut := comet(t, "pub", "--help"); !strings.Contains(errOut, "otherwise it is sent as a JSON string") {
		t.Errorf("pub --help does not say how DATA is read: %q", errOut)
	}
	t.Setenv("COMET_COUNT", "many")
	if code, _, errOut := comet(t, "sub", "a"); code != 2 || !strings.Contains(errOut, "COMET_COUNT") {
		t.Errorf("bad COMET_COUNT: exit %d, %q", code, errOut)
	}
}

func TestSubCount(t *testing.T) {
	g := newFakeGateway(t)
	data := raws(`{"n":1}`, `"two"`, `3`, `[4]`)
	g.Append("chat", data[:3]...)
	code, out, errOut := comet(t, "sub", "--url", g.URL(), "--from", "1", "--count", "3", "chat")
	if want := msgLines("chat", "e1", 1, 3, data); code != 0 || out != want || errOut != "" {
		t.Fatalf("exit %d, stdout %q, want %q, stderr %q", code, out, want, errOut)
	}

	// Without --from: new messages only. (Wait for the first run's
	// connection to be gone, so that the subscriber counted is the new one.)
	waitUntil(t, 5*time.Second, "the first run's connection to close", func() bool { return g.Conns() == 0 })
	var out2, err2 syncBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"sub", "--url", g.URL(), "--count", "1", "chat"}, &out2, &err2) }()
	waitUntil(t, 5*time.Second, "the subscription", func() bool { return g.Subscribers("chat") == 1 })
	g.Append("chat", data[3])
	if code := waitExit(t, done); code != 0 || out2.String() != msgLines("chat", "e1", 4, 4, data) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out2.String(), err2.String())
	}
}

func TestSubChannels(t *testing.T) {
	g := newFakeGateway(t)
	da, db := raws(`"a1"`, `"a2"`), raws(`"b1"`)
	g.Append("a", da...)
	g.Append("b", db...)
	code, out, errOut := comet(t, "sub", "--url", g.URL(), "--from", "1", "--count", "3", "a", "b")
	got := strings.SplitAfter(out, "\n")
	slices.Sort(got)
	want := strings.SplitAfter(msgLines("a", "e1", 1, 2, da)+msgLines("b", "e1", 1, 1, db), "\n")
	slices.Sort(want)
	if code != 0 || !slices.Equal(got, want) || errOut != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// --state keeps the positions: the next run goes on where the last stopped,
// even when it stopped at --count with more messages already received.
func TestSubState(t *testing.T) {
	g := newFakeGateway(t)
	data := raws(`1`, `2`, `3`, `4`, `5`, `6`)
	g.Append("chat", data...)
	state := filepath.Join(t.TempDir(), "state.json")
	for _, tc := range []struct {
		args     []string
		from, to uint64
	}{
		{[]string{"--from", "1", "--count", "2"}, 1, 2},
		{[]string{"--count", "3"}, 3, 5},
		{[]string{"--count", "1"}, 6, 6},
		{[]string{"--from", "2", "--count", "1"}, 2, 2}, // --from wins
	} {
		args := append([]string{"sub", "--url", g.URL(), "--state", state}, tc.args...)
		code, out, errOut := comet(t, append(args, "chat")...)
		if want := msgLines("chat", "e1", tc.from, tc.to, data); code != 0 || out != want {
			t.Fatalf("%q: exit %d, stdout %q, want %q, stderr %q", tc.args, code, out, want, errOut)
		}
	}
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Channels map[string]struct {
			Offset uint64 `json:"offset"`
			Epoch  string `json:"epoch"`
		} `json:"channels"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Channels["chat"].Offset != 2 || st.Channels["chat"].Epoch != "e1" {
		t.Fatalf("state file %s (%v)", b, err)
	}
}

// SIGTERM stops comet sub: it saves the state file and exits 0.
func TestSubSignal(t *testing.T) {
	g := newFakeGateway(t)
	data := raws(`1`, `2`, `3`)
	state := filepath.Join(t.TempDir(), "state.json")
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"sub", "--url", g.URL(), "--state", state, "--from", "1", "chat"}, &out, &errOut)
	}()
	waitUntil(t, 5*time.Second, "the subscription", func() bool { return g.Subscribers("chat") == 1 })
	g.Append("chat", data[:2]...)
	waitUntil(t, 5*time.Second, "2 lines", func() bool { return out.lines() == 2 })
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done); code != 0 || out.String() != msgLines("chat", "e1", 1, 2, data) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	g.Append("chat", data[2])
	code, out2, _ := comet(t, "sub", "--url", g.URL(), "--state", state, "--count", "1", "chat")
	if code != 0 || out2 != msgLines("chat", "e1", 3, 3, data) {
		t.Fatalf("after SIGTERM the state did not resume: exit %d, %q", code, out2)
	}
}

// Disconnects are invisible on stdout: no gap, no duplicate.
func TestSubResumes(t *testing.T) {
	g := newFakeGateway(t)
	data := raws(`1`, `2`, `3`, `4`, `5`, `6`)
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"sub", "--url", g.URL(), "--count", "6", "chat"}, &out, &errOut) }()
	waitUntil(t, 5*time.Second, "the subscription", func() bool { return g.Subscribers("chat") == 1 })
	g.Append("chat", data[:3]...)
	waitUntil(t, 5*time.Second, "3 lines", func() bool { return out.lines() == 3 })
	g.SetDown(true)
	g.Drop()
	g.Append("chat", data[3:5]...) // while it is away
	waitUntil(t, 5*time.Second, "a failed reconnect", func() bool { return g.Attempts() >= 2 })
	g.SetDown(false)
	waitUntil(t, 5*time.Second, "5 lines", func() bool { return out.lines() == 5 })
	g.CloseConns(4002)
	waitUntil(t, 5*time.Second, "the subscription again", func() bool { return g.Accepted() == 3 && g.Subscribers("chat") == 1 })
	g.Append("chat", data[5])
	if code := waitExit(t, done); code != 0 || out.String() != msgLines("chat", "e1", 1, 6, data) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	if !strings.Contains(errOut.String(), "comet: warning: ") || !strings.Contains(errOut.String(), "reconnecting") {
		t.Fatalf("stderr %q", errOut.String())
	}
}

// recovered:false is a warning on stderr; stdout has only messages.
func TestSubWarnsOfLoss(t *testing.T) {
	g := newFakeGateway(t)
	data := raws(`1`, `2`, `3`, `4`, `5`)
	g.Append("chat", data...)
	g.Trim("chat", 4)
	code, out, errOut := comet(t, "sub", "--url", g.URL(), "--from", "2", "--count", "2", "chat")
	if code != 0 || out != msgLines("chat", "e1", 4, 5, data) ||
		errOut != "comet: warning: channel chat: offsets 2 to 3 are gone (retention): resuming at offset 4\n" {
		t.Fatalf("trimmed: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	code, out, errOut = comet(t, "sub", "--url", g.URL(), "--from", "9", "--epoch", "e0", "--count", "1", "chat")
	if code != 0 || out != msgLines("chat", "e1", 4, 4, data) ||
		errOut != "comet: warning: channel chat: its history was reset (epoch e1, was e0), offsets of the old epoch mean nothing: starting at offset 4\n" {
		t.Fatalf("epoch: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestSubRefused(t *testing.T) {
	g := newFakeGateway(t)
	g.FailSubscribes("forbidden")
	code, out, errOut := comet(t, "sub", "--url", g.URL(), "chat")
	if code != 1 || out != "" || errOut != "comet: subscribe chat: forbidden: fake failure\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestBenchPublishUsage: the flags of comet bench publish are checked
// before anything is sent.
func TestBenchPublishUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "publish", "--batch", "0"},
		{"bench", "publish", "--batch", "1001"},
		{"bench", "publish", "--url", "ws://127.0.0.1:1/ws", "--window", "0"},
		{"bench", "publish", "--url", "ws://127.0.0.1:1/ws", "--batch", "10"},
	} {
		if code, out, errOut := comet(t, args...); code != 2 || out != "" || !strings.HasPrefix(errOut, "comet: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	code, _, errOut := comet(t, "bench", "publish", "--help")
	if code != 0 || !strings.Contains(errOut, "--batch") || !strings.Contains(errOut, "--window") || !strings.Contains(errOut, "--url") {
		t.Errorf("bench publish --help: exit %d, %q", code, errOut)
	}
}

// TestToolDefaultsFindStandalone: run without an address, the client tools
// and every benchmark find what the README's first command (comet, that is
// comet standalone) starts: its --listen, where it serves clients and the
// hub API.
func TestToolDefaultsFindStandalone(t *testing.T) {
	defaults := func(args ...string) map[string]string {
		t.Helper()
		code, _, help := comet(t, append(args, "--help")...)
		if code != 0 {
			t.Fatalf("comet %s --help: exit %d\n%s", strings.Join(args, " "), code, help)
		}
		d := map[string]string{}
		for _, m := range regexp.MustCompile(`(?m)^  --([a-z-]+)  \[[^]]*\]\n      .*\(default ([^ )]+)\)$`).FindAllStringSubmatch(help, -1) {
			d[m[1]] = m[2]
		}
		return d
	}
	listen := defaults("standalone")["listen"]
	if listen == "" {
		t.Fatal("comet standalone --help shows no --listen default")
	}
	url := "ws://" + listen + "/ws"
	for _, tc := range []struct {
		args       []string
		flag, want string
	}{
		{[]string{"bench", "publish"}, "api", listen},
		{[]string{"bench", "request"}, "hubs", listen},
		{[]string{"bench", "request"}, "url", url},
		{[]string{"bench", "fanout"}, "url", url},
		{[]string{"bench", "catchup"}, "url", url},
		{[]string{"pub"}, "url", url},
		{[]string{"sub"}, "url", url},
	} {
		if got := defaults(tc.args...)[tc.flag]; got != tc.want {
			t.Errorf("comet %s --%s defaults to %q, want %q (comet standalone's)", strings.Join(tc.args, " "), tc.flag, got, tc.want)
		}
	}
}
