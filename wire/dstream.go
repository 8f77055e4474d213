package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Durable Streams (docs/durable-streams.md): a channel served as an
// append-only stream over plain HTTP. The gateway speaks the protocol; the
// hubs keep each stream's state (content type, closure, expiry, producers,
// forks) beside the channel's messages and decide every write in the Raft
// state machine, so that a write and the state it checks are one step.

// Stream operations (StreamOp.Op).
const (
	StreamCreate = "create"
	StreamAppend = "append"
	StreamDelete = "delete"
	StreamTouch  = "touch"
	// StreamExpire removes a stream if it has expired (the leader's sweep
	// of expired streams): decided again when applied, so that a stream
	// touched meanwhile stays.
	StreamExpire = "expire"
)

// StreamProducer is an idempotent producer's (id, epoch, seq) of one
// append.
type StreamProducer struct {
	ID    string `json:"id"`
	Epoch int64  `json:"epoch"`
	Seq   int64  `json:"seq"`
}

// StreamOp is one write to a stream, decided by the hubs (POST /v1/ds/op).
// Messages are the channel messages to append, each already encoded by
// EncodeStreamData (or JSON values, for JSON streams).
type StreamOp struct {
	Op          string            `json:"op"`
	Name        string            `json:"name"`
	ContentType string            `json:"content_type,omitempty"`
	TTL         *int64            `json:"ttl,omitempty"`
	ExpiresAt   string            `json:"expires_at,omitempty"`
	Closed      bool              `json:"closed,omitempty"`
	Messages    []json.RawMessage `json:"messages,omitempty"`
	Producer    *StreamProducer   `json:"producer,omitempty"`
	Seq         string            `json:"seq,omitempty"`
	// Fork: ForkFrom names the source stream; ForkOffset (0: the source's
	// tail) and ForkEpoch come from a source token; ForkSub is the
	// sub-offset (messages for JSON, bytes otherwise).
	ForkFrom   string `json:"fork_from,omitempty"`
	ForkOffset uint64 `json:"fork_offset,omitempty"`
	ForkEpoch  string `json:"fork_epoch,omitempty"`
	ForkSub    int64  `json:"fork_sub,omitempty"`
}

// StreamResult is the hubs' decision on a StreamOp: the HTTP status the
// gateway answers with, and what its headers say.
type StreamResult struct {
	Status      int    `json:"status"`
	Message     string `json:"message,omitempty"`
	Epoch       string `json:"epoch,omitempty"`
	Next        uint64 `json:"next,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Closed      bool   `json:"closed,omitempty"`
	// Producer answers: the epoch and the highest accepted seq (success, or
	// the current epoch on 403), or the expected and received seq (409).
	ProducerEpoch *int64 `json:"producer_epoch,omitempty"`
	ProducerSeq   *int64 `json:"producer_seq,omitempty"`
	ExpectedSeq   *int64 `json:"expected_seq,omitempty"`
	ReceivedSeq   *int64 `json:"received_seq,omitempty"`
	// Index is the Raft index of the entry that decided: a read that
	// reflects it sees the write.
	Index uint64 `json:"index,omitempty"`
}

// StreamInfo is what a read tells of a stream besides its messages.
type StreamInfo struct {
	ContentType string `json:"content_type"`
	Epoch       string `json:"epoch"`
	// First is the lowest offset still readable, Next the tail.
	First  uint64 `json:"first"`
	Next   uint64 `json:"next"`
	Closed bool   `json:"closed,omitempty"`
	TTL    *int64 `json:"ttl,omitempty"`
	// ExpiresAt as given at creation (RFC 3339).
	ExpiresAt string `json:"expires_at,omitempty"`
	// Implicit: a channel that was never created as a stream, read as a
	// JSON stream.
	Implicit bool `json:"implicit,omitempty"`
}

// StreamMessage is one message of a stream read.
type StreamMessage struct {
	Offset uint64          `json:"offset"`
	Data   json.RawMessage `json:"data"`
}

// StreamReadResult answers GET /v1/ds/read: Status 200 with the stream's
// info and messages from the offset asked, or 404 (no such stream) or 410
// (deleted while forks still read it).
type StreamReadResult struct {
	Status   int             `json:"status"`
	Info     StreamInfo      `json:"info"`
	Messages []StreamMessage `json:"messages"`
	// Applied is the Raft index the answering hub had applied.
	Applied uint64 `json:"applied"`
}

// The fast form of GET /v1/ds/read (format=lines), which gateways read: the
// StreamReadResult without its messages in header HeaderStreamRead, and a
// body of type StreamLinesType with a line per message, "OFFSET DATA\n".
const (
	HeaderStreamRead = "X-Comet-Stream-Read"
	StreamLinesType  = "application/x-comet-stream-lines"
)

// JSONContentType says whether a content type is application/json (the
// stream's messages are JSON values).
func JSONContentType(ct string) bool { return MediaType(ct) == "application/json" }

// MediaType returns ct's media type, lower case, without parameters ("" for
// an empty or malformed ct).
func MediaType(ct string) string {
	if strings.TrimSpace(ct) == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
		mt = strings.TrimSpace(mt)
	}
	return strings.ToLower(mt)
}

// TextContentType says whether data of this content type travels as text
// (in SSE, and in the channel as a JSON string).
func TextContentType(ct string) bool {
	mt := MediaType(ct)
	return strings.HasPrefix(mt, "text/") || mt == "application/json"
}

// EncodeStreamData encodes bytes appended to a stream that is not a JSON
// stream as the data of one channel message: a JSON string when they are
// UTF-8 text, {"base64":"..."} otherwise. DecodeStreamData reverses it.
func EncodeStreamData(b []byte) json.RawMessage {
	if utf8.Valid(b) {
		raw, _ := json.Marshal(string(b)) // a valid string always marshals
		return raw
	}
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(b))+14)
	out = append(out, `{"base64":"`...)
	out = base64.StdEncoding.AppendEncode(out, b)
	return append(out, `"}`...)
}

// DecodeStreamData returns the bytes of a channel message read from a
// stream that is not a JSON stream: the string's text, the decoded base64,
// or, for any other JSON value (a message published over the client
// protocol), the value's JSON text.
func DecodeStreamData(data json.RawMessage) []byte {
	d := bytes.TrimSpace(data)
	if len(d) > 0 && d[0] == '"' {
		var s string
		if json.Unmarshal(d, &s) == nil {
			return []byte(s)
		}
	}
	if len(d) > 0 && d[0] == '{' {
		var v struct {
			Base64 *string `json:"base64"`
		}
		if json.Unmarshal(d, &v) == nil && v.Base64 != nil {
			if b, err := base64.StdEncoding.DecodeString(*v.Base64); err == nil {
				return b
			}
		}
	}
	return []byte(d)
}

// StreamToken is the offset token clients see: the next offset to read,
// with the channel's epoch, "0000000000000042_9f3c2e1a5b7d8c40". Tokens of
// one stream sort as their offsets do.
func StreamToken(epoch string, next uint64) string {
	return fmt.Sprintf("%016d_%s", next, epoch)
}

// ParseStreamToken reads a token made by StreamToken; offset 0 is the
// position before any data (0000000000000000_0000000000000000).
func ParseStreamToken(tok string) (epoch string, next uint64, ok bool) {
	num, epoch, found := strings.Cut(tok, "_")
	if !found || len(num) != 16 || epoch == "" || len(epoch) > 64 {
		return "", 0, false
	}
	for _, r := range epoch {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-') {
			return "", 0, false
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return "", 0, false
	}
	return epoch, n, true
}
