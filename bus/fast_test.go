package bus

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/comethq/comet/wire"
)

func fastCases() []Msg {
	keys := []string{"k1", "", "with \"quotes\" and \\", "<html>&", "naïve ✓", "tab\there", strings.Repeat("x", 255), "~0123abcd.1z"}
	datas := []string{`1`, `{"a":[1,2,{"b":"}"}]}`, `"str"`, `null`, `{"x":"<&>"}`, `{"u":"\u00e9"}`}
	var out []Msg
	for i, k := range keys {
		for j, d := range datas {
			out = append(out, Msg{Type: TypePublish, ID: uint64(i*10 + j), Channel: "room/a:b@c", Key: k, Data: json.RawMessage(d)})
		}
		out = append(out, Msg{Type: TypeAck, ID: uint64(1 << 40), Channel: "c", Offset: uint64(i), Epoch: k, Duplicate: i%2 == 0})
	}
	out = append(out,
		Msg{Type: TypeAck, ID: 7, Error: &wire.Error{Code: wire.CodeUnavailable, Message: "no"}, Final: true},
		Msg{Type: TypeAck, ID: 0, Channel: "", Offset: 0, Epoch: ""},
		Msg{Type: TypePublish, ID: 3, Channel: "c", Key: "k", Data: json.RawMessage("{\n\"a\": 1}")},
		Msg{Type: TypePublish, ID: 3, Channel: "c", Key: "k", Data: json.RawMessage(`1`), Conn: "g-1"},
	)
	return out
}

// TestFastEncodeDecode: publishes and acks written by hand read back, by
// encoding/json and by Decode, as the message that was encoded, whatever
// their strings hold.
func TestFastEncodeDecode(t *testing.T) {
	for _, m := range fastCases() {
		b := m.Encode()
		var viaJSON Msg
		if err := json.Unmarshal(b, &viaJSON); err != nil {
			t.Fatalf("%+v encoded as %s: not JSON: %v", m, b, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		want := m
		if want.Data != nil {
			// encoding/json compacts data it writes; the hand-written form
			// is only taken for data on one line.
			var c bytes.Buffer
			_ = json.Compact(&c, want.Data)
			want.Data = json.RawMessage(c.Bytes())
		}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(viaJSON, want) {
			t.Fatalf("%s:\n Decode     %+v\n json       %+v\n want       %+v", b, got, viaJSON, want)
		}
	}
}

// TestMsgZeroCoversEveryField: Encode takes the hand-written form only when
// no other field is set; zero must know every field of Msg.
func TestMsgZeroCoversEveryField(t *testing.T) {
	typ := reflect.TypeOf(Msg{})
	for i := range typ.NumField() {
		var m Msg
		f := reflect.ValueOf(&m).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Uint64, reflect.Uint:
			f.SetUint(1)
		case reflect.Int, reflect.Int64:
			f.SetInt(1)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		default:
			t.Fatalf("field %s of kind %s: teach this test", typ.Field(i).Name, f.Kind())
		}
		if m.zero() {
			t.Errorf("zero() misses field %s", typ.Field(i).Name)
		}
	}
}

// FuzzDecodeFast: whatever the bytes, a message the hand-written reader
// takes is the one encoding/json reads from them, but for a publish whose
// data, as the reader takes it, is not JSON: the hub refuses that publish
// (bad_request), so nothing is stored either way, where encoding/json
// might refuse the message or read other data from it (members after
// "data", which the gateways' AppendPublish never writes).
func FuzzDecodeFast(f *testing.F) {
	for _, m := range fastCases() {
		f.Add(m.Encode())
	}
	f.Add([]byte(`{"type":"publish","id":1,"channel":"c","key":"k","data":1}{}`))
	f.Add([]byte(`{"type":"ack","id":01,"channel":"c","offset":2,"epoch":"e"}`))
	f.Add([]byte(`{"type":"publish","id":0,"channel":"","key":"","data":"","":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := decodeFast(b)
		if !ok {
			return
		}
		if m.Type == TypePublish && !json.Valid(m.Data) {
			return // refused by the hub
		}
		var want Msg
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("decodeFast took %q as %+v; encoding/json: %v", b, m, err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("%q:\n fast %+v\n json %+v", b, m, want)
		}
	})
}
