package raft

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/log"
	hraft "github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

// A future hashicorp/raft never answers (Node.wait gives up on it) leaves a
// goroutine blocked on it for good.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/raft.(*deferError).Error"),
		goleak.IgnoreAnyFunction("github.com/comethq/comet/raft.parkForever"))
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testNode is one member of an in-memory test cluster. Its directory and
// transport outlive restarts; log, node and obs belong to the current run.
type testNode struct {
	id    string
	dir   string
	trans *hraft.InmemTransport
	log   *log.Log
	node  *Node
	obs   *recorder
	// cut is set while the node's links are down (see disconnect).
	cut bool
}

func (tn *testNode) addr() hraft.ServerAddress { return tn.trans.LocalAddr() }

type cluster struct {
	t *testing.T
	// base holds the nodes' directories. It is made before close is
	// registered, so that its removal runs after close (t.Cleanup runs
	// last in, first out): a directory made with t.TempDir after that was
	// removed while its node still ran.
	base  string
	nodes []*testNode
	peers []Peer
	// tweak adjusts every node's Config before New.
	tweak func(*Config)
}

func fastConfig(c *Config) {
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.SnapshotInterval = 50 * time.Millisecond
	// raft-wal segments of a few entries: appends seal and rotate them all
	// through the cluster tests, and a compaction deletes whole segments
	// (raft-wal still reads the entries of a partly deleted tail segment,
	// so the snapshot tests need the lagging entries in deleted ones).
	c.segmentSize = 1 << 10
}

// newCluster starts n nodes on in-memory transports, bootstrapped together.
func newCluster(t *testing.T, n int) *cluster { return newClusterWith(t, n, nil) }

// newClusterWith is newCluster with tweak applied to every node's Config
// (after fastConfig), including nodes added or restarted later.
func newClusterWith(t *testing.T, n int, tweak func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, base: t.TempDir(), tweak: tweak}
	t.Cleanup(c.close)
	for i := 0; i < n; i++ {
		tn := c.addTransport(fmt.Sprintf("h%d", i+1))
		c.peers = append(c.peers, Peer{ID: tn.id, Addr: string(tn.addr())})
	}
	for _, tn := range c.nodes {
		c.start(tn, c.peers)
	}
	return c
}

// addTransport makes a node with a fresh directory and transport, linked
// both ways to every other node, but does not start it.
func (c *cluster) addTransport(id string) *testNode {
	dir, err := os.MkdirTemp(c.base, id+"-")
	if err != nil {
		c.t.Fatal(err)
	}
	_, trans := hraft.NewInmemTransport(hraft.ServerAddress(id))
	tn := &testNode{id: id, dir: dir, trans: trans}
	c.nodes = append(c.nodes, tn)
	c.connect(tn)
	return tn
}

// connect links tn both ways to every other node that is not cut off.
func (c *cluster) connect(tn *testNode) {
	for _, o := range c.nodes {
		if o != tn && !o.cut {
			tn.trans.Connect(o.addr(), o.trans)
			o.trans.Connect(tn.addr(), tn.trans)
		}
	}
}

// disconnect cuts every link to and from tn.
func (c *cluster) disconnect(tn *testNode) {
	tn.cut = true
	tn.trans.DisconnectAll()
	for _, o := range c.nodes {
		if o != tn {
			o.trans.Disconnect(tn.addr())
		}
	}
}

// reconnect restores tn's links.
func (c *cluster) reconnect(tn *testNode) {
	tn.cut = false
	c.connect(tn)
}

// start opens tn's log from its directory and starts a Node on it, with a
// fresh observer. peers bootstraps a new cluster (nil: wait to be added).
func (c *cluster) start(tn *testNode, peers []Peer) {
	c.t.Helper()
	if err := c.tryStart(tn, peers); err != nil {
		c.t.Fatal(err)
	}
}

// tryStart is start, returning why it failed.
func (c *cluster) tryStart(tn *testNode, peers []Peer) error {
	l, err := log.Open(log.Config{Path: filepath.Join(tn.dir, "channels.db"), NoSync: true})
	if err != nil {
		return err
	}
	obs := &recorder{}
	cfg := Config{ID: tn.id, Dir: tn.dir, Peers: peers, Log: l, Transport: tn.trans, Observer: obs, NoSync: true}
	fastConfig(&cfg)
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		l.Close()
		return err
	}
	tn.log, tn.node, tn.obs = l, n, obs
	return nil
}

// restart starts a stopped node again on its directory and transport.
// Raft closes the transport on shutdown, which for InmemTransport cuts
// its outgoing links: restore them.
func (c *cluster) restart(tn *testNode) {
	c.t.Helper()
	if !tn.cut {
		c.connect(tn)
	}
	c.start(tn, c.peers)
}

// stop closes tn's node, then its log (the order Node.Close documents).
func (c *cluster) stop(tn *testNode) {
	c.t.Helper()
	if tn.node == nil {
		return
	}
	if err := tn.node.Close(); err != nil {
		c.t.Errorf("close %s: %v", tn.id, err)
	}
	if err := tn.log.Close(); err != nil {
		c.t.Errorf("close log of %s: %v", tn.id, err)
	}
	tn.node, tn.log = nil, nil
}

func (c *cluster) close() {
	for _, tn := range c.nodes {
		c.stop(tn)
	}
	for _, tn := range c.nodes {
		tn.trans.Close()
	}
}

// running returns the started nodes.
func (c *cluster) running() []*testNode {
	var out []*testNode
	for _, tn := range c.nodes {
		if tn.node != nil {
			out = append(out, tn)
		}
	}
	return out
}

// leader waits for a running node that is not cut off and not in except to
// be leader, and returns it.
func (c *cluster) leader(except ...*testNode) *testNode {
	c.t.Helper()
	var l *testNode
	waitFor(c.t, 5*time.Second, "a leader", func() bool {
	next:
		for _, tn := range c.running() {
			for _, x := range except {
				if tn == x {
					continue next
				}
			}
			if !tn.cut && tn.node.IsLeader() {
				l = tn
				return true
			}
		}
		return false
	})
	return l
}

// onLeader runs fn on the current leader, and again on the next one while
// fn fails because leadership moved: ErrNotLeader, and with retryUnknown
// also ErrUnknownOutcome (only for what is safe to apply twice). Under the
// race detector on a busy machine, fast timeouts make elections happen at
// any time. It returns the node fn succeeded on.
func (c *cluster) onLeader(retryUnknown bool, fn func(l *testNode) error) *testNode {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := c.leader()
		err := fn(l)
		if err == nil {
			return l
		}
		retry := errors.Is(err, ErrNotLeader) || errors.Is(err, ErrClosed) ||
			(retryUnknown && errors.Is(err, ErrUnknownOutcome))
		if !retry {
			c.t.Fatalf("on leader %s: %v", l.id, err)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("on leader: still failing: %v", err)
		}
	}
}

// apply applies the command that mk makes through the current leader.
// Only for commands that are safe to apply twice.
func (c *cluster) apply(mk func() *Command) *Response {
	c.t.Helper()
	var r *Response
	c.onLeader(true, func(l *testNode) error {
		var err error
		r, err = l.node.Apply(mk())
		return err
	})
	return r
}

// publish sends one message through the current leader, retrying with the
// same id while leadership moves (the retry is what a client does, and the
// id makes it safe).
func (c *cluster) publish(ch, id, data string) log.Result {
	c.t.Helper()
	if id == "" {
		c.t.Fatal("cluster.publish needs an id to retry safely")
	}
	r := c.apply(func() *Command {
		return &Command{Publish: []Publish{{Channel: ch, ID: id, Data: []byte(data)}}}
	})
	if res := r.Results[0]; res.Err != nil {
		c.t.Fatalf("publish %s %s: refused: %v", ch, id, res.Err)
	}
	return r.Results[0]
}

// publish sends one message through n, which must be the leader.
func publish(t *testing.T, n *Node, ch, id, data string) log.Result {
	t.Helper()
	r, err := n.Apply(&Command{Publish: []Publish{{Channel: ch, ID: id, Data: []byte(data)}}})
	if err != nil {
		t.Fatalf("publish %s: %v", ch, err)
	}
	return r.Results[0]
}

// waitSame waits until every node in nodes holds the same contents as the
// first, and returns them. A node may be applying entries meanwhile, so a
// dump that is not self-consistent is retried too.
func (c *cluster) waitSame(nodes ...*testNode) logDump {
	c.t.Helper()
	var diff string
	deadline := time.Now().Add(10 * time.Second)
	for {
		want, err := tryDumpLog(nodes[0].log)
		if err != nil {
			diff = fmt.Sprintf("%s: %v", nodes[0].id, err)
		} else {
			diff = ""
			for _, tn := range nodes[1:] {
				got, err := tryDumpLog(tn.log)
				if err != nil {
					diff += fmt.Sprintf("%s: %v\n", tn.id, err)
				} else if d := diffDumps(want, got); d != "" {
					diff += fmt.Sprintf("%s vs %s:\n%s\n", nodes[0].id, tn.id, d)
				}
			}
		}
		if diff == "" {
			return want
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("contents did not converge:\n%s", diff)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkChannel checks that channel ch of d holds exactly the data in want, at
// offsets 1, 2, ... in that order.
func checkChannel(t *testing.T, who string, d logDump, ch string, want []string) {
	t.Helper()
	cd := d.Channels[ch]
	if cd.Info.First != 1 || cd.Info.Next != uint64(len(want))+1 {
		t.Fatalf("%s: %s info %+v, want offsets 1..%d", who, ch, cd.Info, len(want))
	}
	for i, m := range cd.Msgs {
		if m.Offset != uint64(i+1) || string(m.Data) != want[i] {
			t.Fatalf("%s: %s message %d is %d %q, want %d %q", who, ch, i, m.Offset, m.Data, i+1, want[i])
		}
	}
}

func TestClusterReplicates(t *testing.T) {
	c := newCluster(t, 3)
	var want []string
	for i := 1; i <= 10; i++ {
		data := fmt.Sprintf(`{"n":%d}`, i)
		r := c.publish("chat", fmt.Sprintf("k%d", i), data)
		if r.Offset != uint64(i) || r.Err != nil {
			t.Fatalf("publish %d: got %+v", i, r)
		}
		want = append(want, data)
	}
	d := c.waitSame(c.nodes...)
	for _, tn := range c.nodes {
		checkChannel(t, tn.id, d, "chat", want)
	}
	waitFor(t, 5*time.Second, "every node to name the leader", func() bool {
		l := c.leader()
		for _, tn := range c.nodes {
			if id, addr := tn.node.Leader(); id != l.id || addr != string(l.addr()) {
				return false
			}
		}
		return true
	})
	for _, tn := range c.nodes {
		idx := tn.node.Indexes()
		if idx.Term == 0 || idx.Applied == 0 || idx.Applied > idx.Commit || idx.Commit > idx.Last {
			t.Errorf("%s: indexes %+v", tn.id, idx)
		}
		if tn.node.LeaderChanges() == 0 {
			t.Errorf("%s: saw no leader change", tn.id)
		}
	}
}

func TestObserverEvents(t *testing.T) {
	c := newCluster(t, 3)
	type sent struct {
		ch, data string
		res      log.Result
	}
	var all []sent
	for i := 0; i < 5; i++ {
		mk := func() *Command {
			return &Command{Publish: []Publish{
				{Channel: "a", ID: fmt.Sprintf("a%d", i), Data: []byte(fmt.Sprintf("a%d", i))},
				{Channel: "b", ID: fmt.Sprintf("b%d", i), Data: []byte(fmt.Sprintf("b%d", i))},
				{Channel: "a", ID: fmt.Sprintf("a%d", i), Data: []byte("duplicate")}, // no event
				{Channel: "bad channel", Data: []byte("refused")},                    // no event
			}}
		}
		r := c.apply(mk)
		if !r.Results[2].Duplicate || r.Results[2].Offset != r.Results[0].Offset || r.Results[3].Err == nil {
			t.Fatalf("results %+v", r.Results)
		}
		for j := 0; j < 2; j++ {
			all = append(all, sent{mk().Publish[j].Channel, string(mk().Publish[j].Data), r.Results[j]})
		}
	}
	// A command without messages gives no event either.
	c.apply(func() *Command { return &Command{Put: []KV{{Key: "k", Value: []byte("v")}}} })
	c.waitSame(c.nodes...)
	// A follower's observer hears of entries just after its log has them.
	waitFor(t, 5*time.Second, "every node to hear every event", func() bool {
		for _, tn := range c.nodes {
			if len(mustEvents(t, tn)) < len(all) {
				return false
			}
		}
		return true
	})
	first := mustEvents(t, c.nodes[0])
	for _, tn := range c.nodes {
		events := mustEvents(t, tn)
		if !eventsEqual(events, first) {
			t.Errorf("%s heard other events than %s:\n%+v\n%+v", tn.id, c.nodes[0].id, events, first)
		}
		if len(events) != len(all) {
			t.Fatalf("%s: %d events, want %d: %+v", tn.id, len(events), len(all), events)
		}
		for i, e := range events {
			w := all[i]
			if e.Channel != w.ch || e.Offset != w.res.Offset || e.Epoch != w.res.Epoch || string(e.Data) != w.data {
				t.Errorf("%s: event %d is %+v, want %s offset %d epoch %s data %q",
					tn.id, i, e, w.ch, w.res.Offset, w.res.Epoch, w.data)
			}
			if i > 0 && (e.Index < events[i-1].Index || e.Time.Before(events[i-1].Time)) {
				t.Errorf("%s: event %d (index %d, %v) before event %d (index %d, %v)",
					tn.id, i, e.Index, e.Time, i-1, events[i-1].Index, events[i-1].Time)
			}
		}
	}
}

func TestFollowerRefusesLeaderCalls(t *testing.T) {
	c := newCluster(t, 3)
	c.publish("chat", "k1", "one")
	c.waitSame(c.nodes...)
	for _, tn := range c.nodes {
		if tn.node.IsLeader() {
			continue
		}
		cmd := &Command{Publish: []Publish{{Channel: "chat", ID: "k2", Data: []byte("two")}}}
		if _, err := tn.node.Propose(cmd).Wait(); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s: Propose: got %v, want ErrNotLeader", tn.id, err)
		}
		if _, err := tn.node.Apply(cmd); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s: Apply: got %v, want ErrNotLeader", tn.id, err)
		}
		if err := tn.node.Barrier(time.Second); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s: Barrier: got %v, want ErrNotLeader", tn.id, err)
		}
		if err := tn.node.AddVoter("h9", "h9", time.Second); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s: AddVoter: got %v, want ErrNotLeader", tn.id, err)
		}
		if err := tn.node.RemoveServer("h1", time.Second); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s: RemoveServer: got %v, want ErrNotLeader", tn.id, err)
		}
		if err := tn.node.TransferLeadership(); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s: TransferLeadership: got %v, want ErrNotLeader", tn.id, err)
		}
	}
	// Nothing the followers were asked to do happened.
	c.publish("chat", "k3", "three") // a marker: once it is everywhere, so is anything before it
	d := c.waitSame(c.nodes...)
	checkChannel(t, "cluster", d, "chat", []string{"one", "three"})
	if s, err := c.leader().node.Servers(); err != nil || len(s) != 3 {
		t.Fatalf("servers %+v, %v", s, err)
	}
}

// TestLeaderLoss loses the leader (stopped, or cut off from the others)
// while messages flow: a new leader takes over, publishing goes on, offsets
// stay dense, and the old leader comes back with the same contents.
func TestLeaderLoss(t *testing.T) {
	for _, mode := range []string{"stop", "disconnect"} {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, 3)
			var want []string
			pub := func(i int) {
				t.Helper()
				data := fmt.Sprintf("m%d", i)
				r := c.publish("chat", fmt.Sprintf("k%d", i), data)
				if r.Offset != uint64(i) {
					t.Fatalf("message %d got offset %d (dup %v)", i, r.Offset, r.Duplicate)
				}
				want = append(want, data)
			}
			for i := 1; i <= 10; i++ {
				pub(i)
			}
			old := c.leader()
			oldApplied := old.log.Applied()
			oldEvents, _ := old.obs.snapshot(t)

			switch mode {
			case "stop":
				c.stop(old)
			case "disconnect":
				c.disconnect(old)
				// A publish on the cut-off leader cannot commit: the caller
				// hears so (and will retry elsewhere with the same id).
				cmd := &Command{Publish: []Publish{{Channel: "chat", ID: "k11", Data: []byte("m11")}}}
				_, err := old.node.Apply(cmd)
				if !errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrNotLeader) {
					t.Fatalf("publish on the cut-off leader: got %v, want ErrUnknownOutcome or ErrNotLeader", err)
				}
				waitFor(t, 5*time.Second, "the old leader to step down", func() bool { return !old.node.IsLeader() })
			}

			nl := c.leader(old)
			if nl == old {
				t.Fatal("the old leader is still leader")
			}
			for i := 11; i <= 20; i++ {
				pub(i)
			}

			switch mode {
			case "stop":
				c.restart(old)
			case "disconnect":
				c.reconnect(old)
			}
			d := c.waitSame(c.nodes...)
			checkChannel(t, "cluster", d, "chat", want)
			checkDense(t, "cluster", d)

			// The old leader's observer heard each message once: those
			// before the loss, then only the ones it had not applied.
			var leaderEvents []Event
			for _, e := range mustEvents(t, nl) {
				if e.Index > oldApplied {
					leaderEvents = append(leaderEvents, e)
				}
			}
			// Its observer hears of entries just after its log has them.
			var got []Event
			waitFor(t, 5*time.Second, "the old leader to hear the 10 new events", func() bool {
				got = mustEvents(t, old)
				if mode == "disconnect" {
					got = got[len(oldEvents):]
				}
				return len(got) >= 10
			})
			if len(got) != 10 || !eventsEqual(got, leaderEvents) {
				t.Fatalf("old leader's events after the loss:\n got %+v\nwant %+v", got, leaderEvents)
			}
			if mode == "stop" && old.log.Applied() < oldApplied {
				t.Fatalf("applied went back from %d to %d", oldApplied, old.log.Applied())
			}
		})
	}
}

func mustEvents(t *testing.T, tn *testNode) []Event {
	t.Helper()
	e, _ := tn.obs.snapshot(t)
	return e
}

func eventsEqual(a, b []Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Index != y.Index || x.Channel != y.Channel || x.Offset != y.Offset || x.Epoch != y.Epoch ||
			!x.Time.Equal(y.Time) || string(x.Data) != string(y.Data) {
			return false
		}
	}
	return true
}

// snapshotConfig makes the leader's log short after a snapshot, so that a
// new or lagging node can only catch up from the snapshot.
func snapshotConfig(c *Config) {
	c.TrailingLogs = 4
	c.SnapshotThreshold = 1 << 20 // only explicit snapshots
}

// snapshotAndTruncate publishes n messages on ch, then has every node take
// a snapshot, and checks that their Raft logs no longer start at 1: any
// leader can then only bring a new node up to date with a snapshot.
func snapshotAndTruncate(t *testing.T, c *cluster, ch string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		c.publish(ch, fmt.Sprintf("%s-%d", ch, i), fmt.Sprintf("%s %d", ch, i))
	}
	c.waitSame(c.running()...)
	for _, tn := range c.running() {
		if err := tn.node.Snapshot(); err != nil {
			t.Fatalf("snapshot of %s: %v", tn.id, err)
		}
		first, err := tn.node.store.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		if last := tn.node.Indexes().Last; first <= 1 || last-first+1 > 4+3 {
			t.Fatalf("after the snapshot %s's log holds %d..%d, want only a few trailing entries", tn.id, first, last)
		}
	}
}

func TestJoinFromSnapshot(t *testing.T) {
	c := newClusterWith(t, 3, snapshotConfig)
	snapshotAndTruncate(t, c, "chat", 40)

	h4 := c.addTransport("h4")
	c.start(h4, nil) // not bootstrapped: waits to be added
	if id, _ := h4.node.Leader(); id != "" {
		t.Fatalf("a node that was not added knows leader %q", id)
	}
	addH4 := func(l *testNode) error { return l.node.AddVoter("h4", string(h4.addr()), 5*time.Second) }
	// Safe to retry after a lost leadership: adding a member that is
	// there is a no-op.
	c.onLeader(true, addH4)
	// Adding it again is a no-op.
	c.onLeader(true, addH4)
	// A member's id at another address is refused: hashicorp/raft would
	// re-address that member and cut it off.
	c.onLeader(false, func(l *testNode) error {
		err := l.node.AddVoter("h1", "elsewhere", 5*time.Second)
		if err == nil {
			t.Fatal("AddVoter re-addressed the running member h1")
		}
		if errors.Is(err, ErrIDInUse) {
			return nil
		}
		return err
	})
	c.publish("chat", "chat-41", "chat 41")
	d := c.waitSame(c.nodes...)
	checkChannel(t, "cluster", d, "chat", chatData(41))
	_, restored := h4.obs.snapshot(t)
	if len(restored) == 0 || restored[0] == 0 {
		t.Fatalf("h4 restored %v, want a snapshot restore", restored)
	}
	// h4 heard of the message after the snapshot, and of none of those in
	// it. The observer hears of an entry just after the log has it, so
	// waitSame may return first: wait for the event.
	var events []Event
	waitFor(t, 5*time.Second, "h4 to hear of an event", func() bool {
		events = mustEvents(t, h4)
		return len(events) > 0
	})
	for _, e := range events {
		if e.Offset != 41 {
			t.Fatalf("h4 events %+v, want only offset 41", events)
		}
	}

	var servers []Server
	c.onLeader(false, func(l *testNode) error {
		var err error
		servers, err = l.node.Servers()
		return err
	})
	if len(servers) != 4 || !hasServer(servers, "h4", string(h4.addr())) || !hasServer(servers, "h1", string(c.nodes[0].addr())) {
		t.Fatalf("servers %+v, want 4 voters with h4", servers)
	}
	waitFor(t, 5*time.Second, "h4 to know the configuration", func() bool {
		s, _ := h4.node.Servers()
		return len(s) == 4
	})

	// And out again.
	l := c.onLeader(false, func(l *testNode) error { return l.node.RemoveServer("h4", 5*time.Second) })
	if servers, err := l.node.Servers(); err != nil || len(servers) != 3 || hasServer(servers, "h4", string(h4.addr())) {
		t.Fatalf("servers after removing h4: %+v, %v", servers, err)
	}
}

// TestLaggingFollowerInstallsSnapshot: a follower that missed entries the
// leader no longer has (stopped, or cut off, holding entries of its own)
// installs a snapshot and then appends entries
// that do not follow its last one; it stays in step, and restarts.
func TestLaggingFollowerInstallsSnapshot(t *testing.T) {
	for _, mode := range []string{"stop", "disconnect"} {
		t.Run(mode, func(t *testing.T) {
			c := newClusterWith(t, 3, snapshotConfig)
			for i := 1; i <= 5; i++ {
				c.publish("chat", fmt.Sprintf("chat-%d", i), fmt.Sprintf("chat %d", i))
			}
			c.waitSame(c.nodes...)
			f := c.nodes[0]
			if f == c.leader() {
				f = c.nodes[1]
			}
			if mode == "stop" {
				c.stop(f)
			} else {
				c.disconnect(f)
			}
			var others []*testNode
			for _, tn := range c.nodes {
				if tn != f {
					others = append(others, tn)
				}
			}
			for i := 6; i <= 40; i++ {
				c.publish("chat", fmt.Sprintf("chat-%d", i), fmt.Sprintf("chat %d", i))
			}
			c.waitSame(others...)
			for _, tn := range others {
				if err := tn.node.Snapshot(); err != nil {
					t.Fatalf("snapshot of %s: %v", tn.id, err)
				}
			}
			if mode == "stop" {
				c.restart(f)
			} else {
				c.reconnect(f)
			}
			c.publish("chat", "chat-41", "chat 41")
			d := c.waitSame(c.nodes...)
			checkChannel(t, f.id, d, "chat", chatData(41))
			if _, restored := f.obs.snapshot(t); len(restored) == 0 {
				t.Fatalf("%s caught up without a snapshot: the test no longer makes it lag", f.id)
			}
			c.stop(f)
			c.restart(f)
			c.publish("chat", "chat-42", "chat 42")
			d = c.waitSame(c.nodes...)
			checkChannel(t, f.id+" after a restart", d, "chat", chatData(42))
		})
	}
}

func hasServer(servers []Server, id, addr string) bool {
	for _, s := range servers {
		if s.ID == id {
			return s.Addr == addr && s.Voter
		}
	}
	return false
}

// TestRestartAfterInterruptedSnapshotInstall: a new node's first restore
// from the leader's snapshot fails after Raft saved the snapshot (here: its
// log is closed; in life, a crash or a full disk while the log is being
// replaced). After a restart the node must still end up with the leader's
// contents, not apply later entries on top of an empty log.
func TestRestartAfterInterruptedSnapshotInstall(t *testing.T) {
	c := newClusterWith(t, 3, snapshotConfig)
	snapshotAndTruncate(t, c, "chat", 30)

	h4 := c.addTransport("h4")
	c.start(h4, nil)
	h4.log.Close() // every restore into it fails
	// AddVoter returns once the configuration entry commits on the three
	// others; h4 keeps failing to install the snapshot meanwhile.
	l := c.onLeader(false, func(l *testNode) error { return l.node.AddVoter("h4", string(h4.addr()), 5*time.Second) })
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(h4.dir, 1, newHclog(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "h4 to save the leader's snapshot", func() bool {
		metas, err := snaps.List()
		return err == nil && len(metas) > 0
	})
	c.stop(h4)
	// The leader would send the snapshot again. A new one finds h4 at the
	// snapshot's index and sends only the entries after it.
	transferLead(t, l)
	c.leader(l)
	c.restart(h4)
	c.publish("chat", "chat-31", "chat 31")
	d := c.waitSame(c.nodes...)
	checkChannel(t, "h4", d, "chat", chatData(31))
	if _, restored := h4.obs.snapshot(t); len(restored) == 0 {
		t.Fatalf("h4 did not restore the snapshot after its restart")
	}
}

// transferLead moves the lead off l. A transfer times out when the
// chosen follower does not win in time, as on a loaded machine (seen in
// CI with h4 of TestRestartAfterInterruptedSnapshotInstall stopped): it
// is tried again, at most 5 times, unless the lead moved anyway.
func transferLead(t *testing.T, l *testNode) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := l.node.TransferLeadership()
		if err == nil || errors.Is(err, ErrNotLeader) || !l.node.IsLeader() {
			return
		}
		if attempt == 5 {
			t.Fatalf("transfer leadership: %v (%d attempts)", err, attempt)
		}
	}
}

func chatData(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("chat %d", i))
	}
	return out
}

func TestRestartAll(t *testing.T) {
	c := newClusterWith(t, 3, snapshotConfig)
	// Half the history before a snapshot, half after, so that restarts
	// replay both from the snapshot index and from the log.
	for i := 1; i <= 15; i++ {
		c.publish("chat", fmt.Sprintf("chat-%d", i), fmt.Sprintf("chat %d", i))
		c.publish(fmt.Sprintf("room/%d", i%3), fmt.Sprintf("r%d", i), fmt.Sprintf("room %d", i))
	}
	c.waitSame(c.nodes...)
	for _, tn := range c.nodes {
		if err := tn.node.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	c.apply(func() *Command { return &Command{Retention: []log.Rule{{Pattern: "room/*", MaxMessages: 3}}} })
	for i := 16; i <= 30; i++ {
		c.publish("chat", fmt.Sprintf("chat-%d", i), fmt.Sprintf("chat %d", i))
		c.publish(fmt.Sprintf("room/%d", i%3), fmt.Sprintf("r%d", i), fmt.Sprintf("room %d", i))
	}
	c.apply(func() *Command { return &Command{Put: []KV{{Key: "members/h1", Value: []byte("x")}}} })
	before := c.waitSame(c.nodes...)
	applied := map[string]uint64{}
	for _, tn := range c.nodes {
		applied[tn.id] = tn.log.Applied()
	}

	for _, tn := range c.nodes {
		c.stop(tn)
	}
	for _, tn := range c.nodes {
		c.restart(tn)
	}
	c.leader()
	// Raft replays its log into the restarted nodes: nothing may change,
	// and no message may be announced again.
	for _, tn := range c.nodes {
		if d := diffDumps(before, dumpLog(t, tn.log)); d != "" {
			t.Fatalf("%s after restart:\n%s", tn.id, d)
		}
	}
	r := c.publish("chat", "chat-31", "chat 31")
	if r.Offset != 31 {
		t.Fatalf("first publish after restart: %+v, want offset 31", r)
	}
	// Retried ids from before the restart are still known.
	if r := c.publish("chat", "chat-30", "again"); !r.Duplicate || r.Offset != 30 {
		t.Fatalf("retry of chat-30 after restart: %+v", r)
	}
	d := c.waitSame(c.nodes...)
	checkChannel(t, "cluster", d, "chat", chatData(31))
	for _, tn := range c.nodes {
		if a := tn.log.Applied(); a < applied[tn.id] {
			t.Errorf("%s: applied %d after restart, %d before", tn.id, a, applied[tn.id])
		}
		events, restored := tn.obs.snapshot(t)
		if len(events) != 1 || events[0].Channel != "chat" || events[0].Offset != 31 {
			t.Errorf("%s: events after restart %+v, want only chat 31", tn.id, events)
		}
		if len(restored) != 0 {
			t.Errorf("%s: restored %v on a restart with an up-to-date log", tn.id, restored)
		}
	}
	for i := 0; i < 3; i++ {
		room := d.Channels[fmt.Sprintf("room/%d", i)]
		if room.Info.Next != 11 || room.Info.First != 8 {
			t.Errorf("room/%d: %+v, want offsets 8..10 kept", i, room.Info)
		}
	}
	if d.KV["members/h1"] != "x" {
		t.Errorf("kv after restart: %v", d.KV)
	}
}

func TestRemoveServer(t *testing.T) {
	c := newCluster(t, 3)
	var gone *testNode
	c.onLeader(false, func(l *testNode) error {
		for _, tn := range c.nodes {
			if tn != l {
				gone = tn
				break
			}
		}
		return l.node.RemoveServer(gone.id, 5*time.Second)
	})
	for _, tn := range c.nodes {
		if tn == gone {
			continue
		}
		waitFor(t, 5*time.Second, tn.id+" to drop "+gone.id, func() bool {
			s, err := tn.node.Servers()
			if err != nil || len(s) != 2 {
				return false
			}
			for _, x := range s {
				if x.ID == gone.id {
					return false
				}
			}
			return true
		})
	}
	// The two left still make a quorum, without the removed node.
	c.stop(gone)
	r := c.publish("chat", "k1", "after remove")
	if r.Offset != 1 {
		t.Fatalf("publish after remove: %+v", r)
	}
	var left []*testNode
	for _, tn := range c.nodes {
		if tn != gone {
			left = append(left, tn)
		}
	}
	checkChannel(t, "cluster", c.waitSame(left...), "chat", []string{"after remove"})
}

func TestNodeCloseIdempotent(t *testing.T) {
	c := newCluster(t, 1)
	tn := c.leader()
	publish(t, tn.node, "chat", "k1", "one")
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tn.node.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := tn.node.Close(); err != nil {
		t.Fatalf("close again: %v", err)
	}
	if s := tn.node.State(); s != "shutdown" {
		t.Fatalf("state after close: %s", s)
	}
	cmd := &Command{Publish: []Publish{{Channel: "chat", Data: []byte("late")}}}
	if _, err := tn.node.Apply(cmd); !errors.Is(err, ErrClosed) {
		t.Errorf("apply after close: got %v, want ErrClosed", err)
	}
	if err := tn.node.Barrier(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("barrier after close: got %v, want ErrClosed", err)
	}
	if err := tn.node.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("snapshot after close: got %v, want ErrClosed", err)
	}
	// The caller closes the log after the node; the harness closes it
	// again, which is a no-op.
	if err := tn.log.Close(); err != nil {
		t.Fatal(err)
	}
}
