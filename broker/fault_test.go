package broker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
)

// damage flips a byte of every copy of pattern in the file at path, under
// the process that has it open (bit rot under a running hub).
func damage(t *testing.T, path string, pattern []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for i := 0; ; {
		j := bytes.Index(raw[i:], pattern)
		if j < 0 {
			break
		}
		if _, err := f.WriteAt([]byte{raw[i+j] ^ 0x01}, int64(i+j)); err != nil {
			t.Fatal(err)
		}
		n++
		i += j + len(pattern)
	}
	if n == 0 {
		t.Fatalf("%q is not in %s", pattern, path)
	}
}

// TestCorruptChunkRefused: a chunk damaged under a running hub is never
// served: reads of it answer 500 naming the file, /readyz turns false, the
// metric says so; other channels still read, and publishes go on.
func TestCorruptChunkRefused(t *testing.T) {
	c, h := startOne(t)
	for i := range 5 {
		c.publish(h.api, "rot", fmt.Sprintf(`"rotting-payload-%d"`, i), "")
	}
	c.publish(h.api, "fine", `"fine"`, "")
	if m := c.metrics(h.api); m["comet_log_corrupt"] != 0 {
		t.Fatalf("comet_log_corrupt = %v before any damage", m["comet_log_corrupt"])
	}
	damage(t, h.log.Path(), []byte("rotting-payload-3"))

	status, raw := c.do(http.MethodGet, h.api, "/v1/channels/rot/messages?from=1", nil)
	var e wire.Error
	_ = json.Unmarshal(raw, &e)
	if status != http.StatusInternalServerError || e.Code != wire.CodeUnavailable ||
		!strings.Contains(e.Message, h.log.Path()) || !strings.Contains(e.Message, "checksum") {
		t.Fatalf("read of a damaged chunk: %d %s; want 500 unavailable naming %s and the checksum", status, raw, h.log.Path())
	}
	status, raw = c.do(http.MethodGet, h.api, "/readyz", nil)
	if status != http.StatusServiceUnavailable || !bytes.Contains(raw, []byte(h.log.Path())) {
		t.Errorf("/readyz after damage: %d %s; want 503 naming the file", status, raw)
	}
	if m := c.metrics(h.api); m["comet_log_corrupt"] != 1 {
		t.Errorf("comet_log_corrupt = %v, want 1", m["comet_log_corrupt"])
	}
	if res, status, raw := c.messages(h.api, "fine", 1, 10); status != http.StatusOK || len(res.Messages) != 1 {
		t.Errorf("read of an intact channel: %d %s", status, raw)
	}
	if _, ok := c.publish(h.api, "fine", `"more"`, ""); !ok {
		t.Error("publish after damage elsewhere failed")
	}
}

// TestFullDiskRefusesPublishes: a leader whose channel log cannot commit
// for want of space refuses publishes at once with 503 unavailable naming
// the cause, is not ready and says so in its metrics; when space returns it
// applies what waited and takes publishes again, by itself.
func TestFullDiskRefusesPublishes(t *testing.T) {
	c, h := startOne(t)
	c.publish(h.api, "c", `1`, "")
	h.log.FailUpdates(1<<30, syscall.ENOSPC)
	// This one is committed but waits to be applied.
	waiting := make(chan publishResult, 1)
	go func() { waiting <- c.tryPublish(h.api, "c", `2`, "") }()
	waitFor(t, 10*time.Second, "the no-space fault", func() bool { return errors.Is(h.log.Fault(), log.ErrNoSpace) })

	r := c.tryPublish(h.api, "c", `3`, "")
	if r.status != http.StatusServiceUnavailable || r.err.Code != wire.CodeUnavailable || !strings.Contains(r.err.Message, "no space left on device") {
		t.Errorf("publish on a full disk: %d %s; want 503 unavailable, no space left on device", r.status, r.raw)
	}
	status, raw := c.do(http.MethodGet, h.api, "/readyz", nil)
	if status != http.StatusServiceUnavailable || !bytes.Contains(raw, []byte("no space left on device")) {
		t.Errorf("/readyz on a full disk: %d %s", status, raw)
	}
	if m := c.metrics(h.api); m["comet_log_no_space"] != 1 {
		t.Errorf("comet_log_no_space = %v, want 1", m["comet_log_no_space"])
	}

	h.log.FailUpdates(0, nil) // space is back
	waitFor(t, 10*time.Second, "readiness", func() bool { return c.ready(h) })
	if r := <-waiting; r.status != http.StatusOK && r.status != http.StatusGatewayTimeout {
		t.Errorf("the publish that waited: %d %s; want 200, or 504 if it waited longer than the timeout", r.status, r.raw)
	}
	if res, ok := c.publish(h.api, "c", `4`, ""); !ok || res.Offset != 3 {
		t.Errorf("publish after space returned: %+v; want offset 3", res)
	}
	if m := c.metrics(h.api); m["comet_log_no_space"] != 0 {
		t.Errorf("comet_log_no_space = %v after recovery, want 0", m["comet_log_no_space"])
	}
	res, status, raw := c.messages(h.api, "c", 1, 10)
	if status != http.StatusOK || len(res.Messages) != 3 || string(res.Messages[1].Data) != "2" {
		t.Errorf("messages after recovery: %d %s", status, raw)
	}
}

// TestFullDiskFollower: a follower whose disk is full does not stop the
// majority; it is not ready meanwhile and catches up by itself when space
// returns.
func TestFullDiskFollower(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]
	c.publishRetry(apis(c.hubs...), "c", `0`, "id0")
	f.log.FailUpdates(1<<30, syscall.ENOSPC)
	for i := 1; i <= 20; i++ {
		// Through the others: leadership may move under load.
		if res, ok := c.publishRetry(apis(c.followers(f)...), "c", fmt.Sprint(i), fmt.Sprint("id", i)); !ok || res.Offset != uint64(i+1) {
			t.Fatalf("publish %d with a follower's disk full: %+v", i, res)
		}
	}
	waitFor(t, 10*time.Second, "the follower's no-space fault", func() bool { return errors.Is(f.log.Fault(), log.ErrNoSpace) })
	if c.ready(f) {
		t.Error("a follower that cannot apply is ready")
	}
	f.log.FailUpdates(0, nil)
	waitFor(t, 20*time.Second, "the follower to catch up and be ready", func() bool {
		info, err := f.log.Info("c")
		return err == nil && info.Next == 22 && c.ready(f)
	})
	res, status, raw := c.messages(f.api, "c", 1, 100)
	if status != http.StatusOK || len(res.Messages) != 21 {
		t.Fatalf("the follower's copy: %d %s", status, raw)
	}
}

// TestFullDiskLeaderHandsOver: a leader whose disk is full hands the lead
// to a hub that can apply, so that writes resume; it catches up once space
// returns.
func TestFullDiskLeaderHandsOver(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	c.publishRetry(apis(c.hubs...), "c", `0`, "id0")
	l.log.FailUpdates(1<<30, syscall.ENOSPC)
	for i := 1; i <= 10; i++ {
		if res, ok := c.publishRetry(apis(c.hubs...), "c", fmt.Sprint(i), fmt.Sprint("id", i)); !ok || res.Offset != uint64(i+1) {
			t.Fatalf("publish %d with the leader's disk full: %+v", i, res)
		}
	}
	if l.node.IsLeader() {
		t.Error("the hub whose disk is full still leads")
	}
	if c.ready(l) {
		t.Error("a hub that cannot apply is ready")
	}
	l.log.FailUpdates(0, nil)
	waitFor(t, 20*time.Second, "the old leader to catch up and be ready", func() bool {
		info, err := l.log.Info("c")
		return err == nil && info.Next == 12 && c.ready(l)
	})
}
