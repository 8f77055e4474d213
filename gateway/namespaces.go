package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
)

// namespaces is the cluster's namespaces as the gateway last read them.
type namespaces struct {
	version uint64
	byName  map[string]*wire.Namespace
}

// find returns the options of channel's namespace, or nil.
func (n *namespaces) find(channel string) *wire.Namespace {
	name, ok := wire.NamespaceOf(channel)
	if !ok || len(n.byName) == 0 {
		return nil
	}
	return n.byName[name]
}

// NamespacesVersion returns the version of the namespaces in force on the
// gateway; ok is false until it has read them from the hubs.
func (s *Server) NamespacesVersion() (version uint64, ok bool) {
	if cur := s.ns.Load(); cur != nil {
		return cur.version, true
	}
	return 0, false
}

// watchNamespaces reads the namespaces from the hubs every NamespacePoll
// until the server closes.
func (s *Server) watchNamespaces() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		ns, err := s.hub.Namespaces(ctx)
		cancel()
		switch cur := s.ns.Load(); {
		case err != nil:
			if s.ctx.Err() == nil && cur == nil {
				s.log.Debug("namespaces not read yet", "err", err)
			}
		case cur == nil || ns.Version != cur.version:
			n := &namespaces{version: ns.Version, byName: make(map[string]*wire.Namespace, len(ns.Namespaces))}
			for i := range ns.Namespaces {
				n.byName[ns.Namespaces[i].Name] = &ns.Namespaces[i]
			}
			s.ns.Store(n)
			if cur != nil {
				s.log.Info("namespaces changed", "version", ns.Version, "namespaces", len(ns.Namespaces))
			}
		}
		t.Reset(s.cfg.NamespacePoll)
	}
}

// clientOp is what a client frame asks to do on a channel.
type clientOp int

const (
	opSubscribe clientOp = iota
	opPublish
	opHistory
	opPresence
)

// refusal is why a client may not do op on a channel: an error code and
// message, or "" when it may.
type refusal struct{ code, msg string }

// may decides whether the connection may do op on channel: the channel's
// namespace (personal channels, who may publish, history on or off), then
// the channel rules and the token's grants (auth.Policy).
func (c *conn) may(op clientOp, channel string) refusal {
	c.mu.Lock()
	id := c.ident
	_, subscribed := c.subs[channel]
	c.mu.Unlock()
	return c.s.may(id, subscribed, op, channel)
}

// may decides whether id may do op on channel (subscribed: id's connection
// is subscribed to it), by the channel's namespace, then the rules.
func (s *Server) may(id auth.Identity, subscribed bool, op clientOp, channel string) refusal {
	var ns *wire.Namespace
	if _, ok := wire.NamespaceOf(channel); ok {
		cur := s.ns.Load()
		if cur == nil {
			return refusal{wire.CodeUnavailable, "the gateway has not read the namespaces from the hubs yet: retry"}
		}
		ns = cur.find(channel)
	}
	what := [...]string{"subscribe to", "publish to", "read the history of", "see who is subscribed to"}[op]
	if user, ok := ns.PersonalUser(channel); ok {
		if id.Anonymous() || id.User != user {
			return refusal{wire.CodeForbidden, fmt.Sprintf("%q is a personal channel of another user", channel)}
		}
		if op != opPublish {
			return refusal{} // the owner reads it, whatever the rules
		}
	}
	if op == opHistory && ns != nil && !ns.HistoryOn() {
		return refusal{wire.CodeForbidden, fmt.Sprintf("history is off in namespace %s", ns.Name)}
	}
	if op == opPresence && ns != nil && !ns.PresenceOn() {
		return refusal{wire.CodeForbidden, fmt.Sprintf("presence is off in namespace %s", ns.Name)}
	}
	if op == opPublish && ns != nil {
		switch ns.Publish {
		case wire.PublishBackend:
			return refusal{wire.CodeForbidden, fmt.Sprintf("only backends publish to namespace %s", ns.Name)}
		case wire.PublishGrant:
			if !auth.Granted(id, auth.Publish, channel) {
				return refusal{wire.CodeForbidden, fmt.Sprintf("publishing to namespace %s needs a token that grants it", ns.Name)}
			}
			return refusal{}
		case wire.PublishSubscribers:
			if !subscribed {
				return refusal{wire.CodeForbidden, fmt.Sprintf("only subscribers publish to namespace %s: subscribe to %q first", ns.Name, channel)}
			}
		}
	}
	aop := auth.Subscribe
	if op == opPublish {
		aop = auth.Publish
	}
	if !s.cfg.Policy.Allow(id, aop, channel) {
		return refusal{wire.CodeForbidden, fmt.Sprintf("not allowed to %s %q", what, channel)}
	}
	return refusal{}
}

// maxMessageBytes is the bound on a publish's data to channel.
func (c *conn) maxMessageBytes(channel string) int {
	limit := c.s.cfg.MaxMessageBytes
	if cur := c.s.ns.Load(); cur != nil {
		if ns := cur.find(channel); ns != nil && ns.MaxMessageBytes > 0 {
			limit = min(limit, ns.MaxMessageBytes)
		}
	}
	return limit
}
