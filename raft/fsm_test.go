package raft

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/log"
	hraft "github.com/hashicorp/raft"
)

// mustOpenLog opens a channel log in a fresh directory and closes it when
// the test ends.
func mustOpenLog(t *testing.T) *log.Log {
	t.Helper()
	l, err := log.Open(log.Config{Path: filepath.Join(t.TempDir(), "channels.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// recorder is an Observer that remembers what it heard and checks the
// ordering promise: Applied indexes strictly increase, and every event
// belongs to the batch it is reported with.
type recorder struct {
	mu       sync.Mutex
	last     uint64
	events   []Event
	batches  int
	restored []uint64
	errs     []string
}

var _ Observer = (*recorder)(nil)

func (r *recorder) Applied(first, index uint64, events []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if first <= r.last || first > index {
		r.errs = append(r.errs, fmt.Sprintf("Applied(%d, %d) after Applied(.., %d)", first, index, r.last))
	}
	prev := first
	for _, e := range events {
		if e.Index < prev || e.Index > index {
			r.errs = append(r.errs, fmt.Sprintf("event at index %d out of order in batch (%d, %d]", e.Index, r.last, index))
		}
		prev = e.Index
	}
	r.last = index
	r.batches++
	r.events = append(r.events, events...)
}

func (r *recorder) Restored(index uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restored = append(r.restored, index)
	r.last = index
}

// snapshot returns copies of the events and restores so far, and fails t on
// any ordering error seen.
func (r *recorder) snapshot(t *testing.T) (events []Event, restored []uint64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("observer: %s", e)
	}
	return append([]Event(nil), r.events...), append([]uint64(nil), r.restored...)
}

// channelDump is everything stored for one channel.
type channelDump struct {
	Info log.Info
	Msgs []log.Message
}

// logDump is everything a Log holds that clients or the cluster can see.
type logDump struct {
	Applied   uint64
	Epoch     string
	Retention []log.Rule
	KV        map[string]string
	Channels  map[string]channelDump
}

// dumpLog reads the whole of l: every channel via Channels, every message
// via Read.
func dumpLog(t *testing.T, l *log.Log) logDump {
	t.Helper()
	d, err := tryDumpLog(l)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tryDumpLog(l *log.Log) (logDump, error) {
	d := logDump{Applied: l.Applied(), Epoch: l.Epoch(), KV: map[string]string{}, Channels: map[string]channelDump{}}
	var err error
	if d.Retention, err = l.Retention(); err != nil {
		return d, err
	}
	if err := l.Scan("", func(k string, v []byte) { d.KV[k] = string(v) }); err != nil {
		return d, err
	}
	var names []string
	err = l.Channels(func(name string, info log.Info) bool {
		names = append(names, name)
		d.Channels[name] = channelDump{Info: info}
		return true
	})
	if err != nil {
		return d, err
	}
	for _, name := range names {
		cd := d.Channels[name]
		for from := uint64(0); ; {
			info, msgs, err := l.Read(name, from, 7) // small pages to exercise paging
			if err != nil {
				return d, fmt.Errorf("read %s from %d: %w", name, from, err)
			}
			if info != cd.Info {
				return d, fmt.Errorf("%s: Read says %+v, Channels said %+v", name, info, cd.Info)
			}
			if len(msgs) == 0 {
				break
			}
			cd.Msgs = append(cd.Msgs, msgs...)
			from = msgs[len(msgs)-1].Offset + 1
		}
		d.Channels[name] = cd
	}
	return d, nil
}

// checkDense fails t unless every channel's messages run First..Next-1
// with no gap and no duplicate.
func checkDense(t *testing.T, who string, d logDump) {
	t.Helper()
	for name, cd := range d.Channels {
		if cd.Info.First < 1 || cd.Info.Next < cd.Info.First {
			t.Errorf("%s: %s has bad info %+v", who, name, cd.Info)
			continue
		}
		if n := uint64(len(cd.Msgs)); n != cd.Info.Next-cd.Info.First {
			t.Errorf("%s: %s holds %d messages, info %+v", who, name, n, cd.Info)
			continue
		}
		for i, m := range cd.Msgs {
			if m.Offset != cd.Info.First+uint64(i) {
				t.Errorf("%s: %s message %d has offset %d, want %d", who, name, i, m.Offset, cd.Info.First+uint64(i))
				break
			}
		}
	}
}

// diffDumps describes how b differs from a, or returns "".
func diffDumps(a, b logDump) string {
	if reflect.DeepEqual(a, b) {
		return ""
	}
	var out []string
	if a.Applied != b.Applied {
		out = append(out, fmt.Sprintf("applied %d != %d", a.Applied, b.Applied))
	}
	if a.Epoch != b.Epoch {
		out = append(out, fmt.Sprintf("epoch %q != %q", a.Epoch, b.Epoch))
	}
	if !reflect.DeepEqual(a.Retention, b.Retention) {
		out = append(out, fmt.Sprintf("retention %+v != %+v", a.Retention, b.Retention))
	}
	if !reflect.DeepEqual(a.KV, b.KV) {
		out = append(out, fmt.Sprintf("kv %v != %v", a.KV, b.KV))
	}
	names := map[string]bool{}
	for n := range a.Channels {
		names[n] = true
	}
	for n := range b.Channels {
		names[n] = true
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		ca, oka := a.Channels[n]
		cb, okb := b.Channels[n]
		switch {
		case !oka || !okb:
			out = append(out, fmt.Sprintf("channel %s only on one side (%v, %v)", n, oka, okb))
		case ca.Info != cb.Info:
			out = append(out, fmt.Sprintf("channel %s: info %+v != %+v", n, ca.Info, cb.Info))
		case !reflect.DeepEqual(ca.Msgs, cb.Msgs):
			out = append(out, fmt.Sprintf("channel %s: messages\n  %s\n  %s", n, fmtMsgs(ca.Msgs), fmtMsgs(cb.Msgs)))
		}
	}
	return strings.Join(out, "\n")
}

func fmtMsgs(ms []log.Message) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%d@%s:%q", m.Offset, m.Time.Format("15:04:05.000"), m.Data))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// testEntries is a fixed history: duplicates by id, refused channel names,
// retention changes (by count and by age), deletes, puts, sweeps, a clock
// that goes back (a new leader with a slower clock), an undecodable entry and
// a configuration entry that the FSM must step over.
func testEntries() []*hraft.Log {
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	pub := func(ch, id, data string) Publish { return Publish{Channel: ch, ID: id, Data: []byte(data)} }
	cmds := []any{
		&Command{Time: sec(0), Epoch: "e-cluster", Publish: []Publish{pub("a", "k1", "a1"), pub("b", "", "b1")}},
		&Command{Time: sec(1), Epoch: "e-2", Publish: []Publish{pub("a", "k1", "a1 retry"), pub("a", "", "a2"), pub("bad name!", "", "x")}},
		hraft.Log{Type: hraft.LogConfiguration, Data: []byte("not a command")},
		&Command{Time: sec(2), Epoch: "e-3", Retention: []log.Rule{
			{Pattern: "r.*", MaxMessages: 3},
			{Pattern: "age.*", MaxAge: time.Minute},
			{Pattern: "q", MaxMessages: 10},
		}},
		&Command{Time: sec(3), Epoch: "e-4", Publish: []Publish{
			pub("r.x", "r1", "r1"), pub("r.x", "r2", "r2"), pub("r.x", "r3", "r3"), pub("r.x", "r4", "r4"), pub("r.x", "r5", "r5")}},
		&Command{Time: sec(4), Epoch: "e-5", Publish: []Publish{pub("age.x", "", "old1"), pub("age.x", "", "old2"), pub("age.y", "", "y1")}},
		hraft.Log{Type: hraft.LogCommand, Data: []byte{0xff, 0, 1}},
		&Command{Time: sec(5), Epoch: "e-del", Delete: []string{"b", "never-written", "bad name!"}},
		&Command{Time: sec(6), Epoch: "e-7", Publish: []Publish{pub("b", "", "b after delete")}},
		&Command{Time: sec(7), Epoch: "e-8", Put: []KV{{Key: "members/h1", Value: []byte("api1")}, {Key: "members/h2", Value: []byte("api2")}}},
		&Command{Time: sec(8), Epoch: "e-9", Put: []KV{{Key: "members/h2"}, {Key: "empty", Value: []byte{}}}},
		&Command{Time: sec(9), Epoch: "e-10", Publish: []Publish{pub("q", "", "q1"), pub("q", "", "q2"), pub("q", "", "q3")}},
		// Tighten q's rule without writing to q.
		&Command{Time: sec(10), Epoch: "e-11", Retention: []log.Rule{
			{Pattern: "r.*", MaxMessages: 3},
			{Pattern: "age.*", MaxAge: time.Minute},
			{Pattern: "q", MaxMessages: 1},
		}},
		// Two minutes on: age.x's first two messages are past their minute.
		&Command{Time: sec(120), Epoch: "e-12", Publish: []Publish{pub("age.x", "", "new1")}},
		// A leader with a clock 30s behind.
		&Command{Time: sec(90), Epoch: "e-13", Publish: []Publish{pub("a", "", "a3 skewed"), pub("a", "k1", "a1 again, within window")}},
		&Command{Time: sec(15 * 60), Epoch: "e-14", Sweep: true},
		// k1 was first seen over 10 minutes ago: a new message.
		&Command{Time: sec(16 * 60), Epoch: "e-15", Publish: []Publish{pub("a", "k1", "a1 after window"), pub("r.x", "r5", "r5 after window")}},
		&Command{Time: sec(17 * 60), Epoch: "e-16", Retention: []log.Rule{}},
		&Command{Time: sec(17*60 + 1), Epoch: "e-17", Publish: []Publish{pub("r.x", "", "r6"), pub("q", "", "q4")}},
		// Publish then delete in one entry: the delete wins, in a new epoch.
		&Command{Time: sec(18 * 60), Epoch: "e-del2", Publish: []Publish{pub("a", "", "gone")}, Delete: []string{"a"}},
		&Command{Time: sec(19 * 60), Epoch: "e-19", Publish: []Publish{pub("a", "k1", "a first in new history"), pub("c/d", "", "c1")}},
	}
	var logs []*hraft.Log
	for i, c := range cmds {
		l := &hraft.Log{Index: uint64(i + 1), Term: 1}
		switch c := c.(type) {
		case *Command:
			l.Type, l.Data = hraft.LogCommand, c.Encode()
		case hraft.Log:
			l.Type, l.Data = c.Type, c.Data
		}
		logs = append(logs, l)
	}
	return logs
}

// respDump is the comparable part of what ApplyBatch returned for an entry.
type respDump struct {
	Kind    string // "response", "bad command", "none"
	Index   uint64
	Results []string
}

func dumpResp(t *testing.T, r any) respDump {
	t.Helper()
	switch r := r.(type) {
	case nil:
		return respDump{Kind: "none"}
	case *Response:
		d := respDump{Kind: "response", Index: r.Index}
		for _, res := range r.Results {
			s := fmt.Sprintf("%s %d %s dup=%v", res.Channel, res.Offset, res.Epoch, res.Duplicate)
			if res.Err != nil {
				switch {
				case errors.Is(res.Err, log.ErrTooManyIDs):
					s += " full"
				case !errors.Is(res.Err, log.ErrBadChannel):
					t.Errorf("result error is not ErrBadChannel: %v", res.Err)
				}
				s += " refused"
			}
			d.Results = append(d.Results, s)
		}
		return d
	case error:
		if !errors.Is(r, ErrBadCommand) {
			t.Errorf("entry error is not ErrBadCommand: %v", r)
		}
		return respDump{Kind: "bad command"}
	default:
		t.Fatalf("unexpected response %T", r)
		return respDump{}
	}
}

// applyGrouped applies logs to f in chunks of the given sizes (the rest in
// one last chunk), using Apply for chunks of one, and returns the
// responses in entry order.
func applyGrouped(t *testing.T, f *fsm, logs []*hraft.Log, sizes []int) []respDump {
	t.Helper()
	var out []respDump
	for len(logs) > 0 {
		n := len(logs)
		if len(sizes) > 0 {
			n, sizes = min(sizes[0], n), sizes[1:]
		}
		chunk := logs[:n]
		logs = logs[n:]
		if n == 1 {
			out = append(out, dumpResp(t, f.Apply(chunk[0])))
			continue
		}
		resps := f.ApplyBatch(chunk)
		if len(resps) != n {
			t.Fatalf("ApplyBatch of %d entries returned %d responses", n, len(resps))
		}
		for _, r := range resps {
			out = append(out, dumpResp(t, r))
		}
	}
	return out
}

func TestFSMDeterministicAcrossBatching(t *testing.T) {
	entries := testEntries()
	ones := make([]int, len(entries))
	for i := range ones {
		ones[i] = 1
	}
	groupings := []struct {
		name  string
		sizes []int
	}{
		{"all at once", nil},
		{"one by one", ones},
	}
	for seed := int64(1); seed <= 5; seed++ {
		rng := rand.New(rand.NewSource(seed))
		var sizes []int
		for left := len(entries); left > 0; {
			n := 1 + rng.Intn(5)
			sizes = append(sizes, n)
			left -= n
		}
		groupings = append(groupings, struct {
			name  string
			sizes []int
		}{fmt.Sprintf("random chunks seed %d %v", seed, sizes), sizes})
	}

	type outcome struct {
		dump   logDump
		resps  []respDump
		events []Event
	}
	var results []outcome
	for _, g := range groupings {
		rec := &recorder{}
		f := &fsm{log: mustOpenLog(t), observer: rec, logger: discardLogger()}
		resps := applyGrouped(t, f, entries, g.sizes)
		events, _ := rec.snapshot(t)
		results = append(results, outcome{dumpLog(t, f.log), resps, events})
	}

	want := results[0]
	checkDense(t, groupings[0].name, want.dump)
	// Spot checks that the history did what it says, so that "identical"
	// is not identical emptiness.
	if want.dump.Applied != uint64(len(entries)) {
		t.Errorf("applied %d, want %d", want.dump.Applied, len(entries))
	}
	if want.dump.Epoch != "e-cluster" {
		t.Errorf("cluster epoch %q, want the first entry's", want.dump.Epoch)
	}
	if got := want.dump.Channels["b"]; got.Info.Epoch != "e-del" || len(got.Msgs) != 1 || got.Msgs[0].Offset != 1 {
		t.Errorf("b after delete: %+v", got)
	}
	if got := want.dump.Channels["a"]; got.Info.Epoch != "e-del2" || len(got.Msgs) != 1 || string(got.Msgs[0].Data) != "a first in new history" {
		t.Errorf("a after publish-and-delete: %+v", got)
	}
	if _, ok := want.dump.Channels["bad name!"]; ok {
		t.Errorf("a refused channel name was stored")
	}
	if !reflect.DeepEqual(want.dump.KV, map[string]string{"members/h1": "api1", "empty": ""}) {
		t.Errorf("kv %v", want.dump.KV)
	}
	if want.resps[6].Kind != "bad command" || want.resps[2].Kind != "none" {
		t.Errorf("undecodable and configuration entries: %+v, %+v", want.resps[6], want.resps[2])
	}
	if r := want.resps[1].Results; len(r) != 3 || r[0] != "a 1 e-cluster dup=true" || !strings.HasSuffix(r[2], "refused") {
		t.Errorf("duplicate and refused results: %v", r)
	}

	for i, got := range results[1:] {
		name := groupings[i+1].name
		if d := diffDumps(want.dump, got.dump); d != "" {
			t.Errorf("%s: contents differ from %q:\n%s", name, groupings[0].name, d)
		}
		if !reflect.DeepEqual(want.resps, got.resps) {
			t.Errorf("%s: responses differ:\n got %+v\nwant %+v", name, got.resps, want.resps)
		}
		if !reflect.DeepEqual(want.events, got.events) {
			t.Errorf("%s: observed events differ:\n got %+v\nwant %+v", name, got.events, want.events)
		}
	}
}

// TestFSMMaxIDs: an entry sets the most ids held; a publish with a new id
// beyond it is refused (no event), however the entries are batched, and is
// stored once ids leave the window.
func TestFSMMaxIDs(t *testing.T) {
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	pub := func(ch, id string) Publish { return Publish{Channel: ch, ID: id, Data: []byte(ch + id)} }
	two := uint64(2)
	cmds := []*Command{
		{Time: sec(0), Epoch: "e", MaxIDs: &two},
		{Time: sec(1), Epoch: "e", Publish: []Publish{pub("a", "k1"), pub("a", "k2"), pub("a", "k3"), pub("a", "k1"), pub("a", "")}},
		{Time: sec(2), Epoch: "e", Publish: []Publish{pub("b", "k3")}},
		{Time: sec(601), Epoch: "e", Publish: []Publish{pub("b", "k3"), pub("b", "k4"), pub("a", "k1")}},
	}
	var logs []*hraft.Log
	for i, c := range cmds {
		logs = append(logs, &hraft.Log{Index: uint64(i + 1), Term: 1, Type: hraft.LogCommand, Data: c.Encode()})
	}
	want := []respDump{
		{Kind: "response", Index: 1},
		{Kind: "response", Index: 2, Results: []string{"a 1 e dup=false", "a 2 e dup=false", "a 0 e dup=false full refused", "a 1 e dup=true", "a 3 e dup=false"}},
		{Kind: "response", Index: 3, Results: []string{"b 0 e dup=false full refused"}},
		// k1 and k2 left the window at 601 s: room for two.
		{Kind: "response", Index: 4, Results: []string{"b 1 e dup=false", "b 2 e dup=false", "a 0 e dup=false full refused"}},
	}
	for _, sizes := range [][]int{{1, 1, 1, 1}, {4}, {2, 2}} {
		rec := &recorder{}
		f := &fsm{log: mustOpenLog(t), observer: rec, logger: discardLogger()}
		if got := applyGrouped(t, f, logs, sizes); !reflect.DeepEqual(got, want) {
			t.Errorf("batches %v: responses\n %v\nwant\n %v", sizes, got, want)
		}
		if events, _ := rec.snapshot(t); len(events) != 5 {
			t.Errorf("batches %v: %d events, want 5 (the messages stored)", sizes, len(events))
		}
		if f.log.MaxIDs() != 2 || f.log.HeldIDs() != 2 {
			t.Errorf("batches %v: MaxIDs %d, HeldIDs %d, want 2 and 2", sizes, f.log.MaxIDs(), f.log.HeldIDs())
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestFSMReplaySkipsApplied(t *testing.T) {
	entries := testEntries()
	rec := &recorder{}
	f := &fsm{log: mustOpenLog(t), observer: rec, logger: discardLogger()}
	f.ApplyBatch(entries)
	want := dumpLog(t, f.log)
	wantEvents, _ := rec.snapshot(t)

	// A restart replays the Raft log from the last snapshot, in whatever
	// batches, to a new fsm over the same log: everything at or below
	// Applied must be a no-op, and the observer must hear of no message.
	for _, replay := range [][]*hraft.Log{entries, entries[:5], entries[len(entries)-1:], entries[3:9]} {
		for _, batched := range []bool{true, false} {
			rec := &recorder{}
			g := &fsm{log: f.log, observer: rec, logger: discardLogger()}
			var resps []any
			if batched {
				resps = g.ApplyBatch(replay)
			} else {
				for _, l := range replay {
					resps = append(resps, g.Apply(l))
				}
			}
			for i, r := range resps {
				if r != nil {
					t.Errorf("replayed entry %d gave response %+v, want nil", replay[i].Index, r)
				}
			}
			if events, _ := rec.snapshot(t); len(events) != 0 {
				t.Errorf("replay of %d..%d produced events %+v", replay[0].Index, replay[len(replay)-1].Index, events)
			}
			// Nor hear of the batch at all: a commit stream would take it
			// for entries it holds (its floor would start too low).
			rec.mu.Lock()
			batches := rec.batches
			rec.mu.Unlock()
			if batches != 0 {
				t.Errorf("replay of %d..%d reported %d applied batches, want 0", replay[0].Index, replay[len(replay)-1].Index, batches)
			}
		}
	}
	if d := diffDumps(want, dumpLog(t, f.log)); d != "" {
		t.Fatalf("replay changed the log:\n%s", d)
	}
	if events, _ := rec.snapshot(t); !reflect.DeepEqual(events, wantEvents) {
		t.Fatalf("events changed")
	}

	// A replay that straddles the applied index applies only the new part.
	for _, k := range []int{1, 7, 12, len(entries) - 1} {
		g := &fsm{log: mustOpenLog(t), logger: discardLogger()}
		g.ApplyBatch(entries[:k])
		resps := g.ApplyBatch(entries[k/2:])
		for i, r := range resps {
			if old := k/2+i < k; old && r != nil {
				t.Errorf("k=%d: replayed entry %d gave %+v", k, entries[k/2+i].Index, r)
			}
		}
		if d := diffDumps(want, dumpLog(t, g.log)); d != "" {
			t.Errorf("applied %d, then replayed from %d: contents differ:\n%s", k, k/2+1, d)
		}
	}
}

// memSink is a SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	entries := testEntries()
	k := 12
	src := &fsm{log: mustOpenLog(t), logger: discardLogger()}
	src.ApplyBatch(entries[:k])

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Entries applied after Snapshot returns are not in it.
	src.ApplyBatch(entries[k : k+1])
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("persist: closed %v, cancelled %v", sink.closed, sink.cancelled)
	}

	rec := &recorder{}
	dst := &fsm{log: mustOpenLog(t), observer: rec, logger: discardLogger()}
	dst.ApplyBatch(testEntries()[:3]) // something to be replaced
	before, _ := rec.snapshot(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if _, restored := rec.snapshot(t); !reflect.DeepEqual(restored, []uint64{uint64(k)}) {
		t.Fatalf("Restored calls %v, want [%d]", restored, k)
	}
	ref := &fsm{log: mustOpenLog(t), logger: discardLogger()}
	ref.ApplyBatch(entries[:k])
	if d := diffDumps(dumpLog(t, ref.log), dumpLog(t, dst.log)); d != "" {
		t.Fatalf("restored log differs from one that applied the same entries:\n%s", d)
	}

	// Both go on identically from the snapshot's index.
	src.ApplyBatch(entries[k:])
	dst.ApplyBatch(entries[k:])
	if d := diffDumps(dumpLog(t, src.log), dumpLog(t, dst.log)); d != "" {
		t.Fatalf("after the rest of the entries:\n%s", d)
	}
	events, _ := rec.snapshot(t)
	events = events[len(before):]
	if len(events) == 0 || events[0].Index <= uint64(k) {
		t.Fatalf("events after restore: %+v", events)
	}

	// A snapshot that is not a log is refused, and the log stays usable.
	if err := dst.Restore(io.NopCloser(strings.NewReader("not a bbolt file"))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if d := diffDumps(dumpLog(t, src.log), dumpLog(t, dst.log)); d != "" {
		t.Fatalf("failed restore changed the log:\n%s", d)
	}
}
