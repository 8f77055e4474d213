package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// newestSnapshot returns the directory of the newest Raft snapshot in a
// hub's data directory, and its Raft index ("" if there is none).
func newestSnapshot(t *testing.T, data string) (string, uint64) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(data, "raft", "snapshots", "*-*-*"))
	if err != nil {
		t.Fatal(err)
	}
	best, bestTerm, bestIndex := "", uint64(0), uint64(0)
	for _, d := range dirs {
		parts := strings.Split(filepath.Base(d), "-")
		if len(parts) != 3 || strings.HasSuffix(d, ".tmp") {
			continue
		}
		term, err1 := strconv.ParseUint(parts[0], 10, 64)
		index, err2 := strconv.ParseUint(parts[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if term > bestTerm || term == bestTerm && index > bestIndex {
			best, bestTerm, bestIndex = d, term, index
		}
	}
	return best, bestIndex
}

// TestHubDamagedSnapshotAndChannelLog: a stopped hub whose newest Raft
// snapshot is damaged (a flipped byte in state.bin, meta.json cut short)
// refuses to start, exit 1 with the file named; with the snapshot put back
// and its channels.db cut short instead, it moves channels.db aside and
// rebuilds it from the snapshot and the Raft log after it, with every
// message and idempotency record.
func TestHubDamagedSnapshotAndChannelLog(t *testing.T) {
	c := startCluster(t, 1)
	h := c.hubs[0]
	c.stop(h, 15*time.Second)
	h.args = append(h.args, "--snapshot-threshold", "8", "--snapshot-interval", "50ms", "--trailing-logs", "2")
	c.restart(h)
	c.waitReady([]*hub{h}, 30*time.Second)

	const n = 40
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("m-%d", i)
		if res := c.mustPublish("chat", id, payload(id, i)); res.Offset != uint64(i) {
			t.Fatalf("publish %s: offset %d, want %d", id, res.Offset, i)
		}
	}
	// A snapshot past the first entries: the Raft log no longer holds
	// them, so a rebuild needs the snapshot.
	waitFor(t, 30*time.Second, "a snapshot past index 16", func() bool {
		_, index := newestSnapshot(t, h.data)
		return index > 16
	})
	c.stop(h, 15*time.Second)
	snap, index := newestSnapshot(t, h.data)
	t.Logf("newest snapshot %s (Raft index %d)", filepath.Base(snap), index)

	refuse := func(what, path string, damaged []byte) {
		t.Helper()
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runComet(t, nil, h.args...)
		if code != 1 || !strings.Contains(errOut, path) || strings.Contains(errOut, "panic") {
			t.Fatalf("%s: exit %d, stderr %q; want exit 1 naming %s", what, code, errOut, path)
		}
		t.Logf("%s: exit %d: %s", what, code, lastLine(errOut))
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(snap, "state.bin")
	raw, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(raw)
	flipped[len(flipped)/2] ^= 0x10
	refuse("a flipped byte in state.bin", state, flipped)
	meta := filepath.Join(snap, "meta.json")
	raw, err = os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	refuse("meta.json cut short", meta, raw[:len(raw)/2])

	db := filepath.Join(h.data, "channels.db")
	raw, err = os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	c.restart(h)
	c.waitReady([]*hub{h}, 30*time.Second)
	if !h.logContains("moved it aside") {
		t.Errorf("the hub's log does not say channels.db was moved aside:\n%s", h.logTail(20))
	}
	if aside, err := os.ReadFile(db + ".damaged"); err != nil || len(aside) != len(raw)/2 {
		t.Errorf("%s.damaged: %d bytes, %v; want the cut file", db, len(aside), err)
	}
	got, err := c.readAll(h, "chat")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != n {
		t.Fatalf("after the rebuild chat holds %d messages, want %d", len(got.Messages), n)
	}
	for i, m := range got.Messages {
		id := fmt.Sprintf("m-%d", i+1)
		if m.Offset != uint64(i+1) || !sameJSON(m.Data, payload(id, i+1)) {
			t.Fatalf("after the rebuild message %d is offset %d, %s; want offset %d, %s", i, m.Offset, m.Data, i+1, payload(id, i+1))
		}
	}
	// Idempotency records were rebuilt too.
	if res := c.mustPublish("chat", "m-5", payload("m-5", 5)); !res.Duplicate || res.Offset != 5 {
		t.Errorf("retry of m-5 after the rebuild: %+v, want duplicate at 5", res)
	}
	if res := c.mustPublish("chat", "m-41", payload("m-41", 41)); res.Duplicate || res.Offset != 41 {
		t.Errorf("m-41 after the rebuild: %+v, want offset 41", res)
	}
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
