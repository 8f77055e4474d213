//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/client"
)

// The fault tests: partitions (in network namespaces, see netLab) and
// pauses (SIGSTOP, on loopback) of real comet processes while clients
// publish, each followed by the same checks once healed: every
// acknowledged publish is on every hub exactly once, in order; the hubs'
// copies are identical; what a cut-off hub acknowledged is in the log;
// subscribers got 1..N exactly once, in order. Run them with
// go test -race -run TestFault ./e2e (as root for the partitions).

// Ports of the processes in a lab: every host has an address of its own.
const (
	labRaftPort    = 7000
	labAPIPort     = 7100
	labGatewayPort = 8080
)

// labCluster is a cluster whose hubs run in the hosts of a netLab, and
// which the test reaches from a host of its own (client).
type labCluster struct {
	*cluster
	lab    *netLab
	client *netHost
	hosts  map[*hub]*netHost
}

// startLabCluster starts n hubs h1..hn on hosts 10.99.0.1..n of a new
// lab, with the test's own host at 10.99.0.200, and waits until they have
// a leader and are ready.
func startLabCluster(t *testing.T, n int) *labCluster {
	t.Helper()
	lab := newNetLab(t)
	c := newCluster(t)
	lc := &labCluster{cluster: c, lab: lab, client: lab.addHost("client", 200), hosts: map[*hub]*netHost{}}
	c.client.Transport.(*http.Transport).DialContext = lab.dialFrom(lc.client)
	var peers []string
	for i := 1; i <= n; i++ {
		host := lab.addHost(fmt.Sprintf("h%d", i), i)
		h := &hub{id: host.name, data: filepath.Join(c.dir, host.name), raft: host.addr(labRaftPort), api: host.addr(labAPIPort),
			logPath: filepath.Join(c.dir, host.name+".log"), wrap: host.wrap()}
		c.hubs = append(c.hubs, h)
		lc.hosts[h] = host
		peers = append(peers, h.id+"="+h.raft)
	}
	for _, h := range c.hubs {
		h.args = []string{"hub", "--id", h.id, "--data", h.data, "--raft", h.raft, "--api", h.api, "--peers", strings.Join(peers, ",")}
		c.start(h)
	}
	if err := c.waitHealthy(c.hubs, 20*time.Second); err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	c.waitLeader(nil, 30*time.Second)
	c.waitReady(c.hubs, 30*time.Second)
	return lc
}

// startGateway starts a gateway on a new host 10.99.0.n of the lab,
// following every hub, and waits until it is ready.
func (lc *labCluster) startGateway(id string, n int) *hub {
	lc.t.Helper()
	host := lc.lab.addHost(id, n)
	var apis []string
	for _, h := range lc.hubs {
		apis = append(apis, h.api)
	}
	g := &hub{id: id, api: host.addr(labGatewayPort), logPath: filepath.Join(lc.dir, id+".log"), wrap: host.wrap()}
	g.args = []string{"gateway", "--id", id, "--listen", g.api, "--hubs", strings.Join(apis, ",")}
	lc.gateways = append(lc.gateways, g)
	lc.hosts[g] = host
	lc.start(g)
	if !lc.waitGatewayReady(g, 20*time.Second) {
		lc.t.Fatalf("gateway %s not ready:\n%s", id, g.logTail(20))
	}
	return g
}

// goClient returns a Go client of gateways, dialing from the test's host.
func (lc *labCluster) goClient(gateways ...*hub) *client.Client {
	lc.t.Helper()
	var urls []string
	for _, g := range gateways {
		urls = append(urls, "ws://"+g.api+"/ws")
	}
	return faultClient(lc.t, urls, lc.lab.dialFrom(lc.client), 0)
}

// leaderAmong returns the hub of hubs that leads according to every hub
// of hubs, or nil.
func (c *cluster) leaderAmong(hubs []*hub) *hub {
	var leader string
	for _, h := range hubs {
		st, err := c.localStatus(h)
		if err != nil || st.Leader == "" || leader != "" && st.Leader != leader {
			return nil
		}
		leader = st.Leader
	}
	for _, h := range hubs {
		if h.id == leader {
			return h
		}
	}
	return nil
}

func others(hubs []*hub, not *hub) []*hub {
	var out []*hub
	for _, h := range hubs {
		if h != not {
			out = append(out, h)
		}
	}
	return out
}

// pause stops p with SIGSTOP; the returned func (also run at cleanup)
// resumes it with SIGCONT.
func pause(t *testing.T, p *hub) (resume func()) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", p.id, err)
	}
	var once atomic.Bool
	resume = func() {
		if once.CompareAndSwap(false, true) && p.running() {
			if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT %s: %v", p.id, err)
			}
		}
	}
	t.Cleanup(resume)
	return resume
}

// TestFaultPartitionLeader: the leader is cut off from both followers
// while a gateway and the clients still reach every hub, publishing
// throughout through the gateway and the hub APIs; then healed.
func TestFaultPartitionLeader(t *testing.T) {
	lc := startLabCluster(t, 3)
	g := lc.startGateway("g1", 11)
	channels := []string{"part-a", "part-b"}
	subs := map[string]*received{
		"s1": subscribe(t, lc.goClient(g), channels),
		"s2": subscribe(t, lc.goClient(g), channels),
	}
	led := newLedger()
	load := startFaultLoad(lc.cluster, led, faultLoadConfig{
		prefix: "pl", channels: channels, apis: lc.apis(), httpWorkers: 4,
		clients: []*client.Client{lc.goClient(g), lc.goClient(g)},
		pace:    20 * time.Millisecond, deadline: 90 * time.Second,
	})
	start := time.Now()
	load.waitAcks(start, 100, 30*time.Second, "before the cut")

	old := lc.waitLeader(nil, 10*time.Second)
	followers := others(lc.hubs, old)
	var followerHosts []*netHost
	for _, f := range followers {
		followerHosts = append(followerHosts, lc.hosts[f])
	}
	lc.lab.cut(lc.hosts[old], followerHosts...)
	cutAt := time.Now()
	t.Logf("cut leader %s off from %s and %s after %d acknowledged publishes", old.id, followers[0].id, followers[1].id, led.ackCount())
	// Besides the load, which sends to random hubs, a prober asks the
	// cut-off leader alone to take writes for as long as the cut lasts.
	stopProbe := make(chan struct{})
	probed := make(chan probeResult, 1)
	go func() { probed <- lc.probe(led, old.api, channels[0], "probe", stopProbe) }()

	var newLeader *hub
	waitFor(t, 20*time.Second, "a leader among the followers", func() bool {
		newLeader = lc.leaderAmong(followers)
		return newLeader != nil
	})
	t.Logf("%v after the cut: %s leads the majority", time.Since(cutAt).Round(time.Millisecond), newLeader.id)
	waitFor(t, 20*time.Second, "the cut-off leader to step down", func() bool {
		st, err := lc.localStatus(old)
		return err == nil && st.State != "leader"
	})
	load.waitAcks(cutAt, 100, 30*time.Second, "after the cut")
	close(stopProbe)
	pr := <-probed
	healAt := time.Now()
	lc.lab.heal(lc.hosts[old])
	t.Logf("healed after %v; the prober sent %d publishes to %s alone while it was cut off, %d acknowledged",
		healAt.Sub(cutAt).Round(time.Millisecond), pr.sent, old.id, pr.acked)
	if pr.sent == 0 {
		t.Errorf("the prober sent nothing to the cut-off leader")
	}

	waitFor(t, 20*time.Second, "every hub to agree on a leader", func() bool { return lc.currentLeader() != nil })
	load.waitAcks(time.Now(), 50, 30*time.Second, "after the heal")
	load.stop()
	lc.publishAgain(led, channels[0], pr.unacked)
	logWriteGap(t, "cutting the leader off", led, cutAt, healAt)

	ref := lc.verify(led, lc.hubs, channels)
	lc.checkIdentical(lc.hubs, channels, ref)
	n := lc.checkAckedDuring(led, old.api, cutAt, healAt, ref)
	t.Logf("the cut-off leader %s acknowledged %d publishes while cut off", old.id, n)
	checkSubscribers(t, subs, ref)
}

// TestFaultPartitionFollower: one follower is cut off from everything
// (hubs, gateway, clients) while publishing; then healed.
func TestFaultPartitionFollower(t *testing.T) {
	lc := startLabCluster(t, 3)
	g := lc.startGateway("g1", 11)
	channels := []string{"fol-a", "fol-b"}
	subs := map[string]*received{
		"s1": subscribe(t, lc.goClient(g), channels),
		"s2": subscribe(t, lc.goClient(g), channels),
	}
	led := newLedger()
	load := startFaultLoad(lc.cluster, led, faultLoadConfig{
		prefix: "pf", channels: channels, apis: lc.apis(), httpWorkers: 4,
		clients: []*client.Client{lc.goClient(g)},
		pace:    20 * time.Millisecond, deadline: 90 * time.Second,
	})
	start := time.Now()
	load.waitAcks(start, 100, 30*time.Second, "before the cut")

	leader := lc.waitLeader(nil, 10*time.Second)
	victim := others(lc.hubs, leader)[0]
	lc.lab.isolate(lc.hosts[victim])
	cutAt := time.Now()
	t.Logf("cut follower %s off from everything (leader %s) after %d acknowledged publishes", victim.id, leader.id, led.ackCount())
	load.waitAcks(cutAt, 200, 30*time.Second, "after the cut")
	if l := lc.leaderAmong(others(lc.hubs, victim)); l != leader {
		t.Errorf("the majority's leader is %v after a follower was cut off, was %s", l, leader.id)
	}
	healAt := time.Now()
	lc.lab.rejoin(lc.hosts[victim])
	t.Logf("healed after %v", healAt.Sub(cutAt).Round(time.Millisecond))

	waitFor(t, 20*time.Second, "every hub to agree on a leader", func() bool { return lc.currentLeader() != nil })
	load.waitAcks(time.Now(), 50, 30*time.Second, "after the heal")
	load.stop()
	logWriteGap(t, "cutting a follower off", led, cutAt, healAt)

	ref := lc.verify(led, lc.hubs, channels)
	lc.checkIdentical(lc.hubs, channels, ref)
	n := lc.checkAckedDuring(led, victim.api, cutAt, healAt, ref)
	t.Logf("the cut-off follower %s acknowledged %d publishes while cut off", victim.id, n)
	checkSubscribers(t, subs, ref)
}

// TestFaultPauseLeader: the leader is stopped (SIGSTOP) for longer than
// the election timeout while clients publish through the hubs and a
// gateway, until the others have elected a leader and taken writes again;
// then it is resumed (SIGCONT).
func TestFaultPauseLeader(t *testing.T) {
	c := startCluster(t, 3)
	g := c.startGateway("g1")
	channels := []string{"pause-a", "pause-b"}
	ws := []string{"ws://" + g.api + "/ws"}
	subs := map[string]*received{
		"s1": subscribe(t, faultClient(t, ws, nil, 0), channels),
		"s2": subscribe(t, faultClient(t, ws, nil, 0), channels),
	}
	led := newLedger()
	load := startFaultLoad(c, led, faultLoadConfig{
		prefix: "pp", channels: channels, apis: c.apis(), httpWorkers: 4,
		clients: []*client.Client{faultClient(t, ws, nil, 0)},
		pace:    20 * time.Millisecond, deadline: 90 * time.Second,
	})
	load.waitAcks(time.Now(), 100, 30*time.Second, "before the pause")

	old := c.waitLeader(nil, 10*time.Second)
	resume := pause(t, old)
	pausedAt := time.Now()
	t.Logf("paused leader %s after %d acknowledged publishes", old.id, led.ackCount())
	var newLeader *hub
	waitFor(t, 20*time.Second, "a leader among the others", func() bool {
		newLeader = c.leaderAmong(others(c.hubs, old))
		return newLeader != nil && newLeader != old
	})
	t.Logf("%v after the pause: %s leads the others", time.Since(pausedAt).Round(time.Millisecond), newLeader.id)
	load.waitAcks(pausedAt, 100, 30*time.Second, "while the leader is paused")
	resumedAt := time.Now()
	resume()
	t.Logf("resumed %s after %v", old.id, resumedAt.Sub(pausedAt).Round(time.Millisecond))

	waitFor(t, 20*time.Second, "every hub to agree on a leader", func() bool { return c.currentLeader() != nil })
	load.waitAcks(time.Now(), 50, 30*time.Second, "after the resume")
	load.stop()
	logWriteGap(t, "pausing the leader", led, pausedAt, resumedAt)

	ref := c.verify(led, c.hubs, channels)
	c.checkIdentical(c.hubs, channels, ref)
	n := c.checkAckedDuring(led, old.api, pausedAt, resumedAt.Add(5*time.Second), ref)
	t.Logf("the paused leader %s acknowledged %d publishes from the pause to 5 s after it resumed", old.id, n)
	checkSubscribers(t, subs, ref)
}

// TestFaultPauseGateway: the gateway the subscribers are on is stopped
// (SIGSTOP) while clients publish through another gateway and the hubs,
// then resumed (SIGCONT). Subscribers that know only the paused gateway
// wait for it; those that know both and notice the silence move to the
// other. All must get 1..N exactly once, in order.
func TestFaultPauseGateway(t *testing.T) {
	c := startCluster(t, 3)
	g1 := c.startGateway("g1")
	g2 := c.startGateway("g2")
	ws1, ws2 := "ws://"+g1.api+"/ws", "ws://"+g2.api+"/ws"
	channels := []string{"gpause-a", "gpause-b"}
	// The movers may dial g2 only once g1 is paused: until then they are
	// on g1.
	var g2Open atomic.Bool
	gated := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == g2.api && !g2Open.Load() {
			return nil, fmt.Errorf("dial %s: closed by the test until g1 is paused", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	subs := map[string]*received{
		"stayer1": subscribe(t, faultClient(t, []string{ws1}, nil, 0), channels),
		"stayer2": subscribe(t, faultClient(t, []string{ws1}, nil, 0), channels),
		"mover1":  subscribe(t, faultClient(t, []string{ws1, ws2}, gated, 2*time.Second), channels),
		"mover2":  subscribe(t, faultClient(t, []string{ws1, ws2}, gated, 2*time.Second), channels),
	}
	led := newLedger()
	load := startFaultLoad(c, led, faultLoadConfig{
		prefix: "gp", channels: channels, apis: c.apis(), httpWorkers: 2,
		clients: []*client.Client{faultClient(t, []string{ws2}, nil, 0), faultClient(t, []string{ws2}, nil, 0)},
		pace:    20 * time.Millisecond, deadline: 90 * time.Second,
	})
	load.waitAcks(time.Now(), 100, 30*time.Second, "before the pause")

	resume := pause(t, g1)
	pausedAt := time.Now()
	g2Open.Store(true)
	atPause := map[string]int{}
	for name, r := range subs {
		atPause[name] = r.count(channels[0])
	}
	t.Logf("paused gateway g1 after %d acknowledged publishes", led.ackCount())
	load.waitAcks(pausedAt, 200, 30*time.Second, "while g1 is paused")
	for _, name := range []string{"mover1", "mover2"} {
		r := subs[name]
		waitFor(t, 30*time.Second, name+" to get messages through g2", func() bool { return r.count(channels[0]) > atPause[name]+20 })
	}
	resumedAt := time.Now()
	resume()
	t.Logf("resumed g1 after %v", resumedAt.Sub(pausedAt).Round(time.Millisecond))
	load.waitAcks(time.Now(), 50, 30*time.Second, "after the resume")
	load.stop()
	logWriteGap(t, "pausing a gateway", led, pausedAt, resumedAt)

	ref := c.verify(led, c.hubs, channels)
	c.checkIdentical(c.hubs, channels, ref)
	checkSubscribers(t, subs, ref)
}
