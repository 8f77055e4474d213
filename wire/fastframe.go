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
	if !json.Valid(b) {
		return ClientFrame{}, false
	}
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return ClientFrame{}, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return f, true
	}
	for i < len(b) {
		// A key: valid JSON, so a string.
		k0 := i + 1
		k1 := plainStringEnd(b, k0)
		if k1 < 0 {
			return ClientFrame{}, false
		}
		key := b[k0:k1]
		i = skipSpace(b, k1+1) // at ':'
		i = skipSpace(b, i+1)  // at the value
		switch string(key) {
		case "op", "id", "channel", "epoch", "route", "token":
			if b[i] != '"' {
				return ClientFrame{}, false // null, or a type error
			}
			e := plainStringEnd(b, i+1)
			if e < 0 {
				return ClientFrame{}, false
			}
			s := string(b[i+1 : e])
			switch string(key) {
			case "op":
				f.Op = s
			case "id":
				f.ID = s
			case "channel":
				f.Channel = s
			case "epoch":
				f.Epoch = s
			case "route":
				f.Route = s
			case "token":
				f.Token = s
			}
			i = e + 1
		case "from":
			var n uint64
			j := i
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				d := uint64(b[j] - '0')
				if n > (1<<64-1-d)/10 {
					return ClientFrame{}, false // out of range: json's error
				}
				n = n*10 + d
				j++
			}
			if j == i || j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
				return ClientFrame{}, false // null, a sign, a string, a fraction
			}
			f.From = &n
			i = j
		case "data":
			e := valueEnd(b, i)
			f.Data = slices.Clone(json.RawMessage(b[i:e]))
			i = e
		default:
			for _, name := range frameKeys {
				if strings.EqualFold(string(key), name) {
					return ClientFrame{}, false // json matches keys in any case
				}
			}
			i = valueEnd(b, i)
		}
		i = skipSpace(b, i)
		if b[i] == '}' {
			return f, true
		}
		i = skipSpace(b, i+1) // after ','
	}
	return ClientFrame{}, false
}

var frameKeys = []string{"op", "id", "channel", "from", "epoch", "data", "route", "token"}

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
