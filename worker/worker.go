package worker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/wire"
)

var (
	// ErrNotFound is wrapped by the error SendToConnection returns when no
	// gateway holds the connection. It is a *wire.Error with code
	// not_found.
	ErrNotFound = &wire.Error{Code: wire.CodeNotFound, Message: "no such connection"}
	// ErrClosed is returned by calls on a closed Worker.
	ErrClosed = errors.New("worker is closed")
)

// errNoSession fails a SendToConnection made while no session is up.
var errNoSession = &wire.Error{Code: wire.CodeUnavailable, Message: "no session to the router right now"}

// Config configures a Worker. Zero fields take the defaults named.
type Config struct {
	// Hubs are the hubs' API addresses (host:port, or https://host:port
	// for hubs that serve https); with `comet standalone`, its --listen
	// address. Required unless Dial is set.
	Hubs []string
	// Secret is the hubs' --secret, sent as "Authorization: Bearer".
	Secret string
	// TLS, when set, makes the worker reach the hubs over https and wss,
	// verifying their certificates with it (set RootCAs to a private CA's
	// pool; nil RootCAs: the system's roots); Hubs may then be bare
	// host:port. Hubs written https:// without TLS use the system's roots.
	TLS *tls.Config
	// Name names the worker in the hubs' logs (default "worker"). Workers
	// may share a name.
	Name string
	// EventBuffer is the capacity of the Events channel, and the bound of
	// the connection events waiting to enter it (default 4096).
	EventBuffer int
	// MaxInFlight bounds the handlers running at once (default 256); the
	// router sends no more requests than that.
	MaxInFlight int
	// Timeout bounds a Publish or SendToConnection whose context has no
	// deadline, and each call to the hubs' HTTP API (default 10s).
	Timeout time.Duration
	// Dial opens the session to the router (default
	// bus.HubDialer(Hubs, Secret, TLS, Logger)).
	Dial   func(ctx context.Context) (bus.Link, error)
	Logger *slog.Logger
}

func (c *Config) fill() error {
	if len(c.Hubs) == 0 && c.Dial == nil {
		return errors.New("worker: Config.Hubs is required")
	}
	if len(c.Hubs) > 0 {
		hubs, useTLS, err := hubapi.SplitScheme(c.Hubs, c.TLS != nil)
		if err != nil {
			return fmt.Errorf("worker: Config.Hubs: %w", err)
		}
		c.Hubs = hubs
		if useTLS && c.TLS == nil {
			c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if !useTLS {
			c.TLS = nil
		}
	}
	if c.Name == "" {
		c.Name = "worker"
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = 4096
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dial == nil {
		c.Dial = bus.HubDialer(c.Hubs, c.Secret, c.TLS, c.Logger)
	}
	return nil
}

// Handler answers a request. Its answer is encoded as JSON (a
// json.RawMessage passes as it is); an error becomes an error frame to the
// client: a *Error (or *wire.Error) chooses the code, ctx's deadline
// passing means timeout, and any other error is bad_request with
// err.Error() as the message. ctx ends at the request's deadline or when
// the worker closes.
type Handler func(ctx context.Context, req Request) (any, error)

// Request is a client's request.
type Request struct {
	Route string
	Data  json.RawMessage
	// Connection is the id of the client's connection; SendToConnection
	// reaches it.
	Connection string
	// User is the connection's authenticated user, "" when anonymous.
	User string
}

// Error is an error a handler returns to choose the client's error code.
type Error struct {
	// Code is one of wire.Code* (bad_request, not_found, forbidden,
	// too_large, unavailable, timeout); another is sent as bad_request.
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// RouteOption adjusts how a route is served.
type RouteOption func(*route)

// Idempotent says that a request of the route may be handled twice: when
// this worker goes away while handling one, the router tries it once on
// another worker serving the route.
func Idempotent() RouteOption { return func(r *route) { r.idempotent = true } }

type route struct {
	h          Handler
	idempotent bool
}

// Worker serves routes, and sends, publishes and watches events for the
// application. Its lifecycle: New, Handle (before or after Start), Start,
// Close.
type Worker struct {
	cfg    Config
	log    *slog.Logger
	hubs   *hubapi.Hubs // nil without Config.Hubs
	sem    chan struct{}
	events chan Event
	conns  *connEvents
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	// eventsOnce turns events on, once.
	eventsOnce sync.Once

	mu         sync.Mutex
	routes     map[string]route
	eventsOn   bool
	started    bool
	closed     bool
	sess       *session // the current session, once welcomed
	upCh       chan struct{}
	eventsFrom uint64 // the commit-stream position Events started at (0: now)
}

// New returns a Worker. It does not connect before Start.
func New(cfg Config) (*Worker, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "worker", "name", cfg.Name),
		sem:    make(chan struct{}, cfg.MaxInFlight),
		events: make(chan Event, cfg.EventBuffer),
		conns:  newConnEvents(cfg.EventBuffer),
		routes: map[string]route{},
		upCh:   make(chan struct{}),
	}
	if len(cfg.Hubs) > 0 {
		hubs, err := hubapi.NewHubs(cfg.Hubs, cfg.Timeout, 64)
		if err != nil {
			return nil, fmt.Errorf("worker: Config.Hubs: %w", err)
		}
		hubs.SetSecret(cfg.Secret)
		if cfg.TLS != nil {
			hubs.SetTLS(cfg.TLS)
		}
		w.hubs = hubs
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w, nil
}

// Handle serves route with h, replacing any handler it had. It may be
// called before or after Start; after, the router learns of it at once.
// Like http.HandleFunc, it panics on a programming error: an empty route,
// one over 255 bytes, or a nil handler (the router would refuse the
// worker's every route for it).
func (w *Worker) Handle(route string, h Handler, opts ...RouteOption) {
	if route == "" || len(route) > 255 || h == nil {
		panic(fmt.Sprintf("worker: Handle(%.80q): a route is 1-255 bytes, with a non-nil handler", route))
	}
	r := routeOf(h, opts)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.routes[route] = r
	if w.sess != nil {
		w.sess.signalUpdate()
	}
}

func routeOf(h Handler, opts []RouteOption) route {
	r := route{h: h}
	for _, o := range opts {
		o(&r)
	}
	return r
}

// Start connects to the router, and keeps connecting after failures and
// leader changes, until Close. It returns at once; WaitConnected tells when
// the routes are registered.
func (w *Worker) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.started {
		return errors.New("worker: already started")
	}
	w.started = true
	w.wg.Go(w.run)
	if w.eventsOn {
		w.startEventsLocked()
	}
	return nil
}

// Close stops the worker: the session ends (requests being handled are
// canceled through their ctx, and their answers lost), the Events channel
// is closed once nothing more can arrive. It waits for every goroutine the
// worker started, handlers included. It is idempotent.
func (w *Worker) Close() error {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.cancel()
		w.wg.Wait()
		close(w.events)
		if w.hubs != nil {
			w.hubs.CloseIdleConnections()
		}
	})
	return nil
}

// WaitConnected waits until a session to the router is up, with this
// worker's routes registered, or ctx ends.
func (w *Worker) WaitConnected(ctx context.Context) error {
	for {
		w.mu.Lock()
		up, ch, closed := w.sess != nil, w.upCh, w.closed
		w.mu.Unlock()
		if up {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.ctx.Done():
			return ErrClosed
		}
	}
}

// run keeps a session up until Close.
func (w *Worker) run() {
	b := bus.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	failing := false
	for w.ctx.Err() == nil {
		link, err := w.cfg.Dial(w.ctx)
		if err != nil {
			if w.ctx.Err() != nil {
				return
			}
			if !failing {
				w.log.Warn("cannot reach the router; retrying", "err", err)
				failing = true
			} else {
				w.log.Debug("cannot reach the router", "err", err)
			}
			b.Wait(w.ctx)
			continue
		}
		up, err := w.session(link)
		if up {
			failing = false
			b.Reset()
		}
		if w.ctx.Err() != nil {
			return
		}
		w.log.Info("router session ended; dialing again", "err", err)
		b.Wait(w.ctx)
	}
}

// session is one session to the router.
type session struct {
	link   bus.Link
	out    chan []byte   // answers and sends
	update chan struct{} // routes or events changed: send an update
	done   chan struct{} // closed when the session has ended
	broken chan struct{} // closed when the writer has stopped

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	pending map[uint64]chan bus.Msg
}

func (s *session) signalUpdate() {
	select {
	case s.update <- struct{}{}:
	default:
	}
}

// helloLocked is the hello (or update) that tells the router what this
// worker serves now.
func (w *Worker) helloLocked(typ string) bus.Msg {
	m := bus.Msg{Type: typ, Events: w.eventsOn}
	if typ == bus.TypeHello {
		m.Kind, m.Name, m.Max = bus.KindWorker, w.cfg.Name, w.cfg.MaxInFlight
	}
	for name, r := range w.routes {
		m.Routes = append(m.Routes, bus.Route{Route: name, Idempotent: r.idempotent})
	}
	slices.SortFunc(m.Routes, func(a, b bus.Route) int {
		switch {
		case a.Route < b.Route:
			return -1
		case a.Route > b.Route:
			return 1
		}
		return 0
	})
	return m
}

// session runs one session until it breaks; up reports whether the router
// welcomed it.
func (w *Worker) session(link bus.Link) (up bool, err error) {
	defer link.Close()
	stop := context.AfterFunc(w.ctx, func() { link.Close() })
	defer stop()
	s := &session{
		link:    link,
		out:     make(chan []byte, w.cfg.MaxInFlight+64),
		update:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		broken:  make(chan struct{}),
		pending: map[uint64]chan bus.Msg{},
	}
	w.mu.Lock()
	hello := w.helloLocked(bus.TypeHello)
	w.mu.Unlock()
	if _, err := bus.Hello(w.ctx, link, hello); err != nil {
		return false, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { w.write(s) })
	w.mu.Lock()
	w.sess = s
	close(w.upCh)
	// Routes or events may have changed since the hello was made.
	if !sameRoutes(hello, w.helloLocked(bus.TypeHello)) {
		s.signalUpdate()
	}
	w.mu.Unlock()
	w.log.Info("router session up", "routes", len(hello.Routes))
	defer func() {
		w.mu.Lock()
		w.sess = nil
		w.upCh = make(chan struct{})
		w.mu.Unlock()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		link.Close()
		wg.Wait()
	}()
	for {
		b, err := link.Recv()
		if err != nil {
			return true, err
		}
		m, err := bus.Decode(b)
		if err != nil {
			return true, err
		}
		switch m.Type {
		case bus.TypeRequest:
			select {
			case w.sem <- struct{}{}:
				w.wg.Go(func() { w.handle(s, m) })
			default:
				// The router sends no more than MaxInFlight; this one came
				// as a handler past its deadline still runs.
				s.answer(w.ctx, bus.Msg{Type: bus.TypeResponse, ID: m.ID, Busy: true,
					Error: &wire.Error{Code: wire.CodeUnavailable, Message: "worker at capacity"}})
			}
		case bus.TypeSent:
			s.mu.Lock()
			ch := s.pending[m.ID]
			delete(s.pending, m.ID)
			s.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		case bus.TypeEvent:
			w.conns.push(Event{Type: m.Event, Connection: m.Conn, User: m.User, Channel: m.Channel})
		case bus.TypeDropped:
			w.conns.drop(m.Count)
		case bus.TypeError:
			return true, m.Error
		default:
			w.log.Debug("unexpected bus message", "type", m.Type)
		}
	}
}

func sameRoutes(a, b bus.Msg) bool {
	return a.Events == b.Events && slices.Equal(a.Routes, b.Routes)
}

// write sends answers, sends and updates until the session ends.
func (w *Worker) write(s *session) {
	defer close(s.broken)
	for {
		var batch [][]byte
		select {
		case b := <-s.out:
			// Whatever else is queued goes in the same write.
			batch = bus.DrainInto([][]byte{b}, s.out, 256)
		case <-s.update:
			w.mu.Lock()
			m := w.helloLocked(bus.TypeUpdate)
			w.mu.Unlock()
			batch = [][]byte{m.Encode()}
		case <-s.done:
			return
		}
		if err := s.link.SendBatch(context.Background(), batch); err != nil {
			s.link.Close()
			return
		}
	}
}

// answer queues a message, unless the session or the worker ends first.
func (s *session) answer(ctx context.Context, m bus.Msg) {
	select {
	case s.out <- m.Encode():
	case <-s.broken:
	case <-s.done:
	case <-ctx.Done():
	}
}

// maxAnswerBytes bounds a handler's encoded answer.
const maxAnswerBytes = bus.MaxMsgBytes - 64<<10

// handle runs a handler and answers the router.
func (w *Worker) handle(s *session, m bus.Msg) {
	defer func() { <-w.sem }()
	ctx, cancel := context.WithDeadline(w.ctx, bus.DeadlineOf(m.Timeout, 30*time.Second))
	defer cancel()
	res := bus.Msg{Type: bus.TypeResponse, ID: m.ID}
	w.mu.Lock()
	r, ok := w.routes[m.Route]
	w.mu.Unlock()
	if !ok {
		res.Error = &wire.Error{Code: wire.CodeNotFound, Message: "this worker does not serve route " + m.Route}
	} else {
		res.Data, res.Error = w.call(ctx, r.h, Request{Route: m.Route, Data: m.Data, Connection: m.Conn, User: m.User})
	}
	if ctx.Err() != nil {
		return // past the deadline, the router has answered already
	}
	s.answer(w.ctx, res)
}

// call runs h, turning its answer, error or panic into a response.
func (w *Worker) call(ctx context.Context, h Handler, req Request) (data json.RawMessage, e *wire.Error) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error("handler panicked", "route", req.Route, "panic", p, "stack", string(debug.Stack()))
			data, e = nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the worker failed to handle the request"}
		}
	}()
	v, err := h(ctx, req)
	if err != nil {
		return nil, errorOf(ctx, err)
	}
	data, err = encode(v)
	if err != nil {
		w.log.Error("cannot encode an answer", "route", req.Route, "err", err)
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the worker could not encode its answer"}
	}
	if len(data) > maxAnswerBytes {
		return nil, &wire.Error{Code: wire.CodeTooLarge, Message: fmt.Sprintf("the answer is %d bytes, over %d", len(data), maxAnswerBytes)}
	}
	return data, nil
}

// errorOf is the client's error for a handler's error.
func errorOf(ctx context.Context, err error) *wire.Error {
	var (
		we *Error
		ww *wire.Error
	)
	switch {
	case errors.As(err, &we):
		return &wire.Error{Code: knownCode(we.Code), Message: we.Message}
	case errors.As(err, &ww):
		return &wire.Error{Code: knownCode(ww.Code), Message: ww.Message}
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return &wire.Error{Code: wire.CodeTimeout, Message: err.Error()}
	default:
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
}

func knownCode(code string) string {
	if wire.KnownCode(code) {
		return code
	}
	return wire.CodeBadRequest
}

// encode returns v as compact JSON; a json.RawMessage is checked and
// passed as it is.
func encode(v any) (json.RawMessage, error) {
	switch v := v.(type) {
	case json.RawMessage:
		if len(v) == 0 {
			return json.RawMessage("null"), nil
		}
		return bus.Compact(v)
	case nil:
		return json.RawMessage("null"), nil
	}
	return json.Marshal(v)
}

// SendToConnection puts data (encoded as JSON, a json.RawMessage as it is)
// on the client connection conn, whichever gateway holds it, and returns
// once that gateway has queued it. The client gets it as {"op":"message",
// "data":...} (as the gateway frames it). An unknown connection is an
// error wrapping ErrNotFound; other failures are *wire.Error.
func (w *Worker) SendToConnection(ctx context.Context, conn string, data any) error {
	if err := bus.CheckConn(conn); err != nil {
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
	raw, err := encode(data)
	if err != nil {
		return &wire.Error{Code: wire.CodeBadRequest, Message: "cannot encode data: " + err.Error()}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.Timeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	w.mu.Lock()
	s, closed := w.sess, w.closed
	w.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if s == nil {
		return errNoSession
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errNoSession
	}
	s.nextID++
	id := s.nextID
	ch := make(chan bus.Msg, 1)
	s.pending[id] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}
	broke := &wire.Error{Code: wire.CodeUnavailable, Message: "the session to the router broke during the send"}
	select {
	case s.out <- (&bus.Msg{Type: bus.TypeSend, ID: id, Conn: conn, Data: raw, Timeout: bus.TimeoutOf(deadline)}).Encode():
	case <-s.done:
		return broke
	case <-ctx.Done():
		forget()
		return fmt.Errorf("send to %s: %w", conn, ctx.Err())
	}
	select {
	case m := <-ch:
		switch {
		case m.Error == nil:
			return nil
		case m.Error.Code == wire.CodeNotFound:
			return fmt.Errorf("%s: %w", m.Error.Message, ErrNotFound)
		default:
			return m.Error
		}
	case <-s.done:
		return broke
	case <-ctx.Done():
		forget()
		return fmt.Errorf("send to %s: %w", conn, ctx.Err())
	}
}

// Publish publishes data (encoded as JSON, a json.RawMessage as it is) to
// channel through the hubs' HTTP API, moving to another hub when one cannot
// be reached (and, with an id, when one answers unavailable: the retry is
// harmless, guarantee 4). It returns once the message is committed. A
// hub's error answer is a *hubapi.APIError, and errors.As finds its
// *wire.Error.
func (w *Worker) Publish(ctx context.Context, channel string, data any, id string) (wire.PublishResponse, error) {
	if w.hubs == nil {
		return wire.PublishResponse{}, errors.New("worker: Publish needs Config.Hubs")
	}
	raw, err := encode(data)
	if err != nil {
		return wire.PublishResponse{}, &wire.Error{Code: wire.CodeBadRequest, Message: "cannot encode data: " + err.Error()}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.Timeout)
		defer cancel()
	}
	return w.hubs.Publish(ctx, wire.PublishRequest{Channel: channel, Data: raw, ID: id})
}

// Message is one publish of PublishBatch: Data is encoded as JSON (a
// json.RawMessage as it is); ID is its idempotency key, or "".
type Message struct {
	Channel string
	Data    any
	ID      string
}

// MaxBatch is how many messages PublishBatch sends in one request (the
// hubs' limit of the batch form of POST /v1/publish).
const MaxBatch = 1000

// PublishBatch publishes msgs through the hubs' HTTP API in batches of up
// to MaxBatch per request, one request after another, so that they are
// stored in the order given, and returns one result per message, in order:
// its offset, or its error (Code, Message) when that message failed (a bad
// channel, too large, or unavailable). Failover is that of
// hubapi.Hubs.PublishBatch: only messages with an id are sent again once
// they may have been received. The error is for a batch refused whole or
// not sent (data that cannot be encoded, no hub reached); the results of
// the batches before it are returned with it.
func (w *Worker) PublishBatch(ctx context.Context, msgs []Message) ([]wire.PublishResult, error) {
	if w.hubs == nil {
		return nil, errors.New("worker: PublishBatch needs Config.Hubs")
	}
	reqs := make([]wire.PublishRequest, len(msgs))
	for i, m := range msgs {
		raw, err := encode(m.Data)
		if err != nil {
			return nil, &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("message %d: cannot encode data: %v", i, err)}
		}
		reqs[i] = wire.PublishRequest{Channel: m.Channel, Data: raw, ID: m.ID}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.Timeout)
		defer cancel()
	}
	out := make([]wire.PublishResult, 0, len(reqs))
	for start := 0; start < len(reqs); start += MaxBatch {
		res, err := w.hubs.PublishBatch(ctx, reqs[start:min(start+MaxBatch, len(reqs))])
		if err != nil {
			return out, err
		}
		out = append(out, res...)
	}
	return out, nil
}
