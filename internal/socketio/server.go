package socketio

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

var (
	// ErrClosed is returned by a Conn's methods once its session is closed
	// (by either side, or by Server.Close).
	ErrClosed = errors.New("socketio: connection closed")
	// ErrIdle is returned by Conn.Read when nothing was heard from the
	// client (not even a pong) for Config.IdleTimeout.
	ErrIdle = errors.New("socketio: nothing heard for the idle timeout")
)

// Config configures a Server. Zero fields take the defaults named.
type Config struct {
	// Accept serves one client socket on namespace "/", from its Socket.IO
	// connect packet on; the session is closed when it returns. It runs on
	// a goroutine of the Server's: Close waits for it. Required.
	Accept func(c *Conn)
	// PingInterval and PingTimeout are announced to clients in the
	// handshake (defaults 25s and 20s): a client drops a connection on
	// which no ping came for their sum. The owner of a Conn sends the pings
	// (Conn.Ping) at about PingInterval.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// IdleTimeout: Conn.Read fails with ErrIdle after nothing was heard for
	// this long (default PingInterval+PingTimeout).
	IdleTimeout time.Duration
	// ConnectTimeout bounds the wait for a session's Socket.IO connect
	// packet (default 45s, as the reference server).
	ConnectTimeout time.Duration
	// WriteTimeout bounds the writing of one polling response (default
	// 10s), and the wait for a closing session's last packets to be taken.
	WriteTimeout time.Duration
	// MaxPayload bounds a polling request's body and a WebSocket message
	// (default 1,000,000 bytes); it is announced to clients, which split
	// their polling requests to fit it. More closes the session.
	MaxPayload int
	// CheckOrigin accepts or refuses a browser's Origin (nil: any). An
	// accepted origin is echoed in the CORS headers of polling responses.
	CheckOrigin func(r *http.Request) bool
	// Upgrader upgrades to WebSocket (nil: one with CheckOrigin).
	Upgrader *websocket.Upgrader
	Logger   *slog.Logger
}

// Server serves Engine.IO v4 sessions (HTTP long-polling, WebSocket, and
// the upgrade from the one to the other) carrying Socket.IO v5 packets on
// namespace "/": what socket.io-client v4 needs, text only. Mount it at the
// clients' path (by default /socket.io/).
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
	wg       sync.WaitGroup // Accept goroutines
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Accept == nil {
		return nil, errors.New("socketio: Config.Accept is required")
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defD(&cfg.PingInterval, 25*time.Second)
	defD(&cfg.PingTimeout, 20*time.Second)
	defD(&cfg.IdleTimeout, cfg.PingInterval+cfg.PingTimeout)
	defD(&cfg.ConnectTimeout, 45*time.Second)
	defD(&cfg.WriteTimeout, 10*time.Second)
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 1_000_000
	}
	if cfg.CheckOrigin == nil {
		cfg.CheckOrigin = func(*http.Request) bool { return true }
	}
	if cfg.Upgrader == nil {
		cfg.Upgrader = &websocket.Upgrader{CheckOrigin: cfg.CheckOrigin}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Logger, sessions: make(map[string]*session)}, nil
}

// Close closes every session and waits for the Accept calls to return. New
// sessions are refused from then on. Idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	open := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		open = append(open, ss)
	}
	s.mu.Unlock()
	for _, ss := range open {
		ss.close()
	}
	s.wg.Wait()
}

// Sessions returns the number of open sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Engine.IO's error codes, in a 400 (403) answer's JSON body.
const (
	errTransportUnknown   = 0
	errUnknownSID         = 1
	errBadHandshakeMethod = 2
	errBadRequest         = 3
	errForbidden          = 4
	errUnsupportedVersion = 5
)

var errMessages = [...]string{"Transport unknown", "Session ID unknown", "Bad handshake method", "Bad request", "Forbidden", "Unsupported protocol version"}

func httpError(w http.ResponseWriter, status, code int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"code":%d,"message":%q}`, code, errMessages[code])
}

// ServeHTTP serves the Engine.IO endpoint: handshakes, polls, posts and
// WebSocket upgrades, told apart by the query (EIO=4, transport, sid).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); origin != "" {
		if !s.cfg.CheckOrigin(r) {
			httpError(w, http.StatusForbidden, errForbidden)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
			h.Set("Access-Control-Allow-Headers", rh)
		}
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	q := r.URL.Query()
	if q.Get("EIO") != "4" {
		httpError(w, http.StatusBadRequest, errUnsupportedVersion)
		return
	}
	transport, sid := q.Get("transport"), q.Get("sid")
	if transport != "polling" && transport != "websocket" {
		httpError(w, http.StatusBadRequest, errTransportUnknown)
		return
	}
	if sid == "" {
		switch {
		case transport == "websocket" && websocket.IsWebSocketUpgrade(r):
			s.openWebSocket(w, r)
		case transport == "polling" && r.Method == http.MethodGet:
			s.openPolling(w, r)
		case transport == "polling":
			httpError(w, http.StatusBadRequest, errBadHandshakeMethod)
		default:
			httpError(w, http.StatusBadRequest, errBadRequest)
		}
		return
	}
	s.mu.Lock()
	ss := s.sessions[sid]
	s.mu.Unlock()
	if ss == nil {
		httpError(w, http.StatusBadRequest, errUnknownSID)
		return
	}
	switch {
	case transport == "websocket" && websocket.IsWebSocketUpgrade(r):
		ss.upgrade(w, r)
	case transport == "polling" && r.Method == http.MethodGet:
		ss.poll(w, r)
	case transport == "polling" && r.Method == http.MethodPost:
		ss.post(w, r)
	default:
		httpError(w, http.StatusBadRequest, errBadRequest)
	}
}

func randomSID() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newSession registers a session; nil when the server is closed.
func (s *Server) newSession(r *http.Request) *session {
	ss := &session{
		srv: s, id: randomSID(), sioID: randomSID(), query: r.URL.Query(),
		pollWake: make(chan struct{}, 1), done: make(chan struct{}),
		in: make(chan Event, 16),
	}
	ss.heard.Store(time.Now().UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.sessions[ss.id] = ss
	ss.mu.Lock()
	ss.connectTimer = time.AfterFunc(s.cfg.ConnectTimeout, func() {
		ss.mu.Lock()
		connected := ss.conn != nil
		ss.mu.Unlock()
		if !connected {
			ss.close()
		}
	})
	ss.mu.Unlock()
	return ss
}

func (s *Server) openPacket(ss *session, upgrades []string) []byte {
	b, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int      `json:"maxPayload"`
	}{ss.id, upgrades, s.cfg.PingInterval.Milliseconds(), s.cfg.PingTimeout.Milliseconds(), s.cfg.MaxPayload})
	return append([]byte{eioOpen}, b...)
}

func (s *Server) openPolling(w http.ResponseWriter, r *http.Request) {
	ss := s.newSession(r)
	if ss == nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	s.writePayload(w, [][]byte{s.openPacket(ss, []string{"websocket"})})
}

func (s *Server) openWebSocket(w http.ResponseWriter, r *http.Request) {
	ws, err := s.cfg.Upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	ss := s.newSession(r)
	if ss == nil {
		_ = ws.Close()
		return
	}
	ws.SetReadLimit(int64(s.cfg.MaxPayload))
	ss.mu.Lock()
	ss.ws = ws
	ss.mu.Unlock()
	if err := ss.writeWS(ws, [][]byte{s.openPacket(ss, []string{})}); err != nil {
		ss.close()
		return
	}
	ss.readWS(ws)
}

// writePayload answers a poll: the packets separated by the record
// separator, within the write timeout.
func (s *Server) writePayload(w http.ResponseWriter, pkts [][]byte) error {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	n := len(pkts) - 1
	for _, p := range pkts {
		n += len(p)
	}
	body := make([]byte, 0, n)
	for i, p := range pkts {
		if i > 0 {
			body = append(body, recordSeparator...)
		}
		body = append(body, p...)
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	_, err := w.Write(body)
	return err
}

func (s *Server) accept(c *Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.s.close()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer c.s.close()
		s.cfg.Accept(c)
	}()
}

func (s *Server) remove(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
	s.mu.Unlock()
}

// session is one Engine.IO session. Its packets go out on the WebSocket
// once it has one (ws), before that in out, which polls take. Lock order:
// wmu, then mu.
type session struct {
	srv   *Server
	id    string // Engine.IO's sid
	sioID string // Socket.IO's, in the connect answer
	query url.Values

	mu       sync.Mutex
	ws       *websocket.Conn // the session's WebSocket, once opened or upgraded
	probe    *websocket.Conn // a WebSocket being probed for the upgrade
	probing  bool
	out      [][]byte      // packets waiting for a poll
	drained  chan struct{} // closed when out is taken; nil while out is empty
	polling  bool          // a GET waits
	posting  bool          // a POST is read
	conn     *Conn         // after the Socket.IO connect
	closed   bool
	pollWake chan struct{} // cap 1: out changed, or the session closed
	done     chan struct{} // closed by close

	wmu          sync.Mutex   // serialises writes to ws
	heard        atomic.Int64 // unix nanos: the last packet from the client
	in           chan Event   // events for Conn.Read
	connectTimer *time.Timer  // under mu
}

func (ss *session) wakePoll() {
	select {
	case ss.pollWake <- struct{}{}:
	default:
	}
}

// send queues packets for the polling transport, or writes them on the
// WebSocket. With polling, it returns a channel closed once a poll took
// them; nil when they were written.
func (ss *session) send(pkts ...[]byte) (<-chan struct{}, error) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return nil, ErrClosed
	}
	if ws := ss.ws; ws != nil {
		ss.mu.Unlock()
		if err := ss.writeWS(ws, pkts); err != nil {
			ss.close()
			return nil, ErrClosed
		}
		return nil, nil
	}
	ss.out = append(ss.out, pkts...)
	if ss.drained == nil {
		ss.drained = make(chan struct{})
	}
	d := ss.drained
	ss.mu.Unlock()
	ss.wakePoll()
	return d, nil
}

// sendWait sends packets and waits until they are written or taken by a
// poll (or the session closed).
func (ss *session) sendWait(pkts ...[]byte) error {
	d, err := ss.send(pkts...)
	if err != nil || d == nil {
		return err
	}
	select {
	case <-d:
		return nil
	case <-ss.done:
		return ErrClosed
	}
}

func (ss *session) writeWS(ws *websocket.Conn, pkts [][]byte) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	for _, p := range pkts {
		if err := ws.WriteMessage(websocket.TextMessage, p); err != nil {
			return err
		}
	}
	return nil
}

// poll answers a long-polling GET with the packets queued, waiting for
// some for at most a ping interval.
func (ss *session) poll(w http.ResponseWriter, r *http.Request) {
	ss.mu.Lock()
	switch {
	case ss.closed:
		ss.mu.Unlock()
		httpError(w, http.StatusBadRequest, errUnknownSID)
		return
	case ss.polling: // overlapping polls: a broken client
		ss.mu.Unlock()
		httpError(w, http.StatusBadRequest, errBadRequest)
		ss.close()
		return
	case ss.ws != nil:
		ss.mu.Unlock()
		httpError(w, http.StatusBadRequest, errBadRequest)
		return
	}
	ss.polling = true
	ss.mu.Unlock()
	cfg := &ss.srv.cfg
	timer := time.NewTimer(cfg.PingInterval + cfg.PingTimeout/2)
	defer timer.Stop()
	var pkts [][]byte
	for pkts == nil {
		ss.mu.Lock()
		if len(ss.out) > 0 || ss.closed || ss.ws != nil {
			pkts, ss.out = ss.out, nil
			if ss.drained != nil {
				close(ss.drained)
				ss.drained = nil
			}
			if ss.closed && (len(pkts) == 0 || !isClose(pkts[len(pkts)-1])) {
				pkts = append(pkts, []byte{eioClose})
			}
			if len(pkts) == 0 {
				pkts = [][]byte{{eioNoop}}
			}
		}
		ss.mu.Unlock()
		if pkts != nil {
			break
		}
		select {
		case <-ss.pollWake:
		case <-timer.C:
			pkts = [][]byte{{eioNoop}}
		case <-r.Context().Done():
			ss.mu.Lock()
			ss.polling = false
			ss.mu.Unlock()
			return
		}
	}
	ss.mu.Lock()
	ss.polling = false
	ss.mu.Unlock()
	if err := ss.srv.writePayload(w, pkts); err != nil {
		ss.close()
	}
}

func isClose(p []byte) bool { return len(p) == 1 && p[0] == eioClose }

// post reads a polling POST's packets.
func (ss *session) post(w http.ResponseWriter, r *http.Request) {
	ss.mu.Lock()
	if ss.closed || ss.posting || ss.ws != nil {
		overlap := ss.posting
		ss.mu.Unlock()
		httpError(w, http.StatusBadRequest, errBadRequest)
		if overlap {
			ss.close()
		}
		return
	}
	ss.posting = true
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		ss.posting = false
		ss.mu.Unlock()
	}()
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(ss.srv.cfg.MaxPayload)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
		}
		ss.close()
		return
	}
	pkts, err := splitPayload(string(body))
	if err != nil {
		httpError(w, http.StatusBadRequest, errBadRequest)
		ss.close()
		return
	}
	for _, p := range pkts {
		if err := ss.handle([]byte(p)); err != nil {
			if !errors.Is(err, ErrClosed) {
				httpError(w, http.StatusBadRequest, errBadRequest)
			}
			ss.close()
			return
		}
	}
	w.Header().Set("Content-Type", "text/html")
	_, _ = io.WriteString(w, "ok")
}

// upgrade runs the WebSocket upgrade of a polling session: the client
// probes the socket (2probe, answered 3probe), the pending poll is released
// with a noop, and the client's upgrade packet switches the session to the
// socket, on which what was queued for polls goes first.
func (ss *session) upgrade(w http.ResponseWriter, r *http.Request) {
	ss.mu.Lock()
	if ss.closed || ss.ws != nil || ss.probing {
		ss.mu.Unlock()
		httpError(w, http.StatusBadRequest, errBadRequest)
		return
	}
	ss.probing = true
	ss.mu.Unlock()
	ws, err := ss.srv.cfg.Upgrader.Upgrade(w, r, nil)
	if err != nil {
		ss.mu.Lock()
		ss.probing = false
		ss.mu.Unlock()
		return
	}
	ok := false
	defer func() {
		if !ok {
			ss.mu.Lock()
			ss.probing, ss.probe = false, nil
			ss.mu.Unlock()
			_ = ws.Close()
		}
	}()
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.probe = ws
	ss.mu.Unlock()
	ws.SetReadLimit(int64(ss.srv.cfg.MaxPayload))
	_ = ws.SetReadDeadline(time.Now().Add(ss.srv.cfg.IdleTimeout))
	if typ, msg, err := ws.ReadMessage(); err != nil || typ != websocket.TextMessage || string(msg) != "2probe" {
		return
	}
	_ = ws.SetWriteDeadline(time.Now().Add(ss.srv.cfg.WriteTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, []byte("3probe")); err != nil {
		return
	}
	_ = ws.SetWriteDeadline(time.Time{})
	if _, err := ss.send([]byte{eioNoop}); err != nil { // releases the poll under way
		return
	}
	if typ, msg, err := ws.ReadMessage(); err != nil || typ != websocket.TextMessage || string(msg) != string(eioUpgrade) {
		return
	}
	ss.heard.Store(time.Now().UnixNano())
	_ = ws.SetReadDeadline(time.Time{})
	// Switch: nothing is written on ws before what polls did not take.
	ss.wmu.Lock()
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		ss.wmu.Unlock()
		return
	}
	ok = true
	ss.ws, ss.probe, ss.probing = ws, nil, false
	pending := ss.out
	ss.out = nil
	if ss.drained != nil {
		close(ss.drained)
		ss.drained = nil
	}
	ss.mu.Unlock()
	ss.wakePoll()
	var werr error
	for _, p := range pending {
		if werr = ws.WriteMessage(websocket.TextMessage, p); werr != nil {
			break
		}
	}
	ss.wmu.Unlock()
	if werr != nil {
		ss.close()
		return
	}
	ss.readWS(ws)
}

// readWS reads the session's packets from its WebSocket until it fails,
// then closes the session.
func (ss *session) readWS(ws *websocket.Conn) {
	defer ss.close()
	for {
		typ, msg, err := ws.ReadMessage()
		if err != nil || typ != websocket.TextMessage || len(msg) == 0 {
			return
		}
		if err := ss.handle(msg); err != nil {
			return
		}
	}
}

// handle acts on one Engine.IO packet from the client. An error ends the
// session.
func (ss *session) handle(p []byte) error {
	ss.heard.Store(time.Now().UnixNano())
	if len(p) == 0 {
		return errors.New("empty packet")
	}
	switch p[0] {
	case eioClose:
		ss.close()
		return ErrClosed
	case eioPing:
		_, err := ss.send(append([]byte{eioPong}, p[1:]...))
		return err
	case eioPong, eioNoop:
		return nil
	case eioMessage:
		return ss.handleSocketIO(string(p[1:]))
	}
	return fmt.Errorf("unexpected Engine.IO packet type %q", p[0])
}

func (ss *session) handleSocketIO(s string) error {
	pk, err := decodePacket(s)
	if err != nil {
		return err
	}
	if pk.nsp != "/" {
		if pk.typ == typeConnect {
			_, err := ss.send([]byte(connectError(pk.nsp, "Invalid namespace")))
			return err
		}
		return nil
	}
	ss.mu.Lock()
	c := ss.conn
	ss.mu.Unlock()
	switch pk.typ {
	case typeConnect:
		if c != nil {
			return nil // connected already
		}
		c = &Conn{s: ss, auth: pk.data}
		ss.mu.Lock()
		ss.conn = c
		ss.connectTimer.Stop()
		ss.mu.Unlock()
		ans := append([]byte{eioMessage, '0' + typeConnect}, `{"sid":"`+ss.sioID+`"}`...)
		if _, err := ss.send(ans); err != nil {
			return err
		}
		ss.srv.accept(c)
		return nil
	case typeDisconnect:
		ss.close()
		return ErrClosed
	case typeEvent:
		if c == nil {
			return errors.New("event before connect")
		}
		ev := Event{Name: pk.eventName(), Args: pk.args[1:], AckID: pk.id, HasAck: pk.hasID}
		select {
		case ss.in <- ev:
			return nil
		case <-ss.done:
			return ErrClosed
		}
	case typeAck:
		return nil // this server asks for none
	}
	return fmt.Errorf("unexpected Socket.IO packet type %d", pk.typ)
}

// close ends the session at once: its socket is closed, a poll under way
// is answered with a close packet, and Conn.Read fails. Idempotent.
func (ss *session) close() {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	ws, probe, timer := ss.ws, ss.probe, ss.connectTimer
	close(ss.done)
	ss.mu.Unlock()
	ss.wakePoll()
	if timer != nil {
		timer.Stop()
	}
	if ws != nil {
		_ = ws.Close()
	}
	if probe != nil {
		_ = probe.Close()
	}
	ss.srv.remove(ss)
}

// Event is an event from the client.
type Event struct {
	Name string
	// Args are the event's arguments, each one JSON value.
	Args []json.RawMessage
	// HasAck: the client asked for an acknowledgement, to be sent with
	// Conn.Ack(AckID, ...).
	HasAck bool
	AckID  uint64
}

// Conn is a client's socket on namespace "/". Read is for one goroutine;
// the other methods may be called from any.
type Conn struct {
	s     *session
	auth  json.RawMessage
	timer *time.Timer // Read's
}

// Auth returns the auth payload of the client's connect packet
// (socket.io-client's auth option), nil when it sent none.
func (c *Conn) Auth() json.RawMessage { return c.auth }

// Query returns the query of the session's handshake request.
func (c *Conn) Query() url.Values { return c.s.query }

// Transport names the Engine.IO transport in use: polling or websocket.
func (c *Conn) Transport() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.ws != nil {
		return "websocket"
	}
	return "polling"
}

// Read returns the next event from the client. ErrIdle: nothing heard
// for IdleTimeout; ErrClosed: the session is closed.
func (c *Conn) Read() (Event, error) {
	ss := c.s
	idle := ss.srv.cfg.IdleTimeout
	for {
		select {
		case ev := <-ss.in:
			return ev, nil
		default:
		}
		wait := idle - time.Duration(time.Now().UnixNano()-ss.heard.Load())
		if wait <= 0 {
			return Event{}, ErrIdle
		}
		if c.timer == nil {
			c.timer = time.NewTimer(wait)
		} else {
			c.timer.Reset(wait)
		}
		select {
		case ev := <-ss.in:
			c.timer.Stop()
			return ev, nil
		case <-ss.done:
			c.timer.Stop()
			return Event{}, ErrClosed
		case <-c.timer.C:
		}
	}
}

// Emit sends one event named name per argument in args, in order, and
// waits until they are written to the WebSocket or taken by a poll: a
// client that stops reading makes Emit wait.
func (c *Conn) Emit(name string, args ...json.RawMessage) error {
	pkts := make([][]byte, len(args))
	for i, a := range args {
		pkts[i] = appendEvent(nil, name, a)
	}
	return c.s.sendWait(pkts...)
}

// Ack answers the event whose HasAck was set, without waiting.
func (c *Conn) Ack(id uint64, args ...json.RawMessage) error {
	_, err := c.s.send(appendAck(nil, id, args...))
	return err
}

// Ping sends an Engine.IO ping, without waiting; the client's pong counts
// as heard.
func (c *Conn) Ping() error {
	_, err := c.s.send([]byte{eioPing})
	return err
}

// CloseWith sends a last event (name, arg), then, when disconnect is set,
// Socket.IO's disconnect (the client does not reconnect by itself), waits
// at most WriteTimeout for them to be written or taken by a poll, and
// closes the session. Without disconnect, socket.io-client sees a transport
// close or error, and reconnects.
//
// No Engine.IO close packet follows the event: socket.io-client hands
// events to the application a tick after it decoded them, but acts on a
// close packet of the same poll at once, so that the event would come
// after "disconnect" (or, buffered, after the next "connect").
func (c *Conn) CloseWith(name string, arg json.RawMessage, disconnect bool) {
	pkts := [][]byte{appendEvent(nil, name, arg)}
	if disconnect {
		pkts = append(pkts, []byte{eioMessage, '0' + typeDisconnect})
	}
	if d, err := c.s.send(pkts...); err == nil && d != nil {
		t := time.NewTimer(c.s.srv.cfg.WriteTimeout)
		select {
		case <-d:
		case <-c.s.done:
		case <-t.C:
		}
		t.Stop()
	}
	c.s.close()
}

// Close closes the session at once. Idempotent.
func (c *Conn) Close() { c.s.close() }

// Done is closed when the session is closed.
func (c *Conn) Done() <-chan struct{} { return c.s.done }
