package wire

import (
	"encoding/json"
	"testing"
)

func TestMessageData(t *testing.T) {
	for _, data := range []string{`1`, `"a,\"data\":x"`, `{"data":{"data":2}}`, `[]`} {
		frame := AppendMessage(nil, "a:b/c", 42, []byte(data))
		got, ok := MessageData(frame)
		if !ok || string(got) != data {
			t.Fatalf("data of %s: %q %v", frame, got, ok)
		}
	}
	for _, bad := range []string{``, `{"op":"message"}`, `{"op":"message","data":`} {
		if _, ok := MessageData([]byte(bad)); ok {
			t.Fatalf("%q has data", bad)
		}
	}
}

func TestStreamDataRoundTrip(t *testing.T) {
	for _, b := range [][]byte{[]byte("text\r\n"), {0xff, 0}, {}} {
		enc := EncodeStreamData(b)
		if !json.Valid(enc) || string(DecodeStreamData(enc)) != string(b) {
			t.Fatalf("%q: %s", b, enc)
		}
	}
}
