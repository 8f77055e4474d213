package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/wire"
)

// TestDurableStreamsClientResumes: the official TypeScript client
// (@durable-streams/client, e2e/dstream/follow.mjs) follows a JSON stream
// live from its start through gateway g1, in two processes at once, one in
// long-poll mode and one in SSE mode, while the test appends {"n":1}..{"n":N} with idempotent
// producer headers (through g1, or g2 when g1 fails), retrying each append
// with the same headers until it is answered. Mid-way g1 is killed with
// SIGKILL (appends go on through g2) and restarted on its address; later
// the hub leader is killed and restarted. The stream must hold 1..N once
// each in order, and each reader must have printed 1..N once each in order,
// each batch ending at the offset it was told.
func TestDurableStreamsClientResumes(t *testing.T) {
	dir := needDurableSuite(t)
	start := time.Now()
	c := startCluster(t, 3)
	g1 := c.startGateway("g1", "--stream-long-poll", "5s")
	g2 := c.startGateway("g2", "--stream-long-poll", "5s")
	const n = 600
	name := fmt.Sprintf("resume-%d", time.Now().UnixNano())
	path := "/v1/stream/" + name

	ds := newDSClient()
	code, _, body, err := ds.do(http.MethodPut, g1.api, path, nil, map[string]string{"Content-Type": "application/json"})
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create %s: %d %s %v", path, code, body, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	readers := map[string]*dsReader{}
	for _, live := range []string{"long-poll", "sse"} {
		readers[live] = startDSReader(t, ctx, dir, "http://"+g1.api+path, live, n)
	}

	w := &dsWriter{client: ds, gateways: []string{g1.api, g2.api}, path: path, producer: "e2e-writer",
		finished: make(chan struct{})}
	go w.run(ctx, n)
	t.Cleanup(func() { cancel(); <-w.finished })
	waitWritten := func(k int64, why string) {
		t.Helper()
		waitFor(t, 60*time.Second, fmt.Sprintf("%d appends (%s)", k, why), func() bool {
			return w.done.Load() >= k || w.isFinished()
		})
		if w.isFinished() && w.err != nil {
			t.Fatalf("appending: %v", w.err)
		}
	}

	// The readers follow live before g1 goes.
	waitWritten(n/3, "before killing g1")
	for live, r := range readers {
		waitFor(t, 60*time.Second, live+" reader to follow", func() bool { return r.count() >= n/4 || r.exited() })
	}
	t.Logf("killing gateway g1 after %d appends", w.done.Load())
	c.kill(g1)
	waitWritten(w.done.Load()+50, "through g2 while g1 is down")
	c.restart(g1)
	if !c.waitGatewayReady(g1, 30*time.Second) {
		t.Fatalf("g1 not ready after its restart:\n%s", g1.logTail(20))
	}
	t.Logf("g1 restarted on %s after %d appends", g1.api, w.done.Load())

	waitWritten(2*n/3, "before killing the leader")
	leader := c.waitLeader(nil, 30*time.Second)
	t.Logf("killing the hub leader %s after %d appends", leader.id, w.done.Load())
	c.kill(leader)
	waitWritten(w.done.Load()+50, "after killing the leader")
	c.restart(leader)
	t.Logf("%s restarted after %d appends", leader.id, w.done.Load())

	waitWritten(n, "all")
	t.Logf("appended %d messages in %d requests (%d answered 204: an earlier attempt had been stored)",
		n, w.attempts.Load(), w.dups.Load())

	// The stream as plain GET loops read it through each gateway. A
	// gateway reads from a hub that applied its own writes: through the
	// other, the last appends show once that hub has applied them.
	for _, g := range []*hub{g1, g2} {
		var got []int
		var err error
		poll(30*time.Second, func() bool {
			got, err = ds.readStream(g.api, path)
			return err != nil || len(got) >= n
		})
		if err != nil {
			t.Fatalf("reading %s through %s: %v", path, g.id, err)
		}
		checkSequence(t, "the stream through "+g.id, got, n)
	}

	for live, r := range readers {
		if err := r.wait(60 * time.Second); err != nil {
			t.Errorf("%s reader: %v\nstderr:\n%s", live, err, tail(r.stderr(), 30))
			continue
		}
		r.check(t, live, n)
	}
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// checkSequence checks that values are 1..n once each in order.
func checkSequence(t *testing.T, what string, values []int, n int) {
	t.Helper()
	for i, v := range values {
		if v != i+1 {
			t.Errorf("%s: message %d is n=%d, want %d (%d messages in all: %s)", what, i+1, v, i+1, len(values), brief(values, i))
			return
		}
	}
	if len(values) != n {
		t.Errorf("%s: %d messages, want %d", what, len(values), n)
	}
}

// brief shows values around index i.
func brief(values []int, i int) string {
	lo, hi := max(i-3, 0), min(i+4, len(values))
	return fmt.Sprintf("...%v...", values[lo:hi])
}

// ---------------------------------------------------------------------------
// Durable Streams over HTTP from Go

type dsClient struct{ http *http.Client }

func newDSClient() *dsClient {
	cl := newClient()
	cl.Timeout = 15 * time.Second // past a gateway's 10s wait for the hubs
	return &dsClient{http: cl}
}

func (d *dsClient) do(method, addr, path string, body []byte, hdr map[string]string) (int, http.Header, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, r)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, resp.Header, data, err
}

// readStream reads a JSON stream from its start to its tail with plain
// catch-up GETs, and returns the n of each message.
func (d *dsClient) readStream(addr, path string) ([]int, error) {
	var out []int
	offset := "-1"
	for range 1000 {
		code, hdr, body, err := d.do(http.MethodGet, addr, path+"?offset="+offset, nil, nil)
		if err != nil {
			return out, err
		}
		if code != http.StatusOK {
			return out, fmt.Errorf("GET at offset %s: %d %s", offset, code, body)
		}
		var msgs []struct{ N int }
		if err := json.Unmarshal(body, &msgs); err != nil {
			return out, fmt.Errorf("GET at offset %s: %v: %.200s", offset, err, body)
		}
		for _, m := range msgs {
			out = append(out, m.N)
		}
		next := hdr.Get("Stream-Next-Offset")
		if next == "" {
			return out, fmt.Errorf("GET at offset %s: no Stream-Next-Offset", offset)
		}
		if hdr.Get("Stream-Up-To-Date") == "true" {
			return out, nil
		}
		if next == offset {
			return out, fmt.Errorf("GET at offset %s: not up to date, yet the next offset is the same", offset)
		}
		offset = next
	}
	return out, errors.New("not up to date after 1000 reads")
}

// dsWriter appends {"n":1}..{"n":N} to a JSON stream in order, one request
// each with Producer-Id/Epoch/Seq (seq n-1), retrying a request that
// fails or answers 5xx or 429 with the same headers on the next gateway,
// so that the hubs store each message once.
type dsWriter struct {
	client   *dsClient
	gateways []string
	path     string
	producer string

	done     atomic.Int64 // messages acknowledged
	attempts atomic.Int64
	dups     atomic.Int64  // 204 answers
	finished chan struct{} // closed when run returns
	err      error         // why run stopped early, once finished
}

func (w *dsWriter) run(ctx context.Context, n int) {
	defer close(w.finished)
	for i := 1; i <= n; i++ {
		if w.err = w.append(ctx, i); w.err != nil {
			return
		}
		w.done.Store(int64(i))
	}
}

func (w *dsWriter) isFinished() bool {
	select {
	case <-w.finished:
		return true
	default:
		return false
	}
}

func (w *dsWriter) append(ctx context.Context, i int) error {
	hdr := map[string]string{"Content-Type": "application/json", "Producer-Id": w.producer,
		"Producer-Epoch": "0", "Producer-Seq": strconv.Itoa(i - 1)}
	body := []byte(fmt.Sprintf(`{"n":%d}`, i))
	var last string
	for attempt := 0; attempt < 1000; attempt++ {
		w.attempts.Add(1)
		gw := w.gateways[attempt%len(w.gateways)]
		code, _, resp, err := w.client.do(http.MethodPost, gw, w.path, body, hdr)
		switch {
		case err != nil:
			last = err.Error()
		case code == http.StatusOK:
			return nil
		case code == http.StatusNoContent:
			w.dups.Add(1)
			return nil
		case code == http.StatusTooManyRequests || code >= 500:
			last = fmt.Sprintf("%d %s", code, bytes.TrimSpace(resp))
		default:
			return fmt.Errorf("append %d via %s: %d %s", i, gw, code, bytes.TrimSpace(resp))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("append %d: %w; last answer: %s", i, ctx.Err(), last)
		case <-time.After(20*time.Millisecond + rand.N(80*time.Millisecond)):
		}
	}
	return fmt.Errorf("append %d: no answer in 1000 attempts; last: %s", i, last)
}

// ---------------------------------------------------------------------------
// The TypeScript reader

// dsReader is one e2e/dstream/follow.mjs process.
type dsReader struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of cmd.Wait, once done is closed

	mu      sync.Mutex
	partial []byte
	lines   []string
	errBuf  bytes.Buffer
}

func startDSReader(t *testing.T, ctx context.Context, dir, url, live string, n int) *dsReader {
	t.Helper()
	r := &dsReader{done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, "node", "follow.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "STREAM_URL="+url, "COUNT="+strconv.Itoa(n), "LIVE="+live, "DEADLINE_MS=150000")
	cmd.Stdout = writerFunc(r.addOut)
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.errBuf.Write(p)
	})
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("node %s: %v", filepath.Join(dir, "follow.mjs"), err)
	}
	r.cmd = cmd
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		if !r.exited() {
			_ = cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (r *dsReader) addOut(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		r.lines = append(r.lines, string(r.partial[:i]))
		r.partial = r.partial[i+1:]
	}
	return len(p), nil
}

func (r *dsReader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines)
}

func (r *dsReader) stderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errBuf.String()
}

func (r *dsReader) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the reader to exit, and returns why it failed.
func (r *dsReader) wait(d time.Duration) error {
	select {
	case <-r.done:
	case <-time.After(d):
		return fmt.Errorf("still running after %v, with %d messages", d, r.count())
	}
	if r.err != nil {
		return fmt.Errorf("exited: %v", r.err)
	}
	return nil
}

// check checks what a reader that exited printed: n messages 1..n, each
// batch's offset token exactly past its last message, and that it had to
// retry or resume at least once (else the faults missed it).
func (r *dsReader) check(t *testing.T, live string, n int) {
	t.Helper()
	r.mu.Lock()
	lines := append([]string(nil), r.lines...)
	r.mu.Unlock()
	var values []int
	var offsets []uint64
	epoch := ""
	for i, l := range lines {
		var line struct {
			Msg    struct{ N int }
			Offset string
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("%s reader: line %d: %v: %q", live, i+1, err, l)
		}
		e, next, ok := wire.ParseStreamToken(line.Offset)
		if !ok || epoch != "" && e != epoch {
			t.Fatalf("%s reader: line %d: offset %q is not a token of the stream (epoch %s)", live, i+1, line.Offset, epoch)
		}
		epoch = e
		values = append(values, line.Msg.N)
		offsets = append(offsets, next)
	}
	checkSequence(t, live+" reader", values, n)
	// Message k is at offset k (the stream's first offset is 1): a batch
	// ending with message k says the next offset is k+1.
	for i, next := range offsets {
		last := i == len(offsets)-1 || offsets[i+1] != next
		if last && next != uint64(i)+2 || next < uint64(i)+2 || i > 0 && next < offsets[i-1] {
			t.Errorf("%s reader: message %d came with offset %d, want %d at the end of a batch, more within one",
				live, i+1, next, i+2)
			break
		}
	}
	stderr := r.stderr()
	var summary struct {
		Summary struct{ Messages, Resumes, FailedAttempts int }
	}
	var resumes []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, `{"summary"`) {
			_ = json.Unmarshal([]byte(l), &summary)
		}
		if strings.HasPrefix(l, `{"resume"`) {
			resumes = append(resumes, l)
		}
	}
	s := summary.Summary
	t.Logf("%s reader: %d messages; the client retried %d failed requests itself; resumed %d times from its last offset",
		live, s.Messages, s.FailedAttempts, s.Resumes)
	for _, l := range resumes {
		t.Logf("  %s", l)
	}
	if s.FailedAttempts+s.Resumes == 0 {
		t.Errorf("%s reader: neither retried nor resumed: the gateway's death passed it by", live)
	}
	if t.Failed() {
		t.Logf("%s reader's stderr:\n%s", live, tail(stderr, 40))
	}
}
