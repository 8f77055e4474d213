package socketio

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Socket.IO v5 packet types (the digit after Engine.IO's "4" message type).
const (
	typeConnect      = 0
	typeDisconnect   = 1
	typeEvent        = 2
	typeAck          = 3
	typeConnectError = 4
	typeBinaryEvent  = 5
	typeBinaryAck    = 6
)

// Engine.IO v4 packet types, as the first character of a text packet.
const (
	eioOpen    = '0'
	eioClose   = '1'
	eioPing    = '2'
	eioPong    = '3'
	eioMessage = '4'
	eioUpgrade = '5'
	eioNoop    = '6'
)

// recordSeparator separates Engine.IO packets in a polling payload.
const recordSeparator = "\x1e"

// errBinary is a binary Socket.IO packet or Engine.IO payload: this server
// speaks text only.
var errBinary = errors.New("binary packets are not supported")

// packet is one decoded Socket.IO packet.
type packet struct {
	typ   int
	nsp   string
	hasID bool
	id    uint64
	data  json.RawMessage   // the payload as sent; nil when there is none
	args  []json.RawMessage // an event's or ack's array, split
}

// decodePacket decodes the text form of a Socket.IO packet (what follows
// Engine.IO's message type), as socket.io-parser writes it:
// <type>[<attachments>-][<nsp>,][<id>][<JSON payload>].
func decodePacket(s string) (packet, error) {
	var p packet
	if s == "" {
		return p, errors.New("empty packet")
	}
	if s[0] < '0' || s[0] > '6' {
		return p, fmt.Errorf("unknown packet type %q", s[0])
	}
	p.typ = int(s[0] - '0')
	if p.typ == typeBinaryEvent || p.typ == typeBinaryAck {
		return p, errBinary
	}
	i := 1
	p.nsp = "/"
	if i < len(s) && s[i] == '/' {
		end := strings.IndexByte(s[i:], ',')
		if end < 0 {
			p.nsp, i = s[i:], len(s)
		} else {
			p.nsp, i = s[i:i+end], i+end+1
		}
	}
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j > i {
		id, err := strconv.ParseUint(s[i:j], 10, 64)
		if err != nil {
			return p, fmt.Errorf("bad ack id %q: %w", s[i:j], err)
		}
		p.hasID, p.id, i = true, id, j
	}
	if i < len(s) {
		p.data = json.RawMessage(s[i:])
		if !json.Valid(p.data) {
			return p, errors.New("payload is not JSON")
		}
	}
	switch p.typ {
	case typeConnect:
		if p.data != nil && !isObject(p.data) {
			return p, errors.New("connect payload is not an object")
		}
	case typeDisconnect:
		if p.data != nil {
			return p, errors.New("disconnect with a payload")
		}
	case typeEvent, typeAck:
		if err := json.Unmarshal(p.data, &p.args); err != nil || p.data == nil {
			return p, errors.New("payload is not an array")
		}
		if p.typ == typeEvent {
			var name string
			if len(p.args) == 0 || json.Unmarshal(p.args[0], &name) != nil {
				return p, errors.New("event without a name")
			}
		} else if !p.hasID {
			return p, errors.New("ack without an id")
		}
	case typeConnectError:
		// A server's packet; decoded for completeness.
	}
	return p, nil
}

func isObject(b json.RawMessage) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c == '{'
	}
	return false
}

// eventName returns an event packet's name (its first array element).
func (p packet) eventName() string {
	var name string
	if len(p.args) > 0 {
		_ = json.Unmarshal(p.args[0], &name)
	}
	return name
}

// appendEvent appends the Engine.IO message of an event on "/", named
// name, with args (each valid JSON): 42["name",arg1,...].
func appendEvent(b []byte, name string, args ...json.RawMessage) []byte {
	b = append(b, eioMessage, '0'+typeEvent, '[')
	q, _ := json.Marshal(name) // a string marshals
	b = append(b, q...)
	for _, a := range args {
		b = append(b, ',')
		b = append(b, a...)
	}
	return append(b, ']')
}

// appendAck appends the Engine.IO message of an ack on "/": 43<id>[args].
func appendAck(b []byte, id uint64, args ...json.RawMessage) []byte {
	b = append(b, eioMessage, '0'+typeAck)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, '[')
	for i, a := range args {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, a...)
	}
	return append(b, ']')
}

// connectError is the Engine.IO message refusing a connect to nsp.
func connectError(nsp, msg string) string {
	m, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	prefix := ""
	if nsp != "/" {
		prefix = nsp + ","
	}
	return string(eioMessage) + strconv.Itoa(typeConnectError) + prefix + string(m)
}

// splitPayload splits a polling request's body into Engine.IO packets.
func splitPayload(body string) ([]string, error) {
	if body == "" {
		return nil, errors.New("empty payload")
	}
	pkts := strings.Split(body, recordSeparator)
	for _, p := range pkts {
		if p == "" {
			return nil, errors.New("empty packet in payload")
		}
		if p[0] == 'b' {
			return nil, errBinary
		}
	}
	return pkts, nil
}
