package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/comethq/comet/broker"
	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/internal/durable"
	"github.com/comethq/comet/internal/tlsfiles"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// hubFlags are the settings of `comet hub`.
type hubFlags struct {
	id, data, raftAddr, api, peers, join, retention, logLevel     string
	pprof, secret, adminToken                                     string
	maxMessageBytes, batchMaxMessages, batchMaxBytes, maxInflight int
	snapshotInterval, raftTimeout                                 time.Duration
	snapshotThreshold, trailingLogs                               uint64
	maxIDs                                                        int64
	cfgFile                                                       *configFile
	tls                                                           tlsFlags
}

func runHub(args []string, stderr io.Writer) error {
	var f hubFlags
	fs := newFlagSet("hub", "comet hub --id h1 --data DIR --raft ADDR --api ADDR --peers ID=ADDR,... [--join API]", stderr)
	fs.StringVar(&f.id, "id", "", "this hub's unique, stable id (required), e.g. h1")
	fs.StringVar(&f.data, "data", "./comet-data", "data directory: the channel log, the Raft log and snapshots")
	fs.StringVar(&f.raftAddr, "raft", "127.0.0.1:7001", "Raft address (host:port) to listen on and advertise")
	fs.StringVar(&f.api, "api", "127.0.0.1:7101", "HTTP API address (host:port) to listen on and advertise")
	fs.StringVar(&f.peers, "peers", "", "initial cluster, the same on every hub: id=raftaddr,... (used once, to bootstrap an empty data directory)")
	fs.StringVar(&f.join, "join", "", "API address(es) of running hubs, comma-separated: ask the cluster to add this hub")
	fs.StringVar(&f.retention, "retention", "", "retention rules, first match wins: pattern=maxMessages/maxAge,... e.g. 'chat:*=1000/1h,*=100000/24h' (built-in: 100000/24h); give every hub the same")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", 64<<10, "largest message data accepted, in bytes")
	fs.IntVar(&f.batchMaxMessages, "batch-max-messages", 1024, "most messages coalesced into one Raft entry")
	fs.IntVar(&f.batchMaxBytes, "batch-max-bytes", 1<<20, "most bytes coalesced into one Raft entry")
	fs.IntVar(&f.maxInflight, "max-inflight", 4, "most Raft entries being committed at once")
	fs.Int64Var(&f.maxIDs, "max-ids", log.DefaultMaxIDs, "most publish ids held for idempotency (about 150 bytes of memory each on every hub); past it a publish with a new id is refused, unavailable, until ids leave the 10-minute window; 0: no limit; give every hub the same")
	fs.DurationVar(&f.snapshotInterval, "snapshot-interval", 30*time.Second, "how often to check whether to snapshot and truncate the Raft log")
	fs.Uint64Var(&f.snapshotThreshold, "snapshot-threshold", 4096, "new Raft entries that trigger a snapshot")
	fs.Uint64Var(&f.trailingLogs, "trailing-logs", 2048, "Raft entries kept after a snapshot for followers that lag")
	fs.DurationVar(&f.raftTimeout, "raft-timeout", time.Second, "Raft heartbeat, election and leader-lease timeout: failover takes about 1-2x this; raise it on busy or slow machines")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060 (default: off)")
	fs.StringVar(&f.secret, "secret", "", secretUsage)
	f.tls.register(fs, "PEM file of this hub's TLS certificate (chain), for the host of --api and of --raft: the API serves https and Raft traffic between hubs is TLS; give every hub of the cluster one; reloaded on SIGHUP and when the file changes",
		"PEM file of the CA(s) that signed the hubs' certificates: Raft peers must present a certificate it signed (mutual TLS), and other hubs' APIs are verified against it (default: the system's roots, and Raft peers show no certificate)")
	fs.StringVar(&f.adminToken, "admin-token", "", adminTokenUsage)
	f.cfgFile = addConfigFlag(fs, "namespaces")
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
	if err := servePprof(f.pprof, logger); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return f.run(ctx, logger)
}

// parsePeers parses "h1=127.0.0.1:7001,h2=...".
func parsePeers(s string) ([]raft.Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var peers []raft.Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%w: --peers: %q is not id=host:port", errUsage, part)
		}
		if err := checkHostPort(addr); err != nil {
			return nil, fmt.Errorf("%w: --peers: %s: %v", errUsage, id, err)
		}
		if err := broker.CheckHubID(id); err != nil {
			return nil, fmt.Errorf("%w: --peers: %v", errUsage, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("%w: --peers: id %q appears twice", errUsage, id)
		}
		seen[id] = true
		peers = append(peers, raft.Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// parseRetention parses "pattern=maxMessages/maxAge,...". Either limit may
// be empty or 0 for "no limit": "logs:*=/1h", "chat:*=500/".
func parseRetention(s string) ([]log.Rule, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var rules []log.Rule
	for _, part := range strings.Split(s, ",") {
		pat, lim, ok := strings.Cut(strings.TrimSpace(part), "=")
		count, age, ok2 := strings.Cut(lim, "/")
		if !ok || !ok2 || pat == "" {
			return nil, fmt.Errorf("%w: --retention: %q is not pattern=maxMessages/maxAge", errUsage, part)
		}
		r := log.Rule{Pattern: pat}
		if count != "" {
			n, err := strconv.ParseUint(count, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: --retention: %q: max messages %q is not a number", errUsage, part, count)
			}
			r.MaxMessages = n
		}
		if age != "" && age != "0" {
			d, err := time.ParseDuration(age)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("%w: --retention: %q: max age %q is not a duration like 90s, 1h", errUsage, part, age)
			}
			r.MaxAge = d
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// checkHostPort returns an error unless addr is host:port with a host and
// a port of 1-65535, as a Raft address another hub dials must be.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// checkOwnPeer returns an error when peers gives this hub (id) another
// address than --raft (raftAddr): the others would dial an address this hub
// does not listen on, or the cluster would bootstrap with two views of it.
func checkOwnPeer(peers []raft.Peer, id, raftAddr string) error {
	for _, p := range peers {
		if p.ID == id && p.Addr != raftAddr {
			return fmt.Errorf("%w: --peers gives this hub (--id %s) the address %s but --raft is %s: they must be the same",
				errUsage, id, p.Addr, raftAddr)
		}
	}
	return nil
}

func checkAddr(flagName, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%w: --%s %q: %v", errUsage, flagName, addr, err)
	}
	return nil
}

// checkDataDir makes sure dir exists and is writable.
func checkDataDir(dir string) error {
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data directory %s is not writable: %w", dir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

func (f *hubFlags) run(ctx context.Context, logger *slog.Logger) error {
	if f.raftTimeout < 10*time.Millisecond {
		return fmt.Errorf("%w: --raft-timeout %v is too short (at least 10ms)", errUsage, f.raftTimeout)
	}
	if f.id == "" {
		return fmt.Errorf("%w: --id is required (a unique, stable name such as h1)", errUsage)
	}
	for name, addr := range map[string]string{"raft": f.raftAddr, "api": f.api} {
		if err := checkAddr(name, addr); err != nil {
			return err
		}
	}
	if err := broker.CheckHubID(f.id); err != nil {
		return fmt.Errorf("%w: --id: %v", errUsage, err)
	}
	peers, err := parsePeers(f.peers)
	if err != nil {
		return err
	}
	if err := checkOwnPeer(peers, f.id, f.raftAddr); err != nil {
		return err
	}
	rules, err := parseRetention(f.retention)
	if err != nil {
		return err
	}
	if f.maxIDs < 0 {
		return fmt.Errorf("%w: --max-ids %d: want 0 (no limit) or more", errUsage, f.maxIDs)
	}
	maxIDs := f.maxIDs
	if maxIDs == 0 {
		maxIDs = -1 // broker.Config: no limit
	}
	if err := f.tls.check(); err != nil {
		return err
	}
	if f.tls.ca != "" && f.tls.cert == "" {
		return fmt.Errorf("%w: --tls-ca is for hubs with TLS: give --tls-cert and --tls-key too", errUsage)
	}
	caPool, err := f.tls.loadCA()
	if err != nil {
		return err
	}
	useTLS := f.tls.cert != ""
	joins, joinTLS, err := hubTargets("join", splitList(f.join), caPool, useTLS)
	if err != nil {
		return err
	}
	if len(peers) == 0 && len(joins) == 0 {
		logger.Warn("neither --peers nor --join given: this hub waits until a cluster adds it")
	}
	if len(joins) > 0 {
		peers = nil // a joining hub never bootstraps a cluster of its own
	} else if len(peers) > 0 && !containsPeer(peers, f.id) {
		return fmt.Errorf("%w: --id %q is not in --peers", errUsage, f.id)
	}
	if err := checkDataDir(f.data); err != nil {
		return err
	}
	logger = logger.With("node", f.id)
	cert, err := f.tls.loadCert(logger)
	if err != nil {
		return err
	}
	defer watchCert(cert, logger)()
	var raftTLS, apiTLS *tls.Config // Raft's, and to call other hubs' APIs
	if cert != nil {
		raftTLS, apiTLS = tlsfiles.PeerConfig(cert, caPool), tlsfiles.ClientConfig(caPool, nil)
	}

	// Open in order: log, API listener, Raft, service. Close in reverse.
	// The Raft log is fsynced before every acknowledgement; the channel
	// log is rebuilt from Raft after a power loss (see log.Config.DeferSync).
	clog, err := log.Open(log.Config{Path: filepath.Join(f.data, "channels.db"), DeferSync: true,
		Logger: logger.With("component", "log")})
	if err != nil {
		return err
	}
	defer clog.Close()
	ln, err := net.Listen("tcp", f.api)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", f.api, err)
	}
	defer ln.Close()
	ln = serverListener(ln, cert)
	stream := broker.NewStream(0, 0)
	node, err := raft.New(raft.Config{
		ID: f.id, Dir: filepath.Join(f.data, "raft"), Addr: f.raftAddr, Peers: peers, Log: clog, Observer: stream,
		HeartbeatTimeout: f.raftTimeout, ElectionTimeout: f.raftTimeout, LeaderLeaseTimeout: f.raftTimeout,
		SnapshotInterval: f.snapshotInterval, SnapshotThreshold: f.snapshotThreshold, TrailingLogs: f.trailingLogs,
		Secret: f.secret, TLS: raftTLS, Logger: logger.With("component", "raft"),
	})
	if err != nil {
		return err
	}
	defer node.Close()
	svc, err := broker.New(broker.Config{
		Node: node, API: f.api, Retention: rules, Namespaces: f.cfgFile.namespaces, MaxIDs: maxIDs, Stream: stream,
		MaxMessageBytes: f.maxMessageBytes, BatchMaxMessages: f.batchMaxMessages,
		BatchMaxBytes: f.batchMaxBytes, MaxInflight: f.maxInflight, Secret: f.secret, TLS: apiTLS,
		AdminToken: f.adminToken, Logger: logger.With("component", "broker"),
	})
	if err != nil {
		return err
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	runDone := make(chan struct{})
	go func() { defer close(runDone); svc.Run(runCtx) }()

	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(svc.Drain)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if f.secret == "" {
		logger.Warn("NO --secret: anyone who can reach --api " + f.api + " and --raft " + f.raftAddr +
			" can publish, read every channel, send to connections and change the cluster; set --secret (COMET_SECRET) on every hub and gateway, or bind them to a private network")
	}
	if useTLS && caPool == nil {
		logger.Warn("--tls-cert without --tls-ca: Raft peers are verified against the system's roots and show no certificate of their own, so only --secret keeps other processes out of --raft; a private CA (--tls-ca) makes Raft mutual TLS")
	}
	apiScheme, _ := schemes(useTLS)
	logger.Info("hub started", "raft", f.raftAddr, "api", f.api, "data", f.data, "tls", useTLS)
	stopReady := announceReady(ctx, logger, svc.Ready, "hub ready", func() []any {
		leader, _ := node.Leader()
		return []any{"api", apiScheme + "://" + f.api + "/v1/", "raft", f.raftAddr, "leader", leader}
	})
	defer stopReady()

	// joinErr gets the join's failure, when it is refused for good.
	joinErr := make(chan error, 1)
	joinDone := make(chan struct{})
	go func() {
		defer close(joinDone)
		if len(joins) > 0 {
			if err := joinCluster(ctx, logger, joins, f.secret, joinTLS, wire.JoinRequest{ID: f.id, Raft: f.raftAddr, API: f.api}); err != nil {
				joinErr <- err
			}
		}
	}()

	var exitErr error
	select {
	case <-ctx.Done():
		stopReady()
		logger.Info("shutting down")
	case err := <-serveErr:
		cancelRun()
		<-runDone
		<-joinDone
		return fmt.Errorf("api: %w", err)
	case exitErr = <-joinErr:
		stopReady()
		logger.Info("shutting down: the cluster refused to add this hub")
	}
	<-joinDone
	// Hand leadership over first so that publishing resumes quickly
	// elsewhere, then stop taking requests, then stop the service; the
	// deferred closes stop Raft and the log.
	if node.IsLeader() {
		if err := node.TransferLeadership(); err != nil {
			logger.Warn("leadership transfer failed", "err", err)
		} else {
			logger.Info("leadership transferred")
		}
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		logger.Warn("http shutdown", "err", err)
	}
	cancelRun()
	<-runDone
	logger.Info("stopped")
	return exitErr
}

func containsPeer(peers []raft.Peer, id string) bool {
	for _, p := range peers {
		if p.ID == id {
			return true
		}
	}
	return false
}

// errJoinRefused marks a join the cluster refused for good (a 4xx answer
// that retrying will not change): the hub exits with it.
var errJoinRefused = errors.New("the cluster refused to add this hub")

// joinCluster asks the hubs at apis, in turn, to add this hub, until one
// succeeds, one refuses for good (an error wrapping errJoinRefused), or ctx
// ends (nil).
func joinCluster(ctx context.Context, logger *slog.Logger, apis []string, secret string, tlsConfig *tls.Config, req wire.JoinRequest) error {
	client := hubapi.NewClient(15*time.Second, 2)
	client.Secret = secret
	if tlsConfig != nil {
		client.SetTLS(tlsConfig)
	}
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		api := apis[attempt%len(apis)]
		err := client.Post(ctx, api, "/v1/cluster/join", req, nil)
		if err == nil {
			logger.Info("joined cluster", "via", api)
			return nil
		}
		var apiErr *hubapi.APIError
		if errors.As(err, &apiErr) && refusedForGood(apiErr.Status) {
			logger.Error("the cluster refused to add this hub; not retrying", "via", api, "err", err)
			return fmt.Errorf("%w (via %s): %s", errJoinRefused, api, apiErr.Body.Message)
		}
		logger.Warn("join failed; retrying", "via", api, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// refusedForGood reports whether a join answered with HTTP status would be
// answered the same when retried: a 4xx other than 408 (request timeout)
// and 429 (too many requests).
func refusedForGood(status int) bool {
	return status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}
