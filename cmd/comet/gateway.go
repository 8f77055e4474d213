package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/gateway"
	"github.com/comethq/comet/wire"
)

// gatewayFlags are the client-facing settings shared by `comet gateway`
// and `comet standalone`.
type gatewayFlags struct {
	listen, id, origins, logLevel, pprof, secret, adminToken     string
	maxFrameBytes, maxMessageBytes, maxSubscriptions, queueBytes int
	cacheMessages, cacheBytes                                    int
	ping, idle, linger, shutdownTimeout                          time.Duration

	// Auth and workers.
	allowAnonymous                              bool
	tokenHMACSecret, tokenRSAKey, rules, rpcURL string
	tokenIssuer, tokenAudience                  string
	requestTimeout                              time.Duration
	streamsPrefix                               string
	streamLongPoll                              time.Duration
	cfgFile                                     *configFile
	tls                                         tlsFlags
}

func (f *gatewayFlags) register(fs *flag.FlagSet, standalone bool) {
	fs.StringVar(&f.listen, "listen", defaultListen, "address (host:port) to serve clients on: /ws, /sockjs, /healthz, /readyz, /metrics")
	if !standalone {
		fs.StringVar(&f.id, "id", "", "this gateway's name, the prefix of its connection ids (default: random)")
	}
	fs.StringVar(&f.origins, "allowed-origins", "", "browser origins allowed besides the gateway's own, comma-separated: * for any, or scheme://host[:port], host may start with *.")
	fs.IntVar(&f.maxFrameBytes, "max-frame-bytes", 80<<10, "largest client frame; larger ones are answered too_large")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", 64<<10, "largest message data a client may publish, in bytes")
	fs.IntVar(&f.maxSubscriptions, "max-subscriptions", 1000, "most subscriptions per connection")
	fs.IntVar(&f.queueBytes, "queue-bytes", 8<<20, "bytes queued for one connection before it is cut off as a slow consumer")
	fs.IntVar(&f.cacheMessages, "cache-messages", 10000, "recent messages kept in memory per channel with subscribers, to serve resuming clients")
	fs.IntVar(&f.cacheBytes, "cache-bytes", 4<<20, "bytes of recent messages kept per channel")
	fs.DurationVar(&f.ping, "ping", 25*time.Second, "interval of WebSocket pings (and SockJS heartbeats)")
	fs.DurationVar(&f.idle, "idle-timeout", 60*time.Second, "close a WebSocket connection silent for this long")
	fs.DurationVar(&f.linger, "linger", time.Minute, "keep a channel's recent messages this long after its last subscriber leaves")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long to let connections flush before closing them")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060 (default: off)")
	fs.BoolVar(&f.allowAnonymous, "allow-anonymous", standalone, "let clients in without a token, as the anonymous user (--allow-anonymous=false to refuse them)")
	fs.StringVar(&f.tokenHMACSecret, "token-hmac-secret", "", "accept client tokens (JWT) signed HS256 with this secret (at least 32 bytes)")
	fs.StringVar(&f.tokenRSAKey, "token-rsa-public-key", "", "accept client tokens (JWT) signed RS256 by the private key of this PEM public key file")
	fs.StringVar(&f.tokenIssuer, "token-issuer", "", "when set, a token's iss must be this")
	fs.StringVar(&f.tokenAudience, "token-audience", "", "when set, a token's aud must be or include this")
	fs.StringVar(&f.rules, "channel-rules", "", "who may subscribe and publish where, first match wins: pattern=subscribe/publish,... each anyone, users or none; {sub} in a pattern is the user, e.g. 'public:*=anyone/users,user:{sub}:*=users/none' (default: any client let in may do both anywhere; also `channels` in --config)")
	fs.DurationVar(&f.requestTimeout, "request-timeout", 10*time.Second, "how long a client's request may wait for a worker's answer before it gets timeout")
	fs.StringVar(&f.streamsPrefix, "streams-prefix", "/v1/stream/", "serve channels as Durable Streams over HTTP under this path (docs/durable-streams.md); - to turn it off")
	fs.DurationVar(&f.streamLongPoll, "stream-long-poll", 20*time.Second, "how long a Durable Streams long-poll read waits for data")
	fs.StringVar(&f.rpcURL, "rpc-url", "", "answer clients' requests by POSTing them to this HTTP endpoint instead of through workers (docs/workers.md)")
	if standalone {
		f.cfgFile = addConfigFlag(fs, "channels", "namespaces")
	} else {
		f.cfgFile = addConfigFlag(fs, "channels")
	}
	if standalone {
		f.tls.register(fs, tlsCertUsage+" (the hub API under /v1/ too)", "")
	} else {
		f.tls.register(fs, tlsCertUsage, "PEM file of the CA that signed the hubs' certificates: reach the hubs over https and wss, bare --hubs addresses included (default: the system's roots, for hubs written https://host:port)")
	}
	if standalone {
		fs.StringVar(&f.secret, "secret", "", "a secret the hub API under /v1/ then requires (Authorization: Bearer), for workers and tools; clients never need it (default: none)")
	} else {
		fs.StringVar(&f.secret, "secret", "", secretUsage)
	}
	fs.StringVar(&f.adminToken, "admin-token", "", adminTokenUsage)
}

func (f *gatewayFlags) config(hub gateway.Hub, logger *slog.Logger) (gateway.Config, error) {
	if err := checkAddr("listen", f.listen); err != nil {
		return gateway.Config{}, err
	}
	cfg := gateway.Config{
		Hub: hub, ID: f.id, AllowedOrigins: splitList(f.origins),
		MaxFrameBytes: f.maxFrameBytes, MaxMessageBytes: f.maxMessageBytes, MaxSubscriptions: f.maxSubscriptions,
		QueueBytes: f.queueBytes, CacheMessages: f.cacheMessages, CacheBytes: f.cacheBytes,
		PingInterval: f.ping, IdleTimeout: f.idle, Linger: f.linger,
		AllowAnonymous: f.allowAnonymous, RequestTimeout: f.requestTimeout,
		AdminTokens:   []string{f.secret, f.adminToken},
		StreamsPrefix: f.streamsPrefix, StreamLongPoll: f.streamLongPoll,
		Logger: logger.With("component", "gateway"),
	}
	if err := f.authConfig(&cfg); err != nil {
		return gateway.Config{}, err
	}
	if f.rpcURL != "" {
		p, err := gateway.NewRPCProxy(f.rpcURL)
		if err != nil {
			return gateway.Config{}, fmt.Errorf("%w: --rpc-url: %v", errUsage, err)
		}
		cfg.Workers = p
	}
	return cfg, nil
}

// authConfig sets the gateway's token verifier and channel rules.
func (f *gatewayFlags) authConfig(cfg *gateway.Config) error {
	var ac auth.Config
	if f.tokenHMACSecret != "" {
		ac.HMACSecret = []byte(f.tokenHMACSecret)
	}
	if f.tokenRSAKey != "" {
		pemBytes, err := os.ReadFile(f.tokenRSAKey)
		if err != nil {
			return fmt.Errorf("%w: --token-rsa-public-key: %v", errUsage, err)
		}
		if ac.RSAPublicKey, err = auth.LoadRSAPublicKey(pemBytes); err != nil {
			return fmt.Errorf("%w: --token-rsa-public-key %s: %v", errUsage, f.tokenRSAKey, err)
		}
	}
	if ac.HMACSecret != nil || ac.RSAPublicKey != nil {
		ac.Issuer, ac.Audience = f.tokenIssuer, f.tokenAudience
		v, err := auth.NewVerifier(ac)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		cfg.Tokens = v
	} else if !f.allowAnonymous {
		return fmt.Errorf("%w: no client could connect: give --token-hmac-secret or --token-rsa-public-key, or --allow-anonymous", errUsage)
	}
	rules := f.cfgFile.channels
	if f.rules != "" {
		var err error
		if rules, err = parseRules(f.rules); err != nil {
			return err
		}
	}
	if len(rules) > 0 {
		p, err := auth.NewPolicy(rules)
		if err != nil {
			return fmt.Errorf("%w: channel rules: %v", errUsage, err)
		}
		cfg.Policy = p
	}
	return nil
}

func runGateway(args []string, stderr io.Writer) error {
	var f gatewayFlags
	var hubs string
	fs := newFlagSet("gateway", "comet gateway --listen ADDR --hubs API,API,...", stderr)
	f.register(fs, false)
	fs.StringVar(&hubs, "hubs", "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103", "API addresses of the hubs (host:port, or https://host:port for hubs with TLS; comma-separated); the gateway follows one and moves on when it fails")
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
	if err := f.tls.check(); err != nil {
		return err
	}
	caPool, err := f.tls.loadCA()
	if err != nil {
		return err
	}
	addrs, hubTLS, err := hubTargets("hubs", splitList(hubs), caPool, f.tls.ca != "")
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: --hubs is required", errUsage)
	}
	hub, err := gateway.NewHTTPHubs(addrs, 15*time.Second)
	if err != nil {
		return fmt.Errorf("%w: --hubs: %v", errUsage, err)
	}
	hub.SetSecret(f.secret)
	if hubTLS != nil {
		hub.SetTLS(hubTLS)
	}
	cert, err := f.tls.loadCert(logger)
	if err != nil {
		return err
	}
	defer watchCert(cert, logger)()
	cfg, err := f.config(hub, logger)
	if err != nil {
		return err
	}
	cfg.Overview = hubsOverview(hub, f.secret, f.adminToken)
	if cfg.ID == "" {
		cfg.ID = randomHex(4) // named here: the bus needs it too
	}
	if err := bus.CheckGatewayID(cfg.ID); err != nil {
		return fmt.Errorf("%w: --id: %v", errUsage, err)
	}
	gb, err := newGatewayBus(&cfg, bus.HubDialer(addrs, f.secret, hubTLS, logger.With("component", "bus")), logger)
	if err != nil {
		return err
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	gb.attach(gw)
	defer gb.start()()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	ln = serverListener(ln, cert)
	if err := servePprof(f.pprof, logger); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	gw.Run()
	httpScheme, wsScheme := schemes(cert != nil)
	logger.Info("gateway started", "listen", f.listen, "hubs", hubs, "tls", cert != nil)
	defer announceReady(ctx, logger, func(context.Context) error { return gw.Ready() }, "gateway ready", func() []any {
		return []any{"ws", wsScheme + "://" + f.listen + "/ws", "sockjs", httpScheme + "://" + f.listen + "/sockjs", "hubs", hubs}
	})()
	return serveGateway(ctx, logger, ln, gw.Handler(), gw, f.shutdownTimeout)
}

// hubsOverview returns the hubs' admin overview, asked of each hub in turn
// (the one the gateway follows first) until one answers, with the secret,
// or without one the admin token.
func hubsOverview(hubs *gateway.HTTPHubs, secret, adminToken string) func(context.Context) (wire.AdminOverview, error) {
	c := *hubs.Client()
	c.Forwarder = ""
	if c.Secret = secret; secret == "" {
		c.Secret = adminToken
	}
	return func(ctx context.Context) (wire.AdminOverview, error) {
		var errs []error
		for _, api := range hubs.Order() {
			ov, err := c.Overview(ctx, api)
			if err == nil {
				return ov, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", api, err))
			if ctx.Err() != nil {
				break
			}
		}
		return wire.AdminOverview{}, errors.Join(errs...)
	}
}

// serveGateway serves h on ln until ctx ends, then shuts down: no new
// connections, clients told to reconnect elsewhere, at most timeout spent.
func serveGateway(ctx context.Context, logger *slog.Logger, ln net.Listener, h http.Handler, gw *gateway.Server, timeout time.Duration) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-serveErr:
		gw.Close()
		return fmt.Errorf("serve: %w", err)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Stop accepting (WebSocket connections are hijacked: Shutdown does not
	// wait for them), then close every client with "reconnect elsewhere".
	go func() {
		if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			logger.Warn("http shutdown", "err", err)
		}
	}()
	if err := gw.Shutdown(shutCtx); err != nil {
		logger.Warn("some connections did not flush in time", "err", err)
	}
	_ = srv.Close()
	logger.Info("stopped")
	return nil
}
