package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/gateway"
	"github.com/comethq/comet/wire"
)

// gatewayBus joins a gateway to the hub leader's router (the worker bus):
// client requests go to workers (unless --rpc-url answers them), connection
// events go to workers that watch them, and workers' direct messages come
// to the gateway's connections.
type gatewayBus struct {
	bus *bus.Gateway
	hub gateway.Hub     // publishes, when the router does not take them
	gw  *gateway.Server // set once the gateway exists
	up  atomic.Bool     // the session was up once
}

// newGatewayBus returns the bus link of gateway id, dialing with dial, and
// sets cfg's Workers (unless already set) and Events to it. Call attach
// with the gateway made from cfg, then run.
func newGatewayBus(cfg *gateway.Config, dial func(context.Context) (bus.Link, error), logger *slog.Logger) (*gatewayBus, error) {
	gb := &gatewayBus{hub: cfg.Hub}
	b, err := bus.NewGateway(bus.GatewayConfig{ID: cfg.ID, Dial: dial, Deliver: gb.deliver,
		Stats: gb.stats, Presence: gb.presence, JoinLeave: gb.joinLeave, Logger: logger}) // it adds component=bus
	if err != nil {
		return nil, err
	}
	gb.bus = b
	if cfg.Workers == nil {
		cfg.Workers = gb
	}
	cfg.Events = gb.event
	cfg.ReadyCheck = gb.ready
	cfg.Publisher = gb
	cfg.StreamWriter = gb
	return gb, nil
}

// StreamOp sends a Durable Streams write over the session to the router on
// the hub leader, or over HTTP to the hubs when the session is down or the
// router is of an earlier release.
func (gb *gatewayBus) StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error) {
	res, err := gb.bus.StreamOp(ctx, op)
	if errors.Is(err, bus.ErrNoStreams) {
		if sh, ok := gb.hub.(gateway.StreamHub); ok {
			return sh.StreamOp(ctx, op)
		}
	}
	return res, err
}

// ready holds the gateway back from /readyz until its first session to the
// router is up, so that requests do not fail just after a start. Later
// outages (a leader election) are not held against it: clients' channels
// still work, and requests fail fast with unavailable.
func (gb *gatewayBus) ready() error {
	if gb.up.Load() {
		return nil
	}
	if gb.bus.Connected() {
		gb.up.Store(true)
		return nil
	}
	return errors.New("not attached to the worker router (the hub leader's /v1/bus) yet")
}

func (gb *gatewayBus) attach(gw *gateway.Server) { gb.gw = gw }

// stats is the gateway's report to the router, for the admin view.
func (gb *gatewayBus) stats() json.RawMessage {
	if gb.gw == nil {
		return nil
	}
	return gb.gw.StatsJSON()
}

// presence is the gateway's answer to the router's presence queries.
func (gb *gatewayBus) presence(channel string) json.RawMessage {
	if gb.gw == nil {
		return json.RawMessage("[]")
	}
	return gb.gw.PresenceJSON(channel)
}

// joinLeave hands the router's join and leave messages to the gateway.
func (gb *gatewayBus) joinLeave(typ, channel, conn, user string) {
	if gb.gw != nil {
		gb.gw.DeliverJoinLeave(typ, channel, conn, user)
	}
}

// start keeps the session up until the returned stop is called; stop
// returns once the session has ended.
func (gb *gatewayBus) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = gb.bus.Run(ctx) }()
	return func() { cancel(); <-done }
}

func (gb *gatewayBus) Request(ctx context.Context, req gateway.Request) (json.RawMessage, error) {
	return gb.bus.Request(ctx, bus.Request{Route: req.Route, Data: req.Data, Conn: req.Conn, User: req.User})
}

// Publish sends a client's publish to the hub leader over the session,
// pipelined with the others; when the leader is of an earlier release that
// does not take publishes on the bus, through the hub API instead.
func (gb *gatewayBus) Publish(ctx context.Context, req wire.PublishRequest, deadline time.Time, done func(wire.PublishResponse, error)) error {
	viaAPI := func() {
		go func() {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			done(gb.hub.Publish(ctx, req))
		}()
	}
	err := gb.bus.Publish(ctx, bus.Publish{Channel: req.Channel, Key: req.ID, Data: req.Data, Deadline: deadline},
		func(res wire.PublishResponse, err error) {
			if errors.Is(err, bus.ErrNoPublish) {
				viaAPI()
				return
			}
			done(res, err)
		})
	if errors.Is(err, bus.ErrNoPublish) {
		viaAPI()
		return nil
	}
	return err
}

func (gb *gatewayBus) event(ev gateway.Event) {
	gb.bus.Event(bus.Event{Type: ev.Type, Conn: ev.Conn, User: ev.User, Channel: ev.Channel})
}

func (gb *gatewayBus) deliver(conn string, data json.RawMessage) error {
	if gb.gw == nil {
		return bus.ErrNoConnection
	}
	err := gb.gw.SendToConnection(conn, data)
	if errors.Is(err, gateway.ErrNoConnection) {
		return bus.ErrNoConnection
	}
	return err
}

// localBusDialer dials the router of a hub in this process over a pipe.
func localBusDialer(svc *broker.Service) func(context.Context) (bus.Link, error) {
	return func(context.Context) (bus.Link, error) {
		mine, theirs := bus.Pipe()
		if err := svc.AttachBus(theirs); err != nil {
			mine.Close()
			return nil, err
		}
		return mine, nil
	}
}
