package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
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

// FuzzPeekStreamLine checks PeekStreamLine against encoding/json: on every
// line in the form hubs write (a StreamLine encoded by encoding/json) it
// answers, with the index and channel json reads; on any other input it
// never panics, and on a line that is its own canonical encoding it never
// answers something else than json reads.
func FuzzPeekStreamLine(f *testing.F) {
	f.Add([]byte(`{"index":7,"channel":"news","offset":3,"epoch":"E","time":"2026-12-07T12:00:00Z","data":{"a":1}}`), uint64(7), "news", []byte(`"x"`))
	f.Add([]byte(`{"applied":12}`), uint64(1), "user:a/b@c-d_e.f", []byte(`[1,2]`))
	f.Add([]byte(`{"reset":true,"floor":4,"applied":9}`), uint64(18446744073709551615), "c", []byte(`null`))
	f.Add([]byte(`{"index":01,"channel":"c"}`), uint64(10), "a", []byte(`{}`))
	f.Add([]byte(`{"index":5,"channel":"a\"b"}`), uint64(5), "é", []byte(`"\u003c"`))
	f.Fuzz(func(t *testing.T, line []byte, index uint64, channel string, data []byte) {
		// Any input: never a panic, and agreement with json on canonical lines.
		if idx, ch, ok := PeekStreamLine(line); ok {
			var l StreamLine
			if json.Unmarshal(line, &l) == nil {
				if again, err := json.Marshal(l); err == nil && bytes.Equal(again, line) {
					if l.Index != idx || l.Channel != string(ch) {
						t.Fatalf("%s: peek says %d %q, json %d %q", line, idx, ch, l.Index, l.Channel)
					}
				}
			}
		}
		// A message line as a hub writes it.
		if index == 0 || !ValidChannel(channel) || !json.Valid(data) {
			return
		}
		tm := time.Unix(int64(index%1e9), 0).UTC()
		var b bytes.Buffer
		if err := json.NewEncoder(&b).Encode(StreamLine{Index: index, Channel: channel, Offset: index, Epoch: "E", Time: &tm, Data: data}); err != nil {
			return
		}
		idx, ch, ok := PeekStreamLine(b.Bytes())
		if !ok || idx != index || string(ch) != channel {
			t.Fatalf("%s: peek says %d %q %v", b.Bytes(), idx, ch, ok)
		}
	})
}

// FuzzDecodeFrameFast holds decodeFrameFast to encoding/json: whenever it
// answers, json.Unmarshal into a ClientFrame succeeds with the same frame.
// Its seeds are DecodeClientFrame's and frames in the forms json leaves to
// it (escapes, keys in other case, nulls, duplicate keys).
func FuzzDecodeFrameFast(f *testing.F) {
	for _, s := range []string{
		`{"op":"publish","channel":"c","data":{"a":[1,"x\"}",null]},"id":"k1"}`,
		` { "op" : "publish" , "channel" : "c" , "data" : "te\u0022xt" , "from" : 0 } `,
		`{"op":"subscribe","channel":"c","from":18446744073709551615,"epoch":"E"}`,
		`{"op":"subscribe","channel":"c","from":18446744073709551616}`,
		`{"op":"subscribe","channel":"c","from":1e3}`,
		`{"op":"subscribe","channel":"c","from":-0}`,
		`{"op":"subscribe","channel":"c","from":null}`,
		`{"OP":"ping"}`,
		`{"Data":1,"op":"ping"}`,
		`{"o\u0070":"ping"}`,
		`{"op":"ping","op":"publish"}`,
		`{"op":null}`,
		`{"op":"p\u0069ng"}`,
		"{\"op\":\"ping\",\"id\":\"\xff\"}",
		`{"op":"ping","x":{"op":"nope"},"y":[{"z":"}"}],"w":true}`,
		`{"op":"publish","channel":"c","data":null}`,
		`{"op":"publish","channel":"c","data":[]}`,
		`{"op":"publish","channel":"c","data":-1.5e-3}`,
		`{}`,
		`[]`,
		`{"op":"ping"} x`,
		`{"op":"history","channel":"c","limit":50,"since":7,"before":90,"reverse":true,"since_time":"2026-12-07T10:00:00Z","id":"h"}`,
		`{"op":"history","channel":"c","reverse":false,"Reverse":true}`,
		`{"op":"history","channel":"c","reverse":null,"limit":null}`,
		`{"op":"subscribe","channel":"c","last":1}`,
		`{"op":"history","channel":"c","SINCE_TIME":"x","Last":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := decodeFrameFast(b)
		if !ok {
			return
		}
		var want ClientFrame
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: fast decode took it, json says %v", b, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q:\nfast %+v (from %v)\njson %+v (from %v)", b, fast, ptrVal(fast.From), want, ptrVal(want.From))
		}
	})
}

func ptrVal(p *uint64) any {
	if p == nil {
		return nil
	}
	return *p
}

// FuzzAppendAck: AppendAck writes what json.Marshal writes.
func FuzzAppendAck(f *testing.F) {
	f.Add("k1", "user:a/b", uint64(17), "E", true)
	f.Add("", "c", uint64(0), "", false)
	f.Add("a\"b\\c<d>&\u2028\x00\xff", "c", uint64(1<<64-1), "é", true)
	f.Fuzz(func(t *testing.T, id, ch string, off uint64, epoch string, dup bool) {
		a := Ack{Op: OpAck, ID: id, Channel: ch, Offset: off, Epoch: epoch, Duplicate: dup}
		want, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendAck(nil, a); !bytes.Equal(got, want) {
			t.Fatalf("AppendAck %s, json %s", got, want)
		}
	})
}

// FuzzDecodePublishBatch holds DecodePublishBatch to encoding/json as the
// hub API decodes a batch (unknown fields refused): whenever it answers,
// json gives the same requests.
func FuzzDecodePublishBatch(f *testing.F) {
	for _, s := range []string{
		`[{"channel":"a","data":{"x":[1,"}"]},"id":"k1"},{"channel":"b","data":"s"}]`,
		` [ ] `,
		`[{"channel":"a","data":1,"extra":2}]`,
		`[{"Channel":"a","data":1}]`,
		`[{"channel":"a\u0062","data":1}]`,
		`[{"channel":null,"data":1}]`,
		`[null]`,
		`[{"channel":"a","data":null,"id":7}]`,
		`[{},{"channel":"a","channel":"b"}]`,
		`{"channel":"a","data":1}`,
		`[{"channel":"a","data":1}] x`,
	} {
		f.Add([]byte(s))
	}
	if _, ok := DecodePublishBatch([]byte(`[{"channel":"a","data":{"x":[1,"}"]},"id":"k1"},{"channel":"b","data":"s"}]`)); !ok {
		f.Fatal("a plain batch is not taken")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := DecodePublishBatch(b)
		if !ok {
			return
		}
		var want []PublishRequest
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("%q: fast decode took it, json says %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nfast %+v\njson %+v", b, got, want)
		}
	})
}

// FuzzAppendPublishResults: AppendPublishResults writes what json.Marshal
// writes, for results made of the fuzzer's strings.
func FuzzAppendPublishResults(f *testing.F) {
	f.Add("c", uint64(3), "E", true, "", "", 2)
	f.Add("c", uint64(0), "", false, "bad_request", "channel \"x\" <bad> &\u2028\xff", 1)
	f.Add("", uint64(1<<64-1), "e", false, "", "", 0)
	f.Fuzz(func(t *testing.T, ch string, off uint64, epoch string, dup bool, code, msg string, n int) {
		var rs []PublishResult
		if n >= 0 {
			rs = []PublishResult{}
		}
		for i := range n % 4 {
			rs = append(rs, PublishResult{Channel: ch, Offset: off + uint64(i), Epoch: epoch, Duplicate: dup != (i%2 == 1), Code: code, Message: msg})
		}
		want, err := json.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendPublishResults(nil, rs); !bytes.Equal(got, want) {
			t.Fatalf("AppendPublishResults %s\njson %s", got, want)
		}
	})
}

// FuzzValid: Valid answers as json.Valid, on anything.
func FuzzValid(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,-0.5e+3,"x\"\u00e9\\/",true,false,null,{}],"b":{}}`, ` [ ] `, `"\u12"`, `01`, `-`, `1.`, `1e`,
		`.5`, `+1`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `"a` + "\x01" + `"`, "\"\xff\xfe\"", `nul`, `truex`,
		`[1 2]`, `"\x"`, `1 2`, ``, ` `, `{"a":"b"}}`, `-01`, `1E+9`, `[[[[]]]]`, "\t\r\n1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("%q: Valid %v, json.Valid %v", b, got, want)
		}
	})
}

// Valid takes encoding/json's limit on nesting: 10,000 levels, not one more.
func TestValidNesting(t *testing.T) {
	for _, n := range []int{9999, 10000, 10001, 20000} {
		for _, open := range []string{"[", `{"a":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			b := []byte(strings.Repeat(open, n) + "1" + strings.Repeat(close, n))
			if got, want := Valid(b), json.Valid(b); got != want {
				t.Fatalf("%d levels of %s: Valid %v, json.Valid %v", n, open, got, want)
			}
		}
	}
}

// decodeNumbers decodes JSON with its numbers kept as written.
func decodeNumbers(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// FuzzAppendStreamLine: a line AppendStreamLine writes reads back, with
// encoding/json, as what json.Marshal writes (data the same JSON value),
// and is one line.
func FuzzAppendStreamLine(f *testing.F) {
	f.Add(uint64(7), "news", uint64(3), "E", int64(1733572800123456789), []byte(`{"a":"<b>&"}`), uint64(0), false, uint64(0), true)
	f.Add(uint64(0), "", uint64(0), "", int64(0), []byte(nil), uint64(12), false, uint64(0), false)
	f.Add(uint64(0), "", uint64(0), "", int64(0), []byte(nil), uint64(9), true, uint64(4), false)
	f.Add(uint64(1), "c", uint64(1), "\"é\u2028", int64(-62135596800000000), []byte("[1,\n2]"), uint64(0), false, uint64(0), true)
	f.Fuzz(func(t *testing.T, index uint64, ch string, off uint64, epoch string, ns int64, data []byte, applied uint64, reset bool, floor uint64, withTime bool) {
		if len(data) > 0 && !json.Valid(data) {
			return // hubs store valid JSON only
		}
		l := StreamLine{Index: index, Channel: ch, Offset: off, Epoch: epoch, Data: data, Applied: applied, Reset: reset, Floor: floor}
		if withTime {
			tm := time.Unix(0, ns).UTC()
			l.Time = &tm
		}
		want, err := json.Marshal(l)
		if err != nil {
			return
		}
		got := AppendStreamLine(nil, l)
		if bytes.Count(got, []byte("\n")) != 1 || got[len(got)-1] != '\n' {
			t.Fatalf("not one line: %q", got)
		}
		var a, b StreamLine
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%q: %v", got, err)
		}
		if err := json.Unmarshal(want, &b); err != nil {
			t.Fatal(err)
		}
		if len(a.Data) > 0 || len(b.Data) > 0 {
			// Numbers as written: 1E1000 is valid JSON that no float64 holds.
			da, errA := decodeNumbers(a.Data)
			db, errB := decodeNumbers(b.Data)
			if errA != nil || errB != nil || !reflect.DeepEqual(da, db) {
				t.Fatalf("data %s, json %s", a.Data, b.Data)
			}
		}
		a.Data, b.Data = nil, nil
		if (a.Time == nil) != (b.Time == nil) || a.Time != nil && !a.Time.Equal(*b.Time) {
			t.Fatalf("time %v, json %v", a.Time, b.Time)
		}
		a.Time, b.Time = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%q\njson %q", got, want)
		}
		var compact bytes.Buffer
		if json.Compact(&compact, data) == nil && bytes.Equal(compact.Bytes(), data) && bytes.IndexAny(data, "<>&") < 0 &&
			!bytes.Equal(got, append(want, '\n')) {
			t.Fatalf("%q\njson %q", got, want)
		}
	})
}

// FuzzAppendPublishRequests: whenever AppendPublishRequests answers, it
// wrote what a json.Encoder without HTML escaping writes (as the hub API
// client sends a batch), for requests made of the fuzzer's strings.
func FuzzAppendPublishRequests(f *testing.F) {
	f.Add("a.b", []byte(`{"x": [1, "a b\" ]"] }`), "k1", 2)
	f.Add("c", []byte(" \"<&>\u2028\" "), "", 1)
	f.Add("c\u00e9", []byte(`1`), "i\"d", 1)
	f.Add("c", []byte(``), "", 0)
	f.Add("c", []byte(`{"a":1`), "", 3)
	f.Fuzz(func(t *testing.T, ch string, data []byte, id string, n int) {
		var reqs []PublishRequest
		if n > 0 {
			reqs = make([]PublishRequest, n%4)
		}
		for i := range reqs {
			reqs[i] = PublishRequest{Channel: ch, ID: id, Data: data}
			if i == 1 {
				reqs[i].Data = nil
			}
		}
		got, ok := AppendPublishRequests([]byte("x"), reqs)
		plain := func(s string) bool {
			return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '"' || r == '\\' })
		}
		wantOK := true // refused only as documented
		for _, r := range reqs {
			wantOK = wantOK && plain(r.Channel) && plain(r.ID) && (r.Data == nil || Valid(r.Data))
		}
		if ok != wantOK {
			t.Fatalf("%+v: ok %v, want %v", reqs, ok, wantOK)
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		err := enc.Encode(reqs)
		if !ok {
			if string(got) != "x" {
				t.Fatalf("%+v: refused, but b is now %q", reqs, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("%+v: fast encode took it, json says %v", reqs, err)
		}
		if w := "x" + strings.TrimSuffix(want.String(), "\n"); string(got) != w {
			t.Fatalf("%+v:\nfast %s\njson %s", reqs, got, w)
		}
	})
}

// FuzzDecodePublishResults holds DecodePublishResults to json.Unmarshal:
// whenever it answers, json gives the same results.
func FuzzDecodePublishResults(f *testing.F) {
	for _, s := range []string{
		`[{"channel":"a","offset":3,"epoch":"E","duplicate":true},{"channel":"b","code":"bad_request","message":"no"}]`,
		` [ ] `,
		`[{"channel":"a","offset":1,"extra":{"x":[2]}}]`,
		`[{"Channel":"a"}]`,
		`[{"channel":"a\u0062"}]`,
		`[{"channel":null}]`,
		`[null]`,
		`[{"offset":-1}]`,
		`[{"offset":1.5,"duplicate":1}]`,
		`[{},{"channel":"a","channel":"b"}]`,
		`{"channel":"a"}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	if _, ok := DecodePublishResults([]byte(`[{"channel":"a","offset":3,"epoch":"E","duplicate":true},{"channel":"b","code":"bad_request","message":"no"}]`)); !ok {
		f.Fatal("a plain answer is not taken")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := DecodePublishResults(b)
		if !ok {
			return
		}
		var want []PublishResult
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: fast decode took it, json says %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nfast %+v\njson %+v", b, got, want)
		}
	})
}
