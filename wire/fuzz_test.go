package wire

import (
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeClientFrame checks that DecodeClientFrame never panics, that a
// refusal always wraps ErrFrame, and that a frame it accepts has a known op
// and everything that op needs.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		// Valid frames.
		`{"op":"subscribe","channel":"news"}`,
		`{"op":"subscribe","channel":"user:alice/inbox@x-1_2.3","from":17,"epoch":"E","id":"s1"}`,
		`{"op":"subscribe","channel":"c","from":0}`,
		`{"op":"unsubscribe","channel":"c"}`,
		`{"op":"publish","channel":"c","data":{"a":[1,"x",null]},"id":"k1"}`,
		`{"op":"publish","channel":"c","data":"text"}`,
		`{"op":"request","route":"sum","data":[1,2],"id":"r1"}`,
		`{"op":"connect","token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig"}`,
		`{"op":"ping"}`,
		` {"op":"ping","extra":true} `,
		// Invalid frames.
		``,
		`null`,
		`[]`,
		`"ping"`,
		`{}`,
		`{"op":""}`,
		`{"op":"nope"}`,
		`{"op":"Subscribe","channel":"c"}`,
		`{"op":"subscribe"}`,
		`{"op":"subscribe","channel":""}`,
		`{"op":"subscribe","channel":"bad channel"}`,
		`{"op":"subscribe","channel":"` + strings.Repeat("x", MaxChannelLen+1) + `"}`,
		`{"op":"subscribe","channel":"c","from":-1}`,
		`{"op":"subscribe","channel":"c","from":1.5}`,
		`{"op":"subscribe","channel":"c","from":"17"}`,
		`{"op":"subscribe","channel":"c","from":18446744073709551616}`,
		`{"op":"subscribe","channel":7}`,
		`{"op":"publish","channel":"c"}`,
		`{"op":"publish","channel":"c","data":null}`,
		`{"op":"request","data":1}`,
		`{"op":"connect"}`,
		`{"op":"connect","token":""}`,
		`{"op":"ping","id":5}`,
		`{"op":"ping"} {"op":"ping"}`,
		`{"op":"ping"`,
		`{"op":"ping","op":"nope"}`,
		`{"op":"subscribe","channel":"c\u0000"}`,
		"{\"op\":\"subscribe\",\"channel\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClientFrame(b)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error %q does not wrap ErrFrame", err)
			}
			return
		}
		switch fr.Op {
		case OpSubscribe, OpUnsubscribe:
			if err := CheckChannel(fr.Channel); err != nil {
				t.Fatalf("accepted %s with a bad channel: %v", fr.Op, err)
			}
		case OpPublish:
			if err := CheckChannel(fr.Channel); err != nil {
				t.Fatalf("accepted publish with a bad channel: %v", err)
			}
			if len(fr.Data) == 0 || string(fr.Data) == "null" {
				t.Fatalf("accepted publish without data: %q", b)
			}
		case OpRequest:
			if fr.Route == "" {
				t.Fatalf("accepted request without a route: %q", b)
			}
		case OpConnect:
			if fr.Token == "" {
				t.Fatalf("accepted connect without a token: %q", b)
			}
		case OpPing:
		default:
			t.Fatalf("accepted unknown op %q: %q", fr.Op, b)
		}
	})
}
