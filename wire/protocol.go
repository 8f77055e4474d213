package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Client protocol ops (CONTRACT.md, "Client protocol").
const (
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpPublish     = "publish"
	OpRequest     = "request"
	OpPing        = "ping"
	OpConnect     = "connect"
	// OpHistory asks for a page of a channel's history; its answer has
	// the same op (History).
	OpHistory = "history"
	// OpPresence and OpPresenceStats ask who is subscribed to a channel;
	// their answers have the same op (PresenceFrame, PresenceStatsFrame).
	OpPresence      = "presence"
	OpPresenceStats = "presence_stats"
	// OpJoin and OpLeave (server) tell the subscribers of a channel whose
	// namespace has join_leave that a connection subscribed or went
	// (JoinLeave).
	OpJoin  = "join"
	OpLeave = "leave"

	OpConnected    = "connected"
	OpSubscribed   = "subscribed"
	OpUnsubscribed = "unsubscribed"
	OpMessage      = "message"
	OpAck          = "ack"
	OpResponse     = "response"
	OpPong         = "pong"
	OpError        = "error"
)

// Close codes a gateway ends a connection with, the same on WebSocket and
// SockJS. Every one of them means "reconnect and resume"; they differ in
// why, and in whether to reconnect to the same gateway at once.
const (
	// CloseShutdown: the gateway is stopping; reconnect to another one now.
	CloseShutdown = 4001
	// CloseSlowConsumer: the client did not read fast enough and its queue
	// overflowed; reconnect and resume from the last offset.
	CloseSlowConsumer = 4002
	// CloseIdle: nothing was heard from the client for too long.
	CloseIdle = 4003
	// CloseResync: a channel the client subscribes to lost messages the
	// gateway could not replay (retention, a reset channel): resubscribe,
	// and the subscribed frame tells what was lost.
	CloseResync = 4004
	// CloseUnavailable: the hubs could not be reached to replay what the
	// client missed; reconnect later, or to another gateway.
	CloseUnavailable = 4005
	// CloseAuth: the connection's token was refused or has expired, or
	// none was given where one is required: get a new token, then
	// reconnect with it. The error frame before the close says which.
	CloseAuth = 4006
)

// ClientFrame is one frame a client sends to a gateway. From is a pointer
// so that "from":0 can be told from no from at all.
type ClientFrame struct {
	Op      string          `json:"op"`
	ID      string          `json:"id,omitempty"`
	Channel string          `json:"channel,omitempty"`
	From    *uint64         `json:"from,omitempty"`
	Epoch   string          `json:"epoch,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Route   string          `json:"route,omitempty"`
	// Token is the JWT of a connect frame; Info, the client's own
	// description of itself (a JSON object, shown in presence).
	Token string          `json:"token,omitempty"`
	Info  json.RawMessage `json:"info,omitempty"`
	// Last, on a subscribe without from: replay the newest Last messages,
	// then go live ("rewind").
	Last *uint64 `json:"last,omitempty"`
	// The history op's query: Since and Before are exclusive bounds
	// (offsets after Since, before Before), SinceTime an RFC 3339 time.
	Limit     *uint64 `json:"limit,omitempty"`
	Since     *uint64 `json:"since,omitempty"`
	Before    *uint64 `json:"before,omitempty"`
	SinceTime string  `json:"since_time,omitempty"`
	Reverse   bool    `json:"reverse,omitempty"`
	// After, on a presence op: the page after this connection id.
	After string `json:"after,omitempty"`
}

// ErrFrame is wrapped by every error DecodeClientFrame returns.
var ErrFrame = errors.New("bad frame")

// DecodeClientFrame reads one client frame and checks what can be checked
// without knowing the server's limits: a known op, a valid channel where the
// op needs one, data where it needs some. The frame's id is returned even
// when the frame is refused, so that the error can carry it.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	f, ok := decodeFrameFast(b)
	if !ok {
		var err error
		if f, err = decodeFrameJSON(b); err != nil {
			return f, err
		}
	}
	return f, checkFrame(f)
}

// decodeFrameJSON decodes a client frame with encoding/json, saying what
// is wrong with one it cannot take.
func decodeFrameJSON(b []byte) (ClientFrame, error) {
	var f ClientFrame
	if err := json.Unmarshal(b, &f); err != nil {
		var id struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(b, &id) == nil {
			if s, ok := id.ID.(string); ok {
				f.ID = s
			}
		}
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return f, fmt.Errorf("%w: field %q must be %s, not %s", ErrFrame, te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		case errors.As(err, &te):
			return f, fmt.Errorf("%w: a frame is one JSON object, not %s", ErrFrame, te.Value)
		default:
			return f, fmt.Errorf("%w: not JSON: %v", ErrFrame, err)
		}
	}
	return f, nil
}

// checkFrame checks what a frame's op needs.
func checkFrame(f ClientFrame) error {
	switch f.Op {
	case OpSubscribe, OpUnsubscribe:
		if err := CheckChannel(f.Channel); err != nil {
			return fmt.Errorf("%w: %v", ErrFrame, err)
		}
		if f.Last != nil && f.From != nil {
			return fmt.Errorf("%w: subscribe takes from or last, not both", ErrFrame)
		}
	case OpPresence, OpPresenceStats:
		if err := CheckChannel(f.Channel); err != nil {
			return fmt.Errorf("%w: %v", ErrFrame, err)
		}
	case OpHistory:
		if err := CheckChannel(f.Channel); err != nil {
			return fmt.Errorf("%w: %v", ErrFrame, err)
		}
		if f.Before != nil && *f.Before == 0 {
			return fmt.Errorf("%w: before must be a positive offset", ErrFrame)
		}
		if f.SinceTime != "" {
			if _, err := time.Parse(time.RFC3339Nano, f.SinceTime); err != nil {
				return fmt.Errorf("%w: since_time %q is not an RFC 3339 time", ErrFrame, f.SinceTime)
			}
		}
	case OpPublish:
		if err := CheckChannel(f.Channel); err != nil {
			return fmt.Errorf("%w: %v", ErrFrame, err)
		}
		if len(f.Data) == 0 || string(f.Data) == "null" {
			return fmt.Errorf("%w: publish needs data", ErrFrame)
		}
	case OpRequest:
		if f.Route == "" {
			return fmt.Errorf("%w: request needs a route", ErrFrame)
		}
	case OpConnect:
		if f.Token == "" && len(f.Info) == 0 {
			return fmt.Errorf("%w: connect needs a token (or info)", ErrFrame)
		}
	case OpPing:
	case "":
		return fmt.Errorf("%w: no op", ErrFrame)
	default:
		return fmt.Errorf("%w: unknown op %q", ErrFrame, f.Op)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "uint64", "int", "int64":
		return "a non-negative integer"
	case "string":
		return "a string"
	case "struct":
		return "an object"
	default:
		return goKind
	}
}

// Subscribed answers a subscribe: the channel's epoch, whether the client's
// position could be honoured, and the channel's first retained and next
// offsets. The replayed messages follow it.
type Subscribed struct {
	Op        string `json:"op"`
	ID        string `json:"id,omitempty"`
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
	First     uint64 `json:"first"`
	Next      uint64 `json:"next"`
}

// History answers a history op: the channel's epoch, first and next
// offsets, and the page of messages (oldest first, or newest first when
// the query was reverse).
type History struct {
	Op       string    `json:"op"`
	ID       string    `json:"id,omitempty"`
	Channel  string    `json:"channel"`
	Epoch    string    `json:"epoch"`
	First    uint64    `json:"first"`
	Next     uint64    `json:"next"`
	Messages []Message `json:"messages"`
}

// PresenceFrame answers a presence op: a page of the connections
// subscribed to the channel, in connection id order; After, when there
// are more, is the after of the next page.
type PresenceFrame struct {
	Op       string          `json:"op"`
	ID       string          `json:"id,omitempty"`
	Channel  string          `json:"channel"`
	Presence []PresenceEntry `json:"presence"`
	After    string          `json:"after,omitempty"`
}

// JoinLeave is a join or leave frame: connection Conn (of user User,
// absent when anonymous) subscribed to Channel, or went.
type JoinLeave struct {
	Op      string `json:"op"`
	Channel string `json:"channel"`
	Conn    string `json:"conn"`
	User    string `json:"user,omitempty"`
}

// PresenceStatsFrame answers a presence_stats op.
type PresenceStatsFrame struct {
	Op          string `json:"op"`
	ID          string `json:"id,omitempty"`
	Channel     string `json:"channel"`
	Connections int    `json:"connections"`
	Users       int    `json:"users"`
}

// Unsubscribed answers an unsubscribe.
type Unsubscribed struct {
	Op      string `json:"op"`
	ID      string `json:"id,omitempty"`
	Channel string `json:"channel"`
}

// Connected is the first frame of every connection, and the answer to a
// connect frame. User is the authenticated user (the token's sub); it is
// absent on an anonymous connection.
type Connected struct {
	Op         string `json:"op"`
	ID         string `json:"id,omitempty"`
	Connection string `json:"connection"`
	User       string `json:"user,omitempty"`
}

// Ack answers a publish once it is committed.
type Ack struct {
	Op      string `json:"op"`
	ID      string `json:"id,omitempty"`
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch,omitempty"`
	// Duplicate is true when the publish was a retry of an id already
	// stored, and Offset is the offset the first one got.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Response answers a request.
type Response struct {
	Op   string          `json:"op"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data"`
}

// ErrorFrame reports a refused or failed client frame.
type ErrorFrame struct {
	Op      string `json:"op"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ServerFrame is any frame a gateway sends, as a client decodes it: the
// union of the fields of all server ops.
type ServerFrame struct {
	Op         string          `json:"op"`
	ID         string          `json:"id,omitempty"`
	Connection string          `json:"connection,omitempty"`
	User       string          `json:"user,omitempty"`
	Channel    string          `json:"channel,omitempty"`
	Epoch      string          `json:"epoch,omitempty"`
	Recovered  bool            `json:"recovered,omitempty"`
	First      uint64          `json:"first,omitempty"`
	Next       uint64          `json:"next,omitempty"`
	Offset     uint64          `json:"offset,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	Code       string          `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
	Duplicate  bool            `json:"duplicate,omitempty"`
	Messages   []Message       `json:"messages,omitempty"`
	// Of presence and presence_stats answers.
	Presence    []PresenceEntry `json:"presence,omitempty"`
	Conn        string          `json:"conn,omitempty"`
	After       string          `json:"after,omitempty"`
	Connections int             `json:"connections,omitempty"`
	Users       int             `json:"users,omitempty"`
}

// AppendMessage appends the frame {"op":"message","channel":ch,"offset":off,
// "data":data} to b. ch must be a valid channel name (its characters need
// no escaping) and data compact JSON (no raw newline), as hubs store it.
func AppendMessage(b []byte, ch string, off uint64, data []byte) []byte {
	b = append(b, `{"op":"message","channel":"`...)
	b = append(b, ch...)
	b = append(b, `","offset":`...)
	b = strconv.AppendUint(b, off, 10)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// MessageData returns the data of a message frame made by AppendMessage
// (it aliases frame).
func MessageData(frame []byte) ([]byte, bool) {
	i := bytes.Index(frame, []byte(`,"data":`))
	if i < 0 || len(frame) < i+9 || frame[len(frame)-1] != '}' {
		return nil, false
	}
	return frame[i+8 : len(frame)-1], true
}

// AppendAck appends a as encoding/json would write it (the same fields,
// in the same order) to b, without reflection: a gateway writes one per
// publish.
func AppendAck(b []byte, a Ack) []byte {
	b = append(b, `{"op":`...)
	b = appendString(b, a.Op)
	if a.ID != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, a.ID)
	}
	b = append(b, `,"channel":`...)
	b = appendString(b, a.Channel)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, a.Offset, 10)
	if a.Epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendString(b, a.Epoch)
	}
	if a.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}

// AppendPublishResults appends rs as encoding/json would write it (a
// JSON array, the same fields in the same order) to b, without reflection:
// the answer of a batch publish.
func AppendPublishResults(b []byte, rs []PublishResult) []byte {
	if rs == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"channel":`...)
		b = appendString(b, r.Channel)
		if r.Offset != 0 {
			b = append(b, `,"offset":`...)
			b = strconv.AppendUint(b, r.Offset, 10)
		}
		if r.Epoch != "" {
			b = append(b, `,"epoch":`...)
			b = appendString(b, r.Epoch)
		}
		if r.Duplicate {
			b = append(b, `,"duplicate":true`...)
		}
		if r.Code != "" {
			b = append(b, `,"code":`...)
			b = appendString(b, r.Code)
		}
		if r.Message != "" {
			b = append(b, `,"message":`...)
			b = appendString(b, r.Message)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendString appends s as a JSON string: as it is when it needs no
// escaping (printable ASCII but for '"', '\\' and the '<', '>', '&' that
// encoding/json escapes), through encoding/json otherwise.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// MessageOffset returns the offset of a message frame of channel ch, as
// AppendMessage makes it.
func MessageOffset(frame []byte, ch string) (uint64, bool) {
	const head, mid = `{"op":"message","channel":"`, `","offset":`
	n := len(head) + len(ch) + len(mid)
	if len(frame) <= n || string(frame[:len(head)]) != head || string(frame[len(head):len(head)+len(ch)]) != ch ||
		string(frame[len(head)+len(ch):n]) != mid {
		return 0, false
	}
	end := n
	for end < len(frame) && frame[end] >= '0' && frame[end] <= '9' {
		end++
	}
	off, err := strconv.ParseUint(string(frame[n:end]), 10, 64)
	return off, err == nil
}
