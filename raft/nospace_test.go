package raft

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/log"
)

// TestFSMWaitsForSpace: a batch whose commit fails for want of space is
// tried again until it commits, with the log's fault set meanwhile, and
// gives what it gives without the failures.
func TestFSMWaitsForSpace(t *testing.T) {
	entries := testEntries()
	want := &fsm{log: mustOpenLog(t), logger: discardLogger()}
	wantResp := applyGrouped(t, want, entries, []int{4, 100})

	l := mustOpenLog(t)
	rec := &recorder{}
	f := &fsm{log: l, observer: rec, logger: discardLogger()}
	got := applyGrouped(t, f, entries[:4], nil)
	l.FailUpdates(5, syscall.ENOSPC)
	done := make(chan []any, 1)
	go func() { done <- f.ApplyBatch(entries[4:]) }()
	waitFor(t, 5*time.Second, "the no-space fault", func() bool { return errors.Is(l.Fault(), log.ErrNoSpace) })
	if err := l.Fault(); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), l.Path()) {
		t.Errorf("Fault = %v; want ENOSPC naming %s", err, l.Path())
	}
	var resps []any
	select {
	case resps = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the batch is still waiting 10s after the last injected failure")
	}
	if err := l.Fault(); err != nil {
		t.Errorf("Fault after the batch committed: %v", err)
	}
	for _, r := range resps {
		got = append(got, dumpResp(t, r))
	}
	if !reflect.DeepEqual(got, wantResp) {
		t.Errorf("responses differ from a run without failures:\n got %v\nwant %v", got, wantResp)
	}
	if d := diffDumps(dumpLog(t, l), dumpLog(t, want.log)); d != "" {
		t.Errorf("log differs from a run without failures: %s", d)
	}
}

// TestFSMStopWhileWaitingForSpace: stop makes a batch waiting for space
// give up, and every batch after it, applying nothing, so that Raft can
// shut down; any other failure still stops the process.
func TestFSMStopWhileWaitingForSpace(t *testing.T) {
	entries := testEntries()
	l := mustOpenLog(t)
	f := &fsm{log: l, logger: discardLogger()}
	applyGrouped(t, f, entries[:4], nil)
	applied := l.Applied()
	l.FailUpdates(1<<30, syscall.ENOSPC)
	done := make(chan []any, 1)
	go func() { done <- f.ApplyBatch(entries[4:8]) }()
	waitFor(t, 5*time.Second, "the no-space fault", func() bool { return errors.Is(l.Fault(), log.ErrNoSpace) })
	f.stop()
	select {
	case resps := <-done:
		for i, r := range resps {
			if err, _ := r.(error); !errors.Is(err, ErrClosed) {
				t.Errorf("response %d of the batch given up: %v, want ErrClosed", i, r)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not end the wait")
	}
	l.FailUpdates(0, nil)
	for i, r := range f.ApplyBatch(entries[8:]) {
		if err, _ := r.(error); !errors.Is(err, ErrClosed) {
			t.Errorf("response %d of a batch after stop: %v, want ErrClosed", i, r)
		}
	}
	if l.Applied() != applied {
		t.Errorf("Applied = %d after stop, want %d: nothing after the batch given up", l.Applied(), applied)
	}

	// Another failure is not waited out.
	g := &fsm{log: mustOpenLog(t), logger: discardLogger()}
	g.log.FailUpdates(1, syscall.EIO)
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "input/output error") {
				t.Errorf("apply failing with EIO: recovered %v, want a panic naming the error", r)
			}
		}()
		g.ApplyBatch(entries[:2])
	}()
}

// TestNodeWaitsForSpace: on a node, publishes wait behind a batch that
// waits for space and are applied in order once it commits; Close does not
// wait for space.
func TestNodeWaitsForSpace(t *testing.T) {
	start := func(t *testing.T) (*Node, *log.Log) {
		l := mustOpenLog(t)
		cfg := Config{ID: "solo", Dir: t.TempDir(), Single: true, Log: l, NoSync: true}
		fastConfig(&cfg)
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		waitFor(t, 5*time.Second, "leadership", n.IsLeader)
		publish(t, n, "c", "", "0")
		return n, l
	}
	t.Run("recovers", func(t *testing.T) {
		n, l := start(t)
		l.FailUpdates(1<<30, syscall.ENOSPC)
		props := make([]*Proposal, 5)
		for i := range props {
			props[i] = n.Propose(&Command{Publish: []Publish{{Channel: "c", Data: []byte(fmt.Sprint(i + 1))}}})
		}
		waitFor(t, 5*time.Second, "the no-space fault", func() bool { return errors.Is(l.Fault(), log.ErrNoSpace) })
		l.FailUpdates(0, nil) // space is back
		for i, p := range props {
			r, err := p.Wait()
			if err != nil || r.Results[0].Offset != uint64(i+2) {
				t.Fatalf("publish %d: %+v, %v; want offset %d", i+1, r, err, i+2)
			}
		}
		if err := l.Fault(); err != nil {
			t.Errorf("Fault after recovery: %v", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		n, l := start(t)
		l.FailUpdates(1<<30, syscall.ENOSPC)
		p := n.Propose(&Command{Publish: []Publish{{Channel: "c", Data: []byte("1")}}})
		waitFor(t, 5*time.Second, "the no-space fault", func() bool { return errors.Is(l.Fault(), log.ErrNoSpace) })
		closed := make(chan error, 1)
		go func() { closed <- n.Close() }()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatal("Close waits for disk space")
		}
		if _, err := p.Wait(); !errors.Is(err, ErrClosed) {
			t.Errorf("publish given up at Close: %v, want ErrClosed", err)
		}
	})
}

// TestNodeFullDisk fills a real file system: the channel log on a tmpfs of
// 2 MiB (the Raft log elsewhere). Applying waits while it is full, the
// fault names ENOSPC, and everything published is applied, in order, once
// space is freed. Needs root to mount; skips otherwise.
func TestNodeFullDisk(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	l, err := log.Open(log.Config{Path: filepath.Join(mnt, "channels.db")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: "solo", Dir: filepath.Join(dir, "raft"), Single: true, Log: l, NoSync: true}
	fastConfig(&cfg)
	n, err := New(cfg)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	defer func() {
		n.Close()
		l.Close()
	}()
	waitFor(t, 5*time.Second, "leadership", n.IsLeader)
	publish(t, n, "c", "", "0")
	// Fill the file system but for a little.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	size := int64(0)
	for i := 0; i < 1000; i++ {
		n, err := f.Write(buf)
		size += int64(n)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(max(size-256<<10, 0)); err != nil { // room for some
		t.Fatal(err)
	}
	f.Close()

	// Publish one at a time until the log cannot commit: the last one
	// waits.
	data := []byte(`"` + strings.Repeat("x", 4000) + `"`)
	type answer struct {
		r   *Response
		err error
	}
	var pending chan answer
	applied := 0
	for i := 0; i < 2000 && pending == nil; i++ {
		p := n.Propose(&Command{Publish: []Publish{{Channel: "c", Data: data}}})
		ch := make(chan answer, 1)
		go func() {
			r, err := p.Wait()
			ch <- answer{r, err}
		}()
		var a answer
		waitFor(t, 10*time.Second, "the publish to be applied or the disk full", func() bool {
			select {
			case a = <-ch:
				return true
			default:
				if l.Fault() != nil {
					pending = ch
					return true
				}
				return false
			}
		})
		if pending == nil {
			if a.err != nil || a.r.Results[0].Offset != uint64(i+2) {
				t.Fatalf("publish %d: %+v, %v", i+1, a.r, a.err)
			}
			applied++
		}
	}
	err = l.Fault()
	if !errors.Is(err, log.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d publishes on a full disk: Fault = %v, want ENOSPC", applied, err)
	}
	t.Logf("the disk filled after %d publishes: %v", applied, err)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-pending:
		if a.err != nil || a.r.Results[0].Offset != uint64(applied+2) {
			t.Fatalf("the publish that waited for space: %+v, %v; want offset %d", a.r, a.err, applied+2)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the publish that waited for space is still waiting 20s after space was freed")
	}
	publish(t, n, "c", "", "after")
	waitFor(t, 5*time.Second, "the fault to clear", func() bool { return l.Fault() == nil })
	_, msgs, err := l.Read("c", 1, 1<<20)
	if err != nil || len(msgs) != applied+3 {
		t.Fatalf("read: %d messages, %v; want %d", len(msgs), err, applied+3)
	}
}

// TestTermWriteWaitsForSpace: a node that cannot store a new term for want
// of disk space (hashicorp/raft panics when that write fails) waits for
// space instead, not ready meanwhile, while the majority goes on; once
// space returns it stores the term and catches up.
func TestTermWriteWaitsForSpace(t *testing.T) {
	c := newCluster(t, 3)
	c.publish("chat", "chat-1", "chat 1")
	l := c.leader()
	var f *testNode
	for _, tn := range c.nodes {
		if tn != l {
			f = tn
			break
		}
	}
	f.node.store.failStableWrites(1<<30, syscall.ENOSPC)
	// A leadership transfer makes a new term: f cannot store it, whether
	// it is the one to call the election or only hears of it. (A node cut
	// off does not change its term: pre-vote.)
	go l.node.TransferLeadership()
	waitFor(t, 10*time.Second, "the term write to wait for space", func() bool {
		err := f.node.LogFault()
		return err != nil && errors.Is(err, syscall.ENOSPC)
	})
	t.Logf("LogFault: %v", f.node.LogFault())
	for i := 2; i <= 10; i++ {
		c.publish("chat", fmt.Sprintf("chat-%d", i), fmt.Sprintf("chat %d", i))
	}
	if f.node.State() == "leader" {
		t.Fatal("the node that cannot store its term became leader")
	}
	f.node.store.failStableWrites(0, nil)
	waitFor(t, 10*time.Second, "the fault to clear", func() bool { return f.node.LogFault() == nil })
	c.publish("chat", "chat-11", "chat 11")
	checkChannel(t, f.id, c.waitSame(c.nodes...), "chat", chatData(11))
}
