package broker_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
)

// benchInflight and benchBatch override broker.Config for experiments.
var (
	benchInflight = flag.Int("bench.inflight", 0, "broker MaxInflight for BenchmarkPublish (0: default)")
	benchBatch    = flag.Int("bench.batch", 0, "broker BatchMaxMessages for BenchmarkPublish (0: default)")
)

// BenchmarkPublish measures publish -> acknowledgement through a real
// 3-hub cluster on loopback TCP in this process, with the hubs set up as
// `comet hub` sets them up: the leader's Service.Publish, group commit, Raft
// replication with the Raft log fsynced on every hub, and the apply. No
// HTTP. One op is one acknowledged 128-byte message with an idempotency id.
//
// A publisher with a window of W keeps W publishes in flight (W goroutines
// publishing synchronously); window=1 is a publisher that waits for each
// ack. Run it with a fixed count, as the cluster is built per sub-benchmark:
//
//	go test ./broker -run '^$' -bench Publish -benchtime 20000x
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct{ pubs, window int }{{1, 1}, {16, 1}, {256, 1}, {1, 64}, {16, 64}, {256, 4}, {256, 8}, {256, 16}} {
		b.Run(fmt.Sprintf("publishers=%d/window=%d", bc.pubs, bc.window), func(b *testing.B) {
			benchPublish(b, bc.pubs*bc.window)
		})
	}
}

func benchPublish(b *testing.B, senders int) {
	c := newCluster(b, func(cfg *broker.Config) {
		cfg.MaxMessageBytes = 1 << 10
		cfg.MaxInflight, cfg.BatchMaxMessages = *benchInflight, *benchBatch
	})
	c.production = true
	c.start3()
	svc := c.leader().svc
	data := json.RawMessage(`"` + strings.Repeat("x", 126) + `"`)
	var channels [16]string
	for i := range channels {
		channels[i] = fmt.Sprintf("bench.%d", i)
	}
	var (
		next   atomic.Int64
		failed atomic.Int64
		first  atomic.Value
		mu     sync.Mutex
		lat    = make([]time.Duration, 0, b.N)
		wg     sync.WaitGroup
	)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for p := 0; p < senders; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, b.N/senders+1)
			var idBuf []byte
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					break
				}
				t0 := time.Now()
				// The id costs one small allocation, as a client's would.
				id := string(strconv.AppendInt(append(idBuf[:0], "id-"...), i, 10))
				_, err := svc.Publish(ctx, channels[i%16], data, id)
				if err != nil {
					first.CompareAndSwap(nil, err.Error())
					failed.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d publishes failed; the first: %v", n, b.N, first.Load())
	}
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	// The CPU time of the whole process (three hubs and the publishers)
	// per message: what bounds throughput when the cores are busy.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/msg")
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
