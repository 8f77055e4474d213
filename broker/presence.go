package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/wire"
)

// Presence is not stored: the gateways hold the subscriptions. A query goes
// to the router on the leader, which asks every attached gateway for the
// connections subscribed to the channel there and merges the answers. A
// connection is in the answer as long as it is subscribed on a gateway
// whose bus session is up; a gateway that died is out as soon as its
// session ends (at once for a closed connection, within the session's
// ping timeout otherwise), and one that does not answer within
// presenceWait is left out and named in Missing.

// presenceWait bounds how long a presence query waits for the gateways.
const presenceWait = time.Second

// Presence limits of the hub API and the client protocol.
const (
	DefaultPresenceLimit = 1000
	MaxPresenceLimit     = 10000
)

// presenceQuery collects the gateways' answers to one query.
type presenceQuery struct {
	answers chan presenceAnswer
}

type presenceAnswer struct {
	gateway string
	data    json.RawMessage
}

// presence asks every gateway attached to this router (this hub must lead)
// who is subscribed to channel, and returns them sorted by connection id,
// with the gateways that did not answer in time.
func (r *router) presenceOf(ctx context.Context, channel string) ([]wire.PresenceEntry, []string, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, ErrClosed
	}
	var gws []*session
	for _, s := range r.gateways {
		if s.caps[bus.CapPresence] {
			gws = append(gws, s)
		}
	}
	r.nextID++
	id := r.nextID
	q := &presenceQuery{answers: make(chan presenceAnswer, len(gws))}
	r.presence[id] = q
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.presence, id)
		r.mu.Unlock()
	}()
	msg := (&bus.Msg{Type: bus.TypePresence, ID: id, Channel: channel}).Encode()
	for _, s := range gws {
		s.push(msg)
	}
	timer := time.NewTimer(presenceWait)
	defer timer.Stop()
	answered := make(map[string]bool, len(gws))
	out := []wire.PresenceEntry{}
wait:
	for len(answered) < len(gws) {
		select {
		case a := <-q.answers:
			var entries []wire.PresenceEntry
			if err := json.Unmarshal(a.data, &entries); err != nil {
				r.log.Warn("bad presence answer", "gateway", a.gateway, "err", err)
				continue
			}
			answered[a.gateway] = true
			out = append(out, entries...)
		case <-timer.C:
			break wait
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	var missing []string
	for _, s := range gws {
		if !answered[s.name] {
			missing = append(missing, s.name)
		}
	}
	slices.Sort(missing)
	slices.SortFunc(out, func(a, b wire.PresenceEntry) int { return strings.Compare(a.Conn, b.Conn) })
	return out, missing, nil
}

// presenceResult hands a gateway's answer to the query waiting for it.
func (r *router) presenceResult(s *session, m bus.Msg) {
	r.mu.Lock()
	q := r.presence[m.ID]
	r.mu.Unlock()
	if q == nil {
		return // answered too late
	}
	select {
	case q.answers <- presenceAnswer{gateway: s.name, data: m.Data}:
	default:
	}
}

// Presence returns the connections subscribed to channel on every gateway,
// sorted by connection id, and the gateways that did not answer in time.
// A follower asks the leader.
func (s *Service) Presence(ctx context.Context, channel string) ([]wire.PresenceEntry, []string, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if !s.node.IsLeader() {
		api, err := s.leaderAPI()
		if err != nil {
			return nil, nil, err
		}
		var res wire.Presence
		path := channelsPrefix + url.PathEscape(channel) + "/presence?all=1" // every entry, unpaged
		if err := s.client.Get(ctx, api, path, &res); err != nil {
			return nil, nil, err
		}
		return res.Presence, res.Missing, nil
	}
	return s.router.presenceOf(ctx, channel)
}

// PresenceStats counts the connections subscribed to channel and their
// distinct users.
func (s *Service) PresenceStats(ctx context.Context, channel string) (wire.PresenceStats, error) {
	entries, missing, err := s.Presence(ctx, channel)
	if err != nil {
		return wire.PresenceStats{}, err
	}
	users := make(map[string]bool)
	for _, e := range entries {
		if e.User != "" {
			users[e.User] = true
		}
	}
	return wire.PresenceStats{Channel: channel, Connections: len(entries), Users: len(users), Missing: missing}, nil
}

// PresencePage returns the page of entries after the connection id after,
// at most limit of them, and the id to ask the next page after ("" when
// there is none).
func PresencePage(entries []wire.PresenceEntry, after string, limit int) ([]wire.PresenceEntry, string) {
	i, found := slices.BinarySearchFunc(entries, after, func(e wire.PresenceEntry, t string) int { return strings.Compare(e.Conn, t) })
	if found {
		i++ // connection ids are unique: the page starts after it
	}
	page := entries[i:]
	if len(page) > limit {
		return page[:limit], page[limit-1].Conn
	}
	return page, ""
}

// handlePresence answers GET /v1/channels/{channel}/presence and
// /presence_stats.
func (s *Service) handlePresence(w http.ResponseWriter, r *http.Request, channel string, stats bool) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if stats {
		st, err := s.PresenceStats(ctx, channel)
		if err != nil {
			s.writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
		return
	}
	q := r.URL.Query()
	limit, err := queryUint(q.Get("limit"), DefaultPresenceLimit)
	if err != nil || limit == 0 || limit > MaxPresenceLimit {
		s.writeError(w, fmt.Errorf("%w: limit must be an integer from 1 to %d", ErrBadRequest, MaxPresenceLimit))
		return
	}
	entries, missing, err := s.Presence(ctx, channel)
	if err != nil {
		s.writeError(w, err)
		return
	}
	page, after := entries, ""
	if q.Get("all") != "1" { // all=1: a follower asking for everything
		page, after = PresencePage(entries, q.Get("after"), int(limit))
	}
	writeJSON(w, http.StatusOK, wire.Presence{Channel: channel, Presence: page, After: after, Missing: missing})
}

// joinKey is a connection's subscription to a channel.
type joinKey struct{ conn, channel string }

// joinLeave turns a gateway's subscribed and unsubscribed events on a
// channel whose namespace has join_leave into join and leave messages to
// every gateway, and remembers the session's members so that they leave
// when it ends. Disconnected events need nothing: a gateway reports
// unsubscribed for each channel of a connection that closes.
func (r *router) joinLeave(s *session, m bus.Msg) {
	var typ string
	switch m.Event {
	case bus.EventSubscribed:
		typ = bus.TypeJoin
	case bus.EventUnsubscribed:
		typ = bus.TypeLeave
	default:
		return
	}
	if ns := r.s.namespaceOf(m.Channel); ns == nil || !ns.JoinLeave {
		return
	}
	k := joinKey{m.Conn, m.Channel}
	r.mu.Lock()
	if typ == bus.TypeJoin {
		if s.joined == nil {
			s.joined = make(map[joinKey]string)
		}
		s.joined[k] = m.User
	} else {
		delete(s.joined, k)
	}
	to := r.joinLeaveTargetsLocked()
	r.mu.Unlock()
	b := (&bus.Msg{Type: typ, Channel: m.Channel, Conn: m.Conn, User: m.User}).Encode()
	for _, g := range to {
		g.push(b)
	}
}

// leaveAll sends a leave for every member a gateway's session had, as the
// session ends (the gateway died, or lost the leader).
func (r *router) leaveAll(s *session) {
	r.mu.Lock()
	joined := s.joined
	s.joined = nil
	var to []*session
	if len(joined) > 0 {
		to = r.joinLeaveTargetsLocked()
	}
	r.mu.Unlock()
	for k, user := range joined {
		b := (&bus.Msg{Type: bus.TypeLeave, Channel: k.channel, Conn: k.conn, User: user}).Encode()
		for _, g := range to {
			if g != s {
				g.push(b)
			}
		}
	}
}

// joinLeaveTargetsLocked returns the gateway sessions that take join and
// leave messages; r.mu is held.
func (r *router) joinLeaveTargetsLocked() []*session {
	var to []*session
	for _, g := range r.gateways {
		if g.caps[bus.CapJoinLeave] {
			to = append(to, g)
		}
	}
	return to
}
