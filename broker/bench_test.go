package broker_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/wire"
)

// benchInflight and benchBatch override broker.Config for experiments.
var (
	benchInflight = flag.Int("bench.inflight", 0, "broker MaxInflight for BenchmarkPublish (0: default)")
	benchBatch    = flag.Int("bench.batch", 0, "broker BatchMaxMessages for BenchmarkPublish (0: default)")
	benchYields   = flag.Int("bench.yields", 0, "broker BatchYields for BenchmarkPublish (0: default)")
)

// BenchmarkPublish measures publish -> acknowledgement through a real
// 3-hub cluster on loopback TCP in this process, with the hubs set up as
// `comet hub` sets them up: the leader's Service.Publish, group commit, Raft
// replication with the Raft log fsynced on every hub, and the apply. No
// HTTP. One op is one acknowledged 128-byte message with an idempotency id.
//
// A publisher with a window of W keeps W publishes in flight, here as W
// goroutines publishing synchronously (as W HTTP requests would be served);
// window=1 is a publisher that waits for each ack. BenchmarkPublishAsync
// keeps the window with PublishAsync instead, one goroutine per publisher.
// Each sub-benchmark starts a new cluster and publishes a tenth of its count
// first, unmeasured (warm-up). Run them with a fixed count:
//
//	go test ./broker -run '^$' -bench Publish -benchtime 20000x
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct{ pubs, window int }{{1, 1}, {4, 1}, {16, 1}, {256, 1}, {1, 64}, {16, 64}, {256, 4}, {256, 8}, {256, 16}} {
		b.Run(fmt.Sprintf("publishers=%d/window=%d", bc.pubs, bc.window), func(b *testing.B) {
			benchPublish(b, bc.pubs*bc.window, 1, false)
		})
	}
}

// BenchmarkPublishAsync is BenchmarkPublish with publishers that keep
// their window with PublishAsync, as NATS JetStream's PublishAsync does.
func BenchmarkPublishAsync(b *testing.B) {
	for _, bc := range []struct{ pubs, window int }{{1, 64}, {16, 64}, {256, 4}, {256, 8}, {256, 10}, {256, 12}, {256, 16}} {
		b.Run(fmt.Sprintf("publishers=%d/window=%d", bc.pubs, bc.window), func(b *testing.B) {
			benchPublish(b, bc.pubs, bc.window, true)
		})
	}
}

func benchPublish(b *testing.B, publishers, window int, async bool) {
	c := newCluster(b, func(cfg *broker.Config) {
		cfg.MaxMessageBytes = 1 << 10
		cfg.MaxInflight, cfg.BatchMaxMessages, cfg.BatchYields = *benchInflight, *benchBatch, *benchYields
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
	fail := func(err error) {
		first.CompareAndSwap(nil, err.Error())
		failed.Add(1)
	}
	// publisher publishes until the count of messages taken reaches limit,
	// keeping window in flight, and adds its latencies to lat if record.
	publisher := func(limit int64, record bool) {
		defer wg.Done()
		local := make([]time.Duration, 0, b.N/publishers+1)
		var idBuf []byte
		if !async {
			for {
				i := next.Add(1)
				if i > limit {
					break
				}
				// The id costs one small allocation, as a client's would.
				id := string(strconv.AppendInt(append(idBuf[:0], "id-"...), i, 10))
				t0 := time.Now()
				if _, err := svc.Publish(context.Background(), channels[i%16], data, id); err != nil {
					fail(err)
					continue
				}
				local = append(local, time.Since(t0))
			}
		} else {
			var lmu sync.Mutex // callbacks run on the service's goroutines
			slots := make(chan struct{}, window)
			for {
				i := next.Add(1)
				if i > limit {
					break
				}
				slots <- struct{}{}
				id := string(strconv.AppendInt(append(idBuf[:0], "id-"...), i, 10))
				t0 := time.Now()
				svc.PublishAsync(context.Background(), channels[i%16], data, id, func(_ wire.PublishResponse, err error) {
					if err != nil {
						fail(err)
					} else {
						d := time.Since(t0)
						lmu.Lock()
						local = append(local, d)
						lmu.Unlock()
					}
					<-slots
				})
			}
			for range window { // the last acks
				slots <- struct{}{}
			}
		}
		if record {
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}
	}
	goroutines := publishers
	if !async {
		goroutines = publishers * window
	}
	run := func(limit int64, record bool) {
		for range goroutines {
			wg.Add(1)
			go publisher(limit, record)
		}
		wg.Wait()
	}
	// Warm up with a tenth as many messages first, not measured: in its
	// first moments a new process grows its heap, maps and files.
	warm := int64(b.N / 10)
	run(warm, false)
	next.Store(warm) // the publishers that stopped took one more each
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	start, cpu0, wb0 := time.Now(), cpuTime(), diskWritten()
	run(warm+int64(b.N), true)
	elapsed, cpu, wb := time.Since(start), cpuTime()-cpu0, diskWritten()-wb0
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
	// Bytes written to the disk (all three hubs' Raft logs, snapshots and
	// channel stores) per message, where the disk can be told apart.
	if wb > 0 {
		b.ReportMetric(float64(wb)/float64(b.N), "disk-B/msg")
	}
}

// diskWritten returns the bytes written so far to the block device named by
// BENCH_DISK (e.g. loop0: a file system made for the benchmark, with TMPDIR
// on it), from /proc/diskstats; 0 without it. It counts every process
// writing to that device. (The process's own /proc/self/io write_bytes is
// no use: with the page cache's large folios it counts a whole folio, up to
// 2 MiB, for a small write into a file written whole before.)
func diskWritten() int64 {
	dev := os.Getenv("BENCH_DISK")
	if dev == "" {
		return 0
	}
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 10 && f[2] == dev {
			n, _ := strconv.ParseInt(f[9], 10, 64) // sectors of 512 bytes
			return n * 512
		}
	}
	return 0
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPublishBatchHTTP measures the batch form of POST /v1/publish
// on a 3-hub cluster in this process, set up as `comet hub` sets it up: 16
// publishers each post batches of 100 128-byte messages with ids to the
// leader's API, one request in flight each. One op is one acknowledged
// message.
//
//	go test ./broker -run '^$' -bench PublishBatchHTTP -benchtime 200000x
func BenchmarkPublishBatchHTTP(b *testing.B) {
	c := newCluster(b, func(cfg *broker.Config) { cfg.MaxMessageBytes = 1 << 10 })
	c.production = true
	c.start3()
	api := c.leader().api
	data := json.RawMessage(`"` + strings.Repeat("x", 126) + `"`)
	const publishers, batch = 16, 100
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	b.ResetTimer()
	for range publishers {
		wg.Go(func() {
			reqs := make([]wire.PublishRequest, batch)
			for {
				n := next.Add(batch) - batch
				if n >= int64(b.N) {
					return
				}
				reqs = reqs[:min(batch, b.N-int(n))]
				for k := range reqs {
					reqs[k] = wire.PublishRequest{Channel: fmt.Sprintf("bench.%d", (n+int64(k))%16), Data: data, ID: fmt.Sprintf("id-%d", n+int64(k))}
				}
				status, raw := c.do("POST", api, "/v1/publish", mustJSON(b, reqs))
				if status != 200 || strings.Contains(string(raw), `"code"`) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d batches failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
