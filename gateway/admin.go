package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/internal/buildinfo"
	"github.com/comethq/comet/wire"
)

// The gateway's part of the admin view (docs/operations.md): GET /admin
// serves the page, and GET /v1/admin/overview answers the hubs' overview
// (Config.Overview) with this gateway's own stats in its "gateway" field.
// The gateway also reports its stats to the hub leader on its bus session
// (cmd/comet wires StatsJSON to bus.GatewayConfig.Stats).

// adminOverviewTimeout bounds the wait for the hubs' overview.
const adminOverviewTimeout = 3 * time.Second

// Stats returns the gateway's stats now: connections by transport,
// subscriptions, channels followed, the counters of publishes and
// deliveries, and its wire.MaxTopChannels channels with the most
// subscribers. It takes the server's lock once, for a walk over the
// connections and channels (about a millisecond per 100,000 of them).
func (s *Server) Stats() wire.GatewayStats {
	st := wire.GatewayStats{
		ID: s.cfg.ID, Version: buildinfo.Get().Version, Time: time.Now().UTC(),
		Transports: map[string]int{},
		Publishes:  s.published.Load(), Deliveries: s.delivered.Load(),
	}
	top := make([]wire.ChannelSubscribers, 0, wire.MaxTopChannels+1)
	less := func(a, b wire.ChannelSubscribers) int {
		if c := cmp.Compare(b.Subscribers, a.Subscribers); c != 0 {
			return c
		}
		return cmp.Compare(a.Channel, b.Channel)
	}
	s.mu.Lock()
	st.Connections = len(s.conns)
	for c := range s.conns {
		st.Transports[c.t.name()]++
	}
	st.Channels = len(s.channels)
	for name, ch := range s.channels {
		st.Subscriptions += ch.refs
		if ch.refs == 0 {
			continue
		}
		e := wire.ChannelSubscribers{Channel: name, Subscribers: ch.refs}
		if len(top) == wire.MaxTopChannels && less(e, top[len(top)-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, e, less)
		top = slices.Insert(top, i, e)
		if len(top) > wire.MaxTopChannels {
			top = top[:wire.MaxTopChannels]
		}
	}
	s.mu.Unlock()
	if len(top) > 0 {
		st.Top = top
	}
	return st
}

// StatsJSON returns Stats as JSON, with the rate of deliveries since the
// previous call, for bus.GatewayConfig.Stats (the gateway's reports to the
// router).
func (s *Server) StatsJSON() json.RawMessage {
	st := s.Stats()
	s.reportMu.Lock()
	if dt := st.Time.Sub(s.reportAt).Seconds(); !s.reportAt.IsZero() && dt > 0 && st.Deliveries >= s.reportDeliveries {
		st.DeliveriesPerSecond = float64(st.Deliveries-s.reportDeliveries) / dt
	}
	s.reportAt, s.reportDeliveries = st.Time, st.Deliveries
	s.reportMu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return nil
	}
	return b
}

// serveAdmin serves /v1/admin/: GET /v1/admin/overview.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if !s.adminAuthorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="comet admin"`)
		writeJSON(w, http.StatusUnauthorized, wire.Error{Code: wire.CodeForbidden, Message: s.adminRefusal()})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, wire.Error{Code: wire.CodeBadRequest,
			Message: "method " + r.Method + " is not allowed on " + r.URL.Path + "; the admin view is read-only: use GET"})
		return
	}
	if r.URL.Path != hubapi.PathAdminOverview {
		writeJSON(w, http.StatusNotFound, wire.Error{Code: wire.CodeNotFound,
			Message: "no such endpoint: " + r.URL.Path + "; a gateway's admin view has " + hubapi.PathAdminOverview})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, s.Overview(r.Context()))
}

// Overview returns the hubs' overview (Config.Overview) with this
// gateway's stats in Gateway; when the hubs do not answer, HubsError says
// why and the rest is empty.
func (s *Server) Overview(ctx context.Context) wire.AdminOverview {
	ov := wire.AdminOverview{Time: time.Now().UTC(), Nodes: []wire.AdminNode{}, LeaderChanges: []wire.LeaderChange{},
		Gateways: []wire.AdminGateway{}, Channels: []wire.AdminChannel{}}
	if s.cfg.Overview == nil {
		ov.HubsError = "this gateway has no view of the hubs"
	} else {
		ctx, cancel := context.WithTimeout(ctx, adminOverviewTimeout)
		hubs, err := s.cfg.Overview(ctx)
		cancel()
		if err != nil {
			ov.HubsError = err.Error()
		} else {
			ov = hubs
		}
	}
	st := s.Stats()
	ov.Gateway = &st
	return ov
}

func (s *Server) adminAuthorized(r *http.Request) bool {
	if !hubapi.AdminAuthorized(r, s.cfg.AdminTokens...) {
		return false
	}
	for _, t := range s.cfg.AdminTokens {
		if t != "" {
			return true // a token was checked
		}
	}
	if !s.cfg.AdminLocalOnly {
		return true
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) adminRefusal() string {
	for _, t := range s.cfg.AdminTokens {
		if t != "" {
			return hubapi.AdminUnauthorized
		}
	}
	return "without --secret or --admin-token the admin view answers only this machine: start comet with --admin-token and send Authorization: Bearer <token>"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
