package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/comethq/comet/wire"
)

// PresenceJSON returns the connections subscribed to channel on this
// gateway, as a JSON array of wire.PresenceEntry: the gateway's answer to
// the router's presence queries.
func (s *Server) PresenceJSON(channel string) json.RawMessage {
	s.mu.Lock()
	ch := s.channels[channel]
	s.mu.Unlock()
	entries := []wire.PresenceEntry{}
	if ch != nil {
		ch.mu.Lock()
		conns := make([]*conn, 0, len(ch.subs))
		for sb := range ch.subs {
			conns = append(conns, sb.c)
		}
		ch.mu.Unlock()
		entries = make([]wire.PresenceEntry, 0, len(conns))
		for _, c := range conns {
			c.mu.Lock()
			user, info := c.ident.User, c.info
			c.mu.Unlock()
			entries = append(entries, wire.PresenceEntry{Conn: c.id, User: user, Info: info})
		}
	}
	b, err := json.Marshal(entries)
	if err != nil {
		return json.RawMessage("[]")
	}
	return b
}

// presenceWait bounds a client's presence query (the router waits 1 s for
// the gateways).
const presenceWait = 5 * time.Second

// presence answers a presence or presence_stats frame from the hubs.
func (c *conn) presence(f wire.ClientFrame) {
	limit := 0
	if f.Op == wire.OpPresence {
		limit = DefaultPresenceLimit
		if f.Limit != nil {
			if *f.Limit == 0 || *f.Limit > MaxPresenceLimit {
				c.sendError(f.ID, wire.CodeBadRequest, fmt.Sprintf("limit must be from 1 to %d", MaxPresenceLimit))
				return
			}
			limit = int(*f.Limit)
		}
	}
	select {
	case c.reqs <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	go func() {
		defer func() { <-c.reqs }()
		ctx, cancel := context.WithTimeout(c.ctx, presenceWait)
		defer cancel()
		var v any
		if f.Op == wire.OpPresenceStats {
			st, err := c.s.hub.PresenceStats(ctx, f.Channel)
			if err == nil {
				v = wire.PresenceStatsFrame{Op: f.Op, ID: f.ID, Channel: f.Channel, Connections: st.Connections, Users: st.Users}
			}
			c.answerPresence(f, v, err)
			return
		}
		p, err := c.s.hub.Presence(ctx, f.Channel, f.After, limit)
		if err == nil {
			v = wire.PresenceFrame{Op: f.Op, ID: f.ID, Channel: f.Channel, Presence: p.Presence, After: p.After}
		}
		c.answerPresence(f, v, err)
	}()
}

func (c *conn) answerPresence(f wire.ClientFrame, v any, err error) {
	if c.ctx.Err() != nil {
		return // the client is gone
	}
	if err != nil {
		c.sendError(f.ID, errorCode(err), "presence: "+err.Error())
		return
	}
	c.send(v)
}

// Presence limits of the client protocol's presence op.
const (
	DefaultPresenceLimit = 1000
	MaxPresenceLimit     = 10000
)

// DeliverJoinLeave tells this gateway's subscribers of channel that
// connection conn (of user) subscribed to it (typ "join") or went
// ("leave"): the router's join and leave messages.
func (s *Server) DeliverJoinLeave(typ, channel, conn, user string) {
	if typ != wire.OpJoin && typ != wire.OpLeave {
		return
	}
	frame, err := json.Marshal(wire.JoinLeave{Op: typ, Channel: channel, Conn: conn, User: user})
	if err != nil {
		return
	}
	s.mu.Lock()
	ch := s.channels[channel]
	s.mu.Unlock()
	if ch == nil {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for sb := range ch.subs {
		sb.c.enqueue(frame)
	}
}
