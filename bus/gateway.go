package bus

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/wire"
)

// GatewayConfig configures a Gateway. Zero fields take the defaults named.
type GatewayConfig struct {
	// ID is the gateway's id, the prefix of its connection ids. Required.
	// Two gateways attached with the same id replace each other.
	ID string
	// Dial opens a session link to the router (HubDialer, or a Pipe end
	// attached to an in-process hub). Required.
	Dial func(ctx context.Context) (Link, error)
	// Deliver puts data on the connection conn, returning ErrNoConnection
	// when the gateway holds no such connection. It is called from the
	// session's reader and must not block for long. Required.
	Deliver func(conn string, data json.RawMessage) error
	// QueueSize bounds the messages waiting to go to the router (default
	// 4096): requests wait for room, events are dropped.
	QueueSize int
	// DefaultTimeout bounds a request whose context has no deadline
	// (default 30s).
	DefaultTimeout time.Duration
	// MaxPublishes bounds the publishes in flight (default 4096): Publish
	// waits for room.
	MaxPublishes int
	// StallAfter is how long a session may stay silent while publishes
	// sent on it wait for an answer before it is taken for stalled (a
	// paused or hung hub) and dialed again (default 1s). The gateway pings
	// the router after half of it.
	StallAfter time.Duration
	// QuietStart is how long after Run starts a router that cannot be
	// reached yet is logged at INFO, not WARN (default 10s): hubs starting
	// with their gateways take about that to elect a leader. After it, or
	// once a session was up, a router out of reach is a warning.
	QuietStart time.Duration
	// Stats, when set, gives the gateway's wire.GatewayStats as JSON, sent
	// to the router (TypeStats) at the start of each session and then
	// every StatsInterval (default 1s), for the admin view. It is called on
	// the session's writer and must not block for long.
	Stats func() json.RawMessage
	// Presence, when set, gives the connections subscribed to a channel
	// on this gateway, as a JSON array of wire.PresenceEntry, for the
	// router's presence queries (TypePresence). It is called on the
	// session's reader and must not block for long.
	Presence func(channel string) json.RawMessage
	// JoinLeave, when set, hands the gateway the router's join and leave
	// messages (typ TypeJoin or TypeLeave). It is called on the session's
	// reader and must not block.
	JoinLeave     func(typ, channel, conn, user string)
	StatsInterval time.Duration
	Logger        *slog.Logger
}

// Request is a client's request, as a gateway forwards it.
type Request struct {
	Route string
	Data  json.RawMessage
	// Conn is the requesting connection's id, User its user ("" when
	// anonymous).
	Conn, User string
}

// Event is a connection event a gateway reports: Type is one of
// EventConnected, EventDisconnected, EventSubscribed, EventUnsubscribed;
// Channel is set for the last two.
type Event struct {
	Type, Conn, User, Channel string
}

// Gateway is a gateway's side of its session to the router: it keeps the
// session up, sends client requests and connection events, and delivers
// the messages workers send to its connections.
type Gateway struct {
	cfg     GatewayConfig
	log     *slog.Logger
	running atomic.Bool
	dropped atomic.Uint64

	mu   sync.Mutex
	sess *gwSession

	pmu   sync.Mutex
	ps    pubState      // publishes in flight, under pmu
	room  chan struct{} // semaphore of MaxPublishes
	pwake chan struct{} // a publish to send
}

// NewGateway returns a Gateway; Run keeps its session up.
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.ID == "" || cfg.Dial == nil || cfg.Deliver == nil {
		return nil, errors.New("bus: GatewayConfig needs ID, Dial and Deliver")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 30 * time.Second
	}
	if cfg.MaxPublishes <= 0 {
		cfg.MaxPublishes = 4096
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = time.Second
	}
	if cfg.QuietStart <= 0 {
		cfg.QuietStart = 10 * time.Second
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Gateway{cfg: cfg, log: cfg.Logger.With("component", "bus", "gateway", cfg.ID),
		ps:   pubState{byID: map[uint64]*pubOp{}},
		room: make(chan struct{}, cfg.MaxPublishes), pwake: make(chan struct{}, 1)}, nil
}

// gwSession is one session: its link, outgoing queue and requests waiting
// for an answer.
type gwSession struct {
	link   Link
	out    chan []byte
	done   chan struct{} // closed when the session has ended
	broken chan struct{} // closed when the writer has stopped

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	pending map[uint64]chan Msg

	pubs     bool         // the router takes publishes
	streams  bool         // the router takes stream writes (CapStreams)
	sentSeq  uint64       // publishes up to this seq were sent on it (under Gateway.pmu)
	lastRecv atomic.Int64 // when a message last came, Unix nanoseconds
}

// Run keeps a session to the router up until ctx ends: it dials, and
// dials again after a failure or the end of a session, waiting 50ms to
// 500ms between attempts. Requests made while no session is up fail at once
// (unavailable). Run returns nil when ctx ends; calling it twice at once is
// an error.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return errors.New("bus: Gateway.Run is already running")
	}
	defer g.running.Store(false)
	g.pmu.Lock()
	g.ps.stopped = false
	g.pmu.Unlock()
	ectx, stopExpire := context.WithCancel(ctx)
	expired := make(chan struct{})
	go func() { defer close(expired); g.expireLoop(ectx) }()
	defer func() {
		stopExpire()
		<-expired
		g.pmu.Lock()
		g.ps.stopped = true
		g.pmu.Unlock()
		// Answer what is left: nothing will send it any more.
		g.expire(time.Now().Add(100 * 365 * 24 * time.Hour))
	}()
	// At most 500ms between dials: publishes wait on the next session.
	b := Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	start := time.Now()
	var failing, warned, wasUp bool
	for ctx.Err() == nil {
		link, err := g.cfg.Dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			quiet := !wasUp && time.Since(start) < g.cfg.QuietStart
			switch {
			case quiet && !failing:
				g.log.Info("the router (on the hub leader) is not reachable yet; retrying", "err", err)
			case !quiet && !warned:
				g.log.Warn("cannot reach the router; retrying", "err", err)
				warned = true
			default:
				g.log.Debug("cannot reach the router", "err", err)
			}
			failing = true
			b.Wait(ctx)
			continue
		}
		up, err := g.session(ctx, link)
		if up {
			failing, warned, wasUp = false, false, true
			b.Reset()
		}
		if ctx.Err() != nil {
			break
		}
		g.log.Info("router session ended; dialing again", "err", err)
		b.Wait(ctx)
	}
	return nil
}

// Connected reports whether a session to the router is up.
func (g *Gateway) Connected() bool { return g.current() != nil }

// Dropped returns how many events were dropped so far because no session
// was up or its queue was full.
func (g *Gateway) Dropped() uint64 { return g.dropped.Load() }

func (g *Gateway) current() *gwSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sess
}

// helloTimeout bounds the wait for the router's welcome.
const helloTimeout = 10 * time.Second

// session runs one session until it breaks; up reports whether the router
// welcomed it.
func (g *Gateway) session(ctx context.Context, link Link) (up bool, err error) {
	defer link.Close()
	stop := context.AfterFunc(ctx, func() { link.Close() })
	defer stop()
	hello := Msg{Type: TypeHello, Kind: KindGateway, Name: g.cfg.ID}
	if g.cfg.Presence != nil {
		hello.Caps = append(hello.Caps, CapPresence)
	}
	if g.cfg.JoinLeave != nil {
		hello.Caps = append(hello.Caps, CapJoinLeave)
	}
	welcome, err := Hello(ctx, link, hello)
	if err != nil {
		return false, err
	}
	s := &gwSession{link: link, out: make(chan []byte, g.cfg.QueueSize), done: make(chan struct{}),
		broken: make(chan struct{}), pending: map[uint64]chan Msg{}, pubs: slices.Contains(welcome.Caps, CapPublish),
		streams: slices.Contains(welcome.Caps, CapStreams)}
	s.lastRecv.Store(time.Now().UnixNano())
	g.mu.Lock()
	g.sess = s
	g.mu.Unlock()
	g.log.Info("router session up", "router", welcome.Name, "publishes", s.pubs, "streams", s.streams)
	if !s.pubs {
		g.failAll(ErrNoPublish)
	}
	g.wakePublishes() // those not answered on the last session
	var wg sync.WaitGroup
	wg.Go(func() { g.write(s) })
	defer func() {
		g.mu.Lock()
		if g.sess == s {
			g.sess = nil
		}
		g.mu.Unlock()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done) // waiting requests fail: unavailable
		link.Close()
		wg.Wait()
	}()
	for {
		b, err := link.Recv()
		if err != nil {
			return true, err
		}
		s.lastRecv.Store(time.Now().UnixNano())
		m, err := Decode(b)
		if err != nil {
			return true, err
		}
		switch m.Type {
		case TypeAck:
			g.ack(m)
		case TypePong:
		case TypeResponse:
			s.answer(m)
		case TypeSend:
			res := Msg{Type: TypeSent, ID: m.ID}
			if err := g.cfg.Deliver(m.Conn, m.Data); errors.Is(err, ErrNoConnection) {
				res.Error = &wire.Error{Code: wire.CodeNotFound, Message: "no connection " + m.Conn + " on gateway " + g.cfg.ID}
			} else if err != nil {
				res.Error = &wire.Error{Code: wire.CodeUnavailable, Message: err.Error()}
			}
			select {
			case s.out <- res.Encode():
			case <-s.broken:
				return true, ErrClosed
			}
		case TypePresence:
			res := Msg{Type: TypePresenceResult, ID: m.ID, Data: json.RawMessage("[]")}
			if g.cfg.Presence != nil {
				res.Data = g.cfg.Presence(m.Channel)
			}
			select {
			case s.out <- res.Encode():
			case <-s.broken:
				return true, ErrClosed
			}
		case TypeJoin, TypeLeave:
			if g.cfg.JoinLeave != nil {
				g.cfg.JoinLeave(m.Type, m.Channel, m.Conn, m.User)
			}
		case TypeError:
			return true, m.Error
		default:
			g.log.Debug("unexpected bus message", "type", m.Type)
		}
	}
}

// Hello sends hello on link and waits (at most 10s, or until ctx ends) for
// the router's welcome, which it returns. A refusal comes back as the
// router's *wire.Error.
func Hello(ctx context.Context, link Link, hello Msg) (Msg, error) {
	t := time.AfterFunc(helloTimeout, func() { link.Close() })
	defer t.Stop()
	if err := link.Send(ctx, hello.Encode()); err != nil {
		return Msg{}, err
	}
	b, err := link.Recv()
	if err != nil {
		return Msg{}, err
	}
	m, err := Decode(b)
	switch {
	case err != nil:
		return Msg{}, err
	case m.Type == TypeError && m.Error != nil:
		return Msg{}, m.Error
	case m.Type != TypeWelcome:
		return Msg{}, errors.New("bus: the router answered hello with " + m.Type)
	}
	return m, nil
}

// write sends what is queued on s and the publishes to send, and watches
// for a stalled router, until the session ends.
func (g *Gateway) write(s *gwSession) {
	defer close(s.broken)
	t := time.NewTicker(writerTick)
	defer t.Stop()
	var pinged, reported time.Time
	for {
		var batch [][]byte
		select {
		case b := <-s.out:
			// Whatever else is queued goes in the same write.
			batch = DrainInto([][]byte{b}, s.out, maxBatchMsgs)
		case <-g.pwake:
		case now := <-t.C:
			// A router that answers nothing while publishes wait on it
			// may be paused or hung: ping it, and give it up when it does
			// not answer that either.
			silent := now.Sub(time.Unix(0, s.lastRecv.Load()))
			if silent >= g.cfg.StallAfter/2 && g.outstanding(s) {
				if silent >= g.cfg.StallAfter {
					g.log.Warn("router session stalled: no answer while publishes wait; dialing again", "silent", silent.Round(time.Millisecond))
					if n, ok := s.link.(stallNoter); ok {
						n.Stalled()
					}
					s.link.Close()
					return
				}
				if now.Sub(pinged) >= g.cfg.StallAfter/4 {
					pinged = now
					batch = append(batch, (&Msg{Type: TypePing}).Encode())
				}
			}
			if g.cfg.Stats != nil && now.Sub(reported) >= g.cfg.StatsInterval {
				reported = now
				if data := g.cfg.Stats(); len(data) > 0 {
					batch = append(batch, (&Msg{Type: TypeStats, Data: data}).Encode())
				}
			}
		case <-s.done:
			return
		}
		if s.pubs {
			now := time.Now()
			owed := g.outstanding(s)
			n := len(batch)
			batch = g.takePublishes(s, batch, now)
			if !owed && len(batch) > n {
				// Nothing was owed: the router's silence counts from now.
				s.lastRecv.Store(now.UnixNano())
			}
		}
		if len(batch) == 0 {
			continue
		}
		if err := s.link.SendBatch(context.Background(), batch); err != nil {
			s.link.Close()
			return
		}
	}
}

func (s *gwSession) register() (uint64, chan Msg, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, nil, false
	}
	s.nextID++
	ch := make(chan Msg, 1)
	s.pending[s.nextID] = ch
	return s.nextID, ch, true
}

func (s *gwSession) forget(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

func (s *gwSession) answer(m Msg) {
	s.mu.Lock()
	ch := s.pending[m.ID]
	delete(s.pending, m.ID)
	s.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// Errors of Request besides the worker's own.
var (
	errNoSession = &wire.Error{Code: wire.CodeUnavailable, Message: "no session to the router right now"}
	errBroke     = &wire.Error{Code: wire.CodeUnavailable, Message: "the session to the router broke during the request"}
	errTimeout   = &wire.Error{Code: wire.CodeTimeout, Message: "no answer from a worker in time"}
	errCanceled  = &wire.Error{Code: wire.CodeUnavailable, Message: "request canceled"}
)

// Request asks a worker serving req.Route and returns its answer. ctx's
// deadline (DefaultTimeout without one) travels to the worker. Failures are
// *wire.Error: not_found when no worker serves the route, timeout when the
// deadline passes, unavailable when no session is up or it breaks, or the
// worker dies while handling a request it may not retry, or the worker's
// own error.
func (g *Gateway) Request(ctx context.Context, req Request) (json.RawMessage, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.DefaultTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	if req.Route == "" {
		return nil, &wire.Error{Code: wire.CodeBadRequest, Message: "request needs a route"}
	}
	s := g.current()
	if s == nil {
		return nil, errNoSession
	}
	id, ch, ok := s.register()
	if !ok {
		return nil, errNoSession
	}
	m := Msg{Type: TypeRequest, ID: id, Route: req.Route, Data: req.Data, Conn: req.Conn, User: req.User, Timeout: TimeoutOf(deadline)}
	select {
	case s.out <- m.Encode():
	case <-s.done:
		return nil, errBroke
	case <-ctx.Done():
		s.forget(id)
		return nil, ctxError(ctx)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, m.Error
		}
		if len(m.Data) == 0 {
			return json.RawMessage("null"), nil
		}
		return m.Data, nil
	case <-s.done:
		return nil, errBroke
	case <-ctx.Done():
		s.forget(id)
		return nil, ctxError(ctx)
	}
}

func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errTimeout
	}
	return errCanceled
}

// ErrNoStreams is returned by StreamOp when the router takes no stream
// writes (no session, or a router of an earlier release): nothing was
// sent, the caller sends the write another way.
var ErrNoStreams = errors.New("the router takes no stream writes right now")

// StreamOp hands a Durable Streams write to the router on the hub leader
// and returns the hubs' decision. ErrNoStreams: not sent. Other failures
// are *wire.Error: unavailable when the session breaks before the answer
// (the write may or may not have been applied), timeout when ctx ends
// first.
func (g *Gateway) StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error) {
	s := g.current()
	if s == nil || !s.streams {
		return wire.StreamResult{}, ErrNoStreams
	}
	data, err := marshal(op)
	if err != nil {
		return wire.StreamResult{}, err
	}
	id, ch, ok := s.register()
	if !ok {
		return wire.StreamResult{}, ErrNoStreams
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(g.cfg.DefaultTimeout)
	}
	m := Msg{Type: TypeStreamOp, ID: id, Data: data, Timeout: TimeoutOf(deadline)}
	select {
	case s.out <- m.Encode():
	case <-s.done:
		s.forget(id)
		return wire.StreamResult{}, ErrNoStreams
	case <-ctx.Done():
		s.forget(id)
		return wire.StreamResult{}, ctxError(ctx)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return wire.StreamResult{}, m.Error
		}
		var res wire.StreamResult
		if err := json.Unmarshal(m.Data, &res); err != nil {
			return res, &wire.Error{Code: wire.CodeUnavailable, Message: "a bad stream answer from the router: " + err.Error()}
		}
		return res, nil
	case <-s.done:
		return wire.StreamResult{}, errBroke
	case <-ctx.Done():
		s.forget(id)
		return wire.StreamResult{}, ctxError(ctx)
	}
}

// Event reports a connection event to the workers that watch events. It
// never blocks: without a session, or with its queue full, the event is
// dropped and counted (Dropped).
func (g *Gateway) Event(ev Event) {
	s := g.current()
	if s == nil {
		g.dropped.Add(1)
		return
	}
	m := Msg{Type: TypeEvent, Event: ev.Type, Conn: ev.Conn, User: ev.User, Channel: ev.Channel}
	select {
	case s.out <- m.Encode():
	default:
		g.dropped.Add(1)
	}
}

// Backoff waits between attempts: Min at first, doubling up to Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Wait waits for the current delay, or until ctx ends, and doubles it.
func (b *Backoff) Wait(ctx context.Context) {
	if b.cur < b.Min {
		b.cur = b.Min
	}
	t := time.NewTimer(b.cur)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.cur = min(b.cur*2, b.Max)
}

// Reset starts the delays over from Min.
func (b *Backoff) Reset() { b.cur = b.Min }
