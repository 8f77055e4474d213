package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/internal/durable"
	"github.com/comethq/comet/wire"
)

// TestParsePeersPorts: a peer's port must be a number from 1 to 65535.
func TestParsePeersPorts(t *testing.T) {
	for _, tc := range []struct {
		peers string
		ok    bool
	}{
		{"h1=127.0.0.1:7001,h2=10.0.0.2:65535,h3=host:1", true},
		{"h1=127.0.0.1:0", false},
		{"h1=127.0.0.1:65536", false},
		{"h1=127.0.0.1:70001", false},
		{"h1=127.0.0.1:-1", false},
		{"h1=127.0.0.1:http", false},
		{"h1=127.0.0.1:", false},
		{"h1=:7001", false},
		{"h1=localhost", false},
		{"h1=127.0.0.1:7001,h2=127.0.0.1:99999", false},
	} {
		_, err := parsePeers(tc.peers)
		if tc.ok && err != nil {
			t.Errorf("--peers %s: %v", tc.peers, err)
		}
		if !tc.ok && (!errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--peers")) {
			t.Errorf("--peers %s: %v, want a usage error about --peers", tc.peers, err)
		}
	}
}

// TestHubPeersValidated: `comet hub` refuses, before opening anything, a
// --peers whose entry for this hub differs from --raft or has a bad port.
func TestHubPeersValidated(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--raft", "127.0.0.1:7001", "--peers", "h1=127.0.0.1:7009,h2=127.0.0.1:7002"},
			[]string{"--peers", "127.0.0.1:7009", "--raft", "127.0.0.1:7001"}},
		{[]string{"--raft", "127.0.0.1:7001", "--peers", "h1=localhost:7001"},
			[]string{"--peers", "localhost:7001", "--raft"}},
		// The default --raft is 127.0.0.1:7001.
		{[]string{"--peers", "h1=127.0.0.1:7011"}, []string{"--peers", "127.0.0.1:7011", "--raft", "127.0.0.1:7001"}},
		{[]string{"--raft", "127.0.0.1:7001", "--peers", "h1=127.0.0.1:7001,h2=127.0.0.1:0"}, []string{"--peers", "h2", "65535"}},
	} {
		data := t.TempDir() + "/data"
		err := runHub(append([]string{"--id", "h1", "--data", data, "--api", "127.0.0.1:0"}, tc.args...), io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("comet hub %s: %v, want a usage error", strings.Join(tc.args, " "), err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("comet hub %s: %q does not mention %q", strings.Join(tc.args, " "), err, w)
			}
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("comet hub %s: made its data directory before refusing: %v", strings.Join(tc.args, " "), err)
		}
	}
}

func TestRefusedForGood(t *testing.T) {
	for status, want := range map[int]bool{
		400: true, 401: true, 404: true, 409: true, 413: true,
		408: false, 429: false, 500: false, 502: false, 503: false, 504: false,
	} {
		if got := refusedForGood(status); got != want {
			t.Errorf("refusedForGood(%d) = %v, want %v", status, got, want)
		}
	}
}

// fakeJoinAPI answers POST /v1/cluster/join with the answers given, in
// turn (the last one again after that), and counts the requests.
func fakeJoinAPI(t *testing.T, answers ...int) (addr string, calls *atomic.Int32) {
	t.Helper()
	calls = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/cluster/join" {
			http.NotFound(w, r)
			return
		}
		var req wire.JoinRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n := int(calls.Add(1))
		status := answers[min(n, len(answers))-1]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusOK {
			_, _ = w.Write([]byte(`{"ok":true}`))
			return
		}
		_ = json.NewEncoder(w).Encode(wire.Error{Code: wire.CodeBadRequest, Message: "hub " + req.ID + " is already a member; remove it first"})
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), calls
}

// TestJoinClusterRetriesThenSucceeds: answers that may change (503, 429)
// are retried; a success ends the join with no error.
func TestJoinClusterRetriesThenSucceeds(t *testing.T) {
	api, calls := fakeJoinAPI(t, 503, 429, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := joinCluster(ctx, slog.New(slog.DiscardHandler), []string{api}, "", nil, wire.JoinRequest{ID: "h4", Raft: "127.0.0.1:7004", API: "127.0.0.1:7104"})
	if err != nil || calls.Load() != 3 {
		t.Fatalf("join: %v after %d calls, want success after 3", err, calls.Load())
	}
}

// TestJoinClusterRefused: a 409 ends the join at once with the cluster's
// message.
func TestJoinClusterRefused(t *testing.T) {
	api, calls := fakeJoinAPI(t, 409)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := joinCluster(ctx, slog.New(slog.DiscardHandler), []string{api}, "", nil, wire.JoinRequest{ID: "h2", Raft: "127.0.0.1:7009", API: "127.0.0.1:7109"})
	if !errors.Is(err, errJoinRefused) || !strings.Contains(err.Error(), "already a member; remove it first") || calls.Load() != 1 {
		t.Fatalf("join: %v after %d calls, want errJoinRefused with the cluster's message after 1", err, calls.Load())
	}
}

// TestHubExitsWhenJoinRefused: `comet hub --join` whose join is refused
// for good stops and returns the refusal (exit status 1), instead of
// running on outside the cluster.
//
// On the way it checks that a hub's data directories and files are made
// durably: each new directory's parent, and each directory after its bbolt
// file appeared in it, is fsynced.
func TestHubExitsWhenJoinRefused(t *testing.T) {
	api, _ := fakeJoinAPI(t, 409)
	base := t.TempDir()
	data := filepath.Join(base, "new", "data")
	synced := recordSyncs(t)
	done := make(chan error, 1)
	go func() {
		done <- runHub([]string{"--id", "h2", "--data", data, "--raft", "127.0.0.1:0", "--api", "127.0.0.1:0",
			"--join", api, "--raft-timeout", "100ms"}, io.Discard)
	}()
	defer func() {
		for _, c := range []struct {
			dir  string
			name string
		}{
			{base, "new"}, {filepath.Join(base, "new"), "data"}, {data, "channels.db"}, {data, "raft"},
			{filepath.Join(data, "raft"), "wal"},
		} {
			if !synced(c.dir, c.name) {
				t.Errorf("%s was not synced after %s was made in it", c.dir, c.name)
			}
		}
	}()
	select {
	case err := <-done:
		// Not a usage error: run makes it exit status 1.
		if !errors.Is(err, errJoinRefused) || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "remove it first") {
			t.Fatalf("comet hub: %v, want the refusal", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("comet hub still running 30s after its join was refused")
	}
}

// recordSyncs records the directories synced (with the names they held
// then) until the test ends; the function it returns reports whether dir
// was synced while holding name.
func recordSyncs(t *testing.T) func(dir, name string) bool {
	t.Helper()
	var (
		mu     sync.Mutex
		synced = map[string][][]string{}
	)
	t.Cleanup(durable.Observe(func(dir string) {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		mu.Lock()
		synced[dir] = append(synced[dir], names)
		mu.Unlock()
	}))
	return func(dir, name string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, names := range synced[dir] {
			if slices.Contains(names, name) {
				return true
			}
		}
		return false
	}
}

// TestCheckDataDirSyncsParents: a data directory made at start is durable:
// the parent of each directory made is synced.
func TestCheckDataDirSyncsParents(t *testing.T) {
	base := t.TempDir()
	synced := recordSyncs(t)
	if err := checkDataDir(filepath.Join(base, "a", "data")); err != nil {
		t.Fatal(err)
	}
	if !synced(base, "a") || !synced(filepath.Join(base, "a"), "data") {
		t.Fatal("the parents of the new directories were not synced")
	}
}
