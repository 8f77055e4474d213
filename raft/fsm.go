package raft

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/comethq/comet/dstream"
	"github.com/comethq/comet/log"
	hraft "github.com/hashicorp/raft"
)

// Event is one message as it was committed and applied, for the commit
// stream that feeds gateways.
type Event struct {
	Index   uint64
	Channel string
	Offset  uint64
	Epoch   string
	Time    time.Time
	Data    []byte
}

// An Event with Offset 0 carries no message: the stream state of Channel
// changed (a Durable Stream was closed, deleted or expired; package
// dstream), in history Epoch.

// Observer hears about applied entries, in index order, on the FSM's
// goroutine: it must not block. Applied is called after every batch that
// applied entries first..last (entries a restart replays but the log
// already held are not reported), with the events of its published
// messages (duplicates excluded), a slice it may not keep: the next batch
// reuses it. Restored is called after a snapshot replaced the log.
type Observer interface {
	Applied(first, last uint64, events []Event)
	Restored(index uint64)
}

// fsm applies committed entries to the channel log. Whole batches of entries
// go into one bbolt transaction; entries at or below the log's applied index
// are skipped, so replay after a restart applies nothing twice.
//
// A batch whose commit fails for want of disk space (log.ErrNoSpace) is
// tried again, with a backoff, until it commits: the FSM holds, later
// entries wait behind it in order, and the log's Fault reports it (the hub
// is not ready, and as leader refuses publishes). Any other failure stops
// the process: a committed entry that cannot be applied must not be
// skipped.
type fsm struct {
	log      *log.Log
	observer Observer
	logger   *slog.Logger
	events   []Event // for the next batch, to spare allocating it each time

	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop; nil until then or made by init
	mu       sync.Mutex
	gaveUp   bool // a batch was given up at stop: apply nothing after it
}

// Backoff of the retries of a batch that failed for want of space, and how
// often the wait is logged again.
var (
	noSpaceRetryMin = 10 * time.Millisecond
	noSpaceRetryMax = 2 * time.Second
	noSpaceLogEvery = time.Minute
)

// errStopped answers the entries of a batch given up at stop.
var errStopped = fmt.Errorf("%w: the node closed while its channel log waited for disk space", ErrClosed)

func (f *fsm) stopChan() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopCh == nil {
		f.stopCh = make(chan struct{})
	}
	return f.stopCh
}

// stop makes a batch waiting for disk space give up, and every later batch
// too, so that Raft can shut down. Only for Close: the entries given up are
// not in the log, and a restart applies them from the Raft log.
func (f *fsm) stop() {
	ch := f.stopChan()
	f.stopOnce.Do(func() { close(ch) })
}

// maxKeptEvents bounds the events slice an fsm keeps between batches.
const maxKeptEvents = 1 << 16

var _ hraft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *hraft.Log) interface{} {
	return f.ApplyBatch([]*hraft.Log{l})[0]
}

func (f *fsm) ApplyBatch(logs []*hraft.Log) []interface{} {
	resp := make([]interface{}, len(logs))
	if len(logs) == 0 {
		return resp
	}
	if f.givenUp() {
		for i := range resp {
			resp[i] = errStopped
		}
		return resp
	}
	events := f.events[:0]
	last := logs[len(logs)-1].Index
	first := logs[0].Index
	applied, err := f.update(last, func(tx *log.Tx) error {
		// Tried again after a failure for want of space: from scratch.
		events = events[:0]
		clear(resp)
		// Entries between the stored index and this batch never reach the
		// FSM (no-ops, barriers) and carry no messages: count them in.
		first = tx.Applied() + 1
		for i, l := range logs {
			if l.Index <= tx.Applied() || l.Type != hraft.LogCommand {
				continue
			}
			cmd, err := DecodeCommand(l.Data)
			if err != nil {
				// Deterministic: every hub refuses the same bytes.
				f.logger.Error("skip undecodable entry", "index", l.Index, "err", err)
				resp[i] = err
				continue
			}
			r, evs, err := apply(tx, l.Index, cmd, events)
			if err != nil {
				return fmt.Errorf("apply entry %d: %w", l.Index, err)
			}
			resp[i] = r
			events = evs
		}
		return nil
	})
	if errors.Is(err, errStopped) {
		for i := range resp {
			resp[i] = errStopped
		}
		return resp
	}
	if err != nil {
		// The disk failed under a committed entry: this hub cannot go on
		// without diverging from the others. Stop here; a restart replays
		// the entry from the Raft log.
		panic(fmt.Sprintf("comet: cannot apply committed entries up to %d: %v", last, err))
	}
	if f.observer != nil && applied {
		f.observer.Applied(first, last, events)
	}
	clear(events) // let the messages go
	if cap(events) <= maxKeptEvents {
		f.events = events[:0]
	}
	return resp
}

func (f *fsm) givenUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gaveUp
}

// update is log.Update, tried again while it fails for want of space,
// until it commits or stop is called (errStopped).
func (f *fsm) update(index uint64, fn func(tx *log.Tx) error) (bool, error) {
	var (
		since  time.Time
		logged time.Time
		tries  int
		wait   = noSpaceRetryMin
		timer  *time.Timer
	)
	for {
		applied, err := f.log.Update(index, fn)
		if !errors.Is(err, log.ErrNoSpace) {
			if tries > 0 && err == nil {
				f.logger.Warn("channel log applies again: disk space is back",
					"index", index, "waited", time.Since(since).Round(time.Millisecond), "tries", tries+1)
			}
			return applied, err
		}
		now := time.Now()
		if tries == 0 {
			since, logged = now, now
			f.logger.Error("cannot apply committed entries: no space left on device; waiting for space, not ready, refusing publishes as leader",
				"index", index, "err", err)
		} else if now.Sub(logged) >= noSpaceLogEvery {
			logged = now
			f.logger.Error("still waiting for disk space to apply committed entries",
				"index", index, "waited", now.Sub(since).Round(time.Second), "tries", tries+1, "err", err)
		}
		tries++
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-f.stopChan():
			f.mu.Lock()
			f.gaveUp = true
			f.mu.Unlock()
			return false, errStopped
		case <-timer.C:
		}
		wait = min(2*wait, noSpaceRetryMax)
	}
}

// apply applies one entry and returns its response, and events with the
// events of the messages it published appended.
func apply(tx *log.Tx, index uint64, c *Command, events []Event) (*Response, []Event, error) {
	now := tx.Tick(c.Time)
	if err := tx.InitEpoch(c.Epoch); err != nil {
		return nil, nil, err
	}
	r := &Response{Index: index}
	if len(c.Publish) > 0 {
		r.Results = make([]log.Result, len(c.Publish))
	}
	for i, p := range c.Publish {
		if ds, _, err := tx.StreamState(p.Channel); err != nil {
			return nil, nil, err
		} else if ds != nil {
			if err := dstream.Writable(ds); err != nil {
				r.Results[i] = log.Result{Channel: p.Channel, Err: err}
				continue
			}
		}
		res, err := tx.Append(p.Channel, p.ID, p.Data, now)
		if err != nil {
			return nil, nil, err
		}
		r.Results[i] = res
		if res.Err == nil && !res.Duplicate {
			events = append(events, Event{Index: index, Channel: p.Channel, Offset: res.Offset,
				Epoch: res.Epoch, Time: now, Data: p.Data})
		}
	}
	if c.Retention != nil {
		if err := tx.SetRetention(c.Retention); err != nil {
			return nil, nil, err
		}
	}
	for _, ch := range c.Delete {
		if err := tx.DeleteChannel(ch, c.Epoch); err != nil {
			return nil, nil, err
		}
	}
	for _, kv := range c.Put {
		if err := tx.Put(kv.Key, kv.Value); errors.Is(err, log.ErrBadKey) {
			// Refused the same way on every hub: not a storage failure.
			r.Err = err
		} else if err != nil {
			return nil, nil, err
		}
	}
	if c.Sweep {
		if err := tx.Sweep(now); err != nil {
			return nil, nil, err
		}
	}
	if c.MaxIDs != nil {
		if err := tx.SetMaxIDs(*c.MaxIDs); err != nil {
			return nil, nil, err
		}
	}
	for _, op := range c.Streams {
		res, err := dstream.Apply(tx, op, now, c.Epoch, func(ch string, off uint64, epoch string, data []byte) {
			events = append(events, Event{Index: index, Channel: ch, Offset: off, Epoch: epoch, Time: now, Data: data})
		})
		if err != nil {
			return nil, nil, err
		}
		res.Index = index
		r.Streams = append(r.Streams, res)
	}
	return r, events, nil
}

func (f *fsm) Snapshot() (hraft.FSMSnapshot, error) {
	s, err := f.log.Snapshot()
	if err != nil {
		return nil, err
	}
	return &snapshot{s: s}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.log.Restore(rc); err != nil {
		return err
	}
	if f.observer != nil {
		f.observer.Restored(f.log.Applied())
	}
	return nil
}

type snapshot struct {
	s *log.Snapshot
}

func (s *snapshot) Persist(sink hraft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() { s.s.Release() }
