package raft

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestHclogAdapter: hashicorp/raft's log lines read as they should in slog.
func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	line := func(f func()) string {
		t.Helper()
		buf.Reset()
		f()
		return buf.String()
	}

	type server struct{ ID, Address string }
	got := line(func() {
		l.Info("initial configuration", "index", 1, "servers", hclog.Fmt("%+v", []server{{"h1", "127.0.0.1:7001"}}))
	})
	if !strings.Contains(got, `servers="[{ID:h1 Address:127.0.0.1:7001}]"`) || strings.Contains(got, "%+v") {
		t.Errorf("hclog.Fmt is not formatted: %s", got)
	}

	got = line(func() { l.Info("entering candidate state", "node", "Node at 127.0.0.1:7001 [Candidate]", "term", 2) })
	if !strings.Contains(got, `raft-node="Node at 127.0.0.1:7001 [Candidate]" term=2`) {
		t.Errorf("raft's node= is not raft-node=: %s", got)
	}

	// The first election of a start is no warning; one after a leader was
	// lost is.
	got = line(func() {
		l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "", "last-leader-id", "")
	})
	if !strings.Contains(got, "level=INFO") {
		t.Errorf("first election: %s; want INFO", got)
	}
	got = line(func() {
		l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "127.0.0.1:7002", "last-leader-id", "h2")
	})
	if !strings.Contains(got, "level=WARN") {
		t.Errorf("election after a leader was lost: %s; want WARN", got)
	}
	if got := line(func() { l.Warn("failed to contact quorum of nodes, stepping down") }); !strings.Contains(got, "level=WARN") {
		t.Errorf("other warnings: %s; want WARN", got)
	}
}
