package dstream

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
)

// store applies ops to a real channel log, one Update each, as the Raft
// state machine does, at times the test moves.
type store struct {
	t     *testing.T
	l     *log.Log
	index uint64
	now   time.Time
	seen  map[string][]uint64 // offsets emitted per channel
}

func newStore(t *testing.T) *store {
	l, err := log.Open(log.Config{Path: filepath.Join(t.TempDir(), "channels.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &store{t: t, l: l, now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), seen: map[string][]uint64{}}
}

func (s *store) apply(op wire.StreamOp) wire.StreamResult {
	s.t.Helper()
	s.index++
	var res wire.StreamResult
	_, err := s.l.Update(s.index, func(tx *log.Tx) error {
		if err := tx.InitEpoch("e0"); err != nil {
			return err
		}
		now := tx.Tick(s.now)
		var err error
		res, err = Apply(tx, op, now, "e"+string(rune('a'+s.index%26))+"x", func(ch string, off uint64, _ string, _ []byte) {
			s.seen[ch] = append(s.seen[ch], off)
		})
		return err
	})
	if err != nil {
		s.t.Fatalf("apply %+v: %v", op, err)
	}
	return res
}

func (s *store) read(name string, from uint64) wire.StreamReadResult {
	s.t.Helper()
	var res wire.StreamReadResult
	err := s.l.View(func(v *log.View) error {
		var err error
		res, err = Read(v, name, from, 1000, 1<<20, s.now)
		return err
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return res
}

func (s *store) text(name string, from uint64) string {
	s.t.Helper()
	res := s.read(name, from)
	if res.Status != http.StatusOK {
		s.t.Fatalf("read %s: status %d", name, res.Status)
	}
	var b strings.Builder
	for _, m := range res.Messages {
		b.Write(wire.DecodeStreamData(m.Data))
	}
	return b.String()
}

func msgs(parts ...string) []json.RawMessage {
	var out []json.RawMessage
	for _, p := range parts {
		out = append(out, wire.EncodeStreamData([]byte(p)))
	}
	return out
}

func want(t *testing.T, what string, res wire.StreamResult, status int) {
	t.Helper()
	if res.Status != status {
		t.Fatalf("%s: status %d (%s), want %d", what, res.Status, res.Message, status)
	}
}

func TestCreateAppendRead(t *testing.T) {
	s := newStore(t)
	r := s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "a", ContentType: "text/plain", Messages: msgs("hello ")})
	want(t, "create", r, http.StatusCreated)
	if r.Next != 2 || r.Epoch != "e0" {
		t.Fatalf("create: next %d epoch %q", r.Next, r.Epoch)
	}
	want(t, "same create", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "a", ContentType: "TEXT/plain; charset=utf-8"}), http.StatusOK)
	want(t, "other type", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "a", ContentType: "application/json"}), http.StatusConflict)
	want(t, "append", s.apply(wire.StreamOp{Op: wire.StreamAppend, Name: "a", ContentType: "text/plain", Messages: msgs("world")}), http.StatusNoContent)
	want(t, "wrong type", s.apply(wire.StreamOp{Op: wire.StreamAppend, Name: "a", ContentType: "text/html", Messages: msgs("x")}), http.StatusConflict)
	want(t, "no stream", s.apply(wire.StreamOp{Op: wire.StreamAppend, Name: "b", ContentType: "text/plain", Messages: msgs("x")}), http.StatusNotFound)
	if got := s.text("a", 0); got != "hello world" {
		t.Fatalf("read %q", got)
	}
	if got := s.text("a", 2); got != "world" {
		t.Fatalf("read from 2: %q", got)
	}
	if got := s.seen["a"]; len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("emitted %v", got)
	}
}

func TestStreamSeqAndClose(t *testing.T) {
	s := newStore(t)
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "c", ContentType: "text/plain"})
	app := func(seq string, closed bool, parts ...string) wire.StreamResult {
		return s.apply(wire.StreamOp{Op: wire.StreamAppend, Name: "c", ContentType: "text/plain", Seq: seq, Closed: closed, Messages: msgs(parts...)})
	}
	want(t, "seq b", app("b", false, "1"), http.StatusNoContent)
	want(t, "seq a after b", app("a", false, "2"), http.StatusConflict)
	want(t, "seq b again", app("b", false, "2"), http.StatusConflict)
	r := app("c", true, "3")
	want(t, "append and close", r, http.StatusNoContent)
	if !r.Closed || r.Next != 3 {
		t.Fatalf("closed %v next %d", r.Closed, r.Next)
	}
	r = app("", false, "4")
	want(t, "append after close", r, http.StatusConflict)
	if !r.Closed || r.Next != 3 {
		t.Fatalf("refusal: closed %v next %d", r.Closed, r.Next)
	}
	want(t, "close again", app("", true), http.StatusNoContent)
	if got := s.text("c", 0); got != "13" {
		t.Fatalf("read %q", got)
	}
	if !s.read("c", 0).Info.Closed {
		t.Fatal("read does not say closed")
	}
	if err := Writable(mustState(t, s, "c")); err == nil {
		t.Fatal("a closed stream takes publishes")
	}
}

func mustState(t *testing.T, s *store, name string) []byte {
	t.Helper()
	var raw []byte
	s.index++
	if _, err := s.l.Update(s.index, func(tx *log.Tx) error {
		var err error
		raw, _, err = tx.StreamState(name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestIdempotentProducer(t *testing.T) {
	s := newStore(t)
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "p", ContentType: "text/plain"})
	app := func(epoch, seq int64, data string, closed bool) wire.StreamResult {
		op := wire.StreamOp{Op: wire.StreamAppend, Name: "p", ContentType: "text/plain", Closed: closed,
			Producer: &wire.StreamProducer{ID: "w1", Epoch: epoch, Seq: seq}}
		if data != "" {
			op.Messages = msgs(data)
		}
		return s.apply(op)
	}
	want(t, "first", app(0, 0, "a", false), http.StatusOK)
	want(t, "retry", app(0, 0, "a", false), http.StatusNoContent)
	want(t, "next", app(0, 1, "b", false), http.StatusOK)
	r := app(0, 3, "d", false)
	want(t, "gap", r, http.StatusConflict)
	if *r.ExpectedSeq != 2 || *r.ReceivedSeq != 3 {
		t.Fatalf("gap: expected %d received %d", *r.ExpectedSeq, *r.ReceivedSeq)
	}
	want(t, "new epoch not at 0", app(1, 1, "x", false), http.StatusBadRequest)
	want(t, "new epoch", app(1, 0, "c", false), http.StatusOK)
	r = app(0, 2, "zombie", false)
	want(t, "zombie", r, http.StatusForbidden)
	if *r.ProducerEpoch != 1 {
		t.Fatalf("zombie told epoch %d", *r.ProducerEpoch)
	}
	want(t, "final and close", app(1, 1, "z", true), http.StatusOK)
	want(t, "retry of the close", app(1, 1, "z", true), http.StatusNoContent)
	want(t, "other after close", app(1, 2, "y", false), http.StatusConflict)
	if got := s.text("p", 0); got != "abcz" {
		t.Fatalf("read %q", got)
	}
}

func TestExpiry(t *testing.T) {
	s := newStore(t)
	ttl := int64(10)
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "t", ContentType: "text/plain", TTL: &ttl, Messages: msgs("old")})
	s.now = s.now.Add(8 * time.Second)
	want(t, "touch", s.apply(wire.StreamOp{Op: wire.StreamTouch, Name: "t"}), http.StatusNoContent)
	s.now = s.now.Add(8 * time.Second) // 16 s after creation, 8 after the touch
	if r := s.read("t", 0); r.Status != http.StatusOK {
		t.Fatalf("read after touch: %d", r.Status)
	}
	s.now = s.now.Add(3 * time.Second)
	if r := s.read("t", 0); r.Status != http.StatusNotFound {
		t.Fatalf("read after expiry: %d", r.Status)
	}
	want(t, "append after expiry", s.apply(wire.StreamOp{Op: wire.StreamAppend, Name: "t", ContentType: "text/plain", Messages: msgs("x")}), http.StatusNotFound)
	r := s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "t", ContentType: "text/plain", Messages: msgs("new")})
	want(t, "create again", r, http.StatusCreated)
	if r.Epoch == "e0" || r.Next != 2 {
		t.Fatalf("recreated in epoch %q at %d: want a new history", r.Epoch, r.Next)
	}
	if got := s.text("t", 0); got != "new" {
		t.Fatalf("read %q", got)
	}
}

func TestForks(t *testing.T) {
	s := newStore(t)
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "src", ContentType: "text/plain", Messages: msgs("ab", "cd", "ef")})
	// Fork after "ab" and one byte into "cd".
	r := s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "f1", ForkFrom: "src", ForkOffset: 2, ForkEpoch: "e0", ForkSub: 1,
		Messages: msgs("X")})
	want(t, "fork", r, http.StatusCreated)
	if r.Epoch != "e0" || r.Next != 4 {
		t.Fatalf("fork epoch %q next %d", r.Epoch, r.Next)
	}
	if got := s.text("f1", 0); got != "abcX" {
		t.Fatalf("fork reads %q", got)
	}
	want(t, "same fork again", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "f1", ForkFrom: "src", ForkOffset: 2, ForkEpoch: "e0", ForkSub: 1}), http.StatusOK)
	want(t, "other fork point", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "f1", ForkFrom: "src", ForkOffset: 3, ForkEpoch: "e0"}), http.StatusConflict)
	want(t, "past the tail", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "f2", ForkFrom: "src", ForkOffset: 9}), http.StatusBadRequest)
	want(t, "sub past the append", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "f2", ForkFrom: "src", ForkOffset: 3, ForkSub: 3}), http.StatusBadRequest)
	// A fork of the fork, inside its partial message.
	want(t, "fork of fork", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "f3", ForkFrom: "f1", ForkOffset: 2, ForkSub: 1}), http.StatusCreated)
	if got := s.text("f3", 0); got != "abc" {
		t.Fatalf("fork of fork reads %q", got)
	}
	// The source appends on; the forks do not see it.
	s.apply(wire.StreamOp{Op: wire.StreamAppend, Name: "src", ContentType: "text/plain", Messages: msgs("gh")})
	if got := s.text("f1", 0); got != "abcX" {
		t.Fatalf("fork reads %q after the source appended", got)
	}
	// Deleting the source while forks read it: gone to clients, kept for
	// the forks, removed after the last one.
	want(t, "delete source", s.apply(wire.StreamOp{Op: wire.StreamDelete, Name: "src"}), http.StatusNoContent)
	if r := s.read("src", 0); r.Status != http.StatusGone {
		t.Fatalf("deleted source reads %d", r.Status)
	}
	want(t, "recreate deleted source", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "src", ContentType: "text/plain"}), http.StatusConflict)
	want(t, "delete deleted source", s.apply(wire.StreamOp{Op: wire.StreamDelete, Name: "src"}), http.StatusGone)
	if got := s.text("f3", 0); got != "abc" {
		t.Fatalf("fork of fork reads %q after the source was deleted", got)
	}
	want(t, "delete f1", s.apply(wire.StreamOp{Op: wire.StreamDelete, Name: "f1"}), http.StatusNoContent)
	if r := s.read("f1", 0); r.Status != http.StatusGone {
		t.Fatalf("f1, read by f3, reads %d", r.Status)
	}
	if got := s.text("f3", 0); got != "abc" {
		t.Fatalf("f3 reads %q", got)
	}
	want(t, "delete f3", s.apply(wire.StreamOp{Op: wire.StreamDelete, Name: "f3"}), http.StatusNoContent)
	for _, name := range []string{"src", "f1", "f3"} {
		if r := s.read(name, 0); r.Status != http.StatusNotFound {
			t.Fatalf("%s after the last fork went: %d, want 404", name, r.Status)
		}
	}
	want(t, "create src again", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "src", ContentType: "text/plain"}), http.StatusCreated)
}

func TestJSONForkSubOffset(t *testing.T) {
	s := newStore(t)
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "j", ContentType: "application/json",
		Messages: []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`2`), json.RawMessage(`3`)}})
	want(t, "fork 2 messages in", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "jf", ForkFrom: "j", ForkOffset: 1, ForkSub: 2}), http.StatusCreated)
	res := s.read("jf", 0)
	if len(res.Messages) != 2 || string(res.Messages[1].Data) != "2" || res.Info.Next != 3 {
		t.Fatalf("json fork: %+v", res)
	}
	want(t, "past the messages", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "jg", ForkFrom: "j", ForkOffset: 2, ForkSub: 3}), http.StatusBadRequest)
}

func TestPlainChannels(t *testing.T) {
	s := newStore(t)
	s.index++
	if _, err := s.l.Update(s.index, func(tx *log.Tx) error {
		if err := tx.InitEpoch("e0"); err != nil {
			return err
		}
		_, err := tx.Append("chat", "", []byte(`{"text":"hi"}`), s.now)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	res := s.read("chat", 0)
	if res.Status != http.StatusOK || !res.Info.Implicit || res.Info.ContentType != "application/json" || len(res.Messages) != 1 {
		t.Fatalf("a plain channel reads as %+v", res)
	}
	want(t, "bytes over JSON messages", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "chat", ContentType: "text/plain"}), http.StatusConflict)
	want(t, "adopt as JSON", s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "chat", ContentType: "application/json"}), http.StatusCreated)
	if r := s.read("nothing", 0); r.Status != http.StatusNotFound {
		t.Fatalf("no channel reads %d", r.Status)
	}
	if err := Writable(mustState(t, s, "chat")); err != nil {
		t.Fatalf("an open JSON stream refuses publishes: %v", err)
	}
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "bin", ContentType: "application/octet-stream"})
	if err := Writable(mustState(t, s, "bin")); err == nil {
		t.Fatal("a byte stream takes JSON publishes")
	}
}

func TestSweepExpired(t *testing.T) {
	s := newStore(t)
	short, long := int64(5), int64(60)
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "short", ContentType: "text/plain", TTL: &short, Messages: msgs("x")})
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "long", ContentType: "text/plain", TTL: &long})
	s.apply(wire.StreamOp{Op: wire.StreamCreate, Name: "forever", ContentType: "text/plain"})
	s.now = s.now.Add(10 * time.Second)
	var expired []string
	if err := s.l.View(func(v *log.View) error {
		var err error
		expired, err = Expired(v, s.now, 10)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(expired) != 1 || expired[0] != "short" {
		t.Fatalf("expired %v", expired)
	}
	// Decided again when applied: a stream touched meanwhile stays.
	want(t, "expire long, not expired", s.apply(wire.StreamOp{Op: wire.StreamExpire, Name: "long"}), http.StatusNotFound)
	if r := s.read("long", 0); r.Status != http.StatusOK {
		t.Fatalf("long after a refused expire: %d", r.Status)
	}
	want(t, "expire short", s.apply(wire.StreamOp{Op: wire.StreamExpire, Name: "short"}), http.StatusNoContent)
	if raw := mustState(t, s, "short"); raw != nil {
		t.Fatalf("short's state is still there: %s", raw)
	}
	if r := s.read("short", 0); r.Status != http.StatusNotFound {
		t.Fatalf("short after the sweep: %d", r.Status)
	}
}
