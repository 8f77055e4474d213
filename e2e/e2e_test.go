package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// TestKillLeaderUnderLoad: kill -9 of the leader while 32 clients publish
// loses no acknowledged message and stores no message twice (guarantees 1
// and 4), on every hub, including the killed one once restarted.
func TestKillLeaderUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	channels := []string{"load-a", "load-b", "load-c", "load-d"}
	led := newLedger()
	const total = 1200
	start := time.Now()
	l := startLoad(c, led, loadConfig{
		prefix: "k", channels: channels, total: total, workers: 32,
		pace: 60 * time.Millisecond, deadline: 60 * time.Second,
	})
	waitFor(t, 30*time.Second, "300 acknowledged publishes", func() bool { return led.ackCount() >= 300 })

	victim := c.waitLeader(nil, 10*time.Second)
	ackedAtKill := led.ackCount()
	c.kill(victim)
	t.Logf("%v: SIGKILLed leader %s after %d acknowledged publishes", time.Since(start).Round(time.Millisecond), victim.id, ackedAtKill)

	newLeader := c.waitLeader(victim, 30*time.Second)
	t.Logf("%v: new leader %s (%d acknowledged)", time.Since(start).Round(time.Millisecond), newLeader.id, led.ackCount())
	c.restart(victim)
	ackedAtRestart := led.ackCount()
	t.Logf("%v: restarted %s (%d acknowledged)", time.Since(start).Round(time.Millisecond), victim.id, ackedAtRestart)

	l.wait()
	acked := led.ackCount()
	t.Logf("%v: load done: %d of %d acknowledged in %d attempts; %d after the kill, %d after the restart",
		time.Since(start).Round(time.Millisecond), acked, total, l.attempts, acked-ackedAtKill, acked-ackedAtRestart)
	if acked != total {
		t.Fatalf("%d of %d publishes acknowledged", acked, total)
	}
	if acked == ackedAtKill {
		t.Errorf("no publish was acknowledged after the leader was killed")
	}

	ref := c.verify(led, c.hubs, channels)

	// Guarantee 4: a retry with the same id, on any hub, gets the first
	// offset and stores nothing.
	_, acks := led.snapshot()
	sample := make([]ack, 0, 100)
	for _, i := range rand.Perm(len(acks))[:100] {
		sample = append(sample, acks[i])
	}
	bad := 0
	for _, a := range sample {
		res := c.mustPublish(a.channel, a.id, a.data)
		if res.Offset == a.offset && res.Duplicate && res.Epoch == ref[a.channel].Epoch {
			continue
		}
		if bad++; bad <= 5 {
			t.Errorf("re-publish of %s/%s got %+v; want offset %d (the first), duplicate, epoch %s",
				a.channel, a.id, res, a.offset, ref[a.channel].Epoch)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d re-publishes were not answered with the first offset", bad, len(sample))
	}
	for _, ch := range channels {
		id := "after-retries-" + ch
		res := c.mustPublish(ch, id, payload(id, 1))
		if want := ref[ch].Next; res.Offset != want {
			t.Errorf("%s: publish after the re-publishes got offset %d, want %d: a re-publish was stored", ch, res.Offset, want)
		}
	}
}

// TestRestartAllHubs: kill -9 of every hub at once loses nothing
// acknowledged (guarantee 1), and offsets and epoch carry on.
func TestRestartAllHubs(t *testing.T) {
	c := startCluster(t, 3)
	const ch = "restart"
	led := newLedger()
	l := startLoad(c, led, loadConfig{prefix: "r", channels: []string{ch}, total: 200, workers: 8, deadline: 60 * time.Second})
	l.wait()
	if n := led.ackCount(); n != 200 {
		t.Fatalf("%d of 200 publishes acknowledged", n)
	}
	_, acks := led.snapshot()
	offsets := map[uint64]bool{}
	for _, a := range acks {
		offsets[a.offset] = true
	}
	if len(offsets) != 200 {
		t.Errorf("200 publishes got %d distinct offsets", len(offsets))
	}
	leader := c.waitLeader(nil, 10*time.Second)
	c.waitNext(leader, ch, 201, 10*time.Second)
	before, err := c.readAll(leader, ch)
	if err != nil {
		t.Fatal(err)
	}

	for _, h := range c.hubs {
		_ = h.cmd.Process.Kill()
	}
	for _, h := range c.hubs {
		c.kill(h) // waits for the exit
	}
	c.restart(c.hubs...)
	c.waitLeader(nil, 30*time.Second)

	for _, h := range c.hubs {
		c.waitNext(h, ch, 201, 30*time.Second)
		got, err := c.readAll(h, ch)
		if err != nil {
			t.Fatal(err)
		}
		if got.Epoch != before.Epoch {
			t.Errorf("%s: epoch %s after the restart, %s before: the history was not lost", h.id, got.Epoch, before.Epoch)
		}
		if got.Next != 201 {
			t.Errorf("%s: next is %d after the restart, want 201", h.id, got.Next)
		}
		sentMsgs, acks := led.snapshot()
		c.checkChannel(h, ch, got, sentMsgs, acks)
	}
	res := c.mustPublish(ch, "r-after", payload("r-after", 0))
	if res.Offset != 201 || res.Epoch != before.Epoch {
		t.Errorf("first publish after the restart: offset %d epoch %s, want 201 %s", res.Offset, res.Epoch, before.Epoch)
	}
}

// TestGracefulStop: SIGTERM on the leader while clients publish: it exits
// 0 within 15s, another hub leads, nothing acknowledged is lost, and the
// stopped hub catches up when it comes back.
func TestGracefulStop(t *testing.T) {
	c := startCluster(t, 3)
	channels := []string{"graceful-a", "graceful-b"}
	led := newLedger()
	l := startLoad(c, led, loadConfig{
		prefix: "g", channels: channels, workers: 4,
		pace: 20 * time.Millisecond, deadline: 60 * time.Second,
	})
	waitFor(t, 30*time.Second, "50 acknowledged publishes", func() bool { return led.ackCount() >= 50 })

	leader := c.waitLeader(nil, 10*time.Second)
	took := c.stop(leader, 15*time.Second)
	t.Logf("leader %s exited 0 %v after SIGTERM (leadership transfer logged: %v)",
		leader.id, took.Round(time.Millisecond), leader.logContains("leadership transferred"))
	newLeader := c.waitLeader(leader, 15*time.Second)
	t.Logf("new leader: %s", newLeader.id)

	atStop := led.ackCount()
	waitFor(t, 30*time.Second, "publishing to continue", func() bool { return led.ackCount() >= atStop+50 })
	l.stop()
	c.verify(led, c.runningHubs(), channels)

	c.restart(leader)
	c.verify(led, c.hubs, channels)
}

// TestJoinFourthHub: a hub started with --join and no --peers becomes a
// follower that serves every message; `comet cluster remove` takes it out.
func TestJoinFourthHub(t *testing.T) {
	c := startCluster(t, 3)
	const ch = "join"
	led := newLedger()
	for i := 0; i < 50; i++ {
		c.publishRecorded(led, ch, fmt.Sprintf("j-%d", i), i)
	}
	leader := c.waitLeader(nil, 10*time.Second)
	var follower *hub
	for _, h := range c.hubs {
		if h != leader {
			follower = h
			break
		}
	}

	// A hub started with the id of a running member (at another address)
	// is refused, says how to replace a member, and exits; the member
	// keeps its address.
	code, _, errOut := runComet(t, c.env(), "hub", "--id", follower.id, "--data", t.TempDir(),
		"--raft", freeAddr(t), "--api", freeAddr(t), "--join", leader.api)
	if code != 1 || !strings.Contains(errOut, "already a member") || !strings.Contains(errOut, "/v1/cluster/remove") {
		t.Fatalf("comet hub --id %s --join (a running member's id): exit %d, stderr:\n%s\nwant exit 1 saying how to replace a member", follower.id, code, errOut)
	}
	if st, err := c.clusterStatus(leader); err != nil || !hasNode(st, follower.id, follower.raft) {
		t.Fatalf("after the refused join: %+v, %v; want %s still at %s", st, err, follower.id, follower.raft)
	}

	h4 := c.addHub("h4", "--join", follower.api)
	statusRow := func(api, id string) []string {
		code, out, errOut := runComet(t, c.env(), "cluster", "status", "--api", api)
		if code != 0 {
			t.Logf("comet cluster status --api %s: exit %d: %s", api, code, errOut)
			return nil
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 4 && f[0] == id {
				return f
			}
		}
		return nil
	}
	var lastOut string
	waitFor(t, 30*time.Second, "`comet cluster status` to list h4 as a follower", func() bool {
		row := statusRow(leader.api, "h4")
		lastOut = strings.Join(row, " ")
		return row != nil && row[3] == "follower" && row[1] == h4.raft && row[2] == h4.api
	})
	// Every hub, including h4, reports the four members.
	for _, h := range c.runningHubs() {
		var st wire.ClusterStatus
		waitFor(t, 15*time.Second, h.id+" to list 4 members", func() bool {
			var err error
			st, err = c.clusterStatus(h)
			return err == nil && len(st.Nodes) == 4
		})
	}
	t.Logf("status row of h4: %s", lastOut)

	c.waitNext(h4, ch, 51, 30*time.Second)
	got, err := c.readAll(h4, ch)
	if err != nil {
		t.Fatal(err)
	}
	sentMsgs, acks := led.snapshot()
	if unacked := c.checkChannel(h4, ch, got, sentMsgs, acks); unacked != 0 || len(got.Messages) != 50 {
		t.Errorf("h4 holds %d messages, want the 50 published", len(got.Messages))
	}
	// A publish through h4 is forwarded to the leader.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, _, err := publishRetry(ctx, c, []string{h4.api}, ch, "via-h4", payload("via-h4", 0))
	if err != nil || res.Offset != 51 {
		t.Errorf("publish through h4: %+v, %v; want offset 51", res, err)
	}

	code, out, errOut := runComet(t, c.env(), "cluster", "remove", "--api", follower.api, "h4")
	if code != 0 || !strings.Contains(out, "removed h4") {
		t.Fatalf("comet cluster remove h4: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, h := range []*hub{leader, follower} {
		waitFor(t, 15*time.Second, "h4 gone from `comet cluster status --api "+h.id+"`", func() bool {
			code, out, _ := runComet(t, c.env(), "cluster", "status", "--api", h.api)
			return code == 0 && !regexp.MustCompile(`(?m)^h4\s`).MatchString(out) && regexp.MustCompile(`(?m)^h1\s`).MatchString(out)
		})
	}
	code, _, errOut = runComet(t, c.env(), "cluster", "remove", "--api", leader.api, "h4")
	if code == 0 || !strings.Contains(errOut, "h4") {
		t.Errorf("removing h4 twice: exit %d, stderr %q; want an error naming h4", code, errOut)
	}
	// The three remaining hubs go on; the removed one shuts down cleanly.
	c.mustPublish(ch, "after-remove", payload("after-remove", 0))
	c.stop(h4, 15*time.Second)
}

// hasNode reports whether st lists member id at Raft address raft.
func hasNode(st wire.ClusterStatus, id, raft string) bool {
	for _, nd := range st.Nodes {
		if nd.ID == id && nd.Raft == raft {
			return true
		}
	}
	return false
}

// TestCLIErrors: wrong command lines fail fast with a clear message and
// the documented exit status; flags read the environment.
func TestCLIErrors(t *testing.T) {
	needBinary(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldAddr := held.Addr().String()
	notDir := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(notDir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	badData := filepath.Join(notDir, "data")
	raftAddr := "127.0.0.1:1" // never listened on: the hub fails before

	cases := []struct {
		name     string
		env      []string
		args     []string
		wantCode int // -1: any non-zero
		want     []string
		notWant  []string
	}{
		{"hub without --id", nil, []string{"hub"}, 2, []string{"--id"}, nil},
		{"malformed --peers", nil, []string{"hub", "--id", "h1", "--peers", "h1"}, 2, []string{"--peers", `"h1"`}, nil},
		{"--peers without port", nil, []string{"hub", "--id", "h1", "--peers", "h1=localhost"}, 2, []string{"--peers"}, nil},
		{"--peers with a duplicate id", nil, []string{"hub", "--id", "h1", "--peers", "h1=127.0.0.1:1,h1=127.0.0.1:2"}, 2, []string{"--peers", "twice"}, nil},
		{"--id not in --peers", nil, []string{"hub", "--id", "h9", "--peers", "h1=127.0.0.1:1"}, 2, []string{"h9", "--peers"}, nil},
		{"bad --api", nil, []string{"hub", "--id", "h1", "--api", "nope"}, 2, []string{"--api"}, nil},
		{"unknown flag", nil, []string{"hub", "--bogus"}, 2, []string{"bogus"}, nil},
		{"stray argument", nil, []string{"hub", "--id", "h1", "extra"}, 2, []string{"extra"}, nil},
		{"--peers with port 0", nil, []string{"hub", "--id", "h1", "--raft", raftAddr, "--peers", "h1=" + raftAddr + ",h2=127.0.0.1:0"}, 2, []string{"--peers", "h2", "1 to 65535"}, nil},
		{"--peers with port 70000", nil, []string{"hub", "--id", "h1", "--raft", raftAddr, "--peers", "h1=" + raftAddr + ",h2=127.0.0.1:70000"}, 2, []string{"--peers", "h2", "1 to 65535"}, nil},
		{"--peers gives this hub another address than --raft", nil, []string{"hub", "--id", "h1", "--raft", raftAddr, "--peers", "h1=127.0.0.1:2"}, 2, []string{"--peers", "127.0.0.1:2", "--raft", raftAddr}, nil},
		{"--api in use", nil, []string{"hub", "--id", "h1", "--data", "d", "--raft", raftAddr, "--api", heldAddr, "--peers", "h1=" + raftAddr}, -1, []string{heldAddr}, nil},
		{"unwritable --data", nil, []string{"hub", "--id", "h1", "--data", badData, "--raft", raftAddr, "--api", freeAddr(t), "--peers", "h1=" + raftAddr}, -1, []string{"data", badData, "not a directory"}, nil},
		{"id and peers from the environment", []string{"COMET_ID=zz", "COMET_PEERS=h1=127.0.0.1:1"}, []string{"hub"}, 2, []string{`"zz"`, "--peers"}, nil},
		{"COMET_ID gets past the --id check", []string{"COMET_ID=h1", "COMET_PEERS=garbage"}, []string{"hub"}, 2, []string{"--peers", "garbage"}, []string{"--id is required"}},
		{"the command line wins over the environment", []string{"COMET_ID=zz", "COMET_PEERS=h1=" + raftAddr, "COMET_RAFT=" + raftAddr, "COMET_DATA=" + badData}, []string{"hub", "--id", "h1"}, -1, []string{badData}, []string{"zz"}},
		{"bad number in the environment", []string{"COMET_MAX_MESSAGE_BYTES=lots"}, []string{"hub", "--id", "h1"}, 2, []string{"COMET_MAX_MESSAGE_BYTES", "lots"}, nil},
		{"bad --log-level", nil, []string{"hub", "--id", "h1", "--log-level", "loud"}, 2, []string{"--log-level"}, nil},
		{"bad --retention", nil, []string{"hub", "--id", "h1", "--retention", "x"}, 2, []string{"--retention"}, nil},
		{"unknown command", nil, []string{"bogus"}, 2, []string{"bogus"}, nil},
		{"unknown cluster command", nil, []string{"cluster", "bogus"}, 2, []string{"bogus"}, nil},
		{"cluster without a command", nil, []string{"cluster"}, 2, []string{"status"}, nil},
		{"cluster remove without an id", nil, []string{"cluster", "remove", "--api", heldAddr}, 2, []string{"remove"}, nil},
		{"cluster status of nothing", nil, []string{"cluster", "status", "--api", freeAddr(t)}, 1, []string{"cluster status"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := runComet(t, tc.env, tc.args...)
			if tc.wantCode == -1 && code == 0 || tc.wantCode != -1 && code != tc.wantCode {
				t.Errorf("comet %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, tc.wantCode, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("comet %s: stderr does not mention %q:\n%s", strings.Join(tc.args, " "), w, stderr)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(stderr, w) {
					t.Errorf("comet %s: stderr mentions %q:\n%s", strings.Join(tc.args, " "), w, stderr)
				}
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("comet %s took %v to fail", strings.Join(tc.args, " "), el)
			}
		})
	}

	t.Run("unwritable --data leaves no files", func(t *testing.T) {
		if _, err := os.Stat(badData); err == nil {
			t.Errorf("%s exists", badData)
		}
	})

	t.Run("hub --help", func(t *testing.T) {
		code, stdout, stderr := runComet(t, nil, "hub", "--help")
		if code != 0 {
			t.Fatalf("comet hub --help: exit %d\n%s", code, stderr)
		}
		help := stdout + stderr
		flagLine := regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)\s+\[([A-Z0-9_]+)\]`)
		found := map[string]bool{}
		for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
			found[m[1]] = true
			if want := "COMET_" + strings.ToUpper(strings.ReplaceAll(m[1], "-", "_")); m[2] != want {
				t.Errorf("--%s is documented with %s, want %s", m[1], m[2], want)
			}
		}
		for _, f := range []string{"id", "data", "raft", "api", "peers", "join", "retention", "max-message-bytes", "log-level"} {
			if !found[f] {
				t.Errorf("comet hub --help does not list --%s with its COMET_ variable:\n%s", f, help)
			}
		}
		// Every flag line names its variable.
		for _, line := range strings.Split(help, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "--") && !flagLine.MatchString(line) {
				t.Errorf("flag line without its environment variable: %q", line)
			}
		}
	})

	t.Run("help and version", func(t *testing.T) {
		for _, args := range [][]string{{"help"}, {"--help"}, {"version"}, {"cluster", "status", "--help"}} {
			if code, _, stderr := runComet(t, nil, args...); code != 0 {
				t.Errorf("comet %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
			}
		}
	})
}

// TestBadInputKeepsServing: bad requests to every hub get a 4xx JSON error
// with a code and a message (guarantee 5); no hub crashes, nothing stored
// is lost, and nothing bad is stored.
func TestBadInputKeepsServing(t *testing.T) {
	c := startCluster(t, 3)
	const ch = "bad-input"
	led := newLedger()
	for i := 0; i < 5; i++ {
		c.publishRecorded(led, ch, fmt.Sprintf("b-%d", i), i)
	}

	big := `"` + strings.Repeat("x", 70<<10) + `"`
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	type badReq struct {
		name, method, path, body string
		status                   int // 0: any 4xx
	}
	pub := func(name, body string, status int) badReq {
		return badReq{name, http.MethodPost, "/v1/publish", body, status}
	}
	reqs := []badReq{
		pub("not JSON", `hello`, 400),
		pub("empty body", ``, 400),
		pub("truncated JSON", `{"channel":"c","data":{"x":`, 400),
		pub("array body", `[1,2,3]`, 400),
		pub("null body", `null`, 400),
		pub("channel is a number", `{"channel":1,"data":{}}`, 400),
		pub("id is a number", `{"channel":"c","data":1,"id":5}`, 400),
		pub("empty channel", `{"channel":"","data":1}`, 400),
		pub("bad channel characters", `{"channel":"bad channel!","data":1}`, 400),
		pub("non-ASCII channel", `{"channel":"caña","data":1}`, 400),
		pub("channel of 256 bytes", `{"channel":"`+strings.Repeat("c", 256)+`","data":1}`, 400),
		pub("missing data", `{"channel":"c"}`, 400),
		pub("invalid data", `{"channel":"c","data":tru}`, 400),
		pub("unknown field", `{"channel":"c","data":1,"extra":true}`, 400),
		pub("trailing data", `{"channel":"c","data":1}{"channel":"c","data":2}`, 400),
		pub("id of 300 bytes", `{"channel":"c","data":1,"id":"`+strings.Repeat("i", 300)+`"}`, 400),
		pub("data over 64 KiB", `{"channel":"c","data":`+big+`}`, 413),
		pub("data nested 20000 deep", `{"channel":"c","data":`+deep+`}`, 400),
		{"bad channel in a read", http.MethodGet, "/v1/channels/bad%20name/messages", "", 400},
		{"invalid UTF-8 channel in a read", http.MethodGet, "/v1/channels/%FF/messages", "", 400},
		{"negative from", http.MethodGet, "/v1/channels/c/messages?from=-1", "", 400},
		{"from overflows", http.MethodGet, "/v1/channels/c/messages?from=99999999999999999999999", "", 400},
		{"limit not a number", http.MethodGet, "/v1/channels/c/messages?limit=ten", "", 400},
		{"limit too large", http.MethodGet, "/v1/channels/c/messages?limit=10001", "", 400},
		{"unknown endpoint", http.MethodGet, "/v1/nope", "", 404},
		{"no /messages", http.MethodGet, "/v1/channels/c", "", 404},
		{"join without fields", http.MethodPost, "/v1/cluster/join", `{}`, 400},
		{"join not JSON", http.MethodPost, "/v1/cluster/join", `join me`, 400},
		{"remove unknown hub", http.MethodPost, "/v1/cluster/remove", `{"id":"nope"}`, 404},
		{"remove without id", http.MethodPost, "/v1/cluster/remove", `{}`, 400},
	}
	check := func(h *hub, name string, status int, code int, raw []byte) {
		t.Helper()
		if code/100 != 4 || status != 0 && code != status {
			t.Errorf("%s: %s: status %d, want %d: %.200s", h.id, name, code, status, raw)
			return
		}
		var e wire.Error
		if err := json.Unmarshal(raw, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Errorf("%s: %s: answer is not a JSON error with code and message: %.200s", h.id, name, raw)
			return
		}
		known := []string{wire.CodeBadRequest, wire.CodeNotFound, wire.CodeForbidden, wire.CodeTooLarge, wire.CodeUnavailable, wire.CodeTimeout}
		if !slices.Contains(known, e.Code) {
			t.Errorf("%s: %s: code %q is not one of %v", h.id, name, e.Code, known)
		}
	}
	for _, h := range c.hubs {
		for _, r := range reqs {
			var code int
			var raw []byte
			// Requests that need the leader may meet an election: retry
			// those answered 503 for a while.
			waitFor(t, 15*time.Second, h.id+": "+r.name+" answered", func() bool {
				var body []byte
				if r.body != "" || r.method == http.MethodPost {
					body = []byte(r.body)
				}
				var err error
				code, raw, err = c.do(r.method, h.api, r.path, body)
				if err != nil {
					t.Errorf("%s: %s: %v", h.id, r.name, err)
					return true
				}
				return code != http.StatusServiceUnavailable
			})
			if code != 0 {
				check(h, r.name, r.status, code, raw)
			}
		}
		code, raw := hugeBody(t, h.api, c.secret, 10<<20)
		check(h, "10 MiB body", 413, code, raw)
	}

	for _, h := range c.hubs {
		if !h.running() {
			t.Fatalf("%s exited with status %d", h.id, h.exitCode())
		}
	}
	if err := c.waitHealthy(c.hubs, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.hubs {
		id := "valid-" + h.id
		data := payload(id, 1)
		led.addSent(id, ch, data)
		res, err := c.publishOnce(h.api, ch, id, data)
		if err != nil {
			// An election may be under way; any hub will do.
			res = c.mustPublish(ch, id, data)
		}
		led.addAck(ack{channel: ch, id: id, offset: res.Offset, data: data})
	}
	// Nothing bad was stored and nothing stored was lost: the channel holds
	// exactly what was published, on every hub, and "c" holds nothing.
	c.verify(led, c.hubs, []string{ch})
	for _, h := range c.hubs {
		got, err := c.readAll(h, "c")
		if err != nil || len(got.Messages) != 0 {
			t.Errorf("%s: channel c: %d messages, %v; the bad publishes stored something", h.id, len(got.Messages), err)
		}
	}
}

// hugeBody posts n bytes to /v1/publish over a raw connection, reading
// the answer while it writes (the hub may answer, and close, before
// reading it all), and returns the status and body.
func hugeBody(t *testing.T, api, secret string, n int) (int, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", api, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", api, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "POST /v1/publish HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", api, secret, n)
		fmt.Fprint(w, `{"channel":"c","data":"`)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for left := n - 23; left > 0; left -= len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), left)]); err != nil {
				return // the hub stopped reading: expected
			}
		}
		_ = w.Flush()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Errorf("%s: 10 MiB body: no answer: %v", api, err)
		return 0, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw
}
