package wire

import (
	"encoding/json"
	"strconv"
	"time"
)

// The admin view (docs/operations.md, "Admin view"): GET /admin serves a
// page that polls GET /v1/admin/overview, on hubs and on gateways. The
// types below are that endpoint's answer, and what gateways report of
// themselves to the hub leader on their bus session.

// AdminOverview is the answer of GET /v1/admin/overview.
type AdminOverview struct {
	// Hub is the id of the hub whose view this is (on a gateway: the hub
	// that answered it), Time when it was taken, Version its build.
	Hub     string    `json:"hub"`
	Time    time.Time `json:"time"`
	Version string    `json:"version,omitempty"`
	// Leader is the leader's id ("" during an election) and Term the
	// answering hub's Raft term.
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	// Nodes are the members of the Raft configuration, as each one reports
	// itself (AdminNode.Reachable false when it did not answer).
	Nodes []AdminNode `json:"nodes"`
	// LeaderChanges are the last leader changes the answering hub saw,
	// newest first, kept in memory (empty after a restart).
	LeaderChanges []LeaderChange `json:"leader_changes"`
	// Gateways are the gateways attached to the leader's router, with what
	// each last reported; GatewaysError says why they are missing (no
	// leader, the leader did not answer).
	Gateways      []AdminGateway `json:"gateways"`
	GatewaysError string         `json:"gateways_error,omitempty"`
	// Channels are the busiest channels: the most messages applied in the
	// last ChannelWindow (see AdminChannel).
	Channels      []AdminChannel `json:"channels"`
	ChannelWindow Seconds        `json:"channel_window"`
	// Publishes counts the messages the answering hub has applied since it
	// started (every hub applies every message: it counts the cluster's
	// publishes); rates are differences of it over Time.
	Publishes uint64 `json:"publishes"`
	// Deliveries is the sum of the gateways' Deliveries counters, and
	// DeliveriesPerSecond the sum of their rates; Connections the sum of
	// their connections.
	Deliveries          uint64  `json:"deliveries"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	Connections         int     `json:"connections"`
	// Gateway is set by a gateway that answers GET /v1/admin/overview: its
	// own stats, taken when it answered. HubsError, on a gateway, says why
	// the hubs' part is missing.
	Gateway   *GatewayStats `json:"gateway,omitempty"`
	HubsError string        `json:"hubs_error,omitempty"`
}

// AdminNode is one hub in AdminOverview.
type AdminNode struct {
	ID     string `json:"id"`
	Raft   string `json:"raft"`
	API    string `json:"api"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
	// State is leader, follower, candidate, shutdown; "unreachable" when it
	// did not answer, "unknown" when its API address is not known yet.
	State        string `json:"state"`
	Reachable    bool   `json:"reachable"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// Lag is how many Raft entries this hub has yet to apply: the leader's
	// commit index minus this hub's applied index (0 when it is ahead,
	// as the two are read at slightly different times), or, with no
	// leader reachable, its own commit index minus its applied index.
	Lag     uint64 `json:"lag"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
}

// LeaderChange is one change of leader a hub observed: at Time, in Term
// (the observing hub's term right after), Leader became leader ("" when
// the leader was lost and an election began).
type LeaderChange struct {
	Time   time.Time `json:"time"`
	Term   uint64    `json:"term"`
	Leader string    `json:"leader"`
}

// AdminGateway is one gateway attached to the leader's router, with its
// last report; Reported is false for a gateway of an earlier release,
// which reports nothing.
type AdminGateway struct {
	GatewayStats
	Reported bool `json:"reported"`
	// Age is how long ago the report came.
	Age Seconds `json:"age"`
}

// GatewayStats is what a gateway reports of itself: on its bus session to
// the hub leader (once a second), and in GET /v1/admin/overview.
type GatewayStats struct {
	ID          string    `json:"id"`
	Version     string    `json:"version,omitempty"`
	Time        time.Time `json:"time"`
	Connections int       `json:"connections"`
	// Transports counts the connections by transport (websocket, sockjs).
	Transports    map[string]int `json:"transports,omitempty"`
	Subscriptions int            `json:"subscriptions"`
	// Channels is how many channels the gateway follows.
	Channels int `json:"channels"`
	// Publishes counts clients' publishes answered (acknowledged or
	// refused), Deliveries channel messages queued to subscribers, both
	// since the gateway started.
	Publishes  uint64 `json:"publishes"`
	Deliveries uint64 `json:"deliveries"`
	// DeliveriesPerSecond is the rate of Deliveries between the gateway's
	// last two reports to the router (the gateway works it out, so that it
	// carries over to a new leader; the router does for a gateway that
	// leaves it out).
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// Top are the channels with the most subscribers on this gateway, at
	// most MaxTopChannels, most first.
	Top []ChannelSubscribers `json:"top,omitempty"`
}

// MaxTopChannels bounds GatewayStats.Top.
const MaxTopChannels = 64

// ChannelSubscribers is a channel and its subscribers on one gateway.
type ChannelSubscribers struct {
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

// AdminChannel is one of the busiest channels in AdminOverview.
type AdminChannel struct {
	Channel string `json:"channel"`
	// Recent is how many messages the answering hub applied to it in the
	// last AdminOverview.ChannelWindow, and Rate that per second.
	Recent uint64  `json:"recent"`
	Rate   float64 `json:"rate"`
	// First and Last are the first and last offsets stored (Last is 0 and
	// Messages 0 when it holds none); Messages = Last - First + 1.
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
	Messages uint64 `json:"messages"`
	// Subscribers is the sum of what the gateways report; a gateway
	// reports only its MaxTopChannels channels with the most subscribers,
	// so it is a lower bound.
	Subscribers int `json:"subscribers"`
}

// Seconds is a time.Duration written in JSON as a number of seconds.
type Seconds time.Duration

// MarshalJSON writes d in seconds.
func (d Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'f', -1, 64), nil
}

// UnmarshalJSON reads seconds.
func (d *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*d = Seconds(f * float64(time.Second))
	return nil
}
