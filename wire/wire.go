// Package wire holds the JSON types that cross process boundaries: the hub
// HTTP API bodies and the error codes of CONTRACT.md. Hubs, gateways and
// clients import it; it imports nothing of Comet.
package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// MaxChannelLen is the longest channel name, in bytes.
const MaxChannelLen = 255

// Error codes, as CONTRACT.md lists them.
const (
	CodeBadRequest  = "bad_request"
	CodeNotFound    = "not_found"
	CodeForbidden   = "forbidden"
	CodeTooLarge    = "too_large"
	CodeUnavailable = "unavailable"
	CodeTimeout     = "timeout"
)

// KnownCode reports whether code is one of the error codes above: an error
// a worker or an application endpoint gives with another code reaches
// clients as bad_request.
func KnownCode(code string) bool {
	switch code {
	case CodeBadRequest, CodeNotFound, CodeForbidden, CodeTooLarge, CodeUnavailable, CodeTimeout:
		return true
	}
	return false
}

// ValidChannel reports whether name is a valid channel name: 1-255 bytes of
// [A-Za-z0-9_.:/@-].
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '.', c == ':', c == '/', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckChannel returns a descriptive error when name is not a valid channel.
func CheckChannel(name string) error {
	if ValidChannel(name) {
		return nil
	}
	if name == "" {
		return fmt.Errorf("channel name is empty")
	}
	if len(name) > MaxChannelLen {
		return fmt.Errorf("channel name is %d bytes, longer than %d", len(name), MaxChannelLen)
	}
	return fmt.Errorf("channel name %q has characters outside [A-Za-z0-9_.:/@-]", name)
}

// PublishRequest is the body of POST /v1/publish.
type PublishRequest struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	ID      string          `json:"id,omitempty"`
}

// PublishResponse answers a publish once it is committed by a quorum.
type PublishResponse struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
	// Duplicate is true when the id was seen before and Offset is the
	// offset the first publish got (an extension of CONTRACT.md).
	Duplicate bool `json:"duplicate,omitempty"`
}

// PublishResult is one item of the answer to a batch publish (POST
// /v1/publish with a JSON array of PublishRequest): the publish's
// PublishResponse when it was stored, or, when it failed, its channel with
// Code (one of the error codes above) and Message. The answer holds one
// result per request, in the order of the requests (an extension of
// CONTRACT.md).
type PublishResult struct {
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Code      string `json:"code,omitempty"`
	Message   string `json:"message,omitempty"`
}

// Err returns the result's error, or nil when the publish was stored.
func (r PublishResult) Err() *Error {
	if r.Code == "" {
		return nil
	}
	return &Error{Code: r.Code, Message: r.Message}
}

// Response returns the result of a stored publish as a PublishResponse.
func (r PublishResult) Response() PublishResponse {
	return PublishResponse{Channel: r.Channel, Offset: r.Offset, Epoch: r.Epoch, Duplicate: r.Duplicate}
}

// Message is one stored message as the hub API returns it.
type Message struct {
	Offset uint64          `json:"offset"`
	Data   json.RawMessage `json:"data"`
	Time   time.Time       `json:"time"`
}

// MessagesResponse answers GET /v1/channels/{channel}/messages.
type MessagesResponse struct {
	Epoch    string    `json:"epoch"`
	First    uint64    `json:"first"`
	Next     uint64    `json:"next"`
	Messages []Message `json:"messages"`
}

// HistoryQuery selects messages of one channel for a history read (GET
// /v1/channels/{channel}/messages with before, reverse or since_time, and
// the client protocol's history op). The window is the offsets held that
// are at least From (and, with SinceTime set, stored at or after it) and,
// with Before set, below Before; Limit messages of it are returned, the
// oldest first, or with Reverse the newest first.
type HistoryQuery struct {
	From      uint64
	Before    uint64 // 0: no upper bound
	SinceTime time.Time
	Limit     int
	Reverse   bool
}

// PresenceEntry is one connection subscribed to a channel: its id, its
// user (absent when anonymous), and its client info.
type PresenceEntry struct {
	Conn string `json:"conn"`
	User string `json:"user,omitempty"`
	// Info is what the client sent in its connect frame's info.
	Info json.RawMessage `json:"info,omitempty"`
}

// Presence answers GET /v1/channels/{channel}/presence: the connections
// subscribed to the channel on every gateway, in connection id order.
// After, when there are more, is what to ask the next page with (the
// last connection id of this one). Missing names the gateways that did
// not answer in time (their connections are left out).
type Presence struct {
	Channel  string          `json:"channel"`
	Presence []PresenceEntry `json:"presence"`
	After    string          `json:"after,omitempty"`
	Missing  []string        `json:"missing,omitempty"`
}

// PresenceStats answers GET /v1/channels/{channel}/presence_stats: how
// many connections are subscribed to the channel, and how many distinct
// users they are (the anonymous ones not counted).
type PresenceStats struct {
	Channel     string   `json:"channel"`
	Connections int      `json:"connections"`
	Users       int      `json:"users"`
	Missing     []string `json:"missing,omitempty"`
}

// Node is one hub as GET /v1/cluster reports it.
type Node struct {
	ID      string `json:"id"`
	Raft    string `json:"raft"`
	API     string `json:"api"`
	State   string `json:"state"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
	Applied uint64 `json:"applied,omitempty"`
	Commit  uint64 `json:"commit,omitempty"`
	Error   string `json:"error,omitempty"`
	// Version is the Comet version the hub runs (see ClusterStatus).
	Version string `json:"version,omitempty"`
}

// ClusterStatus answers GET /v1/cluster.
type ClusterStatus struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	LeaderAPI    string `json:"leader_api"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	Nodes        []Node `json:"nodes"`
	// Version and Commit say which build of Comet the asked hub runs
	// (comet version); hubs of earlier releases leave them out.
	Version string `json:"version,omitempty"`
	Commit  string `json:"commit,omitempty"`
}

// JoinRequest is the body of POST /v1/cluster/join.
type JoinRequest struct {
	ID   string `json:"id"`
	Raft string `json:"raft"`
	API  string `json:"api"`
	// Update asks only to record a member's addresses: a hub that is not
	// a member at Raft is answered 404 and not added. Hubs send it to
	// register themselves, so that one removed while its registration was
	// on its way is not added back.
	Update bool `json:"update,omitempty"`
}

// RemoveRequest is the body of POST /v1/cluster/remove.
type RemoveRequest struct {
	ID string `json:"id"`
}

// Error is the body of every 4xx and 5xx answer of the hub API.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Leader  string `json:"leader,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// StreamLine is one line of the commit stream, GET /v1/stream?from=INDEX
// (newline-delimited JSON). It is one of: a message (Index, Channel,
// Offset, Epoch, Time, Data set); a heartbeat (only Applied set: every entry
// up to Applied was streamed, so the next position is Applied+1); or a
// reset (Reset true, Floor the lowest position the hub can still stream):
// the position asked for is gone, and the reader must resync with range
// reads before following from Floor or later. A stream's first line, sent
// at once, is a reset or a heartbeat saying where the stream starts:
// Applied is from-1, or from now the index the hub had applied (internal
// to a release: gateways and hubs of the same build).
type StreamLine struct {
	Index   uint64          `json:"index,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Offset  uint64          `json:"offset,omitempty"`
	Epoch   string          `json:"epoch,omitempty"`
	Time    *time.Time      `json:"time,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Applied uint64          `json:"applied,omitempty"`
	Reset   bool            `json:"reset,omitempty"`
	Floor   uint64          `json:"floor,omitempty"`
}

// Headers of a hub's range read in frames (GET
// /v1/channels/{channel}/messages?format=frames, the form gateways read
// in): the channel's epoch, first and next offsets, and the Raft index the
// hub had applied when it read (the answer reflects at least every entry
// up to it; on every range read). FramesType is its content type.
const (
	HeaderEpoch   = "X-Comet-Epoch"
	HeaderFirst   = "X-Comet-First"
	HeaderNext    = "X-Comet-Next"
	HeaderApplied = "X-Comet-Applied"
	FramesType    = "application/x-comet-frames"
)

// AppendStreamLine appends l to b as one line of the commit stream: the
// fields encoding/json writes, in its order, and a newline. Data goes as
// it is stored (compact JSON), where encoding/json would check it again
// and escape its '<', '>' and '&': hubs write every message of every
// channel to every gateway this way. A line encoding/json must write
// (data with a line break in it) is written by it; a time it cannot write
// (a year outside 0-9999) is left out, as gateways do not use it.
func AppendStreamLine(b []byte, l StreamLine) []byte {
	if bytes.IndexByte(l.Data, '\n') >= 0 || bytes.IndexByte(l.Data, '\r') >= 0 ||
		l.Time != nil && (l.Time.Year() < 0 || l.Time.Year() > 9999) {
		j, err := json.Marshal(l)
		if err != nil { // a time encoding/json cannot write: the line goes without it
			l.Time = nil
			j, _ = json.Marshal(l)
		}
		return append(append(b, j...), '\n')
	}
	start := len(b)
	b = append(b, '{')
	field := func(name string) {
		if len(b) > start+1 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
	}
	if l.Index != 0 {
		field("index")
		b = strconv.AppendUint(b, l.Index, 10)
	}
	if l.Channel != "" {
		field("channel")
		b = appendString(b, l.Channel)
	}
	if l.Offset != 0 {
		field("offset")
		b = strconv.AppendUint(b, l.Offset, 10)
	}
	if l.Epoch != "" {
		field("epoch")
		b = appendString(b, l.Epoch)
	}
	if l.Time != nil {
		field("time")
		b = append(b, '"')
		b = l.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if len(l.Data) != 0 {
		field("data")
		b = append(b, l.Data...)
	}
	if l.Applied != 0 {
		field("applied")
		b = strconv.AppendUint(b, l.Applied, 10)
	}
	if l.Reset {
		field("reset")
		b = append(b, "true"...)
	}
	if l.Floor != 0 {
		field("floor")
		b = strconv.AppendUint(b, l.Floor, 10)
	}
	return append(b, '}', '\n')
}

// PeekStreamLine reads the index and channel of a message line of the
// commit stream without decoding the rest, for a reader that skips the
// messages of channels it does not follow. It knows only the form hubs
// write (encoding/json of StreamLine: the index first, then the channel,
// which needs no escapes); ok is false for any other line (a heartbeat, a
// reset, another encoding), which must then be decoded whole. channel
// points into line.
func PeekStreamLine(line []byte) (index uint64, channel []byte, ok bool) {
	const pre, mid = `{"index":`, `,"channel":"`
	if len(line) < len(pre) || string(line[:len(pre)]) != pre {
		return 0, nil, false
	}
	i := len(pre)
	start := i
	for i < len(line) && line[i] >= '0' && line[i] <= '9' {
		d := uint64(line[i] - '0')
		if index > (1<<64-1-d)/10 {
			return 0, nil, false // would overflow: not a line of ours
		}
		index = index*10 + d
		i++
	}
	if i == start || index == 0 || (line[start] == '0') {
		return 0, nil, false
	}
	if len(line)-i < len(mid) || string(line[i:i+len(mid)]) != mid {
		return 0, nil, false
	}
	i += len(mid)
	start = i
	for i < len(line) && line[i] != '"' {
		if line[i] == '\\' || line[i] < 0x20 {
			return 0, nil, false
		}
		i++
	}
	if i == len(line) || i == start {
		return 0, nil, false
	}
	return index, line[start:i], true
}
