package raft

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/internal/durable"
	"github.com/comethq/comet/log"
	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

var (
	// ErrNotLeader is returned by calls that only the leader can serve.
	ErrNotLeader = errors.New("not the leader")
	// ErrUnknownOutcome is returned when leadership was lost while an entry
	// was in flight: it may or may not commit. Retry with the same id.
	ErrUnknownOutcome = errors.New("leadership lost; the entry may or may not have been committed")
	// ErrClosed is returned by calls on a closed Node.
	ErrClosed = errors.New("raft node is closed")
	// ErrAddrInUse is returned by AddVoter for an address another member
	// has.
	ErrAddrInUse = errors.New("address in use by another member")
	// ErrIDInUse is returned by AddVoter for an id that is already a
	// member at another address: changing it would cut that member off.
	ErrIDInUse = errors.New("id is already a member at another address")
	// ErrTimeout is returned when Raft did not take an entry in time (its
	// queue stayed full: hashicorp/raft's ErrEnqueueTimeout). Raft never
	// saw the entry, so it was certainly not stored.
	ErrTimeout = errors.New("raft did not take the entry in time; it was not stored")
)

// Peer is a member of the initial cluster.
type Peer struct {
	ID   string
	Addr string
}

// Config configures a Node.
type Config struct {
	// ID is this hub's unique, stable name. Required.
	ID string
	// Dir holds the Raft log and stable store (raft-wal, in Dir/wal) and
	// snapshots. Required.
	Dir string
	// Addr is the Raft address to bind and advertise (host:port); port 0
	// picks a free port (Node.Addr tells which). Required unless Transport
	// is set.
	Addr string
	// Peers bootstraps a new cluster when Dir holds no Raft state yet; the
	// same list must be given to every initial hub. Ignored afterwards, so
	// repeating it on restart is safe. Empty: wait to be added (join).
	Peers []Peer
	// Log is the channel store the FSM applies to. Required; the caller
	// owns it and closes it after the Node.
	Log *log.Log
	// Observer hears about applied entries; optional.
	Observer Observer
	// Transport replaces the TCP transport (tests use hraft.NewInmemTransport).
	Transport hraft.Transport
	// Single makes a one-node cluster that talks to no other process (comet
	// standalone): an in-memory transport at address Addr (default the ID),
	// no port; Peers defaults to this node alone.
	Single bool

	// Timeouts; defaults are for a LAN: 1s heartbeat and election
	// timeout and a 1s leader lease (hashicorp/raft's 500ms lease makes a
	// leader on a busy 2-core machine step down needlessly; a longer lease
	// does not slow failover, which the followers' heartbeat timeout
	// decides).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotInterval is how often Raft checks whether to snapshot
	// (default 30s); SnapshotThreshold the number of new entries that
	// triggers one (default 4096); TrailingLogs the entries kept after a
	// snapshot for slow followers (default 2048). Together they bound the
	// Raft log on disk.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots are kept on disk (default 2).
	SnapshotRetain int
	// Secret, when set, must be proven first on every Raft connection
	// (see raftProof): hubs without it cannot take part. Every hub of a
	// cluster shares it.
	Secret string
	// TLS, when set, makes every Raft connection TLS, on both sides: it
	// must hold this hub's certificate for servers (Certificates or
	// GetCertificate) and, when ClientAuth asks peers for a certificate,
	// for clients too (GetClientCertificate), and RootCAs (nil: the
	// system's) to verify the hubs this one dials, by the host of their
	// Raft address. ClientAuth with ClientCAs makes it mutual. With Secret
	// as well, the proof travels inside TLS.
	TLS *tls.Config
	// NoSync skips fsync of the Raft log. Tests and benchmarks only.
	NoSync bool

	Logger *slog.Logger

	segmentSize int // size of each raft-wal segment file; tests set it small
}

func (c *Config) setDefaults() error {
	if c.ID == "" {
		return errors.New("raft: Config.ID is required")
	}
	if c.Dir == "" {
		return errors.New("raft: Config.Dir is required")
	}
	if c.Log == nil {
		return errors.New("raft: Config.Log is required")
	}
	if c.Single {
		if c.Addr == "" {
			c.Addr = c.ID
		}
		if len(c.Peers) == 0 {
			c.Peers = []Peer{{ID: c.ID, Addr: c.Addr}}
		}
		if c.Transport == nil {
			_, c.Transport = hraft.NewInmemTransport(hraft.ServerAddress(c.Addr))
		}
	}
	if c.Addr == "" && c.Transport == nil {
		return errors.New("raft: Config.Addr is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.ElectionTimeout, time.Second)
	def(&c.LeaderLeaseTimeout, min(time.Second, c.HeartbeatTimeout))
	def(&c.SnapshotInterval, 30*time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 4096
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 2048
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	return nil
}

// Node is one member of the hub Raft group.
type Node struct {
	cfg    Config
	logger *slog.Logger

	raft      *hraft.Raft
	trans     hraft.Transport
	closeable *hraft.NetworkTransport // the TCP transport, when ours
	store     *guardedStore
	fsm       *fsm

	leaderChanges atomic.Uint64
	changedMu     sync.Mutex
	changed       chan struct{}  // closed at the next leader change (LeaderChanged)
	history       []LeaderChange // the last leader changes, oldest first (LeaderHistory), under changedMu
	obsCh         chan hraft.Observation
	observer      *hraft.Observer
	closeCh       chan struct{}
	doneCh        chan struct{}
	closeOnce     sync.Once
	closeErr      error

	// applyMu is held for reading while an entry is handed to Raft, and
	// for writing by Close to set closing and so stop that (see Close).
	applyMu sync.RWMutex
	closing bool
}

// New starts a Raft node over cfg.Log. When Dir holds no Raft state and
// Peers is not empty, it bootstraps the cluster with Peers.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, logger: cfg.Logger, closeCh: make(chan struct{}), doneCh: make(chan struct{}),
		changed: make(chan struct{})}
	if err := durable.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft: data directory: %w", err)
	}
	hlog := newHclog(cfg.Logger)

	var err error
	segSize := cfg.segmentSize
	if segSize == 0 {
		segSize = walSegmentSize
	}
	store, err := openLogStore(cfg.Dir, segSize, cfg.NoSync, hlog.Named("wal"))
	if err != nil {
		return nil, err
	}
	n.store = newGuardedStore(store, cfg.Logger)
	if err := checkSnapshots(cfg.Dir, cfg.Logger); err != nil {
		n.store.Close()
		return nil, err
	}
	fileSnaps, err := hraft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hlog.Named("snapshot"))
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("raft: snapshot store: %w", err)
	}
	snaps := namedSnapshots{FileSnapshotStore: fileSnaps, dir: cfg.Dir, logger: cfg.Logger}
	// wal/ (synced into Dir by openLogStore) and snapshots/ may have just
	// been created: sync Dir before the term and vote stored under it count
	// for anything (bootstrap, the first vote), or a power cut could take
	// them with it.
	if !cfg.NoSync {
		if err := durable.SyncDir(cfg.Dir); err != nil {
			n.store.Close()
			return nil, fmt.Errorf("raft: %w", err)
		}
	}

	n.trans = cfg.Transport
	if n.trans == nil {
		addr, err := net.ResolveTCPAddr("tcp", cfg.Addr)
		if err != nil {
			n.store.Close()
			return nil, fmt.Errorf("raft: address %q: %w", cfg.Addr, err)
		}
		var advertise net.Addr = addr
		if addr.Port == 0 {
			advertise = nil // advertise the port the listener got
		}
		var tcp *hraft.NetworkTransport
		if cfg.Secret != "" || cfg.TLS != nil {
			var stream *secretStream
			stream, err = listenSecret(cfg.Addr, advertise, cfg.Secret, cfg.TLS, cfg.Logger.With("component", "raft-transport"))
			if err == nil {
				tcp = hraft.NewNetworkTransportWithConfig(transportConfig(stream, hlog))
			}
		} else {
			tcp, err = hraft.NewTCPTransportWithConfig(cfg.Addr, advertise, transportConfig(nil, hlog))
		}
		if err != nil {
			n.store.Close()
			return nil, fmt.Errorf("raft: listen on %s: %w", cfg.Addr, err)
		}
		n.trans, n.closeable = tcp, tcp
	}
	n.trans = withoutHeartbeatFastPath(n.trans)

	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	// The log is durable on its own and records its applied index, so a
	// restart does not need to restore the last snapshot into it. Unless
	// the log is behind that snapshot: a snapshot from the leader was saved
	// but never restored into the log (a crash or an error in between).
	// Raft starts after the snapshot's index all the same, so without a
	// restore the log would miss those entries and diverge.
	rc.NoSnapshotRestoreOnStart = !n.logBehindSnapshot(snaps)

	existing, err := hraft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		n.closeTransport()
		n.store.Close()
		return nil, fmt.Errorf("raft: read state: %w", err)
	}
	if !existing && len(cfg.Peers) > 0 {
		conf := hraft.Configuration{}
		self := false
		for _, p := range cfg.Peers {
			if _, port, _ := net.SplitHostPort(p.Addr); p.ID == cfg.ID && (p.Addr != cfg.Addr || port == "0") {
				// The real port for ":0". An address equal to Addr stays
				// as given, spelt as in every hub's list (a host name is
				// not resolved), so that all bootstrap the same
				// configuration.
				p.Addr = string(n.trans.LocalAddr())
			}
			conf.Servers = append(conf.Servers, hraft.Server{
				Suffrage: hraft.Voter, ID: hraft.ServerID(p.ID), Address: hraft.ServerAddress(p.Addr)})
			self = self || p.ID == cfg.ID
		}
		if !self {
			n.closeTransport()
			n.store.Close()
			return nil, fmt.Errorf("raft: id %q is not in the peer list", cfg.ID)
		}
		if err := hraft.BootstrapCluster(rc, n.store, n.store, snaps, n.trans, conf); err != nil {
			n.closeTransport()
			n.store.Close()
			return nil, fmt.Errorf("raft: bootstrap: %w", err)
		}
		n.logger.Info("bootstrapped cluster", "peers", len(cfg.Peers))
	}

	f := &fsm{log: cfg.Log, observer: cfg.Observer, logger: cfg.Logger}
	n.fsm = f
	// The newest entries are read again right after they are stored: by
	// the leader's replication to each follower and by a follower's apply.
	// A small cache serves them from memory (at most logCacheEntries times
	// BatchMaxBytes, 64 MiB with the defaults).
	logs, err := hraft.NewLogCache(logCacheEntries, n.store)
	if err != nil {
		n.closeTransport()
		n.store.Close()
		return nil, fmt.Errorf("raft: log cache: %w", err)
	}
	n.raft, err = hraft.NewRaft(rc, f, logs, n.store, snaps, n.trans)
	if err != nil {
		n.closeTransport()
		n.store.Close()
		return nil, fmt.Errorf("raft: start: %w", err)
	}
	n.obsCh = make(chan hraft.Observation, 16)
	n.observer = hraft.NewObserver(n.obsCh, false, func(o *hraft.Observation) bool {
		_, ok := o.Data.(hraft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	go n.watch()
	return n, nil
}

// logBehindSnapshot reports whether the newest snapshot holds entries the
// channel log lacks. A snapshot's Raft index also counts entries that never
// reach the log (no-ops, barriers), so the applied index recorded inside
// the snapshot file is compared; if it cannot be read, the Raft index is.
func (n *Node) logBehindSnapshot(snaps hraft.SnapshotStore) bool {
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return false
	}
	have := n.cfg.Log.Applied()
	want := metas[0].Index
	// FileSnapshotStore keeps a snapshot in snapshots/ID/state.bin.
	path := filepath.Join(n.cfg.Dir, snapshotsDir, metas[0].ID, snapState)
	if idx, err := log.SnapshotApplied(path); err == nil {
		want = idx
	} else {
		n.logger.Warn("cannot read the snapshot's applied index; comparing Raft indexes", "err", err)
	}
	if want <= have {
		return false
	}
	n.logger.Warn("channel log is behind the last snapshot; restoring it", "applied", have, "snapshot", want)
	return true
}

// watch counts leader changes, and signals them to LeaderChanged's
// callers, until Close.
func (n *Node) watch() {
	defer close(n.doneCh)
	for {
		select {
		case <-n.closeCh:
			n.signalChange() // nothing changes any more: no one waits
			return
		case o := <-n.obsCh:
			lo := o.Data.(hraft.LeaderObservation)
			n.leaderChanges.Add(1)
			n.record(LeaderChange{Time: time.Now().UTC(), Term: n.raft.CurrentTerm(), Leader: string(lo.LeaderID)})
			n.signalChange()
			n.logger.Info("leader changed", "leader", string(lo.LeaderID), "addr", string(lo.LeaderAddr))
		}
	}
}

// LeaderChange is a change of leader this node observed: at Time, in Term
// (this node's term when it heard of it), Leader became leader; "" when
// the leader was lost and an election began.
type LeaderChange struct {
	Time   time.Time
	Term   uint64
	Leader string
}

// leaderHistory is how many leader changes LeaderHistory keeps.
const leaderHistory = 20

func (n *Node) record(c LeaderChange) {
	n.changedMu.Lock()
	defer n.changedMu.Unlock()
	if len(n.history) == leaderHistory {
		n.history = append(n.history[:0], n.history[1:]...)
	}
	n.history = append(n.history, c)
}

// LeaderHistory returns the last leader changes this node observed (at
// most 20), newest first. It is kept in memory only: empty after a
// restart until the first election. Raft drops observations it cannot
// hand over at once, so a burst of changes may miss some.
func (n *Node) LeaderHistory() []LeaderChange {
	n.changedMu.Lock()
	defer n.changedMu.Unlock()
	out := make([]LeaderChange, len(n.history))
	for i, c := range n.history {
		out[len(out)-1-i] = c
	}
	return out
}

func (n *Node) signalChange() {
	n.changedMu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.changedMu.Unlock()
}

// LeaderChanged returns a channel closed at the next change of the known
// leader (to another hub, or to none during an election), and at Close.
// Raft drops observations it cannot hand over at once, so a caller that
// must not miss a change also polls Leader, slowly.
func (n *Node) LeaderChanged() <-chan struct{} {
	n.changedMu.Lock()
	defer n.changedMu.Unlock()
	return n.changed
}

func (n *Node) closeTransport() {
	if n.closeable != nil {
		// Close the pooled outgoing connections too: otherwise the peers'
		// handlers for them stay blocked until this process exits.
		n.closeable.CloseStreams()
		n.closeable.Close()
	}
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns this node's Raft address.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// Log returns the channel log the node applies to.
func (n *Node) Log() *log.Log { return n.cfg.Log }

// NewEpoch returns a fresh random epoch string for a Command.
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Proposal is an entry on its way through Raft.
type Proposal struct {
	f   hraft.ApplyFuture
	n   *Node
	err error
}

// Propose hands cmd to Raft without waiting; Wait on the result. Only the
// leader can propose. Time and Epoch are filled in when zero.
func (n *Node) Propose(cmd *Command) *Proposal {
	if cmd.Time.IsZero() {
		cmd.Time = time.Now().UTC()
	}
	if cmd.Epoch == "" {
		cmd.Epoch = NewEpoch()
	}
	n.applyMu.RLock()
	defer n.applyMu.RUnlock()
	if n.closing {
		return &Proposal{err: ErrClosed}
	}
	if n.raft.State() != hraft.Leader {
		return &Proposal{err: ErrNotLeader}
	}
	return &Proposal{f: n.raft.Apply(cmd.Encode(), 10*time.Second), n: n}
}

// wait waits for an Apply or Barrier future. hashicorp/raft never answers
// one that was still in its queue when it shut down (hashicorp/raft#498),
// and Raft also shuts down by itself (a hub removed from the cluster), so
// once Raft is down, wait gives the future a moment and then returns
// ErrUnknownOutcome. The goroutine left on such a future ends with the process.
func (n *Node) wait(f hraft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return n.mapAppendErr(mapErr(err))
		case <-tick.C:
			if n.raft.State() != hraft.Shutdown {
				continue
			}
			select {
			case err := <-done:
				return n.mapAppendErr(mapErr(err))
			case <-time.After(time.Second):
				// It may have committed before Raft stopped.
				return fmt.Errorf("%w (raft shut down before answering)", ErrUnknownOutcome)
			}
		}
	}
}

// Wait blocks until the proposal is committed by a quorum and applied here,
// and returns what applying it gave.
func (p *Proposal) Wait() (*Response, error) {
	if p.err != nil {
		return nil, p.err
	}
	if err := p.n.wait(p.f); err != nil {
		return nil, err
	}
	switch r := p.f.Response().(type) {
	case *Response:
		return r, nil
	case error:
		return nil, r
	default:
		return nil, fmt.Errorf("raft: unexpected response %T", r)
	}
}

// Apply proposes cmd and waits for it.
func (n *Node) Apply(cmd *Command) (*Response, error) { return n.Propose(cmd).Wait() }

func mapErr(err error) error {
	switch {
	case errors.Is(err, hraft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, hraft.ErrLeadershipTransferInProgress):
		// Raft refuses entries during a transfer before appending them.
		return fmt.Errorf("%w (leadership transfer in progress)", ErrNotLeader)
	case errors.Is(err, hraft.ErrLeadershipLost):
		return fmt.Errorf("%w (%v)", ErrUnknownOutcome, err)
	case errors.Is(err, hraft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, hraft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return err
}

// mapAppendErr maps what Raft answers when the leader could not write the
// entry into its own log (a full disk): Raft steps down and answers with
// the log store's error, as a string (hraft.LogCache formats it with %q,
// so errors.Is does not see it). So an answer that is none of Raft's
// errors, while the store's last append failed, is that failure. The
// entry was not stored; ErrUnknownOutcome says no more than a lost
// leadership does, and the caller retries with the same id.
func (n *Node) mapAppendErr(err error) error {
	if err == nil || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrUnknownOutcome) ||
		errors.Is(err, ErrClosed) || errors.Is(err, ErrTimeout) {
		return err
	}
	if aerr := n.store.lastAppendErr(); aerr != nil {
		return fmt.Errorf("%w (%w)", ErrUnknownOutcome, aerr)
	}
	return err
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == hraft.Leader }

// State returns "leader", "follower", "candidate" or "shutdown".
func (n *Node) State() string {
	switch n.raft.State() {
	case hraft.Leader:
		return "leader"
	case hraft.Follower:
		return "follower"
	case hraft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

// Leader returns the leader's id and Raft address, empty when unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// WaitLeader waits until some node is leader, or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Barrier waits until everything committed before it is applied here. Only
// the leader can issue one.
func (n *Node) Barrier(timeout time.Duration) error {
	n.applyMu.RLock()
	if n.closing {
		n.applyMu.RUnlock()
		return ErrClosed
	}
	f := n.raft.Barrier(timeout)
	n.applyMu.RUnlock()
	return n.wait(f)
}

// Indexes reports the Raft term, the commit index, the index stored in the
// channel log (Applied) and the last index of the Raft log.
type Indexes struct {
	Term, Commit, Applied, Last uint64
}

// Indexes returns the node's current indexes.
func (n *Node) Indexes() Indexes {
	term, _ := parseUint(n.raft.Stats()["term"])
	return Indexes{
		Term:   term,
		Commit: n.raft.CommitIndex(),
		// hashicorp/raft counts an entry applied when it hands it to the
		// FSM; the log's own index moves when the entry is stored.
		Applied: n.cfg.Log.Applied(),
		Last:    n.raft.LastIndex(),
	}
}

func parseUint(s string) (uint64, error) {
	var v uint64
	_, err := fmt.Sscan(s, &v)
	return v, err
}

// LeaderChanges returns how many leader changes this node has seen.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// Server is a member of the Raft configuration.
type Server struct {
	ID    string
	Addr  string
	Voter bool
}

// Servers returns the current Raft configuration.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapErr(err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == hraft.Voter})
	}
	return out, nil
}

// AddVoter adds a voting member. Adding a member that is already there
// with the same address does nothing (a non-voter is promoted). An id that
// is a member at another address is refused with ErrIDInUse (hashicorp/raft
// would re-address it: a running member then no longer hears from the
// others, and stays a candidate), and an address that another member has
// with ErrAddrInUse. To move a member, remove it first. Leader only.
func (n *Node) AddVoter(id, addr string, timeout time.Duration) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return mapErr(err)
	}
	for _, s := range f.Configuration().Servers {
		switch {
		case string(s.ID) == id && string(s.Address) == addr:
			if s.Suffrage == hraft.Voter {
				return nil
			}
		case string(s.ID) == id:
			return fmt.Errorf("%w: %s is a member at %s, not %s", ErrIDInUse, id, s.Address, addr)
		case string(s.Address) == addr:
			// Never evict a member (perhaps the leader) to make room.
			return fmt.Errorf("%w: %s is the address of %s", ErrAddrInUse, addr, s.ID)
		}
	}
	// The change applies only to the configuration checked above: should
	// another change come first, Raft refuses this one (and a retry checks
	// again).
	return n.wait(n.raft.AddVoter(hraft.ServerID(id), hraft.ServerAddress(addr), f.Index(), timeout))
}

// RemoveServer removes a member. Leader only. A leader removing itself
// shuts its Raft down, and hashicorp/raft may then never answer the
// change: the answer is then ErrUnknownOutcome (see wait).
func (n *Node) RemoveServer(id string, timeout time.Duration) error {
	return n.wait(n.raft.RemoveServer(hraft.ServerID(id), 0, timeout))
}

// TransferLeadership asks another voter to take over. Leader only.
func (n *Node) TransferLeadership() error {
	return n.wait(n.raft.LeadershipTransfer())
}

// Snapshot takes a snapshot now (and so truncates the Raft log).
func (n *Node) Snapshot() error {
	return mapErr(n.raft.Snapshot().Error())
}

// Close shuts the node down. It is idempotent. Order: refuse new entries
// and let Raft take those already handed to it, stop Raft (which stops
// applying to the log), then the watcher, then the transport, then the Raft
// log store. The channel log belongs to the caller.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		// Raft never answers an entry still in its queue at Shutdown
		// (BatchApplyCh; hashicorp/raft#498): its Wait would block for
		// good. So refuse new entries (ErrClosed), then queue a barrier
		// behind the ones handed over: once it returns, Raft has taken or
		// refused each of them, and Shutdown fails those still in flight.
		n.applyMu.Lock()
		n.closing = true
		n.applyMu.Unlock()
		// An FSM, or a term or vote write, waiting for disk space gives
		// up, or Shutdown would wait for it (fsm.stop, store.stop).
		n.fsm.stop()
		n.store.stop()
		if n.raft.State() != hraft.Shutdown { // it shuts down by itself when removed
			_ = n.wait(n.raft.Barrier(5 * time.Second))
		}
		err := n.raft.Shutdown().Error()
		n.raft.DeregisterObserver(n.observer)
		close(n.closeCh)
		<-n.doneCh
		n.closeTransport()
		if serr := n.store.Close(); err == nil {
			err = serr
		}
		n.closeErr = err
	})
	return n.closeErr
}

// logCacheEntries is how many of the newest Raft entries are kept in memory.
const logCacheEntries = 64

// transportConfig is the Raft transport's configuration over stream (nil:
// NewTCPTransportWithConfig sets it).
//
// Pipelined replication is off (MaxRPCsInFlight 1): hashicorp/raft v1.7.3's
// pipeline can deadlock when a follower answers an append with a failure
// (pipelineDecode stops reading while the next send waits on a full
// in-flight channel), after which the leader never sends that follower an
// entry again although its heartbeats keep it from calling an election
// (hashicorp/raft#612), and the leader's Shutdown waits for good. Seen as
// a hung Close in TestPublishAsyncLeaderMoves. Each follower then gets one
// append at a time, carrying every entry queued meanwhile.
func transportConfig(stream hraft.StreamLayer, hlog hclog.Logger) *hraft.NetworkTransportConfig {
	return &hraft.NetworkTransportConfig{
		Stream:          stream,
		MaxPool:         3,
		Timeout:         10 * time.Second,
		Logger:          hlog.Named("transport"),
		MaxRPCsInFlight: 1,
	}
}

// withoutHeartbeatFastPath returns t without hashicorp/raft's heartbeat
// fast path, so that heartbeats reach Raft's main loop like every other
// RPC, in order with them, as in the Raft paper.
//
// hashicorp/raft v1.7.3 hands heartbeats to the transport's fast path,
// which handles them on the transport's goroutine, concurrently with the
// main loop (so that a follower whose disk is slow still answers them). A
// heartbeat of a newer term sets the node's term and state to follower
// there, unsynchronized: a leader whose main loop has already checked that
// it leads takes the next Apply and stamps it with the new term, at the
// index where the new leader put its first entry (hashicorp/raft#695,
// open; #701 proposes a fix). The two entries have the same index and
// term, so Raft never sees the conflict: the old leader keeps its entry,
// applies it once the new leader's commit index covers that index, and its
// channel log diverges from the others' for good. A leader that resumes
// after a pause meets exactly this, queued heartbeats of the new leader
// and queued publishes at once: TestFaultPauseLeader found it, a message
// stored on the old leader only, every later offset shifted
// (TestHeartbeatOfNewerTermDoesNotStampLeaderEntries shows it). The same
// unsynchronized term change can also move a candidate's term back.
//
// Without the fast path, a follower answers a heartbeat once its main loop
// is done with the append before it (one fdatasync, typically); the leader
// counts contact from the answers to appends as well.
//
// Only hashicorp/raft's TCP transport has a fast path; others (the
// in-memory one of tests and standalone) are returned as they are.
func withoutHeartbeatFastPath(t hraft.Transport) hraft.Transport {
	if nt, ok := t.(*hraft.NetworkTransport); ok {
		return mainLoopHeartbeats{nt}
	}
	return t
}

// mainLoopHeartbeats is a NetworkTransport that keeps no heartbeat
// handler: the transport then queues heartbeats to Raft's main loop. It
// embeds the transport itself so that Raft still finds the optional
// interfaces (pre-vote, Close).
type mainLoopHeartbeats struct{ *hraft.NetworkTransport }

var (
	_ hraft.WithPreVote = mainLoopHeartbeats{}
	_ hraft.WithClose   = mainLoopHeartbeats{}
)

// SetHeartbeatHandler drops the handler Raft sets (its fast path).
func (mainLoopHeartbeats) SetHeartbeatHandler(func(hraft.RPC)) {}

// LogFault returns why the last append to this node's Raft log failed (a
// full disk, say), or nil once an append has succeeded since. A hub whose
// appends fail is not ready: as a follower it falls behind without
// knowing it, since the leader's commit index cannot reach it either.
func (n *Node) LogFault() error { return n.store.lastAppendErr() }
