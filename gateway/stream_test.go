package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/comethq/comet/wire"
)

// NextRaw hands out memStream's lines as hubs write them (encoding/json),
// so that the gateway's tests read the commit stream as it is read from
// real hubs: the lines of channels not followed are skipped undecoded
// (Server.nextLine). The line of a message of a channel named
// "garbage:..." is cut after its channel: a gateway that decoded it would
// fail the stream.
func (s *memStream) NextRaw() ([]byte, error) {
	l, err := s.Next()
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(l.Channel, "garbage:") {
		return fmt.Appendf(nil, `{"index":%d,"channel":%q,"offset":`+"\n", l.Index, l.Channel), nil
	}
	b, err := json.Marshal(l)
	return append(b, '\n'), err
}

// Every gateway gets every channel's messages on its commit stream; the
// lines of channels no client of this gateway follows are not decoded, and
// still move its position.
func TestStreamSkipsChannelsNotFollowed(t *testing.T) {
	hub := newMemHub()
	g := startGateway(t, hub, Config{})
	c := dial(t, g.url)
	c.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "q", From: u64p(1)})
	c.expect(wire.OpSubscribed)
	hub.append("q", []byte(`"one"`))
	hub.append("garbage:x", []byte(`1`)) // followed by nobody: never decoded
	hub.append("q", []byte(`"two"`))
	if m := c.messages("q", 1, 2); string(m[1].Data) != `"two"` {
		t.Fatalf("got %+v", m)
	}
	hub.fail <- fmt.Errorf("cut")
	waitFor(t, "a second stream", func() bool { return len(hub.streamFroms()) == 2 })
	// The first stream ended only when cut, and had taken the line of q's
	// second message (index 3) whole: the skipped line counted.
	if froms := hub.streamFroms(); froms[0] != 0 || froms[1] != 3 {
		t.Fatalf("streams opened from %v, want [0 3]", froms)
	}
}
