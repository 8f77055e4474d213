package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Who may publish to the channels of a namespace from a client connection
// (Namespace.Publish). Workers and the hub API are not clients: they may
// always publish.
const (
	// PublishRules: the channel rules and the token's grants decide, as for
	// channels outside any namespace (the default).
	PublishRules = "rules"
	// PublishSubscribers: as PublishRules, and only a connection that is
	// subscribed to the channel.
	PublishSubscribers = "subscribers"
	// PublishGrant: only a connection whose token grants publish on the
	// channel; the rules do not let anyone else in.
	PublishGrant = "grant"
	// PublishBackend: no client; backends (workers, the hub API) only.
	PublishBackend = "backend"
)

// Namespace holds the options of the channels whose names start with Name
// and a colon ("chat" for "chat:lobby"). Zero fields keep the defaults.
type Namespace struct {
	Name string `json:"name" yaml:"name"`
	// MaxMessages and MaxAge are the retention of its channels (unset: the
	// built-in 100,000 messages and 24 hours, or the hubs' --retention).
	MaxMessages uint64   `json:"max_messages,omitempty" yaml:"max_messages"`
	MaxAge      Duration `json:"max_age,omitempty" yaml:"max_age"`
	// MaxMessageBytes bounds a message's data, below the servers' own
	// bound (unset: theirs).
	MaxMessageBytes int `json:"max_message_bytes,omitempty" yaml:"max_message_bytes"`
	// Publish says which clients may publish: PublishRules (unset),
	// PublishSubscribers, PublishGrant or PublishBackend.
	Publish string `json:"publish,omitempty" yaml:"publish"`
	// History, when false, refuses clients' history reads (resuming a
	// subscription from an offset still works). Unset: true.
	History *bool `json:"history,omitempty" yaml:"history"`
	// Presence, when false, refuses clients' presence and presence_stats
	// (backends still see it through the hub API). Unset: true.
	Presence *bool `json:"presence,omitempty" yaml:"presence"`
	// JoinLeave sends the subscribers of its channels a join frame when a
	// connection subscribes and a leave frame when it unsubscribes or
	// goes (not stored in the history).
	JoinLeave bool `json:"join_leave,omitempty" yaml:"join_leave"`
	// Personal makes "Name:USER" and "Name:USER:anything" readable only by
	// the connections of USER (the token's sub), whatever the rules and
	// grants, and closed to other clients' publishes.
	Personal bool `json:"personal,omitempty" yaml:"personal"`
}

// HistoryOn reports whether clients may read the history of the
// namespace's channels.
func (n *Namespace) HistoryOn() bool { return n.History == nil || *n.History }

// PresenceOn reports whether clients may ask who is subscribed to the
// namespace's channels.
func (n *Namespace) PresenceOn() bool { return n.Presence == nil || *n.Presence }

// Namespaces is the cluster's namespace configuration (GET and PUT
// /v1/namespaces). Version grows by one with every change.
type Namespaces struct {
	Version    uint64      `json:"version"`
	Namespaces []Namespace `json:"namespaces"`
}

// Duration is a time.Duration written as Go writes one ("1h30m") in JSON
// and YAML.
type Duration time.Duration

// MarshalJSON writes d as a string like "1h30m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a string like "90s" or "1h".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"90s\" or \"24h\": %w", err)
	}
	return d.parse(s)
}

// UnmarshalText reads a string like "90s" or "1h" (YAML).
func (d *Duration) UnmarshalText(b []byte) error { return d.parse(string(b)) }

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration like \"90s\" or \"24h\"", s)
	}
	*d = Duration(v)
	return nil
}

// NamespaceOf returns the namespace name of channel: what comes before its
// first colon; ok is false for a channel without one.
func NamespaceOf(channel string) (name string, ok bool) {
	i := strings.IndexByte(channel, ':')
	if i < 0 {
		return "", false
	}
	return channel[:i], true
}

// Find returns the options of channel's namespace, or nil.
func (ns *Namespaces) Find(channel string) *Namespace {
	if ns == nil || len(ns.Namespaces) == 0 {
		return nil
	}
	name, ok := NamespaceOf(channel)
	if !ok {
		return nil
	}
	for i := range ns.Namespaces {
		if ns.Namespaces[i].Name == name {
			return &ns.Namespaces[i]
		}
	}
	return nil
}

// PersonalUser returns the user a channel of a personal namespace belongs
// to: the part after "Name:" up to the next colon. ok is false when the
// channel's namespace is not personal.
func (n *Namespace) PersonalUser(channel string) (user string, ok bool) {
	if n == nil || !n.Personal {
		return "", false
	}
	rest := channel[len(n.Name)+1:]
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	return rest, true
}

// MaxNamespaces bounds how many namespaces a configuration holds.
const MaxNamespaces = 1000

// CheckNamespaces says what is wrong with a list of namespaces, or nil.
func CheckNamespaces(list []Namespace) error {
	if len(list) > MaxNamespaces {
		return fmt.Errorf("%d namespaces, more than %d", len(list), MaxNamespaces)
	}
	seen := make(map[string]bool, len(list))
	for i, n := range list {
		where := fmt.Sprintf("namespace %d (%q)", i+1, n.Name)
		switch {
		case n.Name == "" || strings.ContainsRune(n.Name, ':') || !ValidChannel(n.Name) || len(n.Name) > MaxChannelLen-2:
			return fmt.Errorf("%s: a name is 1-253 characters of [A-Za-z0-9_.@/-] (a channel's prefix before its first colon)", where)
		case seen[n.Name]:
			return fmt.Errorf("%s: named twice", where)
		case n.MaxMessageBytes < 0:
			return fmt.Errorf("%s: max_message_bytes is negative", where)
		}
		switch n.Publish {
		case "", PublishRules, PublishSubscribers, PublishGrant, PublishBackend:
		default:
			return fmt.Errorf("%s: publish is %q; want %s, %s, %s or %s", where, n.Publish, PublishRules, PublishSubscribers, PublishGrant, PublishBackend)
		}
		seen[n.Name] = true
	}
	return nil
}
