package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/comethq/comet/wire"
)

// PresenceEntry is one connection subscribed to a channel: its id, its
// user ("" when anonymous) and the info its client sent.
type PresenceEntry struct {
	Conn string
	User string
	// Info is what that client sent as Config.Info (nil if nothing).
	Info []byte
}

// Presence returns every connection subscribed to channel, on every
// gateway, in connection id order, asking page after page (of up to 1,000).
// It needs the right to subscribe to the channel, and fails with an *Error
// of code forbidden where its namespace turns presence off. Gateways that
// do not answer the hubs within a second are left out.
func (c *Client) Presence(ctx context.Context, channel string) ([]PresenceEntry, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	out := []PresenceEntry{}
	after := ""
	for {
		r, err := c.ask(ctx, wire.ClientFrame{Op: wire.OpPresence, Channel: channel, After: after}, true)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("presence of %s: %w", channel, err)
		}
		for _, e := range r.reply.Presence {
			out = append(out, PresenceEntry{Conn: e.Conn, User: e.User, Info: e.Info})
		}
		if r.reply.After == "" || r.reply.After <= after {
			return out, nil
		}
		after = r.reply.After
	}
}

// PresenceStats returns how many connections are subscribed to channel and
// how many distinct users they are (anonymous ones not counted).
func (c *Client) PresenceStats(ctx context.Context, channel string) (connections, users int, err error) {
	if err := wire.CheckChannel(channel); err != nil {
		return 0, 0, fmt.Errorf("presence_stats: %w", err)
	}
	r, err := c.ask(ctx, wire.ClientFrame{Op: wire.OpPresenceStats, Channel: channel}, true)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return 0, 0, ErrClosed
		}
		return 0, 0, fmt.Errorf("presence_stats of %s: %w", channel, err)
	}
	return r.reply.Connections, r.reply.Users, nil
}
