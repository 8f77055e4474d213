package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// keyNamespaces is the replicated key (log.Tx.Put) of the namespaces.
const keyNamespaces = "namespaces"

// namespaceCache holds the namespaces decoded from the log, decoded again
// when the log's key/value pairs change (log.Log.KVGeneration). Reads
// take no lock (publishes check their namespace's size limit); mu only
// keeps two decodes from racing.
type namespaceCache struct {
	mu  sync.Mutex
	cur atomic.Pointer[decodedNamespaces]
}

// decodedNamespaces is the namespaces as of log key/value generation gen.
type decodedNamespaces struct {
	gen    uint64
	ns     wire.Namespaces
	byName map[string]*wire.Namespace
}

// Namespaces returns the cluster's namespaces, as this hub has applied
// them (version 0 and none when they were never set).
func (s *Service) Namespaces() wire.Namespaces {
	ns, _ := s.namespaces()
	return ns
}

// namespaces returns the namespaces and an index of them by name; the
// caller must not change them.
func (s *Service) namespaces() (wire.Namespaces, map[string]*wire.Namespace) {
	gen := s.log.KVGeneration()
	if d := s.nsCache.cur.Load(); d != nil && d.gen == gen {
		return d.ns, d.byName
	}
	c := &s.nsCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.cur.Load(); d != nil && d.gen == gen {
		return d.ns, d.byName
	}
	d := &decodedNamespaces{gen: gen, ns: wire.Namespaces{Namespaces: []wire.Namespace{}}}
	if raw := s.log.Get(keyNamespaces); raw != nil {
		if err := json.Unmarshal(raw, &d.ns); err != nil {
			s.logger.Error("stored namespaces unreadable: none in force", "err", err)
			d.ns = wire.Namespaces{Namespaces: []wire.Namespace{}}
		}
	}
	d.byName = make(map[string]*wire.Namespace, len(d.ns.Namespaces))
	for i := range d.ns.Namespaces {
		d.byName[d.ns.Namespaces[i].Name] = &d.ns.Namespaces[i]
	}
	c.cur.Store(d)
	return d.ns, d.byName
}

// namespaceOf returns the options of channel's namespace, or nil.
func (s *Service) namespaceOf(channel string) *wire.Namespace {
	name, ok := wire.NamespaceOf(channel)
	if !ok {
		return nil
	}
	_, byName := s.namespaces()
	return byName[name]
}

// SetNamespaces replaces the cluster's namespaces (on the leader; a
// follower forwards) and returns them as stored, with their new version.
// The retention of namespaces that set one is replicated with them.
func (s *Service) SetNamespaces(ctx context.Context, list []wire.Namespace) (wire.Namespaces, error) {
	if list == nil {
		list = []wire.Namespace{}
	}
	if err := wire.CheckNamespaces(list); err != nil {
		return wire.Namespaces{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if !s.node.IsLeader() {
		api, err := s.leaderAPI()
		if err != nil {
			return wire.Namespaces{}, err
		}
		var out wire.Namespaces
		err = s.post(ctx, api, "/v1/namespaces", wire.Namespaces{Namespaces: list}, &out)
		return out, err
	}
	s.nsMu.Lock() // one change at a time, so that versions grow by one
	defer s.nsMu.Unlock()
	cur, _ := s.namespaces()
	next := wire.Namespaces{Version: cur.Version + 1, Namespaces: list}
	raw, err := json.Marshal(next)
	if err != nil {
		return wire.Namespaces{}, err
	}
	rules, err := s.log.Retention()
	if err != nil {
		return wire.Namespaces{}, err
	}
	cmd := &raft.Command{Put: []raft.KV{{Key: keyNamespaces, Value: raw}},
		Retention: withNamespaceRetention(list, rules)}
	resp, err := s.node.Apply(cmd)
	if err == nil && resp.Err != nil {
		err = fmt.Errorf("%w: %v", ErrBadRequest, resp.Err)
	}
	if err != nil {
		return wire.Namespaces{}, err
	}
	s.logger.Info("namespaces changed", "version", next.Version, "namespaces", len(list))
	return next, nil
}

// replicateNamespaces, on a new leader, makes this hub's configured
// namespaces (Config.Namespaces, from its config file) the cluster's when
// they differ.
func (s *Service) replicateNamespaces(ctx context.Context) {
	if s.cfg.Namespaces == nil {
		return
	}
	cur, _ := s.namespaces()
	if namespacesEqual(cur.Namespaces, s.cfg.Namespaces) {
		return
	}
	if _, err := s.SetNamespaces(ctx, s.cfg.Namespaces); err != nil {
		s.logger.Warn("replicate namespaces failed", "err", err)
	}
}

// namespacesEqual reports whether two lists hold the same namespaces.
func namespacesEqual(a, b []wire.Namespace) bool { return reflect.DeepEqual(a, b) }

// nsRuleSuffix ends the pattern of a retention rule made from a namespace:
// "chat:**" matches what "chat:*" does, and tells the rule apart from one
// of --retention when the namespaces change.
const nsRuleSuffix = ":**"

// withNamespaceRetention returns rules with the rules made from the
// namespaces of list that set a retention in front, in place of those made
// from earlier namespaces. An unset limit takes the built-in default.
func withNamespaceRetention(list []wire.Namespace, rules []log.Rule) []log.Rule {
	out := make([]log.Rule, 0, len(list)+len(rules))
	for _, n := range list {
		if n.MaxMessages == 0 && n.MaxAge == 0 {
			continue
		}
		r := log.Rule{Pattern: n.Name + nsRuleSuffix, MaxMessages: n.MaxMessages, MaxAge: time.Duration(n.MaxAge)}
		if r.MaxMessages == 0 {
			r.MaxMessages = log.DefaultMaxMessages
		}
		if r.MaxAge == 0 {
			r.MaxAge = log.DefaultMaxAge
		}
		out = append(out, r)
	}
	for _, r := range rules {
		if !strings.HasSuffix(r.Pattern, nsRuleSuffix) {
			out = append(out, r)
		}
	}
	return out
}

func (s *Service) handleNamespaces(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Namespaces())
}

func (s *Service) handleSetNamespaces(w http.ResponseWriter, r *http.Request) {
	var req wire.Namespaces
	if !s.decode(w, r, 4<<20, &req) {
		return
	}
	if s.cfg.Namespaces != nil && s.node.IsLeader() {
		s.writeError(w, fmt.Errorf("%w: this cluster's namespaces come from the hubs' config files (namespaces:), "+
			"which the leader makes the cluster's again: change them there, or remove them from every file to set them here", ErrBadRequest))
		return
	}
	out, err := s.SetNamespaces(r.Context(), req.Namespaces)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
