package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/gateway"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// runStandalone runs a single-node hub and a gateway in one process: the
// development and small-site setup, and what `comet` alone runs.
func runStandalone(args []string, stderr io.Writer) error {
	var f gatewayFlags
	var data string
	fs := newFlagSet("standalone", "comet standalone [--listen 127.0.0.1:8080] [--data ./comet-data]", stderr)
	f.register(fs, true)
	fs.StringVar(&data, "data", "./comet-data", "data directory: the channel log, the Raft log and snapshots")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	logger, err := newLogger(f.logLevel, stderr)
	if err != nil {
		return err
	}
	if err := checkAddr("listen", f.listen); err != nil {
		return err
	}
	if err := checkDataDir(data); err != nil {
		return err
	}
	cert, err := f.tls.loadCert(logger)
	if err != nil {
		return err
	}
	defer watchCert(cert, logger)()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	defer ln.Close()
	ln = serverListener(ln, cert)
	if err := servePprof(f.pprof, logger); err != nil {
		return err
	}
	hub, err := broker.OpenHub(data,
		raft.Config{ID: "standalone", Single: true, Logger: logger.With("component", "raft"),
			// One node: no heartbeats to wait for; elect at once. The
			// election itself is one vote, its own, once it is on disk:
			// a second gives a busy disk's fsync time (at 100 ms the
			// election restarted, with a warning, on a loaded machine).
			HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: time.Second,
			LeaderLeaseTimeout: 100 * time.Millisecond},
		broker.Config{API: f.listen, MaxMessageBytes: f.maxMessageBytes, Secret: f.secret, Namespaces: f.cfgFile.namespaces, AdminToken: f.adminToken,
			Logger: logger.With("component", "hub")})
	if err != nil {
		return err
	}
	defer hub.Close()
	runCtx, cancelRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); hub.Service.Run(runCtx) }()
	defer func() { cancelRun(); <-runDone }()

	cfg, err := f.config(localHub{hub}, logger)
	if err != nil {
		return err
	}
	cfg.ID = "s"
	cfg.Overview = func(ctx context.Context) (wire.AdminOverview, error) { return hub.Service.Overview(ctx), nil }
	// Without a token the admin view, like the hub API, answers only this
	// machine.
	cfg.AdminLocalOnly = f.secret == "" && f.adminToken == ""
	gb, err := newGatewayBus(&cfg, localBusDialer(hub.Service), logger)
	if err != nil {
		return err
	}
	// Publishes go straight to the hub's queue, as the bus session's
	// would, without encoding them for it.
	cfg.Publisher = localPublisher{hub.Service}
	gw, err := gateway.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	gb.attach(gw)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	defer gb.start()()
	gw.Run()
	if f.secret == "" {
		// Not a warning: without a secret the hub API is safe (local
		// tools only), and this is how the README starts it.
		logger.Info("no --secret: the hub API under /v1/ (publish to any channel, read any channel, attach workers, send to connections) answers only requests from this machine; set --secret to reach it from elsewhere")
	}
	ready := func(ctx context.Context) error {
		if err := hub.Service.Ready(ctx); err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		if err := gw.Ready(); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		return namespacesInForce(gw, hub.Service)
	}
	defer announceReady(ctx, logger, ready, "comet standalone ready: a single-node hub and a gateway", func() []any {
		httpScheme, wsScheme := schemes(cert != nil)
		return []any{"ws", wsScheme + "://" + f.listen + "/ws", "sockjs", httpScheme + "://" + f.listen + "/sockjs", "hub_api", httpScheme + "://" + f.listen + "/v1/", "data", data}
	})()
	return serveGateway(ctx, logger, ln, standaloneHandler(gw, hub.Service, f.secret), gw, f.shutdownTimeout)
}

// standaloneHandler serves the gateway, and the hub API under /v1/ (its
// /healthz, /readyz and /metrics under /hub/). The hub API bypasses the
// clients' tokens and channel rules: with a secret it requires it; without,
// it answers only local, non-browser requests.
func standaloneHandler(gw *gateway.Server, svc *broker.Service, secret string) http.Handler {
	mux := http.NewServeMux()
	api := svc.Handler()
	if secret == "" {
		api = localOnly(api)
	}
	mux.Handle("/v1/", api)
	mux.Handle("/v1/admin/", gw.Handler()) // the hub's overview and the gateway's stats
	mux.Handle("/hub/", http.StripPrefix("/hub", api))
	mux.Handle("/", gw.Handler())
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := svc.Ready(r.Context()); err != nil {
			http.Error(w, "hub: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := gw.Ready(); err != nil {
			http.Error(w, "gateway: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := namespacesInForce(gw, svc); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	prefix := gw.StreamsPrefix()
	if prefix == "" {
		return mux
	}
	// Durable Streams go to the gateway before any mux cleans their path.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, prefix) {
			gw.Handler().ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// localOnly lets through requests from a loopback address that no browser
// sent (no Origin header: a web page could otherwise post to a hub API on
// the developer's machine). The probes /healthz, /readyz and /metrics stay
// open.
func localOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		probe := strings.HasSuffix(r.URL.Path, "/healthz") || strings.HasSuffix(r.URL.Path, "/readyz") || strings.HasSuffix(r.URL.Path, "/metrics")
		if !probe && (ip == nil || !ip.IsLoopback() || r.Header.Get("Origin") != "") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintln(w, `{"code":"forbidden","message":"without --secret, this hub API answers only local tools, not other machines or browsers: start comet with --secret and send Authorization: Bearer <secret>"}`)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// localHub is the gateway's Hub over a hub in the same process.
type localHub struct{ h *broker.Hub }

func (l localHub) Publish(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	res, err := l.h.Service.Publish(ctx, req.Channel, req.Data, req.ID)
	return res, wireError(err)
}

// localPublisher is the gateway's Publisher over the hub in this process,
// the leader: Service.PublishAsync queues each publish for the next Raft
// entry in the order of the calls, as the leader's router does for a bus
// session.
type localPublisher struct{ svc *broker.Service }

// Every publish it queues is answered (the hub's batcher answers all, at
// Close too); ctx bounds only the wait for room in the queue.
func (l localPublisher) Publish(ctx context.Context, req wire.PublishRequest, _ time.Time, done func(wire.PublishResponse, error)) error {
	l.svc.PublishAsync(ctx, req.Channel, req.Data, req.ID, func(res wire.PublishResponse, err error) {
		done(res, wireError(err))
	})
	return nil
}

// wireError hands the gateway a hub's error as the *wire.Error a hub's
// answer would carry.
func wireError(err error) error {
	if err == nil {
		return nil
	}
	return &wire.Error{Code: broker.ErrorCode(err), Message: err.Error()}
}

func (l localHub) Read(ctx context.Context, channel string, from uint64, limit int) (gateway.Page, uint64, error) {
	res, applied, err := l.h.Service.ReadApplied(channel, from, limit)
	return gateway.PageOf(channel, res), applied, err
}

func (l localHub) History(ctx context.Context, channel string, q wire.HistoryQuery) (gateway.HistoryPage, error) {
	res, err := l.h.Service.History(channel, q)
	if err != nil {
		return gateway.HistoryPage{}, wireError(err)
	}
	msgs, err := json.Marshal(res.Messages)
	return gateway.HistoryPage{Epoch: res.Epoch, First: res.First, Next: res.Next, Messages: msgs}, err
}

func (l localHub) Namespaces(ctx context.Context) (wire.Namespaces, error) {
	return l.h.Service.Namespaces(), nil
}

func (l localHub) Presence(ctx context.Context, channel, after string, limit int) (wire.Presence, error) {
	entries, missing, err := l.h.Service.Presence(ctx, channel)
	if err != nil {
		return wire.Presence{}, wireError(err)
	}
	page, next := broker.PresencePage(entries, after, limit)
	return wire.Presence{Channel: channel, Presence: page, After: next, Missing: missing}, nil
}

func (l localHub) PresenceStats(ctx context.Context, channel string) (wire.PresenceStats, error) {
	st, err := l.h.Service.PresenceStats(ctx, channel)
	return st, wireError(err)
}

func (l localHub) StreamOp(ctx context.Context, op wire.StreamOp) (wire.StreamResult, error) {
	res, err := l.h.Service.StreamOp(ctx, op)
	return res, wireError(err)
}

func (l localHub) StreamRead(ctx context.Context, name string, from uint64, limit, maxBytes int, minApplied uint64) (wire.StreamReadResult, error) {
	res, err := l.h.Service.StreamRead(ctx, name, from, limit, maxBytes, minApplied)
	return res, wireError(err)
}

func (l localHub) Stream(ctx context.Context, from uint64) (gateway.StreamReader, error) {
	return localStream{l.h.Stream.Follow(ctx, from)}, nil
}

type localStream struct{ *broker.Follower }

func (localStream) Hub() string { return "local" }

// namespacesInForce says whether the gateway enforces the namespaces the
// hub has (in the standalone, where the file's namespaces are replicated
// just after the start).
func namespacesInForce(gw *gateway.Server, svc *broker.Service) error {
	v, ok := gw.NamespacesVersion()
	if want := svc.Namespaces().Version; !ok || v != want {
		return fmt.Errorf("gateway: namespaces version %d in force, the hub's is %d", v, want)
	}
	return nil
}
