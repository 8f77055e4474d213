package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/worker"
)

// BenchmarkRequest measures request round trips: a gateway's bus session
// -> the router on a single-node hub -> a worker -> back, every hop a
// WebSocket on loopback, with 1 or 64 requests in flight. It reports requests
// per second and the p50/p99 latency; the whole path (hub, gateway client,
// workers) shares the machine with the load.
func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct{ workers, inflight int }{{1, 1}, {1, 64}, {4, 64}} {
		b.Run(fmt.Sprintf("workers=%d/inflight=%d", tc.workers, tc.inflight), func(b *testing.B) {
			benchRequest(b, tc.workers, tc.inflight)
		})
	}
}

func benchRequest(b *testing.B, workers, inflight int) {
	api := startHub(b)
	g, _ := startGateway(b, api)
	for i := range workers {
		startWorker(b, worker.Config{Hubs: []string{api}, Name: fmt.Sprint("w", i)}, func(w *worker.Worker) {
			w.Handle("echo", func(ctx context.Context, req worker.Request) (any, error) { return req.Data, nil })
		})
	}
	data := json.RawMessage(`{"op":"bench","payload":"0123456789abcdef0123456789abcdef"}`)
	// Warm up, and wait for every worker's routes.
	waitFor(b, "the workers", func() bool {
		_, err := g.Request(context.Background(), bus.Request{Route: "echo", Data: data, Conn: "gw1-c1"})
		return err == nil
	})
	lat := make([]time.Duration, b.N)
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for range inflight {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := g.Request(ctx, bus.Request{Route: "echo", Data: data, Conn: "gw1-c1"})
				cancel()
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
