package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

// A publish frame as clients send it (cometload's shape: a 128-byte
// string, an id): decoded by the fast path and by encoding/json alone.
func BenchmarkDecodeClientFrame(b *testing.B) {
	data := `"1733572800000000000 ` + string(make128x()) + `"`
	frame := []byte(`{"op":"publish","channel":"bench-17","data":` + data + `,"id":"c17-` + strconv.Itoa(123456) + `"}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if _, err := DecodeClientFrame(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			f, err := decodeFrameJSON(frame)
			if err == nil {
				err = checkFrame(f)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

func make128x() []byte {
	b := make([]byte, 106)
	for i := range b {
		b[i] = 'x'
	}
	return b
}

// The fast path takes the frames clients send, and leaves the others to
// encoding/json with the same outcome.
func TestDecodeFrameFastTakesCommonFrames(t *testing.T) {
	for _, s := range []string{
		`{"op":"publish","channel":"c","data":{"a":1},"id":"k1"}`,
		`{"op":"subscribe","channel":"c","from":17,"epoch":"E","id":"s1"}`,
		`{"op":"request","route":"sum","data":[1,2],"id":"r1"}`,
		`{"op":"ping"}`,
	} {
		f, ok := decodeFrameFast([]byte(s))
		if !ok {
			t.Fatalf("%s: not taken by the fast path", s)
		}
		var want ClientFrame
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatal(err)
		}
		if f.Op != want.Op || f.Channel != want.Channel || string(f.Data) != string(want.Data) || f.ID != want.ID {
			t.Fatalf("%s: %+v, want %+v", s, f, want)
		}
	}
	for _, s := range []string{`{"op":"p\u0069ng"}`, `{"OP":"ping"}`, `{"op":null}`, `{"op":"ping"`} {
		if _, ok := decodeFrameFast([]byte(s)); ok {
			t.Fatalf("%s: taken by the fast path", s)
		}
	}
}

// A batch of 100 publishes as `comet bench publish --batch 100` sends it:
// decoded by the fast path and by encoding/json as the hub API would.
func BenchmarkDecodePublishBatch(b *testing.B) {
	var body []byte
	body = append(body, '[')
	for i := range 100 {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"channel":"bench-`+strconv.Itoa(i%16)+`","data":"1733572800000000000 `+string(make128x())+`","id":"p3-`+strconv.Itoa(i)+`"}`...)
	}
	body = append(body, ']')
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, ok := DecodePublishBatch(body); !ok {
				b.Fatal("not taken")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var reqs []PublishRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&reqs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Valid against json.Valid on a publish frame.
func BenchmarkValid(b *testing.B) {
	frame := []byte(`{"op":"publish","channel":"bench-17","data":{"text":"1733572800000000000 ` + string(make128x()) + `","n":[1,2.5e3,true,null]},"id":"c17-123456"}`)
	b.Run("wire", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if !Valid(frame) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if !json.Valid(frame) {
				b.Fatal("invalid")
			}
		}
	})
}
