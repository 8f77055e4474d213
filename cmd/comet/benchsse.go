package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// Durable Streams readers for comet bench: fanout --sse (subscribers that
// follow the channel as Server-Sent Events, docs/durable-streams.md) and
// catchup --http (a resuming client that reads the channel with plain
// GETs).

// sseURL turns a gateway WebSocket URL into the URL of its /sse endpoint
// for channel.
func sseURL(wsURL, channel string) (string, error) {
	return gatewayHTTPURL(wsURL, "/sse", "channel="+url.QueryEscape(channel))
}

// streamURL turns a gateway WebSocket URL (ws://HOST/ws) into the URL of
// channel as a Durable Stream.
func streamURL(wsURL, channel string) (string, error) {
	return gatewayHTTPURL(wsURL, "/v1/stream/"+channel, "")
}

// gatewayHTTPURL is path?query on the gateway of a WebSocket URL.
func gatewayHTTPURL(wsURL, path, query string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path, u.RawQuery = path, query
	return u.String(), nil
}

func benchHTTPClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, MaxIdleConnsPerHost: 64}}
}

// createJSONStream makes channel a JSON stream (PUT), so that SSE readers
// can start at its tail before anything was published.
func createJSONStream(ctx context.Context, c *http.Client, streamURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, streamURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("PUT %s: %s: %s", streamURL, resp.Status, body)
	}
	return nil
}

// sseConn is one SSE reader of a JSON stream of stamped messages, or, with
// plain, of a gateway's /sse endpoint (docs/sse.md).
type sseConn struct {
	plain   bool
	lastID  string // plain: the last event id, sent back as Last-Event-ID
	client  *http.Client
	url     string
	body    io.ReadCloser
	br      *bufio.Reader
	offset  string // the last streamNextOffset
	next    uint64 // its position
	pending int64  // messages of data events since the last control event
}

func dialSSE(ctx context.Context, c *http.Client, streamURL, offset string) (*sseConn, error) {
	s := &sseConn{client: c, url: streamURL, offset: offset}
	return s, s.open(ctx)
}

func (s *sseConn) open(ctx context.Context) error {
	u := s.url + "?live=sse&offset=" + url.QueryEscape(s.offset)
	if s.plain {
		u = s.url
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if s.lastID != "" {
		req.Header.Set("Last-Event-ID", s.lastID)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return fmt.Errorf("SSE %s: %s: %s", s.url, resp.Status, body)
	}
	s.body, s.br = resp.Body, bufio.NewReaderSize(resp.Body, 64<<10)
	return nil
}

func (s *sseConn) close() {
	if s.body != nil {
		s.body.Close()
	}
}

// readSSE counts messages until want of them arrived, as read does for a
// WebSocket subscriber; when the gateway ends the response (it does every
// minute) it reconnects from the last control event.
func (s *benchSub) readSSE(want, delivered *atomic.Int64) error {
	c := s.sse
	var event string
	var data []byte
	for s.got < want.Load() {
		line, err := c.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: take it whole.
			rest, err2 := c.br.ReadBytes('\n')
			line, err = append(bytes.Clone(line), rest...), err2
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			c.close()
			if err := c.open(context.Background()); err != nil {
				return err
			}
			event, data = "", data[:0]
			continue
		}
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0 && c.plain:
			if event == "" && len(data) > 0 {
				now := time.Now()
				n := s.count(data, now) // {"channel","offset","data"}: as a message frame
				s.got += n
				delivered.Add(n)
				s.lastFrame = now
			}
			event, data = "", data[:0]
		case bytes.HasPrefix(line, []byte("id:")):
			c.lastID = strings.TrimSpace(string(line[3:]))
		case len(line) == 0:
			now := time.Now()
			switch event {
			case "data":
				n := s.countStamped(data, now)
				s.got += n
				c.pending += n
				delivered.Add(n)
				s.lastFrame = now
			case "control":
				// {"streamNextOffset":"TOKEN",...}, as the gateway writes it
				// (cheaper than encoding/json, for the load generator's
				// share of the cores).
				tok, ok := stringField(data, `"streamNextOffset":"`)
				_, next, ok2 := wire.ParseStreamToken(tok)
				if !ok || !ok2 {
					return fmt.Errorf("control event %q", data)
				}
				if c.next != 0 {
					switch moved := int64(next - c.next); {
					case c.pending < moved:
						s.gaps += moved - c.pending
					case c.pending > moved:
						s.dups += c.pending - moved
					}
				}
				c.offset, c.next, c.pending = tok, next, 0
			}
			event, data = "", data[:0]
		case bytes.HasPrefix(line, []byte("event:")):
			event = strings.TrimSpace(string(line[6:]))
		case bytes.HasPrefix(line, []byte("data:")):
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(line[5:], []byte(" "))...)
		}
	}
	return nil
}

// stringField returns the string after key in b, up to the next quote.
func stringField(b []byte, key string) (string, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// countStamped counts the messages of a JSON array of stamped strings
// (stampedData) and records their latencies.
func (s *benchSub) countStamped(arr []byte, now time.Time) int64 {
	n := int64(0)
	for i, part := range bytes.Split(arr, []byte(`"`)) {
		if i%2 == 0 {
			continue // between strings
		}
		n++
		j := 0
		for j < len(part) && part[j] >= '0' && part[j] <= '9' {
			j++
		}
		if ts, err := strconv.ParseInt(string(part[:j]), 10, 64); err == nil {
			s.lat.add(now.Sub(time.Unix(0, ts)))
		}
	}
	return n
}

// resumeHTTP reads the last m messages of the channel with plain GETs of
// its Durable Stream, page after page until up to date, and times it.
func (b *benchCatchup) resumeHTTP(ctx context.Context, m, run int) (catchupResult, error) {
	res := catchupResult{Missed: m, Run: run}
	base, err := streamURL(b.url, b.channel)
	if err != nil {
		return res, err
	}
	c := b.httpClient
	t0 := time.Now()
	// A HEAD gives the epoch; the position is the bench's own (tokens are
	// opaque to clients, but this tool knows Comet's). The hub the gateway
	// reads from may not have applied the last publishes yet (they were
	// acknowledged over WebSocket): look again for a while.
	var (
		epoch string
		tail  uint64
	)
	for tries := 0; ; tries++ {
		head, err := c.Head(base)
		if err != nil {
			return res, err
		}
		head.Body.Close()
		var ok bool
		epoch, tail, ok = wire.ParseStreamToken(head.Header.Get("Stream-Next-Offset"))
		if head.StatusCode != http.StatusOK || !ok {
			return res, fmt.Errorf("HEAD %s: %s, offset %q", base, head.Status, head.Header.Get("Stream-Next-Offset"))
		}
		if tail == uint64(b.messages+1) {
			break
		}
		if tries == 100 {
			return res, fmt.Errorf("the channel's next offset is %d, not %d: was it published to by someone else?", tail, b.messages+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t0 = time.Now()
	pos := uint64(b.messages - m + 1)
	got := 0
	for pos < tail {
		resp, err := c.Get(base + "?offset=" + wire.StreamToken(epoch, pos))
		if err != nil {
			return res, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return res, err
		}
		_, next, ok := wire.ParseStreamToken(resp.Header.Get("Stream-Next-Offset"))
		if resp.StatusCode != http.StatusOK || !ok || next <= pos {
			return res, fmt.Errorf("GET at %d: %s, next %q", pos, resp.Status, resp.Header.Get("Stream-Next-Offset"))
		}
		n := 0
		if len(body) > 2 {
			n = bytes.Count(body, []byte(`","`)) + 1
		}
		if uint64(n) != next-pos {
			return res, fmt.Errorf("GET at %d: %d messages, but the offset moved by %d", pos, n, next-pos)
		}
		got += n
		pos = next
	}
	res.Seconds = time.Since(t0).Seconds()
	res.Rate = float64(got) / res.Seconds
	if got != m {
		return res, fmt.Errorf("read %d messages of %d", got, m)
	}
	return res, nil
}
