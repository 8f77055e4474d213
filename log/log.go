package log

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/comethq/comet/internal/durable"
	"github.com/comethq/comet/wire"
	bolt "go.etcd.io/bbolt"
)

// IdempotencyWindow is how long a publish id is remembered per channel
// (CONTRACT.md guarantee 4). It is part of the replicated behaviour, so it is
// a constant rather than a setting.
const IdempotencyWindow = 10 * time.Minute

// DefaultMaxIDs is how many publish ids the idempotency index holds at most
// until Tx.SetMaxIDs says otherwise: about 1.5 GB of memory on every hub
// for ids of 16 bytes (see the package documentation). While it holds that
// many ids of the window, a publish with a new id is refused
// (ErrTooManyIDs); publishes without ids, and retries of held ids, are
// not.
const DefaultMaxIDs = 10_000_000

// MaxKeyLen bounds metadata keys and publish ids, far below bbolt's own key
// limit, so that no replicated entry can fail to apply for its size.
const MaxKeyLen = 1024

// Built-in retention, used for channels that no rule matches.
const (
	DefaultMaxMessages = 100_000
	DefaultMaxAge      = 24 * time.Hour
)

// initialMmapSize is how much of the file bbolt maps up front: address
// space, not memory. bbolt can grow its map only when no read transaction
// is open, so with a smaller map an Update that grows the file waits until
// a running Snapshot is released. 1 GiB on 64-bit systems; bbolt's default
// on 32-bit ones.
const initialMmapSize = (1 << 30) * (strconv.IntSize / 64)

var (
	// ErrClosed is returned by calls on a closed Log.
	ErrClosed = errors.New("log is closed")
	// ErrBadChannel is returned for a channel name outside the contract.
	ErrBadChannel = errors.New("bad channel name")
	// ErrNoEpoch is returned by reads before the cluster epoch is set, that
	// is before the first entry was applied.
	ErrNoEpoch = errors.New("cluster epoch not set yet")
	// ErrBadKey is returned for a metadata key or a publish id that is
	// empty (keys) or longer than MaxKeyLen.
	ErrBadKey = errors.New("bad key")
	// ErrTooManyIDs is reported in Result.Err for a publish with a new id
	// while the idempotency index holds MaxIDs ids of the window: nothing
	// is stored, the same on every hub. The publish may be tried again once
	// ids leave the window (at the latest IdempotencyWindow later).
	ErrTooManyIDs = errors.New("too many publish ids held")
	// ErrCorrupt is returned when stored bytes cannot be decoded.
	ErrCorrupt = errors.New("corrupt record")
	// ErrLayout is returned by Open and Restore for a file written in
	// another storage layout than this build's (layoutVersion). There is no
	// migration: a hub moves the file aside and rebuilds it from Raft.
	ErrLayout = errors.New("unsupported storage layout")
)

// layoutVersion is the storage layout this build writes, kept in
// sys/layout: chunks carry a checksum (chunkV2, see chunk.go). It reads
// layouts 2 and 3 too, whose chunks have none (chunkV1), and marks such a
// file layout 4 when it opens it, so that an older build, which cannot read
// chunkV2, refuses it; its old chunks stay as they are until retention
// deletes them. Layout 3 keeps each chunk in a bucket of its own, layout 2
// in a record of the channel's message bucket (see chunk.go). Layout 1 (no
// sys/layout: a message, an id and an expiry record per message) is
// refused.
const layoutVersion = 4

// Earlier layouts this build reads: layoutChunkRecords, whose chunks are
// records, and layoutNoChecksums, whose chunks are buckets; neither has
// checksums.
const (
	layoutChunkRecords = 2
	layoutNoChecksums  = 3
)

var (
	bucketSys      = []byte("sys")
	bucketChannels = []byte("ch") // ch/<channel>: meta, and m
	bucketMsgs     = []byte("m")  // chunks: first offset -> messages (chunk.go)
	bucketIDs      = []byte("d")  // idempotency records (encodeIDs)

	keyLayout    = []byte("layout")
	keyApplied   = []byte("applied")
	keyEpoch     = []byte("epoch")
	keyRetention = []byte("retention")
	keyClock     = []byte("clock")
	keyMaxIDs    = []byte("maxids") // Tx.SetMaxIDs; absent: DefaultMaxIDs
	keyMeta      = []byte("meta")
	prefixKV     = "kv/"
)

// Config configures a Log.
type Config struct {
	// Path is the bbolt file. Required.
	Path string
	// NoSync skips fsync on commit. Only for tests and benchmarks: a
	// power loss can then corrupt the file.
	NoSync bool
	// DeferSync skips fsync on commit and keeps the file trustworthy with
	// a marker beside it (PATH.state) that records the boot it was opened
	// in: after a kill -9 the file is intact (the page cache holds every
	// write), and after a power loss or kernel crash, Open moves the file
	// aside (PATH.untrusted) and starts empty, for the caller to rebuild;
	// Rebuilt then reports true. Close syncs. Where the boot id cannot be
	// read, DeferSync falls back to fsync on every commit.
	DeferSync bool
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Rule is a retention rule for the channels whose names match Pattern, a
// glob in which '*' matches any run of characters. Zero limits mean "no
// limit" for that dimension.
type Rule struct {
	Pattern     string        `json:"pattern"`
	MaxMessages uint64        `json:"max_messages"`
	MaxAge      time.Duration `json:"max_age"`
}

// Message is one stored message.
type Message struct {
	Offset uint64
	Time   time.Time
	Data   []byte
}

// Info describes a channel: its epoch, the first offset still stored and
// the offset the next message will get. First == Next when it holds none.
type Info struct {
	Epoch string
	First uint64
	Next  uint64
}

// Log is a durable store of channels. It is safe for concurrent use.
type Log struct {
	cfg    Config
	logger *slog.Logger

	mu      sync.RWMutex // guards db and ids against Restore and Close
	db      *bolt.DB
	closed  bool
	boot    string // boot id, with DeferSync
	rebuilt bool
	// rebuildable: the caller rebuilds an empty log (DeferSync), so a
	// damaged file is moved aside rather than refused (fault.go).
	rebuildable bool

	// wmu makes an Update and the change of ids that follows its commit
	// one step: bbolt lets the next writer in as soon as it has committed.
	wmu     sync.Mutex
	ids     *idIndex      // of the committed state, but in an Update; under wmu or mu
	bufs    segBufs       // segment buffers for Updates, under wmu
	refused atomic.Int64  // publishes refused with ErrTooManyIDs, committed
	kvGen   atomic.Uint64 // KVGeneration

	// Faults (fault.go), under fmu.
	fmu     sync.Mutex
	corrupt error // damage found, until Restore
	nospace error // the last Update's failure for want of space
	failN   int   // FailUpdates
	failErr error
}

// Open opens or creates the log at cfg.Path.
func Open(cfg Config) (*Log, error) {
	if cfg.Path == "" {
		return nil, errors.New("log: Config.Path is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(cfg.Path)
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("log: create directory: %w", err)
	}
	l := &Log{cfg: cfg, logger: cfg.Logger}
	if cfg.DeferSync {
		if l.boot = bootID(); l.boot == "" {
			l.cfg.DeferSync = false
			l.logger.Warn("cannot read the boot id: syncing the channel log at every commit")
		}
	}
	l.rebuildable = cfg.DeferSync
	if l.rebuildable {
		moved, err := l.checkDamaged(cfg.Path)
		if err != nil {
			return nil, err
		}
		l.rebuilt = moved
	}
	if l.cfg.DeferSync && !l.rebuilt {
		var err error
		if l.rebuilt, err = checkDeferred(cfg.Path, l.boot); err != nil {
			return nil, err
		}
		if l.rebuilt {
			l.logger.Warn("channel log was not closed cleanly in an earlier boot; moved it aside to rebuild",
				"path", cfg.Path+".untrusted")
		}
	}
	if l.cfg.DeferSync {
		if err := writeMarker(cfg.Path, "open "+l.boot); err != nil {
			return nil, fmt.Errorf("log: write %s: %w", markerPath(cfg.Path), err)
		}
	}
	db, ids, err := l.openDB(cfg.Path, l.rebuildable)
	if err != nil {
		return nil, err
	}
	// bbolt fsyncs a new file, not its directory entry: without this, a
	// power cut could lose the whole file of a log created just before.
	if !cfg.NoSync {
		if err := durable.SyncDir(dir); err != nil {
			db.Close()
			return nil, fmt.Errorf("log: open %s: %w", cfg.Path, err)
		}
	}
	l.db, l.ids = db, ids
	return l, nil
}

// Rebuilt reports whether Open found the file untrustworthy (DeferSync
// after a power loss, or damaged) and started empty.
func (l *Log) Rebuilt() bool { return l.rebuilt }

// openDB opens the bbolt file at path, making the log's buckets in a new
// one, and loads its idempotency index.
// Unless checked, its pages are checked first (checkPages).
func (l *Log) openDB(path string, checked bool) (*bolt.DB, *idIndex, error) {
	if !checked {
		if err := checkPages(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("log: open %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 2 * time.Second,
		NoSync:  l.cfg.NoSync || l.cfg.DeferSync,
		// Nor when the file grows: with DeferSync that fsync flushed every
		// write since the last one, stalling the Update that grew the file
		// (every 16 MiB written) for tens of milliseconds; a power loss
		// distrusts the file anyway.
		NoGrowSync:      l.cfg.NoSync || l.cfg.DeferSync,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, nil, fmt.Errorf("log: open %s: locked by another process", path)
		}
		return nil, nil, fmt.Errorf("log: open %s: %w", path, err)
	}
	ids := newIDIndex()
	err = db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketSys) == nil {
			// A new file.
			for _, b := range [][]byte{bucketSys, bucketChannels, bucketIDs} {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketSys).Put(keyLayout, be(layoutVersion))
		}
		if err := checkLayout(tx); err != nil {
			return err
		}
		if u64(tx.Bucket(bucketSys).Get(keyLayout)) != layoutVersion {
			// Layout 2 or 3: its chunks stay as they are; new ones are
			// buckets, with checksums.
			if err := tx.Bucket(bucketSys).Put(keyLayout, be(layoutVersion)); err != nil {
				return err
			}
		}
		return ids.load(tx)
	})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("log: open %s: %w", path, err)
	}
	return db, ids, nil
}

// checkLayout returns an error unless tx is a log in this build's layout.
func checkLayout(tx *bolt.Tx) error {
	sys := tx.Bucket(bucketSys)
	if sys == nil || tx.Bucket(bucketChannels) == nil {
		return fmt.Errorf("%w: not a channel log (no sys or ch bucket)", ErrCorrupt)
	}
	v := sys.Get(keyLayout)
	switch {
	case v == nil:
		return fmt.Errorf("%w: the file is in layout 1 (one record per message, before chunks); this build reads layout %d only and does not migrate: move the file aside for the hub to rebuild it from Raft",
			ErrLayout, layoutVersion)
	case len(v) != 8 || (u64(v) != layoutVersion && u64(v) != layoutChunkRecords && u64(v) != layoutNoChecksums):
		return fmt.Errorf("%w: the file is in layout %x; this build reads layouts %d to %d only", ErrLayout, v, layoutChunkRecords, layoutVersion)
	case tx.Bucket(bucketIDs) == nil:
		return fmt.Errorf("%w: no idempotency bucket", ErrCorrupt)
	}
	return nil
}

// HeldIDs returns the number of publish ids the idempotency index holds in
// memory, across channels (see the package documentation for its cost).
func (l *Log) HeldIDs() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0
	}
	return l.ids.held()
}

// MaxIDs returns the most publish ids the idempotency index holds, as the
// replicated state says (Tx.SetMaxIDs; DefaultMaxIDs until set); 0 means
// no limit.
func (l *Log) MaxIDs() uint64 {
	var n uint64
	_ = l.view(func(tx *bolt.Tx) error {
		n = maxIDs(tx.Bucket(bucketSys))
		return nil
	})
	return n
}

// RefusedIDs returns how many publishes the committed Updates of this Log
// value refused with ErrTooManyIDs (since Open: a count of this process,
// for metrics).
func (l *Log) RefusedIDs() int64 { return l.refused.Load() }

func maxIDs(sys *bolt.Bucket) uint64 {
	v := sys.Get(keyMaxIDs)
	if v == nil {
		return DefaultMaxIDs
	}
	return u64(v)
}

// Close closes the log. It is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if !l.cfg.DeferSync {
		return l.db.Close()
	}
	err := l.db.Sync()
	if cerr := l.db.Close(); err == nil {
		err = cerr
	}
	if err == nil && !l.damaged() {
		err = writeMarker(l.cfg.Path, "clean")
	}
	return err
}

func (l *Log) view(fn func(tx *bolt.Tx) error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return l.db.View(fn)
}

// Applied returns the index of the last entry applied by Update.
func (l *Log) Applied() uint64 {
	var idx uint64
	_ = l.view(func(tx *bolt.Tx) error {
		idx = u64(tx.Bucket(bucketSys).Get(keyApplied))
		return nil
	})
	return idx
}

// Epoch returns the cluster epoch, or "" before the first entry.
func (l *Log) Epoch() string {
	var e string
	_ = l.view(func(tx *bolt.Tx) error {
		e = string(tx.Bucket(bucketSys).Get(keyEpoch))
		return nil
	})
	return e
}

// Retention returns the replicated retention rules (nil: built-in defaults).
func (l *Log) Retention() ([]Rule, error) {
	var rules []Rule
	err := l.view(func(tx *bolt.Tx) error {
		var err error
		rules, err = loadRules(tx.Bucket(bucketSys))
		return err
	})
	return rules, err
}

// Get returns the value stored under key by Tx.Put, or nil.
func (l *Log) Get(key string) []byte {
	var v []byte
	_ = l.view(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketSys).Get([]byte(prefixKV + key)))
		return nil
	})
	return v
}

// KVGeneration changes whenever the key/value pairs of Tx.Put may have
// changed (an Update that put or deleted one, a Restore): a caller that
// keeps a value decoded from Get reads it again when it changes.
func (l *Log) KVGeneration() uint64 { return l.kvGen.Load() }

// Scan calls fn for every key with the given prefix stored by Tx.Put.
func (l *Log) Scan(prefix string, fn func(key string, value []byte)) error {
	return l.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSys).Cursor()
		p := []byte(prefixKV + prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			fn(string(k[len(prefixKV):]), bytes.Clone(v))
		}
		return nil
	})
}

// Info returns a channel's epoch and offsets. A channel that was never
// written reports the cluster epoch and First == Next == 1.
func (l *Log) Info(ch string) (Info, error) {
	var info Info
	err := l.readView(func(tx *bolt.Tx) error {
		var err error
		info, _, err = channelInfo(tx, ch)
		return err
	})
	return info, err
}

// MaxReadBytes bounds the data one Read returns: it stops after the message
// that reaches it (so it always returns at least one message if any is
// there). Callers page on from the last offset + 1.
const MaxReadBytes = 4 << 20

// Read returns up to limit messages (and about MaxReadBytes of data) of ch
// from offset from on, together with the channel's Info. Offsets below Info.First were trimmed: the read starts
// at First then, and the caller can tell by comparing.
func (l *Log) Read(ch string, from uint64, limit int) (Info, []Message, error) {
	var (
		info Info
		msgs []Message
	)
	err := l.readView(func(tx *bolt.Tx) error {
		var (
			b   *bolt.Bucket
			err error
		)
		info, b, err = channelInfo(tx, ch)
		if err != nil || b == nil || limit <= 0 {
			return err
		}
		msgs, err = readRange(b, ch, max(from, info.First), info.Next, limit, MaxReadBytes)
		return err
	})
	return info, msgs, err
}

// readRange reads up to limit messages of channel bucket b in [start, to),
// stopping after the message that reaches maxBytes of data.
func readRange(b *bolt.Bucket, ch string, start, to uint64, limit, maxBytes int) ([]Message, error) {
	if start >= to {
		return nil, nil
	}
	msgs := make([]Message, 0, min(uint64(limit), to-start, 128))
	var arena []byte // holds the data of the messages returned
	size := 0
	mb := b.Bucket(bucketMsgs)
	c := mb.Cursor()
	for k, v := seekChunk(c, start); k != nil && len(msgs) < limit && size < maxBytes; k, v = c.Next() {
		r, err := openChunk(k, chunkValue(mb, k, v))
		if err == nil {
			err = r.seek(start)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s from %d: %w", ch, start, err)
		}
		for r.more() && len(msgs) < limit && size < maxBytes {
			m, err := r.next()
			if err != nil {
				return nil, fmt.Errorf("read %s from %d: %w", ch, start, err)
			}
			if m.off < start {
				continue // trimmed, or before from
			}
			if m.off >= to {
				return msgs, nil
			}
			data := []byte{}
			if len(m.data) > 0 {
				if cap(arena)-len(arena) < len(m.data) {
					arena = make([]byte, 0, max(len(m.data), min(2*cap(arena), 1<<20), 1024))
				}
				a := len(arena)
				arena = append(arena, m.data...)
				data = arena[a:len(arena):len(arena)]
			}
			msgs = append(msgs, Message{Offset: m.off, Time: time.Unix(0, m.t).UTC(), Data: data})
			size += len(m.data)
		}
	}
	return msgs, nil
}

// OffsetAtTime returns the offset of ch's first message stored at or after
// t (message times never decrease along a channel: the log's clock only
// moves forward), together with the channel's Info. When every message
// held is older than t it returns Info.Next; trimmed messages are not
// searched. It probes O(log n) messages.
func (l *Log) OffsetAtTime(ch string, t time.Time) (uint64, Info, error) {
	var (
		info Info
		off  uint64
	)
	want := t.UnixNano()
	err := l.readView(func(tx *bolt.Tx) error {
		var (
			b   *bolt.Bucket
			err error
		)
		info, b, err = channelInfo(tx, ch)
		if err != nil {
			return err
		}
		off = info.Next
		if b == nil || info.First >= info.Next {
			return nil
		}
		mb := b.Bucket(bucketMsgs)
		c := mb.Cursor()
		// timeOf is the time of the message at offset o (First <= o < Next).
		timeOf := func(o uint64) (int64, error) {
			k, v := seekChunk(c, o)
			if k == nil {
				return 0, fmt.Errorf("%w: channel %s: no chunk holds offset %d", ErrCorrupt, ch, o)
			}
			r, err := openChunk(k, chunkValue(mb, k, v))
			if err == nil {
				err = r.seek(o)
			}
			if err != nil {
				return 0, err
			}
			m, err := r.next()
			if err == nil && m.off != o {
				err = fmt.Errorf("%w: channel %s: offset %d found at %d", ErrCorrupt, ch, o, m.off)
			}
			return m.t, err
		}
		// The first offset in [lo, hi) whose time is at or after want.
		lo, hi := info.First, info.Next
		for lo < hi {
			mid := lo + (hi-lo)/2
			mt, err := timeOf(mid)
			if err != nil {
				return fmt.Errorf("search %s for time %s: %w", ch, t.Format(time.RFC3339Nano), err)
			}
			if mt >= want {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		off = lo
		return nil
	})
	return off, info, err
}

// seekChunk positions c on the chunk that holds offset off: the last one
// whose key is at or below off.
func seekChunk(c *bolt.Cursor, off uint64) (k, v []byte) {
	k, v = c.Seek(be(off))
	switch {
	case k == nil:
		return c.Last()
	case u64(k) > off:
		if pk, pv := c.Prev(); pk != nil {
			return pk, pv
		}
		return c.First()
	}
	return k, v
}

func channelInfo(tx *bolt.Tx, ch string) (Info, *bolt.Bucket, error) {
	if !wire.ValidChannel(ch) {
		return Info{}, nil, fmt.Errorf("%w: %q", ErrBadChannel, ch)
	}
	b := tx.Bucket(bucketChannels).Bucket([]byte(ch))
	if b == nil {
		epoch := tx.Bucket(bucketSys).Get(keyEpoch)
		if epoch == nil {
			return Info{}, nil, ErrNoEpoch
		}
		return Info{Epoch: string(epoch), First: 1, Next: 1}, nil, nil
	}
	m, err := decodeMeta(b.Get(keyMeta))
	if err != nil {
		return Info{}, nil, fmt.Errorf("channel %s: %w", ch, err)
	}
	return m.Info, b, nil
}

// Channels calls fn with the name and Info of every stored channel, in name
// order, until fn returns false.
func (l *Log) Channels(fn func(name string, info Info) bool) error {
	err := l.readView(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChannels).ForEachBucket(func(k []byte) error {
			m, err := decodeMeta(tx.Bucket(bucketChannels).Bucket(k).Get(keyMeta))
			if err != nil {
				return fmt.Errorf("channel %s: %w", k, err)
			}
			if !fn(string(k), m.Info) {
				return errStop
			}
			return nil
		})
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

var errStop = errors.New("stop")

// Update applies the entry with Raft index index: it runs fn in one bbolt
// transaction and records index as applied in that same transaction. An
// index at or below Applied is skipped (fn is not called) and Update returns
// false. An error from fn, or a failed commit, rolls everything back, the
// idempotency index included.
func (l *Log) Update(index uint64, fn func(tx *Tx) error) (bool, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return false, ErrClosed
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			// bbolt panics on some damaged pages: say which file.
			panic(fmt.Sprintf("channel log %s: %v", l.cfg.Path, r))
		}
	}()
	l.ids.begin()
	committed := false
	defer func() {
		if !committed { // an error, a failed commit, a panic in fn
			l.ids.rollback()
		}
	}()
	var done, last *Tx
	defer func() {
		// bbolt is done with the chunks: keep their buffers.
		if last != nil {
			for _, st := range last.touched {
				l.bufs.put(st.pend)
			}
		}
	}()
	err := l.db.Update(func(btx *bolt.Tx) error {
		sys := btx.Bucket(bucketSys)
		prev := u64(sys.Get(keyApplied))
		if prev >= index {
			return nil
		}
		tx := &Tx{
			btx: btx, sys: sys, chans: btx.Bucket(bucketChannels), dids: btx.Bucket(bucketIDs),
			applied: prev, index: index, ids: l.ids, bufs: &l.bufs,
		}
		last = tx
		if err := fn(tx); err != nil {
			return err
		}
		if err := tx.finish(); err != nil {
			return err
		}
		if err := sys.Put(keyApplied, be(index)); err != nil {
			return err
		}
		if err := l.injected(); err != nil {
			return err
		}
		done = tx
		return nil
	})
	if err != nil {
		done = nil
	}
	err = l.noteCorrupt(l.noteUpdate(err))
	if err == nil && done != nil {
		l.ids.commit(done.clock)
		committed = true
		l.refused.Add(int64(done.refused))
		if done.putKV {
			l.kvGen.Add(1)
		}
	}
	return done != nil, err
}

// Snapshot is a consistent, point-in-time copy of the log.
type Snapshot struct {
	tx *bolt.Tx
}

// Snapshot starts a snapshot. It returns quickly; WriteTo copies the data
// while Updates go on. Release must be called when done.
func (l *Log) Snapshot() (*Snapshot, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	tx, err := l.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("log: snapshot: %w", err)
	}
	return &Snapshot{tx: tx}, nil
}

// Applied returns the applied index the snapshot holds.
func (s *Snapshot) Applied() uint64 { return u64(s.tx.Bucket(bucketSys).Get(keyApplied)) }

// WriteTo writes the snapshot (a bbolt file) to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) { return s.tx.WriteTo(w) }

// Release ends the snapshot. It is idempotent.
func (s *Snapshot) Release() {
	if s.tx != nil {
		_ = s.tx.Rollback()
		s.tx = nil
	}
}

// Restore replaces the whole log with a snapshot read from r. Readers and
// writers wait while it runs. The file is written beside the log, fsynced,
// checked, and then renamed over it, so a crash leaves either the old or the
// new log.
func (l *Log) Restore(r io.Reader) error {
	tmp := l.cfg.Path + ".restore"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("log: restore: %w", err)
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("log: restore: write %s: %w", tmp, err)
	}
	err = checkPages(tmp)
	var check *bolt.DB
	if err == nil {
		check, err = bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	}
	if err == nil {
		err = check.View(func(tx *bolt.Tx) error {
			// A truncated file passes bbolt's checks of its meta pages, and
			// reading a page past its end crashes: check the size first.
			if n < tx.Size() {
				return fmt.Errorf("%w: snapshot is %d bytes, its pages need %d", ErrCorrupt, n, tx.Size())
			}
			if tx.Bucket(bucketSys) == nil || tx.Bucket(bucketChannels) == nil {
				return fmt.Errorf("%w: snapshot lacks the log's buckets", ErrCorrupt)
			}
			if err := checkLayout(tx); err != nil {
				return err
			}
			// Its idempotency records must load, or the restored log
			// could not open.
			return newIDIndex().load(tx)
		})
		check.Close()
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("log: restore: check snapshot: %w", err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		os.Remove(tmp)
		return ErrClosed
	}
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("log: restore: close: %w", err)
	}
	// From here on the log must be reopened, on the new file or the old.
	replaced := os.Rename(tmp, l.cfg.Path)
	if replaced == nil {
		replaced = durable.SyncDir(filepath.Dir(l.cfg.Path))
	}
	db, ids, err := l.openDB(l.cfg.Path, replaced == nil) // checked as tmp
	if err != nil {
		l.closed = true
		return err
	}
	l.db, l.ids = db, ids
	l.kvGen.Add(1)
	if replaced == nil {
		l.restored()
	}
	if replaced != nil {
		os.Remove(tmp)
		return fmt.Errorf("log: restore: replace %s: %w", l.cfg.Path, replaced)
	}
	l.logger.Info("restored log from snapshot", "applied", l.appliedLocked())
	return nil
}

// SnapshotApplied returns the applied index recorded in a snapshot file
// (a log written by Snapshot.WriteTo), without restoring it.
// A damaged file is an error, never a crash (bbolt panics on some).
func SnapshotApplied(path string) (idx uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			idx, err = 0, fmt.Errorf("%w: snapshot %s: %v", ErrCorrupt, path, r)
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("log: snapshot %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, fmt.Errorf("log: open snapshot %s: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if fi.Size() < tx.Size() {
			return fmt.Errorf("%w: snapshot %s is %d bytes, its pages need %d", ErrCorrupt, path, fi.Size(), tx.Size())
		}
		sys := tx.Bucket(bucketSys)
		if sys == nil {
			return fmt.Errorf("%w: %s is not a channel log", ErrCorrupt, path)
		}
		idx = u64(sys.Get(keyApplied))
		return nil
	})
	return idx, err
}

func (l *Log) appliedLocked() uint64 {
	var idx uint64
	_ = l.db.View(func(tx *bolt.Tx) error {
		idx = u64(tx.Bucket(bucketSys).Get(keyApplied))
		return nil
	})
	return idx
}

// Size returns the size of the bbolt file in bytes.
func (l *Log) Size() int64 {
	var n int64
	_ = l.view(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}

func loadRules(sys *bolt.Bucket) ([]Rule, error) {
	raw := sys.Get(keyRetention)
	if raw == nil {
		return nil, nil
	}
	var rules []Rule
	if err := json.Unmarshal(raw, &rules); err != nil {
		return nil, fmt.Errorf("%w: retention rules: %v", ErrCorrupt, err)
	}
	return rules, nil
}

func be(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func u64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// meta is a channel's record: first(8) next(8) created(8) firstTime(8)
// epoch, all big-endian.
type meta struct {
	Info
	// created is the index of the Update that started this history of the
	// channel (its creation, or the DeleteChannel that reset it): it tells
	// this history's idempotency records from a deleted one's.
	created uint64
	// firstTime is the time of the message at First, when First < Next, so
	// that age retention need not read a chunk to find nothing to trim.
	firstTime int64
}

func encodeMeta(m meta) []byte {
	b := make([]byte, 32+len(m.Epoch))
	binary.BigEndian.PutUint64(b, m.First)
	binary.BigEndian.PutUint64(b[8:], m.Next)
	binary.BigEndian.PutUint64(b[16:], m.created)
	binary.BigEndian.PutUint64(b[24:], uint64(m.firstTime))
	copy(b[32:], m.Epoch)
	return b
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) < 32 {
		return meta{}, fmt.Errorf("%w: channel meta of %d bytes", ErrCorrupt, len(b))
	}
	m := meta{
		Info:      Info{First: u64(b), Next: u64(b[8:]), Epoch: string(b[32:])},
		created:   u64(b[16:]),
		firstTime: int64(u64(b[24:])),
	}
	if m.First > m.Next || m.created == 0 {
		return meta{}, fmt.Errorf("%w: channel meta first %d, next %d, created %d", ErrCorrupt, m.First, m.Next, m.created)
	}
	return m, nil
}
