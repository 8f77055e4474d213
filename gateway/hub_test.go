package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/comethq/comet/broker"
)

// TestDecodeFrames: a range read in frames, and in JSON from a hub of an
// older version, give the same page; a bad answer is an error.
func TestDecodeFrames(t *testing.T) {
	answer := func(ct, body string, h map[string]string) *http.Response {
		r := &http.Response{Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
		r.Header.Set("Content-Type", ct)
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	frames := `{"op":"message","channel":"c","offset":4,"data":{"a":1}}` + "\n" + `{"op":"message","channel":"c","offset":5,"data":"x"}` + "\n"
	heads := map[string]string{broker.HeaderEpoch: "e1", broker.HeaderFirst: "2", broker.HeaderNext: "6"}
	js := `{"epoch":"e1","first":2,"next":6,"messages":[{"offset":4,"data":{"a":1},"time":"2026-11-25T00:00:00Z"},{"offset":5,"data":"x","time":"2026-11-25T00:00:00Z"}]}`
	for name, resp := range map[string]*http.Response{
		"frames": answer(broker.FramesType, frames, heads),
		"json":   answer("application/json", js, nil),
	} {
		var p Page
		if err := decodeFrames(resp, "c", &p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := p.frames(4, 6)
		if p.Epoch != "e1" || p.First != 2 || p.Next != 6 || len(got) != 2 ||
			string(got[0]) != `{"op":"message","channel":"c","offset":4,"data":{"a":1}}` ||
			string(got[1]) != `{"op":"message","channel":"c","offset":5,"data":"x"}` {
			t.Errorf("%s: page %+v, frames %q", name, p, got)
		}
		if f := p.frames(5, 6); len(f) != 1 || p.frames(3, 6) != nil || len(p.frames(4, 5)) != 1 {
			t.Errorf("%s: frames(5,6) = %q, frames(3,6) = %q", name, f, p.frames(3, 6))
		}
	}
	for name, resp := range map[string]*http.Response{
		"another channel's frame": answer(broker.FramesType, `{"op":"message","channel":"d","offset":4,"data":1}`+"\n", heads),
		"cut short":               answer(broker.FramesType, frames[:20], heads),
		"no epoch":                answer(broker.FramesType, frames, map[string]string{broker.HeaderFirst: "2", broker.HeaderNext: "6"}),
		"not JSON":                answer("text/plain", "oops", nil),
	} {
		var p Page
		if err := decodeFrames(resp, "c", &p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
