package raft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/internal/durable"
	hraft "github.com/hashicorp/raft"
)

// TestCloseDuringProposals closes a node while goroutines propose to it
// and wait: every Wait and Barrier must return, with the entry's outcome or
// an error, never block for good (Raft leaves entries still queued at
// Shutdown unanswered: hashicorp/raft#498).
func TestCloseDuringProposals(t *testing.T) {
	for round := 0; round < 5; round++ {
		c := newCluster(t, 1)
		tn := c.leader()
		n := tn.node
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			applied int
		)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					var err error
					if i%10 == 9 {
						err = n.Barrier(time.Second)
					} else {
						_, err = n.Apply(&Command{Publish: []Publish{{Channel: "chat", Data: []byte("x")}}})
					}
					if err != nil {
						if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrNotLeader) {
							t.Errorf("after close: %v", err)
						}
						return
					}
					mu.Lock()
					applied++
					mu.Unlock()
				}
			}()
		}
		waitFor(t, 5*time.Second, "some entries to apply", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return applied >= 50
		})
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Wait or Barrier still blocked 5s after Close", round)
		}
		c.close()
	}
}

func TestNewValidates(t *testing.T) {
	l := mustOpenLog(t)
	_, trans := hraft.NewInmemTransport("h9")
	t.Cleanup(func() { trans.Close() })
	dir := t.TempDir()
	peers := []Peer{{ID: "h1", Addr: "h1"}, {ID: "h2", Addr: "h2"}}
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no id", Config{Dir: dir, Log: l, Transport: trans}},
		{"no dir", Config{ID: "h9", Log: l, Transport: trans}},
		{"no log", Config{ID: "h9", Dir: dir, Transport: trans}},
		{"no addr or transport", Config{ID: "h9", Dir: dir, Log: l}},
		{"bad addr", Config{ID: "h9", Dir: dir, Log: l, Addr: "no port"}},
		{"id not in peers", Config{ID: "h9", Dir: dir, Log: l, Transport: trans, Peers: peers}},
		{"id not in peers, tcp", Config{ID: "h9", Dir: dir, Log: l, Addr: "127.0.0.1:0", Peers: peers}},
		{"lease longer than heartbeat", Config{ID: "h9", Dir: dir, Log: l, Transport: trans,
			HeartbeatTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.cfg)
			if err == nil {
				n.Close()
				t.Fatal("New succeeded")
			}
		})
	}
	// The failures released what they opened: the same directory and
	// transport start a node now (a leak of the TCP listener would show in
	// goleak, a log store still open would block here).
	cfg := Config{ID: "h9", Dir: dir, Log: l, Transport: trans, Peers: []Peer{{ID: "h9", Addr: "h9"}}, NoSync: true}
	fastConfig(&cfg)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.WaitLeader(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestDirInUse: a second node on a directory a running node uses is
// refused with a clear error, not left waiting for the log store's lock.
func TestDirInUse(t *testing.T) {
	c := newCluster(t, 1)
	tn := c.leader()
	_, trans := hraft.NewInmemTransport("h9")
	t.Cleanup(func() { trans.Close() })
	cfg := Config{ID: "h9", Dir: tn.dir, Log: mustOpenLog(t), Transport: trans, NoSync: true}
	fastConfig(&cfg)
	n, err := New(cfg)
	if err == nil {
		n.Close()
		t.Fatal("a second node opened a directory in use")
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("error %q: want it to say the directory is locked", err)
	}
}

// TestRestartIgnoresPeers: Peers only matter for a directory without Raft
// state; repeating a list, even a wrong one, on restart is harmless.
func TestRestartIgnoresPeers(t *testing.T) {
	c := newCluster(t, 1)
	tn := c.leader()
	publish(t, tn.node, "chat", "k1", "one")
	c.stop(tn)
	c.peers = []Peer{{ID: "other", Addr: "other"}}
	c.restart(tn)
	r := c.publish("chat", "k2", "two")
	if r.Offset != 2 {
		t.Fatalf("publish after restart: %+v", r)
	}
}

func TestSingleNodeTCP(t *testing.T) {
	l := mustOpenLog(t)
	cfg := Config{ID: "solo", Dir: t.TempDir(), Addr: "127.0.0.1:0", Log: l, NoSync: true,
		Peers: []Peer{{ID: "solo", Addr: "127.0.0.1:0"}}}
	fastConfig(&cfg)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, port, err := net.SplitHostPort(n.Addr()); err != nil || port == "0" {
		t.Fatalf("Addr %q: want the port the listener got", n.Addr())
	}
	waitFor(t, 5*time.Second, "leadership", n.IsLeader)
	if s, err := n.Servers(); err != nil || len(s) != 1 || s[0].Addr != n.Addr() {
		t.Fatalf("servers %+v, %v: want itself at %s", s, err, n.Addr())
	}
	for i := 1; i <= 3; i++ {
		if r := publish(t, n, "chat", fmt.Sprintf("k%d", i), "x"); r.Offset != uint64(i) {
			t.Fatalf("publish %d: %+v", i, r)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := n.Apply(&Command{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestMapErr: hashicorp/raft's errors become the package's sentinels. An
// entry Raft did not take in time (ErrEnqueueTimeout) was not stored, and
// says so.
func TestMapErr(t *testing.T) {
	for _, tc := range []struct {
		in, want error
	}{
		{hraft.ErrNotLeader, ErrNotLeader},
		{hraft.ErrLeadershipTransferInProgress, ErrNotLeader},
		{hraft.ErrLeadershipLost, ErrUnknownOutcome},
		{hraft.ErrRaftShutdown, ErrClosed},
		{hraft.ErrEnqueueTimeout, ErrTimeout},
	} {
		if got := mapErr(tc.in); !errors.Is(got, tc.want) {
			t.Errorf("mapErr(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !strings.Contains(ErrTimeout.Error(), "not stored") {
		t.Errorf("ErrTimeout says %q: it should say the entry was not stored", ErrTimeout)
	}
}

// TestNewSyncsDirectories: New creates Dir durably (its parent is synced)
// and syncs Dir once wal/ and snapshots/ are in it, before it bootstraps:
// otherwise a power cut just after could lose the Raft log, and the term
// and vote in it; and wal/ once its files are in it. (That the fsyncs reach the disk is the kernel's
// part; this checks that they are asked for, after the names exist.)
func TestNewSyncsDirectories(t *testing.T) {
	l := mustOpenLog(t)
	base := t.TempDir()
	dir := filepath.Join(base, "raft")
	var (
		mu     sync.Mutex
		synced = map[string][][]string{}
	)
	t.Cleanup(durable.Observe(func(d string) {
		entries, _ := os.ReadDir(d)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		mu.Lock()
		synced[d] = append(synced[d], names)
		mu.Unlock()
	}))
	_, trans := hraft.NewInmemTransport("h1")
	t.Cleanup(func() { trans.Close() })
	cfg := Config{ID: "h1", Dir: dir, Log: l, Transport: trans, Peers: []Peer{{ID: "h1", Addr: "h1"}}}
	fastConfig(&cfg)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	mu.Lock()
	defer mu.Unlock()
	heldOnce := func(d string, want ...string) bool {
		for _, names := range synced[d] {
			all := true
			for _, w := range want {
				all = all && slices.Contains(names, w)
			}
			if all {
				return true
			}
		}
		return false
	}
	if !heldOnce(base, "raft") {
		t.Errorf("%s not synced after raft/ was made in it: %v", base, synced)
	}
	if !heldOnce(dir, "wal", "snapshots") {
		t.Errorf("%s not synced after wal/ and snapshots/ were made in it: %v", dir, synced)
	}
	if !heldOnce(filepath.Join(dir, "wal"), "wal-meta.db") {
		t.Errorf("%s not synced after wal-meta.db was made in it: %v", filepath.Join(dir, "wal"), synced)
	}
}

// TestLeaderHistory: the last 20 leader changes are kept, newest first.
func TestLeaderHistory(t *testing.T) {
	n := &Node{}
	if h := n.LeaderHistory(); len(h) != 0 {
		t.Fatalf("history of a new node: %+v", h)
	}
	for i := range 25 {
		n.record(LeaderChange{Term: uint64(i + 1), Leader: fmt.Sprint("h", i)})
	}
	h := n.LeaderHistory()
	if len(h) != leaderHistory || h[0].Term != 25 || h[len(h)-1].Term != 6 {
		t.Fatalf("history after 25 changes: %d kept, newest term %d, oldest %d; want 20, 25, 6", len(h), h[0].Term, h[len(h)-1].Term)
	}
}
