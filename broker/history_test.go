package broker_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// TestHistory pages a channel both ways over GET
// /v1/channels/{channel}/messages with before, reverse and since_time,
// and checks the window each answer covers and its order.
func TestHistory(t *testing.T) {
	c, h := startOne(t)
	const n = 250
	var mid time.Time // the time after message 150 was published
	for i := 1; i <= n; i++ {
		if _, ok := c.publish(h.api, "hist", fmt.Sprintf(`{"n":%d}`, i), ""); !ok {
			t.FailNow()
		}
		if i == 150 {
			// Message times are taken by the hub when it stores them: 150
			// was stored before its ack, 151 after its publish started.
			mid = time.Now()
		}
	}
	get := func(q string) wire.MessagesResponse {
		t.Helper()
		status, body := c.do(http.MethodGet, h.api, "/v1/channels/hist/messages?"+q, nil)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", q, status, body)
		}
		var res wire.MessagesResponse
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		if res.First != 1 || res.Next != n+1 {
			t.Fatalf("%s: first %d next %d", q, res.First, res.Next)
		}
		return res
	}
	offsets := func(res wire.MessagesResponse) []uint64 {
		out := make([]uint64, len(res.Messages))
		for i, m := range res.Messages {
			out[i] = m.Offset
			var v struct{ N uint64 }
			if err := json.Unmarshal(m.Data, &v); err != nil || v.N != m.Offset {
				t.Fatalf("offset %d holds %s", m.Offset, m.Data)
			}
		}
		return out
	}
	span := func(a, b uint64) []uint64 { // a, a±1, ..., b
		var out []uint64
		for i := a; ; {
			out = append(out, i)
			if i == b {
				return out
			}
			if a < b {
				i++
			} else {
				i--
			}
		}
	}
	same := func(q string, got, want []uint64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: offsets %v, want %v", q, got, want)
		}
	}
	// Newest first, paged backwards with before = the oldest seen.
	var back []uint64
	before := uint64(0)
	for page := 0; page < 10; page++ {
		q := "reverse=true&limit=100"
		if before != 0 {
			q += fmt.Sprintf("&before=%d", before)
		}
		got := offsets(get(q))
		if len(got) == 0 {
			break
		}
		back = append(back, got...)
		before = got[len(got)-1]
	}
	same("backwards", back, span(n, 1))
	// A window: from 100 (inclusive) to before 120, both ways.
	same("from=100&before=120", offsets(get("from=100&before=120&limit=50")), span(100, 119))
	same("reverse from=100&before=120", offsets(get("from=100&before=120&limit=5&reverse=1")), span(119, 115))
	// By time: everything published after mid.
	since := url.QueryEscape(mid.UTC().Format(time.RFC3339Nano))
	same("since_time", offsets(get("since_time="+since+"&limit=1000")), span(151, n))
	same("since_time reverse", offsets(get("since_time="+since+"&limit=3&reverse=true")), span(n, n-2))
	// A limit of 0 returns no messages but the channel's offsets.
	if res := get("reverse=true&limit=0"); len(res.Messages) != 0 {
		t.Fatalf("limit 0: %d messages", len(res.Messages))
	}
	for _, bad := range []string{"before=0", "before=x", "reverse=maybe", "since_time=yesterday"} {
		if status, body := c.do(http.MethodGet, h.api, "/v1/channels/hist/messages?"+bad, nil); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", bad, status, body)
		}
	}
}
