package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoggerComponent: nested loggers say their component once, where the
// first one gave it.
func TestLoggerComponent(t *testing.T) {
	var buf syncBuffer
	logger, err := newLogger("info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.With("component", "bus").With("component", "bus", "gateway", "g1").Info("a", "k", 1)
	hub := logger.With("node", "h1", "component", "broker")
	hub.With("component", "router", "session", 3).Info("b")
	hub.Info("c")
	hub.WithGroup("g").With("component", "x").Info("d", "k", 2)
	logger.Debug("not shown")
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=INFO msg=a component=bus gateway=g1 k=1`,
		`level=INFO msg=b node=h1 component=broker.router session=3`,
		`level=INFO msg=c node=h1 component=broker`,
		`level=INFO msg=d node=h1 component=broker g.component=x g.k=2`,
	}
	if len(got) != len(want) {
		t.Fatalf("logged %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if _, line, _ := strings.Cut(got[i], " "); line != want[i] { // without time=
			t.Errorf("line %d: %s\nwant        %s", i, line, want[i])
		}
	}
}

// TestAnnounceReady: one INFO line, once ready, with where; a slow start
// says what it waits for.
func TestAnnounceReady(t *testing.T) {
	var buf syncBuffer
	logger, _ := newLogger("info", &buf)
	var ready atomic.Bool
	var checks atomic.Int64
	stop := announceReady(context.Background(), logger, func(context.Context) error {
		checks.Add(1)
		if !ready.Load() {
			return errors.New("no leader")
		}
		return nil
	}, "hub ready", func() []any { return []any{"api", "http://127.0.0.1:7101/v1/"} })
	defer stop()
	waitUntil(t, 5*time.Second, "3 checks", func() bool { return checks.Load() >= 3 })
	if buf.String() != "" { // not ready: nothing to say yet
		t.Fatalf("logged before ready: %s", buf.String())
	}
	ready.Store(true)
	waitUntil(t, 5*time.Second, "the ready line", func() bool { return buf.lines() == 1 })
	stop()
	if got := buf.String(); !strings.Contains(got, `level=INFO msg="hub ready" api=http://127.0.0.1:7101/v1/ version=`) {
		t.Errorf("ready line: %s", got)
	}
}
