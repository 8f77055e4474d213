//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The full-disk fault test: every hub's data directory is on a small tmpfs
// of its own, which the test fills with a ballast file while clients
// publish, then frees; see TestFaultFullDisk.

// diskMiB is the size of each hub's tmpfs. A fresh hub uses a little over
// 128 MiB of it: the Raft log's first 64 MiB segment and the next one,
// made ahead (spare.tmp), plus some KiB (channels.db, wal-meta.db). The
// rest is ballast while the disk is full.
const diskMiB = 160

// bigDiskMiB is the size of each hub's tmpfs in the test that fills a
// Raft log segment (64 MiB) and more: room for three segments, a
// channels.db of some 100 MiB and Raft snapshots of it. A tmpfs takes
// memory only for what it holds.
const bigDiskMiB = 1024

// smallDisk is a tmpfs mounted for one hub's data directory.
type smallDisk struct {
	mount   string // the mount point
	ballast string // the file that fills it
	sizeMiB int
}

// mountSmallDisk mounts a tmpfs of sizeMiB at dir (made), or skips the test
// when it cannot (not root, no tmpfs): it fails instead when
// COMET_FAULT_TESTS=1. The tmpfs is unmounted when the test ends, after
// c's processes are killed.
func mountSmallDisk(c *cluster, dir string, sizeMiB int) *smallDisk {
	t := c.t
	t.Helper()
	cannot := func(format string, args ...any) {
		t.Helper()
		msg := "a small tmpfs cannot be mounted here: " + fmt.Sprintf(format, args...)
		if faultTestsRequired() {
			t.Fatal(msg + " (COMET_FAULT_TESTS=1 requires it)")
		}
		t.Skip(msg + "; run as root")
	}
	if os.Geteuid() != 0 {
		cannot("not root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%dm,mode=0755", sizeMiB)); err != nil {
		cannot("mount -t tmpfs %s: %v", dir, err)
	}
	// Registered after newCluster's clean-up, so it runs before it: kill
	// the processes here first (killing twice is harmless), then unmount.
	t.Cleanup(func() {
		for _, h := range append(c.hubs, c.gateways...) {
			c.kill(h)
		}
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v; detaching it", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return &smallDisk{mount: dir, ballast: filepath.Join(dir, "ballast"), sizeMiB: sizeMiB}
}

// fill writes the ballast file until the file system has no space left,
// and returns how many bytes it wrote.
func (d *smallDisk) fill(t *testing.T) int64 {
	t.Helper()
	f, err := os.OpenFile(d.ballast, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatalf("ballast: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i) | 1
	}
	var n int64
	for i := 0; i < 2*d.sizeMiB; i++ { // bounded: the disk holds sizeMiB
		k, err := f.Write(buf)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatalf("ballast: %v", err)
		}
	}
	t.Fatalf("ballast: wrote %d bytes to a %d MiB tmpfs without filling it", n, d.sizeMiB)
	return n
}

// walSlackMiB is the space left to the follower of testFullDiskRaftLog:
// room for its channel log to grow, not for a Raft log segment.
const walSlackMiB = 32

// shrink cuts the ballast file to size bytes.
func (d *smallDisk) shrink(t *testing.T, size int64) {
	t.Helper()
	if err := os.Truncate(d.ballast, size); err != nil {
		t.Fatalf("shrink ballast: %v", err)
	}
}

// resize changes the size of the tmpfs (it cannot shrink below what it
// holds).
func (d *smallDisk) resize(t *testing.T, sizeMiB int) {
	t.Helper()
	if err := unix.Mount("tmpfs", d.mount, "tmpfs", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%dm", sizeMiB)); err != nil {
		t.Fatalf("remount %s with size %d MiB: %v", d.mount, sizeMiB, err)
	}
	d.sizeMiB = sizeMiB
}

// free removes the ballast file.
func (d *smallDisk) free(t *testing.T) {
	t.Helper()
	if err := os.Remove(d.ballast); err != nil {
		t.Fatalf("remove ballast: %v", err)
	}
}

// freeBytes is the space left on the disk.
func (d *smallDisk) freeBytes() int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(d.mount, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// startDiskCluster starts n hubs h1..hn, each with its data directory on
// a small tmpfs of its own (sizeMiB), and waits until they have a leader and are
// ready. When a port turns out to be taken, it starts over on other ports
// (and disks).
func startDiskCluster(t *testing.T, n, sizeMiB int) (*cluster, map[*hub]*smallDisk) {
	t.Helper()
	c := newCluster(t)
	byID := map[string]*smallDisk{}
	c.startHubs(n, func(attempt int, id string) string {
		d := mountSmallDisk(c, filepath.Join(c.dir, fmt.Sprintf("try%d-%s-disk", attempt, id)), sizeMiB)
		byID[id] = d
		return filepath.Join(d.mount, "data")
	})
	disks := map[*hub]*smallDisk{}
	for _, h := range c.hubs {
		if d, ok := byID[h.id]; ok && h.data == filepath.Join(d.mount, "data") {
			disks[h] = d
		}
	}
	return c, disks
}

// readyz returns h's GET /readyz status and body.
func (c *cluster) readyz(h *hub) (int, string) {
	code, body, err := c.get(h.api, "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	return code, strings.TrimSpace(string(body))
}

// waitNoSpace waits until h says, on /readyz, that its disk is full.
func (c *cluster) waitNoSpace(h *hub, d time.Duration) string {
	c.t.Helper()
	var body string
	waitFor(c.t, d, h.id+"'s /readyz to say its disk is full", func() bool {
		var code int
		code, body = c.readyz(h)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no space left on device")
	})
	return body
}

// mustRun fails the test when h has exited.
func (c *cluster) mustRun(h *hub, when string) {
	c.t.Helper()
	if !h.running() {
		c.t.Fatalf("%s exited (status %d) %s:\n%s", h.id, h.exitCode(), when, h.logTail(40))
	}
}

// TestFaultFullDisk fills a hub's data directory (a small tmpfs) while
// clients publish through every hub's API, each publish retried with its
// id until acknowledged, then frees it: first a follower's, then the
// leader's. Neither hub is restarted. Then every acknowledged publish
// must be on every hub exactly once, in order, the copies identical.
func TestFaultFullDisk(t *testing.T) {
	t.Run("follower", testFullDiskFollower)
	t.Run("leader", testFullDiskLeader)
	t.Run("raftlog", testFullDiskRaftLog)
}

// testFullDiskFollower: a follower's disk fills; the majority goes on
// taking publishes; once space is freed, the follower catches up.
func testFullDiskFollower(t *testing.T) {
	c, disks := startDiskCluster(t, 3, diskMiB)
	channels := []string{"disk-a", "disk-b"}
	led := newLedger()
	load := startFaultLoad(c, led, faultLoadConfig{
		prefix: "df", channels: channels, apis: c.apis(), httpWorkers: 4,
		pace: 10 * time.Millisecond, deadline: 150 * time.Second,
	})
	load.waitAcks(time.Now(), 100, 30*time.Second, "before the disk fills")

	leader := c.waitLeader(nil, 10*time.Second)
	victim := others(c.hubs, leader)[0]
	disk := disks[victim]
	ballast := disk.fill(t)
	fullAt := time.Now()
	t.Logf("filled follower %s's disk with %d MiB of ballast (%d bytes left) after %d acknowledged publishes; leader %s",
		victim.id, ballast>>20, disk.freeBytes(), led.ackCount(), leader.id)
	body := c.waitNoSpace(victim, 60*time.Second)
	t.Logf("%v after filling: %s's /readyz says %q", time.Since(fullAt).Round(time.Millisecond), victim.id, body)
	noSpaceAt := time.Now()
	// A prober asks the full follower alone to take writes: it forwards
	// them to the leader.
	pr := startDiskProber(c, led, victim, channels[0])
	load.waitAcks(noSpaceAt, 300, 30*time.Second, "while a follower's disk is full")
	waitFor(t, 30*time.Second, "5 answers to the prober from the full follower", func() bool { return pr.answersSince(noSpaceAt) >= 5 })
	c.mustRun(victim, "while its disk was full")
	if l := c.leaderAmong(others(c.hubs, victim)); l != leader {
		t.Errorf("the majority's leader is %v while a follower's disk is full, was %s", l, leader.id)
	}

	freedAt := time.Now()
	disk.free(t)
	t.Logf("freed the ballast after %v", freedAt.Sub(fullAt).Round(time.Millisecond))
	c.waitReady([]*hub{victim}, 60*time.Second)
	t.Logf("%s ready again %v after the ballast was freed", victim.id, time.Since(freedAt).Round(time.Millisecond))
	waitFor(t, 30*time.Second, victim.id+" to take publishes after its disk was freed", func() bool { return pr.ackedSince(freedAt) > 0 })
	load.waitAcks(time.Now(), 50, 30*time.Second, "after freeing the disk")
	load.stop()
	c.publishAgain(led, channels[0], pr.stop())
	pr.check(fullAt, freedAt)
	c.mustRun(victim, "after its disk was freed")
	logWriteGap(t, "filling a follower's disk", led, fullAt, freedAt)

	ref := c.verify(led, c.hubs, channels)
	c.checkIdentical(c.hubs, channels, ref)
	c.checkSoundFiles(victim, led, channels)
}

// testFullDiskLeader: the leader's disk fills; it refuses publishes with
// 503 unavailable, naming the lack of space, and hands the lead over;
// writes go on through the others; once space is freed it serves again.
func testFullDiskLeader(t *testing.T) {
	c, disks := startDiskCluster(t, 3, diskMiB)
	channels := []string{"ldisk-a", "ldisk-b"}
	led := newLedger()
	load := startFaultLoad(c, led, faultLoadConfig{
		prefix: "dl", channels: channels, apis: c.apis(), httpWorkers: 4,
		pace: 10 * time.Millisecond, deadline: 150 * time.Second,
	})
	load.waitAcks(time.Now(), 100, 30*time.Second, "before the disk fills")

	old := c.waitLeader(nil, 10*time.Second)
	disk := disks[old]
	ballast := disk.fill(t)
	fullAt := time.Now()
	// Besides the load, which sends to random hubs, a prober asks the full
	// hub alone to take writes until its disk is freed and it takes them.
	pr := startDiskProber(c, led, old, channels[0])
	t.Logf("filled leader %s's disk with %d MiB of ballast (%d bytes left) after %d acknowledged publishes",
		old.id, ballast>>20, disk.freeBytes(), led.ackCount())
	body := c.waitNoSpace(old, 60*time.Second)
	t.Logf("%v after filling: %s's /readyz says %q", time.Since(fullAt).Round(time.Millisecond), old.id, body)

	var newLeader *hub
	waitFor(t, 30*time.Second, "the full leader to hand the lead over", func() bool {
		newLeader = c.leaderAmong(others(c.hubs, old))
		return newLeader != nil
	})
	handedAt := time.Now()
	t.Logf("%v after filling: %s leads", handedAt.Sub(fullAt).Round(time.Millisecond), newLeader.id)
	load.waitAcks(handedAt, 200, 30*time.Second, "after the full leader handed the lead over")
	waitFor(t, 30*time.Second, "5 answers to the prober from the full hub after it handed the lead over", func() bool { return pr.answersSince(handedAt) >= 5 })
	c.mustRun(old, "while its disk was full")

	freedAt := time.Now()
	disk.free(t)
	t.Logf("freed the ballast after %v", freedAt.Sub(fullAt).Round(time.Millisecond))
	c.waitReady([]*hub{old}, 60*time.Second)
	t.Logf("%s ready again %v after the ballast was freed", old.id, time.Since(freedAt).Round(time.Millisecond))
	waitFor(t, 30*time.Second, old.id+" to take publishes again", func() bool { return pr.ackedSince(freedAt) > 0 })
	load.waitAcks(time.Now(), 50, 30*time.Second, "after freeing the disk")
	load.stop()
	unacked := pr.stop()
	pr.check(fullAt, freedAt)
	c.mustRun(old, "after its disk was freed")
	logWriteGap(t, "filling the leader's disk", led, fullAt, freedAt)

	c.publishAgain(led, channels[0], unacked)
	ref := c.verify(led, c.hubs, channels)
	c.checkIdentical(c.hubs, channels, ref)
	c.checkSoundFiles(old, led, channels)
}

// testFullDiskRaftLog: a follower's disk fills when its Raft log must
// start a new segment, and has no room to make one, while its channel
// log still has room: its Raft log's appends fail; the majority goes on
// taking publishes; once space is freed, its Raft log goes on by itself
// and it catches up.
//
// A follower whose channel log is full stops taking Raft entries soon
// (Raft waits for it to apply them), so the Raft log must run out first:
// the follower's first segment is nearly full when the disk fills, and
// the disk keeps room (walSlackMiB) for the channel log but not for the
// next 64 MiB segment, which the hub makes ahead (spare.tmp) when it
// starts and when it takes a segment.
//
// This found a deadlock in hashicorp/raft's pipelined replication: the
// follower's failed append answers Success=false to a pipelined
// AppendEntries, the pipeline's decoder then ends while the sender may be
// parked handing it one more request, and that follower never gets an
// entry again (heartbeats go on, so no election heals it; hashicorp/raft
// issue 612). Comet's Raft transport now has pipelining off
// (MaxRPCsInFlight 1, raft/node.go).
func testFullDiskRaftLog(t *testing.T) {
	c, disks := startDiskCluster(t, 3, bigDiskMiB)
	channels := []string{"wal-a", "wal-b", "wal-c", "wal-d"}
	led := newLedger()
	// Messages of 60 KB: about 1,000 fill most of a 64 MiB segment.
	const pad = 60000
	load := startFaultLoad(c, led, faultLoadConfig{
		prefix: "dw", channels: channels, apis: c.apis(), httpWorkers: 3,
		pace: 5 * time.Millisecond, deadline: 240 * time.Second, pad: pad,
	})
	before := 54 << 20 / pad
	load.waitAcks(time.Now(), before, 120*time.Second, "to fill most of the first Raft log segment")

	leader := c.waitLeader(nil, 10*time.Second)
	victim := others(c.hubs, leader)[0]
	disk := disks[victim]
	// Stop the follower, remove its spare segment, fill its disk but for
	// walSlackMiB, and start it again: it cannot make a spare.
	c.stop(victim, 20*time.Second)
	if err := os.Remove(filepath.Join(victim.data, "raft", "wal", "spare.tmp")); err != nil {
		t.Fatalf("remove %s's spare segment: %v", victim.id, err)
	}
	used := int64(disk.sizeMiB) - disk.freeBytes()>>20
	disk.resize(t, int(used)+2*walSlackMiB) // a smaller ballast
	ballast := disk.fill(t) - walSlackMiB<<20
	disk.shrink(t, ballast)
	fullAt := time.Now()
	c.restart(victim)
	t.Logf("left follower %s's disk %d MiB (%d MiB of ballast) and started it again after %d acknowledged publishes; leader %s",
		victim.id, disk.freeBytes()>>20, ballast>>20, led.ackCount(), leader.id)
	waitFor(t, 120*time.Second, victim.id+"'s Raft log to fail to start a segment", func() bool {
		return victim.logContains("the next segment could not be made") || !victim.running()
	})
	c.mustRun(victim, "when its Raft log could not start a segment")
	failedAt := time.Now()
	code, body := c.readyz(victim)
	t.Logf("%v after filling: %s's Raft log could not start a segment, after %d acknowledged publishes; its /readyz says %d %s",
		failedAt.Sub(fullAt).Round(time.Millisecond), victim.id, led.ackCount(), code, body)
	load.waitAcks(failedAt, 100, 60*time.Second, "while the follower's Raft log cannot take appends")
	c.mustRun(victim, "while its Raft log could not take appends")
	waitFor(t, 30*time.Second, victim.id+"'s /readyz to say it is not ready while its Raft log cannot take appends", func() bool {
		code, _ := c.readyz(victim)
		return code != http.StatusOK
	})
	if l := c.leaderAmong(others(c.hubs, victim)); l != leader {
		t.Errorf("the majority's leader is %v while a follower's disk is full, was %s", l, leader.id)
	}

	freedAt := time.Now()
	disk.free(t)
	disk.resize(t, bigDiskMiB) // room to catch up
	t.Logf("freed the ballast after %v", freedAt.Sub(fullAt).Round(time.Millisecond))
	c.waitReady([]*hub{victim}, 120*time.Second)
	t.Logf("%s ready again %v after the ballast was freed", victim.id, time.Since(freedAt).Round(time.Millisecond))
	// Its /readyz does not follow the Raft log's appends (it said ready all
	// along): wait for the reopen itself.
	waitFor(t, 60*time.Second, victim.id+"'s Raft log to reopen", func() bool {
		return victim.logContains("reopened the raft log")
	})
	load.waitAcks(time.Now(), 20, 30*time.Second, "after freeing the disk")
	load.stop()
	c.mustRun(victim, "after its disk was freed")
	logWriteGap(t, "filling a follower's disk", led, fullAt, freedAt)

	ref := c.verify(led, c.hubs, channels)
	c.checkIdentical(c.hubs, channels, ref)
	for _, h := range c.hubs {
		t.Logf("%s's disk: %d MiB used", h.id, int64(disks[h].sizeMiB)-disks[h].freeBytes()>>20)
	}
}

// checkSoundFiles stops h (SIGTERM) and starts it again on the same data
// directory: a hub checks its files when it starts and refuses damaged
// ones. Then every hub must still hold every acknowledged publish, the
// copies identical.
func (c *cluster) checkSoundFiles(h *hub, led *ledger, channels []string) {
	c.t.Helper()
	c.stop(h, 20*time.Second)
	c.restart(h)
	c.waitReady(c.hubs, 30*time.Second)
	ref := c.verify(led, c.hubs, channels)
	c.checkIdentical(c.hubs, channels, ref)
	c.t.Logf("%s restarted on the disk that was full: its files are sound", h.id)
}

// httpAnswer matches the error of publishOnce for an HTTP answer.
var httpAnswer = regexp.MustCompile(`^(permanent error: )?[^ ]+: [1-5][0-9][0-9] `)

// diskProber publishes to one hub alone, one publish after another, each
// with an id of its own, recording every answer.
type diskProber struct {
	c      *cluster
	h      *hub
	stopCh chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	acks    []time.Time
	errs    []proberErr
	unacked []string
}

type proberErr struct {
	at  time.Time
	err error
}

func startDiskProber(c *cluster, led *ledger, h *hub, ch string) *diskProber {
	p := &diskProber{c: c, h: h, stopCh: make(chan struct{}), done: make(chan struct{})}
	c.t.Cleanup(func() { p.stop() })
	go func() {
		defer close(p.done)
		for n := 0; n < 100000; n++ {
			select {
			case <-p.stopCh:
				return
			default:
			}
			id := fmt.Sprintf("probe-%d", n)
			data := payload(id, n)
			led.addSent(id, ch, data)
			res, err := c.publishOnce(h.api, ch, id, data)
			p.mu.Lock()
			if err != nil {
				p.errs = append(p.errs, proberErr{time.Now(), err})
				p.unacked = append(p.unacked, id)
			} else {
				p.acks = append(p.acks, time.Now())
			}
			p.mu.Unlock()
			if err == nil {
				led.addAck(ack{channel: ch, id: id, offset: res.Offset, data: data, at: time.Now(), via: h.api})
			}
			wait := 20 * time.Millisecond
			if err != nil {
				wait = 100 * time.Millisecond
			}
			select {
			case <-p.stopCh:
				return
			case <-time.After(wait):
			}
		}
	}()
	return p
}

// ackedSince counts the prober's publishes acknowledged after t.
func (p *diskProber) ackedSince(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, at := range p.acks {
		if at.After(t) {
			n++
		}
	}
	return n
}

// answersSince counts the prober's publishes answered (acknowledged or
// not) after t.
func (p *diskProber) answersSince(t time.Time) int {
	n := p.ackedSince(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errs {
		if e.at.After(t) {
			n++
		}
	}
	return n
}

// stop stops the prober and returns the ids it sent that were not
// acknowledged.
func (p *diskProber) stop() []string {
	select {
	case <-p.stopCh:
	default:
		close(p.stopCh)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unacked
}

// check logs what the prober got while the disk was full, and fails the
// test for any HTTP answer other than 503 unavailable (naming the lack
// of space, or the lead's hand-over) or 504 timeout ("may be stored").
func (p *diskProber) check(fullAt, freedAt time.Time) {
	t := p.c.t
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	kinds := map[string]int{}
	for _, e := range p.errs {
		msg := e.err.Error()
		var kind string
		switch {
		case strings.Contains(msg, " 503 ") && strings.Contains(msg, `"unavailable"`) && strings.Contains(msg, "no space left on device"):
			kind = "503 unavailable: no space left on device"
		case strings.Contains(msg, " 503 ") && strings.Contains(msg, `"unavailable"`):
			kind = "503 unavailable (other)"
		case strings.Contains(msg, " 504 ") && strings.Contains(msg, `"timeout"`):
			kind = "504 timeout"
		case !httpAnswer.MatchString(msg):
			kind = "no answer" // the client's timeout: the load is heavy
		default:
			kind = "other"
		}
		if kinds[kind] == 0 {
			t.Logf("the prober's first %s answer from %s, %v after the disk filled: %v", kind, p.h.id, e.at.Sub(fullAt).Round(time.Millisecond), msg)
		}
		kinds[kind]++
	}
	acked := 0
	for _, at := range p.acks {
		if at.After(fullAt) && at.Before(freedAt) {
			acked++
		}
	}
	t.Logf("the prober sent to %s alone: %d acknowledged while its disk was full, %d after it was freed, refusals %v",
		p.h.id, acked, len(p.acks)-acked, kinds)
	if kinds["other"] > 0 {
		t.Errorf("%s answered %d publishes with an error other than 503 unavailable or 504 timeout while its disk was full", p.h.id, kinds["other"])
	}
}
