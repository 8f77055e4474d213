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
	for _, b := range [][]byte{[]byte("text\r\n"), {0, 1, 0xff, 0xfe}, {}, []byte(`"quoted"`), []byte(`{"base64":"not really"}`)} {
		enc := EncodeStreamData(b)
		if !json.Valid(enc) || string(DecodeStreamData(enc)) != string(b) {
			t.Fatalf("%q comes back as %q (via %s)", b, DecodeStreamData(enc), enc)
		}
	}
}

func TestStreamToken(t *testing.T) {
	for _, tok := range []string{"0000000000000042_9f3c2e1a5b7d8c40", "0000000000000000_0000000000000000"} {
		epoch, next, ok := ParseStreamToken(tok)
		if !ok || StreamToken(epoch, next) != tok {
			t.Fatalf("token %s: %q %d %v", tok, epoch, next, ok)
		}
	}
	for _, bad := range []string{"", "-1", "now", "42_e", "000000000000004x_e", "0000000000000042_", "0000000000000042_a/b", "0000000000000042_a,b"} {
		if _, _, ok := ParseStreamToken(bad); ok {
			t.Fatalf("token %q accepted", bad)
		}
	}
}
