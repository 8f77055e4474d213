package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// Defaults of Config.
const (
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultReadTimeout    = 75 * time.Second
	DefaultPingInterval   = 25 * time.Second
	// DefaultMaxPublishesInFlight is the default window of publishes
	// waiting for their ack on one client: the gateway's own default
	// bound per connection.
	DefaultMaxPublishesInFlight = 256
)

// defaultStableAfter is how long a connection must stay up for the backoff
// to start again from MinBackoff: a gateway that accepts connections and
// drops them at once is not hammered.
const defaultStableAfter = 5 * time.Second

var (
	// ErrClosed is returned by every call on a closed Client.
	ErrClosed = errors.New("client is closed")
	// ErrSubscribed is returned by Subscribe for a channel the client is
	// already subscribed to: unsubscribe first.
	ErrSubscribed = errors.New("already subscribed to this channel")
	// ErrInFlight is returned by PublishWithID and PublishAsync when a
	// publish with the same id is still waiting for its ack on this client.
	ErrInFlight = errors.New("a publish with this id is in flight")
	// ErrWindowFull is returned by PublishAsync with NoWait when
	// Config.MaxPublishesInFlight publishes are already waiting for their
	// acks.
	ErrWindowFull = errors.New("too many publishes in flight")
	// ErrProtocol reports a gateway that broke the client protocol (its
	// first frame was not "connected", say). The client reconnects.
	ErrProtocol = errors.New("protocol error")
	// ErrAuth is wrapped by the error of a connection the gateway closed
	// with code 4006: its token was refused, has expired, or is required.
	// The error also wraps the gateway's *Error ("invalid token", "token
	// expired", "token required") when one came before the close. The
	// client gets a new token from Config.Token and reconnects.
	ErrAuth = errors.New("authentication refused")
)

// Error codes of error frames (docs/protocol.md).
const (
	CodeBadRequest  = "bad_request"
	CodeNotFound    = "not_found"
	CodeForbidden   = "forbidden"
	CodeTooLarge    = "too_large"
	CodeUnavailable = "unavailable"
	CodeTimeout     = "timeout"
)

// Error is an error frame from the gateway, or a request that could not be
// answered (code "unavailable" when its connection dropped, "timeout" when
// Config.RequestTimeout passed).
type Error struct {
	Code    string
	Message string
}

// Error returns "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// retryable reports whether a publish refused with code may be retried
// with the same id.
func retryable(code string) bool { return code == CodeUnavailable || code == CodeTimeout }

// State is the state of a Client's connection.
type State int

// States, as OnState reports them.
const (
	// Connecting: dialing a gateway.
	Connecting State = iota
	// Connected: the gateway said "connected"; subscriptions and pending
	// publishes have been sent again.
	Connected
	// Disconnected: the connection failed or dropped (the error says why);
	// the client retries after a backoff.
	Disconnected
	// Closed: Close was called; the client does nothing more.
	Closed
)

// String returns the state's name in lower case.
func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// URLs are the gateways' WebSocket URLs, e.g. ws://127.0.0.1:8080/ws
	// (required). The client starts at a random one and moves to the next
	// after a failed dial or handshake, or when a gateway closes with code
	// 4001 (shutting down) or 4005 (hubs unreachable); after any other
	// drop it tries the same gateway again first.
	URLs []string
	// MinBackoff and MaxBackoff bound the delay between reconnects
	// (defaults 100ms and 10s). The delay is random between 0 and
	// MinBackoff * 2^attempt, capped at MaxBackoff (full jitter); the
	// attempt count starts again after a connection that stayed up a few
	// seconds.
	MinBackoff, MaxBackoff time.Duration
	// Store keeps each channel's position (default: NewMemoryStore()).
	Store OffsetStore
	// OnState, when set, is told of every change of connection state, with
	// the error that caused a Disconnected. It runs on the client's reading
	// goroutine: it must return quickly and must not wait for the client.
	OnState func(State, error)
	// RequestTimeout bounds a Request, a write, and the wait for a publish's
	// ack before it is sent again with the same id (default 10s).
	RequestTimeout time.Duration
	// MaxPublishesInFlight bounds the publishes waiting for their ack, of
	// every kind (Publish, PublishWithID, PublishAsync), on the client
	// (default 256, the gateway's own bound per connection). A publish
	// past it waits for room, or fails with ErrWindowFull with NoWait.
	MaxPublishesInFlight int
	// ReadTimeout is how long a connection may stay silent (no frame, no
	// ping, no pong) before the client drops it as dead (default 75s).
	ReadTimeout time.Duration
	// PingInterval is how often the client pings the gateway, so that a
	// dead network is noticed even if the gateway does not ping (default
	// 25s). It must be shorter than ReadTimeout.
	PingInterval time.Duration
	// Dialer dials the WebSocket connections (default: a dialer with a
	// handshake timeout of RequestTimeout that honours HTTP(S)_PROXY, and
	// TLSConfig).
	Dialer *websocket.Dialer
	// TLSConfig verifies the gateways' certificates on wss:// URLs, for a
	// gateway whose certificate a private CA signed: set its RootCAs to a
	// pool holding that CA (see x509.CertPool.AppendCertsFromPEM). Nil
	// uses the system's roots. With Dialer set, set its TLSClientConfig
	// instead: giving both is an error.
	TLSConfig *tls.Config
	// Header is sent with every WebSocket handshake.
	Header http.Header
	// Token, when set, returns the JWT the client authenticates with; nil,
	// or an empty token, connects anonymously. The token is sent in a
	// connect frame, the first frame of the connection (not in the URL,
	// where proxies would log it). Token is called before every connection
	// attempt, and, on a live connection, again at 80% of the token's
	// remaining lifetime (from its exp claim, read without verifying the
	// token; a token without exp is never refreshed), so that the gateway
	// gets a fresh token before the old one expires.
	//
	// An error from Token is reported through OnState (Disconnected) and
	// retried after the backoff; a failed refresh is logged and retried
	// with backoff until the token expires. When the gateway refuses a
	// token, or one expires, it closes the connection with code 4006: the
	// error wraps ErrAuth, and the client calls Token again before it
	// reconnects, after the backoff. ctx ends after RequestTimeout, and at
	// Close. Token is never called concurrently with itself.
	Token func(ctx context.Context) (string, error)
	// Info, when set, is a JSON object describing this client (a device
	// name, an app version: at most 1 KiB), sent in the connect frame of
	// every connection; others see it in the channel's presence.
	Info json.RawMessage
	// OnMessage, when set, is called with the data of every direct message:
	// a message sent to this connection alone (by a worker), with no
	// channel and no offset. Direct messages are not resumed: those sent
	// while the client is disconnected are lost. It runs on the client's
	// reading goroutine: it must return quickly and must not wait for the
	// client. Without it, direct messages are dropped.
	OnMessage func(data json.RawMessage)
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger

	// rand returns a random number in [0, n): the jitter of the backoff
	// and the choice of the first URL. Tests set it; nil is math/rand/v2.
	rand func(n int64) int64
	// stableAfter overrides defaultStableAfter in tests.
	stableAfter time.Duration
}

// Client is a connection to Comet gateways that survives reconnects. Its
// methods are safe for concurrent use.
type Client struct {
	cfg      Config
	log      *slog.Logger
	store    OffsetStore
	rand     func(int64) int64
	idPrefix string

	ctx     context.Context // cancelled by Close: stops dials
	cancel  context.CancelFunc
	closeCh chan struct{} // closed by Close
	doneCh  chan struct{} // closed when run returns
	once    sync.Once

	mu      sync.Mutex
	closed  bool
	state   State
	conn    *conn  // the current connection, ready or not; nil between connections
	user    string // the user of the ready connection
	lastErr error  // why the last dial or connection failed
	seq     uint64
	subs    map[string]*Subscription // by channel
	pubs    map[string]*pendingPub   // by id
	window  chan struct{}            // a token per publish in pubs: its capacity is the window
	drains  []*drain                 // waiters of PublishAsyncComplete
	reqs    map[string]*pendingReq   // by id
	unsubs  map[string]chan struct{} // waiters for "unsubscribed", by id
}

// New checks cfg, fills its defaults and starts connecting in the
// background. It does not wait for a connection: calls made before one is
// up wait for it.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("client: no gateway URL")
	}
	for _, u := range cfg.URLs {
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	cfg.URLs = append([]string(nil), cfg.URLs...)
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.RequestTimeout < 0 || cfg.ReadTimeout < 0 || cfg.PingInterval < 0 {
		return nil, errors.New("client: negative duration in Config")
	}
	if cfg.MaxPublishesInFlight < 0 {
		return nil, fmt.Errorf("client: negative MaxPublishesInFlight %d", cfg.MaxPublishesInFlight)
	}
	if cfg.MaxPublishesInFlight == 0 {
		cfg.MaxPublishesInFlight = DefaultMaxPublishesInFlight
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MinBackoff > cfg.MaxBackoff {
		return nil, fmt.Errorf("client: MinBackoff %v is more than MaxBackoff %v", cfg.MinBackoff, cfg.MaxBackoff)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = min(DefaultPingInterval, cfg.ReadTimeout/3)
	}
	if cfg.PingInterval >= cfg.ReadTimeout {
		return nil, fmt.Errorf("client: PingInterval %v must be shorter than ReadTimeout %v", cfg.PingInterval, cfg.ReadTimeout)
	}
	if cfg.Store == nil {
		cfg.Store = NewMemoryStore()
	}
	if cfg.Dialer != nil && cfg.TLSConfig != nil {
		return nil, errors.New("client: both Dialer and TLSConfig set: set Dialer.TLSClientConfig")
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: cfg.RequestTimeout,
			TLSClientConfig: cfg.TLSConfig}
	}
	if cfg.rand == nil {
		cfg.rand = mrand.Int64N
	}
	if cfg.stableAfter == 0 {
		cfg.stableAfter = defaultStableAfter
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      logger.With("component", "client"),
		store:    cfg.Store,
		rand:     cfg.rand,
		idPrefix: rand.Text()[:8] + ".",
		ctx:      ctx,
		cancel:   cancel,
		closeCh:  make(chan struct{}),
		doneCh:   make(chan struct{}),
		subs:     map[string]*Subscription{},
		pubs:     map[string]*pendingPub{},
		window:   make(chan struct{}, cfg.MaxPublishesInFlight),
		reqs:     map[string]*pendingReq{},
		unsubs:   map[string]chan struct{}{},
	}
	go c.run()
	return c, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("gateway URL %q: %v", s, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("gateway URL %q: scheme must be ws or wss", s)
	}
	if u.Host == "" {
		return fmt.Errorf("gateway URL %q has no host", s)
	}
	return nil
}

// State returns the state of the connection.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// User returns the user the gateway authenticated the connection as (the
// token's sub, from the "connected" frame): "" when the connection is
// anonymous, or when the client is not connected.
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// setState records s and tells OnState. It is called only by the run
// goroutine, and by Close once run has returned.
func (c *Client) setState(s State, err error) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(s, err)
	}
}

// nextID returns a new id for a frame of the client's own (subscribe,
// unsubscribe, request); c.mu is held. The random prefix keeps them apart
// from the publish ids of the application.
func (c *Client) nextID(kind string) string {
	c.seq++
	return fmt.Sprintf("%s%s%d", c.idPrefix, kind, c.seq)
}

// waitErr is the error of a call whose ctx ended: ctx's, with why the
// client is not connected if it is not.
func (c *Client) waitErr(ctx context.Context) error {
	c.mu.Lock()
	connected := c.conn != nil && c.conn.ready
	last := c.lastErr
	c.mu.Unlock()
	if !connected && last != nil {
		return fmt.Errorf("%w (not connected: %v)", ctx.Err(), last)
	}
	return ctx.Err()
}

// run connects, serves the connection until it fails, and reconnects after
// a backoff, until Close.
func (c *Client) run() {
	defer close(c.doneCh)
	bo := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff, rand: c.rand}
	idx := int(c.rand(int64(len(c.cfg.URLs))))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if c.isClosed() {
			return
		}
		u := c.cfg.URLs[idx]
		c.setState(Connecting, nil)
		var readyAt time.Time
		token, err := c.token(c.ctx)
		tokenFailed := err != nil
		if tokenFailed {
			c.setLastErr(err)
		} else {
			readyAt, err = c.connect(u, token)
		}
		if c.isClosed() {
			return
		}
		c.log.Info("disconnected", "url", u, "err", err)
		c.setState(Disconnected, err)
		if !readyAt.IsZero() && time.Since(readyAt) >= c.cfg.stableAfter {
			bo.reset()
		}
		// A gateway that could not be reached or did not say connected:
		// the next one. A refused token or a failed Token call is no
		// gateway's fault: the same one again.
		if (readyAt.IsZero() && !tokenFailed && !errors.Is(err, ErrAuth)) || elsewhere(err) {
			idx = (idx + 1) % len(c.cfg.URLs)
		}
		timer.Reset(bo.next())
		select {
		case <-c.closeCh:
			return
		case <-timer.C:
		}
	}
}

// elsewhere reports whether err is a close that asks to try another
// gateway first: shutting down (4001), or its hubs unreachable (4005). Any
// other close means "reconnect and resume" here.
func elsewhere(err error) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && (ce.Code == wire.CloseShutdown || ce.Code == wire.CloseUnavailable)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close stops the client: it closes the connection, waits for the reading
// goroutine, and fails every call still waiting with ErrClosed. Every call
// after Close returns ErrClosed. Close does not close Config.Store. It is
// idempotent and always returns nil.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		cn := c.conn
		c.mu.Unlock()
		// Stop dialing and waiting, close the connection (the reading
		// goroutine then returns), wait for it, then fail what is left.
		close(c.closeCh)
		c.cancel()
		if cn != nil {
			_ = cn.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, "client closed"), time.Now().Add(time.Second))
			cn.ws.Close()
		}
		<-c.doneCh
		c.mu.Lock()
		for _, p := range c.pubs {
			c.finishPub(p, Ack{}, ErrClosed)
		}
		for id, r := range c.reqs {
			delete(c.reqs, id)
			r.finish(nil, ErrClosed)
		}
		for ch, s := range c.subs {
			delete(c.subs, ch)
			s.end(ErrClosed)
		}
		for id, w := range c.unsubs {
			delete(c.unsubs, id)
			close(w)
		}
		c.mu.Unlock()
		c.setState(Closed, nil)
	})
	return nil
}
