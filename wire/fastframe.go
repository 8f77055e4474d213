package wire

import (
	"encoding/json"
	"slices"
	"strings"
)

// decodeFrameFast decodes a client frame as json.Unmarshal into a
// ClientFrame would, without reflection: the gateway decodes every frame a
// client sends, and json.Unmarshal was a quarter of a gateway's CPU time
// under publish load (docs/benchmarks.md). It checks the frame with
// json.Valid first, so that what it scans is known to be JSON, and it
// answers ok only in the plain case: one object whose keys are the
// fields' exact names or unknown ones, string fields without escapes or
// non-ASCII bytes, and from an integer. Anything else (a type error, null,
// an escape, a key in other case, which encoding/json matches too) is
// left to json.Unmarshal. FuzzDecodeFrameFast holds it to that.
func decodeFrameFast(b []byte) (f ClientFrame, ok bool) {
	if !Valid(b) {
		return ClientFrame{}, false
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return ClientFrame{}, false
	}
	end := scanObject(b, i, func(key []byte, v0, v1 int) bool {
		if p := stringField(&f, key); p != nil {
			s, ok := plainString(b, v0, v1)
			*p = s
			return ok // not: null, a type error, an escape
		}
		switch string(key) {
		case "from", "last", "limit", "since", "before":
			n, ok := plainUint(b[v0:v1])
			if !ok {
				return false // null, a sign, a string, a fraction, out of range
			}
			*uintField(&f, key) = &n
		case "reverse":
			switch string(b[v0:v1]) {
			case "true":
				f.Reverse = true
			case "false":
				f.Reverse = false
			default:
				return false // null, or a type error
			}
		case "data":
			f.Data = slices.Clone(json.RawMessage(b[v0:v1]))
		case "info":
			f.Info = slices.Clone(json.RawMessage(b[v0:v1]))
		default:
			return !foldsTo(key, frameKeys) // json matches keys in any case
		}
		return true
	})
	if end < 0 {
		return ClientFrame{}, false
	}
	return f, true
}

// DecodePublishBatch decodes the batch form of POST /v1/publish, a JSON
// array of PublishRequest objects, without reflection when it is plain
// (as decodeFrameFast: string fields without escapes, known keys only):
// ok is false otherwise, and the caller decodes it with encoding/json,
// which also says what is wrong. The requests' Data are b's own bytes, not
// copies: b must not change while they are used. FuzzDecodePublishBatch
// holds it to encoding/json.
func DecodePublishBatch(b []byte) (reqs []PublishRequest, ok bool) {
	return decodeArray(b, func(i int) (r PublishRequest, end int) {
		end = scanObject(b, i, func(key []byte, v0, v1 int) bool {
			var ok bool
			switch string(key) {
			case "channel":
				r.Channel, ok = plainString(b, v0, v1)
				return ok
			case "id":
				r.ID, ok = plainString(b, v0, v1)
				return ok
			case "data":
				r.Data = json.RawMessage(b[v0:v1:v1]) // b's own bytes: not copied
			default:
				return false // unknown fields are refused, by json
			}
			return true
		})
		return r, end
	})
}

// decodeArray decodes b, when it is valid JSON, as an array of objects,
// each decoded by obj from b[i] (its '{'): obj returns the index just
// after it, or -1 when it is not plain. ok is false when b is not such an
// array or an object is not plain.
func decodeArray[T any](b []byte, obj func(i int) (T, int)) (out []T, ok bool) {
	if !Valid(b) {
		return nil, false
	}
	i := skipSpace(b, 0)
	if b[i] != '[' {
		return nil, false
	}
	out = []T{}
	i = skipSpace(b, i+1)
	if b[i] == ']' {
		return out, true
	}
	for {
		if b[i] != '{' {
			return nil, false // null, or a type error
		}
		v, end := obj(i)
		if end < 0 {
			return nil, false
		}
		out = append(out, v)
		i = skipSpace(b, end)
		if b[i] == ']' {
			return out, true
		}
		i = skipSpace(b, i+1) // after ','
	}
}

// scanObject calls field with each member of the object at b[i] (b is
// valid JSON): its key, and its value as b[v0:v1]. It returns the index
// just after the object, or -1 when field returns false or a key has an
// escape or a byte outside printable ASCII.
func scanObject(b []byte, i int, field func(key []byte, v0, v1 int) bool) int {
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return i + 1
	}
	for {
		k1 := plainStringEnd(b, i+1)
		if k1 < 0 {
			return -1
		}
		key := b[i+1 : k1]
		v0 := skipSpace(b, skipSpace(b, k1+1)+1) // past ':'
		v1 := valueEnd(b, v0)
		if !field(key, v0, v1) {
			return -1
		}
		i = skipSpace(b, v1)
		if b[i] == '}' {
			return i + 1
		}
		i = skipSpace(b, i+1) // after ','
	}
}

// plainString returns the JSON string b[v0:v1] when it has no escape and
// only printable ASCII (json.Unmarshal would give the same bytes).
func plainString(b []byte, v0, v1 int) (string, bool) {
	if b[v0] != '"' || plainStringEnd(b, v0+1) != v1-1 {
		return "", false
	}
	return string(b[v0+1 : v1-1]), true
}

// plainUint reads a JSON number that is an unsigned integer fitting in
// 64 bits.
func plainUint(v []byte) (uint64, bool) {
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, len(v) > 0
}

// foldsTo reports whether key matches one of names in another case (ASCII
// only: keys with other bytes never reach it).
func foldsTo(key []byte, names []string) bool {
	for _, name := range names {
		if strings.EqualFold(string(key), name) {
			return true
		}
	}
	return false
}

// stringField returns the string field of f that key names exactly, or nil.
func stringField(f *ClientFrame, key []byte) *string {
	switch string(key) {
	case "op":
		return &f.Op
	case "id":
		return &f.ID
	case "channel":
		return &f.Channel
	case "epoch":
		return &f.Epoch
	case "route":
		return &f.Route
	case "token":
		return &f.Token
	case "since_time":
		return &f.SinceTime
	case "after":
		return &f.After
	}
	return nil
}

// uintField returns the *uint64 field of f that key names exactly, or nil.
func uintField(f *ClientFrame, key []byte) **uint64 {
	switch string(key) {
	case "from":
		return &f.From
	case "last":
		return &f.Last
	case "limit":
		return &f.Limit
	case "since":
		return &f.Since
	case "before":
		return &f.Before
	}
	return nil
}

var frameKeys = []string{"op", "id", "channel", "from", "epoch", "data", "route", "token",
	"last", "limit", "since", "before", "since_time", "reverse", "after", "info"}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainStringEnd returns the index of the quote that ends the string
// starting at i (after its opening quote), or -1 when the string has an
// escape or a byte outside printable ASCII (json.Unmarshal would change
// it: unescape, or replace invalid UTF-8).
func plainStringEnd(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i
		case c == '\\' || c < 0x20 || c >= 0x80:
			return -1
		}
	}
	return -1
}

// valueEnd returns the index just after the JSON value starting at i, in
// b known to be valid JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i+1) + 1
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i+1)
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // a number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}

// stringEnd returns the index of the quote ending the string whose
// contents start at i, escapes included.
func stringEnd(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return i
}

// AppendPublishRequests appends reqs, the batch form of POST /v1/publish,
// to b as a json.Encoder without HTML escaping writes it (less its
// newline), without reflection: the hub API client sends every batch so.
// ok is false, and b is returned as it was, when a request is not plain:
// a channel or id with a byte outside printable ASCII, '"' or '\\', or
// data that is not JSON (the caller then encodes with encoding/json, which
// also says what is wrong). FuzzAppendPublishRequests holds it to
// encoding/json.
func AppendPublishRequests(b []byte, reqs []PublishRequest) (out []byte, ok bool) {
	if reqs == nil {
		return append(b, "null"...), true
	}
	n := len(b)
	b = append(b, '[')
	for i, r := range reqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"channel":"`...)
		if b, ok = appendPlain(b, r.Channel); !ok {
			return b[:n], false
		}
		b = append(b, `","data":`...)
		switch {
		case r.Data == nil:
			b = append(b, "null"...)
		case Valid(r.Data):
			b = appendCompact(b, r.Data)
		default:
			return b[:n], false
		}
		if r.ID != "" {
			b = append(b, `,"id":"`...)
			if b, ok = appendPlain(b, r.ID); !ok {
				return b[:n], false
			}
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, ']'), true
}

// appendPlain appends s when JSON writes it as it is (printable ASCII but
// '"' and '\\'), and reports whether it did.
func appendPlain(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return b, false
		}
	}
	return append(b, s...), true
}

// appendCompact appends the JSON value v (valid) without the whitespace
// between its tokens, as json.Compact does.
func appendCompact(b, v []byte) []byte {
	start, inString := 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			b = append(b, v[start:i]...)
			start = i + 1
		}
	}
	return append(b, v[start:]...)
}

// resultKeys are PublishResult's JSON names, which json.Unmarshal also
// matches in another case.
var resultKeys = []string{"channel", "offset", "epoch", "duplicate", "code", "message"}

// DecodePublishResults decodes the answer of a batch publish, a JSON array
// of PublishResult, as json.Unmarshal would, without reflection when it is
// plain (string fields without escapes, an offset that is an integer, no
// null): ok is false otherwise, and the caller decodes it with
// encoding/json. FuzzDecodePublishResults holds it to encoding/json.
func DecodePublishResults(b []byte) (rs []PublishResult, ok bool) {
	return decodeArray(b, func(i int) (r PublishResult, end int) {
		end = scanObject(b, i, func(key []byte, v0, v1 int) bool {
			var ok bool
			switch string(key) {
			case "channel":
				r.Channel, ok = plainString(b, v0, v1)
			case "epoch":
				r.Epoch, ok = plainString(b, v0, v1)
			case "code":
				r.Code, ok = plainString(b, v0, v1)
			case "message":
				r.Message, ok = plainString(b, v0, v1)
			case "offset":
				r.Offset, ok = plainUint(b[v0:v1])
			case "duplicate":
				switch string(b[v0:v1]) {
				case "true":
					r.Duplicate, ok = true, true
				case "false":
					r.Duplicate, ok = false, true
				}
			default:
				ok = !foldsTo(key, resultKeys) // json matches keys in any case
			}
			return ok
		})
		return r, end
	})
}
