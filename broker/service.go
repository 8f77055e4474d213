package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

var (
	// ErrTooLarge is returned for a message over Config.MaxMessageBytes.
	ErrTooLarge = errors.New("message too large")
	// ErrBadRequest is returned for input outside the contract.
	ErrBadRequest = errors.New("bad request")
	// ErrNoLeader is returned when no leader is known to forward to.
	ErrNoLeader = errors.New("no leader known")
	// ErrClosed is returned by calls on a closed Service.
	ErrClosed = errors.New("broker is closed")
	// ErrStorage is returned for publishes that this hub, as leader,
	// refuses because its channel log cannot store them (a full disk); it
	// wraps the log's fault. Clients get `unavailable`.
	ErrStorage = errors.New("storage unavailable")
)

// MaxIDLen is the longest publish id (idempotency key), in bytes.
const MaxIDLen = 255

// Config configures a Service.
type Config struct {
	// Node is the Raft node. Required. The caller closes it after the
	// Service.
	Node *raft.Node
	// API is this hub's HTTP API address as others reach it (host:port).
	// Required.
	API string
	// MaxMessageBytes bounds a message's data (default 65536).
	MaxMessageBytes int
	// BatchMaxMessages and BatchMaxBytes bound one Raft entry (defaults
	// 1024 messages, 1 MiB).
	BatchMaxMessages int
	BatchMaxBytes    int
	// MaxInflight bounds the entries proposed but not yet committed
	// (default 4).
	MaxInflight int
	// QueueSize bounds the publishes waiting for a batch (default 16384);
	// past it, Publish waits (backpressure).
	QueueSize int
	// BatchYields is how many times a batch that is not half full lets the
	// other goroutines ready to run go first while other entries are in
	// flight (default 64; negative: never), so that publishes on their way
	// join it. A batch with no other entry in flight is proposed at once.
	BatchYields int
	// Retention is this hub's retention configuration. The leader
	// replicates it when it differs from the stored rules, so every hub
	// should be given the same rules. Nil keeps the stored rules (or the
	// built-in defaults).
	Retention []log.Rule
	// Namespaces, when not nil, is this hub's namespace configuration (its
	// config file's): the leader replicates it when it differs from the
	// cluster's, so every hub should be given the same, or none (nil: the
	// namespaces are set with PUT /v1/namespaces alone).
	Namespaces []wire.Namespace
	// MaxIDs is the most publish ids the hubs hold for idempotency, across
	// channels (default log.DefaultMaxIDs; negative: no limit); past it a
	// publish with a new id is refused, unavailable. The leader replicates
	// it when it differs from the stored setting, so every hub should be
	// given the same.
	MaxIDs int64
	// SweepInterval is how often the leader applies age retention to quiet
	// channels (default 1m).
	SweepInterval time.Duration
	// ApplyTimeout bounds a publish waiting for commit (default 10s), and
	// the attempts (forwards, retries on a new leader) of a publish whose
	// caller set no deadline.
	ApplyTimeout time.Duration
	// Stream, when set, serves GET /v1/stream; give the same Stream to
	// raft.Config.Observer so that it sees every applied entry.
	Stream *Stream
	// Client is used to forward to the leader (default: a client with a
	// 15s timeout, and TLS as its TLS configuration).
	Client *http.Client
	// TLS, when set, makes this hub call the other hubs' APIs (forwarding
	// to the leader, cluster status) over https, verifying their
	// certificates with it: every hub of a cluster serves its API the
	// same way.
	TLS *tls.Config
	// BusSettle is how long after this hub began to lead, or after a
	// gateway's bus session ended, that a missing worker or gateway is
	// taken for one still dialing (unavailable: retry) rather than for
	// none (not_found); default 5s (peers dial again within about 2s).
	BusSettle time.Duration
	// Secret, when set, is required of every API call but /healthz,
	// /readyz and /metrics, as "Authorization: Bearer <Secret>"; this hub
	// sends it to the others. Every hub and gateway of a cluster shares it.
	Secret string
	// AdminToken, when set, opens the admin view's endpoints
	// (/v1/admin/, read-only) as "Authorization: Bearer <AdminToken>",
	// besides the secret; it opens nothing else. Give every hub the same.
	AdminToken string

	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Node == nil {
		return errors.New("broker: Config.Node is required")
	}
	if c.API == "" {
		return errors.New("broker: Config.API is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setInt(&c.MaxMessageBytes, 64<<10)
	setInt(&c.BatchMaxMessages, 1024)
	setInt(&c.BatchMaxBytes, 1<<20)
	setInt(&c.MaxInflight, 4)
	setInt(&c.QueueSize, 16384)
	if c.BatchYields == 0 {
		c.BatchYields = 64
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Minute
	}
	if c.MaxIDs == 0 {
		c.MaxIDs = log.DefaultMaxIDs
	}
	if c.BusSettle <= 0 {
		c.BusSettle = 5 * time.Second
	}
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.Client == nil {
		c.Client = &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, TLSClientConfig: c.TLS},
		}
	}
	return nil
}

// Service is the hub service.
type Service struct {
	cfg     Config
	node    *raft.Node
	log     *log.Log
	logger  *slog.Logger
	metrics *metrics
	client  *hubapi.Client // to other hubs
	router  *router        // requests to workers (bus sessions), on the leader
	fwd     *forwarder     // PublishAsync's publishes to the leader (forwarder.go)
	nsCache namespaceCache // the namespaces, as applied (namespaces.go)
	nsMu    sync.Mutex     // one SetNamespaces at a time, on the leader

	queue    chan *pending
	inflight chan struct{}
	wg       sync.WaitGroup // batch waiters
	// Every publish that enters queue is answered: once the batcher stops,
	// stopCh is closed, no more enter (qclosed, under qmu) and what is left
	// is answered with ErrClosed (stopQueue).
	qmu      sync.RWMutex
	qclosed  bool
	stopCh   chan struct{}
	stopOnce sync.Once
	closeCh  chan struct{}
	doneCh   chan struct{}
	once     sync.Once
	drainCh  chan struct{}
	started  atomic.Bool // Run began (or Close made sure it never will)
	drain1   sync.Once
}

type pending struct {
	p    raft.Publish
	size int
	done chan outcome                      // Publish waits here
	cb   func(wire.PublishResponse, error) // or PublishAsync's done
}

// finish answers the publish.
func (p *pending) finish(o outcome) {
	if p.cb != nil {
		p.cb(o.res, o.err)
		return
	}
	p.done <- o
}

type outcome struct {
	res wire.PublishResponse
	err error
}

// New creates the service; Run starts its background work.
func New(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:      cfg,
		node:     cfg.Node,
		log:      cfg.Node.Log(),
		logger:   cfg.Logger,
		queue:    make(chan *pending, cfg.QueueSize),
		inflight: make(chan struct{}, cfg.MaxInflight),
		closeCh:  make(chan struct{}),
		doneCh:   make(chan struct{}),
		stopCh:   make(chan struct{}),
		drainCh:  make(chan struct{}),
	}
	s.client = &hubapi.Client{HTTP: cfg.Client, Forwarder: cfg.Node.ID(), Secret: cfg.Secret, TLS: cfg.TLS}
	s.router = newRouter(s)
	s.fwd = newForwarder(s)
	s.metrics = newMetrics(s)
	return s, nil
}

// Run runs the batcher and the leader and membership duties until ctx ends
// or Close is called.
func (s *Service) Run(ctx context.Context) {
	if !s.started.CompareAndSwap(false, true) {
		return // already running, or closed before it ran
	}
	defer close(s.doneCh)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closeCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); s.batch(ctx) }()
	go func() { defer wg.Done(); s.fwd.run(ctx) }()
	go func() { defer wg.Done(); s.duties(ctx) }()
	go func() { defer wg.Done(); s.router.run(ctx) }()
	wg.Wait()
	s.wg.Wait()
}

// Close stops Run and waits for it. Publishes still queued are answered
// with ErrClosed. It is idempotent.
func (s *Service) Close() error {
	s.once.Do(func() { close(s.closeCh) })
	s.Drain()
	if s.started.CompareAndSwap(false, true) {
		// Run never ran, and now never will.
		s.stopQueue()
		s.fwd.close()
		close(s.doneCh)
	}
	<-s.doneCh
	return nil
}

// Drain ends the long-lived commit streams and bus sessions (their peers
// move to another hub), so that an HTTP server shutdown does not wait for
// them. Give it to http.Server.RegisterOnShutdown. It is idempotent.
func (s *Service) Drain() {
	s.drain1.Do(func() {
		close(s.drainCh)
		s.router.close() // bus sessions too: peers find the next leader
	})
}

// Publish stores data (JSON) as the next message of channel and returns its
// offset once a quorum has it on disk. With a non-empty id, a publish
// retried within 10 minutes is stored once and answered with the first
// offset. On a follower, it forwards to the leader.
func (s *Service) Publish(ctx context.Context, channel string, data json.RawMessage, id string) (wire.PublishResponse, error) {
	start := time.Now()
	res, err := s.publish(ctx, channel, data, id)
	s.metrics.observePublish(start, err)
	return res, err
}

func (s *Service) publish(ctx context.Context, channel string, data json.RawMessage, id string) (wire.PublishResponse, error) {
	data, err := s.checkPublish(channel, data, id)
	if err != nil {
		return wire.PublishResponse{}, err
	}
	return s.publishRouted(ctx, wire.PublishRequest{Channel: channel, Data: data, ID: id})
}

// publishLocal queues a checked publish on this hub, the leader, and waits
// for its outcome. A leader whose channel log cannot store (a full disk)
// refuses it at once.
func (s *Service) publishLocal(ctx context.Context, req wire.PublishRequest) (wire.PublishResponse, error) {
	if err := s.storing(); err != nil {
		return wire.PublishResponse{}, err
	}
	p := &pending{p: raft.Publish{Channel: req.Channel, ID: req.ID, Data: req.Data},
		size: len(req.Channel) + len(req.ID) + len(req.Data), done: make(chan outcome, 1)}
	if err := s.enqueue(ctx, p); err != nil {
		return wire.PublishResponse{}, err
	}
	select {
	case o := <-p.done: // every queued publish is answered, at Close too
		return o.res, o.err
	case <-ctx.Done():
		return wire.PublishResponse{}, ctx.Err()
	}
}

// PublishAsync is Publish without waiting: it returns once the publish is
// queued, and done is called once with the outcome, from a goroutine of
// the Service, or before PublishAsync returns if the publish is refused at
// once (bad input, a closed Service). done must not block, but may publish
// again; it must not call Close (which waits for it). On the leader,
// publishes queued one after another are stored in that order. On a
// follower, they are forwarded to the leader in batches by a few lanes,
// one request in flight each (forwarder.go), with no goroutine per
// publish: publishes of one channel queued one after another keep their
// order there too. A caller that makes its calls one after another keeps
// the order of its messages in a channel, but for one that meets a change
// of leader, which is forwarded to the new leader and may land after later
// ones. ctx bounds the wait for room in the queue and, on a follower, the
// forwarding; a publish already queued is not withdrawn when ctx ends.
// Past forwardQueueFactor*QueueSize publishes waiting to be forwarded, a
// follower refuses more with ErrBusy (unavailable).
//
// A publisher with a window (several publishes in flight, as NATS
// JetStream's PublishAsync) needs no goroutine per publish this way.
func (s *Service) PublishAsync(ctx context.Context, channel string, data json.RawMessage, id string, done func(wire.PublishResponse, error)) {
	s.publishAsync(ctx, channel, data, id, false, done)
}

// publishAsync is PublishAsync; decoded says that data comes out of a JSON
// document the caller decoded, so that it is valid JSON already.
func (s *Service) publishAsync(ctx context.Context, channel string, data json.RawMessage, id string, decoded bool, done func(wire.PublishResponse, error)) {
	start := time.Now()
	finish := func(res wire.PublishResponse, err error) {
		s.metrics.observePublish(start, err)
		done(res, err)
	}
	data, err := s.checkData(channel, data, id, decoded)
	if err != nil {
		finish(wire.PublishResponse{}, err)
		return
	}
	it := s.newItem(ctx, wire.PublishRequest{Channel: channel, Data: data, ID: id}, finish)
	switch {
	case s.node.IsLeader():
		s.queueItem(it)
	case ctx.Value(forwardedKey{}) != nil:
		// One hop only: the hub that forwarded it answers the client.
		finish(wire.PublishResponse{}, fmt.Errorf("%w: this hub is not the leader either", raft.ErrNotLeader))
	default:
		s.fwd.add(it)
	}
}

// queueLocal queues a checked publish for this hub's next Raft entry,
// waiting for room while ctx lasts; cb gets its outcome unless queueLocal
// returns an error: a leader whose channel log cannot store (a full disk)
// refuses it at once.
func (s *Service) queueLocal(ctx context.Context, channel string, data json.RawMessage, id string, cb func(wire.PublishResponse, error)) error {
	if err := s.storing(); err != nil {
		return err
	}
	p := &pending{p: raft.Publish{Channel: channel, ID: id, Data: data}, size: len(channel) + len(id) + len(data), cb: cb}
	return s.enqueue(ctx, p)
}

// enqueue puts p in the batcher's queue, waiting for room while ctx lasts.
// Once it returns nil, p will be answered.
func (s *Service) enqueue(ctx context.Context, p *pending) error {
	s.qmu.RLock()
	defer s.qmu.RUnlock()
	if s.qclosed {
		return ErrClosed
	}
	select {
	case s.queue <- p:
		return nil
	default: // full: wait
	}
	select {
	case s.queue <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopCh:
		return ErrClosed
	}
}

// stopQueue closes the queue and answers what is in it with ErrClosed. The
// batcher calls it when it stops (Close, if Run never ran).
func (s *Service) stopQueue() {
	s.stopOnce.Do(func() {
		close(s.stopCh) // enqueue stops waiting for room...
		s.qmu.Lock()    // ...so this waits only for sends under way
		s.qclosed = true
		s.qmu.Unlock()
		s.drain(ErrClosed)
	})
}

// storing returns an error when this hub, as leader, must not take
// publishes because its channel log cannot store what is committed: its
// disk is full (log.ErrNoSpace; the FSM waits for space, see raft/fsm.go).
// Entries proposed then would be committed but not applied here, and their
// publishers would wait out their timeout; refused now, they can wait and
// retry. It is etcd's NOSPACE alarm, kept by each hub for itself: it clears
// when an Update commits again. Damage found in the log (log.ErrCorrupt)
// does not stop publishes: new chunks are written whole and checked.
func (s *Service) storing() error {
	if f := s.log.Fault(); errors.Is(f, log.ErrNoSpace) {
		return fmt.Errorf("%w: this hub cannot store messages: %w", ErrStorage, f)
	}
	return nil
}

// checkPublish validates a publish and returns its data compacted to one
// line (gateways frame messages by newlines).
func (s *Service) checkPublish(channel string, data json.RawMessage, id string) (json.RawMessage, error) {
	return s.checkData(channel, data, id, false)
}

// checkData is checkPublish; with decoded, data is known to be valid JSON
// (a json.RawMessage the caller's decoder filled), and is not checked
// again.
func (s *Service) checkData(channel string, data json.RawMessage, id string, decoded bool) (json.RawMessage, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if len(id) > MaxIDLen {
		return nil, fmt.Errorf("%w: id is %d bytes, longer than %d", ErrBadRequest, len(id), MaxIDLen)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: data is required", ErrBadRequest)
	}
	if len(data) > s.cfg.MaxMessageBytes {
		return nil, fmt.Errorf("%w: data is %d bytes, the limit is %d", ErrTooLarge, len(data), s.cfg.MaxMessageBytes)
	}
	if ns := s.namespaceOf(channel); ns != nil && ns.MaxMessageBytes > 0 && len(data) > ns.MaxMessageBytes {
		return nil, fmt.Errorf("%w: data is %d bytes, the limit of namespace %s is %d", ErrTooLarge, len(data), ns.Name, ns.MaxMessageBytes)
	}
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		if !decoded && !wire.Valid(data) {
			return nil, fmt.Errorf("%w: data is not valid JSON", ErrBadRequest)
		}
		return data, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, fmt.Errorf("%w: data is not valid JSON", ErrBadRequest)
	}
	return buf.Bytes(), nil
}

// batch takes publishes off the queue and proposes them as entries of up to
// BatchMaxMessages/BatchMaxBytes, with at most MaxInflight entries in
// flight. While the slots are full the queue fills, so batches grow with
// load: that is the group commit.
func (s *Service) batch(ctx context.Context) {
	var carry *pending
	for {
		if ctx.Err() != nil { // select would pick a ready queue at random
			s.stopQueue()
			if carry != nil {
				carry.finish(outcome{err: ErrClosed})
			}
			return
		}
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-s.queue:
			case <-ctx.Done():
				s.stopQueue()
				return
			}
		}
		select {
		case s.inflight <- struct{}{}:
		case <-ctx.Done():
			// The queue first: an answer may publish again (PublishAsync).
			s.stopQueue()
			first.finish(outcome{err: ErrClosed})
			return
		}
		batch := []*pending{first}
		size := first.size
		// While other entries are in flight, an entry proposed now would
		// wait behind them anyway: let the goroutines ready to run go first
		// (those answering the entry just applied, and their publishers
		// publishing again), for the entry to fill to half its size. With
		// nothing else to run, or alone in flight, it goes at once.
		yields := 0
		if len(s.inflight) <= 1 {
			yields = s.cfg.BatchYields
		}
	fill:
		for len(batch) < s.cfg.BatchMaxMessages {
			var p *pending
			select {
			case p = <-s.queue:
			default:
				if yields >= s.cfg.BatchYields || len(batch) >= s.cfg.BatchMaxMessages/2 {
					break fill
				}
				yields++
				runtime.Gosched()
				continue
			}
			if size+p.size > s.cfg.BatchMaxBytes {
				carry = p
				break fill
			}
			batch = append(batch, p)
			size += p.size
		}
		s.propose(batch, size)
	}
}

func (s *Service) propose(batch []*pending, size int) {
	cmd := &raft.Command{Publish: make([]raft.Publish, len(batch))}
	for i, p := range batch {
		cmd.Publish[i] = p.p
	}
	s.metrics.observeBatch(len(batch), size)
	prop := s.node.Propose(cmd)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		resp, err := prop.Wait()
		// The slot first: an answer may publish again and wait for room.
		<-s.inflight
		for i, p := range batch {
			if err != nil {
				p.finish(outcome{err: err})
				continue
			}
			r := resp.Results[i]
			if errors.Is(r.Err, log.ErrTooManyIDs) { // unavailable, not the client's fault
				p.finish(outcome{err: r.Err})
				continue
			}
			if r.Err != nil {
				p.finish(outcome{err: fmt.Errorf("%w: %v", ErrBadRequest, r.Err)})
				continue
			}
			p.finish(outcome{res: wire.PublishResponse{Channel: r.Channel, Offset: r.Offset, Epoch: r.Epoch, Duplicate: r.Duplicate}})
		}
	}()
}

func (s *Service) drain(err error) {
	for {
		select {
		case p := <-s.queue:
			p.finish(outcome{err: err})
		default:
			return
		}
	}
}

// Read returns up to limit messages of channel from offset from, from this
// hub's log.
func (s *Service) Read(channel string, from uint64, limit int) (wire.MessagesResponse, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return wire.MessagesResponse{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	info, msgs, err := s.log.Read(channel, from, limit)
	if err != nil {
		return wire.MessagesResponse{}, err
	}
	out := wire.MessagesResponse{Epoch: info.Epoch, First: info.First, Next: info.Next, Messages: make([]wire.Message, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = wire.Message{Offset: m.Offset, Data: m.Data, Time: m.Time}
	}
	return out, nil
}

// History answers a history read (see wire.HistoryQuery): up to q.Limit
// messages of the window it selects, newest first with q.Reverse, and the
// channel's epoch, first and next offsets. A reverse read returns the
// newest messages of the window even when their data is over
// log.MaxReadBytes in all; a forward one stops there, as Read does, and
// the caller pages on.
func (s *Service) History(channel string, q wire.HistoryQuery) (wire.MessagesResponse, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return wire.MessagesResponse{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	from := max(q.From, 1)
	if !q.SinceTime.IsZero() {
		off, _, err := s.log.OffsetAtTime(channel, q.SinceTime)
		if err != nil {
			return wire.MessagesResponse{}, err
		}
		from = max(from, off)
	}
	if !q.Reverse {
		res, err := s.Read(channel, from, q.Limit)
		if err == nil && q.Before != 0 {
			n := 0
			for n < len(res.Messages) && res.Messages[n].Offset < q.Before {
				n++
			}
			res.Messages = res.Messages[:n]
		}
		return res, err
	}
	info, err := s.log.Info(channel)
	if err != nil {
		return wire.MessagesResponse{}, err
	}
	end := info.Next // the window is [from, end)
	if q.Before != 0 {
		end = min(end, q.Before)
	}
	from = max(from, info.First)
	if end > from && uint64(q.Limit) < end-from {
		from = end - uint64(q.Limit)
	}
	out := wire.MessagesResponse{Epoch: info.Epoch, First: info.First, Next: info.Next, Messages: []wire.Message{}}
	// Pages forward from from to end (a page stops at MaxReadBytes).
	for pos := from; pos < end && q.Limit > 0; {
		res, err := s.Read(channel, pos, int(min(end-pos, uint64(q.Limit))))
		if err != nil {
			return wire.MessagesResponse{}, err
		}
		if res.Epoch != info.Epoch {
			break // deleted meanwhile: what was read of the first epoch
		}
		out.First, out.Next = res.First, res.Next
		n := 0
		for n < len(res.Messages) && res.Messages[n].Offset < end {
			n++
		}
		if n == 0 {
			break // trimmed meanwhile up to end
		}
		out.Messages = append(out.Messages, res.Messages[:n]...)
		pos = res.Messages[n-1].Offset + 1
	}
	slices.Reverse(out.Messages)
	return out, nil
}

// ReadApplied is Read, and also returns the Raft index this hub had
// applied when it read: the answer reflects at least every entry up to it.
func (s *Service) ReadApplied(channel string, from uint64, limit int) (wire.MessagesResponse, uint64, error) {
	applied := s.log.Applied()
	res, err := s.Read(channel, from, limit)
	return res, applied, err
}

// nodeMeta is what the replicated state remembers of each hub.
type nodeMeta struct {
	Raft string `json:"raft"`
	API  string `json:"api"`
}

func metaKey(id string) string { return "node/" + id }

func (s *Service) meta(id string) (nodeMeta, bool) {
	raw := s.log.Get(metaKey(id))
	if raw == nil {
		return nodeMeta{}, false
	}
	var m nodeMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nodeMeta{}, false
	}
	return m, true
}

// leaderAPI returns the leader's API address, from the replicated metadata.
func (s *Service) leaderAPI() (string, error) {
	id, _ := s.node.Leader()
	return s.apiOf(id)
}

// apiOf returns the API address of hub id, the leader, from the replicated
// metadata.
func (s *Service) apiOf(id string) (string, error) {
	if id == "" {
		return "", ErrNoLeader
	}
	if id == s.node.ID() {
		return s.cfg.API, nil
	}
	m, ok := s.meta(id)
	if !ok || m.API == "" {
		return "", fmt.Errorf("%w: leader %s has not registered its API address yet", ErrNoLeader, id)
	}
	return m.API, nil
}

// duties keeps this hub registered in the replicated metadata and, while it
// leads, replicates the retention rules and sweeps quiet channels.
// transferRetry is how often a leader whose disk is full tries to hand the
// lead over.
const transferRetry = 5 * time.Second

func (s *Service) duties(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		leading      bool
		lastSweep    time.Time
		lastTransfer time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !s.node.IsLeader() {
			leading = false
			s.register(ctx)
			continue
		}
		if f := s.log.Fault(); errors.Is(f, log.ErrNoSpace) {
			// A leader that cannot apply refuses every publish (storing):
			// hand the lead to a hub that can, every few seconds while it
			// lasts (there may be none: a cluster of one, all disks full).
			if time.Since(lastTransfer) >= transferRetry {
				lastTransfer = time.Now()
				err := s.node.TransferLeadership()
				s.logger.Warn("channel log cannot store for want of disk space: handing leadership over", "err", err)
			}
			continue
		}
		if !leading {
			// New leader: make sure everything committed before is
			// applied here before acting on the state.
			if err := s.node.Barrier(5 * time.Second); err != nil {
				s.logger.Warn("barrier after election failed", "err", err)
				continue
			}
			// Raft's own entries (the election's no-op, barriers) never
			// reach the channel log, whose applied index would then stay
			// below the commit index until the next publish, and Ready
			// would say "catching up" on every hub: write one entry now.
			if err := s.putMeta(s.node.ID(), nodeMeta{Raft: s.node.Addr(), API: s.cfg.API}); err != nil {
				s.logger.Warn("register after election failed", "err", err)
				continue
			}
			leading, lastSweep = true, time.Now()
		}
		s.register(ctx)
		s.replicateNamespaces(ctx)
		s.replicateRetention()
		s.replicateMaxIDs()
		if time.Since(lastSweep) >= s.cfg.SweepInterval {
			lastSweep = time.Now()
			if _, err := s.node.Apply(&raft.Command{Sweep: true}); err != nil {
				s.logger.Warn("retention sweep failed", "err", err)
			}
			s.sweepStreams() // dstream.go
		}
	}
}

// register records this hub's addresses in the replicated metadata: on the
// leader directly, on a follower by joining through the leader with the Raft
// address the configuration has for it, so that the join changes nothing
// but the metadata. (Its own view, Node.Addr, may be spelt otherwise: a
// resolved --raft host name, while --peers or --join gave the name; a join
// at another address is refused.)
func (s *Service) register(ctx context.Context) {
	if s.node.IsLeader() {
		want := nodeMeta{Raft: s.node.Addr(), API: s.cfg.API}
		if m, ok := s.meta(s.node.ID()); ok && m == want {
			return
		}
		if err := s.putMeta(s.node.ID(), want); err != nil {
			s.logger.Warn("register self failed", "err", err)
		}
		return
	}
	// A hub that was removed must not add itself back.
	servers, err := s.node.Servers()
	if err != nil {
		return
	}
	i := slices.IndexFunc(servers, func(sv raft.Server) bool { return sv.ID == s.node.ID() })
	if i < 0 {
		return
	}
	want := nodeMeta{Raft: servers[i].Addr, API: s.cfg.API}
	if m, ok := s.meta(s.node.ID()); ok && m == want {
		return
	}
	api, err := s.leaderAPI()
	if err != nil {
		return // try again on the next tick
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Update: were this hub removed meanwhile (its meta is cleared first,
	// and it may see that before the removal), the leader does not add
	// it back.
	req := wire.JoinRequest{ID: s.node.ID(), Raft: want.Raft, API: want.API, Update: true}
	if err := s.post(ctx, api, "/v1/cluster/join", req, nil); err != nil {
		s.logger.Debug("register through leader failed", "leader", api, "err", err)
	}
}

func (s *Service) putMeta(id string, m nodeMeta) error {
	var v []byte
	if m != (nodeMeta{}) {
		v, _ = json.Marshal(m)
	}
	resp, err := s.node.Apply(&raft.Command{Put: []raft.KV{{Key: metaKey(id), Value: v}}})
	if err == nil && resp.Err != nil {
		err = fmt.Errorf("%w: %v", ErrBadRequest, resp.Err)
	}
	return err
}

func (s *Service) replicateRetention() {
	if s.cfg.Retention == nil {
		return
	}
	cur, err := s.log.Retention()
	if err != nil {
		return
	}
	ns, _ := s.namespaces()
	want := withNamespaceRetention(ns.Namespaces, s.cfg.Retention)
	if slices.Equal(cur, want) {
		return
	}
	if _, err := s.node.Apply(&raft.Command{Retention: want}); err != nil {
		s.logger.Warn("replicate retention failed", "err", err)
		return
	}
	s.logger.Info("replicated retention rules", "rules", len(want))
}

// replicateMaxIDs proposes this hub's MaxIDs when the stored one differs.
func (s *Service) replicateMaxIDs() {
	want := uint64(max(s.cfg.MaxIDs, 0)) // negative: 0, no limit
	if s.log.MaxIDs() == want {
		return
	}
	if _, err := s.node.Apply(&raft.Command{MaxIDs: &want}); err != nil {
		s.logger.Warn("replicate max ids failed", "err", err)
		return
	}
	s.logger.Info("replicated the most publish ids held", "max_ids", want)
}

// Join adds a hub to the cluster. Joining again with the same Raft address
// succeeds (and updates the API address); an id that is a member at another
// Raft address is refused (raft.ErrIDInUse, 409): re-addressing a running
// member would cut it off. With Update it only records a member's
// addresses, and a hub that is not one is refused (404). On a follower it
// forwards to the leader.
func (s *Service) Join(ctx context.Context, req wire.JoinRequest) error {
	if err := checkJoin(req); err != nil {
		return err
	}
	if !s.node.IsLeader() {
		api, err := s.leaderAPI()
		if err != nil {
			return err
		}
		return s.post(ctx, api, "/v1/cluster/join", req, nil)
	}
	if req.Update {
		servers, err := s.node.Servers()
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(servers, func(sv raft.Server) bool { return sv.ID == req.ID && sv.Addr == req.Raft }) {
			return fmt.Errorf("%w: hub %s is not a member at %s (removed?): not added back", errNotFound, req.ID, req.Raft)
		}
	} else if err := s.node.AddVoter(req.ID, req.Raft, 10*time.Second); err != nil {
		if errors.Is(err, raft.ErrIDInUse) {
			return fmt.Errorf("%w; to replace hub %s on purpose, remove it first "+
				"(POST /v1/cluster/remove {\"id\":%q}, or comet cluster remove --api ADDR %s), then join", err, req.ID, req.ID, req.ID)
		}
		return err
	}
	if m, ok := s.meta(req.ID); ok && m == (nodeMeta{Raft: req.Raft, API: req.API}) {
		return nil
	}
	return s.putMeta(req.ID, nodeMeta{Raft: req.Raft, API: req.API})
}

// MaxHubIDLen is the longest hub id.
const MaxHubIDLen = 64

// checkJoin validates a join request: an id of 1-64 bytes of
// [A-Za-z0-9_.-] and host:port addresses.
func checkJoin(req wire.JoinRequest) error {
	if err := CheckHubID(req.ID); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	for name, addr := range map[string]string{"raft": req.Raft, "api": req.API} {
		host, port, err := net.SplitHostPort(addr)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || host == "" || len(addr) > 255 {
			return fmt.Errorf("%w: %s address %q is not host:port", ErrBadRequest, name, addr)
		}
	}
	return nil
}

// CheckHubID returns an error unless id is a valid hub id: 1-64 bytes of
// [A-Za-z0-9_.-].
func CheckHubID(id string) error {
	if id == "" || len(id) > MaxHubIDLen || strings.Trim(id, idChars) != "" {
		return fmt.Errorf("hub id %.80q must be 1-%d bytes of [A-Za-z0-9_.-]", id, MaxHubIDLen)
	}
	return nil
}

const idChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

// Remove removes a hub from the cluster. On a follower it forwards to the
// leader.
func (s *Service) Remove(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: id is required", ErrBadRequest)
	}
	if !s.node.IsLeader() {
		api, err := s.leaderAPI()
		if err != nil {
			return err
		}
		return s.post(ctx, api, "/v1/cluster/remove", wire.RemoveRequest{ID: id}, nil)
	}
	servers, err := s.node.Servers()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(servers, func(sv raft.Server) bool { return sv.ID == id }) {
		return fmt.Errorf("%w: no hub %q in the cluster", errNotFound, id)
	}
	// Forget its addresses first: removing the leader itself ends its
	// leadership, after which it could not write. Should the removal
	// fail, a live hub registers itself again.
	if err := s.putMeta(id, nodeMeta{}); err != nil {
		return err
	}
	err = s.node.RemoveServer(id, 10*time.Second)
	if err != nil && id == s.node.ID() && (errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrUnknownOutcome) || errors.Is(err, raft.ErrClosed)) {
		// The leader removed itself: it steps down as the change commits.
		if servers, serr := s.node.Servers(); serr == nil && !slices.ContainsFunc(servers, func(sv raft.Server) bool { return sv.ID == id }) {
			return nil
		}
	}
	return err
}

var errNotFound = errors.New("not found")
