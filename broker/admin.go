package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/internal/adminpage"
	"github.com/comethq/comet/wire"
)

// The admin view: GET /admin serves a static page (internal/adminpage),
// open to anyone since it holds no data; it polls GET /v1/admin/overview,
// which needs Config.Secret or Config.AdminToken when either is set. The
// admin token opens /v1/admin/ only: every other call still needs the
// secret.

// AdminChannels is how many of the busiest channels the overview lists.
const AdminChannels = 10

// adminTimeout bounds the calls an overview makes to the other hubs.
const adminTimeout = 2 * time.Second

// adminPaths routes /admin and /v1/admin/ before the secret is checked
// (requireSecret), and reports whether it did.
func (s *Service) adminPaths(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/admin":
		adminpage.Handler().ServeHTTP(w, r)
		return true
	case strings.HasPrefix(r.URL.Path, "/v1/admin/"):
		s.handleAdmin(w, r)
		return true
	}
	return false
}

func (s *Service) handleAdmin(w http.ResponseWriter, r *http.Request) {
	if !hubapi.AdminAuthorized(r, s.cfg.Secret, s.cfg.AdminToken) {
		// 401, and never any data.
		w.Header().Set("WWW-Authenticate", `Bearer realm="comet admin"`)
		writeJSON(w, http.StatusUnauthorized, wire.Error{Code: wire.CodeForbidden, Message: hubapi.AdminUnauthorized})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, wire.Error{Code: wire.CodeBadRequest,
			Message: "method " + r.Method + " is not allowed on " + r.URL.Path + "; the admin view is read-only: use GET"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case hubapi.PathAdminOverview:
		writeJSON(w, http.StatusOK, s.Overview(r.Context()))
	case hubapi.PathAdminGateways:
		writeJSON(w, http.StatusOK, s.router.gatewayStats())
	default:
		writeJSON(w, http.StatusNotFound, wire.Error{Code: wire.CodeNotFound, Message: "no such endpoint: " + r.URL.Path + "; the admin view has /v1/admin/overview and /v1/admin/gateways"})
	}
}

// adminGet gets path from the hub at api into out, with the secret (or,
// when there is none, the admin token).
func (s *Service) adminGet(ctx context.Context, api, path string, out any) error {
	c := *s.client
	c.Forwarder = ""
	if c.Secret == "" {
		c.Secret = s.cfg.AdminToken
	}
	return c.Get(ctx, api, path, out)
}

// Overview returns the admin view of the cluster as this hub sees it: every
// member of the Raft configuration as it reports itself (asked over its
// API, at most adminTimeout), the leader changes this hub saw, the
// gateways attached to the leader's router (asked of the leader when this
// hub is not it), and the busiest channels.
func (s *Service) Overview(ctx context.Context) wire.AdminOverview {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	loc := s.localStatus()
	ov := wire.AdminOverview{
		Hub: loc.ID, Time: time.Now().UTC(), Version: loc.Version,
		Leader: loc.Leader, Term: loc.Term,
		Nodes: []wire.AdminNode{}, LeaderChanges: []wire.LeaderChange{},
		Gateways: []wire.AdminGateway{}, Channels: []wire.AdminChannel{},
	}
	var wg sync.WaitGroup
	wg.Go(func() { ov.Nodes = s.adminNodes(ctx, loc) })
	wg.Go(func() {
		var err error
		if ov.Gateways, err = s.adminGateways(ctx); err != nil {
			ov.GatewaysError = err.Error()
		}
	})
	for _, c := range s.node.LeaderHistory() {
		ov.LeaderChanges = append(ov.LeaderChanges, wire.LeaderChange{Time: c.Time, Term: c.Term, Leader: c.Leader})
	}
	var busiest []channelCount
	var span time.Duration
	if s.cfg.Stream != nil {
		busiest, ov.Publishes, span = s.cfg.Stream.act.busiest(AdminChannels)
		ov.ChannelWindow = wire.Seconds(span)
	}
	wg.Wait()
	subs := map[string]int{}
	for _, g := range ov.Gateways {
		ov.Connections += g.Connections
		ov.Deliveries += g.Deliveries
		ov.DeliveriesPerSecond += g.DeliveriesPerSecond
		for _, t := range g.Top {
			subs[t.Channel] += t.Subscribers
		}
	}
	for _, b := range busiest {
		c := wire.AdminChannel{Channel: b.channel, Recent: b.n, Rate: float64(b.n) / span.Seconds(), Subscribers: subs[b.channel]}
		if info, err := s.log.Info(b.channel); err == nil && info.Next > info.First {
			c.First, c.Last, c.Messages = info.First, info.Next-1, info.Next-info.First
		} else if err == nil {
			c.First = info.First
		}
		ov.Channels = append(ov.Channels, c)
	}
	return ov
}

// adminNodes returns every member of the Raft configuration, as each
// reports itself, with its lag behind the leader's commit index.
func (s *Service) adminNodes(ctx context.Context, loc wire.ClusterStatus) []wire.AdminNode {
	servers, err := s.node.Servers()
	if err != nil {
		return []wire.AdminNode{{ID: loc.ID, API: s.cfg.API, State: loc.State, Reachable: true, Term: loc.Term,
			LastIndex: loc.LastIndex, CommitIndex: loc.CommitIndex, AppliedIndex: loc.AppliedIndex,
			Version: loc.Version, Error: "cannot read the Raft configuration: " + err.Error()}}
	}
	nodes := make([]wire.AdminNode, len(servers))
	var wg sync.WaitGroup
	for i, sv := range servers {
		n := &nodes[i]
		*n = wire.AdminNode{ID: sv.ID, Raft: sv.Addr, Voter: sv.Voter, Leader: sv.ID == loc.Leader}
		if m, ok := s.meta(sv.ID); ok {
			n.API = m.API
		}
		switch {
		case sv.ID == loc.ID:
			n.API, n.State, n.Reachable, n.Version = s.cfg.API, loc.State, true, loc.Version
			n.Term, n.LastIndex, n.CommitIndex, n.AppliedIndex = loc.Term, loc.LastIndex, loc.CommitIndex, loc.AppliedIndex
		case n.API == "":
			n.State, n.Error = "unknown", "API address not registered yet"
		default:
			wg.Go(func() {
				var st wire.ClusterStatus
				if err := s.adminGet(ctx, n.API, "/v1/cluster?local=1", &st); err != nil {
					n.State, n.Error = "unreachable", err.Error()
					return
				}
				n.State, n.Reachable, n.Version = st.State, true, st.Version
				n.Term, n.LastIndex, n.CommitIndex, n.AppliedIndex = st.Term, st.LastIndex, st.CommitIndex, st.AppliedIndex
			})
		}
	}
	wg.Wait()
	var commit uint64
	leaderKnown := false
	for _, n := range nodes {
		if n.Leader && n.Reachable {
			commit, leaderKnown = n.CommitIndex, true
		}
	}
	for i := range nodes {
		n := &nodes[i]
		if !n.Reachable {
			continue
		}
		ref := n.CommitIndex
		if leaderKnown {
			ref = commit
		}
		if ref > n.AppliedIndex {
			n.Lag = ref - n.AppliedIndex
		}
	}
	return nodes
}

// adminGateways returns the gateways attached to the leader's router: this
// hub's own when it leads, else the leader's answer to
// GET /v1/admin/gateways.
func (s *Service) adminGateways(ctx context.Context) ([]wire.AdminGateway, error) {
	if s.node.IsLeader() {
		return s.router.gatewayStats(), nil
	}
	api, err := s.leaderAPI()
	if err != nil {
		return []wire.AdminGateway{}, err
	}
	var out []wire.AdminGateway
	if err := s.adminGet(ctx, api, hubapi.PathAdminGateways, &out); err != nil {
		return []wire.AdminGateway{}, err
	}
	if out == nil {
		out = []wire.AdminGateway{}
	}
	return out, nil
}

// stats takes a gateway's report (bus.TypeStats).
func (r *router) stats(s *session, m bus.Msg) {
	var st wire.GatewayStats
	if err := json.Unmarshal(m.Data, &st); err != nil {
		s.log.Debug("bad stats from a gateway", "err", err)
		return
	}
	st.ID = s.name
	if len(st.Top) > wire.MaxTopChannels {
		st.Top = st.Top[:wire.MaxTopChannels]
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev := s.stats; prev != nil && st.DeliveriesPerSecond == 0 {
		// A gateway that does not say its rate: worked out here.
		dt := st.Time.Sub(prev.Time).Seconds()
		if prev.Time.IsZero() || st.Time.IsZero() {
			dt = now.Sub(s.statsAt).Seconds()
		}
		if dt > 0 && st.Deliveries >= prev.Deliveries {
			st.DeliveriesPerSecond = float64(st.Deliveries-prev.Deliveries) / dt
		}
	}
	s.stats, s.statsAt = &st, now
}

// gatewayStats returns the gateways attached to this router, by id, with
// their last reports.
func (r *router) gatewayStats() []wire.AdminGateway {
	now := time.Now()
	r.mu.Lock()
	out := make([]wire.AdminGateway, 0, len(r.gateways))
	for name, s := range r.gateways {
		g := wire.AdminGateway{GatewayStats: wire.GatewayStats{ID: name}}
		if s.stats != nil {
			g.GatewayStats, g.Reported = *s.stats, true
			g.Age = wire.Seconds(now.Sub(s.statsAt))
		}
		out = append(out, g)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b wire.AdminGateway) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
