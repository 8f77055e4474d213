// Package clienttest provides a fake Comet gateway for tests of clients: it
// speaks the client protocol (docs/protocol.md) over WebSocket from memory,
// with knobs to inject the faults of bad networks, and optional token
// authentication. It is not the real gateway: no hubs, no limits beyond the
// data size, no SockJS, no JWT verification (tests check tokens with a
// function of their own).
package clienttest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// Routes the fake answers requests on; any other route is not_found.
const (
	RouteEcho  = "echo"  // answers the request's data
	RouteNever = "never" // never answers
)

// MaxDataBytes is the largest publish data accepted; more is too_large.
const MaxDataBytes = 64 << 10

// DefaultEpoch is the epoch of a channel until Reset.
const DefaultEpoch = "e1"

type channel struct {
	epoch string
	first uint64
	msgs  []json.RawMessage // msgs[i] has offset first+i
	ids   map[string]uint64 // idempotency keys
}

func (ch *channel) next() uint64 { return ch.first + uint64(len(ch.msgs)) }

type gconn struct {
	ws  *websocket.Conn
	id  string // the connection id
	wmu sync.Mutex
	// Guarded by Gateway.mu.
	subs    map[string]bool
	stalled chan struct{} // non-nil while stalled; closed to resume
	held    [][]byte      // acks held back by HoldAcks, in order
	unacked int           // publishes received and not answered yet
	authed  bool          // "connected" was sent
	user    string
	expiry  *time.Timer // ends the connection when its token expires
}

// Gateway is a fake gateway on 127.0.0.1. All its methods are safe for
// concurrent use.
type Gateway struct {
	srv *httptest.Server

	mu            sync.Mutex
	closed        bool
	down          bool
	chans         map[string]*channel
	conns         map[*gconn]bool
	attempts      int // upgrade requests, refused or not
	accepted      int
	stores        int
	frames        []wire.ClientFrame
	frameConns    []string // the connection id of each of frames
	holdAcks      bool
	maxUnacked    int
	failPublishes []string // codes for the next publishes, in order
	failSubs      []string // codes for the next subscribes, in order
	dropBeforeAck int
	replayOverlap uint64
	hook          func(wire.ClientFrame)
	auth          func(token string) (user string, exp time.Time, err error)
	anonymous     bool
}

// SetAuth has the gateway check the tokens of connect frames
// ({"op":"connect","token":...,"id":...}) with check, as the real gateway
// does (docs/protocol.md): an accepted one is answered with "connected",
// echoing the frame's id, with the user check returned; a refused one with
// an error frame (code forbidden, check's error as the message) and a close
// with 4006. A connection must send one before anything else ("token
// required"), unless anonymous: then "connected" (no user) is sent at once,
// and a connect frame later makes the connection the token's user. When
// exp is not zero, the connection gets "token expired" and 4006 at exp,
// unless a connect frame with a new token for the same user came before (a
// token for another user is refused, without a close). A nil check (the
// default): connections are anonymous and connect frames are ignored.
func (g *Gateway) SetAuth(check func(token string) (user string, exp time.Time, err error), anonymous bool) {
	g.mu.Lock()
	g.auth, g.anonymous = check, anonymous
	g.mu.Unlock()
}

// NewGateway starts a fake gateway. Close it when done.
func NewGateway() *Gateway {
	g := &Gateway{chans: map[string]*channel{}, conns: map[*gconn]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", g.serveWS)
	g.srv = httptest.NewServer(mux)
	return g
}

// URL returns the gateway's WebSocket URL, ws://127.0.0.1:PORT/ws.
func (g *Gateway) URL() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/ws" }

// Close cuts every connection and stops the server.
func (g *Gateway) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.Drop()
	g.srv.Close()
}

// SetDown makes the gateway refuse (true) or accept (false) new
// connections: refused upgrades get HTTP 503.
func (g *Gateway) SetDown(down bool) {
	g.mu.Lock()
	g.down = down
	g.mu.Unlock()
}

// Attempts returns how many connections were tried, refused or not.
func (g *Gateway) Attempts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.attempts
}

// Accepted returns how many connections were accepted.
func (g *Gateway) Accepted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.accepted
}

// Conns returns how many connections are open.
func (g *Gateway) Conns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Subscribers returns how many connections are subscribed to channel.
func (g *Gateway) Subscribers(channel string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for c := range g.conns {
		if c.subs[channel] {
			n++
		}
	}
	return n
}

// Stores returns how many publishes were stored (not counting retries
// answered from the idempotency keys).
func (g *Gateway) Stores() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stores
}

// Frames returns every client frame received, in order.
func (g *Gateway) Frames() []wire.ClientFrame {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]wire.ClientFrame(nil), g.frames...)
}

// SetHook has f called with every client frame, before it is handled, on
// the connection's goroutine.
func (g *Gateway) SetHook(f func(wire.ClientFrame)) {
	g.mu.Lock()
	g.hook = f
	g.mu.Unlock()
}

// FramesOf returns the client frames received on the connection of id
// conn ("fake-1" for the first accepted, as its "connected" says), in
// order.
func (g *Gateway) FramesOf(conn string) []wire.ClientFrame {
	g.mu.Lock()
	defer g.mu.Unlock()
	var fs []wire.ClientFrame
	for i, f := range g.frames {
		if g.frameConns[i] == conn {
			fs = append(fs, f)
		}
	}
	return fs
}

// HoldAcks makes the gateway store publishes but hold their acks back
// (true), until ReleaseAcks, or send acks at once again (false; the acks
// held are kept). The acks held by a connection that drops are lost.
func (g *Gateway) HoldAcks(hold bool) {
	g.mu.Lock()
	g.holdAcks = hold
	g.mu.Unlock()
}

// ReleaseAcks sends up to n of the acks held back, oldest first on each
// connection, and returns how many it sent.
func (g *Gateway) ReleaseAcks(n int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	sent := 0
	for c := range g.conns {
		for sent < n && len(c.held) > 0 {
			b := c.held[0]
			c.held = c.held[1:]
			c.unacked--
			g.write(c, b)
			sent++
		}
	}
	return sent
}

// Held returns how many acks are held back by HoldAcks.
func (g *Gateway) Held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for c := range g.conns {
		n += len(c.held)
	}
	return n
}

// MaxUnacked returns the most publishes one connection ever had received
// and not yet seen answered (acked or refused).
func (g *Gateway) MaxUnacked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxUnacked
}

// FailPublishes answers the next publishes with error frames of these
// codes, in order, without storing them.
func (g *Gateway) FailPublishes(codes ...string) {
	g.mu.Lock()
	g.failPublishes = append(g.failPublishes, codes...)
	g.mu.Unlock()
}

// FailSubscribes answers the next subscribes with error frames of these
// codes, in order.
func (g *Gateway) FailSubscribes(codes ...string) {
	g.mu.Lock()
	g.failSubs = append(g.failSubs, codes...)
	g.mu.Unlock()
}

// DropBeforeAck stores the next n publishes, then cuts their connection
// instead of sending the ack.
func (g *Gateway) DropBeforeAck(n int) {
	g.mu.Lock()
	g.dropBeforeAck += n
	g.mu.Unlock()
}

// SetReplayOverlap makes replays start n offsets before what the client
// asked for (but not before the first held): a sloppy gateway that sends
// duplicates, which a client must drop.
func (g *Gateway) SetReplayOverlap(n uint64) {
	g.mu.Lock()
	g.replayOverlap = n
	g.mu.Unlock()
}

func (g *Gateway) channel(name string) *channel {
	ch := g.chans[name]
	if ch == nil {
		ch = &channel{epoch: DefaultEpoch, first: 1, ids: map[string]uint64{}}
		g.chans[name] = ch
	}
	return ch
}

// Append stores messages in channel, as if published by someone else, and
// sends them live to its subscribers, all in one frame. It returns the
// offset of the last one.
func (g *Gateway) Append(channel string, data ...json.RawMessage) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := g.channel(channel)
	var frame []byte
	for i, d := range data {
		if i > 0 {
			frame = append(frame, '\n')
		}
		frame = wire.AppendMessage(frame, channel, ch.next(), d)
		ch.msgs = append(ch.msgs, d)
	}
	g.fanout(channel, frame)
	return ch.next() - 1
}

// Direct sends a direct message, {"op":"message","data":data} without
// channel and offset, to every connected connection, as a worker sends one
// to a connection. It returns to how many.
func (g *Gateway) Direct(data json.RawMessage) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	frame := mustJSON(struct {
		Op   string          `json:"op"`
		Data json.RawMessage `json:"data"`
	}{wire.OpMessage, data})
	n := 0
	for c := range g.conns {
		if c.authed {
			g.write(c, frame)
			n++
		}
	}
	return n
}

// Users returns the users of the open connections, "" for anonymous ones,
// in no order.
func (g *Gateway) Users() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var users []string
	for c := range g.conns {
		if c.authed {
			users = append(users, c.user)
		}
	}
	return users
}

// Messages returns channel's epoch, first offset and the data held.
func (g *Gateway) Messages(channel string) (epoch string, first uint64, data []json.RawMessage) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := g.channel(channel)
	return ch.epoch, ch.first, append([]json.RawMessage(nil), ch.msgs...)
}

// Reset starts a new history of channel under epoch: no messages, offsets
// from 1 again. Subscribers are not told (a real gateway would drop them).
func (g *Gateway) Reset(name, epoch string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.chans[name] = &channel{epoch: epoch, first: 1, ids: map[string]uint64{}}
}

// Trim drops channel's messages below offset first, as retention does.
func (g *Gateway) Trim(channel string, first uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := g.channel(channel)
	for ch.first < first && len(ch.msgs) > 0 {
		ch.msgs = ch.msgs[1:]
		ch.first++
	}
}

// Drop cuts every connection without a close frame, as a broken network
// does.
func (g *Gateway) Drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.ws.NetConn().Close()
		c.unstall()
	}
}

// CloseConns closes every connection with a close frame of code (see the
// Close* codes in wire).
func (g *Gateway) CloseConns(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "fake gateway"), time.Now().Add(time.Second))
		c.ws.NetConn().Close()
		c.unstall()
	}
}

// Stall makes every open connection go silent, as a dead network does:
// the gateway answers no ping and no frame, and writes nothing on them.
// New connections are served.
func (g *Gateway) Stall() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		if c.stalled == nil {
			c.stalled = make(chan struct{})
		}
	}
}

// unstall lets c's reader go on (to find its connection closed); g.mu is
// held.
func (c *gconn) unstall() {
	if c.stalled != nil {
		close(c.stalled)
		c.stalled = nil
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.attempts++
	refuse := g.down || g.closed
	g.mu.Unlock()
	if refuse {
		http.Error(w, "fake gateway is down", http.StatusServiceUnavailable)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &gconn{ws: ws, subs: map[string]bool{}}
	ws.SetPingHandler(func(data string) error {
		g.mu.Lock()
		stalled := c.stalled != nil
		g.mu.Unlock()
		if stalled {
			return nil // a dead network: no pong
		}
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		ws.Close()
		return
	}
	g.accepted++
	c.id = "fake-" + strconv.Itoa(g.accepted)
	g.conns[c] = true
	if g.auth == nil || g.anonymous {
		c.authed = true
		g.write(c, mustJSON(wire.Connected{Op: wire.OpConnected, Connection: c.id}))
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.conns, c)
		if c.expiry != nil {
			c.expiry.Stop()
		}
		g.mu.Unlock()
		ws.Close()
	}()
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		g.mu.Lock()
		stalled := c.stalled
		g.mu.Unlock()
		if stalled != nil {
			<-stalled // until the connection is cut
			return
		}
		if !g.handle(c, b) {
			return
		}
	}
}

// handle serves one client frame; false means the connection was cut.
func (g *Gateway) handle(c *gconn, b []byte) bool {
	f, err := wire.DecodeClientFrame(b)
	g.mu.Lock()
	hook := g.hook
	g.mu.Unlock()
	if hook != nil {
		hook(f)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.frames = append(g.frames, f)
	g.frameConns = append(g.frameConns, c.id)
	if g.auth != nil && f.Op == wire.OpConnect {
		return g.connect(c, f)
	}
	if !c.authed {
		g.refuse(c, f.ID, "token required")
		return false
	}
	if err != nil {
		g.writeError(c, f.ID, wire.CodeBadRequest, err.Error())
		return true
	}
	switch f.Op {
	case wire.OpSubscribe:
		g.subscribe(c, f)
	case wire.OpUnsubscribe:
		delete(c.subs, f.Channel)
		g.write(c, mustJSON(wire.Unsubscribed{Op: wire.OpUnsubscribed, ID: f.ID, Channel: f.Channel}))
	case wire.OpPublish:
		return g.publish(c, f)
	case wire.OpRequest:
		switch f.Route {
		case RouteEcho:
			g.write(c, mustJSON(wire.Response{Op: wire.OpResponse, ID: f.ID, Data: f.Data}))
		case RouteNever:
		default:
			g.writeError(c, f.ID, wire.CodeNotFound, fmt.Sprintf("no worker serves route %q", f.Route))
		}
	case wire.OpHistory:
		g.history(c, f)
	case wire.OpPing:
		g.write(c, mustJSON(struct {
			Op string `json:"op"`
			ID string `json:"id,omitempty"`
		}{wire.OpPong, f.ID}))
	}
	return true
}

// connect checks the token of a connect frame and answers "connected", or
// refuses it; false means the connection was cut. g.mu is held.
func (g *Gateway) connect(c *gconn, f wire.ClientFrame) bool {
	user, exp, err := g.auth(f.Token)
	if err != nil {
		g.refuse(c, f.ID, err.Error())
		return false
	}
	if c.user != "" && user != c.user {
		g.writeError(c, f.ID, wire.CodeForbidden, "a connection cannot change user")
		return true
	}
	c.authed, c.user = true, user
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	if !exp.IsZero() {
		var t *time.Timer
		t = time.AfterFunc(time.Until(exp), func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if c.expiry == t && g.conns[c] {
				g.refuse(c, "", "token expired")
			}
		})
		c.expiry = t
	}
	g.write(c, mustJSON(wire.Connected{Op: wire.OpConnected, ID: f.ID, Connection: c.id, User: user}))
	return true
}

// refuse sends an error frame (forbidden, msg, answering frame id) and
// closes c with 4006; g.mu is held.
func (g *Gateway) refuse(c *gconn, id, msg string) {
	g.writeError(c, id, wire.CodeForbidden, msg)
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(wire.CloseAuth, msg), time.Now().Add(time.Second))
	c.ws.NetConn().Close()
}

// subscribe answers subscribed and the replay in one frame; g.mu is held,
// so no live message slips in between.
func (g *Gateway) subscribe(c *gconn, f wire.ClientFrame) {
	if c.subs[f.Channel] {
		g.writeError(c, f.ID, wire.CodeBadRequest, "already subscribed to "+f.Channel)
		return
	}
	if len(g.failSubs) > 0 {
		code := g.failSubs[0]
		g.failSubs = g.failSubs[1:]
		g.writeError(c, f.ID, code, "fake failure")
		return
	}
	ch := g.channel(f.Channel)
	ans := wire.Subscribed{Op: wire.OpSubscribed, ID: f.ID, Channel: f.Channel, Epoch: ch.epoch,
		Recovered: true, First: ch.first, Next: ch.next()}
	start := ch.next()
	if f.Last != nil {
		start = max(ch.next()-min(*f.Last, ch.next()-1), ch.first)
	}
	if f.From != nil {
		start = max(*f.From, 1)
		if (f.Epoch != "" && f.Epoch != ch.epoch) || start < ch.first {
			ans.Recovered = false
			start = ch.first
		}
		if start > ch.first+g.replayOverlap {
			start -= g.replayOverlap
		} else {
			start = ch.first
		}
	}
	frame := mustJSON(ans)
	for off := start; off < ch.next(); off++ {
		frame = append(frame, '\n')
		frame = wire.AppendMessage(frame, f.Channel, off, ch.msgs[off-ch.first])
	}
	c.subs[f.Channel] = true
	g.write(c, frame)
}

// history answers a history frame (since, before, limit, reverse; not
// since_time); g.mu is held.
func (g *Gateway) history(c *gconn, f wire.ClientFrame) {
	ch := g.channel(f.Channel)
	lo, hi := ch.first, ch.next() // the window [lo, hi)
	if f.Since != nil {
		lo = max(lo, *f.Since+1)
	}
	if f.Before != nil {
		hi = min(hi, *f.Before)
	}
	limit := uint64(100)
	if f.Limit != nil {
		limit = *f.Limit
	}
	ans := wire.History{Op: wire.OpHistory, ID: f.ID, Channel: f.Channel, Epoch: ch.epoch,
		First: ch.first, Next: ch.next(), Messages: []wire.Message{}}
	for i := uint64(0); i < limit && lo+i < hi; i++ {
		off := lo + i
		if f.Reverse {
			off = hi - 1 - i
		}
		ans.Messages = append(ans.Messages, wire.Message{Offset: off, Data: ch.msgs[off-ch.first]})
	}
	g.write(c, mustJSON(ans))
}

// publish stores f's data once per id and acks it ("duplicate": true for
// an id already stored); g.mu is held.
func (g *Gateway) publish(c *gconn, f wire.ClientFrame) bool {
	c.unacked++
	g.maxUnacked = max(g.maxUnacked, c.unacked)
	answered := true
	defer func() {
		if answered {
			c.unacked--
		}
	}()
	if len(f.Data) > MaxDataBytes {
		g.writeError(c, f.ID, wire.CodeTooLarge, fmt.Sprintf("data is %d bytes, more than %d", len(f.Data), MaxDataBytes))
		return true
	}
	if len(g.failPublishes) > 0 {
		code := g.failPublishes[0]
		g.failPublishes = g.failPublishes[1:]
		g.writeError(c, f.ID, code, "fake failure")
		return true
	}
	ch := g.channel(f.Channel)
	off, dup := ch.ids[f.ID]
	if !dup || f.ID == "" {
		off = ch.next()
		ch.msgs = append(ch.msgs, f.Data)
		g.stores++
		if f.ID != "" {
			ch.ids[f.ID] = off
		}
		g.fanout(f.Channel, wire.AppendMessage(nil, f.Channel, off, f.Data))
	}
	if g.dropBeforeAck > 0 {
		g.dropBeforeAck--
		c.ws.NetConn().Close()
		return false
	}
	ack := mustJSON(wire.Ack{Op: wire.OpAck, ID: f.ID, Channel: f.Channel, Offset: off, Epoch: ch.epoch,
		Duplicate: dup && f.ID != ""})
	if g.holdAcks {
		c.held = append(c.held, ack)
		answered = false
		return true
	}
	g.write(c, ack)
	return true
}

// fanout sends frame to the subscribers of channel; g.mu is held.
func (g *Gateway) fanout(channel string, frame []byte) {
	if len(frame) == 0 {
		return
	}
	for c := range g.conns {
		if c.subs[channel] {
			g.write(c, frame)
		}
	}
}

func (g *Gateway) writeError(c *gconn, id, code, msg string) {
	g.write(c, mustJSON(wire.ErrorFrame{Op: wire.OpError, ID: id, Code: code, Message: msg}))
}

// write sends one frame to c, unless c is stalled; a failed write cuts c.
// g.mu is held: frames reach each connection in the order of the changes.
func (g *Gateway) write(c *gconn, frame []byte) {
	if c.stalled != nil {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.ws.NetConn().Close()
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
