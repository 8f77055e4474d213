package broker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/comethq/comet/wire"
)

// damage flips a byte of every copy of pattern in the file at path, under
// the process that has it open (bit rot under a running hub).
func damage(t *testing.T, path string, pattern []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for i := 0; ; {
		j := bytes.Index(raw[i:], pattern)
		if j < 0 {
			break
		}
		if _, err := f.WriteAt([]byte{raw[i+j] ^ 0x01}, int64(i+j)); err != nil {
			t.Fatal(err)
		}
		n++
		i += j + len(pattern)
	}
	if n == 0 {
		t.Fatalf("%q is not in %s", pattern, path)
	}
}

// TestCorruptChunkRefused: a chunk damaged under a running hub is never
// served: reads of it answer 500 naming the file, /readyz turns false, the
// metric says so; other channels still read, and publishes go on.
func TestCorruptChunkRefused(t *testing.T) {
	c, h := startOne(t)
	for i := range 5 {
		c.publish(h.api, "rot", fmt.Sprintf(`"rotting-payload-%d"`, i), "")
	}
	c.publish(h.api, "fine", `"fine"`, "")
	if m := c.metrics(h.api); m["comet_log_corrupt"] != 0 {
		t.Fatalf("comet_log_corrupt = %v before any damage", m["comet_log_corrupt"])
	}
	damage(t, h.log.Path(), []byte("rotting-payload-3"))

	status, raw := c.do(http.MethodGet, h.api, "/v1/channels/rot/messages?from=1", nil)
	var e wire.Error
	_ = json.Unmarshal(raw, &e)
	if status != http.StatusInternalServerError || e.Code != wire.CodeUnavailable ||
		!strings.Contains(e.Message, h.log.Path()) || !strings.Contains(e.Message, "checksum") {
		t.Fatalf("read of a damaged chunk: %d %s; want 500 unavailable naming %s and the checksum", status, raw, h.log.Path())
	}
	status, raw = c.do(http.MethodGet, h.api, "/readyz", nil)
	if status != http.StatusServiceUnavailable || !bytes.Contains(raw, []byte(h.log.Path())) {
		t.Errorf("/readyz after damage: %d %s; want 503 naming the file", status, raw)
	}
	if m := c.metrics(h.api); m["comet_log_corrupt"] != 1 {
		t.Errorf("comet_log_corrupt = %v, want 1", m["comet_log_corrupt"])
	}
	if res, status, raw := c.messages(h.api, "fine", 1, 10); status != http.StatusOK || len(res.Messages) != 1 {
		t.Errorf("read of an intact channel: %d %s", status, raw)
	}
	if _, ok := c.publish(h.api, "fine", `"more"`, ""); !ok {
		t.Error("publish after damage elsewhere failed")
	}
}
