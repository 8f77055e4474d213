package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/worker"
	"github.com/gorilla/websocket"
)

// benchRequest measures requests through the whole path: client WebSocket
// -> gateway -> router on the hub leader -> worker -> back. It runs the
// echo workers itself (in this process, each with its own session, as
// separate processes would have) unless --workers is 0.
type benchRequest struct {
	urls, hubs, secret, route, token string
	tlsCA                            string
	workers, clients, inflight, size int
	duration                         time.Duration
	jsonOut                          bool
}

// requestResult is what comet bench request reports.
type requestResult struct {
	Workers  int            `json:"workers"`
	Clients  int            `json:"clients"`
	InFlight int            `json:"in_flight"`
	Size     int            `json:"size"`
	Answered int64          `json:"answered"`
	Errors   map[string]int `json:"errors"`
	Seconds  float64        `json:"seconds"`
	Rate     float64        `json:"requests_per_sec"`
	latencies
}

func runBenchRequest(args []string, stdout, stderr io.Writer) error {
	var b benchRequest
	fs := newFlagSet("bench request", "comet bench request --url ws://HOST/ws --hubs API,... [--workers 1] [--clients 16] [--inflight 4] [--duration 10s]", stderr)
	fs.StringVar(&b.urls, "url", defaultGatewayURL, "gateway WebSocket URLs, comma-separated; clients are spread over them")
	fs.StringVar(&b.hubs, "hubs", defaultListen, "hub API addresses for the echo workers (comet standalone: its --listen)")
	fs.StringVar(&b.secret, "secret", "", "the cluster's secret, for the workers")
	fs.StringVar(&b.tlsCA, "tls-ca", "", "PEM file of the CA that signed the gateways' and hubs' certificates, for wss:// URLs and hubs with TLS (bare --hubs addresses then mean https; default: the system's roots)")
	fs.StringVar(&b.token, "token", "", "a client token, for gateways that require one")
	fs.IntVar(&b.workers, "workers", 1, "echo workers to run in this process (0: workers elsewhere serve --route)")
	fs.StringVar(&b.route, "route", "", "the route requested (default: a new one per run, served by the echo workers)")
	fs.IntVar(&b.clients, "clients", 16, "client connections")
	fs.IntVar(&b.inflight, "inflight", 4, "requests in flight per client")
	fs.IntVar(&b.size, "size", 128, "request data size in bytes (a JSON string of that length); the echo answers the same")
	fs.DurationVar(&b.duration, "duration", 10*time.Second, "how long to send requests")
	fs.BoolVar(&b.jsonOut, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if b.workers < 0 || b.clients < 1 || b.inflight < 1 || b.size < 2 || b.duration <= 0 || len(splitList(b.urls)) == 0 {
		return fmt.Errorf("%w: --clients, --inflight, --duration must be positive, --workers not negative, --size at least 2", errUsage)
	}
	if b.route == "" {
		if b.workers == 0 {
			return fmt.Errorf("%w: --route is required with --workers 0", errUsage)
		}
		b.route = "bench.echo." + randomHex(4)
	}
	return b.run(stdout, stderr)
}

func (b *benchRequest) run(stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tlsConfig, err := gatewayTLS(b.tlsCA)
	if err != nil {
		return err
	}
	var workerTLS *tls.Config
	if b.tlsCA != "" {
		workerTLS = tlsConfig
	}
	for i := range b.workers {
		w, err := worker.New(worker.Config{Hubs: splitList(b.hubs), Secret: b.secret, TLS: workerTLS, Name: fmt.Sprintf("bench-%d", i)})
		if err != nil {
			return fmt.Errorf("%w: worker: %v", errUsage, err)
		}
		w.Handle(b.route, func(_ context.Context, req worker.Request) (any, error) { return req.Data, nil })
		if err := w.Start(); err != nil {
			return err
		}
		defer w.Close()
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		err = w.WaitConnected(wctx)
		wcancel()
		if err != nil {
			return fmt.Errorf("worker %d did not attach to the router at %s: %w", i, b.hubs, err)
		}
	}
	urls := splitList(b.urls)
	clients := make([]*benchRequester, b.clients)
	for i := range clients {
		c, err := dialRequester(ctx, tlsConfig, urls[i%len(urls)], b.token)
		if err != nil {
			for _, d := range clients[:i] {
				d.c.Close()
			}
			return fmt.Errorf("client %d: %w", i, err)
		}
		clients[i] = c
	}
	data, _ := json.Marshal(string(bytes.Repeat([]byte("x"), b.size-2)))
	fmt.Fprintf(stderr, "requesting %s: %d clients x %d in flight, %d workers, %d-byte data, for %v\n",
		b.route, b.clients, b.inflight, b.workers, b.size, b.duration)
	var answered atomic.Int64
	stop := make(chan struct{})
	wait := progress(stderr, stop, func(el time.Duration) string {
		return fmt.Sprintf("%5.1fs  %d answered", el.Seconds(), answered.Load())
	})
	start := time.Now()
	deadline := start.Add(b.duration)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(b.route, data, b.inflight, deadline, &answered)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	wait()

	res := requestResult{Workers: b.workers, Clients: b.clients, InFlight: b.inflight, Size: b.size,
		Errors: map[string]int{}, Seconds: elapsed.Seconds()}
	var lat latHist
	var firstErr error
	for _, c := range clients {
		c.c.Close()
		lat.merge(&c.lat)
		res.Answered += c.ok
		for code, n := range c.errs {
			res.Errors[code] += n
		}
		if firstErr == nil {
			firstErr = c.err()
		}
	}
	res.Rate = float64(res.Answered) / elapsed.Seconds()
	res.latencies = lat.latencies()
	if b.jsonOut {
		if err := jsonEncode(stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%d answered in %.1fs: %.0f requests/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			res.Answered, res.Seconds, res.Rate, res.P50, res.P90, res.P99, res.Max)
		for code, n := range res.Errors {
			fmt.Fprintf(stdout, "errors %s: %d\n", code, n)
		}
	}
	for _, c := range clients {
		if c.sample != "" {
			fmt.Fprintf(stderr, "first error: %s\n", c.sample)
			break
		}
	}
	switch {
	case firstErr != nil:
		return firstErr
	case len(res.Errors) > 0:
		n := 0
		for _, v := range res.Errors {
			n += v
		}
		return fmt.Errorf("%d requests failed", n)
	}
	return nil
}

// benchRequester is one client connection sending requests.
type benchRequester struct {
	c    *websocket.Conn
	lat  latHist
	ok   int64
	errs map[string]int
	// sample is the first error frame.
	sample string
	// readErr is the reader's failure, writeErr the writer's.
	readErr, writeErr error
}

func (r *benchRequester) err() error {
	if r.writeErr != nil {
		return r.writeErr
	}
	return r.readErr
}

// dialRequester connects and waits for the connected frame.
func dialRequester(ctx context.Context, tlsConfig *tls.Config, u, token string) (*benchRequester, error) {
	if token != "" {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		q := pu.Query()
		q.Set("token", token)
		pu.RawQuery = q.Encode()
		u = pu.String()
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: tlsConfig}
	c, _, err := d.DialContext(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil || opOf(msg) != "connected" {
		c.Close()
		return nil, fmt.Errorf("waiting for connected: %q, %v", msg, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return &benchRequester{c: c, errs: map[string]int{}}, nil
}

// run keeps inflight requests outstanding until deadline, then waits for
// the last answers. A request's id is the time it was sent.
func (r *benchRequester) run(route string, data []byte, inflight int, deadline time.Time, answered *atomic.Int64) {
	slots := make(chan struct{}, inflight)
	readDone := make(chan struct{})
	var sent atomic.Int64
	go func() {
		defer close(readDone)
		var got int64
		// Answers still missing 10s after the end are counted as lost.
		_ = r.c.SetReadDeadline(deadline.Add(10 * time.Second))
		for {
			_, msg, err := r.c.ReadMessage()
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				r.errs["no_answer"] += int(sent.Load() - got)
				return
			case err != nil:
				if !errors.Is(err, websocket.ErrCloseSent) {
					r.readErr = fmt.Errorf("read: %w", err)
				}
				return
			}
			now := time.Now()
			for line := range bytes.SplitSeq(msg, []byte("\n")) {
				op := opOf(line)
				if op != "response" && op != "error" {
					continue
				}
				if sentAt, ok := field(line, []byte(`"id":"`)); ok {
					r.lat.add(now.Sub(time.Unix(0, int64(sentAt))))
				}
				if op == "response" {
					r.ok++
					answered.Add(1)
				} else {
					r.errs[errCode(line)]++
					if r.sample == "" {
						r.sample = string(line)
					}
				}
				got++
				<-slots
			}
			if time.Now().After(deadline) && got == sent.Load() {
				return
			}
		}
	}()
	buf := make([]byte, 0, len(data)+len(route)+96)
	for time.Now().Before(deadline) {
		select {
		case slots <- struct{}{}:
		case <-readDone:
			return
		}
		buf = append(buf[:0], `{"op":"request","route":"`...)
		buf = append(buf, route...)
		buf = append(buf, `","id":"`...)
		buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
		buf = append(buf, `","data":`...)
		buf = append(buf, data...)
		buf = append(buf, '}')
		sent.Add(1)
		if err := r.c.WriteMessage(websocket.TextMessage, buf); err != nil {
			r.writeErr = fmt.Errorf("write: %w", err)
			r.c.Close() // ends the reader
			<-readDone
			return
		}
	}
	<-readDone
}

// errCode is the code of an error frame.
func errCode(line []byte) string {
	var e struct{ Code string }
	_ = json.Unmarshal(line, &e)
	return e.Code
}
