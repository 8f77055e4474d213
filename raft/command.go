package raft

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/wire"
)

// ErrBadCommand is returned when an entry's bytes cannot be decoded.
var ErrBadCommand = errors.New("bad command")

const commandVersion = 1

// Publish is one message of a Command.
type Publish struct {
	Channel string
	ID      string
	Data    []byte
}

// KV is one replicated key/value pair; a nil Value deletes the key.
type KV struct {
	Key   string
	Value []byte
}

// Command is the content of one Raft entry. The leader fills Time and Epoch
// (a fresh random string) so that applying it is deterministic on every hub.
// The parts are applied in field order.
type Command struct {
	Time  time.Time
	Epoch string
	// Publish appends messages; each gets a log.Result in the response.
	Publish []Publish
	// Retention, when not nil, replaces the retention rules.
	Retention []log.Rule
	// Delete resets channels into a new history in Epoch.
	Delete []string
	// Put stores cluster metadata.
	Put []KV
	// Sweep applies age retention to every channel.
	Sweep bool
	// MaxIDs, when not nil, sets the most publish ids the channel log holds
	// for idempotency (log.Tx.SetMaxIDs; 0: no limit).
	MaxIDs *uint64
	// Streams are Durable Streams writes (package dstream), applied after
	// everything else; each gets a wire.StreamResult in the response.
	Streams []wire.StreamOp
}

// Response is what applying a Command returns to the proposer.
type Response struct {
	Index   uint64
	Results []log.Result
	Streams []wire.StreamResult
	// Err is set when part of the entry was refused (a bad metadata key);
	// refusals are deterministic, so every hub refused the same.
	Err error
}

const (
	flagRetention = 1 << iota
	flagSweep
	flagMaxIDs  // its value comes last, after the puts
	flagStreams // their JSON comes after that
)

// Encode returns the command's binary form.
func (c *Command) Encode() []byte {
	n := 32 + len(c.Epoch)
	for _, p := range c.Publish {
		n += 3*binary.MaxVarintLen32 + len(p.Channel) + len(p.ID) + len(p.Data)
	}
	b := make([]byte, 0, n)
	b = append(b, commandVersion)
	b = binary.AppendVarint(b, c.Time.UnixNano())
	b = appendString(b, c.Epoch)
	b = binary.AppendUvarint(b, uint64(len(c.Publish)))
	for _, p := range c.Publish {
		b = appendString(b, p.Channel)
		b = appendString(b, p.ID)
		b = appendBytes(b, p.Data)
	}
	var flags byte
	if c.Retention != nil {
		flags |= flagRetention
	}
	if c.Sweep {
		flags |= flagSweep
	}
	if c.MaxIDs != nil {
		flags |= flagMaxIDs
	}
	if len(c.Streams) > 0 {
		flags |= flagStreams
	}
	b = append(b, flags)
	if c.Retention != nil {
		raw, _ := json.Marshal(c.Retention) // []log.Rule always marshals
		b = appendBytes(b, raw)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Delete)))
	for _, ch := range c.Delete {
		b = appendString(b, ch)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Put)))
	for _, kv := range c.Put {
		b = appendString(b, kv.Key)
		if kv.Value == nil {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = appendBytes(b, kv.Value)
		}
	}
	if c.MaxIDs != nil {
		b = binary.AppendUvarint(b, *c.MaxIDs)
	}
	if len(c.Streams) > 0 {
		b = encodeStreams(b, c.Streams)
	}
	return b
}

// DecodeCommand parses the binary form made by Encode. Data slices alias b.
func DecodeCommand(b []byte) (*Command, error) {
	d := decoder{b: b}
	if v := d.byte(); v != commandVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadCommand, v)
	}
	c := &Command{}
	c.Time = time.Unix(0, d.varint()).UTC()
	c.Epoch = d.string()
	n := d.count()
	if n > 0 {
		c.Publish = make([]Publish, n)
	}
	for i := range c.Publish {
		c.Publish[i] = Publish{Channel: d.string(), ID: d.string(), Data: d.bytes()}
	}
	flags := d.byte()
	if flags&flagRetention != 0 {
		raw := d.bytes()
		if d.err == nil {
			c.Retention = []log.Rule{}
			if err := json.Unmarshal(raw, &c.Retention); err != nil {
				return nil, fmt.Errorf("%w: retention: %v", ErrBadCommand, err)
			}
		}
	}
	c.Sweep = flags&flagSweep != 0
	for i, n := 0, d.count(); i < n; i++ {
		c.Delete = append(c.Delete, d.string())
	}
	for i, n := 0, d.count(); i < n; i++ {
		kv := KV{Key: d.string()}
		if d.byte() == 1 {
			kv.Value = d.bytes()
		}
		c.Put = append(c.Put, kv)
	}
	if flags&flagMaxIDs != 0 {
		n := d.uvarint()
		c.MaxIDs = &n
	}
	if flags&flagStreams != 0 {
		raw := d.bytes()
		if d.err == nil {
			if err := json.Unmarshal(raw, &c.Streams); err != nil {
				return nil, fmt.Errorf("%w: streams: %v", ErrBadCommand, err)
			}
			for i := range c.Streams {
				c.Streams[i].Messages = nil
				for j, n := 0, d.count(); j < n; j++ {
					c.Streams[i].Messages = append(c.Streams[i].Messages, d.bytes())
				}
			}
			if len(c.Streams) == 0 {
				c.Streams = nil
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, len(d.b))
	}
	return c, nil
}

// encodeStreams appends stream ops: their fields as JSON, then each op's
// messages as they are (through encoding/json they would be rewritten: "<"
// escaped as "\u003c").
func encodeStreams(b []byte, ops []wire.StreamOp) []byte {
	bare := make([]wire.StreamOp, len(ops))
	for i, op := range ops {
		op.Messages = nil
		bare[i] = op
	}
	raw, _ := json.Marshal(bare) // plain fields
	b = appendBytes(b, raw)
	for _, op := range ops {
		b = binary.AppendUvarint(b, uint64(len(op.Messages)))
		for _, m := range op.Messages {
			b = appendBytes(b, m)
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrBadCommand, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must fit in what is left of the input.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("bytes")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }
