package auth

import (
	"fmt"
	"strings"
)

// Op is what a connection asks to do on a channel.
type Op int

// Ops that Policy.Allow decides.
const (
	Subscribe Op = iota + 1
	Publish
)

// String returns the op's name as the client protocol spells it.
func (op Op) String() string {
	switch op {
	case Subscribe:
		return "subscribe"
	case Publish:
		return "publish"
	}
	return fmt.Sprintf("Op(%d)", int(op))
}

// Rule says who may subscribe and who may publish on the channels its
// Match pattern covers: "anyone", "users" or "none" (also the empty
// value). The package doc says how rules are applied.
type Rule struct {
	Match     string `yaml:"match" json:"match"`
	Subscribe string `yaml:"subscribe" json:"subscribe"`
	Publish   string `yaml:"publish" json:"publish"`
}

// who is a compiled Rule.Subscribe or Rule.Publish.
type who int8

const (
	whoNone who = iota
	whoAnyone
	whoUsers
)

func parseWho(s string) (who, bool) {
	switch s {
	case "", "none":
		return whoNone, true
	case "anyone":
		return whoAnyone, true
	case "users":
		return whoUsers, true
	}
	return whoNone, false
}

type rule struct {
	Rule
	shape              string // Match with {sub} as '*': the channels the rule covers
	hasSub             bool
	subscribe, publish who
}

// Policy decides which channels a connection may subscribe and publish to.
// It is safe for concurrent use. A nil *Policy allows everything.
type Policy struct {
	rules []rule
}

// NewPolicy checks rules and returns them as a Policy. No rules at all
// makes an open Policy: every connection may subscribe and publish
// anywhere.
func NewPolicy(rules []Rule) (*Policy, error) {
	p := &Policy{rules: make([]rule, 0, len(rules))}
	for i, r := range rules {
		if err := CheckPattern(r.Match); err != nil {
			return nil, fmt.Errorf("auth: rule %d: match: %v", i+1, err)
		}
		sub, ok := parseWho(r.Subscribe)
		if !ok {
			return nil, fmt.Errorf("auth: rule %d (match %q): subscribe is %q; want anyone, users or none", i+1, r.Match, r.Subscribe)
		}
		pub, ok := parseWho(r.Publish)
		if !ok {
			return nil, fmt.Errorf("auth: rule %d (match %q): publish is %q; want anyone, users or none", i+1, r.Match, r.Publish)
		}
		p.rules = append(p.rules, rule{
			Rule:      r,
			shape:     strings.ReplaceAll(r.Match, subToken, "*"),
			hasSub:    strings.Contains(r.Match, subToken),
			subscribe: sub,
			publish:   pub,
		})
	}
	return p, nil
}

// Rules returns a copy of the rules p was made from.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.Rule
	}
	return out
}

// Granted reports whether the token of the connection id grants op on
// channel: a pattern of its subscribe or publish claim matches, with {sub}
// filled by its user. Anonymous connections have no grants.
func Granted(id Identity, op Op, channel string) bool {
	if id.Anonymous() {
		return false
	}
	grants := id.Subscribe
	if op == Publish {
		grants = id.Publish
	}
	for _, g := range grants {
		if match(g, id.User, channel) {
			return true
		}
	}
	return false
}

// Allow reports whether the connection of id may do op on channel: the
// token's grants first, then the first rule that covers the channel (see
// the package doc). An unknown op is denied.
func (p *Policy) Allow(id Identity, op Op, channel string) bool {
	if p == nil {
		return true
	}
	if op != Subscribe && op != Publish {
		return false
	}
	if Granted(id, op, channel) {
		return true
	}
	if len(p.rules) == 0 {
		return true
	}
	for i := range p.rules {
		r := &p.rules[i]
		if !match(r.shape, "", channel) {
			continue
		}
		w := r.subscribe
		if op == Publish {
			w = r.publish
		}
		switch w {
		case whoAnyone:
			return true
		case whoUsers:
			return !id.Anonymous() && (!r.hasSub || match(r.Match, id.User, channel))
		default:
			return false
		}
	}
	return false
}
