package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// runClient is comet bench publish over the client protocol (--url): each
// of --publishers connections keeps --window publishes in flight, each with
// an id (the protocol's idempotency key) that also carries its send time,
// and counts the acks.
func (b *benchPublish) runClient(stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tlsConfig, err := gatewayTLS(b.tlsCA)
	if err != nil {
		return err
	}
	conns := make([]*benchRequester, b.publishers)
	for i := range conns {
		c, err := dialRequester(ctx, tlsConfig, b.url, b.token)
		if err != nil {
			for _, d := range conns[:i] {
				d.c.Close()
			}
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
	}
	data, _ := json.Marshal(strings.Repeat("x", b.size-2))
	run := randomHex(4)
	var (
		sent, acked, failed atomic.Int64
		deadline            time.Time
	)
	if b.duration > 0 {
		deadline = time.Now().Add(b.duration)
	}
	fmt.Fprintf(stderr, "publishing through %s: %d connections x %d in flight, %d-byte messages over %d channels\n",
		b.url, b.publishers, b.window, b.size, b.channels)
	stop := make(chan struct{})
	last := int64(0)
	wait := progress(stderr, stop, func(el time.Duration) string {
		n := acked.Load()
		line := fmt.Sprintf("  %6.1fs  %9d acked  %8d/s  %d errors", el.Seconds(), n, n-last, failed.Load())
		last = n
		return line
	})
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.publish(b, i, run, data, deadline, &sent, &acked, &failed)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	wait()

	var lat latHist
	var firstErr error
	for _, c := range conns {
		c.c.Close()
		lat.merge(&c.lat)
		if firstErr == nil {
			firstErr = c.err()
		}
	}
	res := benchResult{Publishers: b.publishers, Window: b.window, Size: b.size, Messages: acked.Load(), Errors: failed.Load(),
		Seconds: elapsed.Seconds(), Rate: float64(acked.Load()) / elapsed.Seconds(), latencies: lat.latencies()}
	for _, c := range conns {
		if c.sample != "" {
			fmt.Fprintf(stderr, "first error: %s\n", c.sample)
			break
		}
	}
	if b.jsonOut {
		if err := jsonEncode(stdout, res); err != nil {
			return err
		}
	} else {
		printBenchResult(stdout, res, "ack latency")
	}
	return firstErr
}

// publish keeps b.window publishes in flight on r until the messages are
// claimed (sent counts them over every connection) or deadline passes, then
// waits up to 10s for the last acks. A publish's id is
// run.connection.number.sendtime.
func (r *benchRequester) publish(b *benchPublish, conn int, run string, data []byte, deadline time.Time, sent, acked, failed *atomic.Int64) {
	slots := make(chan struct{}, b.window)
	readDone := make(chan struct{})
	var mine, got atomic.Int64 // publishes this connection sent, answers it got
	answered := make(chan struct{}, 1)
	go func() {
		defer close(readDone)
		for {
			_, msg, err := r.c.ReadMessage()
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				// Set by the writer: every answer came, or 10s passed.
				if missing := mine.Load() - got.Load(); missing > 0 {
					r.errs["no_answer"] += int(missing)
					failed.Add(missing)
				}
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
				if op != "ack" && op != "error" {
					continue
				}
				id := strField(line, []byte(`"id":"`))
				if k := strings.LastIndexByte(id, '.'); k >= 0 {
					if t, err := strconv.ParseInt(id[k+1:], 10, 64); err == nil {
						r.lat.add(now.Sub(time.Unix(0, t)))
					}
				}
				if op == "ack" {
					acked.Add(1)
				} else {
					failed.Add(1)
					r.errs[errCode(line)]++
					if r.sample == "" {
						r.sample = string(line)
					}
				}
				got.Add(1)
				<-slots
			}
			select {
			case answered <- struct{}{}:
			default:
			}
		}
	}()
	defer func() {
		// Wait for the last answers, up to 10s, then stop the reader.
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
	wait:
		for got.Load() < mine.Load() {
			select {
			case <-answered:
			case <-timeout.C:
				break wait
			case <-readDone:
				return
			}
		}
		_ = r.c.SetReadDeadline(time.Now())
		<-readDone
	}()
	buf := make([]byte, 0, len(data)+128)
	for {
		n := sent.Add(1)
		if (deadline.IsZero() && n > int64(b.messages)) || (!deadline.IsZero() && time.Now().After(deadline)) {
			return
		}
		select {
		case slots <- struct{}{}:
		case <-readDone:
			return
		}
		buf = append(buf[:0], `{"op":"publish","channel":"bench.`...)
		buf = append(buf, run...)
		buf = append(buf, '.')
		buf = strconv.AppendInt(buf, n%int64(b.channels), 10)
		buf = append(buf, `","id":"`...)
		buf = append(buf, run...)
		buf = append(buf, '.')
		buf = strconv.AppendInt(buf, int64(conn), 10)
		buf = append(buf, '.')
		buf = strconv.AppendInt(buf, n, 10)
		buf = append(buf, '.')
		buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
		buf = append(buf, `","data":`...)
		buf = append(buf, data...)
		buf = append(buf, '}')
		mine.Add(1)
		if err := r.c.WriteMessage(websocket.TextMessage, buf); err != nil {
			r.writeErr = fmt.Errorf("write: %w", err)
			r.c.Close() // ends the reader
			return
		}
	}
}

// strField returns the JSON string after key in line (no escapes).
func strField(line, key []byte) string {
	i := bytes.Index(line, key)
	if i < 0 {
		return ""
	}
	rest := line[i+len(key):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return string(rest[:j])
	}
	return ""
}
