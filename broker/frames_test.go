package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// TestReadFrames: a range read with format=frames gives epoch, first, next
// and applied in headers and each message as a client's message frame, one
// per line, with the same content as the JSON answer.
func TestReadFrames(t *testing.T) {
	h, err := broker.OpenHub(t.TempDir(),
		raft.Config{ID: "h1", Single: true, HeartbeatTimeout: 50 * time.Millisecond,
			ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond},
		broker.Config{API: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); h.Close() }()
	go h.Service.Run(ctx)
	srv := httptest.NewServer(h.Service.Handler())
	defer srv.Close()

	const ch = "frames:c1"
	datas := []string{`{"n":1}`, `"two"`, `[3,"x\ny"]`}
	for i, d := range datas {
		var res wire.PublishResponse
		eventually(t, 10*time.Second, func() error {
			var err error
			res, err = h.Service.Publish(ctx, ch, json.RawMessage(d), "")
			return err
		})
		if res.Offset != uint64(i+1) {
			t.Fatalf("publish %d: offset %d", i, res.Offset)
		}
	}

	resp, err := http.Get(srv.URL + "/v1/channels/" + ch + "/messages?format=frames&from=2&limit=10")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != broker.FramesType {
		t.Fatalf("status %d, type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var js wire.MessagesResponse
	if err := json.Unmarshal(getBody(t, srv.URL+"/v1/channels/"+ch+"/messages?from=2&limit=10"), &js); err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get(broker.HeaderEpoch) != js.Epoch || resp.Header.Get(broker.HeaderFirst) != "1" || resp.Header.Get(broker.HeaderNext) != "4" {
		t.Errorf("headers epoch %q first %q next %q; JSON says epoch %q first 1 next 4", resp.Header.Get(broker.HeaderEpoch),
			resp.Header.Get(broker.HeaderFirst), resp.Header.Get(broker.HeaderNext), js.Epoch)
	}
	if a, err := strconv.ParseUint(resp.Header.Get(broker.HeaderApplied), 10, 64); err != nil || a == 0 {
		t.Errorf("applied header %q", resp.Header.Get(broker.HeaderApplied))
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %q", len(lines), body)
	}
	for i, line := range lines {
		want := wire.AppendMessage(nil, ch, uint64(i+2), js.Messages[i].Data)
		if !bytes.Equal(line, want) {
			t.Errorf("line %d = %s, want %s", i, line, want)
		}
		if off, ok := wire.MessageOffset(line, ch); !ok || off != uint64(i+2) {
			t.Errorf("MessageOffset(line %d) = %d, %v", i, off, ok)
		}
		if _, ok := wire.MessageOffset(line, "frames:c"); ok {
			t.Errorf("MessageOffset accepts line %d as a frame of another channel", i)
		}
	}
}

func getBody(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, b)
	}
	return b
}
