package raft

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
)

// t0 is the fixed time the codec and FSM tests stamp commands with.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

// codecCases are commands that must survive Encode and DecodeCommand. They
// also seed FuzzDecodeCommand.
func codecCases() []struct {
	name string
	cmd  Command
} {
	return []struct {
		name string
		cmd  Command
	}{
		{"empty", Command{Time: t0}},
		{"epoch only", Command{Time: t0, Epoch: "0123456789abcdef"}},
		{"unix epoch time", Command{Time: time.Unix(0, 0).UTC(), Epoch: "e"}},
		{"time before 1970", Command{Time: time.Date(1969, 7, 20, 20, 17, 40, 1, time.UTC), Epoch: "e"}},
		{"one publish", Command{Time: t0, Epoch: "e1", Publish: []Publish{
			{Channel: "chat", ID: "k1", Data: []byte(`{"text":"hi"}`)},
		}}},
		{"publishes with and without ids, binary and empty data", Command{Time: t0, Epoch: "e1", Publish: []Publish{
			{Channel: "a", ID: "k1", Data: []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}},
			{Channel: "b/c:d@e-f_g.h", Data: []byte("no id")},
			{Channel: "a", ID: "k2", Data: []byte{}},
			{Channel: "", ID: "", Data: []byte{}},
			{Channel: "big", ID: string(bytes.Repeat([]byte("i"), 300)), Data: bytes.Repeat([]byte{0x80}, 70000)},
		}}},
		{"retention rules", Command{Time: t0, Epoch: "e", Retention: []log.Rule{
			{Pattern: "chat.*", MaxMessages: 100},
			{Pattern: "tmp/*", MaxAge: 90 * time.Second},
			{Pattern: "*", MaxMessages: 1 << 40, MaxAge: 48 * time.Hour},
		}}},
		{"empty retention (back to defaults)", Command{Time: t0, Epoch: "e", Retention: []log.Rule{}}},
		{"deletes", Command{Time: t0, Epoch: "e2", Delete: []string{"a", "b/c", ""}}},
		{"puts with nil and non-nil values", Command{Time: t0, Epoch: "e", Put: []KV{
			{Key: "members/h1", Value: []byte(`{"api":"127.0.0.1:7101"}`)},
			{Key: "members/h2", Value: nil},
			{Key: "empty", Value: []byte{}},
			{Key: "", Value: []byte{0}},
		}}},
		{"sweep", Command{Time: t0, Epoch: "e", Sweep: true}},
		{"max ids", Command{Time: t0, Epoch: "e", MaxIDs: ptr(uint64(10_000_000))}},
		{"no limit on ids", Command{Time: t0, Epoch: "e", MaxIDs: ptr(uint64(0))}},
		{"stream ops", Command{Time: t0, Epoch: "e", Streams: []wire.StreamOp{
			{Op: wire.StreamCreate, Name: "s", ContentType: "text/plain", TTL: ptr(int64(60)), Messages: []json.RawMessage{json.RawMessage(`"hi"`)}},
			{Op: wire.StreamAppend, Name: "s", Producer: &wire.StreamProducer{ID: "p", Epoch: 1, Seq: 2}, Seq: "a", Closed: true},
			{Op: wire.StreamCreate, Name: "f", ForkFrom: "s", ForkOffset: 2, ForkEpoch: "e", ForkSub: 1},
		}}},
		{"everything", Command{Time: t0.Add(-time.Hour), Epoch: "e3",
			Publish:   []Publish{{Channel: "x", ID: "1", Data: []byte("d")}},
			Retention: []log.Rule{{Pattern: "x", MaxMessages: 1}},
			Delete:    []string{"y"},
			Put:       []KV{{Key: "k", Value: []byte("v")}, {Key: "gone"}},
			Sweep:     true,
			MaxIDs:    ptr(uint64(1 << 40)),
			Streams:   []wire.StreamOp{{Op: wire.StreamDelete, Name: "z"}},
		}},
	}
}

func ptr[T any](v T) *T { return &v }

// equalCommands compares commands the way applying them would: times by
// instant, publish data by content (nil and empty are the same message), and
// put values by content and nil-ness (nil deletes, empty stores "").
func equalCommands(a, b *Command) bool {
	if (a.MaxIDs == nil) != (b.MaxIDs == nil) || (a.MaxIDs != nil && *a.MaxIDs != *b.MaxIDs) {
		return false
	}
	if !a.Time.Equal(b.Time) || a.Epoch != b.Epoch || a.Sweep != b.Sweep ||
		len(a.Publish) != len(b.Publish) || len(a.Delete) != len(b.Delete) || len(a.Put) != len(b.Put) {
		return false
	}
	for i := range a.Publish {
		p, q := a.Publish[i], b.Publish[i]
		if p.Channel != q.Channel || p.ID != q.ID || !bytes.Equal(p.Data, q.Data) {
			return false
		}
	}
	if (a.Retention == nil) != (b.Retention == nil) || !reflect.DeepEqual(append([]log.Rule{}, a.Retention...), append([]log.Rule{}, b.Retention...)) {
		return false
	}
	if !reflect.DeepEqual(a.Streams, b.Streams) {
		return false
	}
	for i := range a.Delete {
		if a.Delete[i] != b.Delete[i] {
			return false
		}
	}
	for i := range a.Put {
		p, q := a.Put[i], b.Put[i]
		if p.Key != q.Key || (p.Value == nil) != (q.Value == nil) || !bytes.Equal(p.Value, q.Value) {
			return false
		}
	}
	return true
}

func TestCommandRoundTrip(t *testing.T) {
	for _, tc := range codecCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.cmd.Encode()
			got, err := DecodeCommand(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !equalCommands(&tc.cmd, got) {
				t.Fatalf("round trip changed the command:\n got %+v\nwant %+v", got, tc.cmd)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("decoded time is in %v, want UTC", got.Time.Location())
			}
			// Encoding is a function of the command: the decoded copy
			// encodes to the same bytes.
			if again := got.Encode(); !bytes.Equal(again, b) {
				t.Errorf("re-encoding differs:\n got %x\nwant %x", again, b)
			}
		})
	}
}

func TestDecodeCommandTruncated(t *testing.T) {
	for _, tc := range codecCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.cmd.Encode()
			for n := 0; n < len(b); n++ {
				if n > 4096 && n < len(b)-64 && n%997 != 0 {
					continue // long inputs: a sample of the middle, all of both ends
				}
				// Copy so that decode cannot read past n into b's capacity.
				prefix := bytes.Clone(b[:n])
				c, err := DecodeCommand(prefix)
				if !errors.Is(err, ErrBadCommand) {
					t.Fatalf("decode of %d of %d bytes: got (%+v, %v), want ErrBadCommand", n, len(b), c, err)
				}
				if c != nil {
					t.Fatalf("decode of %d of %d bytes returned a command with an error", n, len(b))
				}
			}
		})
	}
}

func TestDecodeCommandTrailingBytes(t *testing.T) {
	for _, tc := range codecCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, extra := range [][]byte{{0}, {1}, {0xff, 0xff}, []byte("garbage")} {
				b := append(tc.cmd.Encode(), extra...)
				if _, err := DecodeCommand(b); !errors.Is(err, ErrBadCommand) {
					t.Fatalf("decode with %d trailing bytes: got %v, want ErrBadCommand", len(extra), err)
				}
			}
		})
	}
}

func TestDecodeCommandMalformed(t *testing.T) {
	hdr := func() []byte { // version, time, epoch "e"
		b := []byte{commandVersion}
		b = binary.AppendVarint(b, t0.UnixNano())
		return appendString(b, "e")
	}
	uv := func(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
	cases := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"version 0", []byte{0}},
		{"version 2", append([]byte{2}, encodeTail(Command{Time: t0})...)},
		{"overlong time varint", append([]byte{commandVersion}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"epoch longer than input", appendString(append([]byte{commandVersion}, 0), "e")[:3]},
		{"epoch length 2^63", uv([]byte{commandVersion, 0}, 1<<63)},
		{"publish count 2^62", uv(hdr(), 1<<62)},
		{"publish count over input", append(uv(hdr(), 5), 0, 0, 0, 0)},
		{"publish data length over input", append(appendString(appendString(uv(hdr(), 1), "c"), ""), 0x7f, 1, 2)},
		{"retention flag without rules", append(uv(hdr(), 0), flagRetention)},
		{"retention not json", append(appendBytes(append(uv(hdr(), 0), flagRetention), []byte("{no")), 0, 0)},
		{"retention wrong json type", append(appendBytes(append(uv(hdr(), 0), flagRetention), []byte(`{"pattern":"x"}`)), 0, 0)},
		{"retention bad field type", append(appendBytes(append(uv(hdr(), 0), flagRetention), []byte(`[{"max_messages":-1}]`)), 0, 0)},
		{"delete count over input", append(uv(hdr(), 0), 0, 9, 1, 'a')},
		{"put value flag missing", appendString(append(uv(hdr(), 0), 0, 0, 1), "k")},
		{"put value length over input", append(appendString(append(uv(hdr(), 0), 0, 0, 1), "k"), 1, 50, 'v')},
		{"max ids flag without a value", append(uv(hdr(), 0), flagMaxIDs, 0, 0)},
		{"max ids overlong varint", append(append(uv(hdr(), 0), flagMaxIDs, 0, 0), bytes.Repeat([]byte{0xff}, 11)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCommand(tc.b)
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("got (%+v, %v), want ErrBadCommand", c, err)
			}
		})
	}
}

// encodeTail returns c's encoding without its version byte.
func encodeTail(c Command) []byte { return c.Encode()[1:] }

func TestDecodeCommandDataAliasesInput(t *testing.T) {
	// DecodeCommand documents that Data slices alias the input. They must
	// be capped, so that appending to one cannot overwrite the next field.
	cmd := Command{Time: t0, Publish: []Publish{{Channel: "a", Data: []byte("x")}, {Channel: "b", Data: []byte("y")}}}
	got, err := DecodeCommand(cmd.Encode())
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got.Publish[0].Data, 'Z')
	if got.Publish[1].Channel != "b" || string(got.Publish[1].Data) != "y" {
		t.Fatalf("append to one message's data changed the next: %+v", got.Publish[1])
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, tc := range codecCases() {
		b := tc.cmd.Encode()
		if len(b) > 1024 {
			continue // big inputs slow down mutation and minimization
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{commandVersion, 0, 0, 0, flagRetention | flagSweep, 4, 'n', 'u', 'l', 'l', 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error does not wrap ErrBadCommand: %v", err)
			}
			if c != nil {
				t.Fatalf("got a command together with error %v", err)
			}
			return
		}
		enc := c.Encode()
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("decode(encode(decode(b))): %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("decode(encode(x)) != x:\n got %+v\nwant %+v", c2, c)
		}
		if enc2 := c2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%x\n%x", enc, enc2)
		}
	})
}
