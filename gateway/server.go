package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/internal/adminpage"
	"github.com/comethq/comet/internal/socketio"
	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
	"github.com/igm/sockjs-go/v3/sockjs"
)

// Config configures a gateway Server. Zero fields take the defaults named.
type Config struct {
	// Hub reaches the hub cluster. Required.
	Hub Hub
	// ID names this gateway; it prefixes connection ids (default random).
	ID string

	// MaxFrameBytes bounds a client frame (default 80 KiB). A larger frame
	// is answered too_large and discarded; one over 4 times this closes the
	// connection (close code 1009, message too big).
	MaxFrameBytes int
	// MaxMessageBytes bounds a published message's data (default 64 KiB,
	// as hubs).
	MaxMessageBytes int
	// MaxSubscriptions bounds the subscriptions of one connection (default
	// 1,000).
	MaxSubscriptions int
	// QueueMessages and QueueBytes bound a connection's outgoing queue
	// (defaults 16,384 objects, 8 MiB). A client that lets it overflow is
	// disconnected as a slow consumer (code 4002).
	QueueMessages int
	QueueBytes    int
	// PendingMessages bounds the live messages held for one subscription
	// while its replay runs (default 4,096); past it they are dropped and
	// read again from the hubs.
	PendingMessages int
	// WriteBatchBytes bounds one server frame (default 256 KiB): a burst of
	// queued objects is sent in frames of about this size.
	WriteBatchBytes int
	// PingInterval (default 25s), IdleTimeout (default 60s) and
	// WriteTimeout (default 10s) keep connections honest.
	PingInterval time.Duration
	IdleTimeout  time.Duration
	WriteTimeout time.Duration
	// PublishTimeout bounds a publish waiting for the hubs (default 10s).
	PublishTimeout time.Duration
	// MaxPublishesInFlight bounds one connection's publishes waiting for
	// the hubs (default 256); past it the gateway stops reading from it.
	MaxPublishesInFlight int
	// AllowedOrigins lists the browser origins accepted besides the
	// gateway's own host: "*", "https://app.example.com",
	// "https://*.example.com".
	AllowedOrigins []string

	// Tokens checks clients' tokens (JWT); nil: tokens are refused.
	Tokens *auth.Verifier
	// AllowAnonymous lets clients without a token in, as the anonymous
	// user. Otherwise a connection without ?token= must send a connect
	// frame within AuthTimeout (default 5s: less than clients wait for the
	// connected frame, so that they hear why).
	AllowAnonymous bool
	AuthTimeout    time.Duration
	// Policy decides who may subscribe and publish where (nil: any
	// connection let in may do both anywhere).
	Policy *auth.Policy

	// Workers answer request frames (nil: every route is not_found), within
	// RequestTimeout (default 10s) each; a connection has at most
	// MaxRequestsInFlight (default 64) at once.
	Workers        Workers
	RequestTimeout time.Duration
	// NamespacePoll is how often the gateway reads the cluster's
	// namespaces from the hubs (default 1s): a change is in force on every
	// gateway within about this long.
	NamespacePoll       time.Duration
	MaxRequestsInFlight int
	// Events, when set, is told of every connection event (connected,
	// disconnected, subscribed, unsubscribed). It must not block.
	Events func(Event)
	// ReadyCheck, when set, is one more condition of Ready (/readyz).
	ReadyCheck func() error
	// Publisher stores clients' publishes: over the gateway's bus session
	// to the hub leader, pipelined (cmd/comet wires it). Nil: each goes
	// through Hub.Publish on a goroutine of its own.
	Publisher Publisher

	// CacheMessages and CacheBytes bound the recent messages kept per
	// channel with subscribers, to serve resuming clients without asking
	// the hubs (defaults 10,000 messages, 4 MiB).
	CacheMessages int
	CacheBytes    int
	// Linger is how long a channel's state and cache are kept after its
	// last subscriber leaves (default 1m), so that a client that comes back
	// soon resumes from memory.
	Linger time.Duration
	// ReadLimit is the page size of range reads from the hubs (default
	// 10,000 messages).
	ReadLimit int
	// MaxSyncReads bounds the range reads in flight that bring channels up
	// to date (default 16): that many workers run the channels' syncs, one
	// read at a time each. After a commit-stream reset every channel
	// followed is read again, and the hubs get at most this many reads at
	// once. Replays for subscriptions are not counted.
	MaxSyncReads int
	// MaxChannels bounds the channels followed at once (default 100,000):
	// past it, lingering channels are dropped first, then subscribes to
	// new channels are refused (unavailable).
	MaxChannels int

	// Overview, when set, gives the hubs' admin view (a hub's
	// GET /v1/admin/overview), which the gateway's own GET
	// /v1/admin/overview completes with its stats (admin.go). Nil: the
	// gateway's view holds its own stats alone.
	Overview func(ctx context.Context) (wire.AdminOverview, error)
	// AdminTokens are the Bearer tokens its GET /v1/admin/overview takes
	// (the cluster secret, the admin token; empty ones are ignored). With
	// none it is open, or, with AdminLocalOnly, open to loopback clients
	// only.
	AdminTokens    []string
	AdminLocalOnly bool

	// StreamsPrefix is the path under which channels are served as
	// Durable Streams over HTTP (default "/v1/stream/"; "-": not served),
	// when Hub implements StreamHub. StreamLongPoll is how long a
	// long-poll read waits for data (default 20s).
	StreamsPrefix  string
	StreamLongPoll time.Duration
	// StreamWriter, when set, carries Durable Streams writes to the hubs
	// (cmd/comet wires the bus session to the leader); reads, and writes
	// without it, go through Hub.
	StreamWriter StreamWriter

	Logger *slog.Logger
}

func (c *Config) fill() error {
	if c.Hub == nil {
		return errors.New("gateway: Config.Hub is required")
	}
	if c.ID == "" {
		c.ID = randomID(4)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxFrameBytes, 80<<10)
	def(&c.MaxMessageBytes, 64<<10)
	def(&c.MaxSubscriptions, 1000)
	def(&c.QueueMessages, 16384)
	def(&c.QueueBytes, 8<<20)
	def(&c.PendingMessages, 4096)
	def(&c.WriteBatchBytes, 256<<10)
	def(&c.MaxPublishesInFlight, 256)
	def(&c.MaxRequestsInFlight, 64)
	def(&c.CacheMessages, 10000)
	def(&c.CacheBytes, 4<<20)
	def(&c.ReadLimit, 10000)
	def(&c.MaxChannels, 100_000)
	def(&c.MaxSyncReads, 16)
	if c.QueueMessages < 2 {
		c.QueueMessages = 2
	}
	defD(&c.PingInterval, 25*time.Second)
	defD(&c.IdleTimeout, 60*time.Second)
	defD(&c.WriteTimeout, 10*time.Second)
	defD(&c.PublishTimeout, 10*time.Second)
	defD(&c.RequestTimeout, 10*time.Second)
	defD(&c.NamespacePoll, time.Second)
	defD(&c.AuthTimeout, 5*time.Second)
	defD(&c.Linger, time.Minute)
	defD(&c.StreamLongPoll, 20*time.Second)
	if c.StreamsPrefix == "" {
		c.StreamsPrefix = "/v1/stream/"
	}
	if c.StreamsPrefix != "-" && (!strings.HasPrefix(c.StreamsPrefix, "/") || !strings.HasSuffix(c.StreamsPrefix, "/")) {
		return fmt.Errorf("gateway: streams prefix %q: want a path that starts and ends with /", c.StreamsPrefix)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, o := range c.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			return fmt.Errorf("gateway: allowed origin %q: want *, or scheme://host[:port] (host may start with *.)", o)
		}
	}
	return nil
}

// Server is a gateway: it holds client connections, follows the hubs'
// commit stream and fans messages out to subscribers.
type Server struct {
	cfg    Config
	log    *slog.Logger
	hub    Hub
	m      *metrics
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ns     atomic.Pointer[namespaces] // nil until read from the hubs once
	ds     *durable                   // Durable Streams (dstream.go); nil: not served

	mu       sync.Mutex
	channels map[string]*channel
	conns    map[*conn]struct{}
	byID     map[string]*conn
	closing  bool
	// active counts connections being served, from before their upgrade
	// until they are closed: Shutdown waits for them.
	active sync.WaitGroup

	// goMu guards stopped and wg.Add: no goroutine is started once Close
	// waits for them.
	goMu    sync.Mutex
	stopped bool

	syncs *syncQueue
	root  http.Handler // mux, behind the streams' routing

	// Ids the gateway gives publishes sent without one (publish.go).
	pubPrefix string
	pubSeq    atomic.Uint64

	// Upstream position: every message of entries up to done was received
	// or read (done is where the stream resumes when positioned; before the
	// first line of a stream opened from now, it means nothing); last is
	// the highest index seen.
	done       atomic.Uint64
	positioned atomic.Bool
	last       atomic.Uint64
	streaming  atomic.Bool
	lastLine   atomic.Int64 // unix nanos of the last line from the stream

	// Counters of the admin view (admin.go): clients' publishes answered,
	// and channel messages queued to subscribers.
	published atomic.Uint64
	delivered atomic.Uint64
	// partialFlushes counts fan-out writes the socket took only part of,
	// left to the connection's writer (conn.flush): for tests.
	partialFlushes atomic.Uint64
	// The last report's time and deliveries (StatsJSON), under reportMu.
	reportMu         sync.Mutex
	reportAt         time.Time
	reportDeliveries uint64

	connSeq atomic.Uint64
	// start is the base of now; watchOnce starts watchWrites with the
	// first connection.
	start     time.Time
	watchOnce sync.Once
	upgrader  websocket.Upgrader
	sockjs    *sockjs.Handler
	sio       *socketio.Server // socketio.go
	mux       *http.ServeMux
}

// New returns a Server; Run starts following the hubs.
func New(cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		hub:      cfg.Hub,
		channels: make(map[string]*channel),
		conns:    make(map[*conn]struct{}),
		byID:     make(map[string]*conn),
		start:    time.Now(),
	}
	s.syncs = newSyncQueue(s, cfg.MaxSyncReads)
	s.pubPrefix = "~" + randomID(8) + "."
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.m = newMetrics(s)
	// Memory per connection: reads reuse the HTTP server's 4 KiB buffer
	// (ReadBufferSize 0), and a connection holds a write buffer only while
	// it writes (WriteBufferPool): most of 10,000 connections are idle at
	// any moment.
	writeBuffers := &sync.Pool{}
	s.upgrader = websocket.Upgrader{
		WriteBufferSize: 16 << 10,
		WriteBufferPool: writeBuffers,
		CheckOrigin:     s.checkOrigin,
	}
	opts := sockjs.DefaultOptions
	opts.CheckOrigin = s.checkOrigin
	opts.WebsocketUpgrader = &websocket.Upgrader{WriteBufferSize: 16 << 10, WriteBufferPool: writeBuffers, CheckOrigin: s.checkOrigin}
	opts.WebsocketWriteTimeout = cfg.WriteTimeout
	opts.HeartbeatDelay = cfg.PingInterval
	s.sockjs = sockjs.NewHandler("/sockjs", opts, s.serveSockJS)
	s.sio = s.newSocketIO()
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/ws", s.serveWS)
	s.mux.HandleFunc("/sse", s.serveSSE) // sse.go
	s.mux.Handle("/sockjs/", http.MaxBytesHandler(s.sockjsDeadline(s.sockjs), int64(4*cfg.MaxFrameBytes)))
	s.mux.Handle("/socket.io/", s.sio)
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("/readyz", s.serveReady)
	s.mux.Handle("/metrics", s.m.handler())
	s.mux.Handle("GET /{$}", static("demo/index.html")) // the demo page; other paths stay 404
	s.mux.Handle("GET /comet.js", static("comet.js"))
	s.mux.Handle("GET /sockjs.min.js", static("vendor/sockjs.min.js"))
	s.mux.Handle("/admin", adminpage.Handler())
	s.mux.HandleFunc("/v1/admin/", s.serveAdmin) // admin.go
	if cfg.StreamsPrefix != "-" {
		s.ds = newDurable(cfg.Hub, cfg.StreamWriter, cfg.StreamsPrefix)
	}
	s.root = s.mux
	if s.ds != nil {
		s.root = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Channel names may hold '/' and "..": route streams before
			// ServeMux, which cleans paths.
			if strings.HasPrefix(r.URL.Path, s.ds.prefix) {
				s.serveStream(w, r)
				return
			}
			s.mux.ServeHTTP(w, r)
		})
	}
	return s, nil
}

// sockjsDeadline bounds the time SockJS spends writing one HTTP response
// (polling waits up to a heartbeat; streaming responses are then cut and the
// client opens another, as after ResponseLimit): a client that stops reading
// cannot hold its session, and Close, forever.
func (s *Server) sockjsDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/websocket") {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.PingInterval + s.cfg.WriteTimeout))
		}
		h.ServeHTTP(w, r)
	})
}

// Handler serves /ws, /sockjs/, /socket.io/, /healthz, /readyz and /metrics, and to
// browsers the demo page at /, /comet.js and /sockjs.min.js (static.go).
func (s *Server) Handler() http.Handler { return s.root }

// Run follows the hubs' commit stream until Close. It returns at once;
// Close waits for what it started.
func (s *Server) Run() {
	s.spawn(s.follow)
	s.spawn(s.watchNamespaces)
}

// spawn runs fn in a goroutine that Close waits for; after Close it does
// nothing and reports false.
func (s *Server) spawn(fn func()) bool {
	s.goMu.Lock()
	defer s.goMu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// Ready returns nil when the gateway follows the commit stream and heard
// from it recently.
func (s *Server) Ready() error {
	if !s.streaming.Load() {
		return errors.New("not following the hubs' commit stream")
	}
	if age := time.Since(time.Unix(0, s.lastLine.Load())); age > 5*time.Second {
		return fmt.Errorf("commit stream silent for %v", age.Round(time.Millisecond))
	}
	if s.ns.Load() == nil {
		return errors.New("the namespaces were not read from the hubs yet")
	}
	if s.cfg.ReadyCheck != nil {
		return s.cfg.ReadyCheck()
	}
	return nil
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if err := s.Ready(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Shutdown closes every client connection with code 4001 (reconnect
// elsewhere), waiting at most until ctx ends for their queues to flush,
// then stops following the hubs. Connections that arrive meanwhile are
// closed with 4001 too. The caller stops its HTTP server as well, so that
// no new connection arrives.
func (s *Server) Shutdown(ctx context.Context) error {
	conns := s.markClosing()
	for _, c := range conns {
		c.close(wire.CloseShutdown, "gateway shutting down: reconnect elsewhere")
	}
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.Close()
	return err
}

// markClosing refuses new connections from now on and returns the open
// ones.
func (s *Server) markClosing() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// enter counts a connection about to be served; false when shutting down.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.active.Add(1)
	return true
}

// Close stops everything at once: connections are dropped without
// flushing. Use Shutdown for a graceful stop.
func (s *Server) Close() error {
	conns := s.markClosing()
	for _, c := range conns {
		c.close(wire.CloseShutdown, "gateway shutting down: reconnect elsewhere")
		go c.t.close() // no flush; a SockJS close may wait for a stuck response
	}
	s.sio.Close() // and sessions not yet connected; waits for their serve
	s.cancel()
	s.goMu.Lock()
	s.stopped = true
	s.goMu.Unlock()
	s.wg.Wait()
	return nil
}

// checkOrigin accepts requests without Origin (not from a browser), from
// the gateway's own host, and from AllowedOrigins.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	scheme, host, ok := strings.Cut(origin, "://")
	if !ok {
		return false
	}
	if strings.EqualFold(host, r.Host) {
		return true
	}
	for _, allowed := range s.cfg.AllowedOrigins {
		if allowed == "*" {
			return true
		}
		as, ah, _ := strings.Cut(allowed, "://")
		if !strings.EqualFold(as, scheme) {
			continue
		}
		if strings.EqualFold(ah, host) {
			return true
		}
		if suffix, ok := strings.CutPrefix(ah, "*."); ok && len(host) > len(suffix)+1 &&
			strings.EqualFold(host[len(host)-len(suffix)-1:], "."+suffix) {
			return true
		}
	}
	return false
}

func (s *Server) addConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.byID[c.id] = c
	return true
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.byID, c.id)
	s.mu.Unlock()
}

// now is the monotonic time since the server started, in nanoseconds,
// at least 1.
func (s *Server) now() int64 { return int64(time.Since(s.start)) | 1 }

// watchWrites enforces the write timeout: every WriteTimeout/8 it closes
// the connections whose frame being written has waited longer than
// WriteTimeout (the client stopped reading and the socket is full). A
// stuck client is dropped between WriteTimeout and 9/8 of it after its
// write started. One goroutine looking at every connection a few times a
// second costs less than moving each socket's deadline at every write.
func (s *Server) watchWrites() {
	period := max(s.cfg.WriteTimeout/8, time.Millisecond)
	tick := time.NewTicker(period)
	defer tick.Stop()
	var stuck []*conn
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		now, limit := s.now(), int64(s.cfg.WriteTimeout)
		s.mu.Lock()
		for c := range s.conns {
			if w := c.writing.Load(); w != 0 && now-w > limit {
				stuck = append(stuck, c)
			}
		}
		s.mu.Unlock()
		for _, c := range stuck {
			s.m.writeTimeouts.Inc()
			c.close(0, "")
			c.t.close() // the write under way fails
		}
		clear(stuck)
		stuck = stuck[:0]
	}
}

func (s *Server) newConnID() string {
	return s.cfg.ID + "-" + randomID(8)
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
