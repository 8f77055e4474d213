//go:build ignore

// publish.go is the load generator of the browser benchmark (bench.mjs):
// it publishes messages of --size bytes to one channel at --rate messages/s
// for --duration, through a gateway, with the Go client, and prints a JSON
// summary. Each message's data holds its send time ("t", Unix ms), so that
// a page can tell how late it got it.
//
//	go run ./client/js/test/bench/publish.go --url ws://127.0.0.1:8080/ws --channel bench --rate 10000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/client"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/ws", "gateway WebSocket URL")
	channel := flag.String("channel", "bench", "channel")
	rate := flag.Int("rate", 10000, "messages per second")
	size := flag.Int("size", 128, "bytes of data per message (JSON)")
	duration := flag.Duration("duration", 10*time.Second, "how long to publish")
	conns := flag.Int("conns", 4, "client connections to publish through")
	window := flag.Int("window", 2000, "publishes in flight at most, over all connections")
	flag.Parse()

	var clients []*client.Client
	for i := 0; i < *conns; i++ {
		c, err := client.New(client.Config{URLs: []string{*url}, MaxPublishesInFlight: *window})
		if err != nil {
			fail(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	sem := make(chan struct{}, *window)
	var wg sync.WaitGroup
	var sent, acked, errs atomic.Int64
	start := time.Now()
	total := int(duration.Seconds() * float64(*rate))
	for n := 0; n < total; n++ {
		// Pace: message n goes at start + n/rate.
		if d := time.Until(start.Add(time.Duration(n) * time.Second / time.Duration(*rate))); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		sent.Add(1)
		go func(n int) {
			defer func() { <-sem; wg.Done() }()
			if _, err := clients[n%len(clients)].Publish(ctx, *channel, json.RawMessage(payload(n, *size))); err != nil {
				errs.Add(1)
				return
			}
			acked.Add(1)
		}(n)
	}
	sendSeconds := time.Since(start).Seconds()
	wg.Wait()
	out, _ := json.Marshal(map[string]any{"channel": *channel, "size": *size, "sent": sent.Load(), "acked": acked.Load(), "errors": errs.Load(),
		"send_seconds": sendSeconds, "send_rate": float64(sent.Load()) / sendSeconds, "seconds": time.Since(start).Seconds()})
	fmt.Println(string(out))
}

// payload is a JSON object of exactly size bytes (at least about 40).
func payload(n, size int) []byte {
	head := fmt.Sprintf(`{"t":%d,"n":%d,"pad":"`, time.Now().UnixMilli(), n)
	pad := max(0, size-len(head)-2)
	return []byte(head + strings.Repeat("x", pad) + `"}`)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "publish:", err)
	os.Exit(1)
}
