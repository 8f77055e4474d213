package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/wire"
)

func runBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: comet bench publish|fanout|catchup|request [flags]", errUsage)
	}
	switch args[0] {
	case "publish":
	case "fanout":
		return runBenchFanout(args[1:], stdout, stderr)
	case "catchup":
		return runBenchCatchup(args[1:], stdout, stderr)
	case "request":
		return runBenchRequest(args[1:], stdout, stderr)
	default:
		return fmt.Errorf("%w: unknown bench %q: comet bench publish|fanout|catchup|request [flags]", errUsage, args[0])
	}
	var b benchPublish
	fs := newFlagSet("bench publish", "comet bench publish --api ADDR,... [--publishers 16] [--messages 100000] [--size 128] [--batch 1]\n"+
		"       comet bench publish --url ws://GATEWAY/ws [--publishers 16] [--window 8] [--messages 100000]", stderr)
	fs.StringVar(&b.apis, "api", defaultListen, "hub API addresses, comma-separated; publishers go to the leader, found through the first. comet standalone serves the hub API on its --listen, the hubs of a cluster on their --api (127.0.0.1:7101,... in the README)")
	fs.IntVar(&b.publishers, "publishers", 16, "concurrent publishers, each with one request in flight")
	fs.IntVar(&b.messages, "messages", 100000, "messages to publish in all")
	fs.DurationVar(&b.duration, "duration", 0, "stop after this long instead (0: when --messages are sent)")
	fs.IntVar(&b.size, "size", 128, "message size in bytes (a JSON string of that length)")
	fs.IntVar(&b.channels, "channels", 16, "channels to spread messages over")
	fs.BoolVar(&b.ids, "ids", true, "give every publish an idempotency id")
	fs.BoolVar(&b.jsonOut, "json", false, "print the result as JSON")
	fs.StringVar(&b.secret, "secret", "", "the cluster's shared secret, when its hubs have one")
	fs.StringVar(&b.tlsCA, "tls-ca", "", "PEM file of the CA that signed the hubs' (with --url, the gateway's) certificates: bare --api addresses then mean https (default: the system's roots, for https://host:port and wss:// URLs)")
	fs.IntVar(&b.batch, "batch", 1, "messages per request: more than 1 sends them in the batch form of POST /v1/publish (at most 1000)")
	fs.StringVar(&b.url, "url", "", "publish over the client protocol through this gateway WebSocket URL (ws://HOST/ws) instead of the hub API; --publishers connections")
	fs.IntVar(&b.window, "window", 8, "with --url: publishes in flight per connection")
	fs.StringVar(&b.token, "token", "", "with --url: a client token, for gateways that require one")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if b.publishers < 1 || b.size < 2 || b.channels < 1 || (b.messages < 1 && b.duration <= 0) {
		return fmt.Errorf("%w: --publishers, --channels and --messages must be positive, --size at least 2", errUsage)
	}
	if b.batch < 1 || b.batch > 1000 || b.window < 1 {
		return fmt.Errorf("%w: --batch must be 1 to 1000, --window positive", errUsage)
	}
	if b.url != "" {
		if b.batch != 1 {
			return fmt.Errorf("%w: --batch is for the hub API; with --url, use --window", errUsage)
		}
		return b.runClient(stdout, stderr)
	}
	return b.run(stdout, stderr)
}

type benchPublish struct {
	apis, secret, url, token, tlsCA      string
	publishers, messages, size, channels int
	batch, window                        int
	duration                             time.Duration
	ids, jsonOut                         bool
}

// benchResult is what comet bench publish reports.
type benchResult struct {
	Publishers int     `json:"publishers"`
	Batch      int     `json:"batch,omitempty"`
	Window     int     `json:"window,omitempty"`
	Size       int     `json:"size"`
	Messages   int64   `json:"messages"`
	Errors     int64   `json:"errors"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"msgs_per_sec"`
	latencies
}

func (b *benchPublish) run(stdout, stderr io.Writer) error {
	pool, err := (&tlsFlags{ca: b.tlsCA}).loadCA()
	if err != nil {
		return err
	}
	apis, hubTLS, err := hubTargets("api", splitList(b.apis), pool, b.tlsCA != "")
	if err != nil {
		return err
	}
	if len(apis) == 0 {
		return fmt.Errorf("%w: --api: no address", errUsage)
	}
	client := hubapi.NewClient(30*time.Second, b.publishers+8)
	client.Secret = b.secret
	if hubTLS != nil {
		client.SetTLS(hubTLS)
	}
	ctx := context.Background()
	target := apis[0]
	var st wire.ClusterStatus
	if err := client.Get(ctx, apis[0], "/v1/cluster", &st); err != nil {
		return fmt.Errorf("ask %s for the leader: %w", apis[0], err)
	}
	if st.LeaderAPI != "" {
		target = st.LeaderAPI
	}
	data, _ := json.Marshal(strings.Repeat("x", b.size-2))
	run := randomHex(4)
	chans := make([]string, b.channels)
	for i := range chans {
		chans[i] = "bench." + run + "." + strconv.Itoa(i)
	}
	var (
		sent, done, failed atomic.Int64
		latMu              sync.Mutex
		lat                = make([]time.Duration, 0, max(b.messages, 1024))
		firstErr           atomic.Value
	)
	deadline := time.Time{}
	if b.duration > 0 {
		deadline = time.Now().Add(b.duration)
	}
	fmt.Fprintf(stderr, "publishing to %s: %d publishers, %d-byte messages over %d channels, %d per request\n", target, b.publishers, b.size, b.channels, b.batch)
	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := int64(0)
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(stderr, "  %6.1fs  %9d acked  %8d/s  %d errors\n", time.Since(start).Seconds(), n, n-last, failed.Load())
				last = n
			}
		}
	}()
	var wg sync.WaitGroup
	for p := 0; p < b.publishers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			local := make([]time.Duration, 0, 1024)
			defer func() {
				latMu.Lock()
				lat = append(lat, local...)
				latMu.Unlock()
			}()
			for {
				n0 := sent.Add(int64(b.batch)) - int64(b.batch) // claims n0+1..n0+batch
				if !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				count := b.batch
				if deadline.IsZero() {
					count = min(count, b.messages-int(n0))
				}
				if count <= 0 {
					return
				}
				reqs := make([]wire.PublishRequest, count)
				for k := range reqs {
					n := n0 + int64(k) + 1
					reqs[k] = wire.PublishRequest{Channel: chans[n%int64(b.channels)], Data: data}
					if b.ids {
						reqs[k].ID = run + "-" + strconv.FormatInt(n, 10)
					}
				}
				t0 := time.Now()
				var err error
				if b.batch == 1 {
					err = client.Post(ctx, target, "/v1/publish", reqs[0], nil)
				} else {
					var res []wire.PublishResult
					if res, err = client.PublishBatch(ctx, target, reqs); err == nil {
						ok := int64(0)
						for _, r := range res {
							if e := r.Err(); e != nil {
								failed.Add(1)
								firstErr.CompareAndSwap(nil, e.Error())
								continue
							}
							ok++
						}
						local = append(local, time.Since(t0))
						done.Add(ok)
						continue
					}
				}
				if err != nil {
					failed.Add(int64(count))
					firstErr.CompareAndSwap(nil, err.Error())
					var apiErr *hubapi.APIError
					if errors.As(err, &apiErr) {
						continue
					}
					time.Sleep(10 * time.Millisecond) // connection trouble: don't spin
					continue
				}
				local = append(local, time.Since(t0))
				done.Add(1)
			}
		}(p)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	<-progressDone

	slices.Sort(lat)
	res := benchResult{Publishers: b.publishers, Batch: b.batch, Size: b.size, Messages: done.Load(), Errors: failed.Load(),
		Seconds: elapsed.Seconds(), Rate: float64(done.Load()) / elapsed.Seconds(),
		latencies: latencies{P50: pct(lat, 0.50), P90: pct(lat, 0.90), P99: pct(lat, 0.99), Max: pct(lat, 1)}}
	if err, ok := firstErr.Load().(string); ok {
		fmt.Fprintf(stderr, "first error: %v\n", err)
	}
	if b.jsonOut {
		return jsonEncode(stdout, res)
	}
	printBenchResult(stdout, res, "ack latency")
	return nil
}

// pct returns the q-quantile of sorted durations, in milliseconds.
func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// printBenchResult prints res as comet bench publish does; what says what
// the latencies are of.
func printBenchResult(stdout io.Writer, res benchResult, what string) {
	shape := fmt.Sprintf("publishers %d", res.Publishers)
	switch {
	case res.Window > 0:
		shape = fmt.Sprintf("connections %d  window %d", res.Publishers, res.Window)
	case res.Batch > 1:
		shape += fmt.Sprintf("  batch %d", res.Batch)
		what = "request latency"
	}
	fmt.Fprintf(stdout, "%s  size %dB  acked %d  errors %d  in %.2fs\n", shape, res.Size, res.Messages, res.Errors, res.Seconds)
	fmt.Fprintf(stdout, "throughput %.0f msgs/s  %s p50 %.2fms  p90 %.2fms  p99 %.2fms  max %.2fms\n",
		res.Rate, what, res.P50, res.P90, res.P99, res.Max)
}
