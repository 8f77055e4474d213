package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// comet bench fanout and comet bench catchup: load through a gateway's
// client protocol, as clients see it. Subscribers are plain WebSocket
// connections (not the client package) so that the load generator stays
// cheap beside the server on the same cores.

// latHist is a latency histogram with buckets 4% wide from 10 µs to about
// 70 s: a quantile is within 2% of the true value. One per goroutine, merged
// at the end.
type latHist struct {
	counts [latBuckets]uint32
	n      uint64
	max    time.Duration
}

const (
	latMin     = 10 * time.Microsecond
	latRatio   = 1.04
	latBuckets = 400
)

var latLogRatio = math.Log(latRatio)

func (h *latHist) add(d time.Duration) {
	i := 0
	if d > latMin {
		i = min(latBuckets-1, 1+int(math.Log(float64(d)/float64(latMin))/latLogRatio))
	}
	h.counts[i]++
	h.n++
	h.max = max(h.max, d)
}

// latencies are the figures the benches report, in milliseconds.
type latencies struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func (h *latHist) latencies() latencies {
	return latencies{P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99), Max: h.quantile(1)}
}

func (h *latHist) merge(o *latHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in milliseconds: the middle of the
// bucket holding it.
func (h *latHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return float64(h.max.Microseconds()) / 1000
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= max(rank, 1) {
			if i == 0 {
				return float64(latMin.Microseconds()) / 1000 / 2
			}
			lo := float64(latMin) * math.Pow(latRatio, float64(i-1))
			return min(lo*(1+latRatio)/2, float64(h.max)) / 1e6
		}
	}
	return float64(h.max.Microseconds()) / 1000
}

// stampedData is a JSON string of size bytes (quotes included) that starts
// with the time it was made, in Unix nanoseconds, so that a subscriber can
// tell how long it took to arrive.
func stampedData(size int) []byte {
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	b := make([]byte, 0, max(size, len(ts)+2))
	b = append(b, '"')
	b = append(b, ts...)
	for len(b) < size-1 {
		b = append(b, 'x')
	}
	return append(b, '"')
}

var (
	keyData   = []byte(`"data":"`)
	keyOffset = []byte(`"offset":`)
	keyOp     = []byte(`"op":"`)
)

// field returns the digits following key in line.
func field(line, key []byte) (uint64, bool) {
	i := bytes.Index(line, key)
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	k := j
	for k < len(line) && line[k] >= '0' && line[k] <= '9' {
		k++
	}
	v, err := strconv.ParseUint(string(line[j:k]), 10, 64)
	return v, err == nil
}

// opOf returns the op of a server object ("message" for an object without
// one: the data of an /sse message event).
func opOf(line []byte) string {
	i := bytes.Index(line, keyOp)
	if i < 0 {
		if bytes.HasPrefix(line, []byte(`{"channel":`)) && bytes.Contains(line, keyOffset) {
			return "message"
		}
		return ""
	}
	rest := line[i+len(keyOp):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return string(rest[:j])
	}
	return ""
}

// benchSub is one subscriber's connection and what it saw.
type benchSub struct {
	c         *websocket.Conn
	sse       *sseConn // instead of c: a Durable Streams SSE reader (--sse)
	next      uint64   // the offset expected next (0: not known yet)
	got       int64
	gaps      int64
	dups      int64
	lat       latHist
	lastFrame time.Time
}

// dialSub connects to url and subscribes to channel (from 0: live only),
// waiting for the subscribed answer. It returns the answer's next offset.
func dialSub(ctx context.Context, tlsConfig *tls.Config, url, channel string, from uint64) (*benchSub, uint64, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 16 << 10, WriteBufferSize: 1024, TLSClientConfig: tlsConfig}
	c, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, 0, err
	}
	frame := fmt.Sprintf(`{"op":"subscribe","channel":%q}`, channel)
	if from > 0 {
		frame = fmt.Sprintf(`{"op":"subscribe","channel":%q,"from":%d}`, channel, from)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.Close()
		return nil, 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			c.Close()
			return nil, 0, fmt.Errorf("waiting for subscribed: %w", err)
		}
		for line := range bytes.SplitSeq(msg, []byte("\n")) {
			switch opOf(line) {
			case "subscribed":
				next, _ := field(line, []byte(`"next":`))
				s := &benchSub{c: c, next: from} // 0: live, the first offset is not known
				// The replay may follow in the same frame.
				s.got = s.count(msg[bytes.Index(msg, line)+len(line):], time.Now())
				return s, next, nil
			case "error":
				c.Close()
				return nil, 0, fmt.Errorf("subscribe refused: %s", line)
			}
		}
	}
}

// read counts messages until want of them arrived (want is read again
// after every frame: it is raised once publishing is over) or the
// connection fails. It checks that offsets follow each other.
func (s *benchSub) read(want *atomic.Int64, delivered *atomic.Int64) error {
	if s.sse != nil {
		return s.readSSE(want, delivered)
	}
	buf := make([]byte, 0, 64<<10)
	for s.got < want.Load() {
		_, r, err := s.c.NextReader()
		if err != nil {
			return err
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		now := time.Now()
		s.lastFrame = now
		n := s.count(buf, now)
		s.got += n
		delivered.Add(n)
	}
	return nil
}

// count takes the messages of a frame: it checks that their offsets follow
// each other, records their latencies, and returns how many there were.
func (s *benchSub) count(frame []byte, now time.Time) int64 {
	n := int64(0)
	for line := range bytes.SplitSeq(frame, []byte("\n")) {
		if opOf(line) != "message" {
			continue
		}
		n++
		if off, ok := field(line, keyOffset); ok {
			switch {
			case s.next == 0 || off == s.next:
			case off < s.next:
				s.dups++
			default:
				s.gaps++
			}
			s.next = off + 1
		}
		if ts, ok := field(line, keyData); ok {
			s.lat.add(now.Sub(time.Unix(0, int64(ts))))
		}
	}
	return n
}

func (s *benchSub) close() {
	if s.sse != nil {
		s.sse.close()
		return
	}
	s.c.Close()
}

// benchPublisher publishes over one gateway connection with at most window
// publishes waiting for their ack.
type benchPublisher struct {
	c      *websocket.Conn
	slots  chan struct{}
	acked  *atomic.Int64
	failed *atomic.Int64
	errMu  sync.Mutex
	err    error
	done   chan struct{}
}

func newBenchPublisher(ctx context.Context, tlsConfig *tls.Config, url string, window int, acked, failed *atomic.Int64) (*benchPublisher, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: tlsConfig}
	c, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	p := &benchPublisher{c: c, slots: make(chan struct{}, window), acked: acked, failed: failed, done: make(chan struct{})}
	go p.readAcks()
	return p, nil
}

func (p *benchPublisher) readAcks() {
	defer close(p.done)
	for {
		_, msg, err := p.c.ReadMessage()
		if err != nil {
			p.setErr(err)
			return
		}
		for line := range bytes.SplitSeq(msg, []byte("\n")) {
			switch opOf(line) {
			case "ack":
				p.acked.Add(1)
				<-p.slots
			case "error":
				p.failed.Add(1)
				p.setErr(fmt.Errorf("publish refused: %s", line))
				<-p.slots
			}
		}
	}
}

func (p *benchPublisher) setErr(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *benchPublisher) firstErr() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// publish sends one message once a window slot is free.
func (p *benchPublisher) publish(channel, id string, size int) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.done:
		return fmt.Errorf("publisher connection lost: %v", p.firstErr())
	}
	frame := fmt.Appendf(nil, `{"op":"publish","channel":%q,"id":%q,"data":%s}`, channel, id, stampedData(size))
	return p.c.WriteMessage(websocket.TextMessage, frame)
}

// drain waits until every publish sent is answered, for up to timeout.
func (p *benchPublisher) drain(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(p.slots) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d publishes unanswered after %s", len(p.slots), timeout)
		}
		select {
		case <-p.done:
			return fmt.Errorf("publisher connection lost: %v", p.firstErr())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func (p *benchPublisher) close() {
	_ = p.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	p.c.Close()
	<-p.done
}

// publishPaced publishes n messages to channel spread over pubs, at rate
// messages/s in all (0: as fast as the windows allow). It returns when all
// are sent (not acked).
func publishPaced(pubs []*benchPublisher, channel, run string, n, rate, size int, sent *atomic.Int64) error {
	errs := make(chan error, len(pubs))
	var wg sync.WaitGroup
	start := time.Now()
	for pi, p := range pubs {
		share := n / len(pubs)
		if pi < n%len(pubs) {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			if rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(len(pubs)) / float64(rate))
			}
			for i := range share {
				if interval > 0 {
					if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
						time.Sleep(wait)
					}
				}
				if err := p.publish(channel, fmt.Sprintf("%s-%d-%d", run, pi, i), size); err != nil {
					errs <- err
					return
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// progress prints a line a second until stop is closed.
func progress(stderr io.Writer, stop <-chan struct{}, line func(elapsed time.Duration) string) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintln(stderr, line(time.Since(start)))
			}
		}
	}()
	return func() { <-done }
}

// dialSubs connects n subscribers to channel, spread over urls, a few
// dials at a time.
func dialSubs(ctx context.Context, tlsConfig *tls.Config, urls []string, n int, channel, transport string, stderr io.Writer) ([]*benchSub, error) {
	hc := benchHTTPClient(tlsConfig)
	if transport == "stream" {
		u, err := streamURL(urls[0], channel)
		if err == nil {
			err = createJSONStream(ctx, hc, u)
		}
		if err != nil {
			return nil, err
		}
	}
	subs := make([]*benchSub, n)
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	var connected atomic.Int64
	stop := make(chan struct{})
	wait := progress(stderr, stop, func(el time.Duration) string {
		return fmt.Sprintf("  %6.1fs  %d/%d subscribers connected", el.Seconds(), connected.Load(), n)
	})
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var s *benchSub
			var err error
			switch transport {
			case "stream":
				var u string
				if u, err = streamURL(urls[i%len(urls)], channel); err == nil {
					var c *sseConn
					if c, err = dialSSE(ctx, hc, u, "now"); err == nil {
						s = &benchSub{sse: c}
					}
				}
			case "sse":
				var u string
				if u, err = sseURL(urls[i%len(urls)], channel); err == nil {
					c := &sseConn{plain: true, client: hc, url: u}
					if err = c.open(ctx); err == nil {
						s = &benchSub{sse: c}
					}
				}
			default:
				s, _, err = dialSub(ctx, tlsConfig, urls[i%len(urls)], channel, 0)
			}
			if err != nil {
				errs <- fmt.Errorf("subscriber %d: %w", i, err)
				return
			}
			subs[i] = s
			connected.Add(1)
		}()
	}
	wg.Wait()
	close(stop)
	wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, s := range subs {
			if s != nil {
				s.close()
			}
		}
		return nil, err
	}
	return subs, nil
}

type benchFanout struct {
	urls, channel, cpuProfile, tlsCA, churnCh     string
	subscribers, messages, rate, size, publishers int
	window, churn                                 int
	duration, timeout                             time.Duration
	jsonOut                                       bool
	transport                                     string
}

// fanoutResult is what comet bench fanout reports.
type fanoutResult struct {
	Subscribers int     `json:"subscribers"`
	Size        int     `json:"size"`
	Published   int64   `json:"published"`
	Delivered   int64   `json:"delivered"`
	Expected    int64   `json:"expected"`
	Gaps        int64   `json:"gaps"`
	Duplicates  int64   `json:"duplicates"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"deliveries_per_sec"`
	// Churn: connections that subscribed to the channel and closed while
	// it was published to (--churn), per second, and those that failed.
	Churned     int64   `json:"churned,omitempty"`
	ChurnRate   float64 `json:"churn_per_sec,omitempty"`
	ChurnFailed int64   `json:"churn_failed,omitempty"`
	latencies
}

func runBenchFanout(args []string, stdout, stderr io.Writer) error {
	var b benchFanout
	fs := newFlagSet("bench fanout", "comet bench fanout --url ws://HOST/ws[,...] [--subscribers 1000] [--rate 1000] [--messages 10000]", stderr)
	fs.StringVar(&b.urls, "url", defaultGatewayURL, "gateway WebSocket URLs, comma-separated; subscribers are spread over them, publishers use the first")
	fs.StringVar(&b.tlsCA, "tls-ca", "", tlsCAGatewayUsage)
	fs.StringVar(&b.channel, "channel", "", "the channel (default: a new one per run)")
	fs.IntVar(&b.subscribers, "subscribers", 1000, "WebSocket subscribers to the channel")
	fs.IntVar(&b.messages, "messages", 10000, "messages to publish")
	fs.DurationVar(&b.duration, "duration", 0, "publish for this long instead of --messages (with --rate)")
	fs.IntVar(&b.rate, "rate", 1000, "messages/s published in all (0: as fast as acks come back)")
	fs.IntVar(&b.size, "size", 128, "message size in bytes (a JSON string of that length)")
	fs.IntVar(&b.publishers, "publishers", 4, "publishing connections")
	fs.IntVar(&b.window, "window", 128, "publishes in flight per publishing connection (a gateway allows 256)")
	fs.DurationVar(&b.timeout, "timeout", 30*time.Second, "give up when no message arrives for this long")
	fs.BoolVar(&b.jsonOut, "json", false, "print the result as JSON")
	fs.StringVar(&b.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	fs.StringVar(&b.transport, "transport", "ws", "how subscribers follow the channel: ws (WebSocket /ws), sse (Server-Sent Events, GET /sse?channel=), or stream (a Durable Stream over SSE, GET /v1/stream/CHANNEL?live=sse)")
	fs.IntVar(&b.churn, "churn", 0, "while publishing, this many connections per second (over the URLs in turn) subscribe to --churn-channel and close: a join and a leave each, where its namespace has join_leave")
	fs.StringVar(&b.churnCh, "churn-channel", "", "the channel of --churn (default: the published channel, whose subscribers then get every join and leave)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if b.duration > 0 && b.rate > 0 {
		b.messages = int(b.duration.Seconds() * float64(b.rate))
	}
	if b.subscribers < 1 || b.messages < 1 || b.size < 24 || b.publishers < 1 || b.window < 1 || b.rate < 0 || len(splitList(b.urls)) == 0 {
		return fmt.Errorf("%w: --subscribers, --messages, --publishers, --window must be positive, --size at least 24, --url not empty", errUsage)
	}
	if b.transport != "ws" && b.transport != "sse" && b.transport != "stream" {
		return fmt.Errorf("%w: --transport must be ws, sse or stream", errUsage)
	}
	if b.channel == "" {
		b.channel = "bench.fan." + randomHex(4)
	}
	if b.cpuProfile != "" {
		f, err := os.Create(b.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return b.run(stdout, stderr)
}

func (b *benchFanout) run(stdout, stderr io.Writer) error {
	ctx := context.Background()
	urls := splitList(b.urls)
	fmt.Fprintf(stderr, "connecting %d subscribers to %s on %s\n", b.subscribers, b.channel, strings.Join(urls, ", "))
	tlsConfig, err := gatewayTLS(b.tlsCA)
	if err != nil {
		return err
	}
	subs, err := dialSubs(ctx, tlsConfig, urls, b.subscribers, b.channel, b.transport, stderr)
	if err != nil {
		return err
	}
	var acked, failed, sent, delivered atomic.Int64
	var want atomic.Int64
	want.Store(int64(b.messages))
	pubs := make([]*benchPublisher, b.publishers)
	for i := range pubs {
		if pubs[i], err = newBenchPublisher(ctx, tlsConfig, urls[0], b.window, &acked, &failed); err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
	}
	readErrs := make(chan error, len(subs))
	var readers sync.WaitGroup
	for i, s := range subs {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := s.read(&want, &delivered); err != nil {
				readErrs <- fmt.Errorf("subscriber %d after %d messages: %w", i, s.got, err)
			}
		}()
	}

	fmt.Fprintf(stderr, "publishing %d messages of %d bytes at %s over %d connections\n", b.messages, b.size, rateText(b.rate), b.publishers)
	stop := make(chan struct{})
	var last int64
	wait := progress(stderr, stop, func(el time.Duration) string {
		d := delivered.Load()
		line := fmt.Sprintf("  %6.1fs  published %d  acked %d  delivered %d (%d/s)", el.Seconds(), sent.Load(), acked.Load(), d, d-last)
		last = d
		return line
	})
	start := time.Now()
	stopChurn := b.startChurn(ctx, tlsConfig, urls)
	pubErr := publishPaced(pubs, b.channel, randomHex(4), b.messages, b.rate, b.size, &sent)
	churned, churnFailed, churnFor := stopChurn()
	for _, p := range pubs {
		if err := p.drain(b.timeout); err != nil && pubErr == nil {
			pubErr = err
		}
	}
	// Publishes refused are not delivered: expect what was acked.
	expected := acked.Load() * int64(len(subs))
	want.Store(acked.Load())
	// Wait for the deliveries, as long as they keep coming.
	lastCount, lastMove := delivered.Load(), time.Now()
	for delivered.Load() < expected && time.Since(lastMove) < b.timeout && len(readErrs) == 0 {
		time.Sleep(10 * time.Millisecond)
		if d := delivered.Load(); d != lastCount {
			lastCount, lastMove = d, time.Now()
		}
	}
	close(stop)
	wait()
	for _, p := range pubs {
		p.close()
	}
	end := start
	for _, s := range subs {
		if s.got > 0 && s.lastFrame.After(end) {
			end = s.lastFrame
		}
	}
	for _, s := range subs {
		s.close()
	}
	readers.Wait()
	close(readErrs)

	res := fanoutResult{Subscribers: len(subs), Size: b.size, Published: acked.Load(), Expected: expected}
	var h latHist
	for _, s := range subs {
		res.Delivered += s.got
		res.Gaps += s.gaps
		res.Duplicates += s.dups
		h.merge(&s.lat)
	}
	res.Seconds = end.Sub(start).Seconds()
	if res.Seconds > 0 {
		res.Rate = float64(res.Delivered) / res.Seconds
	}
	res.latencies = h.latencies()
	if churnFor > 0 {
		res.Churned, res.ChurnFailed = churned, churnFailed
		res.ChurnRate = float64(churned) / churnFor.Seconds()
	}
	if b.jsonOut {
		if err := jsonEncode(stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "subscribers %d  size %dB  published %d  delivered %d of %d  gaps %d  duplicates %d  in %.2fs\n",
			res.Subscribers, res.Size, res.Published, res.Delivered, res.Expected, res.Gaps, res.Duplicates, res.Seconds)
		fmt.Fprintf(stdout, "throughput %.0f deliveries/s  publish-to-receive latency p50 %.2fms  p90 %.2fms  p99 %.2fms  max %.2fms\n",
			res.Rate, res.P50, res.P90, res.P99, res.Max)
		if churnFor > 0 {
			fmt.Fprintf(stdout, "churn %d connections subscribed and closed (%.0f/s), %d failed\n", res.Churned, res.ChurnRate, res.ChurnFailed)
		}
	}
	var errs []error
	if pubErr != nil {
		errs = append(errs, pubErr)
	}
	if res.Delivered < res.Expected {
		for err := range readErrs {
			errs = append(errs, err)
			break
		}
		errs = append(errs, fmt.Errorf("%d of %d deliveries missing", res.Expected-res.Delivered, res.Expected))
	}
	if res.Gaps+res.Duplicates > 0 {
		errs = append(errs, fmt.Errorf("%d gaps and %d duplicates seen", res.Gaps, res.Duplicates))
	}
	return errors.Join(errs...)
}

// startChurn starts --churn: connections, b.churn a second over urls in
// turn, each subscribing to the channel and closing once subscribed (at
// most 64 at once). stop ends it and returns how many did so, how many
// failed, and for how long it ran.
func (b *benchFanout) startChurn(ctx context.Context, tlsConfig *tls.Config, urls []string) (stop func() (done, failed int64, ran time.Duration)) {
	if b.churn <= 0 {
		return func() (int64, int64, time.Duration) { return 0, 0, 0 }
	}
	var ok, bad atomic.Int64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sem := make(chan struct{}, 64)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			due := int(time.Since(start).Seconds() * float64(b.churn))
			for ; n < due; n++ {
				select {
				case sem <- struct{}{}:
				default:
					bad.Add(1) // 64 still dialing: the gateway is behind
					continue
				}
				wg.Add(1)
				go func(url string) {
					defer wg.Done()
					defer func() { <-sem }()
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					defer cancel()
					ch := b.churnCh
					if ch == "" {
						ch = b.channel
					}
					s, _, err := dialSub(cctx, tlsConfig, url, ch, 0)
					if err != nil {
						bad.Add(1)
						return
					}
					s.c.Close()
					ok.Add(1)
				}(urls[n%len(urls)])
			}
		}
	}()
	return func() (int64, int64, time.Duration) {
		close(quit)
		ran := time.Since(start)
		wg.Wait()
		return ok.Load(), bad.Load(), ran
	}
}

func rateText(rate int) string {
	if rate == 0 {
		return "full speed"
	}
	return fmt.Sprintf("%d msgs/s", rate)
}

type benchCatchup struct {
	url, channel, missed string
	tlsCA                string
	tlsConfig            *tls.Config
	httpClient           *http.Client
	messages, size, runs int
	jsonOut, http        bool
}

// catchupResult is one resume of comet bench catchup.
type catchupResult struct {
	Missed  int     `json:"missed"`
	Run     int     `json:"run"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"msgs_per_sec"`
}

func runBenchCatchup(args []string, stdout, stderr io.Writer) error {
	var b benchCatchup
	fs := newFlagSet("bench catchup", "comet bench catchup --url ws://HOST/ws [--messages 100000] [--missed 10000,100000] [--runs 3]", stderr)
	fs.StringVar(&b.url, "url", defaultGatewayURL, "gateway WebSocket URL")
	fs.StringVar(&b.tlsCA, "tls-ca", "", tlsCAGatewayUsage)
	fs.StringVar(&b.channel, "channel", "", "the channel (default: a new one per run)")
	fs.IntVar(&b.messages, "messages", 100000, "messages to publish first")
	fs.StringVar(&b.missed, "missed", "10000,100000", "how many messages a resuming client missed, comma-separated")
	fs.IntVar(&b.runs, "runs", 3, "resumes per --missed value")
	fs.IntVar(&b.size, "size", 128, "message size in bytes")
	fs.BoolVar(&b.jsonOut, "json", false, "print the results as JSON lines")
	fs.BoolVar(&b.http, "http", false, "resume with plain HTTP GETs of the channel as a Durable Stream (/v1/stream/CHANNEL) instead of a WebSocket subscription")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var missed []int
	for s := range strings.SplitSeq(b.missed, ",") {
		m, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || m < 1 || m > b.messages {
			return fmt.Errorf("%w: --missed %q: each must be between 1 and --messages", errUsage, s)
		}
		missed = append(missed, m)
	}
	if b.size < 24 || b.runs < 1 {
		return fmt.Errorf("%w: --size at least 24, --runs positive", errUsage)
	}
	if b.channel == "" {
		b.channel = "bench.catchup." + randomHex(4)
	}
	ctx := context.Background()
	tlsConfig, err := gatewayTLS(b.tlsCA)
	if err != nil {
		return err
	}
	b.tlsConfig = tlsConfig
	b.httpClient = benchHTTPClient(tlsConfig)

	var acked, failed, sent atomic.Int64
	pubs := make([]*benchPublisher, 4)
	for i := range pubs {
		p, err := newBenchPublisher(ctx, tlsConfig, b.url, 200, &acked, &failed)
		if err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
		pubs[i] = p
		defer p.close()
	}
	fmt.Fprintf(stderr, "publishing %d messages of %d bytes to %s\n", b.messages, b.size, b.channel)
	stop := make(chan struct{})
	wait := progress(stderr, stop, func(el time.Duration) string {
		return fmt.Sprintf("  %6.1fs  acked %d", el.Seconds(), acked.Load())
	})
	err = publishPaced(pubs, b.channel, randomHex(4), b.messages, 0, b.size, &sent)
	for _, p := range pubs {
		if err == nil {
			err = p.drain(time.Minute)
		}
	}
	close(stop)
	wait()
	if err != nil {
		return err
	}
	if failed.Load() > 0 {
		return fmt.Errorf("%d publishes refused", failed.Load())
	}

	// The hub the gateway reads from may not have applied the last
	// publishes yet (they were acknowledged by the leader): wait until a
	// subscription sees them all before timing resumes.
	for tries := 0; ; tries++ {
		s, next, err := dialSub(ctx, tlsConfig, b.url, b.channel, 0)
		if err != nil {
			return err
		}
		s.c.Close()
		if next == uint64(b.messages+1) {
			break
		}
		if tries == 250 {
			return fmt.Errorf("the channel's next offset is %d, not %d: was it published to by someone else?", next, b.messages+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, m := range missed {
		for run := 1; run <= b.runs; run++ {
			res, err := b.resume(ctx, m, run)
			if err != nil {
				return err
			}
			if b.jsonOut {
				if err := jsonEncode(stdout, res); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(stdout, "missed %d  run %d  caught up in %.1fms  (%.0f msgs/s)\n", res.Missed, res.Run, res.Seconds*1000, res.Rate)
		}
	}
	return nil
}

// resume subscribes as a client that missed the last m messages and times
// how long until it has them all, dial included.
func (b *benchCatchup) resume(ctx context.Context, m, run int) (catchupResult, error) {
	if b.http {
		return b.resumeHTTP(ctx, m, run)
	}
	res := catchupResult{Missed: m, Run: run}
	t0 := time.Now()
	s, next, err := dialSub(ctx, b.tlsConfig, b.url, b.channel, uint64(b.messages-m+1))
	if err != nil {
		return res, err
	}
	defer s.c.Close()
	if want := uint64(b.messages + 1); next != want {
		return res, fmt.Errorf("the channel's next offset is %d, not %d: was it published to by someone else?", next, want)
	}
	var want, delivered atomic.Int64
	want.Store(int64(m))
	_ = s.c.SetReadDeadline(time.Now().Add(time.Minute))
	if err := s.read(&want, &delivered); err != nil {
		return res, fmt.Errorf("resume after %d of %d messages: %w", s.got, m, err)
	}
	res.Seconds = time.Since(t0).Seconds()
	res.Rate = float64(m) / res.Seconds
	if s.gaps+s.dups > 0 || s.got != int64(m) {
		return res, fmt.Errorf("resume got %d messages of %d, %d gaps, %d duplicates", s.got, m, s.gaps, s.dups)
	}
	return res, nil
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
