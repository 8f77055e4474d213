package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// The router runs on the hub leader. Gateways and workers each hold one
// session to it (package bus): it routes client requests to workers, the
// messages workers send to connections to the gateway that holds them
// (named by the connection id, "<gateway>-<hex>"), and gateways' connection
// events to the workers that watch them. It keeps nothing on disk and
// replicates nothing: when its hub stops leading, or shuts down, it closes
// every session, failing what is in flight, and the peers find the new
// leader.

// Bounds of a session's outgoing queue. Past routerQueueMsgs messages (or
// routerQueueBytes) the peer is too slow and its session is closed (a
// gateway has up to 4,096 publishes in flight, each answered by an ack
// here, by default: bus.GatewayConfig.MaxPublishes); events
// are dropped, and counted, past routerEventMsgs (or half the bytes), so
// that they never crowd requests out.
const (
	routerQueueMsgs  = 16384
	routerQueueBytes = 32 << 20
	routerEventMsgs  = 1024
)

// Defaults of the router: how long a request or a send may wait when its
// sender says nothing, and how many requests a worker that says nothing
// handles at once.
const (
	routerDefaultTimeout = 30 * time.Second
	routerDefaultMax     = 256
	routerMaxMax         = 1 << 16
	routerLeaderCheck    = 100 * time.Millisecond
)

// Request results, the labels of comet_bus_requests_total.
const (
	resultOK          = "ok"
	resultError       = "error" // the worker answered with an error
	resultNotFound    = "not_found"
	resultTimeout     = "timeout"
	resultUnavailable = "unavailable"
)

var errBusNotLeader = errors.New("not the leader")

type router struct {
	s   *Service
	log *slog.Logger

	mu       sync.Mutex
	closed   bool
	seq      uint64 // session numbers, for logs
	sessions map[*session]struct{}
	gateways map[string]*session
	routes   map[string][]*session // route -> the workers serving it, in attach order
	rot      uint64                // rotates ties between workers
	nextID   uint64
	requests map[uint64]*routed
	sends    map[uint64]*sendOp
	presence map[uint64]*presenceQuery // presence.go
	wg       sync.WaitGroup            // session goroutines
	// leading is when this hub was first seen leading (zero: not leading);
	// gone is when each gateway's last session ended.
	leading time.Time
	gone    map[string]time.Time
}

// session is one peer's session.
type session struct {
	r    *router
	link bus.Link
	seq  uint64
	kind string
	name string
	q    outQueue
	once sync.Once
	done chan struct{} // closed by close
	log  *slog.Logger

	// Publishes of a gateway's session (publish_bus.go).
	pubMu sync.Mutex
	pubs  sessionPubs

	// A gateway's last report (TypeStats) and when it came, under r.mu
	// (admin.go).
	stats   *wire.GatewayStats
	statsAt time.Time

	// streamSlots bounds the stream writes in flight (dstream.go).
	streamSlots chan struct{}

	// caps: what the peer said it takes in its hello (bus.CapPresence).
	caps map[string]bool
	// joined: a gateway's connections subscribed to channels whose
	// namespace has join_leave, with their users, under r.mu: they leave
	// when the session ends (presence.go).
	joined map[joinKey]string

	// Worker state, guarded by r.mu.
	routes   map[string]bool // route -> idempotent
	events   bool
	max      int
	inflight int
}

// routed is a request in flight.
type routed struct {
	gw       *session // nil once the gateway's session ended
	gwID     uint64
	route    string
	data     json.RawMessage
	conn     string
	user     string
	deadline time.Time
	worker   *session
	retried  bool
	timer    *time.Timer
}

// sendOp is a message on its way to a connection.
type sendOp struct {
	gw    *session
	done  func(*wire.Error)
	timer *time.Timer
}

func newRouter(s *Service) *router {
	return &router{
		s:        s,
		log:      s.logger.With("component", "router"),
		sessions: map[*session]struct{}{},
		gateways: map[string]*session{},
		routes:   map[string][]*session{},
		requests: map[uint64]*routed{},
		sends:    map[uint64]*sendOp{},
		presence: map[uint64]*presenceQuery{},
		gone:     map[string]time.Time{},
	}
}

// settlingLocked reports whether peers may still be attaching to this
// router: it began leading less than Config.BusSettle ago.
func (r *router) settlingLocked() bool {
	return r.leading.IsZero() || time.Since(r.leading) < r.s.cfg.BusSettle
}

// run closes every session when this hub stops leading, until ctx ends.
func (r *router) run(ctx context.Context) {
	if r == nil {
		return
	}
	t := time.NewTicker(routerLeaderCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.close()
			return
		case <-t.C:
		}
		leader := r.s.node.IsLeader()
		r.mu.Lock()
		switch {
		case leader && r.leading.IsZero():
			r.leading = time.Now()
		case !leader:
			r.leading = time.Time{}
		}
		for name, at := range r.gone {
			if time.Since(at) > r.s.cfg.BusSettle {
				delete(r.gone, name)
			}
		}
		r.mu.Unlock()
		if !leader {
			r.closeAll("this hub no longer leads")
		}
	}
}

// closeAll closes every session; peers dial again.
func (r *router) closeAll(why string) {
	r.mu.Lock()
	all := make([]*session, 0, len(r.sessions))
	for s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	if len(all) > 0 {
		r.log.Info("closing every bus session", "sessions", len(all), "why", why)
	}
	// At once: closing a WebSocket may wait (briefly) for a stuck peer.
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(s.close)
	}
	wg.Wait()
}

// close closes every session, refuses new ones, and waits for the
// sessions' goroutines. It is idempotent, and does nothing on a nil router
// (a Service built without New).
func (r *router) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.closeAll("the hub is shutting down")
	r.wg.Wait()
}

// admit says whether this hub takes sessions now.
func (r *router) admit() error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !r.s.node.IsLeader() {
		return errBusNotLeader
	}
	return nil
}

// serve runs a session over link, in goroutines of the router's own.
func (r *router) serve(link bus.Link) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.seq++
	s := &session{r: r, link: link, seq: r.seq, done: make(chan struct{}), max: routerDefaultMax,
		streamSlots: make(chan struct{}, streamOpsInFlight)}
	s.q.init()
	s.pubs.wake = make(chan struct{}, 1)
	s.log = r.log.With("session", s.seq)
	r.sessions[s] = struct{}{}
	r.wg.Add(3)
	r.mu.Unlock()
	go func() { defer r.wg.Done(); s.write() }()
	go func() { defer r.wg.Done(); r.read(s) }()
	go func() { defer r.wg.Done(); s.feed() }()
	return nil
}

// AttachBus runs a bus session over link, an in-process Link (one end of a
// bus.Pipe), as if it had arrived at GET /v1/bus: `comet standalone` wires
// its gateway and in-process workers so. It fails unless this hub leads.
func (s *Service) AttachBus(link bus.Link) error {
	if err := s.router.admit(); err != nil {
		return err
	}
	return s.router.serve(link)
}

// handleBus serves GET /v1/bus: a WebSocket session to the router, on the
// leader only. A follower answers 421 with the leader's API address (503
// when it knows of no leader).
func (s *Service) handleBus(w http.ResponseWriter, r *http.Request) {
	if err := s.router.admit(); err != nil {
		body := wire.Error{Code: wire.CodeUnavailable, Message: err.Error()}
		status := http.StatusServiceUnavailable
		if errors.Is(err, errBusNotLeader) {
			if api, lerr := s.leaderAPI(); lerr == nil && api != s.cfg.API {
				status, body.Leader = http.StatusMisdirectedRequest, api
			} else {
				body.Message = "not the leader, and no leader is known"
			}
		}
		writeJSON(w, status, body)
		return
	}
	link, err := bus.Upgrade(w, r)
	if err != nil {
		return // answered by Upgrade
	}
	if err := s.router.serve(link); err != nil {
		link.Close()
	}
}

// read runs a session: hello first, then every message until the link
// breaks; then it cleans up after the session.
func (r *router) read(s *session) {
	defer r.detach(s)
	t := time.AfterFunc(10*time.Second, s.close)
	b, err := s.link.Recv()
	t.Stop()
	if err != nil {
		return
	}
	m, err := bus.Decode(b)
	if err == nil {
		err = r.hello(s, m)
	}
	if err != nil {
		s.log.Warn("bus session refused", "err", err)
		_ = s.link.Send(context.Background(), (&bus.Msg{Type: bus.TypeError, Error: &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}}).Encode())
		return
	}
	for {
		b, err := s.link.Recv()
		if err != nil {
			return
		}
		m, err := bus.Decode(b)
		if err != nil {
			s.log.Warn("bad bus message; closing the session", "err", err)
			return
		}
		switch {
		case s.kind == bus.KindGateway && m.Type == bus.TypePublish:
			if !s.queuePublish(m) {
				return
			}
		case m.Type == bus.TypePing:
			s.push((&bus.Msg{Type: bus.TypePong}).Encode())
		case s.kind == bus.KindGateway && m.Type == bus.TypeRequest:
			r.request(s, m)
		case s.kind == bus.KindGateway && m.Type == bus.TypeStreamOp:
			r.streamOp(s, m) // dstream.go
		case s.kind == bus.KindGateway && m.Type == bus.TypeSent:
			r.sent(s, m)
		case s.kind == bus.KindGateway && m.Type == bus.TypeEvent:
			r.event(m)
			r.joinLeave(s, m) // presence.go
		case s.kind == bus.KindGateway && m.Type == bus.TypeStats:
			r.stats(s, m) // admin.go
		case s.kind == bus.KindGateway && m.Type == bus.TypePresenceResult:
			r.presenceResult(s, m) // presence.go
		case s.kind == bus.KindWorker && m.Type == bus.TypeResponse:
			r.response(s, m)
		case s.kind == bus.KindWorker && m.Type == bus.TypeSend:
			id := m.ID
			r.send(m.Conn, m.Data, bus.DeadlineOf(m.Timeout, routerDefaultTimeout), func(e *wire.Error) {
				s.push((&bus.Msg{Type: bus.TypeSent, ID: id, Error: e}).Encode())
			})
		case s.kind == bus.KindWorker && m.Type == bus.TypeUpdate:
			if err := checkRoutes(m.Routes); err != nil {
				s.log.Warn("bad routes; closing the session", "err", err)
				return
			}
			r.mu.Lock()
			s.events = m.Events
			s.setRoutesLocked(m.Routes)
			r.mu.Unlock()
		default:
			s.log.Debug("unexpected bus message", "type", m.Type, "kind", s.kind)
		}
	}
}

// maxPeerName bounds gateway ids and worker names.
const maxPeerName = 128

func checkRoutes(routes []bus.Route) error {
	for _, rt := range routes {
		if rt.Route == "" || len(rt.Route) > 255 {
			return fmt.Errorf("route %.80q must be 1-255 bytes", rt.Route)
		}
	}
	return nil
}

// hello takes a session's first message and attaches the peer.
func (r *router) hello(s *session, m bus.Msg) error {
	if m.Type != bus.TypeHello {
		return fmt.Errorf("first message is %q, not hello", m.Type)
	}
	if len(m.Name) > maxPeerName {
		return fmt.Errorf("name is %d bytes, longer than %d", len(m.Name), maxPeerName)
	}
	var old *session
	switch m.Kind {
	case bus.KindGateway:
		if err := bus.CheckGatewayID(m.Name); err != nil {
			return err
		}
	case bus.KindWorker:
		if err := checkRoutes(m.Routes); err != nil {
			return err
		}
	default:
		return fmt.Errorf("kind %q is neither gateway nor worker", m.Kind)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	s.kind, s.name = m.Kind, m.Name
	s.caps = make(map[string]bool, len(m.Caps))
	for _, c := range m.Caps {
		s.caps[c] = true
	}
	s.log = s.log.With("kind", s.kind, "name", s.name)
	if m.Kind == bus.KindGateway {
		old = r.gateways[m.Name]
		r.gateways[m.Name] = s
	} else {
		if m.Max > 0 {
			s.max = min(m.Max, routerMaxMax)
		}
		s.events = m.Events
		s.setRoutesLocked(m.Routes)
	}
	r.mu.Unlock()
	if old != nil {
		s.log.Warn("a gateway attached with the id of an attached one; replacing the older session")
		old.close()
	}
	s.log.Info("bus session attached", "routes", len(m.Routes))
	welcome := bus.Msg{Type: bus.TypeWelcome, Name: r.s.node.ID()}
	if m.Kind == bus.KindGateway {
		welcome.Caps = []string{bus.CapPublish, bus.CapStreams}
	}
	s.push(welcome.Encode())
	return nil
}

// setRoutesLocked replaces a worker's routes and updates the index.
func (s *session) setRoutesLocked(routes []bus.Route) {
	r := s.r
	for rt := range s.routes {
		r.unindexLocked(rt, s)
	}
	s.routes = make(map[string]bool, len(routes))
	for _, rt := range routes {
		if _, dup := s.routes[rt.Route]; !dup {
			r.routes[rt.Route] = append(r.routes[rt.Route], s)
		}
		s.routes[rt.Route] = rt.Idempotent
	}
}

func (r *router) unindexLocked(route string, s *session) {
	ws := r.routes[route]
	for i, w := range ws {
		if w == s {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(r.routes, route)
	} else {
		r.routes[route] = ws
	}
}

// pickLocked returns the worker serving route with the fewest requests in
// flight (ties rotate), skipping those at their max. When there is none,
// it returns the error to answer.
func (r *router) pickLocked(route string, except *session) (*session, *wire.Error) {
	ws := r.routes[route]
	if len(ws) == 0 {
		if r.settlingLocked() {
			// Just after a leader change its workers may still be dialing.
			return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "no worker serving route " + route + " has attached to the new leader yet; retry"}
		}
		return nil, &wire.Error{Code: wire.CodeNotFound, Message: "no worker serves route " + route}
	}
	r.rot++
	var best *session
	for i := range ws {
		w := ws[(int(r.rot%uint64(len(ws)))+i)%len(ws)]
		if w != except && w.inflight < w.max && (best == nil || w.inflight < best.inflight) {
			best = w
		}
	}
	if best == nil {
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "every worker serving route " + route + " is busy"}
	}
	return best, nil
}

// request routes a gateway's request to a worker.
func (r *router) request(gw *session, m bus.Msg) {
	deadline := bus.DeadlineOf(m.Timeout, routerDefaultTimeout)
	rq := &routed{gw: gw, gwID: m.ID, route: m.Route, data: m.Data, conn: m.Conn, user: m.User, deadline: deadline}
	r.mu.Lock()
	w, e := r.pickLocked(m.Route, nil)
	if e != nil {
		r.mu.Unlock()
		r.finish(rq, nil, e, codeResult(e.Code))
		return
	}
	r.nextID++
	id := r.nextID
	rq.worker = w
	w.inflight++
	r.requests[id] = rq
	rq.timer = time.AfterFunc(time.Until(deadline), func() { r.expire(id) })
	r.mu.Unlock()
	w.push(rq.msg(id))
}

func (rq *routed) msg(id uint64) []byte {
	return (&bus.Msg{Type: bus.TypeRequest, ID: id, Route: rq.route, Data: rq.data, Conn: rq.conn, User: rq.user,
		Timeout: bus.TimeoutOf(rq.deadline)}).Encode()
}

func codeResult(code string) string {
	switch code {
	case wire.CodeNotFound:
		return resultNotFound
	case wire.CodeTimeout:
		return resultTimeout
	default:
		return resultUnavailable
	}
}

// finish answers a request's gateway, if it is still there.
func (r *router) finish(rq *routed, data json.RawMessage, e *wire.Error, result string) {
	r.s.metrics.busRequests.WithLabelValues(result).Inc()
	if rq.gw == nil {
		return
	}
	rq.gw.push((&bus.Msg{Type: bus.TypeResponse, ID: rq.gwID, Data: data, Error: e}).Encode())
}

// response takes a worker's answer.
func (r *router) response(w *session, m bus.Msg) {
	r.mu.Lock()
	rq := r.requests[m.ID]
	if rq == nil || rq.worker != w {
		r.mu.Unlock()
		return // late: past its deadline
	}
	w.inflight--
	if m.Busy && !rq.retried && time.Until(rq.deadline) > time.Millisecond {
		// The worker refused it unhandled (its handlers are all busy,
		// some perhaps for a router that led before): another may take it.
		if other, _ := r.pickLocked(rq.route, w); other != nil {
			rq.worker, rq.retried = other, true
			other.inflight++
			r.mu.Unlock()
			other.push(rq.msg(m.ID))
			return
		}
	}
	delete(r.requests, m.ID)
	rq.timer.Stop()
	r.mu.Unlock()
	if m.Error != nil {
		switch {
		case m.Error.Code == "":
			m.Error.Code = wire.CodeUnavailable
		case !wire.KnownCode(m.Error.Code):
			// A worker of another language may say anything; clients
			// know only the protocol's codes.
			m.Error.Code = wire.CodeBadRequest
		}
		r.finish(rq, nil, m.Error, resultError)
		return
	}
	data := m.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	r.finish(rq, data, nil, resultOK)
}

// expire drops a request past its deadline from the books.
func (r *router) expire(id uint64) {
	r.mu.Lock()
	rq := r.requests[id]
	if rq == nil {
		r.mu.Unlock()
		return
	}
	delete(r.requests, id)
	rq.worker.inflight--
	r.mu.Unlock()
	r.finish(rq, nil, &wire.Error{Code: wire.CodeTimeout, Message: "no answer from the worker serving route " + rq.route + " in time"}, resultTimeout)
}

// send puts data on the connection conn through the gateway that holds it;
// done gets the result (nil when delivered), exactly once.
func (r *router) send(conn string, data json.RawMessage, deadline time.Time, done func(*wire.Error)) {
	if err := bus.CheckConn(conn); err != nil {
		done(&wire.Error{Code: wire.CodeBadRequest, Message: err.Error()})
		return
	}
	data, err := bus.Compact(data)
	if err != nil {
		done(&wire.Error{Code: wire.CodeBadRequest, Message: err.Error()})
		return
	}
	gwName, _ := bus.SplitConn(conn)
	r.mu.Lock()
	gw := r.gateways[gwName]
	if gw == nil {
		_, recent := r.gone[gwName]
		settling := r.settlingLocked() || recent
		r.mu.Unlock()
		if settling {
			done(&wire.Error{Code: wire.CodeUnavailable, Message: "gateway " + gwName + " is not attached right now (a leader change, or it is dialing again); retry"})
			return
		}
		done(&wire.Error{Code: wire.CodeNotFound, Message: "no connection " + conn + ": gateway " + gwName + " is not attached"})
		return
	}
	r.nextID++
	id := r.nextID
	op := &sendOp{gw: gw, done: done}
	r.sends[id] = op
	op.timer = time.AfterFunc(time.Until(deadline), func() {
		if op := r.takeSend(id, nil); op != nil {
			op.done(&wire.Error{Code: wire.CodeTimeout, Message: "gateway " + gwName + " did not answer in time"})
		}
	})
	r.mu.Unlock()
	gw.push((&bus.Msg{Type: bus.TypeSend, ID: id, Conn: conn, Data: data, Timeout: bus.TimeoutOf(deadline)}).Encode())
}

// takeSend removes a send from the books; from, when not nil, must be the
// gateway it went to.
func (r *router) takeSend(id uint64, from *session) *sendOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	op := r.sends[id]
	if op == nil || (from != nil && op.gw != from) {
		return nil
	}
	delete(r.sends, id)
	op.timer.Stop()
	return op
}

// sent takes a gateway's answer to a send.
func (r *router) sent(gw *session, m bus.Msg) {
	if op := r.takeSend(m.ID, gw); op != nil {
		op.done(m.Error)
	}
}

// event fans a connection event out to the workers that watch events. A
// worker whose queue is full misses it; it is told how many it missed.
func (r *router) event(m bus.Msg) {
	switch m.Event {
	case bus.EventConnected, bus.EventDisconnected, bus.EventSubscribed, bus.EventUnsubscribed:
	default:
		r.log.Debug("unknown connection event", "event", m.Event)
		return
	}
	r.mu.Lock()
	var to []*session
	for s := range r.sessions {
		if s.kind == bus.KindWorker && s.events {
			to = append(to, s)
		}
	}
	r.mu.Unlock()
	if len(to) == 0 {
		return
	}
	b := (&bus.Msg{Type: bus.TypeEvent, Event: m.Event, Conn: m.Conn, User: m.User, Channel: m.Channel}).Encode()
	for _, s := range to {
		if !s.q.pushEvent(b) {
			r.s.metrics.busEventsDropped.Inc()
		}
	}
}

// detach cleans up after a session: a worker's requests are tried again
// elsewhere (idempotent routes, once) or failed; a gateway's sends are
// failed and its requests forgotten.
func (r *router) detach(s *session) {
	s.close()
	var (
		retry  []func()
		failed []*routed
		sends  []*sendOp
	)
	r.leaveAll(s) // presence.go
	r.mu.Lock()
	delete(r.sessions, s)
	if s.kind == bus.KindGateway && r.gateways[s.name] == s {
		delete(r.gateways, s.name)
		r.gone[s.name] = time.Now()
	}
	if s.kind == bus.KindWorker {
		for rt := range s.routes {
			r.unindexLocked(rt, s)
		}
	}
	for id, rq := range r.requests {
		if rq.gw == s {
			rq.gw = nil // its answer has nowhere to go
		}
		if rq.worker != s {
			continue
		}
		if s.routes[rq.route] && !rq.retried && time.Until(rq.deadline) > time.Millisecond {
			if w, _ := r.pickLocked(rq.route, nil); w != nil {
				rq.worker, rq.retried = w, true
				w.inflight++
				b := rq.msg(id)
				retry = append(retry, func() { w.push(b) })
				continue
			}
		}
		delete(r.requests, id)
		rq.timer.Stop()
		failed = append(failed, rq)
	}
	for id, op := range r.sends {
		if op.gw == s {
			delete(r.sends, id)
			op.timer.Stop()
			sends = append(sends, op)
		}
	}
	r.mu.Unlock()
	if s.kind != "" {
		s.log.Info("bus session detached", "retried", len(retry), "failed", len(failed))
	}
	for _, f := range retry {
		f()
	}
	for _, rq := range failed {
		r.finish(rq, nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the worker serving route " + rq.route + " went away during the request"}, resultUnavailable)
	}
	for _, op := range sends {
		op.done(&wire.Error{Code: wire.CodeUnavailable, Message: "the session to gateway " + s.name + " ended"})
	}
}

// counts returns the workers and gateways attached.
func (r *router) counts() (workers, gateways int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range r.sessions {
		if s.kind == bus.KindWorker {
			workers++
		}
	}
	return workers, len(r.gateways)
}

// close ends the session: the link closes, and the reader cleans up.
func (s *session) close() {
	s.once.Do(func() {
		close(s.done)
		s.link.Close()
	})
}

// push queues a message; a peer too slow to take it loses its session.
func (s *session) push(b []byte) {
	if !s.q.push(b) {
		s.log.Warn("bus peer too slow: its queue is full; closing the session")
		s.close()
	}
}

// write sends what is queued, and then, when events were dropped, the
// count, until the session ends.
func (s *session) write() {
	defer s.close()
	for {
		select {
		case <-s.q.wake:
		case <-s.done:
			return
		}
		msgs, dropped := s.q.take()
		if dropped > 0 {
			msgs = append(msgs, (&bus.Msg{Type: bus.TypeDropped, Count: dropped}).Encode())
		}
		if s.link.SendBatch(context.Background(), msgs) != nil {
			return
		}
	}
}

// outQueue is a session's bounded outgoing queue.
type outQueue struct {
	mu      sync.Mutex
	msgs    [][]byte
	bytes   int
	dropped uint64 // events dropped since the last notice
	wake    chan struct{}
}

func (q *outQueue) init() { q.wake = make(chan struct{}, 1) }

func (q *outQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push queues b; false when the queue is full.
func (q *outQueue) push(b []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.msgs) >= routerQueueMsgs || q.bytes+len(b) > routerQueueBytes {
		return false
	}
	q.msgs = append(q.msgs, b)
	q.bytes += len(b)
	q.signal()
	return true
}

// pushEvent queues an event, or drops and counts it; false when dropped.
func (q *outQueue) pushEvent(b []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.msgs) >= routerEventMsgs || q.bytes+len(b) > routerQueueBytes/2 {
		q.dropped++
		q.signal()
		return false
	}
	q.msgs = append(q.msgs, b)
	q.bytes += len(b)
	q.signal()
	return true
}

// take returns everything queued and the events dropped since the last
// take.
func (q *outQueue) take() ([][]byte, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	msgs, dropped := q.msgs, q.dropped
	q.msgs, q.bytes, q.dropped = nil, 0, 0
	return msgs, dropped
}

// SendRequest is the body of POST /v1/connections/{id}/send.
type SendRequest struct {
	Data json.RawMessage `json:"data"`
}

// SendResponse answers it.
type SendResponse struct {
	Connection string `json:"connection"`
}

// SendToConnection puts data (JSON) on the client connection conn, through
// the gateway that holds it, and returns once that gateway has queued it.
// On a follower it forwards to the leader. Errors: ErrBadRequest (a bad id,
// no data), ErrTooLarge, a not-found error (no such connection: ErrorCode
// says not_found), or one that says the router is unavailable.
func (s *Service) SendToConnection(ctx context.Context, conn string, data json.RawMessage) error {
	if err := bus.CheckConn(conn); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if len(data) == 0 || string(data) == "null" {
		return fmt.Errorf("%w: data is required", ErrBadRequest)
	}
	if len(data) > s.cfg.MaxMessageBytes {
		return fmt.Errorf("%w: data is %d bytes, the limit is %d", ErrTooLarge, len(data), s.cfg.MaxMessageBytes)
	}
	data, err := bus.Compact(data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if !s.node.IsLeader() {
		return s.forwardSend(ctx, conn, data)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.cfg.ApplyTimeout)
	}
	ch := make(chan *wire.Error, 1)
	s.router.send(conn, data, deadline, func(e *wire.Error) { ch <- e })
	select {
	case e := <-ch:
		if e == nil {
			return nil
		}
		return &hubapi.APIError{Status: codeStatus(e.Code), Body: *e}
	case <-ctx.Done():
		return fmt.Errorf("send to %s: %w", conn, ctx.Err())
	}
}

func (s *Service) forwardSend(ctx context.Context, conn string, data json.RawMessage) error {
	if ctx.Value(forwardedKey{}) != nil {
		return fmt.Errorf("%w: this hub is not the leader either", raft.ErrNotLeader)
	}
	api, err := s.leaderAPI()
	if err != nil {
		return err
	}
	if api == s.cfg.API {
		return fmt.Errorf("%w: leadership is moving; retry", raft.ErrNotLeader)
	}
	return s.post(ctx, api, "/v1/connections/"+conn+"/send", SendRequest{Data: data}, nil)
}

// codeStatus is the HTTP status of an error code.
func codeStatus(code string) int {
	switch code {
	case wire.CodeBadRequest:
		return http.StatusBadRequest
	case wire.CodeNotFound:
		return http.StatusNotFound
	case wire.CodeForbidden:
		return http.StatusForbidden
	case wire.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case wire.CodeTimeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusServiceUnavailable
	}
}

// handleSend serves POST /v1/connections/{id}/send.
func (s *Service) handleSend(w http.ResponseWriter, r *http.Request) {
	conn := r.PathValue("id")
	var req SendRequest
	if !s.decode(w, r, int64(s.cfg.MaxMessageBytes)*2+64<<10, &req) {
		return
	}
	ctx := r.Context()
	if r.Header.Get(hubapi.HeaderForwarded) != "" {
		ctx = withForwarded(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.SendToConnection(ctx, conn, req.Data); err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, SendResponse{Connection: conn})
}
