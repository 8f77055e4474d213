package gateway

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The id of a Server-Sent Event (docs/sse.md, "Event ids") holds the
// position of every channel of the stream, so that a browser reconnecting
// with Last-Event-ID resumes all of them, not only the channel of the last
// event it got:
//
//	1.<set>.<epochs>.<positions>
//
//   - 1: the format's version.
//   - set: 6 base64url characters, the first 4 bytes of the SHA-256 of the
//     stream's channel names, sorted, joined by newlines: an id is refused
//     by a stream of other channels.
//   - epochs: the distinct epochs of the channels, separated by "~"; an
//     epoch made only of letters and digits (as hubs make them: 16 hex
//     digits) as it is, any other as "_" and its base64url.
//   - positions: one per channel, in the order of the sorted names,
//     separated by "~": empty when the stream has no position for the
//     channel yet; else the last offset the stream sent (0 when none yet)
//     in base 36, followed by "-" and the index of its epoch in epochs, in
//     base 36, when that is not 0.
//
// Every character is URL-safe. With hex epochs an id takes at most about
// 17 bytes per channel and per distinct epoch: a stream has at most
// MaxSSEChannels channels, so an id stays under 4 KiB, and ids over
// maxEventIDBytes are refused.

// MaxSSEChannels bounds the channels of one SSE stream (and so the size of
// its event ids).
const MaxSSEChannels = 100

// maxEventIDBytes bounds a Last-Event-ID taken: less than the 8 KiB header
// lines proxies commonly accept.
const maxEventIDBytes = 7 << 10

// ErrEventID is wrapped by every error parseEventID returns.
var ErrEventID = errors.New("bad Last-Event-ID")

// ssePos is a channel's position in an SSE stream: the epoch and the last
// offset sent of that epoch.
type ssePos struct {
	known bool
	epoch string
	last  uint64
}

// channelSet is the set field of ids of a stream of channels names
// (sorted).
func channelSet(names []string) string {
	h := sha256.New()
	for i, n := range names {
		if i > 0 {
			h.Write([]byte{'\n'})
		}
		h.Write([]byte(n))
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:4])
}

func plainEpoch(e string) bool {
	if e == "" {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func appendEpoch(b []byte, e string) []byte {
	if plainEpoch(e) {
		return append(b, e...)
	}
	b = append(b, '_')
	return base64.RawURLEncoding.AppendEncode(b, []byte(e))
}

func parseEpoch(s string) (string, error) {
	if plainEpoch(s) {
		return s, nil
	}
	if enc, ok := strings.CutPrefix(s, "_"); ok {
		b, err := base64.RawURLEncoding.DecodeString(enc)
		if err == nil && len(b) > 0 {
			return string(b), nil
		}
	}
	return "", fmt.Errorf("%w: bad epoch %q", ErrEventID, s)
}

// parseEventID reads an id of a stream of channels names (sorted) into
// one position per channel. An empty id gives no position.
func parseEventID(id string, names []string) ([]ssePos, error) {
	pos := make([]ssePos, len(names))
	if id == "" {
		return pos, nil
	}
	if len(id) > maxEventIDBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrEventID, maxEventIDBytes)
	}
	parts := strings.Split(id, ".")
	if parts[0] != "1" {
		return nil, fmt.Errorf("%w: not an id of this gateway's events (version %q)", ErrEventID, parts[0])
	}
	if len(parts) != 4 {
		return nil, fmt.Errorf("%w: want 4 fields separated by '.', got %d", ErrEventID, len(parts))
	}
	if parts[1] != channelSet(names) {
		return nil, fmt.Errorf("%w: the id is of a stream of other channels", ErrEventID)
	}
	var epochs []string
	for _, e := range strings.Split(parts[2], "~") {
		if e == "" && parts[2] == "" {
			break // no epoch at all: every position empty
		}
		ep, err := parseEpoch(e)
		if err != nil {
			return nil, err
		}
		epochs = append(epochs, ep)
	}
	ps := strings.Split(parts[3], "~")
	if len(ps) != len(names) {
		return nil, fmt.Errorf("%w: %d positions for %d channels", ErrEventID, len(ps), len(names))
	}
	for i, p := range ps {
		if p == "" {
			continue
		}
		offStr, idxStr, hasIdx := strings.Cut(p, "-")
		off, err := strconv.ParseUint(offStr, 36, 64)
		if err != nil || offStr != strconv.FormatUint(off, 36) {
			return nil, fmt.Errorf("%w: bad offset %q", ErrEventID, offStr)
		}
		idx := uint64(0)
		if hasIdx {
			idx, err = strconv.ParseUint(idxStr, 36, 64)
			if err != nil || idx == 0 || idxStr != strconv.FormatUint(idx, 36) {
				return nil, fmt.Errorf("%w: bad epoch index %q", ErrEventID, idxStr)
			}
		}
		if idx >= uint64(len(epochs)) {
			return nil, fmt.Errorf("%w: epoch index %d of %d epochs", ErrEventID, idx, len(epochs))
		}
		pos[i] = ssePos{known: true, epoch: epochs[idx], last: off}
	}
	return pos, nil
}

// sseIDs makes a stream's event ids from its channels' positions. Its
// prefix (version, set, epochs) is made again only when an epoch changes.
type sseIDs struct {
	set    string
	pos    []ssePos // by sorted channel
	epochI []int    // index of each channel's epoch in the prefix
	prefix []byte
	dirty  bool
}

func newSSEIDs(names []string, pos []ssePos) *sseIDs {
	return &sseIDs{set: channelSet(names), pos: pos, epochI: make([]int, len(pos)), dirty: true}
}

// setEpoch notes channel i's epoch.
func (d *sseIDs) setEpoch(i int, epoch string) {
	if d.pos[i].epoch != epoch || !d.pos[i].known {
		d.dirty = true
	}
	d.pos[i].known, d.pos[i].epoch = true, epoch
}

// appendID appends the id of the positions now to b.
func (d *sseIDs) appendID(b []byte) []byte {
	if d.dirty {
		d.dirty = false
		d.prefix = append(d.prefix[:0], "1."...)
		d.prefix = append(d.prefix, d.set...)
		d.prefix = append(d.prefix, '.')
		var epochs []string
		for i, p := range d.pos {
			d.epochI[i] = 0
			if !p.known {
				continue
			}
			j := 0
			for j < len(epochs) && epochs[j] != p.epoch {
				j++
			}
			if j == len(epochs) {
				if j > 0 {
					d.prefix = append(d.prefix, '~')
				}
				d.prefix = appendEpoch(d.prefix, p.epoch)
				epochs = append(epochs, p.epoch)
			}
			d.epochI[i] = j
		}
		d.prefix = append(d.prefix, '.')
	}
	b = append(b, d.prefix...)
	for i, p := range d.pos {
		if i > 0 {
			b = append(b, '~')
		}
		if !p.known {
			continue
		}
		b = strconv.AppendUint(b, p.last, 36)
		if d.epochI[i] != 0 {
			b = append(b, '-')
			b = strconv.AppendUint(b, uint64(d.epochI[i]), 36)
		}
	}
	return b
}
