package bus

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Publishes and their acks are most of a gateway session's messages, one
// each per client publish: encoding/json's reflection on Msg was about a
// quarter of a standalone's CPU under load. So these two are written and
// read by hand, in one fixed field order; Decode takes anything else (and
// these two written otherwise) through encoding/json, and gives the same
// Msg either way (FuzzDecodeFast).

// AppendPublish appends the publish message of id to b:
// {"type":"publish","id":ID,"channel":C,"key":K,"data":DATA}. data must
// be compact JSON (one line).
func AppendPublish(b []byte, id uint64, channel, key string, data []byte) []byte {
	b = append(b, `{"type":"publish","id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"key":`...)
	b = appendString(b, key)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// AppendAck appends a successful ack of publish id to b:
// {"type":"ack","id":ID,"channel":C,"offset":N,"epoch":E} with
// "duplicate":true before the brace when dup is set.
func AppendAck(b []byte, id uint64, channel string, offset uint64, epoch string, dup bool) []byte {
	b = append(b, `{"type":"ack","id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"channel":`...)
	b = appendString(b, channel)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, offset, 10)
	b = append(b, `,"epoch":`...)
	b = appendString(b, epoch)
	if dup {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string: as it is, quoted, when it holds
// only printable ASCII other than '"', '\\' and the characters
// encoding/json escapes for HTML ('<', '>', '&'); otherwise as
// encoding/json writes it.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// decodeFast reads a message as AppendPublish or AppendAck write it, and
// reports false for anything else (a string with an escape in it, another
// field order, another type). A publish's data is not checked: the hub
// checks it as any publish's, where encoding/json would refuse the whole
// message.
func decodeFast(b []byte) (Msg, bool) {
	var m Msg
	r := fastReader{b: b}
	switch {
	case r.lit(`{"type":"publish","id":`):
		m.Type = TypePublish
		var ok bool
		if m.ID, ok = r.uint(); !ok || !r.lit(`,"channel":`) {
			return Msg{}, false
		}
		if m.Channel, ok = r.str(); !ok || !r.lit(`,"key":`) {
			return Msg{}, false
		}
		if m.Key, ok = r.str(); !ok || !r.lit(`,"data":`) {
			return Msg{}, false
		}
		// The rest, but for the closing brace, is the data.
		rest := r.b[r.i:]
		if len(rest) < 2 || rest[len(rest)-1] != '}' || isSpace(rest[0]) || isSpace(rest[len(rest)-2]) {
			return Msg{}, false
		}
		// Not checked here: the hub checks every publish's data, and
		// answers a bad one with bad_request.
		m.Data = json.RawMessage(bytes.Clone(rest[:len(rest)-1]))
		return m, true
	case r.lit(`{"type":"ack","id":`):
		m.Type = TypeAck
		var ok bool
		if m.ID, ok = r.uint(); !ok || !r.lit(`,"channel":`) {
			return Msg{}, false
		}
		if m.Channel, ok = r.str(); !ok || !r.lit(`,"offset":`) {
			return Msg{}, false
		}
		if m.Offset, ok = r.uint(); !ok || !r.lit(`,"epoch":`) {
			return Msg{}, false
		}
		if m.Epoch, ok = r.str(); !ok {
			return Msg{}, false
		}
		if r.lit(`,"duplicate":true`) {
			m.Duplicate = true
		}
		if !r.lit(`}`) || r.i != len(r.b) {
			return Msg{}, false
		}
		return m, true
	}
	return Msg{}, false
}

type fastReader struct {
	b []byte
	i int
}

// lit consumes s if it comes next.
func (r *fastReader) lit(s string) bool {
	if !bytes.HasPrefix(r.b[r.i:], []byte(s)) {
		return false
	}
	r.i += len(s)
	return true
}

// uint consumes a number as encoding/json writes a uint64: no sign, no
// leading zero, no fraction.
func (r *fastReader) uint() (uint64, bool) {
	j := r.i
	for j < len(r.b) && r.b[j] >= '0' && r.b[j] <= '9' {
		j++
	}
	if j == r.i || (r.b[r.i] == '0' && j-r.i > 1) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(r.b[r.i:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	r.i = j
	return n, true
}

// str consumes a JSON string without escapes or control characters.
func (r *fastReader) str() (string, bool) {
	if r.i >= len(r.b) || r.b[r.i] != '"' {
		return "", false
	}
	j := r.i + 1
	for j < len(r.b) && r.b[j] != '"' {
		if c := r.b[j]; c == '\\' || c < 0x20 || c >= 0x80 {
			return "", false // escapes and UTF-8: encoding/json's business
		}
		j++
	}
	if j == len(r.b) {
		return "", false
	}
	s := string(r.b[r.i+1 : j])
	r.i = j + 1
	return s, true
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
