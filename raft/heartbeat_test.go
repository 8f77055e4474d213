package raft

import (
	"io"
	"strings"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// TestHeartbeatOfNewerTermDoesNotStampLeaderEntries reproduces
// hashicorp/raft#695 (the divergence e2e TestFaultPauseLeader once met): a leader
// that hears of a newer term through a heartbeat must not write entries
// in that term.
//
// hashicorp/raft answers heartbeats on the transport's goroutine (its
// "fast path"), concurrently with the main loop. A heartbeat of a newer
// term sets the node's term and state there, while the leader's main loop,
// which checked that it leads before it waited for work, still takes the
// next Apply and stamps it with the current term: the newer one, which it
// never led. That entry has the index and term of the real new leader's
// first entry (its no-op), so neither notices the conflict: the old
// leader keeps it, later takes the new leader's commit index as covering
// it, and applies a command the others never had. (A paused leader that
// resumes meets exactly this: queued heartbeats of the new leader and
// queued publishes at once.)
//
// The test plays the new leader with a bare transport: once the node
// leads in term T, a heartbeat of term T+1, then an Apply on the node (as
// the broker does when a publish comes: it saw the node lead a moment
// ago), then the new leader's first append: its no-op of term T+1,
// committed. The node must hold no command of term T+1, and its channel
// log must not have the message of that Apply.
func TestHeartbeatOfNewerTermDoesNotStampLeaderEntries(t *testing.T) {
	l := mustOpenLog(t)
	cfg := Config{ID: "old", Dir: t.TempDir(), Addr: "127.0.0.1:0", Log: l, NoSync: true,
		Peers: []Peer{{ID: "old", Addr: "127.0.0.1:0"}},
		// Nothing else wakes the idle leader's main loop (a lease check)
		// between the heartbeat and the Apply, and once a follower, the
		// node does not call an election before the test is done.
		HeartbeatTimeout: 3 * time.Second, ElectionTimeout: 3 * time.Second, LeaderLeaseTimeout: time.Second}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, 20*time.Second, "leadership", n.IsLeader)
	if _, err := n.Apply(&Command{Publish: []Publish{{Channel: "c", ID: "before", Data: []byte(`1`)}}}); err != nil {
		t.Fatal(err)
	}
	term := n.raft.CurrentTerm()
	last, err := n.store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}

	ghost, err := hraft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Its pooled connection too, or the node's handler for it lingers.
		ghost.CloseStreams()
		ghost.Close()
	}()
	addr := []byte(ghost.LocalAddr())
	header := hraft.RPCHeader{ProtocolVersion: hraft.ProtocolVersionMax, ID: []byte("ghost"), Addr: addr}
	heartbeat := hraft.AppendEntriesRequest{RPCHeader: header, Term: term + 1, Leader: addr}
	var resp hraft.AppendEntriesResponse
	if err := ghost.AppendEntries("old", hraft.ServerAddress(n.Addr()), &heartbeat, &resp); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	f := n.raft.Apply((&Command{Publish: []Publish{{Channel: "c", ID: "after", Data: []byte(`2`)}}}).Encode(), 5*time.Second)
	applyErr := f.Error()

	// The new leader's first entries: its no-op and a publish, committed.
	cmd := (&Command{Time: time.Now(), Epoch: "e", Publish: []Publish{{Channel: "c", ID: "new", Data: []byte(`3`)}}}).Encode()
	appendReq := hraft.AppendEntriesRequest{RPCHeader: header, Term: term + 1, Leader: addr,
		PrevLogEntry: last, PrevLogTerm: term,
		Entries: []*hraft.Log{
			{Index: last + 1, Term: term + 1, Type: hraft.LogNoop},
			{Index: last + 2, Term: term + 1, Type: hraft.LogCommand, Data: cmd},
		},
		LeaderCommitIndex: last + 2}
	if err := ghost.AppendEntries("old", hraft.ServerAddress(n.Addr()), &appendReq, &resp); err != nil {
		t.Fatalf("append: %v", err)
	}
	if !resp.Success {
		t.Fatalf("the node refused the new leader's entries: %+v", resp)
	}
	waitFor(t, 10*time.Second, "the new leader's entries applied", func() bool { return l.Applied() >= last+2 })

	var e hraft.Log
	if err := n.store.GetLog(last+1, &e); err != nil {
		t.Fatalf("entry %d: %v", last+1, err)
	}
	if e.Type != hraft.LogNoop {
		t.Errorf("entry %d is %v of term %d, not the new leader's no-op: this node stamped its own entry with a term it never led (it led term %d; the apply answered %v)",
			last+1, e.Type, e.Term, term, applyErr)
	}
	_, msgs, err := l.Read("c", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, string(m.Data))
	}
	if strings.Join(got, ",") != "1,3" {
		t.Errorf("channel c holds %v; the leaders committed [1 3] (entry %d is the new leader's no-op)", got, last+1)
	}
}
