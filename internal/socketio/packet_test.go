package socketio

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodePacket(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		typ     int
		nsp     string
		id      uint64
		hasID   bool
		name    string
		payload string
	}{
		{in: "0", ok: true, typ: typeConnect, nsp: "/"},
		{in: `0{"token":"t"}`, ok: true, typ: typeConnect, nsp: "/", payload: `{"token":"t"}`},
		{in: `0/admin,{"token":"t"}`, ok: true, typ: typeConnect, nsp: "/admin", payload: `{"token":"t"}`},
		{in: "0/admin,", ok: true, typ: typeConnect, nsp: "/admin"},
		{in: "0/admin", ok: true, typ: typeConnect, nsp: "/admin"},
		{in: "1", ok: true, typ: typeDisconnect, nsp: "/"},
		{in: `2["comet",{"op":"ping"}]`, ok: true, typ: typeEvent, nsp: "/", name: "comet", payload: `["comet",{"op":"ping"}]`},
		{in: `212["comet","x"]`, ok: true, typ: typeEvent, nsp: "/", id: 12, hasID: true, name: "comet", payload: `["comet","x"]`},
		{in: `2/n,7["e"]`, ok: true, typ: typeEvent, nsp: "/n", id: 7, hasID: true, name: "e", payload: `["e"]`},
		{in: `33["a"]`, ok: true, typ: typeAck, nsp: "/", id: 3, hasID: true, name: "a", payload: `["a"]`},
		{in: ""},
		{in: "7"},
		{in: "x"},
		{in: `0"token"`},
		{in: `0[]`},
		{in: `1{}`},
		{in: `2`},
		{in: `2[]`},
		{in: `2[1]`},
		{in: `2{"a":1}`},
		{in: `2["e"`},
		{in: `3["a"]`},
		{in: `299999999999999999999999["e"]`},
		{in: `51-["e",{"_placeholder":true,"num":0}]`},
		{in: `61-0[{"_placeholder":true,"num":0}]`},
	} {
		p, err := decodePacket(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("decodePacket(%q): err %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if p.typ != tc.typ || p.nsp != tc.nsp || p.id != tc.id || p.hasID != tc.hasID || p.eventName() != tc.name || string(p.data) != tc.payload {
			t.Errorf("decodePacket(%q) = %+v (name %q)", tc.in, p, p.eventName())
		}
	}
}

func TestEncode(t *testing.T) {
	if got := string(appendEvent(nil, "comet", json.RawMessage(`{"op":"pong"}`))); got != `42["comet",{"op":"pong"}]` {
		t.Errorf("appendEvent: %s", got)
	}
	if got := string(appendEvent(nil, `a"b`)); got != `42["a\"b"]` {
		t.Errorf("appendEvent without args: %s", got)
	}
	if got := string(appendAck(nil, 17, json.RawMessage(`1`), json.RawMessage(`"x"`))); got != `4317[1,"x"]` {
		t.Errorf("appendAck: %s", got)
	}
	if got := string(appendAck(nil, 0)); got != `430[]` {
		t.Errorf("appendAck without args: %s", got)
	}
	if got := connectError("/x", "no"); got != `44/x,{"message":"no"}` {
		t.Errorf("connectError: %s", got)
	}
}

// FuzzDecodePacket: no input panics the decoder; what it accepts is
// consistent (an event has a name and its arguments are JSON); an event it
// accepts, encoded again as this server encodes events, decodes to the
// same name and arguments.
func FuzzDecodePacket(f *testing.F) {
	for _, s := range []string{"0", `0{"token":"t"}`, "0/admin,", "1", `2["comet",{"op":"ping"}]`,
		`212["comet","x"]`, `2/n,7["e"]`, `33["a"]`, `51-["e",{"_placeholder":true,"num":0}]`,
		`2["e",1,2,[3],{"a":"\u001e"}]`, `2/,["e"]`, `2 ["e"]`, `299999999999999999999["e"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := decodePacket(s)
		if err != nil {
			return
		}
		if p.typ < typeConnect || p.typ > typeConnectError {
			t.Fatalf("accepted type %d", p.typ)
		}
		if p.data != nil && !json.Valid(p.data) {
			t.Fatalf("accepted a payload that is not JSON: %q", p.data)
		}
		if p.typ != typeEvent || p.nsp != "/" {
			return
		}
		if len(p.args) == 0 {
			t.Fatalf("event without arguments: %q", s)
		}
		enc := appendEvent(nil, p.eventName(), p.args[1:]...)
		if enc[0] != eioMessage {
			t.Fatalf("encoded %q", enc)
		}
		q, err := decodePacket(string(enc[1:]))
		if err != nil {
			t.Fatalf("re-encoded %q of %q does not decode: %v", enc, s, err)
		}
		if q.eventName() != p.eventName() || len(q.args) != len(p.args) {
			t.Fatalf("%q re-encoded as %q: name %q args %d, want %q %d", s, enc, q.eventName(), len(q.args), p.eventName(), len(p.args))
		}
		for i := 1; i < len(p.args); i++ {
			if !bytes.Equal(q.args[i], p.args[i]) {
				t.Fatalf("argument %d: %q, want %q", i, q.args[i], p.args[i])
			}
		}
	})
}

// FuzzSplitPayload: a polling body splits into the packets joined, and no
// input panics.
func FuzzSplitPayload(f *testing.F) {
	for _, s := range []string{"40", "42[\"e\",1]\x1e42[\"e\",2]", "bAQID", "\x1e", "3\x1e\x1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pkts, err := splitPayload(s)
		if err != nil {
			return
		}
		if strings.Join(pkts, recordSeparator) != s {
			t.Fatalf("split %q into %q", s, pkts)
		}
		for _, p := range pkts {
			if p == "" || p[0] == 'b' || strings.Contains(p, recordSeparator) {
				t.Fatalf("split %q into %q", s, pkts)
			}
		}
	})
}
