package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/comethq/comet/wire"
)

// Message types (Msg.Type); see the package documentation.
const (
	TypeHello    = "hello"
	TypeWelcome  = "welcome"
	TypeUpdate   = "update"
	TypeRequest  = "request"
	TypeResponse = "response"
	TypeSend     = "send"
	TypeSent     = "sent"
	TypeEvent    = "event"
	TypeDropped  = "dropped"
	TypeError    = "error"
	TypePublish  = "publish"
	TypeAck      = "ack"
	TypePing     = "ping"
	TypePong     = "pong"
	// TypeStats, from a gateway, carries its wire.GatewayStats in Data,
	// once every GatewayConfig.StatsInterval, for the admin view. A router
	// of an earlier release ignores it.
	TypeStats = "stats"
	// TypePresence, from the router to a gateway that listed CapPresence
	// in its hello, asks for the connections subscribed to Channel there;
	// the gateway answers TypePresenceResult with the same ID and, in
	// Data, a JSON array of wire.PresenceEntry.
	TypePresence       = "presence"
	TypePresenceResult = "presence_result"
	// TypeJoin and TypeLeave, from the router to a gateway that listed
	// CapJoinLeave, say that connection Conn (of User) subscribed to
	// Channel, or went: the gateway tells its subscribers of Channel.
	TypeJoin  = "join"
	TypeLeave = "leave"
	// TypeStreamOp, from a gateway to a router that listed CapStreams,
	// carries a Durable Streams write (a wire.StreamOp in Data) for the
	// hubs to decide; the router answers TypeResponse with the same ID and
	// the wire.StreamResult in Data, or an Error.
	TypeStreamOp = "stream_op"
)

// CapPublish, in a welcome's caps, says that the router takes publishes
// (TypePublish). A router of an earlier release leaves it out, and its
// gateways publish over HTTP instead.
const CapPublish = "publish"

// CapStreams, in a welcome's caps, says that the router takes Durable
// Streams writes (TypeStreamOp); without it gateways send them over HTTP.
const CapStreams = "streams"

// CapPresence, in a gateway's hello, says that it answers TypePresence. A
// gateway of an earlier release leaves it out and is not asked.
const CapPresence = "presence"

// CapJoinLeave, in a gateway's hello, says that it takes TypeJoin and
// TypeLeave.
const CapJoinLeave = "join_leave"

// Session kinds (Msg.Kind of a hello).
const (
	KindGateway = "gateway"
	KindWorker  = "worker"
)

// Connection event kinds (Msg.Event, Event.Type).
const (
	EventConnected    = "connected"
	EventDisconnected = "disconnected"
	EventSubscribed   = "subscribed"
	EventUnsubscribed = "unsubscribed"
)

// MaxMsgBytes bounds one session message. Client frames and messages are
// far smaller (80 KiB and 64 KiB by default).
const MaxMsgBytes = 4 << 20

// MaxTimeout bounds the time a request or a send may wait, whatever its
// sender asks.
const MaxTimeout = 5 * time.Minute

var (
	// ErrNoConnection is returned by GatewayConfig.Deliver when the
	// gateway holds no connection with that id.
	ErrNoConnection = errors.New("no such connection")
	// ErrClosed is returned by calls on a closed Link.
	ErrClosed = errors.New("bus link closed")
)

// Route is a route a worker serves. Idempotent routes may be tried again on
// another worker when the first one goes away while handling a request.
type Route struct {
	Route      string `json:"route"`
	Idempotent bool   `json:"idempotent,omitempty"`
}

// Msg is one session message, the union of the fields of every type.
type Msg struct {
	Type    string          `json:"type"`
	ID      uint64          `json:"id,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Name    string          `json:"name,omitempty"`
	Routes  []Route         `json:"routes,omitempty"`
	Events  bool            `json:"events,omitempty"`
	Max     int             `json:"max,omitempty"`
	Route   string          `json:"route,omitempty"`
	Conn    string          `json:"conn,omitempty"`
	User    string          `json:"user,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Event   string          `json:"event,omitempty"`
	Timeout int64           `json:"timeout_ms,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Error   *wire.Error     `json:"error,omitempty"`
	Count   uint64          `json:"count,omitempty"`
	// Busy, on a worker's error response, says it refused the request
	// without handling it (at capacity): the router may try another
	// worker, whatever the route.
	Busy bool `json:"busy,omitempty"`
	// Caps, on a welcome, lists what the router takes besides requests
	// (CapPublish).
	Caps []string `json:"caps,omitempty"`
	// Key is a publish's idempotency id; Offset, Epoch and Duplicate are
	// its ack's.
	Key       string `json:"key,omitempty"`
	Offset    uint64 `json:"offset,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	// Final, on an ack's unavailable error, says the refusal stands for
	// now (the hubs hold too many ids): the gateway answers it rather
	// than sending the publish again.
	Final bool `json:"final,omitempty"`
}

// Encode returns m as JSON.
func (m *Msg) Encode() []byte {
	switch {
	case m.Type == TypePublish && len(m.Data) > 0 && bytes.IndexByte(m.Data, '\n') < 0 && bytes.IndexByte(m.Data, '\r') < 0:
		o := *m
		o.Type, o.ID, o.Channel, o.Key, o.Data = "", 0, "", "", nil
		if o.zero() {
			return AppendPublish(make([]byte, 0, 64+len(m.Channel)+len(m.Key)+len(m.Data)), m.ID, m.Channel, m.Key, m.Data)
		}
	case m.Type == TypeAck:
		o := *m
		o.Type, o.ID, o.Channel, o.Offset, o.Epoch, o.Duplicate = "", 0, "", 0, "", false
		if o.zero() {
			return AppendAck(make([]byte, 0, 96+len(m.Channel)+len(m.Epoch)), m.ID, m.Channel, m.Offset, m.Epoch, m.Duplicate)
		}
	}
	b, err := marshal(m)
	if err != nil {
		// Only Data can fail, and every producer checks it first.
		b, _ = json.Marshal(Msg{Type: m.Type, ID: m.ID, Error: &wire.Error{Code: wire.CodeUnavailable, Message: "cannot encode: " + err.Error()}})
	}
	return b
}

// marshal is json.Marshal without HTML escaping: data travels as given
// ("<", not "\u003c").
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// zero reports whether no field of m is set.
func (m *Msg) zero() bool {
	return m.Type == "" && m.ID == 0 && m.Kind == "" && m.Name == "" && m.Routes == nil && !m.Events &&
		m.Max == 0 && m.Route == "" && m.Conn == "" && m.User == "" && m.Channel == "" && m.Event == "" &&
		m.Timeout == 0 && m.Data == nil && m.Error == nil && m.Count == 0 && !m.Busy && m.Caps == nil &&
		m.Key == "" && m.Offset == 0 && m.Epoch == "" && !m.Duplicate && !m.Final
}

// Decode reads one session message.
func Decode(b []byte) (Msg, error) {
	if m, ok := decodeFast(b); ok {
		return m, nil
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("bad bus message: %w", err)
	}
	if m.Type == "" {
		return m, errors.New("bad bus message: no type")
	}
	return m, nil
}

// TimeoutOf returns what goes in timeout_ms for a deadline: the
// milliseconds left, at least 1, at most MaxTimeout.
func TimeoutOf(deadline time.Time) int64 {
	ms := time.Until(deadline).Milliseconds()
	return max(1, min(ms, MaxTimeout.Milliseconds()))
}

// DeadlineOf returns the deadline a received timeout_ms stands for; def is
// used when it is absent.
func DeadlineOf(ms int64, def time.Duration) time.Time {
	d := def
	if ms > 0 {
		d = time.Duration(ms) * time.Millisecond
	}
	return time.Now().Add(min(d, MaxTimeout))
}

// SplitConn returns the gateway id of a connection id
// ("<gateway>-<hex>"), split at its last '-'.
func SplitConn(conn string) (gateway string, ok bool) {
	i := strings.LastIndexByte(conn, '-')
	if i <= 0 || i == len(conn)-1 {
		return "", false
	}
	return conn[:i], true
}

// CheckConn returns an error unless conn is a valid connection id: 3-255
// bytes of [A-Za-z0-9_.-], a gateway id, '-', and at least one more byte.
func CheckConn(conn string) error {
	if len(conn) > 255 || strings.Trim(conn, idChars) != "" {
		return fmt.Errorf("connection id %.80q must be at most 255 bytes of [A-Za-z0-9_.-]", conn)
	}
	if _, ok := SplitConn(conn); !ok {
		return fmt.Errorf("connection id %.80q is not <gateway>-<id>", conn)
	}
	return nil
}

const idChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

// MaxGatewayID is the longest gateway id.
const MaxGatewayID = 128

// CheckGatewayID returns an error unless id can name a gateway: 1-128
// bytes of [A-Za-z0-9_.-] (it prefixes the gateway's connection ids).
func CheckGatewayID(id string) error {
	if id == "" || len(id) > MaxGatewayID || strings.Trim(id, idChars) != "" {
		return fmt.Errorf("gateway id %.80q must be 1-%d bytes of [A-Za-z0-9_.-]", id, MaxGatewayID)
	}
	return nil
}

// Compact checks that data is one JSON value and returns it on one line
// (gateways frame messages by newlines). Empty data is an error.
func Compact(data json.RawMessage) (json.RawMessage, error) {
	if len(data) == 0 {
		return nil, errors.New("data is required")
	}
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		if !wire.Valid(data) {
			return nil, errors.New("data is not valid JSON")
		}
		return data, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, errors.New("data is not valid JSON")
	}
	return buf.Bytes(), nil
}
