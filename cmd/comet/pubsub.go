package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
)

// tokenUsage explains the --token flag of the client commands.
const tokenUsage = "a client token (JWT) for gateways that require one, e.g. from comet token (default: connect anonymously)"

// defaultListen is where `comet` alone (comet standalone, the README's
// first command) and a gateway listen by default; the client tools and the
// benchmarks look there by default.
const defaultListen = "127.0.0.1:8080"

// defaultGatewayURL is where `comet pub` and `comet sub` look for a gateway.
const defaultGatewayURL = "ws://" + defaultListen + "/ws"

const pubSynopsis = `comet pub [--url ws://127.0.0.1:8080/ws] [--id KEY] [--timeout 30s] [--string] CHANNEL DATA

Publish DATA to CHANNEL through a gateway and print {"channel":"c","offset":N}
once the message is stored. DATA is sent as JSON if it parses as JSON (42,
true, {"a":1}, '"quoted"'); otherwise it is sent as a JSON string:
'comet pub chat hello' sends "hello". DATA that starts like a JSON object,
array or string ({, [ or ") must be valid JSON: '{"a":1,}' is refused, not
sent as a string. --string sends DATA as a JSON string whatever it holds. The publish is retried, across gateways
and reconnects, with the same id until it is acknowledged or --timeout passes;
the hubs store it once. The output says "duplicate":true when the id was
already stored (a retry, or --id given again): offset is then the first one's.
When no gateway can be reached, the first error is printed at once, and after
--timeout the message is "not sent" (exit 1); when a gateway took it but did
not acknowledge it in time, it "may or may not be stored".`

const subSynopsis = `comet sub [--url ws://127.0.0.1:8080/ws] [--from N] [--epoch E] [--count N] [--state FILE] CHANNEL...

Subscribe to the channels and print one JSON line per message:
{"channel":"c","offset":N,"epoch":"E","data":...}
Each channel starts at --from if given, else after its position in --state,
else with new messages only. Reconnects resume without gaps or duplicates; when
messages were lost for good (trimmed by retention, or the channel's history was
reset), a warning goes to stderr. Runs until --count messages were printed, or
until SIGINT or SIGTERM; then saves --state and exits 0.`

func runPub(args []string, stdout, stderr io.Writer) error {
	var urls, id, token, tlsCA string
	var timeout time.Duration
	var literal bool
	fs := newFlagSet("pub", pubSynopsis, stderr)
	fs.StringVar(&urls, "url", defaultGatewayURL, "gateway WebSocket URL, or several, comma-separated")
	fs.StringVar(&token, "token", "", tokenUsage)
	fs.StringVar(&tlsCA, "tls-ca", "", tlsCAGatewayUsage)
	fs.Var(ownEnv{stringValue{&id}, "COMET_PUB_ID"}, "id", "idempotency key: publishes with the same key on a channel within 10 minutes are stored once (default: a random key); its variable is COMET_PUB_ID, not COMET_ID (the --id of hubs and gateways)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up when the publish is not acknowledged within this time")
	fs.Var(ownEnv{boolValue{&literal}, "COMET_PUB_STRING"}, "string", "send DATA as a JSON string, as it is, even when it looks like JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("%w: comet pub [flags] CHANNEL DATA (see comet pub --help)", errUsage)
	}
	channel := fs.Arg(0)
	if err := wire.CheckChannel(channel); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	data, err := pubData(fs.Arg(1), literal)
	if err != nil {
		return err
	}
	if timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	if id == "" {
		id = client.NewID()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	var (
		lastMu    sync.Mutex
		lastErr   error // why the last connection attempt failed; nil once connected
		connected bool  // a connection was up once: the publish may have been sent
	)
	c, err := newGatewayClient(urls, token, tlsCA, client.Config{OnState: func(s client.State, err error) {
		lastMu.Lock()
		defer lastMu.Unlock()
		switch s {
		case client.Connected:
			lastErr, connected = nil, true
		case client.Disconnected:
			if !connected && lastErr == nil && err != nil && !errors.Is(err, client.ErrAuth) {
				// Said at once, not after --timeout: the likely mistake is
				// a wrong --url or no gateway running.
				fmt.Fprintf(stderr, "comet: warning: cannot connect: %v; retrying for up to %v (--timeout)\n", err, timeout)
			}
			lastErr = err
			if errors.Is(err, client.ErrAuth) {
				refuse(err) // the same token will not do better
			}
		}
	}})
	if err != nil {
		return err
	}
	defer c.Close()

	ack, err := c.PublishWithID(ctx, channel, id, data)
	// Once the client is closed, OnState has said all it will: a publish
	// is written only on a connection that it reported connected.
	c.Close()
	lastMu.Lock()
	sent, why := connected, lastErr
	lastMu.Unlock()
	var refused *client.Error
	switch {
	case errors.Is(context.Cause(ctx), client.ErrAuth):
		return fmt.Errorf("publish to %s: not sent: the gateway refused the token: %w", channel, context.Cause(ctx))
	case errors.As(err, &refused):
		return fmt.Errorf("publish to %s refused: %s: %s", channel, refused.Code, refused.Message)
	case !sent && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)):
		what := fmt.Sprintf("could not connect to a gateway within %v", timeout)
		if errors.Is(err, context.Canceled) {
			what = "interrupted before a gateway could be reached"
		}
		if why != nil {
			what += fmt.Sprintf(" (%v)", why)
		}
		return fmt.Errorf("publish to %s: not sent: %s", channel, what)
	case errors.Is(err, context.DeadlineExceeded):
		notConnected := ""
		if why != nil {
			notConnected = fmt.Sprintf(" (not connected: %v)", why)
		}
		return fmt.Errorf("publish to %s: no ack within %v%s; it may or may not be stored: publish again with --id %s to store it once", channel, timeout, notConnected, id)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("publish to %s: interrupted; it may or may not be stored: publish again with --id %s to store it once", channel, id)
	case err != nil:
		return err
	}
	out, err := json.Marshal(struct {
		Channel   string `json:"channel"`
		Offset    uint64 `json:"offset"`
		Duplicate bool   `json:"duplicate,omitempty"`
	}{ack.Channel, ack.Offset, ack.Duplicate})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// pubData is DATA as JSON: as given if it is JSON, else a JSON string.
// DATA that starts like a JSON object, array or string ({, [, ") but does
// not parse is refused: a typo would otherwise be stored as a string. With
// literal (--string), DATA is always sent as a JSON string.
func pubData(s string, literal bool) (json.RawMessage, error) {
	if !literal {
		if json.Valid([]byte(s)) {
			return json.RawMessage(s), nil
		}
		if t := strings.TrimLeft(s, " \t\r\n"); t != "" && strings.ContainsRune(`{["`, rune(t[0])) {
			var v json.RawMessage
			err := json.Unmarshal([]byte(s), &v)
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				err = fmt.Errorf("%v (at byte %d)", err, syn.Offset)
			}
			return nil, fmt.Errorf("%w: DATA is not valid JSON: %v; to send it as a string, use --string", errUsage, err)
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// newGatewayClient starts a client of the gateways in urls (comma-separated),
// authenticated with token (empty: anonymous), with cfg's other settings.
func newGatewayClient(urls, token, tlsCA string, cfg client.Config) (*client.Client, error) {
	cfg.URLs = append(cfg.URLs, splitList(urls)...)
	tlsConfig, err := gatewayTLS(tlsCA)
	if err != nil {
		return nil, err
	}
	cfg.TLSConfig = tlsConfig
	if token != "" {
		cfg.Token = func(context.Context) (string, error) { return token, nil }
	}
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("%w: --url: no gateway URL", errUsage)
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: --url: %v", errUsage, err)
	}
	return c, nil
}

func runSub(args []string, stdout, stderr io.Writer) error {
	var urls, epoch, state, token, tlsCA string
	var from uint64
	var count int
	fs := newFlagSet("sub", subSynopsis, stderr)
	fs.StringVar(&urls, "url", defaultGatewayURL, "gateway WebSocket URL, or several, comma-separated")
	fs.StringVar(&token, "token", "", tokenUsage)
	fs.StringVar(&tlsCA, "tls-ca", "", tlsCAGatewayUsage)
	fs.Uint64Var(&from, "from", 0, "start every channel at this offset (1: all messages still held); 0: from --state, else new messages only")
	fs.StringVar(&epoch, "epoch", "", "the epoch the --from offset belongs to: a channel whose epoch differs starts at its oldest message, with a warning")
	fs.IntVar(&count, "count", 0, "exit after printing this many messages in all (0: run until interrupted)")
	fs.StringVar(&state, "state", "", "file keeping each channel's last offset and epoch: resume from it at the next start")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: comet sub [flags] CHANNEL... (see comet sub --help)", errUsage)
	}
	channels := fs.Args()
	seen := map[string]bool{}
	for _, ch := range channels {
		if err := wire.CheckChannel(ch); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if seen[ch] {
			return fmt.Errorf("%w: channel %s is given twice", errUsage, ch)
		}
		seen[ch] = true
	}
	if count < 0 {
		return fmt.Errorf("%w: --count must be 0 or more", errUsage)
	}
	if epoch != "" && from == 0 {
		return fmt.Errorf("%w: --epoch needs --from", errUsage)
	}
	var store client.OffsetStore = client.NewMemoryStore()
	var fileStore *client.FileStore
	if state != "" {
		var err error
		if fileStore, err = client.NewFileStore(state); err != nil {
			return err
		}
		store = fileStore
	}
	gate := &gatedStore{OffsetStore: store}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &subPrinter{count: count, gate: gate, cancel: cancel}
	p.enc = json.NewEncoder(stdout)
	p.enc.SetEscapeHTML(false)
	var warnMu sync.Mutex // warnings come from the client's goroutine, refusals from ours
	warn := func(format string, a ...any) {
		warnMu.Lock()
		defer warnMu.Unlock()
		fmt.Fprintf(stderr, "comet: warning: "+format+"\n", a...)
	}
	lastWarned := "" // the same failure again and again is said once
	c, err := newGatewayClient(urls, token, tlsCA, client.Config{Store: gate, OnState: func(s client.State, err error) {
		switch {
		case s == client.Connected:
			lastWarned = ""
		case s == client.Disconnected && errors.Is(err, client.ErrAuth):
			cancel(fmt.Errorf("the gateway refused the token: %w", err)) // the same token will not do better
		case s == client.Disconnected && err != nil && err.Error() != lastWarned:
			lastWarned = err.Error()
			warn("%v; reconnecting", err)
		}
	}})
	if err != nil {
		if fileStore != nil {
			fileStore.Close()
		}
		return err
	}

	opts := []client.SubscribeOption{client.OnSubscribed(func(i client.SubscribedInfo) {
		if !i.Recovered {
			warn("%s", lossWarning(i))
		}
	})}
	if from > 0 {
		opts = append(opts, client.From(from), client.Epoch(epoch))
	}
	var wg sync.WaitGroup
	var subErr error
	for _, ch := range channels {
		sub, err := c.Subscribe(ctx, ch, p.handle, opts...)
		if err != nil {
			if ctx.Err() == nil {
				subErr = err
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-sub.Done()
			if err := sub.Err(); err != nil && !errors.Is(err, client.ErrClosed) {
				cancel(fmt.Errorf("channel %s: %w", sub.Channel(), err))
			}
		}()
	}
	if subErr == nil {
		<-ctx.Done()
	}
	// Stop the client (no handler runs after Close), then write the state.
	c.Close()
	wg.Wait()
	var storeErr error
	if fileStore != nil {
		storeErr = fileStore.Close()
	}
	switch {
	case subErr != nil:
		return subErr
	case p.err != nil:
		return fmt.Errorf("write: %w", p.err)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return storeErr
}

// lossWarning says what a recovered:false means.
func lossWarning(i client.SubscribedInfo) string {
	switch {
	case i.FromEpoch != "" && i.FromEpoch != i.Epoch:
		return fmt.Sprintf("channel %s: its history was reset (epoch %s, was %s), offsets of the old epoch mean nothing: starting at offset %d",
			i.Channel, i.Epoch, i.FromEpoch, i.First)
	case i.From > 0 && i.From < i.First:
		return fmt.Sprintf("channel %s: offsets %d to %d are gone (retention): resuming at offset %d", i.Channel, i.From, i.First-1, i.First)
	}
	return fmt.Sprintf("channel %s: messages were lost (recovered: false): resuming at offset %d", i.Channel, i.First)
}

// subPrinter prints messages; it runs on the client's one goroutine.
type subPrinter struct {
	enc     *json.Encoder
	count   int // 0: no limit
	printed int
	stopped bool
	err     error
	gate    *gatedStore
	cancel  context.CancelCauseFunc
}

// subLine is one line of `comet sub`, keys in this order.
type subLine struct {
	Channel string          `json:"channel"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch"`
	Data    json.RawMessage `json:"data"`
}

func (p *subPrinter) handle(m client.Message) {
	if p.stopped {
		// Past --count (or a failed write): not printed, so its position
		// must not be saved either.
		p.gate.closed.Store(true)
		return
	}
	if err := p.enc.Encode(subLine{m.Channel, m.Offset, m.Epoch, m.Data}); err != nil {
		p.err, p.stopped = err, true
		p.gate.closed.Store(true)
		p.cancel(nil)
		return
	}
	p.printed++
	if p.count > 0 && p.printed >= p.count {
		p.stopped = true
		p.cancel(nil)
	}
}

// gatedStore passes saves on until it is closed: `comet sub` closes it
// when a message arrives that it will not print.
type gatedStore struct {
	client.OffsetStore
	closed atomic.Bool
}

func (g *gatedStore) Save(channel string, p client.Position) error {
	if g.closed.Load() {
		return nil
	}
	return g.OffsetStore.Save(channel, p)
}
